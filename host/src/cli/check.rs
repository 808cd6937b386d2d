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
//! first, each with its file, line and key ([`Manifest::check`]): every
//! bad key of a manifest, a fallback with no manifest, a module that does
//! not load, and every setting the policy refuses (asked again without each
//! one it named); the exit status is 1 if there is one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use oasis::control::manifest::{Manifest, ROUTES_FILE, RoutesFile, line_of_key};
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
    // The policies of the directory (for fallbacks): a manifest file each,
    // whether it loads or not (its own problems are listed with it).
    let policy_dir = routes_dir.clone().unwrap_or_else(|| {
        args.target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    });
    let policies = policy_keys(&policy_dir);
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
        // Every problem of the manifest itself, then of what it names: its
        // fallback, its module, its settings.
        let (manifest, found) = Manifest::check(path, &text);
        let before = problems.len();
        problems.extend(found.into_iter().map(|p| Finding {
            file: file.clone(),
            line: p.line,
            field: p.key,
            message: p.message,
        }));
        let Some(manifest) = manifest else {
            continue;
        };
        keys.insert(manifest.key.clone());
        if let Some(f) = &manifest.fallback
            && !policies.contains(f)
        {
            problems.push(Finding {
                file: file.clone(),
                line: line_of_key(&text, &["fallback"]),
                field: Some("fallback".into()),
                message: format!(
                    "`{f}` has no manifest ({f}.toml) in {}: the policy's failures would be \
                     answered by the host's passthrough",
                    policy_dir.display()
                ),
            });
        }
        let mut module = match manifest.module.local_path() {
            Ok(p) => Some(p.to_path_buf()),
            Err(message) => {
                // A registry module is checked where it is pulled (`oasis
                // pull`, then `oasis check` on the file), not offline here.
                problems.push(Finding {
                    file: file.clone(),
                    line: line_of_key(&text, &["module"]),
                    field: Some("module".into()),
                    message,
                });
                None
            }
        };
        if let Some(dir) = &args.modules
            && let Some(name) = module.as_ref().and_then(|m| m.file_name())
        {
            module = Some(dir.join(name));
        }
        // Listed as loaded only when nothing is wrong with it.
        if let Some(module) = &module
            && let Some(l) = load(&runtime, &manifest, module, &file, &text, &mut problems)
            && problems.len() == before
        {
            loaded.push(l);
        }
        problems[before..].sort_by_key(|p| p.line.unwrap_or(usize::MAX));
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

/// Loads the manifest's module as the server would; every setting the
/// policy refuses is listed: after a refusal that names a setting, the
/// policy is asked again without it (its default then), until it accepts
/// the rest or names no setting it was given. Returns the policy's identity
/// when it loaded with the manifest's own settings.
fn load(
    runtime: &Runtime,
    manifest: &Manifest,
    module: &Path,
    file: &str,
    text: &str,
    problems: &mut Vec<Finding>,
) -> Option<Loaded> {
    let wasm = match std::fs::read(module) {
        Ok(w) => w,
        Err(e) => {
            problems.push(module_problem(file, text, module, &e.to_string()));
            return None;
        }
    };
    // A long compile's progress lines name the file.
    let _load = tracing::info_span!("load", module = %module.display()).entered();
    let mut settings: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&manifest.settings_json).unwrap_or_default();
    let mut refused = 0;
    loop {
        let json = serde_json::Value::Object(settings.clone()).to_string();
        match oasis::Policy::load(runtime, &wasm, &json, manifest.limits) {
            Ok(policy) if refused == 0 => {
                let id = policy.identity();
                return Some(Loaded {
                    file: file.to_string(),
                    key: manifest.key.clone(),
                    name: id.name.to_string(),
                    version: id.version.clone(),
                    digest: id.digest.clone(),
                    settings_sha256: policy.settings_sha256().to_string(),
                });
            }
            Ok(_) => return None,
            Err(LoadError::BadSettings(message)) => {
                let named = setting_named(&message, &json, &settings);
                if refused > 0 && named.is_none() {
                    // Without the settings already refused the policy says
                    // something else: not a problem of the manifest.
                    return None;
                }
                problems.push(settings_problem(file, text, named.as_deref(), &message));
                refused += 1;
                settings.remove(named.as_deref()?);
            }
            Err(_) if refused > 0 => return None,
            Err(e) => {
                problems.push(module_problem(file, text, module, &e.to_string()));
                return None;
            }
        }
    }
}

/// A module that does not load, at the manifest's `module` line.
fn module_problem(file: &str, text: &str, module: &Path, message: &str) -> Finding {
    Finding {
        file: file.to_string(),
        line: line_of_key(text, &["module"]),
        field: Some("module".into()),
        message: format!("{}: {}", module.display(), oasis::visible(message)),
    }
}

/// The setting (of `settings`, whose JSON is `json`) a refusal names:
/// the one at the position serde reports in the JSON (`at line 1 column
/// 23`: a value of the wrong type), else one in backticks (serde's
/// `unknown field \`thetta\``, the Python SDK's `` `boost`: expected a
/// number``), else a word of the message (a policy's own check usually
/// starts with the setting's name).
fn setting_named(
    message: &str,
    json: &str,
    settings: &serde_json::Map<String, serde_json::Value>,
) -> Option<String> {
    let known = |w: &str| settings.contains_key(w).then(|| w.to_string());
    let at_column = message
        .rfind(" at line 1 column ")
        .and_then(|i| message[i + 18..].trim().parse::<usize>().ok())
        .and_then(|column| key_at(json, column));
    at_column
        .and_then(|k| known(&k))
        .or_else(|| message.split('`').skip(1).step_by(2).find_map(known))
        .or_else(|| {
            message
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .find_map(known)
        })
}

/// The top-level key of a JSON object (one line, as serde_json writes it)
/// whose entry holds 1-based `column`: the last key starting before it.
fn key_at(json: &str, column: usize) -> Option<String> {
    let bytes = json.as_bytes();
    let (mut depth, mut i, mut found) = (0usize, 0usize, None);
    while i < bytes.len() && i < column {
        match bytes[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let is_key = depth == 1 && bytes.get(i + 1) == Some(&b':');
                if is_key {
                    found = serde_json::from_str(&json[start..=i.min(json.len() - 1)]).ok();
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Settings the policy refused: the setting named and its line in the
/// manifest, and the message without serde's position in the converted
/// JSON (`at line 1 column 47`), which no operator can find.
fn settings_problem(file: &str, text: &str, named: Option<&str>, message: &str) -> Finding {
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains("column") => &message[..i],
        _ => message,
    };
    let (field, line) = match named {
        Some(k) => (
            format!("[settings] {k}"),
            line_of_key(text, &["settings", k]),
        ),
        None => ("[settings]".to_string(), line_of_key(text, &["settings"])),
    };
    Finding {
        file: file.to_string(),
        line,
        field: Some(field),
        message: format!(
            "the policy refused its settings: {}",
            oasis::visible(message)
        ),
    }
}

/// The keys of the policies that have a manifest in `dir`.
fn policy_keys(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && p.file_name().is_some_and(|n| n != ROUTES_FILE)
        })
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_string))
        .collect()
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
