//! The WebAssembly runtime shared by every policy: one [`Engine`], one
//! [`Linker`] and an epoch ticker.
//!
//! State is split by lifetime, which is the key to a fast request path:
//!
//! | lifetime          | what                                           | where              |
//! |-------------------|------------------------------------------------|--------------------|
//! | process           | engine, linker, epoch ticker, compile cache    | [`Runtime`]        |
//! | policy version    | compiled component, pre-instantiation, metadata | [`Policy`](crate::Policy) |
//! | one call          | a fresh `Store` and instance                    | [`crate::sandbox`] |
//!
//! Nothing is compiled on the request path; a call only instantiates a
//! pre-linked template from the pooling allocator (microseconds) and drops it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::limits::Limits;
use crate::sandbox::CallState;

pub mod compile_worker;
mod config;
pub mod function_cache;

pub use config::{
    CompileLimits, DEFAULT_COMPILE_PROGRESS, DEFAULT_MEMORY_KEEP_RESIDENT, RuntimeConfig,
    default_cache_dir,
};

/// Whether the kernel lists an active swap area (`/proc/swaps` has a line
/// beyond its header). Unreadable (not Linux): no, and `PAGEMAP_SCAN` is
/// not available there anyway.
fn swap_active() -> bool {
    let active = std::fs::read_to_string("/proc/swaps")
        .map(|s| swap_areas(&s) > 0)
        .unwrap_or(false);
    if active {
        tracing::info!("swap is active: instance memory is reset without PAGEMAP_SCAN");
    }
    active
}

/// Swap areas listed in the text of `/proc/swaps`.
fn swap_areas(proc_swaps: &str) -> usize {
    proc_swaps
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// The log lines of one compile (a cache miss): `compiling` when it starts,
/// `still compiling (N s)` every [`RuntimeConfig::compile_progress`], and
/// `compiled in N ms`, so that a long compile (a Python component: 10-30 s)
/// is never silent, in the server's log or on a CLI command's stderr. The
/// lines carry the component's digest and size; the span of the load names
/// the policy or file.
pub(crate) struct CompileProgress {
    digest: String,
    started: std::time::Instant,
    every: Duration,
    next: Duration,
}

impl CompileProgress {
    /// Logs `compiling` for the component of digest `hex`, `bytes` long.
    pub(crate) fn start(hex: &str, bytes: usize, every: Duration) -> Self {
        let digest = crate::cache::short(hex).to_string();
        tracing::info!(
            %digest,
            bytes,
            "compiling the component (once: the result is cached; a Python component takes 10-30 s)"
        );
        CompileProgress {
            digest,
            started: std::time::Instant::now(),
            every,
            next: every,
        }
    }

    /// How long to wait before the next [`tick`](Self::tick) is due.
    pub(crate) fn until_next(&self) -> Duration {
        self.next.saturating_sub(self.started.elapsed())
    }

    /// Logs `still compiling` when another interval has passed.
    pub(crate) fn tick(&mut self) {
        let elapsed = self.started.elapsed();
        if elapsed < self.next {
            return;
        }
        let elapsed_s = elapsed.as_secs_f64();
        tracing::info!(
            digest = %self.digest,
            elapsed_s,
            "still compiling ({elapsed_s:.1} s)"
        );
        while self.next <= elapsed {
            self.next += self.every;
        }
    }

    /// Logs the end: `compiled in N ms` (with how many functions came from
    /// the function cache, when there is one), or that it failed.
    pub(crate) fn done(&self, ok: bool, reused: Option<function_cache::FunctionCacheStats>) {
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        if let (true, Some(r)) = (ok, reused) {
            tracing::info!(
                digest = %self.digest,
                elapsed_ms,
                functions_cached = r.hits,
                functions_compiled = r.misses,
                "compiled in {elapsed_ms} ms ({} of {} functions from the function cache)",
                r.hits,
                r.hits + r.misses
            );
        } else if ok {
            tracing::info!(digest = %self.digest, elapsed_ms, "compiled in {elapsed_ms} ms");
        } else {
            tracing::info!(digest = %self.digest, elapsed_ms, "compile failed after {elapsed_ms} ms");
        }
    }
}

/// How often the epoch ticker advances the engine's epoch. Every tick a
/// running call checks its clocks (`sandbox::CallClock`: its CPU time against
/// the deadline, wall-clock time against the ceiling), so a deadline fires at
/// most about one tick late.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Wasm stack limit of every call: deep enough for real policies, small
/// enough that unbounded recursion traps quickly.
pub const MAX_WASM_STACK: usize = 512 << 10;

/// Errors creating the runtime.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the wasm runtime: {0}")]
pub struct RuntimeError(String);

/// The engine, linker and epoch ticker shared by all policies. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<CallState>,
    config: RuntimeConfig,
    /// Compiles in the worker, by digest (see `compile_worker`).
    compiles: Arc<compile_worker::Jobs>,
    /// Cranelift's per-function cache, with a cache directory.
    functions: Option<Arc<function_cache::FunctionCache>>,
    stop_ticker: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
    /// Instances idle between calls, across all policies (see
    /// [`Runtime::keep_idle`]).
    idle: std::sync::atomic::AtomicUsize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

impl Runtime {
    /// Creates the engine (pooling allocator, epoch interruption, stack cap),
    /// links the host imports (bounded logging and capability-free WASI) and
    /// starts the epoch ticker.
    ///
    /// # Errors
    /// When the engine cannot be configured (e.g. virtual memory for the pool).
    ///
    /// # Examples
    /// ```
    /// let runtime = oasis::Runtime::new(oasis::RuntimeConfig { cache_dir: None, ..Default::default() }).unwrap();
    /// assert!(!runtime.measures_fuel());
    /// ```
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut pool = PoolingAllocationConfig::new();
        let n = config.max_instances.max(1);
        pool.total_component_instances(n)
            // A Rust wasip2 component holds a handful of core instances (the
            // program, the WASI adapter and shims) with up to two memories.
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 4)
            .max_memory_size(Limits::MAX_MEMORY_BYTES)
            // Keep the first pages of each slot resident between instances:
            // halves the fresh-instance cost (docs/performance.md: design figures).
            .linear_memory_keep_resident(config.memory_keep_resident)
            .table_keep_resident(64 << 10)
            // With the PAGEMAP_SCAN ioctl (Linux 6.7+; off elsewhere) the
            // reset of a slot rewrites only the pages the call dirtied
            // instead of memset-ing the whole kept-resident prefix: the
            // memset was ~5% of the server's CPU under load (issue 21). A
            // one-off measurement gave a fresh instance + empty call 29.4 ->
            // 15.5 us (not yet in BENCHMARKS.md: re-measure with
            // `scripts/bench`, issue 21). Memory is still reset to its
            // initial image between calls: isolation is unchanged
            // (instance_reuse::by_default_no_state_of_one_request_reaches_another).
            // With the vendored wasmtime fix (vendor/README.md) the scan
            // covers every dirty page up to the kept-resident budget, not
            // the first 32 runs of them. Off while swap is active: the scan
            // asks for present pages, so a dirty page swapped out would be
            // neither rewritten nor decommitted.
            .pagemap_scan(if swap_active() {
                wasmtime::Enabled::No
            } else {
                wasmtime::Enabled::Auto
            });

        let mut cfg = Config::new();
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .consume_fuel(config.measure_fuel || config.fuel_limit.is_some())
            // Component-model async is unused; disabling it roughly halves
            // the per-call overhead.
            .concurrency_support(false);
        // For profiling only: `OASIS_PERFMAP=1` makes wasmtime write
        // /tmp/perf-<pid>.map, so `perf report` names the policies' compiled
        // functions instead of `[unknown]` (docs/performance.md, "Profiling").
        if std::env::var_os("OASIS_PERFMAP").is_some() {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        // Functions compiled before are reused by content, across components
        // and processes (function_cache: a one-line edit of a Python policy
        // no longer recompiles CPython).
        let functions = config
            .cache_dir
            .as_ref()
            .map(|dir| Arc::new(function_cache::FunctionCache::new(dir.join("functions"))));
        if let Some(store) = &functions {
            cfg.enable_incremental_compilation(store.clone())
                .map_err(|e| RuntimeError(format!("{e:#}")))?;
        }
        let engine = Engine::new(&cfg).map_err(|e| RuntimeError(format!("{e:#}")))?;

        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| RuntimeError(format!("linking WASI: {e:#}")))?;
        forbid_waiting(&mut linker)
            .map_err(|e| RuntimeError(format!("linking WASI clocks: {e:#}")))?;
        crate::bindings::ScoringPolicy::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| RuntimeError(format!("linking the log import: {e:#}")))?;
        // Components built against the frozen 0.1.0 contract import its log
        // interface under its own name; both are served (bindings::v0_1).
        crate::bindings::v0_1::ScoringPolicy::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| RuntimeError(format!("linking the 0.1.0 log import: {e:#}")))?;
        // And those built against 0.3.0 (columns as bytes, bindings::v0_3).
        crate::bindings::v0_3::ScoringPolicy::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| RuntimeError(format!("linking the 0.3.0 log import: {e:#}")))?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.weak();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("oasis-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        match engine.upgrade() {
                            Some(e) => e.increment_epoch(),
                            None => break,
                        }
                    }
                })
                .map_err(|e| RuntimeError(format!("starting the epoch ticker: {e}")))?
        };

        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                compiles: Default::default(),
                functions,
                stop_ticker,
                ticker: Some(ticker),
                idle: std::sync::atomic::AtomicUsize::new(0),
            }),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<CallState> {
        &self.inner.linker
    }

    /// Whether calls count fuel (instructions).
    pub fn measures_fuel(&self) -> bool {
        self.inner.config.measure_fuel || self.inner.config.fuel_limit.is_some()
    }

    /// The fuel that bounds every call instead of time, when it does
    /// ([`RuntimeConfig::fuel_limit`]).
    pub fn fuel_limit(&self) -> Option<u64> {
        self.inner.config.fuel_limit
    }

    /// The compile cache directory, if any.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.inner.config.cache_dir.as_deref()
    }

    /// Saves the functions compiled since the last call to the function
    /// cache (after a compile); what the compile reused and compiled.
    pub fn flush_function_cache(&self) -> Option<function_cache::FunctionCacheStats> {
        self.inner.functions.as_ref().map(|f| f.flush())
    }

    /// Takes one of the instance pool's slots for an instance kept idle
    /// between calls, if fewer than a quarter of
    /// [`RuntimeConfig::max_instances`] are: idle instances (reset or
    /// reused ones, of every loaded version) never take the slots calls
    /// need. Each `true` is given back by [`Runtime::release_idle`].
    pub(crate) fn keep_idle(&self) -> bool {
        let cap = (self.inner.config.max_instances as usize / 4).max(1);
        self.inner
            .idle
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back `n` slots taken by [`Runtime::keep_idle`].
    pub(crate) fn release_idle(&self, n: usize) {
        self.inner.idle.fetch_sub(n, Ordering::Relaxed);
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Compiles in the worker, by digest.
    pub(crate) fn compiles(&self) -> &Arc<compile_worker::Jobs> {
        &self.inner.compiles
    }

    /// From now on, a load waits for a compile in the worker only its
    /// [`load_wait`](compile_worker::CompileWorker::load_wait)
    /// (before: to the end, for the initial policy set).
    pub fn initial_load_done(&self) {
        self.inner.compiles.stop_waiting_to_the_end();
    }

    /// Calls `f` whenever a compile in the worker finishes, so that a
    /// policy whose load stopped waiting for it is loaded again (the server
    /// starts a reload pass).
    pub fn on_compiled(&self, f: impl Fn() + Send + Sync + 'static) {
        self.inner.compiles.on_done(Arc::new(f));
    }

    /// Ceilings on compiling a component.
    pub fn compile_limits(&self) -> CompileLimits {
        self.inner.config.compile
    }
}

/// The WASI version whose monotonic clock [`forbid_waiting`] overrides; it
/// must be the version `wasmtime-wasi` registers (a test sleeps to check).
const WASI_CLOCKS: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Replaces the monotonic clock's `subscribe-*` functions with ones that trap.
///
/// Epoch interruption stops wasm code, not a host call: a policy that sleeps
/// (`std::thread::sleep`, or polling a clock pollable) would block its host
/// thread for as long as it asked, deadline or not. Nothing else a policy can
/// reach blocks (stdin is closed, stdout always ready, sockets denied), so
/// making clock subscriptions trap closes the hole: waiting is a fault.
fn forbid_waiting(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;
    linker.allow_shadowing(true);
    let mut clocks = linker.instance(WASI_CLOCKS)?;
    clocks.func_wrap(
        "subscribe-duration",
        |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            wasmtime::bail!(
                "policies may not sleep or wait (wasi:clocks/monotonic-clock.subscribe-duration)"
            )
        },
    )?;
    clocks.func_wrap(
        "subscribe-instant",
        |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            wasmtime::bail!(
                "policies may not sleep or wait (wasi:clocks/monotonic-clock.subscribe-instant)"
            )
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The child's side: caps its own memory, compiles stdin, writes the
/// artifact to stdout. For the `oasis __compile-worker` subcommand.
///
/// # Errors
/// A message for stderr when the module does not compile or I/O fails.
pub fn serve_compile_worker(memory_bytes: u64, config: RuntimeConfig) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut wasm = Vec::new();
    std::io::stdin()
        .read_to_end(&mut wasm)
        .map_err(|e| format!("reading the module: {e}"))?;
    // The engine's pools (reserved once, like the parent's) come before the
    // cap: the cap bounds what compiling adds.
    let runtime = Runtime::new(config).map_err(|e| e.to_string())?;
    compile_worker::limit_data(memory_bytes)?;
    let artifact = runtime
        .engine()
        .precompile_component(&wasm)
        .map_err(|e| format!("{e:#}"))?;
    if let Some(stats) = runtime.flush_function_cache() {
        // The parent logs this line with its own ("compiled in N ms").
        eprintln!(
            "functions: {} from the cache, {} compiled",
            stats.hits, stats.misses
        );
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&artifact)
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the artifact: {e}"))
}

#[cfg(test)]
mod tests {
    use super::swap_areas;

    #[test]
    fn swap_areas_counts_the_lines_after_the_header() {
        let none = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert_eq!(swap_areas(none), 0);
        let one =
            format!("{none}/swapfile                               file\t\t4194300\t\t0\t\t-2\n");
        assert_eq!(swap_areas(&one), 1);
        assert_eq!(swap_areas(""), 0);
    }
}
