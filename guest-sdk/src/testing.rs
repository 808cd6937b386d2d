//! A native test harness: build requests in a few lines and run a policy the
//! way the host would (settings parsed and validated, output checked), with
//! plain `cargo test` and no WebAssembly.
//!
//! ```
//! use oasis_sdk::testing::{CampaignSpec, CandidateSpec, RequestBuilder};
//! use oasis_sdk::Surface;
//!
//! let req = RequestBuilder::new()
//!     .surface(Surface::Autoplay)
//!     .market("SE")
//!     .features(&["p_skip"])
//!     .campaign(CampaignSpec::new(7).markets(&["SE", "NO"]))
//!     .candidate(CandidateSpec::new(0.9).feature("p_skip", 0.2).campaign(0))
//!     .candidate(CandidateSpec::new(0.4))
//!     .build();
//! assert_eq!(req.len(), 2);
//! let p_skip = req.feature("p_skip").unwrap();
//! assert_eq!(req.candidate(0).get(p_skip), Some(0.2));
//! assert_eq!(req.candidate(1).get(p_skip), None); // missing -> NaN -> None
//! assert!(req.candidate(0).campaign().unwrap().allows_market(req.context.market));
//! ```

use crate::{
    Campaign, Candidates, Context, Decisions, Policy, Request, Surface, SurfaceSet, market_code,
};

/// Default request time used by the builders: 2026-06-15T12:00:00Z.
pub const NOW_MS: i64 = 1_781_524_800_000;
const DAY_MS: i64 = 86_400_000;

/// Builds a [`Campaign`] active around [`NOW_MS`] on every surface and market.
#[derive(Debug, Clone)]
pub struct CampaignSpec(Campaign);

impl CampaignSpec {
    /// Campaign `key`, active from 10 days before to 20 days after [`NOW_MS`],
    /// target 1000 impressions, on schedule (delivered = expected = 333).
    pub fn new(key: u32) -> Self {
        CampaignSpec(Campaign {
            key,
            start_ms: NOW_MS - 10 * DAY_MS,
            end_ms: NOW_MS + 20 * DAY_MS,
            surfaces: SurfaceSet::all(),
            markets: Vec::new(),
            delivery_target: 1000.0,
            delivered: 333.0,
            expected_by_now: 333.0,
            pacing_integral: 0.0,
            pacing_last_error: 0.0,
            commission_bps: 3000,
        })
    }
    /// Active window `[start_ms, end_ms)`.
    pub fn window(mut self, start_ms: i64, end_ms: i64) -> Self {
        self.0.start_ms = start_ms;
        self.0.end_ms = end_ms;
        self
    }
    /// Allowed surfaces.
    pub fn surfaces(mut self, surfaces: &[Surface]) -> Self {
        self.0.surfaces = surfaces.iter().copied().collect();
        self
    }
    /// Allowed markets as ISO codes. Panics on an invalid code.
    pub fn markets(mut self, markets: &[&str]) -> Self {
        self.0.markets = markets
            .iter()
            .map(|m| market_code(m).expect("ISO market code"))
            .collect();
        self
    }
    /// Delivery state: target, delivered so far, expected by now.
    pub fn delivery(mut self, target: f64, delivered: f64, expected_by_now: f64) -> Self {
        self.0.delivery_target = target;
        self.0.delivered = delivered;
        self.0.expected_by_now = expected_by_now;
        self
    }
    /// Pacing controller state carried from earlier requests.
    pub fn pacing_state(mut self, integral: f64, last_error: f64) -> Self {
        self.0.pacing_integral = integral;
        self.0.pacing_last_error = last_error;
        self
    }
}

/// Builds one candidate.
#[derive(Debug, Clone)]
pub struct CandidateSpec {
    relevance: f64,
    features: Vec<(String, f64)>,
    campaign: i32,
    artist: u32,
    rights_holder: u32,
    impressions_24h: u32,
    session_promoted: u32,
}

impl CandidateSpec {
    /// A candidate with base relevance `relevance`, organic, artist and
    /// rights holder 0, no impressions.
    pub fn new(relevance: f64) -> Self {
        CandidateSpec {
            relevance,
            features: Vec::new(),
            campaign: -1,
            artist: 0,
            rights_holder: 0,
            impressions_24h: 0,
            session_promoted: 0,
        }
    }
    /// Sets feature `name` (declare it with [`RequestBuilder::features`]).
    pub fn feature(mut self, name: &str, value: f64) -> Self {
        self.features.push((name.to_string(), value));
        self
    }
    /// In campaign number `index` of the request (order of [`RequestBuilder::campaign`]).
    pub fn campaign(mut self, index: usize) -> Self {
        self.campaign = index as i32;
        self
    }
    /// Primary artist key.
    pub fn artist(mut self, artist: u32) -> Self {
        self.artist = artist;
        self
    }
    /// Rights holder key.
    pub fn rights_holder(mut self, holder: u32) -> Self {
        self.rights_holder = holder;
        self
    }
    /// Frequency counters: promoted impressions in 24h, promoted plays this session.
    pub fn impressions(mut self, last_24h: u32, this_session: u32) -> Self {
        self.impressions_24h = last_24h;
        self.session_promoted = this_session;
        self
    }
}

/// Builds a [`Request`] for tests.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    context: Context,
    feature_names: Vec<String>,
    candidates: Vec<CandidateSpec>,
    campaigns: Vec<Campaign>,
}

impl Default for RequestBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestBuilder {
    /// Radio in market SE at [`NOW_MS`], seed 42, no candidates.
    pub fn new() -> Self {
        RequestBuilder {
            context: Context {
                request_id: "test-request".into(),
                listener_id: "listener-1".into(),
                session_id: "session-1".into(),
                surface: Surface::Radio,
                market: market_code("SE").unwrap(),
                timestamp_ms: NOW_MS,
                seed: 42,
                feature_names: Vec::new(),
                features: Vec::new(),
            },
            feature_names: Vec::new(),
            candidates: Vec::new(),
            campaigns: Vec::new(),
        }
    }
    /// Sets the surface.
    pub fn surface(mut self, surface: Surface) -> Self {
        self.context.surface = surface;
        self
    }
    /// Sets the market (ISO code). Panics on an invalid code.
    pub fn market(mut self, market: &str) -> Self {
        self.context.market = market_code(market).expect("ISO market code");
        self
    }
    /// Sets the request time.
    pub fn timestamp_ms(mut self, ts: i64) -> Self {
        self.context.timestamp_ms = ts;
        self
    }
    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.context.seed = seed;
        self
    }
    /// Adds a context feature.
    pub fn context_feature(mut self, name: &str, value: f64) -> Self {
        self.context.feature_names.push(name.to_string());
        self.context.features.push(value);
        self
    }
    /// Declares the candidate feature columns, in order.
    pub fn features(mut self, names: &[&str]) -> Self {
        self.feature_names = names.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Adds a campaign; candidates refer to it by its position.
    pub fn campaign(mut self, campaign: CampaignSpec) -> Self {
        self.campaigns.push(campaign.0);
        self
    }
    /// Adds a candidate.
    pub fn candidate(mut self, candidate: CandidateSpec) -> Self {
        self.candidates.push(candidate);
        self
    }

    /// The request. Panics if a candidate uses an undeclared feature or an
    /// unknown campaign: those are mistakes in the test itself.
    pub fn build(self) -> Request {
        let width = self.feature_names.len();
        let n = self.candidates.len();
        let mut k = Candidates {
            count: n as u32,
            feature_names: self.feature_names,
            features: vec![f64::NAN; n * width],
            ..Candidates::default()
        };
        for (i, c) in self.candidates.into_iter().enumerate() {
            assert!(
                c.campaign < self.campaigns.len() as i32,
                "candidate {i} refers to campaign {} but only {} were added",
                c.campaign,
                self.campaigns.len()
            );
            for (name, v) in c.features {
                let j = k
                    .feature_names
                    .iter()
                    .position(|f| *f == name)
                    .unwrap_or_else(|| {
                        panic!("candidate {i} sets feature `{name}`, not declared with .features()")
                    });
                k.features[i * width + j] = v;
            }
            k.relevance.push(c.relevance);
            k.campaign.push(c.campaign);
            k.artist.push(c.artist);
            k.rights_holder.push(c.rights_holder);
            k.impressions_24h.push(c.impressions_24h);
            k.session_promoted.push(c.session_promoted);
        }
        Request {
            context: self.context,
            candidates: k,
            campaigns: self.campaigns,
        }
    }
}

/// Runs `P` on `request` the way the host does: parses and validates
/// `settings_json`, scores, and checks the output contract.
///
/// # Errors
/// The policy's error or the contract violation, as text.
pub fn run<P: Policy>(settings_json: &str, request: &Request) -> Result<Decisions, String> {
    let settings = crate::parse_settings::<P>(settings_json).map_err(|e| e.to_string())?;
    request.check_shape().map_err(|e| e.to_string())?;
    let out = P::score(&settings, request).map_err(|e| e.to_string())?;
    out.check(request).map_err(|v| v.to_string())?;
    Ok(out)
}
