//! A JSON scoring request (the body of `POST /v1/score`) as the equivalent
//! gRPC [`ScoreRequest`](crate::v1::ScoreRequest).
//!
//! Feature names are the union of the candidates' names in order of first
//! appearance, values the row-major matrix with NaN where a candidate has no
//! value (absent or `null`, which the API treats alike); campaigns are sent
//! once, in order of first appearance. The conversion does not validate:
//! the server does, the same way for both front ends.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::v1;

/// Converts a JSON request body.
///
/// # Errors
/// A message when the body is not JSON or a value has the wrong JSON type.
pub fn request(body: &[u8]) -> Result<v1::ScoreRequest, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    from_value(&v)
}

/// Converts a parsed JSON request.
///
/// # Errors
/// A message when a value has the wrong JSON type.
pub fn from_value(v: &Value) -> Result<v1::ScoreRequest, String> {
    let obj = v.as_object().ok_or("the request is not an object")?;
    let ctx = obj
        .get("context")
        .and_then(Value::as_object)
        .ok_or("`context` is missing")?;
    let (ctx_names, ctx_values) = features(ctx.get("features"), "context.features")?;
    let context = v1::Context {
        request_id: string(ctx, "request_id")?,
        listener_id: string(ctx, "listener_id")?,
        session_id: string(ctx, "session_id")?,
        surface: surface(ctx.get("surface"))? as i32,
        market: string(ctx, "market")?,
        timestamp_ms: ctx
            .get("timestamp_ms")
            .and_then(Value::as_i64)
            .ok_or("`context.timestamp_ms` is missing")?,
        seed: ctx.get("seed").and_then(Value::as_u64),
        feature_names: ctx_names,
        features: ctx_values,
        slate_size: ctx
            .get("slate_size")
            .and_then(Value::as_u64)
            .map(|s| s.min(u32::MAX as u64) as u32),
    };
    let cands = obj
        .get("candidates")
        .and_then(Value::as_array)
        .ok_or("`candidates` is missing")?;
    let n = cands.len();
    let mut k = v1::Candidates::default();
    let mut names: Vec<String> = Vec::new();
    let mut name_index: HashMap<&str, usize> = HashMap::new();
    let mut campaigns: Vec<v1::Campaign> = Vec::new();
    let mut campaign_ids: HashMap<&str, i32> = HashMap::new();
    let (mut any_artist, mut any_holder, mut any_counter, mut any_campaign) =
        (false, false, false, false);
    for c in cands {
        let c = c.as_object().ok_or("a candidate is not an object")?;
        if let Some(Value::Object(f)) = c.get("features") {
            for name in f.keys() {
                if !name_index.contains_key(name.as_str()) {
                    name_index.insert(name, names.len());
                    names.push(name.clone());
                }
            }
        }
        any_artist |= c.contains_key("artist");
        any_holder |= c.contains_key("rights_holder");
        any_counter |= c.contains_key("impressions_24h") || c.contains_key("session_promoted");
        any_campaign |= c.get("campaign").is_some_and(|c| !c.is_null());
    }
    let width = names.len();
    k.features = vec![f64::NAN; n * width];
    for (i, c) in cands.iter().enumerate() {
        let c = c.as_object().ok_or("a candidate is not an object")?;
        k.ids.push(string(c, "id")?);
        k.relevance.push(
            c.get("relevance")
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("`candidates[{i}].relevance` is not a number"))?,
        );
        if any_artist {
            k.artists.push(opt_string(c, "artist"));
        }
        if any_holder {
            k.rights_holders.push(opt_string(c, "rights_holder"));
        }
        if any_counter {
            k.impressions_24h.push(opt_u32(c, "impressions_24h"));
            k.session_promoted.push(opt_u32(c, "session_promoted"));
        }
        if let Some(Value::Object(f)) = c.get("features") {
            for (name, v) in f {
                if let Some(x) = v.as_f64() {
                    k.features[i * width + name_index[name.as_str()]] = x;
                }
            }
        }
        if any_campaign {
            let index = match c.get("campaign") {
                Some(Value::Object(camp)) => {
                    let id = camp.get("id").and_then(Value::as_str).unwrap_or("");
                    match campaign_ids.get(id) {
                        Some(&j) => j,
                        None => {
                            let j = campaigns.len() as i32;
                            campaigns.push(campaign(camp)?);
                            campaign_ids.insert(id, j);
                            j
                        }
                    }
                }
                _ => -1,
            };
            k.campaign.push(index);
        }
    }
    k.feature_names = names;
    Ok(v1::ScoreRequest {
        route: obj
            .get("route")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        context: Some(context),
        candidates: Some(k),
        campaigns,
        debug: obj.get("debug").and_then(Value::as_bool).unwrap_or(false),
        rights_holders: match obj.get("rights_holders") {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(id, h)| {
                    let share = h.get("exposure_share_7d").and_then(Value::as_f64);
                    (
                        id.clone(),
                        v1::RightsHolder {
                            exposure_share_7d: share.unwrap_or(f64::NAN),
                        },
                    )
                })
                .collect(),
            _ => Default::default(),
        },
    })
}

fn campaign(c: &Map<String, Value>) -> Result<v1::Campaign, String> {
    let opt = |name: &str| c.get(name).and_then(Value::as_f64);
    let f = |name: &str| opt(name).unwrap_or(0.0);
    let surfaces = match c.get("surfaces") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|s| surface(Some(s)).map(|s| s as i32))
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    Ok(v1::Campaign {
        id: string(c, "id")?,
        start_ms: c.get("start_ms").and_then(Value::as_i64).unwrap_or(0),
        end_ms: c.get("end_ms").and_then(Value::as_i64).unwrap_or(0),
        surfaces,
        markets: match c.get("markets") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|m| m.as_str().unwrap_or("").to_string())
                .collect(),
            _ => Vec::new(),
        },
        delivery_target: f("delivery_target"),
        delivered: opt("delivered"),
        expected_by_now: opt("expected_by_now"),
        pacing_integral: opt("pacing_integral"),
        pacing_last_error: opt("pacing_last_error"),
        pacing_updated_ms: c.get("pacing_updated_ms").and_then(Value::as_i64),
        commission_bps: c.get("commission_bps").and_then(Value::as_u64).unwrap_or(0) as u32,
    })
}

fn features(v: Option<&Value>, at: &str) -> Result<(Vec<String>, Vec<f64>), String> {
    match v {
        None | Some(Value::Null) => Ok((Vec::new(), Vec::new())),
        Some(Value::Object(m)) => Ok(m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(f64::NAN)))
            .unzip()),
        Some(_) => Err(format!("`{at}` is not an object")),
    }
}

fn surface(v: Option<&Value>) -> Result<v1::Surface, String> {
    let name = v
        .and_then(Value::as_str)
        .ok_or("a surface is not a string")?;
    crate::surface_from_name(name).ok_or_else(|| format!("unknown surface {name:?}"))
}

fn string(m: &Map<String, Value>, key: &str) -> Result<String, String> {
    m.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("`{key}` is missing or not a string"))
}

fn opt_string(m: &Map<String, Value>, key: &str) -> String {
    m.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn opt_u32(m: &Map<String, Value>, key: &str) -> u32 {
    m.get(key).and_then(Value::as_u64).unwrap_or(0) as u32
}
