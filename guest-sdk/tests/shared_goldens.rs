//! Golden files shared with the Python SDK (`guest-sdk-python/`), so that a
//! Python policy draws the same random sequence and is refused for the same
//! output as a Rust one:
//!
//! * `guest-sdk/testdata/rng-golden.json`: draws of [`Rng`] per seed
//!   (`guest-sdk-python/tests/test_rng.py` checks `oasis_sdk.rng.Rng`);
//! * `contract/testdata/output-cases.json`: outputs and the first violation
//!   of [`oasis_contract::check_decisions`]
//!   (`guest-sdk-python/tests/test_contract.py` checks its Python port);
//! * `guest-sdk/testdata/campaign-update-cases.json`: the same for the
//!   campaign updates of contract 0.2.0.

use oasis_contract::{CampaignUpdate, DebugRef, DecisionsView, Violation, check_decisions};
use oasis_sdk::Rng;
use serde_json::Value;

fn read(path: &str) -> Value {
    let file = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap()
}

/// A number, or "NaN" / "inf" / "-inf".
fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        v => v.as_f64().unwrap(),
    }
}

fn list<T>(v: &Value, f: impl Fn(&Value) -> T) -> Vec<T> {
    v.as_array().unwrap().iter().map(f).collect()
}

#[test]
fn the_rng_matches_the_shared_golden_draws() {
    let doc = read("guest-sdk/testdata/rng-golden.json");
    let ns = list(&doc["n"], |n| n.as_u64().unwrap());
    let seeds = doc["seeds"].as_array().unwrap();
    assert!(seeds.len() >= 5);
    for s in seeds {
        let seed = s["seed"].as_u64().unwrap();
        let mut rng = Rng::from_seed(seed);
        // Draws times 2^53 are exact integers (next_f64 has 53 bits).
        for (k, want) in s["f64_x2p53"].as_array().unwrap().iter().enumerate() {
            let x = rng.next_f64() * (1u64 << 53) as f64;
            assert_eq!(x as u64 as f64, x, "seed {seed}, f64 #{k}: not 53 bits");
            assert_eq!(x as u64, want.as_u64().unwrap(), "seed {seed}, f64 #{k}");
        }
        for (n, want) in ns.iter().zip(s["below"].as_array().unwrap()) {
            assert_eq!(
                rng.below(*n as usize) as u64,
                want.as_u64().unwrap(),
                "seed {seed}, below({n})"
            );
        }
    }
}

fn kind(v: &Violation) -> &'static str {
    match v {
        Violation::ColumnLength { .. } => "ColumnLength",
        Violation::NonFiniteScore { .. } => "NonFiniteScore",
        Violation::PropensityOutOfRange { .. } => "PropensityOutOfRange",
        Violation::OrganicPromoted { .. } => "OrganicPromoted",
        Violation::TooManyDebugValues { .. } => "TooManyDebugValues",
        Violation::DebugNameLength { .. } => "DebugNameLength",
        Violation::DebugCandidateOutOfRange { .. } => "DebugCandidateOutOfRange",
        Violation::NonFiniteDebugValue { .. } => "NonFiniteDebugValue",
        Violation::CampaignUpdateOutOfRange { .. } => "CampaignUpdateOutOfRange",
        Violation::NonFiniteCampaignUpdate { .. } => "NonFiniteCampaignUpdate",
        Violation::DuplicateCampaignUpdate { .. } => "DuplicateCampaignUpdate",
    }
}

#[test]
fn the_output_check_matches_the_shared_cases() {
    let doc = read("contract/testdata/output-cases.json");
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let scores = list(&c["scores"], num);
        let propensity = list(&c["propensity"], num);
        let eligible = list(&c["eligible"], |v| v.as_bool().unwrap());
        let reasons = list(&c["reasons"], |v| v.as_u64().unwrap() as u16);
        let campaign = list(&c["campaign"], |v| v.as_i64().unwrap() as i32);
        let debug = list(&c["debug"], |d| {
            (
                d[0].as_str().unwrap().to_string(),
                d[1].as_u64().map(|c| c as u32),
                num(&d[2]),
            )
        });
        let got = check_decisions(
            c["candidates"].as_u64().unwrap() as usize,
            &campaign,
            0,
            DecisionsView {
                scores: &scores,
                eligible: &eligible,
                reasons: &reasons,
                propensity: &propensity,
                campaign_updates: &[] as &[CampaignUpdate],
            },
            debug.iter().map(|(name, candidate, value)| DebugRef {
                name,
                candidate: *candidate,
                value: *value,
            }),
        );
        match (&c["expected"], got) {
            (Value::Null, Ok(())) => {}
            (Value::Null, Err(v)) => panic!("{name}: refused: {v}"),
            (want, Ok(())) => panic!("{name}: accepted, expected {want}"),
            (want, Err(v)) => {
                assert_eq!(kind(&v), want["kind"].as_str().unwrap(), "{name}");
                assert_eq!(v.to_string(), want["message"].as_str().unwrap(), "{name}");
            }
        }
    }
}

#[test]
fn the_campaign_update_check_matches_the_shared_cases() {
    let doc = read("guest-sdk/testdata/campaign-update-cases.json");
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let updates = list(&c["updates"], |u| CampaignUpdate {
            campaign: u[0].as_u64().unwrap() as u32,
            pacing_integral: num(&u[1]),
            pacing_last_error: num(&u[2]),
        });
        let got = check_decisions(
            1,
            &[-1],
            c["campaigns"].as_u64().unwrap() as usize,
            DecisionsView {
                scores: &[0.5],
                eligible: &[false],
                reasons: &[oasis_contract::reason::ORGANIC],
                propensity: &[0.0],
                campaign_updates: &updates,
            },
            [].into_iter(),
        );
        match (&c["expected"], got) {
            (Value::Null, Ok(())) => {}
            (Value::Null, Err(v)) => panic!("{name}: refused: {v}"),
            (want, Ok(())) => panic!("{name}: accepted, expected {want}"),
            (want, Err(v)) => {
                assert_eq!(kind(&v), want["kind"].as_str().unwrap(), "{name}");
                assert_eq!(v.to_string(), want["message"].as_str().unwrap(), "{name}");
            }
        }
    }
}
