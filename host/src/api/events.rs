//! `POST /v1/events`: what listeners did with the tracks Oasis scored, for
//! the host's delivery state and for offline evaluation, in one format.
//!
//! ```text
//! {"event_id": "e-1", "request_id": "r-1", "candidate_id": "spotify:track:9c17", "event": "impression",
//!  "at_ms": 1781524800000, "listener_id": "u-1", "session_id": "s-1",
//!  "campaign_id": "cmp-7", "rights_holder": "label-12", "promoted": true, "position": 3}
//! ```
//!
//! An event is an [outcome event](crate::decision_log::outcomes) (the
//! `request_id` / `candidate_id` / `event` / `value` / `at_ms` that `oasis
//! replay` joins on) with the delivery fields
//! ([`DeliveryFields`](crate::decision_log::outcomes::DeliveryFields)). Here
//! `event_id` and `at_ms` are required, and `listener_id` and `session_id`
//! too for impressions and streams, which change state. A batch (JSON lines
//! or one JSON array, at most [`MAX_EVENTS`]) is checked whole first: a 400
//! or 422 names the first bad field as `events[i].field`, and nothing is
//! applied. An `at_ms` more than [`oasis_state::MAX_AHEAD_MS`] (5 minutes)
//! ahead of the server's clock is refused (422 `events[i].at_ms`): one such
//! event would move the store's clocks for everyone. Then:
//!
//! * the delivery state store applies each event once per `event_id`
//!   (a retried batch changes nothing; see [`oasis_state::DeliveryEvent`]);
//!   while Redis is down the events are buffered (bounded) and applied
//!   when it returns; the embedded store never acknowledges what is not on
//!   disk: while its writes overrun, the batch is refused (503);
//! * with `--decision-log`, the events are also appended to the outcome
//!   files, where `oasis replay --outcomes` reads them.
//!
//! The answer is 202 with what happened to the batch, or 503 with
//! `Retry-After` when the embedded store cannot make the batch durable now,
//! or Redis is down *and* the buffer is full (send the batch again; ids
//! make that safe). Without a store and without a decision
//! log the endpoint answers 404 `events_disabled`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use oasis_state::DeliveryEvent;

use crate::api::content;
use crate::api::error::{ApiError, ErrorKind};
use crate::api::outcomes::parse_events;
use crate::api::state::AppState;
use crate::decision_log::outcomes::{EventKind, OutcomeEvent};
use crate::request::{RequestError, check_id};

pub use crate::api::outcomes::MAX_EVENTS;

/// The answer to an accepted batch.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct EventsAccepted {
    /// Events in the batch.
    pub accepted: u64,
    /// Events that changed delivery state.
    pub applied: u64,
    /// Events whose `event_id` was already recorded (nothing changed).
    pub duplicates: u64,
    /// Events held while the state store is unavailable, applied when it
    /// returns.
    pub buffered: u64,
    /// Events appended to the outcome files (0 without `--decision-log`).
    pub logged: u64,
}

/// Records delivery and outcome events.
#[utoipa::path(post, path = "/v1/events", operation_id = "record_events", tag = "score", summary = "Record impressions, streams, skips and saves",
    description = "Events (`event_id`, `request_id`, `candidate_id`, `event`: impression, stream, skip or save, `at_ms`, `listener_id`, `session_id`, and `campaign_id`, `rights_holder`, `promoted`, `position` when known) as JSON lines or one JSON array, at most 10,000. Checked whole, then applied to the delivery state once per `event_id` and appended to the outcome files when the server logs decisions.",
    request_body(content = Vec<EventDoc>, content_type = "application/x-ndjson"),
    responses(
        (status = 202, description = "Applied, or buffered until the state store returns", body = EventsAccepted),
        (status = 400, description = "A line or element is not an event (`malformed_request`; `field` is `events[i]`), or an unreadable body (`bad_body`)", body = crate::api::error::ApiErrorBody),
        (status = 404, description = "The server keeps no delivery state and logs no decisions (`events_disabled`)", body = crate::api::error::ApiErrorBody),
        (status = 413, description = "Body over `--max-body-bytes` (`too_large`), or more than 10,000 events (`too_many_events`)", body = crate::api::error::ApiErrorBody),
        (status = 415, description = "A body labelled with a `Content-Type` other than JSON or JSON lines, e.g. `text/plain` (`unsupported_media_type`); no `Content-Type` is read as JSON", body = crate::api::error::ApiErrorBody),
        (status = 422, description = "An event the format refuses (`invalid_request`): a missing `event_id`, `at_ms`, `listener_id` or `session_id`, empty or over-long ids, a position of 0, a non-finite value, an `at_ms` more than 5 minutes ahead of the server's clock; `field` names it", body = crate::api::error::ApiErrorBody),
        (status = 503, description = "The embedded state store cannot make the batch durable now, or the Redis store is unavailable and its buffer is full (`events_busy`): send the batch again",
            body = crate::api::error::ApiErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ))]
pub async fn record(
    State(state): State<AppState>,
    content::JsonContent(labelled): content::JsonOrLines,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if state.scorer.delivery().is_none() && state.scorer.decision_log().is_none() {
        return ApiError::new(
            ErrorKind::EventsDisabled,
            "this server keeps no delivery state (--state off) and logs no decisions",
        )
        .into_response();
    }
    if let Err(e) = labelled {
        // Refused whole, like a batch that does not parse.
        state.scorer.metrics().state.events("invalid", 1);
        return e.into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return ApiError::body(e, state.max_body_bytes).into_response(),
    };
    let now_ms = oasis_state::unix_now_ms();
    let events = match parse_events(&body).and_then(|events| {
        let delivery = events
            .iter()
            .enumerate()
            .map(|(i, e)| delivery_event(i, e, now_ms))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((events, delivery))
    }) {
        Ok(parsed) => parsed,
        Err(e) => {
            // The batch is refused whole: counted once (its events may not
            // even parse).
            state.scorer.metrics().state.events("invalid", 1);
            return e.into_response();
        }
    };
    let (events, delivery_events) = events;
    let mut answer = EventsAccepted {
        accepted: events.len() as u64,
        ..Default::default()
    };
    if let Some(delivery) = &state.scorer.delivery() {
        match delivery.record(delivery_events).await {
            Ok(r) => {
                answer.applied = r.applied;
                answer.duplicates = r.duplicates;
                answer.buffered = r.buffered;
                state.scorer.metrics().state.events("applied", r.applied);
                state
                    .scorer
                    .metrics()
                    .state
                    .events("duplicate", r.duplicates);
                state.scorer.metrics().state.events("buffered", r.buffered);
            }
            Err(why) => {
                state.scorer.metrics().state.events("busy", answer.accepted);
                tracing::warn!(events = events.len(), error = %why, "events refused");
                return ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(ErrorKind::EventsBusy, why)
                }
                .into_response();
            }
        }
    }
    if let Some(logging) = &state.scorer.decision_log() {
        // The state already has the batch: a full log queue loses these
        // events from the outcome files (counted as refused in
        // `oasis_outcome_events`) rather than fail a batch that counted.
        match logging.log.log_outcomes(events) {
            Ok(()) => answer.logged = answer.accepted,
            Err(why) => {
                tracing::warn!(events = answer.accepted, error = %why, "events not appended to the outcome files")
            }
        }
    }
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

/// The delivery event of `e` (the `i`-th of its batch), checked; `now_ms`
/// is the server's clock, which `at_ms` may lead by at most
/// [`oasis_state::MAX_AHEAD_MS`].
fn delivery_event(i: usize, e: &OutcomeEvent, now_ms: i64) -> Result<DeliveryEvent, ApiError> {
    let d = &e.delivery;
    let missing = |field: &str| -> ApiError {
        RequestError::invalid(format!("events[{i}].{field}"), "is required by /v1/events").into()
    };
    let id = d.event_id.as_deref().ok_or_else(|| missing("event_id"))?;
    check_id(|| format!("events[{i}].event_id"), id, true)?;
    let at_ms = e.at_ms.ok_or_else(|| missing("at_ms"))?;
    let at_ms = i64::try_from(at_ms).map_err(|_| {
        ApiError::from(RequestError::invalid(
            format!("events[{i}].at_ms"),
            "is beyond the year 292 million",
        ))
    })?;
    if at_ms > now_ms.saturating_add(oasis_state::MAX_AHEAD_MS) {
        return Err(RequestError::invalid(
            format!("events[{i}].at_ms"),
            format!(
                "is {} s ahead of the server's clock (at most {} s; is it in milliseconds?)",
                (at_ms - now_ms) / 1000,
                oasis_state::MAX_AHEAD_MS / 1000
            ),
        )
        .into());
    }
    let changes_state = matches!(e.event, EventKind::Impression | EventKind::Stream);
    let who = |field: &'static str, v: &Option<String>| -> Result<String, ApiError> {
        match v {
            Some(v) => {
                check_id(|| format!("events[{i}].{field}"), v, true)?;
                Ok(v.clone())
            }
            None if changes_state => Err(missing(field)),
            None => Ok(String::new()),
        }
    };
    let listener_id = who("listener_id", &d.listener_id)?;
    let session_id = who("session_id", &d.session_id)?;
    for (field, v) in [
        ("campaign_id", &d.campaign_id),
        ("rights_holder", &d.rights_holder),
    ] {
        if let Some(v) = v {
            check_id(|| format!("events[{i}].{field}"), v, true)?;
        }
    }
    if d.position == Some(0) {
        return Err(RequestError::invalid(
            format!("events[{i}].position"),
            "is 1-based: the top of the slate is 1",
        )
        .into());
    }
    Ok(DeliveryEvent {
        id: id.to_string(),
        kind: match e.event {
            EventKind::Impression => oasis_state::EventKind::Impression,
            EventKind::Stream => oasis_state::EventKind::Stream,
            EventKind::Skip => oasis_state::EventKind::Skip,
            EventKind::Save => oasis_state::EventKind::Save,
        },
        at_ms,
        listener_id,
        session_id,
        track_id: e.candidate_id.clone(),
        campaign_id: d.campaign_id.clone(),
        rights_holder: d.rights_holder.clone(),
        promoted: d.promoted.unwrap_or(false),
        position: d.position,
    })
}

/// An event, for the OpenAPI document (the type is [`OutcomeEvent`] with
/// its delivery fields).
#[derive(utoipa::ToSchema)]
#[allow(dead_code, reason = "documentation only: read by utoipa, never built")]
pub struct EventDoc {
    /// Unique id: a repeated id changes no state.
    event_id: String,
    /// The scored request's `context.request_id`.
    request_id: String,
    /// The candidate's `id` in that request (the track).
    candidate_id: String,
    /// `impression`, `stream`, `skip` or `save`.
    event: String,
    /// When it happened, milliseconds since the Unix epoch.
    at_ms: u64,
    /// The listener; required for impressions and streams.
    listener_id: Option<String>,
    /// The session; required for impressions and streams.
    session_id: Option<String>,
    /// The track's campaign, if any.
    campaign_id: Option<String>,
    /// The track's rights holder.
    rights_holder: Option<String>,
    /// Shown as a promotion (default false).
    promoted: Option<bool>,
    /// 1-based rank at which it was shown.
    position: Option<u32>,
    /// The event's reward for offline evaluation (default: stream 1, save 1).
    value: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<DeliveryEvent, ApiError> {
        // As an array: the events below span lines for reading.
        let events = parse_events(format!("[{line}]").as_bytes())?;
        delivery_event(0, &events[0], oasis_state::unix_now_ms())
    }

    #[test]
    fn an_event_converts_with_its_delivery_fields() {
        let e = one(
            r#"{"event_id":"e1","request_id":"r","candidate_id":"t","event":"impression","at_ms":7,
               "listener_id":"u","session_id":"s","campaign_id":"c","rights_holder":"h","promoted":true,"position":2}"#,
        )
        .unwrap();
        assert_eq!(e.kind, oasis_state::EventKind::Impression);
        assert_eq!(
            (e.id.as_str(), e.at_ms, e.track_id.as_str()),
            ("e1", 7, "t")
        );
        assert_eq!((e.listener_id.as_str(), e.session_id.as_str()), ("u", "s"));
        assert_eq!(e.campaign_id.as_deref(), Some("c"));
        assert_eq!(e.rights_holder.as_deref(), Some("h"));
        assert!(e.promoted);
        assert_eq!(e.position, Some(2));
        // A save needs no listener or session: it changes no state.
        let save = one(
            r#"{"event_id":"e2","request_id":"r","candidate_id":"t","event":"save","at_ms":7}"#,
        )
        .unwrap();
        assert!(!save.promoted && save.listener_id.is_empty());
    }

    #[test]
    fn missing_and_bad_fields_are_named() {
        let field = |line: &str| one(line).unwrap_err().field.unwrap_or_default();
        assert_eq!(
            field(r#"{"request_id":"r","candidate_id":"t","event":"save","at_ms":7}"#),
            "events[0].event_id"
        );
        assert_eq!(
            field(r#"{"event_id":"e","request_id":"r","candidate_id":"t","event":"save"}"#),
            "events[0].at_ms"
        );
        assert_eq!(
            field(
                r#"{"event_id":"e","request_id":"r","candidate_id":"t","event":"stream","at_ms":1,"session_id":"s"}"#
            ),
            "events[0].listener_id"
        );
        assert_eq!(
            field(
                r#"{"event_id":"e","request_id":"r","candidate_id":"t","event":"skip","at_ms":1,"position":0}"#
            ),
            "events[0].position"
        );
        assert_eq!(
            field(
                r#"{"event_id":"","request_id":"r","candidate_id":"t","event":"skip","at_ms":1}"#
            ),
            "events[0].event_id"
        );
    }
}
