//! The server on a real loopback socket: scoring, every 4xx, fallback per
//! fault kind, backpressure, hot reload under load, corrupt files, delete and
//! restore, metrics, and graceful shutdown with requests in flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use oasis::RuntimeConfig;
use oasis::server::{Server, ServerConfig};
use oasis_test_components::{ADVERSARIAL, BASELINE, GUARDED_BOOST};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::harness::{example_body, small_body};

/// A server running on 127.0.0.1:0 over a temporary policy directory.
struct TestServer {
    url: String,
    dir: tempfile::TempDir,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), oasis::server::ServerError>>>,
}

impl TestServer {
    async fn start(setup: impl FnOnce(&Path)) -> Self {
        Self::start_with(setup, |_| {}).await
    }

    async fn start_with(setup: impl FnOnce(&Path), tune: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let mut config = ServerConfig {
            policies: dir.path().to_path_buf(),
            debounce: Duration::from_millis(50),
            rescan: Duration::from_millis(500),
            runtime: RuntimeConfig {
                cache_dir: Some(std::env::temp_dir().join("oasis-server-test-cache")),
                measure_fuel: false,
                max_instances: 64,
            },
            ..Default::default()
        };
        tune(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(Server::new(config).run(listener, async {
            let _ = rx.await;
        }));
        let server = TestServer {
            url,
            dir,
            client: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server
            .client
            .get(server.at("/readyz"))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "server not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    async fn score(&self, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client
            .post(self.at("/v1/score"))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Sends a scoring request in the background: (status, Retry-After, body).
    fn spawn_score(&self, body: Vec<u8>) -> tokio::task::JoinHandle<(u16, Option<String>, Value)> {
        let (client, url) = (self.client.clone(), self.at("/v1/score"));
        tokio::spawn(async move {
            let r = client.post(url).body(body).send().await.unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (status, retry, r.json().await.unwrap_or(Value::Null))
        })
    }

    /// The metrics exposition.
    async fn metrics(&self) -> String {
        self.client
            .get(self.at("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn policies(&self) -> Value {
        self.client
            .get(self.at("/v1/policies"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls `/v1/policies` until `f` holds (10 s at most).
    async fn wait_until(&self, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = self.client.get(self.at("/v1/policies")).send().await
                && let Ok(v) = r.json::<Value>().await
                && f(&v)
            {
                return v;
            }
            assert!(Instant::now() < deadline, "condition not reached in time");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// The value of one series in a metrics exposition (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn policy<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v["policies"].as_array()?.iter().find(|p| p["key"] == key)
}

/// Writes a manifest and copies its module into `dir` (atomically). Unless
/// `extra` sets one, the deadline is a generous 2 s: tests that are not about
/// time must not fall back because a busy machine preempted a call.
fn install(dir: &Path, key: &str, module: &str, extra: &str) {
    let wasm = format!("{key}.wasm");
    atomic_copy(Path::new(module), &dir.join(&wasm));
    let extra = if extra.contains("deadline_ms") {
        extra.to_string()
    } else if extra.contains("[limits]") {
        extra.replace("[limits]\n", "[limits]\ndeadline_ms = 2000\n")
    } else {
        format!("{extra}\n[limits]\ndeadline_ms = 2000\n")
    };
    let manifest = format!("module = \"{wasm}\"\n{extra}");
    atomic_write(&dir.join(format!("{key}.toml")), manifest.as_bytes());
}

fn atomic_write(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn atomic_copy(from: &Path, to: &Path) {
    atomic_write(to, &std::fs::read(from).unwrap());
}

fn digest(path: &str) -> String {
    format!(
        "sha256:{}",
        oasis::cache::sha256_hex(&std::fs::read(path).unwrap())
    )
}

fn attack_body(route: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&small_body(true)).unwrap();
    v["route"] = route.into();
    serde_json::to_vec(&v).unwrap()
}

fn routed(route: &str, body: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    v["route"] = route.into();
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scores_the_example_request_with_ids_and_version() {
    let s = TestServer::start(|d| {
        install(d, "guarded", GUARDED_BOOST, "");
        atomic_write(
            &d.join("routes.toml"),
            b"default = \"autoplay\"\n[routes.autoplay]\npolicy = \"guarded\"\n",
        );
    })
    .await;
    let (status, v) = s.score(example_body()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["route"], "autoplay");
    assert_eq!(v["variant"], "stable");
    assert_eq!(v["policy"]["name"], "guarded-boost");
    assert_eq!(v["policy"]["digest"], digest(GUARDED_BOOST));
    let req: Value = serde_json::from_slice(&example_body()).unwrap();
    let scores = v["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 300);
    assert_eq!(scores[7]["id"], req["candidates"][7]["id"]);
    assert!(scores.iter().any(|c| {
        c["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "promoted")
    }));
    assert!(
        v["timing"]["server_us"].as_u64().unwrap() >= v["timing"]["policy_us"].as_u64().unwrap()
    );
    // The policy is also reachable under its own key.
    let (status, v) = s.score(routed("guarded", &example_body())).await;
    assert_eq!((status, v["route"].as_str()), (200, Some("guarded")));
    assert_eq!(
        s.client
            .get(s.at("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let p = s.policies().await;
    assert_eq!(policy(&p, "guarded").unwrap()["status"], "active");
    assert_eq!(
        policy(&p, "guarded").unwrap()["routes"],
        serde_json::json!(["autoplay", "guarded"])
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_requests_get_precise_4xx() {
    let s = TestServer::start_with(
        |d| install(d, "base", BASELINE, "[limits]\nmax_candidates = 5\n"),
        |c| {
            c.default_route = Some("base".into());
            c.max_body_bytes = 64 << 10;
        },
    )
    .await;
    let small = String::from_utf8(small_body(false)).unwrap();

    let (status, v) = s.score(b"{not json".to_vec()).await;
    assert_eq!(
        (status, v["error"]["kind"].as_str()),
        (400, Some("malformed_request")),
        "{v}"
    );

    let (status, v) = s
        .score(
            small
                .replace("\"relevance\": 0.9", "\"relevance\": \"high\"")
                .into_bytes(),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["field"], "candidates[0].relevance", "{v}");

    let (status, v) = s
        .score(
            small
                .replace("\"market\": \"SE\"", "\"market\": \"Sweden\"")
                .into_bytes(),
        )
        .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (422, Some("context.market")),
        "{v}"
    );

    let (status, v) = s
        .score(small.replace("\"id\": \"b\"", "\"id\": \"a\"").into_bytes())
        .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (422, Some("candidates[1].id")),
        "{v}"
    );

    let (status, v) = s.score(example_body()).await; // 300 candidates > 5, and > 64 KiB
    assert_eq!(status, 413, "{v}");
    let many: Value = serde_json::from_str(&small).unwrap();
    let mut many = many.clone();
    let c = many["candidates"][0].clone();
    many["candidates"] = (0..6)
        .map(|i| {
            let mut c = c.clone();
            c["id"] = format!("t{i}").into();
            c
        })
        .collect();
    let (status, v) = s.score(serde_json::to_vec(&many).unwrap()).await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (422, Some("candidates")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit is 5")
    );

    let (status, v) = s.score(routed("nope", small.as_bytes())).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["known"], serde_json::json!(["base"]), "{v}");

    let r = s
        .client
        .get(s.at("/v1/policies/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let metrics = s.metrics().await;
    assert!(
        metrics.contains("oasis_rejected_total{status=\"422\",reason=\"invalid_request\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("oasis_rejected_total{status=\"413\",reason=\"too_large\"} 1"),
        "{metrics}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_kind_falls_back_with_a_200() {
    let attacks = [
        ("loop", "timeout"),
        ("memory-bomb", "memory_limit"),
        ("panic", "trap"),
        ("recursion", "trap"),
        ("nan-score", "invalid_output"),
        ("wrong-length", "invalid_output"),
        ("policy-error", "policy_error"),
    ];
    let s = TestServer::start(|d| {
        install(d, "baseline", BASELINE, "");
        for (attack, _) in attacks {
            install(
                d,
                attack,
                ADVERSARIAL,
                &format!(
                    "fallback = \"baseline\"\n[limits]\ndeadline_ms = {}\n[settings]\nattack = \"{attack}\"\n",
                    if attack == "loop" { 200 } else { 2000 }
                ),
            );
        }
        install(d, "orphan", ADVERSARIAL, "[settings]\nattack = \"panic\"\n");
    })
    .await;
    for (attack, kind) in attacks {
        let (status, v) = s.score(attack_body(attack)).await;
        assert_eq!(status, 200, "{attack}: {v}");
        assert_eq!(v["variant"], "fallback", "{attack}");
        assert_eq!(v["fallback"]["error_kind"], kind, "{attack}: {v}");
        assert_eq!(v["fallback"]["failed"]["name"], "adversarial");
        assert_eq!(v["policy"]["name"], "baseline", "{attack}");
        assert_eq!(v["scores"][1]["score"], 0.5);
    }
    // Without a fallback policy the host's passthrough answers.
    let (status, v) = s.score(attack_body("orphan")).await;
    assert_eq!((status, v["variant"].as_str()), (200, Some("fallback")));
    assert_eq!(v["policy"]["name"], "host-passthrough");
    assert!(
        v["fallback"]["error"]
            .as_str()
            .unwrap()
            .contains("panicked on purpose"),
        "{v}"
    );
    // The same policies serve normally right after.
    let (status, v) = s.score(routed("panic", &small_body(false))).await;
    assert_eq!((status, v["variant"].as_str()), (200, Some("stable")));

    let metrics = s.metrics().await;
    assert!(
        metrics.contains(
            "oasis_fallbacks_total{policy=\"loop\",version=\"0.1.0\",kind=\"timeout\",served_by=\"fallback_policy\"} 1"
        ),
        "{metrics}"
    );
    // A fallback is counted once, by what served it; errors per failed call.
    assert!(
        metrics.contains(
            "oasis_fallbacks_total{policy=\"orphan\",version=\"0.1.0\",kind=\"trap\",served_by=\"passthrough\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "oasis_fallbacks_total{policy=\"loop\",version=\"0.1.0\",kind=\"timeout\",served_by=\"passthrough\"} 0"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("oasis_requests_total{route=\"panic\",variant=\"stable\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("oasis_policy_latency_seconds_count{policy=\"baseline\",version=\"1.0.0\"}")
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn saturation_queues_briefly_then_503_with_retry_after() {
    let s = TestServer::start(|d| {
        install(
            d,
            "slow",
            ADVERSARIAL,
            "[limits]\ndeadline_ms = 1000\nmax_concurrency = 1\nqueue_timeout_ms = 20\n[settings]\nattack = \"loop\"\n",
        );
    })
    .await;
    let calls = (0..4).map(|_| s.spawn_score(attack_body("slow")));
    let responses: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ok = responses.iter().filter(|r| r.0 == 200).count();
    let busy: Vec<_> = responses.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(
        ok, 1,
        "one instance serves (its answer is a timeout fallback)"
    );
    assert_eq!(busy.len(), 3);
    assert_eq!(busy[0].1.as_deref(), Some("1"));
    s.shutdown().await;
}

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

    // Module deleted: the last good version keeps serving, status says why.
    std::fs::remove_file(dir.join("p.wasm")).unwrap();
    s.wait_until(|v| policy(v, "p").is_some_and(|p| p["status"] == "failed"))
        .await;
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
async fn shutdown_finishes_in_flight_requests() {
    let s = TestServer::start(|d| {
        install(
            d,
            "slow",
            ADVERSARIAL,
            "[limits]\ndeadline_ms = 800\n[settings]\nattack = \"loop\"\n",
        );
    })
    .await;
    let inflight: Vec<_> = (0..3).map(|_| s.spawn_score(attack_body("slow"))).collect();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let url = s.url.clone();
    let started = Instant::now();
    s.shutdown().await;
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "shutdown waited for in-flight requests"
    );
    for t in inflight {
        assert_eq!(t.await.unwrap().0, 200);
    }
    assert!(
        reqwest::get(format!("{url}/healthz")).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unresolvable_routes_and_fallbacks_are_reported() {
    let s = TestServer::start(|d| {
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
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_refuses_at_once_and_gauges_return_to_zero() {
    let s = TestServer::start(|d| {
        install(
            d,
            "slow",
            ADVERSARIAL,
            "[limits]\ndeadline_ms = 1000\nmax_concurrency = 1\nmax_queue = 1\nqueue_timeout_ms = 5000\n[settings]\nattack = \"loop\"\n",
        );
    })
    .await;
    // One runs, one waits (queue of 1), the third is refused without waiting.
    let (a, b) = (
        s.spawn_score(attack_body("slow")),
        s.spawn_score(attack_body("slow")),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, v) = s.score(attack_body("slow")).await;
    assert_eq!(status, 503, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused without queueing"
    );
    assert_eq!((a.await.unwrap().0, b.await.unwrap().0), (200, 200));

    // A client that gives up mid-request leaves no gauge behind.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    assert!(
        impatient
            .post(s.at("/v1/score"))
            .body(attack_body("slow"))
            .send()
            .await
            .is_err()
    );
    // Its call runs to its deadline (1 s) on the blocking pool, then the
    // gauges must come back to 0.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut metrics = s.metrics().await;
    while metric(&metrics, "oasis_instances_in_use") != 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = s.metrics().await;
    }
    assert_eq!(metric(&metrics, "oasis_instances_in_use"), 0.0, "{metrics}");
    assert_eq!(
        metric(&metrics, "oasis_queue_depth{policy=\"slow\"}"),
        0.0,
        "{metrics}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_beyond_max_inflight_are_refused_before_their_body_is_read() {
    let s = TestServer::start_with(
        |d| {
            install(
                d,
                "slow",
                ADVERSARIAL,
                "[limits]\ndeadline_ms = 1000\n[settings]\nattack = \"loop\"\n",
            )
        },
        |c| c.max_inflight = 1,
    )
    .await;
    let first = s.spawn_score(attack_body("slow"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, v) = s.score(attack_body("slow")).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(
        v["error"]["message"],
        "too many scoring requests in progress"
    );
    assert_eq!(first.await.unwrap().0, 200);
    // Health and status endpoints are not subject to the limit.
    assert_eq!(
        s.client
            .get(s.at("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
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
