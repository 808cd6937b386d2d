//! A loaded policy version: compiled, validated and pre-instantiated.
//!
//! Loading does everything that can fail ahead of traffic: read, digest,
//! compile (through the cache), link against the contract, ask the policy
//! for its metadata, let it validate its settings, and score a synthetic
//! request. A [`Policy`] that exists is one that has served a request.
//!
//! A call ([`Policy::call`]) creates a fresh store and instance from the
//! pre-instantiated template, runs under the policy's [`Limits`], and drops
//! everything afterwards: no state leaks from one request into the next, and
//! no lock is held while guest code runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;

use crate::bindings::{ScoringPolicyPre, WitDecisions, WitMetadata, WitPolicyError, WitRequest};
use crate::error::{CallError, LoadError};
use crate::limits::Limits;
use crate::runtime::Runtime;
use crate::sandbox::CallState;

/// What a policy says about itself, plus what the host knows of its module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyInfo {
    /// Policy name from its metadata.
    pub name: String,
    /// Semantic version from its metadata.
    pub version: String,
    /// Description for operators.
    pub description: String,
    /// Candidate features the host must send.
    pub required_features: Vec<String>,
    /// Candidate features sent when the request has them.
    pub optional_features: Vec<String>,
    /// Context features the policy reads.
    pub context_features: Vec<String>,
    /// Settings the policy accepts.
    pub settings: Vec<SettingInfo>,
    /// Guest SDK version the policy was built with.
    pub sdk_version: String,
    /// `sha256:<hex>` of the component bytes: the version's identity.
    pub digest: String,
    /// Component size in bytes.
    pub size_bytes: usize,
}

/// A setting a policy accepts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SettingInfo {
    /// Setting name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Default value, JSON.
    pub default_json: String,
}

/// Resources one call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Wall time of instantiate + call, microseconds.
    pub wall_us: u64,
    /// High-water mark of the instance's linear memory, bytes.
    pub peak_memory_bytes: usize,
    /// Fuel consumed (about one unit per wasm instruction), when measured.
    pub fuel: Option<u64>,
}

/// The result of a successful call: output that passed validation.
#[derive(Debug)]
pub struct CallOutcome {
    /// The decisions, one entry per candidate in each column.
    pub decisions: WitDecisions,
    /// Resources used.
    pub usage: Usage,
}

/// A loaded, validated policy version. Cheap to share behind an `Arc`; calls
/// from many threads at once are fine.
pub struct Policy {
    info: PolicyInfo,
    settings_json: String,
    limits: Limits,
    name: Arc<str>,
    pre: ScoringPolicyPre<CallState>,
    runtime: Runtime,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("info", &self.info)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Magic and version of a WebAssembly component binary (layer 1).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// Magic and version of a core WebAssembly module.
const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

impl Policy {
    /// Reads a component from `path` and [loads](Policy::load) it.
    ///
    /// # Errors
    /// [`LoadError::Io`] if the file cannot be read, else as [`Policy::load`].
    pub fn load_file(
        runtime: &Runtime,
        path: &Path,
        settings_json: &str,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let wasm = std::fs::read(path).map_err(|error| LoadError::Io {
            path: path.display().to_string(),
            error,
        })?;
        Self::load(runtime, &wasm, settings_json, limits)
    }

    /// Compiles, links and validates a policy component.
    ///
    /// # Errors
    /// Each way a module can be unusable has its own [`LoadError`] variant:
    /// not a component, does not compile, wrong world, bad metadata, refused
    /// settings, or a failed smoke call.
    ///
    /// # Examples
    /// ```no_run
    /// # fn main() -> anyhow::Result<()> {
    /// let runtime = oasis::Runtime::new(Default::default())?;
    /// let wasm = std::fs::read("baseline.wasm")?;
    /// let policy = oasis::Policy::load(&runtime, &wasm, "{}", Default::default())?;
    /// println!("{} {} {}", policy.info().name, policy.info().version, policy.info().digest);
    /// # Ok(()) }
    /// ```
    pub fn load(
        runtime: &Runtime,
        wasm: &[u8],
        settings_json: &str,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        limits.validate().map_err(LoadError::BadLimits)?;
        match wasm.get(..8) {
            Some(h) if h == COMPONENT_HEADER => {}
            Some(h) if h == MODULE_HEADER => {
                return Err(LoadError::NotAComponent(
                    "this is a core WebAssembly module; build the policy with \
                     `--target wasm32-wasip2` so that it is a component"
                        .into(),
                ));
            }
            _ => {
                return Err(LoadError::NotAComponent(format!(
                    "the file does not start with the WebAssembly magic bytes ({} bytes long)",
                    wasm.len()
                )));
            }
        }
        let digest = crate::cache::sha256_hex(wasm);
        let component =
            crate::cache::compile(runtime.engine(), wasm, &digest, runtime.cache_dir())?;
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre = ScoringPolicyPre::new(instance_pre)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;

        let mut policy = Policy {
            info: PolicyInfo {
                name: "(loading)".into(),
                version: String::new(),
                description: String::new(),
                required_features: Vec::new(),
                optional_features: Vec::new(),
                context_features: Vec::new(),
                settings: Vec::new(),
                sdk_version: String::new(),
                digest: format!("sha256:{digest}"),
                size_bytes: wasm.len(),
            },
            settings_json: settings_json.to_string(),
            limits,
            name: Arc::from("(loading)"),
            pre,
            runtime: runtime.clone(),
        };

        let meta = policy
            .with_instance(0, 0, |p, store| p.call_describe(store))
            .map_err(|error| LoadError::Validation {
                stage: "describe",
                error,
            })?;
        policy.set_metadata(meta)?;

        policy
            .with_instance(0, 0, |p, store| {
                p.call_validate_settings(store, &p.settings_json)
            })
            .map_err(|error| LoadError::Validation {
                stage: "validate-settings",
                error,
            })?
            .map_err(|m| LoadError::BadSettings(bounded(m)))?;

        let smoke = crate::columnar::smoke_request(&policy.info);
        policy.call(&smoke).map_err(|error| LoadError::Validation {
            stage: "score (smoke test)",
            error,
        })?;
        Ok(policy)
    }

    fn set_metadata(&mut self, m: WitMetadata) -> Result<(), LoadError> {
        validate_metadata(&m).map_err(LoadError::BadMetadata)?;
        self.name = Arc::from(m.name.as_str());
        self.info = PolicyInfo {
            name: m.name,
            version: m.version,
            description: m.description,
            required_features: m.required_features,
            optional_features: m.optional_features,
            context_features: m.context_features,
            settings: m
                .settings
                .into_iter()
                .map(|s| SettingInfo {
                    name: s.name,
                    description: s.description,
                    default_json: s.default_json,
                })
                .collect(),
            sdk_version: m.sdk_version,
            digest: std::mem::take(&mut self.info.digest),
            size_bytes: self.info.size_bytes,
        };
        Ok(())
    }

    /// Name, version, features, settings and digest.
    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    /// The policy's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The settings it was loaded with (JSON).
    pub fn settings_json(&self) -> &str {
        &self.settings_json
    }

    /// Scores one columnar request on a fresh instance, then validates the
    /// output against the contract.
    ///
    /// # Errors
    /// A [`CallError`] saying whether the policy timed out, hit its memory
    /// limit, trapped (with its panic message), returned its own error or
    /// returned invalid output. The policy stays usable afterwards.
    pub fn call(&self, request: &WitRequest) -> Result<CallOutcome, CallError> {
        let started = Instant::now();
        let ctx = &request.context;
        let (decisions, peak, fuel) =
            self.with_instance(ctx.timestamp_ms, ctx.seed, |p, store| {
                let out = p.call_score(store, request)?;
                let limiter = &store.data().limiter;
                let fuel = store.get_fuel().ok().map(|left| FUEL_BUDGET - left);
                Ok((out, limiter.peak, fuel))
            })?;
        crate::output::validate(&decisions, &request.candidates)?;
        Ok(CallOutcome {
            decisions,
            usage: Usage {
                wall_us: started.elapsed().as_micros() as u64,
                peak_memory_bytes: peak,
                fuel: fuel.filter(|_| self.runtime.measures_fuel()),
            },
        })
    }

    /// Runs `f` on a fresh instance in a fresh store, classifying failures.
    fn with_instance<R>(
        &self,
        timestamp_ms: i64,
        seed: u64,
        f: impl FnOnce(&Self, &mut Store<CallState>) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let state = CallState::new(
            self.name.clone(),
            self.limits.memory_bytes,
            timestamp_ms,
            seed,
        );
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(Runtime::deadline_ticks(self.limits.deadline));
        if self.runtime.measures_fuel() {
            store
                .set_fuel(FUEL_BUDGET)
                .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        }
        let result = f(self, &mut store);
        let stderr = store.data().drain_stdio();
        result.map_err(|e| match e {
            CallError::Trap { message } => self.classify(&store, message, &stderr),
            other => other,
        })
    }

    /// Turns a raw trap into the most precise error: memory limit if the
    /// limiter refused a growth, timeout on epoch interruption, else a trap
    /// carrying the policy's panic message when it printed one.
    fn classify(&self, store: &Store<CallState>, raw: String, stderr: &str) -> CallError {
        if let Some(requested) = store.data().limiter.refused {
            return CallError::MemoryLimit {
                limit_bytes: self.limits.memory_bytes,
                requested_bytes: requested,
            };
        }
        if raw.starts_with(INTERRUPT_MARKER) {
            return CallError::Timeout {
                deadline: self.limits.deadline,
            };
        }
        let message = match panic_message(stderr) {
            Some(panic) => bounded(format!("{panic} ({raw})")),
            None => bounded(raw),
        };
        CallError::Trap { message }
    }

    fn call_describe(&self, store: &mut Store<CallState>) -> Result<WitMetadata, CallError> {
        let instance = self.instantiate(store)?;
        instance
            .oasis_policy_policy()
            .call_describe(&mut *store)
            .map_err(trap)
    }

    fn call_validate_settings(
        &self,
        store: &mut Store<CallState>,
        settings: &str,
    ) -> Result<Result<(), String>, CallError> {
        let instance = self.instantiate(store)?;
        let r = instance
            .oasis_policy_policy()
            .call_validate_settings(&mut *store, settings)
            .map_err(trap)?;
        Ok(r.map_err(|e| policy_error_text(&e)))
    }

    fn call_score(
        &self,
        store: &mut Store<CallState>,
        request: &WitRequest,
    ) -> Result<WitDecisions, CallError> {
        let instance = self.instantiate(store)?;
        instance
            .oasis_policy_policy()
            .call_score(&mut *store, &self.settings_json, request)
            .map_err(trap)?
            .map_err(|e| CallError::Policy(policy_error_text(&e)))
    }

    fn instantiate(
        &self,
        store: &mut Store<CallState>,
    ) -> Result<crate::bindings::ScoringPolicy, CallError> {
        self.pre.instantiate(&mut *store).map_err(|e| {
            if e.downcast_ref::<wasmtime::Trap>().is_some()
                || store.data().limiter.refused.is_some()
            {
                trap(e)
            } else {
                CallError::Instantiate(format!("{e:#}"))
            }
        })
    }
}

/// Fuel given to a measured call; effectively unbounded (the deadline bounds CPU).
const FUEL_BUDGET: u64 = u64::MAX / 2;

/// Prefix of the message of an epoch interruption.
const INTERRUPT_MARKER: &str = "interrupt";

/// Wraps a wasmtime error as a raw trap for [`Policy::classify`].
fn trap(e: wasmtime::Error) -> CallError {
    let message = match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => INTERRUPT_MARKER.to_string(),
        Some(wasmtime::Trap::StackOverflow) => format!(
            "stack overflow: the call stack exceeded the {} KiB wasm stack limit (unbounded recursion?)",
            crate::runtime::MAX_WASM_STACK >> 10
        ),
        Some(t) => t.to_string(),
        None => format!("{e:#}"),
    };
    CallError::Trap { message }
}

/// Longest text taken from a guest (error messages) into responses and logs.
pub const MAX_GUEST_TEXT: usize = 1024;

/// Truncates guest-provided text to [`MAX_GUEST_TEXT`] bytes on a char boundary.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_GUEST_TEXT {
        let mut cut = MAX_GUEST_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Most features (required + optional, or context) a policy may declare.
pub const MAX_DECLARED_FEATURES: usize = 256;

/// Checks what a policy says about itself before the host relies on it: the
/// host sizes per-request buffers by the declared features, so they are
/// bounded like everything else that comes from a guest.
///
/// # Errors
/// A message naming the offending field.
pub fn validate_metadata(m: &WitMetadata) -> Result<(), String> {
    let key_like = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    };
    if !key_like(&m.name) || m.name.contains('.') {
        return Err(format!(
            "name {:?} must be 1-64 characters of [A-Za-z0-9_-]",
            bounded(m.name.clone())
        ));
    }
    semver::Version::parse(&m.version).map_err(|e| {
        format!(
            "version {:?} is not semver: {e}",
            bounded(m.version.clone())
        )
    })?;
    let features = m.required_features.len() + m.optional_features.len();
    if features > MAX_DECLARED_FEATURES || m.context_features.len() > MAX_DECLARED_FEATURES {
        return Err(format!(
            "declares {features} candidate and {} context features; at most {MAX_DECLARED_FEATURES} each",
            m.context_features.len()
        ));
    }
    for f in m
        .required_features
        .iter()
        .chain(&m.optional_features)
        .chain(&m.context_features)
    {
        if !key_like(f) {
            return Err(format!(
                "feature name {:?} must be 1-64 characters of [A-Za-z0-9._-]",
                bounded(f.clone())
            ));
        }
    }
    if m.description.len() > 4096 || m.settings.len() > 256 {
        return Err("description over 4 KiB or more than 256 settings".into());
    }
    if m.settings
        .iter()
        .any(|s| s.name.len() > 64 || s.description.len() > 1024 || s.default_json.len() > 4096)
    {
        return Err("a setting's name, description or default is too long".into());
    }
    Ok(())
}

fn policy_error_text(e: &WitPolicyError) -> String {
    bounded(match e {
        WitPolicyError::InvalidSettings(m) => format!("invalid settings: {m}"),
        WitPolicyError::InvalidRequest(m) => format!("invalid request: {m}"),
        WitPolicyError::Internal(m) => format!("internal error: {m}"),
    })
}

/// Extracts "message (at file:line:col)" from Rust's panic output.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.find("panicked at ")? + "panicked at ".len();
    let rest = &stderr[start..];
    let (location, body) = rest.split_once(":\n")?;
    let message: Vec<&str> = body
        .lines()
        .take_while(|l| !l.starts_with("note: "))
        .collect();
    Some(format!(
        "panicked: {} (at {location})",
        message.join("\n").trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn panic_message_is_extracted_with_location() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:12:9:\nboom: 3 > 2\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).unwrap(),
            "panicked: boom: 3 > 2 (at src/lib.rs:12:9)"
        );
        assert_eq!(panic_message("some other output"), None);
    }

    fn meta() -> WitMetadata {
        WitMetadata {
            name: "p".into(),
            version: "1.0.0".into(),
            description: String::new(),
            required_features: vec!["p_skip".into()],
            optional_features: Vec::new(),
            context_features: Vec::new(),
            settings: Vec::new(),
            sdk_version: "0.1.0".into(),
        }
    }

    #[test]
    fn metadata_is_bounded_before_the_host_relies_on_it() {
        validate_metadata(&meta()).unwrap();
        let mut m = meta();
        m.required_features = (0..300).map(|i| format!("f{i}")).collect();
        assert!(validate_metadata(&m).unwrap_err().contains("at most 256"));
        let mut m = meta();
        m.optional_features = vec!["x".repeat(65)];
        assert!(validate_metadata(&m).unwrap_err().contains("feature name"));
        let mut m = meta();
        m.version = "v1".into();
        assert!(validate_metadata(&m).unwrap_err().contains("not semver"));
        let mut m = meta();
        m.name = "has space".into();
        assert!(validate_metadata(&m).unwrap_err().contains("name"));
    }

    #[test]
    fn guest_text_is_truncated_on_a_char_boundary() {
        assert_eq!(bounded("short".into()), "short");
        let long = "é".repeat(1000);
        let b = bounded(long);
        assert!(b.len() <= MAX_GUEST_TEXT + '…'.len_utf8() && b.ends_with('…'));
    }

    #[test]
    fn deadline_ticks_round_up_and_add_one() {
        assert_eq!(Runtime::deadline_ticks(Duration::from_millis(20)), 21);
        assert_eq!(Runtime::deadline_ticks(Duration::from_micros(1500)), 3);
    }
}
