//! Guardrails: judge a canary on its recent requests and say when it must
//! be rolled back.
//!
//! Each canary request adds one sample (did the canary answer, how long its
//! call took) to a window of the canary's most recent `window` requests.
//! With at least `min_samples` in the window, a share of failures above
//! `max_error_rate` or a p99 latency above `max_p99_ms` trips the guardrail
//! once; the caller then rolls the canary back (off the request path). A new
//! canary version starts a new window.

use std::collections::VecDeque;

use crate::control::manifest::Guardrails;

/// The recent samples of one route's canary.
#[derive(Debug, Default)]
pub struct CanaryWindow {
    digest: String,
    samples: VecDeque<(bool, u32)>,
    failures: usize,
    tripped: bool,
    scratch: Vec<u32>,
}

/// What the window says now.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct WindowSummary {
    /// The canary version judged.
    pub digest: String,
    /// Samples in the window.
    pub samples: usize,
    /// Share of failed canary calls.
    pub error_rate: f64,
    /// The 99th percentile of the canary's call latency in the window,
    /// milliseconds (`null` without samples): what `max_p99_ms` is
    /// compared with.
    pub p99_ms: Option<f64>,
    /// Whether a guardrail tripped for this version.
    pub tripped: bool,
}

impl CanaryWindow {
    /// Records one canary call of version `digest` (`ok` if the canary
    /// answered, `latency_us` its call time) and returns the breach, once,
    /// when the guardrails `g` trip.
    pub fn record(
        &mut self,
        digest: &str,
        ok: bool,
        latency_us: u64,
        g: &Guardrails,
    ) -> Option<String> {
        if self.digest != digest {
            self.digest = digest.to_string();
            self.samples.clear();
            self.failures = 0;
            self.tripped = false;
        }
        if self.tripped {
            return None;
        }
        self.samples
            .push_back((ok, latency_us.min(u32::MAX as u64) as u32));
        self.failures += usize::from(!ok);
        while self.samples.len() > g.window {
            if let Some((false, _)) = self.samples.pop_front() {
                self.failures -= 1;
            }
        }
        let n = self.samples.len();
        if n < g.min_samples {
            return None;
        }
        let rate = self.failures as f64 / n as f64;
        let breach = match (g.max_error_rate, g.max_p99_ms) {
            (Some(max), _) if rate > max => Some(format!(
                "error rate {:.1}% over the last {n} canary requests exceeds {:.1}%",
                rate * 100.0,
                max * 100.0
            )),
            (_, Some(max_ms)) => {
                let p99_ms = self.p99_us() as f64 / 1000.0;
                (p99_ms > max_ms).then(|| {
                    format!(
                        "p99 latency {p99_ms:.2} ms over the last {n} canary requests exceeds {max_ms} ms"
                    )
                })
            }
            _ => None,
        };
        self.tripped = breach.is_some();
        breach
    }

    /// The 99th percentile of the window's latencies, microseconds.
    fn p99_us(&mut self) -> u32 {
        self.scratch.clear();
        self.scratch.extend(self.samples.iter().map(|(_, us)| *us));
        p99(&mut self.scratch)
    }

    /// The window's state, for the route status.
    pub fn summary(&self) -> Option<WindowSummary> {
        (!self.digest.is_empty()).then(|| WindowSummary {
            digest: self.digest.clone(),
            samples: self.samples.len(),
            error_rate: if self.samples.is_empty() {
                0.0
            } else {
                self.failures as f64 / self.samples.len() as f64
            },
            p99_ms: (!self.samples.is_empty()).then(|| {
                // A status read: a copy of the window, not the hot scratch.
                let mut us: Vec<u32> = self.samples.iter().map(|(_, us)| *us).collect();
                f64::from(p99(&mut us)) / 1000.0
            }),
            tripped: self.tripped,
        })
    }
}

/// The 99th percentile of `values` (not empty), reordering them.
fn p99(values: &mut [u32]) -> u32 {
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
        }
    }

    #[test]
    fn trips_once_on_error_rate_after_min_samples() {
        let g = g(10, 5, Some(0.2), None);
        let mut w = CanaryWindow::default();
        // 2 failures in the first 4: not judged yet.
        for ok in [false, false, true, true] {
            assert_eq!(w.record("a", ok, 10, &g), None);
        }
        let why = w.record("a", true, 10, &g).expect("2/5 = 40% > 20%");
        assert!(why.contains("error rate 40.0%"), "{why}");
        assert_eq!(w.record("a", false, 10, &g), None, "trips once");
        assert!(w.summary().unwrap().tripped);
        // A new version starts over.
        assert_eq!(w.record("b", true, 10, &g), None);
        assert_eq!(w.summary().unwrap().samples, 1);
    }

    #[test]
    fn the_window_forgets_old_failures() {
        let g = g(5, 5, Some(0.2), None);
        let mut w = CanaryWindow::default();
        assert_eq!(w.record("a", false, 1, &g), None);
        for _ in 0..3 {
            assert_eq!(w.record("a", true, 1, &g), None);
        }
        // 1 failure in 5 = 20%, not above.
        assert_eq!(w.record("a", true, 1, &g), None);
        // The failure leaves the window.
        assert_eq!(w.record("a", true, 1, &g), None);
        assert_eq!(w.summary().unwrap().error_rate, 0.0);
    }

    #[test]
    fn trips_on_p99_latency() {
        let g = g(100, 100, None, Some(5.0));
        let mut w = CanaryWindow::default();
        for i in 0..99 {
            assert_eq!(w.record("a", true, 1_000 + i, &g), None);
        }
        // 1 slow call in 100: p99 is the 99th value (1,098 µs): fine.
        assert_eq!(w.record("a", true, 50_000, &g), None);
        // The status shows the p99 the limit is compared with.
        assert_eq!(w.summary().unwrap().p99_ms, Some(1.098));
        let mut w = CanaryWindow::default();
        assert_eq!(w.summary(), None);
        for i in 0..98 {
            w.record("a", true, 1_000 + i, &g);
        }
        w.record("a", true, 50_000, &g);
        let why = w.record("a", true, 60_000, &g).expect("2 slow in 100");
        assert!(why.contains("p99 latency 50.00 ms"), "{why}");
        assert_eq!(w.summary().unwrap().p99_ms, Some(50.0));
    }
}
