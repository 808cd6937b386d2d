//! Files that survive `kill -9`: atomic replacement and a directory lock.
//!
//! Admin state (which version is active, the canary split, the kill switch)
//! is kept in small files so that a restarted server, or another replica
//! sharing the directory, serves what the operators last set. Two failure
//! modes must be ruled out:
//!
//! * **A torn file.** Rewriting a file in place can leave it half old, half
//!   new (or empty) if the process dies or the machine loses power mid-write,
//!   and a concurrent reader can see the mix. [`write_atomic`] writes a temp
//!   file in the same directory, syncs it, renames it over the target (an
//!   atomic replace on POSIX filesystems) and syncs the directory, so the
//!   rename itself is durable: readers and a restarted process see the old
//!   content or the new, never a mix.
//! * **A lost update.** Two replicas doing read-modify-write on the same file
//!   can each read the old state and the second write silently drops the
//!   first change. [`DirLock`] serializes such sections with an exclusive
//!   advisory lock on a lock file in the directory.
//!
//! [`DirLock`] uses `flock(2)` through `libc` (already a dependency; the two
//! calls need no crate). `flock` rather than `fcntl` record locks because a
//! `flock` lock belongs to the open file description: two guards in one
//! process exclude each other just as two processes do, and closing some
//! other descriptor of the same file does not silently drop the lock (as it
//! does with `fcntl` locks). The kernel releases the lock when the holder
//! dies, so a killed replica never leaves the directory locked. On NFS, Linux
//! implements `flock` with byte-range locks, which also work across hosts.
//! The lock file is created once and never deleted: deleting it would let
//! two processes lock two different files of the same name.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file [`DirLock`] uses in a directory.
pub const LOCK_FILE_NAME: &str = ".oasis.lock";

/// Replaces the content of `path` with `bytes` atomically and durably.
///
/// Writes a temp file (`.<name>.<random>.tmp`) in the same directory,
/// `sync_all`s it, renames it over `path`, then syncs the directory. The
/// permissions of an existing `path` are kept; a new file gets the temp
/// file's (`0600` on Unix). Blocking: call it from `spawn_blocking` in async
/// code. Concurrent writers do not corrupt the file (the last rename wins);
/// use [`DirLock`] when the new content depends on the old.
///
/// # Errors
/// Any I/O error creating, writing, syncing or renaming; the temp file is
/// removed on failure and `path` keeps its old content.
///
/// # Examples
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("state.json");
/// oasis::control::persist::write_atomic(&path, br#"{"kill": false}"#)?;
/// assert_eq!(std::fs::read(&path)?, br#"{"kill": false}"#);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let prefix = format!(".{}.", file_name.to_string_lossy());
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file().set_permissions(meta.permissions())?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // On error the temp file is dropped (and deleted) with the PersistError.
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)?;
    tracing::debug!(path = %path.display(), bytes = bytes.len(), "file replaced atomically");
    Ok(())
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename or creation in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An exclusive advisory lock on a directory, for read-modify-write
/// sections shared by threads, processes and replicas: see the module docs.
/// Every participant must take it; it does not stop code that does not.
#[derive(Debug)]
pub struct DirLock {
    _never: (),
}

impl DirLock {
    /// Blocks until the lock on `dir` (its [`LOCK_FILE_NAME`], created if
    /// missing) is held, and returns the guard that releases it on drop.
    /// Blocking, possibly for long: call it from `spawn_blocking`, or use
    /// [`DirLock::acquire_async`].
    ///
    /// # Errors
    /// An I/O error if the lock file cannot be opened or locked.
    ///
    /// # Examples
    /// ```
    /// use oasis::control::persist::{DirLock, write_atomic};
    /// let dir = tempfile::tempdir()?;
    /// let state = dir.path().join("state");
    /// {
    ///     let _guard = DirLock::acquire(dir.path())?;
    ///     let n: u32 = std::fs::read_to_string(&state).map_or(0, |s| s.parse().unwrap());
    ///     write_atomic(&state, (n + 1).to_string().as_bytes())?;
    /// } // released here
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn acquire(dir: &Path) -> io::Result<DirLockGuard> {
        let (file, path) = open_lock_file(dir)?;
        flock_retrying(&file, libc::LOCK_EX).map_err(|e| with_path(e, &path))?;
        tracing::debug!(path = %path.display(), "directory lock acquired");
        Ok(DirLockGuard { file, path })
    }

    /// The lock on `dir` if it is free now, `None` if someone holds it.
    ///
    /// # Errors
    /// An I/O error if the lock file cannot be opened or locked.
    pub fn try_acquire(dir: &Path) -> io::Result<Option<DirLockGuard>> {
        let (file, path) = open_lock_file(dir)?;
        match flock_retrying(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(DirLockGuard { file, path })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(with_path(e, &path)),
        }
    }

    /// [`DirLock::acquire`] on tokio's blocking pool, for async callers.
    ///
    /// # Errors
    /// As [`DirLock::acquire`], or an error if the blocking task panicked.
    pub async fn acquire_async(dir: impl Into<PathBuf>) -> io::Result<DirLockGuard> {
        let dir = dir.into();
        tokio::task::spawn_blocking(move || DirLock::acquire(&dir))
            .await
            .map_err(io::Error::other)?
    }
}

fn open_lock_file(dir: &Path) -> io::Result<(File, PathBuf)> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| with_path(e, &path))?;
    Ok((file, path))
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// `flock(fd, op)`, retried when a signal interrupts it.
fn flock_retrying(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: `file` is an open File borrowed for the duration of the
        // call, so its descriptor is valid; flock takes no pointers and only
        // changes the lock state of that open file description.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Holds a [`DirLock`]; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLockGuard {
    file: File,
    path: PathBuf,
}

impl DirLockGuard {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLockGuard {
    fn drop(&mut self) {
        // SAFETY: `self.file` is still open (it is closed only after this
        // returns), so the descriptor is valid; LOCK_UN takes no pointers.
        // Closing the file would release the lock anyway; unlocking first
        // makes the release explicit and immediate.
        let rc = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
        if rc != 0 {
            tracing::warn!(
                path = %self.path.display(),
                error = %io::Error::last_os_error(),
                "directory unlock failed; the lock is released when the file closes"
            );
        } else {
            tracing::debug!(path = %self.path.display(), "directory lock released");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old content, longer than the new").unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"old content, longer than the new"
        );
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        write_atomic(&path, b"").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        assert_eq!(names(dir.path()), ["state.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn write_atomic_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"y").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn write_atomic_failure_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails.
        let path = dir.path().join("occupied");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        assert!(write_atomic(&path, b"data").is_err());
        assert_eq!(names(dir.path()), ["occupied"]);
        assert!(write_atomic(&dir.path().join("missing/state"), b"x").is_err());
    }

    #[test]
    fn dir_lock_excludes_a_second_acquirer_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        assert_eq!(first.path(), dir.path().join(LOCK_FILE_NAME));
        assert!(DirLock::try_acquire(dir.path()).unwrap().is_none());

        let (tx, rx) = mpsc::channel();
        let d = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let guard = DirLock::acquire(&d).unwrap();
            tx.send(()).unwrap();
            drop(guard);
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(300)),
            Err(mpsc::RecvTimeoutError::Timeout),
            "the second acquirer must wait while the first holds the lock"
        );
        drop(first);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the second acquirer gets the lock once the first drops it");
        waiter.join().unwrap();

        // Free again; the lock file stays.
        let again = DirLock::try_acquire(dir.path()).unwrap();
        assert!(again.is_some());
        assert_eq!(names(dir.path()), [LOCK_FILE_NAME]);
    }

    #[tokio::test]
    async fn dir_lock_async_acquire() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DirLock::acquire_async(dir.path()).await.unwrap();
        assert!(DirLock::try_acquire(dir.path()).unwrap().is_none());
        drop(guard);
        assert!(DirLock::try_acquire(dir.path()).unwrap().is_some());
    }
}
