//! How a [`Runtime`](super::Runtime) is configured: the cache, fuel,
//! instance pool and compile ceilings. Kept apart from the runtime so the
//! compile worker (which passes the configuration to its child process)
//! depends on it and not on the runtime.

use std::path::PathBuf;
use std::time::Duration;

/// Runtime options.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Count wasm instructions with fuel (for `oasis run` reports). Costs
    /// speed, so the server leaves it off.
    pub measure_fuel: bool,
    /// Bound every call by this much fuel (about one unit per wasm
    /// instruction) **instead of** by time: the CPU deadline and the
    /// wall-clock ceiling are not armed, so whether a call finishes depends
    /// only on the policy and its input, never on how busy the machine is.
    /// A call that uses it all fails with
    /// [`CallError::OutOfFuel`](crate::CallError::OutOfFuel). Offline
    /// replay runs this way; `None` (the server): time bounds calls.
    pub fuel_limit: Option<u64>,
    /// Instances that may exist at once across all policies.
    pub max_instances: u32,
    /// Ceilings on compiling a component (cache hits are not compiles).
    pub compile: CompileLimits,
    /// Compile in a child process (hard memory cap, killed at the time
    /// ceiling) instead of on a thread of this one; `oasis serve` sets it.
    pub compile_worker: Option<crate::runtime::compile_worker::CompileWorker>,
    /// How often a compile in progress logs "still compiling" (after its
    /// "compiling" line, before "compiled in N ms"): a Python component
    /// compiles for 10-30 s, which must not look like a hang.
    /// `$OASIS_COMPILE_PROGRESS_MS`, else [`DEFAULT_COMPILE_PROGRESS`].
    pub compile_progress: Duration,
    /// Bytes at the start of each linear-memory slot of the instance pool
    /// kept resident between instances ([`DEFAULT_MEMORY_KEEP_RESIDENT`]).
    /// Within it a reset rewrites only the pages the last call dirtied, and
    /// the next instance finds its pages mapped; beyond it pages are
    /// returned to the kernel and fault in again on first touch. What stays
    /// resident is only what calls touched.
    pub memory_keep_resident: usize,
    /// Whether a policy's instances are kept between calls and put back,
    /// after each call, to the state their instantiation left them in
    /// (memories, tables, globals, component state: `wasmtime`'s
    /// `Store::oasis_reset`, vendor/README.md), instead of a fresh
    /// instance per call. No state of one call reaches the next either
    /// way; the reset costs a fraction of a new instance. On by default;
    /// `oasis serve --fresh-instances` turns it off.
    pub reset_instances: bool,
}

/// Default of [`RuntimeConfig::memory_keep_resident`].
pub const DEFAULT_MEMORY_KEEP_RESIDENT: usize = 4 << 20;

/// Default interval of a compile's "still compiling" lines.
pub const DEFAULT_COMPILE_PROGRESS: Duration = Duration::from_secs(5);

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: default_cache_dir(),
            measure_fuel: false,
            fuel_limit: None,
            max_instances: 256,
            compile: CompileLimits::default(),
            compile_worker: None,
            compile_progress: default_compile_progress(),
            memory_keep_resident: DEFAULT_MEMORY_KEEP_RESIDENT,
            reset_instances: true,
        }
    }
}

/// `$OASIS_COMPILE_PROGRESS_MS` (at least 1 ms), else
/// [`DEFAULT_COMPILE_PROGRESS`].
fn default_compile_progress() -> Duration {
    std::env::var("OASIS_COMPILE_PROGRESS_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.max(1)))
        .unwrap_or(DEFAULT_COMPILE_PROGRESS)
}

/// Ceilings on compiling one component, checked before and during
/// compilation (`policy::Template::compile`).
///
/// Compile time and memory grow with the number of functions and the code
/// size: 100k tiny functions took 5–10 s and ~550 MB (issue 13). The code
/// size is bounded by a policy's `max_module_mb`; the function count is
/// checked here before anything is compiled (a parse of the section
/// headers), and the compile time while compiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Core functions defined across the component's modules; more are
    /// refused before compiling. Rust policies define a few thousand.
    pub max_functions: u64,
    /// Wall-clock ceiling of one compilation. Beyond it the load fails; the
    /// compiling thread cannot be interrupted, so it runs to its end in the
    /// background (bounded by `max_functions` and the module size), its
    /// result is dropped and its memory returned then.
    pub timeout: Duration,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_functions: 50_000,
            // Python components (~18 MB: CPython inside) compile in 10-25 s
            // cold on 2 cores; Rust ones in well under a second.
            timeout: Duration::from_secs(60),
        }
    }
}

/// `$OASIS_CACHE_DIR`, else `$XDG_CACHE_HOME/oasis`, else `~/.cache/oasis`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("OASIS_CACHE_DIR") {
        return Some(dir.into());
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("oasis"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("oasis"))
}
