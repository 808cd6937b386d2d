//! On-disk cache of compiled components.
//!
//! Cranelift takes tens of milliseconds per component; deserializing a
//! precompiled artifact takes a fraction of one. Entries are keyed by the
//! component's SHA-256 and the engine's compatibility hash (an artifact built
//! under one `Config` does not load under another). Each file carries a
//! SHA-256 of its payload and is written atomically (temp file + rename), so a
//! torn or corrupted entry is detected and recompiled, never loaded.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::LoadError;

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compiles `wasm` (whose digest is `digest`), through the cache in `dir` when given.
pub(crate) fn compile(
    engine: &Engine,
    wasm: &[u8],
    digest: &str,
    dir: Option<&Path>,
) -> Result<Component, LoadError> {
    let Some(dir) = dir else {
        return Component::new(engine, wasm).map_err(|e| LoadError::Compile(format!("{e:#}")));
    };
    let path = entry_path(engine, digest, dir);
    if let Some(component) = load(engine, &path) {
        tracing::debug!(path = %path.display(), "compiled component loaded from cache");
        return Ok(component);
    }
    let artifact = engine
        .precompile_component(wasm)
        .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    if let Err(e) = store(dir, &path, &artifact) {
        // The cache is an optimisation: a read-only or full disk must not
        // stop a policy from loading.
        tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
    }
    // SAFETY: `artifact` was produced just now by `precompile_component` on
    // this very engine, which is the contract `deserialize` requires.
    unsafe { Component::deserialize(engine, &artifact) }
        .map_err(|e| LoadError::Compile(format!("{e:#}")))
}

fn entry_path(engine: &Engine, digest: &str, dir: &Path) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{digest}-{:016x}.cwasm", h.finish()))
}

/// Reads and checks an entry; `None` (and the entry removed) when it is
/// missing, truncated, corrupt or rejected by the engine.
fn load(engine: &Engine, path: &Path) -> Option<Component> {
    let bytes = std::fs::read(path).ok()?;
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

fn store(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&Sha256::digest(artifact))?;
    tmp.write_all(artifact)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
