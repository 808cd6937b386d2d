//! Signed modules against a real registry (`docker-registry`): `oasis push
//! --sign-key` writes a cosign-layout signature, `oasis serve --verify-key`
//! (or a manifest's `verify_key`) loads only modules signed by a configured
//! key, and `oasis pull --verify-key` refuses the others. Keys are made in
//! the test (p256, from a seeded ChaCha8).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use oasis::control::source::oci::{OciRef, RegistryClient, RegistryConfig};
use oasis::control::source::signing::{self, PrivateKey};
use oasis_test_components::{BASELINE, GUARDED_BOOST};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt as _, SeedableRng as _};
use serde_json::Value;

use crate::harness::process::ServeProcess;
use crate::harness::registry::DockerRegistry;
use crate::harness::server::{atomic_write, digest};

const NO_DOCKER_CONFIG: &str = "/nonexistent/oasis-test-docker-config";

/// A fresh P-256 key pair written as `name.pem` (PKCS#8) and `name.pub`
/// (SubjectPublicKeyInfo) in `dir`; returns both paths.
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(name.bytes().map(u32::from).sum::<u32>());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let key = loop {
        let bytes: [u8; 32] = rng.random();
        if let Ok(k) = SigningKey::from_slice(&bytes) {
            break k;
        }
    };
    let (private, public) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.pub")),
    );
    std::fs::write(
        &private,
        key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    std::fs::write(
        &public,
        key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    (private, public)
}

fn oasis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oasis"))
        .args(args)
        .env(
            "OASIS_CACHE_DIR",
            std::env::temp_dir().join("oasis-cli-test-cache"),
        )
        .env("DOCKER_CONFIG", NO_DOCKER_CONFIG)
        .output()
        .unwrap()
}

/// `oasis push --json MODULE REF [--sign-key K]`; its JSON report.
fn push(reg: &DockerRegistry, module: &str, reference: &str, sign_key: Option<&Path>) -> Value {
    let host = reg.host();
    let mut args = vec![
        "push",
        module,
        reference,
        "--json",
        "--registry-plain-http",
        &host,
    ];
    let key;
    if let Some(k) = sign_key {
        key = k.display().to_string();
        args.extend(["--sign-key", &key]);
    }
    let out = oasis(&args);
    assert!(
        out.status.success(),
        "oasis push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn client(reg: &DockerRegistry) -> RegistryClient {
    RegistryClient::new(RegistryConfig {
        plain_http: [reg.host()].into(),
        ..Default::default()
    })
}

fn manifest(dir: &Path, key: &str, module: &str, extra: &str) {
    atomic_write(
        &dir.join(format!("{key}.toml")),
        format!("module = \"{module}\"\n{extra}\n[limits]\ndeadline_ms = 2000\n").as_bytes(),
    );
}

fn serve(dir: &Path, reg: &DockerRegistry, extra: &[&str]) -> ServeProcess {
    let host = reg.host();
    let mut args = vec![
        "--registry-plain-http",
        &host,
        "--registry-poll-ms",
        "200",
        "--registry-backoff-max-ms",
        "1000",
    ];
    args.extend_from_slice(extra);
    ServeProcess::start(dir, &args, &[("DOCKER_CONFIG", NO_DOCKER_CONFIG)])
}

async fn policies(server: &ServeProcess) -> Value {
    reqwest::get(format!("{}/v1/policies", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn policy<'a>(v: &'a Value, key: &str) -> &'a Value {
    v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == key)
        .unwrap_or_else(|| panic!("no policy {key}: {v}"))
}

fn failure(v: &Value, key: &str) -> String {
    policy(v, key)["failure"]["error"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn wait_for(server: &ServeProcess, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = policies(server).await;
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_modules_signed_by_a_configured_key_load_and_pull() {
    let reg = DockerRegistry::start();
    let keys = tempfile::tempdir().unwrap();
    let (trusted, trusted_pub) = keypair(keys.path(), "trusted");
    let (other, _) = keypair(keys.path(), "other");
    let r = |repo: &str| format!("{}/oasis/{repo}:v1", reg.host());

    let signed = push(&reg, BASELINE, &r("signed"), Some(&trusted));
    let manifest_digest = signed["manifest_digest"].as_str().unwrap();
    assert_eq!(
        signed["signature"],
        format!(
            "{}/oasis/signed:{}",
            reg.host(),
            signing::signature_tag(manifest_digest)
        )
    );
    // Laid out where cosign looks: the `.sig` tag, a simple-signing layer
    // whose payload names the manifest digest and the repository.
    let c = client(&reg);
    let oref = OciRef::parse(&r("signed")).unwrap();
    let layers = c.signatures(&oref, manifest_digest).await.unwrap();
    assert_eq!(layers.len(), 1);
    let payload: Value = serde_json::from_slice(&layers[0].payload).unwrap();
    assert_eq!(
        payload["critical"]["image"]["docker-manifest-digest"],
        manifest_digest
    );
    assert_eq!(
        payload["critical"]["identity"]["docker-reference"],
        format!("{}/oasis/signed", reg.host())
    );
    assert_eq!(payload["critical"]["type"], signing::PAYLOAD_TYPE);

    push(&reg, BASELINE, &r("unsigned"), None);
    push(&reg, BASELINE, &r("other"), Some(&other));
    // Tampered: a valid signature by the trusted key with one byte changed.
    let tampered = push(&reg, BASELINE, &r("tampered"), Some(&trusted));
    let t_ref = OciRef::parse(&r("tampered")).unwrap();
    let t_digest = tampered["manifest_digest"].as_str().unwrap();
    let layer = c.signatures(&t_ref, t_digest).await.unwrap().remove(0);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut sig = b64.decode(layer.signature.unwrap()).unwrap();
    let last = sig.len() - 1;
    sig[last] ^= 0x01;
    c.push_signature_layer(&t_ref, t_digest, layer.payload, b64.encode(&sig))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    for repo in ["signed", "unsigned", "other", "tampered"] {
        manifest(dir.path(), repo, &format!("oci://{}", r(repo)), "");
    }
    let server = serve(
        dir.path(),
        &reg,
        &["--verify-key", trusted_pub.to_str().unwrap()],
    );
    let p = wait_for(&server, "every module judged", |p| {
        ["unsigned", "other", "tampered"]
            .iter()
            .all(|k| !failure(p, k).is_empty())
            && policy(p, "signed")["status"] == "active"
    })
    .await;
    assert_eq!(policy(&p, "signed")["active"]["digest"], digest(BASELINE));
    let unsigned = failure(&p, "unsigned");
    assert!(
        unsigned.contains("refused: unsigned") && unsigned.contains("trusted.pub"),
        "{unsigned}"
    );
    let other_e = failure(&p, "other");
    assert!(
        other_e.contains("not signed by a configured key") && other_e.contains("does not verify"),
        "{other_e}"
    );
    let tampered_e = failure(&p, "tampered");
    assert!(
        tampered_e.contains("not signed by a configured key"),
        "{tampered_e}"
    );
    for k in ["unsigned", "other", "tampered"] {
        assert!(policy(&p, k)["active"].is_null(), "{k} serves: {p:#}");
    }
    let score = reqwest::Client::new()
        .post(format!("{}/v1/score", server.url))
        .body(crate::harness::server::routed(
            "signed",
            &crate::harness::example_body(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(score.status(), 200);

    // `oasis pull --verify-key`: the signed one is written; the others not.
    let out_dir = tempfile::tempdir().unwrap();
    let host = reg.host();
    let pull = |repo: &str| {
        let out = out_dir.path().join(format!("{repo}.wasm"));
        let res = oasis(&[
            "pull",
            &r(repo),
            "-o",
            out.to_str().unwrap(),
            "--verify-key",
            trusted_pub.to_str().unwrap(),
            "--registry-plain-http",
            &host,
        ]);
        (res, out)
    };
    let (res, file) = pull("signed");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(String::from_utf8_lossy(&res.stdout).contains("signature verified with"));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(BASELINE).unwrap()
    );
    for (repo, says) in [
        ("unsigned", "unsigned"),
        ("other", "not signed by a configured key"),
        ("tampered", "not signed by a configured key"),
    ] {
        let (res, file) = pull(repo);
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{repo}: {err}");
        assert!(err.contains(says), "{repo}: {err}");
        assert!(!file.exists(), "{repo} was written");
    }
    // A bad key file is named before anything is pushed.
    let bad = oasis(&[
        "push",
        BASELINE,
        &r("x"),
        "--sign-key",
        trusted_pub.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--sign-key") && err.contains("PKCS#8"),
        "{err}"
    );
}

/// A manifest's `verify_key` (no `--verify-key`): a tag moved to an
/// unsigned version is refused with its reason while the signed one keeps
/// serving; signing it afterwards (the same digest) loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_verify_key_refuses_an_unsigned_version_and_the_last_good_keeps_serving() {
    let reg = DockerRegistry::start();
    let keys = tempfile::tempdir().unwrap();
    let (trusted, trusted_pub) = keypair(keys.path(), "trusted");
    let reference = format!("{}/oasis/promo:stable", reg.host());
    push(&reg, BASELINE, &reference, Some(&trusted));
    let dir = tempfile::tempdir().unwrap();
    manifest(
        dir.path(),
        "promo",
        &format!("oci://{reference}"),
        &format!("verify_key = \"{}\"", trusted_pub.display()),
    );
    let server = serve(dir.path(), &reg, &[]);
    let v1 = digest(BASELINE);
    wait_for(&server, "v1 serving", |p| {
        policy(p, "promo")["active"]["digest"] == v1
    })
    .await;

    let pushed = push(&reg, GUARDED_BOOST, &reference, None);
    let p = wait_for(&server, "v2 refused", |p| {
        failure(p, "promo").contains("unsigned")
    })
    .await;
    assert_eq!(
        policy(&p, "promo")["active"]["digest"],
        v1,
        "the last good version serves: {p:#}"
    );
    let e = failure(&p, "promo");
    assert!(
        e.contains(pushed["manifest_digest"].as_str().unwrap()),
        "{e}"
    );

    // Signed after the push: the poller reads the signature and v2 loads.
    let key = PrivateKey::load(&trusted).unwrap();
    client(&reg)
        .push_signature(
            &OciRef::parse(&reference).unwrap(),
            pushed["manifest_digest"].as_str().unwrap(),
            &key,
        )
        .await
        .unwrap();
    let v2 = digest(GUARDED_BOOST);
    wait_for(&server, "v2 serving once signed", |p| {
        policy(p, "promo")["active"]["digest"] == v2
    })
    .await;

    // A manifest naming a key that is not one is refused at its line.
    manifest(dir.path(), "bad", "bad.wasm", "verify_key = \"nope.pub\"");
    let out = oasis(&["check", dir.path().join("bad.toml").to_str().unwrap()]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("verify_key") && text.contains("applies to registry modules"),
        "{text}"
    );
}
