//! # pid-pacing: guarded boost scaled toward each campaign's delivery target
//!
//! The boost of the guarded-boost policy, multiplied per campaign by a PID
//! controller on the campaign's delivery error, so that under-delivering
//! campaigns are lifted more and over-delivering ones less. The controller
//! runs in continuous time: it integrates over the real time elapsed since
//! its state was last stored, and hands its new state back to the host.
//!
//! **Guarded boost** (with `s` the base relevance, `c` the campaign): a
//! campaign track is eligible only if `c` is active now (`CAMPAIGN_INACTIVE`),
//! allows the surface (`NOT_ELIGIBLE_SURFACE`) and market
//! (`NOT_ELIGIBLE_MARKET`), and passes the SDK's relevance guardrail
//! ([`oasis_sdk::blocks::RelevanceGuardrail`], `s_min` and
//! `max_p_skip = theta`): a track with `s < s_min` or `p_skip > theta` is
//! ineligible with `RELEVANCE_GUARDRAIL` (plus `MISSING_FEATURE` when
//! `p_skip` is missing), keeps `s`, propensity 0. Then
//! `b_guarded = beta * (s - s_min)`.
//!
//! **PID multiplier** per campaign, from the controller state the host
//! carries in the campaign record (`pacing_integral` `I`, `pacing_last_error`
//! `e_prev`, `pacing_updated_ms`), with times in hours:
//!
//! ```text
//! e      = (expected_by_now - delivered) / delivery_target     (0 without a target)
//! dt     = min(timestamp_ms - pacing_updated_ms, 1 h)          (>= 0; unknown when pacing_updated_ms = 0)
//! tau    = -1 / ln(leak)                                        (leak: share of I kept per hour, in [0, 1))
//! a      = leak^dt = exp(-dt / tau)                            (the integral's decay over dt)
//! I'     = a * I + tau * (1 - a) * e                            (exact step of dI/dt = e - I / tau)
//! D      = (e - e_prev) / dt                                    (0 when dt is 0 or unknown)
//! phi    = kp * e + ki * I' + kd * D
//! m      = clamp(exp(phi), m_min, m_max)                        (m_min <= 1 <= m_max)
//! b      = m * b_guarded
//! ```
//!
//! The integrator is leaky with time constant `tau`: `I'` accumulates
//! `e * dt` for short steps and forgets with `dt`, so under a persistent
//! error it converges to `tau * e` and never leaves
//! `[min(I, tau * e), max(I, tau * e)]`: it cannot run away, however many
//! steps are taken. `leak = 0` forgets at once (`I' = 0` after any positive
//! `dt`). When `dt` is unknown (the state was never stored) or 0 (the same
//! millisecond), no time has passed to integrate over: `I' = I` and
//! `D = 0`. `dt` is capped at [`DT_MAX_MS`] (one hour) so that a campaign
//! idle overnight does not take one giant step.
//!
//! **New state.** For every campaign of the request (once each, whether or
//! not one of its tracks was promoted), the policy returns the campaign
//! update `(I', e)`; the host stores it as `pacing_integral`,
//! `pacing_last_error`, stamped `pacing_updated_ms = timestamp_ms`, for the
//! served policy only and at most once per campaign per pacing tick.
//!
//! Non-finite controller inputs (a host bug) read as 0, and a NaN `phi` gives
//! the neutral `m = 1`, so scores and the returned state stay finite. A track
//! with `b > 0` is promoted (score `s + b`, `PROMOTED`, propensity 1) and
//! additionally marked `PACING_THROTTLED` when `m < 1` (the throttle cut an
//! actual boost). At most `k_max` tracks are promoted per slate: the highest
//! final boosts win (ties: higher relevance, then request order), the others
//! are demoted to `s` with `SLATE_CAP`.
//!
//! Debug values, for every campaign candidate: `pacing_multiplier` (m),
//! `pacing_error` (e) and `pacing_integral` (I').
//!
//! | setting | default | meaning |
//! |---|---|---|
//! | `theta` | 0.35 | the guardrail's highest `p_skip`, in [0, 1] |
//! | `beta` | 0.5 | boost per unit of relevance above `s_min`, in [0, 10] |
//! | `s_min` | 0.2 | the guardrail's lowest relevance (finite) |
//! | `k_max` | 3 | most promoted tracks per slate, in [1, 1000] |
//! | `kp` | 4 | proportional gain, in [0, 100] |
//! | `ki` | 1 | integral gain (per error-hour), in [0, 100] |
//! | `kd` | 2 | derivative gain (per error per hour), in [0, 100] |
//! | `leak` | 0.9 | share of the integral kept per hour, in [0, 1) (`tau` ~ 9.5 h) |
//! | `m_min` | 0.2 | lowest multiplier, in (0, 1] |
//! | `m_max` | 5 | highest multiplier, in [1, 100] |
//! | `max_daily` | 0 (off) | a track promoted to the listener this many times in 24 h is not eligible (`FREQ_CAPPED`) |
//! | `max_session` | 0 (off) | a track promoted this many times in the session is not eligible (`FREQ_CAPPED`) |
//!
//! The caps read the request's `impressions_24h` and `session_promoted`,
//! which the host fills from its delivery state (2.1.0).
//! Since 2.0.0 (contract 0.2.0): the step uses the real `dt` (the 1.x
//! controller took one step of unit length per request and never returned
//! its state), `leak` is per hour instead of per request, the state is
//! returned as campaign updates, and a track below `s_min` is ineligible.
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
    /// Relevance guardrail: highest predicted skip probability a promoted
    /// track may have, in [0, 1]. Default 0.35.
    pub theta: f64,
    /// Boost per unit of relevance above `s_min`, in [0, 10]. Default 0.5.
    pub beta: f64,
    /// Relevance guardrail: campaign tracks below it are not eligible, never
    /// lifted; finite. Default 0.2.
    pub s_min: f64,
    /// Most promoted tracks per slate, in [1, 1000]. Default 3.
    pub k_max: u32,
    /// Proportional gain on the normalized delivery error, in [0, 100]. Default 4.
    pub kp: f64,
    /// Integral gain on the leaky integral of the error (error-hours), in
    /// [0, 100]. Default 1.
    pub ki: f64,
    /// Derivative gain on the rate of change of the error (per hour), in
    /// [0, 100]. Default 2.
    pub kd: f64,
    /// Share of the integral kept after one hour, in [0, 1): the integrator's
    /// time constant is `-1 / ln(leak)` hours; 0 forgets at once. Default 0.9.
    pub leak: f64,
    /// Lowest pacing multiplier, in (0, 1]. Default 0.2.
    pub m_min: f64,
    /// Highest pacing multiplier, in [1, 100]. Default 5.
    pub m_max: f64,
    /// Frequency cap: a campaign track already promoted to this listener
    /// this many times in 24 h is not eligible (`FREQ_CAPPED`); 0, the
    /// default, caps nothing.
    pub max_daily: u32,
    /// Frequency cap: a campaign track already promoted (played) this many
    /// times in this session is not eligible; 0, the default, caps nothing.
    pub max_session: u32,
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
            max_daily: 0,
            max_session: 0,
        }
    }
}

/// Longest time step the controller integrates over, in milliseconds (one
/// hour): a longer gap since the last stored state counts as one hour.
pub const DT_MAX_MS: i64 = 3_600_000;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// The controller's output for one campaign.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Normalized delivery error `e` (positive when under-delivering); the
    /// next step's `pacing_last_error`.
    pub error: f64,
    /// Updated leaky integral `I'` (error-hours); the next step's
    /// `pacing_integral`.
    pub integral: f64,
    /// Time step in hours (capped at one hour), `None` when unknown.
    pub dt_hours: Option<f64>,
    /// Boost multiplier `m`.
    pub multiplier: f64,
}

/// Runs the PID step for `camp` at `timestamp_ms` (see the crate docs for
/// the equations).
pub fn pacing(s: &Settings, camp: &Campaign, timestamp_ms: i64) -> Pacing {
    let finite_or_zero = |x: f64| if x.is_finite() { x } else { 0.0 };
    let error = finite_or_zero(camp.delivery_error());
    let previous = finite_or_zero(camp.pacing_integral);
    let dt_hours = camp
        .pacing_dt_ms(timestamp_ms)
        .map(|dt| dt.min(DT_MAX_MS) as f64 / MS_PER_HOUR);
    let (integral, derivative) = match dt_hours {
        Some(dt) if dt > 0.0 => {
            let decay = s.leak.powf(dt);
            // tau * (1 - decay), with tau = -1 / ln(leak); 0 when leak is 0.
            let gain = if s.leak > 0.0 {
                (1.0 - decay) / -s.leak.ln()
            } else {
                0.0
            };
            let derivative = if camp.pacing_last_error.is_finite() {
                finite_or_zero((error - camp.pacing_last_error) / dt)
            } else {
                0.0
            };
            (finite_or_zero(decay * previous + gain * error), derivative)
        }
        // No time has passed, or how much is unknown: nothing to integrate
        // over and no rate of change.
        _ => (previous, 0.0),
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
        dt_hours,
        multiplier,
    }
}

impl Policy for PidPacing {
    type Settings = Settings;

    fn metadata() -> Metadata {
        Metadata::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            .description(
                "Guarded boost (active campaign, surface, market, relevance guardrail \
                 relevance >= s_min and p_skip <= theta, beta * (relevance - s_min), at most \
                 k_max per slate) multiplied per campaign by m = clamp(exp(kp*e + ki*I + kd*de/dt), \
                 m_min, m_max) on the normalized delivery error e, with a leaky integral I over \
                 the real time step dt; returns each campaign's new controller state.",
            )
            .requires(&[P_SKIP])
            .setting(
                "theta",
                "relevance guardrail: highest predicted skip probability a promoted track may have, in [0, 1]",
            )
            .setting(
                "beta",
                "boost per unit of relevance above s_min, in [0, 10]",
            )
            .setting(
                "s_min",
                "relevance guardrail: campaign tracks below it are not eligible, never lifted (finite)",
            )
            .setting("k_max", "most promoted tracks per slate, in [1, 1000]")
            .setting(
                "kp",
                "proportional gain on the normalized delivery error, in [0, 100]",
            )
            .setting(
                "ki",
                "integral gain on the leaky integral of the error (error-hours), in [0, 100]",
            )
            .setting(
                "kd",
                "derivative gain on the rate of change of the error (per hour), in [0, 100]",
            )
            .setting(
                "leak",
                "share of the error integral kept after one hour, in [0, 1) (time constant -1/ln(leak) hours)",
            )
            .setting("m_min", "lowest pacing multiplier, in (0, 1]")
            .setting("m_max", "highest pacing multiplier, in [1, 100]")
            .setting(
                "max_daily",
                "frequency cap: a track promoted to the listener this many times in 24 h is not eligible; 0 caps nothing",
            )
            .setting(
                "max_session",
                "frequency cap: a track promoted this many times in the session is not eligible; 0 caps nothing",
            )
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
        let now = req.context.timestamp_ms;
        let pacings: Vec<Pacing> = req.campaigns.iter().map(|c| pacing(s, c, now)).collect();
        // Passthrough reads a non-finite relevance as 0: scores stay finite.
        let mut out = Decisions::passthrough(req);
        let base = out.scores.clone();
        let guard = Guard {
            theta: s.theta,
            beta: s.beta,
            s_min: s.s_min,
        };
        let caps = blocks::FrequencyCap {
            max_daily: s.max_daily,
            max_session: s.max_session,
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

            let verdict = guard
                .scaled(p.multiplier)
                .evaluate(c, base[i], p_skip)
                .blocked_by(caps.check(c));
            if let Some(boost) = verdict.apply(&mut out, i) {
                if p.multiplier < 1.0 {
                    out.mark(i, Reason::PACING_THROTTLED);
                }
                promoted.push((i, boost));
            }
        }
        // Slate cap: the highest final boosts win.
        blocks::slate_cap(&mut out, &base, &mut promoted, s.k_max as usize);
        // The controller's new state, once per campaign of the request.
        for (k, p) in pacings.iter().enumerate() {
            out.update_campaign(k, p.integral, p.error);
        }
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

    /// Half an hour, in ms: the time step of [`single`].
    const HALF_HOUR_MS: i64 = 1_800_000;

    /// One campaign with the given delivery and controller state, stored
    /// half an hour before [`NOW_MS`], and one candidate.
    fn single(target: f64, delivered: f64, expected: f64, integral: f64, last: f64) -> Request {
        single_at(
            target,
            delivered,
            expected,
            integral,
            last,
            NOW_MS - HALF_HOUR_MS,
        )
    }

    fn single_at(
        target: f64,
        delivered: f64,
        expected: f64,
        integral: f64,
        last: f64,
        updated_ms: i64,
    ) -> Request {
        RequestBuilder::new()
            .features(&["p_skip"])
            .campaign(
                CampaignSpec::new(1)
                    .delivery(target, delivered, expected)
                    .pacing_state(integral, last)
                    .pacing_updated_ms(updated_ms),
            )
            .candidate(cand(0.7, 0))
            .build()
    }

    /// The integrator step of the crate docs: (decay, tau * (1 - decay)).
    fn step(leak: f64, dt_h: f64) -> (f64, f64) {
        let decay = leak.powf(dt_h);
        (decay, (1.0 - decay) / -leak.ln())
    }

    /// The single campaign update of `out`, as (integral, last error).
    fn update_of(out: &Decisions) -> (f64, f64) {
        assert_eq!(out.campaign_updates.len(), 1, "{:?}", out.campaign_updates);
        let u = out.campaign_updates[0];
        assert_eq!(u.campaign, 0);
        (u.pacing_integral, u.pacing_last_error)
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
        // e = (400 - 300) / 1000 = 0.1, I = 0.2, e_prev = 0.04, dt = 0.5 h, leak 0.5.
        let req = single(1000.0, 300.0, 400.0, 0.2, 0.04);
        let json = r#"{"kp": 2, "ki": 3, "kd": 5, "leak": 0.5}"#;
        let out = run::<PidPacing>(json, &req).unwrap();
        let (decay, gain) = step(0.5, 0.5);
        assert_close(decay, 0.5_f64.sqrt());
        let integral = decay * 0.2 + gain * 0.1;
        let derivative = (0.1 - 0.04) / 0.5;
        let m = (2.0 * 0.1 + 3.0 * integral + 5.0 * derivative).exp();
        assert_close(debug_of(&out, "pacing_multiplier", 0), m);
        assert_close(debug_of(&out, "pacing_error", 0), 0.1);
        assert_close(debug_of(&out, "pacing_integral", 0), integral);
        assert_close(out.scores[0], 0.7 + m * 0.5 * 0.5);
        assert_eq!(out.reasons[0], Reason::PROMOTED);
        let (i, e) = update_of(&out);
        assert_close(i, integral);
        assert_close(e, 0.1);
    }

    #[test]
    fn each_gain_acts_on_its_own_term() {
        // e = 0.1, integral state 1.0, last error 0.3, dt = 0.5 h.
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
        let (decay, gain) = step(0.25, 0.5);
        assert_close(only_i, (decay * 1.0 + gain * 0.1).exp());
        assert!(
            is_close(only_d, ((0.1 - 0.3) / 0.5_f64).exp()),
            "falling error damps: {only_d}"
        );
    }

    #[test]
    fn the_new_state_is_returned_once_for_every_campaign() {
        // Three campaigns: one promoted, one ended (nothing promoted), one
        // without candidates; campaign 0 has two candidates.
        let req = RequestBuilder::new()
            .features(&["p_skip"])
            .campaign(
                CampaignSpec::new(1)
                    .delivery(1000.0, 300.0, 400.0)
                    .pacing_state(0.2, 0.05)
                    .pacing_updated_ms(NOW_MS - 600_000),
            )
            .campaign(
                CampaignSpec::new(2)
                    .window(NOW_MS - 10, NOW_MS)
                    .delivery(1000.0, 500.0, 400.0),
            )
            .campaign(CampaignSpec::new(3).delivery(100.0, 0.0, 50.0))
            .candidate(cand(0.7, 0))
            .candidate(cand(0.6, 0))
            .candidate(cand(0.9, 1))
            .build();
        let out = run::<PidPacing>("", &req).unwrap();
        let campaigns: Vec<u32> = out.campaign_updates.iter().map(|u| u.campaign).collect();
        assert_eq!(campaigns, vec![0, 1, 2]);
        let (decay, gain) = step(0.9, 600_000.0 / 3_600_000.0);
        let u = out.campaign_updates[0];
        assert_close(u.pacing_integral, decay * 0.2 + gain * 0.1);
        assert_close(u.pacing_last_error, 0.1);
        assert_eq!(debug_of(&out, "pacing_integral", 1), u.pacing_integral);
        // Never stored before: dt unknown, the integral is carried unchanged.
        assert_eq!(
            (
                out.campaign_updates[1].pacing_integral,
                out.campaign_updates[1].pacing_last_error
            ),
            (0.0, -0.1)
        );
        assert_eq!(
            (
                out.campaign_updates[2].pacing_integral,
                out.campaign_updates[2].pacing_last_error
            ),
            (0.0, 0.5)
        );
    }

    #[test]
    fn the_time_step_matters_and_is_capped_at_one_hour() {
        let state = |updated_ms: i64| {
            let out = run::<PidPacing>("", &single_at(1000.0, 300.0, 400.0, 0.2, 0.04, updated_ms))
                .unwrap();
            (update_of(&out).0, debug_of(&out, "pacing_multiplier", 0))
        };
        let minute = state(NOW_MS - 60_000);
        let hour = state(NOW_MS - 3_600_000);
        assert!(
            hour.0 > minute.0,
            "a longer step integrates more: {minute:?} {hour:?}"
        );
        let (decay, gain) = step(0.9, 1.0 / 60.0);
        assert_close(minute.0, decay * 0.2 + gain * 0.1);
        // A faster change of the error is a larger derivative: (0.1 - 0.04) / dt.
        let (_, gain_h) = step(0.9, 1.0);
        let phi_hour = 4.0 * 0.1 + (0.9 * 0.2 + gain_h * 0.1) + 2.0 * 0.06;
        assert_close(hour.1, phi_hour.exp());
        assert!(minute.1 > hour.1, "{minute:?} {hour:?}");
        // A day idle counts as one hour.
        assert_eq!(state(NOW_MS - 86_400_000), hour);
        // Unknown (never stored) and zero (same millisecond, or a stored
        // time ahead of this request's) steps integrate nothing and have no
        // derivative: I' = I, m = exp(kp * e + ki * I).
        let none = state(0);
        assert_eq!(none.0, 0.2);
        assert_close(none.1, (4.0 * 0.1 + 0.2_f64).exp());
        assert_eq!(state(NOW_MS), none);
        assert_eq!(state(NOW_MS + 5_000), none);
    }

    #[test]
    fn the_integral_stays_bounded_under_a_persistent_error() {
        // Feed each step's update back as the next request's state, one
        // hour apart, with the error stuck at e = 0.3: I converges to
        // tau * e from below and never overshoots.
        let tau = -1.0 / 0.9_f64.ln();
        let (mut integral, mut last, mut now) = (0.0, 0.0, NOW_MS);
        let mut previous = 0.0;
        for k in 0..500 {
            let req = RequestBuilder::new()
                .timestamp_ms(now)
                .features(&["p_skip"])
                .campaign(
                    CampaignSpec::new(1)
                        .window(NOW_MS - 1, i64::MAX)
                        .delivery(1000.0, 100.0, 400.0)
                        .pacing_state(integral, last)
                        .pacing_updated_ms(if k == 0 { 0 } else { now - 3_600_000 }),
                )
                .candidate(cand(0.7, 0))
                .build();
            let out = run::<PidPacing>("", &req).unwrap();
            (integral, last) = update_of(&out);
            assert!(
                integral >= previous && integral <= tau * 0.3 + 1e-12,
                "step {k}: {integral}"
            );
            previous = integral;
            now += 3_600_000;
        }
        assert!(
            is_close(integral, tau * 0.3) || (integral - tau * 0.3).abs() < 1e-9,
            "{integral}"
        );
        // From above (a large stored integral), it decays toward tau * e.
        let out = run::<PidPacing>("", &single(1000.0, 100.0, 400.0, 50.0, 0.3)).unwrap();
        let (i, _) = update_of(&out);
        assert!(i < 50.0 && i > tau * 0.3, "{i}");
    }

    #[test]
    fn leak_zero_forgets_at_once() {
        let out =
            run::<PidPacing>(r#"{"leak": 0}"#, &single(1000.0, 300.0, 400.0, 7.0, 0.1)).unwrap();
        assert_eq!(update_of(&out), (0.0, 0.1));
    }

    #[test]
    fn over_delivery_throttles_and_is_clamped() {
        // Far ahead of schedule: e = -0.5, I' < 0, de/dt = -1 per hour: m < 0.2.
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
        assert_eq!(
            out.reasons[2],
            Reason::RELEVANCE_GUARDRAIL | Reason::MISSING_FEATURE
        );
        assert_eq!(out.reasons[3], Reason::CAMPAIGN_INACTIVE);
        assert_eq!(out.reasons[4], Reason::ORGANIC);
        assert_eq!(out.eligible, vec![false; 5], "below s_min: not eligible");
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
    fn golden_fixtures_pass_natively() {
        oasis_sdk::testing::assert_fixtures_pass::<PidPacing>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures"
        ));
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
            ("max_daily", "0"),
            ("max_session", "0"),
        ]);
    }

    #[test]
    fn frequency_caps_hold_back_capped_tracks_only_when_set() {
        let req = RequestBuilder::new()
            .features(&["p_skip"])
            .campaign(
                CampaignSpec::new(1)
                    .delivery(1000.0, 500.0, 500.0)
                    .pacing_updated_ms(NOW_MS - HALF_HOUR_MS),
            )
            .candidate(cand(0.7, 0).impressions(2, 0)) // below both caps
            .candidate(cand(0.7, 0).impressions(3, 0)) // daily cap reached
            .candidate(cand(0.7, 0).impressions(0, 1)) // session cap reached
            .build();
        // Off by default: all three are lifted.
        let out = run::<PidPacing>("", &req).unwrap();
        assert!(out.reasons.iter().all(|r| r.contains(Reason::PROMOTED)));
        let out = run::<PidPacing>(r#"{"max_daily": 3, "max_session": 1}"#, &req).unwrap();
        assert_eq!(
            out.reasons,
            vec![Reason::PROMOTED, Reason::FREQ_CAPPED, Reason::FREQ_CAPPED]
        );
        assert_eq!(out.eligible, vec![true, false, false]);
        assert_eq!(
            &out.scores[1..],
            &[0.7, 0.7],
            "capped tracks keep relevance"
        );
        // The controller still steps once for the campaign.
        assert_eq!(out.campaign_updates.len(), 1);
    }
}
