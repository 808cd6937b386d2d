//! The replay report as one self-contained HTML page (inline SVG, no
//! scripts, no external files), for people who would rather look than read
//! (`oasis replay --html FILE`).
//!
//! It is drawn from the report's JSON form, the same `--json` prints, so the
//! page and the JSON never disagree: each candidate's off-policy estimate
//! with its interval against the logged policy's value, the score
//! distribution of every policy, the promoted tracks per campaign, the
//! exposure share of each rights holder, and the divergence table.

use std::fmt::Write as _;

use serde_json::Value;

use super::report::SCORE_BIN_WIDTH;
use super::{ReplayError, Report};

/// Colors of the policies: the logged one first, then the candidates.
const COLORS: [&str; 6] = [
    "#6b7280", "#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed",
];

/// Campaigns and rights holders shown at most.
const TOP: usize = 20;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The page for a replay report.
///
/// # Errors
/// [`ReplayError::Json`] if the report has no JSON form (a candidate's
/// module path that is not UTF-8).
pub fn render(report: &Report) -> Result<String, ReplayError> {
    let json = serde_json::to_value(report)?;
    Ok(render_json(&json, SCORE_BIN_WIDTH))
}

/// The page for a replay report's JSON form; `bin` is the score
/// histograms' bin width.
fn render_json(report: &Value, bin: f64) -> String {
    let mut sides: Vec<(String, &Value)> = Vec::new();
    if !report["logged"].is_null() {
        sides.push(("logged".into(), &report["logged"]));
    }
    let candidates = report["candidates"].as_array().cloned().unwrap_or_default();
    for c in report["candidates"].as_array().into_iter().flatten() {
        sides.push((c["name"].as_str().unwrap_or("?").to_string(), c));
    }
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>oasis replay</title>\
         <style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px;color:#111}\
         h1{font-size:20px}h2{font-size:16px;margin-top:2em}table{border-collapse:collapse}\
         td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}\
         td:first-child,th:first-child{text-align:left}.key span{display:inline-block;width:12px;\
         height:12px;margin:0 4px 0 12px;vertical-align:middle}</style></head><body>",
    );
    let _ = write!(
        html,
        "<h1>oasis replay</h1><p>{} records, {} replayed, {} errors; {:.1} s on {} threads ({:.0} records/s)</p>",
        report["records"],
        report["replayed"],
        report["errors"],
        num(&report["elapsed_s"]),
        report["threads"],
        num(&report["records_per_s"])
    );
    if candidates.is_empty() {
        let _ = write!(
            html,
            "<h2>Determinism</h2><p>{} identical, {} different.</p>",
            report["identical"], report["different"]
        );
        for d in report["differences"]
            .as_array()
            .into_iter()
            .flatten()
            .take(50)
        {
            let _ = write!(
                html,
                "<div>{}: {}</div>",
                esc(d[0].as_str().unwrap_or("")),
                esc(d[1].as_str().unwrap_or(""))
            );
        }
        html.push_str("</body></html>\n");
        return html;
    }
    html.push_str("<p class=\"key\">");
    for (i, (name, _)) in sides.iter().enumerate() {
        let _ = write!(
            html,
            "<span style=\"background:{}\"></span>{}",
            COLORS[i % COLORS.len()],
            esc(name)
        );
    }
    html.push_str("</p>");
    estimates(&mut html, &candidates);
    divergence(&mut html, &candidates);
    histograms(&mut html, &sides, bin);
    campaigns(&mut html, &sides);
    holders(&mut html, &sides);
    html.push_str("</body></html>\n");
    html
}

/// Each candidate's self-normalised estimate and interval, against the
/// logged policy's value (a dashed line).
fn estimates(html: &mut String, candidates: &[Value]) {
    html.push_str("<h2>Estimated value (mean reward per campaign-track decision)</h2>");
    let values: Vec<&Value> = candidates
        .iter()
        .map(|c| &c["estimate"])
        .filter(|e| e["kind"] == "value")
        .collect();
    for c in candidates {
        let e = &c["estimate"];
        match e["kind"].as_str() {
            Some("no_support") => {
                let _ = write!(
                    html,
                    "<p>{}: no support: the logged policy never took the candidate's action on {:.1}% of decisions.</p>",
                    esc(c["name"].as_str().unwrap_or("?")),
                    num(&e["unsupported_share"]) * 100.0
                );
            }
            Some("no_data") => {
                let _ = write!(
                    html,
                    "<p>{}: no decisions to estimate from.</p>",
                    esc(c["name"].as_str().unwrap_or("?"))
                );
            }
            _ => {}
        }
    }
    if values.is_empty() {
        if candidates.iter().all(|c| c["estimate"].is_null()) {
            html.push_str("<p>No outcomes given (<code>--outcomes</code>): no estimates.</p>");
        }
        return;
    }
    let logged = num(&values[0]["logged_value"]);
    let lo = values
        .iter()
        .map(|e| num(&e["snips_ci"]["low"]))
        .fold(logged, f64::min);
    let hi = values
        .iter()
        .map(|e| num(&e["snips_ci"]["high"]))
        .fold(logged, f64::max);
    let pad = ((hi - lo) * 0.1).max(1e-6);
    let (lo, hi) = (lo - pad, hi + pad);
    let (w, left, row) = (900.0, 220.0, 28.0);
    let x = |v: f64| left + (v - lo) / (hi - lo) * (w - left - 20.0);
    let h = row * (candidates.len() as f64) + 40.0;
    let _ = write!(html, "<svg width=\"{w}\" height=\"{h}\">");
    for (i, c) in candidates.iter().enumerate() {
        let e = &c["estimate"];
        if e["kind"] != "value" {
            continue;
        }
        let y = 20.0 + row * i as f64;
        let color = COLORS[(i + 1) % COLORS.len()];
        let _ = write!(
            html,
            "<text x=\"0\" y=\"{}\">{}</text>\
             <line x1=\"{}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"{color}\" stroke-width=\"4\"/>\
             <circle cx=\"{}\" cy=\"{y}\" r=\"5\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\">{:.4} [{:.4}, {:.4}]</text>",
            y + 4.0,
            esc(c["name"].as_str().unwrap_or("?")),
            x(num(&e["snips_ci"]["low"])),
            x(num(&e["snips_ci"]["high"])),
            x(num(&e["snips"])),
            x(num(&e["snips_ci"]["high"])) + 8.0,
            y + 4.0,
            num(&e["snips"]),
            num(&e["snips_ci"]["low"]),
            num(&e["snips_ci"]["high"])
        );
    }
    let _ = write!(
        html,
        "<line x1=\"{0}\" x2=\"{0}\" y1=\"5\" y2=\"{1}\" stroke=\"{2}\" stroke-dasharray=\"4 3\"/>\
         <text x=\"{3}\" y=\"{4}\" font-size=\"11\" fill=\"{2}\">logged policy {5:.4}</text></svg>",
        x(logged),
        h - 20.0,
        COLORS[0],
        x(logged) + 4.0,
        h - 6.0,
        logged
    );
    html.push_str("<table><tr><th>candidate</th><th>SNIPS</th><th>95% interval</th><th>IPS</th><th>clipped IPS</th><th>ESS</th><th>decisions</th></tr>");
    for c in candidates {
        let e = &c["estimate"];
        if e["kind"] != "value" {
            continue;
        }
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:.4}</td><td>[{:.4}, {:.4}]</td><td>{:.4}</td><td>{:.4}</td><td>{:.0}</td><td>{}</td></tr>",
            esc(c["name"].as_str().unwrap_or("?")),
            num(&e["snips"]),
            num(&e["snips_ci"]["low"]),
            num(&e["snips_ci"]["high"]),
            num(&e["ips"]),
            num(&e["clipped_ips"]),
            num(&e["ess"]),
            e["decisions"]
        );
    }
    html.push_str("</table>");
}

/// The shadow metrics of each candidate against the log.
fn divergence(html: &mut String, candidates: &[Value]) {
    html.push_str("<h2>Divergence from the logged decisions</h2><table><tr><th>candidate</th><th>top-10 overlap</th><th>rank corr.</th><th>score MAE</th><th>promoted share diff.</th><th>eligibility diff.</th><th>errors</th></tr>");
    for c in candidates {
        let m = &c["divergence"]["mean"];
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.4}</td><td>{:+.2}%</td><td>{:+.2}%</td><td>{}</td></tr>",
            esc(c["name"].as_str().unwrap_or("?")),
            num(&m["topk_overlap"]),
            num(&m["rank_correlation"]),
            num(&m["score_mae"]),
            num(&m["promoted_share_diff"]) * 100.0,
            num(&m["eligibility_rate_diff"]) * 100.0,
            c["divergence"]["errors"]
        );
    }
    html.push_str("</table>");
}

/// One histogram per policy: share of candidates per score bin.
fn histograms(html: &mut String, sides: &[(String, &Value)], bin: f64) {
    html.push_str("<h2>Score distributions (share of candidates per score bin)</h2>");
    let (w, h) = (340.0, 140.0);
    for (i, (name, side)) in sides.iter().enumerate() {
        let counts: Vec<f64> = side["score_histogram"]
            .as_array()
            .map(|a| a.iter().map(num).collect())
            .unwrap_or_default();
        let total: f64 = counts.iter().sum::<f64>().max(1.0);
        let top = counts.iter().cloned().fold(0.0, f64::max) / total;
        let bw = w / counts.len().max(1) as f64;
        let _ = write!(
            html,
            "<svg width=\"{w}\" height=\"{}\" style=\"margin:0 12px 12px 0\"><text x=\"0\" y=\"12\">{}</text>",
            h + 34.0,
            esc(name)
        );
        for (k, c) in counts.iter().enumerate() {
            let bh = if top > 0.0 { c / total / top * h } else { 0.0 };
            let _ = write!(
                html,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{bh}\" fill=\"{}\"><title>[{:.1}, {:.1}): {:.1}%</title></rect>",
                k as f64 * bw,
                20.0 + h - bh,
                (bw - 1.0).max(1.0),
                COLORS[i % COLORS.len()],
                k as f64 * bin,
                (k + 1) as f64 * bin,
                c / total * 100.0
            );
        }
        let _ = write!(
            html,
            "<text x=\"0\" y=\"{0}\" font-size=\"11\">0</text><text x=\"{1}\" y=\"{0}\" font-size=\"11\" text-anchor=\"end\">{2:.1}+</text></svg>",
            h + 32.0,
            w,
            bin * (counts.len().max(1) - 1) as f64
        );
    }
}

/// Promoted tracks per campaign, the campaigns most promoted overall.
fn campaigns(html: &mut String, sides: &[(String, &Value)]) {
    let mut totals: std::collections::BTreeMap<String, f64> = Default::default();
    for (_, s) in sides {
        for (c, n) in s["promoted_per_campaign"].as_object().into_iter().flatten() {
            *totals.entry(c.clone()).or_default() += num(n);
        }
    }
    let mut order: Vec<(String, f64)> = totals.into_iter().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    order.truncate(TOP);
    let _ = write!(
        html,
        "<h2>Delivery: promoted tracks per campaign (the {} most promoted)</h2>",
        order.len()
    );
    let max = order
        .iter()
        .flat_map(|(c, _)| {
            sides
                .iter()
                .map(move |(_, s)| num(&s["promoted_per_campaign"][c]))
        })
        .fold(1.0, f64::max);
    let (left, w, bar) = (220.0, 900.0, 7.0);
    let group = bar * sides.len() as f64 + 6.0;
    let _ = write!(
        html,
        "<svg width=\"{w}\" height=\"{}\">",
        group * order.len() as f64 + 10.0
    );
    for (k, (c, _)) in order.iter().enumerate() {
        let y = k as f64 * group;
        let _ = write!(
            html,
            "<text x=\"0\" y=\"{}\" font-size=\"11\">{}</text>",
            y + group / 2.0 + 3.0,
            esc(c)
        );
        for (i, (name, s)) in sides.iter().enumerate() {
            let n = num(&s["promoted_per_campaign"][c]);
            let _ = write!(
                html,
                "<rect x=\"{left}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}: {n}</title></rect>",
                y + i as f64 * bar,
                (n / max * (w - left - 10.0)).max(0.5),
                bar - 1.0,
                COLORS[i % COLORS.len()],
                esc(name)
            );
        }
    }
    html.push_str("</svg>");
}

/// Each rights holder's share of promotions, per policy.
fn holders(html: &mut String, sides: &[(String, &Value)]) {
    let mut totals: std::collections::BTreeMap<String, f64> = Default::default();
    for (_, s) in sides {
        for (h, x) in s["exposure_share_per_holder"]
            .as_object()
            .into_iter()
            .flatten()
        {
            *totals.entry(h.clone()).or_default() += num(x);
        }
    }
    let mut order: Vec<(String, f64)> = totals.into_iter().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    order.truncate(TOP);
    html.push_str("<h2>Exposure: each rights holder's share of promotions</h2><table><tr><th>rights holder</th>");
    for (name, _) in sides {
        let _ = write!(html, "<th>{}</th>", esc(name));
    }
    html.push_str("</tr>");
    for (h, _) in &order {
        let _ = write!(
            html,
            "<tr><td>{}</td>",
            esc(if h.is_empty() { "(unknown)" } else { h })
        );
        for (_, s) in sides {
            let _ = write!(
                html,
                "<td>{:.1}%</td>",
                num(&s["exposure_share_per_holder"][h]) * 100.0
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ope::Estimator;
    use crate::replay::job::Outcome;
    use crate::replay::report::{Run, Tally};

    #[test]
    fn a_determinism_page_escapes_what_it_quotes() {
        let mut r = Tally::new(&[], Estimator::default());
        r.add(Outcome::Determinism {
            request_id: "<id>".into(),
            detail: Some("scores differ".into()),
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
        let page = render(&r).unwrap();
        assert!(page.contains("<h2>Determinism</h2><p>0 identical, 1 different.</p>"));
        assert!(page.contains("&lt;id&gt;: scores differ"), "{page}");
        assert!(!page.contains("<script") && page.ends_with("</html>\n"));
    }
}
