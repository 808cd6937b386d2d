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

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use oasis::response::Reasons;
use oasis::{Runtime, request};
use serde::{Deserialize, Serialize};

/// Arguments of `oasis test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy component (.wasm).
    pub policy: PathBuf,
    /// Directory of fixture files (*.json).
    pub fixtures: PathBuf,
    /// Write the current output as the expected output instead of comparing.
    #[arg(long)]
    pub bless: bool,
    #[command(flatten)]
    pub limits: super::LimitArgs,
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
    expected: Vec<Expected>,
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
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(oasis::RuntimeConfig {
        max_instances: super::CLI_INSTANCES,
        ..Default::default()
    })?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.fixtures)
        .with_context(|| format!("cannot read fixture directory {}", args.fixtures.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no fixtures (*.json) in {}", args.fixtures.display());
    }
    let mut failed = 0;
    for file in &files {
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match run_fixture(
            &runtime,
            &args.policy,
            file,
            args.bless,
            args.limits.limits(),
        ) {
            Ok(diffs) if diffs.is_empty() => {
                println!(
                    "ok      {name}{}",
                    if args.bless { " (blessed)" } else { "" }
                )
            }
            Ok(diffs) => {
                failed += 1;
                println!("FAILED  {name}");
                for d in diffs.iter().take(20) {
                    println!("        {d}");
                }
                if diffs.len() > 20 {
                    println!("        ... and {} more differences", diffs.len() - 20);
                }
            }
            Err(e) => {
                failed += 1;
                println!("ERROR   {name}: {}", oasis::visible(&format!("{e:#}")));
            }
        }
    }
    println!(
        "\n{} fixtures, {} passed, {failed} failed",
        files.len(),
        files.len() - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
    let mut fixture: Fixture = serde_json::from_str(&text).context("not a valid fixture file")?;
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
    let actual: Vec<Expected> = req
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| Expected {
            id: c.id.to_string(),
            score: d.scores[i],
            eligible: d.eligible[i],
            reasons: Reasons(d.reasons[i]).names().map(String::from).collect(),
            propensity: d.propensity[i],
        })
        .collect();
    if bless {
        fixture.expected = actual;
        let mut out = serde_json::to_string_pretty(&fixture)?;
        out.push('\n');
        std::fs::write(file, out).with_context(|| format!("cannot write {}", file.display()))?;
        return Ok(Vec::new());
    }
    Ok(diff(&fixture.expected, &actual, fixture.tolerance))
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
