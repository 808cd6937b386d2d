//! The semantics both stores share: what an event changes, the windows, the
//! attention weights and the pacing write rule. Keeping them here (rather
//! than in each store) is what makes the embedded and the Redis store answer
//! the same numbers for the same events.

use crate::{DeliveryEvent, EventKind, PacingWrite};

/// One hour in milliseconds: the granularity of the exposure window.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// Attention is stored in fixed point (units of 1e-9) so that sums are exact
/// and identical in both stores (Redis adds integers with `HINCRBY`; floats
/// summed in different orders would differ in the last bits).
pub(crate) const ATTENTION_SCALE: f64 = 1e9;

/// What one (new) event changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Effects<'a> {
    /// The campaign whose delivered count goes up by one.
    pub delivered: Option<&'a str>,
    /// A promoted impression of `track_id` to `listener_id` at `at_ms`.
    pub impression: bool,
    /// A promoted play of `track_id` in `session_id`.
    pub play: bool,
    /// Attention (fixed point) to a rights holder in the hour of `at_ms`.
    pub attention: Option<(&'a str, u64)>,
}

pub(crate) fn effects(e: &DeliveryEvent) -> Effects<'_> {
    let impression = e.kind == EventKind::Impression;
    Effects {
        delivered: if impression && e.promoted {
            e.campaign_id.as_deref()
        } else {
            None
        },
        impression: impression && e.promoted,
        play: e.kind == EventKind::Stream && e.promoted,
        attention: if impression {
            match (
                e.rights_holder.as_deref(),
                e.position.and_then(attention_units),
            ) {
                (Some(h), Some(u)) => Some((h, u)),
                _ => None,
            }
        } else {
            None
        },
    }
}

/// `1 / log2(1 + position)` in fixed point; `None` for position 0 (ranks
/// are 1-based, the caller validates; 0 would be infinite attention).
pub(crate) fn attention_units(position: u32) -> Option<u64> {
    if position == 0 {
        return None;
    }
    let weight = 1.0 / (1.0 + f64::from(position)).log2();
    Some((weight * ATTENTION_SCALE).round() as u64)
}

/// The hour bucket of a time.
pub(crate) fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS)
}

/// The hour buckets of the 7-day exposure window ending at `now_ms`: the
/// current hour and the 167 before it.
pub(crate) fn exposure_hours(now_ms: i64) -> std::ops::RangeInclusive<i64> {
    let h = hour_of(now_ms);
    (h - (crate::EXPOSURE_WINDOW_HOURS - 1))..=h
}

/// Whether an impression at `t` is in the 24 h window ending at `now_ms`:
/// `now - 24 h < t <= now`.
pub(crate) fn in_impression_window(t: i64, now_ms: i64) -> bool {
    t <= now_ms && t > now_ms - crate::IMPRESSION_WINDOW_MS
}

/// The share of all attention, `None` when there was no attention at all.
pub(crate) fn share(holder_units: u64, total_units: u64) -> Option<f64> {
    if total_units == 0 {
        None
    } else {
        Some((holder_units as f64 / total_units as f64).min(1.0))
    }
}

/// The write rule of [`PacingWrite`]; `stored_updated_ms` is 0 when there is
/// no stored state.
pub(crate) fn pacing_applies(stored_updated_ms: i64, w: &PacingWrite, tick_ms: i64) -> bool {
    let tick_ms = tick_ms.max(1);
    stored_updated_ms == w.based_on_ms
        && w.at_ms.div_euclid(tick_ms) > stored_updated_ms.div_euclid(tick_ms)
}

/// Keeps the newest `max` timestamps of the 24 h window ending at the newest
/// one; sorted ascending.
pub(crate) fn trim_impressions(ts: &mut Vec<i64>, max: usize) {
    ts.sort_unstable();
    if let Some(&newest) = ts.last() {
        let cutoff = newest - crate::IMPRESSION_WINDOW_MS;
        ts.retain(|&t| t > cutoff);
    }
    if ts.len() > max {
        ts.drain(..ts.len() - max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_weights() {
        assert_eq!(attention_units(1), Some(1_000_000_000));
        assert_eq!(attention_units(3), Some(500_000_000));
        assert_eq!(attention_units(0), None);
        assert_eq!(share(1_000_000_000, 1_500_000_000), Some(2.0 / 3.0));
        assert_eq!(share(500_000_000, 1_500_000_000), Some(1.0 / 3.0));
        assert_eq!(share(0, 0), None);
    }

    #[test]
    fn windows() {
        let t = 10 * crate::IMPRESSION_WINDOW_MS;
        assert!(in_impression_window(t, t));
        assert!(in_impression_window(t, t + crate::IMPRESSION_WINDOW_MS - 1));
        assert!(!in_impression_window(t, t + crate::IMPRESSION_WINDOW_MS));
        assert!(!in_impression_window(t, t - 1));
        assert_eq!(exposure_hours(HOUR_MS * 200 + 5).count(), 168);
        assert_eq!(hour_of(-1), -1);
    }

    #[test]
    fn trim_keeps_newest_in_window() {
        let day = crate::IMPRESSION_WINDOW_MS;
        let mut ts = vec![5 * day, 3 * day, 5 * day - 10, 4 * day + 1];
        trim_impressions(&mut ts, 2);
        assert_eq!(ts, vec![5 * day - 10, 5 * day]);
    }
}
