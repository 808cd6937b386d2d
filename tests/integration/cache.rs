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
