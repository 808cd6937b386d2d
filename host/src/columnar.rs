//! From the caller's row-oriented JSON to the contract's columnar batch.
//!
//! Only the columns a policy declares (required, then optional features; its
//! context features) are copied: policies read a few features, and the flat
//! `list<f64>` is lifted into the guest as one bulk copy. Candidate ids stay
//! on the host; results come back aligned by index. Artist and rights-holder
//! ids become small integer keys, and campaigns shared by several candidates
//! are sent once.

use std::collections::HashMap;

use crate::bindings::{
    WitCampaign, WitCandidates, WitContext, WitRequest, WitSurface, WitSurfaceSet,
};
use crate::policy::PolicyInfo;
use crate::request::{ScoreRequest, Surface, market_code};

/// The candidate feature columns a policy receives, in order.
pub fn feature_columns(info: &PolicyInfo) -> Vec<String> {
    let mut cols = info.required_features.clone();
    for f in &info.optional_features {
        if !cols.contains(f) {
            cols.push(f.clone());
        }
    }
    cols
}

/// Builds the columnar request for a policy with the given feature columns.
/// `req` must have passed [`ScoreRequest::validate`].
pub fn to_wit(req: &ScoreRequest, columns: &[String], context_features: &[String]) -> WitRequest {
    let n = req.candidates.len();
    let width = columns.len();
    let mut k = WitCandidates {
        count: n as u32,
        relevance: Vec::with_capacity(n),
        feature_names: columns.to_vec(),
        features: vec![f64::NAN; n * width],
        campaign: Vec::with_capacity(n),
        artist: Vec::with_capacity(n),
        rights_holder: Vec::with_capacity(n),
        impressions_last_day: Vec::with_capacity(n),
        session_promoted: Vec::with_capacity(n),
    };
    let mut campaigns: Vec<WitCampaign> = Vec::new();
    let mut campaign_index: HashMap<&str, i32> = HashMap::new();
    let mut artists: Keys = (HashMap::with_capacity(n), 0);
    let mut holders: Keys = (HashMap::with_capacity(64), 0);

    for (i, c) in req.candidates.iter().enumerate() {
        k.relevance.push(c.relevance);
        let row = &mut k.features[i * width..(i + 1) * width];
        for (name, value) in &c.features.0 {
            if let (Some(j), Some(v)) = (columns.iter().position(|col| col == name), value) {
                row[j] = *v;
            }
        }
        k.artist.push(intern(&mut artists, &c.artist));
        k.rights_holder.push(intern(&mut holders, &c.rights_holder));
        k.impressions_last_day.push(c.impressions_24h);
        k.session_promoted.push(c.session_promoted);
        let camp = c.campaign.as_ref().map(|camp| {
            *campaign_index.entry(&camp.id).or_insert_with(|| {
                campaigns.push(WitCampaign {
                    key: campaigns.len() as u32,
                    start_ms: camp.start_ms,
                    end_ms: camp.end_ms,
                    surfaces: match &camp.surfaces {
                        Some(list) => list
                            .iter()
                            .fold(WitSurfaceSet::empty(), |s, x| s | surface_bit(*x)),
                        None => WitSurfaceSet::all() & !WitSurfaceSet::OTHER,
                    },
                    markets: camp.markets.iter().filter_map(|m| market_code(m)).collect(),
                    delivery_target: camp.delivery_target,
                    delivered: camp.delivered,
                    expected_by_now: camp.expected_by_now,
                    pacing_integral: camp.pacing_integral,
                    pacing_last_error: camp.pacing_last_error,
                    commission_bps: camp.commission_bps,
                });
                campaigns.len() as i32 - 1
            })
        });
        k.campaign.push(camp.unwrap_or(-1));
    }

    let ctx = &req.context;
    let mut cf = vec![f64::NAN; context_features.len()];
    for (name, value) in &ctx.features.0 {
        if let (Some(j), Some(v)) = (context_features.iter().position(|f| f == name), value) {
            cf[j] = *v;
        }
    }
    WitRequest {
        context: WitContext {
            request_id: ctx.request_id.to_string(),
            listener_id: ctx.listener_id.to_string(),
            session_id: ctx.session_id.to_string(),
            surface: wit_surface(ctx.surface),
            market: market_code(&ctx.market).unwrap_or(0),
            timestamp_ms: ctx.timestamp_ms,
            seed: req.seed(),
            feature_names: context_features.to_vec(),
            features: cf,
        },
        candidates: k,
        campaigns,
    }
}

/// Small integer key of `id`, in order of first appearance. An empty id
/// (unknown artist or holder) gets a key of its own, so that unknown tracks
/// are never grouped together by diversity or fairness rules.
fn intern<'a>(keys: &mut Keys<'a>, id: &'a str) -> u32 {
    let next = keys.1;
    if id.is_empty() {
        keys.1 += 1;
        return next;
    }
    let key = *keys.0.entry(id).or_insert(next);
    if key == next {
        keys.1 += 1;
    }
    key
}

/// Interned ids and the next free key.
type Keys<'a> = (HashMap<&'a str, u32>, u32);

fn wit_surface(s: Surface) -> WitSurface {
    match s {
        Surface::Radio => WitSurface::Radio,
        Surface::Autoplay => WitSurface::Autoplay,
        Surface::DailyMix => WitSurface::DailyMix,
        Surface::ArtistMix => WitSurface::ArtistMix,
        Surface::MoodMix => WitSurface::MoodMix,
        Surface::DecadeMix => WitSurface::DecadeMix,
        Surface::GenreMix => WitSurface::GenreMix,
        Surface::Other => WitSurface::Other,
    }
}

fn surface_bit(s: Surface) -> WitSurfaceSet {
    match s {
        Surface::Radio => WitSurfaceSet::RADIO,
        Surface::Autoplay => WitSurfaceSet::AUTOPLAY,
        Surface::DailyMix => WitSurfaceSet::DAILY_MIX,
        Surface::ArtistMix => WitSurfaceSet::ARTIST_MIX,
        Surface::MoodMix => WitSurfaceSet::MOOD_MIX,
        Surface::DecadeMix => WitSurfaceSet::DECADE_MIX,
        Surface::GenreMix => WitSurfaceSet::GENRE_MIX,
        Surface::Other => WitSurfaceSet::OTHER,
    }
}

/// A small synthetic request used to smoke-test a policy at load: 8
/// candidates with every declared feature set to plausible values, two of
/// them in an active, on-schedule campaign.
pub fn smoke_request(info: &PolicyInfo) -> WitRequest {
    const NOW: i64 = 1_781_524_800_000;
    let columns = feature_columns(info);
    let n = 8usize;
    let features = (0..n)
        .flat_map(|i| columns.iter().map(move |_| 0.1 + 0.1 * i as f64))
        .collect();
    WitRequest {
        context: WitContext {
            request_id: "oasis-smoke-test".into(),
            listener_id: "smoke-listener".into(),
            session_id: "smoke-session".into(),
            surface: WitSurface::Radio,
            market: market_code("SE").unwrap_or(0),
            timestamp_ms: NOW,
            seed: 1,
            feature_names: info.context_features.clone(),
            features: vec![0.5; info.context_features.len()],
        },
        candidates: WitCandidates {
            count: n as u32,
            relevance: (0..n).map(|i| 1.0 - 0.1 * i as f64).collect(),
            feature_names: columns,
            features,
            campaign: (0..n as i32)
                .map(|i| if i % 4 == 1 { 0 } else { -1 })
                .collect(),
            artist: (0..n as u32).collect(),
            rights_holder: (0..n as u32).map(|i| i % 3).collect(),
            impressions_last_day: vec![0; n],
            session_promoted: vec![0; n],
        },
        campaigns: vec![WitCampaign {
            key: 0,
            start_ms: NOW - 86_400_000,
            end_ms: NOW + 86_400_000,
            surfaces: WitSurfaceSet::all(),
            markets: Vec::new(),
            delivery_target: 1000.0,
            delivered: 500.0,
            expected_by_now: 500.0,
            pacing_integral: 0.0,
            pacing_last_error: 0.0,
            commission_bps: 3000,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse;

    #[test]
    fn builds_only_declared_columns_and_interns_keys() {
        let body = br#"{"context": {"request_id": "r", "listener_id": "u", "session_id": "s",
            "surface": "autoplay", "market": "NO", "timestamp_ms": 5, "seed": 9,
            "features": {"local_hour": 21, "unused": 1}},
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
        let req = parse(body).unwrap();
        req.validate(10).unwrap();
        let cols = vec!["p_skip".to_string(), "pop".to_string()];
        let w = to_wit(&req, &cols, &["local_hour".to_string()]);
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
        assert_eq!(
            (w.context.seed, w.context.surface),
            (9, WitSurface::Autoplay)
        );
    }
}
