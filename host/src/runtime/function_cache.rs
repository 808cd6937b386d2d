//! Cranelift's incremental compilation cache, kept on disk: a component that
//! differs from an earlier one in a few functions (or only in its data)
//! compiles in a fraction of the time.
//!
//! **Why.** A Python policy is CPython compiled to wasm (tens of thousands
//! of functions) plus a snapshot of the interpreter's memory. A one-line
//! edit of the policy changes the snapshot, not the interpreter's code, yet
//! the whole-component cache ([`crate::cache`]) is keyed by the component's
//! bytes, so every edit used to recompile everything (13-14 s here, most of
//! an author's edit-to-served loop, issue 20). Cranelift can key each
//! function by its own contents and reuse the machine code of any function
//! it compiled before ([`wasmtime::CacheStore`]); this store keeps those
//! entries across compiles and processes. Not every function hits: in
//! wasmtime 48 a few (4-7% of a Rust policy's, varying run to run) get a
//! different key from one compile to the next and are compiled again.
//!
//! **Layout.** `<cache dir>/functions/*.pack`: each compile that produced
//! new entries writes them as one *pack* (a SHA-256 of the payload, then
//! length-prefixed key/value pairs), atomically (temp file + rename). The
//! first lookup of a compile reads every pack into memory once; packs whose
//! entries were used get their modification time refreshed, and the oldest
//! beyond [`MAX_PACK_BYTES`] are removed. A pack that is torn, corrupt or
//! not owned by this user is ignored and removed, never used: its entries
//! are native code, trusted under the same rules as the component cache's.
//!
//! Compiles run in the compile worker (a child process per compile): the
//! pack is the only way entries outlive one. Lookups and inserts come from
//! Cranelift's compile threads at once, hence the locks; they are taken per
//! function, never on the request path.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};

/// Bytes of packs kept; the least recently used beyond it are removed when
/// a pack is written. A Python component's functions take ~30-60 MB.
pub const MAX_PACK_BYTES: u64 = 256 << 20;

// Packs are read whole into the compile worker, whose memory is capped.
const _: () = assert!(MAX_PACK_BYTES <= super::compile_worker::DEFAULT_MEMORY_BYTES / 4);

const MAGIC: &[u8; 8] = b"OASISFN1";

/// One pack's bytes, and whether any of its entries was used.
struct Pack {
    path: PathBuf,
    bytes: Vec<u8>,
    used: std::sync::atomic::AtomicBool,
}

/// Where a value lies: its pack and its byte range in it.
type Entries = HashMap<Vec<u8>, (usize, std::ops::Range<usize>)>;

/// The store Cranelift reads and writes during a compile; see the module docs.
pub struct FunctionCache {
    dir: PathBuf,
    /// Every pack, and where each key's value lies: read on the first
    /// lookup after [`new`](Self::new) or a [`flush`](Self::flush) (so a
    /// compile sees the packs of every earlier one, this process's too).
    loaded: RwLock<Option<Arc<(Vec<Pack>, Entries)>>>,
    /// Entries compiled since the last [`flush`](Self::flush).
    fresh: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What one compile got from the cache, for its log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FunctionCacheStats {
    /// Functions whose machine code came from the cache.
    pub hits: u64,
    /// Functions compiled (and then cached).
    pub misses: u64,
}

impl std::fmt::Debug for FunctionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FunctionCache {
    /// A store over `dir` (created, mode 0700, on first write). Nothing is
    /// read until Cranelift's first lookup.
    pub fn new(dir: PathBuf) -> Self {
        FunctionCache {
            dir,
            loaded: RwLock::new(None),
            fresh: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Hits and misses since the last [`flush`](Self::flush).
    pub fn stats(&self) -> FunctionCacheStats {
        FunctionCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    fn loaded(&self) -> Arc<(Vec<Pack>, Entries)> {
        if let Some(l) = &*self.loaded.read().unwrap_or_else(|e| e.into_inner()) {
            return l.clone();
        }
        let mut w = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        w.get_or_insert_with(|| Arc::new(read_packs(&self.dir)))
            .clone()
    }

    /// Writes the entries compiled since the last flush as one pack,
    /// refreshes the packs that were used, evicts the oldest beyond
    /// [`MAX_PACK_BYTES`], and resets the counters. A failure is logged:
    /// the cache is an optimisation and never fails a compile. The counters
    /// are the store's, not one compile's: two compiles at once on one
    /// runtime (in-process compiles; the server's worker runs one per
    /// process) report their sum.
    pub fn flush(&self) -> FunctionCacheStats {
        let stats = self.stats();
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
        let fresh = std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|e| e.into_inner()));
        // Read again at the next lookup: the pack written below, and any
        // other process's, join what the next compile can reuse.
        let loaded = self
            .loaded
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(l) = loaded {
            for p in l.0.iter().filter(|p| p.used.load(Ordering::Relaxed)) {
                touch(&p.path);
            }
        }
        if !fresh.is_empty() {
            match write_pack(&self.dir, &fresh) {
                Ok(path) => {
                    tracing::debug!(path = %path.display(), entries = fresh.len(), "function cache pack written")
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the function cache")
                }
            }
            evict(&self.dir, MAX_PACK_BYTES);
        }
        stats
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let loaded = self.loaded();
        let (packs, entries) = &*loaded;
        match entries.get(key) {
            Some((pack, range)) => {
                let pack = &packs[*pack];
                pack.used.store(true, Ordering::Relaxed);
                self.hits.fetch_add(1, Ordering::Relaxed);
                // Copied out (a few KiB a function): a flush may drop the
                // packs while Cranelift still holds the value.
                Some(Cow::Owned(pack.bytes[range.clone()].to_vec()))
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_vec(), value);
        true
    }
}

/// Every sound pack of `dir`; unsound ones are removed.
fn read_packs(dir: &Path) -> (Vec<Pack>, Entries) {
    let mut packs = Vec::new();
    let mut entries = HashMap::new();
    if crate::cache::trusted_dir_exists(dir).is_err() {
        return (packs, entries);
    }
    let Ok(list) = std::fs::read_dir(dir) else {
        return (packs, entries);
    };
    for path in list
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
    {
        match read_pack(&path) {
            Ok((bytes, pairs)) => {
                let at = packs.len();
                for (k, v) in pairs {
                    entries.entry(k).or_insert((at, v));
                }
                packs.push(Pack {
                    path,
                    bytes,
                    used: Default::default(),
                });
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), %why, "function cache pack not used; removed");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    (packs, entries)
}

/// A pack's bytes and its entries: each key, and its value's range.
type PackContents = (Vec<u8>, Vec<(Vec<u8>, std::ops::Range<usize>)>);

fn read_pack(path: &Path) -> Result<PackContents, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    crate::cache::trusted(&file.metadata().map_err(|e| e.to_string())?)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    const HEADER: usize = MAGIC.len() + 32;
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a function cache pack".into());
    }
    if Sha256::digest(&bytes[HEADER..]).as_slice() != &bytes[MAGIC.len()..HEADER] {
        return Err("checksum mismatch (torn or corrupt)".into());
    }
    let mut pairs = Vec::new();
    let mut at = HEADER;
    // The next length-prefixed part's range.
    let part = |at: &mut usize| -> Result<std::ops::Range<usize>, String> {
        let len = bytes
            .get(*at..*at + 4)
            .ok_or("truncated length")?
            .try_into()
            .map(u32::from_le_bytes)
            .map_err(|_| "truncated length")? as usize;
        let range = *at + 4..*at + 4 + len;
        if range.end > bytes.len() {
            return Err("truncated entry".into());
        }
        *at = range.end;
        Ok(range)
    };
    while at < bytes.len() {
        let k = part(&mut at)?;
        let v = part(&mut at)?;
        pairs.push((bytes[k].to_vec(), v));
    }
    Ok((bytes, pairs))
}

fn write_pack(dir: &Path, entries: &HashMap<Vec<u8>, Vec<u8>>) -> std::io::Result<PathBuf> {
    crate::cache::trusted_dir(dir).map_err(std::io::Error::other)?;
    let mut payload = Vec::new();
    for (k, v) in entries {
        for part in [k, v] {
            let len = u32::try_from(part.len()).map_err(std::io::Error::other)?;
            payload.extend_from_slice(&len.to_le_bytes());
            payload.extend_from_slice(part);
        }
    }
    let sum = Sha256::digest(&payload);
    let path = dir.join(format!("{}.pack", hex::encode(&sum[..12])));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(MAGIC)?;
    tmp.write_all(&sum)?;
    tmp.write_all(&payload)?;
    tmp.as_file().sync_data()?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Removes the least recently used packs of `dir` beyond `max` bytes.
fn evict(dir: &Path, max: u64) {
    let Ok(list) = std::fs::read_dir(dir) else {
        return;
    };
    let mut packs: Vec<(std::time::SystemTime, u64, PathBuf)> = list
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    packs.sort_by(|a, b| b.0.cmp(&a.0));
    let mut total = 0u64;
    for (_, len, path) in packs {
        total += len;
        if total > max {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore;

    fn dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("functions");
        (tmp, d)
    }

    /// Writes one pack holding `key` into the empty `d`; its path.
    fn one_pack(d: &Path) -> PathBuf {
        let a = FunctionCache::new(d.to_path_buf());
        a.insert(b"key", b"machine code".to_vec());
        a.flush();
        let mut packs = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path());
        let pack = packs.next().unwrap();
        assert!(packs.next().is_none(), "one pack");
        pack
    }

    #[test]
    fn entries_outlive_the_store_through_a_pack() {
        let (_tmp, d) = dir();
        let a = FunctionCache::new(d.clone());
        assert!(a.get(b"k1").is_none());
        a.insert(b"k1", b"code one".to_vec());
        a.insert(b"k2", vec![0; 1000]);
        assert_eq!(a.flush(), FunctionCacheStats { hits: 0, misses: 1 });
        let b = FunctionCache::new(d.clone());
        assert_eq!(b.get(b"k1").as_deref(), Some(&b"code one"[..]));
        assert_eq!(b.get(b"k2").map(|v| v.len()), Some(1000));
        assert!(b.get(b"k3").is_none());
        assert_eq!(b.stats(), FunctionCacheStats { hits: 2, misses: 1 });
    }

    #[test]
    fn a_store_finds_what_it_flushed_on_its_next_compile() {
        let (_tmp, d) = dir();
        let a = FunctionCache::new(d.clone());
        assert!(a.get(b"k").is_none(), "empty at first");
        a.insert(b"k", b"compiled once".to_vec());
        a.flush();
        assert_eq!(a.get(b"k").as_deref(), Some(&b"compiled once"[..]));
        assert_eq!(a.flush(), FunctionCacheStats { hits: 1, misses: 0 });
    }

    #[test]
    fn a_corrupt_or_torn_pack_is_removed_not_used() {
        let (_tmp, d) = dir();
        let pack = one_pack(&d);
        let mut bytes = std::fs::read(&pack).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&pack, &bytes).unwrap();
        let b = FunctionCache::new(d.clone());
        assert!(b.get(b"key").is_none(), "a flipped bit must not be used");
        assert!(!pack.exists(), "the corrupt pack is removed");
        // Torn: the file cut short.
        let pack = one_pack(&d);
        let bytes = std::fs::read(&pack).unwrap();
        std::fs::write(&pack, &bytes[..bytes.len() - 3]).unwrap();
        assert!(FunctionCache::new(d).get(b"key").is_none());
    }

    #[cfg(unix)]
    #[test]
    fn a_pack_writable_by_others_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, d) = dir();
        let pack = one_pack(&d);
        std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(FunctionCache::new(d).get(b"key").is_none());
    }

    #[test]
    fn the_least_recently_used_packs_go_first() {
        let (_tmp, d) = dir();
        let c = FunctionCache::new(d.clone());
        for i in 0..3u8 {
            c.insert(&[i], vec![i; 100]);
            c.flush();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Use the oldest: it becomes the most recent.
        let user = FunctionCache::new(d.clone());
        assert!(user.get(&[0]).is_some());
        user.flush();
        evict(&d, 2 * (100 + 8 + 40 + 8));
        let left = FunctionCache::new(d);
        assert!(left.get(&[0]).is_some(), "the used pack is kept");
        assert!(left.get(&[2]).is_some(), "the newest is kept");
        assert!(
            left.get(&[1]).is_none(),
            "the least recently used is evicted"
        );
    }
}
