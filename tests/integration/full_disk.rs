//! A disk that fills up under the decision log: `oasis serve` runs as a
//! child whose files may not grow past a few hundred KB (`RLIMIT_FSIZE`,
//! with SIGXFSZ ignored, so a write past it fails with EFBIG as a full disk
//! fails with ENOSPC). Under concurrent load no score response fails, and
//! the log's pause is reported in the status and counted in the metrics.
//! Both formats: JSON lines lose nothing (a record is written whole or
//! paused); a Parquet file that cannot be finished loses its rows, which
//! are counted as failed (its footer, written last, is what makes it
//! readable).

use std::os::unix::process::CommandExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use oasis_test_components::{BASELINE, GUARDED_BOOST};
use serde_json::Value;

use crate::harness::example_body;
use crate::harness::process::ServeProcess;
use crate::harness::server::{atomic_write, install, metric};

/// Largest file the server may write: about three decision records of the
/// example request.
const FILE_LIMIT: u64 = 300 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_pauses_the_json_lines_log_and_fails_no_response() {
    full_disk("jsonl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_pauses_the_parquet_log_and_fails_no_response() {
    full_disk("parquet").await;
}

async fn full_disk(format: &str) {
    let parquet = format == "parquet";
    let policies = tempfile::tempdir().unwrap();
    install(policies.path(), "base", BASELINE, "");
    install(policies.path(), "p", GUARDED_BOOST, "");
    atomic_write(
        &policies.path().join("routes.toml"),
        b"[routes.radio]\npolicy = \"p\"\nbaseline = \"base\"\n",
    );
    let logs = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let extra = [
        "--decision-log",
        logs.path().to_str().unwrap(),
        "--decision-log-max-mb",
        "1",
        "--decision-log-format",
        format,
        // A Parquet file reaches the disk when it is closed (its row group
        // is encoded in memory until then): close one every two seconds.
        "--decision-log-max-age-s",
        "2",
        "--state-dir",
        state.path().to_str().unwrap(),
    ];
    // Once without the limit: the compile cache holds the policies, so the
    // limited server compiles nothing (a compiled component is larger than
    // the limit).
    let warm = ServeProcess::start(policies.path(), &extra, &[]);
    warm.signal("TERM");
    let (status, _) = warm.wait();
    assert!(status.success());
    for f in std::fs::read_dir(logs.path()).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }

    let server = ServeProcess::start_with(policies.path(), &extra, &[], |cmd| {
        // SAFETY: between fork and exec only async-signal-safe calls
        // (setrlimit, signal) on this process's own state.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: FILE_LIMIT,
                    rlim_max: FILE_LIMIT,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    });
    let url = server.url.clone();
    let client = reqwest::Client::new();
    let body = {
        let mut v: Value = serde_json::from_slice(&example_body()).unwrap();
        v["route"] = "radio".into();
        v
    };

    // The status and the metrics, read while the load runs: did they ever
    // report the pause?
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (client, url, done) = (client.clone(), url.clone(), done.clone());
        tokio::spawn(async move {
            let (mut seen, mut last, mut gauge) = (None, Value::Null, false);
            while !done.load(Ordering::Relaxed) {
                let m = metrics_text(&client, &url).await;
                gauge |= metric(&m, "oasis_decision_log_paused") == 1.0;
                let v: Value = client
                    .get(format!("{url}/v1/policies"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let log = &v["decision_log"];
                if log["paused"] == true && log["disk_full"] == true {
                    seen = Some(log.clone());
                }
                last = log.clone();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (seen, last, gauge)
        })
    };
    // pzn-client-like load: 8 concurrent clients for a few seconds (the
    // log retries a new file every second).
    let failed = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    // (Parquet: long enough for files of two seconds to be closed.)
    let secs = if parquet { 6 } else { 3 };
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            let (failed, ok) = (failed.clone(), ok.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while tokio::time::Instant::now() < until {
                    let mut b = body.clone();
                    b["context"]["request_id"] = format!("c{c}-{i}").into();
                    // Relevance differs from request to request, as real
                    // traffic's does: a Parquet file of one request repeated
                    // compresses to a few hundred bytes a record.
                    for (k, cand) in b["candidates"]
                        .as_array_mut()
                        .unwrap()
                        .iter_mut()
                        .enumerate()
                    {
                        let h = (c * 1_000_003 + i * 7919 + k as u64)
                            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
                        cand["relevance"] = ((h >> 11) as f64 / (1u64 << 53) as f64).into();
                    }
                    i += 1;
                    let r = client
                        .post(format!("{url}/v1/score"))
                        .header("content-type", "application/json")
                        .body(serde_json::to_vec(&b).unwrap())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let (seen, last, gauge_seen) = watcher.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{ok} answered");
    assert!(ok > 20, "{ok} answered");
    let Some(seen) = seen else {
        let files: Vec<_> = std::fs::read_dir(logs.path())
            .unwrap()
            .map(|f| {
                let f = f.unwrap();
                (f.file_name(), f.metadata().unwrap().len())
            })
            .collect();
        panic!(
            "the status never reported the paused, full log while the load ran \
             ({ok} answered); last status {last}, files {files:?}"
        );
    };
    assert!(seen["paused_records"].as_u64().unwrap() > 0, "{seen}");

    // The writer drains what is queued; then every answered request's
    // record is counted once: written, paused or dropped (queue full), or
    // (Parquet) failed with the file it was in.
    let counted = |m: &str| {
        ["written", "dropped", "failed"]
            .iter()
            .map(|s| metric(m, &format!("oasis_decision_log_records{{state=\"{s}\"}}")))
            .sum::<f64>()
            + metric(m, "oasis_decision_log_budget{state=\"paused_records\"}")
    };
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = metrics_text(&client, &url).await;
        if counted(&metrics) >= ok as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted(&metrics), ok as f64, "{metrics}");
    let paused = metric(
        &metrics,
        "oasis_decision_log_budget{state=\"paused_records\"}",
    );
    let written = metric(&metrics, "oasis_decision_log_records{state=\"written\"}");
    assert!(paused > 0.0, "{metrics}");
    if parquet {
        // Every file opened at a retry holds two seconds of load, more than
        // the limit: it is never finished, and its rows are counted as
        // failed, not as written.
        let failed = metric(&metrics, "oasis_decision_log_records{state=\"failed\"}");
        assert!(failed > 0.0, "{metrics}");
    } else {
        assert!(written > 0.0, "files are written between pauses: {metrics}");
        assert!(
            !metrics.contains("oasis_decision_log_records{state=\"failed\"}"),
            "a full disk pauses, it does not fail records: {metrics}"
        );
    }
    // The pause gauge was up while the load ran. (Not necessarily at the
    // end: a new file tried after the pause may take a record or two, or a
    // Parquet file of a slow second may fit under the limit.)
    assert!(gauge_seen, "oasis_decision_log_paused never 1: {metrics}");
    server.signal("TERM");
    let (_, lines) = server.wait();
    let _ = lines;
    // No file grew past the limit (the limit held), and some were written
    // (JSON lines; an unfinished Parquet file is removed).
    let files: Vec<u64> = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .collect();
    assert!(parquet || !files.is_empty());
    assert!(files.iter().all(|&n| n <= FILE_LIMIT), "{files:?}");
}

/// The server's `/metrics` text.
async fn metrics_text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
