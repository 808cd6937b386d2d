//! `oasis check <manifest|dir>`: validate a policy directory offline, for CI
//! and GitOps pipelines, with the code the server's reload uses.
//!
//! ```text
//! oasis check deploy/policies
//! oasis check examples/policies --modules target/guests/wasm32-wasip2/policy
//! oasis check deploy/policies/radio.toml --json
//! ```
//!
//! Every manifest is parsed as the server parses it ([`Manifest::load`]) and
//! its module loaded as the server loads it ([`oasis::Policy::load`]:
//! compile, contract, metadata, settings, smoke call), under the manifest's
//! limits; `routes.toml` is parsed ([`RoutesFile::load`]) and its references
//! checked against the manifests. Every problem is listed, not just the
//! first; the exit status is 1 if there is one. A settings error names the
//! manifest, the line of the setting in its `[settings]` table and the
//! setting.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use oasis::control::manifest::{Manifest, ROUTES_FILE, RoutesFile};
use oasis::{LoadError, Runtime, RuntimeConfig};
use serde::Serialize;

/// Arguments of `oasis check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A policy directory (its manifests and routes.toml) or one manifest.
    pub target: PathBuf,
    /// Look for the modules the manifests name in this directory instead
    /// of beside the manifests (e.g. a build's output).
    #[arg(long)]
    pub modules: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One finding.
#[derive(Debug, Serialize)]
struct Finding {
    /// The file it is about.
    file: String,
    /// Its line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    /// The manifest key, route or setting concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    message: String,
}

/// A manifest that loaded.
#[derive(Debug, Serialize)]
struct Loaded {
    file: String,
    key: String,
    name: String,
    version: String,
    digest: String,
    settings_sha256: String,
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: super::CLI_INSTANCES,
        ..Default::default()
    })?;
    let (manifests, routes_dir) = if args.target.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&args.target)
            .with_context(|| format!("cannot read {}", args.target.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "toml")
                    && p.file_name().is_some_and(|n| n != ROUTES_FILE)
            })
            .collect();
        files.sort();
        (files, Some(args.target.clone()))
    } else {
        (vec![args.target.clone()], None)
    };
    let mut problems = Vec::new();
    let mut loaded = Vec::new();
    let mut keys = BTreeSet::new();
    for path in &manifests {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Finding {
                    file,
                    line: None,
                    field: None,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let manifest = match Manifest::parse(path, &text) {
            Ok(m) => m,
            Err(e) => {
                problems.push(manifest_problem(&file, &text, &e.to_string()));
                continue;
            }
        };
        keys.insert(manifest.key.clone());
        let mut module = match manifest.module.local_path() {
            Ok(p) => p.to_path_buf(),
            Err(message) => {
                // A registry module is checked where it is pulled (`oasis
                // pull`, then `oasis check` on the file), not offline here.
                problems.push(Finding {
                    file,
                    line: line_of(&text, "module"),
                    field: Some("module".into()),
                    message,
                });
                continue;
            }
        };
        if let Some(dir) = &args.modules
            && let Some(name) = module.file_name()
        {
            module = dir.join(name);
        }
        match oasis::Policy::load_file(&runtime, &module, &manifest.settings_json, manifest.limits)
        {
            Ok(policy) => {
                let id = policy.identity();
                loaded.push(Loaded {
                    file,
                    key: manifest.key.clone(),
                    name: id.name.to_string(),
                    version: id.version.clone(),
                    digest: id.digest.clone(),
                    settings_sha256: policy.settings_sha256().to_string(),
                });
            }
            Err(LoadError::BadSettings(message)) => {
                problems.push(settings_problem(&file, &text, &message));
            }
            Err(e) => problems.push(Finding {
                file,
                line: line_of(&text, "module"),
                field: Some("module".into()),
                message: format!("{}: {}", module.display(), oasis::visible(&e.to_string())),
            }),
        }
    }
    if let Some(dir) = routes_dir {
        check_routes(&dir, &keys, &mut problems);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "manifests": manifests.len(),
                "loaded": loaded,
                "problems": problems,
            }))?
        );
    } else {
        for l in &loaded {
            println!(
                "ok     {}: {} {} ({}, settings {})",
                l.file,
                l.name,
                l.version,
                oasis::cache::short(&l.digest),
                oasis::cache::short(&l.settings_sha256)
            );
        }
        for p in &problems {
            let at = p.line.map(|l| format!(":{l}")).unwrap_or_default();
            let field = p
                .field
                .as_deref()
                .map(|f| format!(" {f}:"))
                .unwrap_or_default();
            println!("ERROR  {}{at}:{field} {}", p.file, p.message);
        }
        println!(
            "\n{} manifests, {} loaded, {} problems",
            manifests.len(),
            loaded.len(),
            problems.len()
        );
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::CHECK_FAILED)
    })
}

/// A manifest that does not parse: the TOML error's line when it has one.
fn manifest_problem(file: &str, _text: &str, message: &str) -> Finding {
    // toml's messages read "TOML parse error at line 3, column 9 ...".
    let line = message
        .split("line ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    let message = message
        .strip_prefix(&format!("{file}: "))
        .unwrap_or(message);
    Finding {
        file: file.to_string(),
        line,
        field: None,
        message: message.replace('\n', " ").trim().to_string(),
    }
}

/// Settings the policy refused: the setting it names and its line in the
/// manifest's `[settings]`, and the message without serde's position in
/// the converted JSON (`at line 1 column 47`), which no operator can find.
fn settings_problem(file: &str, text: &str, message: &str) -> Finding {
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains("column") => &message[..i],
        _ => message,
    };
    let keys = settings_keys(text);
    // serde names a field in backticks; a policy's message usually starts
    // with the setting's name.
    let named = message
        .split('`')
        .skip(1)
        .step_by(2)
        .chain(message.split(|c: char| !(c.is_alphanumeric() || c == '_')))
        .find(|w| keys.iter().any(|(k, _)| k == w))
        .map(str::to_string);
    let (field, line) = match &named {
        Some(k) => (
            Some(format!("[settings] {k}")),
            keys.iter().find(|(name, _)| name == k).map(|(_, l)| *l),
        ),
        None => (Some("[settings]".to_string()), line_of(text, "[settings]")),
    };
    Finding {
        file: file.to_string(),
        line,
        field,
        message: format!(
            "the policy refused its settings: {}",
            oasis::visible(message)
        ),
    }
}

/// `(key, line)` of each key of the `[settings]` table.
fn settings_keys(text: &str) -> Vec<(String, usize)> {
    let mut inside = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == "[settings]";
            continue;
        }
        if inside && let Some((k, _)) = t.split_once('=') {
            out.push((k.trim().trim_matches('"').to_string(), i + 1));
        }
    }
    out
}

/// The first line (1-based) that starts with `key`.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().starts_with(key))
        .map(|i| i + 1)
}

/// `routes.toml` parses and names policies that have manifests.
fn check_routes(dir: &Path, keys: &BTreeSet<String>, problems: &mut Vec<Finding>) {
    let path = dir.join(ROUTES_FILE);
    let file = path.display().to_string();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let routes = match RoutesFile::load(dir) {
        Ok(r) => r,
        Err(e) => {
            problems.push(manifest_problem(&file, &text, &e.to_string()));
            return;
        }
    };
    let line = |route: &str| line_of(&text, &format!("[routes.{route}]"));
    for (name, r) in &routes.routes {
        for (role, key) in
            std::iter::once(("policy", &r.policy)).chain(r.baseline.iter().map(|b| ("baseline", b)))
        {
            if !keys.contains(key) {
                problems.push(Finding {
                    file: file.clone(),
                    line: line(name),
                    field: Some(format!("routes.{name}.{role}")),
                    message: format!("`{key}` has no manifest ({key}.toml) in {}", dir.display()),
                });
            }
        }
    }
    if let Some(d) = &routes.default
        && !routes.routes.contains_key(d)
        && !keys.contains(d)
    {
        problems.push(Finding {
            file,
            line: line_of(&text, "default"),
            field: Some("default".into()),
            message: format!("default route `{d}` is neither a configured route nor a policy"),
        });
    }
}
