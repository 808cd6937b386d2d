//! The output contract, checked on every call before a score leaves the host.
//!
//! A policy is untrusted code: its output is data to validate, never to
//! trust. Every column must have one entry per candidate, scores must be
//! finite, propensities in [0, 1], and debug values bounded and in range.

use crate::bindings::WitDecisions;
use crate::error::CallError;

/// Debug values accepted per call: a few per candidate plus request-level ones.
pub fn max_debug_values(candidates: usize) -> usize {
    candidates * 4 + 64
}

/// Validates `d` for a request of `candidates` candidates.
///
/// # Errors
/// [`CallError::InvalidOutput`] naming the first violation.
pub fn validate(d: &WitDecisions, candidates: usize) -> Result<(), CallError> {
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
    if d.debug.len() > max_debug_values(candidates) {
        return bad(format!(
            "{} debug values (at most {} for {candidates} candidates)",
            d.debug.len(),
            max_debug_values(candidates)
        ));
    }
    for v in &d.debug {
        if v.name.is_empty() || v.name.len() > 64 {
            return bad(format!("debug value name {:?} must be 1-64 bytes", v.name));
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

    fn message(r: Result<(), CallError>) -> String {
        match r {
            Err(CallError::InvalidOutput(m)) => m,
            other => panic!("expected invalid output, got {other:?}"),
        }
    }

    #[test]
    fn accepts_well_formed_output() {
        validate(&ok(3), 3).unwrap();
        validate(&ok(0), 0).unwrap();
    }

    #[test]
    fn rejects_each_violation_with_its_reason() {
        assert!(message(validate(&ok(2), 3)).contains("`scores` has 2 entries for 3"));
        let mut d = ok(3);
        d.eligible.pop();
        assert!(message(validate(&d, 3)).contains("`eligible`"));
        let mut d = ok(3);
        d.scores[1] = f64::NAN;
        assert!(message(validate(&d, 3)).contains("score of candidate 1 is not finite"));
        let mut d = ok(3);
        d.scores[2] = f64::INFINITY;
        assert!(message(validate(&d, 3)).contains("candidate 2"));
        let mut d = ok(3);
        d.propensity[0] = 1.5;
        assert!(message(validate(&d, 3)).contains("propensity of candidate 0"));
        let mut d = ok(1);
        d.debug
            .push(crate::bindings::oasis::policy::types::DebugValue {
                name: "x".into(),
                candidate: Some(5),
                value: 1.0,
            });
        assert!(message(validate(&d, 1)).contains("refers to candidate 5"));
    }
}
