//! Scoring requests as the personalization (PZN) recommender would send them.
//!
//! A request is one listener's session at one moment: a context (surface,
//! market, local hour, session position and skip rate) and a slate of
//! candidates drawn from the [`Catalog`] by popularity, without duplicates,
//! ranked by the recommender. Relevance decreases with that rank, with
//! noise; the per-listener predictions (p_skip, p_complete, p_save) follow
//! relevance, the track's appeal and the session's skip rate.

use std::collections::HashSet;
use std::sync::Arc;

use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution, Geometric, Normal};
use serde::Serialize;

use oasis_contract::Surface;

use crate::catalog::{Campaign, Catalog, MARKETS, MIXES, market_sampler, serialize_surface};
use crate::outcomes::CampaignTrack;

/// The routes of the example deployment (`examples/policies/routes.toml`).
pub const DEFAULT_ROUTES: [&str; 5] = ["radio", "autoplay", "mixes", "fairness", "explore"];

/// Route name meaning "send no `route` field" (the server's default route).
pub const NO_ROUTE: &str = "-";

/// How to generate requests.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// Candidates per request (at most the catalog size).
    pub candidates: usize,
    /// Routes, used in rotation; [`NO_ROUTE`] sends no `route` field.
    pub routes: Vec<String>,
    /// Size of the listener population.
    pub listeners: u64,
    /// Probability that a candidate has one of its features missing (`null`).
    pub missing_feature_rate: f64,
    /// Ask the server for the policy's debug values.
    pub debug: bool,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            candidates: 300,
            routes: DEFAULT_ROUTES.iter().map(|r| r.to_string()).collect(),
            listeners: 1_000_000,
            missing_feature_rate: 0.0,
            debug: false,
        }
    }
}

/// A scoring request, serialized as the server's JSON schema.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreRequest {
    /// Route to score on; the server's default route when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The listening context.
    pub context: Context,
    /// The candidate tracks, in recommender rank order.
    pub candidates: Vec<Candidate>,
    /// Ask for the policy's debug values.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub debug: bool,
}

/// The listening context.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    /// Request id, unique within a run.
    pub request_id: String,
    /// Listener id.
    pub listener_id: String,
    /// Session id.
    pub session_id: String,
    /// Surface of the session.
    #[serde(serialize_with = "serialize_surface")]
    pub surface: Surface,
    /// ISO 3166-1 alpha-2 market.
    pub market: &'static str,
    /// Unix time of the request, ms.
    pub timestamp_ms: i64,
    /// Seed for the policy's randomness.
    pub seed: u64,
    /// Context features.
    pub features: ContextFeatures,
}

/// Numeric context features.
#[derive(Debug, Clone, Serialize)]
pub struct ContextFeatures {
    /// Listener's local hour, 0-23.
    pub local_hour: u32,
    /// Position of this slate in the session, from 1.
    pub session_position: u32,
    /// Fraction of tracks skipped so far in the session.
    pub session_skip_rate: f64,
}

/// One candidate track.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// Track id.
    pub id: String,
    /// Base relevance from the recommender.
    pub relevance: f64,
    /// Primary artist id.
    pub artist: String,
    /// Rights holder id.
    pub rights_holder: String,
    /// Promoted impressions of this track to this listener in 24 hours.
    pub impressions_24h: u32,
    /// Promoted plays of this track in this session.
    pub session_promoted: u32,
    /// The track's campaign, if promoted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<Campaign>,
    /// Numeric features.
    pub features: CandidateFeatures,
}

/// Numeric candidate features; `None` serializes as `null` (missing).
#[derive(Debug, Clone, Serialize)]
pub struct CandidateFeatures {
    /// Predicted probability that the listener skips it.
    pub p_skip: Option<f64>,
    /// Predicted probability that the listener plays it to the end.
    pub p_complete: Option<f64>,
    /// Predicted probability that the listener saves it.
    pub p_save: Option<f64>,
    /// Global popularity, 0-1.
    pub popularity: Option<f64>,
    /// Days since release.
    pub release_age_days: Option<f64>,
    /// The rights holder's share of attention over 7 days.
    pub holder_exposure_7d: Option<f64>,
}

/// Session surfaces and their share of algorithmic listening.
/// Sized by the contract's surface list, so a new surface must get a share.
const SURFACE_MIX: [(Surface, f64); Surface::ALL.len()] = [
    (Surface::Radio, 0.30),
    (Surface::Autoplay, 0.25),
    (Surface::DailyMix, 0.20),
    (Surface::ArtistMix, 0.08),
    (Surface::MoodMix, 0.07),
    (Surface::DecadeMix, 0.04),
    (Surface::GenreMix, 0.04),
    (Surface::Other, 0.02),
];

/// Listening by local hour: quiet at night, peaks at commute and evening.
const HOURLY: [f64; 24] = [
    2.0, 1.2, 0.8, 0.5, 0.4, 0.6, 1.5, 3.5, 5.0, 4.5, 4.0, 4.2, 4.6, 4.5, 4.4, 4.8, 5.5, 6.5, 6.8,
    6.5, 6.0, 5.2, 4.0, 3.0,
];

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Frequency counters of a promoted track: promoted impressions to this
/// listener in 24 hours (mostly none, a few over any sensible cap) and
/// promoted plays in this session (likelier deep into a session).
pub fn promotion_counters(rng: &mut StdRng, session_position: u32) -> (u32, u32) {
    let impressions = match rng.random_range(0..100) {
        0..60 => 0,
        60..80 => 1,
        80..90 => 2,
        90..96 => 3,
        _ => rng.random_range(4..8),
    };
    let p = (session_position as f64 / 100.0).min(0.3);
    (
        impressions,
        rng.random_bool(p) as u32 + rng.random_bool(p * p) as u32,
    )
}

/// Generates requests from a catalog; deterministic given the seed.
pub struct RequestGenerator {
    catalog: Arc<Catalog>,
    config: TrafficConfig,
    rng: StdRng,
    run_tag: u32,
    next_index: u64,
    markets: WeightedIndex<f64>,
    surfaces: WeightedIndex<f64>,
    hours: WeightedIndex<f64>,
}

impl RequestGenerator {
    /// A generator over `catalog`; the same seed gives the same requests.
    ///
    /// # Panics
    /// If `config.routes` is empty.
    pub fn new(catalog: Arc<Catalog>, config: TrafficConfig, seed: u64) -> Self {
        assert!(!config.routes.is_empty(), "at least one route");
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_7aff_1c00_0000);
        RequestGenerator {
            run_tag: rng.random(),
            catalog,
            config,
            rng,
            next_index: 0,
            markets: market_sampler(),
            surfaces: WeightedIndex::new(SURFACE_MIX.iter().map(|(_, w)| *w)).unwrap(),
            hours: WeightedIndex::new(HOURLY).unwrap(),
        }
    }

    /// The surface of a session on `route`: the route's own surface when it
    /// is named after one, else the general mix.
    fn surface_for(&mut self, route: &str) -> Surface {
        match route {
            "radio" => Surface::Radio,
            "autoplay" => Surface::Autoplay,
            "mixes" => MIXES[self.rng.random_range(0..MIXES.len())],
            _ => SURFACE_MIX[self.surfaces.sample(&mut self.rng)].0,
        }
    }

    /// The next request.
    pub fn next_request(&mut self) -> ScoreRequest {
        let index = self.next_index;
        self.next_index += 1;
        let routes = &self.config.routes;
        let route = routes[(index % routes.len() as u64) as usize].clone();
        let surface = self.surface_for(&route);
        let rng = &mut self.rng;
        let now_ms = self.catalog.config.now_ms;

        let session_skip_rate = round4(Beta::new(2.0, 6.0).unwrap().sample(rng));
        let session_position = 1 + Geometric::new(0.08).unwrap().sample(rng).min(199) as u32;
        let context = Context {
            request_id: format!("pzn-{:08x}-{index:07}", self.run_tag),
            listener_id: format!(
                "listener-{:08x}",
                rng.random_range(0..self.config.listeners)
            ),
            session_id: format!("session-{:016x}", rng.random::<u64>()),
            surface,
            market: MARKETS[self.markets.sample(rng)].0,
            timestamp_ms: now_ms + index as i64 * 50,
            seed: rng.random(),
            features: ContextFeatures {
                local_hour: self.hours.sample(rng) as u32,
                session_position,
                session_skip_rate,
            },
        };
        let candidates = self.slate(&context);
        ScoreRequest {
            route: (route != NO_ROUTE).then_some(route),
            context,
            candidates,
            debug: self.config.debug,
        }
    }

    /// The candidates of a request in `context`: distinct tracks drawn by
    /// popularity, ranked, with predictions that follow the session's skip
    /// rate and frequency counters that follow its position.
    pub fn slate(&mut self, context: &Context) -> Vec<Candidate> {
        self.slate_tracks(context).0
    }

    /// [`Self::slate`], with the catalog index of each candidate.
    pub fn slate_tracks(&mut self, context: &Context) -> (Vec<Candidate>, Vec<usize>) {
        let rng = &mut self.rng;
        let catalog = &*self.catalog;
        let ContextFeatures {
            session_position,
            session_skip_rate,
            ..
        } = context.features;

        // The slate: distinct tracks drawn by popularity.
        let k = self.config.candidates.min(catalog.tracks.len());
        let mut seen = HashSet::with_capacity(k);
        let mut picked = Vec::with_capacity(k);
        let mut attempts = 0usize;
        while picked.len() < k && attempts < 50 * k + 1000 {
            attempts += 1;
            let t = catalog.sample_track(rng);
            if seen.insert(t) {
                picked.push(t);
            }
        }
        // A slate that is a large part of the catalog: fill up in rank order.
        let mut t = 0;
        while picked.len() < k {
            if seen.insert(t) {
                picked.push(t);
            }
            t += 1;
        }

        // The recommender's ranking: popularity plus this listener's taste.
        let taste = Normal::new(0.0, 0.25).unwrap();
        let mut ranked: Vec<(f64, usize)> = picked
            .into_iter()
            .map(|t| (0.35 * catalog.tracks[t].popularity + taste.sample(rng), t))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));

        let base_skip = Beta::new(2.0, 5.0).unwrap();
        let save = Beta::new(1.0, 12.0).unwrap();
        let tracks = ranked.iter().map(|&(_, t)| t).collect();
        let candidates = ranked
            .into_iter()
            .enumerate()
            .map(|(i, (_, t))| {
                let track = &catalog.tracks[t];
                let rank = (i + 1) as f64;
                let relevance = round4(0.95 * rank.powf(-0.35) + rng.random_range(-0.03..0.03));
                let p_skip = (base_skip.sample(rng)
                    + (0.25 - relevance) * 0.3
                    + (session_skip_rate - 0.25) * 0.4
                    - track.appeal * 0.1)
                    .clamp(0.02, 0.95);
                let p_complete = (1.0 - p_skip - rng.random_range(0.0..0.15)).max(0.0);
                let p_save = save.sample(rng) * (0.5 + relevance);
                let campaign = catalog.campaign_of(t).cloned();
                let (impressions_24h, session_promoted) = if campaign.is_some() {
                    promotion_counters(rng, session_position)
                } else {
                    (0, 0)
                };
                let mut features = CandidateFeatures {
                    p_skip: Some(round4(p_skip)),
                    p_complete: Some(round4(p_complete)),
                    p_save: Some(round4(p_save)),
                    popularity: Some(track.popularity),
                    release_age_days: Some(track.release_age_days as f64),
                    holder_exposure_7d: Some(
                        catalog.holder_exposure_7d[track.rights_holder as usize],
                    ),
                };
                if self.config.missing_feature_rate > 0.0
                    && rng.random_bool(self.config.missing_feature_rate)
                {
                    match rng.random_range(0..3) {
                        0 => features.p_skip = None,
                        1 => features.p_save = None,
                        _ => features.holder_exposure_7d = None,
                    }
                }
                Candidate {
                    id: track.id.clone(),
                    relevance,
                    artist: format!("artist-{}", track.artist),
                    rights_holder: format!("label-{}", track.rights_holder),
                    impressions_24h,
                    session_promoted,
                    campaign,
                    features,
                }
            })
            .collect();
        (candidates, tracks)
    }

    /// The next request as a JSON body.
    #[cfg(test)]
    pub fn next_body(&mut self) -> Vec<u8> {
        serde_json::to_vec(&self.next_request()).expect("requests serialize")
    }
}

/// A pre-generated request body and what it carries.
#[derive(Debug, Clone)]
pub struct PoolEntry {
    /// JSON body.
    pub body: bytes::Bytes,
    /// Its `context.request_id`.
    pub request_id: String,
    /// Its campaign tracks, for simulated outcomes.
    pub campaign_tracks: Arc<[CampaignTrack]>,
    /// Number of candidates.
    pub candidates: usize,
    /// Candidates in a campaign.
    pub campaign_candidates: usize,
    /// The same request as a gRPC message (`--grpc` only).
    pub grpc: Option<oasis_proto::v1::ScoreRequest>,
}

/// Generates `n` request bodies up front, so that generation does not count
/// in the measurement.
pub fn pool(generator: &mut RequestGenerator, n: usize) -> Vec<PoolEntry> {
    (0..n)
        .map(|_| {
            let req = generator.next_request();
            PoolEntry {
                request_id: req.context.request_id.clone(),
                campaign_tracks: req
                    .candidates
                    .iter()
                    .filter(|c| c.campaign.is_some())
                    .map(|c| CampaignTrack {
                        id: c.id.clone(),
                        relevance: c.relevance,
                        p_skip: c.features.p_skip,
                    })
                    .collect(),
                candidates: req.candidates.len(),
                campaign_candidates: req
                    .candidates
                    .iter()
                    .filter(|c| c.campaign.is_some())
                    .count(),
                body: serde_json::to_vec(&req).expect("requests serialize").into(),
                grpc: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogConfig;
    use serde_json::Value;

    fn generator(seed: u64, config: TrafficConfig) -> RequestGenerator {
        let catalog = Catalog::generate(
            CatalogConfig {
                tracks: 20_000,
                ..CatalogConfig::default()
            },
            seed,
        );
        RequestGenerator::new(Arc::new(catalog), config, seed)
    }

    #[test]
    fn no_duplicate_candidates() {
        let mut g = generator(1, TrafficConfig::default());
        for _ in 0..20 {
            let req = g.next_request();
            assert_eq!(req.candidates.len(), 300);
            let ids: HashSet<&str> = req.candidates.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids.len(), req.candidates.len());
        }
        // A slate as large as the catalog still has no duplicates.
        let catalog = Catalog::generate(
            CatalogConfig {
                tracks: 500,
                ..CatalogConfig::default()
            },
            3,
        );
        let config = TrafficConfig {
            candidates: 1000,
            ..TrafficConfig::default()
        };
        let req = RequestGenerator::new(Arc::new(catalog), config, 3).next_request();
        let ids: HashSet<&str> = req.candidates.iter().map(|c| c.id.as_str()).collect();
        assert_eq!((ids.len(), req.candidates.len()), (500, 500));
    }

    #[test]
    fn campaign_share_of_candidates_is_roughly_as_configured() {
        let mut g = generator(2, TrafficConfig::default());
        let entries = pool(&mut g, 200);
        let total: usize = entries.iter().map(|e| e.candidates).sum();
        let promoted: usize = entries.iter().map(|e| e.campaign_candidates).sum();
        let share = promoted as f64 / total as f64;
        // Popular tracks recur across slates, so the share varies more than
        // binomially; 3% configured.
        assert!((0.01..0.06).contains(&share), "campaign share {share}");
    }

    /// The default per-policy candidate limit (`max_candidates` of a manifest).
    const MAX_CANDIDATES: usize = 2000;

    /// Every body of the pool, for a few seeds and configurations, passes
    /// the host's own parser and validator: what the server answers 400 or
    /// 422 to is decided by the host's code, not restated here.
    #[test]
    fn generated_bodies_pass_the_hosts_parser_and_validator() {
        let configs = [
            TrafficConfig::default(),
            TrafficConfig {
                routes: vec![NO_ROUTE.to_string(), "radio".to_string()],
                missing_feature_rate: 0.5,
                debug: true,
                ..TrafficConfig::default()
            },
            TrafficConfig {
                candidates: 1000,
                ..TrafficConfig::default()
            },
        ];
        for seed in [3, 4, 5] {
            for (k, config) in configs.iter().enumerate() {
                let n = if config.candidates > 300 { 16 } else { 256 };
                let mut g = generator(seed, config.clone());
                for (i, entry) in pool(&mut g, n).iter().enumerate() {
                    let what = || format!("seed {seed}, config {k}, body {i}");
                    use oasis::request::Validate;
                    let req = oasis::request::parse(&entry.body)
                        .unwrap_or_else(|e| panic!("{}: {e}", what()));
                    if let Err(e) = req.validate(MAX_CANDIDATES) {
                        panic!("{}: {e}", what());
                    }
                }
            }
        }
    }

    /// What the traffic looks like beyond validity: every route in
    /// rotation, full slates ranked by relevance, no missing features
    /// unless asked for, some campaign tracks.
    #[test]
    fn requests_look_like_pzn_traffic() {
        let mut g = generator(3, TrafficConfig::default());
        let mut routes = HashSet::new();
        let mut saw_campaign = false;
        for _ in 0..10 {
            let req = g.next_request();
            routes.insert(req.route.clone().unwrap());
            assert!(!req.debug);
            assert_eq!(req.candidates.len(), 300);
            for c in &req.candidates {
                let f = &c.features;
                for (name, x) in [
                    ("p_skip", f.p_skip),
                    ("p_complete", f.p_complete),
                    ("p_save", f.p_save),
                    ("popularity", f.popularity),
                    ("release_age_days", f.release_age_days),
                    ("holder_exposure_7d", f.holder_exposure_7d),
                ] {
                    let x = x.unwrap_or_else(|| panic!("{name} missing"));
                    assert!(x.is_finite() && x >= 0.0, "{name} = {x}");
                }
                saw_campaign |= c.campaign.is_some();
            }
            // Relevance decreases with rank (up to the noise).
            let (first, last) = (&req.candidates[0], &req.candidates[299]);
            assert!(
                first.relevance > last.relevance + 0.3,
                "{} vs {}",
                first.relevance,
                last.relevance
            );
        }
        assert!(saw_campaign);
        let expected: HashSet<String> = DEFAULT_ROUTES.iter().map(|r| r.to_string()).collect();
        assert_eq!(routes, expected);
    }

    #[test]
    fn the_surface_mix_covers_every_contract_surface_once() {
        let mix: Vec<Surface> = SURFACE_MIX.iter().map(|(s, _)| *s).collect();
        assert_eq!(mix, Surface::ALL);
        let total: f64 = SURFACE_MIX.iter().map(|(_, w)| w).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn same_seed_same_requests() {
        let a: Vec<Vec<u8>> = {
            let mut g = generator(42, TrafficConfig::default());
            (0..5).map(|_| g.next_body()).collect()
        };
        let b: Vec<Vec<u8>> = {
            let mut g = generator(42, TrafficConfig::default());
            (0..5).map(|_| g.next_body()).collect()
        };
        assert_eq!(a, b);
        let mut g = generator(43, TrafficConfig::default());
        assert_ne!(a[0], g.next_body());
    }

    #[test]
    fn missing_features_and_default_route() {
        let config = TrafficConfig {
            routes: vec![NO_ROUTE.to_string()],
            missing_feature_rate: 0.5,
            ..TrafficConfig::default()
        };
        let mut g = generator(5, config);
        let v: Value = serde_json::from_slice(&g.next_body()).unwrap();
        assert!(v.get("route").is_none());
        let nulls = v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["features"]
                    .as_object()
                    .unwrap()
                    .values()
                    .any(Value::is_null)
            })
            .count();
        assert!((100..200).contains(&nulls), "{nulls}");
    }
}
