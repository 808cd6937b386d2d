//! The output contract, checked on every call before a score leaves the host.
//!
//! A policy is untrusted code: its output is data to validate, never to
//! trust. The rules (one entry per candidate in every column, finite scores,
//! propensities in [0, 1], only campaign tracks eligible or promoted, bounded
//! and finite debug values) are `oasis-contract`'s
//! [`check_decisions`](oasis_contract::check_decisions), the same function the
//! guest SDK's test harness runs; this module adapts the WIT types to it.

use oasis_contract::{DebugRef, DecisionsView, check_decisions};

use crate::bindings::{WitCampaignUpdate, WitDecisions};
use crate::error::CallError;

/// Validates `d` against the request it answers: `count` candidates whose
/// campaign column is `campaign`, and `campaigns` distinct campaigns.
///
/// # Errors
/// [`CallError::InvalidOutput`] naming the first violation.
pub(crate) fn validate(
    d: &WitDecisions,
    count: usize,
    campaign: &[i32],
    campaigns: usize,
) -> Result<(), CallError> {
    check_decisions(
        count,
        campaign,
        campaigns,
        DecisionsView {
            scores: &d.scores,
            eligible: &d.eligible,
            reasons: &d.reasons,
            propensity: &d.propensity,
            campaign_updates: &d.campaign_updates,
        },
        d.debug.iter().map(|v| DebugRef {
            name: &v.name,
            candidate: v.candidate,
            value: v.value,
        }),
    )
    .map_err(|v| CallError::InvalidOutput(v.to_string()))
}

impl oasis_contract::CampaignUpdateFields for WitCampaignUpdate {
    fn campaign(&self) -> u32 {
        self.campaign
    }
    fn pacing_integral(&self) -> f64 {
        self.pacing_integral
    }
    fn pacing_last_error(&self) -> f64 {
        self.pacing_last_error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{WitCandidates, WitReason};

    fn ok(n: usize) -> WitDecisions {
        WitDecisions {
            scores: vec![0.5; n],
            eligible: vec![false; n],
            reasons: vec![WitReason::ORGANIC; n],
            propensity: vec![0.0; n],
            debug: Vec::new(),
            campaign_updates: Vec::new(),
        }
    }

    fn cands(n: usize, campaign: i32) -> WitCandidates {
        WitCandidates {
            count: n as u32,
            relevance: vec![0.5; n],
            feature_names: Vec::new(),
            features: Vec::new(),
            campaign: vec![campaign; n],
            artist: vec![0; n],
            rights_holder: vec![0; n],
            impressions_24h: vec![0; n],
            session_promoted: vec![0; n],
        }
    }

    fn v(d: &WitDecisions, c: &WitCandidates) -> Result<(), CallError> {
        validate(d, c.count as usize, &c.campaign, 1)
    }

    fn message(r: Result<(), CallError>) -> String {
        match r {
            Err(CallError::InvalidOutput(m)) => m,
            other => panic!("expected invalid output, got {other:?}"),
        }
    }

    #[test]
    fn accepts_well_formed_output() {
        v(&ok(3), &cands(3, -1)).unwrap();
        v(&ok(0), &cands(0, -1)).unwrap();
        let mut d = ok(2);
        d.eligible[1] = true;
        d.reasons[1] = WitReason::PROMOTED;
        v(&d, &cands(2, 0)).unwrap();
    }

    #[test]
    fn rejects_each_violation_with_its_reason() {
        assert!(message(v(&ok(2), &cands(3, -1))).contains("`scores` has 2 entries for 3"));
        let mut d = ok(3);
        d.eligible.pop();
        assert!(message(v(&d, &cands(3, -1))).contains("`eligible`"));
        let mut d = ok(3);
        d.scores[1] = f64::NAN;
        assert!(message(v(&d, &cands(3, -1))).contains("score of candidate 1 is not finite"));
        let mut d = ok(3);
        d.scores[2] = f64::INFINITY;
        assert!(message(v(&d, &cands(3, -1))).contains("candidate 2"));
        let mut d = ok(3);
        d.propensity[0] = 1.5;
        assert!(message(v(&d, &cands(3, -1))).contains("propensity of candidate 0"));
        let mut d = ok(1);
        d.debug.push(crate::bindings::WitDebugValue {
            name: "x".into(),
            candidate: Some(5),
            value: 1.0,
        });
        assert!(message(v(&d, &cands(1, -1))).contains("refers to candidate 5"));
        let mut d = ok(2);
        d.eligible[0] = true;
        assert!(message(v(&d, &cands(2, -1))).contains("candidate 0 has no campaign"));
        let mut d = ok(2);
        d.reasons[1] |= WitReason::PROMOTED;
        assert!(message(v(&d, &cands(2, -1))).contains("candidate 1 has no campaign"));
    }

    #[test]
    fn non_finite_debug_values_are_invalid_output() {
        let mut d = ok(1);
        d.debug.push(crate::bindings::WitDebugValue {
            name: "lift".into(),
            candidate: Some(0),
            value: f64::NAN,
        });
        assert!(message(v(&d, &cands(1, -1))).contains("debug value `lift` is not finite"));
    }

    #[test]
    fn campaign_updates_name_one_campaign_each_and_are_finite() {
        use crate::bindings::WitCampaignUpdate as U;
        let update = |campaign, integral| U {
            campaign,
            pacing_integral: integral,
            pacing_last_error: 0.0,
        };
        let mut d = ok(1);
        d.campaign_updates.push(update(0, 0.1));
        v(&d, &cands(1, 0)).unwrap();
        d.campaign_updates.push(update(0, 0.2));
        assert!(message(v(&d, &cands(1, 0))).contains("campaign 0 is updated more than once"));
        d.campaign_updates[1] = update(1, 0.2);
        assert!(message(v(&d, &cands(1, 0))).contains("campaign 1 of 1 (out of range)"));
        d.campaign_updates.truncate(1);
        d.campaign_updates[0].pacing_last_error = f64::NAN;
        assert!(message(v(&d, &cands(1, 0))).contains("not finite"));
    }
}
