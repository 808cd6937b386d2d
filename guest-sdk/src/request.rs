//! The request a policy scores: context, columnar candidates, campaigns and
//! the rights holders' exposure.
//!
//! The layout mirrors the WIT contract (`wit/policy.wit`) so that the
//! WebAssembly bindings move their vectors in without copying. Accessors make
//! the columnar form pleasant: resolve a feature name to a [`Feature`] once
//! per request, then read it per candidate through [`Candidate::get`].

use crate::Reason;
use crate::rng::Rng;

pub use oasis_contract::{Surface, market_code};

bitflags::bitflags! {
    /// A set of surfaces; bit `i` is `Surface::ALL[i]` (the contract's order,
    /// as in the WIT flags).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SurfaceSet: u8 {
        /// [`Surface::Radio`].
        const RADIO = Surface::Radio.bit();
        /// [`Surface::Autoplay`].
        const AUTOPLAY = Surface::Autoplay.bit();
        /// [`Surface::DailyMix`].
        const DAILY_MIX = Surface::DailyMix.bit();
        /// [`Surface::ArtistMix`].
        const ARTIST_MIX = Surface::ArtistMix.bit();
        /// [`Surface::MoodMix`].
        const MOOD_MIX = Surface::MoodMix.bit();
        /// [`Surface::DecadeMix`].
        const DECADE_MIX = Surface::DecadeMix.bit();
        /// [`Surface::GenreMix`].
        const GENRE_MIX = Surface::GenreMix.bit();
        /// [`Surface::Other`].
        const OTHER = Surface::Other.bit();
    }
}

impl From<Surface> for SurfaceSet {
    fn from(s: Surface) -> Self {
        SurfaceSet::from_bits_retain(s.bit())
    }
}

impl FromIterator<Surface> for SurfaceSet {
    fn from_iter<I: IntoIterator<Item = Surface>>(iter: I) -> Self {
        iter.into_iter()
            .fold(SurfaceSet::empty(), |set, s| set | s.into())
    }
}

/// The listening context of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// Caller's request id, for correlating logs.
    pub request_id: String,
    /// Listener (user) id.
    pub listener_id: String,
    /// Listening session id.
    pub session_id: String,
    /// Where the listening happens; campaigns allow only some surfaces.
    pub surface: Surface,
    /// Market, packed with [`market_code`].
    pub market: u16,
    /// Unix time of the request in milliseconds.
    pub timestamp_ms: i64,
    /// The only source of randomness a policy may use: see [`Request::rng`].
    pub seed: u64,
    /// Names of the numeric context features the policy declared
    /// ([`Metadata::context`](crate::Metadata::context)); read them with
    /// [`Request::context_feature`].
    pub feature_names: Vec<String>,
    /// Aligned with `feature_names`; NaN means missing.
    pub features: Vec<f64>,
    /// How many of the top-ranked candidates the caller shows (the slate),
    /// in `1..=count`; the host sends the candidate count when the caller
    /// does not say. Ranks beyond it get no attention. Read it through
    /// [`Request::slate_size`], which keeps it in range.
    pub slate_size: u32,
}

/// A promotion campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    /// Small integer key; the host maps it back to the campaign id.
    pub key: u32,
    /// Start of the active window (unix ms, inclusive): the window is
    /// `[start_ms, end_ms)`.
    pub start_ms: i64,
    /// End of the active window (unix ms, exclusive).
    pub end_ms: i64,
    /// Surfaces the campaign may promote on.
    pub surfaces: SurfaceSet,
    /// Markets packed with [`market_code`]; empty means every market.
    pub markets: Vec<u16>,
    /// Promoted impressions targeted over the whole window.
    pub delivery_target: f64,
    /// Promoted impressions delivered so far.
    pub delivered: f64,
    /// What a linear schedule would have delivered by now.
    pub expected_by_now: f64,
    /// Leaky integral of the normalized delivery error (carried by the host).
    pub pacing_integral: f64,
    /// Normalized delivery error of the previous pacing step.
    pub pacing_last_error: f64,
    /// When the pacing state was last updated (unix ms, the caller's clock,
    /// like [`Context::timestamp_ms`]); 0 when it never was. See
    /// [`Campaign::pacing_dt_ms`].
    pub pacing_updated_ms: i64,
    /// Commission the rights holder accepted, in basis points (1/100 %).
    pub commission_bps: u32,
}

impl Campaign {
    /// Whether the campaign runs at `timestamp_ms`.
    pub fn is_active(&self, timestamp_ms: i64) -> bool {
        self.start_ms <= timestamp_ms && timestamp_ms < self.end_ms
    }

    /// Whether the campaign may promote on `surface`.
    pub fn allows_surface(&self, surface: Surface) -> bool {
        self.surfaces.contains(surface.into())
    }

    /// Whether the campaign may promote in `market` (packed).
    pub fn allows_market(&self, market: u16) -> bool {
        self.markets.is_empty() || self.markets.contains(&market)
    }

    /// Why the campaign may not promote in `ctx`: every flag that applies
    /// among `CAMPAIGN_INACTIVE` (`ctx.timestamp_ms` outside the window),
    /// `NOT_ELIGIBLE_SURFACE` and `NOT_ELIGIBLE_MARKET`; empty when it may.
    pub fn ineligibility(&self, ctx: &Context) -> Reason {
        let mut r = Reason::empty();
        r.set(Reason::CAMPAIGN_INACTIVE, !self.is_active(ctx.timestamp_ms));
        r.set(
            Reason::NOT_ELIGIBLE_SURFACE,
            !self.allows_surface(ctx.surface),
        );
        r.set(Reason::NOT_ELIGIBLE_MARKET, !self.allows_market(ctx.market));
        r
    }

    /// Milliseconds since the pacing state was last updated, as seen at
    /// `timestamp_ms`: `Some(timestamp_ms - pacing_updated_ms)` when
    /// `pacing_updated_ms > 0` (0 when the update is not in the past, e.g.
    /// a second request in the same millisecond or a skewed clock), `None`
    /// when the state was never updated and the time step is unknown.
    ///
    /// ```
    /// # use oasis_sdk::testing::{CampaignSpec, RequestBuilder, NOW_MS};
    /// let req = RequestBuilder::new()
    ///     .campaign(CampaignSpec::new(1).pacing_updated_ms(NOW_MS - 60_000))
    ///     .campaign(CampaignSpec::new(2))
    ///     .build();
    /// assert_eq!(req.campaigns[0].pacing_dt_ms(NOW_MS), Some(60_000));
    /// assert_eq!(req.campaigns[0].pacing_dt_ms(NOW_MS - 90_000), Some(0));
    /// assert_eq!(req.campaigns[1].pacing_dt_ms(NOW_MS), None); // never updated
    /// ```
    pub fn pacing_dt_ms(&self, timestamp_ms: i64) -> Option<i64> {
        (self.pacing_updated_ms > 0)
            .then(|| timestamp_ms.saturating_sub(self.pacing_updated_ms).max(0))
    }

    /// Normalized delivery error: positive when under-delivering.
    /// `(expected_by_now - delivered) / delivery_target`, 0 without a target.
    pub fn delivery_error(&self) -> f64 {
        if self.delivery_target > 0.0 {
            (self.expected_by_now - self.delivered) / self.delivery_target
        } else {
            0.0
        }
    }
}

/// The candidates of a request, column by column.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Candidates {
    /// Number of candidates; every column except `features` has this many entries.
    pub count: u32,
    /// Base relevance from the recommender, higher is better. The Oasis host
    /// refuses non-finite values, but the contract does not promise it.
    pub relevance: Vec<f64>,
    /// Names of the candidate feature columns, once per request; only the
    /// features the policy declared. Resolve them with [`Request::feature`].
    pub feature_names: Vec<String>,
    /// Row-major: candidate `i`, feature `j` at `i * feature_names.len() + j`.
    pub features: Vec<f64>,
    /// Index into [`Request::campaigns`], or -1 for organic tracks.
    pub campaign: Vec<i32>,
    /// Primary artist, as a small integer key (equal keys, same artist).
    pub artist: Vec<u32>,
    /// Rights holder (label), as a small integer key.
    pub rights_holder: Vec<u32>,
    /// Promoted impressions of the track to this listener in the last 24 hours.
    pub impressions_24h: Vec<u32>,
    /// Promoted plays of the track in this session.
    pub session_promoted: Vec<u32>,
}

/// The rights holders of a request, column by column, indexed by the
/// rights-holder key of [`Candidates::rights_holder`] (keys are
/// `0..count`). Read it through [`Request::exposure_share_7d`] or
/// [`Candidate::holder_exposure_share_7d`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Holders {
    /// Number of rights holders; `exposure_share_7d` has this many entries.
    pub count: u32,
    /// Each holder's share of all attention over the last 7 days, in
    /// `[0, 1]` (attention at shown rank `k` is `1 / log2(1 + k)`); NaN when
    /// unknown.
    pub exposure_share_7d: Vec<f64>,
}

/// One scoring request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The listening context.
    pub context: Context,
    /// The candidate tracks, column by column; see [`Request::candidates()`]
    /// for a per-candidate view.
    pub candidates: Candidates,
    /// The campaigns the candidates refer to (by index, see [`Candidates::campaign`]).
    pub campaigns: Vec<Campaign>,
    /// The rights holders the candidates refer to (by key, see
    /// [`Candidates::rights_holder`]).
    pub holders: Holders,
}

/// A candidate feature column, resolved by name once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    column: usize,
}

impl Request {
    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.candidates.count as usize
    }

    /// Whether there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves a candidate feature column by name.
    ///
    /// The host sends exactly the columns the policy declared in its
    /// [`Metadata`](crate::Metadata) (required, then optional), whatever the
    /// caller sent: a declared column is always there (its values NaN where
    /// a candidate lacks it, read as `None` by [`Candidate::get`]), and an
    /// undeclared one never is. The SDK's test harness
    /// ([`testing::run`](crate::testing::run)) does the same, so a policy
    /// that reads a feature it did not declare fails its native tests with
    /// this error instead of silently reading nothing in production.
    ///
    /// # Errors
    /// [`PolicyError::InvalidRequest`](crate::PolicyError::InvalidRequest)
    /// naming the feature and saying how to declare it, when the request
    /// does not carry it.
    pub fn feature(&self, name: &str) -> Result<Feature, crate::PolicyError> {
        self.candidates
            .feature_names
            .iter()
            .position(|n| n == name)
            .map(|column| Feature { column })
            .ok_or_else(|| {
                crate::PolicyError::InvalidRequest(format!(
                    "candidate feature `{name}` is not in the request: the host sends only the features a policy declares \
                     (this request carries {:?}); declare it in metadata() with `.requires(&[\"{name}\"])`, \
                     or `.optional(&[\"{name}\"])` if candidates may lack it",
                    self.candidates.feature_names
                ))
            })
    }

    /// [`Request::feature`] for a feature declared optional: the same
    /// lookup, named for readability where values are often missing. An
    /// undeclared feature is the same error: it is never silently absent.
    ///
    /// # Errors
    /// As [`Request::feature`].
    pub fn optional_feature(&self, name: &str) -> Result<Feature, crate::PolicyError> {
        self.feature(name)
    }

    /// The number of top-ranked candidates the caller shows:
    /// [`Context::slate_size`] kept within `0..=len()`, the whole request
    /// when it is 0 (a caller or test that did not say).
    ///
    /// ```
    /// # use oasis_sdk::testing::{CandidateSpec, RequestBuilder};
    /// let three = || RequestBuilder::new()
    ///     .candidate(CandidateSpec::new(0.9))
    ///     .candidate(CandidateSpec::new(0.5))
    ///     .candidate(CandidateSpec::new(0.1));
    /// assert_eq!(three().build().slate_size(), 3); // as the host sends it
    /// assert_eq!(three().slate_size(2).build().slate_size(), 2);
    /// assert_eq!(three().slate_size(10).build().slate_size(), 3);
    /// ```
    pub fn slate_size(&self) -> usize {
        match self.context.slate_size as usize {
            0 => self.len(),
            k => k.min(self.len()),
        }
    }

    /// Rights holder `holder`'s share of all attention over the last 7
    /// days, in `[0, 1]`; `None` when unknown (NaN, not finite, or a key the
    /// request does not have).
    ///
    /// ```
    /// # use oasis_sdk::testing::{CandidateSpec, RequestBuilder};
    /// let req = RequestBuilder::new()
    ///     .candidate(CandidateSpec::new(0.9).rights_holder(0))
    ///     .candidate(CandidateSpec::new(0.5).rights_holder(1))
    ///     .holder_exposure_share_7d(0, 0.25)
    ///     .build();
    /// assert_eq!(req.exposure_share_7d(0), Some(0.25));
    /// assert_eq!(req.exposure_share_7d(1), None); // unknown: NaN
    /// assert_eq!(req.candidate(0).holder_exposure_share_7d(), Some(0.25));
    /// ```
    pub fn exposure_share_7d(&self, holder: u32) -> Option<f64> {
        self.holders
            .exposure_share_7d
            .get(holder as usize)
            .copied()
            .filter(|v| v.is_finite())
    }

    /// A context feature by name; `None` when absent or NaN.
    pub fn context_feature(&self, name: &str) -> Option<f64> {
        let ctx = &self.context;
        let i = ctx.feature_names.iter().position(|n| n == name)?;
        ctx.features.get(i).copied().filter(|v| !v.is_nan())
    }

    /// Candidate `index`. Panics if out of range.
    pub fn candidate(&self, index: usize) -> Candidate<'_> {
        assert!(index < self.len(), "candidate {index} out of range");
        Candidate { req: self, index }
    }

    /// All candidates in request order.
    pub fn candidates(&self) -> impl ExactSizeIterator<Item = Candidate<'_>> + '_ {
        (0..self.len()).map(move |index| Candidate { req: self, index })
    }

    /// Checks that the columns line up: every candidate column has `count`
    /// entries, `features` has `count * feature_names.len()`, campaign
    /// indices are -1 or in range, rights-holder keys are below
    /// `holders.count` and the holders' column has `holders.count` entries,
    /// and context features match their names.
    /// The SDK runs this before [`Policy::score`](crate::Policy::score), so
    /// the accessors of [`Candidate`] never index out of bounds.
    ///
    /// # Errors
    /// [`PolicyError::InvalidRequest`](crate::PolicyError::InvalidRequest)
    /// naming the column.
    pub fn check_shape(&self) -> Result<(), crate::PolicyError> {
        let k = &self.candidates;
        let n = k.count as usize;
        let bad = |what: String| Err(crate::PolicyError::InvalidRequest(what));
        for (name, len) in [
            ("relevance", k.relevance.len()),
            ("campaign", k.campaign.len()),
            ("artist", k.artist.len()),
            ("rights-holder", k.rights_holder.len()),
            ("impressions", k.impressions_24h.len()),
            ("session-promoted", k.session_promoted.len()),
        ] {
            if len != n {
                return bad(format!(
                    "column `{name}` has {len} entries for {n} candidates"
                ));
            }
        }
        let width = k.feature_names.len();
        if Some(k.features.len()) != n.checked_mul(width) {
            return bad(format!(
                "`features` has {} values for {n} candidates x {width} features",
                k.features.len()
            ));
        }
        // The scans fold every entry without an early exit (vectorisable,
        // no branch per candidate); only a request that fails looks for the
        // first bad entry. `c + 1` as u32 is above the campaign count
        // exactly when `c < -1 || c >= count`.
        let campaigns = u32::try_from(self.campaigns.len()).unwrap_or(u32::MAX);
        let past = |c: i32| (c as u32).wrapping_add(1) > campaigns;
        if k.campaign.iter().fold(false, |bad, &c| bad | past(c))
            && let Some(i) = k.campaign.iter().position(|&c| past(c))
        {
            return bad(format!(
                "candidate {i} refers to campaign {} of {}",
                k.campaign[i],
                self.campaigns.len()
            ));
        }
        let h = &self.holders;
        if h.exposure_share_7d.len() != h.count as usize {
            return bad(format!(
                "holders' `exposure-share-7d` has {} entries for {} rights holders",
                h.exposure_share_7d.len(),
                h.count
            ));
        }
        if k.rights_holder
            .iter()
            .fold(false, |bad, &r| bad | (r >= h.count))
            && let Some(i) = k.rights_holder.iter().position(|&r| r >= h.count)
        {
            return bad(format!(
                "candidate {i} refers to rights holder {} of {}",
                k.rights_holder[i], h.count
            ));
        }
        if self.context.features.len() != self.context.feature_names.len() {
            return bad("context features and their names differ in length".into());
        }
        Ok(())
    }

    /// A deterministic random generator seeded from the request's seed.
    /// Two calls return generators producing the same sequence.
    pub fn rng(&self) -> Rng {
        Rng::from_seed(self.context.seed)
    }
}

/// Whether a candidate's campaign may promote it in the request's context;
/// see [`Candidate::campaign_eligibility`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Eligibility<'a> {
    /// The track is in no campaign.
    Organic,
    /// The campaign is active at the request time and allows the request's
    /// surface and market. Policy-specific checks (caps, guardrails) remain.
    Eligible(&'a Campaign),
    /// The campaign may not promote here. The reason holds every flag that
    /// applies among `CAMPAIGN_INACTIVE`, `NOT_ELIGIBLE_SURFACE` and
    /// `NOT_ELIGIBLE_MARKET` (never empty, never anything else).
    Ineligible(Reason),
}

/// A view of one candidate.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    req: &'a Request,
    index: usize,
}

impl<'a> Candidate<'a> {
    /// Position in the request (results are aligned by it).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Base relevance from the recommender.
    pub fn relevance(&self) -> f64 {
        self.req.candidates.relevance[self.index]
    }

    /// Feature value; `None` when missing (NaN).
    pub fn get(&self, feature: Feature) -> Option<f64> {
        let width = self.req.candidates.feature_names.len();
        let v = self.req.candidates.features[self.index * width + feature.column];
        (!v.is_nan()).then_some(v)
    }

    /// The candidate's campaign, `None` for organic tracks.
    pub fn campaign(&self) -> Option<&'a Campaign> {
        let c = self.req.candidates.campaign[self.index];
        usize::try_from(c)
            .ok()
            .and_then(|c| self.req.campaigns.get(c))
    }

    /// The campaign gate every promoting policy applies: is the candidate in
    /// a campaign that is active at `context.timestamp_ms` and allows
    /// `context.surface` and `context.market`?
    ///
    /// [`Eligibility::Ineligible`] reports every failing check, so a policy
    /// can pass it straight to [`Decisions::mark`](crate::Decisions::mark).
    ///
    /// ```
    /// use oasis_sdk::testing::{CampaignSpec, CandidateSpec, NOW_MS, RequestBuilder};
    /// use oasis_sdk::{Eligibility, Reason, Surface};
    ///
    /// let req = RequestBuilder::new()
    ///     .surface(Surface::Radio)
    ///     .market("SE")
    ///     .campaign(CampaignSpec::new(1).markets(&["SE"]))
    ///     .campaign(CampaignSpec::new(2).window(NOW_MS - 10, NOW_MS).markets(&["NO"]))
    ///     .candidate(CandidateSpec::new(0.8).campaign(0))
    ///     .candidate(CandidateSpec::new(0.7).campaign(1))
    ///     .candidate(CandidateSpec::new(0.6))
    ///     .build();
    /// assert!(matches!(
    ///     req.candidate(0).campaign_eligibility(),
    ///     Eligibility::Eligible(c) if c.key == 1
    /// ));
    /// assert_eq!(
    ///     req.candidate(1).campaign_eligibility(),
    ///     Eligibility::Ineligible(Reason::CAMPAIGN_INACTIVE | Reason::NOT_ELIGIBLE_MARKET)
    /// );
    /// assert_eq!(req.candidate(2).campaign_eligibility(), Eligibility::Organic);
    /// ```
    pub fn campaign_eligibility(&self) -> Eligibility<'a> {
        let Some(camp) = self.campaign() else {
            return Eligibility::Organic;
        };
        let block = camp.ineligibility(&self.req.context);
        if block.is_empty() {
            Eligibility::Eligible(camp)
        } else {
            Eligibility::Ineligible(block)
        }
    }

    /// Primary artist key.
    pub fn artist(&self) -> u32 {
        self.req.candidates.artist[self.index]
    }

    /// Rights holder key.
    pub fn rights_holder(&self) -> u32 {
        self.req.candidates.rights_holder[self.index]
    }

    /// The rights holder's share of all attention over the last 7 days
    /// ([`Request::exposure_share_7d`] of [`Candidate::rights_holder`]);
    /// `None` when unknown.
    pub fn holder_exposure_share_7d(&self) -> Option<f64> {
        self.req.exposure_share_7d(self.rights_holder())
    }

    /// Promoted impressions to this listener in the last 24 hours.
    pub fn impressions_24h(&self) -> u32 {
        self.req.candidates.impressions_24h[self.index]
    }

    /// Promoted plays of this track in this session.
    pub fn session_promoted(&self) -> u32 {
        self.req.candidates.session_promoted[self.index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CampaignSpec, CandidateSpec, NOW_MS, RequestBuilder};

    /// Eligibility of a campaign track on autoplay in SE at `NOW_MS`:
    /// `Ok(campaign key)` when eligible, `Err(reasons)` otherwise.
    fn check(campaign: CampaignSpec) -> Result<u32, Reason> {
        let req = RequestBuilder::new()
            .surface(Surface::Autoplay)
            .market("SE")
            .campaign(campaign)
            .candidate(CandidateSpec::new(0.5).campaign(0))
            .build();
        match req.candidate(0).campaign_eligibility() {
            Eligibility::Eligible(c) => Ok(c.key),
            Eligibility::Ineligible(r) => {
                assert_eq!(r, req.campaigns[0].ineligibility(&req.context));
                Err(r)
            }
            Eligibility::Organic => panic!("a campaign track read as organic"),
        }
    }

    #[test]
    fn organic_tracks_have_no_campaign_to_check() {
        let req = RequestBuilder::new()
            .campaign(CampaignSpec::new(1))
            .candidate(CandidateSpec::new(0.5))
            .build();
        assert_eq!(
            req.candidate(0).campaign_eligibility(),
            Eligibility::Organic
        );
    }

    #[test]
    fn an_allowed_campaign_is_eligible_and_returned() {
        let spec = CampaignSpec::new(9)
            .surfaces(&[Surface::Radio, Surface::Autoplay])
            .markets(&["NO", "SE"]);
        assert_eq!(check(spec), Ok(9));
        // No market list: every market. Lower-case codes pack the same.
        assert_eq!(check(CampaignSpec::new(1)), Ok(1));
        assert_eq!(check(CampaignSpec::new(2).markets(&["se"])), Ok(2));
    }

    #[test]
    fn the_window_is_start_inclusive_end_exclusive() {
        assert_eq!(
            check(CampaignSpec::new(1).window(NOW_MS, NOW_MS + 1)),
            Ok(1)
        );
        for (start, end) in [(NOW_MS - 10, NOW_MS), (NOW_MS + 1, NOW_MS + 10)] {
            assert_eq!(
                check(CampaignSpec::new(1).window(start, end)),
                Err(Reason::CAMPAIGN_INACTIVE),
                "[{start}, {end})"
            );
        }
    }

    #[test]
    fn every_failing_check_is_reported() {
        assert_eq!(
            check(CampaignSpec::new(1).surfaces(&[Surface::Radio])),
            Err(Reason::NOT_ELIGIBLE_SURFACE)
        );
        assert_eq!(
            check(CampaignSpec::new(1).markets(&["NO"])),
            Err(Reason::NOT_ELIGIBLE_MARKET)
        );
        assert_eq!(
            check(
                CampaignSpec::new(1)
                    .window(NOW_MS + 1, NOW_MS + 2)
                    .surfaces(&[])
                    .markets(&["US"])
            ),
            Err(Reason::CAMPAIGN_INACTIVE
                | Reason::NOT_ELIGIBLE_SURFACE
                | Reason::NOT_ELIGIBLE_MARKET)
        );
    }

    #[test]
    fn a_campaign_index_outside_the_table_is_named_with_its_candidate() {
        let req = RequestBuilder::new()
            .campaign(CampaignSpec::new(1))
            .campaign(CampaignSpec::new(1))
            .candidate(CandidateSpec::new(0.5))
            .candidate(CandidateSpec::new(0.5).campaign(1))
            .candidate(CandidateSpec::new(0.5).campaign(0))
            .build();
        req.check_shape().unwrap();
        // -1 (organic) and 0..count are in range; -2, count and beyond,
        // and i32::MIN/MAX are not, wherever they stand.
        for bad in [-2, 2, 3, i32::MAX, i32::MIN] {
            for at in 0..3 {
                let mut r = req.clone();
                r.candidates.campaign[at] = bad;
                let err = r.check_shape().unwrap_err().to_string();
                assert!(
                    err.contains(&format!("candidate {at} refers to campaign {bad} of 2")),
                    "{bad} at {at}: {err}"
                );
            }
        }
    }

    #[test]
    fn the_holders_table_must_cover_every_rights_holder_key() {
        let req = RequestBuilder::new()
            .candidate(CandidateSpec::new(0.5).rights_holder(2))
            .holder_exposure_share_7d(0, 0.4)
            .build();
        assert_eq!(req.holders.count, 3, "sized to the largest key");
        assert_eq!(req.exposure_share_7d(0), Some(0.4));
        assert_eq!(req.candidate(0).holder_exposure_share_7d(), None);
        assert_eq!(req.exposure_share_7d(7), None, "no such holder");
        req.check_shape().unwrap();

        let mut short = req.clone();
        short.holders.count = 2;
        short.holders.exposure_share_7d.pop();
        let err = short.check_shape().unwrap_err().to_string();
        assert!(
            err.contains("candidate 0 refers to rights holder 2 of 2"),
            "{err}"
        );
        let mut ragged = req;
        ragged.holders.exposure_share_7d.push(0.1);
        let err = ragged.check_shape().unwrap_err().to_string();
        assert!(err.contains("has 4 entries for 3 rights holders"), "{err}");
    }
}
