//! Contract 0.3.0 (`wit/0.3.0/`: the numeric columns as little-endian byte
//! buffers) beside 0.1.0 and 0.2.0: the Python SDK's components (built
//! against 0.3.0) serve next to older Rust and 0.1.0 components on one
//! server, and a 0.3.0 answer whose buffer is not the candidate count times
//! its width is invalid output naming the column, served by the fallback.

use oasis::error::CallError;
use oasis::request::{self, Validate};
use oasis::{Limits, Policy};
use oasis_test_components::{BASELINE, CONTRACT_0_3, GUARDED_BOOST, ROOT};

use crate::harness::example_body;
use crate::harness::server::{Harness, TestApp, install, routed};

/// The example request with its id set to `id` (the 0.3.0 test guest
/// answers `short-<column>` with that column one byte short).
fn example_with_id(id: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&example_body()).unwrap();
    v["context"]["request_id"] = id.into();
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_3_0_python_component_serves_beside_0_1_0_and_0_2_0_ones() {
    let python = crate::python::build("policies-python/guarded_boost");
    let legacy = format!("{ROOT}/tests/fixtures/contract-0.1.0/pid_pacing.wasm");
    let s = TestApp::start(|d| {
        install(d, "legacy", &legacy, "");
        install(d, "rust", GUARDED_BOOST, "");
        install(d, "python", &python, "");
        install(d, "bytes", CONTRACT_0_3, "");
    })
    .await;
    let p = s.policies().await;
    let contract = |key: &str| {
        p["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .map(|e| e["active"]["contract"].clone())
    };
    assert_eq!(contract("legacy"), Some("0.1.0".into()), "{p}");
    assert_eq!(contract("rust"), Some("0.2.0".into()), "{p}");
    assert_eq!(contract("python"), Some("0.3.0".into()), "{p}");
    assert_eq!(contract("bytes"), Some("0.3.0".into()), "{p}");
    let mut answers = Vec::new();
    for route in ["legacy", "rust", "python", "bytes"] {
        let (status, v) = s.score(routed(route, &example_body())).await;
        assert_eq!(status, 200, "{route}: {v}");
        assert_eq!(v["variant"], "stable", "{route}: {v}");
        answers.push(v);
    }
    // The Python port answers as the Rust policy does, through the server.
    assert_eq!(answers[1]["scores"], answers[2]["scores"]);
    // The raw 0.3.0 passthrough: relevance back, decoded from its bytes.
    let example: serde_json::Value = serde_json::from_slice(&example_body()).unwrap();
    for (c, out) in example["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .zip(answers[3]["scores"].as_array().unwrap())
    {
        assert_eq!(out["id"], c["id"]);
        assert_eq!(out["score"], c["relevance"], "{out}");
    }
}

#[test]
fn a_0_3_0_buffer_of_the_wrong_length_is_invalid_output_naming_the_column() {
    let runtime = oasis::Runtime::new(Default::default()).unwrap();
    let policy = Policy::load_file(&runtime, CONTRACT_0_3.as_ref(), "{}", Limits::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.info().contract, "0.3.0");
    let score = |id: &str| {
        let body = example_with_id(id);
        let req = request::parse(&body).unwrap().validate(1000).unwrap();
        let n = req.candidates.len();
        (policy.score(&req), n)
    };
    let (ok, n) = score("whole");
    let ok = ok.unwrap().decisions;
    assert_eq!(ok.scores.len(), n);
    for (column, width) in [
        ("scores", 8),
        ("eligible", 1),
        ("reasons", 2),
        ("propensity", 8),
    ] {
        let (out, _) = score(&format!("short-{column}"));
        match out {
            Err(CallError::InvalidOutput(text)) => assert_eq!(
                text,
                format!(
                    "`{column}` is {} bytes; {n} candidates need {} ({width} bytes each)",
                    n * width - 1,
                    n * width
                )
            ),
            other => panic!("{column}: expected invalid output, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_3_0_buffer_of_the_wrong_length_is_served_by_the_fallback() {
    let s = TestApp::start(|d| {
        install(d, "baseline", BASELINE, "");
        install(d, "bytes", CONTRACT_0_3, "fallback = \"baseline\"\n");
    })
    .await;
    let (status, v) = s
        .score(routed("bytes", &example_with_id("short-propensity")))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["variant"], "fallback", "{v}");
    assert_eq!(v["fallback"]["error_kind"], "invalid_output", "{v}");
    assert_eq!(v["fallback"]["failed"]["name"], "contract-0-3", "{v}");
    let error = v["fallback"]["error"].as_str().unwrap();
    assert!(error.contains("`propensity` is"), "{error}");
    assert_eq!(v["policy"]["name"], "baseline", "{v}");
}
