//! The answer to a scored request in each wire format: the JSON body of
//! `POST /v1/score` and the `oasis.v1.ScoreResponse` message.
//!
//! Both carry the same fields: the request id, the route, the version that
//! served, the variant and arm, the first failure when a fallback served,
//! one score per candidate in request order, optional debug values and the
//! timing. The benchmark encodes with these functions too, so what it
//! measures is what the server sends.

use oasis_contract::ReasonBits;
use oasis_proto::v1;

use crate::metadata::PolicyRef;
use crate::request::ValidRequest;
use crate::response::{self, FallbackInfo, ScoreResponse, Timing};
use crate::serving::served::Served;
use crate::serving::{Scored, ServeError};

/// The JSON body of a scored request; `timing.server_us` is the time since
/// the request was read.
///
/// # Errors
/// [`ServeError::Internal`] if the response cannot be encoded.
pub fn json(scored: &Scored<'_>) -> Result<Vec<u8>, ServeError> {
    let server_us = scored.started.elapsed().as_micros() as u64;
    json_of(&scored.req, &scored.route, &scored.served, server_us)
        .map_err(|e| ServeError::Internal(format!("encoding the response: {e}")))
}

/// The JSON body of `served` decisions for `req` on `route`.
///
/// # Errors
/// When serialization fails (a writer error; not expected for a `Vec`).
pub fn json_of(
    req: &ValidRequest<'_>,
    route: &str,
    served: &Served,
    server_us: u64,
) -> Result<Vec<u8>, serde_json::Error> {
    let d = &served.decisions;
    let resp = ScoreResponse {
        request_id: &req.context.request_id,
        route: Some(route),
        policy: &served.by,
        variant: served.variant,
        arm: Some(served.arm.as_str()),
        fallback: served.failures.first().map(|(failed, error)| FallbackInfo {
            failed,
            error_kind: error.kind(),
            error: error.to_string(),
        }),
        scores: response::scored(req, d),
        debug: req.debug.then(|| response::debug_entries(req, d)),
        delivery_state: served.counts_unknown.then_some("counts_unknown"),
        timing: Timing {
            server_us,
            policy_us: served.policy_us,
        },
    };
    // ~110 bytes per candidate in the JSON.
    let mut body = Vec::with_capacity(256 + 128 * req.candidates.len());
    serde_json::to_writer(&mut body, &resp)?;
    Ok(body)
}

/// The protobuf message of a scored request: the JSON response's fields,
/// scores as columns.
pub fn proto(scored: &Scored<'_>) -> v1::ScoreResponse {
    let server_us = scored.started.elapsed().as_micros() as u64;
    proto_of(&scored.req, &scored.route, &scored.served, server_us)
}

/// The protobuf message of `served` decisions for `req` on `route`.
pub fn proto_of(
    req: &ValidRequest<'_>,
    route: &str,
    served: &Served,
    server_us: u64,
) -> v1::ScoreResponse {
    let d = &served.decisions;
    let debug = if req.debug {
        response::debug_entries(req, d)
            .into_iter()
            .map(|e| v1::DebugEntry {
                name: e.name.to_string(),
                candidate: e.candidate.unwrap_or("").to_string(),
                value: e.value,
            })
            .collect()
    } else {
        Vec::new()
    };
    v1::ScoreResponse {
        request_id: req.context.request_id.to_string(),
        route: route.to_string(),
        policy: Some(policy_ref(&served.by)),
        variant: served.variant.as_str().to_string(),
        arm: served.arm.as_str().to_string(),
        fallback: served.failures.first().map(|(failed, error)| v1::Fallback {
            failed: Some(policy_ref(failed)),
            error_kind: error.kind().as_str().to_string(),
            error: error.to_string(),
        }),
        scores: Some(v1::Scores {
            ids: req.candidates.iter().map(|c| c.id.to_string()).collect(),
            scores: d.scores.clone(),
            eligible: d.eligible.clone(),
            reasons: d.reasons.iter().map(|r| r.reason_bits().into()).collect(),
            propensity: d.propensity.clone(),
            reason_names: oasis_contract::reason::REASONS
                .iter()
                .map(|(_, n)| n.to_string())
                .collect(),
        }),
        debug,
        timing: Some(v1::Timing {
            server_us,
            policy_us: served.policy_us,
        }),
    }
}

fn policy_ref(p: &PolicyRef) -> v1::PolicyRef {
    v1::PolicyRef {
        name: p.name.to_string(),
        version: p.version.to_string(),
        digest: p.digest.to_string(),
        settings_sha256: p.settings_sha256.as_deref().unwrap_or_default().to_string(),
    }
}
