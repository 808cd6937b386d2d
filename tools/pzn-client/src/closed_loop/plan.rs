//! What the closed loop sends: a listener population with sessions over a
//! simulated window, a handful of campaigns running exactly over that
//! window, and scoring requests that carry **no delivery state** (no
//! `delivered`, `expected_by_now`, pacing fields, `impressions_24h`,
//! `session_promoted`, `rights_holders` or `holder_exposure_7d`), so that
//! the server's own state drives the policies.
//!
//! The schedule (who asks when) does not depend on the server's answers,
//! and request `k`'s candidates are drawn from a generator seeded by the
//! run's seed and `k`: the same run sends the same requests, and any
//! request can be rebuilt alone (the calibration pass scores a sample).

use std::sync::Arc;

use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution, Geometric, Poisson};
use serde::Serialize;

use oasis_contract::Surface;

use crate::catalog::{Catalog, MARKETS, market_sampler};
use crate::traffic::{Candidate, Context, ContextFeatures, RequestGenerator, TrafficConfig};

/// Listening by hour of the (simulated, UTC) day: quiet at night, peaks at
/// commute and evening (the traffic generator's local-hour mix).
const HOURLY: [f64; 24] = [
    2.0, 1.2, 0.8, 0.5, 0.4, 0.6, 1.5, 3.5, 5.0, 4.5, 4.0, 4.2, 4.6, 4.5, 4.4, 4.8, 5.5, 6.5, 6.8,
    6.5, 6.0, 5.2, 4.0, 3.0,
];

/// Simulated time a listener spends on one shown track, for the spacing of
/// a session's slates.
const TRACK_MS: i64 = 3 * 60_000;

/// How to build the population and the campaigns.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// Start of the simulated window (unix ms); the campaigns start here.
    pub start_ms: i64,
    /// Length of the window, ms; the campaigns end with it.
    pub window_ms: i64,
    /// Listeners in the population.
    pub listeners: u32,
    /// Mean sessions per listener per 24 simulated hours (Poisson).
    pub sessions_per_day: f64,
    /// Mean slates (requests) per session (geometric, at least 1).
    pub slates_per_session: f64,
    /// Candidates the caller shows per slate (`context.slate_size`).
    pub slate_size: u32,
    /// Candidates per request.
    pub candidates: usize,
    /// Campaigns.
    pub campaigns: usize,
    /// Tracks per campaign.
    pub tracks_per_campaign: usize,
    /// Prefix of every listener, session, request and campaign id, so that
    /// runs against one store do not share state.
    pub run_tag: String,
    /// The run's seed.
    pub seed: u64,
}

/// One request of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// Simulated time, ms.
    pub at_ms: i64,
    /// Listener index.
    pub listener: u32,
    /// Session number (unique in the run).
    pub session: u32,
    /// Position of the slate in its session, from 1.
    pub position: u32,
}

/// A campaign of the simulation: it runs over the whole window, on every
/// surface but `other` and in every market.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimCampaign {
    /// Campaign id (with the run tag).
    pub id: String,
    /// Its tracks (catalog indices).
    #[serde(skip)]
    pub tracks: Vec<usize>,
    /// The best popularity rank of its tracks (0 = most streamed).
    pub popularity_rank: usize,
    /// Promoted impressions targeted over the window.
    pub target: f64,
    /// Target over what an unpaced policy delivers (set by calibration).
    pub supply_factor: f64,
}

/// The population, the schedule and the campaigns of one run.
pub struct Plan {
    /// The configuration.
    pub config: PlanConfig,
    /// The catalog, campaigns cleared (the plan's own are in `campaigns`).
    pub catalog: Arc<Catalog>,
    /// The campaigns.
    pub campaigns: Vec<SimCampaign>,
    /// Campaign of each catalog track, if any.
    campaign_of: Vec<Option<u32>>,
    /// The requests, in time order.
    pub slots: Vec<Slot>,
    /// Market of each listener.
    markets: Vec<&'static str>,
}

/// A 64-bit mix (SplitMix64 finalizer) for per-request seeds.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The popularity ranks the campaigns' first tracks sit at: log-spaced from
/// the head (rank 4) to rank 2,000, so campaigns span from plentiful to
/// scarce supply.
pub fn campaign_ranks(n: usize, tracks: usize) -> Vec<usize> {
    let (lo, hi) = (4f64, 2_000f64.min(tracks.saturating_sub(1) as f64).max(5.0));
    (0..n)
        .map(|j| {
            let x = if n == 1 {
                0.0
            } else {
                j as f64 / (n - 1) as f64
            };
            ((lo.ln() + x * (hi.ln() - lo.ln())).exp().round() as usize).min(tracks - 1)
        })
        .collect()
}

impl Plan {
    /// Builds the plan over `catalog` (whose own campaigns are dropped).
    ///
    /// # Panics
    /// On an empty window, no listeners, or a catalog too small for the
    /// campaigns' tracks.
    pub fn new(config: PlanConfig, mut catalog: Catalog) -> Plan {
        assert!(config.window_ms > 0 && config.listeners > 0);
        let n_tracks = catalog.tracks.len();
        catalog.campaigns.clear();
        for t in &mut catalog.tracks {
            t.campaign = None;
        }
        let mut campaign_of = vec![None; n_tracks];
        let mut campaigns = Vec::with_capacity(config.campaigns);
        for (j, rank) in campaign_ranks(config.campaigns, n_tracks)
            .into_iter()
            .enumerate()
        {
            let tracks: Vec<usize> = (rank..n_tracks)
                .filter(|&t| campaign_of[t].is_none())
                .take(config.tracks_per_campaign.max(1))
                .collect();
            assert!(!tracks.is_empty(), "catalog too small for the campaigns");
            for &t in &tracks {
                campaign_of[t] = Some(j as u32);
            }
            campaigns.push(SimCampaign {
                id: format!("{}-cmp-{j:02}", config.run_tag),
                popularity_rank: tracks[0],
                tracks,
                target: 0.0,
                supply_factor: 1.0,
            });
        }

        let mut rng = StdRng::seed_from_u64(mix(config.seed ^ 0x00c1_05ed_100b));
        let market = market_sampler();
        let markets = (0..config.listeners)
            .map(|_| MARKETS[market.sample(&mut rng)].0)
            .collect();
        let slots = schedule(&config, &mut rng);
        Plan {
            config,
            catalog: Arc::new(catalog),
            campaigns,
            campaign_of,
            slots,
            markets,
        }
    }

    /// The campaign of catalog track `t`.
    pub fn campaign_of(&self, t: usize) -> Option<usize> {
        self.campaign_of[t].map(|c| c as usize)
    }

    /// End of the window.
    pub fn end_ms(&self) -> i64 {
        self.config.start_ms + self.config.window_ms
    }

    /// The listener id of listener `l`.
    pub fn listener_id(&self, l: u32) -> String {
        format!("{}-u{l:06}", self.config.run_tag)
    }

    /// Request `k` of the schedule on `route`, and the catalog index of
    /// each of its candidates.
    pub fn request(&self, k: usize, route: &str) -> (SimRequest, Vec<usize>) {
        let slot = &self.slots[k];
        let cfg = &self.config;
        let mut rng = StdRng::seed_from_u64(mix(cfg.seed ^ mix(k as u64)));
        let skip: f64 = Beta::new(2.0, 6.0).unwrap().sample(&mut rng);
        let session_skip_rate = (skip * 1e4).round() / 1e4;
        let surface = match route {
            "radio" | "pid-pacing" => Surface::Radio,
            "autoplay" | "guarded-boost" => Surface::Autoplay,
            _ => crate::catalog::MIXES[rng.random_range(0..crate::catalog::MIXES.len())],
        };
        let context = Context {
            request_id: format!("{}-r{k:07}", cfg.run_tag),
            listener_id: self.listener_id(slot.listener),
            session_id: format!("{}-s{:07}", cfg.run_tag, slot.session),
            surface,
            market: self.markets[slot.listener as usize],
            timestamp_ms: slot.at_ms,
            seed: rng.random(),
            features: ContextFeatures {
                local_hour: hour_of_day(slot.at_ms),
                session_position: slot.position,
                session_skip_rate,
            },
        };
        let traffic = TrafficConfig {
            candidates: cfg.candidates,
            routes: vec![route.to_string()],
            ..TrafficConfig::default()
        };
        let mut generator = RequestGenerator::new(Arc::clone(&self.catalog), traffic, rng.random());
        let (candidates, tracks) = generator.slate_tracks(&context);
        let candidates = candidates
            .into_iter()
            .zip(&tracks)
            .map(|(c, &t)| self.wire_candidate(c, t))
            .collect();
        let request = SimRequest {
            route: route.to_string(),
            context: SimContext {
                inner: context,
                slate_size: cfg.slate_size,
            },
            candidates,
        };
        (request, tracks)
    }

    fn wire_candidate(&self, c: Candidate, track: usize) -> SimCandidate {
        let campaign = self.campaign_of(track).map(|j| {
            let k = &self.campaigns[j];
            SimCampaignRef {
                id: k.id.clone(),
                start_ms: self.config.start_ms,
                end_ms: self.end_ms(),
                delivery_target: k.target,
            }
        });
        SimCandidate {
            id: c.id,
            relevance: c.relevance,
            artist: c.artist,
            rights_holder: c.rights_holder,
            campaign,
            features: SimFeatures {
                p_skip: c.features.p_skip,
                p_complete: c.features.p_complete,
                p_save: c.features.p_save,
                popularity: c.features.popularity,
                release_age_days: c.features.release_age_days,
            },
        }
    }
}

/// The UTC hour of day of `at_ms`.
fn hour_of_day(at_ms: i64) -> u32 {
    (at_ms.rem_euclid(86_400_000) / 3_600_000) as u32
}

/// Sessions of every listener over the window, their slates spaced by the
/// time the listener spends on a shown slate, sorted by time (ties by
/// listener, then session). A session starts at an hour drawn by the
/// listening curve; slates past the window's end are dropped.
fn schedule(cfg: &PlanConfig, rng: &mut StdRng) -> Vec<Slot> {
    let hours = ((cfg.window_ms + 3_599_999) / 3_600_000).max(1) as usize;
    let weights: Vec<f64> = (0..hours)
        .map(|h| HOURLY[hour_of_day(cfg.start_ms + h as i64 * 3_600_000) as usize])
        .collect();
    let hour = WeightedIndex::new(&weights).expect("positive weights");
    let mean_sessions = cfg.sessions_per_day * cfg.window_ms as f64 / 86_400_000.0;
    let sessions = Poisson::new(mean_sessions.max(1e-9)).expect("positive mean");
    let slates = Geometric::new(1.0 / cfg.slates_per_session.max(1.0)).expect("p in (0, 1]");
    let slate_ms = TRACK_MS * i64::from(cfg.slate_size.max(1));
    let end = cfg.start_ms + cfg.window_ms;
    let mut slots = Vec::new();
    let mut session = 0u32;
    for listener in 0..cfg.listeners {
        let n = sessions.sample(rng) as u32;
        for _ in 0..n {
            let h = hour.sample(rng) as i64;
            let mut at = cfg.start_ms + h * 3_600_000 + rng.random_range(0..3_600_000);
            let count = 1 + slates.sample(rng).min(200) as u32;
            for position in 1..=count {
                if at >= end {
                    break;
                }
                slots.push(Slot {
                    at_ms: at,
                    listener,
                    session,
                    position,
                });
                at += (slate_ms as f64 * rng.random_range(0.5..1.5)) as i64;
            }
            session += 1;
        }
    }
    slots.sort_by_key(|s| (s.at_ms, s.listener, s.session));
    slots
}

/// A scoring request of the closed loop, as JSON: no delivery state.
#[derive(Debug, Clone, Serialize)]
pub struct SimRequest {
    /// The route.
    pub route: String,
    /// The context, with `slate_size`.
    pub context: SimContext,
    /// The candidates, in recommender order.
    pub candidates: Vec<SimCandidate>,
}

/// The traffic generator's context plus `slate_size`.
#[derive(Debug, Clone, Serialize)]
pub struct SimContext {
    /// Ids, surface, market, time, seed and features.
    #[serde(flatten)]
    pub inner: Context,
    /// How many top-ranked candidates the caller shows.
    pub slate_size: u32,
}

/// A candidate without frequency counts (the server fills them).
#[derive(Debug, Clone, Serialize)]
pub struct SimCandidate {
    /// Track id.
    pub id: String,
    /// Base relevance.
    pub relevance: f64,
    /// Primary artist.
    pub artist: String,
    /// Rights holder.
    pub rights_holder: String,
    /// The campaign, without its delivery or pacing state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<SimCampaignRef>,
    /// Features, without the holder's exposure (the server keeps it).
    pub features: SimFeatures,
}

/// A campaign as the closed loop sends it: its window and target only
/// (every surface but `other`, every market).
#[derive(Debug, Clone, Serialize)]
pub struct SimCampaignRef {
    /// Campaign id.
    pub id: String,
    /// Start of the window.
    pub start_ms: i64,
    /// End of the window.
    pub end_ms: i64,
    /// Promoted impressions targeted over the window.
    pub delivery_target: f64,
}

/// Candidate features of the closed loop.
#[derive(Debug, Clone, Serialize)]
pub struct SimFeatures {
    /// Predicted skip probability.
    pub p_skip: Option<f64>,
    /// Predicted completion probability.
    pub p_complete: Option<f64>,
    /// Predicted save probability.
    pub p_save: Option<f64>,
    /// Global popularity.
    pub popularity: Option<f64>,
    /// Days since release.
    pub release_age_days: Option<f64>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::catalog::{CatalogConfig, DEFAULT_NOW_MS};
    use std::collections::HashSet;

    pub(crate) fn small_plan(listeners: u32) -> Plan {
        let catalog = Catalog::generate(
            CatalogConfig {
                tracks: 5_000,
                ..CatalogConfig::default()
            },
            9,
        );
        Plan::new(
            PlanConfig {
                start_ms: DEFAULT_NOW_MS,
                window_ms: 86_400_000,
                listeners,
                sessions_per_day: 3.0,
                slates_per_session: 4.0,
                slate_size: 10,
                candidates: 100,
                campaigns: 6,
                tracks_per_campaign: 2,
                run_tag: "t1".into(),
                seed: 5,
            },
            catalog,
        )
    }

    #[test]
    fn the_schedule_spans_the_window_in_time_order_and_listeners_return() {
        let plan = small_plan(200);
        let s = &plan.slots;
        // About 200 x 3 sessions x 4 slates.
        assert!((1_500..3_500).contains(&s.len()), "{}", s.len());
        assert!(s.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert!(
            s.iter()
                .all(|x| x.at_ms >= plan.config.start_ms && x.at_ms < plan.end_ms())
        );
        // Listeners come back in several sessions of several slates.
        let mut sessions_of = std::collections::HashMap::<u32, HashSet<u32>>::new();
        for x in s {
            sessions_of.entry(x.listener).or_default().insert(x.session);
        }
        let returning = sessions_of.values().filter(|v| v.len() >= 2).count();
        assert!(returning > 100, "{returning} of 200 listeners return");
        assert!(s.iter().any(|x| x.position >= 3));
        // A session's slates are in order, one per position.
        let first = s[0].session;
        let positions: Vec<u32> = s
            .iter()
            .filter(|x| x.session == first)
            .map(|x| x.position)
            .collect();
        assert_eq!(positions, (1..=positions.len() as u32).collect::<Vec<_>>());
        // Evening is busier than the small hours (UTC hour of the sim day).
        let in_hour = |h: u32| s.iter().filter(|x| hour_of_day(x.at_ms) == h).count();
        assert!(
            in_hour(18) > 3 * in_hour(4),
            "{} vs {}",
            in_hour(18),
            in_hour(4)
        );
    }

    #[test]
    fn campaigns_span_popularity_and_own_distinct_tracks() {
        let plan = small_plan(10);
        assert_eq!(plan.campaigns.len(), 6);
        let ranks: Vec<usize> = plan.campaigns.iter().map(|c| c.popularity_rank).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        assert_eq!(ranks[0], 4);
        let mut all = HashSet::new();
        for (j, c) in plan.campaigns.iter().enumerate() {
            assert_eq!(c.tracks.len(), 2);
            for &t in &c.tracks {
                assert!(all.insert(t), "track {t} in two campaigns");
                assert_eq!(plan.campaign_of(t), Some(j));
            }
            assert!(c.id.starts_with("t1-cmp-"));
        }
        assert!(plan.catalog.campaigns.is_empty());
    }

    /// The point of the mode: what goes on the wire carries no delivery
    /// state, passes the host's parser and validator, and is the same when
    /// rebuilt.
    #[test]
    fn requests_carry_no_delivery_state_and_are_valid() {
        let mut plan = small_plan(50);
        for c in &mut plan.campaigns {
            c.target = 100.0;
        }
        let mut saw_campaign = false;
        for k in (0..plan.slots.len()).step_by(7).take(40) {
            let (req, tracks) = plan.request(k, "radio");
            assert_eq!(req.candidates.len(), 100);
            assert_eq!(tracks.len(), 100);
            let body = serde_json::to_vec(&req).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v.get("rights_holders").is_none());
            assert_eq!(v["context"]["slate_size"], 10);
            assert_eq!(v["context"]["timestamp_ms"], plan.slots[k].at_ms);
            for (c, &t) in v["candidates"].as_array().unwrap().iter().zip(&tracks) {
                assert_eq!(c["id"], plan.catalog.tracks[t].id.as_str());
                for field in ["impressions_24h", "session_promoted"] {
                    assert!(c.get(field).is_none(), "{field} sent");
                }
                assert!(c["features"].get("holder_exposure_7d").is_none());
                if let Some(camp) = c.get("campaign") {
                    saw_campaign = true;
                    let keys: HashSet<&str> = camp
                        .as_object()
                        .unwrap()
                        .keys()
                        .map(|k| k.as_str())
                        .collect();
                    let want: HashSet<&str> = ["id", "start_ms", "end_ms", "delivery_target"]
                        .into_iter()
                        .collect();
                    assert_eq!(keys, want);
                    assert!(plan.campaign_of(t).is_some());
                }
            }
            use oasis::request::Validate;
            let parsed = oasis::request::parse(&body).unwrap_or_else(|e| panic!("{k}: {e}"));
            parsed
                .validate(2000)
                .unwrap_or_else(|e| panic!("request {k}: {e}"));
            let (again, _) = plan.request(k, "radio");
            assert_eq!(serde_json::to_vec(&again).unwrap(), body, "rebuilt alike");
        }
        assert!(saw_campaign);
    }
}
