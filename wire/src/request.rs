//! The JSON scoring request: the body of `POST /v1/score`, the `request` of
//! a golden fixture, what the decision log keeps.
//!
//! The shape is the natural one for a caller: a `context` object and a
//! `candidates` array of objects with an id, a relevance, an optional inline
//! `campaign` and `features` by name. Strings are borrowed from the body when
//! they contain no escapes, and features are kept as (name, value) pairs, so
//! parsing allocates little. [`from_slice`] parses a body and names the JSON
//! path of an error (`candidates[3].relevance`); [`from_value`] does the same
//! for a parsed [`serde_json::Value`] (a fixture's `request`).
//!
//! These types check what JSON's types check (required fields, known
//! surfaces, at most [`MAX_FEATURES`] features, no unknown fields). What the
//! contract checks (sizes, finiteness, windows, market codes, unique ids) is
//! the host's `ScoreRequest::validate`, and the packing into the contract's
//! columnar form is each reader's own; the packing they share is here:
//! [`ScoreRequest::seed`], [`ScoreRequest::campaigns`] (campaigns sent once)
//! and [`ScoreRequest::feature_matrix`].
//!
//! With the `schema` feature the types derive `utoipa::ToSchema`, with
//! `SurfaceName` and `FeatureMap` describing the values whose serde impls
//! are written by hand (surfaces by name, the feature map).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

pub use oasis_contract::{MAX_FEATURES, Surface};

/// A scoring request.
#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest<'a> {
    /// Route to score on (server only); the default route when absent.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub route: Option<Cow<'a, str>>,
    /// The listening context.
    #[serde(borrow)]
    pub context: RequestContext<'a>,
    /// The candidate tracks.
    #[serde(borrow)]
    pub candidates: Vec<RequestCandidate<'a>>,
    /// Delivery state of the candidates' rights holders, by rights-holder
    /// id; the host fills what is absent from its state store.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schema(value_type = Option<HashMap<String, RequestHolder>>))]
    pub rights_holders: Option<HashMap<Cow<'a, str>, RequestHolder>>,
    /// Include the policy's named debug values in the response.
    #[serde(default)]
    pub debug: bool,
}

/// The listening context.
#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestContext<'a> {
    /// Caller's request id (echoed in the response and in every log line).
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    /// Listener id.
    #[serde(borrow)]
    pub listener_id: Cow<'a, str>,
    /// Session id.
    #[serde(borrow)]
    pub session_id: Cow<'a, str>,
    /// Surface of the session.
    #[serde(deserialize_with = "surface::one", serialize_with = "surface::ser_one")]
    #[cfg_attr(feature = "schema", schema(value_type = SurfaceName))]
    pub surface: Surface,
    /// ISO 3166-1 alpha-2 market, e.g. "SE".
    #[serde(borrow)]
    pub market: Cow<'a, str>,
    /// Unix time of the request, milliseconds.
    pub timestamp_ms: i64,
    /// Seed for all of the policy's randomness; derived from `request_id`
    /// when absent, so that a logged request replays identically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Numeric context features by name (local hour, session position...).
    #[serde(default, borrow)]
    #[cfg_attr(feature = "schema", schema(value_type = FeatureMap))]
    pub features: Features<'a>,
    /// How many of the top-ranked candidates the caller shows (at least 1;
    /// more than the candidates counts as all of them). Every candidate
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slate_size: Option<u32>,
}

/// Delivery state of one rights holder.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestHolder {
    /// The holder's share of all attention over the last 7 days, in [0, 1].
    pub exposure_share_7d: f64,
}

/// One candidate track.
#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestCandidate<'a> {
    /// Track id; stays on the host and is echoed in the response.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Base relevance from the recommender.
    pub relevance: f64,
    /// Primary artist id.
    #[serde(default, borrow)]
    pub artist: Cow<'a, str>,
    /// Rights holder (label) id.
    #[serde(default, borrow)]
    pub rights_holder: Cow<'a, str>,
    /// Promoted impressions of this track to this listener in the last 24
    /// hours; from the host's state store when absent (0 without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impressions_24h: Option<u32>,
    /// Promoted plays of this track in this session; from the host's state
    /// store when absent (0 without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_promoted: Option<u32>,
    /// The track's promotion campaign, if it is in one.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<Box<RequestCampaign<'a>>>,
    /// Numeric features by name (p_skip, p_complete, popularity...).
    #[serde(default, borrow)]
    #[cfg_attr(feature = "schema", schema(value_type = FeatureMap))]
    pub features: Features<'a>,
}

/// A promotion campaign, inline in each candidate that belongs to it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestCampaign<'a> {
    /// Campaign id; candidates sharing it share the campaign.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Start of the active window (unix ms, inclusive).
    pub start_ms: i64,
    /// End of the active window (unix ms, exclusive).
    pub end_ms: i64,
    /// Surfaces it may promote on; all but `other` when absent.
    #[serde(
        default,
        deserialize_with = "surface::optional_list",
        serialize_with = "surface::ser_optional_list",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "schema", schema(value_type = Option<Vec<SurfaceName>>))]
    pub surfaces: Option<Vec<Surface>>,
    /// Markets it may promote in; every market when empty.
    #[serde(default, borrow)]
    pub markets: Vec<Cow<'a, str>>,
    /// Promoted impressions targeted over the window.
    pub delivery_target: f64,
    /// Promoted impressions delivered so far; from the host's state store
    /// when absent (0 without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<f64>,
    /// What a linear schedule would have delivered by now;
    /// `delivery_target` × the elapsed share of the window when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_by_now: Option<f64>,
    /// Pacing controller state: leaky integral of the delivery error. The
    /// three pacing fields go together: when none is sent the host fills
    /// all three from its state store (0 without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing_integral: Option<f64>,
    /// Pacing controller state: previous delivery error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing_last_error: Option<f64>,
    /// Pacing controller state: when it was last updated (unix ms; 0 never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing_updated_ms: Option<i64>,
    /// Commission accepted, basis points.
    #[serde(default)]
    pub commission_bps: u32,
}

/// A candidate's (or the context's) features: by name in the order given
/// (JSON, `null` = missing), or one row of a packed matrix whose names are
/// sent once per request (gRPC, NaN = missing).
#[derive(Debug)]
pub enum Features<'a> {
    /// (name, value) pairs.
    Named(Vec<(Cow<'a, str>, Option<f64>)>),
    /// Values aligned to `names`, which every row of the request shares.
    Row {
        /// The request's feature names.
        names: &'a [String],
        /// This row's values; NaN = missing.
        values: &'a [f64],
    },
}

impl Default for Features<'_> {
    fn default() -> Self {
        Features::Named(Vec::new())
    }
}

impl<'a> Features<'a> {
    /// (name, value) in the order given; `None` = missing.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<f64>)> + '_ {
        let (named, row) = match self {
            Features::Named(v) => (Some(v.iter().map(|(n, v)| (&**n, *v))), None),
            Features::Row { names, values } => (
                None,
                Some(
                    names
                        .iter()
                        .zip(values.iter())
                        .map(|(n, v)| (n.as_str(), (!v.is_nan()).then_some(*v))),
                ),
            ),
        };
        named.into_iter().flatten().chain(row.into_iter().flatten())
    }

    /// The number of features given (missing ones included).
    pub fn len(&self) -> usize {
        match self {
            Features::Named(v) => v.len(),
            Features::Row { names, .. } => names.len(),
        }
    }

    /// Whether no feature is given.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Serialize for Features<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (name, value) in self.iter() {
            map.serialize_entry(name, &value)?;
        }
        map.end()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Features<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Features<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of feature name to number (or null)")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(CowStr(name)) = map.next_key::<CowStr<'a>>()? {
                    let value: Option<f64> = map.next_value()?;
                    if out.len() == MAX_FEATURES {
                        return Err(de::Error::custom(format!(
                            "more than {MAX_FEATURES} features"
                        )));
                    }
                    out.push((name, value));
                }
                Ok(Features::Named(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string that borrows from the input when it can (serde's own `Cow<str>`
/// impl always allocates outside of derived fields).
struct CowStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Surfaces by name, with serde's own "unknown variant" message.
mod surface {
    use super::Surface;
    use serde::de::{self, Deserialize, Deserializer};

    /// Deserializes one surface name.
    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<Surface, D::Error> {
        let super::CowStr(name) = super::CowStr::deserialize(d)?;
        Surface::from_name(&name).ok_or_else(|| de::Error::unknown_variant(&name, &Surface::NAMES))
    }

    /// Deserializes an optional list of surface names.
    pub fn optional_list<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<Surface>>, D::Error> {
        #[derive(serde::Deserialize)]
        struct Name(#[serde(deserialize_with = "one")] Surface);
        let list = <Option<Vec<Name>>>::deserialize(d)?;
        Ok(list.map(|l| l.into_iter().map(|Name(s)| s).collect()))
    }

    /// Serializes one surface by name.
    pub fn ser_one<S: serde::Serializer>(s: &Surface, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.name())
    }

    /// Serializes an optional list of surfaces by name.
    pub fn ser_optional_list<S: serde::Serializer>(
        list: &Option<Vec<Surface>>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let list = list.as_deref().unwrap_or_default();
        let mut seq = ser.serialize_seq(Some(list.len()))?;
        for s in list {
            seq.serialize_element(s.name())?;
        }
        seq.end()
    }
}

/// A body that is not JSON of the request's shape, with the JSON path of
/// the offending value (`.` for the whole body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at `{path}`)")]
pub struct ParseError {
    /// JSON path of the offending value, e.g. `candidates[3].relevance`.
    pub path: String,
    /// What is wrong (serde's message).
    pub message: String,
}

impl ParseError {
    /// The error serde reported at `path`. serde reports a missing field at
    /// the object that lacks it (`candidates[3]`); the path is then the
    /// field's own (`candidates[3].id`), the place the caller has to fix.
    fn located(e: &serde_path_to_error::Error<serde_json::Error>) -> Self {
        let (path, message) = (e.path(), e.inner().to_string());
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(field, _)| field);
        let path = match (missing, path.iter().next()) {
            (Some(field), None) => field.to_string(),
            (Some(field), Some(_)) => format!("{path}.{field}"),
            (None, _) => path.to_string(),
        };
        ParseError { path, message }
    }
}

/// Parses a request body, naming the path of any error.
///
/// # Errors
/// [`ParseError`] with the JSON path and serde's message.
///
/// # Examples
/// ```
/// let body = br#"{"context": {"request_id": "r1", "listener_id": "u1", "session_id": "s1",
///   "surface": "radio", "market": "SE", "timestamp_ms": 0},
///   "candidates": [{"id": "t1", "relevance": "high"}]}"#;
/// let err = oasis_wire::request::from_slice(body).unwrap_err();
/// assert_eq!(err.path, "candidates[0].relevance");
/// ```
#[inline]
pub fn from_slice(body: &[u8]) -> Result<ScoreRequest<'_>, ParseError> {
    // Fast path: plain serde_json. Tracking the path of every value costs
    // about a third of the parse, so only a failed parse pays for it, by
    // parsing again with serde_path_to_error to name the offending field.
    match serde_json::from_slice(body) {
        Ok(req) => Ok(req),
        Err(plain) => Err(locate(body).unwrap_or_else(|| ParseError {
            path: ".".into(),
            message: plain.to_string(),
        })),
    }
}

/// Re-parses a body known to be bad, returning the error with its JSON path.
fn locate(body: &[u8]) -> Option<ParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, ScoreRequest>(&mut de) {
        Err(e) => Some(ParseError::located(&e)),
        Ok(_) => de.end().err().map(|e| ParseError {
            path: ".".into(),
            message: e.to_string(),
        }),
    }
}

/// Reads a request from a parsed JSON value (a fixture's `request`),
/// borrowing its strings from `value`.
///
/// # Errors
/// [`ParseError`] with the JSON path and serde's message.
///
/// ```
/// let v = serde_json::json!({"context": {"request_id": "r", "listener_id": "l",
///     "session_id": "s", "surface": "radio", "market": "SE", "timestamp_ms": "now"},
///     "candidates": []});
/// let err = oasis_wire::request::from_value(&v).unwrap_err();
/// assert_eq!(err.path, "context.timestamp_ms");
/// ```
pub fn from_value(value: &serde_json::Value) -> Result<ScoreRequest<'_>, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| ParseError::located(&e))
}

/// The request's distinct campaigns in order of first appearance (each
/// candidate's copy of a campaign is taken to be the first one's: the host
/// checks that they agree), and per candidate its index among them.
#[derive(Debug)]
pub struct Campaigns<'r, 'a> {
    /// The first copy of each distinct campaign id, in order of appearance.
    pub first: Vec<&'r RequestCampaign<'a>>,
    /// Per candidate, the index of its campaign in `first`; -1 for organic.
    pub index: Vec<i32>,
}

impl<'a> ScoreRequest<'a> {
    /// The seed: `context.seed`, else a hash of the request id.
    pub fn seed(&self) -> u64 {
        self.context.seed.unwrap_or_else(|| {
            // FNV-1a: stable across processes and versions, unlike `DefaultHasher`.
            self.context
                .request_id
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
                })
        })
    }

    /// The campaigns as the contract sends them: once each, in order of
    /// first appearance, with each candidate's index.
    pub fn campaigns(&self) -> Campaigns<'_, 'a> {
        let mut first: Vec<&RequestCampaign<'a>> = Vec::new();
        let mut ids: HashMap<&str, i32> = HashMap::new();
        let index = self
            .candidates
            .iter()
            .map(|c| match &c.campaign {
                None => -1,
                Some(camp) => *ids.entry(&camp.id).or_insert_with(|| {
                    first.push(camp);
                    first.len() as i32 - 1
                }),
            })
            .collect();
        Campaigns { first, index }
    }

    /// The candidates' features as one matrix: the union of their feature
    /// names in order of first appearance, and the row-major values (a row
    /// per candidate) with NaN where a candidate has no value (absent or
    /// `null`, which the API treats alike).
    pub fn feature_matrix(&self) -> (Vec<String>, Vec<f64>) {
        let mut names: Vec<String> = Vec::new();
        let mut column: HashMap<&str, usize> = HashMap::new();
        for c in &self.candidates {
            for (name, _) in c.features.iter() {
                if !column.contains_key(name) {
                    column.insert(name, names.len());
                    names.push(name.to_string());
                }
            }
        }
        let width = names.len();
        let mut values = vec![f64::NAN; self.candidates.len() * width];
        for (i, c) in self.candidates.iter().enumerate() {
            for (name, v) in c.features.iter() {
                if let Some(v) = v {
                    values[i * width + column[name]] = v;
                }
            }
        }
        (names, values)
    }
}

impl RequestCampaign<'_> {
    /// What a linear schedule would have delivered by `now_ms`: the target
    /// times the elapsed share of the window, clamped to [0, target]. The
    /// `expected_by_now` of a campaign that does not send it.
    pub fn linear_schedule(&self, now_ms: i64) -> f64 {
        let span = (self.end_ms - self.start_ms) as f64;
        let elapsed = (now_ms - self.start_ms) as f64;
        self.delivery_target * (elapsed / span).clamp(0.0, 1.0)
    }
}

#[cfg(feature = "schema")]
pub use schema::{FeatureMap, SurfaceName};

/// Schemas of the values whose serde impls are written by hand:
/// documentation only, never serialized.
#[cfg(feature = "schema")]
mod schema {
    use std::borrow::Cow;

    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
    use utoipa::{PartialSchema, ToSchema};

    /// A surface name (`oasis_contract::Surface::NAMES`).
    pub struct SurfaceName;

    impl PartialSchema for SurfaceName {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .enum_values(Some(oasis_contract::Surface::NAMES))
                .description(Some("Surface of the listening session"))
                .into()
        }
    }

    impl ToSchema for SurfaceName {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("Surface")
        }
    }

    /// Features by name: numbers, `null` for missing.
    pub struct FeatureMap;

    impl PartialSchema for FeatureMap {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::Object))
                .additional_properties(Some(
                    ObjectBuilder::new()
                        .schema_type(SchemaType::from_iter([Type::Number, Type::Null])),
                ))
                .max_properties(Some(oasis_contract::MAX_FEATURES))
                .description(Some(
                    "Numeric features by name; `null` means missing. Only the features a policy \
                     declares are sent to it",
                ))
                .into()
        }
    }

    impl ToSchema for FeatureMap {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("Features")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candidate_stays_small() {
        // Requests hold hundreds of candidates, most of them organic: the
        // campaign is boxed so that a candidate without one does not carry
        // its 184 bytes (it was 312 bytes, 136 boxed).
        let size = std::mem::size_of::<RequestCandidate<'static>>();
        assert!(size <= 160, "RequestCandidate is {size} bytes");
    }

    const GOOD: &str = r#"{
        "context": {"request_id": "r1", "listener_id": "u1", "session_id": "s1",
                    "surface": "daily_mix", "market": "se", "timestamp_ms": 1000,
                    "features": {"local_hour": 20, "skip_rate": null}},
        "candidates": [
            {"id": "t1", "relevance": 0.5, "artist": "a1", "rights_holder": "h1",
             "features": {"p_skip": 0.2, "pop": null},
             "campaign": {"id": "c1", "start_ms": 0, "end_ms": 2000, "delivery_target": 10,
                          "markets": ["SE"], "surfaces": ["radio", "daily_mix"]}},
            {"id": "t2", "relevance": 0.4, "features": {"pop": 3}},
            {"id": "t3", "relevance": 0.3, "campaign": {"id": "c2", "start_ms": 0,
                          "end_ms": 4000, "delivery_target": 8}},
            {"id": "t4", "relevance": 0.2, "campaign": {"id": "c1", "start_ms": 0,
                          "end_ms": 2000, "delivery_target": 10}}
        ]}"#;

    fn path_of(body: &str) -> String {
        from_slice(body.as_bytes()).unwrap_err().path
    }

    #[test]
    fn parses_borrowing_strings_and_keeping_feature_order() {
        let req = from_slice(GOOD.as_bytes()).unwrap();
        assert!(matches!(req.candidates[0].id, Cow::Borrowed("t1")));
        assert!(matches!(req.context.market, Cow::Borrowed("se")));
        assert_eq!(req.context.surface, Surface::DailyMix);
        let ctx: Vec<_> = req.context.features.iter().collect();
        assert_eq!(ctx, [("local_hour", Some(20.0)), ("skip_rate", None)]);
        let camp = req.candidates[0].campaign.as_ref().unwrap();
        assert_eq!(camp.surfaces, Some(vec![Surface::Radio, Surface::DailyMix]));
        assert_eq!(req.candidates[1].artist, "", "absent ids default to empty");
        // From a parsed value, the same request.
        let v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        let again = from_value(&v).unwrap();
        assert_eq!(again.candidates.len(), 4);
        assert!(matches!(again.candidates[0].id, Cow::Borrowed("t1")));
        assert_eq!(again.seed(), req.seed());
    }

    #[test]
    fn a_wrong_type_names_its_path() {
        assert_eq!(
            path_of(&GOOD.replace(r#""relevance": 0.4"#, r#""relevance": "high""#)),
            "candidates[1].relevance"
        );
        assert_eq!(
            path_of(&GOOD.replace(r#""timestamp_ms": 1000"#, r#""timestamp_ms": 1.5"#)),
            "context.timestamp_ms"
        );
        assert_eq!(
            path_of(&GOOD.replace(r#""delivery_target": 8"#, r#""delivery_target": true"#)),
            "candidates[2].campaign.delivery_target"
        );
        assert_eq!(
            path_of(&GOOD.replace(r#""markets": ["SE"]"#, r#""markets": [46]"#)),
            "candidates[0].campaign.markets[0]"
        );
        let e = from_slice(GOOD.replace(r#""pop": 3"#, r#""pop": "x""#).as_bytes()).unwrap_err();
        assert_eq!(e.path, "candidates[1].features.pop");
        assert!(e.message.contains("invalid type"), "{e}");
        assert!(
            e.to_string().ends_with("(at `candidates[1].features.pop`)"),
            "{e}"
        );
        // The same paths from a parsed value.
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v["candidates"][3]["relevance"] = "x".into();
        assert_eq!(from_value(&v).unwrap_err().path, "candidates[3].relevance");
    }

    #[test]
    fn unknown_names_and_missing_fields_are_refused_with_a_path() {
        let e = from_slice(GOOD.replace(r#""daily_mix""#, r#""playlist""#).as_bytes()).unwrap_err();
        assert_eq!(e.path, "context.surface");
        assert!(e.message.contains("unknown variant `playlist`"), "{e}");
        let bad = GOOD.replacen(r#""relevance": 0.4"#, r#""relevance": 0.4, "colour": 1"#, 1);
        let e = from_slice(bad.as_bytes()).unwrap_err();
        assert!(e.message.contains("unknown field `colour`"), "{e}");
        assert_eq!(e.path, "candidates[1].colour");
        let e = from_slice(br#"{"context": {"request_id": "r"}, "candidates": []}"#).unwrap_err();
        assert!(e.message.contains("missing field `listener_id`"), "{e}");
        assert_eq!(e.path, "context.listener_id");
        // Not JSON at all, or trailing bytes: the whole body.
        assert_eq!(
            from_slice(b"{\"candidates\": [").unwrap_err().path,
            "candidates"
        );
        assert_eq!(path_of(&format!("{GOOD} x")), ".");
        let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_FEATURES)
            .map(|i| (format!("f{i}"), 1.into()))
            .collect();
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v["candidates"][1]["features"] = many.into();
        let e = from_value(&v).unwrap_err();
        assert_eq!(e.path, "candidates[1].features");
        assert!(e.message.contains("more than 256 features"), "{e}");
    }

    #[test]
    fn a_missing_field_is_named_at_the_field_not_its_parent() {
        let cases = [
            (r#""timestamp_ms": 1000,"#, "", "context.timestamp_ms"),
            (r#"{"id": "t2", "#, "{", "candidates[1].id"),
            (r#""relevance": 0.3, "#, "", "candidates[2].relevance"),
            (
                r#""delivery_target": 8"#,
                r#""commission_bps": 0"#,
                "candidates[2].campaign.delivery_target",
            ),
            (
                r#""end_ms": 2000, "delivery_target": 10}"#,
                r#""delivery_target": 10}"#,
                "candidates[3].campaign.end_ms",
            ),
        ];
        for (cut, keep, path) in cases {
            let body = GOOD.replacen(cut, keep, 1);
            assert_ne!(body, GOOD, "{cut} is in the request");
            let e = from_slice(body.as_bytes()).unwrap_err();
            assert_eq!(e.path, path, "{e}");
            let field = path.rsplit('.').next().unwrap();
            assert!(
                e.message.starts_with(&format!("missing field `{field}`")),
                "{e}"
            );
            // The same path from a parsed value.
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(from_value(&v).unwrap_err().path, path);
        }
        // A missing top-level field is named alone.
        let e = from_slice(br#"{"candidates": []}"#).unwrap_err();
        assert_eq!(e.path, "context", "{e}");
    }

    #[test]
    fn campaigns_are_sent_once_in_order_of_first_appearance() {
        let req = from_slice(GOOD.as_bytes()).unwrap();
        let c = req.campaigns();
        assert_eq!(c.index, [0, -1, 1, 0]);
        let ids: Vec<&str> = c.first.iter().map(|c| &*c.id).collect();
        assert_eq!(ids, ["c1", "c2"]);
        assert_eq!(c.first[0].markets, ["SE"], "the first copy is kept");
    }

    #[test]
    fn the_feature_matrix_is_the_union_of_names_with_nan_for_missing() {
        let req = from_slice(GOOD.as_bytes()).unwrap();
        let (names, values) = req.feature_matrix();
        assert_eq!(names, ["p_skip", "pop"]);
        let shown: Vec<Option<f64>> = values.iter().map(|v| (!v.is_nan()).then_some(*v)).collect();
        assert_eq!(
            shown,
            [Some(0.2), None, None, Some(3.0), None, None, None, None]
        );
    }

    #[test]
    fn the_seed_and_the_linear_schedule() {
        let req = from_slice(GOOD.as_bytes()).unwrap();
        // FNV-1a of "r1": pinned, replays depend on it.
        assert_eq!(req.seed(), 0x08dc_8307_b57b_e76c);
        let seeded = GOOD.replace(
            r#""timestamp_ms": 1000"#,
            r#""timestamp_ms": 1000, "seed": 7"#,
        );
        assert_eq!(from_slice(seeded.as_bytes()).unwrap().seed(), 7);
        let camp = req.candidates[0].campaign.as_ref().unwrap();
        assert_eq!(camp.linear_schedule(1000), 5.0);
        assert_eq!(camp.linear_schedule(-5), 0.0);
        assert_eq!(camp.linear_schedule(9000), 10.0);
    }

    #[test]
    fn serializes_back_to_the_same_request() {
        let req = from_slice(GOOD.as_bytes()).unwrap();
        let json = serde_json::to_string(&req).unwrap();
        let again = from_slice(json.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&again).unwrap(), json);
        assert!(
            json.contains(r#""surfaces":["radio","daily_mix"]"#),
            "{json}"
        );
        assert!(
            json.contains(r#""features":{"p_skip":0.2,"pop":null}"#),
            "{json}"
        );
    }
}
