//! Traces: `oasis serve`, with an OTLP endpoint in its environment, exports
//! a scoring request's spans to a real OTLP receiver — the protocol's own
//! `TraceService`, served here in process — as children of the caller's
//! span (W3C `traceparent`, over HTTP and over gRPC).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oasis_proto::v1::scoring_client::ScoringClient;
use oasis_test_components::GUARDED_BOOST;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::harness::example_body;
use crate::harness::server::{install, routed};

/// Every span the receiver was sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Starts the receiver on a free loopback port; its endpoint URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        url
    }

    /// The spans of `trace_id`, once they include every name in `names`
    /// (waits up to 30 s).
    async fn trace(&self, trace_id: &[u8], names: &[&str]) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Span> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            let have: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            if names.iter().all(|n| have.contains(n)) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace incomplete: have {have:?}, want {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `oasis serve` as a child process, killed on drop.
struct Served {
    child: Child,
    http: String,
    grpc: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `oasis serve` on `dir` exporting traces to `endpoint`, and waits
/// until it is ready; its HTTP and gRPC addresses come from its log.
fn serve(dir: &std::path::Path, endpoint: &str) -> Served {
    let log_dir = dir.join("decisions");
    let mut child = Command::new(env!("CARGO_BIN_EXE_oasis"))
        .args(["serve", "--policies"])
        .arg(dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--decision-log",
        ])
        .arg(&log_dir)
        .args(["--decision-log-sample", "1"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("OTEL_SERVICE_NAME", "oasis-under-test")
        .env(
            "OASIS_CACHE_DIR",
            std::env::temp_dir().join("oasis-server-test-cache"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let (mut http, mut grpc, mut ready) = (None, None, false);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(ready && http.is_some() && grpc.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("oasis serve became ready");
        match line["message"].as_str().unwrap_or("") {
            "listening" => http = line["addr"].as_str().map(String::from),
            "gRPC API listening" => grpc = line["grpc_addr"].as_str().map(String::from),
            "initial policy set loaded; ready" => ready = true,
            _ => {}
        }
    }
    Served {
        child,
        http: format!("http://{}", http.unwrap()),
        grpc: format!("http://{}", grpc.unwrap()),
    }
}

/// A span's string attribute.
fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .and_then(|v| match v {
            AnyValue::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

/// Checks that `spans` form one tree under a `score` span whose parent is
/// the caller's span `parent`, and returns the spans by name.
fn check_tree<'a>(spans: &'a [Span], parent: &[u8]) -> BTreeMap<&'a str, &'a Span> {
    let by_id: BTreeMap<&[u8], &Span> = spans.iter().map(|s| (&s.span_id[..], s)).collect();
    let root = spans
        .iter()
        .find(|s| s.name == "score")
        .expect("a score span");
    assert_eq!(root.parent_span_id, parent, "score is the caller's child");
    for s in spans.iter().filter(|s| s.name != "score") {
        // Walk up: every stage ends at the score span.
        let mut at = s;
        let mut hops = 0;
        while at.name != "score" {
            at = by_id
                .get(&at.parent_span_id[..])
                .unwrap_or_else(|| panic!("{} has a parent outside the trace", s.name));
            hops += 1;
            assert!(hops < 10, "{} loops", s.name);
        }
    }
    spans.iter().map(|s| (s.name.as_str(), s)).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_request_is_a_trace_of_its_stages_under_the_callers_span() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "guarded-boost", GUARDED_BOOST, "");
    let served = serve(dir.path(), &endpoint);
    let stages = [
        "score",
        "admission",
        "decode",
        "state_fill",
        "policy_call",
        "write_back",
        "encode",
        "decision_log",
    ];

    // HTTP, with the caller's span in `traceparent`.
    let (trace_id, parent) = ([0x4a_u8; 16], [0x17_u8; 8]);
    let traceparent = format!("00-{}-{}-01", hex(&trace_id), hex(&parent));
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/score", served.http))
        .header("content-type", "application/json")
        .header("traceparent", &traceparent)
        .body(routed("guarded-boost", &example_body()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let spans = receiver.trace(&trace_id, &stages).await;
    let named = check_tree(&spans, &parent);
    let call = named["policy_call"];
    assert_eq!(attr(call, "policy"), Some("guarded-boost"));
    assert_eq!(attr(call, "arm"), Some("stable"));
    assert_eq!(attr(call, "outcome"), Some("ok"));
    assert!(attr(call, "digest").is_some_and(|d| d.starts_with("sha256:")));
    assert_eq!(attr(named["score"], "transport"), Some("http"));
    // The example request is decoded and validated in one pass (no
    // separate `validate` span: that one is the general path's).
    assert_eq!(attr(named["decode"], "path"), Some("one-pass"));
    assert!(!named.contains_key("validate"), "{named:?}");
    assert_eq!(attr(named["score"], "route"), Some("guarded-boost"));
    // Route, policy and version are recorded on the span together.
    assert_eq!(attr(named["score"], "policy"), Some("guarded-boost"));
    assert!(
        attr(named["score"], "version").is_some_and(|v| !v.is_empty()),
        "{:?}",
        named["score"]
    );

    // gRPC, with the caller's span in the metadata.
    let (trace_id, parent) = ([0x5b_u8; 16], [0x28_u8; 8]);
    let mut client = ScoringClient::connect(served.grpc.clone()).await.unwrap();
    let msg = oasis_proto::json::request(&routed("guarded-boost", &example_body())).unwrap();
    let mut request = tonic::Request::new(msg);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{}-{}-01", hex(&trace_id), hex(&parent))
            .parse()
            .unwrap(),
    );
    client.score(request).await.unwrap();
    let spans = receiver.trace(&trace_id, &stages).await;
    let named = check_tree(&spans, &parent);
    assert_eq!(attr(named["score"], "transport"), Some("grpc"));
    assert_eq!(attr(named["decode"], "path"), Some("one-pass"));
}
