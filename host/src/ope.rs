//! Off-policy evaluation: what a candidate policy's decisions would have
//! been worth, estimated from the decisions another policy made and logged.
//!
//! # Setting
//!
//! For every logged request and every candidate track in a campaign, the
//! logging policy took an action `a`: promote the track or not (the
//! `PROMOTED` reason bit). It logged its **propensity** `p`, the probability
//! with which its (possibly randomised) choice promotes the track; a
//! deterministic policy logs 1 or 0. The candidate policy, run on the same
//! request (`oasis replay`), promotes the track with its own probability
//! `q`. The **reward** `r` of the decision is what the listener did with
//! the track ([`crate::decision_log::outcomes`]). A policy's **value** is
//! its mean reward per decision: what it is worth per promotion decision it
//! makes.
//!
//! # Importance weights
//!
//! The logs only show rewards of the actions the logging policy took. To
//! estimate the candidate's value, each logged decision is reweighted by how
//! much more (or less) likely the candidate was to take the same action:
//!
//! ```text
//! π0(a) = p if a = promote else 1 − p     (logging policy)
//! π1(a) = q if a = promote else 1 − q     (candidate)
//! w     = π1(a) / π0(a)
//! ```
//!
//! A decision with `π0(a) = 0` could not have been logged (e.g. promoted
//! with propensity 0): it is counted as **malformed** and left out, as is
//! one with a propensity outside `[0, 1]` or a non-finite reward.
//!
//! # Estimators
//!
//! Over the `n` decisions:
//!
//! * **IPS** (inverse propensity scoring) `= Σ w·r / n`. Unbiased when the
//!   logged propensities are right and every action the candidate can take
//!   was possible under the logging policy (support, below); its variance
//!   grows with the weights, i.e. with how much the candidate differs from
//!   the logger.
//! * **SNIPS** (self-normalised IPS) `= Σ w·r / Σ w`. The weights are
//!   rescaled to average 1, which removes most of IPS's variance from the
//!   weights' own noise and makes the estimate invariant to adding a
//!   constant to every reward. Its bias is of order `1/n`, negligible at log
//!   scale. **SNIPS is the headline number.**
//! * **Clipped IPS** `= Σ min(w, c)·r / n` (`c` = [`Estimator::with_clip`],
//!   10 by default). Caps the influence of single decisions the logger
//!   rarely took; for non-negative rewards it can only underestimate, so it
//!   is a conservative figure, and a large gap to IPS says a few heavy
//!   weights drive IPS.
//! * **Logged value** `= Σ r / n`: the logging policy's own value, for
//!   reference (what the candidate has to beat).
//!
//! Diagnostics that say whether to trust the numbers:
//!
//! * **Effective sample size** `ESS = (Σ w)² / Σ w²`: how many decisions
//!   the weighted sample is worth. It equals `n` when the candidate is the
//!   logger (all weights 1) and shrinks as the weights spread; an estimate
//!   resting on an ESS of a few dozen is noise whatever its interval says.
//! * **Mean weight** `Σ w / n`: its expectation is exactly 1 when the logged
//!   propensities are right and support holds. Far from 1 (beyond sampling
//!   noise) means the propensities are wrong or the candidate goes where the
//!   logs do not.
//! * **Max weight**: the heaviest single decision.
//!
//! # Support
//!
//! A decision has **no support** when the candidate puts positive
//! probability on an action the logging policy never takes there: the
//! logger was deterministic (`p ∈ {0, 1}`) and the candidate might do the
//! other thing (`π1(other) > 0` where `π0(other) = 0`). The logs say
//! nothing about what happens then, and no reweighting can fix it: the
//! decision's weight only covers the share of the candidate's probability
//! on the logged action, so the estimates are biased (towards the rewards
//! of what the logger did). The share of unsupported decisions is
//! reported; above a threshold ([`Estimator::with_max_unsupported`], 0 by
//! default) the result is [`Estimate::NoSupport`], not a number. The
//! typical case: a deterministic logging policy against a different
//! deterministic candidate, whose value cannot be estimated from those logs
//! at all; randomise the logging policy (explore) to evaluate candidates
//! offline. The result is also `NoSupport` when no logged decision is one
//! the candidate could take (all weights 0), and when there are fewer valid
//! decisions than [`Estimator::with_min_support`] (0 by default); the
//! [`NoSupportReason`] says which.
//!
//! # Confidence intervals
//!
//! Decisions of one request share a listener and a context, so their
//! rewards are correlated; treating them as independent would make the
//! intervals too narrow. The intervals are a **percentile bootstrap over
//! requests**: `B` times ([`Estimator::with_bootstrap`], 1000 by default),
//! draw as many requests as there are, with replacement, each bringing all
//! its decisions, and recompute IPS, SNIPS and clipped IPS; the interval is
//! the central `level` share ([`Estimator::with_level`], 95% by default) of
//! those recomputed values. It is seeded ([`Estimator::with_seed`]) with a
//! named generator (ChaCha8), so the same logs and seed give the same
//! interval on every machine.
//!
//! The interval covers sampling noise only: not the bias of unsupported
//! decisions, nor wrong logged propensities, nor a reward that does not
//! measure what matters. With a small ESS the bootstrap itself is
//! unreliable (it resamples the same few heavy decisions).
//!
//! # Memory and time
//!
//! [`Accumulator`] streams: it keeps four numbers per request (`Σ w·r`,
//! `Σ w`, `Σ min(w, c)·r`, `n`), 32 bytes, which is all the bootstrap
//! needs, so memory is proportional to requests, not decisions. The
//! bootstrap draws `B ×` requests random indices.
//!
//! Accumulators of parts of the data merge ([`Accumulator::merge`]) and
//! travel as JSON (floats by their bits): requests are sorted by a total
//! order (their key, then every sum) before anything is summed or
//! resampled, so the estimates and intervals of merged parts equal those of
//! one accumulator fed everything, bit for bit.
//!
//! ```
//! use oasis::ope::{Decision, Estimate, Estimator};
//! // An exploring logger (p = 0.5) and a candidate that always promotes.
//! let requests: Vec<Vec<Decision>> = (0..200)
//!     .map(|i| {
//!         let promoted = i % 2 == 0;
//!         let reward = if promoted { (i % 3 == 0) as u8 as f64 } else { 0.0 };
//!         vec![Decision { promoted, propensity: 0.5, candidate_promote: 1.0, reward }]
//!     })
//!     .collect();
//! match Estimator::default().with_seed(7).estimate(&requests) {
//!     Estimate::Value(v) => {
//!         println!("SNIPS {:.3} in [{:.3}, {:.3}], ESS {:.0}", v.snips, v.snips_ci.low, v.snips_ci.high, v.ess);
//!         assert!(v.snips_ci.contains(v.snips));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```

use oasis_contract::reason::PROMOTED;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// One logged promotion decision, seen by both policies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Decision {
    /// Whether the logging policy promoted the track (reason bit
    /// `PROMOTED`).
    pub promoted: bool,
    /// The logging policy's probability of promoting the track (its logged
    /// propensity; 1 or 0 for a deterministic policy).
    pub propensity: f64,
    /// The candidate policy's probability of promoting the track on the
    /// same request.
    pub candidate_promote: f64,
    /// The decision's reward (see [`crate::decision_log::outcomes`]).
    pub reward: f64,
}

impl Decision {
    /// A decision from logged reason bits (promoted = `PROMOTED` set).
    pub fn from_reasons(
        reasons: u16,
        propensity: f64,
        candidate_promote: f64,
        reward: f64,
    ) -> Self {
        Decision {
            promoted: reasons & PROMOTED != 0,
            propensity,
            candidate_promote,
            reward,
        }
    }

    /// `(π0(a), π1(a), π1(other action) > 0 where π0(other action) = 0)`,
    /// or `None` when the decision is malformed.
    fn probabilities(&self) -> Option<(f64, f64, bool)> {
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        if !unit(self.propensity) || !unit(self.candidate_promote) || !self.reward.is_finite() {
            return None;
        }
        let (p, q) = (self.propensity, self.candidate_promote);
        let (logged, candidate, logged_other, candidate_other) = if self.promoted {
            (p, q, 1.0 - p, 1.0 - q)
        } else {
            (1.0 - p, 1.0 - q, p, q)
        };
        if logged <= 0.0 {
            return None;
        }
        Some((
            logged,
            candidate,
            logged_other <= 0.0 && candidate_other > 0.0,
        ))
    }
}

/// An invalid [`Estimator`] setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpeError {
    /// The clipping threshold must be positive and finite.
    #[error("the weight clip must be positive and finite, not {0}")]
    Clip(f64),
    /// The bootstrap needs at least one resample.
    #[error("the bootstrap needs at least 1 resample")]
    Bootstrap,
    /// The interval level must be strictly between 0 and 1.
    #[error("the confidence level must be strictly between 0 and 1, not {0}")]
    Level(f64),
    /// The unsupported share threshold must be in `[0, 1]`.
    #[error("the unsupported share threshold must be in [0, 1], not {0}")]
    MaxUnsupported(f64),
    /// Accumulators of different settings cannot be merged.
    #[error("cannot merge estimates of different settings: {0:?} and {1:?}")]
    Settings(Box<Estimator>, Box<Estimator>),
}

/// The estimators' settings. [`Default`]: clip 10, 1000 bootstrap
/// resamples, seed 0, 95% intervals, no unsupported decision allowed, no
/// least number of decisions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimator {
    #[serde(deserialize_with = "exact_f64")]
    clip: f64,
    bootstrap: usize,
    seed: u64,
    #[serde(deserialize_with = "exact_f64")]
    level: f64,
    #[serde(deserialize_with = "exact_f64")]
    max_unsupported: f64,
    #[serde(default)]
    min_support: u64,
}

/// One JSON number read with Rust's correctly rounded parser (serde_json's
/// default one is not: a setting read back one ULP off would make two
/// shards' settings differ).
fn exact_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
    let text = raw.get().trim();
    text.parse::<f64>()
        .map_err(|e| serde::de::Error::custom(format_args!("{text:.40}: {e}")))
}

impl Default for Estimator {
    fn default() -> Self {
        Estimator {
            clip: 10.0,
            bootstrap: 1000,
            seed: 0,
            level: 0.95,
            max_unsupported: 0.0,
            min_support: 0,
        }
    }
}

impl Estimator {
    /// Sets the clipping threshold `c` of clipped IPS.
    ///
    /// # Errors
    /// `c` not positive and finite.
    pub fn with_clip(mut self, clip: f64) -> Result<Self, OpeError> {
        if !(clip.is_finite() && clip > 0.0) {
            return Err(OpeError::Clip(clip));
        }
        self.clip = clip;
        Ok(self)
    }

    /// Sets the number of bootstrap resamples `B`.
    ///
    /// # Errors
    /// `B` = 0.
    pub fn with_bootstrap(mut self, resamples: usize) -> Result<Self, OpeError> {
        if resamples == 0 {
            return Err(OpeError::Bootstrap);
        }
        self.bootstrap = resamples;
        Ok(self)
    }

    /// Sets the bootstrap's seed: the same decisions and seed give the same
    /// intervals.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the intervals' confidence level (e.g. 0.95).
    ///
    /// # Errors
    /// A level not strictly between 0 and 1.
    pub fn with_level(mut self, level: f64) -> Result<Self, OpeError> {
        if !(level > 0.0 && level < 1.0) {
            return Err(OpeError::Level(level));
        }
        self.level = level;
        Ok(self)
    }

    /// Sets the largest share of unsupported decisions for which a value is
    /// still reported (0 by default: any unsupported decision gives
    /// [`Estimate::NoSupport`]).
    ///
    /// # Errors
    /// A share outside `[0, 1]`.
    pub fn with_max_unsupported(mut self, share: f64) -> Result<Self, OpeError> {
        if !(0.0..=1.0).contains(&share) {
            return Err(OpeError::MaxUnsupported(share));
        }
        self.max_unsupported = share;
        Ok(self)
    }

    /// Sets the least number of valid decisions for which a value is
    /// reported: fewer give [`Estimate::NoSupport`] with
    /// [`NoSupportReason::BelowMinSupport`] (0, the default: no minimum).
    pub fn with_min_support(mut self, decisions: u64) -> Self {
        self.min_support = decisions;
        self
    }

    /// The least number of valid decisions that still gives a value.
    pub fn min_support(&self) -> u64 {
        self.min_support
    }

    /// The clipping threshold.
    pub fn clip(&self) -> f64 {
        self.clip
    }

    /// The number of bootstrap resamples.
    pub fn bootstrap(&self) -> usize {
        self.bootstrap
    }

    /// The bootstrap's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The intervals' confidence level.
    pub fn level(&self) -> f64 {
        self.level
    }

    /// The largest share of unsupported decisions that still gives a value.
    pub fn max_unsupported(&self) -> f64 {
        self.max_unsupported
    }

    /// A streaming accumulator with these settings.
    pub fn accumulator(&self) -> Accumulator {
        Accumulator {
            estimator: *self,
            requests: Vec::new(),
            malformed: 0,
        }
    }

    /// The estimates over `requests`, each the decisions of one logged
    /// request.
    pub fn estimate<R: AsRef<[Decision]>>(&self, requests: &[R]) -> Estimate {
        let mut acc = self.accumulator();
        for r in requests {
            acc.add_request(r.as_ref().iter().copied());
        }
        acc.finish()
    }
}

/// Per request sums: all the bootstrap needs. Serialized as one array of
/// integers, the floats by their bits (exact, whatever the JSON parser).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct RequestSums {
    /// Orders the requests before the bootstrap, so that the intervals do
    /// not depend on the order in which requests were added.
    key: u64,
    wr: f64,
    w: f64,
    clipped_wr: f64,
    n: u32,
    // For the totals, summed in key order at the end (floating-point sums
    // depend on their order).
    w2: f64,
    r: f64,
    max_w: f64,
    unsupported: u32,
}

impl RequestSums {
    /// Every field, floats by their bits: a total order on requests.
    fn wire(&self) -> [u64; 9] {
        [
            self.key,
            self.wr.to_bits(),
            self.w.to_bits(),
            self.clipped_wr.to_bits(),
            u64::from(self.n),
            self.w2.to_bits(),
            self.r.to_bits(),
            self.max_w.to_bits(),
            u64::from(self.unsupported),
        ]
    }

    fn from_wire(w: [u64; 9]) -> Option<Self> {
        Some(RequestSums {
            key: w[0],
            wr: f64::from_bits(w[1]),
            w: f64::from_bits(w[2]),
            clipped_wr: f64::from_bits(w[3]),
            n: u32::try_from(w[4]).ok()?,
            w2: f64::from_bits(w[5]),
            r: f64::from_bits(w[6]),
            max_w: f64::from_bits(w[7]),
            unsupported: u32::try_from(w[8]).ok()?,
        })
    }
}

impl Serialize for RequestSums {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.wire().serialize(s)
    }
}

impl<'de> Deserialize<'de> for RequestSums {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = <[u64; 9]>::deserialize(d)?;
        RequestSums::from_wire(w)
            .ok_or_else(|| serde::de::Error::custom("request sums: a count beyond 32 bits"))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    decisions: u64,
    malformed: u64,
    unsupported: u64,
    w: f64,
    w2: f64,
    wr: f64,
    clipped_wr: f64,
    r: f64,
    max_w: f64,
}

/// Collects decisions request by request, keeping only per-request sums
/// (memory proportional to requests); [`Accumulator::finish`] gives the
/// [`Estimate`].
///
/// Accumulators of parts of the data (shards of a log) merge
/// ([`Accumulator::merge`]) into the accumulator of the whole, and their
/// JSON form (`Serialize`, `Deserialize`) carries every per-request sum
/// exactly: the estimates and intervals of merged parts equal those of one
/// accumulator fed everything, bit for bit, whatever the order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accumulator {
    estimator: Estimator,
    requests: Vec<RequestSums>,
    /// Malformed decisions (left out).
    malformed: u64,
}

impl Accumulator {
    /// Adds the decisions of one logged request (resampled together by the
    /// bootstrap). A request with no valid decision is not counted.
    pub fn add_request<I: IntoIterator<Item = Decision>>(&mut self, decisions: I) {
        let key = self.requests.len() as u64;
        self.add_keyed_request(key, decisions);
    }

    /// [`add_request`](Accumulator::add_request) for requests added in no
    /// particular order (e.g. by several threads): the bootstrap resamples
    /// requests sorted by `key` (e.g. a hash of the request id), so the
    /// intervals are the same whatever the order of the calls.
    pub fn add_keyed_request<I: IntoIterator<Item = Decision>>(&mut self, key: u64, decisions: I) {
        let clip = self.estimator.clip;
        let mut sums = RequestSums {
            key,
            ..RequestSums::default()
        };
        for d in decisions {
            let Some((logged, candidate, unsupported)) = d.probabilities() else {
                self.malformed += 1;
                continue;
            };
            let w = candidate / logged;
            sums.wr += w * d.reward;
            sums.w += w;
            sums.clipped_wr += w.min(clip) * d.reward;
            sums.n += 1;
            sums.w2 += w * w;
            sums.r += d.reward;
            sums.max_w = sums.max_w.max(w);
            sums.unsupported += u32::from(unsupported);
        }
        if sums.n > 0 {
            self.requests.push(sums);
        }
    }

    /// Valid decisions added so far.
    pub fn decisions(&self) -> u64 {
        self.requests.iter().map(|r| u64::from(r.n)).sum()
    }

    /// Requests with at least one valid decision added so far.
    pub fn requests(&self) -> usize {
        self.requests.len()
    }

    /// Malformed decisions (left out) so far.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// The settings.
    pub fn estimator(&self) -> &Estimator {
        &self.estimator
    }

    /// Adds everything `other` collected: the result is that of one
    /// accumulator fed both's requests.
    ///
    /// # Errors
    /// [`OpeError::Settings`] when the two were made with different
    /// settings.
    pub fn merge(&mut self, other: Accumulator) -> Result<(), OpeError> {
        if self.estimator != other.estimator {
            return Err(OpeError::Settings(
                Box::new(self.estimator),
                Box::new(other.estimator),
            ));
        }
        self.malformed += other.malformed;
        self.requests.extend(other.requests);
        Ok(())
    }

    /// The estimates, intervals and diagnostics.
    pub fn finish(mut self) -> Estimate {
        // A total order (every field): the result does not depend on the
        // order in which requests were added, nor on how they were split.
        self.requests.sort_by_key(RequestSums::wire);
        // The same totals, summed in that order.
        let mut t = Totals {
            malformed: self.malformed,
            ..Totals::default()
        };
        for x in &self.requests {
            t.decisions += u64::from(x.n);
            t.unsupported += u64::from(x.unsupported);
            t.w += x.w;
            t.w2 += x.w2;
            t.wr += x.wr;
            t.clipped_wr += x.clipped_wr;
            t.r += x.r;
            t.max_w = t.max_w.max(x.max_w);
        }
        let e = self.estimator;
        if t.decisions == 0 {
            return Estimate::NoData {
                malformed: t.malformed,
            };
        }
        let n = t.decisions as f64;
        let unsupported_share = t.unsupported as f64 / n;
        let logged_value = t.r / n;
        let reason = if t.decisions < e.min_support {
            Some(NoSupportReason::BelowMinSupport {
                min_support: e.min_support,
            })
        } else if unsupported_share > e.max_unsupported {
            Some(NoSupportReason::Unsupported {
                max_unsupported: e.max_unsupported,
            })
        } else if t.w <= 0.0 {
            Some(NoSupportReason::NoWeight)
        } else {
            None
        };
        if let Some(reason) = reason {
            return Estimate::NoSupport(NoSupport {
                reason,
                unsupported_share,
                decisions: t.decisions,
                requests: self.requests.len() as u64,
                malformed: t.malformed,
                logged_value,
            });
        }
        let [ips_ci, snips_ci, clipped_ips_ci] = bootstrap(&self.requests, &e);
        Estimate::Value(ValueEstimate {
            ips: t.wr / n,
            snips: t.wr / t.w,
            clipped_ips: t.clipped_wr / n,
            ips_ci,
            snips_ci,
            clipped_ips_ci,
            level: e.level,
            logged_value,
            ess: t.w * t.w / t.w2,
            mean_weight: t.w / n,
            max_weight: t.max_w,
            decisions: t.decisions,
            requests: self.requests.len() as u64,
            malformed: t.malformed,
            unsupported_share,
            clip: e.clip,
            bootstrap: e.bootstrap,
            seed: e.seed,
        })
    }
}

/// Percentile bootstrap intervals over requests: `[IPS, SNIPS, clipped IPS]`.
fn bootstrap(requests: &[RequestSums], e: &Estimator) -> [Interval; 3] {
    let mut rng = ChaCha8Rng::seed_from_u64(e.seed);
    let mut ips = Vec::with_capacity(e.bootstrap);
    let mut snips = Vec::with_capacity(e.bootstrap);
    let mut clipped = Vec::with_capacity(e.bootstrap);
    let r = requests.len();
    for _ in 0..e.bootstrap {
        let mut s = RequestSums::default();
        let mut n = 0u64;
        for _ in 0..r {
            let x = &requests[rng.random_range(0..r)];
            s.wr += x.wr;
            s.w += x.w;
            s.clipped_wr += x.clipped_wr;
            n += u64::from(x.n);
        }
        let n = n as f64;
        ips.push(s.wr / n);
        clipped.push(s.clipped_wr / n);
        // A resample where the candidate takes none of the logged actions
        // has no SNIPS; it is left out of SNIPS's interval.
        if s.w > 0.0 {
            snips.push(s.wr / s.w);
        }
    }
    [ips, snips, clipped].map(|mut v| percentile_interval(&mut v, e.level))
}

/// The central `level` share of `values`.
fn percentile_interval(values: &mut [f64], level: f64) -> Interval {
    values.sort_by(f64::total_cmp);
    let a = (1.0 - level) / 2.0;
    Interval {
        low: quantile(values, a),
        high: quantile(values, 1.0 - a),
    }
}

/// The `q` quantile of sorted `values`, interpolating linearly between
/// order statistics; NaN when empty.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let h = last as f64 * q;
    let i = h.floor() as usize;
    let j = (i + 1).min(last);
    sorted[i] + (h - i as f64) * (sorted[j] - sorted[i])
}

/// A confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

impl Interval {
    /// Whether `x` is within the bounds (inclusive).
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }

    /// `high − low`.
    pub fn width(&self) -> f64 {
        self.high - self.low
    }
}

/// The result of an off-policy evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Estimate {
    /// No valid decision: nothing to estimate from.
    NoData {
        /// Malformed decisions (left out).
        malformed: u64,
    },
    /// The logs do not cover what the candidate does: no value is given.
    NoSupport(NoSupport),
    /// The estimates.
    Value(ValueEstimate),
}

impl Estimate {
    /// The estimates, when there are.
    pub fn value(&self) -> Option<&ValueEstimate> {
        match self {
            Estimate::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// Why no value is reported: the candidate goes where the logging policy
/// never went (see the [module docs](self)), or there are too few
/// decisions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoSupport {
    /// Why.
    pub reason: NoSupportReason,
    /// Share of decisions on which the candidate may take an action the
    /// logging policy never takes there.
    pub unsupported_share: f64,
    /// Valid decisions.
    pub decisions: u64,
    /// Requests with at least one valid decision.
    pub requests: u64,
    /// Malformed decisions (left out).
    pub malformed: u64,
    /// The logging policy's value (mean reward per decision), for reference.
    pub logged_value: f64,
}

/// Why an estimate is [`Estimate::NoSupport`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NoSupportReason {
    /// Fewer valid decisions than [`Estimator::with_min_support`].
    BelowMinSupport {
        /// The least number of decisions.
        min_support: u64,
    },
    /// The share of unsupported decisions is above
    /// [`Estimator::with_max_unsupported`].
    Unsupported {
        /// The largest share allowed.
        max_unsupported: f64,
    },
    /// No logged decision is one the candidate could take (all weights 0).
    NoWeight,
}

/// The off-policy estimates of the candidate's value (mean reward per
/// decision), their intervals and diagnostics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueEstimate {
    /// IPS: `Σ w·r / n`.
    pub ips: f64,
    /// Self-normalised IPS: `Σ w·r / Σ w` (the headline number).
    pub snips: f64,
    /// Clipped IPS: `Σ min(w, clip)·r / n`.
    pub clipped_ips: f64,
    /// Bootstrap interval of IPS.
    pub ips_ci: Interval,
    /// Bootstrap interval of SNIPS.
    pub snips_ci: Interval,
    /// Bootstrap interval of clipped IPS.
    pub clipped_ips_ci: Interval,
    /// The intervals' confidence level.
    pub level: f64,
    /// The logging policy's value: `Σ r / n`.
    pub logged_value: f64,
    /// Effective sample size: `(Σ w)² / Σ w²`.
    pub ess: f64,
    /// `Σ w / n`: about 1 when propensities are right and support holds.
    pub mean_weight: f64,
    /// The largest weight.
    pub max_weight: f64,
    /// Valid decisions `n`.
    pub decisions: u64,
    /// Requests with at least one valid decision (the bootstrap's units).
    pub requests: u64,
    /// Malformed decisions (left out).
    pub malformed: u64,
    /// Share of unsupported decisions (at most the estimator's threshold).
    pub unsupported_share: f64,
    /// The clipping threshold used.
    pub clip: f64,
    /// Bootstrap resamples.
    pub bootstrap: usize,
    /// Bootstrap seed.
    pub seed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(promoted: bool, p: f64, q: f64, r: f64) -> Decision {
        Decision {
            promoted,
            propensity: p,
            candidate_promote: q,
            reward: r,
        }
    }

    fn value(e: Estimate) -> ValueEstimate {
        match e {
            Estimate::Value(v) => v,
            other => panic!("expected a value: {other:?}"),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Candidate = logging policy: all weights are 1.
    #[test]
    fn the_logging_policy_estimates_its_own_value() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let requests: Vec<Vec<Decision>> = (0..300)
            .map(|i| {
                (0..4)
                    .map(|j| {
                        // Randomised and deterministic decisions alike.
                        let p = match (i + j) % 3 {
                            0 => 1.0,
                            1 => 0.0,
                            _ => rng.random_range(0.05..0.95),
                        };
                        let promoted = rng.random_bool(p);
                        let r = f64::from(u8::from(rng.random_bool(0.2)));
                        d(promoted, p, p, r)
                    })
                    .collect()
            })
            .collect();
        let v = value(Estimator::default().estimate(&requests));
        let n = 1200.0;
        let logged = requests.iter().flatten().map(|d| d.reward).sum::<f64>() / n;
        assert_eq!(v.decisions, 1200);
        assert_eq!(v.requests, 300);
        assert!(close(v.logged_value, logged));
        assert!(close(v.ips, logged) && close(v.snips, logged) && close(v.clipped_ips, logged));
        assert!(close(v.ess, n), "{}", v.ess);
        assert!(close(v.mean_weight, 1.0) && v.max_weight == 1.0);
        assert_eq!(v.unsupported_share, 0.0);
        assert_eq!(v.ips_ci, v.snips_ci, "Σw = n in every resample");
        assert!(v.snips_ci.contains(logged));
        assert!(v.snips_ci.width() > 0.0 && v.snips_ci.width() < 0.1);
    }

    /// Logs of an exploring logger (p = 0.5), rewards Bernoulli(0.3 + u) if
    /// promoted else Bernoulli(0.1 + u), with a per-request effect
    /// u ~ U(−0.05, 0.05) (rewards within a request are correlated). The
    /// candidate promotes tracks 0 and 3 of 5: its true value is
    /// (2·0.3 + 3·0.1) / 5 = 0.18.
    fn simulate(seed: u64, requests: usize) -> Vec<Vec<Decision>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..requests)
            .map(|_| {
                let u = rng.random_range(-0.05..0.05);
                (0..5)
                    .map(|j| {
                        let promoted = rng.random_bool(0.5);
                        let base = if promoted { 0.3 } else { 0.1 };
                        let r = f64::from(u8::from(rng.random_bool(base + u)));
                        d(promoted, 0.5, if j % 3 == 0 { 1.0 } else { 0.0 }, r)
                    })
                    .collect()
            })
            .collect()
    }

    const TRUE_VALUE: f64 = 0.18;

    /// The acceptance criterion in miniature: over 20 seeds, the 95% SNIPS
    /// interval contains the true value at least 17 times.
    #[test]
    fn snips_intervals_cover_the_true_value() {
        let mut covered = 0;
        let mut ips_covered = 0;
        let mut widths = 0.0;
        for seed in 0..20 {
            let v = value(
                Estimator::default()
                    .with_seed(seed)
                    .estimate(&simulate(seed, 1000)),
            );
            assert_eq!(v.unsupported_share, 0.0);
            assert!(
                (v.ess - 2500.0).abs() < 200.0,
                "about the decisions where the candidate agrees: {}",
                v.ess
            );
            covered += usize::from(v.snips_ci.contains(TRUE_VALUE));
            ips_covered += usize::from(v.ips_ci.contains(TRUE_VALUE));
            widths += v.snips_ci.width();
            eprintln!(
                "seed {seed:2}: SNIPS {:.4} [{:.4}, {:.4}]  IPS {:.4} [{:.4}, {:.4}]  logged {:.4}",
                v.snips,
                v.snips_ci.low,
                v.snips_ci.high,
                v.ips,
                v.ips_ci.low,
                v.ips_ci.high,
                v.logged_value
            );
        }
        eprintln!(
            "SNIPS covered {covered}/20, IPS {ips_covered}/20, mean width {:.4}",
            widths / 20.0
        );
        assert!(
            covered >= 17,
            "SNIPS covered the true value {covered}/20 times"
        );
        assert!(
            ips_covered >= 17,
            "IPS covered the true value {ips_covered}/20 times"
        );
        assert!(widths / 20.0 < 0.06, "not vacuous: {}", widths / 20.0);
    }

    #[test]
    fn a_deterministic_logger_does_not_support_another_deterministic_candidate() {
        // Logger promotes even tracks, candidate tracks 0 and 3.
        let requests: Vec<Vec<Decision>> = (0..50)
            .map(|_| {
                (0..6)
                    .map(|j| {
                        let logged = j % 2 == 0;
                        let p = f64::from(u8::from(logged));
                        d(logged, p, f64::from(u8::from(j % 3 == 0)), 1.0)
                    })
                    .collect()
            })
            .collect();
        let e = Estimator::default().estimate(&requests);
        // Tracks 2, 3 and 4 (of 0..6) differ: 3 of 6.
        let Estimate::NoSupport(ns) = &e else {
            panic!("{e:?}")
        };
        assert!(close(ns.unsupported_share, 0.5));
        assert_eq!((ns.decisions, ns.requests, ns.malformed), (300, 50, 0));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "no_support");
        // Allowed unsupported share: a (biased) value, with the share.
        let v = value(
            Estimator::default()
                .with_max_unsupported(0.5)
                .unwrap()
                .estimate(&requests),
        );
        assert!(close(v.unsupported_share, 0.5));
        assert!(
            close(v.mean_weight, 0.5),
            "the missing mass: {}",
            v.mean_weight
        );
        // A candidate that takes none of the logged actions: all weights 0.
        let opposite: Vec<Vec<Decision>> =
            vec![vec![d(true, 0.5, 0.0, 1.0), d(false, 0.5, 1.0, 0.0)]];
        assert!(matches!(
            Estimator::default().estimate(&opposite),
            Estimate::NoSupport(NoSupport { unsupported_share, .. }) if unsupported_share == 0.0
        ));
    }

    #[test]
    fn clipping_caps_large_weights() {
        // One rarely taken promotion (p = 0.01, w = 100) and 9 decisions of
        // weight 1.
        let mut decisions = vec![d(true, 0.01, 1.0, 1.0)];
        decisions.extend((0..9).map(|_| d(true, 0.5, 0.5, 0.5)));
        let requests = vec![decisions];
        let v = value(Estimator::default().estimate(&requests));
        assert!(close(v.max_weight, 100.0));
        assert!(close(v.ips, (100.0 + 4.5) / 10.0), "{}", v.ips);
        assert!(
            close(v.clipped_ips, (10.0 + 4.5) / 10.0),
            "{}",
            v.clipped_ips
        );
        assert!(close(v.snips, 104.5 / 109.0));
        assert!(close(v.ess, 109.0 * 109.0 / (10_000.0 + 9.0)));
        let v = value(
            Estimator::default()
                .with_clip(2.0)
                .unwrap()
                .estimate(&requests),
        );
        assert!(close(v.clipped_ips, (2.0 + 4.5) / 10.0));
        assert!(v.clipped_ips_ci.high <= v.ips_ci.high);
    }

    #[test]
    fn the_bootstrap_is_deterministic_for_a_seed() {
        let requests = simulate(3, 300);
        let e = Estimator::default().with_seed(42);
        let a = e.estimate(&requests);
        assert_eq!(a, e.estimate(&requests));
        let b = Estimator::default().with_seed(43).estimate(&requests);
        let (a, b) = (value(a), value(b));
        assert_eq!(a.snips, b.snips, "the point estimates do not depend on it");
        assert_ne!(a.snips_ci, b.snips_ci, "the intervals do");
        // Streaming equals the batch call.
        let mut acc = e.accumulator();
        for r in &requests {
            acc.add_request(r.iter().copied());
        }
        assert_eq!(acc.requests(), 300);
        assert_eq!(value(acc.finish()), a);
    }

    #[test]
    fn malformed_decisions_are_counted_and_left_out() {
        let requests = vec![
            vec![
                d(true, 0.0, 1.0, 1.0),      // promoted with propensity 0
                d(false, 1.0, 0.0, 1.0),     // not promoted with propensity 1
                d(true, f64::NAN, 1.0, 1.0), // no propensity
                d(true, 0.5, 1.5, 1.0),      // candidate outside [0, 1]
                d(true, 0.5, 1.0, f64::INFINITY),
            ],
            vec![d(true, 0.5, 1.0, 1.0), d(false, 0.5, 1.0, 0.0)],
        ];
        let v = value(Estimator::default().estimate(&requests));
        assert_eq!((v.decisions, v.requests, v.malformed), (2, 1, 5));
        assert!(close(v.ips, 1.0) && close(v.snips, 1.0));
        assert_eq!(
            Estimator::default().estimate(&requests[..1]),
            Estimate::NoData { malformed: 5 }
        );
        assert_eq!(
            Estimator::default().estimate::<Vec<Decision>>(&[]),
            Estimate::NoData { malformed: 0 }
        );
    }

    #[test]
    fn reasons_and_settings() {
        assert!(Decision::from_reasons(PROMOTED | 1, 1.0, 1.0, 0.0).promoted);
        assert!(!Decision::from_reasons(1, 0.0, 0.0, 0.0).promoted);
        let e = Estimator::default();
        assert_eq!((e.clip(), e.bootstrap(), e.seed()), (10.0, 1000, 0));
        assert_eq!((e.level(), e.max_unsupported()), (0.95, 0.0));
        assert_eq!(e.with_clip(0.0), Err(OpeError::Clip(0.0)));
        assert!(e.with_clip(f64::INFINITY).is_err());
        assert_eq!(e.with_bootstrap(0), Err(OpeError::Bootstrap));
        assert_eq!(e.with_level(1.0), Err(OpeError::Level(1.0)));
        assert!(e.with_level(f64::NAN).is_err());
        assert_eq!(
            e.with_max_unsupported(1.5),
            Err(OpeError::MaxUnsupported(1.5))
        );
        let v = value(
            e.with_level(0.5)
                .unwrap()
                .with_bootstrap(200)
                .unwrap()
                .estimate(&simulate(1, 100)),
        );
        let wide = value(Estimator::default().estimate(&simulate(1, 100)));
        assert!(v.snips_ci.width() < wide.snips_ci.width());
        assert_eq!((v.level, v.bootstrap), (0.5, 200));
        let json = serde_json::to_value(Estimate::Value(v)).unwrap();
        assert_eq!(json["kind"], "value");
        assert!(json["snips_ci"]["low"].is_f64() && json["ess"].is_f64());
    }

    /// Four shards, each accumulated apart (in another order), merged, and
    /// sent through JSON: the same estimates and intervals, bit for bit.
    #[test]
    fn merged_shards_equal_one_accumulator() {
        let requests = simulate(9, 400);
        let e = Estimator::default().with_seed(11);
        let mut whole = e.accumulator();
        for (i, r) in requests.iter().enumerate() {
            whole.add_keyed_request(i as u64 * 7919 % 1009, r.iter().copied());
        }
        let whole = whole.finish();
        let mut merged: Option<Accumulator> = None;
        for shard in 0..4u64 {
            let mut acc = e.accumulator();
            for (i, r) in requests.iter().enumerate().rev() {
                if i as u64 % 4 == shard {
                    acc.add_keyed_request(i as u64 * 7919 % 1009, r.iter().copied());
                }
            }
            let json = serde_json::to_string(&acc).unwrap();
            let acc: Accumulator = serde_json::from_str(&json).unwrap();
            match merged.as_mut() {
                None => merged = Some(acc),
                Some(m) => m.merge(acc).unwrap(),
            }
        }
        let merged = merged.unwrap();
        assert_eq!(merged.decisions(), 2000);
        assert_eq!(merged.finish(), whole);
        // Other settings do not merge.
        let mut a = e.accumulator();
        let b = e.with_seed(12).accumulator();
        assert!(matches!(a.merge(b), Err(OpeError::Settings(..))));
    }

    #[test]
    fn below_the_least_number_of_decisions_there_is_no_value() {
        let requests = simulate(2, 10);
        let e = Estimator::default().with_min_support(51);
        assert_eq!(e.min_support(), 51);
        match e.estimate(&requests) {
            Estimate::NoSupport(n) => {
                assert_eq!(
                    n.reason,
                    NoSupportReason::BelowMinSupport { min_support: 51 }
                );
                assert_eq!(n.decisions, 50);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            e.with_min_support(50).estimate(&requests),
            Estimate::Value(_)
        ));
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 5.0);
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.125), 1.5);
        assert!(quantile(&[], 0.5).is_nan());
        assert_eq!(quantile(&[7.0], 0.975), 7.0);
    }
}
