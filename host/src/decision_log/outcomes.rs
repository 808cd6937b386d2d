//! Outcomes: what listeners did after a decision, the rewards of off-policy
//! evaluation ([`crate::ope`]).
//!
//! # Format
//!
//! JSON lines, one event per line, plain or zstd-compressed (`.zst`), or
//! Parquet (`.parquet`, the columns of [`super::columnar::OutcomeRows`]:
//! these fields, `at_ms` as the timestamp `event_at`), which `oasis serve` writes by
//! default:
//!
//! ```text
//! {"request_id": "r-1", "candidate_id": "spotify:track:9c17", "event": "stream", "value": 1.0, "at_ms": 1781524800000}
//! {"request_id": "r-1", "candidate_id": "spotify:track:9c17", "event": "save"}
//! ```
//!
//! * `request_id`: the `context.request_id` of the scored request, as in
//!   the decision log;
//! * `candidate_id`: the candidate's `id` in that request;
//! * `event`: `impression`, `stream`, `skip` or `save`;
//! * `value` (optional): the event's reward; without it,
//!   [`default_value`] of the event;
//! * `at_ms` (optional): when it happened, milliseconds since the Unix
//!   epoch; kept for the record, not used by the estimates.
//!
//! # The reward of a decision
//!
//! A decision is "promote this track or not, in this request". Its reward
//! is what the listener did with the track afterwards: the **sum of the
//! values of every event for that `(request_id, candidate_id)`**, 0 when
//! there is none. With the default values (impression 0, stream 1, skip 0,
//! save 1) the reward counts engagements: a track shown and skipped is
//! worth 0, one streamed is worth 1, one streamed and saved 2. An impression
//! alone is worth nothing: being seen is not what a promotion is for. Give
//! `value` explicitly (e.g. a stream's listened fraction) to use another
//! reward; events are summed all the same.
//!
//! # Reading
//!
//! [`Outcomes::load`] takes files, directories (their `*.parquet`, `*.jsonl`
//! and `*.jsonl.zst` files, sorted by name) and glob patterns, like the decision
//! log reader ([`super::files`]), and streams them line by line. As there,
//! damage is expected and counted, not fatal: a line that is not an event
//! (torn, garbage, unknown event kind, over [`MAX_LINE_BYTES`]) is skipped
//! and counted ([`Outcomes::skipped`]); a `.zst` file cut inside its frame
//! is read up to the cut and counted ([`Outcomes::truncated`]). A file that
//! cannot be opened or read is an [`OutcomeError`].
//!
//! An event with an `event_id` (those of `POST /v1/events`) counts once:
//! a retried batch is written to the outcome files again, and the state
//! store applies each id once, so the rewards do too; the repeats are
//! counted ([`Outcomes::duplicates`]).
//!
//! Memory is one entry per `(request_id, candidate_id)` that has events,
//! and one per distinct event id.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::reader::{self, ReadError};

/// Longest line read as an event; a longer one is skipped and counted
/// without being held in memory.
pub const MAX_LINE_BYTES: usize = 64 << 10;

/// Read buffer per open file.

/// What the listener did with a candidate track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The track was shown (reward 0 by default).
    Impression,
    /// The track was streamed (reward 1 by default).
    Stream,
    /// The track was skipped (reward 0 by default).
    Skip,
    /// The track was saved (reward 1 by default).
    Save,
}

/// One line of an outcome file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeEvent {
    /// The scored request's `context.request_id`.
    pub request_id: String,
    /// The candidate's `id` in that request.
    pub candidate_id: String,
    /// What happened.
    pub event: EventKind,
    /// The event's reward; [`default_value`] of `event` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// When it happened, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    /// The delivery fields of `POST /v1/events` (see [`DeliveryFields`]);
    /// absent in plain outcome events.
    #[serde(flatten)]
    pub delivery: DeliveryFields,
}

/// What an event adds for the host's delivery state (`POST /v1/events`):
/// who saw the track, in which campaign, for which rights holder, whether
/// as a promotion and at which rank. Offline evaluation ignores them; the
/// state store counts them ([`oasis_state::DeliveryEvent`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryFields {
    /// Unique id of the event: a repeated id changes no state (retries are
    /// safe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The listener (the scored request's `context.listener_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_id: Option<String>,
    /// The session (the scored request's `context.session_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The track's campaign, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// The track's rights holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights_holder: Option<String>,
    /// Whether the track was shown as a promotion (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<bool>,
    /// 1-based rank at which the track was shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
}

impl OutcomeEvent {
    /// The event's reward: `value`, or [`default_value`] of its kind.
    pub fn reward(&self) -> f64 {
        self.value.unwrap_or_else(|| default_value(self.event))
    }
}

/// The reward of an event without an explicit `value`: impression 0,
/// stream 1, skip 0, save 1. The reward of a promotion decision is what the
/// listener did with the track, so only engagements count; see the
/// [module docs](self).
pub fn default_value(event: EventKind) -> f64 {
    match event {
        EventKind::Impression | EventKind::Skip => 0.0,
        EventKind::Stream | EventKind::Save => 1.0,
    }
}

/// Why outcome files could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    /// An input could not be resolved to files (see [`super::files`]).
    #[error(transparent)]
    Files(#[from] ReadError),
    /// A file or directory could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// The rewards of decisions: summed event values per
/// `(request_id, candidate_id)`.
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    rewards: HashMap<String, HashMap<String, f64>>,
    pairs: usize,
    events: u64,
    skipped: u64,
    truncated: u64,
    /// Event ids seen, so that a retried batch counts once.
    ids: HashSet<String>,
    duplicates: u64,
}

impl Outcomes {
    /// Reads every event of `inputs` (files, directories of `*.jsonl[.zst]`
    /// files, glob patterns), in order.
    ///
    /// # Errors
    /// An input that does not exist and is not a pattern, an invalid
    /// pattern or one that matches nothing, a file that cannot be opened
    /// or read (other than a `.zst` file cut short, which is read up to the
    /// cut).
    pub fn load(inputs: &[PathBuf]) -> Result<Outcomes, OutcomeError> {
        let mut out = Outcomes::default();
        for path in outcome_files(inputs)? {
            out.read_file(&path)?;
        }
        Ok(out)
    }

    /// Adds one event's reward, unless an event with the same `event_id`
    /// was added before (then it is counted in [`Outcomes::duplicates`]).
    pub fn add(&mut self, event: &OutcomeEvent) {
        if let Some(id) = &event.delivery.event_id {
            if self.ids.contains(id.as_str()) {
                self.duplicates += 1;
                return;
            }
            self.ids.insert(id.clone());
        }
        self.add_value(&event.request_id, &event.candidate_id, event.reward());
    }

    fn add_value(&mut self, request_id: &str, candidate_id: &str, value: f64) {
        self.events += 1;
        let per_request = match self.rewards.get_mut(request_id) {
            Some(m) => m,
            None => self.rewards.entry(request_id.to_owned()).or_default(),
        };
        match per_request.get_mut(candidate_id) {
            Some(v) => *v += value,
            None => {
                per_request.insert(candidate_id.to_owned(), value);
                self.pairs += 1;
            }
        }
    }

    /// The reward of the decision on `candidate_id` in `request_id`: the
    /// sum of its events' values, 0 when it has none.
    pub fn reward(&self, request_id: &str, candidate_id: &str) -> f64 {
        self.rewards
            .get(request_id)
            .and_then(|m| m.get(candidate_id))
            .copied()
            .unwrap_or(0.0)
    }

    /// Whether any event names `request_id`.
    pub fn has_request(&self, request_id: &str) -> bool {
        self.rewards.contains_key(request_id)
    }

    /// Number of `(request_id, candidate_id)` pairs with at least one event.
    pub fn len(&self) -> usize {
        self.pairs
    }

    /// Whether no event was read.
    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    /// Number of events read.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Events not added because an event with the same `event_id` was
    /// (a retried `POST /v1/events` batch).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Lines skipped because they are not events (torn, garbage, unknown
    /// event kind, too long). Blank lines are ignored, not counted.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Compressed files that ended inside their zstd frame (read up to the
    /// cut).
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    fn read_file(&mut self, path: &Path) -> Result<(), OutcomeError> {
        let io_err = |source| OutcomeError::Io {
            path: path.to_owned(),
            source,
        };
        if reader::is_parquet(path) {
            return self.read_parquet(path);
        }
        let (mut reader, zstd) = reader::open_lines(path).map_err(io_err)?;
        let mut line = Vec::new();
        loop {
            match reader::read_line(&mut reader, &mut line, MAX_LINE_BYTES) {
                Ok(reader::Line::End) => return Ok(()),
                Ok(reader::Line::Read) => self.parse_line(&line, path),
                Ok(reader::Line::TooLong) => self.skipped += 1,
                Err(e) if zstd && e.kind() == io::ErrorKind::UnexpectedEof => {
                    // An unfinished frame: what was decoded is all there is.
                    self.truncated += 1;
                    tracing::warn!(path = %path.display(),
                        "outcome file ends inside its zstd frame; read up to the cut");
                    self.parse_line(&line, path);
                    return Ok(());
                }
                Err(e) => return Err(io_err(e)),
            }
        }
    }

    /// Reads a Parquet outcome file (its values exact, as written).
    fn read_parquet(&mut self, path: &Path) -> Result<(), OutcomeError> {
        for batch in reader::open_parquet(path, "outcomes")? {
            let batch = batch.map_err(|e| ReadError::Parquet {
                path: path.to_owned(),
                source: e.into(),
            })?;
            let (events, skipped) =
                super::columnar::outcome_events(&batch).map_err(|source| ReadError::Schema {
                    path: path.to_owned(),
                    source,
                })?;
            self.skipped += skipped;
            for e in &events {
                if e.reward().is_finite() {
                    self.add(e);
                } else {
                    self.skipped += 1;
                }
            }
        }
        Ok(())
    }

    fn parse_line(&mut self, line: &[u8], path: &Path) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match serde_json::from_slice::<OutcomeEvent>(line) {
            Ok(e) if e.reward().is_finite() => self.add(&e),
            Ok(_) => self.skipped += 1,
            Err(e) => {
                self.skipped += 1;
                tracing::debug!(path = %path.display(), error = %e,
                    "outcome line skipped: not an event");
            }
        }
    }
}

/// The outcome files named by `inputs`: a directory gives its `*.parquet`,
/// `*.jsonl` and `*.jsonl.zst` files sorted by name, except decision log files
/// (`decisions-*`), so a decision log directory that also holds the
/// `outcomes-*` files `oasis serve` writes can be given as both; files and glob patterns are
/// resolved as by [`super::files`].
///
/// # Errors
/// As [`super::files`]; an unreadable directory.
pub fn outcome_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, OutcomeError> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let err = |source| OutcomeError::Io {
                path: input.clone(),
                source,
            };
            let mut found = Vec::new();
            for entry in std::fs::read_dir(input).map_err(err)? {
                let entry = entry.map_err(err)?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if (name.ends_with(".parquet")
                    || name.ends_with(".jsonl")
                    || name.ends_with(".jsonl.zst"))
                    && !reader::is_log_file_name(&name)
                    && entry.file_type().map_err(err)?.is_file()
                {
                    found.push(entry.path());
                }
            }
            found.sort();
            out.extend(found);
        } else {
            out.extend(reader::files(std::slice::from_ref(input))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const LINES: &str = r#"{"request_id": "r-1", "candidate_id": "t1", "event": "impression", "at_ms": 1781524800000}
{"request_id": "r-1", "candidate_id": "t1", "event": "stream"}
{"request_id": "r-1", "candidate_id": "t1", "event": "save"}
{"request_id": "r-1", "candidate_id": "t2", "event": "skip"}

{"request_id": "r-2", "candidate_id": "t1", "event": "stream", "value": 0.25}
not json
{"request_id": "r-2", "candidate_id": "t1", "event": "like"}
{"request_id": "r-2", "event": "stream"}
{"request_id": "r-2", "candidate_id": "t3", "event": "stream"#;

    fn check(o: &Outcomes) {
        assert_eq!(
            o.reward("r-1", "t1"),
            2.0,
            "impression 0 + stream 1 + save 1"
        );
        assert_eq!(o.reward("r-1", "t2"), 0.0, "a skip");
        assert_eq!(o.reward("r-2", "t1"), 0.25, "explicit value");
        assert_eq!(o.reward("r-2", "t9"), 0.0, "no event");
        assert_eq!(o.reward("r-9", "t1"), 0.0, "no event");
        assert_eq!(o.len(), 3);
        assert_eq!(o.events(), 5);
        assert_eq!(
            o.skipped(),
            4,
            "garbage, unknown kind, missing field, torn last line; blank ignored"
        );
        assert!(o.has_request("r-1") && !o.has_request("r-9"));
    }

    #[test]
    fn default_values() {
        assert_eq!(default_value(EventKind::Impression), 0.0);
        assert_eq!(default_value(EventKind::Stream), 1.0);
        assert_eq!(default_value(EventKind::Skip), 0.0);
        assert_eq!(default_value(EventKind::Save), 1.0);
    }

    #[test]
    fn events_round_trip() {
        let e = OutcomeEvent {
            request_id: "r-1".into(),
            candidate_id: "spotify:track:9c17".into(),
            event: EventKind::Stream,
            value: Some(1.0),
            at_ms: Some(1_781_524_800_000),
            delivery: Default::default(),
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            r#"{"request_id":"r-1","candidate_id":"spotify:track:9c17","event":"stream","value":1.0,"at_ms":1781524800000}"#
        );
        assert_eq!(serde_json::from_str::<OutcomeEvent>(&line).unwrap(), e);
    }

    /// A retried `POST /v1/events` batch is in the files twice; the state
    /// applies each id once, and so must the rewards (before: 2.0).
    #[test]
    fn a_retried_batch_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let batch = r#"{"request_id": "r-1", "candidate_id": "t1", "event": "stream", "value": 1.0, "event_id": "e-1"}
{"request_id": "r-1", "candidate_id": "t2", "event": "stream", "event_id": "e-2"}
"#;
        std::fs::write(dir.path().join("outcomes-a.jsonl"), batch).unwrap();
        // The retry, in the next file; plus two events without an id, which
        // cannot be told apart and are both summed.
        std::fs::write(
            dir.path().join("outcomes-b.jsonl"),
            format!(
                "{batch}{}\n{}\n",
                r#"{"request_id": "r-1", "candidate_id": "t3", "event": "stream"}"#,
                r#"{"request_id": "r-1", "candidate_id": "t3", "event": "stream"}"#
            ),
        )
        .unwrap();
        let o = Outcomes::load(&[dir.path().to_owned()]).unwrap();
        assert_eq!(o.reward("r-1", "t1"), 1.0);
        assert_eq!(o.reward("r-1", "t2"), 1.0);
        assert_eq!(o.reward("r-1", "t3"), 2.0);
        assert_eq!((o.events(), o.duplicates()), (4, 2));
    }

    #[test]
    fn plain_files_sum_per_decision_and_count_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outcomes.jsonl");
        std::fs::write(&path, LINES).unwrap();
        check(&Outcomes::load(&[path]).unwrap());
    }

    #[test]
    fn directories_globs_and_zstd() {
        let dir = tempfile::tempdir().unwrap();
        let (head, tail) = LINES.split_at(LINES.find("\n\n").unwrap() + 1);
        std::fs::write(dir.path().join("a.jsonl"), head).unwrap();
        let mut z = zstd::stream::write::Encoder::new(
            std::fs::File::create(dir.path().join("b.jsonl.zst")).unwrap(),
            3,
        )
        .unwrap();
        z.write_all(tail.as_bytes()).unwrap();
        z.finish().unwrap();
        std::fs::write(dir.path().join("ignored.txt"), "garbage").unwrap();

        let o = Outcomes::load(&[dir.path().to_owned()]).unwrap();
        check(&o);
        assert_eq!(o.truncated(), 0);
        let o = Outcomes::load(&[dir.path().join("*.jsonl*")]).unwrap();
        check(&o);
    }

    #[test]
    fn a_cut_zstd_file_is_read_up_to_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&format!(
                "{{\"request_id\": \"r{i}\", \"candidate_id\": \"t{}\", \"event\": \"stream\"}}\n",
                i * 7919 % 10007
            ));
        }
        let bytes = zstd::encode_all(text.as_bytes(), 3).unwrap();
        let path = dir.path().join("cut.jsonl.zst");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let o = Outcomes::load(&[path]).unwrap();
        assert_eq!(o.truncated(), 1);
        assert!(!o.is_empty() && o.len() < 20_000, "{}", o.len());
        assert!(o.skipped() <= 1);
        assert_eq!(o.reward("r0", "t0"), 1.0);
    }

    #[test]
    fn long_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.jsonl");
        let long = format!(
            "{{\"request_id\": \"{}\", \"candidate_id\": \"t\", \"event\": \"stream\"}}\n",
            "x".repeat(MAX_LINE_BYTES)
        );
        let ok = "{\"request_id\": \"r\", \"candidate_id\": \"t\", \"event\": \"save\"}\n";
        std::fs::write(&path, format!("{long}{ok}{long}")).unwrap();
        let o = Outcomes::load(&[path]).unwrap();
        assert_eq!((o.len(), o.skipped()), (1, 2));
        assert_eq!(o.reward("r", "t"), 1.0);
    }

    #[test]
    fn missing_inputs_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let e = Outcomes::load(&[dir.path().join("nope.jsonl")]).unwrap_err();
        assert!(e.to_string().contains("nope.jsonl"), "{e}");
        let e = Outcomes::load(&[dir.path().join("x-*.jsonl")]).unwrap_err();
        assert!(
            matches!(e, OutcomeError::Files(ReadError::NoMatch { .. })),
            "{e}"
        );
    }
}
