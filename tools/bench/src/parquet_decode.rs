//! How long a decision log's Parquet file takes to decode (issue 23).
//!
//! Replay's reading is one of the two halves of a replayed record's cost
//! (the policy call is the other). This decodes the file from memory, so
//! the disk is out of the figure: each top-level column alone, then every
//! column at once as `oasis replay` reads them (the big string columns as
//! string views, `oasis::decision_log::columnar::read_schema`, in batches of
//! `PARQUET_BATCH_ROWS`). Best of N rounds, microseconds a row.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oasis::decision_log::columnar::read_schema;
use oasis::decision_log::reader::PARQUET_BATCH_ROWS;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

/// Rows decoded and the best time of `rounds` decodes with `options`, of
/// the columns `mask` picks (all when `None`).
fn best(
    bytes: &Bytes,
    rounds: usize,
    options: &ArrowReaderOptions,
    column: Option<usize>,
) -> anyhow::Result<(usize, Duration)> {
    let mut best = Duration::MAX;
    let mut rows = 0;
    for _ in 0..rounds {
        let b =
            ParquetRecordBatchReaderBuilder::try_new_with_options(bytes.clone(), options.clone())?;
        let b = match column {
            Some(i) => {
                let mask = ProjectionMask::roots(b.parquet_schema(), [i]);
                b.with_projection(mask)
            }
            None => b,
        };
        let reader = b.with_batch_size(PARQUET_BATCH_ROWS).build()?;
        let started = Instant::now();
        rows = 0;
        for batch in reader {
            rows += batch?.num_rows();
        }
        best = best.min(started.elapsed());
    }
    Ok((rows, best))
}

/// The report for `file` (Markdown).
///
/// # Errors
/// When the file cannot be read or is not Parquet.
pub fn report(file: &Path, rounds: usize) -> anyhow::Result<String> {
    let bytes = Bytes::from(std::fs::read(file)?);
    let plain = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?;
    let schema = plain.schema().clone();
    let views = match read_schema(&schema) {
        Some(s) => ArrowReaderOptions::new().with_schema(s),
        None => ArrowReaderOptions::new(),
    };
    let per_row = |(rows, t): (usize, Duration)| t.as_secs_f64() * 1e6 / rows.max(1) as f64;
    let mut out = String::new();
    writeln!(
        out,
        "{} ({} bytes), best of {rounds}, µs a row\n\n| column | plain | as replay reads it |\n|---|---:|---:|",
        file.display(),
        bytes.len()
    )?;
    let mut sum = (0.0, 0.0);
    for (i, field) in schema.fields().iter().enumerate() {
        let a = per_row(best(&bytes, rounds, &ArrowReaderOptions::new(), Some(i))?);
        let b = per_row(best(&bytes, rounds, &views, Some(i))?);
        sum = (sum.0 + a, sum.1 + b);
        writeln!(out, "| `{}` | {a:.2} | {b:.2} |", field.name())?;
    }
    writeln!(out, "| sum of the columns | {:.1} | {:.1} |", sum.0, sum.1)?;
    let a = per_row(best(&bytes, rounds, &ArrowReaderOptions::new(), None)?);
    let b = per_row(best(&bytes, rounds, &views, None)?);
    writeln!(out, "| **all at once** | **{a:.1}** | **{b:.1}** |")?;
    Ok(out)
}
