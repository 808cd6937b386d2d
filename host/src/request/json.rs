//! The JSON request decoded in one pass into the validated, columnar form
//! (issue 21): the fast path of `POST /v1/score`.
//!
//! Why: the general path ([`super::parse`] then [`Validate::validate`])
//! builds a `Vec` of (name, value) pairs per candidate, checks every pair
//! again in validation, and the batch then finds each declared column among
//! each candidate's pairs: at 1000 candidates × 30 features most of the
//! request's server time. Here each candidate's `features` object is read
//! straight into a row of a matrix of the *declared* columns
//! ([`FeatureColumns`]): a name is compared with the name at the same
//! position in the previous candidate (or, the first time, with the few
//! declared names) and its value written in place; every other feature is
//! checked (name, number or null, magnitude) and dropped, nothing
//! allocated. The candidates are read as columns and checked as gRPC's are
//! ([`super::columns::validate`]): each distinct artist, holder and campaign
//! once. The text is read by [`super::json_text`], a strict reader of its
//! own: serde_json's visitor per feature pair was three quarters of the
//! time. Strings are borrowed from the body; the context, each distinct
//! campaign and the rights holders keep serde_json and their derived
//! deserializers (they are not where the time goes).
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

use super::columns::{self, CandidateColumns, Columnar};
use super::json_text::{Key, Read, Reader};
use super::{
    FeatureColumns, MAX_FEATURES, RequestCampaign, RequestContext, RequestError, RequestHolder,
    ValidRequest, Validate, has_control,
};

/// The fast path did not take the body; the general path decides (and
/// names the error, if there is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

/// The `route` named at the top level of `body` (`Ok(None)` when there is
/// none). It stops at `candidates` when the route came before them; a route
/// after them (as a client that sorts its keys sends it) costs one skim of
/// the candidates: a search for their brackets and quotes, eight bytes at a
/// time, not a parse (nothing past the route is checked here; [`decode`]
/// reads the body whole).
///
/// # Errors
/// [`Refused`] when the top level is not an object with a `candidates` key,
/// or the route is not a plain string (the general path will say why).
pub fn route_hint(body: &[u8]) -> Result<Option<Cow<'_, str>>, Refused> {
    let text = std::str::from_utf8(body).map_err(|_| Refused)?;
    let mut r = Reader::new(text);
    if !r.open(b'{')? {
        return Err(Refused);
    }
    let (mut route, mut route_seen, mut candidates_seen) = (None, false, false);
    loop {
        match r.key()? {
            "route" => {
                route = if r.null()? {
                    None
                } else {
                    Some(Cow::Borrowed(r.plain()?))
                };
                route_seen = true;
                if candidates_seen {
                    break;
                }
            }
            // The route came first: the candidates are not scanned.
            "candidates" if route_seen => return Ok(route),
            "candidates" => {
                candidates_seen = true;
                r.skip()?;
            }
            _ => r.skip()?,
        }
        if !r.more(b'}')? {
            break;
        }
    }
    if candidates_seen {
        Ok(route)
    } else {
        Err(Refused)
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
    // The body checked as UTF-8 once, in one pass: every string is then
    // borrowed as it is. A body that is not UTF-8 is the general path's to
    // name.
    let text = std::str::from_utf8(body).map_err(|_| Refused)?;
    let mut r = Reader::new(text);
    let mut route: Option<Option<Cow<'a, str>>> = None;
    let mut context: Option<RequestContext<'a>> = None;
    let mut rows: Option<Rows<'a>> = None;
    let mut rights_holders: Option<Option<HashMap<Cow<'a, str>, RequestHolder>>> = None;
    let mut debug: Option<bool> = None;
    if r.open(b'{')? {
        loop {
            match r.key()? {
                // The route decided the columns ([`route_hint`] found it on
                // the same body, before or after the candidates); a second
                // `route` key is refused (the general path names it).
                "route" if route.is_none() => {
                    route = Some(if r.null()? {
                        None
                    } else {
                        Some(Cow::Borrowed(r.plain()?))
                    });
                }
                "context" if context.is_none() => {
                    context = Some(serde_json::from_str(r.object()?).map_err(|_| Refused)?);
                }
                "candidates" if rows.is_none() => {
                    rows = Some(candidates(&mut r, columns, max_candidates)?);
                }
                "rights_holders" if rights_holders.is_none() => {
                    rights_holders = Some(if r.null()? {
                        None
                    } else {
                        Some(serde_json::from_str(r.object()?).map_err(|_| Refused)?)
                    });
                }
                "debug" if debug.is_none() => debug = Some(r.boolean()?),
                _ => return Err(Refused),
            }
            if !r.more(b'}')? {
                break;
            }
        }
    }
    r.end()?;
    let (Some(context), Some(mut rows)) = (context, rows) else {
        return Err(Refused);
    };
    let values = std::mem::take(&mut rows.values);
    let campaigns = std::mem::take(&mut rows.campaigns);
    let mut valid = columns::validate(
        Columnar {
            route: route.flatten(),
            context,
            candidates: rows,
            campaigns,
            rights_holders: rights_holders.flatten(),
            debug: debug.unwrap_or(false),
        },
        max_candidates,
    )
    .ok_or(Refused)?;
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

/// The candidates as columns, read in one pass; the feature matrix holds
/// the declared columns only, and the candidates' campaigns are a table
/// (one entry per distinct campaign text) with an index per candidate.
struct Rows<'a> {
    ids: Vec<&'a str>,
    relevance: Vec<f64>,
    artists: Vec<&'a str>,
    holders: Vec<&'a str>,
    impressions: Vec<Option<u32>>,
    promoted: Vec<Option<u32>>,
    campaign: Vec<i64>,
    values: Vec<f64>,
    campaigns: Vec<RequestCampaign<'a>>,
}

impl<'a> CandidateColumns<'a> for Rows<'a> {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn id(&self, i: usize) -> &'a str {
        self.ids[i]
    }
    fn relevance(&self, i: usize) -> f64 {
        self.relevance[i]
    }
    fn artist(&self, i: usize) -> &'a str {
        self.artists[i]
    }
    fn rights_holder(&self, i: usize) -> &'a str {
        self.holders[i]
    }
    fn impressions_24h(&self, i: usize) -> Option<u32> {
        self.impressions[i]
    }
    fn session_promoted(&self, i: usize) -> Option<u32> {
        self.promoted[i]
    }
    fn campaign(&self, i: usize) -> i64 {
        self.campaign[i]
    }
    /// None here: the matrix goes to [`ValidRequest::feature_columns`]
    /// (checked as it was read), not to each candidate.
    fn features(&self) -> (&'a [String], &'a [f64]) {
        (&[], &[])
    }
}

/// A candidate field, once each.
const ID: u8 = 1;
const RELEVANCE: u8 = 2;
const ARTIST: u8 = 4;
const HOLDER: u8 = 8;
const IMPRESSIONS: u8 = 16;
const PROMOTED: u8 = 32;
const CAMPAIGN: u8 = 64;
const FEATURES: u8 = 128;

/// The candidate field named `key` (one of the constants above).
fn field_of(key: &str) -> Read<u8> {
    Ok(match key {
        "id" => ID,
        "relevance" => RELEVANCE,
        "artist" => ARTIST,
        "rights_holder" => HOLDER,
        "impressions_24h" => IMPRESSIONS,
        "session_promoted" => PROMOTED,
        "campaign" => CAMPAIGN,
        "features" => FEATURES,
        _ => return Err(Refused),
    })
}

/// A feature name not among the columns.
const UNDECLARED: usize = usize::MAX;

/// The `candidates` array.
fn candidates<'a>(r: &mut Reader<'a>, columns: &[&str], max: usize) -> Read<Rows<'a>> {
    let width = columns.len();
    let mut k = Rows {
        ids: Vec::with_capacity(256),
        relevance: Vec::with_capacity(256),
        artists: Vec::with_capacity(256),
        holders: Vec::with_capacity(256),
        impressions: Vec::with_capacity(256),
        promoted: Vec::with_capacity(256),
        campaign: Vec::with_capacity(256),
        values: Vec::with_capacity(256 * width),
        campaigns: Vec::new(),
    };
    // Each distinct campaign text is parsed once: the last one used, then
    // the others by their text.
    let mut last_campaign: Option<(&'a str, i64)> = None;
    let mut campaign_of: foldhash::HashMap<&'a str, i64> = Default::default();
    // The name seen at each position of the previous `features` object and
    // its column: clients write every candidate's features in one order, so
    // a name is usually one comparison away from its column.
    let mut names: Vec<(Key<'a>, usize)> = Vec::new();
    // The same for the candidates' own fields.
    let mut fields: Vec<(Key<'a>, u8)> = Vec::new();
    if !r.open(b'[')? {
        return Ok(k);
    }
    loop {
        // More than the route allows: validation refuses it (and a huge
        // array is not read to the end here).
        if k.ids.len() == max {
            return Err(Refused);
        }
        let row = k.values.len();
        k.values.resize(row + width, f64::NAN);
        let mut seen = 0u8;
        let mut once = |field: u8| {
            let first = seen & field == 0;
            seen |= field;
            if first { Ok(()) } else { Err(Refused) }
        };
        let (mut artist, mut holder, mut campaign) = ("", "", -1);
        let (mut impressions, mut promoted) = (None, None);
        if r.open(b'{')? {
            let mut at = 0;
            loop {
                // The field at this position in the previous candidate, or
                // the key read and named.
                let field = match fields.get(at) {
                    Some((key, field)) if r.known_key(key) => *field,
                    _ => {
                        let raw = r.key()?;
                        let field = field_of(raw)?;
                        if at < fields.len() {
                            fields[at] = (Key::new(raw), field);
                        } else if at == fields.len() {
                            fields.push((Key::new(raw), field));
                        }
                        field
                    }
                };
                at += 1;
                match field {
                    ID => {
                        once(ID)?;
                        k.ids.push(r.plain()?);
                    }
                    RELEVANCE => {
                        once(RELEVANCE)?;
                        k.relevance.push(r.number()?);
                    }
                    ARTIST => {
                        once(ARTIST)?;
                        artist = r.plain()?;
                    }
                    HOLDER => {
                        once(HOLDER)?;
                        holder = r.plain()?;
                    }
                    IMPRESSIONS => {
                        once(IMPRESSIONS)?;
                        impressions = if r.null()? { None } else { Some(r.count()?) };
                    }
                    PROMOTED => {
                        once(PROMOTED)?;
                        promoted = if r.null()? { None } else { Some(r.count()?) };
                    }
                    CAMPAIGN => {
                        once(CAMPAIGN)?;
                        if !r.null()? {
                            let text = r.object()?;
                            campaign = match last_campaign {
                                Some((t, j)) if t == text => j,
                                _ => match campaign_of.get(text) {
                                    Some(&j) => j,
                                    None => {
                                        let j = k.campaigns.len() as i64;
                                        k.campaigns
                                            .push(serde_json::from_str(text).map_err(|_| Refused)?);
                                        campaign_of.insert(text, j);
                                        j
                                    }
                                },
                            };
                            last_campaign = Some((text, campaign));
                        }
                    }
                    FEATURES => {
                        once(FEATURES)?;
                        features(r, columns, &mut k.values[row..], &mut names)?;
                    }
                    _ => return Err(Refused),
                }
                if !r.more(b'}')? {
                    break;
                }
            }
        }
        // An id and a relevance are required (the general path names the
        // one missing).
        if seen & (ID | RELEVANCE) != ID | RELEVANCE {
            return Err(Refused);
        }
        k.artists.push(artist);
        k.holders.push(holder);
        k.impressions.push(impressions);
        k.promoted.push(promoted);
        k.campaign.push(campaign);
        if !r.more(b']')? {
            return Ok(k);
        }
    }
}

/// One `features` object: declared columns written into `row` (a later
/// value of a name replaces an earlier one, `null` writes nothing: the
/// batch's own rule), the others checked (name, number or null, magnitude)
/// and dropped, nothing allocated.
fn features<'a>(
    r: &mut Reader<'a>,
    columns: &[&str],
    row: &mut [f64],
    names: &mut Vec<(Key<'a>, usize)>,
) -> Read<()> {
    if !r.open(b'{')? {
        return Ok(());
    }
    let mut at = 0;
    loop {
        if at == MAX_FEATURES {
            return Err(Refused);
        }
        let j = match names.get(at) {
            // The name this position had before: already checked.
            Some((key, j)) if r.known_key(key) => *j,
            _ => {
                let name = r.string()?;
                r.expect(b':')?;
                if name.escaped {
                    column(columns, &Reader::unescape(name)?)?
                } else {
                    let j = column(columns, name.raw)?;
                    let key = (Key::new(name.raw), j);
                    if at < names.len() {
                        names[at] = key;
                    } else if at == names.len() {
                        names.push(key);
                    }
                    j
                }
            }
        };
        if r.null()? {
        } else if let Some(cell) = row.get_mut(j) {
            let v = r.number()?;
            if !oasis_contract::within_magnitude(v) {
                return Err(Refused);
            }
            *cell = v;
        } else if !r.number_within()? {
            return Err(Refused);
        }
        at += 1;
        if !r.more(b'}')? {
            return Ok(());
        }
    }
}

/// The column of a feature `name` ([`UNDECLARED`] when it is none), once
/// the name is checked as validation checks it: 1-64 bytes, no control
/// characters.
fn column(columns: &[&str], name: &str) -> Read<usize> {
    if name.is_empty() || name.len() > oasis_contract::MAX_NAME_BYTES || has_control(name) {
        return Err(Refused);
    }
    Ok(columns
        .iter()
        .position(|c| *c == name)
        .unwrap_or(UNDECLARED))
}
