//! A copy of the parse types of host/src/request.rs (borrowed strings,
//! features as (name, value) pairs, surfaces by name), without the
//! host-only parts, so that both parsers run the same Deserialize impls.
#![allow(dead_code)]
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
pub const MAX_FEATURES: usize = 256;
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Surface {
    Radio,
    Autoplay,
    DailyMix,
    ArtistMix,
    MoodMix,
    DecadeMix,
    GenreMix,
    Other,
}
impl Surface {
    pub const NAMES: [&'static str; 8] = [
        "radio",
        "autoplay",
        "daily_mix",
        "artist_mix",
        "mood_mix",
        "decade_mix",
        "genre_mix",
        "other",
    ];
    pub fn from_name(n: &str) -> Option<Surface> {
        Some(match n {
            "radio" => Surface::Radio,
            "autoplay" => Surface::Autoplay,
            "daily_mix" => Surface::DailyMix,
            "artist_mix" => Surface::ArtistMix,
            "mood_mix" => Surface::MoodMix,
            "decade_mix" => Surface::DecadeMix,
            "genre_mix" => Surface::GenreMix,
            "other" => Surface::Other,
            _ => return None,
        })
    }
}
/// A scoring request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest<'a> {
    /// Route to score on (server only); the default route when absent.
    #[serde(default, borrow)]
    pub route: Option<Cow<'a, str>>,
    /// The listening context.
    #[serde(borrow)]
    pub context: RequestContext<'a>,
    /// The candidate tracks.
    #[serde(borrow)]
    pub candidates: Vec<RequestCandidate<'a>>,
    /// Include the policy's named debug values in the response.
    #[serde(default)]
    pub debug: bool,
}

/// The listening context.
#[derive(Debug, Deserialize)]
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
    #[serde(deserialize_with = "surface::one")]
    pub surface: Surface,
    /// ISO 3166-1 alpha-2 market, e.g. "SE".
    #[serde(borrow)]
    pub market: Cow<'a, str>,
    /// Unix time of the request, milliseconds.
    pub timestamp_ms: i64,
    /// Seed for all of the policy's randomness; derived from `request_id`
    /// when absent, so that a logged request replays identically.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Numeric context features by name (local hour, session position...).
    #[serde(default, borrow)]
    pub features: Features<'a>,
}

/// One candidate track.
#[derive(Debug, Deserialize)]
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
    /// Promoted impressions of this track to this listener in the last 24 hours.
    #[serde(default)]
    pub impressions_24h: u32,
    /// Promoted plays of this track in this session.
    #[serde(default)]
    pub session_promoted: u32,
    /// The track's promotion campaign, if it is in one.
    #[serde(default, borrow)]
    pub campaign: Option<RequestCampaign<'a>>,
    /// Numeric features by name (p_skip, p_complete, popularity...).
    #[serde(default, borrow)]
    pub features: Features<'a>,
}

/// A promotion campaign, inline in each candidate that belongs to it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    #[serde(default, deserialize_with = "surface::optional_list")]
    pub surfaces: Option<Vec<Surface>>,
    /// Markets it may promote in; every market when empty.
    #[serde(default, borrow)]
    pub markets: Vec<Cow<'a, str>>,
    /// Promoted impressions targeted over the window.
    pub delivery_target: f64,
    /// Promoted impressions delivered so far.
    #[serde(default)]
    pub delivered: f64,
    /// What a linear schedule would have delivered by now.
    #[serde(default)]
    pub expected_by_now: f64,
    /// Pacing controller state: leaky integral of the delivery error.
    #[serde(default)]
    pub pacing_integral: f64,
    /// Pacing controller state: previous delivery error.
    #[serde(default)]
    pub pacing_last_error: f64,
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
}
