//! The Python gRPC client (`clients/python/oasis_client`), against the real
//! server: its own pytest suite (conversion rules, and generated code that
//! is current with the proto), its JSON → columnar conversion equal to the
//! server's own (`oasis_proto::json`) for the bundled request and every
//! example policy's fixture, and `oasis serve` with a gRPC listener on the
//! bundled example deployment (`examples/policies/`) answering the client
//! with the scores `POST /v1/score` gives for the same JSON request.

use std::path::Path;
use std::process::{Command, Output};

use oasis_proto::prost::Message;
use oasis_proto::v1;
use oasis_test_components::ROOT;
use serde_json::Value;

use crate::harness::example_body;
use crate::harness::process::ServeProcess;

/// `.venv/bin/python -m oasis_client args…` (the venv set up, and the
/// client generated, by `scripts/setup-python`).
fn client(args: &[&str]) -> Output {
    let venv = crate::python::venv();
    Command::new(venv.join("bin/python"))
        .args(["-m", "oasis_client"])
        .args(args)
        .current_dir(ROOT)
        .output()
        .expect("cannot run the venv's python")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_client_package_passes_its_own_tests() {
    let venv = crate::python::venv();
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "clients/python",
        ])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pytest clients/python failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

/// The message Python builds from `file` equals the one Rust builds from
/// the same bytes (NaN = NaN: compared through `Debug`, the map apart).
fn assert_same_conversion(file: &Path) {
    let body = std::fs::read(file).unwrap();
    let out = client(&["convert", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}: {}", file.display(), stderr(&out));
    let mut python = v1::ScoreRequest::decode(out.stdout.as_slice()).unwrap();
    let mut rust = oasis_proto::json::request(&body).unwrap();
    let (py_holders, rust_holders) = (
        std::mem::take(&mut python.rights_holders),
        std::mem::take(&mut rust.rights_holders),
    );
    assert_eq!(py_holders, rust_holders, "{}", file.display());
    let (python, rust) = (format!("{python:#?}"), format!("{rust:#?}"));
    if python != rust {
        // The first differing line, with the lines before it for context
        // (the whole message is thousands of lines).
        let (p, r): (Vec<&str>, Vec<&str>) = (python.lines().collect(), rust.lines().collect());
        let at = (0..p.len().max(r.len()))
            .find(|&i| p.get(i) != r.get(i))
            .unwrap();
        panic!(
            "{}: Python and Rust convert differently at line {at}:\n{}\npython: {:?}\nrust:   {:?}",
            file.display(),
            r[at.saturating_sub(8)..at.min(r.len())].join("\n"),
            p.get(at),
            r.get(at)
        );
    }
}

#[test]
fn the_python_conversion_is_the_servers() {
    assert_same_conversion(&Path::new(ROOT).join("examples/request.json"));
    let dir = tempfile::tempdir().unwrap();
    let mut fixtures = 0;
    for policy in std::fs::read_dir(Path::new(ROOT).join("policies")).unwrap() {
        let Ok(files) = std::fs::read_dir(policy.unwrap().path().join("fixtures")) else {
            continue;
        };
        for f in files {
            let f = f.unwrap().path();
            let fixture: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            let request = dir.path().join(f.file_name().unwrap());
            std::fs::write(&request, serde_json::to_vec(&fixture["request"]).unwrap()).unwrap();
            assert_same_conversion(&request);
            fixtures += 1;
        }
    }
    assert!(fixtures >= 10, "only {fixtures} fixtures found");
}

/// A policy directory laid out as `scripts/serve` lays it: the bundled
/// manifests and routes of `examples/policies/`, and each manifest's
/// `module` built from the policy crate of the same name.
fn example_deployment(dir: &Path) {
    for entry in std::fs::read_dir(Path::new(ROOT).join("examples/policies")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        let (Some(key), Some("toml")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if key == "routes" {
            continue;
        }
        let manifest: toml::Value =
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let module = manifest["module"].as_str().unwrap();
        let (_, wasm) = oasis_test_components::ALL
            .iter()
            .find(|(name, _)| *name == key)
            .unwrap_or_else(|| panic!("no component for the example policy {key}"));
        std::fs::copy(wasm, dir.join(module)).unwrap();
    }
}

/// The fields both answers share (timings differ; gRPC sends no `debug`
/// unless asked).
fn comparable(v: &Value) -> Value {
    let keys = [
        "request_id",
        "route",
        "policy",
        "variant",
        "arm",
        "scores",
        "fallback",
    ];
    keys.iter()
        .filter_map(|k| v.get(*k).map(|x| (k.to_string(), x.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_scores_like_the_http_api_on_the_example_deployment() {
    let dir = tempfile::tempdir().unwrap();
    example_deployment(dir.path());
    // No delivery state: a request scored twice (HTTP, then gRPC) is scored
    // from the same state.
    let server = ServeProcess::start(
        dir.path(),
        &["--grpc-listen", "127.0.0.1:0", "--state", "off"],
        &[],
    );
    let grpc = server.grpc_addr().expect("gRPC API listening logged");
    let request = Path::new(ROOT).join("examples/request.json");
    let http = reqwest::Client::new();
    for route in ["radio", "autoplay", "mixes", "fairness", "explore"] {
        let out = client(&[
            "score",
            "--target",
            &grpc,
            "--route",
            route,
            request.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{route}: {}", stderr(&out));
        let python: Value = serde_json::from_slice(&out.stdout).unwrap();

        let mut body: Value = serde_json::from_slice(&example_body()).unwrap();
        body["route"] = route.into();
        let r = http
            .post(format!("{}/v1/score", server.url))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{route}");
        let json: Value = r.json().await.unwrap();

        assert_eq!(python["route"], route);
        assert_eq!(python["scores"].as_array().unwrap().len(), 300, "{route}");
        assert_eq!(
            comparable(&python),
            comparable(&json),
            "{route}: the Python client's answer differs from POST /v1/score's"
        );
    }

    // A refusal comes back with the server's kind and field.
    let mut bad: Value = serde_json::from_slice(&example_body()).unwrap();
    bad["candidates"][3]["relevance"] = (-1.0).into();
    let bad_file = dir.path().join("bad.json");
    std::fs::write(&bad_file, serde_json::to_vec(&bad).unwrap()).unwrap();
    let out = client(&["score", "--target", &grpc, bad_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("invalid_request field=candidates[3].relevance code=INVALID_ARGUMENT"),
        "{err}"
    );
    // Not a request at all: named before anything is sent.
    std::fs::write(&bad_file, br#"{"context": {}, "candidates": []}"#).unwrap();
    let out = client(&["score", "--target", &grpc, bad_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(at `context.request_id`)"),
        "{}",
        stderr(&out)
    );
}
