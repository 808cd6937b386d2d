//! Traces: `tracing` spans exported over OTLP, with the caller's W3C trace
//! context.
//!
//! Off by default. [`from_env`] turns it on when an OTLP endpoint is set
//! (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`;
//! gRPC, e.g. `http://collector:4317`) and `OTEL_SDK_DISABLED` is not
//! `true`. The OpenTelemetry SDK reads the other standard variables itself:
//! `OTEL_SERVICE_NAME` (default here: `oasis`), `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` (default: parent-based, always on),
//! `OTEL_BSP_SCHEDULE_DELAY` and the other batch settings.
//!
//! What is traced: the `score` span of every scoring request (a child of the
//! caller's span when the request carries `traceparent`, HTTP header or gRPC
//! metadata) and, at `debug` level, one span per stage under it: admission,
//! decode, validate, state fill, each policy call (policy, version, digest,
//! arm, fuel and memory used), write-back, decision log, shadows. The stage
//! spans are seen only by the exporter's layer, so the log lines stay as
//! they are; with tracing off they are disabled at their call sites, which
//! costs a relaxed load each.
//!
//! ```no_run
//! let trace = oasis::telemetry::trace::from_env().expect("exporter");
//! // ... serve ...
//! drop(trace); // flushes what is buffered
//! ```

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// Whether traces are exported (read on the request path to skip context
/// extraction when they are not).
static ON: AtomicBool = AtomicBool::new(false);

/// Errors starting the exporter.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The exporter's own runtime could not start.
    #[error("starting the OTLP exporter's runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The exporter could not be built (a bad endpoint, say).
    #[error("building the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// A running exporter: the tracer provider and the small runtime its gRPC
/// client lives on. Dropping it flushes buffered spans and stops both.
pub struct Tracing {
    provider: SdkTracerProvider,
    // The tonic client spawns its connection tasks here; it must outlive
    // the provider (dropped after it, as fields drop in order).
    _runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

impl Tracing {
    /// The layer that hands `oasis` spans (from `debug` level up) to the
    /// exporter.
    pub fn layer<S>(&self) -> Box<dyn Layer<S> + Send + Sync>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let tracer = self.provider.tracer("oasis");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target("oasis", tracing::Level::DEBUG))
            .boxed()
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        ON.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing traces at exit");
        }
    }
}

/// The exporter the environment asks for, or `None` when tracing is off
/// (no OTLP endpoint set, or `OTEL_SDK_DISABLED=true`).
///
/// # Errors
/// [`TraceError`] when an endpoint is set but the exporter cannot start.
pub fn from_env() -> Result<Option<Tracing>, TraceError> {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if disabled
        || !(set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
    {
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("oasis-otlp")
        .enable_all()
        .build()?;
    let exporter = {
        let _in = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "oasis".into());
    let provider = SdkTracerProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ON.store(true, Ordering::Relaxed);
    Ok(Some(Tracing {
        provider,
        _runtime: runtime,
    }))
}

/// Whether traces are exported.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Makes `span` a child of the caller's span carried by `carrier`
/// (`traceparent`, `tracestate`), when traces are on and there is one.
pub fn adopt_caller(span: &tracing::Span, carrier: &dyn Extractor) {
    if !enabled() || carrier.get("traceparent").is_none() {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
    // A span the exporter's layer does not see has nothing to re-parent.
    let _ = span.set_parent(cx);
}

/// The caller's trace context (`traceparent`, `tracestate`), copied out of
/// the request's headers only when traces are on, so a transport need not
/// keep (or clone) the headers for it.
#[derive(Debug, Default, Clone)]
pub struct CallerContext {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl CallerContext {
    /// The context `headers` carry, or `None` when traces are off or there is
    /// no `traceparent`.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        if !enabled() {
            return None;
        }
        let get = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let traceparent = get("traceparent")?;
        Some(CallerContext {
            traceparent: Some(traceparent),
            tracestate: get("tracestate"),
        })
    }
}

impl Extractor for CallerContext {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = Vec::new();
        if self.traceparent.is_some() {
            keys.push("traceparent");
        }
        if self.tracestate.is_some() {
            keys.push("tracestate");
        }
        keys
    }
}

/// HTTP headers as a trace context carrier.
pub struct HeaderCarrier<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
