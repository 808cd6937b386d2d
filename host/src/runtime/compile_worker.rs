//! Compiling a component in a child process: a hard memory cap, and a
//! compile past its time ceiling is killed instead of left running.
//!
//! **Why.** Cranelift's time and memory grow with the code it is given, and
//! a thread cannot be stopped: a compile past [`CompileLimits::timeout`]
//! used to run to its end in the background, holding its memory. In a child
//! process the compile runs under `RLIMIT_DATA` (its heap cannot grow more
//! than [`CompileWorker::memory_bytes`] past the engine's own pools) and is
//! killed at the ceiling, so a
//! hostile or merely huge module costs at most the cap and the ceiling,
//! once.
//!
//! The protocol is the `oasis` binary's hidden `__compile-worker`
//! subcommand: the module's bytes on stdin, the engine's precompiled
//! artifact on stdout (exit 0), or a message on stderr (exit 1). The child
//! builds its engine with the same [`RuntimeConfig`] as the parent, so the
//! artifact is compatible (wasmtime checks that again when it is loaded),
//! and the parent writes it to the compile cache like one of its own.
//!
//! [`CompileLimits::timeout`]: crate::CompileLimits::timeout

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::config::RuntimeConfig;

/// The child process that compiles components ([`RuntimeConfig::compile_worker`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileWorker {
    /// The `oasis` binary (its hidden `__compile-worker` subcommand).
    pub exe: PathBuf,
    /// The compile's memory cap (`RLIMIT_DATA` of the child), bytes.
    pub memory_bytes: u64,
    /// How long a load waits for its compile before it returns
    /// [`LoadError::Compiling`](crate::LoadError::Compiling) and lets the
    /// compile go on in the background (`None`: until the ceiling). The
    /// server waits briefly, so that one slow compile never holds up a
    /// reload pass: the policy loads in a later pass, from the cache.
    pub load_wait: Option<Duration>,
}

/// Compiles in progress or finished and not yet taken, by component
/// digest: a load that stopped waiting finds its compile here next time
/// instead of starting another, and loads of one module at once share one
/// compile, each getting its result.
#[derive(Default)]
pub(crate) struct Jobs {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    on_done: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Set once the initial policy set is loaded: loads then wait only
    /// `load_wait`.
    brief: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Job {
    result: Mutex<Option<Result<Vec<u8>, WorkerError>>>,
    done: Condvar,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("jobs", &lock(&self.jobs).len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Jobs {
    /// Loads wait only `load_wait` from now on.
    pub(crate) fn stop_waiting_to_the_end(&self) {
        self.brief.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Calls `f` whenever a compile finishes (the server starts a reload
    /// pass, which then finds the result).
    pub(crate) fn on_done(&self, f: Arc<dyn Fn() + Send + Sync>) {
        *lock(&self.on_done) = Some(f);
    }

    /// The artifact of `wasm` (digest `hex`): compiled in the worker, or
    /// found finished from an earlier load; waits at most `wait`.
    pub(crate) fn precompile(
        self: &Arc<Self>,
        worker: &CompileWorker,
        config: &RuntimeConfig,
        hex: &str,
        wasm: &[u8],
        timeout: Duration,
        cache: impl FnOnce(&[u8]) -> bool + Send + 'static,
    ) -> Option<Result<Vec<u8>, WorkerError>> {
        let started = Instant::now();
        let job = {
            let mut jobs = lock(&self.jobs);
            match jobs.get(hex) {
                Some(job) => job.clone(),
                None => {
                    let job = Arc::new(Job::default());
                    jobs.insert(hex.to_string(), job.clone());
                    let (this, job2, key) = (self.clone(), job.clone(), hex.to_string());
                    let (worker, config, wasm) = (worker.clone(), config.clone(), wasm.to_vec());
                    // The compile's log lines belong to the load that
                    // started it (its span names the policy).
                    let span = tracing::Span::current();
                    let spawned = std::thread::Builder::new()
                        .name("oasis-compile".into())
                        .spawn(move || {
                            let _load = span.enter();
                            let result = precompile(&worker, &config, &key, &wasm, timeout);
                            let cached = matches!(&result, Ok(artifact) if cache(artifact));
                            *lock(&job2.result) = Some(result);
                            job2.done.notify_all();
                            // A cached artifact is found there by the next
                            // load; anything else waits here to be taken.
                            if cached {
                                let mut jobs = lock(&this.jobs);
                                if jobs.get(&key).is_some_and(|j| Arc::ptr_eq(j, &job2)) {
                                    jobs.remove(&key);
                                }
                            }
                            let notify = lock(&this.on_done).clone();
                            if let Some(f) = notify {
                                f();
                            }
                        });
                    if let Err(e) = spawned {
                        jobs.remove(hex);
                        return Some(Err(WorkerError::Failed(format!(
                            "cannot start a compile thread: {e}"
                        ))));
                    }
                    job
                }
            }
        };
        // The job kills its worker at the ceiling, so waiting a little
        // longer than that always sees it finish.
        let to_the_end = timeout + Duration::from_secs(5);
        let wait = match worker.load_wait {
            Some(w) if self.brief.load(std::sync::atomic::Ordering::Relaxed) => w,
            _ => to_the_end,
        };
        let mut result = lock(&job.result);
        while result.is_none() {
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                return None;
            }
            result = job
                .done
                .wait_timeout(result, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        // Every waiter gets the result (two manifests of one module share
        // the compile): it is cloned, never taken, so a second waiter does
        // not find it gone and wait out the ceiling for nothing.
        let taken = result.clone();
        drop(result);
        let mut jobs = lock(&self.jobs);
        if jobs.get(hex).is_some_and(|j| Arc::ptr_eq(j, &job)) {
            jobs.remove(hex);
        }
        taken
    }
}

/// Default memory cap of a compile: Rust policies need tens of MiB, the
/// ~18 MB Python components a few hundred.
pub const DEFAULT_MEMORY_BYTES: u64 = 2 << 30;

/// How a compile in the child failed.
#[derive(Debug, Clone)]
pub(crate) enum WorkerError {
    /// The ceiling passed: the child was killed.
    Timeout { waited: Duration },
    /// The compile failed, ran out of its memory, or the child could not run.
    Failed(String),
}

/// Compiles `wasm` (digest `hex`) in a child process within `timeout`; the
/// precompiled artifact on success.
pub(crate) fn precompile(
    worker: &CompileWorker,
    config: &RuntimeConfig,
    hex: &str,
    wasm: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, WorkerError> {
    let started = Instant::now();
    let mut progress = super::CompileProgress::start(hex, wasm.len(), config.compile_progress);
    let mut cmd = Command::new(&worker.exe);
    cmd.arg("__compile-worker")
        .arg("--memory-bytes")
        .arg(worker.memory_bytes.to_string())
        .arg("--max-instances")
        .arg(config.max_instances.to_string())
        // `oasis` allocates with mimalloc, which by default maps a 1 GiB
        // arena up front: counted in `VmData` before the cap is set, so the
        // compile would allocate inside it unchecked (the 64 MiB cap of
        // tests/integration/compile_bounds.rs no longer held). Without the
        // reservation each segment is mapped as needed, under
        // `RLIMIT_DATA`.
        .env("MIMALLOC_ARENA_RESERVE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if config.measure_fuel || config.fuel_limit.is_some() {
        cmd.arg("--fuel");
    }
    if let Some(dir) = &config.cache_dir {
        cmd.arg("--cache-dir").arg(dir);
    }
    let mut child = cmd.spawn().map_err(|e| {
        WorkerError::Failed(format!(
            "cannot start the compile worker {}: {e}",
            worker.exe.display()
        ))
    })?;
    // Writing and reading on their own threads: neither pipe may fill up
    // while the other waits.
    let mut stdin = child.stdin.take().expect("piped");
    let input = wasm.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stderr.by_ref().take(16 << 10).read_to_string(&mut out);
        out
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                progress.done(false, None);
                return Err(WorkerError::Timeout {
                    waited: started.elapsed(),
                });
            }
            Ok(None) => {
                progress.tick();
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(WorkerError::Failed(format!(
                    "waiting for the compile worker: {e}"
                )));
            }
        }
    };
    let _ = writer.join();
    let artifact = reader.join().ok().and_then(Result::ok).unwrap_or_default();
    let message = errors.join().unwrap_or_default();
    let ok = status.success() && !artifact.is_empty();
    progress.done(ok, reuse_of(&message));
    if ok {
        return Ok(artifact);
    }
    let message = message.trim();
    let cap = worker.memory_bytes >> 20;
    Err(WorkerError::Failed(
        if message.contains("memory allocation")
            || message.contains("out of memory")
            || status.code().is_none()
        {
            format!(
                "the compiler ran out of its {cap} MiB memory cap ({}{})",
                status,
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            )
        } else if message.is_empty() {
            format!("the compile worker failed ({status})")
        } else {
            message.to_string()
        },
    ))
}

/// The child's report of what the function cache gave: the line
/// `functions: H from the cache, M compiled` of its stderr, which may hold
/// other lines too (a warning about a pack it could not use).
fn reuse_of(message: &str) -> Option<super::function_cache::FunctionCacheStats> {
    message.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("functions: ")?;
        let (hits, rest) = rest.split_once(" from the cache, ")?;
        let misses = rest.strip_suffix(" compiled")?;
        Some(super::function_cache::FunctionCacheStats {
            hits: hits.parse().ok()?,
            misses: misses.parse().ok()?,
        })
    })
}

/// Caps this process's data segment (heap and private writable mappings)
/// at its current size plus `bytes`.
pub(super) fn limit_data(bytes: u64) -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    let used_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmData in /proc/self/status")?;
    let cap = (used_kib << 10).saturating_add(bytes);
    let limit = libc::rlimit {
        rlim_cur: cap as libc::rlim_t,
        rlim_max: cap as libc::rlim_t,
    };
    // SAFETY: `setrlimit` reads a valid, fully initialised `rlimit` and only
    // changes this (child) process's own limit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot cap the compile's memory: {}",
            std::io::Error::last_os_error()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::reuse_of;
    use crate::runtime::function_cache::FunctionCacheStats;

    #[test]
    fn the_reuse_line_is_found_among_other_stderr_lines() {
        let stats = FunctionCacheStats {
            hits: 21019,
            misses: 1303,
        };
        assert_eq!(
            reuse_of("functions: 21019 from the cache, 1303 compiled\n"),
            Some(stats)
        );
        let noisy = "WARN function cache pack not used; removed\n\
                     functions: 21019 from the cache, 1303 compiled\n";
        assert_eq!(reuse_of(noisy), Some(stats));
        assert_eq!(reuse_of("error: out of memory"), None);
        assert_eq!(reuse_of("functions: many from the cache, 3 compiled"), None);
    }
}
