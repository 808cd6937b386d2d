//! A loaded policy version: compiled, validated and pre-instantiated.
//!
//! Loading goes through one type per stage, and each stage only exists once
//! the previous one succeeded:
//!
//! ```text
//! bytes ─► Template (compiled, linked; can describe itself and check settings)
//!       ─► Policy   (metadata checked, identity and columns fixed, smoke call passed)
//! ```
//!
//! Loading does everything that can fail ahead of traffic: read, digest,
//! compile (through the cache), link against the contract, ask the policy
//! for its metadata, let it validate its settings, and score a synthetic
//! request. A [`Policy`] that exists is one that has served a request.
//!
//! Scoring ([`Policy::score`]) builds the columnar batch the policy declared
//! ([`Policy::batch`]) and calls it ([`Policy::call`]) under the policy's
//! [`Limits`], on an instance in the state a fresh instantiation leaves: an
//! idle one put back to that state after its last call, or a fresh store
//! and instance from the pre-instantiated template (recorded with
//! `Store::oasis_snapshot` for its resets). After a successful call the
//! instance is reset (`Store::oasis_reset`, the vendored wasmtime patch:
//! memories, tables, globals, component state) and kept idle; after a
//! failure, or when the reset refuses, it is dropped. Why: a new instance
//! and its drop were ~40 µs of a request's ~350 µs of server CPU under load,
//! the reset ~10 (docs/performance.md). With
//! [`RuntimeConfig::reset_instances`](crate::RuntimeConfig::reset_instances)
//! off every call gets a fresh instance, dropped afterwards. Either way no
//! state leaks from one request into the next, and no lock is held while
//! guest code runs.
//!
//! Opt-in, per policy: [`Limits::reuse_instance_calls`] > 1 keeps up to
//! [`Limits::MAX_IDLE_INSTANCES`] instances (store + instance) of the
//! version and runs up to that many calls on each. A call takes an
//! instance out of the pool (or makes one), runs with its own deadline,
//! fuel, clock, seed and log counters, and puts it back only if it
//! succeeded and has calls left: any failure discards it. This is weaker
//! isolation (what a policy keeps in its globals reaches its later calls);
//! loading warns when it is on.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, ComponentNamedList, Lift, Lower, TypedFunc};

use crate::bindings::{
    CONTRACT_VERSION, ScoringPolicy, ScoringPolicyIndices, ScoringPolicyPre, WitCampaign,
    WitCandidates, WitContext, WitDecisions, WitHolders, WitPolicyError, WitRequest, WitSurface,
    WitSurfaceSet, v0_1, v0_3,
};
use crate::error::{CallError, DeadlineClock, LoadError};
use crate::limits::Limits;
use crate::metadata::{Metadata, PolicyInfo, PolicyRef};
use crate::request::{ValidRequest, market_code};
use crate::runtime::Runtime;
use crate::sandbox::{CallState, bounded};

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

/// A compiled component linked against the contract, not yet described:
/// the stage between bytes and a [`Policy`]. It can run any export on a
/// fresh instance, which is how loading asks for the metadata and the
/// settings check.
struct Template {
    pre: Pre,
    runtime: Runtime,
    limits: Limits,
    /// Idle instances for reuse ([`Limits::reuse_instance_calls`] > 1),
    /// at most [`Limits::MAX_IDLE_INSTANCES`]. Locked only to take or put
    /// one, never while guest code runs.
    idle: Mutex<Vec<Warm>>,
    /// False once a snapshot of an instance failed (the component holds
    /// state a reset cannot put back): then every call gets a fresh one.
    resettable: std::sync::atomic::AtomicBool,
    /// The `score` export, once [`check_contract`](Self::check_contract)
    /// has checked every export's type on an instance. Scoring calls then
    /// look the function up by this index and call it without checking its
    /// type again: the generated bindings check the types of all exports on
    /// every instance (a walk of the request's record type, field names
    /// compared), and the types are those of the component, the same on
    /// every instance of it.
    score: Option<ComponentExportIndex>,
}

/// An instance with its store, and the calls it has served.
struct Warm<I = Instance> {
    store: Store<CallState>,
    instance: I,
    calls: u32,
    /// The store's state right after instantiation and the memory size it
    /// had then, when the instance is put back to it after each call (see
    /// [`Template::reset_back`]).
    reset: Option<(wasmtime::OasisStoreSnapshot, usize)>,
}

/// A component pre-instantiated against the contract version it was built
/// for (see [`crate::bindings::v0_1`] and [`crate::bindings::v0_3`]).
enum Pre {
    /// The current contract ([`CONTRACT_VERSION`]).
    Current(ScoringPolicyPre<CallState>),
    /// The frozen 0.1.0 contract.
    V0_1(v0_1::ScoringPolicyPre<CallState>),
    /// The 0.3.0 contract (columns as byte buffers).
    V0_3(v0_3::ScoringPolicyPre<CallState>),
}

impl Pre {
    /// The component pre-instantiated, whatever the version.
    fn instance_pre(&self) -> &wasmtime::component::InstancePre<CallState> {
        match self {
            Pre::Current(p) => p.instance_pre(),
            Pre::V0_1(p) => p.instance_pre(),
            Pre::V0_3(p) => p.instance_pre(),
        }
    }
}

/// Calls `func` with `params`, as the bindings call an export.
///
/// # Safety
/// `func`'s type must be `Params -> R` (checked by the caller some other
/// way: [`TypedFunc::new_unchecked`]).
unsafe fn call_unchecked<Params, R>(
    func: wasmtime::component::Func,
    store: &mut Store<CallState>,
    params: Params,
) -> wasmtime::Result<R>
where
    Params: ComponentNamedList + Lower,
    (R,): ComponentNamedList + Lift,
{
    // SAFETY: the caller's.
    let typed = unsafe { TypedFunc::<Params, (R,)>::new_unchecked(func) };
    let (out,) = typed.call(&mut *store, params)?;
    Ok(out)
}

/// A fresh instance of a [`Pre`] seen through its bindings, which check
/// the exports' types when they make it (loading: the metadata and the
/// settings check).
enum Typed {
    Current(ScoringPolicy),
    V0_1(v0_1::ScoringPolicy),
    V0_3(v0_3::ScoringPolicy),
}

/// An instance a request is scored on: the component instance itself, its
/// `score` export called by index (see [`Template::score`]).
type Instance = wasmtime::component::Instance;

/// The columnar request one policy receives ([`Policy::batch`]), in the
/// contract version it was built against.
#[derive(Debug)]
pub struct Batch(BatchKind);

#[derive(Debug)]
enum BatchKind {
    Current(WitRequest),
    V0_1(v0_1::oasis::policy::types::Request),
    /// 0.3.0 carries the campaign column as bytes; the output check reads
    /// it as numbers.
    V0_3(v0_3::oasis::policy::types::Request, Vec<i32>),
}

impl Batch {
    /// The request's time and seed, and the candidates' count and campaign
    /// column: what the call and the output check need whatever the version.
    fn parts(&self) -> (i64, u64, usize, &[i32], usize) {
        match &self.0 {
            BatchKind::Current(r) => (
                r.context.timestamp_ms,
                r.context.seed,
                r.candidates.count as usize,
                &r.candidates.campaign,
                r.campaigns.len(),
            ),
            BatchKind::V0_1(r) => (
                r.context.timestamp_ms,
                r.context.seed,
                r.candidates.count as usize,
                &r.candidates.campaign,
                r.campaigns.len(),
            ),
            BatchKind::V0_3(r, campaign) => (
                r.context.timestamp_ms,
                r.context.seed,
                r.candidates.count as usize,
                campaign,
                r.campaigns.len(),
            ),
        }
    }

    /// The request in the current contract's form, when the policy was
    /// built against it (tools that show what a policy received).
    pub fn current(&self) -> Option<&WitRequest> {
        match &self.0 {
            BatchKind::Current(r) => Some(r),
            BatchKind::V0_1(_) | BatchKind::V0_3(..) => None,
        }
    }
}

/// A loaded, validated policy version. Cheap to share behind an `Arc`; calls
/// from many threads at once are fine.
pub struct Policy {
    template: Template,
    info: PolicyInfo,
    identity: Arc<PolicyRef>,
    columns: Vec<String>,
    settings_json: String,
    settings_sha256: Arc<str>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("info", &self.info)
            .field("limits", &self.template.limits)
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

    /// What a component says about itself: it is compiled (through the
    /// cache) and linked, and its metadata is asked for and checked, but its
    /// settings are not validated and no request is scored. For tools that
    /// show a policy even when it does not load (`oasis inspect`).
    ///
    /// # Errors
    /// As the first stages of [`Policy::load`].
    pub fn describe(
        runtime: &Runtime,
        wasm: &[u8],
        limits: Limits,
    ) -> Result<PolicyInfo, LoadError> {
        Ok(Self::described(runtime, wasm, limits)?.1)
    }

    /// The stages up to the metadata: the template, the checked metadata and
    /// the label of its log lines until it has named itself (its digest).
    fn described(
        runtime: &Runtime,
        wasm: &[u8],
        limits: Limits,
    ) -> Result<(Template, PolicyInfo, Arc<str>), LoadError> {
        limits.validate().map_err(LoadError::BadLimits)?;
        if wasm.len() > limits.module_bytes {
            return Err(LoadError::TooLarge {
                size: wasm.len(),
                limit: limits.module_bytes,
            });
        }
        check_header(wasm)?;
        let digest = crate::cache::digest(wasm);
        let mut template = Template::compile(runtime, wasm, &digest, limits)?;
        // Until the policy has named itself, its log lines carry its digest.
        let loading: Arc<str> = Arc::from(digest.as_str());
        template.check_contract(&loading)?;
        let metadata = template
            .describe(&loading)
            .map_err(|error| LoadError::Validation {
                stage: "describe",
                error,
            })?;
        let info = PolicyInfo::new(metadata, digest, wasm.len(), template.contract())
            .map_err(LoadError::BadMetadata)?;
        Ok((template, info, loading))
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
    /// let id = policy.identity();
    /// println!("{} {} {}", id.name, id.version, id.digest);
    /// # Ok(()) }
    /// ```
    pub fn load(
        runtime: &Runtime,
        wasm: &[u8],
        settings_json: &str,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let (template, info, loading) = Self::described(runtime, wasm, limits)?;
        template
            .validate_settings(&loading, settings_json)
            .map_err(|error| LoadError::Validation {
                stage: "validate-settings",
                error,
            })?
            .map_err(LoadError::BadSettings)?;

        let settings_sha256: Arc<str> =
            Arc::from(crate::cache::sha256_hex(settings_json.as_bytes()));
        let policy = Policy {
            template,
            identity: Arc::new(PolicyRef {
                settings_sha256: Some(settings_sha256.clone()),
                ..info.identity()
            }),
            columns: info.feature_columns(),
            info,
            settings_json: settings_json.to_string(),
            settings_sha256,
        };
        if limits.reuses_instances() {
            tracing::warn!(
                policy = %policy.identity.name,
                version = %policy.identity.version,
                reuse_instance_calls = limits.reuse_instance_calls,
                idle_instances = Limits::MAX_IDLE_INSTANCES,
                "instance reuse is on: up to reuse_instance_calls requests run on one instance, \
                 so state the policy keeps in its globals can reach later requests \
                 (weaker isolation); an instance is discarded after any failed call"
            );
        }
        policy
            .call(&policy.versioned(policy.smoke_request()))
            .map_err(|error| LoadError::Validation {
                stage: "score (smoke test)",
                error,
            })?;
        Ok(policy)
    }

    /// Name, version, features, settings and digest.
    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    /// The version's identity, shared with every response it decides.
    pub fn identity(&self) -> &Arc<PolicyRef> {
        &self.identity
    }

    /// The candidate feature columns the policy receives (required, then
    /// optional features), fixed at load.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The policy's limits.
    pub fn limits(&self) -> &Limits {
        &self.template.limits
    }

    /// The settings it was loaded with (JSON).
    pub fn settings_json(&self) -> &str {
        &self.settings_json
    }

    /// The settings in effect: every documented setting's default (from
    /// its metadata), overridden by the settings it was loaded with.
    pub fn effective_settings(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for s in &self.info.settings {
            if let Ok(v) = serde_json::from_str(&s.default_json) {
                out.insert(s.name.clone(), v);
            }
        }
        if let Ok(serde_json::Value::Object(given)) = serde_json::from_str(&self.settings_json) {
            out.extend(given);
        }
        serde_json::Value::Object(out)
    }

    /// SHA-256 (hex) of [`Policy::settings_json`]: with the digest, what
    /// identifies the behaviour of a loaded version.
    pub fn settings_sha256(&self) -> &Arc<str> {
        &self.settings_sha256
    }

    /// The columnar request this policy receives for `req`: only the columns
    /// it declared, in the contract version it was built against.
    pub fn batch(&self, req: &ValidRequest<'_>) -> Batch {
        self.versioned(crate::columnar::batch(
            req,
            &self.columns,
            &self.info.context_features,
        ))
    }

    /// `request` in the policy's contract version (a move, no copy of the
    /// columns, for 0.1.0; one copy of each numeric column, as bytes, for
    /// 0.3.0).
    fn versioned(&self, request: WitRequest) -> Batch {
        Batch(match self.template.pre {
            Pre::Current(_) => BatchKind::Current(request),
            Pre::V0_1(_) => BatchKind::V0_1(v0_1::request(request)),
            Pre::V0_3(_) => {
                let (request, campaign) = v0_3::request(request);
                BatchKind::V0_3(request, campaign)
            }
        })
    }

    /// Scores a validated request: [`Policy::batch`], then [`Policy::call`].
    ///
    /// # Errors
    /// As [`Policy::call`].
    ///
    /// # Examples
    /// ```no_run
    /// # fn main() -> anyhow::Result<()> {
    /// use oasis::request::Validate;
    /// let runtime = oasis::Runtime::new(Default::default())?;
    /// let policy = oasis::Policy::load_file(&runtime, "baseline.wasm".as_ref(), "{}", Default::default())?;
    /// let body = std::fs::read("examples/request.json")?;
    /// let req = oasis::request::parse(&body)?.validate(policy.limits().max_candidates)?;
    /// let outcome = policy.score(&req)?;
    /// println!("{:?}", outcome.decisions.scores);
    /// # Ok(()) }
    /// ```
    pub fn score(&self, req: &ValidRequest<'_>) -> Result<CallOutcome, CallError> {
        self.call(&self.batch(req))
    }

    /// Scores one columnar request on a fresh instance, then validates the
    /// output against the contract.
    ///
    /// # Errors
    /// A [`CallError`] saying whether the policy timed out, hit its memory
    /// limit, trapped (with its panic message), returned its own error or
    /// returned invalid output. The policy stays usable afterwards.
    pub fn call(&self, batch: &Batch) -> Result<CallOutcome, CallError> {
        let started = Instant::now();
        let (timestamp_ms, seed, count, campaign, campaigns) = batch.parts();
        let template = &self.template;
        let label = &self.identity.name;
        let reuse = template.limits.reuses_instances();
        let reset = template.resets();
        let mut warm = if reuse {
            template.take(label, timestamp_ms, seed)?
        } else if reset {
            template.take_reset(label, timestamp_ms, seed)?
        } else {
            template.fresh(label, timestamp_ms, seed)?
        };
        // What the host copies out of the guest is bounded by this request.
        warm.store
            .set_hostcall_fuel(template.limits.transfer_bytes_for(count));
        let ran = template.run(&mut warm, |instance, store| {
            let settings = &self.settings_json;
            let out = template.call_checked_score(instance, store, settings, &batch.0, count)?;
            // Only asked when the engine meters fuel: otherwise `get_fuel`
            // builds an error, which captures a backtrace when
            // RUST_BACKTRACE is set (23% of a call's time, measured).
            let fuel = if template.runtime.measures_fuel() {
                let budget = template.fuel_budget();
                store.get_fuel().ok().map(|left| budget - left)
            } else {
                None
            };
            Ok((out, store.data().limiter.peak, fuel))
        });
        let checked = ran.and_then(|(decisions, peak, fuel)| {
            let decisions = decisions?;
            crate::output::validate(&decisions, count, campaign, campaigns)?;
            Ok((decisions, peak, fuel))
        });
        // Only an instance whose call succeeded goes back: after any failure
        // (a trap leaves a component instance unusable; a policy error or an
        // invalid output may come from a corrupted state) it is dropped.
        if reuse && checked.is_ok() {
            template.put_back(warm);
        } else if reset && checked.is_ok() {
            template.reset_back(warm);
        }
        let (decisions, peak, fuel) = checked?;
        Ok(CallOutcome {
            decisions,
            usage: Usage {
                wall_us: started.elapsed().as_micros() as u64,
                peak_memory_bytes: peak,
                fuel: fuel.filter(|_| template.runtime.measures_fuel()),
            },
        })
    }

    /// Instances of this version idle for reuse (0 unless
    /// [`Limits::reuse_instance_calls`] > 1).
    pub fn idle_instances(&self) -> usize {
        self.template.idle().len()
    }

    /// A small synthetic request to smoke-test the policy at load: 8
    /// candidates with every declared feature set to plausible values, two of
    /// them in an active, on-schedule campaign.
    fn smoke_request(&self) -> WitRequest {
        const NOW: i64 = 1_781_524_800_000;
        let n = 8usize;
        let features = (0..n)
            .flat_map(|i| self.columns.iter().map(move |_| 0.1 + 0.1 * i as f64))
            .collect();
        let context = &self.info.context_features;
        WitRequest {
            context: WitContext {
                request_id: "oasis-smoke-test".into(),
                listener_id: "smoke-listener".into(),
                session_id: "smoke-session".into(),
                surface: WitSurface::Radio,
                market: market_code("SE").unwrap_or(0),
                timestamp_ms: NOW,
                seed: 1,
                feature_names: context.clone(),
                features: vec![0.5; context.len()],
                slate_size: 5,
            },
            candidates: WitCandidates {
                count: n as u32,
                relevance: (0..n).map(|i| 1.0 - 0.1 * i as f64).collect(),
                feature_names: self.columns.clone(),
                features,
                campaign: (0..n as i32)
                    .map(|i| if i % 4 == 1 { 0 } else { -1 })
                    .collect(),
                artist: (0..n as u32).collect(),
                rights_holder: (0..n as u32).map(|i| i % 3).collect(),
                impressions_24h: vec![0; n],
                session_promoted: vec![0; n],
            },
            campaigns: vec![WitCampaign {
                key: 0,
                start_ms: NOW - 86_400_000,
                end_ms: NOW + 86_400_000,
                surfaces: WitSurfaceSet::all(),
                markets: Vec::new(),
                delivery_target: 1000.0,
                delivered: 500.0,
                expected_by_now: 500.0,
                pacing_integral: 0.0,
                pacing_last_error: 0.0,
                pacing_updated_ms: NOW - 60_000,
                commission_bps: 3000,
            }],
            holders: WitHolders {
                count: 3,
                exposure_share_7d: vec![0.5, 0.3, 0.2],
            },
        }
    }
}

impl Drop for Template {
    /// Gives the idle instances' pool slots back to the runtime's idle
    /// budget (the instances themselves are dropped with the pool).
    fn drop(&mut self) {
        let idle = self
            .idle
            .get_mut()
            .map_or_else(|p| p.into_inner().len(), |v| v.len());
        self.runtime.release_idle(idle);
    }
}

impl Template {
    /// Compiles (through the cache) and links `wasm` against the contract.
    fn compile(
        runtime: &Runtime,
        wasm: &[u8],
        digest: &str,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let hex = digest.trim_start_matches("sha256:");
        let ceilings = runtime.compile_limits();
        let ComponentScan { functions, python } = scan(wasm).map_err(LoadError::Compile)?;
        let limits = limits.for_language(python);
        if functions > ceilings.max_functions {
            return Err(LoadError::TooManyFunctions {
                functions,
                limit: ceilings.max_functions,
            });
        }
        let component = compile_within(runtime, wasm, hex, ceilings.timeout)?;
        // The policy export's name carries the contract version it was built
        // against; anything but 0.1.0 and 0.3.0 is linked against the current
        // one (and refused with its exports listed when it does not match).
        let exports = |export: &str| {
            component
                .component_type()
                .exports(runtime.engine())
                .any(|(name, _)| name == export)
        };
        let (v0_1, v0_3) = (exports(v0_1::POLICY_EXPORT), exports(v0_3::POLICY_EXPORT));
        let version = if v0_1 {
            v0_1::VERSION
        } else if v0_3 {
            v0_3::VERSION
        } else {
            CONTRACT_VERSION
        };
        let wrong = |e: wasmtime::Error| wrong_contract(&component, runtime.engine(), version, &e);
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(wrong)?;
        let pre = if v0_1 {
            Pre::V0_1(v0_1::ScoringPolicyPre::new(instance_pre).map_err(wrong)?)
        } else if v0_3 {
            Pre::V0_3(v0_3::ScoringPolicyPre::new(instance_pre).map_err(wrong)?)
        } else {
            Pre::Current(ScoringPolicyPre::new(instance_pre).map_err(wrong)?)
        };
        Ok(Template {
            pre,
            runtime: runtime.clone(),
            limits,
            idle: Mutex::new(Vec::new()),
            resettable: std::sync::atomic::AtomicBool::new(true),
            score: None,
        })
    }

    /// The contract version the component was built against.
    fn contract(&self) -> &'static str {
        match self.pre {
            Pre::Current(_) => CONTRACT_VERSION,
            Pre::V0_1(_) => v0_1::VERSION,
            Pre::V0_3(_) => v0_3::VERSION,
        }
    }

    /// The policy's `describe` answer.
    fn describe(&self, label: &Arc<str>) -> Result<Metadata, CallError> {
        self.with_instance(label, 0, 0, |instance, store| match instance {
            Typed::Current(i) => i
                .oasis_policy_policy()
                .call_describe(&mut *store)
                .map(crate::bindings::metadata),
            Typed::V0_1(i) => i
                .oasis_policy_policy()
                .call_describe(&mut *store)
                .map(v0_1::metadata),
            Typed::V0_3(i) => i
                .oasis_policy_policy()
                .call_describe(&mut *store)
                .map(v0_3::metadata),
        })
    }

    /// The policy's verdict on `settings_json`: `Ok(Err(text))` when it
    /// refuses them.
    fn validate_settings(
        &self,
        label: &Arc<str>,
        settings_json: &str,
    ) -> Result<Result<(), String>, CallError> {
        let verdict = self.with_instance(label, 0, 0, |instance, store| match instance {
            Typed::Current(i) => i
                .oasis_policy_policy()
                .call_validate_settings(&mut *store, settings_json),
            Typed::V0_1(i) => i
                .oasis_policy_policy()
                .call_validate_settings(&mut *store, settings_json)
                .map(|r| r.map_err(v0_1::policy_error)),
            Typed::V0_3(i) => i
                .oasis_policy_policy()
                .call_validate_settings(&mut *store, settings_json)
                .map(|r| r.map_err(v0_3::policy_error)),
        })?;
        Ok(verdict.map_err(|e| policy_error_text(&e)))
    }

    /// Checks the contract's exports *with their types* on one instance.
    /// Linking (`compile`) checks names only; wasmtime checks a function's
    /// type when it is looked up on an instance, which without this check
    /// happened in the first call and read as a transient instantiation
    /// failure. A mismatch is [`LoadError::WrongContract`]; an instance that
    /// cannot be created is the `instantiate` validation stage.
    /// Once they pass, [`score`](Self::score) is set.
    fn check_contract(&mut self, label: &Arc<str>) -> Result<(), LoadError> {
        let invalid = |error| LoadError::Validation {
            stage: "instantiate",
            error,
        };
        let mut store = self.store(label, 0, 0).map_err(invalid)?;
        let instance_pre = self.pre.instance_pre();
        let instance = match instance_pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => {
                let stderr = store.data_mut().drain_stdio();
                return Err(invalid(self.classify(
                    &store,
                    Failure::Instantiate(e),
                    &stderr,
                )));
            }
        };
        let checked = match &self.pre {
            Pre::Current(_) => ScoringPolicyIndices::new(instance_pre)
                .and_then(|indices| indices.load(&mut store, &instance))
                .map(drop),
            Pre::V0_1(_) => v0_1::ScoringPolicyIndices::new(instance_pre)
                .and_then(|indices| indices.load(&mut store, &instance))
                .map(drop),
            Pre::V0_3(_) => v0_3::ScoringPolicyIndices::new(instance_pre)
                .and_then(|indices| indices.load(&mut store, &instance))
                .map(drop),
        };
        checked.map_err(|e| {
            wrong_contract(
                instance_pre.component(),
                self.runtime.engine(),
                self.contract(),
                &e,
            )
        })?;
        let component = instance_pre.component();
        let export = format!("oasis:policy/policy@{}", self.contract());
        let score = component
            .get_export_index(None, export.as_str())
            .and_then(|policy| component.get_export_index(Some(&policy), "score"));
        // Checked above through the bindings; refused here rather than by
        // every call should the lookup by name ever disagree with them.
        let Some(score) = score else {
            return Err(wrong_contract(
                component,
                self.runtime.engine(),
                self.contract(),
                &wasmtime::Error::msg(format!("no `score` function in `{export}`")),
            ));
        };
        self.score = Some(score);
        Ok(())
    }

    /// Calls the `score` export of `instance`, looked up by its index and
    /// called without checking its type again (see [`Template::score`]).
    fn call_checked_score(
        &self,
        instance: &wasmtime::component::Instance,
        store: &mut Store<CallState>,
        settings: &str,
        batch: &BatchKind,
        count: usize,
    ) -> wasmtime::Result<Result<WitDecisions, CallError>> {
        let Some(func) = self
            .score
            .as_ref()
            .and_then(|index| instance.get_func(&mut *store, index))
        else {
            // Not reached: a `Policy` is made only after `check_contract`.
            wasmtime::bail!("the component's exports were not checked");
        };
        let policy = |e: WitPolicyError| CallError::Policy(policy_error_text(&e));
        // SAFETY (each arm): `self.score` is set only after
        // `check_contract` checked the type of every export of this
        // component, `score`'s among them, against the bindings of the
        // contract version `self.pre` was made for; each arm calls it with
        // that version's types (the request's version is the policy's:
        // `Policy::batch`).
        Ok(match (&self.pre, batch) {
            (Pre::Current(_), BatchKind::Current(r)) => unsafe {
                call_unchecked::<(&str, &WitRequest), Result<WitDecisions, WitPolicyError>>(
                    func,
                    store,
                    (settings, r),
                )
            }?
            .map_err(policy),
            (Pre::V0_1(_), BatchKind::V0_1(r)) => unsafe {
                call_unchecked::<
                    (&str, &v0_1::oasis::policy::types::Request),
                    Result<
                        v0_1::oasis::policy::types::Decisions,
                        v0_1::exports::oasis::policy::policy::PolicyError,
                    >,
                >(func, store, (settings, r))
            }?
            .map(v0_1::decisions)
            .map_err(|e| policy(v0_1::policy_error(e))),
            // A buffer of the wrong length is invalid output, like a column
            // of the wrong length in the typed contracts.
            (Pre::V0_3(_), BatchKind::V0_3(r, _)) => unsafe {
                call_unchecked::<
                    (&str, &v0_3::oasis::policy::types::Request),
                    Result<
                        v0_3::oasis::policy::types::Decisions,
                        v0_3::exports::oasis::policy::policy::PolicyError,
                    >,
                >(func, store, (settings, r))
            }?
            .map_err(|e| policy(v0_3::policy_error(e)))
            .and_then(|d| v0_3::decisions(d, count).map_err(CallError::InvalidOutput)),
            _ => wasmtime::bail!("a request of one contract version for a policy of another"),
        })
    }

    /// A fresh store for one call: clock frozen at `timestamp_ms`,
    /// randomness seeded with `seed`, logs labelled `label`, and the
    /// policy's memory, transfer and time limits.
    fn store(
        &self,
        label: &Arc<str>,
        timestamp_ms: i64,
        seed: u64,
    ) -> Result<Store<CallState>, CallError> {
        let state = CallState::new(label.clone(), self.limits.memory_bytes, timestamp_ms, seed);
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(self.limits.transfer_bytes());
        // Check the call's clocks every tick (see `CallClock`).
        store.epoch_deadline_callback(|mut ctx| {
            Ok(if ctx.data_mut().clock.check() {
                wasmtime::UpdateDeadline::Continue(1)
            } else {
                wasmtime::UpdateDeadline::Interrupt
            })
        });
        self.arm(&mut store)?;
        Ok(store)
    }

    /// The fuel a call starts with: the runtime's bound, or effectively
    /// unbounded when only measured.
    fn fuel_budget(&self) -> u64 {
        self.runtime.fuel_limit().unwrap_or(FUEL_BUDGET)
    }

    /// The CPU deadline and wall-clock ceiling a call is armed with: the
    /// limits', or neither when fuel bounds calls
    /// ([`RuntimeConfig::fuel_limit`](crate::RuntimeConfig::fuel_limit)).
    fn clocks(&self) -> (Duration, Duration) {
        if self.runtime.fuel_limit().is_some() {
            (Duration::MAX, Duration::MAX)
        } else {
            (self.limits.deadline, self.limits.wall_ceiling())
        }
    }

    /// Runs `f` on a fresh instance in a fresh [`store`](Self::store) and
    /// classifies a failure.
    fn with_instance<R>(
        &self,
        label: &Arc<str>,
        timestamp_ms: i64,
        seed: u64,
        f: impl FnOnce(&Typed, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let mut warm = self.fresh_with(label, timestamp_ms, seed, |pre, store| match pre {
            Pre::Current(p) => p.instantiate(store).map(Typed::Current),
            Pre::V0_1(p) => p.instantiate(store).map(Typed::V0_1),
            Pre::V0_3(p) => p.instantiate(store).map(Typed::V0_3),
        })?;
        self.run(&mut warm, f)
    }

    /// A fresh instance to score on (the bindings' type checks skipped:
    /// see [`Template::score`]).
    fn fresh(&self, label: &Arc<str>, timestamp_ms: i64, seed: u64) -> Result<Warm, CallError> {
        self.fresh_with(label, timestamp_ms, seed, |pre, store| {
            pre.instance_pre().instantiate(store)
        })
    }

    /// A fresh instance in a fresh [`store`](Self::store), made by
    /// `instantiate`; an instantiation failure classified.
    fn fresh_with<I>(
        &self,
        label: &Arc<str>,
        timestamp_ms: i64,
        seed: u64,
        instantiate: impl FnOnce(&Pre, &mut Store<CallState>) -> wasmtime::Result<I>,
    ) -> Result<Warm<I>, CallError> {
        let mut store = self.store(label, timestamp_ms, seed)?;
        let instance = instantiate(&self.pre, &mut store);
        match instance {
            Ok(instance) => Ok(Warm {
                store,
                instance,
                calls: 0,
                reset: None,
            }),
            Err(e) => {
                let stderr = store.data_mut().drain_stdio();
                Err(self.classify(&store, Failure::Instantiate(e), &stderr))
            }
        }
    }

    /// An idle instance prepared for a call at `timestamp_ms` with `seed`
    /// (its clock, randomness, log counters, deadline and fuel reset), or a
    /// fresh one when none is idle. The pool's lock is held only to pop.
    fn take(&self, label: &Arc<str>, timestamp_ms: i64, seed: u64) -> Result<Warm, CallError> {
        let Some(mut warm) = self.pop_idle() else {
            return self.fresh(label, timestamp_ms, seed);
        };
        warm.store.data_mut().begin_call(timestamp_ms, seed);
        self.arm(&mut warm.store)?;
        Ok(warm)
    }

    /// Arms `store` for a call: its deadline clocks, epoch deadline and,
    /// when measured, fuel.
    fn arm(&self, store: &mut Store<CallState>) -> Result<(), CallError> {
        let (deadline, ceiling) = self.clocks();
        store.data_mut().clock.arm(deadline, ceiling);
        store.set_epoch_deadline(1);
        if self.runtime.measures_fuel() {
            store
                .set_fuel(self.fuel_budget())
                .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        }
        Ok(())
    }

    /// An idle instance put back to its state after instantiation, with a
    /// new sandbox for a call at `timestamp_ms` with `seed`, or a fresh one
    /// (recorded for its resets) when none is idle ([`Template::resets`]).
    fn take_reset(
        &self,
        label: &Arc<str>,
        timestamp_ms: i64,
        seed: u64,
    ) -> Result<Warm, CallError> {
        let Some(mut warm) = self.pop_idle() else {
            let mut warm = self.fresh(label, timestamp_ms, seed)?;
            // A component whose instantiation used WASI (a constructor that
            // read randomness or the clock, seeded and frozen from this
            // request) would carry this request's values in its snapshot
            // to every later request on the instance: never reset.
            let snapshot = if warm.store.data().wasi_used() {
                Err(wasmtime::format_err!(
                    "its instantiation used WASI (randomness, clocks or streams of the request)"
                ))
            } else {
                warm.store.oasis_snapshot()
            };
            match snapshot {
                Ok(snapshot) => {
                    let peak = warm.store.data().limiter.peak;
                    warm.reset = Some((snapshot, peak));
                }
                Err(e) => {
                    // Not for this component: fresh instances from now on.
                    tracing::info!(policy = %label, reason = %format!("{e:#}"), "instances of this policy cannot be reset; each call gets a fresh one");
                    self.resettable
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
            }
            return Ok(warm);
        };
        let peak = warm.reset.as_ref().map_or(0, |(_, peak)| *peak);
        // A new sandbox, as a fresh instance gets: WASI context, handle
        // table, pipes, counters; the memory high-water mark as the
        // instantiation left it.
        let mut state = CallState::new(label.clone(), self.limits.memory_bytes, timestamp_ms, seed);
        state.limiter.peak = peak;
        *warm.store.data_mut() = state;
        warm.store.set_hostcall_fuel(self.limits.transfer_bytes());
        self.arm(&mut warm.store)?;
        Ok(warm)
    }

    /// Puts an instance whose call succeeded back to its state after
    /// instantiation and into the idle pool; an instance that cannot be
    /// reset (it kept a resource handle, grew a table) or finds the pool
    /// full is dropped.
    fn reset_back(&self, mut warm: Warm) {
        let Some((snapshot, _)) = &warm.reset else {
            return;
        };
        if let Err(e) = warm.store.oasis_reset(snapshot) {
            tracing::debug!(error = %format!("{e:#}"), "instance not reset; dropped");
            return;
        }
        // What the call left on the host side (its output pipes, its WASI
        // context) is dropped now, not when the instance is next used.
        warm.store.data_mut().release();
        self.push_idle(warm);
    }

    /// Whether calls run on instances put back to their state after
    /// instantiation ([`RuntimeConfig::reset_instances`](crate::RuntimeConfig::reset_instances)),
    /// rather than on a fresh instance each.
    fn resets(&self) -> bool {
        self.runtime.config().reset_instances
            && !self.limits.reuses_instances()
            && self.resettable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Returns an instance that served a call successfully to the pool,
    /// unless it has served its [`Limits::reuse_instance_calls`] or the pool
    /// is full; then it is dropped (its slot and memory freed).
    fn put_back(&self, warm: Warm) {
        if warm.calls >= self.limits.reuse_instance_calls {
            return;
        }
        self.push_idle(warm);
    }

    /// An idle instance, if any (its pool slot given back to the runtime's
    /// idle budget: it is in use now).
    fn pop_idle(&self) -> Option<Warm> {
        let warm = self.idle().pop()?;
        self.runtime.release_idle(1);
        Some(warm)
    }

    /// Keeps `warm` idle, unless this version already keeps
    /// [`Limits::MAX_IDLE_INSTANCES`] or the runtime's idle budget is spent
    /// ([`Runtime::keep_idle`]); then it is dropped (slot and memory freed).
    fn push_idle(&self, warm: Warm) {
        let mut idle = self.idle();
        if idle.len() < Limits::MAX_IDLE_INSTANCES && self.runtime.keep_idle() {
            idle.push(warm);
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        // Nothing runs under this lock but a push or a pop.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on `warm`, counts the call, forwards its stdout/stderr and
    /// classifies a failure.
    fn run<I, R>(
        &self,
        warm: &mut Warm<I>,
        f: impl FnOnce(&I, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        warm.calls += 1;
        let result = f(&warm.instance, &mut warm.store).map_err(Failure::Run);
        let stderr = warm.store.data_mut().drain_stdio();
        result.map_err(|failure| self.classify(&warm.store, failure, &stderr))
    }

    /// Turns a wasmtime error into the most precise [`CallError`]: memory
    /// limit if the limiter refused a growth, timeout on epoch interruption,
    /// a trap (with the policy's panic message when it printed one), or, for
    /// an instantiation that failed without trapping, `Instantiate`.
    fn classify(&self, store: &Store<CallState>, failure: Failure, stderr: &str) -> CallError {
        if let Some(requested) = store.data().limiter.refused {
            return CallError::MemoryLimit {
                limit_bytes: self.limits.memory_bytes,
                requested_bytes: requested,
            };
        }
        let (e, instantiating) = match failure {
            Failure::Run(e) => (e, false),
            Failure::Instantiate(e) => (e, true),
        };
        let raw = match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => {
                return CallError::Timeout {
                    deadline: self.limits.deadline,
                    clock: store.data().clock.hit.unwrap_or(DeadlineClock::Cpu),
                    ceiling: self.limits.wall_ceiling(),
                };
            }
            Some(wasmtime::Trap::OutOfFuel) => {
                return CallError::OutOfFuel {
                    budget: self.fuel_budget(),
                };
            }
            Some(wasmtime::Trap::StackOverflow) => format!(
                "stack overflow: the call stack exceeded the {} KiB wasm stack limit (unbounded recursion?)",
                crate::runtime::MAX_WASM_STACK >> 10
            ),
            Some(trap) => trap.to_string(),
            None if instantiating => return CallError::Instantiate(bounded(&cause_first(&e))),
            // An error raised by a host call (a full handle table, a sleep).
            None => cause_first(&e),
        };
        let message = match panic_message(stderr) {
            Some(panic) => bounded(&format!("{panic} ({raw})")),
            None => bounded(&raw),
        };
        CallError::Trap { message }
    }
}

/// Where a call failed.
/// What loading needs to know of a component before compiling it.
struct ComponentScan {
    /// Core functions defined across the modules of a component (nested
    /// ones included): the sum of the code sections' counts.
    functions: u64,
    /// Built by componentize-py (CPython inside): its custom sections name
    /// componentize-py's modules. Such a component gets the Python
    /// default deadline ([`Limits::for_language`]).
    python: bool,
}

/// Scans `wasm`: reads section headers and the name/producers custom sections,
/// skips function bodies, compiles nothing.
fn scan(wasm: &[u8]) -> Result<ComponentScan, String> {
    let mut out = ComponentScan {
        functions: 0,
        python: false,
    };
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| e.to_string())? {
            wasmparser::Payload::CodeSectionStart { count, .. } => {
                out.functions += u64::from(count);
            }
            wasmparser::Payload::CustomSection(section)
                if matches!(section.name(), "producers" | "component-name" | "name") =>
            {
                out.python |= names_componentize_py(section.data());
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Whether a `producers` or name section mentions componentize-py: its
/// components name their core modules `libcomponentize_py_runtime.so` and
/// `libcomponentize_py_bindings.so` (componentize-py 0.25 writes no
/// `producers` entry of its own). Only a hint for a default deadline.
fn names_componentize_py(data: &[u8]) -> bool {
    data.windows(COMPONENTIZE_PY.len())
        .any(|w| w == COMPONENTIZE_PY || w == b"componentize-py")
}

/// The mark of a componentize-py component ([`names_componentize_py`]).
const COMPONENTIZE_PY: &[u8] = b"componentize_py";

/// Loads `wasm` from the compile cache, else compiles it (and caches it) on
/// a thread of its own, waiting at most `timeout`. Cranelift cannot be interrupted: past the ceiling the
/// load fails and the thread finishes in the background, its result (and
/// memory) dropped when it does.
fn compile_within(
    runtime: &Runtime,
    wasm: &[u8],
    hex: &str,
    timeout: Duration,
) -> Result<wasmtime::component::Component, LoadError> {
    // A cache hit is not a compile: no thread, no ceiling.
    if let Some(component) = crate::cache::cached(runtime.engine(), hex, runtime.cache_dir()) {
        return Ok(component);
    }
    if let Some(worker) = &runtime.config().compile_worker {
        use crate::runtime::compile_worker::WorkerError;
        let started = Instant::now();
        let (engine, dir, digest) = (
            runtime.engine().clone(),
            runtime.cache_dir().map(Path::to_path_buf),
            hex.to_string(),
        );
        let cache = move |artifact: &[u8]| {
            dir.is_some()
                && crate::cache::insert(&engine, &digest, dir.as_deref(), artifact).is_some()
        };
        let compiled =
            runtime
                .compiles()
                .precompile(worker, runtime.config(), hex, wasm, timeout, cache);
        return match compiled {
            None => Err(LoadError::Compiling {
                waited_ms: started.elapsed().as_millis() as u64,
            }),
            Some(Ok(artifact)) => {
                // The job has written the cache when there is one.
                crate::cache::cached(runtime.engine(), hex, runtime.cache_dir())
                    .or_else(|| crate::cache::insert(runtime.engine(), hex, None, &artifact))
                    .ok_or_else(|| {
                        LoadError::Compile("the compile worker's artifact does not load".into())
                    })
            }
            Some(Err(WorkerError::Timeout { waited })) => Err(LoadError::CompileTimeout {
                limit_ms: timeout.as_millis() as u64,
                waited_ms: waited.as_millis() as u64,
            }),
            Some(Err(WorkerError::Failed(message))) => Err(LoadError::Compile(message)),
        };
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let mut progress =
        crate::runtime::CompileProgress::start(hex, wasm.len(), runtime.config().compile_progress);
    let (rt, wasm, hex) = (runtime.clone(), wasm.to_vec(), hex.to_string());
    let started = Instant::now();
    std::thread::Builder::new()
        .name("oasis-compile".into())
        .spawn(move || {
            let compiled = crate::cache::compile(rt.engine(), &wasm, &hex, rt.cache_dir());
            let _ = tx.send((compiled, rt.flush_function_cache()));
        })
        .map_err(|e| LoadError::Compile(format!("cannot start a compile thread: {e}")))?;
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        match rx.recv_timeout(left.min(progress.until_next())) {
            Ok((compiled, reused)) => {
                progress.done(compiled.is_ok(), reused);
                return compiled.map_err(|e| LoadError::Compile(format!("{e:#}")));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => progress.tick(),
            Err(_) => {
                return Err(LoadError::CompileTimeout {
                    limit_ms: timeout.as_millis() as u64,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
        }
    }
}

/// [`LoadError::WrongContract`] for `component`: what wasmtime reported, and
/// the component's exports and imports as its type exposes them (names, and
/// the function names of exported instances).
fn wrong_contract(
    component: &wasmtime::component::Component,
    engine: &wasmtime::Engine,
    version: &'static str,
    error: &wasmtime::Error,
) -> LoadError {
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    let exports = ty
        .exports(engine)
        .map(|(name, item)| match &item.ty {
            ComponentItem::ComponentInstance(instance) => {
                let funcs: Vec<&str> = instance.exports(engine).map(|(f, _)| f).collect();
                format!("{name} {{ {} }}", funcs.join(", "))
            }
            _ => name.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let imports = ty
        .imports(engine)
        .map(|(name, _)| name)
        .collect::<Vec<_>>()
        .join(", ");
    LoadError::WrongContract {
        version,
        exports: bounded(&exports),
        imports: bounded(&imports),
        error: bounded(&format!("{error:#}")),
    }
}

enum Failure {
    /// Creating the instance (a start function trapped, the pool is full…).
    Instantiate(wasmtime::Error),
    /// Running the export.
    Run(wasmtime::Error),
}

/// Checks the magic bytes, so that a core module or a random file gets an
/// error saying what it is instead of a compiler message.
fn check_header(wasm: &[u8]) -> Result<(), LoadError> {
    match wasm.get(..8) {
        Some(h) if h == COMPONENT_HEADER => Ok(()),
        Some(h) if h == MODULE_HEADER => Err(LoadError::NotAComponent(
            "this is a core WebAssembly module; build the policy with \
             `--target wasm32-wasip2` so that it is a component"
                .into(),
        )),
        _ => Err(LoadError::NotAComponent(format!(
            "the file does not start with the WebAssembly magic bytes ({} bytes long)",
            wasm.len()
        ))),
    }
}

/// Fuel given to a measured call; effectively unbounded (the deadline bounds CPU).
const FUEL_BUDGET: u64 = u64::MAX / 2;

fn policy_error_text(e: &WitPolicyError) -> String {
    bounded(&match e {
        WitPolicyError::InvalidSettings(m) => format!("invalid settings: {m}"),
        WitPolicyError::InvalidRequest(m) => format!("invalid request: {m}"),
        WitPolicyError::Internal(m) => format!("internal error: {m}"),
    })
}

/// `e` as one line with its root cause first: wasmtime wraps an error
/// raised in a host call as "error while executing at wasm backtrace: …",
/// which put the cause last, past where [`bounded`] cuts. The context
/// follows in parentheses, its whitespace collapsed: "… (at wasm
/// backtrace: 0: …)".
fn cause_first(e: &wasmtime::Error) -> String {
    let cause = e.root_cause().to_string();
    let context: Vec<String> = e
        .chain()
        .map(|c| c.to_string())
        .filter(|c| *c != cause)
        .map(|c| {
            let c = c.strip_prefix("error while executing ").unwrap_or(&c);
            c.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect();
    if context.is_empty() {
        cause
    } else {
        format!("{cause} ({})", context.join("; "))
    }
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

    #[test]
    fn panic_message_is_extracted_with_location() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:12:9:\nboom: 3 > 2\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).unwrap(),
            "panicked: boom: 3 > 2 (at src/lib.rs:12:9)"
        );
        assert_eq!(panic_message("some other output"), None);
    }

    #[test]
    fn headers_name_what_the_file_is() {
        assert!(matches!(
            check_header(&MODULE_HEADER),
            Err(LoadError::NotAComponent(m)) if m.contains("wasm32-wasip2")
        ));
        assert!(matches!(
            check_header(b"hello"),
            Err(LoadError::NotAComponent(m)) if m.contains("magic bytes")
        ));
        check_header(&COMPONENT_HEADER).unwrap();
    }
}
