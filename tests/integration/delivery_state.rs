//! Delivery state kept by the server: events fill later requests, a
//! repeated event changes nothing, only the served arm writes pacing state
//! (one controller step per campaign per tick, however many requests race),
//! the state survives a restart, and a contract 0.1.0 component keeps
//! serving beside 0.2.0 ones.

use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::Method;
use oasis_test_components::{BASELINE, FREQ_CAP_DIVERSITY, PID_PACING};
use serde_json::{Value, json};

use crate::harness::server::{Harness, TestServer, install, metric};

const NOW: i64 = 1_781_524_800_000;

/// A request on `route` at `at_ms` for listener `u1`: two campaign tracks of
/// campaign `c1` and one organic track, sending no delivery state at all.
fn body(route: &str, request_id: &str, at_ms: i64) -> Vec<u8> {
    let campaign = json!({"id": "c1", "start_ms": NOW - 86_400_000, "end_ms": NOW + 7 * 86_400_000,
                          "delivery_target": 1000.0});
    serde_json::to_vec(&json!({
        "route": route,
        "context": {"request_id": request_id, "listener_id": "u1", "session_id": "s1",
                    "surface": "radio", "market": "SE", "timestamp_ms": at_ms},
        "candidates": [
            {"id": "t1", "relevance": 0.9, "artist": "a1", "rights_holder": "h1",
             "features": {"p_skip": 0.1}, "campaign": campaign},
            {"id": "t2", "relevance": 0.8, "artist": "a2", "rights_holder": "h2",
             "features": {"p_skip": 0.1}, "campaign": campaign},
            {"id": "t3", "relevance": 0.7, "artist": "a3", "rights_holder": "h2",
             "features": {"p_skip": 0.1}}
        ]
    }))
    .unwrap()
}

fn event(id: &str, kind: &str, track: &str, at_ms: i64) -> Value {
    json!({"event_id": id, "request_id": "r0", "candidate_id": track, "event": kind,
           "at_ms": at_ms, "listener_id": "u1", "session_id": "s1",
           "campaign_id": "c1", "rights_holder": "h1", "promoted": true, "position": 1})
}

async fn post_events(s: &TestServer, events: &[Value]) -> (u16, Value) {
    let body = serde_json::to_vec(events).unwrap();
    let r = s.send(Method::POST, "/v1/events", body).await;
    (r.status, r.json())
}

fn reasons(v: &Value, i: usize) -> Vec<String> {
    v["scores"][i]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

fn caps(dir: &Path) {
    install(
        dir,
        "caps",
        FREQ_CAP_DIVERSITY,
        "[settings]\nmax_daily = 1\nmax_session = 5\n",
    );
}

#[tokio::test]
async fn events_fill_the_next_request_and_a_repeated_event_changes_nothing() {
    let s = TestServer::start(caps).await;
    let (status, v) = s.score(body("caps", "r1", NOW)).await;
    assert_eq!(status, 200, "{v}");
    assert!(reasons(&v, 0).contains(&"promoted".to_string()), "{v}");

    let batch = [event("e1", "impression", "t1", NOW + 1000)];
    let (status, v) = post_events(&s, &batch).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(
        (v["applied"].as_u64(), v["duplicates"].as_u64()),
        (Some(1), Some(0))
    );
    // The same batch again (a retry): nothing changes.
    let (status, v) = post_events(&s, &batch).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(
        (v["applied"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(1))
    );

    // One promoted impression of t1 to u1 now counts: the cap (1) holds it back.
    let (_, v) = s.score(body("caps", "r2", NOW + 2000)).await;
    assert!(reasons(&v, 0).contains(&"freq_capped".to_string()), "{v}");
    assert_eq!(v["scores"][0]["eligible"], false);
    assert!(reasons(&v, 1).contains(&"promoted".to_string()), "{v}");
    // A request that sends its own count wins over the store.
    let mut sent: Value = serde_json::from_slice(&body("caps", "r3", NOW + 2000)).unwrap();
    sent["candidates"][0]["impressions_24h"] = 0.into();
    let (_, v) = s.score(serde_json::to_vec(&sent).unwrap()).await;
    assert!(reasons(&v, 0).contains(&"promoted".to_string()), "{v}");
    // 24 hours later (the caller's clock) the impression has left the window.
    let (_, v) = s.score(body("caps", "r4", NOW + 1000 + 86_400_000)).await;
    assert!(reasons(&v, 0).contains(&"promoted".to_string()), "{v}");

    // Bad events are refused whole, naming the field; nothing is applied.
    let mut bad = event("e2", "stream", "t1", NOW);
    bad.as_object_mut().unwrap().remove("listener_id");
    let (status, v) = post_events(&s, &[event("e3", "impression", "t2", NOW), bad]).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["field"], "events[1].listener_id", "{v}");
    let (_, v) = post_events(&s, &[event("e3", "impression", "t2", NOW)]).await;
    let m = s.metrics().await;
    assert_eq!(metric(&m, "oasis_events_total{result=\"applied\"}"), 2.0);
    assert_eq!(metric(&m, "oasis_events_total{result=\"duplicate\"}"), 1.0);
    assert_eq!(metric(&m, "oasis_events_total{result=\"invalid\"}"), 1.0);
    assert_eq!(
        v["applied"], 1,
        "e3 was not applied by the refused batch: {v}"
    );

    let p = s.policies().await;
    assert_eq!(p["state"]["store"], "embedded", "{p}");
    assert_eq!(p["state"]["status"], "ok", "{p}");
    let caps = p["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "caps")
        .unwrap();
    assert_eq!(caps["active"]["contract"], "0.2.0");
}

/// Waits until the pacing writer has handled `n` steps (applied + refused).
/// `GET /v1/campaigns` shows each campaign's delivery as the policy saw it
/// (here from the delivery state: the events posted), against its target
/// and schedule, and what the served policy did with its tracks: promoted,
/// or held back by the frequency cap.
#[tokio::test]
async fn campaigns_show_delivery_from_the_state_against_target_and_cap_hits() {
    let s = TestServer::start(caps).await;
    let (status, v) = s.score(body("caps", "r1", NOW)).await;
    assert_eq!(status, 200, "{v}");
    let list = s.get("/v1/campaigns").await.json();
    let c1 = &list["campaigns"][0];
    assert_eq!(c1["campaign"], "c1", "{list}");
    assert_eq!(c1["route"], "caps");
    assert_eq!(c1["delivered"], 0.0);
    assert_eq!(c1["delivered_from"], "state");
    assert_eq!(c1["delivery_target"], 1000.0);
    // One day of an eight-day window: 125 expected, 0 delivered.
    assert_eq!(c1["expected_by_now"], 125.0);
    assert_eq!(c1["pace"], 0.0);
    assert_eq!(
        (c1["requests"].as_u64(), c1["candidates"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(c1["promoted"], 2, "both tracks promoted: {c1}");
    assert_eq!(c1["frequency_capped"], 0);

    // Three promoted impressions of c1 (t1 to u1 among them): delivered 3,
    // and u1's cap of one a day now holds t1 back.
    let events: Vec<Value> = (0..3)
        .map(|i| {
            let mut e = event(&format!("e{i}"), "impression", "t1", NOW + 1000);
            if i > 0 {
                e["listener_id"] = format!("other-{i}").into();
            }
            e
        })
        .collect();
    let (status, v) = post_events(&s, &events).await;
    assert_eq!(status, 202, "{v}");
    let (_, v) = s.score(body("caps", "r2", NOW + 2000)).await;
    assert!(reasons(&v, 0).contains(&"freq_capped".to_string()), "{v}");
    let list = s.get("/v1/campaigns").await.json();
    let c1 = &list["campaigns"][0];
    assert_eq!(c1["delivered"], 3.0, "{c1}");
    assert_eq!(c1["last_request_ms"], NOW + 2000);
    assert_eq!(c1["requests"], 2);
    assert_eq!(c1["candidates"], 4);
    assert_eq!(c1["frequency_capped"], 1, "{c1}");
    assert_eq!(c1["promoted"], 3, "{c1}");
    assert_eq!(
        (list["tracked"].as_u64(), list["evicted"].as_u64()),
        (Some(1), Some(0))
    );

    // A caller that sends `delivered` is shown as the source.
    let mut sent: Value = serde_json::from_slice(&body("caps", "r3", NOW + 3000)).unwrap();
    for i in 0..2 {
        sent["candidates"][i]["campaign"]["delivered"] = 500.0.into();
    }
    let (status, _) = s.score(serde_json::to_vec(&sent).unwrap()).await;
    assert_eq!(status, 200);
    let c1 = s.get("/v1/campaigns?limit=1").await.json()["campaigns"][0].clone();
    assert_eq!(
        (c1["delivered"].as_f64(), c1["delivered_from"].as_str()),
        (Some(500.0), Some("request"))
    );
    let pace = c1["pace"].as_f64().unwrap();
    assert!((pace - 4.0).abs() < 1e-3, "500 of ~125 expected: {c1}");
    let bad = s.get("/v1/campaigns?limit=lots").await;
    assert_eq!(bad.status, 400);
}

async fn pacing_steps(s: &TestServer, n: f64) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = s.metrics().await;
        let applied = metric(&m, "oasis_state_operations{op=\"pacing_applied\"}");
        let refused = metric(&m, "oasis_state_operations{op=\"pacing_refused\"}");
        if applied + refused >= n {
            return (applied, refused);
        }
        assert!(Instant::now() < deadline, "{applied} + {refused} < {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn only_the_served_arm_writes_one_pacing_step_per_campaign_per_tick() {
    const TOKEN: &str = "delivery-test-token-0123456789abcdef";
    let s = TestServer::start_with(
        |dir| {
            install(dir, "pacing", PID_PACING, "");
            install(dir, "base", BASELINE, "");
            std::fs::write(
                dir.join("routes.toml"),
                "[routes.paced]\npolicy = \"pacing\"\n\n[routes.shadowed]\npolicy = \"base\"\n",
            )
            .unwrap();
        },
        |c| {
            c.admin = Some(oasis::server::AdminConfig {
                tokens: std::sync::Arc::new(
                    oasis::api::auth::AdminTokens::from_env_value(TOKEN).unwrap(),
                ),
                max_upload_bytes: 32 << 20,
            })
        },
    )
    .await;
    let r = s
        .client
        .post(s.at("/admin/v1/routes/shadowed/shadows"))
        .bearer_auth(TOKEN)
        .json(&json!({"policy": "pacing", "on": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // pid-pacing as a shadow scores requests but never writes: no step
    // reaches the writer. Shadows run only on CPU nothing else wants
    // (SCHED_IDLE threads, shed while the served arm is slow), so requests
    // are sent until some shadow calls have run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut i = 0;
    let m = loop {
        let (status, _) = s.score(body("shadowed", &format!("sh{i}"), NOW)).await;
        assert_eq!(status, 200);
        i += 1;
        let m = s.metrics().await;
        let ran = metric(
            &m,
            "oasis_shadow_calls_total{route=\"shadowed\",shadow=\"pacing\",result=\"ok\"}",
        );
        if ran >= 3.0 {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shadow ran {ran} times in {i} requests"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        metric(&m, "oasis_state_operations{op=\"pacing_applied\"}"),
        0.0
    );
    assert_eq!(
        metric(&m, "oasis_state_operations{op=\"pacing_refused\"}"),
        0.0
    );
    // 16 requests race in one tick: the served policy proposes 16 steps
    // for c1 from the same (empty) state; exactly one lands.
    let tasks: Vec<_> = (0..16)
        .map(|i| s.spawn_score(body("paced", &format!("p{i}"), NOW + 10)))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().0, 200);
    }
    let (applied, refused) = pacing_steps(&s, 16.0).await;
    assert_eq!((applied, refused), (1.0, 15.0));
    // The next tick steps again, from the state the first step wrote.
    let (status, _) = s.score(body("paced", "next", NOW + 1500)).await;
    assert_eq!(status, 200);
    let (applied, refused) = pacing_steps(&s, 17.0).await;
    assert_eq!((applied, refused), (2.0, 15.0));
}

#[tokio::test]
async fn delivery_state_survives_a_restart() {
    let s = TestServer::start(caps).await;
    let (status, _) = post_events(&s, &[event("e1", "impression", "t1", NOW)]).await;
    assert_eq!(status, 202);
    let (kept, dir) = s.stop_keeping_dir().await;
    let again = crate::harness::server::Replica::start(&dir, |c| {
        c.state = oasis::delivery::StateConfig::default();
    })
    .await;
    let r = again
        .client
        .post(format!("{}/v1/score", again.url))
        .body(body("caps", "after", NOW + 1000))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert!(reasons(&v, 0).contains(&"freq_capped".to_string()), "{v}");
    again.shutdown().await;
    drop(kept);
}

/// A real redis-server (the state crate's test helper).
#[path = "../../state/tests/support/mod.rs"]
pub(crate) mod redis_support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_redis_under_load_never_produces_an_error_response() {
    let mut redis = redis_support::RedisServer::start();
    let url = redis.url();
    let s = TestServer::start_with(caps, |c| {
        c.state.backend = oasis::delivery::StateBackend::Redis(url);
    })
    .await;
    let (status, v) = post_events(&s, &[event("before", "impression", "t1", NOW)]).await;
    assert_eq!((status, v["applied"].as_u64()), (202, Some(1)), "{v}");

    // Four clients score and post events throughout; Redis dies in the
    // middle and comes back.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|k| {
            let (client, base, stop) = (s.client.clone(), s.url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let at = NOW + 10_000 + i * 100;
                    let r = client
                        .post(format!("{base}/v1/score"))
                        .body(body("caps", &format!("load-{k}-{i}"), at))
                        .send()
                        .await
                        .unwrap();
                    statuses.push(("score", r.status().as_u16()));
                    let e = event(&format!("ev-{k}-{i}"), "stream", "t2", at);
                    let r = client
                        .post(format!("{base}/v1/events"))
                        .body(serde_json::to_vec(&[e]).unwrap())
                        .send()
                        .await
                        .unwrap();
                    statuses.push(("events", r.status().as_u16()));
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    // Degraded, reported, and still answering.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = s.policies().await;
        if p["state"]["status"] == "degraded" {
            break;
        }
        assert!(Instant::now() < deadline, "never reported degraded: {p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = s.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert!(
        String::from_utf8_lossy(&ready.body).contains("degraded"),
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    assert_eq!(metric(&s.metrics().await, "oasis_state_degraded"), 1.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    // It recovers by itself, and the queued events reach Redis.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = s.policies().await;
        if p["state"]["status"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut scored = 0;
    for c in clients {
        for (what, status) in c.await.unwrap() {
            assert!(
                status == 200 || status == 202,
                "{what} answered {status} while Redis was stopped or back"
            );
            scored += usize::from(what == "score");
        }
    }
    assert!(scored > 10, "the load ran ({scored} requests)");
    let m = s.metrics().await;
    assert!(metric(&m, "oasis_state_operations{op=\"read_fallback\"}") >= 1.0);
    assert!(metric(&m, "oasis_state_operations{op=\"events_flushed\"}") >= 1.0);
    assert_eq!(metric(&m, "oasis_state_degraded"), 0.0);
}

#[tokio::test]
async fn a_contract_0_1_0_component_serves_beside_0_2_0_ones_with_state_filled() {
    let legacy = format!(
        "{}/tests/fixtures/contract-0.1.0/pid_pacing.wasm",
        oasis_test_components::ROOT
    );
    let s = TestServer::start(|dir| {
        install(dir, "legacy", &legacy, "");
        install(dir, "pacing", PID_PACING, "");
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
    assert_eq!(contract("pacing"), Some("0.2.0".into()), "{p}");
    // The 0.1.0 policy reads the state the host fills (delivered, the
    // 24 h counts) through the fields it already had.
    let (status, _) = post_events(&s, &[event("l1", "impression", "t1", NOW)]).await;
    assert_eq!(status, 202);
    for route in ["legacy", "pacing"] {
        let (status, v) = s
            .score(body(route, &format!("{route}-1"), NOW + 1000))
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["variant"], "stable", "{route}: {v}");
        assert_eq!(v["scores"].as_array().unwrap().len(), 3);
    }
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One event in microseconds (or a request dated years ahead) would move
/// the store's clock for everyone; times more than the stated bound ahead
/// of the server's clock are refused, naming the field.
#[tokio::test]
async fn times_ahead_of_the_server_clock_are_refused_naming_the_field() {
    let s = TestServer::start(caps).await;
    let now = unix_now_ms();
    let (status, v) = post_events(
        &s,
        &[
            event("ok", "impression", "t1", now),
            event("micros", "impression", "t1", now * 1000),
        ],
    )
    .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["field"], "events[1].at_ms", "{v}");
    // Within the bound (`oasis_state::MAX_AHEAD_MS`, 5 minutes).
    let ahead = now + 60_000;
    let (status, v) = post_events(&s, &[event("soon", "impression", "t2", ahead)]).await;
    assert_eq!(status, 202, "within the bound: {v}");

    let (status, v) = s
        .score(body("caps", "future", now + 10 * 365 * 86_400_000))
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["field"], "context.timestamp_ms", "{v}");
    let (status, v) = s.score(body("caps", "present", now)).await;
    assert_eq!(status, 200, "{v}");
    // Nothing of the refused batch was applied: `ok` is new.
    let (_, v) = post_events(&s, &[event("ok", "impression", "t1", now)]).await;
    assert_eq!(v["applied"], 1, "{v}");
}

/// A wrong-typed element of an array batch is named by its index.
#[tokio::test]
async fn a_wrong_typed_element_of_an_array_batch_is_named() {
    let s = TestServer::start(caps).await;
    let mut bad = event("e2", "impression", "t1", NOW);
    bad["request_id"] = 5.into();
    let (status, v) = post_events(&s, &[event("e1", "impression", "t1", NOW), bad]).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "events[1]", "{v}");
    let r = s
        .send(Method::POST, "/v1/events", b"[{\"event_id\": 1}]".to_vec())
        .await;
    assert_eq!(r.json()["error"]["field"], "events[0]", "{}", r.json());
    let r = s
        .send(Method::POST, "/v1/events", b"{\"a\": 1}".to_vec())
        .await;
    assert_eq!(r.status, 400);
}

/// When the counts a frequency cap relies on are unknown (the store did not
/// answer), nothing is promoted: the answer is in organic order, the
/// campaign tracks say why (`freq_capped` and `missing_feature`), the
/// answer says the counts were unknown and a metric counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_counts_promote_nothing() {
    let mut redis = redis_support::RedisServer::start();
    let url = redis.url();
    let s = TestServer::start_with(caps, |c| {
        c.state.backend = oasis::delivery::StateBackend::Redis(url);
    })
    .await;
    let (status, v) = post_events(&s, &[event("e1", "impression", "t1", NOW)]).await;
    assert_eq!((status, v["applied"].as_u64()), (202, Some(1)), "{v}");
    let (_, v) = s.score(body("caps", "known", NOW + 1000)).await;
    assert!(reasons(&v, 0).contains(&"freq_capped".to_string()), "{v}");
    assert!(reasons(&v, 1).contains(&"promoted".to_string()), "{v}");
    assert!(v.get("delivery_state").is_none(), "{v}");

    redis.kill();
    for i in 0..3 {
        let (status, v) = s
            .score(body("caps", &format!("unknown{i}"), NOW + 2000))
            .await;
        assert_eq!(status, 200, "{v}");
        for c in 0..3 {
            assert!(
                !reasons(&v, c).contains(&"promoted".to_string()),
                "candidate {c} promoted with unknown counts: {v}"
            );
        }
        for c in 0..2 {
            assert_eq!(v["scores"][c]["eligible"], false, "{v}");
            let r = reasons(&v, c);
            assert!(
                r.contains(&"freq_capped".to_string())
                    && r.contains(&"missing_feature".to_string()),
                "{v}"
            );
        }
        let scores: Vec<f64> = (0..3)
            .map(|c| v["scores"][c]["score"].as_f64().unwrap())
            .collect();
        assert_eq!(scores, [0.9, 0.8, 0.7], "organic order: {v}");
        assert_eq!(v["delivery_state"], "counts_unknown", "{v}");
    }
    // A request that sends its counts is the caller's and unaffected.
    let mut sent: Value = serde_json::from_slice(&body("caps", "sent", NOW + 2000)).unwrap();
    for c in 0..3 {
        sent["candidates"][c]["impressions_24h"] = 0.into();
        sent["candidates"][c]["session_promoted"] = 0.into();
    }
    let (_, v) = s.score(serde_json::to_vec(&sent).unwrap()).await;
    assert!(reasons(&v, 0).contains(&"promoted".to_string()), "{v}");
    let m = s.metrics().await;
    assert!(
        metric(&m, "oasis_state_counts_unknown_total{}") >= 3.0,
        "{}",
        m.lines()
            .filter(|l| l.contains("unknown"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// An event flood whose writes overrun the embedded store's budget must not
/// switch off its reads: a capped listener stays capped throughout, and the
/// flood is answered 503 `events_busy` with Retry-After, never acknowledged
/// from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_listener_stays_capped_while_an_event_flood_overruns_the_store() {
    let s = TestServer::start_with(caps, |c| {
        c.state.write_budget = Duration::ZERO;
    })
    .await;
    // The write lands even when its answer overran the budget; wait for
    // the cap to show (the retry is safe: ids de-duplicate).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = post_events(&s, &[event("e1", "impression", "t1", NOW)]).await;
        let (_, v) = s.score(body("caps", "wait", NOW + 1000)).await;
        if reasons(&v, 0).contains(&"freq_capped".to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "the cap never showed: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..2)
        .map(|k| {
            let (client, base, stop) = (s.client.clone(), s.url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let batch: Vec<Value> = (0..200)
                        .map(|j| {
                            let mut e = event(&format!("f{k}-{i}-{j}"), "impression", "t1", NOW);
                            e["listener_id"] = format!("other{j}").into();
                            e
                        })
                        .collect();
                    let r = client
                        .post(format!("{base}/v1/events"))
                        .body(serde_json::to_vec(&batch).unwrap())
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    let retry = r.headers().get("retry-after").is_some();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    answers.push((status, retry, v));
                }
                answers
            })
        })
        .collect();
    for i in 0..30 {
        let (status, v) = s
            .score(body("caps", &format!("flood{i}"), NOW + 2000))
            .await;
        assert_eq!(status, 200, "{v}");
        assert!(
            reasons(&v, 0).contains(&"freq_capped".to_string()),
            "request {i}: the capped track was promoted again during the flood: {v}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut refused = 0;
    for f in flood {
        for (status, retry, v) in f.await.unwrap() {
            match status {
                202 => assert_eq!(v["buffered"], 0, "acknowledged from memory: {v}"),
                503 => {
                    assert!(retry, "503 without Retry-After");
                    assert_eq!(v["error"]["kind"], "events_busy", "{v}");
                    refused += 1;
                }
                other => panic!("flood answered {other}: {v}"),
            }
        }
    }
    assert!(refused > 0, "the flood overran the store");
}

/// `kill -9` of a real `oasis serve` during an event flood whose big
/// batches overrun the write budget: every event the server acknowledged
/// (202) is in the store after the restart (posting it again applies
/// nothing), and what it could not make durable it refused (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_an_event_flood_loses_no_acknowledged_event() {
    use crate::harness::process::ServeProcess;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    caps(dir.path());
    let server = ServeProcess::start(dir.path(), &["--state-write-budget-ms", "100"], &[]);
    let url = format!("{}/v1/events", server.url);
    let client = reqwest::Client::new();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let acked_batches = std::sync::Arc::new(AtomicU64::new(0));
    let refused_batches = std::sync::Arc::new(AtomicU64::new(0));
    let small_acked = std::sync::Arc::new(AtomicU64::new(0));
    let big_answered = std::sync::Arc::new(AtomicU64::new(0));
    // One client sends small batches (they fit the budget when the store
    // is idle), two send big ones (they overrun it).
    let flood: Vec<_> = [5, 3000, 3000]
        .into_iter()
        .enumerate()
        .map(|(k, n)| {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            let (acked_n, refused_n) = (acked_batches.clone(), refused_batches.clone());
            let progress = if n < 100 {
                small_acked.clone()
            } else {
                big_answered.clone()
            };
            tokio::spawn(async move {
                let mut acked: Vec<Vec<Value>> = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let batch: Vec<Value> = (0..n)
                        .map(|j| {
                            let mut e = event(&format!("k{k}-{i}-{j}"), "impression", "t1", NOW);
                            e["listener_id"] = format!("l{k}-{j}").into();
                            e
                        })
                        .collect();
                    let Ok(r) = client
                        .post(&url)
                        .body(serde_json::to_vec(&batch).unwrap())
                        .send()
                        .await
                    else {
                        break; // killed
                    };
                    match r.status().as_u16() {
                        202 => {
                            acked.push(batch);
                            acked_n.fetch_add(1, Ordering::Relaxed);
                            progress.fetch_add(1, Ordering::Relaxed);
                        }
                        503 => {
                            assert!(r.headers().get("retry-after").is_some());
                            refused_n.fetch_add(1, Ordering::Relaxed);
                            if n >= 100 {
                                progress.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        other => panic!("answered {other}"),
                    }
                }
                acked
            })
        })
        .collect();
    // Flood until small batches were acknowledged and big ones answered
    // (acknowledged or refused), then kill -9 mid-flood.
    let deadline = Instant::now() + Duration::from_secs(60);
    while small_acked.load(Ordering::Relaxed) < 3 || big_answered.load(Ordering::Relaxed) < 6 {
        assert!(
            Instant::now() < deadline,
            "the flood did not get going: {} small acknowledged, {} big answered, {} refused",
            small_acked.load(Ordering::Relaxed),
            big_answered.load(Ordering::Relaxed),
            refused_batches.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.signal("KILL");
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for f in flood {
        acked.extend(f.await.unwrap());
    }
    drop(server);
    let events: usize = acked.iter().map(Vec::len).sum();
    eprintln!(
        "kill -9 after {} batches ({events} events) acknowledged, {} refused",
        acked.len(),
        refused_batches.load(Ordering::Relaxed)
    );
    let again = ServeProcess::start(dir.path(), &[], &[]);
    let url = format!("{}/v1/events", again.url);
    let mut lost = 0;
    for batch in &acked {
        let r = client
            .post(&url)
            .body(serde_json::to_vec(batch).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        lost += v["applied"].as_u64().unwrap();
    }
    assert_eq!(
        lost,
        0,
        "{lost} of {events} acknowledged events were lost by kill -9 ({} batches acknowledged, {} refused)",
        acked.len(),
        refused_batches.load(Ordering::Relaxed)
    );
}
