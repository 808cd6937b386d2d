//! Bounded compilation (issue 13): a component with too many functions is
//! refused before compiling, a compile past the time ceiling is a load error,
//! and neither holds up another policy dropped in at the same time.

use std::path::Path;
use std::time::{Duration, Instant};

use oasis::{CompileLimits, Limits, LoadError, Policy, Runtime, RuntimeConfig};
use oasis_test_components::BASELINE;

use crate::harness::server::{Harness, TestServer, atomic_write, config_in, install, policy};

/// A component whose one core module defines `n` empty functions (and
/// exports nothing: what matters happens before linking). `salt` goes into a
/// custom section, so each call can make bytes the compile cache has never
/// seen.
pub fn many_functions(n: u32, salt: u64) -> Vec<u8> {
    fn leb(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, content: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(content.len() as u64, out);
        out.extend_from_slice(content);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut module); // one type: func() -> ()
    let mut funcs = Vec::new();
    leb(n.into(), &mut funcs);
    funcs.resize(funcs.len() + n as usize, 0); // all of type 0
    section(3, &funcs, &mut module);
    let mut code = Vec::new();
    leb(n.into(), &mut code);
    for _ in 0..n {
        code.extend_from_slice(&[2, 0, 0x0b]); // size 2: no locals, `end`
    }
    section(10, &code, &mut module);
    let mut custom = vec![4];
    custom.extend_from_slice(b"salt");
    custom.extend_from_slice(&salt.to_le_bytes());
    section(0, &custom, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component); // core module section
    component
}

fn fresh_salt() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn too_many_functions_are_refused_before_compiling_and_a_slow_compile_times_out() {
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        max_instances: 8,
        compile: CompileLimits {
            max_functions: 10_000,
            timeout: Duration::from_millis(1),
        },
        ..Default::default()
    })
    .unwrap();
    let started = Instant::now();
    let err = Policy::load(&rt, &many_functions(100_000, 1), "{}", Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::TooManyFunctions {
                functions: 100_000,
                limit: 10_000
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--max-functions"), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused before compiling, took {:?}",
        started.elapsed()
    );
    let err = Policy::load(
        &rt,
        &many_functions(5_000, fresh_salt()),
        "{}",
        Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, LoadError::CompileTimeout { limit_ms: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--max-compile-ms"), "{err}");
}

/// Writes `wasm` as `key`'s module with a manifest.
fn drop_in(dir: &Path, key: &str, wasm: &[u8]) {
    atomic_write(&dir.join(format!("{key}.wasm")), wasm);
    atomic_write(
        &dir.join(format!("{key}.toml")),
        format!("module = \"{key}.wasm\"\n").as_bytes(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_compiles_do_not_hold_up_a_policy_dropped_in_at_the_same_time() {
    let limits = CompileLimits {
        max_functions: 10_000,
        timeout: Duration::from_millis(1),
    };
    // The baseline is compiled into the server's cache first (a cache hit
    // is not a compile), so only the generated components meet the 1 ms ceiling.
    let warm = tempfile::tempdir().unwrap();
    let cfg = config_in(warm.path(), |_| {});
    let rt = Runtime::new(cfg.runtime.clone()).unwrap();
    Policy::load_file(&rt, BASELINE.as_ref(), "{}", Limits::default()).unwrap();
    drop(rt);

    let s = TestServer::start_with(
        |d| install(d, "base", BASELINE, ""),
        |c| c.runtime.compile = limits,
    )
    .await;
    let dropped = Instant::now();
    drop_in(s.dir.path(), "big", &many_functions(100_000, 2));
    drop_in(s.dir.path(), "slow", &many_functions(5_000, fresh_salt()));
    install(s.dir.path(), "fresh", BASELINE, "");
    let v = s
        .wait_until(|v| policy(v, "fresh").is_some_and(|p| p["status"] == "active"))
        .await;
    let became_active = dropped.elapsed();
    assert!(
        became_active < Duration::from_secs(3),
        "the new policy waited {became_active:?}"
    );
    let v = if policy(&v, "slow").is_some_and(|p| p["failure"]["error"].is_string())
        && policy(&v, "big").is_some_and(|p| p["failure"]["error"].is_string())
    {
        v
    } else {
        s.wait_until(|v| {
            ["big", "slow"]
                .iter()
                .all(|k| policy(v, k).is_some_and(|p| p["failure"]["error"].is_string()))
        })
        .await
    };
    let error = |k| {
        policy(&v, k).unwrap()["failure"]["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        error("big").contains("100000 functions"),
        "{}",
        error("big")
    );
    assert!(
        error("slow").contains("did not finish within 1 ms"),
        "{}",
        error("slow")
    );
    eprintln!("fresh policy active {became_active:?} after the drop");
    s.shutdown().await;
}

/// A runtime compiling in the `oasis` binary's compile worker under
/// `memory_mb`, with a compile ceiling of `timeout` and a fresh cache.
fn worker_runtime(memory_mb: u64, timeout: Duration, cache: &Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        max_instances: 8,
        compile: CompileLimits {
            max_functions: 200_000,
            timeout,
        },
        compile_worker: Some(oasis::runtime::compile_worker::CompileWorker {
            exe: env!("CARGO_BIN_EXE_oasis").into(),
            memory_bytes: memory_mb << 20,
            load_wait: None,
        }),
        ..Default::default()
    })
    .unwrap()
}

/// Compile workers that are children of this process with a memory cap of
/// `memory_mb`, still running (other tests of this process run workers too).
fn live_workers(memory_mb: u64) -> usize {
    let cap = format!("--memory-bytes\0{}\0", memory_mb << 20);
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let p = e.path();
            let cmdline = std::fs::read(p.join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            // Field 4 of /proc/<pid>/stat (after the `(comm)`) is the parent.
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1));
            String::from_utf8_lossy(&cmdline).contains("__compile-worker")
                && String::from_utf8_lossy(&cmdline).contains(&cap)
                && ppid == Some(me.as_str())
                && !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
        })
        .count()
}

#[test]
fn a_compile_worker_compiles_caps_memory_and_is_killed_at_the_ceiling() {
    let cache = tempfile::tempdir().unwrap();
    // A real policy compiles in the worker and lands in the cache.
    let rt = worker_runtime(1024, Duration::from_secs(60), cache.path());
    let policy = Policy::load_file(&rt, BASELINE.as_ref(), "{}", Limits::default()).unwrap();
    assert_eq!(policy.info().name, "baseline");
    assert!(
        std::fs::read_dir(cache.path()).unwrap().count() >= 1,
        "the worker's artifact is cached"
    );
    // 40,000 functions need a few hundred MiB to compile: over a 64 MiB
    // cap the compile fails, naming the cap, and the server lives on.
    let rt = worker_runtime(64, Duration::from_secs(60), cache.path());
    let err = Policy::load(
        &rt,
        &many_functions(40_000, fresh_salt()),
        "{}",
        Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, LoadError::Compile(m) if m.contains("64 MiB memory cap")),
        "{err}"
    );
    // Past the ceiling the worker is killed, not left compiling.
    let rt = worker_runtime(1023, Duration::from_millis(50), cache.path());
    let err = Policy::load(
        &rt,
        &many_functions(40_000, fresh_salt()),
        "{}",
        Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, LoadError::CompileTimeout { limit_ms: 50, .. }),
        "{err}"
    );
    assert_eq!(
        live_workers(1023),
        0,
        "the timed-out worker was killed and reaped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compile_outlives_its_pass_and_a_policy_dropped_in_meanwhile_loads_first() {
    let cache = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(
        |d| install(d, "base", BASELINE, ""),
        |c| {
            c.runtime.cache_dir = Some(cache.path().to_path_buf());
            c.runtime.compile = CompileLimits {
                max_functions: 200_000,
                timeout: Duration::from_secs(120),
            };
            c.runtime.compile_worker = Some(oasis::runtime::compile_worker::CompileWorker {
                exe: env!("CARGO_BIN_EXE_oasis").into(),
                memory_bytes: 2 << 30,
                load_wait: Some(Duration::from_millis(100)),
            });
        },
    )
    .await;
    // A compile of seconds (40,000 functions), then a policy dropped in
    // while it runs: the pass stops waiting for the slow compile after
    // 100 ms, so the new policy is served while the compile goes on.
    drop_in(s.dir.path(), "slow", &many_functions(40_000, fresh_salt()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    install(s.dir.path(), "fresh", BASELINE, "");
    let v = s
        .wait_until(|v| policy(v, "fresh").is_some_and(|p| p["status"] == "active"))
        .await;
    assert!(
        policy(&v, "slow").is_some_and(|p| p["failure"].is_null() && p["active"].is_null()),
        "the slow compile is still running, not failed: {}",
        policy(&v, "slow").unwrap()
    );
    // When it finishes, a pass loads it from the cache: this component
    // exports nothing, so it is refused as a wrong contract, after compiling.
    let v = s
        .wait_until(|v| policy(v, "slow").is_some_and(|p| p["failure"]["error"].is_string()))
        .await;
    let error = policy(&v, "slow").unwrap()["failure"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("wrong contract"), "{error}");
    s.shutdown().await;
}

/// Two loads of one uncached module at once (two manifests of one module,
/// say: settings variants) share its compile, and both get its result: the
/// second does not wait out the ceiling for nothing.
#[test]
fn two_loads_sharing_a_compile_both_get_its_result() {
    let cache = tempfile::tempdir().unwrap();
    let ceiling = Duration::from_secs(20);
    let rt = worker_runtime(1024, ceiling, cache.path());
    let wasm = many_functions(10_000, fresh_salt());
    let barrier = std::sync::Barrier::new(2);
    let started = Instant::now();
    let results: Vec<(Result<Policy, LoadError>, Duration)> = std::thread::scope(|s| {
        let loads: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let r = Policy::load(&rt, &wasm, "{}", Limits::default());
                    (r, started.elapsed())
                })
            })
            .collect();
        loads.into_iter().map(|l| l.join().unwrap()).collect()
    });
    for (r, took) in &results {
        let err = r.as_ref().expect_err("this component exports nothing");
        assert!(
            matches!(err, LoadError::WrongContract { .. }),
            "each load gets the compile's result, then fails linking: {err} (after {took:?})"
        );
        assert!(
            *took < ceiling / 2,
            "a load waited {took:?}, towards the ceiling of {ceiling:?}: {err}"
        );
    }
}

/// The worker binary caps its own memory only without mimalloc's arena
/// reservation: started without `MIMALLOC_ARENA_RESERVE=0` it refuses,
/// naming the variable, and compiles nothing; started as the parent starts
/// it, it compiles the same module.
#[test]
fn a_compile_worker_started_without_the_arena_setting_refuses_to_compile() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let wasm = std::fs::read(BASELINE).unwrap();
    let run = |reserve: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_oasis"));
        cmd.args(["__compile-worker", "--memory-bytes"])
            .arg((1u64 << 30).to_string())
            .args(["--max-instances", "1"])
            .env_remove("MIMALLOC_ARENA_RESERVE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(v) = reserve {
            cmd.env("MIMALLOC_ARENA_RESERVE", v);
        }
        let mut child = cmd.spawn().unwrap();
        // The refusing worker may exit before reading: a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(&wasm);
        child.wait_with_output().unwrap()
    };
    for reserve in [None, Some("1GiB")] {
        let out = run(reserve);
        assert_eq!(out.status.code(), Some(2), "{reserve:?}");
        assert!(out.stdout.is_empty(), "{reserve:?}: no artifact");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("MIMALLOC_ARENA_RESERVE=0"),
            "{reserve:?}: {err}"
        );
    }
    let out = run(Some("0"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty(), "the artifact");
}
