//! A fleet, not a node: replicas with no shared directory, policies from a
//! real registry (`docker-registry`), rollout state in a real `redis-server`
//! (`--control-store redis://…`). Convergence is measured; every fault runs
//! under scoring traffic with not one failed response.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oasis::api::auth::AdminTokens;
use oasis::control::source::oci::RegistryConfig;
use oasis::control::store::RedisControlConfig;
use oasis::server::{AdminConfig, ServerConfig};
use oasis_test_components::{BASELINE, GUARDED_BOOST, NOT_A_POLICY, PID_PACING};
use serde_json::{Value, json};

use crate::delivery_state::redis_support::RedisServer;
use crate::harness::process::ServeProcess;
use crate::harness::registry::DockerRegistry;
use crate::harness::server::{Replica, atomic_write, digest, install, routed};
use crate::registry::{NO_DOCKER_CONFIG, Traffic, manifest, oasis, push, push_raw};

const TOKEN: &str = "fleet-test-token-0123456789abcdef";

/// Polls `$cond` (an expression that may `.await`) until it holds (30 s
/// at most).
macro_rules! wait {
    ($what:expr, $cond:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(30);
        while !$cond {
            assert!(Instant::now() < deadline, "never {}", $what);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

/// A policy directory of one replica: `promo` from the registry tag, `base`
/// a file, and route `radio` running `promo` with `base` as its baseline.
fn policy_dir(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), "promo", &format!("oci://{tag}"));
    install(dir.path(), "base", BASELINE, "");
    atomic_write(
        &dir.path().join("routes.toml"),
        b"[routes.radio]\npolicy = \"promo\"\nbaseline = \"base\"\n",
    );
    dir
}

/// The configuration of replica `id`: admin token, Redis control store,
/// the registry over plain HTTP polled every 200 ms.
fn tune(redis: &str, reg: &DockerRegistry, id: &str) -> impl FnOnce(&mut ServerConfig) {
    let (redis, host, id) = (redis.to_string(), reg.host(), id.to_string());
    move |c| {
        c.admin = Some(AdminConfig {
            tokens: Arc::new(AdminTokens::from_env_value(TOKEN).unwrap()),
            max_upload_bytes: 32 << 20,
        });
        c.control_store = Some(RedisControlConfig::new(redis));
        c.replica_id = Some(id);
        c.registry = RegistryConfig {
            plain_http: BTreeSet::from([host]),
            poll: Duration::from_millis(200),
            backoff_max: Duration::from_secs(1),
            ..Default::default()
        };
    }
}

/// Replicas in process, each on its own directory.
struct Fleet {
    dirs: Vec<tempfile::TempDir>,
    replicas: Vec<Replica>,
    urls: Vec<String>,
    client: reqwest::Client,
}

impl Fleet {
    /// `n` replicas `r0`… with `tag` pushed as v1 (BASELINE), then v2
    /// (GUARDED_BOOST) pushed and served by all of them, so that both
    /// versions are in every replica's version store.
    async fn start(redis: &RedisServer, reg: &DockerRegistry, tag: &str, n: usize) -> Fleet {
        push(reg, BASELINE, tag, &[]);
        let mut dirs = Vec::new();
        let mut replicas = Vec::new();
        for i in 0..n {
            let dir = policy_dir(tag);
            replicas
                .push(Replica::start(dir.path(), tune(&redis.url(), reg, &format!("r{i}"))).await);
            dirs.push(dir);
        }
        let urls = replicas.iter().map(|r| r.url.clone()).collect();
        let fleet = Fleet {
            dirs,
            replicas,
            urls,
            client: reqwest::Client::new(),
        };
        push(reg, GUARDED_BOOST, tag, &[]);
        let v2 = digest(GUARDED_BOOST);
        for url in &fleet.urls {
            wait!(&format!("{url} serving v2"), {
                let p = get(&fleet.client, &format!("{url}/v1/policies")).await;
                active(&p, "promo") == v2
            });
        }
        fleet
    }

    /// Three replicas on a new Redis and registry (tag `oasis/promo:stable`):
    /// the store, the registry, the tag and the fleet.
    async fn three() -> (RedisServer, DockerRegistry, String, Fleet) {
        let redis = RedisServer::start();
        let reg = DockerRegistry::start();
        let tag = format!("{}/oasis/promo:stable", reg.host());
        let fleet = Fleet::start(&redis, &reg, &tag, 3).await;
        (redis, reg, tag, fleet)
    }

    /// Scoring traffic on routes `radio` and `base` of every replica.
    fn traffic(&self) -> Vec<Traffic> {
        self.urls
            .iter()
            .map(|u| Traffic::start(u, &["radio", "base"]))
            .collect()
    }

    async fn shutdown(self) {
        for r in self.replicas {
            r.shutdown().await;
        }
        drop(self.dirs);
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The active digest of `key` in a `/v1/policies` answer.
fn active(p: &Value, key: &str) -> Value {
    p["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["key"] == key)
        .map(|e| e["active"]["digest"].clone())
        .unwrap_or(Value::Null)
}

/// An admin change: (status, answer, headers).
async fn change(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    body: Value,
    if_match: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = client
        .post(format!("{url}{path}"))
        .bearer_auth(TOKEN)
        .json(&body);
    if let Some(m) = if_match {
        req = req.header("if-match", m);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

/// A canary of v1 (BASELINE) at `percent` on `radio`.
fn canary(percent: f64) -> Value {
    json!({ "version": digest(BASELINE), "percent": percent })
}

const CANARY: &str = "/admin/v1/routes/radio/canary";

/// `/v1/routes` of `url`: (revision, generation).
async fn serving(client: &reqwest::Client, url: &str) -> (u64, String) {
    let v = get(client, &format!("{url}/v1/routes")).await;
    (
        v["revision"].as_u64().unwrap(),
        v["generation"].as_str().unwrap().to_string(),
    )
}

async fn fleet_status(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client
        .get(format!("{url}/admin/v1/fleet"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Replica id → its heartbeat, from `/admin/v1/fleet`.
fn heartbeats(v: &Value) -> BTreeMap<String, Value> {
    v["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["replica"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_with_no_shared_directory_converge_within_a_second() {
    let redis = RedisServer::start();
    let reg = DockerRegistry::start();
    let tag = format!("{}/oasis/promo:stable", reg.host());
    // A new version pushed to the tag is served by all three (in `start`).
    let fleet = Fleet::start(&redis, &reg, &tag, 3).await;
    let traffic = fleet.traffic();
    let client = &fleet.client;

    // 50 changes, each through the next replica; each timed from the
    // request until every replica's /v1/routes shows its revision.
    let mut took = Vec::new();
    for i in 0..50 {
        let via = &fleet.urls[i % 3];
        let started = Instant::now();
        let (status, v, headers) = change(client, via, CANARY, canary((i + 1) as f64), None).await;
        assert_eq!(status, 200, "{v}");
        let revision = v["revision"].as_u64().unwrap();
        assert_eq!(headers["etag"], format!("\"{revision}\"").as_str());
        loop {
            let all =
                futures::future::join_all(fleet.urls.iter().map(|u| serving(client, u))).await;
            if all.iter().all(|(r, _)| *r >= revision) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "revision {revision} never reached every replica: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        took.push(started.elapsed());
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50, p99, max) = (
        took[24],
        took[(took.len() * 99).div_ceil(100) - 1],
        took[49],
    );
    println!(
        "convergence over {} changes (3 replicas, Redis store): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        took.len(),
        ms(p50),
        ms(p99),
        ms(max)
    );
    assert!(p99 <= Duration::from_secs(1), "p99 {p99:?} over 1 s");

    // One generation everywhere, and the fleet view says so.
    let all = futures::future::join_all(fleet.urls.iter().map(|u| serving(client, u))).await;
    let generations: BTreeSet<&String> = all.iter().map(|(_, g)| g).collect();
    assert_eq!(generations.len(), 1, "{all:?}");
    let generation = all[0].1.clone();
    assert!(
        generation.starts_with(&format!("g{}-", all[0].0)),
        "{generation}"
    );
    let ready = client
        .get(format!("{}/readyz", fleet.urls[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.headers()["oasis-generation"], generation.as_str());
    let route = get(client, &format!("{}/v1/routes/radio", fleet.urls[2])).await;
    assert_eq!(route["canary"]["percent"], 50.0, "{route}");
    wait!("every heartbeat on the generation", {
        let (_, v) = fleet_status(client, &fleet.urls[0]).await;
        let hb = heartbeats(&v);
        hb.len() == 3
            && hb
                .values()
                .all(|r| r["generation"] == generation.as_str() && r["state"] == "applied")
    });
    let metrics = client
        .get(format!("{}/metrics", fleet.urls[0]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "oasis_generation_info{{generation=\"{generation}\"}} 1"
        )),
        "{metrics}"
    );
    for t in traffic {
        t.finish("radio").await;
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_refuses_changes_and_serving_goes_on_with_the_last_generation() {
    let (mut redis, _reg, _tag, fleet) = Fleet::three().await;
    let client = &fleet.client;
    let traffic = fleet.traffic();
    let (status, v, _) = change(client, &fleet.urls[0], CANARY, canary(5.0), None).await;
    assert_eq!(status, 200, "{v}");
    let committed = v["revision"].as_u64().unwrap();
    for u in &fleet.urls {
        wait!("the change everywhere", {
            serving(client, u).await.0 == committed
        });
    }
    let before = serving(client, &fleet.urls[0]).await;

    redis.kill();
    let started = Instant::now();
    let (status, v, headers) = change(client, &fleet.urls[1], CANARY, canary(10.0), None).await;
    let refused_in = started.elapsed();
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["kind"], "control_store_unavailable", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("control store") && message.contains("serving goes on"),
        "{message}"
    );
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    println!("a change with Redis down was refused in {refused_in:?}");
    let (status, v) = fleet_status(client, &fleet.urls[2]).await;
    assert_eq!(
        (status, &v["error"]["kind"]),
        (503, &json!("control_store_unavailable"))
    );
    // Nobody invents state: every replica stays on the committed generation.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for u in &fleet.urls {
        assert_eq!(serving(client, u).await, before, "{u}");
        let r = client.get(format!("{u}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    // Redis comes back (empty: no persistence): changes work again, from
    // the state the replicas applied, not from nothing.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let (s, v, _) = change(client, &fleet.urls[1], CANARY, canary(10.0), None).await;
        if s == 200 {
            break v;
        }
        assert_eq!(s, 503, "{v}");
        assert!(Instant::now() < deadline, "changes never worked again: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let revision = answer["revision"].as_u64().unwrap();
    assert!(revision > committed, "{answer}");
    assert_eq!(answer["rollout"]["canary"]["percent"], 10.0);
    for u in &fleet.urls {
        wait!("the change after the outage everywhere", {
            serving(client, u).await.0 == revision
        });
    }
    for t in traffic {
        t.finish("radio").await;
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_changing_one_route_at_once_one_wins_the_other_gets_a_conflict() {
    let (_redis, _reg, _tag, fleet) = Fleet::three().await;
    let client = &fleet.client;
    let traffic = Traffic::start(&fleet.urls[2], &["radio"]);
    let (status, v, _) = change(client, &fleet.urls[0], CANARY, canary(1.0), None).await;
    assert_eq!(status, 200, "{v}");
    let rev = v["revision"].as_u64().unwrap();
    let m = format!("\"{rev}\"");

    // Both read revision `rev`, both change through different replicas.
    let (a, b) = tokio::join!(
        change(client, &fleet.urls[0], CANARY, canary(7.0), Some(&m)),
        change(client, &fleet.urls[1], CANARY, canary(9.0), Some(&m)),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", a.1, b.1);
    let (winner, loser) = if a.0 == 200 { (a, b) } else { (b, a) };
    assert_eq!(winner.1["revision"], rev + 1);
    assert_eq!(loser.1["error"]["kind"], "conflict", "{}", loser.1);
    let message = loser.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("revision {}", rev + 1))
            && message.contains(&format!("not {rev}")),
        "names the revision: {message}"
    );
    // The loser's change was not made.
    let percent = winner.1["rollout"]["canary"]["percent"].clone();
    for u in &fleet.urls {
        wait!("the winner everywhere", {
            let r = get(client, &format!("{u}/v1/routes/radio")).await;
            r["canary"]["percent"] == percent
        });
    }
    // A malformed If-Match names the header.
    let (status, v, _) = change(client, &fleet.urls[0], CANARY, canary(3.0), Some("abc")).await;
    assert_eq!(
        (status, &v["error"]["field"]),
        (422, &json!("If-Match")),
        "{v}"
    );
    // The CLI: --if-revision with a stale revision is refused, naming it.
    let out = oasis(
        &[
            "rollout",
            "--url",
            &fleet.urls[2],
            "--if-revision",
            &rev.to_string(),
            "canary",
            "radio",
            &digest(BASELINE),
            "--percent",
            "3",
        ],
        &[("OASIS_ADMIN_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("409 conflict") && stderr.contains(&format!("revision {}", rev + 1)),
        "{stderr}"
    );
    // The fleet's audit is the store's: replica 2, which made no change,
    // lists the changes made through replicas 0 and 1 (and not the loser's).
    let audit: Value = client
        .get(format!("{}/admin/v1/audit?limit=10", fleet.urls[2]))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!(
        entries[1]["percent"].as_f64(),
        percent.as_f64(),
        "the winner's change, last: {audit}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    traffic.finish("radio").await;
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_to_a_module_that_does_not_load_is_refused_on_every_replica_and_shown_in_fleet_status()
 {
    let (_redis, reg, tag, fleet) = Fleet::three().await;
    let client = &fleet.client;
    let traffic = fleet.traffic();
    push_raw(&reg, &tag, &std::fs::read(NOT_A_POLICY).unwrap()).await;
    wait!("every replica reporting the refusal", {
        let (_, v) = fleet_status(client, &fleet.urls[0]).await;
        let hb = heartbeats(&v);
        let all = hb.len() == 3
            && hb.values().all(|r| {
                r["state"] == "refused"
                    && r["refusals"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|f| f["what"] == "promo"))
            });
        all
    });
    let (_, status) = fleet_status(client, &fleet.urls[1]).await;
    for r in heartbeats(&status).values() {
        let reason = r["refusals"][0]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!("oci:{tag}@sha256:")),
            "{reason}"
        );
    }
    // The other policies are unaffected: v2 (the last good) and base serve.
    for u in &fleet.urls {
        let p = get(client, &format!("{u}/v1/policies")).await;
        assert_eq!(active(&p, "promo"), digest(GUARDED_BOOST));
        assert_eq!(active(&p, "base"), digest(BASELINE));
    }
    let out = oasis(
        &["fleet", "status", "--url", &fleet.urls[2]],
        &[("OASIS_ADMIN_TOKEN", TOKEN)],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in ["r0", "r1", "r2"] {
        assert!(text.contains(id), "{text}");
    }
    assert!(text.contains("refused promo: oci:"), "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for t in traffic {
        let served = t.finish("radio").await;
        assert!(served.iter().all(|d| *d == digest(GUARDED_BOOST)));
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_down_later_and_at_a_replicas_start_is_shown_in_fleet_status() {
    let redis = RedisServer::start();
    let mut reg = DockerRegistry::start();
    let tag = format!("{}/oasis/promo:stable", reg.host());
    let mut fleet = Fleet::start(&redis, &reg, &tag, 3).await;
    let client = fleet.client.clone();
    let traffic = Traffic::start(&fleet.urls[0], &["radio", "base"]);
    reg.kill();
    let failing = |v: &Value, id: &str| {
        heartbeats(v).get(id).is_some_and(|r| {
            r["registry_failures"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["what"] == format!("oci://{tag}")))
        })
    };
    wait!("every replica reporting the registry", {
        let (_, v) = fleet_status(&client, &fleet.urls[0]).await;
        ["r0", "r1", "r2"].iter().all(|id| failing(&v, id))
    });
    // r2 restarts while the registry is down: it serves what its version
    // store kept, and says the registry fails.
    let r2 = fleet.replicas.pop().unwrap();
    r2.shutdown().await;
    let again = Replica::start(fleet.dirs[2].path(), tune(&redis.url(), &reg, "r2")).await;
    let p = get(&client, &format!("{}/v1/policies", again.url)).await;
    assert_eq!(active(&p, "promo"), digest(GUARDED_BOOST), "{p:#}");
    let r = client
        .post(format!("{}/v1/score", again.url))
        .body(routed("radio", &crate::harness::example_body()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait!("the restarted replica reporting the registry", {
        let (_, v) = fleet_status(&client, &fleet.urls[0]).await;
        failing(&v, "r2") && heartbeats(&v)["r2"]["at_ms"].as_u64() > Some(0)
    });
    reg.restart();
    wait!("the registry failures cleared", {
        let (_, v) = fleet_status(&client, &again.url).await;
        !["r0", "r1", "r2"].iter().any(|id| failing(&v, id))
    });
    traffic.finish("radio").await;
    again.shutdown().await;
    fleet.shutdown().await;
}

/// `oasis serve` as a fleet member.
fn serve(dir: &Path, redis: &str, reg: &DockerRegistry, id: &str) -> ServeProcess {
    let host = reg.host();
    ServeProcess::start(
        dir,
        &[
            "--control-store",
            redis,
            "--replica-id",
            id,
            "--registry-plain-http",
            &host,
            "--registry-poll-ms",
            "200",
            "--registry-backoff-max-ms",
            "1000",
            "--state",
            "off",
        ],
        &[
            ("OASIS_ADMIN_TOKEN", TOKEN),
            ("DOCKER_CONFIG", NO_DOCKER_CONFIG),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_in_a_change_comes_back_on_the_committed_generation_even_with_redis_down()
{
    let mut redis = RedisServer::start();
    let reg = DockerRegistry::start();
    let tag = format!("{}/oasis/promo:stable", reg.host());
    push(&reg, BASELINE, &tag, &[]);
    let (da, db) = (policy_dir(&tag), policy_dir(&tag));
    let a = serve(da.path(), &redis.url(), &reg, "a");
    let b = serve(db.path(), &redis.url(), &reg, "b");
    let client = reqwest::Client::new();
    push(&reg, GUARDED_BOOST, &tag, &[]);
    for u in [&a.url, &b.url] {
        wait!("serving v2", {
            active(&get(&client, &format!("{u}/v1/policies")).await, "promo")
                == digest(GUARDED_BOOST)
        });
    }
    let traffic = Traffic::start(&b.url, &["radio", "base"]);
    let (status, v, _) = change(&client, &a.url, CANARY, canary(5.0), None).await;
    assert_eq!(status, 200, "{v}");

    // kill -9 while a change is in flight on `a`.
    let in_flight = tokio::spawn({
        let (client, url) = (client.clone(), a.url.clone());
        async move {
            client
                .post(format!("{url}{CANARY}"))
                .bearer_auth(TOKEN)
                .json(&canary(6.0))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    a.signal("KILL");
    let (exit, _) = a.wait();
    assert!(!exit.success());
    println!(
        "the change in flight answered {:?}",
        in_flight.await.unwrap()
    );
    // The fleet moves on without it.
    let (status, v, _) = change(&client, &b.url, CANARY, canary(7.0), None).await;
    assert_eq!(status, 200, "{v}");
    let committed = v["revision"].as_u64().unwrap();
    wait!("b on the change", {
        serving(&client, &b.url).await.0 == committed
    });
    let on_b = serving(&client, &b.url).await;

    // It comes back on the committed generation, from its first answer.
    let a = serve(da.path(), &redis.url(), &reg, "a");
    assert_eq!(serving(&client, &a.url).await, on_b);
    a.signal("KILL");
    drop(a.wait());

    // Started while Redis is down: its last committed copy serves.
    redis.kill();
    let a = serve(da.path(), &redis.url(), &reg, "a");
    assert_eq!(serving(&client, &a.url).await, on_b);
    let r = client
        .post(format!("{}/v1/score", a.url))
        .body(routed("radio", &crate::harness::example_body()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    traffic.finish("radio").await;
    drop(a);
    drop(b);
}

/// The versions index is the store's: a module uploaded through one replica
/// (never pulled by the others) can be made the canary through another, and
/// every replica brings it from the store and serves it; with Redis down an
/// upload is refused (503) rather than kept on one replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_uploaded_through_one_replica_is_canaried_through_another_and_served_by_all() {
    let (redis, _reg, _tag, fleet) = Fleet::three().await;
    let client = &fleet.client;
    let upload = |url: &str| {
        client
            .post(format!("{url}/admin/v1/policies/promo/versions"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/wasm")
            .body(std::fs::read(PID_PACING).unwrap())
            .send()
    };
    let r = upload(&fleet.urls[0]).await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let v3 = digest(PID_PACING);
    let traffic = Traffic::start(&fleet.urls[2], &["radio"]);

    // Through replica 1, which never saw the upload.
    let (status, v, _) = change(
        client,
        &fleet.urls[1],
        CANARY,
        json!({"version": v3, "percent": 100.0}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for u in &fleet.urls {
        wait!(&format!("{u} serving the uploaded canary"), {
            let r = get(client, &format!("{u}/v1/routes/radio")).await;
            r["canary"]["version"]["digest"] == json!(v3)
        });
    }
    // Every replica answers from it (a 100% canary).
    for u in &fleet.urls {
        let r: Value = client
            .post(format!("{u}/v1/score"))
            .body(routed("radio", &crate::harness::example_body()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (r["variant"].as_str(), r["policy"]["digest"].as_str()),
            (Some("canary"), Some(v3.as_str())),
            "{u}: {r}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    traffic.finish("radio").await;

    // Redis down: an upload is refused, not kept on one replica.
    drop(redis);
    let r = upload(&fleet.urls[2]).await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["kind"], "control_store_unavailable", "{v}");
    fleet.shutdown().await;
}
