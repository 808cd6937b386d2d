//! The JSON request decoded in one pass into the validated, columnar form
//! (issue 21): the fast path of `POST /v1/score`.
//!
//! Why: the general path ([`super::parse`] then [`Validate::validate`])
//! builds a `Vec` of (name, value) pairs per candidate, checks every pair
//! again in validation, and the batch then finds each declared column among
//! each candidate's pairs: at 1000 candidates × 30 features most of the
//! request's server time. Here each candidate's `features` object is read
//! straight into a row of a matrix of the *declared* columns
//! ([`FeatureColumns`]): a name is compared with the few declared names and
//! its value written in place; every other feature is checked (name, number
//! or null, magnitude) and dropped, nothing allocated. Strings are borrowed
//! from the body as before (serde_json stays the parser; the context,
//! campaigns and rights holders keep their derived deserializers: they are
//! not where the time goes).
//!
//! The route must be known before the candidates are read, since it decides
//! the columns: [`route_hint`] reads the top-level keys up to `candidates`
//! (the context is small; the candidates are not scanned) or, when the route
//! comes after them (a client that sorts its keys), skims the candidates
//! once to find it; the caller resolves the route and passes the union of
//! the declared columns of every policy that may see the request (its arms
//! and shadows). Anything the fast path does not accept goes to the general
//! path.
//!
//! The contract: the fast path accepts a body only if the general path
//! accepts it, with the same result; on *any* refusal ([`Refused`]) the
//! caller runs the general path, which produces today's error (path,
//! message and status) unchanged. So the fast path never has to reproduce
//! an error, only to be at least as strict; the agreement tests
//! (`tests::*agree*`) check both halves.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    FeatureColumns, Features, MAX_FEATURES, RequestCampaign, RequestCandidate, RequestContext,
    RequestError, RequestHolder, ScoreRequest, ValidRequest, Validate, has_control,
};

/// The fast path did not take the body; the general path decides (and
/// names the error, if there is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

/// The `route` named at the top level of `body` (`Ok(None)` when there is
/// none). It stops at `candidates` when the route came before them; a route
/// after them (as a client that sorts its keys sends it) costs one skim of
/// the candidates, far less than the general path.
///
/// # Errors
/// [`Refused`] when the top level is not an object with a `candidates` key,
/// or the route is not a string (the general path will say why).
pub fn route_hint(body: &[u8]) -> Result<Option<Cow<'_, str>>, Refused> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    // The visitor may stop at `candidates` with an error of its own; what it
    // found is in `found`.
    let _ = de.deserialize_map(HintVisitor { found: &mut found });
    found.ok_or(Refused)
}

struct HintVisitor<'f, 'a> {
    found: &'f mut Option<Option<Cow<'a, str>>>,
}

impl<'de: 'a, 'a> Visitor<'de> for HintVisitor<'_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scoring request")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let mut route = None;
        let (mut route_seen, mut candidates_seen) = (false, false);
        while let Some(CowStr(key)) = map.next_key::<CowStr<'a>>()? {
            match &*key {
                "route" => {
                    route = map.next_value::<Option<CowStr<'a>>>()?.map(|r| r.0);
                    route_seen = true;
                    if candidates_seen {
                        break;
                    }
                }
                "candidates" if route_seen => {
                    *self.found = Some(route);
                    return Err(de::Error::custom("stop at candidates"));
                }
                "candidates" => {
                    candidates_seen = true;
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if candidates_seen {
            *self.found = Some(route);
        }
        Ok(())
    }
}

/// Decodes `body` into a validated request whose candidate features are
/// the `columns` (the union of the declared columns of every policy that
/// may see it), checking what [`super::parse`] and [`Validate::validate`]
/// check. `route` is what [`route_hint`] returned (the route resolved with).
///
/// # Errors
/// [`Refused`] on anything the general path might refuse, or that this
/// path does not handle; the caller then runs the general path.
pub fn decode<'a>(
    body: &'a [u8],
    columns: &[&str],
    max_candidates: usize,
) -> Result<ValidRequest<'a>, Refused> {
    let mut values = Vec::new();
    // The body checked as UTF-8 once, in one pass, and parsed as a `str`:
    // serde_json then takes its strings as they are, where from bytes it
    // validates each one again (~11% of `oasis serve`'s CPU under HTTP load,
    // BENCHMARKS.md session 15). A body that is not UTF-8 is the general
    // path's to name.
    let text = std::str::from_utf8(body).map_err(|_| Refused)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let req = de
        .deserialize_map(RequestVisitor {
            columns,
            max_candidates,
            values: &mut values,
        })
        .map_err(|_| Refused)?;
    de.end().map_err(|_| Refused)?;
    let mut valid = req.validate(max_candidates).map_err(|_| Refused)?;
    valid.columns = Some(FeatureColumns {
        names: columns.iter().map(|c| c.to_string()).collect(),
        values,
    });
    Ok(valid)
}

/// [`decode`] when it takes the body, else the general path: what the
/// server does once the route is resolved (the benchmark measures this).
///
/// # Errors
/// The general path's [`RequestError`], unchanged.
pub fn decode_or_parse<'a>(
    body: &'a [u8],
    columns: &[&str],
    max_candidates: usize,
) -> Result<ValidRequest<'a>, RequestError> {
    match decode(body, columns, max_candidates) {
        Ok(valid) => Ok(valid),
        Err(Refused) => super::parse(body)?.validate(max_candidates),
    }
}

/// A string borrowed from the body when it has no escapes (the wire
/// crate's rule for its `Cow` fields).
struct CowStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
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

fn refuse<E: de::Error>(why: &str) -> E {
    E::custom(why)
}

/// The top-level object.
struct RequestVisitor<'c, 'v> {
    columns: &'c [&'c str],
    max_candidates: usize,
    values: &'v mut Vec<f64>,
}

impl<'de> Visitor<'de> for RequestVisitor<'_, '_> {
    type Value = ScoreRequest<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scoring request")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut route: Option<Option<Cow<'de, str>>> = None;
        let mut context: Option<RequestContext<'de>> = None;
        let mut candidates: Option<Vec<RequestCandidate<'de>>> = None;
        let mut rights_holders: Option<Option<HashMap<Cow<'de, str>, RequestHolder>>> = None;
        let mut debug: Option<bool> = None;
        while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
            match &*key {
                // The route decided the columns ([`route_hint`] found it on
                // the same body, before or after the candidates); a second
                // `route` key is refused (the general path names it).
                "route" if route.is_none() => {
                    route = Some(map.next_value::<Option<CowStr<'de>>>()?.map(|r| r.0));
                }
                "context" if context.is_none() => context = Some(map.next_value()?),
                "candidates" if candidates.is_none() => {
                    candidates = Some(map.next_value_seed(CandidatesSeed {
                        columns: self.columns,
                        max_candidates: self.max_candidates,
                        values: &mut *self.values,
                    })?);
                }
                "rights_holders" if rights_holders.is_none() => {
                    rights_holders = Some(map.next_value()?);
                }
                "debug" if debug.is_none() => debug = Some(map.next_value()?),
                _ => return Err(refuse("unknown, repeated or late field")),
            }
        }
        Ok(ScoreRequest {
            route: route.flatten(),
            context: context.ok_or_else(|| refuse("no context"))?,
            candidates: candidates.ok_or_else(|| refuse("no candidates"))?,
            rights_holders: rights_holders.flatten(),
            debug: debug.unwrap_or(false),
        })
    }
}

/// The `candidates` array: rows, and the feature matrix grown by one row
/// per candidate.
struct CandidatesSeed<'c, 'v> {
    columns: &'c [&'c str],
    max_candidates: usize,
    values: &'v mut Vec<f64>,
}

impl<'de> DeserializeSeed<'de> for CandidatesSeed<'_, '_> {
    type Value = Vec<RequestCandidate<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CandidatesSeed<'_, '_> {
    type Value = Vec<RequestCandidate<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of candidates")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let width = self.columns.len();
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(256).min(self.max_candidates));
        loop {
            // More than the route allows: validation refuses it (and a huge
            // array is not read to the end here).
            if out.len() == self.max_candidates {
                return match seq.next_element::<IgnoredAny>()? {
                    None => Ok(out),
                    Some(_) => Err(refuse("too many candidates")),
                };
            }
            let start = self.values.len();
            self.values.resize(start + width, f64::NAN);
            let seed = CandidateSeed {
                columns: self.columns,
                row: &mut self.values[start..],
            };
            match seq.next_element_seed(seed)? {
                Some(c) => out.push(c),
                None => {
                    self.values.truncate(start);
                    return Ok(out);
                }
            }
        }
    }
}

/// One candidate object, its features written into `row`.
struct CandidateSeed<'c, 'r> {
    columns: &'c [&'c str],
    row: &'r mut [f64],
}

impl<'de> DeserializeSeed<'de> for CandidateSeed<'_, '_> {
    type Value = RequestCandidate<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CandidateSeed<'_, '_> {
    type Value = RequestCandidate<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a candidate")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut id: Option<Cow<'de, str>> = None;
        let mut relevance: Option<f64> = None;
        let mut artist: Option<Cow<'de, str>> = None;
        let mut rights_holder: Option<Cow<'de, str>> = None;
        let mut impressions_24h: Option<Option<u32>> = None;
        let mut session_promoted: Option<Option<u32>> = None;
        let mut campaign: Option<Option<Box<RequestCampaign<'de>>>> = None;
        let mut features = false;
        let row = self.row;
        while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
            match &*key {
                "id" if id.is_none() => id = Some(map.next_value::<CowStr<'de>>()?.0),
                "relevance" if relevance.is_none() => relevance = Some(map.next_value()?),
                "artist" if artist.is_none() => artist = Some(map.next_value::<CowStr<'de>>()?.0),
                "rights_holder" if rights_holder.is_none() => {
                    rights_holder = Some(map.next_value::<CowStr<'de>>()?.0);
                }
                "impressions_24h" if impressions_24h.is_none() => {
                    impressions_24h = Some(map.next_value()?);
                }
                "session_promoted" if session_promoted.is_none() => {
                    session_promoted = Some(map.next_value()?);
                }
                "campaign" if campaign.is_none() => campaign = Some(map.next_value()?),
                "features" if !features => {
                    features = true;
                    map.next_value_seed(FeaturesSeed {
                        columns: self.columns,
                        row: &mut *row,
                    })?;
                }
                _ => return Err(refuse("unknown or repeated candidate field")),
            }
        }
        Ok(RequestCandidate {
            id: id.ok_or_else(|| refuse("no id"))?,
            relevance: relevance.ok_or_else(|| refuse("no relevance"))?,
            artist: artist.unwrap_or_default(),
            rights_holder: rights_holder.unwrap_or_default(),
            impressions_24h: impressions_24h.flatten(),
            session_promoted: session_promoted.flatten(),
            campaign: campaign.flatten(),
            features: Features::Named(Vec::new()),
        })
    }
}

/// One `features` object: declared columns written into `row` (a later
/// value of a name replaces an earlier one, `null` writes nothing: the
/// batch's own rule), the others checked and dropped.
struct FeaturesSeed<'c, 'r> {
    columns: &'c [&'c str],
    row: &'r mut [f64],
}

impl<'de> DeserializeSeed<'de> for FeaturesSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FeaturesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of feature name to number (or null)")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let mut count = 0;
        while let Some(CowStr(name)) = map.next_key::<CowStr<'de>>()? {
            let value: Option<f64> = map.next_value()?;
            count += 1;
            if count > MAX_FEATURES || !valid_feature_name(&name) {
                return Err(refuse("feature count or name"));
            }
            let Some(v) = value else { continue };
            if !oasis_contract::within_magnitude(v) {
                return Err(refuse("feature value"));
            }
            if let Some(j) = self.columns.iter().position(|c| *c == name) {
                self.row[j] = v;
            }
        }
        Ok(())
    }
}

/// What validation requires of a feature name (`check_feature_name`):
/// 1-64 bytes, no control characters.
fn valid_feature_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= oasis_contract::MAX_NAME_BYTES && !has_control(name)
}
