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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    module: String,
    #[serde(default)]
    fallback: Option<String>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    settings: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
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
}

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
    /// [`ManifestError`] naming the file and the problem.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ManifestError> {
        let p = || path.display().to_string();
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: p(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ManifestError::Invalid { path: p(), message };
        let key = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| is_key(s))
            .ok_or_else(|| {
                invalid("the file name must be <policy-key>.toml with [A-Za-z0-9._-]".into())
            })?
            .to_string();
        if let Some(f) = &raw.fallback {
            if f == &key {
                return Err(invalid("a policy cannot be its own fallback".into()));
            }
            if !is_key(f) {
                return Err(invalid(format!("fallback {f:?} is not a valid policy key")));
            }
        }
        let l = raw.limits;
        let memory_bytes = l
            .memory_mb
            .checked_mul(1 << 20)
            .ok_or_else(|| invalid(format!("[limits] memory_mb {} is too large", l.memory_mb)))?;
        let limits = Limits {
            deadline: Duration::from_millis(l.deadline_ms),
            memory_bytes,
            max_candidates: l.max_candidates,
            module_bytes: l.max_module_mb.saturating_mul(1 << 20),
            reuse_instance_calls: l.reuse_instance_calls,
        };
        limits
            .validate()
            .map_err(|m| invalid(format!("[limits] {m}")))?;
        let concurrency = Concurrency {
            max: l.max_concurrency,
            queue_timeout: Duration::from_millis(l.queue_timeout_ms),
            queue: l.max_queue,
        };
        concurrency
            .validate()
            .map_err(|m| invalid(format!("[limits] {m}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let module =
            ModuleRef::parse(&raw.module, dir).map_err(|m| invalid(format!("module: {m}")))?;
        let settings = raw.settings.unwrap_or_default();
        Ok(Manifest {
            key,
            path: path.to_path_buf(),
            module,
            fallback: raw.fallback,
            limits,
            concurrency,
            settings_json: serde_json::to_string(&settings).map_err(|e| invalid(e.to_string()))?,
        })
    }
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
}

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails {
            window: 200,
            min_samples: 50,
            max_error_rate: Some(0.05),
            max_p99_ms: None,
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
        Ok(())
    }
}

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
        assert!(e.contains("deadline_ms must be in 1..="), "{e}");
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
            e.contains("reuse_instance_calls must be in 0..=100000"),
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
}
