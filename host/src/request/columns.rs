//! Requests that arrive as columns — a gRPC message ([`super::packed`]), a
//! row of a Parquet decision log ([`crate::decision_log::columnar`]) —
//! checked on their columns and packed straight into the [`ValidRequest`].
//!
//! Why: [`Validate::validate`](super::Validate::validate) checks a request
//! candidate by candidate, as JSON delivers it: every artist and rights
//! holder id checked once per candidate, every candidate's copy of its
//! campaign looked up and compared with the first, every feature row on its
//! own. A columnar source already has one copy of each campaign, one list of
//! feature names and one matrix of values, so here each distinct artist and
//! holder is checked once, each campaign once, the names once and the matrix
//! as one slice (a one-core Parquet replay spent a fifth of its time in the
//! general validation, and a tenth rebuilding the request it validated).
//!
//! [`validate`] gives `None` on anything it does not accept; the caller then
//! takes the general path, which names the error, so a bad request gets
//! exactly the error it always got.

use std::borrow::Cow;
use std::collections::HashMap;

use foldhash::HashSetExt;

use super::{
    Features, Keys, MAX_FEATURES, RequestCampaign, RequestCandidate, RequestContext, RequestHolder,
    ScoreRequest, Sent, ValidRequest, check_campaign, check_context, check_feature_name, check_id,
    holder_exposure,
};

/// One request's candidates as columns, `len()` entries each.
pub(crate) trait CandidateColumns<'a> {
    /// Number of candidates.
    fn len(&self) -> usize;
    /// Candidate `i`'s track id.
    fn id(&self, i: usize) -> &'a str;
    /// Candidate `i`'s relevance.
    fn relevance(&self, i: usize) -> f64;
    /// Candidate `i`'s artist ("" unknown).
    fn artist(&self, i: usize) -> &'a str;
    /// Candidate `i`'s rights holder ("" unknown).
    fn rights_holder(&self, i: usize) -> &'a str;
    /// Candidate `i`'s promoted impressions in 24 hours, when sent.
    fn impressions_24h(&self, i: usize) -> Option<u32>;
    /// Candidate `i`'s promoted plays this session, when sent.
    fn session_promoted(&self, i: usize) -> Option<u32>;
    /// Candidate `i`'s campaign: its position in [`Columnar::campaigns`],
    /// or -1 for an organic track (any other value is refused).
    fn campaign(&self, i: usize) -> i64;
    /// The feature names and the row-major matrix of values (NaN missing),
    /// `names.len()` values per candidate.
    fn features(&self) -> (&'a [String], &'a [f64]);
}

/// A request whose candidates are columns.
pub(crate) struct Columnar<'a, C> {
    pub route: Option<Cow<'a, str>>,
    pub context: RequestContext<'a>,
    pub candidates: C,
    /// The campaigns candidates refer to by position; each is checked when
    /// a candidate first uses it. Two with one id send the request to the
    /// general path (which compares copies).
    pub campaigns: Vec<RequestCampaign<'a>>,
    pub rights_holders: Option<HashMap<Cow<'a, str>, RequestHolder>>,
    pub debug: bool,
}

/// Checks `req` as [`Validate::validate`](super::Validate::validate) would
/// and packs it; `None` on anything that validation might refuse.
pub(crate) fn validate<'a, C: CandidateColumns<'a>>(
    req: Columnar<'a, C>,
    max_candidates: usize,
) -> Option<ValidRequest<'a>> {
    let Columnar {
        route,
        context,
        candidates: k,
        campaigns: table,
        rights_holders,
        debug,
    } = req;
    let market = check_context(&context, &mut None).ok()?;
    let n = k.len();
    if n > max_candidates {
        return None;
    }
    let (names, values) = k.features();
    let width = names.len();
    if width > MAX_FEATURES || values.len() != n * width {
        return None;
    }
    let no_field = String::new;
    // Features: the names once, the values as one slice (NaN = missing).
    for name in names {
        check_feature_name(&no_field, name).ok()?;
    }
    let out_of_range = values.iter().fold(false, |acc, v| {
        acc | (v.abs() > oasis_contract::MAX_MAGNITUDE)
    });
    if out_of_range {
        return None;
    }
    // One pass over the candidates: each value read once (the ids' bytes
    // are the replay's first touch of them), checked, and the candidate
    // built. Ids unique and well-formed, relevance in range; artists and
    // holders interned, each distinct id checked once; campaigns checked and
    // packed once, keyed in order of first use.
    let mut ids = foldhash::HashSet::with_capacity(n);
    let mut artist_keys = Keys::with_capacity(n);
    let mut holder_keys = Keys::with_capacity(64);
    let mut artist = Vec::with_capacity(n);
    let mut holder = Vec::with_capacity(n);
    let mut key_of = vec![-1i32; table.len()];
    let mut campaigns = Vec::new();
    let mut campaign_sent = Vec::new();
    let mut campaign_first = Vec::new();
    let mut keyed_ids: Vec<&str> = Vec::new();
    let mut campaign_index = Vec::with_capacity(n);
    let mut counts_missing = false;
    let mut impressions_24h = Vec::with_capacity(n);
    let mut session_promoted = Vec::with_capacity(n);
    let mut candidates = Vec::with_capacity(n);
    for i in 0..n {
        let (id, relevance) = (k.id(i), k.relevance(i));
        check_id(no_field, id, true).ok()?;
        if !ids.insert(id) || !oasis_contract::valid_relevance(relevance) {
            return None;
        }
        let (artist_id, holder_id) = (k.artist(i), k.rights_holder(i));
        for (id, keys, out) in [
            (artist_id, &mut artist_keys, &mut artist),
            (holder_id, &mut holder_keys, &mut holder),
        ] {
            let known = keys.first.len();
            let key = keys.intern(id, i);
            if keys.first.len() > known {
                check_id(no_field, id, false).ok()?;
            }
            out.push(key);
        }
        let campaign = match k.campaign(i) {
            -1 => {
                campaign_index.push(-1);
                None
            }
            j => {
                let j = usize::try_from(j).ok().filter(|&j| j < table.len())?;
                let camp = &table[j];
                if key_of[j] == -1 {
                    if keyed_ids.contains(&&*camp.id) {
                        return None;
                    }
                    keyed_ids.push(&camp.id);
                    let key = campaigns.len() as u32;
                    campaigns.push(check_campaign("", camp, key, context.timestamp_ms).ok()?);
                    campaign_sent.push(Sent {
                        delivered: camp.delivered.is_some(),
                        pacing: camp.pacing_integral.is_some()
                            || camp.pacing_last_error.is_some()
                            || camp.pacing_updated_ms.is_some(),
                    });
                    campaign_first.push(i);
                    key_of[j] = key as i32;
                }
                campaign_index.push(key_of[j]);
                Some(Box::new(camp.clone()))
            }
        };
        let (impressions, promoted) = (k.impressions_24h(i), k.session_promoted(i));
        counts_missing |= impressions.is_none() || promoted.is_none();
        impressions_24h.push(impressions.unwrap_or(0));
        session_promoted.push(promoted.unwrap_or(0));
        candidates.push(RequestCandidate {
            id: Cow::Borrowed(id),
            relevance,
            artist: Cow::Borrowed(artist_id),
            rights_holder: Cow::Borrowed(holder_id),
            impressions_24h: impressions,
            session_promoted: promoted,
            campaign,
            features: Features::Row {
                names,
                values: &values[i * width..(i + 1) * width],
            },
        });
    }
    drop((ids, keyed_ids));
    let (exposure_share_7d, holders_sent) = holder_exposure(&rights_holders, &holder_keys).ok()?;
    let holder_first = std::mem::take(&mut holder_keys.first);
    drop((artist_keys, holder_keys));
    let request = ScoreRequest {
        route,
        context,
        candidates,
        rights_holders,
        debug,
    };
    let seed = request.seed();
    let slate_size = request
        .context
        .slate_size
        .map_or(n, |s| (s as usize).min(n))
        .try_into()
        .unwrap_or(u32::MAX);
    Some(ValidRequest {
        request,
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
