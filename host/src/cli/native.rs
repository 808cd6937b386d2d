//! A Python policy's source, scored natively under CPython for `oasis run`
//! and `oasis test` (the author's inner loop: no componentize-py build, no
//! component compile).
//!
//! ```text
//! oasis test policies-python/guarded_boost policies/guarded-boost/fixtures
//! oasis run  policies-python/guarded_boost --request examples/request.json
//! ```
//!
//! The commands start `python -m oasis_sdk.native DIR` once
//! (`guest-sdk-python/oasis_sdk/native.py`) and send it one JSON line per
//! request; it scores as the SDK's `testing.run` does (settings parsed and
//! validated, only the declared feature columns, the output checked by the
//! host's rules) and answers the decisions, which the commands then print
//! and compare with the very code they use for a component. What this does
//! not show is the component: its sandbox, limits and resources; ship with
//! `scripts/build-python-policy` and `oasis test` on the `.wasm`.
//!
//! The interpreter is `$OASIS_PYTHON`, else the `.venv/bin/python` nearest
//! above the policy directory or the working directory (what
//! `scripts/setup-python` makes, with the SDK on its path), else `python3`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context as _, bail};
use oasis::bindings::{WitCampaignUpdate, WitDebugValue, WitDecisions, wit_reason};
use serde::Deserialize;

/// Whether `path` is a Python policy's source: a directory whose
/// `pyproject.toml` has a `[tool.oasis]` table.
pub fn is_python_source(path: &Path) -> bool {
    path.is_dir()
        && std::fs::read_to_string(path.join("pyproject.toml")).is_ok_and(|text| {
            toml::from_str::<toml::Table>(&text).is_ok_and(|t| {
                t.get("tool")
                    .and_then(|t| t.get("oasis"))
                    .is_some_and(toml::Value::is_table)
            })
        })
}

/// A running `python -m oasis_sdk.native` on one policy directory.
pub struct NativePython {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The policy's name (its class's `name`).
    pub name: String,
    /// The policy's version.
    pub version: String,
    line: String,
}

/// One native call's result.
pub struct NativeOutcome {
    /// The decisions, as a component's would cross the boundary.
    pub decisions: WitDecisions,
    /// CPU time of the call in the interpreter, ms.
    pub cpu_ms: f64,
}

#[derive(Deserialize)]
struct Ready {
    ready: Identity,
}

#[derive(Deserialize)]
struct Identity {
    name: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Answer {
    Ok { ok: Decisions, cpu_ms: f64 },
    Err { error: PolicyFault },
}

#[derive(Deserialize)]
struct PolicyFault {
    kind: String,
    message: String,
}

#[derive(Deserialize)]
struct Decisions {
    scores: Vec<f64>,
    eligible: Vec<bool>,
    reasons: Vec<u16>,
    propensity: Vec<f64>,
    debug: Vec<Debug>,
    campaign_updates: Vec<Update>,
}

#[derive(Deserialize)]
struct Debug {
    candidate: Option<u32>,
    name: String,
    value: Option<f64>,
}

#[derive(Deserialize)]
struct Update {
    campaign: u32,
    pacing_integral: f64,
    pacing_last_error: f64,
}

/// The interpreter to run (see the module docs).
fn python(dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("OASIS_PYTHON") {
        return p.into();
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    dir.ancestors()
        .chain(cwd.ancestors())
        .map(|d| d.join(".venv/bin/python"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| "python3".into())
}

impl NativePython {
    /// Starts the interpreter on the policy in `dir` and waits until it has
    /// imported it.
    ///
    /// # Errors
    /// No interpreter, or the policy does not import (its traceback is on
    /// stderr, which the child shares with this process).
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let python = python(dir);
        let mut child = Command::new(&python)
            .args(["-m", "oasis_sdk.native"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (set OASIS_PYTHON, or run scripts/setup-python)",
                    python.display()
                )
            })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut native = NativePython {
            child,
            stdin,
            stdout,
            name: String::new(),
            version: String::new(),
            line: String::new(),
        };
        let ready: Ready = native.read().with_context(|| {
            format!(
                "the Python policy in {} did not start under {} (is oasis_sdk installed there? scripts/setup-python)",
                dir.display(),
                python.display()
            )
        })?;
        native.name = ready.ready.name;
        native.version = ready.ready.version;
        Ok(native)
    }

    fn read<T: serde::de::DeserializeOwned>(&mut self) -> anyhow::Result<T> {
        self.line.clear();
        if self.stdout.read_line(&mut self.line)? == 0 {
            let status = self.child.wait()?;
            bail!("the interpreter exited ({status})");
        }
        serde_json::from_str(&self.line)
            .with_context(|| format!("unexpected answer: {}", self.line.trim_end()))
    }

    /// Scores `request` (the host's JSON request) with `settings` (JSON
    /// text; empty for the defaults).
    ///
    /// # Errors
    /// The policy's own error (settings refused, an exception, output the
    /// host would refuse), named by its kind, or a broken interpreter.
    pub fn score(&mut self, settings: &str, request: &[u8]) -> anyhow::Result<NativeOutcome> {
        let settings: serde_json::Value = if settings.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(settings).context("settings are not JSON")?
        };
        let request: serde_json::Value =
            serde_json::from_slice(request).context("the request is not JSON")?;
        let job = serde_json::json!({ "settings": settings, "request": request });
        serde_json::to_writer(&mut self.stdin, &job)?;
        self.stdin.write_all(b"\n")?;
        self.stdin.flush()?;
        match self.read()? {
            Answer::Ok { ok, cpu_ms } => Ok(NativeOutcome {
                decisions: WitDecisions {
                    scores: ok.scores,
                    eligible: ok.eligible,
                    reasons: ok.reasons.into_iter().map(wit_reason).collect(),
                    propensity: ok.propensity,
                    debug: ok
                        .debug
                        .into_iter()
                        .map(|d| WitDebugValue {
                            name: d.name.into(),
                            candidate: d.candidate,
                            value: d.value.unwrap_or(f64::NAN),
                        })
                        .collect(),
                    campaign_updates: ok
                        .campaign_updates
                        .into_iter()
                        .map(|u| WitCampaignUpdate {
                            campaign: u.campaign,
                            pacing_integral: u.pacing_integral,
                            pacing_last_error: u.pacing_last_error,
                        })
                        .collect(),
                },
                cpu_ms,
            }),
            Answer::Err { error } => Err(anyhow::anyhow!("{}: {}", error.kind, error.message)
                .context(super::PolicyFailed("the policy failed".into()))),
        }
    }
}

impl Drop for NativePython {
    fn drop(&mut self) {
        // End of input ends the interpreter's loop; kill it if it lingers.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
