//! How far apart two policies' decisions on the same request are.
//!
//! One implementation, with no server dependency, for two uses:
//!
//! - **shadow scoring**: a shadow (canary) policy runs beside the served one
//!   on live traffic, its answer is compared with the one that was served and
//!   the divergence is accumulated per route;
//! - **offline replay**: a candidate policy is replayed on logged requests and
//!   compared with the logged decisions.
//!
//! [`compare`] takes the two sides' decision columns ([`DecisionColumns`],
//! aligned by candidate index) and returns one request's [`Divergence`];
//! [`DivergenceStats`] accumulates many of them, with the other side's
//! failures and call latency, into a serializable [`DivergenceSummary`].
//!
//! # What the metrics tell an operator deciding whether to promote a canary
//!
//! The metrics measure **how much would change**, not whether the change is
//! better: that needs outcomes (listening, skips, campaign delivery). Use them
//! to check that a canary changes what it was meant to change, and nothing
//! else, before exposing listeners to it.
//!
//! Candidates are ranked by score, highest first, ties broken by candidate
//! index (lowest first), so a ranking is deterministic. `k` is the number of
//! top slots that matter to the surface (what the listener actually sees);
//! below, k' = min(k, number of candidates).
//!
//! | metric | range | meaning |
//! |---|---|---|
//! | `topk_overlap` | 0 … 1 | Share of the served policy's top k' that the other policy also puts in its top k' (in any order). 1: the same tracks reach the top slots; 0.6: 40 % of the top slots would show different tracks. The most direct measure of how different the listener experience would be. |
//! | `rank_correlation` | −1 … 1 | Whether the two policies agree on the *order* of the tracks that matter: the tracks either one puts in its top k'. 1: same order; around 0: unrelated; −1: reversed. A track one policy ranks first and the other buries deep pulls it down a lot (it is computed on positions in the full rankings, see [`Divergence::rank_correlation`]). |
//! | `score_mae` | ≥ 0 | Mean absolute score difference, in the policies' score units. Only meaningful when both policies share a scale (a retune of the same policy); the two ranking metrics are scale-free. |
//! | `promoted_share_diff` | −1 … 1 | Other's share of candidates promoted minus the served one's. Positive: the canary promotes more, which spends campaign budgets faster and puts more promoted tracks in front of listeners. |
//! | `eligibility_rate_diff` | −1 … 1 | The same for eligibility. Eligibility follows campaign rules (surfaces, markets, windows, caps), so a canary that only changes the model should keep this at 0; a difference points at a rules change or a bug. |
//! | `reason_counts` | counts | How many candidates carry each reason bit on each side: explains the differences above (e.g. more `freq_capped` or `relevance_guardrail` on the canary side). |
//!
//! The summary adds the other side's error rate and latency (mean, p99): a
//! canary that diverges little but fails or is slow is not ready either.
//!
//! ```
//! use oasis::divergence::{DecisionColumns, DivergenceStats, compare};
//! use oasis_contract::reason::{ORGANIC, PROMOTED};
//!
//! let served = DecisionColumns::new(&[0.9, 0.5, 0.1], &[true, true, false], &[PROMOTED, 0, ORGANIC]);
//! let shadow = DecisionColumns::new(&[0.4, 0.8, 0.1], &[true, true, false], &[0, PROMOTED, ORGANIC]);
//! let d = compare(served, shadow, 1)?;
//! assert_eq!(d.topk_overlap, 0.0); // different top track
//! assert_eq!(d.promoted_share_diff, 0.0); // one promoted on each side
//!
//! let mut stats = DivergenceStats::new();
//! stats.add(&d);
//! assert_eq!(stats.summary().samples, 1);
//! # Ok::<(), oasis::divergence::LengthMismatch>(())
//! ```

use std::time::Duration;

use oasis_contract::reason::{self, PROMOTED};
use serde::Serialize;

/// Number of reason bits in the contract.
const N_REASONS: usize = reason::REASONS.len();

/// One policy's decisions on one request, column by column, aligned by
/// candidate index.
///
/// Reasons are contract bits ([`oasis_contract::reason`]); map a side's own
/// flag type with [`oasis_contract::ReasonBits::reason_bits`].
#[derive(Clone, Copy, Debug)]
pub struct DecisionColumns<'a> {
    /// Score per candidate (finite, as the output contract requires).
    pub scores: &'a [f64],
    /// Eligibility per candidate.
    pub eligible: &'a [bool],
    /// Reason bits per candidate.
    pub reasons: &'a [u16],
}

impl<'a> DecisionColumns<'a> {
    /// The columns, borrowed.
    pub fn new(scores: &'a [f64], eligible: &'a [bool], reasons: &'a [u16]) -> Self {
        Self {
            scores,
            eligible,
            reasons,
        }
    }

    /// The number of candidates, if the three columns agree on it.
    pub fn candidates(&self) -> Option<usize> {
        let n = self.scores.len();
        (self.eligible.len() == n && self.reasons.len() == n).then_some(n)
    }

    /// Whether candidate `i` carries reason bit(s) `bits` (any of them);
    /// `false` when `i` is out of range.
    pub fn has_reason(&self, i: usize, bits: u16) -> bool {
        self.reasons.get(i).is_some_and(|r| r & bits != 0)
    }

    /// Whether candidate `i` is promoted (reason bit
    /// [`PROMOTED`](oasis_contract::reason::PROMOTED)); `false` when `i` is
    /// out of range.
    pub fn promoted(&self, i: usize) -> bool {
        self.has_reason(i, PROMOTED)
    }

    /// Whether candidate `i` is eligible; `false` when `i` is out of range.
    pub fn is_eligible(&self, i: usize) -> bool {
        self.eligible.get(i).copied().unwrap_or(false)
    }

    /// Candidate indices by score, highest first, ties broken by index,
    /// lowest first (so the ranking is deterministic).
    ///
    /// `0.0` and `-0.0` tie. Non-finite scores, which the output contract
    /// forbids, are placed by IEEE 754 total order (NaN with the sign bit
    /// clear above `+inf`), so ranking never panics.
    pub fn ranking(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.scores.len()).collect();
        order.sort_unstable_by(|&a, &b| {
            rank_key(self.scores[b])
                .total_cmp(&rank_key(self.scores[a]))
                .then(a.cmp(&b))
        });
        order
    }

    fn lengths(&self) -> [usize; 3] {
        [self.scores.len(), self.eligible.len(), self.reasons.len()]
    }
}

/// `count / n`, 0.0 when `n` is 0.
fn share(count: usize, n: usize) -> f64 {
    if n == 0 { 0.0 } else { count as f64 / n as f64 }
}

/// `-0.0` as `0.0`, so that equal scores tie under `total_cmp`.
fn rank_key(s: f64) -> f64 {
    if s == 0.0 { 0.0 } else { s }
}

/// The decision columns of the two sides do not all have the same length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "decision columns differ in length (scores, eligible, reasons): served {served:?}, other {other:?}"
)]
pub struct LengthMismatch {
    /// The served side's lengths: scores, eligible, reasons.
    pub served: [usize; 3],
    /// The other side's lengths: scores, eligible, reasons.
    pub other: [usize; 3],
}

/// How far apart two policies' decisions on one request are; see the
/// [module documentation](self) for what each metric means to an operator.
///
/// Every "diff" is *other minus served*.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Divergence {
    /// Number of candidates.
    pub candidates: usize,
    /// The number of top slots compared: k' = min(k, candidates).
    pub k: usize,
    /// |top-k'(served) ∩ top-k'(other)| / k'; 1.0 when k' = 0 (no
    /// candidates, or k = 0: two empty sets agree).
    pub topk_overlap: f64,
    /// Spearman's rank correlation over the union U of the two top-k' sets:
    /// the Pearson correlation, over the candidates in U, of each candidate's
    /// position in the served policy's full ranking with its position in the
    /// other's full ranking.
    ///
    /// Positions are taken in the **full** rankings, not re-ranked within U,
    /// so a candidate one policy puts in its top k' and the other buries
    /// deep weighs more than one that merely swaps places with a neighbour.
    /// It is 1.0 exactly when the two policies order U the same way, −1.0
    /// when they order it in reverse.
    ///
    /// Degenerate cases: with fewer than 2 candidates in U (no candidates,
    /// k = 0, or k' = 1 with the same top candidate) the order over U is
    /// trivially the same, so 1.0. Positions within a ranking are distinct,
    /// so zero variance cannot occur with 2 or more candidates; it is guarded
    /// all the same: 1.0 if the positions are identical, else 0.0.
    pub rank_correlation: f64,
    /// Mean absolute score difference over all candidates (0.0 when there are
    /// none).
    pub score_mae: f64,
    /// Other's share of candidates promoted minus served's (0.0 when there are
    /// no candidates).
    pub promoted_share_diff: f64,
    /// Other's share of candidates eligible minus served's (0.0 when there are
    /// no candidates).
    pub eligibility_rate_diff: f64,
    /// For each reason bit, in [`oasis_contract::reason::REASONS`] order: (the
    /// number of candidates carrying it on the served side, on the other
    /// side).
    pub reason_counts: [(usize, usize); reason::REASONS.len()],
}

/// Compares the `other` policy's decisions on one request with the `served`
/// policy's, over the top `k` slots; see [`Divergence`] for each metric.
///
/// All six columns must have the same length (one entry per candidate of the
/// request), else [`LengthMismatch`]. Scores are expected finite, as the
/// output contract guarantees; a non-finite score does not panic but makes
/// `score_mae` non-finite.
///
/// Cost: two sorts of the candidates, O(n log n), and four vectors of n
/// indices.
pub fn compare(
    served: DecisionColumns<'_>,
    other: DecisionColumns<'_>,
    k: usize,
) -> Result<Divergence, LengthMismatch> {
    let n = served.scores.len();
    let (ls, lo) = (served.lengths(), other.lengths());
    if ls.iter().chain(&lo).any(|&l| l != n) {
        return Err(LengthMismatch {
            served: ls,
            other: lo,
        });
    }
    let k = k.min(n);

    let order_s = served.ranking();
    let order_o = other.ranking();
    let pos_s = positions(&order_s);
    let pos_o = positions(&order_o);

    let common = order_s[..k].iter().filter(|&&i| pos_o[i] < k).count();
    let topk_overlap = if k == 0 {
        1.0
    } else {
        common as f64 / k as f64
    };

    // U: the served top k', then the other's top k' not already in it.
    let union: Vec<(f64, f64)> = order_s[..k]
        .iter()
        .chain(order_o[..k].iter().filter(|&&i| pos_s[i] >= k))
        .map(|&i| (pos_s[i] as f64, pos_o[i] as f64))
        .collect();
    let rank_correlation = correlation(&union);

    let score_mae = if n == 0 {
        0.0
    } else {
        served
            .scores
            .iter()
            .zip(other.scores)
            .map(|(s, o)| (s - o).abs())
            .sum::<f64>()
            / n as f64
    };

    let promoted =
        |c: &DecisionColumns<'_>| c.reasons.iter().filter(|r| *r & PROMOTED != 0).count();
    let eligible = |c: &DecisionColumns<'_>| c.eligible.iter().filter(|e| **e).count();
    let promoted_share_diff = share(promoted(&other), n) - share(promoted(&served), n);
    let eligibility_rate_diff = share(eligible(&other), n) - share(eligible(&served), n);

    let mut reason_counts = [(0, 0); N_REASONS];
    for ((bit, _), counts) in reason::REASONS.iter().zip(&mut reason_counts) {
        let count = |c: &DecisionColumns<'_>| c.reasons.iter().filter(|r| *r & bit != 0).count();
        *counts = (count(&served), count(&other));
    }

    Ok(Divergence {
        candidates: n,
        k,
        topk_overlap,
        rank_correlation,
        score_mae,
        promoted_share_diff,
        eligibility_rate_diff,
        reason_counts,
    })
}

/// `positions[candidate]` = its position in `order`.
fn positions(order: &[usize]) -> Vec<usize> {
    let mut pos = vec![0; order.len()];
    for (p, &i) in order.iter().enumerate() {
        pos[i] = p;
    }
    pos
}

/// Pearson correlation of the pairs, with the degenerate cases of
/// [`Divergence::rank_correlation`].
fn correlation(pairs: &[(f64, f64)]) -> f64 {
    if pairs.len() < 2 {
        return 1.0;
    }
    let m = pairs.len() as f64;
    let mx = pairs.iter().map(|p| p.0).sum::<f64>() / m;
    let my = pairs.iter().map(|p| p.1).sum::<f64>() / m;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in pairs {
        let (dx, dy) = (x - mx, y - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if pairs.iter().all(|(x, y)| x == y) {
        // Identical positions: exactly 1 (rather than 1 ± rounding), also
        // in the (unreachable) zero-variance case.
        return 1.0;
    }
    if sxx == 0.0 || syy == 0.0 {
        return 0.0;
    }
    (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)
}

/// Accumulates [`Divergence`]s, failures and call latencies of the other side
/// over many requests, in bounded memory (a few kilobytes, whatever the
/// number of requests).
///
/// Means are running sums over every sample. Latency goes into a fixed
/// log-linear histogram of 304 buckets: exact below 16 ns, then 8 buckets per
/// power of two (so a bucket's width is at most 1/8 of its lower bound) up to
/// 2⁴⁰ ns (about 18 minutes), where it saturates. The p99 it reports is the
/// upper bound of the bucket holding the 99th percentile, capped at the
/// largest latency recorded: at most 12.5 % above the true value, never below.
///
/// Not synchronized: share it between threads behind a `Mutex`. [`add`],
/// [`record_error`] and [`record_latency`] are O(1) and do not allocate.
///
/// [`add`]: DivergenceStats::add
/// [`record_error`]: DivergenceStats::record_error
/// [`record_latency`]: DivergenceStats::record_latency
#[derive(Clone, Debug)]
pub struct DivergenceStats {
    samples: u64,
    errors: u64,
    candidates: u64,
    sum_topk_overlap: f64,
    sum_rank_correlation: f64,
    sum_score_mae: f64,
    sum_promoted_share_diff: f64,
    sum_eligibility_rate_diff: f64,
    reasons: [(u64, u64); N_REASONS],
    latency: LatencyHistogram,
}

impl Default for DivergenceStats {
    fn default() -> Self {
        Self::new()
    }
}

impl DivergenceStats {
    /// No samples yet.
    pub const fn new() -> Self {
        Self {
            samples: 0,
            errors: 0,
            candidates: 0,
            sum_topk_overlap: 0.0,
            sum_rank_correlation: 0.0,
            sum_score_mae: 0.0,
            sum_promoted_share_diff: 0.0,
            sum_eligibility_rate_diff: 0.0,
            reasons: [(0, 0); N_REASONS],
            latency: LatencyHistogram::new(),
        }
    }

    /// Adds one request's divergence.
    pub fn add(&mut self, d: &Divergence) {
        self.samples += 1;
        self.candidates += d.candidates as u64;
        self.sum_topk_overlap += d.topk_overlap;
        self.sum_rank_correlation += d.rank_correlation;
        self.sum_score_mae += d.score_mae;
        self.sum_promoted_share_diff += d.promoted_share_diff;
        self.sum_eligibility_rate_diff += d.eligibility_rate_diff;
        for (total, (s, o)) in self.reasons.iter_mut().zip(d.reason_counts) {
            total.0 += s as u64;
            total.1 += o as u64;
        }
    }

    /// Records a request on which the other side failed (so there is no
    /// divergence to add).
    pub fn record_error(&mut self) {
        self.errors += 1;
    }

    /// Records the duration of one call of the other side (whether it
    /// succeeded or not: the caller decides what it times).
    pub fn record_latency(&mut self, d: Duration) {
        self.latency.record(d);
    }

    /// Adds everything `other` recorded (so two blocks of a window read as
    /// one).
    pub fn merge(&mut self, other: &DivergenceStats) {
        self.samples += other.samples;
        self.errors += other.errors;
        self.candidates += other.candidates;
        self.sum_topk_overlap += other.sum_topk_overlap;
        self.sum_rank_correlation += other.sum_rank_correlation;
        self.sum_score_mae += other.sum_score_mae;
        self.sum_promoted_share_diff += other.sum_promoted_share_diff;
        self.sum_eligibility_rate_diff += other.sum_eligibility_rate_diff;
        for (a, b) in self.reasons.iter_mut().zip(other.reasons) {
            a.0 += b.0;
            a.1 += b.1;
        }
        self.latency.merge(&other.latency);
    }

    /// Requests recorded: compared or failed.
    pub fn attempts(&self) -> u64 {
        self.samples + self.errors
    }

    /// The summary of everything recorded so far.
    pub fn summary(&self) -> DivergenceSummary {
        let attempts = self.samples + self.errors;
        let mean = (self.samples > 0).then(|| {
            let n = self.samples as f64;
            MetricMeans {
                topk_overlap: self.sum_topk_overlap / n,
                rank_correlation: self.sum_rank_correlation / n,
                score_mae: self.sum_score_mae / n,
                promoted_share_diff: self.sum_promoted_share_diff / n,
                eligibility_rate_diff: self.sum_eligibility_rate_diff / n,
            }
        });
        let reasons = reason::REASONS
            .iter()
            .zip(self.reasons)
            .map(|((_, name), (served, other))| ReasonTotals {
                name,
                served,
                other,
                // Two's complement: exact while |difference| < 2^63.
                difference: other.wrapping_sub(served) as i64,
            })
            .collect();
        DivergenceSummary {
            samples: self.samples,
            errors: self.errors,
            error_rate: if attempts == 0 {
                0.0
            } else {
                self.errors as f64 / attempts as f64
            },
            candidates: self.candidates,
            mean,
            reasons,
            latency: self.latency.summary(),
        }
    }
}

/// Divergence over the most recent requests: two blocks of `block`
/// requests each, the older dropped when the newer fills, so a summary
/// covers the last `block` to `2 × block` requests. What an operator reads
/// is then the policies' agreement now, not averaged with an hour ago.
#[derive(Clone, Debug)]
pub struct WindowedDivergence {
    block: u64,
    current: DivergenceStats,
    previous: Option<Box<DivergenceStats>>,
}

impl WindowedDivergence {
    /// A window of blocks of `block` requests (at least 1).
    pub fn new(block: u64) -> Self {
        Self {
            block: block.max(1),
            current: DivergenceStats::new(),
            previous: None,
        }
    }

    fn rotate(&mut self) {
        if self.current.attempts() >= self.block {
            let full = std::mem::take(&mut self.current);
            self.previous = Some(Box::new(full));
        }
    }

    /// Adds one request's divergence.
    pub fn add(&mut self, d: &Divergence) {
        self.rotate();
        self.current.add(d);
    }

    /// Records a request on which the other side failed.
    pub fn record_error(&mut self) {
        self.rotate();
        self.current.record_error();
    }

    /// Records one call's duration (in the block of the request it belongs
    /// to: call it before [`add`](Self::add) or [`record_error`](Self::record_error)).
    pub fn record_latency(&mut self, d: Duration) {
        self.rotate();
        self.current.record_latency(d);
    }

    /// Adds the window's requests to `into`.
    pub fn merge_into(&self, into: &mut DivergenceStats) {
        if let Some(p) = &self.previous {
            into.merge(p);
        }
        into.merge(&self.current);
    }

    /// The summary of the window.
    pub fn summary(&self) -> DivergenceSummary {
        match &self.previous {
            Some(p) => {
                let mut both = (**p).clone();
                both.merge(&self.current);
                both.summary()
            }
            None => self.current.summary(),
        }
    }
}

/// What a [`DivergenceStats`] has accumulated; serializes to JSON for the
/// operator (and the replay report).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DivergenceSummary {
    /// Requests compared (divergences added).
    pub samples: u64,
    /// Requests on which the other side failed.
    pub errors: u64,
    /// errors / (samples + errors); 0.0 before anything is recorded.
    pub error_rate: f64,
    /// Candidates over all samples (to turn reason counts into rates).
    pub candidates: u64,
    /// The mean of each metric over the samples; `None` (JSON `null`) with
    /// no samples.
    pub mean: Option<MetricMeans>,
    /// Per reason bit, in [`oasis_contract::reason::REASONS`] order: the
    /// number of candidates carrying it on each side over all samples.
    /// Serialized as a map from the reason's name, in that order.
    #[serde(serialize_with = "reasons_by_name")]
    #[schema(value_type = std::collections::BTreeMap<String, ReasonTotals>)]
    pub reasons: Vec<ReasonTotals>,
    /// The other side's call latency; `None` (JSON `null`) with no latency
    /// recorded.
    pub latency: Option<LatencySummary>,
}

/// The mean of each [`Divergence`] metric over the samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MetricMeans {
    /// Mean of [`Divergence::topk_overlap`].
    pub topk_overlap: f64,
    /// Mean of [`Divergence::rank_correlation`].
    pub rank_correlation: f64,
    /// Mean of [`Divergence::score_mae`].
    pub score_mae: f64,
    /// Mean of [`Divergence::promoted_share_diff`].
    pub promoted_share_diff: f64,
    /// Mean of [`Divergence::eligibility_rate_diff`].
    pub eligibility_rate_diff: f64,
}

/// One reason bit's candidate counts over all samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReasonTotals {
    /// The reason's name (the key of the serialized map).
    #[serde(skip)]
    pub name: &'static str,
    /// Candidates carrying it on the served side.
    pub served: u64,
    /// Candidates carrying it on the other side.
    pub other: u64,
    /// `other - served`.
    pub difference: i64,
}

fn reasons_by_name<S: serde::Serializer>(r: &[ReasonTotals], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(r.len()))?;
    for t in r {
        map.serialize_entry(t.name, t)?;
    }
    map.end()
}

/// The other side's call latency, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LatencySummary {
    /// Calls timed.
    pub calls: u64,
    /// Mean (exact).
    pub mean_ms: f64,
    /// 99th percentile, from the histogram: at most 12.5 % above the true
    /// value, never below it.
    pub p99_ms: f64,
    /// Largest (exact, up to the histogram's 2⁴⁰ ns ceiling).
    pub max_ms: f64,
}

/// Sub-buckets per power of two: 2^SUB_BITS.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Largest exponent kept; larger values saturate to 2^(MAX_EXP+1) - 1 ns.
const MAX_EXP: u32 = 39;
const BUCKETS: usize = (MAX_EXP - SUB_BITS + 2) as usize * SUB;
const MAX_NS: u64 = (1 << (MAX_EXP + 1)) - 1;

/// Log-linear latency histogram in nanoseconds (HDR-style, fixed size).
#[derive(Clone, Debug)]
pub(crate) struct LatencyHistogram {
    counts: [u64; BUCKETS],
    count: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// Adds every sample of `other`.
    pub(crate) fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The buckets holding samples: (index, count). With
    /// [`add_bucket`](Self::add_bucket), how a histogram travels as counters
    /// (the fleet's shared guardrail windows).
    pub(crate) fn nonzero_buckets(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i, *c))
    }

    /// Adds `count` samples to bucket `i` (ignored past the last bucket),
    /// each taken as the bucket's largest value.
    pub(crate) fn add_bucket(&mut self, i: usize, count: u64) {
        if i >= BUCKETS || count == 0 {
            return;
        }
        let top = bucket_bounds(i).1 - 1;
        self.counts[i] += count;
        self.count += count;
        self.sum_ns += u128::from(top) * u128::from(count);
        self.max_ns = self.max_ns.max(top);
    }

    pub(crate) const fn new() -> Self {
        Self {
            counts: [0; BUCKETS],
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).min(MAX_NS);
        self.counts[bucket_index(ns)] += 1;
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// The `p`-th percentile (nearest rank, `p` in 1..=100): the largest
    /// value of the bucket holding the ⌈p·count/100⌉-th smallest sample,
    /// capped at the maximum. Called with samples only.
    fn percentile_ns(&self, p: u64) -> u64 {
        // Integer arithmetic: no rounding of p/100 moves the rank.
        let rank = (u128::from(self.count) * u128::from(p)).div_ceil(100);
        let rank = u64::try_from(rank)
            .unwrap_or(u64::MAX)
            .max(1)
            .min(self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                // Largest value in bucket i: its exclusive upper bound - 1.
                return (bucket_bounds(i).1 - 1).min(self.max_ns);
            }
        }
        self.max_ns
    }

    pub(crate) fn summary(&self) -> Option<LatencySummary> {
        const NS_PER_MS: f64 = 1e6;
        (self.count > 0).then(|| LatencySummary {
            calls: self.count,
            mean_ms: self.sum_ns as f64 / self.count as f64 / NS_PER_MS,
            p99_ms: self.percentile_ns(99) as f64 / NS_PER_MS,
            max_ms: self.max_ns as f64 / NS_PER_MS,
        })
    }
}

/// The bucket of `ns` (≤ [`MAX_NS`]): exact below 2·SUB, then SUB buckets per
/// power of two.
fn bucket_index(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros(); // ≥ SUB_BITS
    let sub = (ns >> (exp - SUB_BITS)) as usize - SUB;
    (exp - SUB_BITS + 1) as usize * SUB + sub
}

/// `[lower, upper)` of bucket `i`.
fn bucket_bounds(i: usize) -> (u64, u64) {
    if i < SUB {
        return (i as u64, i as u64 + 1);
    }
    let shift = (i / SUB - 1) as u32; // exp - SUB_BITS
    let sub = (i % SUB) as u64;
    ((SUB as u64 + sub) << shift, (SUB as u64 + sub + 1) << shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oasis_contract::reason::{EXPLORATION, FREQ_CAPPED, NOT_ELIGIBLE_MARKET, ORGANIC, REASONS};

    const EPS: f64 = 1e-12;

    fn cols<'a>(
        scores: &'a [f64],
        eligible: &'a [bool],
        reasons: &'a [u16],
    ) -> DecisionColumns<'a> {
        DecisionColumns::new(scores, eligible, reasons)
    }

    /// Both sides with the given scores, every candidate eligible, no reason.
    fn by_scores(served: &[f64], other: &[f64], k: usize) -> Divergence {
        let e = vec![true; served.len()];
        let r = vec![0; served.len()];
        compare(cols(served, &e, &r), cols(other, &e, &r), k).unwrap()
    }

    fn reason_index(bit: u16) -> usize {
        REASONS.iter().position(|(b, _)| *b == bit).unwrap()
    }

    #[test]
    fn identical_decisions_do_not_diverge() {
        let scores = [0.3, 0.9, 0.1, 0.5, 0.7];
        let eligible = [true, true, false, true, false];
        let reasons = [PROMOTED, PROMOTED | EXPLORATION, ORGANIC, 0, ORGANIC];
        let c = cols(&scores, &eligible, &reasons);
        for k in [0, 1, 2, 3, 5, 10] {
            let d = compare(c, c, k).unwrap();
            assert_eq!(d.candidates, 5);
            assert_eq!(d.k, k.min(5));
            assert_eq!(d.topk_overlap, 1.0, "k={k}");
            assert_eq!(d.rank_correlation, 1.0, "k={k}");
            assert_eq!(d.score_mae, 0.0);
            assert_eq!(d.promoted_share_diff, 0.0);
            assert_eq!(d.eligibility_rate_diff, 0.0);
            assert_eq!(d.reason_counts[reason_index(PROMOTED)], (2, 2));
            assert_eq!(d.reason_counts[reason_index(ORGANIC)], (2, 2));
            assert_eq!(d.reason_counts[reason_index(EXPLORATION)], (1, 1));
            assert_eq!(d.reason_counts[reason_index(FREQ_CAPPED)], (0, 0));
        }
    }

    #[test]
    fn reversed_order() {
        // served ranks 0,1,2,3; other ranks 3,2,1,0.
        let served = [4.0, 3.0, 2.0, 1.0];
        let other = [1.0, 2.0, 3.0, 4.0];
        // k = 4: same set, reversed order. |differences| 3,1,1,3: mean 2.
        let d = by_scores(&served, &other, 4);
        assert_eq!(d.topk_overlap, 1.0);
        assert!((d.rank_correlation + 1.0).abs() < EPS, "{d:?}");
        assert_eq!(d.score_mae, 2.0);
        // k = 2: tops {0,1} and {3,2} are disjoint; U = all four, positions
        // (0,3) (1,2) (2,1) (3,0): perfectly reversed.
        let d = by_scores(&served, &other, 2);
        assert_eq!(d.topk_overlap, 0.0);
        assert!((d.rank_correlation + 1.0).abs() < EPS, "{d:?}");
    }

    #[test]
    fn partial_overlap_hand_computed() {
        // served [5,4,3,2,1]: order 0,1,2,3,4; positions x = 0,1,2,3,4.
        // other  [5,1,4,3,2]: order 0,2,3,4,1; positions y = 0,4,1,2,3.
        // k = 2: tops {0,1} and {0,2}: overlap 1/2.
        // U = {0,1,2}: x = (0,1,2), y = (0,4,1); means 1 and 5/3;
        // dx = (-1,0,1), dy = (-5/3,7/3,-2/3); Sxy = 5/3 - 2/3 = 1,
        // Sxx = 2, Syy = (25+49+4)/9 = 26/3; r = 1/sqrt(52/3) = sqrt(3/52).
        // |differences| 0,3,1,1,1: mae 6/5.
        let d = by_scores(&[5.0, 4.0, 3.0, 2.0, 1.0], &[5.0, 1.0, 4.0, 3.0, 2.0], 2);
        assert_eq!(d.k, 2);
        assert_eq!(d.topk_overlap, 0.5);
        assert!(
            (d.rank_correlation - (3.0f64 / 52.0).sqrt()).abs() < EPS,
            "{d:?}"
        );
        assert!((d.score_mae - 1.2).abs() < EPS);
    }

    #[test]
    fn positions_in_the_full_ranking_count() {
        // Same top-2 set {0,1} swapped vs. the served order: U = {0,1},
        // x = (0,1), y = (1,0): -1, however far down the rest moves.
        let d = by_scores(&[5.0, 4.0, 3.0, 2.0, 1.0], &[4.0, 5.0, 1.0, 3.0, 2.0], 2);
        assert_eq!(d.topk_overlap, 1.0);
        assert!((d.rank_correlation + 1.0).abs() < EPS);
        // The other side's top 2 is {0,3}: candidate 1 (served 2nd) falls to
        // the bottom. other [5,0,1,4,2]: order 0,3,4,2,1; y = 0,4,3,1,2.
        // U = {0,1,3}: x = (0,1,3), y = (0,4,1); means 4/3, 5/3;
        // dx = (-4/3,-1/3,5/3), dy = (-5/3,7/3,-2/3);
        // Sxy = (20 - 7 - 10)/9 = 1/3; Sxx = (16+1+25)/9 = 14/3;
        // Syy = 26/3; r = (1/3)/sqrt(14*26/9) = 1/sqrt(364).
        let d = by_scores(&[5.0, 4.0, 3.0, 2.0, 1.0], &[5.0, 0.0, 1.0, 4.0, 2.0], 2);
        assert_eq!(d.topk_overlap, 0.5);
        assert!(
            (d.rank_correlation - 1.0 / 364f64.sqrt()).abs() < EPS,
            "{d:?}"
        );
    }

    #[test]
    fn disjoint_top_k() {
        // served top 2 {0,1}, other top 2 {4,5}. served order 0..5, x = i.
        // other [1,2,3,4,6,5]: order 4,5,3,2,1,0; y = 5,4,3,2,0,1.
        // U = {0,1,4,5}: x = (0,1,4,5), y = (5,4,0,1); means 2.5, 2.5;
        // dx = (-2.5,-1.5,1.5,2.5), dy = (2.5,1.5,-2.5,-1.5);
        // Sxy = -6.25 - 2.25 - 3.75 - 3.75 = -16; Sxx = Syy = 17;
        // r = -16/17.
        let d = by_scores(
            &[6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
            &[1.0, 2.0, 3.0, 4.0, 6.0, 5.0],
            2,
        );
        assert_eq!(d.topk_overlap, 0.0);
        assert!((d.rank_correlation + 16.0 / 17.0).abs() < EPS, "{d:?}");
    }

    #[test]
    fn ties_break_by_candidate_index() {
        let c = [1.0, 1.0, 1.0, 1.0];
        assert_eq!(cols(&c, &[true; 4], &[0; 4]).ranking(), [0, 1, 2, 3]);
        // All tied on both sides: identical rankings.
        let d = by_scores(&c, &c, 2);
        assert_eq!((d.topk_overlap, d.rank_correlation), (1.0, 1.0));
        // other [1,1,2,1]: order 2,0,1,3; y = 1,2,0,3. Tops {0,1}, {2,0}:
        // overlap 1/2. U = {0,1,2}: x = (0,1,2), y = (1,2,0): dx = dy shape
        // (-1,0,1) vs (0,1,-1): Sxy = -1, Sxx = Syy = 2: r = -1/2.
        let d = by_scores(&c, &[1.0, 1.0, 2.0, 1.0], 2);
        assert_eq!(d.topk_overlap, 0.5);
        assert!((d.rank_correlation + 0.5).abs() < EPS, "{d:?}");
        // -0.0 ties with 0.0.
        let z = [0.0, -0.0, 0.0];
        assert_eq!(
            cols(&[-0.0, 0.0, -0.0], &[true; 3], &[0; 3]).ranking(),
            [0, 1, 2]
        );
        let d = by_scores(&z, &[-0.0, 0.0, -0.0], 1);
        assert_eq!((d.topk_overlap, d.rank_correlation), (1.0, 1.0));
    }

    #[test]
    fn non_finite_scores_do_not_panic() {
        let s = [f64::NAN, 1.0, f64::INFINITY, -f64::NAN, f64::NEG_INFINITY];
        let c = cols(&s, &[true; 5], &[0; 5]);
        assert_eq!(c.ranking(), [0, 2, 1, 4, 3]);
        let d = compare(c, cols(&[0.0; 5], &[true; 5], &[0; 5]), 3).unwrap();
        assert!(d.score_mae.is_nan());
    }

    #[test]
    fn fewer_candidates_than_k() {
        // k' = 3: every candidate is in both tops.
        let d = by_scores(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0], 10);
        assert_eq!(d.k, 3);
        assert_eq!(d.topk_overlap, 1.0);
        assert!((d.rank_correlation + 1.0).abs() < EPS);
        // One candidate: U has one element.
        let d = by_scores(&[3.0], &[-1.0], 10);
        assert_eq!(
            (d.k, d.topk_overlap, d.rank_correlation, d.score_mae),
            (1, 1.0, 1.0, 4.0)
        );
    }

    #[test]
    fn degenerate_k_and_n() {
        let d = by_scores(&[], &[], 5);
        assert_eq!(d.candidates, 0);
        assert_eq!(d.k, 0);
        assert_eq!(d.topk_overlap, 1.0);
        assert_eq!(d.rank_correlation, 1.0);
        assert_eq!(d.score_mae, 0.0);
        assert_eq!(d.promoted_share_diff, 0.0);
        assert_eq!(d.eligibility_rate_diff, 0.0);
        assert!(d.reason_counts.iter().all(|c| *c == (0, 0)));
        // k = 0 compares no slot.
        let d = by_scores(&[1.0, 2.0], &[2.0, 1.0], 0);
        assert_eq!((d.k, d.topk_overlap, d.rank_correlation), (0, 1.0, 1.0));
        // k = 1 with different tops: U = {0,1}, x = (0,1), y = (1,0).
        let d = by_scores(&[2.0, 1.0], &[1.0, 2.0], 1);
        assert_eq!(d.topk_overlap, 0.0);
        assert!((d.rank_correlation + 1.0).abs() < EPS);
    }

    #[test]
    fn correlation_degenerate_guard() {
        assert_eq!(correlation(&[]), 1.0);
        assert_eq!(correlation(&[(3.0, 7.0)]), 1.0);
        assert_eq!(correlation(&[(1.0, 1.0), (1.0, 1.0)]), 1.0);
        assert_eq!(correlation(&[(1.0, 2.0), (1.0, 3.0)]), 0.0);
    }

    #[test]
    fn shares_and_reason_counts() {
        let s = [0.5; 4];
        // served: 1 of 4 promoted, 2 of 4 eligible.
        let served = cols(
            &s,
            &[true, true, false, false],
            &[PROMOTED, 0, NOT_ELIGIBLE_MARKET, ORGANIC],
        );
        // other: 3 of 4 promoted, 1 of 4 eligible.
        let other = cols(
            &s,
            &[true, false, false, false],
            &[PROMOTED, PROMOTED | FREQ_CAPPED, PROMOTED, ORGANIC],
        );
        let d = compare(served, other, 2).unwrap();
        assert_eq!(d.promoted_share_diff, 0.5);
        assert_eq!(d.eligibility_rate_diff, -0.25);
        assert_eq!(d.score_mae, 0.0);
        let mut expected = [(0, 0); N_REASONS];
        expected[reason_index(PROMOTED)] = (1, 3);
        expected[reason_index(NOT_ELIGIBLE_MARKET)] = (1, 0);
        expected[reason_index(ORGANIC)] = (1, 1);
        expected[reason_index(FREQ_CAPPED)] = (0, 1);
        assert_eq!(d.reason_counts, expected);
        assert!(served.promoted(0) && !served.promoted(1) && other.promoted(1));
        assert!(!served.promoted(99) && !served.is_eligible(99));
        assert!(served.is_eligible(1) && !served.is_eligible(2));
        assert!(other.has_reason(1, FREQ_CAPPED | EXPLORATION));
    }

    #[test]
    fn mismatched_lengths_are_an_error() {
        let s3 = [1.0, 2.0, 3.0];
        let e3 = [true; 3];
        let r3 = [0; 3];
        let ok = cols(&s3, &e3, &r3);
        assert_eq!(ok.candidates(), Some(3));

        let short = cols(&s3, &e3, &r3[..2]);
        assert_eq!(short.candidates(), None);
        let err = compare(short, ok, 2).unwrap_err();
        assert_eq!(
            err,
            LengthMismatch {
                served: [3, 3, 2],
                other: [3, 3, 3]
            }
        );
        assert_eq!(
            err.to_string(),
            "decision columns differ in length (scores, eligible, reasons): served [3, 3, 2], other [3, 3, 3]"
        );
        // Each side consistent, but different candidate counts.
        let two = cols(&s3[..2], &e3[..2], &r3[..2]);
        assert!(compare(ok, two, 2).is_err());
        assert!(compare(two, ok, 2).is_err());
        // Only eligible differs, on the other side.
        assert!(compare(ok, cols(&s3, &e3[..1], &r3), 2).is_err());
        // Empty served, non-empty other.
        assert!(compare(cols(&[], &[], &[]), ok, 0).is_err());
    }

    #[test]
    fn histogram_buckets_cover_and_are_narrow() {
        assert_eq!(BUCKETS, 304);
        let mut prev_upper = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(i);
            assert_eq!(lo, prev_upper, "bucket {i} is contiguous");
            assert!(hi > lo);
            assert!(
                (hi - lo) * 8 <= lo.max(8),
                "bucket {i} [{lo},{hi}) is at most 1/8 wide"
            );
            assert_eq!(bucket_index(lo), i);
            assert_eq!(bucket_index(hi - 1), i);
            prev_upper = hi;
        }
        assert_eq!(prev_upper, MAX_NS + 1);
        for ns in [0, 1, 7, 8, 15, 16, 17, 1000, 123_456_789, MAX_NS] {
            let (lo, hi) = bucket_bounds(bucket_index(ns));
            assert!(lo <= ns && ns < hi, "{ns}");
        }
    }

    #[test]
    fn summary_of_nothing() {
        let s = DivergenceStats::default().summary();
        assert_eq!(
            (s.samples, s.errors, s.error_rate, s.candidates),
            (0, 0, 0.0, 0)
        );
        assert_eq!(s.mean, None);
        assert_eq!(s.latency, None);
        assert_eq!(s.reasons.len(), N_REASONS);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["mean"], serde_json::Value::Null);
        assert_eq!(json["latency"], serde_json::Value::Null);
    }

    #[test]
    fn summary_accumulates() {
        let mut stats = DivergenceStats::new();
        // Identical: overlap 1, correlation 1, mae 0; 1 of 2 promoted both sides.
        let s = [2.0, 1.0];
        let same = cols(&s, &[true, true], &[PROMOTED, 0]);
        stats.add(&compare(same, same, 2).unwrap());
        // Reversed 4 at k = 2: overlap 0, correlation -1, mae 2; other
        // promotes 2 of 4 (served 0): +0.5; other eligible 0 of 4 (served
        // 4 of 4): -1.
        let served = cols(&[4.0, 3.0, 2.0, 1.0], &[true; 4], &[0; 4]);
        let other = cols(
            &[1.0, 2.0, 3.0, 4.0],
            &[false; 4],
            &[PROMOTED, PROMOTED, FREQ_CAPPED, 0],
        );
        stats.add(&compare(served, other, 2).unwrap());
        stats.record_error();
        stats.record_error();
        for ms in 1..=100 {
            stats.record_latency(Duration::from_millis(ms));
        }

        let sum = stats.summary();
        assert_eq!(sum.samples, 2);
        assert_eq!(sum.errors, 2);
        assert_eq!(sum.error_rate, 0.5);
        assert_eq!(sum.candidates, 6);
        let m = sum.mean.unwrap();
        assert_eq!(m.topk_overlap, 0.5);
        assert!(m.rank_correlation.abs() < EPS, "{m:?}"); // (1 + -1) / 2
        assert_eq!(m.score_mae, 1.0);
        assert_eq!(m.promoted_share_diff, 0.25);
        assert_eq!(m.eligibility_rate_diff, -0.5);

        let promoted = sum.reasons[reason_index(PROMOTED)];
        assert_eq!(
            promoted,
            ReasonTotals {
                name: "promoted",
                served: 1,
                other: 3,
                difference: 2
            }
        );
        let capped = sum.reasons[reason_index(FREQ_CAPPED)];
        assert_eq!((capped.served, capped.other, capped.difference), (0, 1, 1));
        let organic = sum.reasons[reason_index(ORGANIC)];
        assert_eq!(
            (organic.served, organic.other, organic.difference),
            (0, 0, 0)
        );

        // Latency 1..=100 ms: mean 50.5 ms exactly; the 99th of 100 values
        // is 99 ms, reported within +12.5 % and capped at the maximum.
        let l = sum.latency.unwrap();
        assert_eq!(l.calls, 100);
        assert_eq!(l.mean_ms, 50.5);
        assert_eq!(l.max_ms, 100.0);
        assert!(l.p99_ms >= 99.0 && l.p99_ms <= 100.0, "{l:?}");

        // JSON: reasons as a map by name, in contract order.
        let json = serde_json::to_value(&sum).unwrap();
        assert_eq!(json["errors"], 2);
        assert_eq!(json["mean"]["topk_overlap"], 0.5);
        assert_eq!(
            json["reasons"]["promoted"],
            serde_json::json!({"served": 1, "other": 3, "difference": 2})
        );
        assert_eq!(json["reasons"]["slate_cap"]["difference"], 0);
        let text = serde_json::to_string(&sum).unwrap();
        let names: Vec<_> = REASONS
            .iter()
            .map(|(_, n)| text.find(&format!("\"{n}\"")).unwrap())
            .collect();
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "reasons in contract order"
        );
    }

    #[test]
    fn p99_from_the_histogram() {
        let mut stats = DivergenceStats::new();
        // All equal: p99 is the value itself (capped at the maximum).
        for _ in 0..1000 {
            stats.record_latency(Duration::from_micros(1500));
        }
        let l = stats.summary().latency.unwrap();
        assert_eq!((l.p99_ms, l.mean_ms, l.max_ms), (1.5, 1.5, 1.5));

        // 990 fast calls and 10 slow ones: the 99th percentile is the 990th
        // value, a fast one (within its bucket, +12.5 % at most).
        let mut stats = DivergenceStats::new();
        for _ in 0..990 {
            stats.record_latency(Duration::from_millis(2));
        }
        for _ in 0..10 {
            stats.record_latency(Duration::from_millis(500));
        }
        let l = stats.summary().latency.unwrap();
        assert!(l.p99_ms >= 2.0 && l.p99_ms <= 2.0 * 1.125, "{l:?}");
        assert_eq!(l.max_ms, 500.0);
        // One more slow call: the 99th percentile (rank 991) is slow.
        stats.record_latency(Duration::from_millis(500));
        let l = stats.summary().latency.unwrap();
        assert!(l.p99_ms >= 500.0 && l.p99_ms <= 500.0, "{l:?}");

        // Beyond the ceiling: saturates, no panic.
        stats.record_latency(Duration::from_secs(100_000));
        assert_eq!(stats.summary().latency.unwrap().max_ms, MAX_NS as f64 / 1e6);
    }

    #[test]
    fn a_window_forgets_what_came_two_blocks_ago() {
        let mut w = WindowedDivergence::new(10);
        let reversed = by_scores(&[4.0, 3.0, 2.0, 1.0], &[1.0, 2.0, 3.0, 4.0], 4);
        let same = by_scores(&[4.0, 3.0, 2.0, 1.0], &[4.0, 3.0, 2.0, 1.0], 4);
        for _ in 0..10 {
            w.add(&reversed);
        }
        assert!((w.summary().mean.unwrap().rank_correlation + 1.0).abs() < EPS);
        // The second block: both blocks are read, half and half.
        for _ in 0..10 {
            w.add(&same);
        }
        let s = w.summary();
        assert_eq!(s.samples, 20);
        assert!(s.mean.unwrap().rank_correlation.abs() < EPS, "{s:?}");
        // A third block drops the first: only agreement is left.
        w.record_latency(Duration::from_millis(3));
        w.add(&same);
        let s = w.summary();
        assert_eq!(s.samples, 11);
        assert_eq!(s.mean.unwrap().rank_correlation, 1.0);
        assert_eq!(s.latency.unwrap().calls, 1);
        w.record_error();
        assert_eq!(w.summary().errors, 1);
    }
}
