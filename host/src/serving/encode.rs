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
use crate::response::{self, FallbackInfo};
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
/// Written directly: the per-candidate entries (`{"id":…,"score":…,
/// "eligible":…,"reasons":[…],"propensity":…}`) are the body's bulk, and
/// serde spent most of their time escaping the five constant keys of every
/// entry and building a `Vec` of entries first. The bytes are exactly those
/// of serializing [`ScoreResponse`](crate::response::ScoreResponse) with serde_json (numbers through the
/// same `zmij`/`itoa` formatters; strings that need escaping, and the small
/// nested objects, through serde_json itself): the test
/// `direct_json_is_serde_s_bytes` compares the two.
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
    // ~110 bytes per candidate in the JSON.
    let mut out = Vec::with_capacity(256 + 128 * req.candidates.len());
    out.extend_from_slice(b"{\"request_id\":");
    string(&mut out, &req.context.request_id)?;
    out.extend_from_slice(b",\"route\":");
    string(&mut out, route)?;
    out.extend_from_slice(b",\"policy\":");
    serde_json::to_writer(&mut out, &*served.by)?;
    out.extend_from_slice(b",\"variant\":\"");
    out.extend_from_slice(served.variant.as_str().as_bytes());
    out.extend_from_slice(b"\",\"arm\":\"");
    out.extend_from_slice(served.arm.as_str().as_bytes());
    out.push(b'"');
    if let Some((failed, error)) = served.failures.first() {
        out.extend_from_slice(b",\"fallback\":");
        serde_json::to_writer(
            &mut out,
            &FallbackInfo {
                failed,
                error_kind: error.kind(),
                error: error.to_string(),
            },
        )?;
    }
    out.extend_from_slice(b",\"scores\":[");
    let mut float = zmij::Buffer::new();
    let mut number = |out: &mut Vec<u8>, v: f64| {
        // serde_json writes a non-finite float as null.
        if v.is_finite() {
            out.extend_from_slice(float.format_finite(v).as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
    };
    for (i, c) in req.candidates.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"{\"id\":" } else { b",{\"id\":" });
        string(&mut out, &c.id)?;
        out.extend_from_slice(b",\"score\":");
        number(&mut out, d.scores[i]);
        out.extend_from_slice(if d.eligible[i] {
            b",\"eligible\":true,\"reasons\":["
        } else {
            b",\"eligible\":false,\"reasons\":["
        });
        for (k, name) in response::Reasons(d.reasons[i]).names().enumerate() {
            // Reason names are snake_case ASCII: nothing to escape.
            out.extend_from_slice(if k == 0 { b"\"" } else { b",\"" });
            out.extend_from_slice(name.as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"],\"propensity\":");
        number(&mut out, d.propensity[i]);
        out.push(b'}');
    }
    out.push(b']');
    if req.debug {
        out.extend_from_slice(b",\"debug\":");
        serde_json::to_writer(&mut out, &response::debug_entries(req, d))?;
    }
    if served.counts_unknown {
        out.extend_from_slice(b",\"delivery_state\":\"counts_unknown\"");
    }
    let mut int = itoa::Buffer::new();
    out.extend_from_slice(b",\"timing\":{\"server_us\":");
    out.extend_from_slice(int.format(server_us).as_bytes());
    out.extend_from_slice(b",\"policy_us\":");
    out.extend_from_slice(int.format(served.policy_us).as_bytes());
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// `s` as a JSON string: copied between quotes when nothing in it needs an
/// escape (request ids and candidate ids are checked to hold no control
/// characters, so only a quote or a backslash would), else by serde_json.
fn string(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        return serde_json::to_writer(out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bindings::{WitDebugValue, WitDecisions, wit_reason};
    use crate::control::registry::ArmKind;
    use crate::error::CallError;
    use crate::request::Validate;
    use crate::response::{ScoreResponse, Timing, Variant};

    /// What the encoder wrote before it was direct: serde_json over
    /// [`ScoreResponse`].
    fn serde_bytes(
        req: &ValidRequest<'_>,
        route: &str,
        served: &Served,
        server_us: u64,
    ) -> Vec<u8> {
        let d = &served.decisions;
        serde_json::to_vec(&ScoreResponse {
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
        })
        .unwrap()
    }

    #[test]
    fn direct_json_is_serde_s_bytes() {
        // Ids that need escaping (quote, backslash), non-ASCII, long; every
        // reason bit alone and in pairs; floats of every shape.
        let ids = [
            "t1".to_string(),
            r#"a"quoted"id"#.to_string(),
            r"back\slash".to_string(),
            "é🎵ü".to_string(),
            "x".repeat(200),
        ];
        let n = 40;
        let candidates: Vec<String> = (0..n)
            .map(|i| {
                let id = serde_json::to_string(&format!("{}-{i}", ids[i % ids.len()])).unwrap();
                format!(r#"{{"id": {id}, "relevance": 0.5}}"#)
            })
            .collect();
        let floats = [
            0.0,
            -0.0,
            1.0,
            0.1 + 0.2,
            1e-300,
            -1e300,
            123456789.125,
            5e-324,
        ];
        let policy = Arc::new(PolicyRef {
            name: "p\"q".into(),
            version: "1.0.0".into(),
            digest: "sha256:ab".into(),
            settings_sha256: Some("cd".into()),
        });
        for (case, (debug, fallback, unknown)) in [
            (false, false, false),
            (true, false, false),
            (false, true, true),
            (true, true, true),
        ]
        .into_iter()
        .enumerate()
        {
            let body = format!(
                r#"{{"context": {{"request_id": "r\"{case}", "listener_id": "u", "session_id": "s",
                  "surface": "radio", "market": "SE", "timestamp_ms": 0}}, "debug": {debug},
                  "candidates": [{}]}}"#,
                candidates.join(",")
            );
            let req = crate::request::parse(body.as_bytes())
                .unwrap()
                .validate(100)
                .unwrap();
            let reasons = |i: usize| match i % 3 {
                0 => wit_reason(1 << (i % 13)),
                1 => wit_reason((1 << (i % 13)) | (1 << ((i / 3) % 13))),
                _ => wit_reason(0),
            };
            let d = WitDecisions {
                scores: (0..n).map(|i| floats[i % floats.len()]).collect(),
                eligible: (0..n).map(|i| i % 2 == 0).collect(),
                reasons: (0..n).map(reasons).collect(),
                propensity: (0..n)
                    .map(|i| floats[(i + 3) % floats.len()].abs().min(1.0))
                    .collect(),
                debug: vec![
                    WitDebugValue {
                        name: "lift".into(),
                        candidate: Some(1),
                        value: 0.25,
                    },
                    WitDebugValue {
                        name: "req\nlevel".into(),
                        candidate: None,
                        value: -3.5,
                    },
                ],
                campaign_updates: Vec::new(),
            };
            let mut served = Served::stable(policy.clone(), d);
            served.policy_us = 17 + case as u64;
            served.counts_unknown = unknown;
            if fallback {
                served.variant = Variant::Fallback;
                served.arm = ArmKind::Baseline;
                served.failures =
                    vec![(policy.clone(), CallError::Policy("boom \"x\"\n\\".into()))];
            }
            let route = if case % 2 == 0 { "radio" } else { "" };
            let direct = json_of(&req, route, &served, 12_345 + case as u64).unwrap();
            let reference = serde_bytes(&req, route, &served, 12_345 + case as u64);
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(reference).unwrap(),
                "case {case}"
            );
        }
    }
}
