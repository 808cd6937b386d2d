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
//! let _traces = init(LogFormat::Json, "info,oasis=debug");
//! tracing::info!("structured, to stderr");
//! ```

use tracing::{Level, Subscriber};

use super::trace::{self, Tracing};
use tracing_subscriber::filter::{ParseError, Targets};
use tracing_subscriber::layer::{Filter, SubscriberExt};
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

/// The log lines' filter of `directives` (`RUST_LOG` syntax), and the parse
/// error when they are invalid (then `info`).
///
/// Directives of targets and levels only (`info`, `warn,oasis=debug`: every
/// deployment's) become a [`Targets`] filter, decided once per callsite.
/// Only directives that filter on spans or fields
/// (`oasis[score{route=radio}]=debug`) need an [`EnvFilter`], and it pays
/// for that on every span: it keeps the spans it might match in a map
/// behind a read-write lock that it takes when any span is created, entered,
/// exited or closed — several times a request, from both runtime workers,
/// even with no such directive (BENCHMARKS.md, session 20).
///
/// ```
/// use oasis::telemetry::logging::filter;
/// let (_f, bad) = filter::<tracing_subscriber::Registry>("info,oasis=debug");
/// assert!(bad.is_none());
/// let (_f, bad) = filter::<tracing_subscriber::Registry>("info,[score{route=radio}]=debug");
/// assert!(bad.is_none());
/// let (_f, bad) = filter::<tracing_subscriber::Registry>("info,oasis=loud");
/// assert!(bad.is_some());
/// ```
pub fn filter<S>(directives: &str) -> (BoxedFilter<S>, Option<ParseError>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if let Ok(targets) = directives.parse::<Targets>() {
        return (Box::new(targets), None);
    }
    match EnvFilter::try_new(directives) {
        Ok(f) => (Box::new(f), None),
        Err(e) => (Box::new(Targets::new().with_default(Level::INFO)), Some(e)),
    }
}

/// A per-layer filter chosen at run time ([`filter`]).
pub type BoxedFilter<S> = Box<dyn Filter<S> + Send + Sync + 'static>;

/// Installs the global subscriber: log lines filtered by `directives`, and
/// the trace exporter's layer when the environment turns traces on
/// ([`trace::from_env`]). Returns the exporter, to be kept until exit
/// (dropping it flushes). An invalid filter falls back to `info`, and an
/// exporter that cannot start leaves traces off; both with a warning
/// rather than refusing to start.
pub fn init(format: LogFormat, directives: &str) -> Option<Tracing> {
    let (filter, bad) = filter(directives);
    let (tracing, trace_error) = match trace::from_env() {
        Ok(t) => (t, None),
        Err(e) => (None, Some(e)),
    };
    // Each layer has its own filter: the log lines keep theirs while the
    // exporter sees the stage spans at `debug`.
    // A second `init` (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(fmt_layer(format).with_filter(filter))
        .with(tracing.as_ref().map(|t| t.layer()))
        .try_init();
    if let Some(e) = bad {
        tracing::warn!(error = %e, "invalid log filter; using `info`");
    }
    if let Some(e) = trace_error {
        tracing::warn!(error = %e, "traces off: the OTLP exporter did not start");
    }
    if tracing.is_some() {
        tracing::info!("traces exported over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT)");
    }
    tracing
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::{Layer, Registry};

    /// Keeps the `message` of every event it is shown.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Lines {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{v:?}");
                    }
                }
            }
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
    }

    /// The lines `directives` let through of a fixed set of events.
    fn shown(directives: &str) -> (Vec<String>, bool) {
        let (filter, bad) = super::filter::<Registry>(directives);
        let lines = Lines::default();
        let subscriber = Registry::default().with(lines.clone().with_filter(filter));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "other", "other info");
            tracing::warn!(target: "other", "other warn");
            tracing::debug!(target: "oasis::serving", "oasis debug");
            tracing::trace!(target: "oasis::serving", "oasis trace");
            tracing::info_span!(target: "oasis::serving", "score").in_scope(|| {
                tracing::debug!(target: "other", "debug in score");
            });
        });
        let got = lines.0.lock().unwrap().clone();
        (got, bad.is_some())
    }

    #[test]
    fn target_directives_filter_by_target_and_level() {
        let (lines, bad) = shown("warn,oasis=debug");
        assert!(!bad);
        assert_eq!(lines, ["other warn", "oasis debug"]);
        let (lines, _) = shown("INFO");
        assert_eq!(lines, ["other info", "other warn"]);
    }

    #[test]
    fn span_directives_are_accepted_and_their_target_parts_apply() {
        // A span directive is what Targets cannot parse: it goes to
        // EnvFilter, as every directive did before. (Its span part does
        // not take effect in a per-layer EnvFilter, before or after:
        // tokio-rs/tracing#3393; the lines below are the same either way.)
        let (lines, bad) = shown("warn,oasis=debug,[score]=trace");
        assert!(!bad);
        assert_eq!(lines, ["other warn", "oasis debug"]);
    }

    #[test]
    fn empty_directives_mean_what_they_meant_with_env_filter() {
        // Both read "" as no directive at all: nothing is logged.
        let lines = Lines::default();
        let env = tracing_subscriber::EnvFilter::try_new("").unwrap();
        let subscriber = Registry::default().with(lines.clone().with_filter(env));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "other", "other error");
            tracing::warn!(target: "other", "other warn");
        });
        let expected = lines.0.lock().unwrap().clone();
        let (filter, bad) = super::filter::<Registry>(" ");
        assert!(bad.is_none());
        let lines = Lines::default();
        let subscriber = Registry::default().with(lines.clone().with_filter(filter));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "other", "other error");
            tracing::warn!(target: "other", "other warn");
        });
        assert_eq!(*lines.0.lock().unwrap(), expected);
    }

    #[test]
    fn invalid_directives_fall_back_to_info_and_say_so() {
        let (lines, bad) = shown("oasis=loud");
        assert!(bad);
        assert_eq!(lines, ["other info", "other warn"]);
    }
}
