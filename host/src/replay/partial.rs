//! Partial results: a replay of one shard of the logs, written to a file
//! (`oasis replay --partial OUT`), and the merge of several
//! (`oasis replay merge`) into the report one process would have printed.
//!
//! A partial holds the shard's [`Tally`]: every count, the score
//! histograms and promotions, the divergence sums (exact), and per
//! candidate, route and arm the estimator's per-request sums (each
//! request's `Σ w·r`, `Σ w`, … keyed by a hash of its id: what the
//! bootstrap resamples). Floats are written by their bits, so nothing is
//! lost in JSON. Merging adds the tallies; the estimates are computed once,
//! on the whole, with requests in key order: point estimates and bootstrap
//! intervals equal the single run's exactly, whatever the split.
//!
//! It also holds what must agree for a merge to mean anything, and the
//! merge refuses partials that differ, naming the difference: the format
//! and oasis version, the mode (determinism or candidates), the candidates
//! (name, module digest, settings hash), the estimator's settings (seed,
//! resamples, level, clip, thresholds), the fuel per call and limits, and
//! the outcome events (every shard must read the same ones: counts and
//! files). A log file named in two partials (same name and size) is
//! refused too: it would be counted twice.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::{Report, Run, Tally, TallyError};
use crate::ope::Estimator;

/// The `format` field of a partial file.
pub const PARTIAL_FORMAT: &str = "oasis-replay-partial";
/// The version of the partial format this build writes and reads.
pub const PARTIAL_VERSION: u32 = 1;

/// The partial result of replaying one shard of the logs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Partial {
    format: String,
    version: u32,
    /// The oasis version that wrote it.
    oasis_version: String,
    /// What must agree between partials that merge.
    options: Options,
    /// The decision log files it read.
    files: Vec<InputFile>,
    threads: usize,
    elapsed_s: f64,
    tally: Tally,
}

/// A replay's settings that change its figures: partials merge only when
/// these are equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Options {
    /// The candidates, in order (none: a determinism check).
    pub(crate) candidates: Vec<CandidateId>,
    /// The estimators' settings.
    pub(crate) estimator: Estimator,
    /// Fuel per policy call.
    pub(crate) fuel_per_call: u64,
    /// Memory limit per instance, bytes.
    pub(crate) memory_bytes: usize,
    /// Candidates per request at most.
    pub(crate) max_candidates: usize,
    /// The outcome events read, if any.
    pub(crate) outcomes: Option<OutcomeSet>,
}

/// A candidate as a merge compares it (not its path, which may differ from
/// machine to machine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CandidateId {
    pub(crate) name: String,
    pub(crate) digest: String,
    pub(crate) settings_sha256: String,
}

/// The outcome events a replay read: its files and counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OutcomeSet {
    pub(crate) files: Vec<InputFile>,
    pub(crate) events: u64,
    pub(crate) skipped: u64,
    pub(crate) duplicates: u64,
}

/// An input file by name and size.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct InputFile {
    pub(crate) name: String,
    pub(crate) bytes: u64,
}

impl InputFile {
    /// `paths` by name and size, sorted.
    pub(crate) fn list(paths: &[PathBuf]) -> Vec<InputFile> {
        let mut out: Vec<InputFile> = paths
            .iter()
            .map(|p| InputFile {
                name: p
                    .file_name()
                    .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into()),
                bytes: std::fs::metadata(p).map_or(0, |m| m.len()),
            })
            .collect();
        out.sort();
        out
    }
}

/// Why partials cannot be written, read or merged.
#[derive(Debug, thiserror::Error)]
pub enum PartialError {
    /// No partial to merge.
    #[error("no partial results to merge")]
    Nothing,
    /// A partial cannot be written.
    #[error("cannot write the partial result {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A partial cannot be read.
    #[error("cannot read the partial result {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file is not a partial of this format.
    #[error("{} is not an oasis replay partial result ({why})", path.display())]
    NotPartial {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Partials that do not belong to one replay.
    #[error("{} cannot be merged with {}: {why}", path.display(), first.display())]
    Incompatible {
        /// The partial refused.
        path: PathBuf,
        /// The first partial, which the others must agree with.
        first: PathBuf,
        /// What differs.
        why: String,
    },
    /// A log file read by two shards.
    #[error("the log file {file} ({bytes} bytes) was replayed by both {} and {}: it would be counted twice", a.display(), b.display())]
    Overlap {
        /// The file's name.
        file: String,
        /// Its size.
        bytes: u64,
        /// One partial.
        a: PathBuf,
        /// The other.
        b: PathBuf,
    },
}

impl Partial {
    /// A shard's partial result.
    pub(crate) fn new(
        options: Options,
        files: Vec<InputFile>,
        threads: usize,
        elapsed_s: f64,
        tally: Tally,
    ) -> Partial {
        Partial {
            format: PARTIAL_FORMAT.to_string(),
            version: PARTIAL_VERSION,
            oasis_version: env!("CARGO_PKG_VERSION").to_string(),
            options,
            files,
            threads,
            elapsed_s,
            tally,
        }
    }

    /// Records read by this shard.
    pub fn records(&self) -> u64 {
        self.tally.records
    }

    /// The shard's own report (what `oasis replay` without `--partial`
    /// prints for it).
    pub fn report(self) -> Report {
        let run = Run {
            shards: 1,
            threads: self.threads,
            elapsed_s: self.elapsed_s,
            fuel_per_call: self.options.fuel_per_call,
        };
        Report::finish(self.tally, run)
    }

    /// Writes it to `path` (JSON; zstd-compressed when the name ends in
    /// `.zst`), through a temporary file renamed into place.
    ///
    /// # Errors
    /// [`PartialError::Write`].
    pub fn write(&self, path: &Path) -> Result<(), PartialError> {
        let error = |source: io::Error| PartialError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(error)?;
        {
            let file = BufWriter::new(tmp.as_file());
            let mut out: Box<dyn Write> = if is_zst(path) {
                Box::new(
                    zstd::stream::write::Encoder::new(file, 3)
                        .map_err(error)?
                        .auto_finish(),
                )
            } else {
                Box::new(file)
            };
            serde_json::to_writer(&mut out, self).map_err(|e| error(e.into()))?;
            out.write_all(b"\n").map_err(error)?;
            out.flush().map_err(error)?;
        }
        tmp.as_file().sync_all().map_err(error)?;
        tmp.persist(path).map_err(|e| error(e.error))?;
        Ok(())
    }

    /// Reads a partial written by [`Partial::write`].
    ///
    /// # Errors
    /// [`PartialError::Read`], or [`PartialError::NotPartial`] for a file
    /// of another kind or format version.
    pub fn read(path: &Path) -> Result<Partial, PartialError> {
        let file = std::fs::File::open(path).map_err(|source| PartialError::Read {
            path: path.to_owned(),
            source,
        })?;
        let read_error = |source: io::Error| PartialError::Read {
            path: path.to_owned(),
            source,
        };
        let mut bytes = Vec::new();
        if is_zst(path) {
            zstd::stream::read::Decoder::new(file)
                .and_then(|mut d| d.read_to_end(&mut bytes))
                .map_err(read_error)?;
        } else {
            BufReader::new(file)
                .read_to_end(&mut bytes)
                .map_err(read_error)?;
        }
        let not = |why: String| PartialError::NotPartial {
            path: path.to_owned(),
            why,
        };
        /// What is checked first, so that another file or version is
        /// told as such rather than as a missing field.
        #[derive(Deserialize)]
        struct Header {
            #[serde(default)]
            format: serde_json::Value,
            #[serde(default)]
            version: serde_json::Value,
        }
        let header: Header =
            serde_json::from_slice(&bytes).map_err(|e| not(format!("not JSON: {e}")))?;
        if header.format != PARTIAL_FORMAT {
            return Err(not(format!("its format is {}", header.format)));
        }
        if header.version != PARTIAL_VERSION {
            return Err(not(format!(
                "format version {}, this oasis reads {PARTIAL_VERSION}",
                header.version
            )));
        }
        // Straight from the bytes (not through a `Value`): the settings'
        // numbers are read exactly.
        serde_json::from_slice(&bytes).map_err(|e| not(e.to_string()))
    }
}

fn is_zst(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "zst")
}

/// Merges partial results read from `paths` into one report: the report a
/// single process replaying all their logs prints.
///
/// # Errors
/// A partial cannot be read, or the partials do not belong to one replay
/// (versions, options, candidates, outcomes differ; a log file in two).
pub fn merge(paths: &[PathBuf]) -> Result<Report, PartialError> {
    let mut parts = paths.iter();
    let first_path = parts.next().ok_or(PartialError::Nothing)?;
    let first = Partial::read(first_path)?;
    let mut seen: std::collections::HashMap<InputFile, PathBuf> = first
        .files
        .iter()
        .map(|f| (f.clone(), first_path.clone()))
        .collect();
    let mut tally = first.tally;
    let (mut threads, mut elapsed_s) = (first.threads, first.elapsed_s);
    for path in parts {
        let p = Partial::read(path)?;
        let refuse = |why: String| PartialError::Incompatible {
            path: path.clone(),
            first: first_path.clone(),
            why,
        };
        if p.oasis_version != first.oasis_version {
            return Err(refuse(format!(
                "written by oasis {}, the other by oasis {}",
                p.oasis_version, first.oasis_version
            )));
        }
        if let Some(why) = differences(&first.options, &p.options) {
            return Err(refuse(why));
        }
        for f in &p.files {
            if let Some(other) = seen.insert(f.clone(), path.clone()) {
                return Err(PartialError::Overlap {
                    file: f.name.clone(),
                    bytes: f.bytes,
                    a: other,
                    b: path.clone(),
                });
            }
        }
        tally.merge(p.tally).map_err(|e| match e {
            TallyError::Candidates => refuse("they replay different candidates".into()),
            TallyError::Estimator(e) => refuse(e.to_string()),
        })?;
        threads = threads.max(p.threads);
        elapsed_s += p.elapsed_s;
    }
    tracing::debug!(partials = paths.len(), records = tally.records, "merged");
    Ok(Report::finish(
        tally,
        Run {
            shards: paths.len(),
            threads,
            elapsed_s,
            fuel_per_call: first.options.fuel_per_call,
        },
    ))
}

/// What differs between two partials' options, said for a person; `None`
/// when they agree.
fn differences(a: &Options, b: &Options) -> Option<String> {
    let ids = |o: &Options| {
        o.candidates
            .iter()
            .map(|c| {
                format!(
                    "{} (digest {}, settings {})",
                    c.name,
                    short(&c.digest),
                    short(&c.settings_sha256)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mode = |o: &Options| {
        if o.candidates.is_empty() {
            "a determinism check".to_string()
        } else {
            format!("candidates {}", ids(o))
        }
    };
    if a.candidates != b.candidates {
        return Some(format!("it replays {}, the other {}", mode(b), mode(a)));
    }
    let (ea, eb) = (&a.estimator, &b.estimator);
    for (what, x, y) in [
        ("seed", ea.seed().to_string(), eb.seed().to_string()),
        (
            "bootstrap resamples",
            ea.bootstrap().to_string(),
            eb.bootstrap().to_string(),
        ),
        (
            "confidence level",
            ea.level().to_string(),
            eb.level().to_string(),
        ),
        ("weight clip", ea.clip().to_string(), eb.clip().to_string()),
        (
            "--max-unsupported",
            ea.max_unsupported().to_string(),
            eb.max_unsupported().to_string(),
        ),
        (
            "--min-support",
            ea.min_support().to_string(),
            eb.min_support().to_string(),
        ),
        (
            "fuel per call",
            a.fuel_per_call.to_string(),
            b.fuel_per_call.to_string(),
        ),
        (
            "memory limit (bytes)",
            a.memory_bytes.to_string(),
            b.memory_bytes.to_string(),
        ),
        (
            "max candidates",
            a.max_candidates.to_string(),
            b.max_candidates.to_string(),
        ),
    ] {
        if x != y {
            return Some(format!("its {what} is {y}, the other's {x}"));
        }
    }
    match (&a.outcomes, &b.outcomes) {
        (None, None) => None,
        (Some(_), None) => Some("it has no outcome events, the other has".into()),
        (None, Some(_)) => Some("it has outcome events, the other has none".into()),
        (Some(x), Some(y)) if x != y => Some(format!(
            "it read other outcome events ({} events, {} skipped, {} repeated from {} files; the other {}, {}, {} from {}): give every shard the same --outcomes",
            y.events,
            y.skipped,
            y.duplicates,
            y.files.len(),
            x.events,
            x.skipped,
            x.duplicates,
            x.files.len()
        )),
        _ => None,
    }
}

fn short(hash: &str) -> &str {
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            candidates: vec![CandidateId {
                name: "c".into(),
                digest: "sha256:abc".into(),
                settings_sha256: "def".into(),
            }],
            estimator: Estimator::default(),
            fuel_per_call: 10,
            memory_bytes: 1 << 20,
            max_candidates: 100,
            outcomes: None,
        }
    }

    #[test]
    fn differences_are_named() {
        let a = options();
        assert_eq!(differences(&a, &a.clone()), None);
        let mut b = options();
        b.estimator = b.estimator.with_seed(7);
        assert_eq!(differences(&a, &b).unwrap(), "its seed is 7, the other's 0");
        let mut b = options();
        b.candidates[0].digest = "sha256:999".into();
        let why = differences(&a, &b).unwrap();
        assert!(
            why.contains("digest 999") && why.contains("digest abc"),
            "{why}"
        );
        let mut b = options();
        b.candidates.clear();
        assert!(differences(&a, &b).unwrap().contains("a determinism check"));
        let mut b = options();
        b.outcomes = Some(OutcomeSet {
            files: vec![],
            events: 3,
            skipped: 0,
            duplicates: 0,
        });
        assert!(differences(&a, &b).unwrap().contains("has outcome events"));
    }

    #[test]
    fn a_file_of_another_kind_is_not_a_partial() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        std::fs::write(&p, r#"{"format": "something", "version": 1}"#).unwrap();
        let e = Partial::read(&p).unwrap_err();
        assert!(
            e.to_string().contains("is not an oasis replay partial"),
            "{e}"
        );
        std::fs::write(&p, r#"{"format": "oasis-replay-partial", "version": 99}"#).unwrap();
        let e = Partial::read(&p).unwrap_err();
        assert!(e.to_string().contains("format version 99"), "{e}");
        std::fs::write(&p, "not json").unwrap();
        assert!(matches!(
            Partial::read(&p),
            Err(PartialError::NotPartial { .. })
        ));
        assert!(matches!(
            Partial::read(&dir.path().join("missing.json")),
            Err(PartialError::Read { .. })
        ));
        assert!(matches!(merge(&[]), Err(PartialError::Nothing)));
    }
}
