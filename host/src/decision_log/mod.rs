//! The decision log: one JSON line per scored request, for replay and
//! offline evaluation.
//!
//! Every decision `oasis serve` makes (and every shadow's, marked as such)
//! can be logged with what is needed to understand and reproduce it: when,
//! which route, arm and variant, which policy version (name, version,
//! digest) with which settings (their hash), the request exactly as the
//! policy received it, the per-candidate scores, eligibility, reasons and
//! propensities, the fallback that happened if any, and the time and
//! resources spent. `oasis replay` (later) rebuilds each batch from the
//! record and runs another policy on it, which is why the request is kept
//! verbatim rather than re-encoded ([`record`]).
//!
//! Two rules shape the design:
//!
//! * **Logging never delays or fails a response.** The request path hands a
//!   cheap [`PendingRecord`] to a bounded queue and moves on; a full queue
//!   drops the entry and counts it. Encoding, pseudonymisation, compression
//!   and I/O happen on one background thread ([`writer`]).
//! * **A crash never leaves a log that cannot be read.** Files get their
//!   final name when created and are only appended to, so a crash leaves at
//!   most a torn last line, or for zstd files an unfinished frame; the
//!   streaming [`reader`] skips and counts the former and reads the latter
//!   up to the cut.
//!
//! Sinks: rotating files in a directory (by size and age, optionally
//! zstd-compressed), or stdout for a log shipper. Listener and session ids
//! can be pseudonymised with a keyed hash ([`DecisionLogConfig::pseudonymise_key`]).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use oasis::decision_log::{DecisionLog, DecisionLogConfig, Records};
//! let (log, writer) = DecisionLog::start(DecisionLogConfig {
//!     dir: Some("/var/log/oasis".into()),
//!     compress: true,
//!     ..Default::default()
//! })?;
//! // log.log(pending_record) on the request path, then at shutdown:
//! let stats = writer.shutdown();
//! # let _ = (log, stats);
//! let mut records = Records::open(&["/var/log/oasis".into()])?;
//! for record in &mut records {
//!     let record = record?;
//!     println!("{} {} {}", record.request_id, record.policy.name, record.decisions.scores.len());
//! }
//! println!("{} damaged lines skipped", records.skipped());
//! # Ok(()) }
//! ```

mod body;
pub mod columnar;
pub mod outcomes;
pub mod reader;
pub mod record;
pub mod writer;

pub use reader::{ReadError, Records, files};
pub use record::{
    DecisionColumnsRecord, DecisionRecord, FallbackRecord, PolicyRefRecord, ReplayRecord,
    TimingRecord, UsageRecord,
};
pub use writer::{
    BudgetStats, DecisionLog, DecisionLogConfig, DecisionLogError, DecisionLogStats, DiskBudget,
    LogFormat, OutcomeStats, OutcomesRefused, PendingFallback, PendingRecord, WhenFull,
    WriterHandle, now_ms,
};

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use serde_json::value::RawValue;

    use super::*;
    use crate::metadata::PolicyRef;

    fn policy(name: &str) -> Arc<PolicyRef> {
        Arc::new(PolicyRef {
            name: name.into(),
            version: "1.2.3".into(),
            digest: format!("sha256:{:064x}", name.len()),
            settings_sha256: None,
        })
    }

    /// A request body of about `pad` extra bytes, distinct per `i`.
    fn body(i: usize, pad: usize) -> String {
        let candidates: Vec<String> = (0..pad / 60 + 1)
            .map(|c| {
                format!(
                    r#"{{"id": "t{i}-{c}", "relevance": {}, "campaign": "c\u00e9{}"}}"#,
                    (i * 31 + c) as f64 / 7.0,
                    c % 3
                )
            })
            .collect();
        format!(
            r#"{{"context": {{"request_id": "r{i}", "listener_id": "u{}", "session_id": "s{i}", "surface": "radio"}}, "candidates": [{}]}}"#,
            i % 5,
            candidates.join(", ")
        )
    }

    fn pending(i: usize, pad: usize) -> PendingRecord {
        let n = pad / 60 + 1;
        PendingRecord {
            at_ms: 1_790_000_000_000 + i as u64,
            request_id: format!("r{i}"),
            route: "radio".into(),
            variant: if i.is_multiple_of(2) {
                "stable"
            } else {
                "fallback"
            }
            .into(),
            arm: if i.is_multiple_of(2) {
                "stable"
            } else {
                "baseline"
            }
            .into(),
            shadow: i % 7 == 3,
            policy: policy("pid-pacing"),
            settings_sha256: "ab".repeat(32).into(),
            fallback: (i % 2 == 1).then(|| PendingFallback {
                policy: policy("flaky"),
                error_kind: "trap".into(),
                error: "wasm trap: unreachable\n\"quoted\"".into(),
            }),
            request: Bytes::from(body(i, pad)),
            state: (i % 4 == 1).then(|| {
                Arc::new(crate::delivery::Fill {
                    impressions_24h: vec![(0, i as u32 + 1)],
                    ..Default::default()
                })
            }),
            decisions: DecisionColumnsRecord {
                scores: (0..n).map(|c| (i + c) as f64 * 0.1).collect(),
                eligible: (0..n).map(|c| c % 2 == 0).collect(),
                reasons: (0..n).map(|c| c as u16).collect(),
                propensity: (0..n).map(|c| 1.0 / (c + 1) as f64).collect(),
            },
            timing: TimingRecord {
                server_us: 100 + i as u64,
                policy_us: 50,
            },
            usage: (!i.is_multiple_of(3)).then_some(UsageRecord {
                wall_us: 40,
                peak_memory_bytes: 1 << 20,
                fuel: i.is_multiple_of(2).then_some(12345),
            }),
        }
    }

    /// What `pending(i, pad)` reads back as (no pseudonymisation).
    fn expected(i: usize, pad: usize) -> DecisionRecord {
        let p = pending(i, pad);
        let policy = |p: &PolicyRef| PolicyRefRecord::from(p);
        DecisionRecord {
            v: record::VERSION,
            at_ms: p.at_ms,
            request_id: p.request_id,
            route: p.route,
            variant: p.variant.into(),
            arm: p.arm.into(),
            shadow: p.shadow,
            policy: policy(&p.policy),
            settings_sha256: p.settings_sha256.to_string(),
            fallback: p.fallback.map(|f| FallbackRecord {
                policy: policy(&f.policy),
                error_kind: f.error_kind.into(),
                error: f.error,
            }),
            request: RawValue::from_string(body(i, pad)).unwrap(),
            state: p.state.map(|f| (*f).clone()),
            decisions: p.decisions,
            timing: p.timing,
            usage: p.usage,
        }
    }

    /// A JSON-lines log in `dir` (the tests below read its lines).
    fn config(dir: &Path) -> DecisionLogConfig {
        DecisionLogConfig {
            dir: Some(dir.to_owned()),
            format: LogFormat::Jsonl,
            ..Default::default()
        }
    }

    /// Logs records `0..n` and shuts the writer down.
    fn write(config: DecisionLogConfig, n: usize, pad: usize) -> DecisionLogStats {
        let (log, writer) = DecisionLog::start(config).unwrap();
        for i in 0..n {
            log.log(pending(i, pad));
        }
        writer.shutdown()
    }

    fn read_all(inputs: &[PathBuf]) -> (Vec<DecisionRecord>, Records) {
        let mut records = Records::open(inputs).unwrap();
        let all = records.by_ref().map(Result::unwrap).collect();
        (all, records)
    }

    #[test]
    fn records_read_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let stats = write(config(dir.path()), 50, 200);
        assert_eq!(
            stats,
            DecisionLogStats {
                written: 50,
                dropped: 0,
                failed: 0
            }
        );
        let files = files(&[dir.path().to_owned()]).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        let name = files[0].file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("decisions-") && name.ends_with("-000000.jsonl"),
            "{name}"
        );
        let (all, records) = read_all(&[dir.path().to_owned()]);
        assert_eq!(records.skipped(), 0);
        assert_eq!(all.len(), 50);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(*r, expected(i, 200), "record {i}");
            assert_eq!(r.request.get(), body(i, 200), "body verbatim");
        }
        // One line per record.
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert_eq!(text.lines().count(), 50);
        assert!(text.ends_with('\n'));
        assert!(text.starts_with(r#"{"v":1,"at_ms":"#), "{}", &text[..40]);
    }

    #[test]
    fn pretty_printed_bodies_stay_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let (log, writer) = DecisionLog::start(config(dir.path())).unwrap();
        let mut p = pending(0, 0);
        let pretty = "{\n  \"context\": {\"request_id\": \"r0\"},\r\n  \"a\": \"x\\ny\"\n}\n";
        p.request = Bytes::from_static(pretty.as_bytes());
        log.log(p);
        writer.shutdown();
        let (all, _) = read_all(&[dir.path().to_owned()]);
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0].request.get(),
            r#"{"context":{"request_id":"r0"},"a":"x\ny"}"#
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_counted_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let (log, writer) = DecisionLog::start(config(dir.path())).unwrap();
        let mut p = pending(0, 0);
        p.request = Bytes::from_static(b"{\"context\":");
        log.log(p);
        log.log(pending(1, 0));
        let stats = writer.shutdown();
        assert_eq!((stats.written, stats.failed), (1, 1));
        let (all, _) = read_all(&[dir.path().to_owned()]);
        assert_eq!(all, [expected(1, 0)]);
    }

    #[test]
    fn rotation_by_size_keeps_every_record_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let max = 4000;
        let stats = write(
            DecisionLogConfig {
                max_file_bytes: max,
                ..config(dir.path())
            },
            60,
            300,
        );
        assert_eq!(stats.written, 60);
        let files = files(&[dir.path().to_owned()]).unwrap();
        assert!(files.len() >= 5, "{files:?}");
        for f in &files {
            let len = std::fs::metadata(f).unwrap().len();
            assert!(len <= max, "{} is {len} bytes", f.display());
        }
        let (all, records) = read_all(&[dir.path().to_owned()]);
        assert_eq!(records.skipped(), 0);
        let want: Vec<_> = (0..60).map(|i| expected(i, 300)).collect();
        assert_eq!(all, want);
        // A glob names the same files in the same order.
        let pattern = dir.path().join("decisions-*.jsonl");
        assert_eq!(super::files(&[pattern]).unwrap(), files);
    }

    /// Logs records `0..n` into a log with a disk budget; returns the
    /// counts, the budget's state and the bytes left in the directory.
    fn write_within(
        dir: &Path,
        when_full: WhenFull,
        n: usize,
    ) -> (DecisionLogStats, BudgetStats, u64) {
        let (log, writer) = DecisionLog::start(DecisionLogConfig {
            max_file_bytes: 4000,
            budget: Some(DiskBudget {
                max_total_bytes: 12_000,
                when_full,
            }),
            ..config(dir)
        })
        .unwrap();
        for i in 0..n {
            log.log(pending(i, 300));
        }
        let stats = writer.shutdown();
        let bytes = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        (stats, log.budget_stats(), bytes)
    }

    #[test]
    fn the_disk_budget_deletes_the_oldest_files() {
        let dir = tempfile::tempdir().unwrap();
        let (stats, budget, bytes) = write_within(dir.path(), WhenFull::DeleteOldest, 60);
        assert_eq!(stats.written, 60, "nothing lost from the queue");
        assert!(bytes <= 12_000, "{bytes} bytes left");
        assert!(budget.deleted_files >= 3, "{budget:?}");
        assert!(!budget.paused && budget.paused_records == 0, "{budget:?}");
        let (all, _) = read_all(&[dir.path().to_owned()]);
        assert_eq!(all.last(), Some(&expected(59, 300)), "the newest are kept");
        assert!(all.len() < 60 && all[0].request_id != "r0");
    }

    #[test]
    fn the_disk_budget_pauses_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (stats, budget, bytes) = write_within(dir.path(), WhenFull::Pause, 60);
        assert!(bytes <= 12_000, "{bytes} bytes left");
        assert!(budget.paused, "{budget:?}");
        assert_eq!(budget.deleted_files, 0);
        assert!(stats.written < 60 && stats.written > 0, "{stats:?}");
        assert_eq!(
            stats.written + budget.paused_records,
            60,
            "{stats:?} {budget:?}"
        );
        assert_eq!(stats.failed, 0, "a pause is not a failure");
        let (all, _) = read_all(&[dir.path().to_owned()]);
        assert_eq!(all.len() as u64, stats.written);
        assert_eq!(all[0], expected(0, 300), "the oldest are kept");
    }

    #[test]
    fn a_budget_under_two_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = DecisionLog::start(DecisionLogConfig {
            max_file_bytes: 4000,
            budget: Some(DiskBudget {
                max_total_bytes: 7999,
                when_full: WhenFull::Pause,
            }),
            ..config(dir.path())
        })
        .unwrap_err();
        assert!(e.to_string().contains("at least two files"), "{e}");
    }

    #[test]
    fn rotation_by_age() {
        let dir = tempfile::tempdir().unwrap();
        write(
            DecisionLogConfig {
                max_file_age: Duration::ZERO,
                ..config(dir.path())
            },
            4,
            0,
        );
        let files = files(&[dir.path().to_owned()]).unwrap();
        assert_eq!(files.len(), 4, "one record per file: {files:?}");
        let (all, _) = read_all(&files);
        assert_eq!(all, (0..4).map(|i| expected(i, 0)).collect::<Vec<_>>());
    }

    #[test]
    fn zstd_files_read_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        write(
            DecisionLogConfig {
                compress: true,
                ..config(dir.path())
            },
            30,
            200,
        );
        let files = files(&[dir.path().to_owned()]).unwrap();
        assert_eq!(files.len(), 1);
        assert!(files[0].to_str().unwrap().ends_with(".jsonl.zst"));
        let (all, records) = read_all(&files);
        assert_eq!((records.skipped(), records.truncated()), (0, 0));
        assert_eq!(all, (0..30).map(|i| expected(i, 200)).collect::<Vec<_>>());
    }

    #[test]
    fn a_cut_zstd_file_yields_the_records_before_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        // ~1 MB of lines: several zstd blocks (128 KiB of input each).
        let n = 1000;
        write(
            DecisionLogConfig {
                compress: true,
                ..config(dir.path())
            },
            n,
            900,
        );
        let files = files(&[dir.path().to_owned()]).unwrap();
        let bytes = std::fs::read(&files[0]).unwrap();
        let cut_dir = tempfile::tempdir().unwrap();
        let cut = cut_dir
            .path()
            .join("decisions-20260101T000000Z-000000.jsonl.zst");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();

        let (all, records) = read_all(&[cut_dir.path().to_owned()]);
        assert!(
            !all.is_empty() && all.len() < n,
            "{} of {n} records",
            all.len()
        );
        for (i, r) in all.iter().enumerate() {
            assert_eq!(*r, expected(i, 900), "record {i}");
        }
        assert_eq!(records.truncated(), 1);
        assert!(records.skipped() <= 1, "{records:?}");
    }

    #[test]
    fn torn_and_garbage_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        write(config(dir.path()), 5, 100);
        let files = files(&[dir.path().to_owned()]).unwrap();
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let first = text.lines().next().unwrap();
        let torn = format!("{text}not json at all\n\n{}", &first[..first.len() / 2]);
        std::fs::write(&files[0], torn).unwrap();
        let (all, records) = read_all(&files);
        assert_eq!(all, (0..5).map(|i| expected(i, 100)).collect::<Vec<_>>());
        assert_eq!(
            records.skipped(),
            2,
            "garbage and torn; blank lines ignored"
        );
    }

    #[test]
    fn empty_files_hold_no_record() {
        // A crash right after a file was created leaves it empty.
        let dir = tempfile::tempdir().unwrap();
        for name in ["decisions-x-0.jsonl", "decisions-x-1.jsonl.zst"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let (all, records) = read_all(&[dir.path().to_owned()]);
        assert!(all.is_empty());
        assert_eq!(records.skipped(), 0);
    }

    #[test]
    fn unreadable_files_and_bad_inputs_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.jsonl");
        let e = files(std::slice::from_ref(&missing)).unwrap_err();
        assert!(e.to_string().contains("nope.jsonl"), "{e}");
        let e = files(&[dir.path().join("x-*.jsonl")]).unwrap_err();
        assert!(matches!(e, ReadError::NoMatch { .. }), "{e}");
        // A file that vanishes between listing and reading.
        write(config(dir.path()), 2, 0);
        let mut list = files(&[dir.path().to_owned()]).unwrap();
        list.insert(0, missing.clone());
        let mut records = Records::new(list);
        let e = records.next().unwrap().unwrap_err();
        assert!(e.to_string().contains("nope.jsonl"), "{e}");
        assert_eq!(records.map(Result::unwrap).count(), 2, "goes on after");
    }

    #[test]
    fn pseudonymisation_is_keyed_and_deterministic() {
        let run = |key: &[u8]| {
            let dir = tempfile::tempdir().unwrap();
            write(
                DecisionLogConfig {
                    pseudonymise_key: Some(key.to_vec()),
                    ..config(dir.path())
                },
                6,
                100,
            );
            read_all(&[dir.path().to_owned()]).0
        };
        let (a, b, c) = (run(b"key-1"), run(b"key-2"), run(b"key-1"));
        let json = |r: &DecisionRecord| -> serde_json::Value {
            serde_json::from_str(r.request.get()).unwrap()
        };
        for i in 0..6 {
            let (ra, rb, rc) = (json(&a[i]), json(&b[i]), json(&c[i]));
            let original: serde_json::Value = serde_json::from_str(&body(i, 100)).unwrap();
            for id in ["listener_id", "session_id"] {
                let p = ra["context"][id].as_str().unwrap();
                assert!(p.starts_with("p:") && p.len() == 34, "{p}");
                assert_ne!(ra["context"][id], original["context"][id]);
                assert_eq!(
                    ra["context"][id], rc["context"][id],
                    "same key, same pseudonym"
                );
                assert_ne!(
                    ra["context"][id], rb["context"][id],
                    "other key, other pseudonym"
                );
            }
            // Everything else untouched, including the record's other fields.
            let mut stripped = ra.clone();
            for id in ["listener_id", "session_id"] {
                stripped["context"][id] = original["context"][id].clone();
            }
            assert_eq!(stripped, original);
            let mut rest = a[i].clone();
            rest.request = expected(i, 100).request;
            assert_eq!(rest, expected(i, 100));
        }
        // Listener u0 appears in requests 0 and 5: one pseudonym.
        assert_eq!(
            json(&a[0])["context"]["listener_id"],
            json(&a[5])["context"]["listener_id"]
        );
        assert_ne!(
            json(&a[0])["context"]["listener_id"],
            json(&a[1])["context"]["listener_id"]
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let (gate, held) = std::sync::mpsc::channel();
        let (log, writer) = writer::spawn(
            DecisionLogConfig {
                queue: 2,
                ..config(dir.path())
            },
            Some(held),
        )
        .unwrap();
        // The writer takes nothing while the gate is held: 2 fit, 3 drop.
        for i in 0..5 {
            log.log(pending(i, 0));
        }
        assert_eq!((log.dropped(), log.written()), (3, 0));
        drop(gate);
        let stats = writer.shutdown();
        assert_eq!(
            stats,
            DecisionLogStats {
                written: 2,
                dropped: 3,
                failed: 0
            }
        );
        let (all, _) = read_all(&[dir.path().to_owned()]);
        assert_eq!(all, [expected(0, 0), expected(1, 0)]);
        // After shutdown, logging drops (counted) and never blocks nor fails.
        log.log(pending(9, 0));
        assert_eq!(log.dropped(), 4);
    }

    #[test]
    fn shutdown_writes_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (gate, held) = std::sync::mpsc::channel();
        let (log, writer) = writer::spawn(
            DecisionLogConfig {
                compress: true,
                ..config(dir.path())
            },
            Some(held),
        )
        .unwrap();
        for i in 0..100 {
            log.log(pending(i, 50));
        }
        // Shutdown may begin before the writer takes anything or after:
        // either way, every queued record is written.
        let shutting_down = std::thread::spawn(move || writer.shutdown());
        drop(gate);
        let stats = shutting_down.join().unwrap();
        assert_eq!((stats.written, stats.dropped), (100, 0));
        let (all, records) = read_all(&[dir.path().to_owned()]);
        assert_eq!(records.truncated(), 0, "the zstd frame is finished");
        assert_eq!(all, (0..100).map(|i| expected(i, 50)).collect::<Vec<_>>());
    }

    #[test]
    fn a_restart_never_overwrites_a_file() {
        let dir = tempfile::tempdir().unwrap();
        write(config(dir.path()), 3, 0);
        write(config(dir.path()), 2, 0);
        let files = files(&[dir.path().to_owned()]).unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        let (all, _) = read_all(&files);
        assert_eq!(all.len(), 5);
    }

    /// A Parquet log in `dir`.
    fn parquet(dir: &Path) -> DecisionLogConfig {
        DecisionLogConfig {
            dir: Some(dir.to_owned()),
            format: LogFormat::Parquet,
            ..Default::default()
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// What a Parquet row reads back as, for the fields other than the
    /// request (which is rebuilt: compared batch to batch).
    fn check_parquet_record(r: &DecisionRecord, p: &PendingRecord) {
        assert_eq!(
            (
                r.request_id.as_str(),
                r.at_ms,
                r.shadow,
                &*r.variant,
                &*r.arm
            ),
            (
                p.request_id.as_str(),
                p.at_ms,
                p.shadow,
                &*p.variant,
                &*p.arm
            )
        );
        assert_eq!(r.decisions, p.decisions);
        assert_eq!(r.state.as_ref(), p.state.as_deref());
        assert_eq!((r.timing, r.usage), (p.timing, p.usage));
        let rebuilt = crate::request::parse(r.request.get().as_bytes()).unwrap();
        let sent = crate::request::parse(&p.request).unwrap();
        assert_eq!(
            columnar::tests::batch_of(rebuilt, None),
            columnar::tests::batch_of(sent, None),
            "{}",
            r.request_id
        );
    }

    #[test]
    fn a_parquet_file_appears_under_its_name_only_once_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (log, writer) = DecisionLog::start(parquet(dir.path())).unwrap();
        for i in 0..30 {
            log.log(columnar::tests::pending(i, 20));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while log.written() < 30 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(log.written(), 30);
        let open = names(dir.path());
        assert_eq!(open.len(), 1, "{open:?}");
        assert!(open[0].ends_with(".parquet.tmp"), "{open:?}");
        assert!(
            files(&[dir.path().to_owned()]).unwrap().is_empty(),
            "readers ignore it"
        );
        let stats = writer.shutdown();
        assert_eq!((stats.written, stats.failed), (30, 0));
        let closed = names(dir.path());
        assert_eq!(closed, [open[0].trim_end_matches(".tmp")], "renamed");
        assert!(closed[0].starts_with("decisions-"));
        let (all, records) = read_all(&[dir.path().to_owned()]);
        assert_eq!(records.skipped(), 0);
        assert_eq!(all.len(), 30);
        for (i, r) in all.iter().enumerate() {
            check_parquet_record(r, &columnar::tests::pending(i, 20));
        }
    }

    #[test]
    fn parquet_rotation_by_size_keeps_every_record_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (log, writer) = DecisionLog::start(DecisionLogConfig {
            max_file_bytes: 30_000,
            ..parquet(dir.path())
        })
        .unwrap();
        for i in 0..400 {
            log.log(columnar::tests::pending(i, 30));
        }
        assert_eq!(writer.shutdown().written, 400);
        let files = files(&[dir.path().to_owned()]).unwrap();
        assert!(files.len() >= 3, "{files:?}");
        assert!(names(dir.path()).iter().all(|n| n.ends_with(".parquet")));
        let (all, _) = read_all(&[dir.path().to_owned()]);
        let ids: Vec<String> = all.iter().map(|r| r.request_id.clone()).collect();
        let want: Vec<String> = (0..400).map(|i| format!("r{i}")).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn a_cut_parquet_file_is_an_error_naming_it_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        for n in [3, 2] {
            let (log, writer) = DecisionLog::start(parquet(dir.path())).unwrap();
            for i in 0..n {
                log.log(columnar::tests::pending(i, 5));
            }
            writer.shutdown();
        }
        let files = files(&[dir.path().to_owned()]).unwrap();
        assert_eq!(files.len(), 2);
        let bytes = std::fs::read(&files[0]).unwrap();
        std::fs::write(&files[0], &bytes[..bytes.len() / 2]).unwrap();
        let mut records = Records::new(files.clone());
        let e = records.next().unwrap().unwrap_err();
        let name = files[0].file_name().unwrap().to_str().unwrap();
        assert!(e.to_string().contains(name), "{e}");
        assert!(matches!(e, ReadError::Parquet { .. }), "{e:?}");
        assert_eq!(
            records.map(Result::unwrap).count(),
            2,
            "the next file is read"
        );
    }

    #[test]
    fn a_directory_may_mix_formats() {
        let dir = tempfile::tempdir().unwrap();
        let log_with = |format| {
            let (log, writer) = DecisionLog::start(DecisionLogConfig {
                format,
                ..parquet(dir.path())
            })
            .unwrap();
            for i in 0..4 {
                log.log(columnar::tests::pending(i, 5));
            }
            writer.shutdown();
        };
        log_with(LogFormat::Jsonl);
        log_with(LogFormat::Parquet);
        let names = names(dir.path());
        assert!(
            names[0].ends_with(".jsonl") && names[1].ends_with(".parquet"),
            "{names:?}"
        );
        let (all, _) = read_all(&[dir.path().to_owned()]);
        assert_eq!(all.len(), 8);
        for (i, r) in all.iter().enumerate() {
            check_parquet_record(r, &columnar::tests::pending(i % 4, 5));
        }
    }

    #[test]
    fn parquet_outcomes_are_read_with_exact_values() {
        use outcomes::{DeliveryFields, EventKind, OutcomeEvent, Outcomes};
        let dir = tempfile::tempdir().unwrap();
        let (log, writer) = DecisionLog::start(parquet(dir.path())).unwrap();
        let event = |i: usize, id: &str| OutcomeEvent {
            request_id: format!("r{}", i % 3),
            candidate_id: "t".into(),
            event: EventKind::Stream,
            value: Some(0.1 * i as f64 + 0.2),
            at_ms: Some(1_790_000_000_000),
            delivery: DeliveryFields {
                event_id: Some(id.into()),
                ..Default::default()
            },
        };
        let batch: Vec<OutcomeEvent> = (0..6).map(|i| event(i, &format!("e{i}"))).collect();
        log.log_outcomes(batch.clone()).unwrap();
        // A retried batch: the same ids, counted once.
        log.log_outcomes(batch.clone()).unwrap();
        writer.shutdown();
        assert!(
            names(dir.path())
                .iter()
                .all(|n| n.starts_with("outcomes-") && n.ends_with(".parquet"))
        );
        let o = Outcomes::load(&[dir.path().to_owned()]).unwrap();
        assert_eq!((o.events(), o.duplicates()), (6, 6));
        let want: f64 = [0, 3].iter().map(|&i| 0.1 * i as f64 + 0.2).sum();
        assert_eq!(o.reward("r0", "t").to_bits(), want.to_bits());
    }
}
