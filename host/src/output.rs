//! The output contract, checked on every call before a score leaves the host.
//!
//! A policy is untrusted code: its output is data to validate, never to
//! trust. Every column must have one entry per candidate, scores must be
//! finite, propensities in [0, 1], debug values bounded and in range, and
//! only campaign tracks may be eligible or promoted (an organic track is
//! never promoted, whatever a policy says).

use crate::bindings::{WitCandidates, WitDecisions, WitReason};
use crate::error::CallError;

/// Debug values accepted per call: a few per candidate plus request-level ones.
pub fn max_debug_values(candidates: usize) -> usize {
    candidates * 4 + 64
}

/// Validates `d` against the candidates it answers.
///
/// # Errors
/// [`CallError::InvalidOutput`] naming the first violation.
pub fn validate(d: &WitDecisions, request: &WitCandidates) -> Result<(), CallError> {
    let candidates = request.count as usize;
    let bad = |m: String| Err(CallError::InvalidOutput(m));
    for (column, len) in [
        ("scores", d.scores.len()),
        ("eligible", d.eligible.len()),
        ("reasons", d.reasons.len()),
        ("propensity", d.propensity.len()),
    ] {
        if len != candidates {
            return bad(format!(
                "`{column}` has {len} entries for {candidates} candidates"
            ));
        }
    }
    if let Some(i) = d.scores.iter().position(|s| !s.is_finite()) {
        return bad(format!(
            "score of candidate {i} is not finite ({})",
            d.scores[i]
        ));
    }
    if let Some(i) = d.propensity.iter().position(|p| !(0.0..=1.0).contains(p)) {
        return bad(format!(
            "propensity of candidate {i} is outside [0, 1] ({})",
            d.propensity[i]
        ));
    }
    let organic_promoted = (0..candidates).find(|&i| {
        request.campaign.get(i).is_none_or(|&c| c < 0)
            && (d.eligible[i] || d.reasons[i].contains(WitReason::PROMOTED))
    });
    if let Some(i) = organic_promoted {
        return bad(format!(
            "candidate {i} has no campaign but is marked eligible or promoted"
        ));
    }
    if d.debug.len() > max_debug_values(candidates) {
        return bad(format!(
            "{} debug values (at most {} for {candidates} candidates)",
            d.debug.len(),
            max_debug_values(candidates)
        ));
    }
    for v in &d.debug {
        if v.name.is_empty() || v.name.len() > 64 {
            return bad(format!(
                "a debug value name is {} bytes; names must be 1-64 bytes",
                v.name.len()
            ));
        }
        if let Some(c) = v.candidate.filter(|&c| c as usize >= candidates) {
            return bad(format!(
                "debug value `{}` refers to candidate {c} of {candidates}",
                v.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::WitReason;

    fn ok(n: usize) -> WitDecisions {
        WitDecisions {
            scores: vec![0.5; n],
            eligible: vec![false; n],
            reasons: vec![WitReason::ORGANIC; n],
            propensity: vec![0.0; n],
            debug: Vec::new(),
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
            impressions_last_day: vec![0; n],
            session_promoted: vec![0; n],
        }
    }

    fn message(r: Result<(), CallError>) -> String {
        match r {
            Err(CallError::InvalidOutput(m)) => m,
            other => panic!("expected invalid output, got {other:?}"),
        }
    }

    #[test]
    fn accepts_well_formed_output() {
        validate(&ok(3), &cands(3, -1)).unwrap();
        validate(&ok(0), &cands(0, -1)).unwrap();
        let mut d = ok(2);
        d.eligible[1] = true;
        d.reasons[1] = WitReason::PROMOTED;
        validate(&d, &cands(2, 0)).unwrap();
    }

    #[test]
    fn rejects_each_violation_with_its_reason() {
        assert!(message(validate(&ok(2), &cands(3, -1))).contains("`scores` has 2 entries for 3"));
        let mut d = ok(3);
        d.eligible.pop();
        assert!(message(validate(&d, &cands(3, -1))).contains("`eligible`"));
        let mut d = ok(3);
        d.scores[1] = f64::NAN;
        assert!(
            message(validate(&d, &cands(3, -1))).contains("score of candidate 1 is not finite")
        );
        let mut d = ok(3);
        d.scores[2] = f64::INFINITY;
        assert!(message(validate(&d, &cands(3, -1))).contains("candidate 2"));
        let mut d = ok(3);
        d.propensity[0] = 1.5;
        assert!(message(validate(&d, &cands(3, -1))).contains("propensity of candidate 0"));
        let mut d = ok(1);
        d.debug
            .push(crate::bindings::oasis::policy::types::DebugValue {
                name: "x".into(),
                candidate: Some(5),
                value: 1.0,
            });
        assert!(message(validate(&d, &cands(1, -1))).contains("refers to candidate 5"));
        let mut d = ok(2);
        d.eligible[0] = true;
        assert!(message(validate(&d, &cands(2, -1))).contains("candidate 0 has no campaign"));
        let mut d = ok(2);
        d.reasons[1] |= WitReason::PROMOTED;
        assert!(message(validate(&d, &cands(2, -1))).contains("candidate 1 has no campaign"));
    }
}
