//! From the caller's row-oriented JSON to the contract's columnar batch.
//!
//! A leaf converter: it takes a [`ValidRequest`] (markets and campaigns
//! already packed by validation) and the columns a policy declared, and
//! depends on nothing but the bindings. Only the declared columns (required,
//! then optional features; context features) are copied: policies read a few
//! features, and the flat `list<f64>` is lifted into the guest as one bulk
//! copy. Candidate ids stay on the host; results come back aligned by index.
//! Artist and rights-holder ids are small integer keys (interned once per
//! request, at validation), campaigns shared by several candidates are sent
//! once, and the rights holders' exposure is a table indexed by holder key.

use crate::bindings::{WitCandidates, WitContext, WitHolders, WitRequest, wit_surface};
use crate::request::{Features, ValidRequest};

/// Builds the columnar request for a policy with the given candidate feature
/// `columns` and `context_features`.
pub fn batch(req: &ValidRequest, columns: &[String], context_features: &[String]) -> WitRequest {
    let n = req.candidates.len();
    let width = columns.len();
    let mut k = WitCandidates {
        count: n as u32,
        relevance: Vec::with_capacity(n),
        feature_names: columns.to_vec(),
        features: Vec::new(),
        campaign: req.campaign_index().to_vec(),
        artist: req.artist_keys().to_vec(),
        rights_holder: req.holder_keys().to_vec(),
        impressions_24h: req.impressions_24h().to_vec(),
        session_promoted: req.session_promoted().to_vec(),
    };

    // Decoded straight into columns (JSON fast path): a copy of the matrix,
    // or a gather of the columns this policy declared. The candidates then
    // carry no features of their own.
    let from_columns = req.feature_columns().and_then(|m| m.select(columns, n));
    debug_assert!(
        req.feature_columns().is_none() || from_columns.is_some(),
        "a request decoded into columns is batched only for the policies it was decoded for"
    );
    k.features = from_columns.unwrap_or_else(|| vec![f64::NAN; n * width]);
    // Packed rows (gRPC) share their names: each column's position among
    // them is looked up once per request, not once per candidate.
    let mut packed: Option<(&[String], Vec<Option<usize>>)> = None;
    for (i, c) in req.candidates.iter().enumerate() {
        k.relevance.push(c.relevance);
        if c.features.is_empty() {
            continue;
        }
        let row = &mut k.features[i * width..(i + 1) * width];
        match &c.features {
            Features::Named(pairs) => {
                for (name, value) in pairs {
                    if let (Some(j), Some(v)) = (columns.iter().position(|col| col == name), value)
                    {
                        row[j] = *v;
                    }
                }
            }
            Features::Row { names, values } => {
                if !packed
                    .as_ref()
                    .is_some_and(|(n, _)| std::ptr::eq(*n, *names))
                {
                    let p = columns
                        .iter()
                        .map(|col| names.iter().position(|n| n == col))
                        .collect();
                    packed = Some((names, p));
                }
                let positions = packed.as_ref().map_or(&[][..], |(_, p)| p);
                for (j, p) in positions.iter().enumerate() {
                    if let Some(p) = p {
                        row[j] = values[*p];
                    }
                }
            }
        }
    }
    let ctx = &req.context;
    let mut cf = vec![f64::NAN; context_features.len()];
    for (name, value) in ctx.features.iter() {
        if let (Some(j), Some(v)) = (context_features.iter().position(|f| f == name), value) {
            cf[j] = v;
        }
    }
    WitRequest {
        context: WitContext {
            request_id: ctx.request_id.to_string(),
            listener_id: ctx.listener_id.to_string(),
            session_id: ctx.session_id.to_string(),
            surface: wit_surface(ctx.surface),
            market: req.market(),
            timestamp_ms: ctx.timestamp_ms,
            seed: req.seed(),
            feature_names: context_features.to_vec(),
            features: cf,
            slate_size: req.slate_size(),
        },
        candidates: k,
        campaigns: req.campaigns().to_vec(),
        holders: WitHolders {
            count: req.holder_count() as u32,
            exposure_share_7d: req.exposure_share_7d().to_vec(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{WitSurface, WitSurfaceSet};
    use crate::request::{Validate, market_code, parse};

    #[test]
    fn builds_only_declared_columns_and_interns_keys() {
        let body = br#"{"context": {"request_id": "r", "listener_id": "u", "session_id": "s",
            "surface": "autoplay", "market": "NO", "timestamp_ms": 5, "seed": 9,
            "features": {"local_hour": 21, "unused": 1}, "slate_size": 3},
          "rights_holders": {"M": {"exposure_share_7d": 0.25}, "absent": {"exposure_share_7d": 1}},
          "candidates": [
            {"id": "a", "relevance": 0.9, "artist": "x", "rights_holder": "L",
             "features": {"p_skip": 0.1, "noise": 3, "pop": 7},
             "campaign": {"id": "c9", "start_ms": 0, "end_ms": 10, "delivery_target": 5, "markets": ["no"]}},
            {"id": "b", "relevance": 0.8, "artist": "y", "rights_holder": "L",
             "features": {"pop": 2}},
            {"id": "c", "relevance": 0.7, "artist": "x", "rights_holder": "M",
             "campaign": {"id": "c9", "start_ms": 0, "end_ms": 10, "delivery_target": 5, "markets": ["no"]}},
            {"id": "d", "relevance": 0.6},
            {"id": "e", "relevance": 0.5}
          ]}"#;
        let req = parse(body).unwrap().validate(10).unwrap();
        let cols = vec!["p_skip".to_string(), "pop".to_string()];
        let w = batch(&req, &cols, &["local_hour".to_string()]);
        assert_eq!(w.candidates.count, 5);
        assert_eq!(w.candidates.feature_names, cols);
        let f = &w.candidates.features;
        assert_eq!((f[0], f[1]), (0.1, 7.0));
        assert!(f[2].is_nan() && f[3] == 2.0);
        // Missing artists and holders are each their own: never one shared key.
        assert_eq!(w.candidates.artist, vec![0, 1, 0, 2, 3]);
        assert_eq!(w.candidates.rights_holder, vec![0, 0, 1, 2, 3]);
        assert_eq!(w.candidates.campaign, vec![0, -1, 0, -1, -1]);
        assert_eq!(w.campaigns.len(), 1, "shared campaign sent once");
        assert_eq!(w.campaigns[0].markets, vec![market_code("NO").unwrap()]);
        assert!(!w.campaigns[0].surfaces.contains(WitSurfaceSet::OTHER));
        assert_eq!(w.context.features, vec![21.0]);
        assert_eq!(w.context.slate_size, 3);
        // One exposure entry per holder key; unknown ones are NaN.
        assert_eq!(w.holders.count, 4);
        let e = &w.holders.exposure_share_7d;
        assert!(e[0].is_nan() && e[1] == 0.25 && e[2].is_nan() && e[3].is_nan());
        // No expected_by_now sent: the linear schedule at timestamp 5 of [0, 10).
        assert_eq!(w.campaigns[0].expected_by_now, 2.5);
        assert_eq!(w.campaigns[0].pacing_updated_ms, 0);
        assert_eq!(
            (w.context.seed, w.context.surface),
            (9, WitSurface::Autoplay)
        );
    }
}
