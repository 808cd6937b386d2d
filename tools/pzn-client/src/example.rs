//! The bundled example request, `examples/request.json`.
//!
//! It is one request of the traffic generator ([`RequestGenerator::slate`]:
//! 300 candidates drawn by popularity from the default catalog, with
//! listener predictions), in a fixed context (radio in SE at
//! [`DEFAULT_NOW_MS`], seed 1234567), whose campaigns are replaced by six
//! hand-written ones in the states the docs and the integration tests name:
//!
//! | id | state on radio in SE |
//! |---|---|
//! | `cmp-under` | active, every market, under-delivering |
//! | `cmp-over` | active, Nordic markets, over-delivering |
//! | `cmp-ontrack` | active, radio and autoplay only, on schedule |
//! | `cmp-ended` | ended ten days ago |
//! | `cmp-us-only` | active, US and CA only: wrong market |
//! | `cmp-mixes` | active, daily and genre mixes only: wrong surface |
//!
//! Each campaign has three tracks in the slate: one among the first
//! [`HEAD`] ranks, where relevance is high enough for the example policies
//! to lift a track, and two anywhere. Their frequency counters follow the
//! generator's model ([`promotion_counters`]), except that the head track
//! of [`CAPPED`] has reached any daily frequency cap (4 promoted
//! impressions in 24 hours, `freq-cap-diversity` caps at 3); organic tracks
//! have none.
//!
//! The output is deterministic. Regenerate the file with
//!
//! ```text
//! cargo run -q -p pzn-client -- --emit-example > examples/request.json
//! ```
//!
//! A test fails when the committed file and this generator disagree, for
//! example after an upgrade of `rand` or `rand_distr` changes their streams:
//! then regenerate it and check that the integration tests, which assert
//! what the example policies do with it, still pass.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use oasis_contract::Surface;

use crate::catalog::{Campaign, Catalog, CatalogConfig, DAY_MS, DEFAULT_NOW_MS};
use crate::traffic::{
    Context, ContextFeatures, NO_ROUTE, RequestGenerator, ScoreRequest, TrafficConfig,
    promotion_counters,
};

/// Seed of the example's catalog, slate and campaign placement.
pub const EXAMPLE_SEED: u64 = 20_261_125;

/// Candidates in the example request.
pub const CANDIDATES: usize = 300;

/// Tracks of each campaign in the slate.
const TRACKS_PER_CAMPAIGN: usize = 3;

/// Each campaign has one track among the first `HEAD` ranks.
pub const HEAD: usize = 50;

/// The campaign whose head track is over the daily frequency cap.
pub const CAPPED: &str = "cmp-ontrack";

/// Promoted impressions in 24 hours of that track.
const CAPPED_IMPRESSIONS: u32 = 4;

/// The example's campaigns, the figures of the former `gen_request.py`:
/// id, start and end in days from now, surfaces (all but `other` when
/// `None`), markets (all when empty), delivery target, delivered, expected
/// by now, pacing integral, commission in basis points. The last pacing
/// error is derived from the delivery figures.
type CampaignSpec = (
    &'static str,
    (i64, i64),
    Option<&'static [Surface]>,
    &'static [&'static str],
    (f64, f64, f64),
    f64,
    u32,
);

#[rustfmt::skip]
const CAMPAIGNS: [CampaignSpec; 6] = [
    ("cmp-under",   (-10, 20),  None, &[],                 (30000.0, 6000.0, 10000.0),  0.0767, 2000),
    ("cmp-over",    (-10, 20),  None, &["SE", "NO", "DK"], (20000.0, 11000.0, 6667.0), -0.0027, 2000),
    ("cmp-ontrack", (-5, 25),   Some(&[Surface::Radio, Surface::Autoplay]), &[],
                                                           (12000.0, 2000.0, 2000.0),   0.0913, 3000),
    ("cmp-ended",   (-40, -10), None, &[],                 (5000.0, 5000.0, 5000.0),   -0.0228, 3000),
    ("cmp-us-only", (-3, 27),   None, &["US", "CA"],       (50000.0, 4000.0, 5000.0),   0.0647, 2000),
    ("cmp-mixes",   (-8, 22),   Some(&[Surface::DailyMix, Surface::GenreMix]), &[],
                                                           (8000.0, 2100.0, 2133.0),   -0.0054, 3000),
];

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The six example campaigns.
pub fn campaigns() -> Vec<Campaign> {
    CAMPAIGNS
        .iter()
        .map(
            |&(
                id,
                (start, end),
                surfaces,
                markets,
                (target, delivered, expected),
                integral,
                bps,
            )| {
                Campaign {
                    id: id.to_string(),
                    start_ms: DEFAULT_NOW_MS + start * DAY_MS,
                    end_ms: DEFAULT_NOW_MS + end * DAY_MS,
                    surfaces: surfaces.map(<[Surface]>::to_vec),
                    markets: markets.to_vec(),
                    delivery_target: target,
                    delivered,
                    expected_by_now: expected,
                    pacing_integral: integral,
                    // The last error a pacing controller would have seen,
                    // damped: the normalized delivery gap times 0.9.
                    pacing_last_error: round4((expected - delivered) / target * 0.9),
                    commission_bps: bps,
                    // Not sent; the example's campaigns span rights holders.
                    rights_holder: 0,
                }
            },
        )
        .collect()
}

/// The example request.
pub fn request() -> ScoreRequest {
    let catalog = Catalog::generate(CatalogConfig::default(), EXAMPLE_SEED);
    let traffic = TrafficConfig {
        candidates: CANDIDATES,
        routes: vec![NO_ROUTE.to_string()],
        ..TrafficConfig::default()
    };
    let mut generator = RequestGenerator::new(Arc::new(catalog), traffic, EXAMPLE_SEED);
    let context = Context {
        request_id: "example-0001".into(),
        listener_id: "listener-8c1f".into(),
        session_id: "session-51e0".into(),
        surface: Surface::Radio,
        market: "SE",
        timestamp_ms: DEFAULT_NOW_MS,
        seed: 1_234_567,
        features: ContextFeatures {
            local_hour: 20,
            session_position: 7,
            session_skip_rate: 0.18,
        },
    };
    let mut candidates = generator.slate(&context);

    // Only the example campaigns: drop the catalog's.
    for c in &mut candidates {
        c.campaign = None;
        c.impressions_24h = 0;
        c.session_promoted = 0;
    }
    let mut rng = StdRng::seed_from_u64(EXAMPLE_SEED ^ 0xe8a4_c0de);
    let mut taken = vec![false; candidates.len()];
    let mut pick = |rng: &mut StdRng, below: usize| loop {
        let i = rng.random_range(0..below);
        if !taken[i] {
            taken[i] = true;
            return i;
        }
    };
    for campaign in campaigns() {
        let head = pick(&mut rng, HEAD);
        let rest: Vec<usize> = (1..TRACKS_PER_CAMPAIGN)
            .map(|_| pick(&mut rng, CANDIDATES))
            .collect();
        for i in std::iter::once(head).chain(rest) {
            let (impressions, session) =
                promotion_counters(&mut rng, context.features.session_position);
            let c = &mut candidates[i];
            c.campaign = Some(campaign.clone());
            c.impressions_24h = impressions;
            c.session_promoted = session;
        }
        if campaign.id == CAPPED {
            candidates[head].impressions_24h = CAPPED_IMPRESSIONS;
        }
    }

    ScoreRequest {
        route: None,
        context,
        candidates,
        debug: false,
    }
}

/// The example request as the bytes of `examples/request.json`: pretty
/// JSON and a final newline.
pub fn json() -> String {
    let mut s = serde_json::to_string_pretty(&request()).expect("requests serialize");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::{HashMap, HashSet};

    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/request.json");

    #[test]
    fn the_committed_example_is_what_the_generator_writes() {
        let committed = std::fs::read_to_string(COMMITTED).expect("examples/request.json");
        // Compare lines first for a readable failure, then the bytes.
        let generated = json();
        for (n, (a, b)) in committed.lines().zip(generated.lines()).enumerate() {
            assert_eq!(
                a,
                b,
                "examples/request.json line {} differs from the generator; regenerate it with \
                 `cargo run -q -p pzn-client -- --emit-example > examples/request.json`",
                n + 1
            );
        }
        assert!(
            committed == generated,
            "examples/request.json differs from the generator ({} vs {} bytes); regenerate it \
             with `cargo run -q -p pzn-client -- --emit-example > examples/request.json`",
            committed.len(),
            generated.len()
        );
    }

    #[test]
    fn the_example_passes_the_hosts_parser_and_validator() {
        let body = json();
        use oasis::request::Validate;
        let req = oasis::request::parse(body.as_bytes())
            .unwrap_or_else(|e| panic!("the example request: {e}"));
        // The `max_candidates` of every policy in examples/policies/.
        if let Err(e) = req.validate(2000) {
            panic!("the example request: {e}");
        }
    }

    #[test]
    fn the_example_is_deterministic() {
        assert_eq!(json(), json());
    }

    /// What the docs and the integration tests rely on.
    #[test]
    fn the_example_has_what_the_tests_rely_on() {
        let text = json();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v.get("route").is_none() && v.get("debug").is_none());
        let ctx = &v["context"];
        assert_eq!(ctx["request_id"], "example-0001");
        assert_eq!(ctx["surface"], "radio");
        assert_eq!(ctx["market"], "SE");
        assert_eq!(ctx["timestamp_ms"], 1_781_524_800_000i64);
        // tests/integration edit the text: the seed (policies.rs) and the
        // context's market, the first `"market": "SE"` (cli.rs, server.rs).
        assert_eq!(text.matches("\"seed\": 1234567").count(), 1);
        let market = text.find("\"market\": \"SE\"").unwrap();
        assert!(market < text.find("\"candidates\"").unwrap());

        let cands = v["candidates"].as_array().unwrap();
        assert_eq!(cands.len(), CANDIDATES);
        let ids: HashSet<&str> = cands.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), CANDIDATES);
        let mut ranks: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, c) in cands.iter().enumerate() {
            for f in [
                "p_skip",
                "p_complete",
                "p_save",
                "popularity",
                "release_age_days",
            ] {
                assert!(c["features"][f].is_number(), "candidates[{i}].{f}");
            }
            assert!(c["features"]["holder_exposure_7d"].is_number());
            match c.get("campaign") {
                Some(camp) => ranks
                    .entry(camp["id"].as_str().unwrap())
                    .or_default()
                    .push(i),
                None => assert_eq!(
                    (
                        c["impressions_24h"].as_u64(),
                        c["session_promoted"].as_u64()
                    ),
                    (Some(0), Some(0))
                ),
            }
        }
        let mut names: Vec<&str> = ranks.keys().copied().collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "cmp-ended",
                "cmp-mixes",
                "cmp-ontrack",
                "cmp-over",
                "cmp-under",
                "cmp-us-only"
            ]
        );
        for (id, at) in &ranks {
            assert_eq!(at.len(), TRACKS_PER_CAMPAIGN, "{id}");
            assert!(at.iter().any(|&i| i < HEAD), "{id} has a head track");
        }
        // A frequency-capped campaign track (policies.rs, freq-cap-diversity).
        let capped = ranks[CAPPED].iter().find(|&&i| i < HEAD).unwrap();
        assert_eq!(cands[*capped]["impressions_24h"], CAPPED_IMPRESSIONS);
    }

    #[test]
    fn the_campaigns_have_the_documented_states() {
        let now = DEFAULT_NOW_MS;
        let by_id: HashMap<String, Campaign> =
            campaigns().into_iter().map(|c| (c.id.clone(), c)).collect();
        let active = |id: &str| by_id[id].is_active(now);
        assert!(
            [
                "cmp-under",
                "cmp-over",
                "cmp-ontrack",
                "cmp-us-only",
                "cmp-mixes"
            ]
            .iter()
            .all(|id| active(id))
        );
        assert!(!active("cmp-ended"));
        assert!(by_id["cmp-under"].delivered < by_id["cmp-under"].expected_by_now);
        assert!(by_id["cmp-over"].delivered > by_id["cmp-over"].expected_by_now);
        assert_eq!(
            by_id["cmp-ontrack"].delivered,
            by_id["cmp-ontrack"].expected_by_now
        );
        assert!(!by_id["cmp-us-only"].markets.contains(&"SE"));
        assert!(by_id["cmp-over"].markets.contains(&"SE"));
        let mixes = by_id["cmp-mixes"].surfaces.as_ref().unwrap();
        assert!(!mixes.contains(&Surface::Radio));
        assert_eq!(by_id["cmp-under"].pacing_last_error, 0.12);
        assert_eq!(by_id["cmp-over"].pacing_last_error, -0.195);
    }
}
