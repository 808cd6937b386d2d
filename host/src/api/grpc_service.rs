//! The `oasis.v1.Scoring` service's transport: tonic's gRPC framing with
//! the request handed over as its bytes, the response encoded by prost.
//!
//! Why not the server tonic generates from the proto: its codec decodes
//! every request into prost's owned `ScoreRequest` before the handler runs
//! (a `String` allocated per candidate id, artist and rights holder); the
//! handler reads the bytes in place instead
//! ([`crate::request::proto_view`]). Everything else is what the generated
//! server does: the method's path, the `Unimplemented` answer to any other,
//! the decoding size limit. The client side (`pzn-client`, the tests) and
//! reflection still use the generated code and descriptors.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use oasis_proto::v1;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::{Request, Response, Status};

/// The method's path.
const SCORE_PATH: &str = "/oasis.v1.Scoring/Score";

/// What serves `Score`: given the message's bytes.
pub trait Score: Send + Sync + 'static {
    /// Scores one request.
    fn score(
        &self,
        request: Request<Bytes>,
    ) -> impl Future<Output = Result<Response<v1::ScoreResponse>, Status>> + Send;
}

/// The `oasis.v1.Scoring` service over a [`Score`] handler.
pub struct ScoringServer<T> {
    inner: Arc<T>,
    max_decoding_message_size: Option<usize>,
}

impl<T> Clone for ScoringServer<T> {
    fn clone(&self) -> Self {
        ScoringServer {
            inner: self.inner.clone(),
            max_decoding_message_size: self.max_decoding_message_size,
        }
    }
}

impl<T: Score> ScoringServer<T> {
    /// The service over `inner`.
    pub fn new(inner: T) -> Self {
        ScoringServer {
            inner: Arc::new(inner),
            max_decoding_message_size: None,
        }
    }

    /// Refuses messages larger than `limit` bytes (`ResourceExhausted`, as
    /// the generated server does).
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self
    }
}

impl<T> tonic::server::NamedService for ScoringServer<T> {
    const NAME: &'static str = oasis_proto::SERVICE_NAME;
}

/// The unary method: the request's bytes to the handler.
struct ScoreMethod<T>(Arc<T>);

impl<T: Score> tonic::server::UnaryService<Bytes> for ScoreMethod<T> {
    type Response = v1::ScoreResponse;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Self::Response>, Status>> + Send>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.score(request).await })
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<T, B> tower::Service<http::Request<B>> for ScoringServer<T>
where
    T: Score,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != SCORE_PATH {
            return Box::pin(async {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    tonic::Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let method = ScoreMethod(self.inner.clone());
        let max = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawRequestCodec)
                .apply_max_message_size_config(max, Some(usize::MAX));
            Ok(grpc.unary(method, req).await)
        })
    }
}

/// Requests as bytes, responses by prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = v1::ScoreResponse;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<v1::ScoreResponse>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// The message's bytes, without a copy (tonic's buffer is split off).
#[derive(Debug, Clone, Copy, Default)]
struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}
