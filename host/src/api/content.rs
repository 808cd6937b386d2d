//! The `Content-Type` of the JSON endpoints' bodies.
//!
//! `POST /v1/score` takes JSON, `/v1/events` and `/v1/outcomes` JSON or
//! JSON lines. A body labelled as anything else (`text/plain`, a form, …)
//! is refused with 415 `unsupported_media_type` before it is parsed: a
//! caller that labels its body wrongly has made a mistake worth naming,
//! and a body that happens to parse would hide it. A body with no
//! `Content-Type` is read as JSON (HTTP clients and load generators often
//! send none). The admin API's JSON bodies are axum's `Json`, which needs
//! the header; its rejection maps to the same kind
//! (`From<JsonRejection> for ApiError`).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::api::error::{ApiError, ErrorKind};
use crate::sandbox::visible;

/// What a JSON endpoint's body is labelled with, checked: `Ok` for JSON (or
/// no label), the 415 to answer otherwise. An extractor that never rejects,
/// so that the handler counts the refusal as it counts the others.
pub struct JsonContent<const LINES: bool>(pub Result<(), ApiError>);

/// JSON only (`POST /v1/score`).
pub type Json = JsonContent<false>;
/// JSON or JSON lines (`POST /v1/events`, `POST /v1/outcomes`).
pub type JsonOrLines = JsonContent<true>;

impl<S: Send + Sync, const LINES: bool> FromRequestParts<S> for JsonContent<LINES> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::CONTENT_TYPE) else {
            return Ok(JsonContent(Ok(())));
        };
        let label = String::from_utf8_lossy(value.as_bytes());
        if is_json(&label, LINES) {
            return Ok(JsonContent(Ok(())));
        }
        let send = if LINES {
            "JSON or JSON lines: send `Content-Type: application/json` or \
             `application/x-ndjson`"
        } else {
            "JSON: send `Content-Type: application/json`"
        };
        Ok(JsonContent(Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            format!(
                "the body is labelled `Content-Type: {}`, and this endpoint takes {send} \
                 (or no Content-Type)",
                visible(&label)
            ),
        ))))
    }
}

/// Whether the media type `label` (parameters such as `charset` ignored,
/// case-insensitive) is JSON: `application/json` or `application/*+json`,
/// and with `lines` also `application/x-ndjson` or `application/jsonl`.
fn is_json(label: &str, lines: bool) -> bool {
    let essence = label.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    if !kind.eq_ignore_ascii_case("application") {
        return false;
    }
    let sub = sub.to_ascii_lowercase();
    sub == "json"
        || sub.ends_with("+json")
        || (lines
            && matches!(
                sub.as_str(),
                "x-ndjson" | "ndjson" | "jsonl" | "x-jsonlines"
            ))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_labels_with_or_without_parameters_and_nothing_else() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.oasis+json",
        ] {
            assert!(is_json(ok, false), "{ok}");
        }
        for bad in [
            "text/plain",
            "text/json",
            "application/x-www-form-urlencoded",
            "application/x-ndjson",
            "multipart/form-data; boundary=x",
            "json",
            "",
        ] {
            assert!(!is_json(bad, false), "{bad}");
        }
        assert!(is_json("application/x-ndjson", true));
        assert!(is_json("application/jsonl", true));
        assert!(!is_json("text/plain", true));
    }
}
