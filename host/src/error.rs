//! Typed errors at the runtime's boundary.
//!
//! Loading a policy and calling it fail in different ways and callers react
//! differently: a [`LoadError`] keeps the last good version serving, a
//! [`CallError`] serves the fallback for one request. Each variant names what
//! went wrong in words an operator or policy author can act on.

use std::time::Duration;

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The module file could not be read.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error (in the message, not chained, so it prints once).
        error: std::io::Error,
    },
    /// The component is larger than the policy's `module_bytes` limit.
    #[error(
        "the component is {size} bytes; the limit is {limit} bytes (max_module_mb in the manifest)"
    )]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a WebAssembly component (a core module, or not wasm).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component defines more functions than the host compiles.
    #[error(
        "the component defines {functions} functions; the limit is {limit} (--max-functions), checked before compiling"
    )]
    TooManyFunctions {
        /// Functions it defines.
        functions: u64,
        /// The limit.
        limit: u64,
    },
    /// Compiling took longer than the host's ceiling.
    #[error(
        "compilation did not finish within {limit_ms} ms (--max-compile-ms; stopped waiting after {waited_ms} ms)"
    )]
    CompileTimeout {
        /// The ceiling.
        limit_ms: u64,
        /// How long the load waited.
        waited_ms: u64,
    },
    /// The component failed to compile.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// The compile goes on in the background (the compile worker), past
    /// how long a load waits for it: not a failure. The policy loads when
    /// it finishes (from the compile cache), within the compile ceiling.
    #[error(
        "still compiling after {waited_ms} ms; it goes on in the background and the policy loads when it finishes (at most --max-compile-ms)"
    )]
    Compiling {
        /// How long the load waited.
        waited_ms: u64,
    },
    /// The component does not implement the contract: a missing or
    /// differently typed export (another contract version included), or an
    /// import the host does not provide. Deterministic: the same bytes fail
    /// the same way, so a reload does not retry it until the file changes.
    #[error(
        "wrong contract: expected a component implementing oasis:policy/scoring-policy@{version} (exporting `oasis:policy/policy@{version}` with the contract's types, importing only WASI p2 and `oasis:policy/log@{version}`; this host serves contracts 0.1.0, {current} and 0.3.0); found exports [{exports}], imports [{imports}]: {error}",
        current = crate::bindings::CONTRACT_VERSION
    )]
    WrongContract {
        /// The contract version the component was checked against: the one
        /// its policy export names when the host serves it, else the current.
        version: &'static str,
        /// The component's exports, with the functions of exported instances.
        exports: String,
        /// The component's imports.
        imports: String,
        /// What wasmtime reported (the first mismatch).
        error: String,
    },
    /// The policy refused its settings.
    #[error("the policy refused its settings: {0}")]
    BadSettings(String),
    /// The limits are outside the host's ceilings.
    #[error("invalid limits: {0}")]
    BadLimits(String),
    /// The policy's metadata is unusable (empty name, bad semver...).
    #[error("invalid policy metadata: {0}")]
    BadMetadata(String),
    /// A call made while validating the policy failed.
    #[error("validation call `{stage}` failed: {error}")]
    Validation {
        /// Which call: `describe`, `validate-settings` or the smoke `score`.
        stage: &'static str,
        /// Why (in the message, not chained).
        error: CallError,
    },
}

/// The category of a [`CallError`], used in metrics, logs and responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallErrorKind {
    /// The policy ran past its CPU deadline.
    Timeout,
    /// The policy tried to grow memory beyond its limit.
    MemoryLimit,
    /// The policy trapped (panic, stack overflow, unreachable...).
    Trap,
    /// The policy returned output that breaks the contract.
    InvalidOutput,
    /// The policy returned one of its own errors.
    PolicyError,
    /// No instance could be created (pool exhausted, instantiation trap).
    Instantiate,
}

impl CallErrorKind {
    /// Every kind.
    pub const ALL: [CallErrorKind; 6] = [
        CallErrorKind::Timeout,
        CallErrorKind::MemoryLimit,
        CallErrorKind::Trap,
        CallErrorKind::InvalidOutput,
        CallErrorKind::PolicyError,
        CallErrorKind::Instantiate,
    ];

    /// Stable snake_case name: the one spelling, used in responses, logs
    /// and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CallErrorKind::Timeout => "timeout",
            CallErrorKind::MemoryLimit => "memory_limit",
            CallErrorKind::Trap => "trap",
            CallErrorKind::InvalidOutput => "invalid_output",
            CallErrorKind::PolicyError => "policy_error",
            CallErrorKind::Instantiate => "instantiate",
        }
    }
}

impl serde::Serialize for CallErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl prometheus_client::encoding::EncodeLabelValue for CallErrorKind {
    fn encode(
        &self,
        e: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(e, self.as_str())
    }
}

/// Why one call into a policy failed. The process and the policy survive it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The call was interrupted: its own CPU time reached the deadline, or,
    /// as a backstop on a starved machine, its wall-clock time reached the
    /// ceiling ([`Limits::wall_ceiling`](crate::Limits::wall_ceiling)).
    #[error("{}", timeout_text(*deadline, *clock, *ceiling))]
    Timeout {
        /// The configured deadline (CPU time).
        deadline: Duration,
        /// Which clock stopped it.
        clock: DeadlineClock,
        /// The wall-clock ceiling.
        ceiling: Duration,
    },
    /// The call used all the fuel it was given
    /// ([`RuntimeConfig::fuel_limit`](crate::RuntimeConfig::fuel_limit):
    /// offline replay bounds calls by instructions, not by time). Of kind
    /// [`CallErrorKind::Timeout`]: it ran too long, by a count that does not
    /// depend on the machine.
    #[error(
        "the policy used its whole budget of {budget} fuel (about one unit per wasm instruction) without finishing"
    )]
    OutOfFuel {
        /// The fuel the call was given.
        budget: u64,
    },
    /// Memory growth beyond the limit was refused.
    #[error(
        "the policy exceeded its memory limit of {limit_bytes} bytes (it asked for {requested_bytes})"
    )]
    MemoryLimit {
        /// The configured limit.
        limit_bytes: usize,
        /// The size it tried to grow to.
        requested_bytes: usize,
    },
    /// The guest trapped. `message` carries the policy's panic message when
    /// it printed one, else the trap description.
    #[error("the policy trapped: {message}")]
    Trap {
        /// Panic message or trap description.
        message: String,
    },
    /// The output broke the contract (wrong length, NaN, propensity out of range...).
    #[error("the policy returned invalid output: {0}")]
    InvalidOutput(String),
    /// The policy returned an error value.
    #[error("the policy returned an error: {0}")]
    Policy(String),
    /// The instance could not be created.
    #[error("could not instantiate the policy: {0}")]
    Instantiate(String),
}

/// Which clock ended a call that ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadlineClock {
    /// The policy's own CPU time (its thread's CPU clock) reached the deadline.
    Cpu,
    /// The wall-clock ceiling was reached first: the host is too busy for
    /// the call to get its CPU time in.
    Wall,
}

/// Where a deadline is raised, named in every timeout message: the limit's
/// name is the same in a manifest and on the command line.
const RAISE_DEADLINE: &str =
    "raise it with `deadline_ms` in the manifest's [limits] or --deadline-ms";

fn timeout_text(deadline: Duration, clock: DeadlineClock, ceiling: Duration) -> String {
    match clock {
        DeadlineClock::Cpu => format!(
            "the policy exceeded its deadline of {deadline:?} of CPU time ({RAISE_DEADLINE})"
        ),
        DeadlineClock::Wall => format!(
            "the call reached its wall-clock ceiling of {ceiling:?} before using its {deadline:?} of CPU time (the host is busy)"
        ),
    }
}

impl CallError {
    /// The error's category.
    pub fn kind(&self) -> CallErrorKind {
        match self {
            CallError::Timeout { .. } | CallError::OutOfFuel { .. } => CallErrorKind::Timeout,
            CallError::MemoryLimit { .. } => CallErrorKind::MemoryLimit,
            CallError::Trap { .. } => CallErrorKind::Trap,
            CallError::InvalidOutput(_) => CallErrorKind::InvalidOutput,
            CallError::Policy(_) => CallErrorKind::PolicyError,
            CallError::Instantiate(_) => CallErrorKind::Instantiate,
        }
    }
}
