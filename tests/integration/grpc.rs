//! The gRPC API on a real server (`Server::run` with a gRPC listener on
//! 127.0.0.1:0): the same request gives the same decisions through HTTP and
//! gRPC for every example policy (and a fallback); each error class maps to
//! its documented status code, kind and field; health says SERVING;
//! reflection lists the service; overload is RESOURCE_EXHAUSTED.

use std::path::Path;
use std::time::{Duration, Instant};

use oasis::server::{Server, ServerConfig};
use oasis_proto::prost::Message;
use oasis_proto::v1;
use oasis_proto::v1::scoring_client::ScoringClient;
use oasis_test_components::{
    ADVERSARIAL, BASELINE, EPSILON_GREEDY, EXPOSURE_FAIRNESS, FREQ_CAP_DIVERSITY, GUARDED_BOOST,
    PID_PACING,
};
use serde_json::Value;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::harness::server::{attack_body, config_in, install, metric, routed};
use crate::harness::{example_body, small_body};

/// A server with HTTP and gRPC listeners over a directory filled by `setup`.
struct GrpcServer {
    http: String,
    grpc: ScoringClient<Channel>,
    channel: Channel,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), oasis::server::ServerError>>>,
}

impl GrpcServer {
    async fn start(setup: impl FnOnce(&Path), tune: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let config = config_in(dir.path(), tune);
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_url = format!("http://{}", http.local_addr().unwrap());
        let grpc_url = format!("http://{}", grpc.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::new(config)
                .with_grpc_listener(grpc)
                .run(http, async {
                    let _ = rx.await;
                }),
        );
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .get(format!("{http_url}/readyz"))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "server not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let channel = Channel::from_shared(grpc_url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        GrpcServer {
            http: http_url,
            grpc: ScoringClient::new(channel.clone()),
            channel,
            client,
            _dir: dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn http_score(&self, body: &[u8]) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/score", self.http))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    async fn grpc_score(&self, msg: v1::ScoreRequest) -> Result<v1::ScoreResponse, tonic::Status> {
        self.grpc.clone().score(msg).await.map(|r| r.into_inner())
    }

    async fn metrics(&self) -> String {
        let r = self.client.get(format!("{}/metrics", self.http)).send();
        r.await.unwrap().text().await.unwrap()
    }

    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

fn proto(body: &[u8]) -> v1::ScoreRequest {
    oasis_proto::json::request(body).unwrap()
}

/// The gRPC answer in the JSON response's shape, for comparison.
fn as_json(r: &v1::ScoreResponse) -> Value {
    let s = r.scores.as_ref().unwrap();
    let scores: Vec<Value> = (0..s.ids.len())
        .map(|i| {
            let reasons: Vec<&str> = s
                .reason_names
                .iter()
                .enumerate()
                .filter(|(b, _)| s.reasons[i] & (1 << b) != 0)
                .map(|(_, n)| n.as_str())
                .collect();
            serde_json::json!({"id": s.ids[i], "score": num(s.scores[i]), "eligible": s.eligible[i],
                               "reasons": reasons, "propensity": num(s.propensity[i])})
        })
        .collect();
    let p = r.policy.as_ref().unwrap();
    let mut policy = serde_json::json!({"name": p.name, "version": p.version, "digest": p.digest});
    if !p.settings_sha256.is_empty() {
        policy["settings_sha256"] = p.settings_sha256.clone().into();
    }
    let mut v = serde_json::json!({
        "request_id": r.request_id, "route": r.route,
        "policy": policy,
        "variant": r.variant, "arm": r.arm, "scores": scores,
    });
    if let Some(f) = &r.fallback {
        let failed = f.failed.as_ref().unwrap();
        let mut who = serde_json::json!({"name": failed.name, "version": failed.version, "digest": failed.digest});
        if !failed.settings_sha256.is_empty() {
            who["settings_sha256"] = failed.settings_sha256.clone().into();
        }
        v["fallback"] = serde_json::json!({
            "failed": who,
            "error_kind": f.error_kind, "error": f.error});
    }
    v
}

/// A number as a JSON client reads it: serde_json's default float parsing
/// may be one ULP off the shortest representation it wrote, so both sides
/// go through the same text. Equal texts are equal doubles (the text is the
/// shortest round-trip representation), so this compares bits.
fn num(x: f64) -> Value {
    serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap()
}

/// The JSON answer without its timings.
fn comparable(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("timing");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_request_gives_the_same_decisions_through_http_and_grpc() {
    let policies = [
        ("baseline", BASELINE),
        ("guarded", GUARDED_BOOST),
        ("pacing", PID_PACING),
        ("freqcap", FREQ_CAP_DIVERSITY),
        ("fairness", EXPOSURE_FAIRNESS),
        ("explore", EPSILON_GREEDY),
    ];
    let s = GrpcServer::start(
        |d| {
            for (key, module) in policies {
                install(d, key, module, "");
            }
            install(
                d,
                "panic",
                ADVERSARIAL,
                "fallback = \"baseline\"\n[settings]\nattack = \"panic\"\n",
            );
        },
        |_| {},
    )
    .await;
    let mut bodies: Vec<Vec<u8>> = policies
        .iter()
        .map(|(key, _)| routed(key, &example_body()))
        .collect();
    // A fallback: the panicking policy's answer comes from its fallback.
    bodies.push(attack_body("panic"));
    for body in bodies {
        let (status, http) = s.http_score(&body).await;
        assert_eq!(status, 200, "{http}");
        let grpc = s.grpc_score(proto(&body)).await.unwrap();
        let (g, h) = (as_json(&grpc), comparable(http.clone()));
        for (i, (x, y)) in g["scores"]
            .as_array()
            .unwrap()
            .iter()
            .zip(h["scores"].as_array().unwrap())
            .enumerate()
        {
            assert_eq!(x, y, "route {}, candidate {i}", http["route"]);
        }
        assert_eq!(
            as_json(&grpc),
            comparable(http.clone()),
            "route {}",
            http["route"]
        );
        let t = grpc.timing.unwrap();
        assert!(t.server_us >= t.policy_us);
    }
    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            "oasis_requests_total{route=\"panic\",variant=\"fallback\",transport=\"grpc\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "oasis_requests_total{route=\"panic\",variant=\"fallback\",transport=\"http\"}"
        ),
        1.0
    );
    // Debug values come through too.
    let mut msg = proto(&routed("fairness", &example_body()));
    msg.debug = true;
    let r = s.grpc_score(msg).await.unwrap();
    let mut body: Value = serde_json::from_slice(&routed("fairness", &example_body())).unwrap();
    body["debug"] = true.into();
    let (_, http) = s.http_score(&serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.debug.len(), http["debug"].as_array().map_or(0, Vec::len));
    s.shutdown().await;
}

/// (code, kind, field) of a gRPC error, checking the details agree with the
/// metadata.
/// `Score` with `bytes` as the request message, as they are.
async fn raw_score(channel: &Channel, bytes: Vec<u8>) -> Result<v1::ScoreResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/oasis.v1.Scoring/Score");
    grpc.unary(tonic::Request::new(bytes), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

/// Requests as raw bytes, responses by prost.
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = v1::ScoreResponse;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<v1::ScoreResponse>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        Default::default()
    }
}

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

fn error(status: &tonic::Status) -> (Code, String, Option<String>, Option<String>) {
    let info = status.get_details_error_info().expect("ErrorInfo detail");
    assert_eq!(info.domain, "oasis");
    let kind = status
        .metadata()
        .get("oasis-error-kind")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(kind, info.reason);
    let field = info.metadata.get("field").cloned();
    assert_eq!(
        field.as_deref(),
        status
            .metadata()
            .get("oasis-error-field")
            .map(|v| v.to_str().unwrap())
    );
    (
        status.code(),
        info.reason,
        field,
        info.metadata.get("known").cloned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_error_class_maps_to_its_status_code_with_the_http_fields() {
    let s = GrpcServer::start(
        |d| install(d, "base", BASELINE, "[limits]\nmax_candidates = 5\n"),
        |_| {},
    )
    .await;
    let good = routed("base", &small_body(false));
    assert!(s.grpc_score(proto(&good)).await.is_ok());

    // 422 invalid_request: the same field through both.
    let mut v: Value = serde_json::from_slice(&good).unwrap();
    v["candidates"][1]["relevance"] = 1e300.into();
    let bad = serde_json::to_vec(&v).unwrap();
    let (status, http) = s.http_score(&bad).await;
    assert_eq!(status, 422);
    let e = s.grpc_score(proto(&bad)).await.unwrap_err();
    let (code, kind, field, _) = error(&e);
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(kind, "invalid_request");
    assert_eq!(field.as_deref(), http["error"]["field"].as_str());
    assert_eq!(field.as_deref(), Some("candidates[1].relevance"));
    assert_eq!(e.message(), http["error"]["message"]);
    let bad_request = e.get_details_bad_request().expect("BadRequest detail");
    assert_eq!(
        bad_request.field_violations[0].field,
        "candidates[1].relevance"
    );

    // Negative relevance (regression, issue 24: it was accepted): refused
    // through both, naming the candidate.
    let mut v: Value = serde_json::from_slice(&good).unwrap();
    v["candidates"][2]["relevance"] = (-0.25).into();
    let bad = serde_json::to_vec(&v).unwrap();
    let (status, http) = s.http_score(&bad).await;
    assert_eq!(
        (status, http["error"]["field"].as_str()),
        (422, Some("candidates[2].relevance")),
        "{http}"
    );
    let message = http["error"]["message"].as_str().unwrap();
    assert!(message.contains("in [0, 1e9], got -0.25"), "{message}");
    let e = s.grpc_score(proto(&bad)).await.unwrap_err();
    assert_eq!(
        error(&e),
        (
            Code::InvalidArgument,
            "invalid_request".into(),
            Some("candidates[2].relevance".into()),
            None
        )
    );
    assert_eq!(e.message(), message);

    // Too many candidates for the policy: 422 on `candidates`.
    let mut msg = proto(&good);
    let k = msg.candidates.as_mut().unwrap();
    for i in 0..3 {
        k.ids.push(format!("extra-{i}"));
        k.relevance.push(0.1);
    }
    let e = s.grpc_score(msg).await.unwrap_err();
    assert_eq!(
        error(&e),
        (
            Code::InvalidArgument,
            "invalid_request".into(),
            Some("candidates".into()),
            None
        )
    );

    // 400 malformed_request: what JSON's types would refuse.
    let mut msg = proto(&good);
    msg.context.as_mut().unwrap().surface = 0;
    let e = s.grpc_score(msg).await.unwrap_err();
    assert_eq!(
        error(&e),
        (
            Code::InvalidArgument,
            "malformed_request".into(),
            Some("context.surface".into()),
            None
        )
    );
    let mut msg = proto(&good);
    msg.candidates.as_mut().unwrap().relevance.pop();
    let e = s.grpc_score(msg).await.unwrap_err();
    assert_eq!(error(&e).2.as_deref(), Some("candidates.relevance"));
    // Bytes that are not the message at all (field 1 whose length never
    // ends): refused by the service, which reads the bytes itself.
    let e = raw_score(&s.channel, vec![0x0a, 0xff]).await.unwrap_err();
    let (code, kind, ..) = error(&e);
    assert_eq!(
        (code, kind.as_str()),
        (Code::InvalidArgument, "malformed_request")
    );
    assert!(
        e.message().contains("not a valid oasis.v1.ScoreRequest"),
        "{e:?}"
    );
    // A valid message the in-place reader leaves to prost (an unknown
    // group field): served all the same.
    let mut bytes = proto(&good).encode_to_vec();
    bytes.extend_from_slice(&[0xe3, 0x03, 0xe4, 0x03]);
    let served = raw_score(&s.channel, bytes).await.unwrap();
    assert_eq!(
        served.scores.unwrap().ids.len(),
        proto(&good).candidates.unwrap().ids.len()
    );

    // 404 unknown_route, with the valid names.
    let e = s
        .grpc_score(proto(&routed("nope", &small_body(false))))
        .await
        .unwrap_err();
    let (code, kind, field, known) = error(&e);
    assert_eq!(
        (code, kind.as_str(), field.as_deref()),
        (Code::NotFound, "unknown_route", Some("route"))
    );
    assert_eq!(known.as_deref(), Some("base"));

    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            "oasis_rejected_total{status=\"422\",reason=\"invalid_request\",transport=\"grpc\"}"
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "oasis_rejected_total{status=\"404\",reason=\"unknown_route\",transport=\"grpc\"}"
        ),
        1.0
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_says_serving_and_reflection_lists_the_service() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let s = GrpcServer::start(|d| install(d, "base", BASELINE, ""), |_| {}).await;
    let mut health = HealthClient::new(s.channel.clone());
    for service in ["", "oasis.v1.Scoring"] {
        // Readiness is published within a few tens of milliseconds.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            if r.status == ServingStatus::Serving as i32 {
                break;
            }
            assert!(Instant::now() < deadline, "{service:?} not SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut reflection = ServerReflectionClient::new(s.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"oasis.v1.Scoring"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_resource_exhausted_with_a_retry_delay() {
    let s = GrpcServer::start(
        |d| {
            install(
                d,
                "slow",
                ADVERSARIAL,
                "[limits]\ndeadline_ms = 1000\nmax_concurrency = 1\nmax_queue = 1\nqueue_timeout_ms = 5000\n[settings]\nattack = \"loop\"\n",
            )
        },
        |_| {},
    )
    .await;
    // One runs, one waits (queue of 1), the third is refused at once.
    let running: Vec<_> = (0..2)
        .map(|_| {
            let mut c = s.grpc.clone();
            let msg = proto(&attack_body("slow"));
            tokio::spawn(async move { c.score(msg).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = s.grpc_score(proto(&attack_body("slow"))).await.unwrap_err();
    let (code, kind, _, _) = error(&e);
    assert_eq!(
        (code, kind.as_str()),
        (Code::ResourceExhausted, "overloaded")
    );
    assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
    assert_eq!(
        e.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(1))
    );
    for r in running {
        // The loop times out: a fallback answer, never an error.
        let r = r.await.unwrap().unwrap().into_inner();
        assert_eq!(r.variant, "fallback");
    }
    let m = s.metrics().await;
    assert_eq!(
        metric(
            &m,
            "oasis_rejected_total{status=\"503\",reason=\"overloaded\",transport=\"grpc\"}"
        ),
        1.0,
        "{m}"
    );
    s.shutdown().await;
}
