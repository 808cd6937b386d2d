//! `oasis test`: golden fixtures for a policy.
//!
//! A fixture is one JSON file: the request PZN would send, optional settings,
//! the expected output per candidate and a tolerance for floating-point
//! fields. `--bless` (re)writes `expected` from the current output, so a
//! policy author reviews the diff in version control instead of typing numbers.
//!
//! ```json
//! { "description": "campaign track in a foreign market is not promoted",
//!   "settings": { "theta": 0.3 },
//!   "tolerance": 1e-9,
//!   "request": { "context": { ... }, "candidates": [ ... ] },
//!   "expected": [ { "id": "t1", "score": 0.5, "eligible": false,
//!                   "reasons": ["organic"], "propensity": 0.0 } ] }
//! ```
//!
//! Optional: `expected_debug` (request-level debug values by name) and
//! `expected_campaign_updates` (`[{"campaign": "<id>", "pacing_integral": …,
//! "pacing_last_error": …}]`: the pacing state a policy hands back, compared
//! by campaign id; present means exactly these).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use oasis::Runtime;
use oasis::request::{self, Validate};
use oasis::response::Reasons;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Arguments of `oasis test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy: a component (.wasm), or a manifest (.toml) naming one
    /// (its limits apply; each fixture brings its own settings).
    pub policy: PathBuf,
    /// Directory of fixture files (*.json).
    pub fixtures: PathBuf,
    /// Write the current output as the expected output instead of comparing
    /// (the file's other keys keep their order and text).
    #[arg(long)]
    pub bless: bool,
    /// Only fixtures whose file name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Output: `human`, `json` (one object with every result) or `junit`
    /// (JUnit XML, for CI test reports).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    #[command(flatten)]
    pub limits: super::LimitArgs,
}

/// How `oasis test` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per fixture and the differences.
    Human,
    /// A JSON object: counts and every fixture's result.
    Json,
    /// JUnit XML.
    Junit,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settings: Option<serde_json::Value>,
    #[serde(default = "default_tolerance")]
    tolerance: f64,
    request: serde_json::Value,
    #[serde(default)]
    expected: Option<Vec<Expected>>,
    /// Request-level debug values to compare, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_debug: Option<BTreeMap<String, f64>>,
    /// The campaign updates (pacing state handed back), by campaign id; when
    /// present, exactly these must be returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_campaign_updates: Option<Vec<ExpectedUpdate>>,
}

/// One expected campaign update of a fixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedUpdate {
    campaign: String,
    pacing_integral: f64,
    pacing_last_error: f64,
}

fn default_tolerance() -> f64 {
    1e-9
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    id: String,
    score: f64,
    eligible: bool,
    reasons: Vec<String>,
    propensity: f64,
    /// The candidate's debug values to compare, by name (only those listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    debug: Option<BTreeMap<String, f64>>,
}

/// One fixture's result.
#[derive(Debug, Serialize)]
struct Outcome {
    name: String,
    /// `passed`, `blessed`, `failed` (differences) or `error` (did not run).
    result: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    differences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(oasis::RuntimeConfig {
        max_instances: super::CLI_INSTANCES,
        ..Default::default()
    })?;
    let target = super::PolicyArg::resolve(&args.policy)?;
    let limits = target.limits.unwrap_or_else(|| args.limits.limits());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.fixtures)
        .with_context(|| format!("cannot read fixture directory {}", args.fixtures.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            args.filter.as_deref().is_none_or(|f| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(f))
            })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "no fixtures (*.json{}) in {}",
            args.filter
                .as_deref()
                .map(|f| format!(" matching {f:?}"))
                .unwrap_or_default(),
            args.fixtures.display()
        );
    }
    let mut outcomes = Vec::with_capacity(files.len());
    for file in &files {
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let outcome = match run_fixture(&runtime, &target.module, file, args.bless, limits) {
            Ok(diffs) if diffs.is_empty() => Outcome {
                name,
                result: if args.bless { "blessed" } else { "passed" },
                differences: Vec::new(),
                error: None,
            },
            Ok(diffs) => Outcome {
                name,
                result: "failed",
                differences: diffs,
                error: None,
            },
            Err(e) => Outcome {
                name,
                result: "error",
                differences: Vec::new(),
                error: Some(oasis::visible(&format!("{e:#}")).into_owned()),
            },
        };
        if args.format == Format::Human {
            print_human(&outcome);
        }
        outcomes.push(outcome);
    }
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o.result, "failed" | "error"))
        .count();
    match args.format {
        Format::Human => println!(
            "\n{} fixtures, {} passed, {failed} failed",
            files.len(),
            files.len() - failed
        ),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "policy": target.module,
                "fixtures": files.len(),
                "passed": files.len() - failed,
                "failed": failed,
                "results": outcomes,
            }))?
        ),
        Format::Junit => print!("{}", junit(&target.module, &outcomes)),
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::CHECK_FAILED)
    })
}

fn print_human(o: &Outcome) {
    match o.result {
        "failed" => {
            println!("FAILED  {}", o.name);
            for d in o.differences.iter().take(20) {
                println!("        {d}");
            }
            if o.differences.len() > 20 {
                println!(
                    "        ... and {} more differences",
                    o.differences.len() - 20
                );
            }
        }
        "error" => println!(
            "ERROR   {}: {}",
            o.name,
            o.error.as_deref().unwrap_or_default()
        ),
        "blessed" => println!("ok      {} (blessed)", o.name),
        _ => println!("ok      {}", o.name),
    }
}

/// JUnit XML of the results: one `testsuite`, a `testcase` per fixture with
/// a `failure` (differences) or `error` (did not run). Written by hand: the
/// format needs five escapes, not an XML library in the build.
fn junit(policy: &Path, outcomes: &[Outcome]) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&apos;")
    };
    let count = |r: &str| outcomes.iter().filter(|o| o.result == r).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"oasis fixtures: {}\" tests=\"{}\" failures=\"{}\" errors=\"{}\">\n",
        esc(&policy.display().to_string()),
        outcomes.len(),
        count("failed"),
        count("error")
    );
    for o in outcomes {
        let name = esc(&o.name);
        match o.result {
            "failed" => {
                out += &format!(
                    "  <testcase classname=\"fixtures\" name=\"{name}\">\n    <failure message=\"{} differences\">{}</failure>\n  </testcase>\n",
                    o.differences.len(),
                    esc(&o.differences.join("\n"))
                )
            }
            "error" => {
                out += &format!(
                    "  <testcase classname=\"fixtures\" name=\"{name}\">\n    <error message=\"{}\"/>\n  </testcase>\n",
                    esc(o.error.as_deref().unwrap_or_default())
                )
            }
            _ => out += &format!("  <testcase classname=\"fixtures\" name=\"{name}\"/>\n"),
        }
    }
    out + "</testsuite>\n"
}

/// Runs one fixture; returns the differences (empty when it passes).
fn run_fixture(
    runtime: &Runtime,
    policy: &Path,
    file: &Path,
    bless: bool,
    limits: oasis::Limits,
) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)?;
    let fixture: Fixture = serde_json::from_str(&text).context("not a valid fixture file")?;
    let settings = fixture
        .settings
        .as_ref()
        .map_or("{}".to_string(), |s| s.to_string());
    let policy = super::load_policy(runtime, policy, &settings, limits)?;
    let body = serde_json::to_vec(&fixture.request)?;
    let req = request::parse(&body)
        .and_then(|r| r.validate(policy.limits().max_candidates))
        .context("fixture request")?;
    let d = policy.score(&req).context("the policy failed")?.decisions;
    // Debug values by candidate index (None: request-level) and name.
    let mut debug: BTreeMap<(Option<usize>, &str), f64> = BTreeMap::new();
    for v in &d.debug {
        debug.insert((v.candidate.map(|c| c as usize), v.name.as_str()), v.value);
    }
    let listed = fixture.expected_debug.is_some()
        || fixture.expected.iter().flatten().any(|e| e.debug.is_some());
    let actual: Vec<Expected> = req
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mine: BTreeMap<String, f64> = debug
                .iter()
                .filter(|((cand, _), _)| *cand == Some(i))
                .map(|((_, name), v)| (name.to_string(), *v))
                .collect();
            Expected {
                id: c.id.to_string(),
                score: d.scores[i],
                eligible: d.eligible[i],
                reasons: Reasons(d.reasons[i]).names().map(String::from).collect(),
                propensity: d.propensity[i],
                debug: (listed && !mine.is_empty()).then_some(mine),
            }
        })
        .collect();
    let updates: Vec<ExpectedUpdate> = d
        .campaign_updates
        .iter()
        .map(|u| ExpectedUpdate {
            campaign: req.campaign_id(u.campaign as usize).to_string(),
            pacing_integral: u.pacing_integral,
            pacing_last_error: u.pacing_last_error,
        })
        .collect();
    let request_debug: BTreeMap<String, f64> = debug
        .iter()
        .filter(|((cand, _), _)| cand.is_none())
        .map(|((_, name), v)| (name.to_string(), *v))
        .collect();
    if bless {
        // Pretty-printed from the typed values, so keys keep the format's order.
        let mut updates_json = vec![("expected", serde_json::to_string_pretty(&actual)?)];
        if fixture.expected_campaign_updates.is_some() || !updates.is_empty() {
            updates_json.push((
                "expected_campaign_updates",
                serde_json::to_string_pretty(&updates)?,
            ));
        }
        if listed && !request_debug.is_empty() {
            updates_json.push((
                "expected_debug",
                serde_json::to_string_pretty(&request_debug)?,
            ));
        }
        let out = rewrite_keys(&text, &updates_json).context("rewriting the fixture")?;
        std::fs::write(file, out).with_context(|| format!("cannot write {}", file.display()))?;
        return Ok(Vec::new());
    }
    let Some(expected) = &fixture.expected else {
        bail!(
            "the fixture has no `expected` output yet: run `oasis test --bless` to record it, then review the diff"
        );
    };
    let mut diffs = diff(expected, &actual, fixture.tolerance);
    if let Some(want) = &fixture.expected_campaign_updates {
        let tol = fixture.tolerance;
        let close = |a: f64, b: f64| (a - b).abs() <= tol;
        for w in want {
            match updates.iter().find(|u| u.campaign == w.campaign) {
                None => diffs.push(format!("campaign `{}`: expected an update, got none", w.campaign)),
                Some(g) if !(close(g.pacing_integral, w.pacing_integral)
                    && close(g.pacing_last_error, w.pacing_last_error)) =>
                {
                    diffs.push(format!(
                        "campaign `{}`: update expected (integral {}, last error {}) got ({}, {}) (tolerance {tol})",
                        w.campaign, w.pacing_integral, w.pacing_last_error, g.pacing_integral, g.pacing_last_error
                    ))
                }
                Some(_) => {}
            }
        }
        for g in updates
            .iter()
            .filter(|g| !want.iter().any(|w| w.campaign == g.campaign))
        {
            diffs.push(format!("campaign `{}`: unexpected update", g.campaign));
        }
    }
    for (name, want) in fixture.expected_debug.iter().flatten() {
        match request_debug.get(name) {
            Some(got) if (got - want).abs() <= fixture.tolerance => {}
            Some(got) => diffs.push(format!(
                "debug `{name}`: expected {want} got {got} (tolerance {})",
                fixture.tolerance
            )),
            None => diffs.push(format!("debug `{name}`: expected {want}, not reported")),
        }
    }
    Ok(diffs)
}

/// `text` (a JSON object) with the top-level `updates` replaced (or
/// appended when missing), every other key kept in its order and with its
/// own text, so that a blessed fixture's diff shows only what changed.
fn rewrite_keys(text: &str, updates: &[(&str, String)]) -> anyhow::Result<String> {
    let Ordered(mut entries) = serde_json::from_str(text)?;
    for (key, pretty) in updates {
        let pretty = pretty.replace('\n', "\n  ");
        let raw = RawValue::from_string(pretty)?;
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = raw,
            None => entries.push((key.to_string(), raw)),
        }
    }
    let mut out = String::from("{\n");
    for (i, (k, v)) in entries.iter().enumerate() {
        out += &format!(
            "  {}: {}{}\n",
            serde_json::to_string(k)?,
            v.get(),
            if i + 1 < entries.len() { "," } else { "" }
        );
    }
    out.push_str("}\n");
    Ok(out)
}

/// A JSON object's top-level entries in file order, values as written.
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn diff(expected: &[Expected], actual: &[Expected], tol: f64) -> Vec<String> {
    let mut out = Vec::new();
    if expected.len() != actual.len() {
        out.push(format!(
            "expected {} candidates, got {}",
            expected.len(),
            actual.len()
        ));
    }
    for (e, a) in expected.iter().zip(actual) {
        if e.id != a.id {
            out.push(format!(
                "candidate order differs: expected `{}`, got `{}`",
                e.id, a.id
            ));
            continue;
        }
        if (e.score - a.score).abs() > tol {
            out.push(format!(
                "{}: score expected {} got {} (tolerance {tol})",
                e.id, e.score, a.score
            ));
        }
        if e.eligible != a.eligible {
            out.push(format!(
                "{}: eligible expected {} got {}",
                e.id, e.eligible, a.eligible
            ));
        }
        if e.reasons != a.reasons {
            out.push(format!(
                "{}: reasons expected {:?} got {:?}",
                e.id, e.reasons, a.reasons
            ));
        }
        if (e.propensity - a.propensity).abs() > tol {
            out.push(format!(
                "{}: propensity expected {} got {} (tolerance {tol})",
                e.id, e.propensity, a.propensity
            ));
        }
        for (name, want) in e.debug.iter().flatten() {
            match a.debug.as_ref().and_then(|d| d.get(name)) {
                Some(got) if (got - want).abs() <= tol => {}
                Some(got) => out.push(format!(
                    "{}: debug `{name}` expected {want} got {got} (tolerance {tol})",
                    e.id
                )),
                None => out.push(format!(
                    "{}: debug `{name}` expected {want}, not reported",
                    e.id
                )),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: &str, score: f64) -> Expected {
        Expected {
            id: id.into(),
            score,
            eligible: false,
            reasons: vec!["organic".into()],
            propensity: 0.0,
            debug: None,
        }
    }

    #[test]
    fn diff_respects_tolerance_and_names_the_candidate() {
        assert!(diff(&[e("a", 0.5)], &[e("a", 0.5 + 1e-12)], 1e-9).is_empty());
        let d = diff(&[e("a", 0.5)], &[e("a", 0.6)], 1e-9);
        assert_eq!(d.len(), 1);
        assert!(d[0].starts_with("a: score expected 0.5 got 0.6"), "{d:?}");
        let mut other = e("a", 0.5);
        other.reasons = vec!["promoted".into()];
        assert!(diff(&[e("a", 0.5)], &[other], 1e-9)[0].contains("reasons"));
        assert!(diff(&[e("a", 0.5)], &[], 1e-9)[0].contains("expected 1 candidates, got 0"));
    }
}
