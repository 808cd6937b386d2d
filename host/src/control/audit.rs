//! The admin audit log: one JSON line per change, append-only.
//!
//! Every admin change (canary started, version promoted, rollback, kill
//! switch) is recorded before it is acknowledged, with who made it, what it
//! touched, the state before and after, and why. The log answers "what was
//! serving route X at 14:02, and who changed it" long after the fact, so it
//! must never lose an acknowledged change nor garble one, even when the
//! process is killed or several replicas share the file.
//!
//! How that is achieved:
//!
//! * **One `write` per entry on an `O_APPEND` file.** The entry and its
//!   newline are serialized into one buffer and written with a single
//!   `write_all`; with `O_APPEND` the kernel moves to the end of the file and
//!   writes atomically with respect to other appenders (on local POSIX
//!   filesystems a regular-file write holds the inode lock for its whole
//!   length), so concurrent writers, threads or processes, never interleave
//!   within a line. Writers in one process are also serialized by a mutex,
//!   which covers the rare short write (e.g. interrupted by a signal).
//! * **`sync_data` before `append` returns**, so an acknowledged change is
//!   on disk and survives a crash or power loss.
//! * **Torn lines are contained.** A crash mid-write can leave a last line
//!   without its newline. Before writing, `append` checks the file's last
//!   byte and, if it is not a newline, starts its own entry with one, so the
//!   torn fragment stays a line of its own instead of corrupting the next
//!   entry. Readers skip (and count) lines that do not parse. (The check
//!   can also see another process's write half done, which only costs a
//!   blank line; readers ignore blank lines.)
//!
//! [`AuditLog::read_recent`] reads the file backwards in fixed-size chunks,
//! so its memory depends on the number of entries asked for, not on the size
//! of the log (lines longer than [`MAX_LINE_BYTES`] are refused on append
//! and skipped on read).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Largest accepted entry, in bytes of its JSON line (newline included).
/// Bounds the memory of [`AuditLog::read_recent`] to about `limit` times this.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Size of the chunks `read_recent` reads backwards.
const CHUNK_BYTES: usize = 64 << 10;

/// Why the audit log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An I/O error on the log file (or its directory).
    #[error("audit log {}: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The entry could not be serialized.
    #[error("audit entry could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The entry's JSON line is longer than [`MAX_LINE_BYTES`].
    #[error("audit entry is {len} bytes; at most {MAX_LINE_BYTES} are accepted")]
    TooLarge {
        /// The line's length in bytes.
        len: usize,
    },
}

/// One audit record: a change made through the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who: the authenticated actor (token name, and claimed actor if any).
    pub who: String,
    /// What, as `area.verb`, e.g. `canary.start`, `policy.promote`.
    pub action: String,
    /// The route changed, if any.
    #[serde(default)]
    pub route: Option<String>,
    /// The policy changed, if any.
    #[serde(default)]
    pub policy: Option<String>,
    /// The content digest of the policy version involved, if any.
    #[serde(default)]
    pub digest: Option<String>,
    /// The relevant state before the change (`null` if none).
    #[serde(default)]
    pub before: serde_json::Value,
    /// The relevant state after the change (`null` if none).
    #[serde(default)]
    pub after: serde_json::Value,
    /// The operator's stated reason, if given.
    #[serde(default)]
    pub reason: Option<String>,
    /// The canary's share of listeners, percent, for the actions on a
    /// canary: `canary.set` its new share, `canary.promote` and a rollback
    /// of a canary the share it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

impl AuditEntry {
    /// An entry for `action` by `who`, stamped now, with every other field
    /// empty (`None` / `null`); set the rest with struct update syntax.
    pub fn now(who: impl Into<String>, action: impl Into<String>) -> Self {
        AuditEntry {
            at_ms: now_ms(),
            who: who.into(),
            action: action.into(),
            route: None,
            policy: None,
            digest: None,
            before: serde_json::Value::Null,
            after: serde_json::Value::Null,
            reason: None,
            percent: None,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An audit entry serialized and checked by [`AuditLog::encode`], ready to
/// append.
#[derive(Debug, Clone)]
pub struct EncodedEntry {
    line: Vec<u8>,
    action: String,
    who: String,
}

/// The most recent entries of the log, with how many lines were skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Recent {
    /// The entries, oldest first (newest last).
    pub entries: Vec<AuditEntry>,
    /// Lines met while collecting `entries` that were skipped: a torn last
    /// line (crash mid-write, or a write in progress at that instant), a
    /// line that is not a valid entry, or one over [`MAX_LINE_BYTES`].
    /// Blank lines are ignored without being counted.
    pub skipped: usize,
}

/// An append-only JSON-lines audit log. Cheap to share (`Arc<AuditLog>`):
/// `append` and `read_recent` take `&self`.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// Serializes this process's appends (check last byte + write).
    write_lock: Mutex<()>,
}

impl AuditLog {
    /// Opens (creating it and its parent directories if needed) the log at
    /// `path` for appending.
    ///
    /// # Errors
    /// [`AuditError::Io`] if the directory or file cannot be created or
    /// opened.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, AuditError> {
        let path = path.into();
        let io_err = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(io_err)?;
        tracing::debug!(path = %path.display(), "audit log opened");
        Ok(AuditLog {
            path,
            file,
            write_lock: Mutex::new(()),
        })
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` as one JSON line and syncs it to disk; when this
    /// returns `Ok`, the entry survives a crash. Blocking (file I/O and an
    /// fsync): call it from `spawn_blocking` in async code.
    ///
    /// # Errors
    /// [`AuditError`] if the entry cannot be serialized, is over
    /// [`MAX_LINE_BYTES`], or cannot be written or synced. After an error
    /// the change must not be acknowledged.
    pub fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        self.append_encoded(&Self::encode(entry)?)
    }

    /// `entry` as the line [`AuditLog::append_encoded`] writes: everything
    /// that can fail about an entry before any I/O, so a change can be
    /// refused before its state is written.
    ///
    /// # Errors
    /// [`AuditError`] if the entry cannot be serialized or is over
    /// [`MAX_LINE_BYTES`].
    pub fn encode(entry: &AuditEntry) -> Result<EncodedEntry, AuditError> {
        let mut line = Vec::with_capacity(256);
        line.push(b'\n'); // used only when the file ends in a torn line
        serde_json::to_writer(&mut line, entry)?;
        line.push(b'\n');
        if line.len() - 1 > MAX_LINE_BYTES {
            return Err(AuditError::TooLarge {
                len: line.len() - 1,
            });
        }
        Ok(EncodedEntry {
            line,
            action: entry.action.clone(),
            who: entry.who.clone(),
        })
    }

    /// Appends an entry [`AuditLog::encode`]d and syncs it to disk; when
    /// this returns `Ok`, the entry survives a crash. Blocking.
    ///
    /// # Errors
    /// [`AuditError::Io`] if it cannot be written or synced. After an error
    /// the change must not be acknowledged.
    pub fn append_encoded(&self, entry: &EncodedEntry) -> Result<(), AuditError> {
        let line = &entry.line;
        {
            let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            let start = if self.ends_with_newline().map_err(|e| self.io_err(e))? {
                1
            } else {
                tracing::warn!(
                    path = %self.path.display(),
                    "audit log ends in a torn line; terminating it before the next entry"
                );
                0
            };
            (&self.file)
                .write_all(&line[start..])
                .map_err(|e| self.io_err(e))?;
        }
        // Outside the lock: concurrent appenders share one flush.
        self.file.sync_data().map_err(|e| self.io_err(e))?;
        tracing::debug!(
            path = %self.path.display(),
            action = %entry.action,
            who = %entry.who,
            "audit entry appended"
        );
        Ok(())
    }

    /// True if the file is empty or its last byte is a newline.
    fn ends_with_newline(&self) -> io::Result<bool> {
        let len = self.file.metadata()?.len();
        if len == 0 {
            return Ok(true);
        }
        let mut last = [0u8; 1];
        read_exact_at(&self.file, &mut last, len - 1)?;
        Ok(last[0] == b'\n')
    }

    fn io_err(&self, source: io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The last `limit` entries (newest last), read from the end of the file
    /// in chunks, and the number of lines skipped on the way (see
    /// [`Recent::skipped`]). Blocking: call it from `spawn_blocking` in
    /// async code.
    ///
    /// # Errors
    /// [`AuditError::Io`] if the file cannot be read.
    pub fn read_recent(&self, limit: usize) -> Result<Recent, AuditError> {
        let file = File::open(&self.path).map_err(|e| self.io_err(e))?;
        let recent = read_recent_from(&file, limit).map_err(|e| self.io_err(e))?;
        if recent.skipped > 0 {
            tracing::warn!(
                path = %self.path.display(),
                skipped = recent.skipped,
                "audit log has lines that are not valid entries; skipped"
            );
        }
        Ok(recent)
    }
}

/// Reads `buf.len()` bytes at `offset`. Moves the handle's cursor, which is
/// harmless: appends ignore it (`O_APPEND`), the append handle is only read
/// under the write lock, and `read_recent` uses a handle of its own.
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// Collects lines backwards from the end of `file`.
struct Collector {
    limit: usize,
    entries: Vec<AuditEntry>, // newest first
    skipped: usize,
    /// The line being assembled, in file order (a suffix of it so far).
    partial: Vec<u8>,
    /// The line being assembled is over `MAX_LINE_BYTES`: its bytes are
    /// no longer kept.
    oversized: bool,
    /// The next completed line is the segment after the file's last
    /// newline: non-empty means a torn write.
    at_eof: bool,
}

impl Collector {
    fn full(&self) -> bool {
        self.entries.len() >= self.limit
    }

    /// Prepends `seg` (bytes just before the current partial line).
    fn prepend(&mut self, seg: &[u8]) {
        if self.oversized || seg.is_empty() {
            return;
        }
        if self.partial.len() + seg.len() > MAX_LINE_BYTES {
            self.oversized = true;
            self.partial = Vec::new();
            return;
        }
        let mut joined = Vec::with_capacity(seg.len() + self.partial.len());
        joined.extend_from_slice(seg);
        joined.extend_from_slice(&self.partial);
        self.partial = joined;
    }

    /// The current line is complete (a newline or the start of the file
    /// precedes it).
    fn finish_line(&mut self) {
        let line = std::mem::take(&mut self.partial);
        let oversized = std::mem::replace(&mut self.oversized, false);
        let torn = std::mem::replace(&mut self.at_eof, false);
        if oversized {
            self.skipped += 1;
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if torn {
            self.skipped += 1;
            return;
        }
        match serde_json::from_slice::<AuditEntry>(&line) {
            Ok(entry) => self.entries.push(entry),
            Err(_) => self.skipped += 1,
        }
    }
}

fn read_recent_from(file: &File, limit: usize) -> io::Result<Recent> {
    let mut c = Collector {
        limit,
        entries: Vec::new(),
        skipped: 0,
        partial: Vec::new(),
        oversized: false,
        at_eof: true,
    };
    let mut pos = file.metadata()?.len();
    let mut buf = vec![0u8; CHUNK_BYTES.min(pos as usize)];
    while pos > 0 && !c.full() {
        let start = pos.saturating_sub(CHUNK_BYTES as u64);
        let chunk = &mut buf[..(pos - start) as usize];
        read_exact_at(file, chunk, start)?;
        let mut end = chunk.len();
        while let Some(nl) = chunk[..end].iter().rposition(|&b| b == b'\n') {
            c.prepend(&chunk[nl + 1..end]);
            c.finish_line();
            end = nl;
            if c.full() {
                break;
            }
        }
        if c.full() {
            break;
        }
        c.prepend(&chunk[..end]);
        pos = start;
    }
    if pos == 0 && !c.full() {
        // The file's first line (or its only, torn, line).
        c.finish_line();
    }
    let mut entries = c.entries;
    entries.reverse();
    Ok(Recent {
        entries,
        skipped: c.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn entry(i: usize) -> AuditEntry {
        AuditEntry {
            at_ms: 1_700_000_000_000 + i as u64,
            route: Some("radio".into()),
            policy: Some("pid-pacing".into()),
            digest: Some(format!("sha256:{i:064x}")),
            before: serde_json::json!({ "active": "1.0.0" }),
            after: serde_json::json!({ "active": "1.1.0", "canary": { "percent": i } }),
            reason: Some(format!("change #{i}")),
            ..AuditEntry::now("alice (jane)", "canary.start")
        }
    }

    #[test]
    fn append_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path().join("nested/dir/audit.jsonl")).unwrap();
        assert_eq!(
            log.read_recent(10).unwrap(),
            Recent {
                entries: vec![],
                skipped: 0
            }
        );
        log.append(&entry(1)).unwrap();
        let bare = AuditEntry::now("ops", "kill.on");
        log.append(&bare).unwrap();
        let recent = log.read_recent(10).unwrap();
        assert_eq!(recent.entries, vec![entry(1), bare]);
        assert_eq!(recent.skipped, 0);
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
        // Reopening appends, never truncates.
        drop(log);
        let log = AuditLog::open(dir.path().join("nested/dir/audit.jsonl")).unwrap();
        log.append(&entry(3)).unwrap();
        assert_eq!(log.read_recent(10).unwrap().entries.len(), 3);
    }

    #[test]
    fn limit_returns_the_newest_last() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path().join("audit.jsonl")).unwrap();
        // Lines of ~1 KB so that 300 of them span several read chunks.
        let pad = "x".repeat(1000);
        let big = |i| AuditEntry {
            reason: Some(format!("{i} {pad}")),
            ..entry(i)
        };
        for i in 0..300 {
            log.append(&big(i)).unwrap();
        }
        assert!(std::fs::metadata(log.path()).unwrap().len() > 4 * CHUNK_BYTES as u64);
        let recent = log.read_recent(5).unwrap();
        assert_eq!(recent.entries, (295..300).map(big).collect::<Vec<_>>());
        let all = log.read_recent(1000).unwrap();
        assert_eq!(all.entries, (0..300).map(big).collect::<Vec<_>>());
        assert_eq!(all.skipped, 0);
        assert!(log.read_recent(0).unwrap().entries.is_empty());
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path().join("audit.jsonl")).unwrap();
        log.append(&entry(1)).unwrap();
        log.append(&entry(2)).unwrap();
        // A crash mid-write: half a line, no newline.
        let full = serde_json::to_string(&entry(3)).unwrap();
        OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
            .write_all(&full.as_bytes()[..full.len() / 2])
            .unwrap();
        let recent = log.read_recent(10).unwrap();
        assert_eq!(recent.entries, vec![entry(1), entry(2)]);
        assert_eq!(recent.skipped, 1);
        // The next append terminates the fragment instead of gluing onto it.
        log.append(&entry(4)).unwrap();
        let recent = log.read_recent(10).unwrap();
        assert_eq!(recent.entries, vec![entry(1), entry(2), entry(4)]);
        assert_eq!(recent.skipped, 1);
        // With a limit met before the bad line, it is not even seen.
        let recent = log.read_recent(1).unwrap();
        assert_eq!((recent.entries, recent.skipped), (vec![entry(4)], 0));
    }

    #[test]
    fn garbage_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let good = serde_json::to_string(&entry(1)).unwrap();
        std::fs::write(&path, format!("not json\n\n{good}\n{{\"at_ms\":1}}\n   \n")).unwrap();
        let log = AuditLog::open(&path).unwrap();
        let recent = log.read_recent(10).unwrap();
        assert_eq!(recent.entries, vec![entry(1)]);
        assert_eq!(recent.skipped, 2, "`not json` and the entry missing fields");
    }

    #[test]
    fn oversized_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path().join("audit.jsonl")).unwrap();
        let huge = AuditEntry {
            reason: Some("y".repeat(MAX_LINE_BYTES)),
            ..entry(0)
        };
        assert!(matches!(
            log.append(&huge),
            Err(AuditError::TooLarge { .. })
        ));
        assert_eq!(std::fs::metadata(log.path()).unwrap().len(), 0);
    }

    #[test]
    fn oversized_lines_on_disk_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let good = serde_json::to_string(&entry(1)).unwrap();
        let long = "z".repeat(MAX_LINE_BYTES + 10);
        std::fs::write(&path, format!("{good}\n{long}\n{good}\n")).unwrap();
        let recent = AuditLog::open(&path).unwrap().read_recent(10).unwrap();
        assert_eq!(recent.entries, vec![entry(1), entry(1)]);
        assert_eq!(recent.skipped, 1);
    }

    #[test]
    fn concurrent_appenders_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // Two separate opens, as two processes would have: only O_APPEND
        // keeps their lines apart (the in-process mutex is per AuditLog).
        let logs = [
            Arc::new(AuditLog::open(&path).unwrap()),
            Arc::new(AuditLog::open(&path).unwrap()),
        ];
        let threads: Vec<_> = logs
            .iter()
            .enumerate()
            .map(|(t, log)| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let e = AuditEntry {
                            who: format!("writer-{t}"),
                            reason: Some(format!("{t}-{i} {}", "p".repeat(i * 7))),
                            ..entry(i)
                        };
                        log.append(&e).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // A blank line is possible (see the module docs), never a mixed one.
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 400);
        for line in &lines {
            serde_json::from_str::<AuditEntry>(line).unwrap();
        }
        let recent = logs[0].read_recent(1000).unwrap();
        assert_eq!(recent.entries.len(), 400);
        assert_eq!(recent.skipped, 0);
        for t in 0..2 {
            let mine: Vec<_> = recent
                .entries
                .iter()
                .filter(|e| e.who == format!("writer-{t}"))
                .map(|e| e.at_ms)
                .collect();
            assert_eq!(mine, (0..200).map(|i| entry(i).at_ms).collect::<Vec<_>>());
        }
    }
}
