//! Decision logs end to end: `oasis serve` logs every sampled decision (and
//! its shadows'), and `oasis replay` reproduces the served versions' output
//! bit for bit, reports a tampered record, and compares a candidate.

use std::path::Path;

use axum::http::Method;
use oasis::decision_log::{DecisionLogConfig, DecisionRecord, LogFormat, Records};
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
                // These tests read and tamper with the lines; the Parquet
                // form is tested in `parquet_log`.
                format: LogFormat::Jsonl,
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

fn digest_of(path: &Path) -> String {
    oasis::cache::digest(&std::fs::read(path).unwrap())
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

    // Candidates run on the logged traffic and are compared: a module, and
    // a manifest (module and settings as served: here the `p` policy itself).
    let manifest = keep.path().join("p.toml");
    let (code, v, err) = replay(&[
        "--logs",
        logs.path().to_str().unwrap(),
        "--policies",
        keep.path().to_str().unwrap(),
        "--candidate",
        PID_PACING,
        "--candidate",
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{v}\n{err}");
    let candidates = v["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 2, "{v}");
    assert_eq!(candidates[0]["name"], "pid_pacing", "{v}");
    assert_eq!(candidates[1]["name"], "p", "named after the manifest");
    let d = &candidates[0]["divergence"];
    assert_eq!(d["samples"].as_u64(), Some(20), "{v}");
    assert!(d["mean"]["score_mae"].as_f64().unwrap() > 0.0, "{d}");
    assert!(
        candidates[0]["promoted_per_campaign"]
            .as_object()
            .unwrap()
            .len()
            >= 3,
        "{v}"
    );
    // The served policy as a candidate agrees with the log on its own
    // requests (radio), and not on explore's (epsilon-greedy served those).
    let same = &candidates[1]["divergence"]["mean"];
    assert!(same["topk_overlap"].as_f64().unwrap() < 1.0, "{same}");
    assert_eq!(
        candidates[1]["digest"],
        digest_of(&keep.path().join("p.wasm"))
    );
    // Exposure per rights holder: each policy's promotions, as shares.
    for side in [&v["logged"], &candidates[0], &candidates[1]] {
        let holders = side["exposure_share_per_holder"].as_object().unwrap();
        let total: f64 = holders.values().map(|s| s.as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{holders:?}");
        let per_campaign: u64 = side["promoted_per_campaign"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(per_campaign, side["promoted"].as_u64().unwrap(), "{side}");
    }
    assert!(v["logged"]["promoted"].as_u64().unwrap() > 0, "{v}");

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
async fn outcomes_posted_to_the_server_give_off_policy_estimates_and_no_support_is_said() {
    let logs = tempfile::tempdir().unwrap();
    // Only the exploring route is logged: epsilon-greedy logs exact propensities.
    let s = TestServer::start_with(
        |d| deployment(d, "[routes.radio.log]\nsample = 0\n"),
        logging(logs.path(), 1.0, None),
    )
    .await;
    // What listeners did, posted as the server answers: promoted campaign
    // tracks were streamed, the other campaign tracks skipped.
    let (mut decisions, mut streamed) = (0u64, 0u64);
    for i in 0..30u64 {
        let id = format!("e-{i}");
        let body = request("explore", &id, 50 + i);
        let (status, answer) = s.score(body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            s.score(request("radio", &format!("r-{i}"), 50 + i)).await.0,
            200
        );
        let sent: Value = serde_json::from_slice(&body).unwrap();
        let mut events = String::new();
        for (c, scored) in sent["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .zip(answer["scores"].as_array().unwrap())
        {
            if c.get("campaign").is_none() {
                continue;
            }
            let promoted = scored["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "promoted");
            decisions += 1;
            streamed += u64::from(promoted);
            let event = if promoted { "stream" } else { "skip" };
            events.push_str(&format!(
                "{{\"request_id\": \"{id}\", \"candidate_id\": {}, \"event\": \"{event}\"}}\n",
                c["id"]
            ));
        }
        let r = s
            .send(Method::POST, "/v1/outcomes", events.into_bytes())
            .await;
        assert_eq!(r.status, 202, "{}", r.json());
    }
    // A bad batch is refused whole, naming the event.
    let r = s
        .send(
            Method::POST,
            "/v1/outcomes",
            b"{\"request_id\": \"e-0\", \"candidate_id\": \"x\", \"event\": \"stream\"}\n{\"request_id\": \"e-0\", \"candidate_id\": \"\", \"event\": \"stream\"}".to_vec(),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (422, Some("events[1].candidate_id"))
    );
    let metrics = s.metrics().await;
    let keep = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(s.dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, keep.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    s.shutdown().await;
    assert!(
        metrics.contains("oasis_outcome_events{state=\"written\"}"),
        "{metrics}"
    );

    let logged = records(logs.path());
    assert_eq!(logged.len(), 30);
    let outcome_files: Vec<String> = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("outcomes-"))
        .collect();
    assert_eq!(outcome_files.len(), 1, "{outcome_files:?}");
    let settings = keep.path().join("eps.json");
    std::fs::write(&settings, r#"{"epsilon": 0.3}"#).unwrap();
    let wider = keep.path().join("eps-wide.json");
    std::fs::write(&wider, r#"{"epsilon": 0.6}"#).unwrap();
    let (logs_dir, keep_dir) = (
        logs.path().to_str().unwrap().to_string(),
        keep.path().to_str().unwrap().to_string(),
    );
    // The log directory holds decisions and outcomes; each reader takes its own.
    let outcomes = logs_dir.clone();

    // The logging policy as a candidate: every weight is 1, so the estimate
    // is the logged value exactly and the effective sample size is every
    // decision. A second, more exploring candidate gets its own estimate.
    let html = tempfile::tempdir().unwrap();
    let html_path = html.path().join("report.html").display().to_string();
    let logger = format!("{EPSILON_GREEDY}={}", settings.display());
    let explorer = format!("{EPSILON_GREEDY}={}", wider.display());
    let (code, v, err) = replay(&[
        "--logs",
        &logs_dir,
        "--policies",
        &keep_dir,
        "--candidate",
        &logger,
        "--candidate",
        &explorer,
        "--outcomes",
        &outcomes,
        "--measure-scaling",
        "--html",
        &html_path,
    ]);
    assert_eq!(code, Some(0), "{v}\n{err}");
    assert_eq!(v["candidates"][0]["name"], "epsilon_greedy[eps]", "{v}");
    assert_eq!(v["candidates"][1]["name"], "epsilon_greedy[eps-wide]");
    let e = &v["candidates"][0]["estimate"];
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
    let wide = &v["candidates"][1]["estimate"];
    assert_eq!(wide["kind"], "value", "{v}");
    assert!(
        wide["ess"].as_f64().unwrap() < decisions as f64,
        "another policy's weights vary: {wide}"
    );
    // The HTML report shows the same figures, self-contained.
    let page = std::fs::read_to_string(&html_path).unwrap();
    for needle in [
        "epsilon_greedy[eps-wide]",
        "Estimated value",
        "<svg",
        "Score distributions",
        "promoted tracks per campaign",
        "rights holder",
    ] {
        assert!(page.contains(needle), "{needle} not in the report");
    }
    assert!(
        !page.contains("<script") && !page.contains("http"),
        "self-contained"
    );
    let snips = format!("{:.4}", e["snips"].as_f64().unwrap());
    assert!(
        page.contains(&snips),
        "the estimate {snips} is in the report"
    );
    let scaling = &v["scaling"];
    assert!(
        scaling["single_thread_records_per_s"].as_f64().unwrap() > 0.0
            && scaling["efficiency"].as_f64().unwrap() > 0.0,
        "{v}"
    );

    let counts = &v["outcomes"];
    assert_eq!(counts["events"].as_u64(), Some(decisions), "{v}");
    assert_eq!(counts["matched_requests"].as_u64(), Some(30), "{v}");

    // A record whose decision columns are shorter than its candidates is an
    // error of that record (it panicked replay with --outcomes before).
    let tampered = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    for (i, r) in logged.iter().enumerate() {
        let mut r = r.clone();
        if i == 0 {
            r.decisions.propensity.pop();
        }
        lines.push_str(&serde_json::to_string(&r).unwrap());
        lines.push('\n');
    }
    std::fs::write(
        tampered
            .path()
            .join("decisions-20260101T000000Z-000000.jsonl"),
        lines,
    )
    .unwrap();
    for with_outcomes in [true, false] {
        let mut args = vec![
            "--logs",
            tampered.path().to_str().unwrap(),
            "--policies",
            &keep_dir,
            "--candidate",
            &logger,
        ];
        if with_outcomes {
            args.extend(["--outcomes", &outcomes]);
        }
        let (code, v, err) = replay(&args);
        assert_eq!(code, Some(1), "{v}\n{err}");
        assert_eq!(
            (v["errors"].as_u64(), v["replayed"].as_u64()),
            (Some(1), Some(29)),
            "{v}"
        );
        let why = v["error_samples"][0][1].as_str().unwrap();
        assert!(why.contains("propensities for"), "{why}");
    }

    // A fallback-served record (the baseline decided, deterministically)
    // is left out of the estimates and counted; it made every candidate
    // "no support" before.
    let with_fallback = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    for (i, r) in logged.iter().enumerate() {
        let mut r = r.clone();
        if i == 0 {
            r.variant = "fallback".into();
            r.arm = "baseline".into();
            r.decisions.propensity = r
                .decisions
                .reasons
                .iter()
                .map(|b| {
                    if b & oasis_contract::reason::PROMOTED != 0 {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
        }
        lines.push_str(&serde_json::to_string(&r).unwrap());
        lines.push('\n');
    }
    std::fs::write(
        with_fallback
            .path()
            .join("decisions-20260101T000000Z-000000.jsonl"),
        lines,
    )
    .unwrap();
    let (code, v, err) = replay(&[
        "--logs",
        with_fallback.path().to_str().unwrap(),
        "--policies",
        &keep_dir,
        "--candidate",
        &logger,
        "--outcomes",
        &outcomes,
    ]);
    assert_eq!(code, Some(0), "{v}\n{err}");
    assert_eq!(v["outcomes"]["fallback_excluded"].as_u64(), Some(1), "{v}");
    assert_eq!(v["candidates"][0]["estimate"]["kind"], "value", "{v}");

    // Outcomes of another log match no logged request: counted, no
    // estimate, and the replay fails (it said 0.0000 [0.0000, 0.0000]).
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(
        foreign.path().join("outcomes-x.jsonl"),
        "{\"request_id\": \"elsewhere-1\", \"candidate_id\": \"t\", \"event\": \"stream\"}\nnot an event\n",
    )
    .unwrap();
    let (code, v, err) = replay(&[
        "--logs",
        &logs_dir,
        "--policies",
        &keep_dir,
        "--candidate",
        &logger,
        "--outcomes",
        foreign.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{v}\n{err}");
    let counts = &v["outcomes"];
    assert_eq!(
        (
            counts["events"].as_u64(),
            counts["skipped"].as_u64(),
            counts["matched_requests"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{v}"
    );
    assert!(v["candidates"][0]["estimate"].is_null(), "{v}");

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
    // Outcomes of these requests (replay makes no estimate from outcomes
    // that match no logged request).
    let radio_outcomes = tempfile::tempdir().unwrap();
    std::fs::write(
        radio_outcomes.path().join("outcomes-radio.jsonl"),
        (0..10)
            .map(|i| {
                format!(
                    "{{\"request_id\": \"d-{i}\", \"candidate_id\": \"x\", \"event\": \"skip\"}}\n"
                )
            })
            .collect::<String>(),
    )
    .unwrap();
    let outcomes = radio_outcomes.path().to_str().unwrap().to_string();
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
    let e = &v["candidates"][0]["estimate"];
    assert_eq!(e["kind"], "no_support", "{v}");
    assert!(e["unsupported_share"].as_f64().unwrap() > 0.0, "{v}");
}

/// An empty log directory is an error that says so, not a report of zero
/// records.
#[test]
fn an_empty_log_directory_says_no_decision_files_were_found() {
    let logs = tempfile::tempdir().unwrap();
    let policies = tempfile::tempdir().unwrap();
    install(policies.path(), "base", BASELINE, "");
    let (code, _, err) = replay(&[
        "--logs",
        logs.path().to_str().unwrap(),
        "--policies",
        policies.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no decision log files"), "{err}");
}
