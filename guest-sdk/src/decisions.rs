//! What a policy returns: a score, eligibility, reasons and a propensity per
//! candidate, aligned with the request by index, plus named debug values and
//! the new pacing state of the request's campaigns.

use oasis_contract::{CampaignUpdate, DebugRef, DecisionsView, ReasonBits, Violation, reason};

use crate::request::Request;

bitflags::bitflags! {
    /// Why a candidate got its score. The bits are the contract's
    /// ([`oasis_contract::reason`]), in the order of the WIT `reason` flags.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Reason: u16 {
        /// Not in a campaign: relevance alone.
        const ORGANIC = reason::ORGANIC;
        /// The policy lifted this candidate.
        const PROMOTED = reason::PROMOTED;
        /// The campaign does not allow the request's surface.
        const NOT_ELIGIBLE_SURFACE = reason::NOT_ELIGIBLE_SURFACE;
        /// The campaign does not allow the request's market.
        const NOT_ELIGIBLE_MARKET = reason::NOT_ELIGIBLE_MARKET;
        /// The request time is outside the campaign's `[start_ms, end_ms)` window.
        const CAMPAIGN_INACTIVE = reason::CAMPAIGN_INACTIVE;
        /// The listener hit a frequency cap (impressions in 24h or this session).
        const FREQ_CAPPED = reason::FREQ_CAPPED;
        /// Pacing reduced the boost (the campaign is ahead of its schedule).
        const PACING_THROTTLED = reason::PACING_THROTTLED;
        /// A listener-satisfaction guardrail (relevance or skip risk) held it back.
        const RELEVANCE_GUARDRAIL = reason::RELEVANCE_GUARDRAIL;
        /// Lowered or not promoted to keep the promoted set diverse.
        const DIVERSITY_PENALTY = reason::DIVERSITY_PENALTY;
        /// Score adjusted, up or down, toward fair exposure across rights holders.
        const FAIRNESS_ADJUST = reason::FAIRNESS_ADJUST;
        /// Chosen by a random (exploration) draw rather than greedily.
        const EXPLORATION = reason::EXPLORATION;
        /// The per-slate limit on promoted tracks was reached.
        const SLATE_CAP = reason::SLATE_CAP;
        /// A feature the policy needed was missing for this candidate.
        const MISSING_FEATURE = reason::MISSING_FEATURE;
    }
}

impl ReasonBits for Reason {
    fn reason_bits(&self) -> u16 {
        self.bits()
    }
}

/// A named value reported for debugging and explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct DebugValue {
    /// What the value is, e.g. `pacing_multiplier`.
    pub name: String,
    /// The candidate it refers to, `None` for a request-level value.
    pub candidate: Option<u32>,
    /// The value itself.
    pub value: f64,
}

/// The decisions for one request, column by column.
///
/// Start from [`Decisions::passthrough`] (relevance as score, nobody promoted)
/// and change what the policy decides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decisions {
    /// Final promotion score per candidate; must be finite.
    pub scores: Vec<f64>,
    /// Whether each candidate may be promoted (promoted or not).
    pub eligible: Vec<bool>,
    /// Why each candidate got its score; several reasons may apply.
    pub reasons: Vec<Reason>,
    /// Probability, in [0, 1], that the policy's (possibly random) choice
    /// promoted each candidate; 1 or 0 for deterministic policies.
    pub propensity: Vec<f64>,
    /// Named values for debugging and explanation, in any number.
    pub debug: Vec<DebugValue>,
    /// New pacing-controller state, at most one per campaign of the request
    /// (see [`Decisions::update_campaign`]).
    pub campaign_updates: Vec<CampaignUpdate>,
}

impl Decisions {
    /// Relevance passthrough: score = base relevance, not eligible, propensity 0,
    /// reason `ORGANIC` for tracks without a campaign. A non-finite relevance
    /// (an upstream bug; the Oasis host refuses it) reads as 0, so scores
    /// built from these stay finite.
    pub fn passthrough(req: &Request) -> Self {
        let n = req.len();
        Decisions {
            scores: req
                .candidates
                .relevance
                .iter()
                .map(|&s| if s.is_finite() { s } else { 0.0 })
                .collect(),
            eligible: vec![false; n],
            reasons: req
                .candidates
                .campaign
                .iter()
                .map(|&c| {
                    if c < 0 {
                        Reason::ORGANIC
                    } else {
                        Reason::empty()
                    }
                })
                .collect(),
            propensity: vec![0.0; n],
            debug: Vec::new(),
            campaign_updates: Vec::new(),
        }
    }

    /// Number of candidates decided.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether no candidate was decided.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Adds `reason` to candidate `i`.
    pub fn mark(&mut self, i: usize, reason: Reason) {
        self.reasons[i] |= reason;
    }

    /// Promotes candidate `i`: adds `boost` to its score, marks it eligible
    /// and `PROMOTED`, with propensity `propensity`.
    pub fn promote(&mut self, i: usize, boost: f64, propensity: f64) {
        self.scores[i] += boost;
        self.eligible[i] = true;
        self.reasons[i] |= Reason::PROMOTED;
        self.propensity[i] = propensity;
    }

    /// Withdraws a promotion of candidate `i` (score back to `base`), keeping
    /// it eligible, and records why.
    pub fn demote(&mut self, i: usize, base: f64, reason: Reason) {
        self.scores[i] = base;
        self.reasons[i] = (self.reasons[i] - Reason::PROMOTED) | reason;
        self.propensity[i] = 0.0;
    }

    /// Records a named debug value.
    pub fn debug(&mut self, name: impl Into<String>, candidate: Option<usize>, value: f64) {
        self.debug.push(DebugValue {
            name: name.into(),
            candidate: candidate.map(|c| c as u32),
            value,
        });
    }

    /// Hands back new pacing-controller state for campaign `campaign` (an
    /// index into [`Request::campaigns`](crate::Request::campaigns)): the
    /// leaky integral and the error of this step, which the next request
    /// will carry as `pacing_integral` and `pacing_last_error`.
    ///
    /// The host stores it, stamped with the request's time (the next
    /// request's `pacing_updated_ms`), for the served policy only (never for
    /// a shadow or a replay), and applies at most one controller step per
    /// campaign per pacing tick. Call it at most once per campaign, with
    /// finite values: [`Decisions::check`], like the host, refuses an index
    /// out of range, a second update of one campaign, or a NaN or infinity.
    ///
    /// ```
    /// # use oasis_sdk::testing::{CampaignSpec, CandidateSpec, RequestBuilder};
    /// # use oasis_sdk::{Decisions, Violation};
    /// let req = RequestBuilder::new()
    ///     .campaign(CampaignSpec::new(7))
    ///     .candidate(CandidateSpec::new(0.5).campaign(0))
    ///     .build();
    /// let mut out = Decisions::passthrough(&req);
    /// out.update_campaign(0, 0.12, 0.03);
    /// assert!(out.check(&req).is_ok());
    /// out.update_campaign(0, 0.2, 0.03);
    /// assert_eq!(out.check(&req), Err(Violation::DuplicateCampaignUpdate { campaign: 0 }));
    /// ```
    pub fn update_campaign(
        &mut self,
        campaign: usize,
        pacing_integral: f64,
        pacing_last_error: f64,
    ) {
        self.campaign_updates.push(CampaignUpdate {
            // An index beyond u32 is out of range for any request; saturate
            // so that the check reports it rather than wrapping to a real one.
            campaign: u32::try_from(campaign).unwrap_or(u32::MAX),
            pacing_integral,
            pacing_last_error,
        });
    }

    /// The checks the host applies to every policy output, through the very
    /// function the host calls ([`oasis_contract::check_decisions`]): one
    /// entry per candidate in every column, finite scores, propensity in
    /// [0, 1], only campaign tracks eligible or promoted, bounded debug
    /// values (at most `4n + 64`, names of 1-64 bytes, candidates in range,
    /// finite), and campaign updates naming a campaign of the request, at
    /// most one per campaign, with finite state.
    ///
    /// # Errors
    /// The first [`Violation`].
    pub fn check(&self, req: &Request) -> Result<(), Violation> {
        oasis_contract::check_decisions(
            req.len(),
            &req.candidates.campaign,
            req.campaigns.len(),
            DecisionsView {
                scores: &self.scores,
                eligible: &self.eligible,
                reasons: &self.reasons,
                propensity: &self.propensity,
                campaign_updates: &self.campaign_updates,
            },
            self.debug.iter().map(|v| DebugRef {
                name: &v.name,
                candidate: v.candidate,
                value: v.value,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CampaignSpec, CandidateSpec, RequestBuilder};

    #[test]
    fn passthrough_reads_non_finite_relevance_as_zero() {
        let req = RequestBuilder::new()
            .campaign(CampaignSpec::new(1))
            .candidate(CandidateSpec::new(0.4))
            .candidate(CandidateSpec::new(f64::NAN).campaign(0))
            .candidate(CandidateSpec::new(f64::INFINITY))
            .build();
        let d = Decisions::passthrough(&req);
        assert_eq!(d.scores, vec![0.4, 0.0, 0.0]);
        assert_eq!(
            d.reasons,
            vec![Reason::ORGANIC, Reason::empty(), Reason::ORGANIC]
        );
        d.check(&req).unwrap();
        let mut bad = d.clone();
        bad.promote(0, 0.1, 1.0);
        assert!(
            bad.check(&req)
                .unwrap_err()
                .to_string()
                .contains("candidate 0 has no campaign")
        );
        let mut bad = d.clone();
        bad.debug("", None, 1.0);
        assert!(
            bad.check(&req)
                .unwrap_err()
                .to_string()
                .contains("names must be 1-64 bytes")
        );
        let mut bad = d;
        bad.debug("x", Some(9), 1.0);
        assert!(
            bad.check(&req)
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
    }

    #[test]
    fn non_finite_debug_values_are_refused_as_the_host_refuses_them() {
        let req = RequestBuilder::new()
            .candidate(CandidateSpec::new(0.4))
            .build();
        let mut d = Decisions::passthrough(&req);
        d.debug("lift", Some(0), f64::NAN);
        assert!(matches!(
            d.check(&req),
            Err(Violation::NonFiniteDebugValue { .. })
        ));
    }

    #[test]
    fn campaign_updates_are_checked_as_the_host_checks_them() {
        let req = RequestBuilder::new()
            .campaign(CampaignSpec::new(1))
            .campaign(CampaignSpec::new(2))
            .candidate(CandidateSpec::new(0.4).campaign(1))
            .build();
        let mut d = Decisions::passthrough(&req);
        d.update_campaign(1, 0.5, -0.1);
        d.update_campaign(0, 0.0, 0.0);
        d.check(&req).unwrap();
        assert_eq!(
            d.campaign_updates[0],
            CampaignUpdate {
                campaign: 1,
                pacing_integral: 0.5,
                pacing_last_error: -0.1
            }
        );
        let mut bad = d.clone();
        bad.update_campaign(2, 0.0, 0.0);
        assert_eq!(
            bad.check(&req),
            Err(Violation::CampaignUpdateOutOfRange {
                campaign: 2,
                campaigns: 2
            })
        );
        let mut bad = d.clone();
        bad.update_campaign(usize::MAX, 0.0, 0.0);
        assert!(matches!(
            bad.check(&req),
            Err(Violation::CampaignUpdateOutOfRange {
                campaign: u32::MAX,
                ..
            })
        ));
        let mut bad = Decisions::passthrough(&req);
        bad.update_campaign(0, f64::NAN, 0.0);
        assert!(matches!(
            bad.check(&req),
            Err(Violation::NonFiniteCampaignUpdate {
                field: "pacing_integral",
                ..
            })
        ));
    }

    #[test]
    fn reason_bits_match_the_generated_wit_flags() {
        use crate::bindings::oasis::policy::types::Reason as Wit;
        let wit = [
            Wit::ORGANIC,
            Wit::PROMOTED,
            Wit::NOT_ELIGIBLE_SURFACE,
            Wit::NOT_ELIGIBLE_MARKET,
            Wit::CAMPAIGN_INACTIVE,
            Wit::FREQ_CAPPED,
            Wit::PACING_THROTTLED,
            Wit::RELEVANCE_GUARDRAIL,
            Wit::DIVERSITY_PENALTY,
            Wit::FAIRNESS_ADJUST,
            Wit::EXPLORATION,
            Wit::SLATE_CAP,
            Wit::MISSING_FEATURE,
        ];
        assert_eq!(Wit::all().bits(), reason::ALL);
        for (w, (bit, name)) in wit.iter().zip(reason::REASONS) {
            assert_eq!(w.bits(), bit, "{name}");
            assert_eq!(
                Reason::from_bits(bit).unwrap(),
                Reason::from_name(&name.to_uppercase()).unwrap()
            );
        }
    }
}
