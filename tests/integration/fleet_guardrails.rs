//! Fleet-wide guardrail windows (`--fleet-windows`): replicas add their
//! canary and stable counts to shared buckets in a real `redis-server`, so
//! a small canary spread over replicas is judged on the fleet's requests;
//! Redis going away never fails a scoring request.
//!
//! Each replica has its own policy directory (route `radio`: guarded-boost
//! stable, the `flaky` guest as canary), and the same Redis for windows.

use std::time::{Duration, Instant};

use futures::StreamExt;
use oasis::server::ServerConfig;
use oasis_test_components::FLAKY;
use serde_json::{Value, json};

use crate::delivery_state::redis_support::RedisServer;
use crate::harness::server::{Harness, TestServer, metric};
use crate::rollout::{TOKEN, admin, body, radio, upload, wait_route, with_admin};

/// Window 200, judged from 50 samples, at most 10% errors: `flaky` fails
/// about 30% of its calls.
const GUARDRAILS: &str =
    "[routes.radio.guardrails]\nwindow = 200\nmin_samples = 50\nmax_error_rate = 0.1\n";

/// A replica with its own directory, windows in `redis`.
async fn replica(redis: &str) -> TestServer {
    let redis = redis.to_string();
    TestServer::start_with(
        |d| radio(d, GUARDRAILS),
        move |c: &mut ServerConfig| {
            with_admin(c);
            c.fleet_windows = Some(redis);
        },
    )
    .await
}

/// Uploads `flaky` to `s` and makes it the canary at `percent`; returns its
/// digest.
async fn flaky_canary(s: &TestServer, percent: f64) -> String {
    let flaky = upload(&s.client, &s.url, "p", FLAKY).await;
    let (status, v) = admin(
        &s.client,
        &s.url,
        "/admin/v1/routes/radio/canary",
        Some(json!({"version": flaky, "percent": percent})),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    flaky
}

/// Sends `n` requests from distinct listeners (`tag`-0 …) to `s`, 8 at a
/// time; returns the answers' variants. Every answer must be a 200.
async fn traffic(s: &TestServer, tag: &str, n: u64) -> Vec<String> {
    let url = s.at("/v1/score");
    futures::stream::iter(0..n)
        .map(|i| {
            let (client, url) = (s.client.clone(), url.clone());
            let tag = tag.to_string();
            async move {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body(&format!("{tag}-{i}"), i))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let v: Value = r.json().await.unwrap();
                v["variant"].as_str().unwrap().to_string()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// Requests the canary was assigned: it answered, or failed and a fallback
/// did (stable, guarded-boost, never fails here).
fn canary_assigned(variants: &[String]) -> usize {
    variants
        .iter()
        .filter(|v| *v == "canary" || *v == "fallback")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_percent_canary_over_three_replicas_is_rolled_back_by_the_shared_window() {
    let redis = RedisServer::start();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&redis.url()).await);
    }
    let mut digest = String::new();
    for r in &replicas {
        digest = flaky_canary(r, 1.0).await;
    }
    // 2,500 listeners per replica, each a 1% chance of the canary: about 25
    // canary requests each, 75 together.
    // The load balancer's share: the replicas serve at once.
    let assigned: Vec<usize> =
        futures::future::join_all(replicas.iter().enumerate().map(|(i, r)| async move {
            canary_assigned(&traffic(r, &format!("r{i}"), 2_500).await)
        }))
        .await;
    let total: usize = assigned.iter().sum();
    println!("canary requests per replica {assigned:?}, fleet {total}");
    // The control: no replica alone reached min_samples (50), so none could
    // have judged the canary on its own window; together they did.
    assert!(assigned.iter().all(|&n| n < 50), "{assigned:?}");
    assert!(total >= 50, "{assigned:?}");
    for r in &replicas {
        let v = wait_route(&r.client, &r.url, |v| {
            v["canary"].is_null() && !v["last_rollback"].is_null()
        })
        .await;
        let rb = &v["last_rollback"];
        assert_eq!(
            (rb["automatic"].as_bool(), rb["digest"].as_str()),
            (Some(true), Some(digest.as_str())),
            "{v}"
        );
        let reason = rb["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("guardrail: error rate ")
                && reason.contains("over the fleet's last ")
                && reason.contains("(every replica) exceeds 10.0%"),
            "{reason}"
        );
        assert_eq!(
            metric(
                &r.metrics().await,
                "oasis_rollbacks_total{route=\"radio\",by=\"guardrail\"}"
            ),
            1.0
        );
        assert_eq!(
            metric(&r.metrics().await, "oasis_fleet_windows_degraded"),
            0.0
        );
    }
    for r in replicas {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scoring_goes_on_with_redis_down_and_the_windows_report_degraded() {
    let mut redis = RedisServer::start();
    let s = replica(&redis.url()).await;
    // A canary that stays: errors allowed up to 90%, no business bound.
    let routes = "[routes.radio]\npolicy = \"p\"\nbaseline = \"base\"\n\
        [routes.radio.guardrails]\nwindow = 200\nmin_samples = 50\nmax_error_rate = 0.9\nmin_promoted_ratio = 0.0\n";
    crate::harness::server::atomic_write(&s.dir.path().join("routes.toml"), routes.as_bytes());
    wait_route(&s.client, &s.url, |v| {
        v["guardrails"]["max_error_rate"] == 0.9
    })
    .await;
    flaky_canary(&s, 50.0).await;
    let variants = traffic(&s, "up", 200).await;
    assert!(canary_assigned(&variants) > 0);
    // The fleet's window counts them.
    let v = wait_route(&s.client, &s.url, |v| {
        v["canary"]["fleet_window"]["samples"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(v["canary"]["fleet_window"]["scope"], "fleet", "{v}");

    redis.kill();
    let started = Instant::now();
    let variants = traffic(&s, "down", 500).await;
    println!(
        "500 requests with redis down in {:?}, {} on the canary",
        started.elapsed(),
        canary_assigned(&variants)
    );
    // Every answer was a 200 (traffic asserts it), and the gauge says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&s.metrics().await, "oasis_fleet_windows_degraded") != 1.0 {
        assert!(Instant::now() < deadline, "the degraded gauge never rose");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The replica's own window still judges.
    let v = wait_route(&s.client, &s.url, |v| {
        v["canary"]["window"]["samples"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(v["canary"]["window"]["scope"], "replica", "{v}");

    redis.restart();
    traffic(&s, "back", 50).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&s.metrics().await, "oasis_fleet_windows_degraded") != 0.0 {
        assert!(Instant::now() < deadline, "the gauge never fell back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown().await;
}
