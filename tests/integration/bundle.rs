//! Policy-set bundles end to end (control::bundle): `oasis push-bundle` of a
//! whole directory to a real registry (`docker-registry`), `oasis serve
//! --bundle` following the tag into an empty directory, a new bundle served,
//! a bundle that is not a valid set refused (the directory keeps its set),
//! `oasis pull-bundle`, and a restart with the registry down serving the
//! last installed set; scoring traffic throughout, not one failed response.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use oasis::control::bundle::{self, BundleFile};
use oasis::control::source::oci::{OciRef, RegistryClient, RegistryConfig};
use oasis_test_components::{BASELINE, GUARDED_BOOST};
use serde_json::{Value, json};

use crate::harness::process::ServeProcess;
use crate::harness::registry::DockerRegistry;
use crate::harness::server::{atomic_write, digest, install};
use crate::registry::{NO_DOCKER_CONFIG, Traffic, oasis};

/// A policy directory with policy `promo` on `module` and route `radio`.
fn source_dir(dir: &Path, module: &str) {
    install(dir, "promo", module, "");
    atomic_write(
        &dir.join("routes.toml"),
        b"[routes.radio]\npolicy = \"promo\"\n",
    );
}

fn push_bundle(reg: &DockerRegistry, dir: &Path, reference: &str) -> Value {
    let host = reg.host();
    let out = oasis(
        &[
            "push-bundle",
            dir.to_str().unwrap(),
            reference,
            "--json",
            "--registry-plain-http",
            &host,
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "push-bundle: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn serve(dir: &Path, reg: &DockerRegistry, reference: &str) -> ServeProcess {
    let host = reg.host();
    ServeProcess::start(
        dir,
        &[
            "--bundle",
            reference,
            "--registry-plain-http",
            &host,
            "--registry-poll-ms",
            "200",
            "--registry-backoff-max-ms",
            "1000",
        ],
        &[("DOCKER_CONFIG", NO_DOCKER_CONFIG)],
    )
}

/// The digest of the version `promo` serves, if any.
async fn serving(server: &ServeProcess) -> Option<String> {
    let v: Value = reqwest::get(format!("{}/v1/policies", server.url))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["policies"]
        .as_array()?
        .iter()
        .find(|p| p["key"] == "promo")?["active"]["digest"]
        .as_str()
        .map(String::from)
}

/// The bundle's entry in `/v1/policies` `oci` (null before its first poll).
async fn bundle_status(server: &ServeProcess) -> Value {
    let v: Value = reqwest::get(format!("{}/v1/policies", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["oci"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| {
            e["reference"]
                .as_str()
                .is_some_and(|r| r.ends_with("(bundle)"))
        })
        .cloned()
        .unwrap_or(Value::Null)
}

async fn wait_serving(server: &ServeProcess, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while serving(server).await.as_deref() != Some(want) {
        assert!(
            Instant::now() < deadline,
            "never served {want}: {:?}",
            serving(server).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_is_followed_a_bad_one_refused_and_a_restart_without_the_registry_serves_the_last()
{
    let mut reg = DockerRegistry::start();
    let reference = format!("oci://{}/oasis/policy-set:prod", reg.host());
    let src = tempfile::tempdir().unwrap();
    source_dir(src.path(), BASELINE);
    let first = push_bundle(&reg, src.path(), &reference);
    let files: BTreeSet<&str> = first["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        BTreeSet::from(["promo.toml", "promo.wasm", "routes.toml"])
    );

    // A directory that is not a valid set is not pushed: exit 1, each problem.
    let broken = tempfile::tempdir().unwrap();
    atomic_write(
        &broken.path().join("p.toml"),
        b"module = \"missing.wasm\"\n",
    );
    let out = oasis(
        &[
            "push-bundle",
            broken.path().to_str().unwrap(),
            &reference,
            "--registry-plain-http",
            &reg.host(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("p.toml: module") && err.contains("is not in the bundle"),
        "{err}"
    );
    assert!(err.contains("not pushed"), "{err}");

    // A replica with an empty directory follows the tag.
    let served = tempfile::tempdir().unwrap();
    let dir = served.path().join("policies");
    let server = serve(&dir, &reg, &reference);
    wait_serving(&server, &digest(BASELINE)).await;
    let traffic = Traffic::start(&server.url, &["radio"]);

    // A new bundle: served without a restart.
    source_dir(src.path(), GUARDED_BOOST);
    let second = push_bundle(&reg, src.path(), &reference);
    wait_serving(&server, &digest(GUARDED_BOOST)).await;
    let record: Value =
        serde_json::from_slice(&std::fs::read(dir.join(bundle::STATE_FILE)).unwrap()).unwrap();
    assert_eq!(record["digest"], second["digest"]);

    // A bundle that is not a valid set, published by another tool (no
    // check): refused as a whole, the directory keeps its set.
    let client = RegistryClient::new(RegistryConfig {
        plain_http: BTreeSet::from([reg.host()]),
        ..Default::default()
    });
    let bad = vec![BundleFile {
        name: "promo.toml".into(),
        bytes: b"module = \"gone.wasm\"\n".to_vec(),
    }];
    bundle::push(&client, &OciRef::parse(&reference).unwrap(), bad)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let refused = server.logs.try_iter().any(|l| {
            l["message"] == "policy bundle not installed; the directory keeps its set"
                && l["error"].as_str().is_some_and(|e| e.contains("gone.wasm"))
        });
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "the bad bundle was not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(serving(&server).await, Some(digest(GUARDED_BOOST)));
    assert!(dir.join("promo.wasm").exists());
    // Reported where registry failures are: `/v1/policies` `oci`, `/readyz`.
    let deadline = Instant::now() + Duration::from_secs(30);
    let entry = loop {
        let entry = bundle_status(&server).await;
        if entry["status"] == "failing" {
            break entry;
        }
        assert!(Instant::now() < deadline, "not reported: {entry}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry["kind"], "invalid", "{entry}");
    assert_eq!(entry["manifest_digest"], second["digest"], "{entry}");
    let ready = reqwest::get(format!("{}/readyz", server.url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let text = ready.text().await.unwrap();
    assert!(
        text.contains("registry failing") && text.contains("gone.wasm"),
        "{text}"
    );
    let record: Value =
        serde_json::from_slice(&std::fs::read(dir.join(bundle::STATE_FILE)).unwrap()).unwrap();
    assert_eq!(record["digest"], second["digest"]);
    let digests = traffic.finish("radio").await;
    assert!(digests.contains(&digest(GUARDED_BOOST)));

    // `oasis pull-bundle` of the good one (pinned) installs it elsewhere.
    let pinned = format!("{}@{}", reference, second["digest"].as_str().unwrap());
    let elsewhere = tempfile::tempdir().unwrap();
    let out = oasis(
        &[
            "pull-bundle",
            &pinned,
            elsewhere.path().to_str().unwrap(),
            "--registry-plain-http",
            &reg.host(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(elsewhere.path().join("promo.wasm")).unwrap(),
        std::fs::read(GUARDED_BOOST).unwrap()
    );

    // Registry down, replica restarted: it serves the last installed set.
    drop(server);
    reg.kill();
    let server = serve(&dir, &reg, &reference);
    assert_eq!(serving(&server).await, Some(digest(GUARDED_BOOST)));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entry = bundle_status(&server).await;
        if entry["status"] == "failing" {
            assert_eq!(
                (&entry["kind"], &entry["serving_from"]),
                (&json!("unreachable"), &json!("store")),
                "{entry}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not reported: {entry}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let traffic = Traffic::start(&server.url, &["radio"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    traffic.finish("radio").await;
}
