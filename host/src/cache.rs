//! On-disk cache of compiled components.
//!
//! Cranelift takes tens of milliseconds per component; deserializing a
//! precompiled artifact takes a fraction of one. Entries are keyed by the
//! component's SHA-256 and the engine's compatibility hash (an artifact built
//! under one `Config` does not load under another). Each file carries a
//! SHA-256 of its payload and is written atomically (temp file + rename), so a
//! torn or corrupted entry is detected and recompiled, never loaded.
//!
//! An entry is native code that runs outside the sandbox, so the checksum
//! (which detects corruption, not tampering) is not enough: the cache is
//! used only if the directory and the entry belong to this user and are not
//! writable by anyone else. The directory is created with mode 0700.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The first 12 hex digits of a hash (`sha256:…` or bare hex), for logs,
/// metric labels and summaries.
///
/// ```
/// assert_eq!(oasis::cache::short("sha256:0123456789abcdef"), "0123456789ab");
/// ```
pub fn short(hash: &str) -> &str {
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    &hex[..hex.len().min(12)]
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A component's identity: `sha256:` and the hex SHA-256 of its bytes, as
/// in responses, the version store and decision logs.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Compiles `wasm` (whose digest is `digest`), through the cache in `dir` when given.
pub(crate) fn compile(
    engine: &Engine,
    wasm: &[u8],
    digest: &str,
    dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    let Some(dir) = dir else {
        return Component::new(engine, wasm);
    };
    if let Err(why) = trusted_dir(dir) {
        tracing::warn!(dir = %dir.display(), %why, "compile cache not used");
        return Component::new(engine, wasm);
    }
    let path = entry_path(engine, digest, dir);
    if let Some(component) = load(engine, &path) {
        tracing::debug!(path = %path.display(), "compiled component loaded from cache");
        return Ok(component);
    }
    let artifact = engine.precompile_component(wasm)?;
    if let Err(e) = store(dir, &path, &artifact) {
        // The cache is an optimisation: a read-only or full disk must not
        // stop a policy from loading.
        tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
    }
    // SAFETY: `artifact` was produced just now by `precompile_component` on
    // this very engine, which is the contract `deserialize` requires.
    unsafe { Component::deserialize(engine, &artifact) }
}

/// The cached compilation of `digest`, if the cache in `dir` has a sound one
/// (a lookup only: compiles nothing).
pub(crate) fn cached(engine: &Engine, digest: &str, dir: Option<&Path>) -> Option<Component> {
    let dir = dir?;
    trusted_dir(dir).ok()?;
    load(engine, &entry_path(engine, digest, dir))
}

fn entry_path(engine: &Engine, digest: &str, dir: &Path) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{digest}-{:016x}.cwasm", h.finish()))
}

/// Reads and checks an entry; `None` (and the entry removed) when it is
/// missing, truncated, corrupt or rejected by the engine.
fn load(engine: &Engine, path: &Path) -> Option<Component> {
    let file = std::fs::File::open(path).ok()?;
    if let Err(why) = file
        .metadata()
        .map_err(|e| e.to_string())
        .and_then(|m| trusted(&m))
    {
        tracing::warn!(path = %path.display(), %why, "untrusted compile-cache entry; recompiling");
        let _ = std::fs::remove_file(path);
        return None;
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut bytes).ok()?;
    let valid = bytes.len() > 32 && Sha256::digest(&bytes[32..]).as_slice() == &bytes[..32];
    if !valid {
        tracing::warn!(path = %path.display(), "corrupt compile-cache entry; recompiling");
        let _ = std::fs::remove_file(path);
        return None;
    }
    // SAFETY: the payload is byte-for-byte what `precompile_component` wrote
    // (its SHA-256 matches, and the file was renamed into place only once
    // complete), under a key that includes this engine's compatibility hash.
    // `deserialize` additionally checks the engine configuration header.
    match unsafe { Component::deserialize(engine, &bytes[32..]) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unusable compile-cache entry; recompiling");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// Creates `dir` (mode 0700) if needed and checks it can be trusted.
pub(crate) fn trusted_dir(dir: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create it: {e}"))?;
    trusted_dir_exists(dir)
}

/// Checks an existing `dir` can be trusted (creates nothing).
pub(crate) fn trusted_dir_exists(dir: &Path) -> Result<(), String> {
    trusted(&std::fs::metadata(dir).map_err(|e| e.to_string())?)
}

/// Owned by this user and writable by no one else.
pub(crate) fn trusted(meta: &std::fs::Metadata) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(format!(
                "owned by uid {}, not by this user ({me})",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "writable by group or others (mode {:o})",
                meta.mode() & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// Writes an artifact precompiled elsewhere (the compile worker) for
/// `digest`, and loads it; `None` when it does not load (the caller then
/// compiles in process).
pub(crate) fn insert(
    engine: &Engine,
    digest: &str,
    dir: Option<&Path>,
    artifact: &[u8],
) -> Option<Component> {
    if let Some(dir) = dir.filter(|d| trusted_dir(d).is_ok()) {
        let path = entry_path(engine, digest, dir);
        if let Err(e) = store(dir, &path, artifact) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
        }
    }
    // SAFETY: the artifact was produced by `precompile_component` in this
    // program's own compile worker (a child process of this binary, given
    // this engine's configuration, over a pipe nothing else writes to);
    // `deserialize` checks that it matches this engine's version and
    // settings before using it.
    unsafe { Component::deserialize(engine, artifact) }.ok()
}

fn store(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&Sha256::digest(artifact))?;
    tmp.write_all(artifact)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    evict(dir, MAX_ENTRIES);
    Ok(())
}

/// Entries kept in the cache directory; the oldest beyond it are removed
/// whenever an entry is written (a removed entry is only recompiled).
pub const MAX_ENTRIES: usize = 256;

/// Removes the oldest `*.cwasm` entries of `dir` beyond `keep`.
fn evict(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= keep {
        return;
    }
    files.sort();
    for (_, path) in &files[..files.len() - keep] {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot evict a compile-cache entry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_world_writable_cache_directory_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        trusted_dir(&cache).unwrap();
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "created private");
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            trusted_dir(&cache)
                .unwrap_err()
                .contains("writable by group or others")
        );
    }

    #[test]
    fn eviction_keeps_the_newest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        for i in 0..5u64 {
            let p = dir.path().join(format!("e{i}.cwasm"));
            std::fs::write(&p, b"x").unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(base + std::time::Duration::from_secs(i))
                .unwrap();
        }
        std::fs::write(dir.path().join("other.txt"), b"not an entry").unwrap();
        evict(dir.path(), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["e2.cwasm", "e3.cwasm", "e4.cwasm", "other.txt"]);
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
