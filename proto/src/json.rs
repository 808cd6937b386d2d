//! A JSON scoring request (the body of `POST /v1/score`) as the equivalent
//! gRPC [`ScoreRequest`](crate::v1::ScoreRequest).
//!
//! The JSON is read with the wire format's own types
//! ([`oasis_wire::request`], the host's parser), so both front ends read the
//! same request. Feature names are the union of the candidates' names in
//! order of first appearance, values the row-major matrix with NaN where a
//! candidate has no value (absent or `null`, which the API treats alike);
//! campaigns are sent once, in order of first appearance. The conversion
//! checks what JSON's types check and no more: the server validates the
//! rest, the same way for both front ends.

use oasis_wire::request::{ParseError, RequestCampaign, ScoreRequest, Surface};

use crate::v1;

/// Converts a JSON request body.
///
/// # Errors
/// [`ParseError`] naming the JSON path when the body is not JSON of the
/// request's shape.
///
/// ```
/// let body = br#"{"context": {"request_id": "r", "listener_id": "l", "session_id": "s",
///   "surface": "radio", "market": "SE", "timestamp_ms": 0},
///   "candidates": [{"id": "a", "relevance": 0.5, "features": {"p_skip": 0.1}},
///                  {"id": "b", "relevance": "high"}]}"#;
/// let err = oasis_proto::json::request(body).unwrap_err();
/// assert_eq!(err.path, "candidates[1].relevance");
/// ```
pub fn request(body: &[u8]) -> Result<v1::ScoreRequest, ParseError> {
    Ok(from_wire(&oasis_wire::request::from_slice(body)?))
}

/// Converts a parsed JSON request.
///
/// # Errors
/// [`ParseError`] naming the JSON path when a value has the wrong type.
pub fn from_value(v: &serde_json::Value) -> Result<v1::ScoreRequest, ParseError> {
    Ok(from_wire(&oasis_wire::request::from_value(v)?))
}

/// Converts a request read with the wire format's types. A column of
/// per-candidate values the request leaves out everywhere (artists, rights
/// holders, delivery counts, campaigns) is sent empty, which means "the
/// default for every candidate".
pub fn from_wire(r: &ScoreRequest<'_>) -> v1::ScoreRequest {
    let ctx = &r.context;
    let (ctx_names, ctx_values) = ctx
        .features
        .iter()
        .map(|(name, v)| (name.to_string(), v.unwrap_or(f64::NAN)))
        .unzip();
    let context = v1::Context {
        request_id: ctx.request_id.to_string(),
        listener_id: ctx.listener_id.to_string(),
        session_id: ctx.session_id.to_string(),
        surface: surface(ctx.surface) as i32,
        market: ctx.market.to_string(),
        timestamp_ms: ctx.timestamp_ms,
        seed: ctx.seed,
        feature_names: ctx_names,
        features: ctx_values,
        slate_size: ctx.slate_size,
    };
    let cands = &r.candidates;
    let (feature_names, features) = r.feature_matrix();
    let campaigns = r.campaigns();
    let any_artist = cands.iter().any(|c| !c.artist.is_empty());
    let any_holder = cands.iter().any(|c| !c.rights_holder.is_empty());
    let any_counter = cands
        .iter()
        .any(|c| c.impressions_24h.is_some() || c.session_promoted.is_some());
    // A column sent for some candidate is sent for all; else it is empty.
    fn column<T>(any: bool, values: impl Iterator<Item = T>) -> Vec<T> {
        if any { values.collect() } else { Vec::new() }
    }
    let k = v1::Candidates {
        ids: cands.iter().map(|c| c.id.to_string()).collect(),
        relevance: cands.iter().map(|c| c.relevance).collect(),
        artists: column(any_artist, cands.iter().map(|c| c.artist.to_string())),
        rights_holders: column(
            any_holder,
            cands.iter().map(|c| c.rights_holder.to_string()),
        ),
        impressions_24h: column(
            any_counter,
            cands.iter().map(|c| c.impressions_24h.unwrap_or(0)),
        ),
        session_promoted: column(
            any_counter,
            cands.iter().map(|c| c.session_promoted.unwrap_or(0)),
        ),
        campaign: column(!campaigns.first.is_empty(), campaigns.index.into_iter()),
        feature_names,
        features,
    };
    v1::ScoreRequest {
        route: r.route.as_deref().unwrap_or("").to_string(),
        context: Some(context),
        candidates: Some(k),
        campaigns: campaigns.first.into_iter().map(campaign).collect(),
        debug: r.debug,
        rights_holders: r
            .rights_holders
            .iter()
            .flatten()
            .map(|(id, h)| {
                (
                    id.to_string(),
                    v1::RightsHolder {
                        exposure_share_7d: h.exposure_share_7d,
                    },
                )
            })
            .collect(),
    }
}

fn campaign(c: &RequestCampaign<'_>) -> v1::Campaign {
    v1::Campaign {
        id: c.id.to_string(),
        start_ms: c.start_ms,
        end_ms: c.end_ms,
        surfaces: c
            .surfaces
            .iter()
            .flatten()
            .map(|s| surface(*s) as i32)
            .collect(),
        markets: c.markets.iter().map(|m| m.to_string()).collect(),
        delivery_target: c.delivery_target,
        delivered: c.delivered,
        expected_by_now: c.expected_by_now,
        pacing_integral: c.pacing_integral,
        pacing_last_error: c.pacing_last_error,
        pacing_updated_ms: c.pacing_updated_ms,
        commission_bps: c.commission_bps,
    }
}

/// The proto value of a contract surface (a test pins that every one has
/// one).
fn surface(s: Surface) -> v1::Surface {
    crate::surface_from_name(s.name()).unwrap_or(v1::Surface::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_surface_has_a_proto_value() {
        for s in Surface::ALL {
            assert_ne!(surface(s), v1::Surface::Unspecified, "{}", s.name());
            assert_eq!(crate::surface_name(surface(s)), Some(s.name()));
        }
    }

    #[test]
    fn the_request_is_converted_column_by_column() {
        let body = br#"{"route": "radio", "debug": true,
          "context": {"request_id": "r", "listener_id": "l", "session_id": "s",
            "surface": "daily_mix", "market": "SE", "timestamp_ms": 5, "seed": 9,
            "features": {"hour": 20, "skip": null}},
          "candidates": [
            {"id": "a", "relevance": 0.5, "features": {"p_skip": 0.1, "pop": null},
             "campaign": {"id": "c1", "start_ms": 0, "end_ms": 9, "delivery_target": 3,
                          "surfaces": ["radio"], "markets": ["SE"], "delivered": 1}},
            {"id": "b", "relevance": 0.4, "rights_holder": "h", "impressions_24h": 2,
             "features": {"pop": 3}},
            {"id": "c", "relevance": 0.3,
             "campaign": {"id": "c1", "start_ms": 0, "end_ms": 9, "delivery_target": 3}}],
          "rights_holders": {"h": {"exposure_share_7d": 0.25}}}"#;
        let m = request(body).unwrap();
        assert_eq!((m.route.as_str(), m.debug), ("radio", true));
        let ctx = m.context.unwrap();
        assert_eq!(ctx.surface, v1::Surface::DailyMix as i32);
        assert_eq!((ctx.seed, ctx.slate_size), (Some(9), None));
        assert_eq!(ctx.feature_names, ["hour", "skip"]);
        assert!(ctx.features[0] == 20.0 && ctx.features[1].is_nan());
        let k = m.candidates.unwrap();
        assert_eq!(k.ids, ["a", "b", "c"]);
        assert_eq!(k.feature_names, ["p_skip", "pop"]);
        let shown: Vec<Option<f64>> = k
            .features
            .iter()
            .map(|v| (!v.is_nan()).then_some(*v))
            .collect();
        assert_eq!(shown, [Some(0.1), None, None, Some(3.0), None, None]);
        assert!(k.artists.is_empty(), "no candidate names an artist");
        assert_eq!(k.rights_holders, ["", "h", ""]);
        assert_eq!(k.impressions_24h, [0, 2, 0]);
        assert_eq!(k.campaign, [0, -1, 0]);
        assert_eq!(m.campaigns.len(), 1, "a campaign is sent once");
        let c = &m.campaigns[0];
        assert_eq!(c.surfaces, [v1::Surface::Radio as i32]);
        assert_eq!((c.delivered, c.expected_by_now), (Some(1.0), None));
        assert_eq!(m.rights_holders["h"].exposure_share_7d, 0.25);
    }
}
