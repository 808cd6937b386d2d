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

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::runtime::{Runtime, RuntimeConfig};

/// The child process that compiles components ([`RuntimeConfig::compile_worker`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileWorker {
    /// The `oasis` binary (its hidden `__compile-worker` subcommand).
    pub exe: PathBuf,
    /// The compile's memory cap (`RLIMIT_DATA` of the child), bytes.
    pub memory_bytes: u64,
}

/// Default memory cap of a compile: Rust policies need tens of MiB, the
/// ~18 MB Python components a few hundred.
pub const DEFAULT_MEMORY_BYTES: u64 = 2 << 30;

/// How a compile in the child failed.
#[derive(Debug)]
pub(crate) enum WorkerError {
    /// The ceiling passed: the child was killed.
    Timeout { waited: Duration },
    /// The compile failed, ran out of its memory, or the child could not run.
    Failed(String),
}

/// Compiles `wasm` in a child process within `timeout`; the precompiled
/// artifact on success.
pub(crate) fn precompile(
    worker: &CompileWorker,
    config: &RuntimeConfig,
    wasm: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, WorkerError> {
    let started = Instant::now();
    let mut cmd = Command::new(&worker.exe);
    cmd.arg("__compile-worker")
        .arg("--memory-bytes")
        .arg(worker.memory_bytes.to_string())
        .arg("--max-instances")
        .arg(config.max_instances.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if config.measure_fuel {
        cmd.arg("--fuel");
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
                return Err(WorkerError::Timeout {
                    waited: started.elapsed(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
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
    if status.success() && !artifact.is_empty() {
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

/// The child's side: caps its own memory, compiles stdin, writes the
/// artifact to stdout. For the `oasis __compile-worker` subcommand.
///
/// # Errors
/// A message for stderr when the module does not compile or I/O fails.
pub fn serve_one(memory_bytes: u64, config: RuntimeConfig) -> Result<(), String> {
    let mut wasm = Vec::new();
    std::io::stdin()
        .read_to_end(&mut wasm)
        .map_err(|e| format!("reading the module: {e}"))?;
    // The engine's pools (reserved once, like the parent's) come before the
    // cap: the cap bounds what compiling adds.
    let runtime = Runtime::new(config).map_err(|e| e.to_string())?;
    limit_data(memory_bytes)?;
    let artifact = runtime
        .engine()
        .precompile_component(&wasm)
        .map_err(|e| format!("{e:#}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&artifact)
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the artifact: {e}"))
}

/// Caps this process's data segment (heap and private writable mappings)
/// at its current size plus `bytes`.
fn limit_data(bytes: u64) -> Result<(), String> {
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
