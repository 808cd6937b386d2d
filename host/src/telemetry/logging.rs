//! Logging setup: `tracing` to stderr, human or JSON lines, as layers of
//! one subscriber.
//!
//! [`init`] installs `registry() + filter + fmt layer`; [`fmt_layer`] is
//! the same formatting as a layer of its own, so another layer (an
//! OpenTelemetry exporter, a test's capture) is one more `.with(...)` on the
//! registry rather than a second subscriber.
//!
//! ```no_run
//! use oasis::telemetry::logging::{LogFormat, init};
//! init(LogFormat::Json, "info,oasis=debug");
//! tracing::info!("structured, to stderr");
//! ```

use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The formatting layer for `format`, writing to stderr. Colours only for a
/// terminal: log files and collectors get plain text.
pub fn fmt_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    use std::io::IsTerminal;
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => layer.boxed(),
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    }
}

/// The filter of `directives` (`RUST_LOG` syntax), and the parse error when
/// they are invalid (then `info`).
pub fn filter(directives: &str) -> (EnvFilter, Option<tracing_subscriber::filter::ParseError>) {
    match EnvFilter::try_new(directives) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    }
}

/// Installs the global subscriber. An invalid filter falls back to `info`
/// with a warning rather than refusing to start.
pub fn init(format: LogFormat, directives: &str) {
    let (filter, bad) = filter(directives);
    // A second `init` (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer(format))
        .try_init();
    if let Some(e) = bad {
        tracing::warn!(error = %e, "invalid log filter; using `info`");
    }
}
