//! The replay report as text tables (`oasis replay` without `--json`):
//! the counts and rate, determinism or each candidate's divergence and
//! estimate, then promotions per campaign and each rights holder's exposure
//! under every policy, and the first differences and errors.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use super::report::{Report, Side};
use crate::ope::{Estimate, NoSupportReason};

/// The report as text, listing at most `show` differences, errors and
/// campaigns.
pub fn render(report: &Report, show: usize) -> String {
    let mut out = String::new();
    write(report, show, &mut out).expect("writing to a String");
    out
}

fn write(report: &Report, show: usize, out: &mut String) -> fmt::Result {
    writeln!(
        out,
        "records {}  replayed {}  passthrough/shadow (not replayed) {}  errors {}  unreadable lines {}",
        report.records,
        report.replayed,
        report.skipped_passthrough,
        report.errors,
        report.skipped_lines
    )?;
    if report.shards > 1 {
        writeln!(
            out,
            "merged from {} partial results: {:.1} s of replay in all, {:.0} records/s per shard",
            report.shards, report.elapsed_s, report.records_per_s
        )?;
    } else {
        writeln!(
            out,
            "{:.1} s on {} threads: {:.0} records/s",
            report.elapsed_s, report.threads, report.records_per_s
        )?;
    }
    if let Some(s) = &report.scaling {
        writeln!(
            out,
            "scaling: 1 core {:.0} records/s, {} threads {:.0} records/s: {:.0}% of {} × the one-core rate",
            s.single_thread_records_per_s,
            s.threads,
            s.records_per_s,
            s.efficiency * 100.0,
            s.threads
        )?;
    }
    if let Some(o) = &report.outcomes {
        writeln!(
            out,
            "outcomes: {} events read, {} lines skipped, {} repeated event ids not counted again, {} replayed requests matched",
            o.events, o.skipped, o.duplicates, o.matched_requests
        )?;
        if o.fallback_excluded > 0 {
            writeln!(
                out,
                "{} fallback-served records left out of the estimates (the baseline decided them after the policy failed: not the logging policy's decisions)",
                o.fallback_excluded
            )?;
        }
        if let Some(e) = &report.estimator {
            writeln!(
                out,
                "estimates: seed {}, {} bootstrap resamples, clip {}, --min-support {} decisions, --max-unsupported {}",
                e.seed(),
                e.bootstrap(),
                e.clip(),
                e.min_support(),
                e.max_unsupported()
            )?;
        }
        if report.no_outcome_matched() {
            writeln!(
                out,
                "no outcome event names a replayed request (outcomes of another log?): no estimate"
            )?;
        }
    }
    if report.routes.len() > 1 {
        let routes: Vec<String> = report
            .routes
            .iter()
            .map(|r| {
                let fallback = if r.fallback > 0 {
                    format!(" ({} fallback)", r.fallback)
                } else {
                    String::new()
                };
                format!("{}/{} {}{fallback}", shown(&r.route), r.arm, r.records)
            })
            .collect();
        writeln!(out, "records per route/arm: {}", routes.join(", "))?;
    }
    if report.candidates.is_empty() {
        writeln!(
            out,
            "determinism: {} identical, {} different{}",
            report.identical,
            report.different,
            if report.different == 0 && report.replayed > 0 {
                " (bit for bit)"
            } else {
                ""
            }
        )?;
    } else {
        candidates(report, show, out)?;
    }
    for (id, what) in report.differences.iter().take(show) {
        writeln!(out, "  different: {id}: {what}")?;
    }
    for (id, e) in report.error_samples.iter().take(show) {
        writeln!(out, "  error: {id}: {}", crate::visible(e))?;
    }
    Ok(())
}

/// A route as shown: `(none)` when the record had none.
fn shown(route: &str) -> &str {
    if route.is_empty() { "(none)" } else { route }
}

/// One estimate, as a line's end.
fn estimate(e: &Estimate) -> String {
    match e {
        Estimate::Value(e) => format!(
            "{:.4} [{:.4}, {:.4}] (mean reward per campaign-track decision, self-normalised IPS, {:.0}% bootstrap), IPS {:.4}, clipped IPS {:.4}; logged policy {:.4}; ESS {:.0} of {} decisions",
            e.snips,
            e.snips_ci.low,
            e.snips_ci.high,
            e.level * 100.0,
            e.ips,
            e.clipped_ips,
            e.logged_value,
            e.ess,
            e.decisions
        ),
        Estimate::NoSupport(n) => match n.reason {
            NoSupportReason::BelowMinSupport { min_support } => format!(
                "no support: {} decisions, fewer than --min-support {min_support}",
                n.decisions
            ),
            NoSupportReason::Unsupported { .. } | NoSupportReason::NoWeight => format!(
                "no support: the logged policy never took the candidate's action on {:.1}% of {} decisions (it did not explore there)",
                n.unsupported_share * 100.0,
                n.decisions
            ),
        },
        Estimate::NoData { .. } => "no decisions to estimate from".to_string(),
    }
}

/// Each candidate, then the per-campaign and per-holder tables.
fn candidates(report: &Report, show: usize, out: &mut String) -> fmt::Result {
    for c in &report.candidates {
        writeln!(out)?;
        writeln!(
            out,
            "candidate {} ({}, settings {})",
            c.name,
            c.module.display(),
            &c.settings_sha256[..c.settings_sha256.len().min(12)]
        )?;
        let Some(s) = &c.divergence else { continue };
        if let Some(m) = &s.mean {
            writeln!(
                out,
                "  vs logged: top-10 overlap {:.3}, rank corr {:.3}, score mae {:.4}, promoted {:+.2}%, eligible {:+.2}%",
                m.topk_overlap,
                m.rank_correlation,
                m.score_mae,
                m.promoted_share_diff * 100.0,
                m.eligibility_rate_diff * 100.0
            )?;
        }
        writeln!(
            out,
            "  errors: {} of {} requests",
            s.errors,
            s.samples + s.errors
        )?;
        if let Some(e) = &c.estimate {
            let scope = if c.estimates.len() > 1 {
                let pooled: Vec<String> = c
                    .estimates
                    .iter()
                    .filter(|g| g.pooled)
                    .map(|g| format!("{}/{}", shown(&g.route), g.arm))
                    .collect();
                if pooled.is_empty() {
                    " (all routes)".to_string()
                } else {
                    format!(" (over {})", pooled.join(", "))
                }
            } else {
                String::new()
            };
            writeln!(out, "  value{scope}: {}", estimate(e))?;
        }
        if c.estimates.len() > 1 {
            for g in &c.estimates {
                writeln!(
                    out,
                    "    {}/{}: {}",
                    shown(&g.route),
                    g.arm,
                    estimate(&g.estimate)
                )?;
            }
        }
        let failed: u64 = c.errors.values().sum();
        if failed > 0 {
            let kinds: Vec<String> = c.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
            writeln!(
                out,
                "  FAILED on {failed} requests ({}): they are left out of its figures, so the replay fails",
                kinds.join(", ")
            )?;
        }
    }
    let Some(logged) = &report.logged else {
        return Ok(());
    };
    let width = report
        .candidates
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max(10);
    let header = |first: &str, unit: &str| {
        let mut line = format!("{first:<24} {:>width$}", format!("logged{unit}"));
        for c in &report.candidates {
            line += &format!(" {:>width$}", c.name);
        }
        line
    };
    writeln!(out)?;
    writeln!(out, "{}", header("promoted per campaign", ""))?;
    // Campaigns by promotions under any policy, most first.
    let mut campaigns: BTreeMap<&str, u64> = BTreeMap::new();
    for side in std::iter::once(logged).chain(report.candidates.iter().map(|c| &c.side)) {
        for (c, n) in &side.promoted_per_campaign {
            *campaigns.entry(c.as_str()).or_default() += n;
        }
    }
    let mut order: Vec<(&str, u64)> = campaigns.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let count = |side: &Side, c: &str| side.promoted_per_campaign.get(c).copied().unwrap_or(0);
    for (c, _) in order.iter().take(show) {
        let mut line = format!("{c:<24} {:>width$}", count(logged, c));
        for cand in &report.candidates {
            line += &format!(" {:>width$}", count(&cand.side, c));
        }
        writeln!(out, "{line}")?;
    }
    if order.len() > show {
        writeln!(
            out,
            "({} more campaigns: --show N or --json)",
            order.len() - show
        )?;
    }
    let mut line = format!("{:<24} {:>width$}", "all promotions", logged.promoted);
    for cand in &report.candidates {
        line += &format!(" {:>width$}", cand.side.promoted);
    }
    writeln!(out, "{line}")?;
    writeln!(out)?;
    writeln!(out, "{}", header("rights holder exposure", " %"))?;
    let mut holders: Vec<&String> = logged
        .exposure_share_per_holder
        .keys()
        .chain(
            report
                .candidates
                .iter()
                .flat_map(|c| c.side.exposure_share_per_holder.keys()),
        )
        .collect();
    holders.sort();
    holders.dedup();
    let share = |side: &Side, h: &str| {
        side.exposure_share_per_holder
            .get(h)
            .copied()
            .unwrap_or(0.0)
            * 100.0
    };
    for h in holders {
        let name = if h.is_empty() {
            "(unknown)"
        } else {
            h.as_str()
        };
        let mut line = format!("{name:<24} {:>width$.1}", share(logged, h));
        for cand in &report.candidates {
            line += &format!(" {:>width$.1}", share(&cand.side, h));
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ope::Estimator;
    use crate::replay::job::Outcome;
    use crate::replay::report::{Run, Tally};

    #[test]
    fn determinism_lists_the_differences_up_to_show() {
        let mut r = Tally::new(&[], Estimator::default());
        r.add(Outcome::Determinism {
            request_id: "a".into(),
            detail: None,
        });
        for id in ["b", "c"] {
            r.add(Outcome::Determinism {
                request_id: id.into(),
                detail: Some("scores differ".into()),
            });
        }
        r.add(Outcome::Error {
            request_id: "d".into(),
            error: "bad\nline".into(),
        });
        let r = Report::finish(
            r,
            Run {
                shards: 1,
                threads: 1,
                elapsed_s: 1.0,
                fuel_per_call: 1,
            },
        );
        let text = render(&r, 1);
        assert!(text.starts_with("records 4  replayed 3"), "{text}");
        assert!(
            text.contains("determinism: 1 identical, 2 different\n"),
            "{text}"
        );
        assert!(text.contains("  different: b: scores differ\n"), "{text}");
        assert!(!text.contains("different: c"), "{text}");
        assert!(text.contains("  error: d: bad\\nline\n"), "escaped: {text}");
    }
}
