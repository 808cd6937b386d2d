//! The gRPC request (`oasis.v1.ScoreRequest`, columns with packed numbers)
//! as the [`ScoreRequest`] the JSON parser produces, borrowing its strings
//! and feature rows from the message. What JSON's types check (required
//! fields, known surfaces, at most 256 features) is checked here and
//! reported as [`RequestError::Malformed`]; what the contract checks is left
//! to [`Validate::validate`](super::Validate::validate), the one validation of both front ends.
//!
//! Field paths are the JSON API's (`candidates[3].relevance`), so an invalid
//! request names the same field through both; a column whose length is wrong
//! is named by its proto field (`candidates.relevance`).
//!
//! [`validate`] is what the server calls (issue 21): it checks the message
//! where it is columnar (ids and relevance as columns, the feature names
//! once and the feature matrix as one slice, each campaign of the message
//! once, each distinct artist and holder once) and packs the
//! [`ValidRequest`] directly, the feature rows borrowed from the message.
//! Anything it does not accept goes through [`from_proto`] and
//! [`Validate::validate`](super::Validate::validate), so an invalid message
//! gets exactly the error it always got.

use std::borrow::Cow;

use oasis_proto::v1;

use super::columns::{self, CandidateColumns, Columnar};
use super::{
    Features, MAX_FEATURES, RequestCampaign, RequestCandidate, RequestContext, RequestError,
    RequestHolder, ScoreRequest, Surface, ValidRequest, Validate,
};

fn malformed(path: impl Into<String>, message: impl Into<String>) -> RequestError {
    RequestError::Malformed {
        path: path.into(),
        message: message.into(),
    }
}

fn surface(path: impl Fn() -> String, value: i32) -> Result<Surface, RequestError> {
    match v1::Surface::try_from(value) {
        Ok(s) if s != v1::Surface::Unspecified => Ok(Surface::from_index((value - 1) as u8)
            .ok_or_else(|| malformed(path(), format!("unknown surface {value}")))?),
        _ => Err(malformed(
            path(),
            format!(
                "unknown surface {value}, expected one of {}",
                Surface::NAMES.join(", ")
            ),
        )),
    }
}

/// A per-candidate column: `n` entries, or none (every candidate gets the
/// default).
fn column<'m, T>(values: &'m [T], n: usize, path: &str) -> Result<Option<&'m [T]>, RequestError> {
    match values.len() {
        0 => Ok(None),
        len if len == n => Ok(Some(values)),
        len => Err(malformed(
            path,
            format!("has {len} entries for {n} candidates (one per candidate, or none)"),
        )),
    }
}

fn features<'m>(
    names: &'m [String],
    values: &'m [f64],
    path: &str,
) -> Result<Features<'m>, RequestError> {
    if names.len() > MAX_FEATURES {
        return Err(malformed(
            path,
            format!("more than {MAX_FEATURES} features"),
        ));
    }
    Ok(Features::Row { names, values })
}

/// Converts a gRPC request.
///
/// # Errors
/// [`RequestError::Malformed`] for a missing context, an unknown surface,
/// more than 256 features, a column of the wrong length or a campaign index
/// out of range.
pub fn from_proto(msg: &v1::ScoreRequest) -> Result<ScoreRequest<'_>, RequestError> {
    let ctx = msg
        .context
        .as_ref()
        .ok_or_else(|| malformed("context", "missing field `context`"))?;
    let context = context(ctx)?;
    let campaigns = msg
        .campaigns
        .iter()
        .enumerate()
        .map(|(j, c)| campaign(j, c))
        .collect::<Result<Vec<_>, RequestError>>()?;
    Ok(ScoreRequest {
        route: route(msg),
        context,
        candidates: candidates(msg.candidates.as_ref(), &campaigns)?,
        rights_holders: rights_holders(msg),
        debug: msg.debug,
    })
}

/// The message's route, `None` for the default.
pub fn route(msg: &v1::ScoreRequest) -> Option<Cow<'_, str>> {
    (!msg.route.is_empty()).then(|| Cow::Borrowed(msg.route.as_str()))
}

fn rights_holders(
    msg: &v1::ScoreRequest,
) -> Option<std::collections::HashMap<Cow<'_, str>, RequestHolder>> {
    (!msg.rights_holders.is_empty()).then(|| {
        msg.rights_holders
            .iter()
            .map(|(id, h)| {
                (
                    Cow::Borrowed(id.as_str()),
                    RequestHolder {
                        exposure_share_7d: h.exposure_share_7d,
                    },
                )
            })
            .collect()
    })
}

/// Decodes and validates a gRPC request: [`from_proto`] then
/// [`Validate::validate`], but checked on the message's columns and packed
/// straight into the [`ValidRequest`] (the feature rows borrowed). Gives
/// exactly what the two steps give, errors included: a message the direct
/// path does not accept is handed to them.
///
/// # Errors
/// As [`from_proto`] and [`Validate::validate`].
pub fn validate(
    msg: &v1::ScoreRequest,
    max_candidates: usize,
) -> Result<ValidRequest<'_>, RequestError> {
    match direct(msg, max_candidates) {
        Some(valid) => Ok(valid),
        None => from_proto(msg)?.validate(max_candidates),
    }
}

/// Decodes and validates a gRPC request from its bytes, as the server does:
/// read in place and checked on its columns ([`direct_view`]), else
/// decoded by prost, converted and validated ([`from_proto`],
/// [`Validate::validate`]), which names the error.
///
/// # Errors
/// As [`ProtoMessage::message`](super::proto_view::ProtoMessage::message),
/// [`from_proto`] and [`Validate::validate`].
///
/// # Examples
/// ```
/// use oasis::request::{packed, proto_view::ProtoMessage};
/// use oasis_proto::prost::Message;
/// let body = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/request.json")).unwrap();
/// let bytes = oasis_proto::json::request(&body).unwrap().encode_to_vec();
/// let msg = ProtoMessage::new(&bytes);
/// let req = packed::validate_message(&msg, 2000).unwrap();
/// assert!(msg.view().is_some(), "read in place");
/// assert_eq!(req.request().candidates.len(), 300);
/// ```
pub fn validate_message<'a>(
    msg: &'a super::proto_view::ProtoMessage<'_>,
    max_candidates: usize,
) -> Result<ValidRequest<'a>, RequestError> {
    if let Some(valid) = msg.view().and_then(|v| direct_view(v, max_candidates)) {
        return Ok(valid);
    }
    from_proto(msg.message()?)?.validate(max_candidates)
}

/// The direct path of [`validate`]: `None` on anything the two steps might
/// refuse (they then name the error). The checks are
/// [`columns::validate`](super::columns::validate)'s, shared with replay's
/// Parquet rows.
pub fn direct(msg: &v1::ScoreRequest, max_candidates: usize) -> Option<ValidRequest<'_>> {
    let k = msg.candidates.as_ref().unwrap_or(&EMPTY);
    direct_parts(
        Parts {
            route: route(msg),
            context: msg.context.as_ref()?,
            ids: &k.ids,
            relevance: &k.relevance,
            artists: &k.artists,
            holders: &k.rights_holders,
            impressions: &k.impressions_24h,
            promoted: &k.session_promoted,
            campaign: &k.campaign,
            feature_names: &k.feature_names,
            features: &k.features,
            campaigns: &msg.campaigns,
            rights_holders: rights_holders(msg),
            debug: msg.debug,
        },
        max_candidates,
    )
}

/// [`direct`] on a message read in place ([`super::proto_view`]): the
/// server's path. The view's strings are borrowed from the message bytes.
pub fn direct_view<'v>(
    view: &'v super::proto_view::MessageView<'_>,
    max_candidates: usize,
) -> Option<ValidRequest<'v>> {
    let k = &view.candidates;
    direct_parts(
        Parts {
            route: view.route().map(Cow::Borrowed),
            context: view.context.as_ref()?,
            ids: &k.ids,
            relevance: &k.relevance,
            artists: &k.artists,
            holders: &k.rights_holders,
            impressions: &k.impressions_24h,
            promoted: &k.session_promoted,
            campaign: &k.campaign,
            feature_names: &k.feature_names,
            features: &k.features,
            campaigns: &view.campaigns,
            rights_holders: (!view.rights_holders.is_empty()).then(|| {
                view.rights_holders
                    .iter()
                    .map(|(id, h)| {
                        (
                            Cow::Borrowed(*id),
                            RequestHolder {
                                exposure_share_7d: h.exposure_share_7d,
                            },
                        )
                    })
                    .collect()
            }),
            debug: view.debug,
        },
        max_candidates,
    )
}

/// The fields of a `ScoreRequest`, however it was read; strings `S` are
/// owned by prost's message or borrowed by the view.
struct Parts<'m, S> {
    route: Option<Cow<'m, str>>,
    context: &'m v1::Context,
    ids: &'m [S],
    relevance: &'m [f64],
    artists: &'m [S],
    holders: &'m [S],
    impressions: &'m [u32],
    promoted: &'m [u32],
    campaign: &'m [i32],
    feature_names: &'m [String],
    features: &'m [f64],
    campaigns: &'m [v1::Campaign],
    rights_holders: Option<std::collections::HashMap<Cow<'m, str>, RequestHolder>>,
    debug: bool,
}

fn direct_parts<'m, S: AsRef<str>>(
    p: Parts<'m, S>,
    max_candidates: usize,
) -> Option<ValidRequest<'m>> {
    let context = context(p.context).ok()?;
    let n = p.ids.len();
    let relevance = column(p.relevance, n, "").ok()?;
    if relevance.is_none() && n > 0 {
        return None;
    }
    let candidates = MessageColumns {
        ids: p.ids,
        relevance: relevance.unwrap_or_default(),
        artists: column(p.artists, n, "").ok()?,
        holders: column(p.holders, n, "").ok()?,
        impressions: column(p.impressions, n, "").ok()?,
        promoted: column(p.promoted, n, "").ok()?,
        campaign: column(p.campaign, n, "").ok()?,
        feature_names: p.feature_names,
        features: p.features,
    };
    // Every campaign of the message converts (an unknown surface in one no
    // candidate uses is still an error of the message).
    let campaigns = p
        .campaigns
        .iter()
        .enumerate()
        .map(|(j, c)| self::campaign(j, c))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    columns::validate(
        Columnar {
            route: p.route,
            context,
            candidates,
            campaigns,
            rights_holders: p.rights_holders,
            debug: p.debug,
        },
        max_candidates,
    )
}

/// The message's candidate columns, each checked for length (an absent
/// optional column gives every candidate the default).
struct MessageColumns<'m, S> {
    ids: &'m [S],
    relevance: &'m [f64],
    artists: Option<&'m [S]>,
    holders: Option<&'m [S]>,
    impressions: Option<&'m [u32]>,
    promoted: Option<&'m [u32]>,
    campaign: Option<&'m [i32]>,
    feature_names: &'m [String],
    features: &'m [f64],
}

impl<'m, S: AsRef<str>> CandidateColumns<'m> for MessageColumns<'m, S> {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn id(&self, i: usize) -> &'m str {
        self.ids[i].as_ref()
    }
    fn relevance(&self, i: usize) -> f64 {
        self.relevance[i]
    }
    fn artist(&self, i: usize) -> &'m str {
        self.artists.map_or("", |a| a[i].as_ref())
    }
    fn rights_holder(&self, i: usize) -> &'m str {
        self.holders.map_or("", |h| h[i].as_ref())
    }
    fn impressions_24h(&self, i: usize) -> Option<u32> {
        self.impressions.map(|c| c[i])
    }
    fn session_promoted(&self, i: usize) -> Option<u32> {
        self.promoted.map(|c| c[i])
    }
    fn campaign(&self, i: usize) -> i64 {
        self.campaign.map_or(-1, |c| i64::from(c[i]))
    }
    fn features(&self) -> (&'m [String], &'m [f64]) {
        (self.feature_names, self.features)
    }
}

/// The listening context, strings borrowed.
fn context(ctx: &v1::Context) -> Result<RequestContext<'_>, RequestError> {
    if ctx.features.len() != ctx.feature_names.len() {
        return Err(malformed(
            "context.features",
            format!(
                "has {} values for {} feature names",
                ctx.features.len(),
                ctx.feature_names.len()
            ),
        ));
    }
    Ok(RequestContext {
        request_id: Cow::Borrowed(&ctx.request_id),
        listener_id: Cow::Borrowed(&ctx.listener_id),
        session_id: Cow::Borrowed(&ctx.session_id),
        surface: surface(|| "context.surface".into(), ctx.surface)?,
        market: Cow::Borrowed(&ctx.market),
        timestamp_ms: ctx.timestamp_ms,
        seed: ctx.seed,
        features: features(&ctx.feature_names, &ctx.features, "context.feature_names")?,
        slate_size: ctx.slate_size,
    })
}

/// Campaign `j` of the message. Each is converted once; candidates share it
/// by copy (validation then packs it once again, as for JSON).
fn campaign(j: usize, c: &v1::Campaign) -> Result<RequestCampaign<'_>, RequestError> {
    let surfaces = if c.surfaces.is_empty() {
        None
    } else {
        Some(
            c.surfaces
                .iter()
                .enumerate()
                .map(|(s, v)| surface(|| format!("campaigns[{j}].surfaces[{s}]"), *v))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    Ok(RequestCampaign {
        id: Cow::Borrowed(&c.id),
        start_ms: c.start_ms,
        end_ms: c.end_ms,
        surfaces,
        markets: c
            .markets
            .iter()
            .map(|m| Cow::Borrowed(m.as_str()))
            .collect(),
        delivery_target: c.delivery_target,
        delivered: c.delivered,
        expected_by_now: c.expected_by_now,
        pacing_integral: c.pacing_integral,
        pacing_last_error: c.pacing_last_error,
        pacing_updated_ms: c.pacing_updated_ms,
        commission_bps: c.commission_bps,
    })
}

/// The columns of a message without candidates.
static EMPTY: v1::Candidates = v1::Candidates {
    ids: Vec::new(),
    relevance: Vec::new(),
    artists: Vec::new(),
    rights_holders: Vec::new(),
    impressions_24h: Vec::new(),
    session_promoted: Vec::new(),
    campaign: Vec::new(),
    feature_names: Vec::new(),
    features: Vec::new(),
};

/// The candidate columns as rows: every column checked for length, feature
/// rows borrowed, campaign indexes resolved into `campaigns`.
fn candidates<'m>(
    k: Option<&'m v1::Candidates>,
    campaigns: &[RequestCampaign<'m>],
) -> Result<Vec<RequestCandidate<'m>>, RequestError> {
    let k = k.unwrap_or(&EMPTY);
    let n = k.ids.len();
    let relevance = column(&k.relevance, n, "candidates.relevance")?;
    if relevance.is_none() && n > 0 {
        return Err(malformed(
            "candidates.relevance",
            format!("has 0 entries for {n} candidates"),
        ));
    }
    let artists = column(&k.artists, n, "candidates.artists")?;
    let holders = column(&k.rights_holders, n, "candidates.rights_holders")?;
    let impressions = column(&k.impressions_24h, n, "candidates.impressions_24h")?;
    let promoted = column(&k.session_promoted, n, "candidates.session_promoted")?;
    let campaign = column(&k.campaign, n, "candidates.campaign")?;
    let width = k.feature_names.len();
    if width > MAX_FEATURES {
        return Err(malformed(
            "candidates.feature_names",
            format!("more than {MAX_FEATURES} features"),
        ));
    }
    if k.features.len() != n * width {
        return Err(malformed(
            "candidates.features",
            format!(
                "has {} values for {n} candidates x {width} feature names (row-major)",
                k.features.len()
            ),
        ));
    }
    let mut candidates = Vec::with_capacity(n);
    for i in 0..n {
        let camp = match campaign.map_or(-1, |c| c[i]) {
            -1 => None,
            j if j >= 0 && (j as usize) < campaigns.len() => {
                Some(Box::new(campaigns[j as usize].clone()))
            }
            j => {
                return Err(malformed(
                    format!("candidates[{i}].campaign"),
                    format!(
                        "campaign index {j} is out of range ({} campaigns; -1 = none)",
                        campaigns.len()
                    ),
                ));
            }
        };
        candidates.push(RequestCandidate {
            id: Cow::Borrowed(&k.ids[i]),
            relevance: relevance.map_or(0.0, |r| r[i]),
            artist: Cow::Borrowed(artists.map_or("", |a| &a[i])),
            rights_holder: Cow::Borrowed(holders.map_or("", |h| &h[i])),
            impressions_24h: impressions.map(|c| c[i]),
            session_promoted: promoted.map(|c| c[i]),
            campaign: camp,
            features: Features::Row {
                names: &k.feature_names,
                values: &k.features[i * width..(i + 1) * width],
            },
        });
    }
    Ok(candidates)
}

#[cfg(test)]
mod tests {
    use super::super::Validate;
    use super::*;

    const GOOD: &str = r#"{
        "route": "radio",
        "context": {"request_id": "r1", "listener_id": "u1", "session_id": "s1",
                    "surface": "daily_mix", "market": "se", "timestamp_ms": 1000, "seed": 7,
                    "features": {"local_hour": 20, "skip_rate": null}},
        "candidates": [
            {"id": "t1", "relevance": 0.5, "artist": "a1", "rights_holder": "h1",
             "features": {"p_skip": 0.2, "pop": 3},
             "campaign": {"id": "c1", "start_ms": 0, "end_ms": 2000, "delivery_target": 10,
                          "markets": ["SE"], "surfaces": ["radio", "daily_mix"]}},
            {"id": "t2", "relevance": 0.4, "features": {"pop": 1}},
            {"id": "t3", "relevance": 0.3, "impressions_24h": 2,
             "campaign": {"id": "c1", "start_ms": 0, "end_ms": 2000, "delivery_target": 10,
                          "markets": ["SE"], "surfaces": ["radio", "daily_mix"]}}
        ]}"#;

    fn proto(body: &str) -> v1::ScoreRequest {
        oasis_proto::json::request(body.as_bytes()).unwrap()
    }

    #[test]
    fn the_same_request_validates_to_the_same_columns_through_both() {
        let msg = proto(GOOD);
        let from_grpc = from_proto(&msg).unwrap().validate(10).unwrap();
        let from_json = super::super::parse(GOOD.as_bytes())
            .unwrap()
            .validate(10)
            .unwrap();
        assert_eq!(
            format!("{:?}", from_grpc.campaigns()),
            format!("{:?}", from_json.campaigns())
        );
        assert_eq!(from_grpc.campaign_index(), from_json.campaign_index());
        assert_eq!(
            (from_grpc.market(), from_grpc.seed()),
            (from_json.market(), from_json.seed())
        );
        let cols = [
            "pop".to_string(),
            "p_skip".to_string(),
            "absent".to_string(),
        ];
        let ctx = ["local_hour".to_string(), "skip_rate".to_string()];
        let a = crate::columnar::batch(&from_grpc, &cols, &ctx);
        let b = crate::columnar::batch(&from_json, &cols, &ctx);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        // Re-encoded as JSON (what the decision log keeps), it parses to the
        // same batch again.
        let json = serde_json::to_vec(&*from_grpc).unwrap();
        let again = super::super::parse(&json).unwrap().validate(10).unwrap();
        let c = crate::columnar::batch(&again, &cols, &ctx);
        assert_eq!(format!("{a:?}"), format!("{c:?}"));
        assert_eq!(again.route.as_deref(), Some("radio"));
    }

    #[test]
    fn structural_errors_are_malformed_with_a_path() {
        let path = |msg: &v1::ScoreRequest| match from_proto(msg) {
            Err(RequestError::Malformed { path, .. }) => path,
            other => panic!("expected malformed, got {other:?}"),
        };
        let mut m = proto(GOOD);
        m.context = None;
        assert_eq!(path(&m), "context");
        let mut m = proto(GOOD);
        m.context.as_mut().unwrap().surface = 0;
        assert_eq!(path(&m), "context.surface");
        let mut m = proto(GOOD);
        m.candidates.as_mut().unwrap().relevance.pop();
        assert_eq!(path(&m), "candidates.relevance");
        let mut m = proto(GOOD);
        m.candidates.as_mut().unwrap().features.pop();
        assert_eq!(path(&m), "candidates.features");
        let mut m = proto(GOOD);
        m.candidates.as_mut().unwrap().campaign[1] = 5;
        assert_eq!(path(&m), "candidates[1].campaign");
    }

    #[test]
    fn invalid_values_name_the_json_field() {
        let invalid = |msg: &v1::ScoreRequest| match from_proto(msg).unwrap().validate(10) {
            Err(RequestError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        let mut m = proto(GOOD);
        m.candidates.as_mut().unwrap().relevance[1] = f64::INFINITY;
        assert_eq!(invalid(&m), "candidates[1].relevance");
        let mut m = proto(GOOD);
        m.candidates.as_mut().unwrap().relevance[2] = -0.5;
        assert_eq!(invalid(&m), "candidates[2].relevance", "negative relevance");
        let mut m = proto(GOOD);
        m.candidates.as_mut().unwrap().ids[2] = "t1".into();
        assert_eq!(invalid(&m), "candidates[2].id");
        let mut m = proto(GOOD);
        let k = m.candidates.as_mut().unwrap();
        let j = k.feature_names.iter().position(|n| n == "pop").unwrap();
        k.features[k.feature_names.len() + j] = 2e9;
        assert_eq!(invalid(&m), "candidates[1].features.pop");
        for bad in [f64::INFINITY, f64::NEG_INFINITY, -1.5e9] {
            let mut m = proto(GOOD);
            let k = m.candidates.as_mut().unwrap();
            k.features[2 * k.feature_names.len() + j] = bad;
            assert_eq!(invalid(&m), "candidates[2].features.pop", "{bad}");
        }
        let mut m = proto(GOOD);
        m.candidates.as_mut().unwrap().feature_names[0] = String::new();
        assert_eq!(invalid(&m), "candidates[0].features");
        let mut m = proto(GOOD);
        m.campaigns[0].end_ms = 0;
        assert_eq!(invalid(&m), "candidates[0].campaign.end_ms");
        let mut m = proto(GOOD);
        m.context.as_mut().unwrap().market = "Sweden".into();
        assert_eq!(invalid(&m), "context.market");
        // NaN is a missing value, not an invalid one.
        let mut m = proto(GOOD);
        m.candidates.as_mut().unwrap().features[0] = f64::NAN;
        assert!(from_proto(&m).unwrap().validate(10).is_ok());
    }
}

#[cfg(test)]
mod example {
    use super::super::Validate;
    use super::*;

    #[test]
    fn the_example_request_gives_the_same_batch_through_both() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/request.json"
        ))
        .unwrap();
        let msg = oasis_proto::json::request(&body).unwrap();
        let a = from_proto(&msg).unwrap().validate(2000).unwrap();
        let b = super::super::parse(&body).unwrap().validate(2000).unwrap();
        let cols = msg.candidates.as_ref().unwrap().feature_names.clone();
        let ctx = msg.context.as_ref().unwrap().feature_names.clone();
        let x = crate::columnar::batch(&a, &cols, &ctx);
        let y = crate::columnar::batch(&b, &cols, &ctx);
        assert_eq!(format!("{:?}", x.context), format!("{:?}", y.context));
        assert_eq!(format!("{:?}", x.campaigns), format!("{:?}", y.campaigns));
        let (p, q) = (&x.candidates, &y.candidates);
        assert_eq!(p.artist, q.artist);
        assert_eq!(p.rights_holder, q.rights_holder);
        assert_eq!(p.campaign, q.campaign);
        assert_eq!(p.impressions_24h, q.impressions_24h);
        assert_eq!(p.session_promoted, q.session_promoted);
        assert_eq!(p.relevance, q.relevance);
        for (i, (u, v)) in p.features.iter().zip(&q.features).enumerate() {
            assert!(
                u.to_bits() == v.to_bits() || (u.is_nan() && v.is_nan()),
                "feature {i} ({}): {u} vs {v}",
                cols[i % cols.len()]
            );
        }
    }
}
