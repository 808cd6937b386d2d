//! Decision logs end to end: `oasis serve` logs every sampled decision (and
//! its shadows'), and `oasis replay` reproduces the served versions' output
//! bit for bit, reports a tampered record, and compares a candidate.

use std::path::Path;

use oasis::decision_log::{DecisionLogConfig, DecisionRecord, Records};
use oasis::server::DecisionLogSettings;
use oasis_test_components::{BASELINE, EPSILON_GREEDY, GUARDED_BOOST, PID_PACING};
use serde_json::Value;

use crate::harness::example_body;
use crate::harness::server::{Harness, TestServer, atomic_write, install};

fn deployment(dir: &Path, log: &str) {
    install(dir, "base", BASELINE, "");
    install(dir, "p", GUARDED_BOOST, "");
    install(
        dir,
        "explore",
        EPSILON_GREEDY,
        "[settings]\nepsilon = 0.3\n",
    );
    atomic_write(
        &dir.join("routes.toml"),
        format!("[routes.radio]\npolicy = \"p\"\nbaseline = \"base\"\n{log}").as_bytes(),
    );
}

fn logging(
    dir: &Path,
    sample: f64,
    key: Option<Vec<u8>>,
) -> impl FnOnce(&mut oasis::server::ServerConfig) {
    let dir = dir.to_path_buf();
    move |c| {
        c.decision_log = Some(DecisionLogSettings {
            config: DecisionLogConfig {
                dir: Some(dir),
                pseudonymise_key: key,
                ..Default::default()
            },
            sample,
        })
    }
}

/// The example request on `route` as request `id` with `seed`.
fn request(route: &str, id: &str, seed: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&example_body()).unwrap();
    v["route"] = route.into();
    v["context"]["request_id"] = id.into();
    v["context"]["seed"] = seed.into();
    serde_json::to_vec(&v).unwrap()
}

fn records(dir: &Path) -> Vec<DecisionRecord> {
    Records::open(&[dir.to_path_buf()])
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn replay(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oasis"))
        .arg("replay")
        .args(args)
        .args(["--json", "--deadline-ms", "2000"])
        .env(
            "OASIS_CACHE_DIR",
            std::env::temp_dir().join("oasis-cli-test-cache"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logged_decisions_replay_bit_for_bit_and_a_candidate_is_compared() {
    let logs = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(|d| deployment(d, ""), logging(logs.path(), 1.0, None)).await;
    for i in 0..10u64 {
        for route in ["radio", "explore"] {
            let (status, v) = s
                .score(request(route, &format!("{route}-{i}"), 1000 + i))
                .await;
            assert_eq!(status, 200, "{v}");
        }
    }
    let policies = s.dir.path().to_path_buf();
    let keep = tempfile::tempdir().unwrap();
    // Keep the policy directory: shutting the server down removes it.
    for f in std::fs::read_dir(&policies).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, keep.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    s.shutdown().await;

    let logged = records(logs.path());
    assert_eq!(
        logged.len(),
        20,
        "every request logged, flushed at shutdown"
    );
    let r = logged.iter().find(|r| r.request_id == "radio-3").unwrap();
    assert_eq!(
        (
            r.route.as_str(),
            r.variant.as_str(),
            r.arm.as_str(),
            r.shadow
        ),
        ("radio", "stable", "stable", false)
    );
    assert_eq!(r.policy.name, "guarded-boost");
    assert_eq!(r.decisions.scores.len(), 300);
    let sent: Value = serde_json::from_slice(&request("radio", "radio-3", 1003)).unwrap();
    let kept: Value = serde_json::from_str(r.request.get()).unwrap();
    assert_eq!(kept, sent, "the request as received");

    // Replaying the served versions reproduces every decision bit for bit.
    let (code, v, err) = replay(&[
        "--logs",
        logs.path().to_str().unwrap(),
        "--policies",
        keep.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{v}\n{err}");
    assert_eq!(
        (
            v["replayed"].as_u64(),
            v["identical"].as_u64(),
            v["different"].as_u64()
        ),
        (Some(20), Some(20), Some(0)),
        "{v}"
    );

    // A candidate runs on the logged traffic and is compared.
    let (code, v, err) = replay(&[
        "--logs",
        logs.path().to_str().unwrap(),
        "--policies",
        keep.path().to_str().unwrap(),
        "--candidate",
        PID_PACING,
    ]);
    assert_eq!(code, Some(0), "{v}\n{err}");
    let d = &v["divergence_summary"];
    assert_eq!(d["samples"].as_u64(), Some(20), "{v}");
    assert!(d["mean"]["score_mae"].as_f64().unwrap() > 0.0, "{d}");
    assert!(
        v["promoted_per_campaign"].as_object().unwrap().len() >= 3,
        "{v}"
    );
    // Exposure per rights holder: each policy's promotions, as shares.
    let holders = v["exposure_share_per_holder"].as_object().unwrap();
    for side in 0..2 {
        let total: f64 = holders.values().map(|s| s[side].as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-9, "side {side}: {holders:?}");
    }

    // A record that no longer matches its version is reported by request id.
    let file = std::fs::read_dir(logs.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let victim = lines[0]["request_id"].as_str().unwrap().to_string();
    lines[0]["decisions"]["scores"][0] =
        Value::from(lines[0]["decisions"]["scores"][0].as_f64().unwrap() + 1e-12);
    let tampered: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, tampered + "{\"torn\": ").unwrap();
    let (code, v, _) = replay(&[
        "--logs",
        logs.path().to_str().unwrap(),
        "--policies",
        keep.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(
        (v["different"].as_u64(), v["skipped_lines"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["differences"][0][0], victim.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sampling_is_by_request_id_and_ids_can_be_pseudonymised() {
    let logs = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(
        |d| deployment(d, "[routes.radio.log]\nsample = 0.5\n"),
        logging(logs.path(), 0.0, Some(b"a secret key".to_vec())),
    )
    .await;
    let ids: Vec<String> = (0..40).map(|i| format!("req-{i}")).collect();
    for id in &ids {
        assert_eq!(s.score(request("radio", id, 7)).await.0, 200);
        assert_eq!(s.score(request("explore", id, 7)).await.0, 200);
    }
    s.shutdown().await;
    let logged = records(logs.path());
    let mut got: Vec<&str> = logged.iter().map(|r| r.request_id.as_str()).collect();
    got.sort();
    let mut expected: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| oasis::bucket::bucket(id, "oasis-decision-log") < 0.5)
        .collect();
    expected.sort();
    assert_eq!(
        got, expected,
        "radio at 50% by request id; explore (server default 0) never"
    );
    assert!(!expected.is_empty() && expected.len() < ids.len());
    for r in &logged {
        let req: Value = serde_json::from_str(r.request.get()).unwrap();
        let listener = req["context"]["listener_id"].as_str().unwrap();
        assert!(
            listener.starts_with("p:") && listener.len() == 34,
            "{listener}"
        );
        assert_eq!(
            req["context"]["request_id"],
            r.request_id.as_str(),
            "other fields as sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_give_an_off_policy_estimate_and_no_support_is_said() {
    let logs = tempfile::tempdir().unwrap();
    // Only the exploring route is logged: epsilon-greedy logs exact propensities.
    let s = TestServer::start_with(
        |d| deployment(d, "[routes.radio.log]\nsample = 0\n"),
        logging(logs.path(), 1.0, None),
    )
    .await;
    for i in 0..30u64 {
        assert_eq!(
            s.score(request("explore", &format!("e-{i}"), 50 + i))
                .await
                .0,
            200
        );
        assert_eq!(
            s.score(request("radio", &format!("r-{i}"), 50 + i)).await.0,
            200
        );
    }
    let keep = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(s.dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, keep.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    s.shutdown().await;

    // What listeners did: promoted campaign tracks were streamed, the other
    // campaign tracks skipped.
    let logged = records(logs.path());
    assert_eq!(logged.len(), 30);
    let mut events = String::new();
    let (mut decisions, mut streamed) = (0u64, 0u64);
    for r in &logged {
        let req: Value = serde_json::from_str(r.request.get()).unwrap();
        for (i, c) in req["candidates"].as_array().unwrap().iter().enumerate() {
            if c.get("campaign").is_none() {
                continue;
            }
            let promoted = r.decisions.reasons[i] & oasis_contract::reason::PROMOTED != 0;
            decisions += 1;
            streamed += u64::from(promoted);
            let event = if promoted { "stream" } else { "skip" };
            events.push_str(&format!(
                "{{\"request_id\": \"{}\", \"candidate_id\": {}, \"event\": \"{event}\"}}\n",
                r.request_id, c["id"]
            ));
        }
    }
    let outcomes = logs.path().join("outcomes.jsonl");
    std::fs::write(&outcomes, events).unwrap();
    let settings = keep.path().join("eps.json");
    std::fs::write(&settings, r#"{"epsilon": 0.3}"#).unwrap();
    let (logs_dir, keep_dir, outcomes) = (
        logs.path().to_str().unwrap().to_string(),
        keep.path().to_str().unwrap().to_string(),
        outcomes.to_str().unwrap().to_string(),
    );

    // The logging policy as candidate: every weight is 1, so the estimate is
    // the logged value exactly and the effective sample size is every decision.
    let (code, v, err) = replay(&[
        "--logs",
        &logs_dir,
        "--policies",
        &keep_dir,
        "--candidate",
        EPSILON_GREEDY,
        "--settings",
        settings.to_str().unwrap(),
        "--outcomes",
        &outcomes,
    ]);
    assert_eq!(code, Some(0), "{v}\n{err}");
    let e = &v["estimate"];
    assert_eq!(e["kind"], "value", "{v}");
    let truth = streamed as f64 / decisions as f64;
    assert!((e["snips"].as_f64().unwrap() - truth).abs() < 1e-12, "{e}");
    assert!(
        (e["logged_value"].as_f64().unwrap() - truth).abs() < 1e-12,
        "{e}"
    );
    assert_eq!(e["decisions"].as_u64(), Some(decisions));
    assert!(
        (e["ess"].as_f64().unwrap() - decisions as f64).abs() < 1e-6,
        "{e}"
    );
    let ci = &e["snips_ci"];
    assert!(
        ci["low"].as_f64().unwrap() <= truth && truth <= ci["high"].as_f64().unwrap(),
        "{e}"
    );

    // Deterministic logging (guarded-boost on radio) against an exploring
    // candidate: the logs never show what the candidate would often do, and
    // replay says "no support" instead of a number.
    let radio_logs = tempfile::tempdir().unwrap();
    // Only radio is logged: its route says 1.0, the server default is 0.
    let s = TestServer::start_with(
        |d| deployment(d, "[routes.radio.log]\nsample = 1.0\n"),
        logging(radio_logs.path(), 0.0, None),
    )
    .await;
    for i in 0..10u64 {
        assert_eq!(
            s.score(request("radio", &format!("d-{i}"), 80 + i)).await.0,
            200
        );
    }
    s.shutdown().await;
    assert!(!records(radio_logs.path()).is_empty(), "radio was logged");
    let (code, v, err) = replay(&[
        "--logs",
        radio_logs.path().to_str().unwrap(),
        "--policies",
        &keep_dir,
        "--candidate",
        EPSILON_GREEDY,
        "--settings",
        settings.to_str().unwrap(),
        "--outcomes",
        &outcomes,
    ]);
    assert_eq!(code, Some(0), "{v}\n{err}");
    assert_eq!(v["estimate"]["kind"], "no_support", "{v}");
    assert!(
        v["estimate"]["unsupported_share"].as_f64().unwrap() > 0.0,
        "{v}"
    );
}
