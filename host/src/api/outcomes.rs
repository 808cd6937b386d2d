//! `POST /v1/outcomes`: what listeners did after a decision, appended to the
//! outcome files beside the decision log.
//!
//! ```text
//! {"request_id": "r-1", "candidate_id": "spotify:track:9c17", "event": "stream"}
//! {"request_id": "r-1", "candidate_id": "spotify:track:9c17", "event": "save", "value": 1.0}
//! ```
//!
//! The body is events in the [outcome format](crate::decision_log::outcomes),
//! as JSON lines or as one JSON array. A batch is all or nothing: every
//! event is checked first (a 400 or 422 names the first bad one, as
//! `events[i].field`), then the batch is queued whole for the decision
//! log's writer thread, which appends it to `outcomes-<UTC start>-<seq>.parquet`
//! (`.jsonl` with `--decision-log-format jsonl`)
//! in the log directory (or stdout). `oasis replay --outcomes DIR` reads
//! those files, joined to the decisions on `(request_id, candidate_id)`.
//!
//! Unlike a decision record, a batch is never dropped silently: when the
//! writer's queue is full the answer is a 503 with `Retry-After`, and the
//! caller sends it again. Without `--decision-log` the endpoint answers 404
//! `outcomes_disabled`: outcomes only mean something next to decisions.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::content;
use crate::api::error::{ApiError, ErrorKind};
use crate::api::state::AppState;
use crate::decision_log::OutcomesRefused;
use crate::decision_log::outcomes::OutcomeEvent;
use crate::request::{RequestError, check_id};

/// Most events accepted in one request.
pub const MAX_EVENTS: usize = 10_000;

/// The answer to an accepted batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OutcomesAccepted {
    /// Events queued for the outcome files.
    pub accepted: u64,
}

/// Appends outcome events to the decision log's outcome files.
#[utoipa::path(post, path = "/v1/outcomes", operation_id = "record_outcomes", tag = "score", summary = "Record what listeners did with scored candidates",
    description = "Outcome events (`request_id`, `candidate_id`, `event`: impression, stream, skip or save, optional `value` and `at_ms`) as JSON lines or one JSON array, at most 10,000. All or nothing: the batch is checked whole, then appended to the outcome files beside the decision log, which `oasis replay --outcomes` joins to the logged decisions.",
    request_body(content = Vec<OutcomeEventDoc>, content_type = "application/x-ndjson"),
    responses(
        (status = 202, description = "Queued for writing", body = OutcomesAccepted),
        (status = 400, description = "A line or element is not an event (`malformed_request`; `field` is `events[i]`), or an unreadable body (`bad_body`)", body = crate::api::error::ApiErrorBody),
        (status = 404, description = "The server logs no decisions (`outcomes_disabled`)", body = crate::api::error::ApiErrorBody),
        (status = 413, description = "Body over `--max-body-bytes` (`too_large`), or more than 10,000 events (`too_many_events`)", body = crate::api::error::ApiErrorBody),
        (status = 415, description = "A body labelled with a `Content-Type` other than JSON or JSON lines, e.g. `text/plain` (`unsupported_media_type`); no `Content-Type` is read as JSON", body = crate::api::error::ApiErrorBody),
        (status = 422, description = "An event the format refuses (`invalid_request`): empty or over-long ids, control characters, a non-finite value; `field` names it", body = crate::api::error::ApiErrorBody),
        (status = 503, description = "The log's queue is full or it stopped (`outcomes_busy`): send the batch again",
            body = crate::api::error::ApiErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ))]
pub async fn record(
    State(state): State<AppState>,
    content::JsonContent(labelled): content::JsonOrLines,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(logging) = state.scorer.decision_log() else {
        return ApiError::new(ErrorKind::OutcomesDisabled, "this server logs no decisions, so it keeps no outcomes: start `oasis serve` with --decision-log",
        )
        .into_response();
    };
    if let Err(e) = labelled {
        return e.into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return ApiError::body(e, state.max_body_bytes).into_response(),
    };
    let events = match parse_events(&body) {
        Ok(events) => events,
        Err(e) => return e.into_response(),
    };
    let n = events.len() as u64;
    match logging.log.log_outcomes(events) {
        Ok(()) => (StatusCode::ACCEPTED, Json(OutcomesAccepted { accepted: n })).into_response(),
        Err(why) => {
            tracing::warn!(events = n, error = %why, "outcome events refused");
            ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    ErrorKind::OutcomesBusy,
                    match why {
                        OutcomesRefused::QueueFull => {
                            "the decision log's queue is full; send the batch again shortly"
                        }
                        OutcomesRefused::Stopped => "the decision log has stopped",
                    },
                )
            }
            .into_response()
        }
    }
}

/// The events of a body: JSON lines, or one JSON array; every one checked.
pub(crate) fn parse_events(body: &[u8]) -> Result<Vec<OutcomeEvent>, ApiError> {
    let text = body.trim_ascii_start();
    let events: Vec<OutcomeEvent> = if text.first() == Some(&b'[') {
        // Elements first, then each as an event, so that an error names
        // the element (`events[i]`), not the whole batch.
        let elements: Vec<&serde_json::value::RawValue> =
            serde_json::from_slice(text).map_err(|e| malformed("events", &e))?;
        if elements.len() > MAX_EVENTS {
            return Err(too_many());
        }
        elements
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                serde_json::from_str(raw.get()).map_err(|e| malformed(&format!("events[{i}]"), &e))
            })
            .collect::<Result<_, _>>()?
    } else {
        let mut out = Vec::new();
        for (i, line) in text
            .split(|&b| b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .enumerate()
        {
            if i == MAX_EVENTS {
                return Err(too_many());
            }
            out.push(
                serde_json::from_slice(line).map_err(|e| malformed(&format!("events[{i}]"), &e))?,
            );
        }
        out
    };
    if events.len() > MAX_EVENTS {
        return Err(too_many());
    }
    if events.is_empty() {
        return Err(RequestError::invalid("events", "no outcome event in the body").into());
    }
    for (i, e) in events.iter().enumerate() {
        check_id(|| format!("events[{i}].request_id"), &e.request_id, true)?;
        check_id(
            || format!("events[{i}].candidate_id"),
            &e.candidate_id,
            true,
        )?;
        if let Some(v) = e.value
            && !v.is_finite()
        {
            return Err(RequestError::invalid(
                format!("events[{i}].value"),
                "must be a finite number",
            )
            .into());
        }
    }
    Ok(events)
}

fn malformed(at: &str, e: &serde_json::Error) -> ApiError {
    RequestError::Malformed {
        path: at.to_string(),
        message: format!("not an outcome event: {e}"),
    }
    .into()
}

fn too_many() -> ApiError {
    ApiError::new(
        ErrorKind::TooManyEvents,
        format!("at most {MAX_EVENTS} events per request; send them in several"),
    )
}

/// An outcome event, for the OpenAPI document (the type is
/// [`OutcomeEvent`]).
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "documentation only: read by utoipa, never built")]
pub struct OutcomeEventDoc {
    /// The scored request's `context.request_id`.
    request_id: String,
    /// The candidate's `id` in that request.
    candidate_id: String,
    /// `impression`, `stream`, `skip` or `save`.
    event: String,
    /// The event's reward (default: stream 1, save 1, skip 0, impression 0).
    value: Option<f64>,
    /// When it happened, milliseconds since the Unix epoch.
    at_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_arrays_parse_and_bad_events_are_named() {
        let lines = b"{\"request_id\":\"r\",\"candidate_id\":\"a\",\"event\":\"stream\"}\n\n{\"request_id\":\"r\",\"candidate_id\":\"b\",\"event\":\"skip\",\"value\":0.5}\n";
        assert_eq!(parse_events(lines).unwrap().len(), 2);
        let array = br#" [{"request_id":"r","candidate_id":"a","event":"save"}]"#;
        assert_eq!(parse_events(array).unwrap().len(), 1);
        let bad_kind = b"{\"request_id\":\"r\",\"candidate_id\":\"a\",\"event\":\"stream\"}\n{\"request_id\":\"r\",\"candidate_id\":\"a\",\"event\":\"like\"}";
        let e = parse_events(bad_kind).unwrap_err();
        assert_eq!(
            (e.status, e.field.as_deref()),
            (StatusCode::BAD_REQUEST, Some("events[1]"))
        );
        let control = br#"[{"request_id":"r\u001b[2J","candidate_id":"a","event":"stream"}]"#;
        let e = parse_events(control).unwrap_err();
        assert_eq!(
            (e.status, e.field.as_deref()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("events[0].request_id")
            )
        );
        let empty_id = br#"[{"request_id":"r","candidate_id":"","event":"stream"}]"#;
        assert_eq!(
            parse_events(empty_id).unwrap_err().field.as_deref(),
            Some("events[0].candidate_id")
        );
        assert_eq!(
            parse_events(b"\n \n").unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let many: String = (0..=MAX_EVENTS)
            .map(|i| {
                format!("{{\"request_id\":\"r\",\"candidate_id\":\"c{i}\",\"event\":\"skip\"}}\n")
            })
            .collect();
        assert_eq!(
            parse_events(many.as_bytes()).unwrap_err().kind,
            ErrorKind::TooManyEvents
        );
    }
}
