//! Policy manifests: one TOML file per policy in the policy directory.
//!
//! ```toml
//! # policies/guarded-boost.toml
//! module = "guarded_boost.wasm"   # relative to this file; or from a registry:
//!                                 # "oci://registry/repo:tag" (polled) or "…@sha256:…"
//! fallback = "baseline"           # another policy of the directory; host passthrough if absent
//!
//! [limits]                        # all optional; defaults shown
//! deadline_ms = 20                # CPU deadline per call
//! memory_mb = 64                  # linear memory per instance
//! max_candidates = 2000           # larger requests get 422
//! max_concurrency = 16            # instances of this policy at once
//! queue_timeout_ms = 50           # wait for a free instance, then 503
//! max_queue = 64                  # requests waiting beyond that: 503 at once
//! max_module_mb = 32              # larger components are refused before compiling
//! reuse_instance_calls = 0        # >1: reuse an instance for up to N calls (weaker isolation)
//!
//! [settings]                      # handed to the policy, which validates them
//! theta = 0.35
//! ```
//!
//! The policy's key (used by routes, fallbacks and the API) is the file stem:
//! `guarded-boost.toml` defines policy `guarded-boost`. Parsing is strict
//! (unknown keys are errors) so that a typo never silently changes behaviour.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use oasis_contract::is_key;

use crate::control::source::ModuleRef;
use crate::limits::{Concurrency, Limits};

/// A parsed, validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Policy key: the manifest's file stem.
    pub key: String,
    /// The manifest file.
    pub path: PathBuf,
    /// The component: a file (resolved against the manifest's directory)
    /// or a registry reference (`oci://…`).
    pub module: ModuleRef,
    /// Key of the fallback policy, if any.
    pub fallback: Option<String>,
    /// Runtime limits.
    pub limits: Limits,
    /// Concurrency and queueing.
    pub concurrency: Concurrency,
    /// Settings as JSON, for the policy.
    pub settings_json: String,
    /// A public key (PEM, P-256) whose cosign signature a registry module
    /// must carry (`verify_key`, relative to the manifest), besides the
    /// keys of `oasis serve --verify-key`.
    pub verify_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    deadline_ms: u64,
    memory_mb: usize,
    max_candidates: usize,
    max_module_mb: usize,
    max_concurrency: usize,
    queue_timeout_ms: u64,
    max_queue: usize,
    reuse_instance_calls: u32,
    /// Whether the text set `deadline_ms` ([`Limits::deadline_explicit`]).
    #[serde(skip)]
    deadline_explicit: bool,
}

impl Default for RawLimits {
    fn default() -> Self {
        let l = Limits::default();
        let c = Concurrency::default();
        RawLimits {
            deadline_ms: l.deadline.as_millis() as u64,
            memory_mb: l.memory_bytes >> 20,
            max_candidates: l.max_candidates,
            max_module_mb: l.module_bytes >> 20,
            max_concurrency: c.max,
            queue_timeout_ms: c.queue_timeout.as_millis() as u64,
            max_queue: c.queue,
            reuse_instance_calls: l.reuse_instance_calls,
            deadline_explicit: false,
        }
    }
}

/// Why a manifest is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Cannot read the file.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The manifest.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// Not valid TOML, or not the manifest's shape.
    #[error("{path}: {message}")]
    Parse {
        /// The manifest.
        path: String,
        /// What is wrong (with line and column).
        message: String,
    },
    /// A value out of range.
    #[error("{path}: {message}")]
    Invalid {
        /// The manifest.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Every problem of a manifest: its keys of the wrong type or out of
    /// range, unknown keys, a missing module ([`Manifest::check`]).
    #[error("{path}: {}", join(problems))]
    Problems {
        /// The manifest.
        path: String,
        /// What is wrong, at least one.
        problems: Vec<ManifestProblem>,
    },
}

fn join(problems: &[ManifestProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One problem of a manifest, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestProblem {
    /// Its line (1-based), when known.
    pub line: Option<usize>,
    /// The key concerned, as an operator reads it: `module`, `fallback`,
    /// `[limits] deadline_ms`, `[settings]`; `None` for the file as a
    /// whole (a TOML syntax error).
    pub key: Option<String>,
    /// What is wrong, without the key.
    pub message: String,
}

impl std::fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The top-level keys of a manifest.
const KEYS: [&str; 5] = ["module", "fallback", "limits", "settings", "verify_key"];

impl Manifest {
    /// Reads and validates the manifest at `path`.
    ///
    /// # Errors
    /// [`ManifestError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|error| ManifestError::Io {
            path: path.display().to_string(),
            error,
        })?;
        Self::parse(path, &text)
    }

    /// Parses manifest text that was read from `path`.
    ///
    /// # Errors
    /// [`ManifestError::Problems`] naming the file and every problem
    /// ([`Manifest::check`]).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ManifestError> {
        match Self::check(path, text) {
            (Some(m), problems) if problems.is_empty() => Ok(m),
            (_, problems) => Err(ManifestError::Problems {
                path: path.display().to_string(),
                problems,
            }),
        }
    }

    /// Every problem of manifest text read from `path`, each with its line
    /// and key, and the manifest as far as it could be read: a key of the
    /// wrong type or out of range is listed and its default taken, so that
    /// one bad limit does not hide a second one, nor the module's own
    /// problems from a tool that goes on to load it (`oasis check`). The
    /// manifest is `None` only when the text is not TOML or names no usable
    /// module; it is valid when the list is empty.
    pub fn check(path: &Path, text: &str) -> (Option<Self>, Vec<ManifestProblem>) {
        use toml::de::{DeTable, DeValue, ValueDeserializer};
        let mut problems = Vec::new();
        let line = |offset: usize| Some(line_at(text, offset));
        let table = match DeTable::parse(text) {
            Ok(t) => t.into_inner(),
            Err(e) => {
                problems.push(ManifestProblem {
                    line: e.span().map(|s| line_at(text, s.start)),
                    key: None,
                    message: e.message().trim().to_string(),
                });
                return (None, problems);
            }
        };
        // One key's value as `T`, or its problem (at the value's line).
        fn value<'i, T: serde::de::DeserializeOwned>(
            v: &toml::Spanned<DeValue<'i>>,
        ) -> Result<T, (usize, String)> {
            T::deserialize(ValueDeserializer::from(v.clone()))
                .map_err(|e| (e.span().unwrap_or(v.span()).start, e.message().to_string()))
        }
        let mut module: Option<ModuleRef> = None;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut fallback: Option<String> = None;
        let mut verify_key: Option<PathBuf> = None;
        let mut limits = RawLimits::default();
        let mut settings = toml::Table::new();
        let key = |name: &str| Some(name.to_string());
        for (k, v) in &table {
            let name: &str = k.get_ref();
            let mut problem = |at: usize, key: Option<String>, message: String| {
                problems.push(ManifestProblem {
                    line: line(at),
                    key,
                    message,
                })
            };
            match name {
                "module" => match value::<String>(v) {
                    Ok(m) => match ModuleRef::parse(&m, dir) {
                        Ok(m) => module = Some(m),
                        Err(m) => problem(v.span().start, key(name), m),
                    },
                    Err((at, m)) => problem(at, key(name), m),
                },
                "fallback" => match value::<String>(v) {
                    Ok(f) => fallback = Some(f),
                    Err((at, m)) => problem(at, key(name), m),
                },
                "verify_key" => match value::<String>(v) {
                    Ok(f) => verify_key = Some(dir.join(f)),
                    Err((at, m)) => problem(at, key(name), m),
                },
                "settings" => match value::<toml::Table>(v) {
                    Ok(s) => settings = s,
                    Err((at, m)) => problem(at, key("[settings]"), m),
                },
                "limits" => match v.get_ref().as_table() {
                    // Each limit on its own, so that every bad one is named.
                    Some(t) => {
                        for (lk, lv) in t {
                            let mut one = DeTable::new();
                            one.insert(lk.clone(), lv.clone());
                            let one = toml::Spanned::new(v.span(), DeValue::Table(one));
                            match value::<RawLimits>(&one) {
                                Ok(mut l) => {
                                    // Written in the text, so chosen (a refused
                                    // value is reset to the unchosen default).
                                    l.deadline_explicit = true;
                                    limits.set(lk.get_ref(), l)
                                }
                                Err((_, m)) => problem(
                                    lk.span().start,
                                    Some(format!("[limits] {}", lk.get_ref())),
                                    m,
                                ),
                            }
                        }
                    }
                    None => problem(
                        v.span().start,
                        key("[limits]"),
                        format!("must be a table, not {}", v.get_ref().type_str()),
                    ),
                },
                _ => problem(
                    k.span().start,
                    key(name),
                    format!(
                        "unknown field `{name}`, expected one of {}",
                        KEYS.map(|k| format!("`{k}`")).join(", ")
                    ),
                ),
            }
        }
        // Where a key of the text is, for the checks of values below.
        let at = |path: &[&str]| key_line(&table, text, path);
        let key_of = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| is_key(s));
        if key_of.is_none() {
            problems.push(ManifestProblem {
                line: None,
                key: None,
                message: "the file name must be <policy-key>.toml with [A-Za-z0-9._-]".into(),
            });
        }
        if module.is_none() && !table.iter().any(|(k, _)| k.get_ref() == "module") {
            problems.push(ManifestProblem {
                line: None,
                key: key("module"),
                message: "missing: the component file, relative to this manifest".into(),
            });
        }
        if let Some(path) = &verify_key {
            let message = match &module {
                Some(ModuleRef::File(_)) => Some(
                    "applies to registry modules (`module = \"oci://…\"`); a file module is not signed"
                        .to_string(),
                ),
                _ => crate::control::source::signing::PublicKey::load(path)
                    .err()
                    .map(|e| e.to_string()),
            };
            if let Some(message) = message {
                problems.push(ManifestProblem {
                    line: at(&["verify_key"]),
                    key: key("verify_key"),
                    message,
                });
            }
        }
        if let Some(f) = &fallback {
            let message = if Some(f.as_str()) == key_of {
                Some("a policy cannot be its own fallback".to_string())
            } else if !is_key(f) {
                Some(format!("{f:?} is not a valid policy key"))
            } else {
                None
            };
            if let Some(message) = message {
                problems.push(ManifestProblem {
                    line: at(&["fallback"]),
                    key: key("fallback"),
                    message,
                });
                fallback = None;
            }
        }
        let mut refused: Vec<(&'static str, String)> = Vec::new();
        if limits.memory_mb.checked_mul(1 << 20).is_none() {
            refused.push((
                "memory_mb",
                format!("memory_mb {} is too large", limits.memory_mb),
            ));
        }
        let (l, c) = limits.build();
        for (name, message) in l.problems().into_iter().chain(c.problems()) {
            if !refused.iter().any(|(n, _)| *n == name) {
                refused.push((name, message));
            }
        }
        let defaults = RawLimits::default();
        for (name, message) in refused {
            problems.push(ManifestProblem {
                line: at(&["limits", name]),
                key: Some(format!("[limits] {name}")),
                message: message
                    .strip_prefix(name)
                    .map(str::trim_start)
                    .unwrap_or(&message)
                    .to_string(),
            });
            limits.reset(name, &defaults);
        }
        // Every refused value is back at its default now.
        let (limits, concurrency) = limits.build();
        let settings_json = match serde_json::to_string(&settings) {
            Ok(j) => j,
            Err(e) => {
                problems.push(ManifestProblem {
                    line: at(&["settings"]),
                    key: key("[settings]"),
                    message: e.to_string(),
                });
                "{}".into()
            }
        };
        let manifest = match (key_of, module) {
            (Some(k), Some(module)) => Some(Manifest {
                key: k.to_string(),
                path: path.to_path_buf(),
                module,
                fallback,
                limits,
                concurrency,
                settings_json,
                verify_key,
            }),
            _ => None,
        };
        // In the order of the text (the table is sorted by key).
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        (manifest, problems)
    }
}

impl RawLimits {
    /// Takes the value of limit `name` from `from`.
    fn set(&mut self, name: &str, from: RawLimits) {
        match name {
            "deadline_ms" => {
                self.deadline_ms = from.deadline_ms;
                self.deadline_explicit = from.deadline_explicit;
            }
            "memory_mb" => self.memory_mb = from.memory_mb,
            "max_candidates" => self.max_candidates = from.max_candidates,
            "max_module_mb" => self.max_module_mb = from.max_module_mb,
            "max_concurrency" => self.max_concurrency = from.max_concurrency,
            "queue_timeout_ms" => self.queue_timeout_ms = from.queue_timeout_ms,
            "max_queue" => self.max_queue = from.max_queue,
            "reuse_instance_calls" => self.reuse_instance_calls = from.reuse_instance_calls,
            _ => {}
        }
    }

    /// Puts limit `name` back to its default (it was refused).
    fn reset(&mut self, name: &str, defaults: &RawLimits) {
        self.set(name, *defaults);
    }

    /// The limits and concurrency these values make.
    fn build(&self) -> (Limits, Concurrency) {
        (
            Limits {
                deadline: Duration::from_millis(self.deadline_ms),
                memory_bytes: self.memory_mb.saturating_mul(1 << 20),
                max_candidates: self.max_candidates,
                module_bytes: self.max_module_mb.saturating_mul(1 << 20),
                reuse_instance_calls: self.reuse_instance_calls,
                deadline_explicit: self.deadline_explicit,
            },
            Concurrency {
                max: self.max_concurrency,
                queue_timeout: Duration::from_millis(self.queue_timeout_ms),
                queue: self.max_queue,
            },
        )
    }
}

/// The line (1-based) of byte `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of the key at `path` (`["limits", "deadline_ms"]`) in
/// manifest text, when it is there.
fn key_line(table: &toml::de::DeTable<'_>, text: &str, path: &[&str]) -> Option<usize> {
    let (first, rest) = path.split_first()?;
    let (k, v) = table.iter().find(|(k, _)| k.get_ref() == first)?;
    if rest.is_empty() {
        return Some(line_at(text, k.span().start));
    }
    key_line(v.get_ref().as_table()?, text, rest)
}

/// The line (1-based) of the key at `path` in manifest text
/// (`["fallback"]`, `["settings", "theta"]`, `["limits", "deadline_ms"]`),
/// when the text is TOML and has it.
pub fn line_of_key(text: &str, path: &[&str]) -> Option<usize> {
    let table = toml::de::DeTable::parse(text).ok()?.into_inner();
    key_line(&table, text, path)
}

/// Routes: `routes.toml` in the policy directory (optional).
///
/// ```toml
/// default = "radio"          # route used when a request names none
///
/// [routes.radio]
/// policy = "pid-pacing"      # the policy of the route (which version: see rollout.json)
/// baseline = "baseline"      # optional: answers when the kill switch is on, and after
///                            # the stable version fails (default: the policy's fallback)
/// salt = "radio"             # optional: canary bucketing salt (default: the route name)
///
/// [routes.radio.guardrails]  # optional: automatic canary rollback
/// window = 200               # the canary's last N requests
/// min_samples = 50           # judge only with at least this many
/// max_error_rate = 0.05      # share of canary calls that failed
/// max_p99_ms = 25            # p99 of the canary's policy latency
///
/// [routes.radio.log]         # optional: decision logging (when the server logs)
/// sample = 0.1               # share of requests logged, by request id
///
/// [routes.mixes]
/// policy = "freq-cap-diversity"
/// ```
///
/// Every policy is also reachable as a route named after its key, unless a
/// route of that name is configured.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    /// The default route.
    #[serde(default)]
    pub default: Option<String>,
    /// Named routes.
    #[serde(default)]
    pub routes: std::collections::BTreeMap<String, RouteConfig>,
}

/// One route's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Key of the route's policy.
    pub policy: String,
    /// Key of the route's baseline policy: what the kill switch serves, and
    /// the arm after the stable version; the policy's manifest fallback when
    /// absent.
    #[serde(default)]
    pub baseline: Option<String>,
    /// Canary bucketing salt; the route name when absent.
    #[serde(default)]
    pub salt: Option<String>,
    /// Automatic rollback of a canary that breaches these.
    #[serde(default)]
    pub guardrails: Option<Guardrails>,
    /// Decision logging of this route (when the server logs decisions).
    #[serde(default)]
    pub log: Option<RouteLog>,
}

/// Decision logging of one route.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteLog {
    /// Share of requests logged, in [0, 1], decided by a hash of the
    /// request id (a request is all in or all out, on every replica).
    pub sample: f64,
}

impl RouteConfig {
    /// A route running `policy` with every default.
    pub fn new(policy: &str) -> Self {
        RouteConfig {
            policy: policy.to_string(),
            baseline: None,
            salt: None,
            guardrails: None,
            log: None,
        }
    }
}

/// Limits a canary must stay within, judged over its last `window` requests.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Guardrails {
    /// Requests judged (the canary's most recent).
    pub window: usize,
    /// Fewer samples than this are not judged.
    pub min_samples: usize,
    /// Largest share of failed canary calls.
    pub max_error_rate: Option<f64>,
    /// Largest p99 of the canary's policy latency, milliseconds.
    pub max_p99_ms: Option<f64>,
    /// Business guardrail: the canary's promoted rate (promoted candidates
    /// per candidate it scored) must be at least this share of the stable
    /// arm's on the route over the window. Judged only while the stable arm
    /// promotes at all. Default 0.1: a canary that promotes nothing is
    /// rolled back, never promoted by accident.
    pub min_promoted_ratio: Option<f64>,
    /// The canary's promoted rate must be at most this multiple of the
    /// stable arm's (a canary that promotes everything).
    pub max_promoted_ratio: Option<f64>,
    /// The canary's eligible rate (eligible candidates per candidate) must
    /// be at least this share of the stable arm's.
    pub min_eligible_ratio: Option<f64>,
    /// The canary's eligible rate must be at most this multiple of the
    /// stable arm's.
    pub max_eligible_ratio: Option<f64>,
}

/// The default of [`Guardrails::min_promoted_ratio`].
pub const DEFAULT_MIN_PROMOTED_RATIO: f64 = 0.1;

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails {
            window: 200,
            min_samples: 50,
            max_error_rate: Some(0.05),
            max_p99_ms: None,
            min_promoted_ratio: Some(DEFAULT_MIN_PROMOTED_RATIO),
            max_promoted_ratio: None,
            min_eligible_ratio: None,
            max_eligible_ratio: None,
        }
    }
}

impl Guardrails {
    /// Checks the values.
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100_000).contains(&self.window) {
            return Err(format!(
                "guardrails.window must be in 1..=100000, got {}",
                self.window
            ));
        }
        if self.min_samples == 0 || self.min_samples > self.window {
            return Err(format!(
                "guardrails.min_samples must be in 1..=window ({}), got {}",
                self.window, self.min_samples
            ));
        }
        if let Some(r) = self.max_error_rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err(format!(
                "guardrails.max_error_rate must be in [0, 1], got {r}"
            ));
        }
        if let Some(ms) = self.max_p99_ms
            && !(ms > 0.0 && ms.is_finite())
        {
            return Err(format!("guardrails.max_p99_ms must be positive, got {ms}"));
        }
        for (metric, min, max) in [
            ("promoted", self.min_promoted_ratio, self.max_promoted_ratio),
            ("eligible", self.min_eligible_ratio, self.max_eligible_ratio),
        ] {
            for (key, v) in [("min", min), ("max", max)] {
                if let Some(r) = v
                    && !(r.is_finite() && (0.0..=MAX_RATIO).contains(&r))
                {
                    return Err(format!(
                        "guardrails.{key}_{metric}_ratio must be in [0, {MAX_RATIO}] \
                         (a ratio of the canary's {metric} rate to the stable arm's), got {r}"
                    ));
                }
            }
            if let (Some(lo), Some(hi)) = (min, max)
                && lo > hi
            {
                return Err(format!(
                    "guardrails.min_{metric}_ratio ({lo}) must not exceed \
                     guardrails.max_{metric}_ratio ({hi})"
                ));
            }
        }
        if self.max_promoted_ratio == Some(0.0) || self.max_eligible_ratio == Some(0.0) {
            return Err(
                "guardrails.max_*_ratio 0 would roll back every canary that promotes or \
                 marks anything; leave the key out for no upper bound"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Largest accepted `*_ratio` guardrail.
pub const MAX_RATIO: f64 = 1000.0;

/// File name of the routes file inside the policy directory.
pub const ROUTES_FILE: &str = "routes.toml";

impl RoutesFile {
    /// Reads `dir/routes.toml`; a missing file means no named routes.
    ///
    /// # Errors
    /// [`ManifestError`] for an unreadable or invalid file.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(ROUTES_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(error) => {
                return Err(ManifestError::Io {
                    path: path.display().to_string(),
                    error,
                });
            }
        };
        let routes: RoutesFile = toml::from_str(&text).map_err(|e| ManifestError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ManifestError::Invalid {
            path: path.display().to_string(),
            message,
        };
        for name in routes.routes.keys().chain(routes.default.iter()) {
            if !is_key(name) {
                return Err(invalid(format!(
                    "route name {name:?} must be [A-Za-z0-9._-]"
                )));
            }
        }
        for (name, r) in &routes.routes {
            for key in std::iter::once(&r.policy).chain(&r.baseline) {
                if !is_key(key) {
                    return Err(invalid(format!(
                        "routes.{name}: {key:?} is not a policy key"
                    )));
                }
            }
            if let Some(l) = &r.log
                && !(0.0..=1.0).contains(&l.sample)
            {
                return Err(invalid(format!(
                    "routes.{name}.log.sample must be in [0, 1], got {}",
                    l.sample
                )));
            }
            if let Some(g) = &r.guardrails {
                g.validate()
                    .map_err(|m| invalid(format!("routes.{name}.{m}")))?;
            }
        }
        Ok(routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new(&format!("/srv/policies/{name}")), text)
    }

    #[test]
    fn parses_a_full_manifest_relative_to_its_directory() {
        let m = parse(
            "guarded-boost.toml",
            r#"
            module = "gb.wasm"
            fallback = "baseline"
            [limits]
            deadline_ms = 30
            max_concurrency = 4
            [settings]
            theta = 0.3
            nested = { a = [1, 2] }
        "#,
        )
        .unwrap();
        assert_eq!(m.key, "guarded-boost");
        assert_eq!(
            m.module,
            ModuleRef::File(PathBuf::from("/srv/policies/gb.wasm"))
        );
        assert_eq!(m.fallback.as_deref(), Some("baseline"));
        assert_eq!(m.limits.deadline, Duration::from_millis(30));
        assert_eq!(m.limits.memory_bytes, 64 << 20);
        assert_eq!(m.concurrency.max, 4);
        assert_eq!(
            m.limits.reuse_instance_calls, 0,
            "fresh instances by default"
        );
        assert!(!m.limits.reuses_instances());
        let s: serde_json::Value = serde_json::from_str(&m.settings_json).unwrap();
        assert_eq!(
            s,
            serde_json::json!({"theta": 0.3, "nested": {"a": [1, 2]}})
        );
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let e = parse("x.toml", "module = \"x.wasm\"\nmodul = 1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/srv/policies/x.toml") && e.contains("unknown field `modul`"),
            "{e}"
        );
        let e = parse("x.toml", "module = \"x.wasm\"\n[limits]\ndeadline_ms = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[limits] deadline_ms: must be in 1..="), "{e}");
        let e = parse(
            "x.toml",
            "module = \"x.wasm\"\n[limits]\nmax_concurrency = 0",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_concurrency"), "{e}");
        let m = parse(
            "x.toml",
            "module = \"x.wasm\"\n[limits]\nreuse_instance_calls = 100",
        )
        .unwrap();
        assert_eq!(m.limits.reuse_instance_calls, 100);
        assert!(m.limits.reuses_instances());
        let e = parse(
            "x.toml",
            "module = \"x.wasm\"\n[limits]\nreuse_instance_calls = 100001",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("reuse_instance_calls: must be in 0..=100000"),
            "{e}"
        );
        let e = parse("x.toml", "module = \"x.wasm\"\nfallback = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("its own fallback"), "{e}");
        let e = parse("x.toml", "module = \"oci://x:v1\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("module: `oci://x:v1` names no registry"), "{e}");
        let m = parse("x.toml", "module = \"oci://127.0.0.1:5000/p/x:v1\"").unwrap();
        assert_eq!(m.module.to_string(), "oci://127.0.0.1:5000/p/x:v1");
        let e = parse("x.toml", "settings = 3").unwrap_err().to_string();
        assert!(
            e.contains("missing field `module`") || e.contains("invalid type"),
            "{e}"
        );
    }

    fn problems(text: &str) -> Vec<String> {
        Manifest::check(Path::new("/srv/policies/p.toml"), text)
            .1
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn check_lists_every_problem_with_its_line_and_key() {
        let p = problems(
            "module = \"p.wasm\"\nfallback = \"p\"\nextra = 1\n\n[limits]\ndeadline_ms = 0\nmemory_mb = \"64\"\nmax_queue = 1000000\nbogus = 3\n",
        );
        assert_eq!(
            p,
            [
                "line 2: fallback: a policy cannot be its own fallback",
                "line 3: extra: unknown field `extra`, expected one of `module`, `fallback`, `limits`, `settings`, `verify_key`",
                "line 6: [limits] deadline_ms: must be in 1..=5000, got 0",
                "line 7: [limits] memory_mb: invalid type: string \"64\", expected usize",
                "line 8: [limits] max_queue: must be at most 100000, got 1000000",
                "line 9: [limits] bogus: unknown field `bogus`, expected one of `deadline_ms`, `memory_mb`, `max_candidates`, `max_module_mb`, `max_concurrency`, `queue_timeout_ms`, `max_queue`, `reuse_instance_calls`",
            ]
        );
        // The manifest as far as it goes: refused values at their defaults.
        let (m, _) = Manifest::check(
            Path::new("/srv/policies/p.toml"),
            "module = \"p.wasm\"\n[limits]\ndeadline_ms = 0\nmax_concurrency = 2\n",
        );
        let m = m.unwrap();
        assert_eq!(m.limits.deadline, Limits::default().deadline);
        assert_eq!(m.concurrency.max, 2);
        // Not TOML: one problem at the syntax error's line.
        let p = problems("module = \"p.wasm\"\n[limits\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("line 2: "), "{p:?}");
        assert_eq!(
            problems("[settings]\ntheta = 1\n"),
            ["module: missing: the component file, relative to this manifest"]
        );
        assert_eq!(
            problems("module = \"p.wasm\"\nsettings = 3\n"),
            ["line 2: [settings]: invalid type: integer `3`, expected a map"]
        );
        assert_eq!(
            line_of_key("a = 1\n[settings]\n\ntheta = 2\n", &["settings", "theta"]),
            Some(4)
        );
    }
}
