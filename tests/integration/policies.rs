//! Every example policy, built to wasm, loads and scores the bundled example
//! request with explainable results.

use oasis::bindings::{WitDecisions, WitReason};
use oasis_test_components::{
    BASELINE, EPSILON_GREEDY, EXPOSURE_FAIRNESS, FREQ_CAP_DIVERSITY, GUARDED_BOOST, PID_PACING,
};

use crate::harness::{example_body, load, score as score_body};

fn score(path: &str) -> (oasis::Policy, WitDecisions) {
    let policy = load(path, "{}").unwrap();
    let out = score_body(&policy, &example_body()).unwrap();
    (policy, out.decisions)
}

fn promoted(d: &WitDecisions) -> Vec<usize> {
    (0..d.scores.len())
        .filter(|&i| d.reasons[i].contains(WitReason::PROMOTED))
        .collect()
}

fn example() -> serde_json::Value {
    serde_json::from_slice(&example_body()).unwrap()
}

fn campaign_id(req: &serde_json::Value, i: usize) -> Option<String> {
    req["candidates"][i]["campaign"]["id"]
        .as_str()
        .map(String::from)
}

#[test]
fn baseline_is_relevance_passthrough() {
    let (p, d) = score(BASELINE);
    assert_eq!(p.info().name, "baseline");
    assert!(p.info().digest.starts_with("sha256:"));
    let req = example();
    for (i, s) in d.scores.iter().enumerate() {
        assert_eq!(*s, req["candidates"][i]["relevance"].as_f64().unwrap());
    }
    assert!(promoted(&d).is_empty());
}

#[test]
fn guarded_boost_promotes_only_active_in_market_campaigns_up_to_k() {
    let (_, d) = score(GUARDED_BOOST);
    let req = example();
    let p = promoted(&d);
    assert!(!p.is_empty() && p.len() <= 3, "promoted {p:?}");
    for &i in &p {
        let c = campaign_id(&req, i).expect("promoted tracks are campaign tracks");
        assert!(
            !["cmp-ended", "cmp-us-only", "cmp-mixes"].contains(&c.as_str()),
            "{c} promoted"
        );
        assert!(d.scores[i] > req["candidates"][i]["relevance"].as_f64().unwrap());
        assert!(d.eligible[i]);
    }
    for i in 0..d.scores.len() {
        match campaign_id(&req, i).as_deref() {
            Some("cmp-ended") => assert!(d.reasons[i].contains(WitReason::CAMPAIGN_INACTIVE)),
            Some("cmp-us-only") => assert!(d.reasons[i].contains(WitReason::NOT_ELIGIBLE_MARKET)),
            Some("cmp-mixes") => assert!(d.reasons[i].contains(WitReason::NOT_ELIGIBLE_SURFACE)),
            None => assert!(d.reasons[i].contains(WitReason::ORGANIC)),
            _ => {}
        }
    }
}

#[test]
fn pid_pacing_boosts_the_under_delivering_campaign_more() {
    let (_, guarded) = score(GUARDED_BOOST);
    let (_, paced) = score(PID_PACING);
    let req = example();
    let boost = |d: &WitDecisions, i: usize| {
        d.scores[i] - req["candidates"][i]["relevance"].as_f64().unwrap()
    };
    let mut saw = (false, false);
    for i in 0..paced.scores.len() {
        match campaign_id(&req, i).as_deref() {
            Some("cmp-under") if boost(&guarded, i) > 0.0 => {
                assert!(
                    boost(&paced, i) > boost(&guarded, i),
                    "under-delivering boosted more"
                );
                saw.0 = true;
            }
            Some("cmp-over") if boost(&guarded, i) > 0.0 => {
                assert!(
                    boost(&paced, i) < boost(&guarded, i),
                    "over-delivering throttled"
                );
                assert!(paced.reasons[i].contains(WitReason::PACING_THROTTLED));
                saw.1 = true;
            }
            _ => {}
        }
    }
    assert!(saw.0 || saw.1, "the example request exercises pacing");
    assert!(paced.debug.iter().any(|v| v.name == "pacing_multiplier"));
}

#[test]
fn freq_cap_diversity_caps_and_keeps_one_track_per_artist() {
    let (_, d) = score(FREQ_CAP_DIVERSITY);
    let req = example();
    let mut artists = std::collections::HashSet::new();
    for i in promoted(&d) {
        let c = &req["candidates"][i];
        assert!(c["impressions_24h"].as_u64().unwrap() < 3);
        assert!(c["session_promoted"].as_u64().unwrap() < 1);
        assert!(
            artists.insert(c["artist"].as_str().unwrap().to_string()),
            "one per artist"
        );
    }
    for i in 0..d.scores.len() {
        let c = &req["candidates"][i];
        if c.get("campaign").is_some() && c["impressions_24h"].as_u64().unwrap() >= 3 {
            assert!(d.reasons[i].contains(WitReason::FREQ_CAPPED));
        }
    }
}

#[test]
fn exposure_fairness_adjusts_campaign_tracks_by_holder_deficit() {
    let (_, d) = score(EXPOSURE_FAIRNESS);
    let adjusted =
        (0..d.scores.len()).filter(|&i| d.reasons[i].contains(WitReason::FAIRNESS_ADJUST));
    assert!(adjusted.count() > 0);
    assert!(d.debug.iter().any(|v| v.name == "holder_deficit"));
    assert!(d.scores.iter().all(|s| s.is_finite()));
}

#[test]
fn epsilon_greedy_is_replayable_with_exact_propensities() {
    let (p, d1) = score(EPSILON_GREEDY);
    let d2 = score_body(&p, &example_body()).unwrap().decisions;
    assert_eq!(
        format!("{d1:?}"),
        format!("{d2:?}"),
        "same seed, same decisions"
    );
    assert_eq!(promoted(&d1).len(), 1, "one slot by default");
    let total: f64 = d1.propensity.iter().sum();
    assert!(
        (total - 1.0).abs() < 1e-9,
        "propensities over eligible candidates sum to the slots: {total}"
    );
    // A different seed changes the random draw in some requests, never the propensities.
    let body = String::from_utf8(example_body())
        .unwrap()
        .replace("\"seed\": 1234567", "\"seed\": 99");
    let d3 = score_body(&p, body.as_bytes()).unwrap().decisions;
    assert_eq!(d1.propensity, d3.propensity);
}

/// The example request's candidates cycled to `n` (ids made unique), each
/// with its own features plus synthetic ones up to 30.
fn large_body(n: usize) -> Vec<u8> {
    let mut req = example();
    let base = req["candidates"].as_array().unwrap().clone();
    let candidates: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut c = base[i % base.len()].clone();
            c["id"] = format!("spotify:track:{i:016x}").into();
            if c.get("features").is_none() {
                c["features"] = serde_json::json!({});
            }
            let features = c["features"].as_object_mut().unwrap();
            for f in features.len()..30 {
                features.insert(format!("f{f:02}"), (i as f64 * 0.001).into());
            }
            c
        })
        .collect();
    req["candidates"] = candidates.into();
    serde_json::to_vec(&req).unwrap()
}

/// The policies are built with 1 MiB of heap in their initial memory
/// (`.cargo/config.toml`): a growth during a call costs the host two
/// `mprotect`s of the pooled slot, so a request of 1000 candidates x 30
/// features must fit without one. The peak a call reports is the memory's
/// size at instantiation unless the call grew it: the large call's peak is
/// the small one's.
#[test]
fn a_large_request_grows_no_example_policy_s_memory() {
    let body = large_body(1000);
    for path in [
        BASELINE,
        EPSILON_GREEDY,
        EXPOSURE_FAIRNESS,
        FREQ_CAP_DIVERSITY,
        GUARDED_BOOST,
        PID_PACING,
    ] {
        let policy = load(path, "{}").unwrap();
        let small = score_body(&policy, &example_body()).unwrap();
        let out = score_body(&policy, &body).unwrap();
        assert_eq!(out.decisions.scores.len(), 1000, "{path}");
        assert!(
            small.usage.peak_memory_bytes > (2 << 20),
            "{path}: initial memory {} bytes: no heap reserved",
            small.usage.peak_memory_bytes
        );
        assert_eq!(
            out.usage.peak_memory_bytes, small.usage.peak_memory_bytes,
            "{path}: the call of 1000 candidates grew linear memory"
        );
    }
}
