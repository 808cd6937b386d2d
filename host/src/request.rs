//! The scoring request as PZN sends it (JSON), parsed and checked.
//!
//! The request's types are the wire format's ([`oasis_wire::request`],
//! re-exported here): a `context` object and a `candidates` array of objects
//! with an id, a relevance, an optional inline `campaign` and `features` by
//! name, strings borrowed from the body. This module parses a body into them
//! ([`parse`]) and checks them against the contract ([`Validate`]), packing
//! what the contract packs into a [`ValidRequest`]; [`crate::columnar`] then
//! builds the contract's columnar form with only the columns the policy
//! asked for.
//!
//! Errors name the field: `candidates[3].relevance: must be finite`.

use std::borrow::Cow;
use std::collections::HashMap;

use foldhash::{HashMapExt, HashSetExt};

use crate::bindings::{WitCampaign, wit_surface_set};

#[cfg(test)]
mod agreement;
pub(crate) mod columns;
pub mod json;
mod json_text;
pub mod packed;
pub mod proto_view;

pub use oasis_contract::{MAX_FEATURES, MAX_ID_BYTES, MAX_MAGNITUDE, Surface, market_code};
pub use oasis_wire::request::{
    Features, RequestCampaign, RequestCandidate, RequestContext, RequestHolder, ScoreRequest,
};

/// A request that is malformed (400) or well-formed but invalid (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not JSON of the right shape.
    #[error("malformed request: {message} (at `{path}`)")]
    Malformed {
        /// JSON path of the offending value.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A field has a value the contract does not allow.
    #[error("invalid request: `{field}` {reason}")]
    Invalid {
        /// JSON path of the field, e.g. `candidates[3].relevance`.
        field: String,
        /// Why it is invalid.
        reason: String,
    },
}

impl RequestError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        RequestError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Parses a request body, naming the path of any error.
///
/// # Errors
/// [`RequestError::Malformed`] with the JSON path and serde's message.
///
/// # Examples
/// ```
/// let body = br#"{"context": {"request_id": "r1", "listener_id": "u1", "session_id": "s1",
///   "surface": "radio", "market": "SE", "timestamp_ms": 0},
///   "candidates": [{"id": "t1", "relevance": "high"}]}"#;
/// let err = oasis::request::parse(body).unwrap_err();
/// assert!(err.to_string().contains("candidates[0].relevance"), "{err}");
/// ```
#[inline]
pub fn parse(body: &[u8]) -> Result<ScoreRequest<'_>, RequestError> {
    oasis_wire::request::from_slice(body).map_err(RequestError::from)
}

impl From<oasis_wire::request::ParseError> for RequestError {
    fn from(e: oasis_wire::request::ParseError) -> Self {
        RequestError::Malformed {
            path: e.path,
            message: e.message,
        }
    }
}

/// Checking a parsed [`ScoreRequest`] against the contract. A trait because
/// the request's type is the wire crate's; `use oasis::request::Validate`
/// to call it as a method.
pub trait Validate<'a> {
    /// Checks what the types cannot (sizes, finiteness, windows, codes,
    /// unique candidate ids, agreeing campaign copies) and packs what the
    /// contract packs (markets, surface sets, campaigns sent once), so that
    /// every later step works on a [`ValidRequest`] with no precondition left.
    ///
    /// # Errors
    /// [`RequestError::Invalid`] naming the first offending field.
    fn validate(self, max_candidates: usize) -> Result<ValidRequest<'a>, RequestError>;
}

impl<'a> Validate<'a> for ScoreRequest<'a> {
    fn validate(self, max_candidates: usize) -> Result<ValidRequest<'a>, RequestError> {
        let c = &self.context;
        let mut names_checked = None;
        let market = check_context(c, &mut names_checked)?;
        if self.candidates.len() > max_candidates {
            return Err(RequestError::invalid(
                "candidates",
                format!(
                    "has {} entries; the limit is {max_candidates}",
                    self.candidates.len()
                ),
            ));
        }
        let mut ids = foldhash::HashSet::with_capacity(self.candidates.len());
        let mut table = CampaignTable::default();
        let mut campaign_index = Vec::with_capacity(self.candidates.len());
        let n = self.candidates.len();
        let mut artists = Keys::with_capacity(n);
        let mut holders = Keys::with_capacity(64);
        let mut artist = Vec::with_capacity(n);
        let mut holder = Vec::with_capacity(n);
        let mut impressions_24h = Vec::with_capacity(n);
        let mut session_promoted = Vec::with_capacity(n);
        let mut counts_missing = false;
        for (i, cand) in self.candidates.iter().enumerate() {
            // Field paths are built only when reporting an error.
            let at = |f: &'static str| move || format!("candidates[{i}].{f}");
            check_id(at("id"), &cand.id, true)?;
            if !ids.insert(&*cand.id) {
                return Err(RequestError::invalid(
                    at("id")(),
                    format!("{:?} appears twice", cand.id),
                ));
            }
            if !oasis_contract::valid_relevance(cand.relevance) {
                return Err(RequestError::invalid(
                    at("relevance")(),
                    format!(
                        "must be a finite number in [0, 1e9], got {}",
                        cand.relevance
                    ),
                ));
            }
            check_id(at("artist"), &cand.artist, false)?;
            check_id(at("rights_holder"), &cand.rights_holder, false)?;
            check_features(at("features"), &cand.features, &mut names_checked)?;
            let index = match &cand.campaign {
                None => -1,
                Some(camp) => table.index(i, camp, c.timestamp_ms)?,
            };
            campaign_index.push(index);
            artist.push(artists.intern(&cand.artist, i));
            holder.push(holders.intern(&cand.rights_holder, i));
            counts_missing |= cand.impressions_24h.is_none() || cand.session_promoted.is_none();
            impressions_24h.push(cand.impressions_24h.unwrap_or(0));
            session_promoted.push(cand.session_promoted.unwrap_or(0));
        }
        let (exposure_share_7d, holders_sent) = holder_exposure(&self.rights_holders, &holders)?;
        let holder_first = std::mem::take(&mut holders.first);
        let CampaignTable {
            campaigns,
            sent: campaign_sent,
            first: campaign_first,
            seen,
        } = table;
        drop((holders, artists, seen));
        let seed = self.seed();
        let slate_size = c
            .slate_size
            .map_or(n, |s| (s as usize).min(n))
            .try_into()
            .unwrap_or(u32::MAX);
        Ok(ValidRequest {
            request: self,
            market,
            seed,
            slate_size,
            campaigns,
            campaign_sent,
            campaign_first,
            campaign_index,
            artist,
            holder,
            holder_first,
            exposure_share_7d,
            holders_sent,
            impressions_24h,
            session_promoted,
            counts_missing,
            columns: None,
        })
    }
}

/// Checks the context's ids, market, features and slate size; the packed
/// market.
fn check_context<'a>(
    c: &'a RequestContext<'a>,
    names_checked: &mut Option<&'a [String]>,
) -> Result<u16, RequestError> {
    for (name, v) in [
        ("request_id", &c.request_id),
        ("listener_id", &c.listener_id),
        ("session_id", &c.session_id),
    ] {
        check_id(|| format!("context.{name}"), v, true)?;
    }
    let market = market_code(&c.market).ok_or_else(|| {
        RequestError::invalid(
            "context.market",
            format!(
                "must be an ISO 3166-1 alpha-2 code such as \"SE\", got {:?}",
                c.market
            ),
        )
    })?;
    check_features(|| "context.features".into(), &c.features, names_checked)?;
    if c.slate_size == Some(0) {
        return Err(RequestError::invalid(
            "context.slate_size",
            "must be at least 1 (the number of top-ranked candidates shown)",
        ));
    }
    Ok(market)
}

/// The distinct campaigns of a request, each checked and packed once, in
/// order of first appearance.
#[derive(Default)]
struct CampaignTable<'r, 'a> {
    /// Campaign id -> (its first copy, its index in `campaigns`).
    seen: foldhash::HashMap<&'r str, (&'r RequestCampaign<'a>, i32)>,
    campaigns: Vec<WitCampaign>,
    sent: Vec<Sent>,
    first: Vec<usize>,
}

impl<'r, 'a> CampaignTable<'r, 'a> {
    /// The index of candidate `i`'s campaign `camp`: checked and packed the
    /// first time it is seen; later copies must agree with the first, or the
    /// policy would see whichever came first.
    fn index(
        &mut self,
        i: usize,
        camp: &'r RequestCampaign<'a>,
        now_ms: i64,
    ) -> Result<i32, RequestError> {
        let field = || format!("candidates[{i}].campaign");
        match self.seen.get(&*camp.id) {
            Some((first, _)) if *first != camp => Err(RequestError::invalid(
                field(),
                format!(
                    "campaign {:?} differs from an earlier candidate's copy of it",
                    camp.id
                ),
            )),
            Some((_, index)) => Ok(*index),
            None => {
                let key = self.campaigns.len() as u32;
                self.campaigns
                    .push(check_campaign(&field(), camp, key, now_ms)?);
                self.first.push(i);
                self.sent.push(Sent {
                    delivered: camp.delivered.is_some(),
                    pacing: camp.pacing_integral.is_some()
                        || camp.pacing_last_error.is_some()
                        || camp.pacing_updated_ms.is_some(),
                });
                let index = key as i32;
                self.seen.insert(&camp.id, (camp, index));
                Ok(index)
            }
        }
    }
}

/// Checks the request's rights-holder table and lays it out by holder key:
/// each holder's 7-day exposure share (NaN when unknown) and whether the
/// request sent it. Holders of no candidate are checked and ignored.
fn holder_exposure(
    table: &Option<HashMap<Cow<'_, str>, RequestHolder>>,
    holders: &Keys<'_>,
) -> Result<(Vec<f64>, Vec<bool>), RequestError> {
    let mut exposure_share_7d = vec![f64::NAN; holders.first.len()];
    let mut holders_sent = vec![false; holders.first.len()];
    for (id, h) in table.iter().flatten() {
        let field = || format!("rights_holders.{id}.exposure_share_7d");
        check_id(|| format!("rights_holders.{id}"), id, true)?;
        if !(0.0..=1.0).contains(&h.exposure_share_7d) {
            return Err(RequestError::invalid(field(), "must be a number in [0, 1]"));
        }
        if let Some(&k) = holders.keys.get(&**id) {
            exposure_share_7d[k as usize] = h.exposure_share_7d;
            holders_sent[k as usize] = true;
        }
    }
    Ok((exposure_share_7d, holders_sent))
}

/// A request that passed [`Validate::validate`], with what the contract
/// packs already packed. Reads as the [`ScoreRequest`] it wraps.
#[derive(Debug)]
pub struct ValidRequest<'a> {
    request: ScoreRequest<'a>,
    market: u16,
    seed: u64,
    slate_size: u32,
    campaigns: Vec<WitCampaign>,
    /// Per campaign, which delivery state the request sent, and the first
    /// candidate in it (whose copy of the campaign is the one packed).
    campaign_sent: Vec<Sent>,
    campaign_first: Vec<usize>,
    campaign_index: Vec<i32>,
    /// Per candidate, its artist's and rights holder's small integer keys.
    artist: Vec<u32>,
    holder: Vec<u32>,
    /// Per rights-holder key, the first candidate with it (whose
    /// `rights_holder` is the holder's id).
    holder_first: Vec<usize>,
    /// Per rights-holder key: the 7-day exposure share (NaN unknown), and
    /// whether the request sent it.
    exposure_share_7d: Vec<f64>,
    holders_sent: Vec<bool>,
    /// Per candidate: the delivery counts in effect (sent, filled or 0).
    impressions_24h: Vec<u32>,
    session_promoted: Vec<u32>,
    /// Whether some candidate did not send its counts.
    counts_missing: bool,
    /// The candidates' features already laid out as columns (the JSON fast
    /// path, [`json`]), whose candidates then carry no features of their own.
    columns: Option<FeatureColumns>,
}

/// Candidate features decoded straight into columns: the values of `names`
/// (the declared columns of every policy that may see the request), one row
/// per candidate, NaN where a candidate has no value.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureColumns {
    names: Vec<String>,
    values: Vec<f64>,
}

impl FeatureColumns {
    /// The column names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Row-major values: `names().len()` per candidate.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// The values of `columns` (each one of [`FeatureColumns::names`]),
    /// row-major for `n` candidates: the matrix itself when the names are
    /// the same, else gathered column by column. `None` when a column is
    /// not among the names.
    pub fn select(&self, columns: &[String], n: usize) -> Option<Vec<f64>> {
        if columns == self.names.as_slice() {
            return Some(self.values.clone());
        }
        let at = columns
            .iter()
            .map(|c| self.names.iter().position(|n| n == c))
            .collect::<Option<Vec<usize>>>()?;
        let (w, width) = (self.names.len(), columns.len());
        let mut out = vec![f64::NAN; n * width];
        for (row, src) in out
            .chunks_exact_mut(width.max(1))
            .zip(self.values.chunks(w.max(1)))
        {
            for (v, &p) in row.iter_mut().zip(&at) {
                *v = src[p];
            }
        }
        Some(out)
    }
}

/// Which delivery state a request sent for one campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// `delivered` was sent.
    pub delivered: bool,
    /// Some of the pacing state was sent (the three fields go together).
    pub pacing: bool,
}

/// Ids interned as small integer keys in order of first appearance. An
/// empty id (unknown artist or holder) gets a key of its own, so that
/// unknown tracks are never grouped together by diversity or fairness rules.
pub(crate) struct Keys<'k> {
    keys: foldhash::HashMap<&'k str, u32>,
    /// Per key, the first candidate index with it.
    first: Vec<usize>,
}

impl<'k> Keys<'k> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Keys {
            keys: foldhash::HashMap::with_capacity(n),
            first: Vec::with_capacity(n),
        }
    }

    pub(crate) fn intern(&mut self, id: &'k str, candidate: usize) -> u32 {
        let next = self.first.len() as u32;
        if !id.is_empty() {
            let key = *self.keys.entry(id).or_insert(next);
            if key != next {
                return key;
            }
        }
        self.first.push(candidate);
        next
    }
}

impl<'a> ValidRequest<'a> {
    /// The market, packed ([`market_code`]).
    pub fn market(&self) -> u16 {
        self.market
    }

    /// The seed of all of the policy's randomness ([`ScoreRequest::seed`]).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The distinct campaigns, in order of first appearance, in the
    /// contract's form (`key` = position).
    pub fn campaigns(&self) -> &[WitCampaign] {
        &self.campaigns
    }

    /// Per candidate, its index in [`ValidRequest::campaigns`], -1 for an
    /// organic track.
    pub fn campaign_index(&self) -> &[i32] {
        &self.campaign_index
    }

    /// The parsed request.
    pub fn request(&self) -> &ScoreRequest<'a> {
        &self.request
    }

    /// Ranks shown: `context.slate_size` capped at the candidate count, or
    /// the candidate count.
    pub fn slate_size(&self) -> u32 {
        self.slate_size
    }

    /// Per campaign (as [`ValidRequest::campaigns`]), which delivery state
    /// the request sent.
    pub fn campaign_sent(&self) -> &[Sent] {
        &self.campaign_sent
    }

    /// The id of campaign `index` (of [`ValidRequest::campaigns`]).
    pub fn campaign_id(&self, index: usize) -> &str {
        let first = &self.request.candidates[self.campaign_first[index]];
        first.campaign.as_ref().map_or("", |c| &c.id)
    }

    /// Per candidate, its artist's small integer key.
    pub fn artist_keys(&self) -> &[u32] {
        &self.artist
    }

    /// Per candidate, its rights holder's small integer key.
    pub fn holder_keys(&self) -> &[u32] {
        &self.holder
    }

    /// The id of rights-holder key `key` (empty for an unknown holder).
    pub fn holder_id(&self, key: u32) -> &str {
        &self.request.candidates[self.holder_first[key as usize]].rights_holder
    }

    /// Number of distinct rights-holder keys.
    pub fn holder_count(&self) -> usize {
        self.holder_first.len()
    }

    /// Per rights-holder key, its 7-day exposure share (NaN unknown).
    pub fn exposure_share_7d(&self) -> &[f64] {
        &self.exposure_share_7d
    }

    /// Per rights-holder key, whether the request sent its exposure share.
    pub fn holders_sent(&self) -> &[bool] {
        &self.holders_sent
    }

    /// Per candidate, promoted impressions to this listener in 24 hours.
    pub fn impressions_24h(&self) -> &[u32] {
        &self.impressions_24h
    }

    /// Per candidate, promoted plays in this session.
    pub fn session_promoted(&self) -> &[u32] {
        &self.session_promoted
    }

    /// Whether some candidate did not send its delivery counts.
    pub fn counts_missing(&self) -> bool {
        self.counts_missing
    }

    /// The candidates' features as columns, when they were decoded so (the
    /// JSON fast path): then [`RequestCandidate::features`] are empty and
    /// [`crate::columnar::batch`] reads these instead.
    pub fn feature_columns(&self) -> Option<&FeatureColumns> {
        self.columns.as_ref()
    }

    /// Mutable access to the state the host may fill in
    /// ([`crate::delivery::Fill::apply`]).
    pub(crate) fn state_mut(&mut self) -> StateMut<'_> {
        StateMut {
            campaigns: &mut self.campaigns,
            exposure_share_7d: &mut self.exposure_share_7d,
            impressions_24h: &mut self.impressions_24h,
            session_promoted: &mut self.session_promoted,
        }
    }
}

/// The parts of a [`ValidRequest`] the host fills from its state store.
pub(crate) struct StateMut<'r> {
    pub campaigns: &'r mut [WitCampaign],
    pub exposure_share_7d: &'r mut [f64],
    pub impressions_24h: &'r mut [u32],
    pub session_promoted: &'r mut [u32],
}

impl<'a> std::ops::Deref for ValidRequest<'a> {
    type Target = ScoreRequest<'a>;
    fn deref(&self) -> &ScoreRequest<'a> {
        &self.request
    }
}

/// Whether `v` holds a control character (Unicode category Cc: U+0000 to
/// U+001F and U+007F to U+009F), looked for in the UTF-8 bytes: the first
/// two ranges are single bytes, the third is `0xC2` followed by `0x80..=0x9F`
/// (`0xC2` is never a continuation byte). Replaces `chars().any(is_control)`,
/// which decoded every character of every id (~4% of a Parquet replay).
///
/// Two steps: a branch-free pass for a byte that *may* start a control
/// character (`< 0x20`, `0x7F`, `0xC2`), and only when one is found the
/// exact check. The first pass reads eight bytes at a time as one `u64`
/// ([`suspect_bytes`]): ids are short (a 30-byte track id is four words), so
/// the compiler's vector loop over single bytes never got past its scalar
/// tail, and that loop was ~5% of a one-core Parquet replay.
#[inline]
pub(crate) fn has_control(v: &str) -> bool {
    let b = v.as_bytes();
    let word = |w: &[u8]| suspect_bytes(u64::from_le_bytes(w.try_into().expect("8 bytes")));
    let suspect = if b.len() >= 8 {
        // Whole words, then the last eight bytes (overlapping the last
        // whole word: the test is an OR). Not a padded copy of the tail: its
        // load waited on the copy's narrower stores (~a fifth of the check).
        let words = b.chunks_exact(8).fold(0, |acc, w| acc | word(w));
        words | word(&b[b.len() - 8..])
    } else {
        b.iter().fold(0, |acc, &c| {
            acc | u64::from((c < 0x20) | (c == 0x7f) | (c == 0xc2))
        })
    };
    suspect != 0
        && b.iter().enumerate().any(|(i, &c)| {
            c < 0x20
                || c == 0x7f
                || (c == 0xc2 && b.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
        })
}

/// Non-zero exactly when some byte of `x` is below `0x20`, `0x7F` or
/// `0xC2` (the SWAR tests "has a byte less than n" and "has a zero byte" of
/// *Bit Twiddling Hacks*: a borrow starts only at a byte that matches, so an
/// `x` with none gives 0, and the lowest match always sets its high bit).
#[inline]
fn suspect_bytes(x: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    below(x, 0x20) | below(x ^ (ONES * 0x7f), 1) | below(x ^ (ONES * 0xc2), 1)
}

/// Checks an id the contract bounds: not empty when `required`, no control
/// characters, at most [`MAX_ID_BYTES`]; the error names `field()`.
pub(crate) fn check_id(
    field: impl Fn() -> String,
    v: &str,
    required: bool,
) -> Result<(), RequestError> {
    if required && v.is_empty() {
        return Err(RequestError::invalid(field(), "must not be empty"));
    }
    if has_control(v) {
        return Err(RequestError::invalid(
            field(),
            "must not contain control characters",
        ));
    }
    if v.len() > MAX_ID_BYTES {
        return Err(RequestError::invalid(
            field(),
            format!("is longer than {MAX_ID_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Checks feature names and values. The names of packed rows are shared by
/// every row, so they are checked once: `names_checked` is the last checked
/// name list.
fn check_features<'a>(
    field: impl Fn() -> String,
    f: &Features<'a>,
    names_checked: &mut Option<&'a [String]>,
) -> Result<(), RequestError> {
    let check_value = |name: &str, v: f64| {
        if oasis_contract::within_magnitude(v) {
            Ok(())
        } else {
            Err(RequestError::invalid(
                format!("{}.{name}", field()),
                "must be null or a finite number of magnitude at most 1e9",
            ))
        }
    };
    match f {
        Features::Named(pairs) => {
            for (name, v) in pairs {
                check_feature_name(&field, name)?;
                if let Some(v) = v {
                    check_value(name, *v)?;
                }
            }
        }
        Features::Row { names, values } => {
            if !names_checked.is_some_and(|c| std::ptr::eq(c, *names)) {
                for name in names.iter() {
                    check_feature_name(&field, name)?;
                }
                *names_checked = Some(names);
            }
            // Branch-free over the row (NaN = missing passes: `NaN > x` is
            // false); the offender is looked for only on failure.
            let out_of_range = values.iter().fold(false, |acc, v| {
                acc | (v.abs() > oasis_contract::MAX_MAGNITUDE)
            });
            if out_of_range {
                for (name, v) in names.iter().zip(values.iter()) {
                    if !v.is_nan() {
                        check_value(name, *v)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_feature_name(field: &impl Fn() -> String, name: &str) -> Result<(), RequestError> {
    if name.is_empty() || name.len() > oasis_contract::MAX_NAME_BYTES || has_control(name) {
        return Err(RequestError::invalid(
            field(),
            format!("feature name {name:?} must be 1-64 bytes without control characters"),
        ));
    }
    Ok(())
}

/// Checks a campaign's first copy and packs it as the contract's campaign `key`.
fn check_campaign(
    field: &str,
    c: &RequestCampaign,
    key: u32,
    now_ms: i64,
) -> Result<WitCampaign, RequestError> {
    check_id(|| format!("{field}.id"), &c.id, true)?;
    if c.start_ms >= c.end_ms {
        return Err(RequestError::invalid(
            format!("{field}.end_ms"),
            format!("must be after start_ms ({} >= {})", c.start_ms, c.end_ms),
        ));
    }
    for (name, v) in [
        ("delivery_target", Some(c.delivery_target)),
        ("delivered", c.delivered),
        ("expected_by_now", c.expected_by_now),
    ] {
        let Some(v) = v else { continue };
        if !v.is_finite() || v < 0.0 {
            return Err(RequestError::invalid(
                format!("{field}.{name}"),
                "must be a finite number >= 0",
            ));
        }
    }
    for (name, v) in [
        ("pacing_integral", c.pacing_integral),
        ("pacing_last_error", c.pacing_last_error),
    ] {
        let Some(v) = v else { continue };
        if !v.is_finite() {
            return Err(RequestError::invalid(
                format!("{field}.{name}"),
                "must be a finite number",
            ));
        }
    }
    let markets = c
        .markets
        .iter()
        .enumerate()
        .map(|(j, m)| {
            market_code(m).ok_or_else(|| {
                RequestError::invalid(
                    format!("{field}.markets[{j}]"),
                    format!("must be an ISO 3166-1 alpha-2 code, got {m:?}"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(WitCampaign {
        key,
        start_ms: c.start_ms,
        end_ms: c.end_ms,
        surfaces: wit_surface_set(match &c.surfaces {
            Some(list) => list.iter().fold(0, |set, s| set | s.bit()),
            None => oasis_contract::surface::DEFAULT_CAMPAIGN_SURFACES,
        }),
        markets,
        delivery_target: c.delivery_target,
        delivered: c.delivered.unwrap_or(0.0),
        expected_by_now: c
            .expected_by_now
            .unwrap_or_else(|| c.linear_schedule(now_ms)),
        pacing_integral: c.pacing_integral.unwrap_or(0.0),
        pacing_last_error: c.pacing_last_error.unwrap_or(0.0),
        pacing_updated_ms: c.pacing_updated_ms.unwrap_or(0).max(0),
        commission_bps: c.commission_bps,
    })
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn control_characters_are_found_in_the_bytes_as_char_is_control_finds_them() {
        // Every code point around the three Cc ranges, alone and inside an
        // id, with multi-byte neighbours (0xC2 leads U+0080..U+00BF).
        let points = (0u32..0x250).chain([0x2028, 0x1F3B5, 0xFEFF]);
        for c in points.filter_map(char::from_u32) {
            for v in [
                c.to_string(),
                format!("a{c}b"),
                format!("é{c}¡"),
                format!("\u{a0}{c}"),
            ] {
                assert_eq!(has_control(&v), v.chars().any(char::is_control), "{v:?}");
            }
        }
        // Every code point, alone and framed; and ids long enough for the
        // vector pass, with the character at each position.
        let mut buf = [0u8; 4];
        for c in (0..=0x10ffffu32).filter_map(char::from_u32) {
            let s = c.encode_utf8(&mut buf);
            assert_eq!(has_control(s), c.is_control(), "{c:?}");
            assert_eq!(has_control(&format!("a{s}b")), c.is_control(), "{c:?}");
        }
        for c in ['\0', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}', '\u{a0}', 'é'] {
            for len in (1..=24).chain([70]) {
                for at in 0..len {
                    let v: String = (0..len).map(|i| if i == at { c } else { 'x' }).collect();
                    assert_eq!(has_control(&v), c.is_control(), "{c:?} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn suspect_words_are_exactly_those_with_a_suspect_byte() {
        // Every pair of byte values at every pair of positions (the rest one
        // of several fillers): a borrow from one byte must neither hide nor
        // fake a match in another.
        let suspect = |b: u8| b < 0x20 || b == 0x7f || b == 0xc2;
        for filler in [b'a', 0x20, 0x80, 0xc3, 0xff] {
            for (i, j) in (0..8).flat_map(|i| (i + 1..8).map(move |j| (i, j))) {
                for x in 0..=255u8 {
                    for y in 0..=255u8 {
                        let mut w = [filler; 8];
                        w[i] = x;
                        w[j] = y;
                        assert_eq!(
                            suspect_bytes(u64::from_le_bytes(w)) != 0,
                            w.iter().any(|&b| suspect(b)),
                            "{w:02x?}"
                        );
                    }
                }
            }
        }
    }

    const GOOD: &str = r#"{
        "context": {"request_id": "r1", "listener_id": "u1", "session_id": "s1",
                    "surface": "daily_mix", "market": "se", "timestamp_ms": 1000,
                    "features": {"local_hour": 20, "skip_rate": null}},
        "candidates": [
            {"id": "t1", "relevance": 0.5, "artist": "a1", "rights_holder": "h1",
             "features": {"p_skip": 0.2},
             "campaign": {"id": "c1", "start_ms": 0, "end_ms": 2000, "delivery_target": 10,
                          "markets": ["SE"], "surfaces": ["radio", "daily_mix"]}},
            {"id": "t2", "relevance": 0.4}
        ]}"#;

    fn invalid_field(body: &str) -> String {
        let req = parse(body.as_bytes()).unwrap();
        match req.validate(100) {
            Err(RequestError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_good_request_borrowing_strings() {
        let req = parse(GOOD.as_bytes()).unwrap().validate(100).unwrap();
        assert_eq!(req.candidates.len(), 2);
        assert!(matches!(req.candidates[0].id, Cow::Borrowed("t1")));
        assert_eq!(req.context.surface, Surface::DailyMix);
        assert_eq!(
            req.context.features.iter().nth(1),
            Some(("skip_rate", None))
        );
        assert_eq!(req.seed(), parse(GOOD.as_bytes()).unwrap().seed());
    }

    #[test]
    fn validation_packs_markets_surfaces_and_campaigns_once() {
        let body = GOOD.replace(
            r#"{"id": "t2", "relevance": 0.4}"#,
            r#"{"id": "t2", "relevance": 0.4},
               {"id": "t3", "relevance": 0.3, "campaign": {"id": "c1", "start_ms": 0, "end_ms": 2000,
                "delivery_target": 10, "markets": ["SE"], "surfaces": ["radio", "daily_mix"]}},
               {"id": "t4", "relevance": 0.2, "campaign": {"id": "c2", "start_ms": 0, "end_ms": 9,
                "delivery_target": 1}}"#,
        );
        let req = parse(body.as_bytes()).unwrap().validate(100).unwrap();
        assert_eq!(req.market(), market_code("SE").unwrap());
        assert_eq!(req.campaign_index(), [0, -1, 0, 1]);
        let c = req.campaigns();
        assert_eq!(
            c.len(),
            2,
            "a campaign shared by two candidates is packed once"
        );
        assert_eq!((c[0].key, c[1].key), (0, 1));
        assert_eq!(c[0].markets, [market_code("SE").unwrap()]);
        assert_eq!(
            c[0].surfaces,
            crate::bindings::wit_surface_set(Surface::Radio.bit() | Surface::DailyMix.bit())
        );
        assert_eq!(
            c[1].surfaces,
            crate::bindings::wit_surface_set(oasis_contract::surface::DEFAULT_CAMPAIGN_SURFACES)
        );
        assert_eq!(req.seed(), req.request().seed());
    }

    #[test]
    fn malformed_bodies_name_the_path() {
        let e = parse(br#"{"context": {"request_id": "r"}, "candidates": []}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `listener_id`"), "{e}");
        let bad = GOOD.replace(r#""surface": "daily_mix""#, r#""surface": "playlist""#);
        let e = parse(bad.as_bytes()).unwrap_err();
        assert!(
            matches!(&e, RequestError::Malformed { path, .. } if path == "context.surface"),
            "{e}"
        );
        let bad = GOOD.replace(r#""p_skip": 0.2"#, r#""p_skip": "x""#);
        let e = parse(bad.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("candidates[0].features"), "{e}");
        let e = parse(b"{\"candidates\": [").unwrap_err();
        assert!(matches!(e, RequestError::Malformed { .. }));
        let bad = GOOD.replacen(r#""relevance": 0.4"#, r#""relevance": 0.4, "colour": 1"#, 1);
        assert!(
            parse(bad.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("unknown field `colour`")
        );
    }

    #[test]
    fn invalid_values_name_the_field() {
        assert_eq!(
            invalid_field(&GOOD.replace(r#""market": "se""#, r#""market": "SWE""#)),
            "context.market"
        );
        assert_eq!(
            invalid_field(&GOOD.replace(r#""id": "t2""#, r#""id": "t1""#)),
            "candidates[1].id"
        );
        assert_eq!(
            invalid_field(&GOOD.replace(r#""id": "t2""#, r#""id": """#)),
            "candidates[1].id"
        );
        assert_eq!(
            invalid_field(&GOOD.replace(
                r#""request_id": "r1""#,
                r#""request_id": "r1\n2026 INFO forged""#
            )),
            "context.request_id"
        );
        assert_eq!(
            invalid_field(&GOOD.replace(r#""artist": "a1""#, r#""artist": "a\u001b[31m""#)),
            "candidates[0].artist"
        );
        assert_eq!(
            invalid_field(&GOOD.replace(r#""relevance": 0.4"#, r#""relevance": 1e300"#)),
            "candidates[1].relevance"
        );
        let negative = GOOD.replace(r#""relevance": 0.4"#, r#""relevance": -0.25"#);
        assert_eq!(invalid_field(&negative), "candidates[1].relevance");
        let e = parse(negative.as_bytes())
            .unwrap()
            .validate(100)
            .unwrap_err();
        assert!(e.to_string().contains("[0, 1e9], got -0.25"), "{e}");
        let zero = GOOD.replace(r#""relevance": 0.4"#, r#""relevance": 0"#);
        assert!(parse(zero.as_bytes()).unwrap().validate(100).is_ok());
        assert_eq!(
            invalid_field(&GOOD.replace(r#""p_skip": 0.2"#, r#""p_skip": -2e9"#)),
            "candidates[0].features.p_skip"
        );
        assert_eq!(
            invalid_field(&GOOD.replace(r#""end_ms": 2000"#, r#""end_ms": 0"#)),
            "candidates[0].campaign.end_ms"
        );
        assert_eq!(
            invalid_field(&GOOD.replace(r#""markets": ["SE"]"#, r#""markets": ["Sweden"]"#)),
            "candidates[0].campaign.markets[0]"
        );
        assert_eq!(
            invalid_field(&GOOD.replace(r#""delivery_target": 10"#, r#""delivery_target": -1"#)),
            "candidates[0].campaign.delivery_target"
        );
        let req = parse(GOOD.as_bytes()).unwrap();
        assert!(
            matches!(req.validate(1), Err(RequestError::Invalid { field, .. }) if field == "candidates")
        );
    }
}
