//! # pid-pacing: guarded boost scaled toward each campaign's delivery target
//!
//! The boost of the guarded-boost policy, multiplied per campaign by a PID
//! controller on the campaign's delivery error, so that under-delivering
//! campaigns are lifted more and over-delivering ones less.
//!
//! **Guarded boost** (with `s` the base relevance, `c` the campaign): a
//! campaign track is eligible only if `c` is active now (`CAMPAIGN_INACTIVE`),
//! allows the surface (`NOT_ELIGIBLE_SURFACE`) and market
//! (`NOT_ELIGIBLE_MARKET`), and `p_skip <= theta` (`RELEVANCE_GUARDRAIL`
//! when above, `MISSING_FEATURE` when NaN). Then
//! `b_guarded = beta * max(0, s - s_min)`; an eligible track with `s < s_min`
//! is never lifted (`RELEVANCE_GUARDRAIL`).
//!
//! **PID multiplier** per campaign, from the controller state the host carries
//! in the campaign record:
//!
//! ```text
//! e   = (expected_by_now - delivered) / delivery_target   (0 without a target)
//! I   = leak * pacing_integral + e                         (leaky integrator, leak in [0, 1))
//! d   = e - pacing_last_error
//! phi = kp * e + ki * I + kd * d
//! m   = clamp(exp(phi), m_min, m_max)                      (m_min <= 1 <= m_max)
//! b   = m * b_guarded
//! ```
//!
//! Non-finite controller inputs (a host bug) read as 0, and a NaN `phi` gives
//! the neutral `m = 1`, so scores stay finite. A track with `b > 0` is
//! promoted (score `s + b`, `PROMOTED`, propensity 1) and additionally marked
//! `PACING_THROTTLED` when `m < 1` (the throttle cut an actual boost).
//! At most `k_max` tracks are promoted per slate: the highest final boosts win
//! (ties: higher relevance, then request order), the others are demoted to `s`
//! with `SLATE_CAP`.
//!
//! Debug values, for every campaign candidate: `pacing_multiplier` (m),
//! `pacing_error` (e) and `pacing_integral` (I, the state the host may carry
//! to the next request).
//!
//! The guarded boost and the slate cap are the SDK's shared building blocks
//! [`oasis_sdk::blocks::Guard`] (scaled by `m`) and
//! [`oasis_sdk::blocks::slate_cap`].

use oasis_sdk::blocks::{self, Guard};
use oasis_sdk::{Campaign, Decisions, Metadata, Policy, PolicyError, Reason, Request};
use serde::{Deserialize, Serialize};

/// The PID-pacing policy.
pub struct PidPacing;

/// Name of the candidate feature holding the predicted skip probability.
pub use oasis_sdk::blocks::P_SKIP;

/// Operator settings; every field is optional and defaults as documented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Highest predicted skip probability a promoted track may have, in [0, 1]. Default 0.35.
    pub theta: f64,
    /// Boost per unit of relevance above `s_min`, in [0, 10]. Default 0.5.
    pub beta: f64,
    /// Relevance guardrail: tracks below it are never lifted; finite. Default 0.2.
    pub s_min: f64,
    /// Most promoted tracks per slate, in [1, 1000]. Default 3.
    pub k_max: u32,
    /// Proportional gain on the normalized delivery error, in [0, 100]. Default 4.
    pub kp: f64,
    /// Integral gain on the leaky integral of the error, in [0, 100]. Default 1.
    pub ki: f64,
    /// Derivative gain on the change of the error, in [0, 100]. Default 2.
    pub kd: f64,
    /// Leak of the integrator per step, in [0, 1): 0 forgets at once. Default 0.9.
    pub leak: f64,
    /// Lowest pacing multiplier, in (0, 1]. Default 0.2.
    pub m_min: f64,
    /// Highest pacing multiplier, in [1, 100]. Default 5.
    pub m_max: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            theta: 0.35,
            beta: 0.5,
            s_min: 0.2,
            k_max: 3,
            kp: 4.0,
            ki: 1.0,
            kd: 2.0,
            leak: 0.9,
            m_min: 0.2,
            m_max: 5.0,
        }
    }
}

/// The controller's output for one campaign.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Normalized delivery error `e` (positive when under-delivering).
    pub error: f64,
    /// Updated leaky integral `I`.
    pub integral: f64,
    /// Boost multiplier `m`.
    pub multiplier: f64,
}

/// Runs the PID step for `camp` (see the crate docs for the formulas).
pub fn pacing(s: &Settings, camp: &Campaign) -> Pacing {
    let finite_or_zero = |x: f64| if x.is_finite() { x } else { 0.0 };
    let error = finite_or_zero(camp.delivery_error());
    let integral = finite_or_zero(s.leak * finite_or_zero(camp.pacing_integral) + error);
    let derivative = if camp.pacing_last_error.is_finite() {
        finite_or_zero(error - camp.pacing_last_error)
    } else {
        0.0
    };
    let phi = s.kp * error + s.ki * integral + s.kd * derivative;
    let multiplier = if phi.is_nan() {
        1.0
    } else {
        phi.exp().clamp(s.m_min, s.m_max)
    };
    Pacing {
        error,
        integral,
        multiplier,
    }
}

impl Policy for PidPacing {
    type Settings = Settings;

    fn metadata() -> Metadata {
        Metadata::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            .description(
                "Guarded boost (active campaign, surface, market, p_skip <= theta, \
                 beta * max(0, relevance - s_min), at most k_max per slate) multiplied per \
                 campaign by m = clamp(exp(kp*e + ki*I + kd*de), m_min, m_max) on the \
                 normalized delivery error e.",
            )
            .requires(&[P_SKIP])
            .setting(
                "theta",
                "highest predicted skip probability a promoted track may have, in [0, 1]",
            )
            .setting(
                "beta",
                "boost per unit of relevance above s_min, in [0, 10]",
            )
            .setting(
                "s_min",
                "relevance guardrail: tracks below it are never lifted (finite)",
            )
            .setting("k_max", "most promoted tracks per slate, in [1, 1000]")
            .setting(
                "kp",
                "proportional gain on the normalized delivery error, in [0, 100]",
            )
            .setting(
                "ki",
                "integral gain on the leaky integral of the error, in [0, 100]",
            )
            .setting(
                "kd",
                "derivative gain on the change of the error, in [0, 100]",
            )
            .setting("leak", "leak of the error integrator per step, in [0, 1)")
            .setting("m_min", "lowest pacing multiplier, in (0, 1]")
            .setting("m_max", "highest pacing multiplier, in [1, 100]")
    }

    fn validate(s: &Settings) -> Result<(), String> {
        if !(0.0..=1.0).contains(&s.theta) {
            return Err(format!("theta must be in [0, 1], got {}", s.theta));
        }
        if !(0.0..=10.0).contains(&s.beta) {
            return Err(format!("beta must be in [0, 10], got {}", s.beta));
        }
        if !s.s_min.is_finite() {
            return Err(format!("s_min must be finite, got {}", s.s_min));
        }
        if !(1..=1000).contains(&s.k_max) {
            return Err(format!("k_max must be in [1, 1000], got {}", s.k_max));
        }
        for (name, gain) in [("kp", s.kp), ("ki", s.ki), ("kd", s.kd)] {
            if !(0.0..=100.0).contains(&gain) {
                return Err(format!("{name} must be in [0, 100], got {gain}"));
            }
        }
        if !(0.0..1.0).contains(&s.leak) {
            return Err(format!("leak must be in [0, 1), got {}", s.leak));
        }
        if !(s.m_min > 0.0 && s.m_min <= 1.0) {
            return Err(format!("m_min must be in (0, 1], got {}", s.m_min));
        }
        if !(1.0..=100.0).contains(&s.m_max) {
            return Err(format!("m_max must be in [1, 100], got {}", s.m_max));
        }
        Ok(())
    }

    fn score(s: &Settings, req: &Request) -> Result<Decisions, PolicyError> {
        let p_skip = req.feature(P_SKIP)?;
        let pacings: Vec<Pacing> = req.campaigns.iter().map(|c| pacing(s, c)).collect();
        // Passthrough reads a non-finite relevance as 0: scores stay finite.
        let mut out = Decisions::passthrough(req);
        let base = out.scores.clone();
        let guard = Guard {
            theta: s.theta,
            beta: s.beta,
            s_min: s.s_min,
        };
        let mut promoted: Vec<(usize, f64)> = Vec::new();
        for c in req.candidates() {
            let i = c.index();
            if c.campaign().is_none() {
                continue; // organic
            }
            let p = pacings[req.candidates.campaign[i] as usize];
            out.debug("pacing_multiplier", Some(i), p.multiplier);
            out.debug("pacing_error", Some(i), p.error);
            out.debug("pacing_integral", Some(i), p.integral);

            let verdict = guard.scaled(p.multiplier).evaluate(c, base[i], p_skip);
            if let Some(boost) = verdict.apply(&mut out, i) {
                if p.multiplier < 1.0 {
                    out.mark(i, Reason::PACING_THROTTLED);
                }
                promoted.push((i, boost));
            }
        }
        // Slate cap: the highest final boosts win.
        blocks::slate_cap(&mut out, &base, &mut promoted, s.k_max as usize);
        Ok(out)
    }
}

oasis_sdk::export_policy!(PidPacing);

#[cfg(test)]
mod tests {
    use super::*;
    use oasis_sdk::testing::{
        CampaignSpec, CandidateSpec, NOW_MS, RequestBuilder, assert_close,
        assert_settings_documented, assert_settings_refused, is_close, run,
    };
    use oasis_sdk::{Surface, full_metadata};

    fn cand(s: f64, campaign: usize) -> CandidateSpec {
        CandidateSpec::new(s)
            .feature("p_skip", 0.1)
            .campaign(campaign)
    }

    fn debug_of(out: &Decisions, name: &str, i: usize) -> f64 {
        let v: Vec<f64> = out
            .debug
            .iter()
            .filter(|d| d.name == name && d.candidate == Some(i as u32))
            .map(|d| d.value)
            .collect();
        assert_eq!(v.len(), 1, "one {name} for candidate {i}");
        v[0]
    }

    /// One campaign with the given delivery and controller state, one candidate.
    fn single(target: f64, delivered: f64, expected: f64, integral: f64, last: f64) -> Request {
        RequestBuilder::new()
            .features(&["p_skip"])
            .campaign(
                CampaignSpec::new(1)
                    .delivery(target, delivered, expected)
                    .pacing_state(integral, last),
            )
            .candidate(cand(0.7, 0))
            .build()
    }

    #[test]
    fn on_schedule_the_multiplier_is_one_and_boost_is_guarded_boost() {
        let out = run::<PidPacing>("", &single(1000.0, 333.0, 333.0, 0.0, 0.0)).unwrap();
        assert_close(out.scores[0], 0.7 + 0.5 * 0.5);
        assert_eq!(out.reasons[0], Reason::PROMOTED);
        assert_eq!(debug_of(&out, "pacing_multiplier", 0), 1.0);
        assert_eq!(debug_of(&out, "pacing_error", 0), 0.0);
    }

    #[test]
    fn multiplier_follows_the_pid_formula() {
        // e = (400 - 300) / 1000 = 0.1; I = 0.5 * 0.2 + 0.1 = 0.2; d = 0.1 - 0.04 = 0.06.
        let req = single(1000.0, 300.0, 400.0, 0.2, 0.04);
        let json = r#"{"kp": 2, "ki": 3, "kd": 5, "leak": 0.5}"#;
        let out = run::<PidPacing>(json, &req).unwrap();
        let m = (2.0 * 0.1 + 3.0 * 0.2 + 5.0 * 0.06_f64).exp();
        assert_close(debug_of(&out, "pacing_multiplier", 0), m);
        assert_close(debug_of(&out, "pacing_error", 0), 0.1);
        assert_close(debug_of(&out, "pacing_integral", 0), 0.2);
        assert_close(out.scores[0], 0.7 + m * 0.5 * 0.5);
        assert_eq!(out.reasons[0], Reason::PROMOTED);
    }

    #[test]
    fn each_gain_acts_on_its_own_term() {
        // e = 0.1, integral state 1.0, last error 0.3.
        let req = single(1000.0, 300.0, 400.0, 1.0, 0.3);
        let m = |json: &str| {
            debug_of(
                &run::<PidPacing>(json, &req).unwrap(),
                "pacing_multiplier",
                0,
            )
        };
        let base = r#""m_min": 0.01, "m_max": 100"#;
        let only_p = m(&format!(r#"{{"kp": 1, "ki": 0, "kd": 0, {base}}}"#));
        let only_i = m(&format!(
            r#"{{"kp": 0, "ki": 1, "kd": 0, "leak": 0.25, {base}}}"#
        ));
        let only_d = m(&format!(r#"{{"kp": 0, "ki": 0, "kd": 1, {base}}}"#));
        assert_close(only_p, 0.1_f64.exp());
        assert_close(only_i, (0.25 * 1.0 + 0.1_f64).exp());
        assert!(
            is_close(only_d, (0.1 - 0.3_f64).exp()),
            "falling error damps: {only_d}"
        );
    }

    #[test]
    fn over_delivery_throttles_and_is_clamped() {
        // Far ahead of schedule: e = -0.5, exp(4 * -0.5 + 1 * -0.5 + 2 * -0.5) < 0.2.
        let out = run::<PidPacing>("", &single(1000.0, 800.0, 300.0, 0.0, 0.0)).unwrap();
        assert_eq!(debug_of(&out, "pacing_multiplier", 0), 0.2);
        assert_eq!(out.reasons[0], Reason::PROMOTED | Reason::PACING_THROTTLED);
        assert_close(out.scores[0], 0.7 + 0.2 * 0.5 * 0.5);
        // Far behind: clamped at m_max.
        let out = run::<PidPacing>("", &single(1000.0, 0.0, 900.0, 5.0, 0.0)).unwrap();
        assert_eq!(debug_of(&out, "pacing_multiplier", 0), 5.0);
        assert_eq!(out.reasons[0], Reason::PROMOTED);
        assert_close(out.scores[0], 0.7 + 5.0 * 0.5 * 0.5);
    }

    #[test]
    fn pacing_changes_which_track_wins_the_slate() {
        // Track 0 is more relevant but its campaign is far ahead of schedule;
        // track 1's campaign is behind, so its final boost is larger.
        let req = RequestBuilder::new()
            .features(&["p_skip"])
            .campaign(CampaignSpec::new(1).delivery(1000.0, 700.0, 300.0))
            .campaign(CampaignSpec::new(2).delivery(1000.0, 200.0, 300.0))
            .candidate(cand(0.9, 0))
            .candidate(cand(0.6, 1))
            .build();
        let out = run::<PidPacing>(r#"{"k_max": 1}"#, &req).unwrap();
        assert_eq!(out.reasons[1], Reason::PROMOTED);
        assert_eq!(out.reasons[0], Reason::PACING_THROTTLED | Reason::SLATE_CAP);
        assert_eq!(out.scores[0], 0.9);
        assert_eq!(out.propensity, vec![0.0, 1.0]);
        assert!(debug_of(&out, "pacing_multiplier", 0) < 1.0);
        assert!(debug_of(&out, "pacing_multiplier", 1) > 1.0);
    }

    #[test]
    fn guardrails_still_apply_and_throttle_is_only_marked_on_real_boosts() {
        let req = RequestBuilder::new()
            .surface(Surface::Radio)
            .features(&["p_skip"])
            .campaign(CampaignSpec::new(1).delivery(1000.0, 800.0, 300.0))
            .campaign(CampaignSpec::new(2).window(NOW_MS - 10, NOW_MS - 5))
            .candidate(cand(0.1, 0)) // below s_min
            .candidate(CandidateSpec::new(0.9).feature("p_skip", 0.9).campaign(0))
            .candidate(CandidateSpec::new(0.9).campaign(0)) // p_skip missing
            .candidate(cand(0.9, 1))
            .candidate(CandidateSpec::new(0.9))
            .build();
        let out = run::<PidPacing>("", &req).unwrap();
        assert_eq!(out.reasons[0], Reason::RELEVANCE_GUARDRAIL);
        assert_eq!(out.reasons[1], Reason::RELEVANCE_GUARDRAIL);
        assert_eq!(out.reasons[2], Reason::MISSING_FEATURE);
        assert_eq!(out.reasons[3], Reason::CAMPAIGN_INACTIVE);
        assert_eq!(out.reasons[4], Reason::ORGANIC);
        assert_eq!(out.eligible, vec![true, false, false, false, false]);
        assert_eq!(out.scores, vec![0.1, 0.9, 0.9, 0.9, 0.9]);
        // Debug values for the four campaign candidates only.
        assert_eq!(out.debug.len(), 4 * 3);
        assert!(out.debug.iter().all(|d| d.candidate != Some(4)));
    }

    #[test]
    fn broken_controller_state_keeps_scores_finite() {
        let req = RequestBuilder::new()
            .features(&["p_skip"])
            .campaign(
                CampaignSpec::new(1)
                    .delivery(1e-300, -1e300, 1e300)
                    .pacing_state(f64::NAN, f64::INFINITY),
            )
            .campaign(CampaignSpec::new(2).delivery(0.0, 10.0, 20.0))
            .candidate(cand(0.7, 0))
            .candidate(cand(0.7, 1))
            .build();
        let out = run::<PidPacing>("", &req).unwrap();
        assert!(
            out.debug.iter().all(|d| d.value.is_finite()),
            "{:?}",
            out.debug
        );
        // Zero target: no error signal, neutral multiplier.
        assert_eq!(debug_of(&out, "pacing_multiplier", 1), 1.0);
        assert!(out.scores.iter().all(|s| s.is_finite()));
    }

    #[test]
    fn invalid_settings_name_the_setting_and_value() {
        assert_settings_refused::<PidPacing>(
            &single(1000.0, 333.0, 333.0, 0.0, 0.0),
            &[
                (r#"{"m_min": 1.5}"#, "m_min must be in (0, 1], got 1.5"),
                (r#"{"m_min": 0}"#, "m_min must be in (0, 1], got 0"),
                (r#"{"m_max": 0.9}"#, "m_max must be in [1, 100], got 0.9"),
                (r#"{"leak": 1}"#, "leak must be in [0, 1), got 1"),
                (r#"{"leak": -0.1}"#, "leak must be in [0, 1), got -0.1"),
                (r#"{"kd": -1}"#, "kd must be in [0, 100], got -1"),
                (r#"{"theta": 2}"#, "theta must be in [0, 1], got 2"),
                (r#"{"k_max": 0}"#, "k_max must be in [1, 1000], got 0"),
                (r#"{"gain": 1}"#, "unknown field `gain`"),
            ],
        );
        let ok = r#"{"m_min": 1, "m_max": 1, "leak": 0}"#;
        let out = run::<PidPacing>(ok, &single(1000.0, 0.0, 900.0, 0.0, 0.0)).unwrap();
        assert_eq!(debug_of(&out, "pacing_multiplier", 0), 1.0, "m pinned to 1");
    }

    #[test]
    fn metadata_documents_features_and_every_setting() {
        let m = full_metadata::<PidPacing>();
        assert_eq!(m.required_features, vec!["p_skip"]);
        assert_settings_documented::<PidPacing>(&[
            ("theta", "0.35"),
            ("beta", "0.5"),
            ("s_min", "0.2"),
            ("k_max", "3"),
            ("kp", "4.0"),
            ("ki", "1.0"),
            ("kd", "2.0"),
            ("leak", "0.9"),
            ("m_min", "0.2"),
            ("m_max", "5.0"),
        ]);
    }
}
