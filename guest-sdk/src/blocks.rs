//! Reusable decision rules shared by several policies.
//!
//! A policy crate cannot depend on another policy crate: each one is a
//! `cdylib` exporting the same component symbols. Rules that more than one
//! policy applies therefore live here, with one implementation and one set
//! of tests.
//!
//! * [`Guard`] is the *guarded boost*: the campaign gate
//!   ([`Candidate::campaign_eligibility`]), the listener-satisfaction
//!   guardrail on the predicted skip probability ([`P_SKIP`]`<= theta`) and
//!   the relevance-proportional boost `beta * max(0, s - s_min)`, which never
//!   lifts a track below `s_min`. Use it when a policy promotes campaign
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

/// Name of the candidate feature holding the predicted skip probability that
/// [`Guard`] checks against `theta`; resolve it with
/// [`Request::feature`](crate::Request::feature) and declare it with
/// [`Metadata::requires`](crate::Metadata::requires).
pub const P_SKIP: &str = "p_skip";

/// Parameters of the guarded boost; the policy validates them in its
/// settings (`theta` in [0, 1], `beta` >= 0, `s_min` finite).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guard {
    /// Highest allowed predicted skip probability: `p_skip > theta` makes a
    /// campaign track ineligible with `RELEVANCE_GUARDRAIL`.
    pub theta: f64,
    /// Boost per unit of relevance above `s_min`.
    pub beta: f64,
    /// Relevance guardrail: tracks with relevance below it are never lifted.
    pub s_min: f64,
}

/// What a [`Guard`] decides for one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The track is in no campaign: nothing to decide (it keeps `ORGANIC`).
    Organic,
    /// A campaign track that may not be promoted, with every reason that
    /// applies: the campaign gate's `CAMPAIGN_INACTIVE`,
    /// `NOT_ELIGIBLE_SURFACE` and `NOT_ELIGIBLE_MARKET`, plus
    /// `MISSING_FEATURE` (no `p_skip`) or `RELEVANCE_GUARDRAIL`
    /// (`p_skip > theta`). Never empty.
    Ineligible(Reason),
    /// An eligible campaign track.
    Eligible {
        /// `beta * (s - s_min)` when `s >= s_min`, else 0; never negative
        /// when `beta >= 0`. Only a positive boost promotes.
        boost: f64,
        /// Reasons to record: `RELEVANCE_GUARDRAIL` when `s < s_min` (the
        /// track is held back), empty otherwise.
        reasons: Reason,
    },
}

impl Guard {
    /// Applies the eligibility rules and the boost formula to `c`, whose base
    /// relevance is `s` (finite; sanitize non-finite relevance first), with
    /// `p_skip` the resolved [`P_SKIP`] column.
    ///
    /// 1. No campaign: [`Verdict::Organic`].
    /// 2. The campaign gate [`Candidate::campaign_eligibility`] and the skip
    ///    guardrail: a missing (NaN) `p_skip` adds `MISSING_FEATURE`,
    ///    `p_skip > theta` adds `RELEVANCE_GUARDRAIL` (`p_skip == theta` is
    ///    allowed). Any reason makes it [`Verdict::Ineligible`] with all of
    ///    them.
    /// 3. Otherwise [`Verdict::Eligible`]: with `s < s_min` a zero boost and
    ///    `RELEVANCE_GUARDRAIL` (never lift an irrelevant track), else boost
    ///    `beta * (s - s_min)` and no reason.
    pub fn evaluate(&self, c: Candidate<'_>, s: f64, p_skip: Feature) -> Verdict {
        let mut block = match c.campaign_eligibility() {
            Eligibility::Organic => return Verdict::Organic,
            Eligibility::Eligible(_) => Reason::empty(),
            Eligibility::Ineligible(r) => r,
        };
        match c.get(p_skip) {
            None => block |= Reason::MISSING_FEATURE,
            Some(p) if p > self.theta => block |= Reason::RELEVANCE_GUARDRAIL,
            Some(_) => {}
        }
        if !block.is_empty() {
            return Verdict::Ineligible(block);
        }
        if s < self.s_min {
            return Verdict::Eligible {
                boost: 0.0,
                reasons: Reason::RELEVANCE_GUARDRAIL,
            };
        }
        Verdict::Eligible {
            boost: self.beta * (s - self.s_min),
            reasons: Reason::empty(),
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

impl Verdict {
    /// Records this verdict for candidate `i` the way a deterministic policy
    /// does, and returns the boost when the candidate was promoted:
    ///
    /// * [`Verdict::Organic`]: nothing changes.
    /// * [`Verdict::Ineligible`]: its reasons are marked.
    /// * [`Verdict::Eligible`]: the candidate is marked eligible with its
    ///   reasons, and a positive boost promotes it
    ///   ([`Decisions::promote`], propensity 1).
    ///
    /// Collect the returned `(i, boost)` pairs for [`slate_cap`].
    pub fn apply(self, out: &mut Decisions, i: usize) -> Option<f64> {
        match self {
            Verdict::Organic => None,
            Verdict::Ineligible(r) => {
                out.mark(i, r);
                None
            }
            Verdict::Eligible { boost, reasons } => {
                out.eligible[i] = true;
                out.mark(i, reasons);
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
    fn campaign_gate_and_skip_guardrail_report_every_reason() {
        let req = request(vec![
            cand(0.8, 0.9).campaign(1),          // ended, skip risk
            CandidateSpec::new(0.8).campaign(1), // ended, p_skip missing
            cand(0.8, 0.1).campaign(1),          // ended only
            cand(0.8, 0.36),                     // skip risk only
            CandidateSpec::new(0.8).campaign(0), // p_skip missing only
            cand(0.8, f64::INFINITY),            // infinite skip risk
            cand(0.1, 0.9),                      // skip risk beats the s_min rule
        ]);
        assert_eq!(
            verdicts(GUARD, &req),
            vec![
                Verdict::Ineligible(Reason::CAMPAIGN_INACTIVE | Reason::RELEVANCE_GUARDRAIL),
                Verdict::Ineligible(Reason::CAMPAIGN_INACTIVE | Reason::MISSING_FEATURE),
                Verdict::Ineligible(Reason::CAMPAIGN_INACTIVE),
                Verdict::Ineligible(Reason::RELEVANCE_GUARDRAIL),
                Verdict::Ineligible(Reason::MISSING_FEATURE),
                Verdict::Ineligible(Reason::RELEVANCE_GUARDRAIL),
                Verdict::Ineligible(Reason::RELEVANCE_GUARDRAIL),
            ]
        );
    }

    #[test]
    fn eligible_tracks_are_boosted_above_s_min_only() {
        let req = request(vec![
            cand(0.8, 0.35), // p_skip exactly theta: allowed
            cand(0.2, 0.0),  // exactly s_min: eligible, zero boost, no reason
            cand(0.15, 0.0), // below s_min: held back
            cand(-3.0, 0.0),
        ]);
        assert_eq!(
            verdicts(GUARD, &req),
            vec![
                Verdict::Eligible {
                    boost: 0.5 * (0.8 - 0.2),
                    reasons: Reason::empty()
                },
                Verdict::Eligible {
                    boost: 0.0,
                    reasons: Reason::empty()
                },
                Verdict::Eligible {
                    boost: 0.0,
                    reasons: Reason::RELEVANCE_GUARDRAIL
                },
                Verdict::Eligible {
                    boost: 0.0,
                    reasons: Reason::RELEVANCE_GUARDRAIL
                },
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
                reasons: Reason::empty()
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
        assert_eq!(out.eligible, vec![false, false, true, true, true]);
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
