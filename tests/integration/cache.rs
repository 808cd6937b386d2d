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
