//! Guardrails: judge a canary on its recent requests and say when it must
//! be rolled back.
//!
//! Each canary request adds one sample (did the canary answer, how long its
//! call took, how many candidates it scored, promoted and marked eligible)
//! to a window of the canary's most recent `window` requests; each stable
//! request served meanwhile adds one to the stable arm's window. With at
//! least `min_samples` in the window, a share of failures above
//! `max_error_rate`, a p99 latency above `max_p99_ms`, or a promoted or
//! eligible rate outside its `*_ratio` bounds of the stable arm's (the
//! business guardrail, [`judge`]) trips the guardrail once; the caller then
//! rolls the canary back (off the request path). A new canary version starts
//! a new window. [`crate::serving::fleet_window`] judges the same counts
//! summed over every replica.

use std::collections::VecDeque;

use crate::control::manifest::Guardrails;

/// What one served request adds to an arm's window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// The arm answered (a failed canary call counts as a failure and
    /// scores no candidates).
    pub ok: bool,
    /// The arm's call time, microseconds.
    pub latency_us: u64,
    /// Candidates the arm scored.
    pub candidates: u64,
    /// Candidates it promoted (reason bit `PROMOTED`).
    pub promoted: u64,
    /// Candidates it marked eligible.
    pub eligible: u64,
}

/// One arm's counts over a window: what the guardrails judge. Counts add,
/// so a fleet's window is the sum of its replicas'.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArmTotals {
    /// Requests the arm was assigned.
    pub requests: u64,
    /// Of which its call failed.
    pub failures: u64,
    /// Candidates it scored.
    pub candidates: u64,
    /// Candidates it promoted.
    pub promoted: u64,
    /// Candidates it marked eligible.
    pub eligible: u64,
}

impl ArmTotals {
    /// Adds one request's `s`.
    pub fn add(&mut self, s: &Sample) {
        self.requests += 1;
        self.failures += u64::from(!s.ok);
        self.candidates += s.candidates;
        self.promoted += s.promoted;
        self.eligible += s.eligible;
    }

    /// Removes one request's `s` (it left the window).
    fn remove(&mut self, s: &Sample) {
        self.requests -= 1;
        self.failures -= u64::from(!s.ok);
        self.candidates -= s.candidates;
        self.promoted -= s.promoted;
        self.eligible -= s.eligible;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ArmTotals) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.candidates += other.candidates;
        self.promoted += other.promoted;
        self.eligible += other.eligible;
    }

    /// Share of failed calls (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failures as f64 / self.requests as f64
        }
    }

    /// Promoted candidates per candidate scored (`None` without candidates).
    pub fn promoted_rate(&self) -> Option<f64> {
        (self.candidates > 0).then(|| self.promoted as f64 / self.candidates as f64)
    }

    /// Eligible candidates per candidate scored (`None` without candidates).
    pub fn eligible_rate(&self) -> Option<f64> {
        (self.candidates > 0).then(|| self.eligible as f64 / self.candidates as f64)
    }
}

/// Judges a canary's window (`canary`, with its p99 from `p99_ms`) against
/// the stable arm's over the same window (`stable`) under `g`; `scope`
/// names the window in the reason ("the last 60 canary requests"). Returns
/// the breach: error rate, then p99, then the business ratios.
pub fn judge(
    g: &Guardrails,
    canary: &ArmTotals,
    stable: &ArmTotals,
    p99_ms: impl FnOnce() -> Option<f64>,
    scope: &str,
) -> Option<String> {
    if canary.requests < g.min_samples as u64 {
        return None;
    }
    if let Some(max) = g.max_error_rate {
        let rate = canary.error_rate();
        if rate > max {
            return Some(format!(
                "error rate {:.1}% over {scope} exceeds {:.1}%",
                rate * 100.0,
                max * 100.0
            ));
        }
    }
    if let Some(max_ms) = g.max_p99_ms
        && let Some(p99_ms) = p99_ms()
        && p99_ms > max_ms
    {
        return Some(format!(
            "p99 latency {p99_ms:.2} ms over {scope} exceeds {max_ms} ms"
        ));
    }
    // The business guardrail: the stable arm must have been sampled as much
    // over the same window, and must have scored candidates.
    if stable.requests < g.min_samples as u64 {
        return None;
    }
    let metrics = [
        (
            "promoted",
            canary.promoted_rate(),
            stable.promoted_rate(),
            g.min_promoted_ratio,
            g.max_promoted_ratio,
        ),
        (
            "eligible",
            canary.eligible_rate(),
            stable.eligible_rate(),
            g.min_eligible_ratio,
            g.max_eligible_ratio,
        ),
    ];
    for (metric, canary_rate, stable_rate, min, max) in metrics {
        let (Some(c), Some(s)) = (canary_rate, stable_rate) else {
            continue;
        };
        // A ratio of the stable arm's rate: undefined when it is 0.
        if s <= 0.0 {
            continue;
        }
        let pct = |r: f64| r * 100.0;
        if let Some(lo) = min
            && c < lo * s
        {
            return Some(format!(
                "{metric} rate {:.2}% is below min_{metric}_ratio {lo} of the stable arm's {:.2}% \
                 (at least {:.2}%) over {scope} and {} stable requests",
                pct(c),
                pct(s),
                pct(lo * s),
                stable.requests
            ));
        }
        if let Some(hi) = max
            && c > hi * s
        {
            return Some(format!(
                "{metric} rate {:.2}% is above max_{metric}_ratio {hi} of the stable arm's {:.2}% \
                 (at most {:.2}%) over {scope} and {} stable requests",
                pct(c),
                pct(s),
                pct(hi * s),
                stable.requests
            ));
        }
    }
    None
}

/// The recent samples of one route's canary, and of its stable arm over the
/// same stretch of traffic.
#[derive(Debug, Default)]
pub struct CanaryWindow {
    digest: String,
    samples: VecDeque<Sample>,
    totals: ArmTotals,
    stable: VecDeque<Sample>,
    stable_totals: ArmTotals,
    tripped: bool,
    scratch: Vec<u64>,
}

/// What the window says now.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct WindowSummary {
    /// The canary version judged.
    pub digest: String,
    /// Whose requests the window counts: `replica` (this server's) or
    /// `fleet` (every replica's, from the shared counters).
    pub scope: &'static str,
    /// Samples in the window.
    pub samples: usize,
    /// Share of failed canary calls.
    pub error_rate: f64,
    /// The 99th percentile of the canary's call latency in the window,
    /// milliseconds (`null` without samples): what `max_p99_ms` is
    /// compared with.
    pub p99_ms: Option<f64>,
    /// The canary's promoted candidates per candidate in the window
    /// (`null` without candidates).
    pub promoted_rate: Option<f64>,
    /// The canary's eligible candidates per candidate in the window.
    pub eligible_rate: Option<f64>,
    /// Stable requests sampled over the same window.
    pub stable_samples: usize,
    /// The stable arm's promoted rate over the window: what the
    /// `*_promoted_ratio` bounds multiply.
    pub stable_promoted_rate: Option<f64>,
    /// The stable arm's eligible rate over the window.
    pub stable_eligible_rate: Option<f64>,
    /// Whether a guardrail tripped for this version.
    pub tripped: bool,
}

impl WindowSummary {
    /// The summary of `canary` and `stable` totals of version `digest`.
    pub fn of(
        digest: &str,
        scope: &'static str,
        canary: &ArmTotals,
        stable: &ArmTotals,
        p99_ms: Option<f64>,
        tripped: bool,
    ) -> Self {
        WindowSummary {
            digest: digest.to_string(),
            scope,
            samples: canary.requests as usize,
            error_rate: canary.error_rate(),
            p99_ms,
            promoted_rate: canary.promoted_rate(),
            eligible_rate: canary.eligible_rate(),
            stable_samples: stable.requests as usize,
            stable_promoted_rate: stable.promoted_rate(),
            stable_eligible_rate: stable.eligible_rate(),
            tripped,
        }
    }
}

impl CanaryWindow {
    /// Starts over when the canary version is not `digest`.
    fn follow(&mut self, digest: &str) {
        if self.digest != digest {
            *self = CanaryWindow {
                digest: digest.to_string(),
                scratch: std::mem::take(&mut self.scratch),
                ..CanaryWindow::default()
            };
        }
    }

    /// Records one stable request served while canary `digest` runs: the
    /// business guardrail compares the canary's rates with these.
    pub fn record_stable(&mut self, digest: &str, s: Sample, g: &Guardrails) {
        self.follow(digest);
        self.stable.push_back(s);
        self.stable_totals.add(&s);
        while self.stable.len() > g.window {
            if let Some(old) = self.stable.pop_front() {
                self.stable_totals.remove(&old);
            }
        }
    }

    /// Records one canary call of version `digest` and returns the breach,
    /// once, when the guardrails `g` trip.
    pub fn record(&mut self, digest: &str, s: Sample, g: &Guardrails) -> Option<String> {
        self.follow(digest);
        if self.tripped {
            return None;
        }
        self.samples.push_back(s);
        self.totals.add(&s);
        while self.samples.len() > g.window {
            if let Some(old) = self.samples.pop_front() {
                self.totals.remove(&old);
            }
        }
        let n = self.samples.len();
        let (samples, scratch) = (&self.samples, &mut self.scratch);
        let breach = judge(
            g,
            &self.totals,
            &self.stable_totals,
            || {
                scratch.clear();
                scratch.extend(samples.iter().map(|s| s.latency_us));
                Some(p99(scratch) as f64 / 1000.0)
            },
            &format!("the last {n} canary requests"),
        );
        self.tripped = breach.is_some();
        breach
    }

    /// The window's state, for the route status.
    pub fn summary(&self) -> Option<WindowSummary> {
        (!self.digest.is_empty()).then(|| {
            let p99_ms = (!self.samples.is_empty()).then(|| {
                // A status read: a copy of the window, not the hot scratch.
                let mut us: Vec<u64> = self.samples.iter().map(|s| s.latency_us).collect();
                p99(&mut us) as f64 / 1000.0
            });
            WindowSummary::of(
                &self.digest,
                "replica",
                &self.totals,
                &self.stable_totals,
                p99_ms,
                self.tripped,
            )
        })
    }
}

/// The 99th percentile of `values` (not empty), reordering them.
fn p99(values: &mut [u64]) -> u64 {
    let rank = ((values.len() as f64 * 0.99).ceil() as usize).clamp(1, values.len());
    *values.select_nth_unstable(rank - 1).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(window: usize, min: usize, rate: Option<f64>, p99: Option<f64>) -> Guardrails {
        Guardrails {
            window,
            min_samples: min,
            max_error_rate: rate,
            max_p99_ms: p99,
            ..Guardrails::default()
        }
    }

    fn call(ok: bool, latency_us: u64) -> Sample {
        Sample {
            ok,
            latency_us,
            ..Sample::default()
        }
    }

    /// A request answered with `candidates`, `promoted` of them promoted
    /// and `eligible` eligible.
    fn scored(candidates: u64, promoted: u64, eligible: u64) -> Sample {
        Sample {
            ok: true,
            latency_us: 10,
            candidates,
            promoted,
            eligible,
        }
    }

    #[test]
    fn trips_once_on_error_rate_after_min_samples() {
        let g = g(10, 5, Some(0.2), None);
        let mut w = CanaryWindow::default();
        // 2 failures in the first 4: not judged yet.
        for ok in [false, false, true, true] {
            assert_eq!(w.record("a", call(ok, 10), &g), None);
        }
        let why = w.record("a", call(true, 10), &g).expect("2/5 = 40% > 20%");
        assert!(why.contains("error rate 40.0%"), "{why}");
        assert_eq!(w.record("a", call(false, 10), &g), None, "trips once");
        assert!(w.summary().unwrap().tripped);
        // A new version starts over.
        assert_eq!(w.record("b", call(true, 10), &g), None);
        assert_eq!(w.summary().unwrap().samples, 1);
    }

    #[test]
    fn the_window_forgets_old_failures() {
        let g = g(5, 5, Some(0.2), None);
        let mut w = CanaryWindow::default();
        assert_eq!(w.record("a", call(false, 1), &g), None);
        for _ in 0..3 {
            assert_eq!(w.record("a", call(true, 1), &g), None);
        }
        // 1 failure in 5 = 20%, not above.
        assert_eq!(w.record("a", call(true, 1), &g), None);
        // The failure leaves the window.
        assert_eq!(w.record("a", call(true, 1), &g), None);
        assert_eq!(w.summary().unwrap().error_rate, 0.0);
    }

    #[test]
    fn trips_on_p99_latency() {
        let g = g(100, 100, None, Some(5.0));
        let mut w = CanaryWindow::default();
        for i in 0..99 {
            assert_eq!(w.record("a", call(true, 1_000 + i), &g), None);
        }
        // 1 slow call in 100: p99 is the 99th value (1,098 µs): fine.
        assert_eq!(w.record("a", call(true, 50_000), &g), None);
        // The status shows the p99 the limit is compared with.
        assert_eq!(w.summary().unwrap().p99_ms, Some(1.098));
        let mut w = CanaryWindow::default();
        assert_eq!(w.summary(), None);
        for i in 0..98 {
            w.record("a", call(true, 1_000 + i), &g);
        }
        w.record("a", call(true, 50_000), &g);
        let why = w
            .record("a", call(true, 60_000), &g)
            .expect("2 slow in 100");
        assert!(why.contains("p99 latency 50.00 ms"), "{why}");
        assert_eq!(w.summary().unwrap().p99_ms, Some(50.0));
    }

    #[test]
    fn a_canary_that_promotes_nothing_trips_the_default_business_guardrail() {
        let g = g(20, 10, Some(0.05), None);
        assert_eq!(g.min_promoted_ratio, Some(0.1), "the default");
        let mut w = CanaryWindow::default();
        // Stable promotes 2 of 10 candidates: 20%.
        for _ in 0..10 {
            w.record_stable("a", scored(10, 2, 8), &g);
        }
        for _ in 0..9 {
            assert_eq!(w.record("a", scored(10, 0, 8), &g), None, "too few samples");
        }
        let why = w.record("a", scored(10, 0, 8), &g).expect("0% < 0.1 × 20%");
        assert!(
            why.contains("promoted rate 0.00% is below min_promoted_ratio 0.1 of the stable arm's 20.00% (at least 2.00%)"),
            "{why}"
        );
        let s = w.summary().unwrap();
        assert_eq!(
            (s.promoted_rate, s.stable_promoted_rate, s.stable_samples),
            (Some(0.0), Some(0.2), 10)
        );
        assert_eq!(
            (s.eligible_rate, s.stable_eligible_rate),
            (Some(0.8), Some(0.8))
        );
    }

    #[test]
    fn the_business_guardrail_needs_a_sampled_stable_arm_that_promotes() {
        let g = g(20, 10, None, None);
        // The stable arm sampled fewer than min_samples times: not judged.
        let mut w = CanaryWindow::default();
        for _ in 0..9 {
            w.record_stable("a", scored(10, 2, 8), &g);
        }
        for _ in 0..20 {
            assert_eq!(w.record("a", scored(10, 0, 8), &g), None);
        }
        // A stable arm that promotes nothing: no ratio to hold the canary to.
        let mut w = CanaryWindow::default();
        for _ in 0..20 {
            w.record_stable("a", scored(10, 0, 8), &g);
        }
        for _ in 0..20 {
            assert_eq!(w.record("a", scored(10, 0, 8), &g), None);
        }
        // A canary within the bound (1.5% ≥ 0.1 × 10%).
        let mut w = CanaryWindow::default();
        for _ in 0..20 {
            w.record_stable("a", scored(10, 1, 8), &g);
        }
        for i in 0..20 {
            let promoted = u64::from(i % 4 == 0);
            assert_eq!(w.record("a", scored(10, promoted, 8), &g), None);
        }
    }

    #[test]
    fn eligible_and_upper_ratios_trip_naming_their_key() {
        let g = Guardrails {
            min_eligible_ratio: Some(0.5),
            ..g(10, 10, None, None)
        };
        let mut w = CanaryWindow::default();
        for _ in 0..10 {
            w.record_stable("a", scored(10, 1, 8), &g);
        }
        for _ in 0..9 {
            w.record("a", scored(10, 1, 3), &g);
        }
        let why = w
            .record("a", scored(10, 1, 3), &g)
            .expect("30% < 0.5 × 80%");
        assert!(
            why.starts_with("eligible rate 30.00% is below min_eligible_ratio 0.5"),
            "{why}"
        );

        let g = Guardrails {
            max_promoted_ratio: Some(2.0),
            ..g
        };
        let mut w = CanaryWindow::default();
        for _ in 0..10 {
            w.record_stable("a", scored(10, 1, 8), &g);
        }
        for _ in 0..9 {
            w.record("a", scored(10, 5, 8), &g);
        }
        let why = w.record("a", scored(10, 5, 8), &g).expect("50% > 2 × 10%");
        assert!(
            why.starts_with("promoted rate 50.00% is above max_promoted_ratio 2 of the stable arm's 10.00% (at most 20.00%)"),
            "{why}"
        );
    }

    #[test]
    fn ratio_keys_are_validated_naming_the_key() {
        let bad = |g: Guardrails| g.validate().unwrap_err();
        let base = Guardrails::default();
        assert!(
            bad(Guardrails {
                min_promoted_ratio: Some(-0.1),
                ..base.clone()
            })
            .starts_with("guardrails.min_promoted_ratio must be in [0, 1000]")
        );
        assert!(
            bad(Guardrails {
                max_eligible_ratio: Some(f64::NAN),
                ..base.clone()
            })
            .starts_with("guardrails.max_eligible_ratio must be in [0, 1000]")
        );
        assert_eq!(
            bad(Guardrails {
                min_eligible_ratio: Some(2.0),
                max_eligible_ratio: Some(1.5),
                ..base.clone()
            }),
            "guardrails.min_eligible_ratio (2) must not exceed guardrails.max_eligible_ratio (1.5)"
        );
        assert!(
            Guardrails {
                min_promoted_ratio: None,
                ..base
            }
            .validate()
            .is_ok()
        );
    }
}
