//! Is a policy version promoting anything? Outcome counts per version and a
//! watch for a version that silently stops promoting.
//!
//! A policy can fail without an error: it reads a feature the host does not
//! send, or its settings gate everything out, and it answers every request
//! with organic scores. Nothing breaks, so nothing alerts. The
//! [`PromotionWatch`] of each active version counts the campaign candidates
//! it saw and the tracks it promoted, keeps a recent promoted rate, and
//! flags the version as **stalled** when it has promoted nothing over at
//! least [`PromotionStall::candidates`] campaign candidates and
//! [`PromotionStall::after`] of time: a warning is logged once, the
//! `oasis_policy_promotion_stalled` gauge is 1 and `/v1/policies` says so,
//! until it promotes again.
//!
//! Everything on the request path is a few relaxed atomic operations.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

/// When a version that promotes nothing is flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromotionStall {
    /// Campaign candidates seen since its last promotion (or activation).
    pub candidates: u64,
    /// Time since its last promotion (or activation).
    pub after: Duration,
}

impl Default for PromotionStall {
    /// 1,000 campaign candidates and 5 minutes without a promotion.
    fn default() -> Self {
        PromotionStall {
            candidates: 1000,
            after: Duration::from_secs(300),
        }
    }
}

/// Weight of the latest request in the recent promoted rate (about the
/// last 100 requests with campaign candidates).
const RECENT_WEIGHT: f64 = 0.01;

/// Promotion counts and the stall flag of one policy version.
#[derive(Debug)]
pub struct PromotionWatch {
    rule: PromotionStall,
    activated_ms: u64,
    campaign_candidates: AtomicU64,
    promoted: AtomicU64,
    since_promotion: AtomicU64,
    last_promoted_ms: AtomicU64,
    /// f64 bits; NaN until the first request with campaign candidates.
    recent_rate: AtomicU64,
    stalled: AtomicBool,
    gauge: Gauge,
    label: String,
}

/// What `/v1/policies` shows of a version's promotions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PromotionStatus {
    /// Campaign candidates scored since activation.
    pub campaign_candidates: u64,
    /// Tracks promoted since activation.
    pub promoted: u64,
    /// Promoted tracks per campaign candidate over about the last 100
    /// requests that had campaign candidates; absent before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_promoted_rate: Option<f64>,
    /// Last promotion, unix ms; absent if none yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_promoted_at_ms: Option<u64>,
    /// Promoted nothing over the stall window while campaign candidates
    /// arrived.
    pub stalled: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl PromotionWatch {
    /// A watch for version `label` (for the log line), publishing the stall
    /// flag on `gauge`.
    pub fn new(rule: PromotionStall, gauge: Gauge, label: String) -> Self {
        gauge.set(0);
        PromotionWatch {
            rule,
            activated_ms: now_ms(),
            campaign_candidates: AtomicU64::new(0),
            promoted: AtomicU64::new(0),
            since_promotion: AtomicU64::new(0),
            last_promoted_ms: AtomicU64::new(0),
            recent_rate: AtomicU64::new(f64::NAN.to_bits()),
            stalled: AtomicBool::new(false),
            gauge,
            label,
        }
    }

    /// Records one answered request: `campaign` campaign candidates, of
    /// which `promoted` were promoted.
    pub fn record(&self, campaign: u64, promoted: u64) {
        if campaign == 0 && promoted == 0 {
            return;
        }
        self.campaign_candidates
            .fetch_add(campaign, Ordering::Relaxed);
        if campaign > 0 {
            let rate = promoted as f64 / campaign as f64;
            let _ = self
                .recent_rate
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                    let old = f64::from_bits(bits);
                    let new = if old.is_nan() {
                        rate
                    } else {
                        old + RECENT_WEIGHT * (rate - old)
                    };
                    Some(new.to_bits())
                });
        }
        if promoted > 0 {
            self.promoted.fetch_add(promoted, Ordering::Relaxed);
            self.since_promotion.store(0, Ordering::Relaxed);
            self.last_promoted_ms.store(now_ms(), Ordering::Relaxed);
            if self.stalled.swap(false, Ordering::Relaxed) {
                self.gauge.set(0);
                tracing::info!(policy = %self.label, "policy promotes again");
            }
            return;
        }
        let since = self.since_promotion.fetch_add(campaign, Ordering::Relaxed) + campaign;
        if since < self.rule.candidates || self.stalled.load(Ordering::Relaxed) {
            return;
        }
        let last = self
            .last_promoted_ms
            .load(Ordering::Relaxed)
            .max(self.activated_ms);
        if now_ms().saturating_sub(last) >= self.rule.after.as_millis() as u64
            && !self.stalled.swap(true, Ordering::Relaxed)
        {
            self.gauge.set(1);
            tracing::warn!(
                policy = %self.label,
                campaign_candidates = since,
                since_s = (now_ms().saturating_sub(last)) / 1000,
                "policy has promoted nothing while campaign candidates arrive: check its features (declared?) and settings"
            );
        }
    }

    /// The counts for status.
    pub fn status(&self) -> PromotionStatus {
        let rate = f64::from_bits(self.recent_rate.load(Ordering::Relaxed));
        let last = self.last_promoted_ms.load(Ordering::Relaxed);
        PromotionStatus {
            campaign_candidates: self.campaign_candidates.load(Ordering::Relaxed),
            promoted: self.promoted.load(Ordering::Relaxed),
            recent_promoted_rate: (!rate.is_nan()).then_some(rate),
            last_promoted_at_ms: (last > 0).then_some(last),
            stalled: self.stalled.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_that_stops_promoting_is_flagged_and_unflagged() {
        let rule = PromotionStall {
            candidates: 30,
            after: Duration::ZERO,
        };
        let gauge = Gauge::default();
        let w = PromotionWatch::new(rule, gauge.clone(), "p@1".into());
        w.record(10, 2);
        assert_eq!(w.status().recent_promoted_rate, Some(0.2));
        w.record(10, 0);
        w.record(10, 0);
        assert!(!w.status().stalled, "20 candidates without: below the rule");
        w.record(0, 0);
        w.record(10, 0);
        let s = w.status();
        assert!(s.stalled && gauge.get() == 1, "{s:?}");
        assert_eq!((s.campaign_candidates, s.promoted), (40, 2));
        assert!(s.recent_promoted_rate.unwrap() < 0.2);
        w.record(5, 1);
        assert!(!w.status().stalled && gauge.get() == 0);
    }

    #[test]
    fn time_matters_too() {
        let rule = PromotionStall {
            candidates: 1,
            after: Duration::from_secs(3600),
        };
        let w = PromotionWatch::new(rule, Gauge::default(), "p@1".into());
        w.record(1000, 0);
        assert!(!w.status().stalled, "not an hour yet");
    }
}
