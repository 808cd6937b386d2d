//! The streaming reader: decision log files in, [`DecisionRecord`]s out.
//!
//! Replay reads logs of any size, so nothing here holds more than one line
//! (at most [`MAX_LINE_BYTES`]) or one Parquet batch
//! ([`PARQUET_BATCH_ROWS`] rows) and one file's read buffers at a time: the
//! files are opened one after the other, plain files through a `BufRead`,
//! `.zst` files through zstd's streaming decoder, `.parquet` files through
//! the Parquet reader. The reader is picked by extension, so a directory
//! may mix formats (a server restarted with another `--decision-log-format`).
//!
//! Logs outlive crashes, so damage at the end of a file is expected, not an
//! error:
//!
//! * a line that is not a record (a torn last line, garbage, a line over
//!   [`MAX_LINE_BYTES`]) is skipped and counted ([`Records::skipped`]);
//! * a `.zst` file that ends inside its zstd frame (the writer died before
//!   finishing it) yields every line the decoder could recover, then ends;
//!   it is counted ([`Records::truncated`]) and its cut last line skipped.
//!
//! A Parquet file is complete or absent (the writer renames it into place
//! once closed); one that does not read (cut, corrupt, another program's,
//! a newer schema version) is a [`ReadError`] naming it, and a row whose
//! values do not fit together is skipped and counted like a bad line.
//!
//! A file that cannot be opened or read (missing, permissions, corrupt zstd
//! data) is a [`ReadError`] naming it; the iterator then goes on with the
//! next file, and the caller decides whether to stop.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};

use super::columnar::{self, ParquetRows, SchemaError};
use super::record::DecisionRecord;

/// Rows per batch read from a Parquet file.
pub const PARQUET_BATCH_ROWS: usize = 64;

/// Longest line read as a record; a longer one is skipped (and counted)
/// without being held in memory. Far above any record of a request within
/// the server's body limit.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Read buffer per open file.
const READ_BUFFER: usize = 64 << 10;
/// The line buffer is given back when a line made it larger than this.
const LINE_BUFFER_KEEP: usize = 1 << 20;

/// Why log files could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file or directory could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// An input is not a valid glob pattern.
    #[error("{pattern:?} is not a valid glob pattern: {source}")]
    Pattern {
        /// The input.
        pattern: String,
        /// What is wrong with it.
        #[source]
        source: glob::PatternError,
    },
    /// A glob pattern matched no file.
    #[error("{pattern:?} matches no file")]
    NoMatch {
        /// The input.
        pattern: String,
    },
    /// A Parquet file does not read (cut, corrupt, not Parquet).
    #[error("{}: not a readable Parquet file: {source}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the Parquet reader said.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A Parquet file is not a decision log file this build reads.
    #[error("{}: {source}", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: SchemaError,
    },
}

/// Opens a Parquet log file of `kind` (`decisions` or `outcomes`),
/// checking its schema version.
pub(crate) fn open_parquet(
    path: &Path,
    kind: &'static str,
) -> Result<ParquetRecordBatchReader, ReadError> {
    let file = File::open(path).map_err(|source| ReadError::Io {
        path: path.to_owned(),
        source,
    })?;
    let parquet = |source| ReadError::Parquet {
        path: path.to_owned(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file.try_clone().map_err(|source| {
        ReadError::Io {
            path: path.to_owned(),
            source,
        }
    })?)
    .map_err(parquet)?;
    let schema_err = |source| ReadError::Schema {
        path: path.to_owned(),
        source,
    };
    columnar::check_metadata(
        builder.metadata().file_metadata().key_value_metadata(),
        kind,
    )
    .map_err(schema_err)?;
    let builder = if kind == "decisions" {
        // Every column replay needs, of the right type, before any row.
        ParquetRows::new(&RecordBatch::new_empty(builder.schema().clone())).map_err(schema_err)?;
        // The big string columns as views (`columnar::VIEW_COLUMNS`).
        match columnar::read_schema(builder.schema()) {
            Some(schema) => {
                let options = ArrowReaderOptions::new().with_schema(schema);
                let metadata = ArrowReaderMetadata::try_new(builder.metadata().clone(), options)
                    .map_err(parquet)?;
                ParquetRecordBatchReaderBuilder::new_with_metadata(
                    file.try_clone().map_err(|source| ReadError::Io {
                        path: path.to_owned(),
                        source,
                    })?,
                    metadata,
                )
            }
            None => builder,
        }
    } else {
        builder
    };
    builder
        .with_batch_size(PARQUET_BATCH_ROWS)
        .build()
        .map_err(parquet)
}

/// Whether `path` is read as Parquet (by its extension).
pub fn is_parquet(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "parquet")
}

/// Whether `name` is a decision log file's name (`decisions-*.parquet`,
/// `decisions-*.jsonl` or `decisions-*.jsonl.zst`; not a `.parquet.tmp`
/// file being written).
pub fn is_log_file_name(name: &str) -> bool {
    name.starts_with("decisions-")
        && (name.ends_with(".parquet") || name.ends_with(".jsonl") || name.ends_with(".jsonl.zst"))
}

/// The log files named by `inputs`, in reading order: each input is a file
/// (taken whatever its name), a directory (its `decisions-*.parquet` and
/// `decisions-*.jsonl[.zst]` files, sorted by name, which is writing
/// order), or a glob pattern
/// (matches sorted by name; directories among them are expanded as above).
///
/// # Errors
/// An input that does not exist and is not a pattern, an unreadable
/// directory, an invalid pattern, or a pattern that matches nothing.
pub fn files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    for input in inputs {
        match std::fs::metadata(input) {
            Ok(m) if m.is_dir() => out.extend(dir_files(input)?),
            Ok(_) => out.push(input.clone()),
            Err(e) => {
                let pattern = input.to_string_lossy();
                if !pattern.contains(['*', '?', '[']) {
                    return Err(ReadError::Io {
                        path: input.clone(),
                        source: e,
                    });
                }
                let matches = glob::glob(&pattern).map_err(|source| ReadError::Pattern {
                    pattern: pattern.to_string(),
                    source,
                })?;
                let mut found: Vec<PathBuf> = Vec::new();
                for m in matches {
                    let path = m.map_err(|e| ReadError::Io {
                        path: e.path().to_owned(),
                        source: e.into(),
                    })?;
                    found.push(path);
                }
                if found.is_empty() {
                    return Err(ReadError::NoMatch {
                        pattern: pattern.to_string(),
                    });
                }
                found.sort();
                for path in found {
                    if path.is_dir() {
                        out.extend(dir_files(&path)?);
                    } else {
                        out.push(path);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The log files in `dir`, sorted by name.
fn dir_files(dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let err = |source| ReadError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        if entry.file_name().to_str().is_some_and(is_log_file_name)
            && entry.file_type().map_err(err)?.is_file()
        {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The records of a list of files, in order, streamed.
pub struct Records {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<Current>,
    line: Vec<u8>,
    max_line: usize,
    skipped: u64,
    truncated: u64,
}

/// The file being read.
struct Current {
    path: PathBuf,
    source: Source,
    zstd: bool,
    /// Lines read so far, for messages.
    line_no: u64,
}

/// How the current file is read.
enum Source {
    Lines(Box<dyn BufRead + Send>),
    Parquet {
        reader: ParquetRecordBatchReader,
        /// The batch being iterated as records, and the next row.
        batch: Option<(RecordBatch, usize)>,
    },
}

/// A record as read for a reader that parses on other threads
/// ([`Records::next_raw`]).
#[derive(Debug)]
pub enum Raw {
    /// One JSON line ([`ReplayRecord::from_line`](super::ReplayRecord::from_line)).
    Line(Vec<u8>),
    /// Rows of a Parquet file ([`ParquetRows`]).
    Rows(RecordBatch),
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("current", &self.current.as_ref().map(|c| &c.path))
            .field("skipped", &self.skipped)
            .field("truncated", &self.truncated)
            .finish_non_exhaustive()
    }
}

impl Records {
    /// Reads `files` in order (see [`files`]); each is opened when reached.
    pub fn new(files: Vec<PathBuf>) -> Self {
        Records {
            files: files.into_iter(),
            current: None,
            line: Vec::new(),
            max_line: MAX_LINE_BYTES,
            skipped: 0,
            truncated: 0,
        }
    }

    /// [`files`] then [`Records::new`].
    ///
    /// # Errors
    /// As [`files`].
    pub fn open(inputs: &[PathBuf]) -> Result<Self, ReadError> {
        Ok(Records::new(files(inputs)?))
    }

    /// Lines skipped so far because they are not records (torn, garbage,
    /// too long).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Compressed files so far that ended inside their zstd frame (a writer
    /// that did not finish them, e.g. after a crash).
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// The file being read, if any.
    pub fn current_file(&self) -> Option<&Path> {
        self.current.as_ref().map(|c| c.path.as_path())
    }

    /// The current line as a record, or `None` (counted) when it is not one.
    fn parse_line(&mut self) -> Option<DecisionRecord> {
        if self.line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        match DecisionRecord::from_line(&self.line) {
            Ok(r) => Some(r),
            Err(e) => {
                self.skipped += 1;
                if let Some(c) = &self.current {
                    tracing::debug!(path = %c.path.display(), line = c.line_no, error = %e,
                        "decision log line skipped: not a record");
                }
                None
            }
        }
    }
}

impl Records {
    /// Reads the next line into `self.line`: `Some(Ok(Next::Line))` when
    /// there is one (possibly torn: the last one of a cut zstd frame),
    /// `Some(Ok(Next::Parquet))` when the current file is Parquet (read it
    /// with [`next_batch`](Self::next_batch)), `None` at the end of the
    /// last file. Over-long lines are skipped and counted here.
    fn next_line(&mut self) -> Option<Result<Next, ReadError>> {
        loop {
            let current = match &mut self.current {
                Some(c) => c,
                None => {
                    let path = self.files.next()?;
                    match open(&path) {
                        Ok(c) => self.current.insert(c),
                        Err(e) => return Some(Err(e)),
                    }
                }
            };
            let reader = match &mut current.source {
                Source::Lines(r) => r,
                Source::Parquet { .. } => return Some(Ok(Next::Parquet)),
            };
            current.line_no += 1;
            match read_line(reader, &mut self.line, self.max_line) {
                Ok(Line::End) => self.current = None,
                Ok(Line::Read) => return Some(Ok(Next::Line)),
                Ok(Line::TooLong) => {
                    self.skipped += 1;
                    tracing::warn!(path = %current.path.display(), line = current.line_no,
                        max = self.max_line, "decision log line skipped: too long");
                }
                Err(e) if current.zstd && e.kind() == io::ErrorKind::UnexpectedEof => {
                    // The frame was never finished: what the decoder gave
                    // back is all there is; the cut line, if any, is skipped
                    // by whoever parses it.
                    self.truncated += 1;
                    tracing::warn!(path = %current.path.display(),
                        "decision log file ends inside its zstd frame (its writer did not finish it); read up to the cut");
                    self.current = None;
                    if !self.line.is_empty() {
                        return Some(Ok(Next::Line));
                    }
                }
                Err(source) => {
                    let path = current.path.clone();
                    self.current = None;
                    return Some(Err(ReadError::Io { path, source }));
                }
            }
        }
    }

    /// The next batch of the current Parquet file, or `None` at its end
    /// (the next file is then opened by `next_line`).
    fn next_batch(&mut self) -> Option<Result<RecordBatch, ReadError>> {
        let current = self.current.as_mut()?;
        let Source::Parquet { reader, .. } = &mut current.source else {
            return None;
        };
        match reader.next() {
            Some(Ok(b)) => Some(Ok(b)),
            Some(Err(e)) => {
                let path = current.path.clone();
                self.current = None;
                Some(Err(ReadError::Parquet {
                    path,
                    source: e.into(),
                }))
            }
            None => {
                self.current = None;
                None
            }
        }
    }

    /// The next record unparsed, for a reader that parses records on other
    /// threads: a JSON line ([`DecisionRecord::from_line`], which is what
    /// this iterator uses) or a batch of Parquet rows
    /// ([`ParquetRows`]). Blank lines are skipped; a line or row that
    /// does not parse is the caller's to count ([`Records::skipped`] counts
    /// only over-long lines in this mode).
    pub fn next_raw(&mut self) -> Option<Result<Raw, ReadError>> {
        loop {
            match self.next_line()? {
                Err(e) => return Some(Err(e)),
                Ok(Next::Parquet) => match self.next_batch() {
                    Some(Ok(b)) if b.num_rows() == 0 => continue,
                    Some(b) => return Some(b.map(Raw::Rows)),
                    None => continue,
                },
                Ok(Next::Line) if self.line.iter().all(u8::is_ascii_whitespace) => continue,
                Ok(Next::Line) => {
                    // The next line is likely as long: give the buffer its
                    // capacity now rather than growing it by doubling.
                    let next = Vec::with_capacity(self.line.len().min(LINE_BUFFER_KEEP));
                    return Some(Ok(Raw::Line(std::mem::replace(&mut self.line, next))));
                }
            }
        }
    }

    /// The next row of the current Parquet file as a record (`None` at its
    /// end); a row that does not read is skipped and counted.
    fn next_parquet_record(&mut self) -> Option<Result<DecisionRecord, ReadError>> {
        loop {
            let current = self.current.as_mut()?;
            let Source::Parquet { batch, .. } = &mut current.source else {
                return None;
            };
            if let Some((b, row)) = batch
                && *row < b.num_rows()
            {
                let at = *row;
                *row += 1;
                let record = ParquetRows::new(b).and_then(|c| c.decision_record(at));
                match record {
                    Ok(r) => return Some(Ok(r)),
                    Err(e) => {
                        self.skipped += 1;
                        tracing::debug!(path = %current.path.display(), row = at, error = %e,
                            "decision log row skipped: not a record");
                        continue;
                    }
                }
            }
            match self.next_batch()? {
                Ok(b) => {
                    if let Some(Source::Parquet { batch, .. }) =
                        self.current.as_mut().map(|c| &mut c.source)
                    {
                        *batch = Some((b, 0));
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// What [`Records::next_line`] found.
enum Next {
    /// A line, in `Records::line`.
    Line,
    /// The current file is Parquet.
    Parquet,
}

impl Iterator for Records {
    type Item = Result<DecisionRecord, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_line()? {
                Err(e) => return Some(Err(e)),
                Ok(Next::Parquet) => {
                    if let Some(r) = self.next_parquet_record() {
                        return Some(r);
                    }
                }
                Ok(Next::Line) => {
                    if let Some(r) = self.parse_line() {
                        return Some(Ok(r));
                    }
                }
            }
        }
    }
}

/// Opens `path` for reading, decompressing `.zst` files; says whether it is
/// compressed (an unfinished zstd frame then ends the file early).
pub(crate) fn open_lines(path: &Path) -> io::Result<(Box<dyn BufRead + Send>, bool)> {
    let file = File::open(path)?;
    let zstd = path.extension().is_some_and(|e| e == "zst");
    let reader: Box<dyn BufRead + Send> = if zstd {
        Box::new(BufReader::with_capacity(
            READ_BUFFER,
            zstd::stream::read::Decoder::new(file)?,
        ))
    } else {
        Box::new(BufReader::with_capacity(READ_BUFFER, file))
    };
    Ok((reader, zstd))
}

/// Opens `path` for reading, as Parquet or as lines by its extension.
fn open(path: &Path) -> Result<Current, ReadError> {
    let source = if is_parquet(path) {
        Source::Parquet {
            reader: open_parquet(path, "decisions")?,
            batch: None,
        }
    } else {
        let (reader, zstd) = open_lines(path).map_err(|source| ReadError::Io {
            path: path.to_owned(),
            source,
        })?;
        return Ok(Current {
            path: path.to_owned(),
            source: Source::Lines(reader),
            zstd,
            line_no: 0,
        });
    };
    Ok(Current {
        path: path.to_owned(),
        source,
        zstd: false,
        line_no: 0,
    })
}

/// What [`read_line`] found.
pub(crate) enum Line {
    /// A line (with its newline, unless it is the file's last) is in the
    /// buffer.
    Read,
    /// A line longer than the limit was read past.
    TooLong,
    /// The end of the file, nothing read.
    End,
}

/// Reads the next line into `buf` (cleared first), holding at most `max`
/// bytes of it. On an error, `buf` holds what was read of the line.
pub(crate) fn read_line(r: &mut dyn BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    if buf.capacity() > LINE_BUFFER_KEEP {
        *buf = Vec::new();
    }
    buf.clear();
    let mut too_long = false;
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::End,
                (false, false) => Line::Read,
            });
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if !too_long {
            if buf.len() + take > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&available[..take]);
            }
        }
        r.consume(take);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Read });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_read_past_without_being_held() {
        let data = b"short\nxxxxxxxxxxxxxxxxxxxx\nlast";
        let mut r = BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut r, &mut buf, 8).unwrap(),
            Line::Read
        ));
        assert_eq!(buf, b"short\n");
        assert!(matches!(
            read_line(&mut r, &mut buf, 8).unwrap(),
            Line::TooLong
        ));
        assert!(buf.len() <= 8);
        assert!(matches!(
            read_line(&mut r, &mut buf, 8).unwrap(),
            Line::Read
        ));
        assert_eq!(buf, b"last");
        assert!(matches!(read_line(&mut r, &mut buf, 8).unwrap(), Line::End));
    }

    #[test]
    fn log_file_names() {
        assert!(is_log_file_name("decisions-20261126T012233Z-000000.jsonl"));
        assert!(is_log_file_name(
            "decisions-20261126T012233Z-000001.jsonl.zst"
        ));
        assert!(is_log_file_name(
            "decisions-20261126T012233Z-000002.parquet"
        ));
        assert!(!is_log_file_name(
            "decisions-20261126T012233Z-000003.parquet.tmp"
        ));
        assert!(!is_log_file_name("decisions-x.json"));
        assert!(!is_log_file_name(".decisions-probe123"));
        assert!(!is_log_file_name("audit.jsonl"));
    }
}
