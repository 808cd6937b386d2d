//! The targets and their evaluation: each measured figure against its
//! limit, pass or miss, and for a miss the measured reason.
//!
//! The limits are issue 21's where it set them (isolation, end to end,
//! throughput: the open issue's "done when", so the report's PASS/MISS is
//! the verdict) and issue 9's elsewhere (policy call, p99 at 80% of
//! peak, startup). Issue 9 had asked for isolation <= 10 us, JSON end to
//! end <= 400 us and throughput >= 90%; issue 21 re-set them after the
//! measured breakdown of what isolation costs.

/// Isolation (an instance in its state after instantiation + empty call) at
/// most this, µs (issue 21).
pub const ISOLATION_US: f64 = 15.0;
/// gRPC end-to-end server time at 1000 × 30 at most this, µs (issue 21).
pub const GRPC_END_TO_END_US: f64 = 250.0;
/// JSON end-to-end server time at 1000 × 30 at most this, µs (issue 21).
pub const JSON_END_TO_END_US: f64 = 600.0;
/// Throughput through Oasis at least this share of the native baseline
/// server's, on HTTP and on gRPC (issue 21).
pub const THROUGHPUT_SHARE: f64 = 0.85;

use std::fmt::Write;

/// One target's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Within the limit.
    Pass,
    /// Over the limit; why, from what was measured.
    Miss(String),
    /// Could not be measured in this run; why.
    NotMeasured(String),
}

/// A target, what was measured, and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// What is targeted.
    pub name: String,
    /// The limit, in words.
    pub goal: String,
    /// The measured figure, in words.
    pub measured: String,
    /// Pass, miss or not measured.
    pub verdict: Verdict,
}

impl Target {
    /// `value` must be at most `limit` (same unit); `why` explains a miss.
    pub fn at_most(
        name: &str,
        goal: String,
        value: f64,
        limit: f64,
        measured: String,
        why: impl FnOnce() -> String,
    ) -> Target {
        Self::judged(name, goal, value, value <= limit, measured, why)
    }

    /// `value` must be at least `limit`; `why` explains a miss.
    pub fn at_least(
        name: &str,
        goal: String,
        value: f64,
        limit: f64,
        measured: String,
        why: impl FnOnce() -> String,
    ) -> Target {
        Self::judged(name, goal, value, value >= limit, measured, why)
    }

    /// Pass when `value` is a figure and `met`; a miss with `why`; not
    /// measured when there is no figure.
    fn judged(
        name: &str,
        goal: String,
        value: f64,
        met: bool,
        measured: String,
        why: impl FnOnce() -> String,
    ) -> Target {
        Target {
            name: name.into(),
            goal,
            measured,
            verdict: if !value.is_finite() {
                Verdict::NotMeasured("no figure".into())
            } else if met {
                Verdict::Pass
            } else {
                Verdict::Miss(why())
            },
        }
    }

    /// A target this run could not measure.
    pub fn not_measured(name: &str, goal: String, why: String) -> Target {
        Target {
            name: name.into(),
            goal,
            measured: "-".into(),
            verdict: Verdict::NotMeasured(why),
        }
    }
}

/// Policy call at 1000×30 within `2 × native + 20 µs`.
pub fn policy_call(policy: &str, native_us: f64, wasm_us: f64, isolation_us: f64) -> Target {
    let limit = 2.0 * native_us + 20.0;
    Target::at_most(
        &format!("policy call 1000x30, {policy}"),
        format!("<= 2 x native + 20 us = {limit:.1} us"),
        wasm_us,
        limit,
        format!("{wasm_us:.1} us (native {native_us:.1} us)"),
        || {
            let per_call = wasm_us - native_us;
            format!(
                "component costs {per_call:.1} us more than native: {isolation_us:.1} us is the \
                 instance reset + empty call, {:.1} us grows with the request (copying columns \
                 into guest memory, wasm code vs native)",
                per_call - isolation_us
            )
        },
    )
}

/// Isolation overhead (instance as instantiated + empty call) at most [`ISOLATION_US`].
pub fn isolation(us: f64, native_empty_us: f64) -> Target {
    Target::at_most(
        "isolation overhead (instance as instantiated + empty call)",
        format!("<= {ISOLATION_US:.0} us"),
        us,
        ISOLATION_US,
        format!("{us:.1} us (native empty call {native_empty_us:.2} us)"),
        || {
            format!(
                "an instance put back to its state after instantiation (memory slot reset, \
                 tables, globals, component state) plus lifting an empty request takes {us:.1} us \
                 on this machine"
            )
        },
    )
}

/// End-to-end server time per request at 1000 candidates.
pub fn end_to_end(transport: &str, us: f64, limit: f64, decode_us: f64, call_us: f64) -> Target {
    Target::at_most(
        &format!("{transport} end-to-end server time, 1000 candidates"),
        format!("<= {limit:.0} us"),
        us,
        limit,
        format!("{us:.0} us"),
        || {
            format!(
                "decode + validate {decode_us:.0} us and policy call {call_us:.0} us of {us:.0} us \
                 ({:.0}% decoding)",
                100.0 * decode_us / us.max(1e-9)
            )
        },
    )
}

/// The throughput target's goal, in words.
pub fn throughput_goal() -> String {
    format!(">= {:.0}% of native", 100.0 * THROUGHPUT_SHARE)
}

/// Throughput through Oasis at least [`THROUGHPUT_SHARE`] of the native
/// baseline server's.
pub fn throughput(transport: &str, oasis_rps: f64, native_rps: f64, why: String) -> Target {
    let ratio = oasis_rps / native_rps;
    Target::at_least(
        &format!("{transport} throughput vs native server"),
        throughput_goal(),
        ratio,
        THROUGHPUT_SHARE,
        format!(
            "{oasis_rps:.0} / {native_rps:.0} req/s = {:.0}%",
            100.0 * ratio
        ),
        || why,
    )
}

/// p99 at 80% of the measured peak at most 2 ms.
pub fn p99_at_80(transport: &str, rate: f64, p99_ms: f64, why: String) -> Target {
    Target::at_most(
        &format!("{transport} p99 at 80% of peak (open loop)"),
        "<= 2 ms".into(),
        p99_ms,
        2.0,
        format!("{p99_ms:.2} ms at {rate:.0} req/s"),
        || why,
    )
}

/// 20 policies ready within 1 s from the compile cache.
pub fn startup(cached_s: f64, cold_s: f64) -> Target {
    Target::at_most(
        "20 policies ready from the cache",
        "<= 1 s".into(),
        cached_s,
        1.0,
        format!("{cached_s:.2} s (cold: {cold_s:.2} s)"),
        || "loading 20 cached artifacts (mmap, link, describe, smoke call) took longer".into(),
    )
}

/// The targets as a Markdown table, and the pass count.
pub fn render(targets: &[Target]) -> (String, usize) {
    let mut s = String::from("| target | goal | measured | result |\n|---|---|---|---|\n");
    let mut pass = 0;
    for t in targets {
        let result = match &t.verdict {
            Verdict::Pass => {
                pass += 1;
                "PASS".to_string()
            }
            Verdict::Miss(why) => format!("MISS: {why}"),
            Verdict::NotMeasured(why) => format!("NOT MEASURED: {why}"),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            t.name, t.goal, t.measured, result
        );
    }
    (s, pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_call_limit_is_twice_native_plus_20() {
        assert_eq!(policy_call("p", 40.0, 100.0, 5.0).verdict, Verdict::Pass);
        assert_eq!(policy_call("p", 40.0, 99.9, 5.0).verdict, Verdict::Pass);
        let miss = policy_call("p", 40.0, 100.1, 5.0);
        let Verdict::Miss(why) = miss.verdict else {
            panic!("expected a miss")
        };
        // 60.1 us over native, 5 of them the instance.
        assert!(why.contains("60.1 us more"), "{why}");
        assert!(why.contains("55.1 us grows"), "{why}");
        assert!(miss.goal.contains("100.0 us"));
    }

    #[test]
    fn limits_are_inclusive_and_nan_is_not_a_pass() {
        assert_eq!(isolation(15.0, 0.1).verdict, Verdict::Pass);
        assert!(matches!(isolation(15.01, 0.1).verdict, Verdict::Miss(_)));
        assert_eq!(isolation(15.0, 0.1).goal, "<= 15 us");
        assert!(matches!(
            isolation(f64::NAN, 0.1).verdict,
            Verdict::NotMeasured(_)
        ));
        assert_eq!(startup(1.0, 9.0).verdict, Verdict::Pass);
        assert!(matches!(startup(1.5, 9.0).verdict, Verdict::Miss(_)));
    }

    #[test]
    fn throughput_is_a_ratio_of_at_least_85_percent() {
        assert_eq!(
            throughput("HTTP", 850.0, 1000.0, String::new()).verdict,
            Verdict::Pass
        );
        let t = throughput("HTTP", 849.0, 1000.0, "cpu".into());
        assert_eq!(t.verdict, Verdict::Miss("cpu".into()));
        assert!(t.measured.contains("85%"), "{}", t.measured);
        assert_eq!(t.goal, ">= 85% of native");
        // No native figure: not a pass.
        assert!(matches!(
            throughput("HTTP", 900.0, 0.0, String::new()).verdict,
            Verdict::NotMeasured(_)
        ));
    }

    #[test]
    fn end_to_end_miss_names_the_decoding_share() {
        let t = end_to_end("JSON", 800.0, 400.0, 600.0, 100.0);
        let Verdict::Miss(why) = t.verdict else {
            panic!("expected a miss")
        };
        assert!(why.contains("75% decoding"), "{why}");
        assert_eq!(
            end_to_end("gRPC", 250.0, 250.0, 1.0, 1.0).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn table_counts_passes() {
        let (table, pass) = render(&[
            isolation(5.0, 0.1),
            isolation(50.0, 0.1),
            Target::not_measured("x", "y".into(), "no server".into()),
        ]);
        assert_eq!(pass, 1);
        assert_eq!(table.lines().count(), 5);
        assert!(table.contains("| PASS |"));
        assert!(table.contains("MISS: an instance put back"));
        assert!(table.contains("NOT MEASURED: no server"));
    }
}
