//! Module files known to be unchanged since they were last read, by their
//! metadata, and the SHA-256 of what was read.
//!
//! Every reload pass (each file event, and the safety-net rescan every
//! 10 s) fingerprints every manifest and its module to find what changed.
//! Reading and hashing a 19 MB Python component on every pass was CPU spent
//! for nothing: a module file whose device, inode, size, modification and
//! change times are those of its last read is not read again, and the
//! digest of that read stands in for its bytes in the fingerprint.
//!
//! **Racy timestamps.** File times move in coarse steps (a kernel tick), so
//! a same-size rewrite within the tick of the previous write could leave
//! them all equal. As git does for its index ("racy git"), a read is
//! remembered only when the file's times were already [`SETTLE`] old when it
//! was read: any later write then lands on a later tick and changes them.
//! A file is also not remembered if its metadata changed while it was read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// How old a file's times must be for a read of it to be remembered.
pub(crate) const SETTLE: Duration = Duration::from_secs(2);

/// What identifies one version of a file's content on a local filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stat {
    /// The metadata of `path` (following symlinks); `None` when it cannot
    /// be read.
    pub(crate) fn of(path: &Path) -> Option<Stat> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stat {
            dev: m.dev(),
            ino: m.ino(),
            len: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Whether both times are at least `settle` before `now`.
    fn settled(&self, now: SystemTime, settle: Duration) -> bool {
        let Ok(now) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let limit = now.saturating_sub(settle);
        let at = |(s, ns): (i64, i64)| {
            (s >= 0).then(|| Duration::new(s as u64, ns.clamp(0, 999_999_999) as u32))
        };
        [self.mtime, self.ctime]
            .into_iter()
            .all(|t| at(t).is_some_and(|t| t <= limit))
    }
}

/// The remembered reads ([module docs](self)).
#[derive(Debug)]
pub(crate) struct ModuleDigests {
    known: Mutex<HashMap<PathBuf, (Stat, [u8; 32])>>,
    settle: Duration,
}

impl Default for ModuleDigests {
    fn default() -> Self {
        ModuleDigests::with_settle(SETTLE)
    }
}

impl ModuleDigests {
    /// Remembering reads of files whose times are `settle` old.
    pub(crate) fn with_settle(settle: Duration) -> Self {
        ModuleDigests {
            known: Mutex::new(HashMap::new()),
            settle,
        }
    }

    /// The SHA-256 of `path`'s last remembered read, if the file is still
    /// the one read.
    pub(crate) fn unchanged(&self, path: &Path) -> Option<[u8; 32]> {
        let now = Stat::of(path)?;
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match known.get(path) {
            Some((stat, digest)) if *stat == now => Some(*digest),
            _ => None,
        }
    }

    /// The SHA-256 of `bytes`, just read from `path` whose metadata was
    /// `before` the read; remembered when the file did not change during the
    /// read and its times had settled.
    pub(crate) fn read(&self, path: &Path, before: Option<Stat>, bytes: &[u8]) -> [u8; 32] {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match before {
            Some(stat)
                if Stat::of(path) == Some(stat)
                    && stat.len == bytes.len() as u64
                    && stat.settled(SystemTime::now(), self.settle) =>
            {
                known.insert(path.to_owned(), (stat, digest));
            }
            _ => {
                known.remove(path);
            }
        }
        digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(d: &ModuleDigests, path: &Path) -> [u8; 32] {
        let before = Stat::of(path);
        let bytes = std::fs::read(path).unwrap();
        d.read(path, before, &bytes)
    }

    #[test]
    fn a_settled_file_is_read_once_and_any_rewrite_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        let d = ModuleDigests::with_settle(Duration::from_millis(50));
        std::fs::write(&path, b"version one").unwrap();

        // Just written: its times have not settled, so nothing is kept.
        let first = read(&d, &path);
        assert_eq!(first, <[u8; 32]>::from(Sha256::digest(b"version one")));
        assert_eq!(d.unchanged(&path), None, "a racy read is not remembered");

        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(read(&d, &path), first);
        assert_eq!(d.unchanged(&path), Some(first), "settled: not read again");

        // Rewritten in place with the same size: the times move on.
        std::fs::write(&path, b"version two").unwrap();
        assert_eq!(d.unchanged(&path), None, "an in-place rewrite is seen");
        std::thread::sleep(Duration::from_millis(120));
        let second = read(&d, &path);
        assert_ne!(second, first);
        assert_eq!(d.unchanged(&path), Some(second));

        // Replaced by a rename (another inode), or gone.
        let tmp = dir.path().join("m.wasm.tmp");
        std::fs::write(&tmp, b"version 3!!").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(d.unchanged(&path), None, "a replaced file is seen");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(d.unchanged(&path), None);
    }

    #[test]
    fn a_file_that_changes_while_it_is_read_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wasm");
        std::fs::write(&path, b"old").unwrap();
        let d = ModuleDigests::with_settle(Duration::ZERO);
        let before = Stat::of(&path);
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, b"new, longer").unwrap();
        d.read(&path, before, b"old");
        assert_eq!(d.unchanged(&path), None);
    }
}
