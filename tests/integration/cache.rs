//! The compiled-component cache: entries are written, reused, and a corrupt
//! or truncated entry is detected and replaced, never loaded.

use oasis::{Limits, Policy, Runtime, RuntimeConfig};
use oasis_test_components::GUARDED_BOOST;

fn entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect()
}

#[test]
fn cache_entries_are_reused_and_corruption_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        measure_fuel: false,
        max_instances: 8,
        ..Default::default()
    })
    .unwrap();
    let load = || Policy::load_file(&rt, GUARDED_BOOST.as_ref(), "{}", Limits::default()).unwrap();

    let first = load();
    let files = entries(dir.path());
    assert_eq!(files.len(), 1, "one entry per component and engine");
    let digest = first
        .info()
        .digest
        .trim_start_matches("sha256:")
        .to_string();
    assert!(
        files[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&digest)
    );
    let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();

    // Reused: loading again does not rewrite the entry.
    std::thread::sleep(std::time::Duration::from_millis(20));
    load();
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        written
    );

    // Flipped byte: detected by the checksum, recompiled, rewritten.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&files[0], &bytes).unwrap();
    let p = load();
    assert!(crate::harness::score(&p, &crate::harness::small_body(false)).is_ok());
    let repaired = std::fs::read(&files[0]).unwrap();
    assert_ne!(repaired, bytes, "the corrupt entry was replaced");

    // Truncated: same.
    std::fs::write(&files[0], &repaired[..100]).unwrap();
    load();
    assert_eq!(std::fs::read(&files[0]).unwrap(), repaired);
}

/// The CLI's commands and the server compile a component once: `inspect`,
/// `run` and `test` (and a runtime sized like the server's) share one cache
/// entry per digest. (`oasis run --fuel` compiles with fuel metering, a
/// separate entry by design.)
#[test]
fn cli_commands_and_the_server_share_one_entry_per_component() {
    let dir = tempfile::tempdir().unwrap();
    let oasis = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_oasis"))
            .args(args)
            .args(["--deadline-ms", "2000"])
            .env("OASIS_CACHE_DIR", dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    let example = format!("{}/examples/request.json", oasis_test_components::ROOT);
    oasis(&["inspect", GUARDED_BOOST]);
    oasis(&["run", GUARDED_BOOST, "--request", &example]);
    let fixtures = format!(
        "{}/policies/guarded-boost/fixtures",
        oasis_test_components::ROOT
    );
    oasis(&["test", GUARDED_BOOST, &fixtures]);
    assert_eq!(entries(dir.path()).len(), 1, "{:?}", entries(dir.path()));
    // A server-sized pool reuses the same entry.
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        measure_fuel: false,
        max_instances: 256,
        ..RuntimeConfig::default()
    })
    .unwrap();
    Policy::load_file(&rt, GUARDED_BOOST.as_ref(), "{}", Limits::default()).unwrap();
    assert_eq!(entries(dir.path()).len(), 1);
}

/// The function cache (`<cache dir>/functions/`): a component that differs
/// from one compiled before only in what its functions do not depend on
/// (here a custom section; for a Python policy, the interpreter's memory
/// snapshot after a one-line edit) is a new component to the component
/// cache, yet most of its functions come from the function cache,
/// and it scores exactly as the original does. Through the CLI, so that the
/// cache outlives the process as it does between the server's compiles.
#[test]
fn a_component_changed_outside_its_code_reuses_its_compiled_functions() {
    let dir = tempfile::tempdir().unwrap();
    let oasis = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_oasis"))
            .args(args)
            .env("OASIS_CACHE_DIR", dir.path())
            .env("OASIS_LOG", "info")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let example = format!("{}/examples/request.json", oasis_test_components::ROOT);
    let (original, first) = oasis(&["run", GUARDED_BOOST, "--request", &example, "--json"]);
    assert!(
        first.contains(" of ") && first.contains("functions from the function cache"),
        "the first compile reports the function cache: {first}"
    );
    let packs = |d: &std::path::Path| {
        std::fs::read_dir(d.join("functions"))
            .map(|r| {
                r.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "pack")
                })
                .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(packs(dir.path()), 1, "the first compile wrote one pack");

    // The same component with a custom section appended: another digest.
    let mut wasm = std::fs::read(GUARDED_BOOST).unwrap();
    let name = b"oasis-test";
    let payload = b"anything but code";
    wasm.push(0); // custom section id
    wasm.push((1 + name.len() + payload.len()) as u8);
    wasm.push(name.len() as u8);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(payload);
    let changed = dir.path().join("changed.wasm");
    std::fs::write(&changed, &wasm).unwrap();
    let (output, second) = oasis(&[
        "run",
        changed.to_str().unwrap(),
        "--request",
        &example,
        "--json",
    ]);
    let line = second
        .lines()
        .find(|l| l.contains("functions from the function cache"))
        .unwrap_or_else(|| panic!("the second load compiled: {second}"));
    // "(N of N functions from the function cache)"
    let counts: Vec<u64> = line
        .split(['(', ')'])
        .nth(1)
        .unwrap()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(counts.len(), 2, "{line}");
    assert!(
        counts[1] > 100,
        "a Rust policy compiles hundreds of functions: {line}"
    );
    // Most, not all: a few functions (4-7% of this one's, varying run to
    // run) get another key from one compile to the next in wasmtime 48
    // and are compiled again (their code then joins a second pack).
    assert!(
        counts[0] * 10 >= counts[1] * 8,
        "at least 80% of the functions reused: {line}"
    );
    assert!(
        packs(dir.path()) <= 2,
        "at most the few recompiled written: {second}"
    );
    // Scores, eligibility and reasons as the original's (the digest differs).
    let scores = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["scores"].clone();
    assert!(scores(&original).as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(scores(&output), scores(&original));
}
