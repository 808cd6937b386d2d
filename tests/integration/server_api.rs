//! The HTTP surface in process: the router of `oasis::server::app` called
//! with `oneshot` over a policy directory loaded once (no socket, no
//! watcher). Scoring with ids and version, every 4xx with its field or the
//! known names, and a 200 fallback per fault kind.

use axum::http::Method;
use oasis_test_components::{ADVERSARIAL, BASELINE, GUARDED_BOOST};
use serde_json::Value;

use crate::harness::server::{
    Harness, TestApp, TestServer, atomic_write, attack_body, digest, install, metric, policy,
    routed, version_labels,
};
use crate::harness::{example_body, small_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scores_the_example_request_with_ids_and_version() {
    let s = TestApp::start(|d| {
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
    assert_eq!(s.get("/healthz").await.status, 200);
    let p = s.policies().await;
    assert_eq!(policy(&p, "guarded").unwrap()["status"], "active");
    assert_eq!(
        policy(&p, "guarded").unwrap()["routes"],
        serde_json::json!(["autoplay", "guarded"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_requests_get_precise_4xx() {
    let s = TestApp::start_with(
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

    // A caller's id with a control character could forge log lines: refused.
    let (status, v) = s
        .score(
            small
                .replace(
                    "\"request_id\": \"t\"",
                    "\"request_id\": \"t\\nINFO forged\"",
                )
                .into_bytes(),
        )
        .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (422, Some("context.request_id")),
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

    let r = s.get("/v1/policies/nope").await;
    assert_eq!(r.status, 404);

    let metrics = s.metrics().await;
    assert!(
        metrics.contains(
            "oasis_rejected_total{status=\"422\",reason=\"invalid_request\",transport=\"http\"} 4"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "oasis_rejected_total{status=\"413\",reason=\"too_large\",transport=\"http\"} 1"
        ),
        "{metrics}"
    );
}

/// Regression (issue 24): a missing field was reported at the object that
/// lacks it (`context`), not at the field (`context.market`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_field_is_named_at_the_field() {
    let s = TestApp::start_with(
        |d| install(d, "base", BASELINE, ""),
        |c| c.default_route = Some("base".into()),
    )
    .await;
    let campaign = r#"{"id": "c", "start_ms": 0, "end_ms": 9, "delivery_target": 3}"#;
    let small = String::from_utf8(small_body(false)).unwrap().replace(
        r#"{"id": "b", "relevance": 0.5}"#,
        &format!(r#"{{"id": "b", "relevance": 0.5, "campaign": {campaign}}}"#),
    );
    assert_eq!(s.score(small.clone().into_bytes()).await.0, 200);
    for (cut, keep, field) in [
        (r#""market": "SE", "#, "", "context.market"),
        (
            r#"{"id": "c", "relevance""#,
            r#"{"relevance""#,
            "candidates[2].id",
        ),
        (r#""end_ms": 9, "#, "", "candidates[1].campaign.end_ms"),
        (
            r#""delivery_target": 3"#,
            r#""commission_bps": 1"#,
            "candidates[1].campaign.delivery_target",
        ),
    ] {
        let body = small.replacen(cut, keep, 1);
        assert_ne!(body, small, "{cut}");
        let (status, v) = s.score(body.into_bytes()).await;
        assert_eq!(
            (
                status,
                v["error"]["kind"].as_str(),
                v["error"]["field"].as_str()
            ),
            (400, Some("malformed_request"), Some(field)),
            "{v}"
        );
        let name = field.rsplit('.').next().unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("missing field `{name}`")),
            "{message}"
        );
        assert!(message.contains(&format!("(at `{field}`)")), "{message}");
    }
}

/// Regression (issue 24): a body labelled `text/plain` was parsed as JSON.
/// A JSON endpoint refuses any non-JSON label with 415 (and counts it);
/// JSON with parameters, `+json` and no label at all are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_not_labelled_json_is_refused_with_415() {
    let s = TestServer::start_with(
        |d| install(d, "base", BASELINE, ""),
        |c| c.default_route = Some("base".into()),
    )
    .await;
    let post = |path: &str, content_type: Option<&str>, body: Vec<u8>| {
        let mut r = s.client.post(s.at(path)).body(body);
        if let Some(t) = content_type {
            r = r.header("content-type", t);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    for label in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "text/plain; charset=utf-8",
    ] {
        let (status, v) = post("/v1/score", Some(label), small_body(false)).await;
        assert_eq!(
            (status, v["error"]["kind"].as_str()),
            (415, Some("unsupported_media_type")),
            "{label}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`Content-Type: {label}`"))
                && message.contains("send `Content-Type: application/json`"),
            "{message}"
        );
    }
    for label in [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/vnd.oasis+json"),
        None,
    ] {
        let (status, v) = post("/v1/score", label, small_body(false)).await;
        assert_eq!(status, 200, "{label:?}: {v}");
    }
    let metrics = s.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "oasis_rejected_total{status=\"415\",reason=\"unsupported_media_type\",transport=\"http\"}"
        ),
        3.0,
        "{metrics}"
    );

    // Events take JSON lines too, and refuse the rest.
    let event = concat!(
        r#"{"event_id": "e1", "request_id": "r", "candidate_id": "a", "event": "impression", "#,
        r#""at_ms": 1781524800000, "listener_id": "u", "session_id": "s"}"#,
        "\n"
    )
    .as_bytes();
    let (status, v) = post("/v1/events", Some("text/plain"), event.to_vec()).await;
    assert_eq!(
        (status, v["error"]["kind"].as_str()),
        (415, Some("unsupported_media_type")),
        "{v}"
    );
    let (status, v) = post("/v1/events", Some("application/x-ndjson"), event.to_vec()).await;
    assert_eq!(status, 202, "{v}");
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
    let s = TestApp::start(|d| {
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
    let policies = s.policies().await;
    let (looping, orphan, baseline) = (
        version_labels(&policies, "loop"),
        version_labels(&policies, "orphan"),
        version_labels(&policies, "baseline"),
    );
    assert!(
        metrics.contains(&format!(
            "oasis_fallbacks_total{{{looping},kind=\"timeout\",served_by=\"fallback_policy\"}} 1"
        )),
        "{metrics}"
    );
    // A fallback is counted once, by what served it; errors per failed call.
    assert!(
        metrics.contains(&format!(
            "oasis_fallbacks_total{{{orphan},kind=\"trap\",served_by=\"passthrough\"}} 1"
        )),
        "{metrics}"
    );
    // What never happened has no series (not a series at 0).
    assert!(
        !metrics.contains(&format!(
            "oasis_fallbacks_total{{{looping},kind=\"timeout\",served_by=\"passthrough\"}}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "oasis_requests_total{route=\"panic\",variant=\"stable\",transport=\"http\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("oasis_policy_latency_seconds_count{{{baseline}}}")));
    // What the baseline decided is counted per version: every candidate it
    // scored, none promoted (it is the relevance passthrough).
    assert!(
        metric(
            &metrics,
            &format!("oasis_policy_candidates_total{{{baseline}}}")
        ) > 0.0
    );
    assert_eq!(
        metric(
            &metrics,
            &format!("oasis_policy_promoted_total{{{baseline}}}")
        ),
        0.0
    );
}

/// Settings are part of a version's identity: responses, status and metric
/// labels carry their hash, status shows the settings in effect; and a
/// version that promotes nothing while campaign tracks arrive is flagged.
#[tokio::test]
async fn settings_identify_a_version_and_a_version_that_promotes_nothing_is_flagged() {
    let app = TestApp::start_with(
        |d| {
            install(d, "guarded", GUARDED_BOOST, "[settings]\ntheta = 0.5\n");
            // theta 0: every campaign track is over the skip guardrail.
            install(d, "silent", GUARDED_BOOST, "[settings]\ntheta = 0.0\n");
        },
        |c| {
            c.promotion_stall = oasis::telemetry::promotion::PromotionStall {
                candidates: 1,
                after: std::time::Duration::ZERO,
            }
        },
    )
    .await;
    let (status, v) = app.score(routed("guarded", &example_body())).await;
    assert_eq!(status, 200, "{v}");
    let promoted = v["scores"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "promoted")
        })
        .count();
    assert!(promoted > 0, "{v}");
    let (status, silent) = app.score(routed("silent", &example_body())).await;
    assert_eq!(status, 200);

    let policies = app.policies().await;
    let g = &policy(&policies, "guarded").unwrap()["active"];
    let s = &policy(&policies, "silent").unwrap()["active"];
    // The same module with other settings: same digest, another settings hash.
    assert_eq!(g["digest"], s["digest"]);
    assert_ne!(g["settings_sha256"], s["settings_sha256"]);
    assert_eq!(v["policy"]["settings_sha256"], g["settings_sha256"], "{v}");
    assert_eq!(silent["policy"]["settings_sha256"], s["settings_sha256"]);
    // The settings in effect: the manifest's, over the documented defaults.
    assert_eq!(g["settings"]["theta"], 0.5);
    assert!(g["settings"]["k_max"].is_u64(), "defaults filled in: {g}");

    // Promotion counts: guarded promoted, silent did not and is flagged.
    assert_eq!(g["promotion"]["promoted"].as_u64(), Some(promoted as u64));
    assert_eq!(g["promotion"]["stalled"], false);
    assert!(s["promotion"]["campaign_candidates"].as_u64().unwrap() > 0);
    assert_eq!(s["promotion"]["stalled"], true, "{s}");
    let warnings = policy(&policies, "silent").unwrap()["warnings"].to_string();
    assert!(warnings.contains("promotes nothing"), "{warnings}");

    let metrics = app.metrics().await;
    let (gl, sl) = (
        version_labels(&policies, "guarded"),
        version_labels(&policies, "silent"),
    );
    assert_eq!(
        metric(&metrics, &format!("oasis_policy_promoted_total{{{gl}}}")),
        promoted as f64
    );
    assert_eq!(
        metric(&metrics, &format!("oasis_policy_promotion_stalled{{{sl}}}")),
        1.0
    );
    assert_eq!(
        metric(&metrics, &format!("oasis_policy_promotion_stalled{{{gl}}}")),
        0.0
    );
    assert!(
        metric(
            &metrics,
            &format!("oasis_policy_reasons_total{{{sl},reason=\"relevance_guardrail\"}}")
        ) > 0.0,
        "{metrics}"
    );
}

/// Unknown paths and wrong methods answer in the API's error shape (404
/// `not_found`, 405 `method_not_allowed` with `Allow`); status timestamps
/// are RFC 3339.
#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_error_shape() {
    let app = TestApp::start(|d| install(d, "guarded", GUARDED_BOOST, "")).await;
    let r = app.get("/v1/nope").await;
    let v = r.json();
    assert_eq!(
        (r.status, v["error"]["kind"].as_str()),
        (404, Some("not_found"))
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("/v1/nope"),
        "{v}"
    );
    let r = app.send(Method::DELETE, "/v1/score", Vec::new()).await;
    let v = r.json();
    assert_eq!(
        (r.status, v["error"]["kind"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let policies = app.policies().await;
    let loaded_at = policy(&policies, "guarded").unwrap()["active"]["loaded_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        humantime::parse_rfc3339(&loaded_at).is_ok() && loaded_at.ends_with('Z'),
        "{loaded_at}"
    );
}
