//! `oasis test`: golden fixtures for a policy.
//!
//! A fixture is one JSON file: the request PZN would send, optional settings,
//! the expected output per candidate and a tolerance for floating-point
//! fields. `--bless` (re)writes `expected` from the current output, so a
//! policy author reviews the diff in version control instead of typing numbers.
//!
//! The file format, its comparison and its blessing are
//! [`oasis_wire::fixture`]'s, shared with the SDK's native `check_fixture`;
//! this command runs the request through the built component (or a Python
//! policy's source natively: [`super::native`]) and reports.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use oasis::Runtime;
use oasis::request::{self, Validate};
use oasis::response::Reasons;
use oasis_wire::fixture::{self, Fixture, Output};
use serde::Serialize;

/// Arguments of `oasis test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy: a component (.wasm), a manifest (.toml) naming one (its
    /// limits apply; each fixture brings its own settings), or a Python
    /// policy's source directory (run natively under CPython: the inner
    /// loop, no build).
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
    let mut scorer = if super::native::is_python_source(&args.policy) {
        Scorer::Native(super::native::NativePython::start(&args.policy)?)
    } else {
        let target = super::PolicyArg::resolve(&args.policy)?;
        let limits = target
            .limits
            .map_or_else(|| args.limits.limits(), |l| args.limits.over(l));
        Scorer::Component {
            runtime: Runtime::new(oasis::RuntimeConfig {
                max_instances: super::CLI_INSTANCES,
                ..Default::default()
            })?,
            module: target.module,
            limits,
        }
    };
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
    // Whether a fixture's error was the policy not loading: the run then
    // exits 3 ("did not load", the documented status), not 1 (a mismatch).
    let mut load_failed = false;
    for file in &files {
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let outcome = match run_fixture(&mut scorer, file, args.bless) {
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
                name: {
                    load_failed |= e.downcast_ref::<super::LoadFailed>().is_some();
                    name
                },
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
                "policy": args.policy,
                "fixtures": files.len(),
                "passed": files.len() - failed,
                "failed": failed,
                "results": outcomes,
            }))?
        ),
        Format::Junit => print!("{}", junit(&args.policy, &outcomes)),
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else if load_failed {
        ExitCode::from(super::exit::LOAD_FAILED)
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

/// What runs the fixtures: the built component, or a Python policy's
/// source under CPython (`super::native`).
enum Scorer {
    /// A component (or a manifest's), loaded per fixture with its settings.
    Component {
        runtime: Runtime,
        module: PathBuf,
        limits: oasis::Limits,
    },
    /// A Python package's source, natively.
    Native(super::native::NativePython),
}

/// Runs one fixture; returns the differences (empty when it passes).
fn run_fixture(scorer: &mut Scorer, file: &Path, bless: bool) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file)?;
    let fixture = Fixture::from_json(&text)?;
    let body = serde_json::to_vec(&fixture.request)?;
    let (req, d) = match scorer {
        Scorer::Component {
            runtime,
            module,
            limits,
        } => {
            let policy = super::load_policy(runtime, module, &fixture.settings_json(), *limits)?;
            let req = request::parse(&body)
                .and_then(|r| r.validate(policy.limits().max_candidates))
                .context("fixture request")?;
            let d = policy.score(&req).context("the policy failed")?.decisions;
            (req, d)
        }
        Scorer::Native(python) => {
            let req = request::parse(&body)
                .and_then(|r| r.validate(oasis::Limits::default().max_candidates))
                .context("fixture request")?;
            let d = python.score(&fixture.settings_json(), &body)?.decisions;
            (req, d)
        }
    };
    let mut output = Output {
        candidates: req
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| fixture::Candidate {
                id: c.id.to_string(),
                score: d.scores[i],
                eligible: d.eligible[i],
                reasons: Reasons(d.reasons[i]).names().map(String::from).collect(),
                propensity: d.propensity[i],
                debug: None,
            })
            .collect(),
        campaign_updates: d
            .campaign_updates
            .iter()
            .map(|u| fixture::PacingUpdate {
                campaign: req.campaign_id(u.campaign as usize).to_string(),
                pacing_integral: u.pacing_integral,
                pacing_last_error: u.pacing_last_error,
            })
            .collect(),
        ..Output::default()
    };
    for v in &d.debug {
        output.add_debug(v.candidate.map(|c| c as usize), &v.name, v.value);
    }
    if bless {
        let out = fixture.bless(&text, &output)?;
        std::fs::write(file, out).with_context(|| format!("cannot write {}", file.display()))?;
        return Ok(Vec::new());
    }
    let diffs = fixture.compare(&output)?;
    Ok(diffs.iter().map(ToString::to_string).collect())
}
