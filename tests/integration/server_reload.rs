//! Hot reload on a live server: a reload storm and rapid swaps under load,
//! in-flight requests keeping their version, delete and restore of manifest
//! and module; and how unresolvable routes and fallbacks are reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use oasis_test_components::{ADVERSARIAL, BASELINE, GUARDED_BOOST, SLOW_DESCRIBE, WRONG_CONTRACT};
use serde_json::Value;

use crate::harness::server::{
    Harness, TestApp, TestServer, atomic_copy, atomic_write, attack_body, digest, install, metric,
    policy, routed,
};
use crate::harness::{example_body, small_body};

/// One answer: when its request left, when the answer came, who decided.
struct Seen {
    sent: Instant,
    received: Instant,
    digest: String,
}

/// Scores in a loop on `clients` tasks until `stop`; returns (ok, failed,
/// answers in order per client).
fn load(
    s: &TestServer,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(usize, usize, Vec<Seen>)>> {
    (0..clients)
        .map(|_| {
            let client = s.client.clone();
            let url = s.at("/v1/score");
            let stop = stop.clone();
            let body = routed("p", &example_body());
            tokio::spawn(async move {
                let (mut ok, mut failed, mut seen) = (0, 0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    match client.post(&url).body(body.clone()).send().await {
                        Ok(r) if r.status() == 200 => {
                            let v: Value = r.json().await.unwrap();
                            if v["variant"] == "stable" {
                                ok += 1
                            } else {
                                failed += 1
                            }
                            let digest = v["policy"]["digest"].as_str().unwrap().to_string();
                            seen.push(Seen {
                                sent,
                                received: Instant::now(),
                                digest,
                            });
                        }
                        _ => failed += 1,
                    }
                }
                (ok, failed, seen)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_storm_under_load_loses_no_request() {
    let v1 = digest(BASELINE);
    let v2 = digest(GUARDED_BOOST);
    let s = TestServer::start(|d| install(d, "p", BASELINE, "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks = load(&s, 4, stop.clone());

    // Version k is active somewhere between `written[k]` (its file is in
    // place) and `observed[k]` (the API reports it); it stays active until
    // version k+1's activation, at the latest `observed[k + 1]`.
    let mut versions = vec![(v1.clone(), started, started)];
    for round in 0..6 {
        let (module, want) = if round % 2 == 0 {
            (GUARDED_BOOST, &v2)
        } else {
            (BASELINE, &v1)
        };
        let written = Instant::now();
        atomic_copy(Path::new(module), &s.dir.path().join("p.wasm"));
        s.wait_until(|v| policy(v, "p").is_some_and(|p| p["active"]["digest"] == *want))
            .await;
        versions.push((want.clone(), written, Instant::now()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A direct (non-atomic) write of a truncated module: load fails, v1 keeps serving.
    let wasm = std::fs::read(GUARDED_BOOST).unwrap();
    std::fs::write(s.dir.path().join("p.wasm"), &wasm[..wasm.len() / 3]).unwrap();
    // The watcher may first see the emptied file, then the truncated one;
    // wait for the load of the final content.
    let p = s
        .wait_until(|v| {
            policy(v, "p").is_some_and(|p| {
                p["status"] == "failed"
                    && p["failure"]["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("does not compile"))
            })
        })
        .await;
    assert_eq!(policy(&p, "p").unwrap()["active"]["digest"], v1);
    tokio::time::sleep(Duration::from_millis(200)).await;

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        let (ok, failed, seen) = t.await.unwrap();
        assert_eq!(failed, 0, "no request may fail during reloads");
        total += ok;
        for answer in &seen {
            // Some version k with this digest was active during the request:
            // it started before the answer came and ended after the request left.
            let active_then = versions
                .iter()
                .enumerate()
                .any(|(k, (digest, written, _))| {
                    let ended = versions.get(k + 1).map(|next| next.2);
                    *digest == answer.digest
                        && *written <= answer.received
                        && ended.is_none_or(|e| e >= answer.sent)
                });
            let windows: Vec<_> = versions
                .iter()
                .map(|(d, w, o)| {
                    (
                        &d[7..15],
                        w.saturating_duration_since(started),
                        o.saturating_duration_since(started),
                    )
                })
                .collect();
            assert!(
                active_then,
                "{} answered outside its active window: sent {:?}, received {:?} after start; versions {windows:?}",
                answer.digest,
                answer.sent.saturating_duration_since(started),
                answer.received.saturating_duration_since(started),
            );
        }
        assert_eq!(
            seen.last().unwrap().digest,
            v1,
            "after the failed load, the last good version serves"
        );
    }
    assert!(total > 20, "load actually ran ({total} requests)");
    let metrics = s.metrics().await;
    // One or two failed loads: the watcher may also catch the emptied file.
    let failed = metric(
        &metrics,
        "oasis_reloads_total{policy=\"p\",result=\"failed\"}",
    );
    assert!(failed >= 1.0, "{metrics}");
    assert!(
        metrics.contains("oasis_reloads_total{policy=\"p\",result=\"ok\"} 7"),
        "{metrics}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_flight_requests_finish_on_the_version_they_started_with() {
    // v1 takes ~300 ms per request (a loop with a 300 ms deadline, then its
    // fallback); the swap to v2 happens while those requests run.
    let s = TestServer::start(|d| {
        install(d, "baseline", BASELINE, "");
        install(
            d,
            "p",
            ADVERSARIAL,
            "fallback = \"baseline\"\n[limits]\ndeadline_ms = 800\n[settings]\nattack = \"loop\"\n",
        );
    })
    .await;
    let inflight: Vec<_> = (0..3).map(|_| s.spawn_score(attack_body("p"))).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    install(s.dir.path(), "p", GUARDED_BOOST, "");
    s.wait_until(|v| policy(v, "p").is_some_and(|p| p["active"]["name"] == "guarded-boost"))
        .await;
    for t in inflight {
        let (_, _, v) = t.await.unwrap();
        assert_eq!(
            v["fallback"]["failed"]["name"], "adversarial",
            "started on v1, finished on v1: {v}"
        );
        assert_eq!(v["fallback"]["error_kind"], "timeout");
    }
    let (_, v) = s.score(routed("p", &small_body(false))).await;
    assert_eq!(v["policy"]["name"], "guarded-boost");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_and_restore_of_manifest_and_module() {
    let s = TestServer::start(|d| install(d, "p", GUARDED_BOOST, "")).await;
    let dir: PathBuf = s.dir.path().to_path_buf();
    let manifest = std::fs::read(dir.join("p.toml")).unwrap();

    // Module deleted: the last good version keeps serving, status says why
    // (waiting for the module: a redeploy in progress, not yet a failure).
    std::fs::remove_file(dir.join("p.wasm")).unwrap();
    let v = s
        .wait_until(|v| policy(v, "p").is_some_and(|p| p["status"] == "waiting"))
        .await;
    assert!(
        policy(&v, "p").unwrap()["failure"]["error"]
            .as_str()
            .unwrap()
            .contains("waiting for module"),
        "{v}"
    );
    assert_eq!(s.score(routed("p", &small_body(false))).await.0, 200);
    atomic_copy(Path::new(GUARDED_BOOST), &dir.join("p.wasm"));
    s.wait_until(|v| policy(v, "p").is_some_and(|p| p["status"] == "active"))
        .await;

    // Manifest deleted: the policy is unloaded; its route is gone.
    std::fs::remove_file(dir.join("p.toml")).unwrap();
    s.wait_until(|v| policy(v, "p").is_none()).await;
    let (status, v) = s.score(routed("p", &small_body(false))).await;
    assert_eq!(status, 404, "{v}");
    // Restored (editor-style: written elsewhere, renamed in): serving again.
    atomic_write(&dir.join("p.toml"), &manifest);
    s.wait_until(|v| policy(v, "p").is_some_and(|p| p["status"] == "active"))
        .await;
    let (status, v) = s.score(routed("p", &small_body(false))).await;
    assert_eq!(
        (status, v["policy"]["name"].as_str()),
        (200, Some("guarded-boost"))
    );

    // A bad manifest never replaces the good one.
    atomic_write(
        &dir.join("p.toml"),
        b"module = \"p.wasm\"\n[limits]\ndeadline_ms = 0\n",
    );
    let v = s
        .wait_until(|v| policy(v, "p").is_some_and(|p| p["status"] == "failed"))
        .await;
    assert!(
        policy(&v, "p").unwrap()["failure"]["error"]
            .as_str()
            .unwrap()
            .contains("deadline_ms"),
        "{v}"
    );
    assert_eq!(s.score(routed("p", &small_body(false))).await.0, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rapid_swaps_faster_than_the_debounce_lose_nothing() {
    let (v1, v2) = (digest(BASELINE), digest(GUARDED_BOOST));
    let s = TestServer::start(|d| install(d, "p", BASELINE, "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&s, 4, stop.clone());
    // 30 replacements 10 ms apart (the debounce is 50 ms): the reloader sees
    // bursts, loads whatever is there when it looks, and serving never stops.
    for i in 0..30 {
        let module = if i % 2 == 0 { GUARDED_BOOST } else { BASELINE };
        atomic_copy(Path::new(module), &s.dir.path().join("p.wasm"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The last write was BASELINE: that is what settles.
    s.wait_until(|v| {
        policy(v, "p").is_some_and(|p| p["active"]["digest"] == v1 && p["status"] == "active")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        let (ok, failed, seen) = t.await.unwrap();
        assert_eq!(failed, 0, "no request may fail during a reload storm");
        assert!(seen.iter().all(|a| a.digest == v1 || a.digest == v2));
        assert_eq!(seen.last().unwrap().digest, v1);
        total += ok;
    }
    assert!(total > 20, "load actually ran ({total} requests)");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unresolvable_routes_and_fallbacks_are_reported() {
    let s = TestApp::start(|d| {
        install(
            d,
            "p",
            ADVERSARIAL,
            "fallback = \"gone\"\n[settings]\nattack = \"bad-propensity\"\n",
        );
        atomic_write(
            &d.join("routes.toml"),
            b"[routes.ghost]\npolicy = \"nobody\"\n",
        );
    })
    .await;
    // No route in the request and no default configured: 404 with the names.
    let (status, v) = s.score(small_body(false)).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["known"], serde_json::json!(["ghost", "p"]));
    // A route to a policy without a manifest: 503 saying so.
    let (status, v) = s.score(routed("ghost", &small_body(false))).await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no manifest `nobody.toml`"),
        "{v}"
    );
    // A fallback that does not exist: reported, and the host passthrough answers.
    let p = s.policies().await;
    assert!(
        policy(&p, "p").unwrap()["warnings"][0]
            .as_str()
            .unwrap()
            .contains("fallback `gone` is not loaded"),
        "{p}"
    );
    let (status, v) = s.score(attack_body("p")).await;
    assert_eq!(
        (status, v["policy"]["name"].as_str()),
        (200, Some("host-passthrough")),
        "{v}"
    );
    assert_eq!(v["fallback"]["error_kind"], "invalid_output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_that_repeats_is_not_retried_until_the_files_change() {
    // Its describe always times out: "transient" by kind, but it repeats.
    let s = TestServer::start(|d| {
        install(d, "base", BASELINE, "");
        install(d, "sd", SLOW_DESCRIBE, "[limits]\ndeadline_ms = 20\n");
    })
    .await;
    let failed = "oasis_reloads_total{policy=\"sd\",result=\"failed\"}";
    let v = s
        .wait_until(|v| {
            policy(v, "sd").is_some_and(|p| {
                p["failure"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("not retried until its files change"))
            })
        })
        .await;
    assert!(
        policy(&v, "sd").unwrap()["failure"]["error"]
            .as_str()
            .unwrap()
            .contains("describe"),
        "{v}"
    );
    assert_eq!(metric(&s.metrics().await, failed), 3.0);
    // Several rescans (every 500 ms here) later: no more attempts.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(metric(&s.metrics().await, failed), 3.0, "given up");
    // Changing the files tries again.
    install(
        s.dir.path(),
        "sd",
        SLOW_DESCRIBE,
        "# edited\n[limits]\ndeadline_ms = 20\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&s.metrics().await, failed) < 4.0 {
        assert!(Instant::now() < deadline, "the edit was not tried");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The other policy serves throughout.
    let (status, _) = s.score(routed("base", &small_body(false))).await;
    assert_eq!(status, 200);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_contract_is_reported_once_and_never_retried_until_the_file_changes() {
    let s = TestServer::start(|d| {
        install(d, "base", BASELINE, "");
        install(d, "wc", WRONG_CONTRACT, "");
    })
    .await;
    let failed = "oasis_reloads_total{policy=\"wc\",result=\"failed\"}";
    let v = s
        .wait_until(|v| policy(v, "wc").is_some_and(|p| p["failure"]["error"].is_string()))
        .await;
    let error = policy(&v, "wc").unwrap()["failure"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("wrong contract") && error.contains("oasis:policy/policy@0.1.0"),
        "{error}"
    );
    assert!(
        !error.contains("not retried"),
        "not a repeated transient: {error}"
    );
    // Deterministic: one attempt, however many rescans (every 500 ms here).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(metric(&s.metrics().await, failed), 1.0, "retried");
    // A change of the files is tried again.
    install(s.dir.path(), "wc", WRONG_CONTRACT, "# edited\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&s.metrics().await, failed) < 2.0 {
        assert!(Instant::now() < deadline, "the edit was not tried");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, _) = s.score(routed("base", &small_body(false))).await;
    assert_eq!(status, 200);
    s.shutdown().await;
}

/// A manifest deployed before its module is `waiting`, not a failure: not
/// counted as a failed reload, loaded as soon as the module arrives; only a
/// module still missing after the grace period is a failed load, counted
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_waiting_for_its_module_is_not_a_failure_until_the_grace_period_ends() {
    let s = TestServer::start_with(
        |d| install(d, "base", BASELINE, ""),
        |c| c.module_grace = Duration::from_millis(1500),
    )
    .await;
    let dir = s.dir.path().to_path_buf();
    atomic_write(
        &dir.join("late.toml"),
        b"module = \"late.wasm\"\n[limits]\ndeadline_ms = 2000\n",
    );
    let v = s
        .wait_until(|v| policy(v, "late").is_some_and(|p| p["status"] == "waiting"))
        .await;
    let late = policy(&v, "late").unwrap();
    assert!(
        late["failure"]["error"]
            .as_str()
            .unwrap()
            .contains("waiting for module"),
        "{late}"
    );
    let failed = "oasis_reloads_total{policy=\"late\",result=\"failed\"}";
    assert_eq!(metric(&s.metrics().await, failed), 0.0);
    // The module arrives: it loads at once.
    atomic_copy(Path::new(BASELINE), &dir.join("late.wasm"));
    s.wait_until(|v| policy(v, "late").is_some_and(|p| p["status"] == "active"))
        .await;
    assert_eq!(metric(&s.metrics().await, failed), 0.0, "never a failure");

    // A module that never comes: after the grace period, one failed load.
    atomic_write(
        &dir.join("never.toml"),
        b"module = \"never.wasm\"\n[limits]\ndeadline_ms = 2000\n",
    );
    let v = s
        .wait_until(|v| policy(v, "never").is_some_and(|p| p["status"] == "failed"))
        .await;
    assert!(
        policy(&v, "never").unwrap()["failure"]["error"]
            .as_str()
            .unwrap()
            .contains("still missing after"),
        "{v}"
    );
    // Several rescans later it is still counted once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let never = "oasis_reloads_total{policy=\"never\",result=\"failed\"}";
    assert_eq!(metric(&s.metrics().await, never), 1.0);
    s.shutdown().await;
}

/// Activation logs say what changed: settings only (same module), limits
/// only (same module and settings), or a new
/// module under the version string already served (a warning).
#[test]
fn activation_logs_tell_a_settings_change_from_a_redeployed_version() {
    use crate::harness::process::ServeProcess;
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "p", GUARDED_BOOST, "[settings]\ntheta = 0.3\n");
    let s = ServeProcess::start(dir.path(), &[], &[]);
    let next = |message: &str| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = s
                .logs
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line {message:?}"));
            if line["message"] == message {
                return line;
            }
        }
    };
    install(dir.path(), "p", GUARDED_BOOST, "[settings]\ntheta = 0.4\n");
    let l = next("policy settings changed (same module)");
    assert_eq!(l["level"], "INFO", "{l}");
    assert_ne!(l["settings"], l["old_settings"], "{l}");
    assert_eq!(l["policy"], "p");
    // Only the limits: said so, not "settings changed" with equal hashes.
    install(
        dir.path(),
        "p",
        GUARDED_BOOST,
        "[settings]\ntheta = 0.4\n[limits]\ndeadline_ms = 1500\n",
    );
    let l = next("policy limits changed (same module, same settings)");
    assert_eq!(l["level"], "INFO", "{l}");
    assert!(l.get("old_settings").is_none(), "{l}");
    // The same policy rebuilt: another digest (a custom section appended),
    // the same name and version.
    let mut wasm = std::fs::read(GUARDED_BOOST).unwrap();
    wasm.extend_from_slice(&[0, 6, 5, b'b', b'u', b'i', b'l', b'd']);
    let rebuilt = dir.path().join("rebuilt.wasm.bin");
    std::fs::write(&rebuilt, &wasm).unwrap();
    install(
        dir.path(),
        "p",
        rebuilt.to_str().unwrap(),
        "[settings]\ntheta = 0.4\n",
    );
    let l = next(
        "policy activated: a new module under the version already served; bump the version so responses and metrics tell them apart",
    );
    assert_eq!(l["level"], "WARN", "{l}");
    assert_ne!(l["digest"], l["old_digest"], "{l}");
}
