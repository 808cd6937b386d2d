//! Reusable decision rules shared by several policies.
//!
//! A policy crate cannot depend on another policy crate: each one is a
//! `cdylib` exporting the same component symbols. Rules that more than one
//! policy applies therefore live here, with one implementation and one set
//! of tests.
//!
//! * [`RelevanceGuardrail`] is **the** relevance guardrail, with one meaning
//!   in every policy: *a campaign track is never lifted when it is not
//!   relevant enough for this listener*: base relevance below `s_min` (or
//!   NaN), or, for a policy that uses the predicted skip probability, `p_skip`
//!   above `max_p_skip` (or missing). Such a track is **not eligible** for
//!   promotion: it keeps its base relevance as its score, propensity 0,
//!   reason `RELEVANCE_GUARDRAIL`, plus `MISSING_FEATURE` when `p_skip` is
//!   required but missing. Every example policy that lifts tracks applies it
//!   to its campaign tracks, next to the campaign gate.
//! * [`Guard`] is the *guarded boost*: the campaign gate
//!   ([`Candidate::campaign_eligibility`]), the [`RelevanceGuardrail`] with
//!   `max_p_skip = theta` ([`P_SKIP`]), and the relevance-proportional boost
//!   `beta * (s - s_min)` of the tracks that pass. Use it when a policy promotes campaign
//!   tracks by how far their relevance clears a floor, behind the skip
//!   guardrail. [`Guard::evaluate`] decides for one candidate and returns a
//!   [`Verdict`]; [`Verdict::apply`] records that verdict in [`Decisions`]
//!   the way a deterministic policy does (propensity 1 when promoted).
//!   [`Guard::scaled`] scales the boost, for example by a per-campaign
//!   pacing multiplier.
//! * [`slate_cap`] keeps the `k_max` promoted tracks with the highest boosts
//!   and demotes the others back to their base score with `SLATE_CAP`, with
//!   deterministic tie-breaking. Use it in deterministic policies that
//!   promote each track by its own boost and limit promoted tracks per
//!   slate. It is not for randomized choices (demoting a drawn track would
//!   falsify its logged propensity) nor for per-group limits such as one
//!   promoted track per artist: that is [`cap_per_group`].
//! * [`cap_per_group`] keeps, among boosted candidates, the `per_group`
//!   with the largest boosts in each group (artist, rights holder, campaign…)
//!   and marks the others with a reason, before anything is promoted.
//! * [`rank_by_score`] and [`top_by_relevance`] give the slate order the
//!   recommender would show (score descending, ties in request order), for
//!   rank-based attention and exploration among the top tracks.
//!
//! ```
//! use oasis_sdk::blocks::{Guard, P_SKIP, slate_cap};
//! use oasis_sdk::testing::{CampaignSpec, CandidateSpec, RequestBuilder};
//! use oasis_sdk::{Decisions, Reason};
//!
//! let req = RequestBuilder::new()
//!     .features(&[P_SKIP])
//!     .campaign(CampaignSpec::new(1))
//!     .candidate(CandidateSpec::new(0.8).feature(P_SKIP, 0.1).campaign(0))
//!     .candidate(CandidateSpec::new(0.6).feature(P_SKIP, 0.1).campaign(0))
//!     .candidate(CandidateSpec::new(0.9).feature(P_SKIP, 0.9).campaign(0)) // skip risk
//!     .candidate(CandidateSpec::new(0.7)) // organic
//!     .build();
//! let p_skip = req.feature(P_SKIP).unwrap();
//! let guard = Guard { theta: 0.35, beta: 0.5, s_min: 0.2 };
//!
//! let mut out = Decisions::passthrough(&req);
//! let base = out.scores.clone();
//! let mut promoted = Vec::new();
//! for c in req.candidates() {
//!     let verdict = guard.evaluate(c, base[c.index()], p_skip);
//!     if let Some(boost) = verdict.apply(&mut out, c.index()) {
//!         promoted.push((c.index(), boost));
//!     }
//! }
//! slate_cap(&mut out, &base, &mut promoted, 1); // one promoted track per slate
//!
//! assert_eq!(out.reasons[0], Reason::PROMOTED);
//! assert_eq!(out.scores[0], 0.8 + 0.5 * (0.8 - 0.2));
//! assert_eq!(out.reasons[1], Reason::SLATE_CAP); // smaller boost, back to 0.6
//! assert_eq!(out.scores[1], 0.6);
//! assert_eq!(out.reasons[2], Reason::RELEVANCE_GUARDRAIL);
//! assert_eq!(out.reasons[3], Reason::ORGANIC);
//! assert_eq!(out.eligible, vec![true, true, false, false]);
//! ```

use crate::{Candidate, Decisions, Eligibility, Feature, Reason};

/// The relevance guardrail every example policy that lifts campaign tracks
/// applies, with one meaning: **a campaign track is never lifted when it is
/// not relevant enough for this listener.**
///
/// A track fails it when
///
/// * its base relevance `s` is below `s_min` (a NaN relevance fails too;
///   `s == s_min` passes), or
/// * the policy uses the predicted skip probability (`max_p_skip` is
///   `Some`) and `p_skip > max_p_skip` (`p_skip == max_p_skip` passes), or
///   `p_skip` is missing (NaN): the guardrail cannot vouch for the track.
///
/// A track that fails is **not eligible** for promotion: eligible `false`,
/// its base relevance as score, propensity 0, and reason
/// `RELEVANCE_GUARDRAIL`, plus `MISSING_FEATURE` when it failed for a
/// missing `p_skip` ([`RelevanceGuardrail::check`] returns exactly those
/// reasons, [`RelevanceGuardrail::hold_back`] records them). Policies report
/// it alongside the campaign gate's reasons, every failing condition at
/// once.
///
/// Settings: policies call the threshold `s_min` and, when they read
/// `p_skip`, `theta` (`max_p_skip = Some(theta)`).
///
/// ```
/// use oasis_sdk::blocks::RelevanceGuardrail;
/// use oasis_sdk::Reason;
///
/// let g = RelevanceGuardrail { s_min: 0.2, max_p_skip: Some(0.35) };
/// assert_eq!(g.check(0.8, Some(0.35)), Reason::empty());
/// assert_eq!(g.check(0.1, Some(0.1)), Reason::RELEVANCE_GUARDRAIL);
/// assert_eq!(g.check(0.8, Some(0.5)), Reason::RELEVANCE_GUARDRAIL);
/// assert_eq!(g.check(0.8, None), Reason::RELEVANCE_GUARDRAIL | Reason::MISSING_FEATURE);
/// // A policy that does not use p_skip: relevance alone.
/// let g = RelevanceGuardrail { s_min: 0.2, max_p_skip: None };
/// assert_eq!(g.check(0.2, None), Reason::empty());
/// assert_eq!(g.check(f64::NAN, None), Reason::RELEVANCE_GUARDRAIL);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelevanceGuardrail {
    /// Lowest base relevance a lifted track may have (finite).
    pub s_min: f64,
    /// Highest predicted skip probability ([`P_SKIP`]) a lifted track may
    /// have, for a policy that uses it (in `[0, 1]`); `None` for a policy
    /// that does not read `p_skip`.
    pub max_p_skip: Option<f64>,
}

impl RelevanceGuardrail {
    /// The guardrail's reasons for a track with base relevance `s` and
    /// predicted skip probability `p_skip` (`None` when missing; ignored
    /// when `max_p_skip` is `None`): empty when the track may be lifted,
    /// else `RELEVANCE_GUARDRAIL`, with `MISSING_FEATURE` when `p_skip` is
    /// used but missing.
    pub fn check(&self, s: f64, p_skip: Option<f64>) -> Reason {
        let mut r = Reason::empty();
        // A NaN relevance is not relevant enough.
        if s.is_nan() || s < self.s_min {
            r |= Reason::RELEVANCE_GUARDRAIL;
        }
        if let Some(max) = self.max_p_skip {
            match p_skip {
                None => r |= Reason::RELEVANCE_GUARDRAIL | Reason::MISSING_FEATURE,
                Some(p) if p.is_nan() || p > max => r |= Reason::RELEVANCE_GUARDRAIL,
                Some(_) => {}
            }
        }
        r
    }

    /// [`RelevanceGuardrail::check`] for candidate `c`, reading its
    /// `p_skip` from the resolved column `p_skip` (`None`: the policy does
    /// not use it).
    pub fn check_candidate(&self, c: Candidate<'_>, s: f64, p_skip: Option<Feature>) -> Reason {
        self.check(s, p_skip.and_then(|f| c.get(f)))
    }

    /// Records that candidate `i` is held back for `reasons` (those of
    /// [`RelevanceGuardrail::check`], possibly with the campaign gate's):
    /// not eligible, score back to its base relevance `base`, propensity 0,
    /// not `PROMOTED`, and `reasons` marked.
    pub fn hold_back(out: &mut Decisions, i: usize, base: f64, reasons: Reason) {
        out.eligible[i] = false;
        out.scores[i] = base;
        out.propensity[i] = 0.0;
        out.reasons[i] = (out.reasons[i] - Reason::PROMOTED) | reasons;
    }
}

/// Name of the candidate feature holding the predicted skip probability that
/// [`RelevanceGuardrail`] checks against `max_p_skip` ([`Guard`]: `theta`); resolve it with
/// [`Request::feature`](crate::Request::feature) and declare it with
/// [`Metadata::requires`](crate::Metadata::requires).
pub const P_SKIP: &str = "p_skip";

/// Parameters of the guarded boost; the policy validates them in its
/// settings (`theta` in [0, 1], `beta` >= 0, `s_min` finite).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guard {
    /// The guardrail's `max_p_skip`: `p_skip > theta` (or missing) makes a
    /// campaign track ineligible with `RELEVANCE_GUARDRAIL`.
    pub theta: f64,
    /// Boost per unit of relevance above `s_min`.
    pub beta: f64,
    /// The guardrail's `s_min`: a campaign track with relevance below it is
    /// ineligible with `RELEVANCE_GUARDRAIL`, never lifted.
    pub s_min: f64,
}

/// What a [`Guard`] decides for one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The track is in no campaign: nothing to decide (it keeps `ORGANIC`).
    Organic,
    /// A campaign track that may not be promoted, with every reason that
    /// applies: the campaign gate's `CAMPAIGN_INACTIVE`,
    /// `NOT_ELIGIBLE_SURFACE` and `NOT_ELIGIBLE_MARKET`, plus the
    /// [`RelevanceGuardrail`]'s `RELEVANCE_GUARDRAIL` (`s < s_min`,
    /// `p_skip > theta` or `p_skip` missing) and `MISSING_FEATURE` (`p_skip`
    /// missing). Never empty.
    Ineligible(Reason),
    /// An eligible campaign track: it passed the campaign gate and the
    /// guardrail.
    Eligible {
        /// `beta * (s - s_min)`, never negative when `beta >= 0` (0 at
        /// `s == s_min`). Only a positive boost promotes.
        boost: f64,
    },
}

impl Guard {
    /// The relevance guardrail this guard applies: `s_min`, and `theta` as
    /// `max_p_skip`.
    pub fn guardrail(&self) -> RelevanceGuardrail {
        RelevanceGuardrail {
            s_min: self.s_min,
            max_p_skip: Some(self.theta),
        }
    }

    /// Applies the eligibility rules and the boost formula to `c`, whose base
    /// relevance is `s` (finite; sanitize non-finite relevance first), with
    /// `p_skip` the resolved [`P_SKIP`] column.
    ///
    /// 1. No campaign: [`Verdict::Organic`].
    /// 2. The campaign gate [`Candidate::campaign_eligibility`] and the
    ///    [`RelevanceGuardrail`] (`s < s_min`, `p_skip > theta` or missing).
    ///    Any reason makes it [`Verdict::Ineligible`] with all of them.
    /// 3. Otherwise [`Verdict::Eligible`] with boost `beta * (s - s_min)`.
    pub fn evaluate(&self, c: Candidate<'_>, s: f64, p_skip: Feature) -> Verdict {
        let block = match c.campaign_eligibility() {
            Eligibility::Organic => return Verdict::Organic,
            Eligibility::Eligible(_) => Reason::empty(),
            Eligibility::Ineligible(r) => r,
        } | self.guardrail().check_candidate(c, s, Some(p_skip));
        if !block.is_empty() {
            return Verdict::Ineligible(block);
        }
        Verdict::Eligible {
            boost: self.beta * (s - self.s_min),
        }
    }

    /// The same guard with its boost scaled by `factor` (`beta` becomes
    /// `factor * beta`), e.g. a per-campaign pacing multiplier: the boost is
    /// then `(factor * beta) * (s - s_min)`. Eligibility does not change.
    #[must_use]
    pub fn scaled(self, factor: f64) -> Guard {
        Guard {
            beta: factor * self.beta,
            ..self
        }
    }
}

/// Frequency caps: a campaign track already promoted to this listener
/// `max_daily` times in 24 h, or `max_session` times in this session, is not
/// eligible (`FREQ_CAPPED`). The counts are the request's `impressions_24h`
/// and `session_promoted` (the host fills them from its delivery state). A
/// cap of 0 caps nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrequencyCap {
    /// Promoted impressions of the track to the listener in 24 h.
    pub max_daily: u32,
    /// Promoted plays of the track in the session.
    pub max_session: u32,
}

impl FrequencyCap {
    /// `FREQ_CAPPED` when `c` reached a cap, else empty.
    pub fn check(&self, c: Candidate<'_>) -> Reason {
        let reached = |count: u32, cap: u32| cap > 0 && count >= cap;
        if reached(c.impressions_24h(), self.max_daily)
            || reached(c.session_promoted(), self.max_session)
        {
            Reason::FREQ_CAPPED
        } else {
            Reason::empty()
        }
    }
}

impl Verdict {
    /// This verdict with the extra blocking reasons `block` (e.g. a
    /// [`FrequencyCap`]'s): an eligible track becomes ineligible with them,
    /// an ineligible one gains them, an organic one stays organic.
    #[must_use]
    pub fn blocked_by(self, block: Reason) -> Verdict {
        match self {
            _ if block.is_empty() => self,
            Verdict::Organic => Verdict::Organic,
            Verdict::Ineligible(r) => Verdict::Ineligible(r | block),
            Verdict::Eligible { .. } => Verdict::Ineligible(block),
        }
    }

    /// Records this verdict for candidate `i` the way a deterministic policy
    /// does, and returns the boost when the candidate was promoted:
    ///
    /// * [`Verdict::Organic`]: nothing changes.
    /// * [`Verdict::Ineligible`]: its reasons are marked (the candidate
    ///   stays not eligible, at its score, propensity 0).
    /// * [`Verdict::Eligible`]: the candidate is marked eligible, and a
    ///   positive boost promotes it ([`Decisions::promote`], propensity 1).
    ///
    /// Collect the returned `(i, boost)` pairs for [`slate_cap`].
    pub fn apply(self, out: &mut Decisions, i: usize) -> Option<f64> {
        match self {
            Verdict::Organic => None,
            Verdict::Ineligible(r) => {
                out.mark(i, r);
                None
            }
            Verdict::Eligible { boost } => {
                out.eligible[i] = true;
                if boost > 0.0 {
                    out.promote(i, boost, 1.0);
                    Some(boost)
                } else {
                    None
                }
            }
        }
    }
}

/// Keeps at most `k_max` promoted candidates per slate and demotes the rest.
///
/// `promoted` lists `(candidate index, boost)` for the candidates `out`
/// promoted; `base` holds every candidate's base score. The candidates are
/// ranked by boost, descending; ties go to the higher base score, then to
/// the earlier candidate in the request, so the outcome does not depend on
/// the order of `promoted`. The first `k_max` keep their promotion; each
/// other one is demoted ([`Decisions::demote`]) back to `base[i]` with
/// `SLATE_CAP` and propensity 0, staying eligible and keeping its other
/// reasons.
///
/// On return `promoted` is sorted in that rank order.
pub fn slate_cap(out: &mut Decisions, base: &[f64], promoted: &mut [(usize, f64)], k_max: usize) {
    promoted.sort_by(|&(i, bi), &(j, bj)| {
        bj.total_cmp(&bi)
            .then(base[j].total_cmp(&base[i]))
            .then(i.cmp(&j))
    });
    for &(i, _) in promoted.iter().skip(k_max) {
        out.demote(i, base[i], Reason::SLATE_CAP);
    }
}

/// Keeps, among `boosted` (`(candidate index, boost)` of candidates not yet
/// promoted), at most `per_group` per group and marks the others in `out`
/// with `reason` (they stay eligible, at their current score). In each
/// group the largest boosts win; ties go to the earlier candidate in the
/// request. `group(i)` gives candidate `i`'s group: an artist
/// ([`Candidate::artist`]), a rights holder, a campaign…
///
/// On return `boosted` holds the kept candidates in request order.
///
/// ```
/// use oasis_sdk::blocks::cap_per_group;
/// use oasis_sdk::testing::{CandidateSpec, RequestBuilder};
/// use oasis_sdk::{Decisions, Reason};
///
/// let req = RequestBuilder::new()
///     .candidate(CandidateSpec::new(0.5).artist(7))
///     .candidate(CandidateSpec::new(0.9).artist(7))
///     .candidate(CandidateSpec::new(0.4).artist(8))
///     .build();
/// let mut out = Decisions::passthrough(&req);
/// let mut boosted = vec![(0, 0.1), (1, 0.2), (2, 0.05)];
/// // One promoted track per artist.
/// cap_per_group(&mut out, &mut boosted, 1, |i| req.candidate(i).artist(), Reason::DIVERSITY_PENALTY);
/// assert_eq!(boosted, vec![(1, 0.2), (2, 0.05)]);
/// assert!(out.reasons[0].contains(Reason::DIVERSITY_PENALTY));
/// ```
pub fn cap_per_group<K: Eq + core::hash::Hash>(
    out: &mut Decisions,
    boosted: &mut Vec<(usize, f64)>,
    per_group: usize,
    group: impl Fn(usize) -> K,
    reason: Reason,
) {
    boosted.sort_by(|&(i, bi), &(j, bj)| bj.total_cmp(&bi).then(i.cmp(&j)));
    let mut taken: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    boosted.retain(|&(i, _)| {
        let n = taken.entry(group(i)).or_default();
        *n += 1;
        if *n > per_group {
            out.mark(i, reason);
            false
        } else {
            true
        }
    });
    boosted.sort_by_key(|&(i, _)| i);
}

/// Candidate indices in slate order: `scores` descending (by
/// `f64::total_cmp`, so NaN sorts first if positive, last if negative: keep
/// scores finite), ties in request order.
///
/// ```
/// assert_eq!(oasis_sdk::blocks::rank_by_score(&[0.2, 0.9, 0.2, 0.5]), vec![1, 3, 0, 2]);
/// ```
pub fn rank_by_score(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]).then(i.cmp(&j)));
    order
}

/// The `k` candidates among `indices` with the highest `scores`, in slate
/// order (ties in request order): e.g. the most relevant eligible tracks.
///
/// ```
/// let top = oasis_sdk::blocks::top_by_relevance(&[0.2, 0.9, 0.7, 0.5], vec![0, 2, 3], 2);
/// assert_eq!(top, vec![2, 3]);
/// ```
pub fn top_by_relevance(scores: &[f64], mut indices: Vec<usize>, k: usize) -> Vec<usize> {
    indices.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]).then(i.cmp(&j)));
    indices.truncate(k);
    indices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Request;
    use crate::testing::{CampaignSpec, CandidateSpec, NOW_MS, RequestBuilder};

    const GUARD: Guard = Guard {
        theta: 0.35,
        beta: 0.5,
        s_min: 0.2,
    };

    #[test]
    fn frequency_caps_are_inclusive_and_zero_caps_nothing() {
        let req = request(vec![
            CandidateSpec::new(0.8).campaign(0).impressions(2, 0),
            CandidateSpec::new(0.8).campaign(0).impressions(3, 0),
            CandidateSpec::new(0.8).campaign(0).impressions(0, 1),
        ]);
        let caps = FrequencyCap {
            max_daily: 3,
            max_session: 1,
        };
        let checked: Vec<Reason> = req.candidates().map(|c| caps.check(c)).collect();
        assert_eq!(
            checked,
            [Reason::empty(), Reason::FREQ_CAPPED, Reason::FREQ_CAPPED]
        );
        let off = FrequencyCap::default();
        assert!(req.candidates().all(|c| off.check(c).is_empty()));
        // A cap blocks an eligible verdict and adds to an ineligible one.
        let eligible = Verdict::Eligible { boost: 0.1 };
        assert_eq!(
            eligible.blocked_by(Reason::FREQ_CAPPED),
            Verdict::Ineligible(Reason::FREQ_CAPPED)
        );
        assert_eq!(eligible.blocked_by(Reason::empty()), eligible);
        assert_eq!(
            Verdict::Ineligible(Reason::SLATE_CAP).blocked_by(Reason::FREQ_CAPPED),
            Verdict::Ineligible(Reason::SLATE_CAP | Reason::FREQ_CAPPED)
        );
        assert_eq!(
            Verdict::Organic.blocked_by(Reason::FREQ_CAPPED),
            Verdict::Organic
        );
    }

    /// Campaign 0 is allowed, campaign 1 has ended.
    fn request(candidates: Vec<CandidateSpec>) -> Request {
        let mut b = RequestBuilder::new()
            .features(&[P_SKIP])
            .campaign(CampaignSpec::new(1))
            .campaign(CampaignSpec::new(2).window(NOW_MS - 10, NOW_MS));
        for c in candidates {
            b = b.candidate(c);
        }
        b.build()
    }

    fn cand(s: f64, p_skip: f64) -> CandidateSpec {
        CandidateSpec::new(s).feature(P_SKIP, p_skip).campaign(0)
    }

    fn verdicts(guard: Guard, req: &Request) -> Vec<Verdict> {
        let p_skip = req.feature(P_SKIP).unwrap();
        req.candidates()
            .map(|c| guard.evaluate(c, c.relevance(), p_skip))
            .collect()
    }

    #[test]
    fn organic_tracks_get_no_verdict() {
        let req = request(vec![CandidateSpec::new(0.9).feature(P_SKIP, 0.9)]);
        assert_eq!(verdicts(GUARD, &req), vec![Verdict::Organic]);
    }

    #[test]
    fn campaign_gate_and_guardrail_report_every_reason() {
        const G: Reason = Reason::RELEVANCE_GUARDRAIL;
        const MISSING: Reason = Reason::RELEVANCE_GUARDRAIL.union(Reason::MISSING_FEATURE);
        let req = request(vec![
            cand(0.8, 0.9).campaign(1),          // ended, skip risk
            CandidateSpec::new(0.8).campaign(1), // ended, p_skip missing
            cand(0.8, 0.1).campaign(1),          // ended only
            cand(0.8, 0.36),                     // skip risk only
            CandidateSpec::new(0.8).campaign(0), // p_skip missing only
            cand(0.8, f64::INFINITY),            // infinite skip risk
            cand(0.1, 0.9),                      // irrelevant and skip risk
            cand(0.15, 0.0),                     // below s_min only
            cand(0.1, 0.0).campaign(1),          // ended and below s_min
        ]);
        assert_eq!(
            verdicts(GUARD, &req),
            vec![
                Verdict::Ineligible(Reason::CAMPAIGN_INACTIVE | G),
                Verdict::Ineligible(Reason::CAMPAIGN_INACTIVE | MISSING),
                Verdict::Ineligible(Reason::CAMPAIGN_INACTIVE),
                Verdict::Ineligible(G),
                Verdict::Ineligible(MISSING),
                Verdict::Ineligible(G),
                Verdict::Ineligible(G),
                Verdict::Ineligible(G),
                Verdict::Ineligible(Reason::CAMPAIGN_INACTIVE | G),
            ]
        );
    }

    #[test]
    fn the_guardrail_has_one_meaning_with_or_without_p_skip() {
        let relevance_only = RelevanceGuardrail {
            s_min: 0.2,
            max_p_skip: None,
        };
        let with_skip = RelevanceGuardrail {
            max_p_skip: Some(0.35),
            ..relevance_only
        };
        let g = Reason::RELEVANCE_GUARDRAIL;
        for (s, p, alone, skip) in [
            (0.2, Some(0.35), Reason::empty(), Reason::empty()), // both bounds inclusive
            (0.19, Some(0.1), g, g),
            (f64::NAN, Some(0.1), g, g),
            (0.8, Some(0.36), Reason::empty(), g),
            (0.8, Some(f64::NAN), Reason::empty(), g), // a NaN that is not None
            (0.8, None, Reason::empty(), g | Reason::MISSING_FEATURE),
            (0.1, None, g, g | Reason::MISSING_FEATURE),
        ] {
            assert_eq!(relevance_only.check(s, p), alone, "s {s}, p_skip {p:?}");
            assert_eq!(with_skip.check(s, p), skip, "s {s}, p_skip {p:?}");
        }
        assert_eq!(GUARD.guardrail(), with_skip);
    }

    #[test]
    fn hold_back_undoes_a_promotion() {
        let req = request(vec![cand(0.6, 0.1)]);
        let mut out = Decisions::passthrough(&req);
        out.promote(0, 0.3, 1.0);
        RelevanceGuardrail::hold_back(&mut out, 0, 0.6, Reason::RELEVANCE_GUARDRAIL);
        assert_eq!(out.scores, vec![0.6]);
        assert_eq!(out.eligible, vec![false]);
        assert_eq!(out.propensity, vec![0.0]);
        assert_eq!(out.reasons, vec![Reason::RELEVANCE_GUARDRAIL]);
    }

    #[test]
    fn eligible_tracks_are_boosted_by_relevance_above_s_min() {
        let req = request(vec![
            cand(0.8, 0.35), // p_skip exactly theta: allowed
            cand(0.2, 0.0),  // exactly s_min: eligible, zero boost
        ]);
        assert_eq!(
            verdicts(GUARD, &req),
            vec![
                Verdict::Eligible {
                    boost: 0.5 * (0.8 - 0.2),
                },
                Verdict::Eligible { boost: 0.0 },
            ]
        );
    }

    #[test]
    fn scaled_multiplies_the_boost_and_keeps_eligibility() {
        let req = request(vec![cand(0.8, 0.1), cand(0.8, 0.5), cand(0.1, 0.1)]);
        let m = 0.3;
        let scaled = GUARD.scaled(m);
        assert_eq!(scaled.beta, m * GUARD.beta);
        assert_eq!((scaled.theta, scaled.s_min), (GUARD.theta, GUARD.s_min));
        let v = verdicts(scaled, &req);
        assert_eq!(
            v[0],
            Verdict::Eligible {
                boost: m * GUARD.beta * (0.8 - GUARD.s_min),
            }
        );
        assert_eq!(&v[1..], &verdicts(GUARD, &req)[1..]);
    }

    #[test]
    fn apply_records_each_verdict() {
        let req = request(vec![
            CandidateSpec::new(0.5),
            cand(0.5, 0.9),
            cand(0.1, 0.1),
            cand(0.2, 0.1),
            cand(0.6, 0.1),
        ]);
        let mut out = Decisions::passthrough(&req);
        let got: Vec<Option<f64>> = verdicts(GUARD, &req)
            .into_iter()
            .enumerate()
            .map(|(i, v)| v.apply(&mut out, i))
            .collect();
        let boost = 0.5 * (0.6 - 0.2);
        assert_eq!(got, vec![None, None, None, None, Some(boost)]);
        assert_eq!(out.eligible, vec![false, false, false, true, true]);
        assert_eq!(
            out.reasons,
            vec![
                Reason::ORGANIC,
                Reason::RELEVANCE_GUARDRAIL,
                Reason::RELEVANCE_GUARDRAIL,
                Reason::empty(),
                Reason::PROMOTED,
            ]
        );
        assert_eq!(out.scores, vec![0.5, 0.5, 0.1, 0.2, 0.6 + boost]);
        assert_eq!(out.propensity, vec![0.0, 0.0, 0.0, 0.0, 1.0]);
    }

    /// Promotes every candidate by `boosts[i]` and applies the slate cap.
    fn capped(base: &[f64], boosts: &[f64], order: &[usize], k_max: usize) -> Decisions {
        let req = request(base.iter().map(|&s| cand(s, 0.1)).collect());
        let mut out = Decisions::passthrough(&req);
        let mut promoted = Vec::new();
        for &i in order {
            out.promote(i, boosts[i], 1.0);
            promoted.push((i, boosts[i]));
        }
        slate_cap(&mut out, base, &mut promoted, k_max);
        out
    }

    fn kept(out: &Decisions) -> Vec<usize> {
        (0..out.len())
            .filter(|&i| out.reasons[i].contains(Reason::PROMOTED))
            .collect()
    }

    #[test]
    fn slate_cap_keeps_the_highest_boosts_and_demotes_the_rest() {
        let base = [0.5, 0.9, 0.3, 0.7];
        let boosts = [0.1, 0.4, 0.05, 0.3];
        let out = capped(&base, &boosts, &[0, 1, 2, 3], 2);
        assert_eq!(kept(&out), vec![1, 3]);
        for i in [0, 2] {
            assert_eq!(out.reasons[i], Reason::SLATE_CAP);
            assert_eq!(out.scores[i], base[i]);
            assert_eq!(out.propensity[i], 0.0);
            assert!(out.eligible[i], "capped tracks stay eligible");
        }
        assert_eq!(out.scores[1], 0.9 + 0.4);
        assert_eq!(out.propensity[1], 1.0);
    }

    #[test]
    fn slate_cap_ties_go_to_higher_base_then_request_order() {
        let base = [0.4, 0.6, 0.6, 0.6, 0.9];
        let boosts = [0.3, 0.3, 0.3, 0.3, 0.2];
        // Equal boosts: 1, 2 and 3 beat 0 on base score, then request order.
        for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 3, 1]] {
            assert_eq!(kept(&capped(&base, &boosts, &order, 1)), vec![1]);
            assert_eq!(kept(&capped(&base, &boosts, &order, 2)), vec![1, 2]);
            assert_eq!(kept(&capped(&base, &boosts, &order, 3)), vec![1, 2, 3]);
            assert_eq!(kept(&capped(&base, &boosts, &order, 4)), vec![0, 1, 2, 3]);
        }
        let req = request(base.iter().map(|&s| cand(s, 0.1)).collect());
        let mut out = Decisions::passthrough(&req);
        let mut promoted: Vec<(usize, f64)> = [3, 0, 4, 1, 2].map(|i| (i, boosts[i])).to_vec();
        slate_cap(&mut out, &base, &mut promoted, 5);
        let ranked: Vec<usize> = promoted.iter().map(|&(i, _)| i).collect();
        assert_eq!(
            ranked,
            vec![1, 2, 3, 0, 4],
            "promoted is left in rank order"
        );
    }

    #[test]
    fn slate_cap_within_k_changes_nothing_and_keeps_other_reasons() {
        let base = [0.5, 0.6];
        let boosts = [0.2, 0.1];
        let out = capped(&base, &boosts, &[0, 1], 2);
        assert_eq!(kept(&out), vec![0, 1]);
        assert_eq!(out.scores, vec![0.5 + 0.2, 0.6 + 0.1]);

        let req = request(base.iter().map(|&s| cand(s, 0.1)).collect());
        let mut out = Decisions::passthrough(&req);
        out.promote(1, 0.1, 1.0);
        out.mark(1, Reason::PACING_THROTTLED);
        slate_cap(&mut out, &base, &mut [(1, 0.1)], 0);
        assert_eq!(out.reasons[1], Reason::PACING_THROTTLED | Reason::SLATE_CAP);
        assert_eq!(out.scores[1], 0.6);
    }
}
