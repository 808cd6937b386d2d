//! Oasis's gRPC API: the messages and stubs generated from
//! `proto/oasis/v1/scoring.proto` (compiled by protox in `build.rs`, no
//! system `protoc`), the encoded file descriptor set that server reflection
//! serves, and [`json::request`], which turns a JSON scoring request into
//! the equivalent gRPC request.

#![warn(missing_docs)]

/// Package `oasis.v1`: messages, `scoring_client`, `scoring_server`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("oasis.v1");
}

/// The encoded `FileDescriptorSet` of `oasis/v1/scoring.proto`, for server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/oasis_v1_descriptor.bin"));

/// The fully qualified name of the scoring service.
pub const SERVICE_NAME: &str = "oasis.v1.Scoring";

pub mod json;

/// The prost version the messages are generated with (`Message::encode`…).
pub use prost;

/// The proto enum value of a surface name (`"daily_mix"`), `None` for an
/// unknown name.
pub fn surface_from_name(name: &str) -> Option<v1::Surface> {
    v1::Surface::from_str_name(&format!("SURFACE_{}", name.to_ascii_uppercase()))
        .filter(|s| *s != v1::Surface::Unspecified)
}

/// The JSON name of a proto surface (`"daily_mix"`), `None` for
/// `SURFACE_UNSPECIFIED`.
pub fn surface_name(s: v1::Surface) -> Option<&'static str> {
    s.as_str_name()
        .strip_prefix("SURFACE_")
        .filter(|n| *n != "UNSPECIFIED")
        .map(|n| match n {
            "RADIO" => "radio",
            "AUTOPLAY" => "autoplay",
            "DAILY_MIX" => "daily_mix",
            "ARTIST_MIX" => "artist_mix",
            "MOOD_MIX" => "mood_mix",
            "DECADE_MIX" => "decade_mix",
            "GENRE_MIX" => "genre_mix",
            _ => "other",
        })
}
