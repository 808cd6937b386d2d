//! The Parquet decision log end to end: the same traffic served twice, once
//! logged as Parquet and once as JSON lines; both logs hold the same
//! decisions, `oasis replay` gives the same determinism, divergence and
//! off-policy figures on either, and the Parquet files read in DuckDB and
//! pandas/pyarrow (the repository's `.venv`) give the JSON form's decisions
//! and run the README's three queries.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use axum::http::Method;
use oasis::decision_log::{DecisionLogConfig, DecisionRecord, LogFormat, Records};
use oasis::server::DecisionLogSettings;
use oasis_contract::reason::PROMOTED;
use oasis_test_components::{BASELINE, EPSILON_GREEDY, GUARDED_BOOST, PID_PACING, ROOT};
use serde_json::Value;

use crate::harness::example_body;
use crate::harness::server::{Harness, TestServer, atomic_write, install};

fn deployment(dir: &Path) {
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
        b"[routes.radio]\npolicy = \"p\"\nbaseline = \"base\"\n",
    );
}

/// The example request on `route` as request `id` with `seed`.
fn request(route: &str, id: &str, seed: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&example_body()).unwrap();
    v["route"] = route.into();
    v["context"]["request_id"] = id.into();
    v["context"]["seed"] = seed.into();
    serde_json::to_vec(&v).unwrap()
}

/// Serves the same 24 requests (12 on radio, 12 on explore) with the log in `logs` in `format`, posts an outcome per
/// campaign track of explore's answers, and returns a copy of the policy
/// directory.
async fn serve(logs: &Path, format: LogFormat) -> tempfile::TempDir {
    let dir = logs.to_path_buf();
    let s = TestServer::start_with(deployment, move |c| {
        c.decision_log = Some(DecisionLogSettings {
            config: DecisionLogConfig {
                dir: Some(dir),
                format,
                ..Default::default()
            },
            sample: 1.0,
        })
    })
    .await;
    for i in 0..12u64 {
        let (status, v) = s
            .score(request("radio", &format!("radio-{i}"), 100 + i))
            .await;
        assert_eq!(status, 200, "{v}");
        let id = format!("explore-{i}");
        let body = request("explore", &id, 200 + i);
        let (status, answer) = s.score(body.clone()).await;
        assert_eq!(status, 200, "{answer}");
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
    let keep = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(s.dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, keep.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    s.shutdown().await;
    keep
}

fn records(dir: &Path) -> HashMap<(String, bool), DecisionRecord> {
    Records::open(&[dir.to_path_buf()])
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            ((r.request_id.clone(), r.shadow), r)
        })
        .collect()
}

fn replay(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_oasis"))
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

/// Equal, numbers within 1e-12 (a mean over records is summed in the
/// order the workers finish them, which varies run to run).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() <= 1e-12
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

/// The SQL blocks of the README's "Decision logs in DuckDB" section.
fn readme_queries() -> Vec<String> {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Decision logs in DuckDB"))
        .expect("the README has a \"Decision logs in DuckDB\" section");
    let queries: Vec<String> = section
        .split("```sql\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect();
    assert_eq!(queries.len(), 3, "three queries: {section}");
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parquet_logs_hold_the_json_decisions_replay_the_same_and_read_in_duckdb_and_pandas() {
    let (parquet, jsonl) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let keep = serve(parquet.path(), LogFormat::Parquet).await;
    serve(jsonl.path(), LogFormat::Jsonl).await;
    let names: Vec<String> = std::fs::read_dir(parquet.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| n.ends_with(".parquet")) && names.len() == 2,
        "a decision file and an outcome file, closed: {names:?}"
    );

    // The same decisions, record for record.
    let (p, j) = (records(parquet.path()), records(jsonl.path()));
    assert_eq!(p.len(), 24);
    assert_eq!(
        p.keys().collect::<std::collections::BTreeSet<_>>(),
        j.keys().collect()
    );
    for (key, r) in &p {
        let other = &j[key];
        assert_eq!(r.decisions, other.decisions, "{key:?}");
        assert_eq!(
            (&r.policy, &r.settings_sha256, &r.variant, &r.arm, &r.route),
            (
                &other.policy,
                &other.settings_sha256,
                &other.variant,
                &other.arm,
                &other.route
            )
        );
    }

    // Replay: determinism, and candidates with outcomes, the same on both.
    let keep_dir = keep.path().to_str().unwrap();
    let settings = keep.path().join("eps.json");
    std::fs::write(&settings, r#"{"epsilon": 0.3}"#).unwrap();
    let logger = format!("{EPSILON_GREEDY}={}", settings.display());
    let mut reports = Vec::new();
    for logs in [parquet.path(), jsonl.path()] {
        let logs = logs.to_str().unwrap();
        let (code, v, err) = replay(&["--logs", logs, "--policies", keep_dir]);
        assert_eq!(code, Some(0), "{v}\n{err}");
        assert_eq!(
            (v["replayed"].as_u64(), v["identical"].as_u64()),
            (Some(24), Some(24)),
            "{v}"
        );
        let (code, v, err) = replay(&[
            "--logs",
            logs,
            "--policies",
            keep_dir,
            "--candidate",
            &logger,
            "--candidate",
            PID_PACING,
            "--outcomes",
            logs,
        ]);
        assert_eq!(code, Some(0), "{v}\n{err}");
        reports.push(v);
    }
    let (pq, js) = (&reports[0], &reports[1]);
    assert_eq!(pq["outcomes"], js["outcomes"], "outcomes read the same");
    assert!(
        pq["outcomes"]["matched_requests"].as_u64().unwrap() >= 12,
        "{pq}"
    );
    for k in 0..2 {
        for field in [
            "divergence",
            "estimate",
            "promoted_per_campaign",
            "promoted",
        ] {
            assert!(
                same(&pq["candidates"][k][field], &js["candidates"][k][field]),
                "candidate {k}, {field}: {} vs {}",
                pq["candidates"][k][field],
                js["candidates"][k][field]
            );
        }
    }
    // The radio records were logged deterministically: the exploring
    // candidate has no support there; pid-pacing gets a value.
    assert_eq!(pq["candidates"][1]["estimate"]["kind"], "value", "{pq}");
    assert!(same(&pq["logged"], &js["logged"]), "{pq}\n{js}");

    // The data team's tools: pandas/pyarrow and DuckDB give the JSON form's
    // decisions, and the README's queries run on the files.
    // One set-up per test binary, shared with the Python policies' tests
    // (two at once would both recreate `.venv`).
    let venv = crate::python::venv();
    let queries = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        queries.path(),
        serde_json::to_vec(&readme_queries()).unwrap(),
    )
    .unwrap();
    let out = Command::new(venv.join("bin/python"))
        .arg(format!("{ROOT}/tests/integration/read_decision_log.py"))
        .args([parquet.path(), jsonl.path(), queries.path()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "pandas_rows",
        "pandas_matched",
        "duckdb_rows",
        "duckdb_matched",
    ] {
        assert_eq!(v[k].as_u64(), Some(24), "{k}: {v}");
    }

    // The queries' figures, computed here from the records.
    let served: Vec<&DecisionRecord> = p.values().filter(|r| !r.shadow).collect();
    let (mut campaign, mut promoted) = (0u64, 0u64);
    let mut eligible: HashMap<&str, (u64, u64)> = HashMap::new();
    for r in &served {
        let req: Value = serde_json::from_str(r.request.get()).unwrap();
        for (i, c) in req["candidates"].as_array().unwrap().iter().enumerate() {
            if c.get("campaign").is_some() {
                campaign += 1;
                promoted += u64::from(r.decisions.reasons[i] & PROMOTED != 0);
            }
        }
        let e = eligible.entry(r.policy.digest.as_str()).or_default();
        e.0 += r.decisions.eligible.len() as u64;
        e.1 += r.decisions.eligible.iter().filter(|&&x| x).count() as u64;
    }
    let results = v["queries"].as_array().unwrap();
    let column = |q: usize, name: &str| -> Vec<Value> {
        let at = results[q]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("query {q} has no column {name}: {}", results[q]));
        results[q]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[at].clone())
            .collect()
    };
    let sum = |values: &[Value]| values.iter().map(|x| x.as_f64().unwrap()).sum::<f64>();
    // 1. promoted share per campaign per hour.
    let decisions = column(0, "decisions");
    let shares = column(0, "promoted_share");
    assert_eq!(sum(&decisions) as u64, campaign, "{}", results[0]);
    let promoted_back: f64 = decisions
        .iter()
        .zip(&shares)
        .map(|(n, s)| n.as_f64().unwrap() * s.as_f64().unwrap())
        .sum();
    assert!(
        (promoted_back - promoted as f64).abs() < 1e-6,
        "{}",
        results[0]
    );
    assert!(promoted > 0 && column(0, "campaign_id").len() > 3);
    // 2. each version's eligible rate.
    let digests = column(1, "digest");
    let rates = column(1, "eligible_rate");
    assert_eq!(digests.len(), eligible.len(), "{}", results[1]);
    for (d, rate) in digests.iter().zip(&rates) {
        let (n, e) = eligible[d.as_str().unwrap()];
        assert!(
            (rate.as_f64().unwrap() - e as f64 / n as f64).abs() < 1e-12,
            "{}",
            results[1]
        );
    }
    // 3. the propensity distribution of the campaign-track decisions.
    assert_eq!(
        sum(&column(2, "decisions")) as u64,
        campaign,
        "{}",
        results[2]
    );
    assert!(column(2, "propensity").len() >= 2, "{}", results[2]);
}
