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
//!
//! The golden fixtures that the host's `oasis test` runs against a built
//! component (`policies/*/fixtures/*.json`) run natively too:
//! [`check_fixture`] reads one with [`request_from_json`] and compares
//! [`run`]'s output with its `expected` entries, so a policy's unit tests
//! catch a stale fixture before the component is ever built.

use crate::{
    Campaign, Candidates, Context, Decisions, Holders, Policy, Request, Surface, SurfaceSet,
    market_code,
};

/// Default request time used by the builders: 2026-06-15T12:00:00Z.
pub const NOW_MS: i64 = 1_781_524_800_000;
const DAY_MS: i64 = 86_400_000;

/// Builds a [`Campaign`] active around [`NOW_MS`] on every surface and market.
#[derive(Debug, Clone)]
pub struct CampaignSpec(Campaign);

impl CampaignSpec {
    /// Campaign `key`, active from 10 days before to 20 days after [`NOW_MS`],
    /// target 1000 impressions, on schedule (delivered = expected = 333),
    /// pacing state never updated (`pacing_updated_ms` 0).
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
            pacing_updated_ms: 0,
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
    /// When the pacing state was last updated (unix ms; 0 = never).
    pub fn pacing_updated_ms(mut self, ms: i64) -> Self {
        self.0.pacing_updated_ms = ms;
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
    slate_size: Option<u32>,
    exposure: Vec<(u32, f64)>,
}

impl Default for RequestBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestBuilder {
    /// Radio in market SE at [`NOW_MS`], seed 42, no candidates; the slate
    /// is every candidate and every holder's 7-day exposure is unknown
    /// unless set.
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
                slate_size: 0,
            },
            feature_names: Vec::new(),
            candidates: Vec::new(),
            campaigns: Vec::new(),
            slate_size: None,
            exposure: Vec::new(),
        }
    }
    /// Sets the slate size (ranks the caller shows). Without it the request
    /// carries the candidate count, as the host sends it when the caller
    /// does not say.
    pub fn slate_size(mut self, k: u32) -> Self {
        self.slate_size = Some(k);
        self
    }
    /// Sets rights holder `holder`'s 7-day exposure share (NaN: unknown).
    /// The holders table covers every key the candidates use, and `holder`;
    /// holders not set are unknown (NaN).
    pub fn holder_exposure_share_7d(mut self, holder: u32, share: f64) -> Self {
        self.exposure.push((holder, share));
        self
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
        let holders = k
            .rights_holder
            .iter()
            .map(|&h| h + 1)
            .chain(self.exposure.iter().map(|&(h, _)| h + 1))
            .max()
            .unwrap_or(0);
        let mut exposure = vec![f64::NAN; holders as usize];
        for (h, v) in self.exposure {
            exposure[h as usize] = v;
        }
        let mut context = self.context;
        context.slate_size = self.slate_size.unwrap_or(k.count);
        Request {
            context,
            candidates: k,
            campaigns: self.campaigns,
            holders: Holders {
                count: holders,
                exposure_share_7d: exposure,
            },
        }
    }
}

/// Runs `P` on `request` the way the host does: parses and validates
/// `settings_json`, gives the policy exactly the feature columns it declares
/// ([`as_host_sends`]), scores, and checks the output contract.
///
/// # Errors
/// The policy's error or the contract violation, as text. A policy that
/// reads a feature it did not declare gets the error of
/// [`Request::feature`], naming the feature.
pub fn run<P: Policy>(settings_json: &str, request: &Request) -> Result<Decisions, String> {
    let settings = crate::parse_settings::<P>(settings_json).map_err(|e| e.to_string())?;
    request.check_shape().map_err(|e| e.to_string())?;
    let request = as_host_sends::<P>(request);
    let out = P::score(&settings, &request).map_err(|e| e.to_string())?;
    out.check(&request).map_err(|v| v.to_string())?;
    Ok(out)
}

/// `request` as the host would send it to `P`: candidate feature columns
/// are exactly `P`'s declared features (required, then optional, in
/// [`Metadata`](crate::Metadata) order), a declared feature the request does not
/// carry being all NaN (missing), and context features exactly its declared
/// context features. Columns `P` did not declare are dropped, as the host
/// never sends them.
///
/// ```
/// use oasis_sdk::testing::{CandidateSpec, RequestBuilder, as_host_sends};
/// # use oasis_sdk::{Decisions, Metadata, Policy, PolicyError, Request};
/// # struct P;
/// # impl Policy for P {
/// #     type Settings = ();
/// #     fn metadata() -> Metadata { Metadata::new("p", "1.0.0").requires(&["p_skip"]) }
/// #     fn score(_: &(), req: &Request) -> Result<Decisions, PolicyError> { Ok(Decisions::passthrough(req)) }
/// # }
/// let req = RequestBuilder::new()
///     .features(&["popularity", "p_skip"])
///     .candidate(CandidateSpec::new(0.5).feature("popularity", 0.9).feature("p_skip", 0.2))
///     .build();
/// let sent = as_host_sends::<P>(&req);
/// assert_eq!(sent.candidates.feature_names, ["p_skip"]);
/// assert_eq!(sent.candidates.features, [0.2]);
/// assert!(sent.feature("popularity").is_err()); // not declared: never sent
/// ```
pub fn as_host_sends<P: Policy>(request: &Request) -> Request {
    let meta = P::metadata();
    let columns = oasis_contract::feature_columns(&meta.required_features, &meta.optional_features);
    let k = &request.candidates;
    let (n, width) = (k.count as usize, k.feature_names.len());
    let from: Vec<Option<usize>> = columns
        .iter()
        .map(|c| k.feature_names.iter().position(|f| f == c))
        .collect();
    let mut features = vec![f64::NAN; n * columns.len()];
    for i in 0..n {
        for (j, src) in from.iter().enumerate() {
            if let Some(s) = src {
                features[i * columns.len() + j] = k.features[i * width + s];
            }
        }
    }
    let ctx = &request.context;
    let context_values = meta
        .context_features
        .iter()
        .map(|name| {
            ctx.feature_names
                .iter()
                .position(|f| f == name)
                .map_or(f64::NAN, |i| ctx.features[i])
        })
        .collect();
    let mut out = request.clone();
    out.candidates.feature_names = columns;
    out.candidates.features = features;
    out.context.feature_names = meta.context_features;
    out.context.features = context_values;
    out
}

// --- The host's JSON request and `oasis test` fixtures ----------------------

/// Interned ids (as the host interns them: keys in order of first
/// appearance, an empty id gets a key of its own) and the next free key.
#[derive(Default)]
struct Keys {
    ids: std::collections::HashMap<String, u32>,
    next: u32,
}

impl Keys {
    fn key(&mut self, id: &str) -> u32 {
        let next = self.next;
        if id.is_empty() {
            self.next += 1;
            return next;
        }
        let key = *self.ids.entry(id.to_string()).or_insert(next);
        if key == next {
            self.next += 1;
        }
        key
    }
}

/// A host JSON request (the `POST /v1/score` body, as in
/// `examples/request.json` and the golden fixtures) in columnar form, with
/// every candidate feature any candidate carries ([`run`] then keeps the
/// declared ones).
///
/// The JSON is read with the host's own types ([`oasis_wire::request`]), so
/// it accepts exactly what the host's parser accepts. Packing follows the
/// host (`host/src/columnar.rs`): artist and rights-holder ids become keys
/// in order of first appearance (an empty id gets its own), campaigns are
/// sent once in order of first appearance, a missing seed is the FNV-1a
/// hash of `request_id`, `context.slate_size` defaults to the candidate
/// count (and is capped at it), the holders table has one entry per
/// rights-holder key with the top-level
/// `rights_holders[id].exposure_share_7d` (NaN when the id is not listed), a
/// campaign's missing `expected_by_now` is its linear schedule, and other
/// optional delivery state reads as 0. The host validates far more (sizes,
/// windows, finiteness) and stays the authority.
///
/// # Errors
/// A message naming the JSON path of the field that is missing or of the
/// wrong type, or of a market code that is not one.
///
/// ```
/// let req = oasis_sdk::testing::request_from_json(&serde_json::json!({
///     "context": {"request_id": "r", "listener_id": "l", "session_id": "s",
///                 "surface": "radio", "market": "SE", "timestamp_ms": 5, "slate_size": 1},
///     "candidates": [
///         {"id": "a", "relevance": 0.9, "rights_holder": "label-1"},
///         {"id": "b", "relevance": 0.4, "rights_holder": "label-2"}
///     ],
///     "rights_holders": {"label-2": {"exposure_share_7d": 0.3}}
/// })).unwrap();
/// assert_eq!(req.slate_size(), 1);
/// assert_eq!(req.candidate(0).holder_exposure_share_7d(), None);
/// assert_eq!(req.candidate(1).holder_exposure_share_7d(), Some(0.3));
///
/// let err = oasis_sdk::testing::request_from_json(&serde_json::json!({
///     "context": {"request_id": "r", "listener_id": "l", "session_id": "s",
///                 "surface": "radio", "market": "SE", "timestamp_ms": 5},
///     "candidates": [{"id": "a", "relevance": "high"}]
/// })).unwrap_err();
/// assert!(err.contains("`candidates[0].relevance`"), "{err}");
/// ```
pub fn request_from_json(body: &serde_json::Value) -> Result<Request, String> {
    let wire = oasis_wire::request::from_value(body).map_err(json_err)?;
    columnar(&wire)
}

fn json_err(what: impl std::fmt::Display) -> String {
    format!("request JSON: {what}")
}

/// The columnar form of a request read with the wire types.
fn columnar(r: &oasis_wire::request::ScoreRequest<'_>) -> Result<Request, String> {
    let market = |path: &dyn Fn() -> String, m: &str| {
        market_code(m).ok_or_else(|| json_err(format!("`{}`: bad market `{m}`", path())))
    };
    let n = r.candidates.len();
    let (feature_names, features) = r.feature_matrix();
    let sent = r.campaigns();
    let mut campaigns = Vec::with_capacity(sent.first.len());
    for (key, c) in sent.first.iter().enumerate() {
        // The candidate whose copy this is names the path of an error.
        let at = sent
            .index
            .iter()
            .position(|&i| i == key as i32)
            .unwrap_or(0);
        campaigns.push(Campaign {
            key: key as u32,
            start_ms: c.start_ms,
            end_ms: c.end_ms,
            surfaces: match &c.surfaces {
                Some(list) => list.iter().copied().collect(),
                None => {
                    SurfaceSet::from_bits_retain(oasis_contract::surface::DEFAULT_CAMPAIGN_SURFACES)
                }
            },
            markets: c
                .markets
                .iter()
                .enumerate()
                .map(|(j, m)| market(&|| format!("candidates[{at}].campaign.markets[{j}]"), m))
                .collect::<Result<_, _>>()?,
            delivery_target: c.delivery_target,
            delivered: c.delivered.unwrap_or(0.0),
            expected_by_now: c
                .expected_by_now
                .unwrap_or_else(|| c.linear_schedule(r.context.timestamp_ms)),
            pacing_integral: c.pacing_integral.unwrap_or(0.0),
            pacing_last_error: c.pacing_last_error.unwrap_or(0.0),
            pacing_updated_ms: c.pacing_updated_ms.unwrap_or(0).max(0),
            commission_bps: c.commission_bps,
        });
    }
    let (mut artists, mut holders) = (Keys::default(), Keys::default());
    let mut holder_ids: Vec<&str> = Vec::new();
    let mut k = Candidates {
        count: n as u32,
        feature_names,
        features,
        campaign: sent.index,
        ..Candidates::default()
    };
    for c in &r.candidates {
        k.relevance.push(c.relevance);
        k.artist.push(artists.key(&c.artist));
        let key = holders.key(&c.rights_holder);
        if key as usize == holder_ids.len() {
            holder_ids.push(&c.rights_holder);
        }
        k.rights_holder.push(key);
        k.impressions_24h.push(c.impressions_24h.unwrap_or(0));
        k.session_promoted.push(c.session_promoted.unwrap_or(0));
    }
    let exposure_share_7d = holder_ids
        .iter()
        .map(|id| {
            r.rights_holders
                .as_ref()
                .and_then(|t| t.get(*id))
                .map_or(f64::NAN, |h| h.exposure_share_7d)
        })
        .collect();
    let ctx = &r.context;
    let (context_names, context_values) = ctx
        .features
        .iter()
        .map(|(name, v)| (name.to_string(), v.unwrap_or(f64::NAN)))
        .unzip();
    Ok(Request {
        context: Context {
            request_id: ctx.request_id.to_string(),
            listener_id: ctx.listener_id.to_string(),
            session_id: ctx.session_id.to_string(),
            surface: ctx.surface,
            market: market(&|| "context.market".into(), &ctx.market)?,
            timestamp_ms: ctx.timestamp_ms,
            seed: r.seed(),
            feature_names: context_names,
            features: context_values,
            slate_size: ctx.slate_size.map_or(n, |s| (s as usize).min(n)) as u32,
        },
        candidates: k,
        campaigns,
        holders: Holders {
            count: holder_ids.len() as u32,
            exposure_share_7d,
        },
    })
}

/// Runs the `oasis test` golden fixture at `path` natively with `P` and
/// returns every difference from its expectations (empty when it passes).
///
/// The fixture is read, compared and worded by [`oasis_wire::fixture`], as
/// `oasis test` does: per candidate its id, score and propensity (within
/// the fixture's `tolerance`, default `1e-9`), eligibility, reason names and
/// the candidate's listed `debug` values; the request-level
/// `expected_debug` values; and, when the fixture lists
/// `expected_campaign_updates` (`[{"campaign": "<campaign id>",
/// "pacing_integral": f, "pacing_last_error": f}]`), exactly those campaign
/// updates, in any order.
///
/// # Errors
/// The file cannot be read or is not a fixture, it has no `expected`
/// output yet, or the policy refuses the settings or the request (the
/// message says which).
pub fn check_fixture<P: Policy>(path: impl AsRef<std::path::Path>) -> Result<Vec<String>, String> {
    use oasis_wire::fixture::{self, Fixture, Output};
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let fx = Fixture::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let wire = oasis_wire::request::from_value(&fx.request).map_err(json_err)?;
    let req = columnar(&wire)?;
    let out = run::<P>(&fx.settings_json(), &req)?;
    let campaign_ids: Vec<&str> = wire.campaigns().first.iter().map(|c| &*c.id).collect();
    let mut output = Output {
        candidates: wire
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| fixture::Candidate {
                id: c.id.to_string(),
                score: out.scores[i],
                eligible: out.eligible[i],
                reasons: oasis_contract::reason::names(out.reasons[i].bits())
                    .map(String::from)
                    .collect(),
                propensity: out.propensity[i],
                debug: None,
            })
            .collect(),
        campaign_updates: out
            .campaign_updates
            .iter()
            .map(|u| fixture::PacingUpdate {
                campaign: campaign_ids[u.campaign as usize].to_string(),
                pacing_integral: u.pacing_integral,
                pacing_last_error: u.pacing_last_error,
            })
            .collect(),
        ..Output::default()
    };
    for d in &out.debug {
        output.add_debug(d.candidate.map(|c| c as usize), &d.name, d.value);
    }
    let diffs = fx.compare(&output).map_err(|e| e.to_string())?;
    Ok(diffs.iter().map(ToString::to_string).collect())
}

/// Asserts that every `*.json` fixture in `dir` passes [`check_fixture`]
/// with `P`, and that there is at least one.
///
/// # Panics
/// Naming each failing fixture with its differences or error.
#[track_caller]
pub fn assert_fixtures_pass<P: Policy>(dir: impl AsRef<std::path::Path>) {
    let dir = dir.as_ref();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    let mut failures = Vec::new();
    for f in &files {
        match check_fixture::<P>(f) {
            Ok(d) if d.is_empty() => {}
            Ok(d) => failures.push(format!("{}:\n    {}", f.display(), d.join("\n    "))),
            Err(e) => failures.push(format!("{}: {e}", f.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures fail:\n  {}",
        failures.len(),
        files.len(),
        failures.join("\n  ")
    );
}

/// Tolerance of [`is_close`] and [`assert_close`]: two numbers are close when
/// their absolute difference is strictly below `1e-12`.
///
/// It is absolute, not relative: meant for scores, boosts and probabilities
/// of order 1, where it allows only floating-point rounding, not a wrong
/// formula.
pub const CLOSE_TOLERANCE: f64 = 1e-12;

/// Whether `actual` is within [`CLOSE_TOLERANCE`] of `expected`:
/// `(actual - expected).abs() < 1e-12`. NaN is close to nothing, and
/// infinities are close to nothing either (their difference is NaN).
///
/// Use it where a test needs a predicate, e.g. over a whole slate, or wants
/// its own message; otherwise prefer [`assert_close`].
///
/// ```
/// use oasis_sdk::testing::is_close;
///
/// assert!(is_close(0.1 + 0.2, 0.3)); // differs by rounding only
/// assert!(!is_close(0.3, 0.3 + 1e-9));
/// assert!(!is_close(f64::NAN, f64::NAN));
/// let propensities = [0.4, 0.4, 0.2 + 0.2];
/// assert!(propensities.iter().all(|&p| is_close(p, 0.4)), "{propensities:?}");
/// ```
pub fn is_close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < CLOSE_TOLERANCE
}

/// Asserts [`is_close`]`(actual, expected)`.
///
/// # Panics
/// If they differ by [`CLOSE_TOLERANCE`] or more, or either is NaN; the
/// message gives both values and the difference, and points at the caller.
///
/// ```
/// use oasis_sdk::testing::assert_close;
///
/// assert_close(0.7 + 0.5 * 0.5, 0.95);
/// ```
///
/// ```should_panic
/// oasis_sdk::testing::assert_close(0.95, 0.95 + 1e-9); // a real difference
/// ```
#[track_caller]
pub fn assert_close(actual: f64, expected: f64) {
    assert!(
        is_close(actual, expected),
        "{actual} is not close to {expected}: they differ by {:e} (tolerance {CLOSE_TOLERANCE:e})",
        (actual - expected).abs()
    );
}

/// Asserts that every settings JSON in `cases` is refused by `P`, with a
/// message that contains its needle: for each `(settings_json, needle)`,
/// [`run::<P>`](run)`(settings_json, request)` must fail and its error must
/// contain `needle`.
///
/// Name the setting and the offending value in the needle (`"beta must be in
/// [0, 10], got 11"`), so the test also pins what the operator will read.
/// Every case is checked before the helper panics, so one run reports every
/// failing case.
///
/// # Panics
/// If any settings are accepted or refused with a message lacking the needle
/// (the panic names each such JSON with the error or the acceptance), and if
/// `cases` is empty or a needle is empty: either would make the check vacuous.
///
/// ```
/// # use oasis_sdk::{Decisions, Metadata, Policy, PolicyError, Request};
/// # use serde::{Deserialize, Serialize};
/// # pub struct FixedBoost;
/// # #[derive(Serialize, Deserialize)]
/// # #[serde(default, deny_unknown_fields)]
/// # pub struct Settings { boost: f64 }
/// # impl Default for Settings { fn default() -> Self { Settings { boost: 0.1 } } }
/// # impl Policy for FixedBoost {
/// #     type Settings = Settings;
/// #     fn metadata() -> Metadata {
/// #         Metadata::new("fixed-boost", "1.0.0").setting("boost", "score added, in [0, 1]")
/// #     }
/// #     fn validate(s: &Settings) -> Result<(), String> {
/// #         if !(0.0..=1.0).contains(&s.boost) {
/// #             return Err(format!("boost must be in [0, 1], got {}", s.boost));
/// #         }
/// #         Ok(())
/// #     }
/// #     fn score(_: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
/// #         Ok(Decisions::passthrough(req))
/// #     }
/// # }
/// use oasis_sdk::testing::{RequestBuilder, assert_settings_refused};
///
/// let req = RequestBuilder::new().build();
/// assert_settings_refused::<FixedBoost>(
///     &req,
///     &[
///         (r#"{"boost": 2}"#, "boost must be in [0, 1], got 2"),
///         (r#"{"bost": 0.1}"#, "unknown field `bost`"),
///     ],
/// );
/// ```
#[track_caller]
pub fn assert_settings_refused<P: Policy>(request: &Request, cases: &[(&str, &str)]) {
    assert!(
        !cases.is_empty(),
        "assert_settings_refused: no cases given, nothing would be checked"
    );
    let mut failures = Vec::new();
    for &(json, needle) in cases {
        assert!(
            !needle.is_empty(),
            "assert_settings_refused: empty needle for settings {json}; name the setting and value"
        );
        match run::<P>(json, request) {
            Ok(_) => failures.push(format!(
                "settings {json} were accepted; expected an error containing `{needle}`"
            )),
            Err(err) if !err.contains(needle) => failures.push(format!(
                "settings {json} were refused with `{err}`, which does not contain `{needle}`"
            )),
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid settings cases failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

/// Asserts that `P` documents exactly the settings in `expected`: the
/// settings of [`full_metadata::<P>`](crate::full_metadata), as `(name,
/// default JSON)`, equal `expected` in order, and every one has a non-empty
/// description (whitespace alone counts as empty).
///
/// The order is the order of [`Metadata::setting`](crate::Metadata::setting)
/// calls; a field of `P::Settings` that `metadata()` does not document is
/// listed after them with an empty description, so it fails the check.
/// Default JSON is `serde_json`'s rendering of `P::Settings::default()`: a
/// float keeps its point (`"4.0"`), an integer has none (`"3"`).
///
/// # Panics
/// If the settings or their defaults differ from `expected` (the message
/// shows both lists) or a setting has no description (the message names it).
/// An empty `expected` is allowed: it asserts that `P` takes no settings.
///
/// ```
/// # use oasis_sdk::{Decisions, Metadata, Policy, PolicyError, Request};
/// # use serde::{Deserialize, Serialize};
/// # pub struct FixedBoost;
/// # #[derive(Serialize, Deserialize)]
/// # #[serde(default, deny_unknown_fields)]
/// # pub struct Settings { boost: f64, slots: u32 }
/// # impl Default for Settings { fn default() -> Self { Settings { boost: 0.1, slots: 3 } } }
/// # impl Policy for FixedBoost {
/// #     type Settings = Settings;
/// #     fn score(_: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
/// #         Ok(Decisions::passthrough(req))
/// #     }
/// fn metadata() -> Metadata {
///     Metadata::new("fixed-boost", "1.0.0")
///         .setting("boost", "score added to promoted tracks, in [0, 1]")
///         .setting("slots", "most promoted tracks per slate, >= 1")
/// }
/// # }
///
/// oasis_sdk::testing::assert_settings_documented::<FixedBoost>(&[
///     ("boost", "0.1"),
///     ("slots", "3"),
/// ]);
/// ```
#[track_caller]
pub fn assert_settings_documented<P: Policy>(expected: &[(&str, &str)]) {
    let meta = crate::full_metadata::<P>();
    let got: Vec<(&str, &str)> = meta
        .settings
        .iter()
        .map(|s| (s.name.as_str(), s.default_json.as_str()))
        .collect();
    assert_eq!(
        got, expected,
        "settings of `{}` as (name, default JSON), left: documented, right: expected",
        meta.name
    );
    let undocumented: Vec<&str> = meta
        .settings
        .iter()
        .filter(|s| s.description.trim().is_empty())
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        undocumented.is_empty(),
        "settings of `{}` without a description: {undocumented:?}",
        meta.name
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Metadata, PolicyError};
    use serde::{Deserialize, Serialize};

    /// A tiny policy: two documented settings, `boost` validated to [0, 1].
    struct Tiny;

    #[derive(Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        boost: f64,
        slots: u32,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                boost: 0.1,
                slots: 3,
            }
        }
    }

    impl Policy for Tiny {
        type Settings = Settings;
        fn metadata() -> Metadata {
            Metadata::new("tiny", "1.0.0")
                .setting("boost", "score added, in [0, 1]")
                .setting("slots", "promoted tracks per slate")
        }
        fn validate(s: &Settings) -> Result<(), String> {
            if !(0.0..=1.0).contains(&s.boost) {
                return Err(format!("boost must be in [0, 1], got {}", s.boost));
            }
            Ok(())
        }
        fn score(_: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
            Ok(Decisions::passthrough(req))
        }
    }

    /// Same settings, but `metadata()` forgets `slots` and leaves `boost` blank.
    struct Undocumented;

    impl Policy for Undocumented {
        type Settings = Settings;
        fn metadata() -> Metadata {
            Metadata::new("undocumented", "1.0.0").setting("boost", "  ")
        }
        fn score(_: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
            Ok(Decisions::passthrough(req))
        }
    }

    fn req() -> Request {
        RequestBuilder::new()
            .candidate(CandidateSpec::new(0.5))
            .build()
    }

    /// Reads `popularity` (declared optional) and `p_skip`, which it
    /// forgets to declare: the mistake the harness must catch.
    struct Forgetful;

    impl Policy for Forgetful {
        type Settings = Settings;
        fn metadata() -> Metadata {
            Metadata::new("forgetful", "1.0.0")
                .optional(&["popularity"])
                .context(&["hour"])
        }
        fn score(_: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
            let popularity = req.optional_feature("popularity")?;
            assert_eq!(req.context_feature("hour"), Some(7.0));
            assert_eq!(req.context_feature("undeclared"), None);
            let mut d = Decisions::passthrough(req);
            for c in req.candidates() {
                // Missing values are None, declared or not sent.
                d.scores[c.index()] += c.get(popularity).unwrap_or(0.0);
            }
            let p_skip = req.feature("p_skip")?;
            let _ = req.candidate(0).get(p_skip);
            Ok(d)
        }
    }

    #[test]
    fn the_harness_sends_only_declared_features_and_names_an_undeclared_one() {
        let req = RequestBuilder::new()
            .features(&["p_skip", "popularity", "other"])
            .context_feature("hour", 7.0)
            .context_feature("undeclared", 1.0)
            .candidate(
                CandidateSpec::new(0.5)
                    .feature("p_skip", 0.1)
                    .feature("popularity", 0.2),
            )
            .candidate(CandidateSpec::new(0.4).feature("other", 9.0))
            .build();
        let err = run::<Forgetful>("", &req).unwrap_err();
        assert!(
            err.contains("`p_skip`") && err.contains(".requires(&[\"p_skip\"])"),
            "{err}"
        );
        let sent = as_host_sends::<Forgetful>(&req);
        assert_eq!(sent.candidates.feature_names, ["popularity"]);
        assert_eq!(sent.candidates.features[0], 0.2);
        assert!(
            sent.candidates.features[1].is_nan(),
            "missing, as the host sends it"
        );
        assert_eq!(sent.context.feature_names, ["hour"]);
        // A declared feature no candidate carries is still a column (all NaN).
        let bare = RequestBuilder::new()
            .candidate(CandidateSpec::new(0.5))
            .build();
        let sent = as_host_sends::<Forgetful>(&bare);
        assert_eq!(sent.candidates.feature_names, ["popularity"]);
        assert!(sent.candidates.features[0].is_nan());
    }

    /// Writes `fixture` to a file of its own and checks it with [`Tiny`].
    fn check(name: &str, fixture: &serde_json::Value) -> Result<Vec<String>, String> {
        let path =
            std::env::temp_dir().join(format!("oasis-sdk-{name}-{}.json", std::process::id()));
        std::fs::write(&path, fixture.to_string()).unwrap();
        let result = check_fixture::<Tiny>(&path);
        std::fs::remove_file(&path).unwrap();
        result
    }

    fn fixture(score_b: f64) -> serde_json::Value {
        serde_json::json!({
            "tolerance": 1e-6,
            "request": {
                "context": {"request_id": "r", "listener_id": "l", "session_id": "s",
                            "surface": "radio", "market": "SE", "timestamp_ms": NOW_MS},
                "candidates": [
                    {"id": "a", "relevance": 0.5},
                    {"id": "b", "relevance": 0.25, "campaign": {"id": "c", "start_ms": 0,
                     "end_ms": NOW_MS + 1, "delivery_target": 10}}
                ]
            },
            "expected": [
                {"id": "a", "score": 0.5, "eligible": false, "reasons": ["organic"], "propensity": 0.0},
                {"id": "b", "score": score_b, "eligible": false, "reasons": [], "propensity": 0.0}
            ]
        })
    }

    #[test]
    fn fixtures_are_compared_as_oasis_test_compares_them() {
        assert_eq!(check("pass", &fixture(0.25 + 5e-7)), Ok(vec![]));
        assert_eq!(
            check("fail", &fixture(0.3)),
            Ok(vec![
                "b: score expected 0.3 got 0.25 (tolerance 0.000001)".to_string()
            ])
        );
        let mut bad = fixture(0.25);
        bad["request"]["candidates"][1]["relevance"] = "high".into();
        let err = check("bad-request", &bad).unwrap_err();
        assert!(err.contains("(at `candidates[1].relevance`)"), "{err}");
        let mut unblessed = fixture(0.25);
        unblessed.as_object_mut().unwrap().remove("expected");
        let err = check("unblessed", &unblessed).unwrap_err();
        assert!(err.contains("no `expected` output yet"), "{err}");
    }

    #[test]
    fn a_json_request_is_packed_as_the_host_packs_it() {
        let req = request_from_json(&serde_json::json!({
            "context": {"request_id": "r", "listener_id": "l", "session_id": "s",
                        "surface": "radio", "market": "SE", "timestamp_ms": 1000,
                        "slate_size": 9, "features": {"hour": 7, "mood": null}},
            "candidates": [
                {"id": "a", "relevance": 0.5, "artist": "x", "features": {"p_skip": 0.2},
                 "campaign": {"id": "c1", "start_ms": 0, "end_ms": 2000, "delivery_target": 10,
                              "markets": ["NO"], "surfaces": ["radio"]}},
                {"id": "b", "relevance": 0.4, "artist": "x", "impressions_24h": 3,
                 "features": {"pop": 1}},
                {"id": "c", "relevance": 0.3,
                 "campaign": {"id": "c1", "start_ms": 0, "end_ms": 2000, "delivery_target": 10}}
            ]
        }))
        .unwrap();
        assert_eq!(req.slate_size(), 3, "capped at the candidate count");
        assert_eq!(req.candidates.feature_names, ["p_skip", "pop"]);
        assert_eq!(req.candidates.campaign, [0, -1, 0]);
        assert_eq!(
            req.candidates.artist,
            [0, 0, 1],
            "an empty id gets its own key"
        );
        assert_eq!(req.candidates.impressions_24h, [0, 3, 0]);
        assert_eq!(req.campaigns.len(), 1, "campaigns are sent once");
        let c = &req.campaigns[0];
        assert_eq!(c.markets, [market_code("NO").unwrap()]);
        assert_eq!(c.surfaces, SurfaceSet::from(Surface::Radio));
        assert_eq!(c.expected_by_now, 5.0, "the linear schedule when not sent");
        assert_eq!(req.context_feature("hour"), Some(7.0));
        assert_eq!(req.context.features.len(), 2);
        let err = request_from_json(&serde_json::json!({
            "context": {"request_id": "r", "listener_id": "l", "session_id": "s",
                        "surface": "radio", "market": "Sweden", "timestamp_ms": 0},
            "candidates": []
        }))
        .unwrap_err();
        assert_eq!(err, "request JSON: `context.market`: bad market `Sweden`");
    }

    #[test]
    fn is_close_is_absolute_strict_and_refuses_nan_and_infinity() {
        assert!(is_close(0.1 + 0.2, 0.3));
        assert!(is_close(1.0, 1.0 + 5e-13));
        assert!(!is_close(0.0, 1e-12), "the bound is strict");
        assert!(!is_close(0.0, -2e-12));
        assert!(!is_close(f64::NAN, 0.0));
        assert!(!is_close(f64::NAN, f64::NAN));
        assert!(!is_close(f64::INFINITY, f64::INFINITY));
    }

    #[test]
    fn assert_close_accepts_rounding() {
        assert_close(0.1 + 0.2, 0.3);
    }

    #[test]
    #[should_panic(expected = "is not close to 0.5")]
    fn assert_close_fails_on_a_real_difference() {
        assert_close(0.5 + 1e-9, 0.5);
    }

    #[test]
    #[should_panic(expected = "NaN is not close to 0")]
    fn assert_close_fails_on_nan() {
        assert_close(f64::NAN, 0.0);
    }

    #[test]
    fn assert_settings_refused_accepts_matching_errors() {
        assert_settings_refused::<Tiny>(
            &req(),
            &[
                (r#"{"boost": 2}"#, "boost must be in [0, 1], got 2"),
                (r#"{"slots": -1}"#, "expected u32"),
                (r#"{"bost": 0}"#, "unknown field `bost`"),
            ],
        );
    }

    #[test]
    #[should_panic(expected = r#"settings {"boost": 0.5} were accepted"#)]
    fn assert_settings_refused_fails_when_settings_are_accepted() {
        assert_settings_refused::<Tiny>(
            &req(),
            &[
                (r#"{"boost": 2}"#, "boost must be in [0, 1]"),
                (r#"{"boost": 0.5}"#, "boost must be in [0, 1]"),
            ],
        );
    }

    #[test]
    #[should_panic(expected = "does not contain `got 3`")]
    fn assert_settings_refused_fails_when_the_message_lacks_the_needle() {
        assert_settings_refused::<Tiny>(&req(), &[(r#"{"boost": 2}"#, "got 3")]);
    }

    #[test]
    #[should_panic(expected = "2 of 3 invalid settings cases failed")]
    fn assert_settings_refused_reports_every_failing_case() {
        assert_settings_refused::<Tiny>(
            &req(),
            &[
                (r#"{"boost": 2}"#, "got 2"),
                ("{}", "boost"),
                (r#"{"boost": 3}"#, "slots"),
            ],
        );
    }

    #[test]
    #[should_panic(expected = "no cases given")]
    fn assert_settings_refused_fails_without_cases() {
        assert_settings_refused::<Tiny>(&req(), &[]);
    }

    #[test]
    #[should_panic(expected = "empty needle")]
    fn assert_settings_refused_fails_on_an_empty_needle() {
        assert_settings_refused::<Tiny>(&req(), &[(r#"{"boost": 2}"#, "")]);
    }

    #[test]
    fn assert_settings_documented_accepts_the_exact_list() {
        assert_settings_documented::<Tiny>(&[("boost", "0.1"), ("slots", "3")]);
    }

    #[test]
    #[should_panic(expected = "settings of `tiny` as (name, default JSON)")]
    fn assert_settings_documented_fails_on_a_wrong_default() {
        assert_settings_documented::<Tiny>(&[("boost", "0.2"), ("slots", "3")]);
    }

    #[test]
    #[should_panic(expected = "settings of `tiny` as (name, default JSON)")]
    fn assert_settings_documented_fails_on_another_order() {
        assert_settings_documented::<Tiny>(&[("slots", "3"), ("boost", "0.1")]);
    }

    #[test]
    #[should_panic(expected = "settings of `tiny` as (name, default JSON)")]
    fn assert_settings_documented_fails_on_a_missing_setting() {
        assert_settings_documented::<Tiny>(&[("boost", "0.1")]);
    }

    #[test]
    #[should_panic(expected = "settings of `tiny` as (name, default JSON)")]
    fn assert_settings_documented_fails_on_an_extra_setting() {
        assert_settings_documented::<Tiny>(&[("boost", "0.1"), ("slots", "3"), ("seed", "0")]);
    }

    #[test]
    #[should_panic(expected = r#"without a description: ["boost", "slots"]"#)]
    fn assert_settings_documented_fails_on_missing_descriptions() {
        // The names and defaults match: only the descriptions are wrong.
        assert_settings_documented::<Undocumented>(&[("boost", "0.1"), ("slots", "3")]);
    }
}
