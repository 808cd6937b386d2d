//! Rollouts end to end: uploads, sticky canaries, promote and rollback,
//! the kill switch, shadows, guardrails rolling a faulty canary back under
//! load, the admin token, the audit log, restarts (kill -9 included), two
//! replicas on one directory, and files and API calls in sequence.
//!
//! The directory of most tests: route `radio` runs policy `p` (guarded-boost)
//! with baseline `base` (baseline); versions of `p` are uploaded through the
//! admin API.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oasis::api::auth::AdminTokens;
use oasis::server::{AdminConfig, ServerConfig};
use oasis_test_components::{
    ADVERSARIAL, BASELINE, EPSILON_GREEDY, EXPOSURE_FAIRNESS, FLAKY, GUARDED_BOOST, PID_PACING,
};
use serde_json::{Value, json};

use crate::harness::example_body;
use crate::harness::process::ServeProcess;
use crate::harness::server::{
    Harness, Replica, TestServer, atomic_copy, atomic_write, digest, install, metric,
};

pub(crate) const TOKEN: &str = "rollout-test-token-0123456789abcdef";

pub(crate) fn with_admin(c: &mut ServerConfig) {
    c.admin = Some(AdminConfig {
        tokens: Arc::new(AdminTokens::from_env_value(TOKEN).unwrap()),
        max_upload_bytes: 32 << 20,
    });
}

pub(crate) fn radio(dir: &Path, guardrails: &str) {
    install(dir, "base", BASELINE, "");
    install(dir, "p", GUARDED_BOOST, "");
    atomic_write(
        &dir.join("routes.toml"),
        format!("[routes.radio]\npolicy = \"p\"\nbaseline = \"base\"\n{guardrails}").as_bytes(),
    );
}

/// A small scoring request on `radio` from `listener` with `seed`.
pub(crate) fn body(listener: &str, seed: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&crate::harness::small_body(false)).unwrap();
    v["route"] = "radio".into();
    v["context"]["listener_id"] = listener.into();
    v["context"]["seed"] = seed.into();
    v["context"]["request_id"] = format!("{listener}-{seed}").into();
    serde_json::to_vec(&v).unwrap()
}

/// An admin call: (status, JSON answer).
pub(crate) async fn admin(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = if body.is_some() || !path.contains("/audit") {
        client.post(format!("{url}{path}"))
    } else {
        client.get(format!("{url}{path}"))
    };
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t).header("x-oasis-actor", "test-operator");
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// An admin call to `s` with the token.
async fn op(s: &TestServer, path: &str, body: Option<Value>) -> (u16, Value) {
    admin(&s.client, &s.url, path, body, Some(TOKEN)).await
}

/// Uploads `module` as a version of `key`; returns its digest.
pub(crate) async fn upload(client: &reqwest::Client, url: &str, key: &str, module: &str) -> String {
    let r = client
        .post(format!("{url}/admin/v1/policies/{key}/versions"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/wasm")
        .body(std::fs::read(module).unwrap())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["digest"], digest(module));
    assert_eq!(
        (v["source"].as_str(), v["policy"].as_str()),
        (Some("api"), Some(key))
    );
    v["digest"].as_str().unwrap().to_string()
}

async fn get_json(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn route(client: &reqwest::Client, url: &str) -> Value {
    get_json(client, format!("{url}/v1/routes/radio")).await
}

/// Polls the route's status until `f` holds (10 s at most).
pub(crate) async fn wait_route(
    client: &reqwest::Client,
    url: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = route(client, url).await;
        if f(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "route never reached the state: {v}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A server on route `radio` (guarded-boost stable) with the route's
/// `guardrails`, `module` uploaded and made the canary of half the
/// listeners; returns the server and the canary's digest.
async fn canary_at_half(guardrails: &str, module: &str) -> (TestServer, String) {
    let s = TestServer::start_with(|d| radio(d, guardrails), with_admin).await;
    let version = upload(&s.client, &s.url, "p", module).await;
    let (status, v) = op(
        &s,
        "/admin/v1/routes/radio/canary",
        Some(json!({"version": version, "percent": 50})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    (s, version)
}

/// Waits until the route's canary is gone by an automatic rollback of
/// `digest`; returns the route's `last_rollback`.
async fn automatic_rollback(s: &TestServer, digest: &str) -> Value {
    let r = wait_route(&s.client, &s.url, |r| {
        r["canary"].is_null() && !r["last_rollback"].is_null()
    })
    .await;
    let rb = r["last_rollback"].clone();
    assert_eq!(
        (rb["automatic"].as_bool(), rb["digest"].as_str()),
        (Some(true), Some(digest))
    );
    rb
}

async fn audit_actions(s: &TestServer) -> Vec<String> {
    let (status, v) = op(&s, "/admin/v1/audit?limit=100", None).await;
    assert_eq!(status, 200, "{v}");
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sticky_canary_grows_is_promoted_and_rolled_back_on_the_next_request() {
    let s = TestServer::start_with(|d| radio(d, ""), with_admin).await;
    let stable = digest(GUARDED_BOOST);
    let v2 = upload(&s.client, &s.url, "p", PID_PACING).await;
    let (status, v) = op(
        &s,
        "/admin/v1/routes/radio/canary",
        Some(json!({"version": v2, "percent": 10})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rollout"]["canary"]["percent"], 10.0);

    // Every listener gets the arm its bucket says, and the share is the target's.
    let listeners: Vec<String> = (0..300).map(|i| format!("listener-{i}")).collect();
    let mut in_canary_at_10 = Vec::new();
    for l in &listeners {
        let (status, v) = s.score(body(l, 1)).await;
        assert_eq!(status, 200, "{v}");
        let expected = oasis::bucket::in_canary(l, "radio", 10.0);
        let (variant, digest) = (
            v["variant"].as_str().unwrap(),
            v["policy"]["digest"].as_str().unwrap(),
        );
        if expected {
            assert_eq!(
                (variant, v["arm"].as_str(), digest),
                ("canary", Some("canary"), v2.as_str())
            );
            in_canary_at_10.push(l.clone());
        } else {
            assert_eq!((variant, digest), ("stable", stable.as_str()));
        }
    }
    // 300 listeners at 10%: sd = sqrt(0.1 * 0.9 / 300) = 1.7%; 4 sd around 10%.
    let share = in_canary_at_10.len() as f64 / listeners.len() as f64;
    assert!((0.031..=0.169).contains(&share), "canary share {share}");

    // Growing the share keeps every canary listener in the canary.
    let (status, _) = op(
        &s,
        "/admin/v1/routes/radio/canary",
        Some(json!({"version": v2, "percent": 30})),
    )
    .await;
    assert_eq!(status, 200);
    let mut at_30 = 0;
    for l in &listeners {
        let (_, v) = s.score(body(l, 1)).await;
        let canary = v["variant"] == "canary";
        at_30 += usize::from(canary);
        if in_canary_at_10.contains(l) {
            assert!(canary, "{l} left the canary when it grew");
        }
    }
    assert!(at_30 > in_canary_at_10.len());

    // Rollback takes the canary out for the very next request.
    let first = &in_canary_at_10[0];
    let (status, v) = op(
        &s,
        "/admin/v1/routes/radio/rollback",
        Some(json!({"reason": "looked wrong"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = s.score(body(first, 1)).await;
    assert_eq!(
        (v["variant"].as_str(), v["policy"]["digest"].as_str()),
        (Some("stable"), Some(stable.as_str()))
    );

    // Canary again, then promote: stable (pinned) for everybody, next request.
    for path_body in [
        (
            "/admin/v1/routes/radio/canary",
            Some(json!({"version": v2, "percent": 5})),
        ),
        ("/admin/v1/routes/radio/promote", None),
    ] {
        let (status, v) = op(&s, path_body.0, path_body.1).await;
        assert_eq!(status, 200, "{v}");
    }
    let (_, v) = s.score(body("anyone", 1)).await;
    assert_eq!(
        (v["variant"].as_str(), v["policy"]["digest"].as_str()),
        (Some("stable"), Some(v2.as_str()))
    );
    let r = route(&s.client, &s.url).await;
    assert_eq!(
        (r["pinned"].as_bool(), r["stable"]["digest"].as_str()),
        (Some(true), Some(v2.as_str()))
    );
    assert_eq!(r["directory"]["digest"], stable);
    // Promoting without a canary is refused, with the reason, and changes nothing.
    let (status, v) = op(&s, "/admin/v1/routes/radio/promote", None).await;
    assert_eq!(status, 409);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no canary"),
        "{v}"
    );
    // Rollback returns to the previous stable (the directory's).
    let (status, _) = op(&s, "/admin/v1/routes/radio/rollback", None).await;
    assert_eq!(status, 200);
    let (_, v) = s.score(body("anyone", 1)).await;
    assert_eq!(v["policy"]["digest"], stable);

    // Every change is in the audit log, with who made it.
    assert_eq!(
        audit_actions(&s).await,
        [
            "version.upload",
            "canary.set",
            "canary.set",
            "rollback",
            "canary.set",
            "canary.promote",
            "rollback"
        ]
    );
    let (_, v) = op(&s, "/admin/v1/audit?limit=1", None).await;
    let last = &v["entries"][0];
    assert_eq!(last["who"], "admin (test-operator)");
    assert_eq!(last["before"]["stable"], v2.as_str());
    assert!(last["after"]["stable"].is_null(), "{last}");
    assert_eq!(
        metric(
            &s.metrics().await,
            "oasis_rollbacks_total{route=\"radio\",by=\"operator\"}"
        ),
        2.0
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_api_needs_a_token_and_refusals_change_nothing() {
    let s = TestServer::start_with(|d| radio(d, ""), with_admin).await;
    let kill = Some(json!({"on": true}));
    let (status, v) = admin(
        &s.client,
        &s.url,
        "/admin/v1/routes/radio/kill",
        kill.clone(),
        None,
    )
    .await;
    assert_eq!(status, 401, "{v}");
    let r = s
        .client
        .post(s.at("/admin/v1/routes/radio/kill"))
        .json(&json!({"on": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let (status, _) = admin(
        &s.client,
        &s.url,
        "/admin/v1/routes/radio/kill",
        kill.clone(),
        Some("wrong-token-0123456789abcdef0123456789"),
    )
    .await;
    assert_eq!(status, 403);
    // A client of its own: the server answers 401 without reading the
    // upload and closes that connection, which must not be reused.
    let r = reqwest::Client::new()
        .post(s.at("/admin/v1/policies/p/versions"))
        .body(std::fs::read(PID_PACING).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "uploads need the token too");
    // Bad values are refused with the reason.
    let (status, v) = op(
        &s,
        "/admin/v1/routes/radio/canary",
        Some(json!({"version": digest(PID_PACING), "percent": 5})),
    )
    .await;
    assert_eq!(status, 404, "a version that was never uploaded: {v}");
    let v2 = upload(&s.client, &s.url, "p", PID_PACING).await;
    let (status, v) = op(
        &s,
        "/admin/v1/routes/radio/canary",
        Some(json!({"version": v2, "percent": 150})),
    )
    .await;
    assert_eq!(status, 422, "{v}");
    let (status, _) = op(&s, "/admin/v1/routes/nope/kill", kill.clone()).await;
    assert_eq!(status, 404);
    // A module that does not load is refused and not stored.
    let r = s
        .client
        .post(s.at("/admin/v1/policies/p/versions"))
        .bearer_auth(TOKEN)
        .body(b"\0asm\x01\0\0\0".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let versions: Value = get_json(&s.client, s.at("/v1/policies/p/versions")).await;
    let digests: Vec<&str> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        digests.len(),
        2,
        "the directory's version and the upload: {versions}"
    );
    assert!(digests.contains(&digest(GUARDED_BOOST).as_str()) && digests.contains(&v2.as_str()));

    // Nothing changed: no kill, no canary; only the upload is audited.
    let r = route(&s.client, &s.url).await;
    assert_eq!(
        (r["killed"].as_bool(), r["canary"].is_null()),
        (Some(false), true),
        "{r}"
    );
    assert_eq!(audit_actions(&s).await, ["version.upload"]);
    s.shutdown().await;

    // Uploads are size-limited.
    let small = TestServer::start_with(
        |d| radio(d, ""),
        |c| {
            with_admin(c);
            c.admin.as_mut().unwrap().max_upload_bytes = 4096;
        },
    )
    .await;
    let r = small
        .client
        .post(small.at("/admin/v1/policies/p/versions"))
        .bearer_auth(TOKEN)
        .body(std::fs::read(PID_PACING).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    small.shutdown().await;

    // Without a token the admin API does not exist.
    let open = TestServer::start(|d| radio(d, "")).await;
    let (status, _) = op(&open, "/admin/v1/routes/radio/kill", kill).await;
    assert_eq!(status, 404);
    open.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kill_switch_serves_the_baseline_until_revived() {
    let s = TestServer::start_with(|d| radio(d, ""), with_admin).await;
    let (status, _) = op(&s, "/admin/v1/routes/radio/kill", Some(json!({"on": true}))).await;
    assert_eq!(status, 200);
    let (_, v) = s.score(body("u", 1)).await;
    assert_eq!(
        (
            v["variant"].as_str(),
            v["arm"].as_str(),
            v["policy"]["name"].as_str()
        ),
        (Some("killed"), Some("baseline"), Some("baseline"))
    );
    let (status, _) = op(
        &s,
        "/admin/v1/routes/radio/kill",
        Some(json!({"on": false})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, v) = s.score(body("u", 1)).await;
    assert_eq!(
        (v["variant"].as_str(), v["policy"]["name"].as_str()),
        (Some("stable"), Some("guarded-boost"))
    );
    assert_eq!(audit_actions(&s).await, ["route.kill", "route.revive"]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_faulty_canary_is_rolled_back_by_its_guardrails_under_load_without_a_failed_request() {
    let guardrails =
        "[routes.radio.guardrails]\nwindow = 60\nmin_samples = 30\nmax_error_rate = 0.1\n";
    let (s, flaky) = canary_at_half(guardrails, FLAKY).await;

    // 4 clients, 100 requests each, distinct listeners and seeds: the canary
    // fails on 30% of its requests, and every request still gets a 200.
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let (client, url) = (s.client.clone(), s.at("/v1/score"));
        clients.push(tokio::spawn(async move {
            let mut variants = Vec::new();
            for i in 0..100u64 {
                let r = client
                    .post(&url)
                    .body(body(&format!("l-{c}-{i}"), c * 1000 + i))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                variants.push(v["variant"].as_str().unwrap().to_string());
            }
            variants
        }));
    }
    let mut variants = Vec::new();
    for c in clients {
        variants.extend(c.await.unwrap());
    }
    assert!(
        variants.iter().any(|v| v == "fallback"),
        "canary faults were absorbed by stable"
    );

    let rb = automatic_rollback(&s, &flaky).await;
    assert!(
        rb["reason"].as_str().unwrap().contains("error rate"),
        "{rb}"
    );
    // From then on, canary listeners are on stable.
    for i in 0..20 {
        let (status, v) = s.score(body(&format!("after-{i}"), 9)).await;
        assert_eq!((status, v["variant"].as_str()), (200, Some("stable")));
    }
    assert_eq!(
        metric(
            &s.metrics().await,
            "oasis_rollbacks_total{route=\"radio\",by=\"guardrail\"}"
        ),
        1.0
    );
    let (_, v) = op(&s, "/admin/v1/audit?limit=1", None).await;
    let last = &v["entries"][0];
    assert_eq!(
        (last["action"].as_str(), last["who"].as_str()),
        (Some("rollback.automatic"), Some("oasis-guardrails"))
    );
    s.shutdown().await;
}

/// The business guardrail: `baseline` (relevance order, nothing promoted)
/// as a canary of guarded-boost, which promotes campaign candidates of the
/// bundled example request, is rolled back by the
/// default `min_promoted_ratio` (0.1) although it never fails, and the
/// reason names the metric, both rates and the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_that_promotes_nothing_is_rolled_back_by_the_business_guardrail() {
    // No business key set: the default applies.
    let guardrails = "[routes.radio.guardrails]\nwindow = 100\nmin_samples = 20\n";
    let (s, nothing) = canary_at_half(guardrails, BASELINE).await;
    let r = route(&s.client, &s.url).await;
    assert_eq!(r["guardrails"]["min_promoted_ratio"], 0.1, "{r}");

    let mut canary_answers = 0;
    for i in 0..400u64 {
        let (status, v) = s.score(example(&format!("biz-{i}"))).await;
        assert_eq!(status, 200, "{v}");
        match v["variant"].as_str() {
            Some("canary") => canary_answers += 1,
            Some("stable") => {}
            other => panic!("a canary that never fails, served {other:?}: {v}"),
        }
    }
    assert!(
        canary_answers >= 20,
        "the canary was judged: {canary_answers}"
    );
    let rb = automatic_rollback(&s, &nothing).await;
    let reason = rb["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "guardrail: promoted rate 0.00% is below min_promoted_ratio 0.1 of the stable arm's "
        ) && reason.contains(" over the last ")
            && reason.contains(" canary requests and "),
        "{reason}"
    );
    assert_eq!(
        metric(
            &s.metrics().await,
            "oasis_rollbacks_total{route=\"radio\",by=\"guardrail\"}"
        ),
        1.0
    );
    s.shutdown().await;

    // An explicit bound of 0 lets the same canary run (an operator's choice).
    let (s, _) = canary_at_half(&format!("{guardrails}min_promoted_ratio = 0.0\n"), BASELINE).await;
    for i in 0..200u64 {
        let (status, _) = s.score(example(&format!("biz2-{i}"))).await;
        assert_eq!(status, 200);
    }
    let r = route(&s.client, &s.url).await;
    let w = &r["canary"]["window"];
    assert!(w["samples"].as_u64() >= Some(20), "{r}");
    assert_eq!(w["promoted_rate"], 0.0, "{w}");
    assert!(w["stable_promoted_rate"].as_f64() > Some(0.0), "{w}");
    assert_eq!(w["tripped"], false, "{w}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadows_never_change_the_answer_and_report_their_divergence() {
    let s = TestServer::start_with(
        |d| {
            radio(d, "");
            install(d, "fair", EXPOSURE_FAIRNESS, "");
        },
        with_admin,
    )
    .await;
    let mut example: Value = serde_json::from_slice(&example_body()).unwrap();
    example["route"] = "radio".into();
    let request = serde_json::to_vec(&example).unwrap();
    let answer = |v: &Value| {
        (
            v["scores"].clone(),
            v["policy"].clone(),
            v["variant"].clone(),
        )
    };
    let (_, before) = s.score(request.clone()).await;

    let (status, v) = op(
        &s,
        "/admin/v1/routes/radio/shadows",
        Some(json!({"policy": "fair", "on": true})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // One at a time until ten shadow calls ran: with one shadow slot (half
    // of two cores) a request racing the previous request's shadow sheds
    // its own, which is what shadows are for.
    for sent in 0.. {
        assert!(sent < 100, "ten shadow calls never ran");
        let (status, v) = s.score(request.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer(&v),
            answer(&before),
            "a shadow never changes the served answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = route(&s.client, &s.url).await;
        if r["shadows"][0]["divergence"]["samples"].as_u64() >= Some(10) {
            break;
        }
    }
    let r = wait_route(&s.client, &s.url, |r| {
        r["shadows"][0]["divergence"]["samples"].as_u64() >= Some(10)
    })
    .await;
    let d = &r["shadows"][0]["divergence"];
    assert_eq!(r["shadows"][0]["version"]["name"], "exposure-fairness");
    let overlap = d["mean"]["topk_overlap"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&overlap), "{d}");
    assert!(
        d["mean"]["score_mae"].as_f64().unwrap() > 0.0,
        "two different policies: {d}"
    );
    assert!(d["reasons"].is_object(), "{d}");
    // Every request here was served by the stable arm: its own divergence
    // is the whole window's.
    let by_arm = &r["shadows"][0]["by_arm"];
    assert_eq!(by_arm.as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(by_arm[0]["arm"], "stable");
    assert_eq!(by_arm[0]["divergence"]["samples"], d["samples"]);
    let metrics = s.metrics().await;
    assert!(
        metric(
            &metrics,
            "oasis_shadow_calls_total{route=\"radio\",shadow=\"fair\",result=\"ok\"}"
        ) >= 10.0
    );
    assert!(
        metrics
            .contains("oasis_shadow_topk_overlap{route=\"radio\",shadow=\"fair\",arm=\"stable\"}"),
        "{metrics}"
    );
    // exposure-fairness marks fairness adjustments; guarded-boost never does.
    assert!(
        metric(
            &metrics,
            "oasis_shadow_reason_share_diff{route=\"radio\",shadow=\"fair\",arm=\"stable\",reason=\"fairness_adjust\"}"
        ) > 0.0,
        "{metrics}"
    );

    let (status, _) = op(
        &s,
        "/admin/v1/routes/radio/shadows",
        Some(json!({"policy": "fair", "on": false})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        route(&s.client, &s.url).await["shadows"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    s.shutdown().await;
}

/// A server whose `radio` route has a shadow, `slow`, that loops for its
/// whole `deadline_ms`, and a request body on `radio` that arms the loop.
async fn looping_shadow_beside_radio(deadline_ms: u64) -> (TestServer, Vec<u8>) {
    let s = TestServer::start_with(
        |d| {
            radio(d, "");
            install(
                d,
                "slow",
                ADVERSARIAL,
                &format!("[limits]\ndeadline_ms = {deadline_ms}\n[settings]\nattack = \"loop\"\n"),
            );
        },
        with_admin,
    )
    .await;
    let (status, _) = op(
        &s,
        "/admin/v1/routes/radio/shadows",
        Some(json!({"policy": "slow", "on": true})),
    )
    .await;
    assert_eq!(status, 200);
    let mut armed: Value = serde_json::from_slice(&crate::harness::small_body(true)).unwrap();
    armed["route"] = "radio".into();
    (s, serde_json::to_vec(&armed).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_shadows_are_shed_and_the_response_does_not_wait_for_them() {
    let (s, armed) = looping_shadow_beside_radio(400).await;
    let started = Instant::now();
    let calls: Vec<_> = (0..12).map(|_| s.spawn_score(armed.clone())).collect();
    for c in calls {
        let (status, _, v) = c.await.unwrap();
        assert_eq!((status, v["variant"].as_str()), (200, Some("stable")));
        // The shadow loops until its 400 ms deadline; the answer does not wait.
        assert!(v["timing"]["server_us"].as_u64().unwrap() < 300_000, "{v}");
    }
    assert!(started.elapsed() < Duration::from_millis(2_000));
    let metrics = s.metrics().await;
    let shed = metric(
        &metrics,
        "oasis_shadow_calls_total{route=\"radio\",shadow=\"slow\",result=\"shed\"}",
    );
    assert!(shed >= 1.0, "more shadows than slots are shed: {metrics}");
    // The ones that ran time out; their failures are counted, never served.
    wait_route(&s.client, &s.url, |r| {
        r["shadows"][0]["divergence"]["errors"].as_u64() >= Some(1)
    })
    .await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_directory_converge_and_agree_on_every_listener() {
    let a = TestServer::start_with(|d| radio(d, ""), with_admin).await;
    let b = Replica::start(a.dir.path(), |_| {}).await;
    let v2 = upload(&a.client, &a.url, "p", PID_PACING).await;
    let (status, _) = op(
        &a,
        "/admin/v1/routes/radio/canary",
        Some(json!({"version": v2, "percent": 50})),
    )
    .await;
    assert_eq!(status, 200);
    // The change is in rollout.json; the other replica's watcher picks it up.
    wait_route(&b.client, &b.url, |r| {
        r["canary"]["version"]["digest"] == v2.as_str()
    })
    .await;
    for i in 0..60 {
        let l = format!("listener-{i}");
        let (_, va) = a.score(body(&l, 1)).await;
        let rb: Value = b
            .client
            .post(format!("{}/v1/score", b.url))
            .body(body(&l, 1))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (&va["variant"], &va["policy"]),
            (&rb["variant"], &rb["policy"]),
            "{l}"
        );
    }
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_and_api_calls_in_sequence_give_the_documented_result() {
    let s = TestServer::start_with(|d| radio(d, ""), with_admin).await;
    let v2 = upload(&s.client, &s.url, "p", PID_PACING).await;
    for (path, b) in [
        (
            "/admin/v1/routes/radio/canary",
            Some(json!({"version": v2, "percent": 20})),
        ),
        ("/admin/v1/routes/radio/promote", None),
    ] {
        assert_eq!(op(&s, path, b).await.0, 200);
    }
    // A new module in the directory: recorded as a version, reported beside
    // the pinned stable, which keeps serving.
    atomic_copy(Path::new(EPSILON_GREEDY), &s.dir.path().join("p.wasm"));
    let r = wait_route(&s.client, &s.url, |r| {
        r["directory"]["digest"] == digest(EPSILON_GREEDY).as_str()
    })
    .await;
    assert_eq!(
        (r["stable"]["digest"].as_str(), r["pinned"].as_bool()),
        (Some(v2.as_str()), Some(true))
    );
    let (_, v) = s.score(body("u", 1)).await;
    assert_eq!(v["policy"]["digest"], v2);
    let versions: Value = get_json(&s.client, s.at("/v1/policies/p/versions")).await;
    let sources: Vec<&str> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources
            .iter()
            .filter(|s| s.starts_with("directory:"))
            .count(),
        2,
        "{versions}"
    );

    // routes.toml moves the route to another policy: the rollout state no
    // longer applies, is reported, and the new policy's directory version serves.
    install(s.dir.path(), "q", BASELINE, "");
    atomic_write(
        &s.dir.path().join("routes.toml"),
        b"[routes.radio]\npolicy = \"q\"\nbaseline = \"base\"\n",
    );
    let r = wait_route(&s.client, &s.url, |r| r["policy"] == "q").await;
    assert!(
        r["problems"][0].as_str().unwrap().contains("ignored"),
        "{r}"
    );
    assert_eq!(
        (r["pinned"].as_bool(), r["stable"]["digest"].as_str()),
        (Some(false), Some(digest(BASELINE).as_str()))
    );
    // The next API change of the route starts its state afresh for `q`.
    assert_eq!(
        op(&s, "/admin/v1/routes/radio/kill", Some(json!({"on": true})))
            .await
            .0,
        200
    );
    let r = route(&s.client, &s.url).await;
    assert!(r.get("problems").is_none() && r["killed"] == true, "{r}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(s.dir.path().join("rollout.json")).unwrap()).unwrap();
    assert_eq!(state["routes"]["radio"]["policy"], "q");
    assert!(state["routes"]["radio"]["stable"].is_null());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_state_survives_kill_9_and_the_cli_drives_it() {
    let dir = tempfile::tempdir().unwrap();
    radio(dir.path(), "");
    let env = [("OASIS_ADMIN_TOKEN", TOKEN)];
    let server = ServeProcess::start(dir.path(), &[], &env);
    let client = reqwest::Client::new();
    let v2 = upload(&client, &server.url, "p", PID_PACING).await;
    let cli = |args: &[&str], url: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_oasis"))
            .args(["rollout", "--url", url])
            .args(args)
            .env("OASIS_ADMIN_TOKEN", TOKEN)
            .env("USER", "cli-user")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&["canary", "radio", &v2, "--percent", "5"], &server.url);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("canary sha256:") && out.contains("at 5%"),
        "{out}"
    );
    let (code, out, _) = cli(&["kill", "radio", "--reason", "incident 42"], &server.url);
    assert_eq!(code, Some(0), "{out}");

    server.signal("KILL");
    let (status, _) = server.wait();
    assert!(!status.success());
    let server = ServeProcess::start(dir.path(), &[], &env);
    let r = route(&client, &server.url).await;
    assert_eq!(
        (
            r["canary"]["version"]["digest"].as_str(),
            r["canary"]["percent"].as_f64(),
            r["killed"].as_bool()
        ),
        (Some(v2.as_str()), Some(5.0), Some(true)),
        "{r}"
    );

    let (code, out, _) = cli(&["status", "radio"], &server.url);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("KILLED") && out.contains("canary") && out.contains("5%"),
        "{out}"
    );
    let (code, out, _) = cli(&["--json", "status", "radio"], &server.url);
    assert_eq!(code, Some(0));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["killed"], true);
    // A refusal exits 1 with the server's reason.
    let (code, _, err) = cli(&["rollback", "radio"], &server.url);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = cli(&["promote", "radio"], &server.url);
    assert_eq!(code, Some(1));
    assert!(err.contains("409") && err.contains("no canary"), "{err}");
    let (code, out, _) = cli(&["audit"], &server.url);
    assert_eq!(code, Some(0));
    for action in ["version.upload", "canary.set", "route.kill", "rollback"] {
        assert!(out.contains(action), "{action} missing from\n{out}");
    }
    assert!(out.contains("admin (cli-user)"), "{out}");
    assert!(
        out.contains("(incident 42)"),
        "the kill's reason is audited: {out}"
    );
}

/// `oasis rollout status` shows the route's guardrail thresholds and the
/// canary's window against them (error rate, p99); the audit lines, the
/// audit log's entries and the status's last rollback carry the canary's
/// share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_shows_the_guardrails_and_the_audit_the_canary_share() {
    let dir = tempfile::tempdir().unwrap();
    radio(
        dir.path(),
        "[routes.radio.guardrails]\nwindow = 100\nmin_samples = 10\nmax_error_rate = 0.25\nmax_p99_ms = 900\n",
    );
    let server = ServeProcess::start(dir.path(), &[], &[("OASIS_ADMIN_TOKEN", TOKEN)]);
    let client = reqwest::Client::new();
    let v2 = upload(&client, &server.url, "p", PID_PACING).await;
    let (code, out, err) = rollout_cli(&[
        "--url",
        &server.url,
        "canary",
        "radio",
        &v2,
        "--percent",
        "50",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    // Listeners on both arms, until the canary's window can be judged.
    for i in 0..200u64 {
        let r = client
            .post(format!("{}/v1/score", server.url))
            .header("content-type", "application/json")
            .body(body(&format!("listener-{i}"), i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let r = wait_route(&client, &server.url, |v| {
        v["canary"]["window"]["samples"].as_u64() >= Some(10)
    })
    .await;
    let p99 = r["canary"]["window"]["p99_ms"].as_f64().expect("a p99");
    assert!(p99 > 0.0 && p99 < 900.0, "{r}");

    let (code, out, _) = rollout_cli(&["--url", &server.url, "status", "radio"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(concat!(
            "guardrails error rate at most 25.0%, p99 at most 900 ms, ",
            "over the canary's last 100 requests, judged from 10 on"
        )),
        "{out}"
    );
    assert!(
        out.contains("judged from 10 on; promoted rate at least 0.1x the stable arm's"),
        "the business bound: {out}"
    );
    let business = out
        .lines()
        .find(|l| l.trim_start().starts_with("business promoted "))
        .unwrap_or_else(|| panic!("no business line: {out}"));
    assert!(
        business.contains(" vs stable ") && business.contains(", eligible "),
        "{business}"
    );
    let window = out
        .lines()
        .find(|l| l.trim_start().starts_with("window "))
        .unwrap_or_else(|| panic!("no canary window line: {out}"));
    assert!(
        window.contains(" of 100 samples: errors 0.0% (limit 25.0%), p99 ")
            && window.ends_with(" ms (limit 900 ms)"),
        "{window}"
    );

    let (code, out, _) = rollout_cli(&[
        "--url",
        &server.url,
        "canary",
        "radio",
        &v2,
        "--percent",
        "20",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out, _) = rollout_cli(&[
        "--url",
        &server.url,
        "rollback",
        "radio",
        "--reason",
        "enough",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let (_, out, _) = rollout_cli(&["--url", &server.url, "status", "radio"]);
    assert!(
        out.contains("(canary at 20%) enough (operator)"),
        "the last rollback says the canary's share: {out}"
    );
    assert!(
        out.contains("guardrails error rate at most 25.0%"),
        "thresholds without a canary too: {out}"
    );
    let (_, out, _) = rollout_cli(&["--url", &server.url, "audit"]);
    let line = |action: &str, n: usize| {
        out.lines()
            .filter(|l| l.contains(&format!(" {action} ")))
            .nth(n)
            .unwrap_or_else(|| panic!("no {action} #{n}: {out}"))
            .to_string()
    };
    assert!(line("canary.set", 0).contains(" at 50%"), "{out}");
    assert!(line("canary.set", 1).contains(" at 20% (was 50%)"), "{out}");
    assert!(line("rollback", 0).contains(" at 20%  (enough)"), "{out}");
    assert!(!line("version.upload", 0).contains(" at "), "{out}");

    // The audit log's own entries.
    let entries: Vec<Value> = std::fs::read_to_string(dir.path().join(".oasis-audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let shares: Vec<(&str, Option<f64>)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["percent"].as_f64()))
        .collect();
    assert_eq!(
        shares,
        [
            ("version.upload", None),
            ("canary.set", Some(50.0)),
            ("canary.set", Some(20.0)),
            ("rollback", Some(20.0)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_api_can_listen_apart_from_scoring() {
    use oasis::server::Server;
    let dir = tempfile::tempdir().unwrap();
    radio(dir.path(), "");
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (main_url, admin_url) = (
        format!("http://{}", main.local_addr().unwrap()),
        format!("http://{}", admin_listener.local_addr().unwrap()),
    );
    let config = crate::harness::server::config_in(dir.path(), with_admin);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::new(config).with_admin_listener(admin_listener).run(
        main,
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&client, format!("{main_url}/v1/routes/radio")).await["route"] != "radio" {
        assert!(Instant::now() < deadline, "server not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kill = Some(json!({"on": true}));
    let on_main = admin(
        &client,
        &main_url,
        "/admin/v1/routes/radio/kill",
        kill.clone(),
        Some(TOKEN),
    )
    .await;
    assert_eq!(on_main.0, 404, "no admin route on the scoring listener");
    let on_admin = admin(
        &client,
        &admin_url,
        "/admin/v1/routes/radio/kill",
        kill,
        Some(TOKEN),
    )
    .await;
    assert_eq!(on_admin.0, 200, "{}", on_admin.1);
    assert_eq!(route(&client, &main_url).await["killed"], true);
    let scoring = client
        .post(format!("{admin_url}/v1/score"))
        .body(body("u", 1))
        .send()
        .await
        .unwrap();
    // Every path of the admin listener is behind the token, unknown ones too.
    assert_eq!(scoring.status(), 401, "no scoring on the admin listener");
    let scoring = client
        .post(format!("{admin_url}/v1/score"))
        .bearer_auth(TOKEN)
        .body(body("u", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(scoring.status(), 404, "no scoring on the admin listener");
    // The dashboard's page loads without the token; the reads it makes on
    // this listener need it.
    let page = client
        .get(format!("{admin_url}/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/dashboard/app.js"));
    let reads = |t: Option<&'static str>| {
        let mut r = client.get(format!("{admin_url}/v1/routes/radio"));
        if let Some(t) = t {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(reads(None).await.unwrap().status(), 401);
    let r = reads(Some(TOKEN)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["killed"], true);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_version_is_a_digest_resolved_only_inside_the_store() {
    let s = TestServer::start_with(|d| radio(d, ""), with_admin).await;
    let v2 = upload(&s.client, &s.url, "p", PID_PACING).await;
    // A loadable module with its record, outside the policy directory, named
    // by a path that climbs out of the store (`versions/p/`).
    let outside = tempfile::tempdir_in(s.dir.path().parent().unwrap()).unwrap();
    let stored = s
        .dir
        .path()
        .join("versions/p")
        .join(v2.trim_start_matches("sha256:"));
    std::fs::copy(stored.with_extension("wasm"), outside.path().join("x.wasm")).unwrap();
    std::fs::copy(stored.with_extension("json"), outside.path().join("x.json")).unwrap();
    let name = outside.path().file_name().unwrap().to_str().unwrap();
    let climbing = format!("sha256:../../../{name}/x");
    // A bare hex digest names the stored file but could never serve.
    let bare = v2.trim_start_matches("sha256:").to_string();
    for version in [climbing, bare, format!("sha256:{}", bare_upper(&v2))] {
        let (status, v) = op(
            &s,
            "/admin/v1/routes/radio/canary",
            Some(json!({"version": version, "percent": 50})),
        )
        .await;
        assert_eq!(status, 422, "{version}: {v}");
        assert_eq!(
            (v["error"]["kind"].as_str(), v["error"]["field"].as_str()),
            (Some("invalid_request"), Some("version")),
            "{v}"
        );
    }
    let r = route(&s.client, &s.url).await;
    assert!(r["canary"].is_null(), "nothing changed: {r}");
    assert_eq!(audit_actions(&s).await, ["version.upload"]);
    // The stored version itself is accepted.
    let (status, v) = op(
        &s,
        "/admin/v1/routes/radio/canary",
        Some(json!({"version": v2, "percent": 50})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    s.shutdown().await;
}

/// The hex of digest `d`, upper-cased (not a digest: digests are lower case).
fn bare_upper(d: &str) -> String {
    d.trim_start_matches("sha256:").to_uppercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_is_applied_only_with_its_audit_entry() {
    // An audit log every write to fails (ENOSPC).
    let s = TestServer::start_with(
        |d| {
            radio(d, "");
            std::os::unix::fs::symlink("/dev/full", d.join(".oasis-audit.jsonl")).unwrap();
        },
        with_admin,
    )
    .await;
    let (status, v) = op(&s, "/admin/v1/routes/radio/kill", Some(json!({"on": true}))).await;
    assert_eq!(status, 500, "{v}");
    // Neither the serving state nor the file changed.
    let r = route(&s.client, &s.url).await;
    assert_eq!(r["killed"].as_bool(), Some(false), "{r}");
    let (_, v) = s.score(body("u", 1)).await;
    assert_eq!(v["variant"].as_str(), Some("stable"), "{v}");
    let file = std::fs::read_to_string(s.dir.path().join("rollout.json")).unwrap_or_default();
    assert!(!file.contains("\"killed\": true"), "{file}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_reason_is_bounded_and_an_oversized_one_changes_nothing() {
    let s = TestServer::start_with(|d| radio(d, ""), with_admin).await;
    let v2 = upload(&s.client, &s.url, "p", PID_PACING).await;
    let (status, v) = op(
        &s,
        "/admin/v1/routes/radio/canary",
        Some(json!({"version": v2, "percent": 50})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = op(
        &s,
        "/admin/v1/routes/radio/rollback",
        Some(json!({"reason": "x".repeat(1 << 20)})),
    )
    .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(
        (v["error"]["kind"].as_str(), v["error"]["field"].as_str()),
        (Some("invalid_request"), Some("reason")),
        "{v}"
    );
    let r = route(&s.client, &s.url).await;
    assert_eq!(
        r["canary"]["version"]["digest"].as_str(),
        Some(v2.as_str()),
        "{r}"
    );
    assert_eq!(audit_actions(&s).await, ["version.upload", "canary.set"]);
    let (status, v) = op(
        &s,
        "/admin/v1/routes/radio/rollback",
        Some(json!({"reason": "r".repeat(1000)})),
    )
    .await;
    assert_eq!(status, 200, "a reason within the bound: {v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_bodies_are_json_objects_only() {
    let s = TestServer::start_with(|d| radio(d, ""), with_admin).await;
    let v2 = upload(&s.client, &s.url, "p", PID_PACING).await;
    let (status, v) = op(&s, "/admin/v1/routes/radio/canary", Some(json!([v2, 50]))).await;
    assert_eq!(status, 422, "{v}");
    let (status, v) = op(
        &s,
        "/admin/v1/routes/radio/canary",
        Some(json!({"version": v2, "percent": 50})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for (path, body) in [
        ("kill", json!([true])),
        ("rollback", json!(["why"])),
        ("rollback", json!([null])),
        ("shadows", json!(["base", true])),
    ] {
        let (status, v) = op(
            &s,
            &format!("/admin/v1/routes/radio/{path}"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 422, "{path} {body}: {v}");
        assert_eq!(v["error"]["kind"], "malformed_request", "{v}");
    }
    let r = route(&s.client, &s.url).await;
    assert_eq!(r["killed"].as_bool(), Some(false), "{r}");
    assert!(r["shadows"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(
        r["canary"]["version"]["digest"].as_str(),
        Some(v2.as_str()),
        "{r}"
    );
    assert_eq!(audit_actions(&s).await, ["version.upload", "canary.set"]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_on_a_corrupt_rollout_file_keeps_the_last_good_state() {
    let s = TestServer::start_with(|d| radio(d, ""), with_admin).await;
    let (status, v) = op(&s, "/admin/v1/routes/radio/kill", Some(json!({"on": true}))).await;
    assert_eq!(status, 200, "{v}");
    let (dir, path) = s.stop_keeping_dir().await;
    // Torn by a disk fault or a bad hand edit.
    std::fs::write(
        path.join("rollout.json"),
        b"{\"routes\": {\"radio\": {\"pol",
    )
    .unwrap();
    let r = Replica::start(&path, with_admin).await;
    let v: Value = r
        .client
        .post(format!("{}/v1/score", r.url))
        .body(body("u", 1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["variant"].as_str(), v["arm"].as_str()),
        (Some("killed"), Some("baseline")),
        "a killed route stays killed: {v}"
    );
    let status = route(&r.client, &r.url).await;
    assert_eq!(status["killed"].as_bool(), Some(true), "{status}");
    // The failure is reported.
    let routes: Value = get_json(&r.client, format!("{}/v1/routes", r.url)).await;
    let failure = routes["rollout_failure"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        failure.contains("is not valid rollout state") && failure.contains("last good"),
        "{routes}"
    );
    r.shutdown().await;
    drop(dir);
}

/// A looping shadow beside a served route: shadow calls are bounded by the
/// machine's cores (not a fixed four), the rest are shed and counted, and
/// every served request answers from its stable arm within its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn looping_shadows_are_bounded_by_cores_and_served_requests_keep_their_deadline() {
    let (s, armed) = looping_shadow_beside_radio(300).await;
    // 8 at once: every shadow loops for its whole deadline, so the slots
    // are all busy together.
    let calls: Vec<_> = (0..8).map(|_| s.spawn_score(armed.clone())).collect();
    for c in calls {
        let (status, _, v) = c.await.unwrap();
        assert_eq!(
            (status, v["variant"].as_str()),
            (200, Some("stable")),
            "{v}"
        );
        assert!(v["timing"]["policy_us"].as_u64().unwrap() < 20_000, "{v}");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slots = (cores / 2).max(1) as f64;
    let series = |result: &str| {
        format!("oasis_shadow_calls_total{{route=\"radio\",shadow=\"slow\",result=\"{result}\"}}")
    };
    // Wait for the shadows that ran to finish (they time out).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (ran, shed) = loop {
        let m = s.metrics().await;
        let (ran, shed) = (
            metric(&m, &series("ok")) + metric(&m, &series("failed")),
            metric(&m, &series("shed")),
        );
        if ran + shed >= 8.0 || Instant::now() > deadline {
            break (ran, shed);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ran + shed, 8.0, "every shadow call ran or was shed");
    assert!(
        ran <= slots,
        "{ran} shadow calls ran at once on {cores} cores (at most {slots}); {shed} shed"
    );
    s.shutdown().await;
}

/// The bundled example request (campaign candidates among many) on `radio`
/// from `listener`.
fn example(listener: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&example_body()).unwrap();
    v["route"] = "radio".into();
    v["context"]["listener_id"] = listener.into();
    v["context"]["request_id"] = format!("{listener}-example").into();
    serde_json::to_vec(&v).unwrap()
}

/// Every series of an exposition whose value is 0, but for the gauges of a
/// state (0 is news: not stalled, nothing queued) and histogram buckets.
fn zero_counters(text: &str) -> Vec<&str> {
    const STATES: &[&str] = &[
        "oasis_instances_in_use",
        "oasis_fleet_windows_degraded",
        "oasis_queue_depth",
        "oasis_policy_promotion_stalled",
        "oasis_state_degraded",
        "oasis_state_queued_events",
        "oasis_decision_log_paused",
        "oasis_shadow_",
        "oasis_policies_",
        "oasis_generation_",
        "oasis_rollout_revision",
    ];
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            !name.ends_with("_bucket") && !STATES.iter().any(|s| name.starts_with(s))
        })
        .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(0.0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_arm_reports_its_rates_which_restart_on_a_rollout_change() {
    let s = TestServer::start_with(|d| radio(d, ""), with_admin).await;
    for i in 0..40 {
        let (status, v) = s.score(example(&format!("l{i}"))).await;
        assert_eq!(status, 200, "{v}");
    }
    let r = route(&s.client, &s.url).await;
    let arms = r["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 1, "{r}");
    let stable = &arms[0];
    assert_eq!(
        (stable["arm"].as_str(), stable["requests"].as_u64()),
        (Some("stable"), Some(40))
    );
    let (c, p, e) = (
        stable["candidates"].as_f64().unwrap(),
        stable["promoted"].as_f64().unwrap(),
        stable["eligible"].as_f64().unwrap(),
    );
    assert!(c >= 40.0 && p > 0.0 && e >= p, "{stable}");
    assert_eq!(stable["promoted_rate"].as_f64().unwrap(), p / c);
    assert_eq!(stable["eligible_rate"].as_f64().unwrap(), e / c);
    assert!(stable["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    let since = r["since"].as_str().unwrap().to_string();

    // A canary is a rollout change: the counts restart, and the canary's
    // are beside the stable arm's.
    let v2 = upload(&s.client, &s.url, "p", PID_PACING).await;
    let (status, v) = op(
        &s,
        "/admin/v1/routes/radio/canary",
        Some(json!({"version": v2, "percent": 50})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut in_canary = 0;
    for i in 0..60 {
        let (_, v) = s.score(example(&format!("m{i}"))).await;
        in_canary += u64::from(v["arm"] == "canary");
    }
    let r = route(&s.client, &s.url).await;
    assert_ne!(r["since"].as_str().unwrap(), since, "{r}");
    let arm = |name: &str| {
        r["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["arm"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert!(in_canary > 0 && in_canary < 60);
    assert_eq!(arm("canary")["requests"].as_u64(), Some(in_canary), "{r}");
    assert_eq!(
        arm("stable")["requests"].as_u64(),
        Some(60 - in_canary),
        "{r}"
    );

    // The same counts in Prometheus, by route and arm; and no counter that
    // never moved (no errors happened, so no error series exist).
    let text = s
        .client
        .get(s.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &text,
            r#"oasis_arm_requests_total{route="radio",arm="canary"} "#
        ),
        in_canary as f64
    );
    assert_eq!(
        metric(
            &text,
            r#"oasis_arm_requests_total{route="radio",arm="stable"} "#
        ),
        (100 - in_canary) as f64
    );
    assert!(
        metric(
            &text,
            r#"oasis_arm_promoted_total{route="radio",arm="stable"} "#
        ) > 0.0
    );
    assert!(!text.contains("oasis_policy_errors_total{"), "{text}");
    let zeros = zero_counters(&text);
    assert!(zeros.is_empty(), "counters that stay 0: {zeros:#?}");

    // `oasis rollout status` prints each arm's promoted rate.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oasis"))
        .args(["rollout", "--url", &s.url, "status", "radio"])
        .env("OASIS_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let promoted = arm("canary")["promoted_rate"].as_f64().unwrap() * 100.0;
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("canary ")
            && l.contains(&format!("promoted {promoted:.2}%"))),
        "{out}"
    );
}

/// Runs `oasis rollout ARGS` with the admin token and no `OASIS_URL`:
/// (exit code, stdout, stderr).
fn rollout_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oasis"))
        .arg("rollout")
        .args(args)
        .env("OASIS_ADMIN_TOKEN", TOKEN)
        .env_remove("OASIS_URL")
        .env("USER", "cli-user")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_waits_for_a_compile_longer_than_a_reload_pass_waits() {
    // A reload pass waits 1 ms for a compile (then lets it go on in the
    // background); an upload must wait for it to the end, not refuse it as
    // "still compiling" (the first upload of every Python component was).
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    radio(dir.path(), "");
    let server = ServeProcess::start(
        dir.path(),
        &[
            "--compile-wait-ms",
            "1",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &[("OASIS_ADMIN_TOKEN", TOKEN)],
    );
    // Uncached (a fresh cache directory): this upload compiles.
    let (code, out, err) = rollout_cli(&["--url", &server.url, "upload", "p", PID_PACING]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("stored {}", digest(PID_PACING))),
        "{out}"
    );
    let client = reqwest::Client::new();
    let versions = get_json(&client, format!("{}/v1/policies/p/versions", server.url)).await;
    assert!(
        versions.to_string().contains(&digest(PID_PACING)),
        "stored once it loads: {versions}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_names_its_server_refuses_to_guess_for_changes_and_takes_digest_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    radio(dir.path(), "");
    let server = ServeProcess::start(dir.path(), &[], &[("OASIS_ADMIN_TOKEN", TOKEN)]);
    let url = server.url.as_str();
    // A change without --url or OASIS_URL is refused before anything is sent.
    let (code, out, err) = rollout_cli(&["upload", "p", PID_PACING]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("--url") && err.contains("OASIS_URL"), "{err}");
    // A read says which server answered, the default one included.
    let (code, out, err) = rollout_cli(&["--url", url, "upload", "p", PID_PACING]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with(&format!("server {url}\n")), "{out}");
    let (_, out, _) = rollout_cli(&["versions", "p"]);
    assert!(
        out.starts_with("server http://127.0.0.1:8080 (the default"),
        "{out}"
    );
    let (_, out, _) = rollout_cli(&["--json", "--url", url, "status", "radio"]);
    serde_json::from_str::<Value>(&out).expect("--json output is JSON alone");

    // The digest as printed (`sha256:` and 12 hex digits) names the version.
    let full = digest(PID_PACING);
    let printed = &full[..("sha256:".len() + 12)];
    let (code, out, err) =
        rollout_cli(&["--url", url, "canary", "radio", printed, "--percent", "5"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let client = reqwest::Client::new();
    let r = route(&client, url).await;
    assert_eq!(r["canary"]["version"]["digest"], full.as_str(), "{r}");
    // Shadows too, as `key@prefix`.
    let shadow = format!("p@{printed}");
    let (code, out, err) = rollout_cli(&["--url", url, "shadow", "radio", &shadow, "--on"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let r = route(&client, url).await;
    assert!(r["shadows"].to_string().contains(&full), "{r}");
    // Too short, or no such version: refused with a reason.
    let (code, _, err) = rollout_cli(&[
        "--url",
        url,
        "canary",
        "radio",
        &full[..15],
        "--percent",
        "5",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("at least 12"), "{err}");
    let (code, _, err) = rollout_cli(&[
        "--url",
        url,
        "canary",
        "radio",
        "sha256:000000000000",
        "--percent",
        "5",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not stored"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_is_logged_when_the_directory_changes_and_unpin_serves_the_directory_again() {
    let dir = tempfile::tempdir().unwrap();
    radio(dir.path(), "");
    let server = ServeProcess::start(dir.path(), &[], &[("OASIS_ADMIN_TOKEN", TOKEN)]);
    let url = server.url.as_str();
    let client = reqwest::Client::new();
    let v2 = upload(&client, url, "p", PID_PACING).await;
    for args in [
        &["canary", "radio", v2.as_str(), "--percent", "50"][..],
        &["promote", "radio"][..],
    ] {
        let (code, out, err) = rollout_cli(&[&["--url", url][..], args].concat());
        assert_eq!(code, Some(0), "{out}{err}");
    }
    let (_, out, _) = rollout_cli(&["--url", url, "status", "radio"]);
    assert!(out.contains("(pinned)"), "the pin shows in status: {out}");

    // A new module in the directory: activated, but the pin keeps serving,
    // and the log line says so.
    install(dir.path(), "p", EPSILON_GREEDY, "");
    let want = digest(EPSILON_GREEDY);
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = server
            .logs
            .recv_timeout(left)
            .expect("no activation logged");
        if line["digest"] == want.as_str()
            && line["message"]
                .as_str()
                .is_some_and(|m| m.contains("activated"))
        {
            break line;
        }
    };
    assert!(
        line["message"].as_str().unwrap().contains("pinned")
            && line["pinned"]
                .as_str()
                .is_some_and(|p| p.starts_with("radio=sha256:")),
        "{line}"
    );
    let r = wait_route(&client, url, |r| r["directory"]["digest"] == want.as_str()).await;
    assert_eq!(r["stable"]["digest"], v2.as_str(), "the pin serves: {r}");

    let (code, out, err) = rollout_cli(&["--url", url, "unpin", "radio"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let r = wait_route(&client, url, |r| r["stable"]["digest"] == want.as_str()).await;
    assert_ne!(r["pinned"], true, "{r}");
    // Audited as an unpin, not counted as a rollback.
    let (_, out, _) = rollout_cli(&["--url", url, "audit"]);
    assert!(out.contains("unpin"), "{out}");
    assert!(!out.contains("rollback"), "{out}");
    // Nothing left to unpin: refused, saying why.
    let (code, _, err) = rollout_cli(&["--url", url, "unpin", "radio"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("pins no version"), "{err}");
}
