//! Sticky canary bucketing: which listeners a canary policy serves.
//!
//! Each listener gets a fixed position in `[0, 1)` per salt, [`bucket`], and
//! is in a canary at p % when that position is below p / 100,
//! [`in_canary`]. So:
//!
//! - **sticky**: a listener's position never changes, so the listener sees the
//!   same arm on every request, on every replica, across restarts and
//!   upgrades;
//! - **monotone**: raising the percentage only adds listeners (everyone in at
//!   5 % is still in at 20 %), so a ramp-up never flips anyone back;
//! - **independent per salt**: a different salt (say, one per experiment or
//!   route) gives an unrelated assignment, so two canaries do not always hit
//!   the same listeners.
//!
//! The position is SHA-256 over `salt`, a `0x00` byte, then `listener_id`;
//! its first 8 bytes, read big-endian as a `u64`, keep their top 53 bits,
//! divided by 2⁵³. Why a cryptographic hash rather than the standard
//! library's hasher: its output is specified (identical on every replica,
//! machine, process and Rust version, where `DefaultHasher` is randomly
//! seeded per process and its algorithm may change), it needs no seed to
//! share, and its bits are uniform for any input set, including sequential
//! ids like `listener-1`, `listener-2`, … The cost (well under a microsecond
//! for short ids) is immaterial next to a policy call. Changing any of this
//! moves listeners between arms on upgrade; a test pins one value.
//!
//! The `0x00` separator makes the input unambiguous as long as the salt
//! contains no NUL byte (salts are configuration names).
//!
//! ```
//! use oasis::bucket::{bucket, in_canary};
//! let b = bucket("listener-1", "radio");
//! assert!((0.0..1.0).contains(&b));
//! assert!(!in_canary("listener-1", "radio", 0.0));
//! assert!(in_canary("listener-1", "radio", 100.0));
//! ```

use sha2::{Digest, Sha256};

/// The listener's stable position in `[0, 1)` for `salt` (see the
/// [module documentation](self) for the exact construction).
pub fn bucket(listener_id: &str, salt: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(listener_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    unit(u64::from_be_bytes(first))
}

/// The top 53 bits of `x` as a fraction of 2⁵³: exactly representable, in
/// `[0, 1)`.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether the listener is in a canary at `percent` % for `salt`:
/// `bucket(listener_id, salt) * 100.0 < percent`.
///
/// `percent` ≤ 0 (or NaN) admits no one and ≥ 100 everyone. A listener in at
/// some percentage is in at every larger one.
pub fn in_canary(listener_id: &str, salt: &str, percent: f64) -> bool {
    admits(bucket(listener_id, salt), percent)
}

fn admits(bucket: f64, percent: f64) -> bool {
    bucket * 100.0 < percent
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 10_000;

    /// Fixed ids, so every test below is deterministic: it cannot flake, it
    /// passes or fails the same way on every run.
    fn ids() -> Vec<String> {
        (0..N).map(|i| format!("listener-{i}")).collect()
    }

    /// Tolerance: 4 standard deviations of a share p observed on `N`
    /// independent draws, sd = sqrt(p(1-p)/N) (a uniform hash passes with
    /// probability ≈ 0.99994 for a given salt; the salts and ids here are
    /// fixed, so the outcome is fixed too).
    fn within_4_sd(observed: f64, p: f64) -> bool {
        let sd = (p * (1.0 - p) / N as f64).sqrt();
        (observed - p).abs() <= 4.0 * sd
    }

    fn share(ids: &[String], f: impl Fn(&str) -> bool) -> f64 {
        ids.iter().filter(|id| f(id)).count() as f64 / ids.len() as f64
    }

    #[test]
    fn pinned_value() {
        // Computed once (and cross-checked with Python's hashlib:
        // sha256(b"radio\x00listener-1"), first 8 bytes 3b263c25ed299ea7,
        // >> 11 = 2081132925265203, / 2^53). If this fails, the hashing
        // changed and an upgrade would move listeners between arms.
        assert_eq!(bucket("listener-1", "radio"), 0.23105216909349335);
        assert_eq!(
            bucket("listener-1", "radio"),
            2081132925265203.0 / 2f64.powi(53)
        );
        assert!(in_canary("listener-1", "radio", 23.2));
        assert!(!in_canary("listener-1", "radio", 23.1));
    }

    #[test]
    fn shares_match_the_percentage() {
        let ids = ids();
        for percent in [1.0, 5.0, 20.0, 50.0] {
            let observed = share(&ids, |id| in_canary(id, "radio", percent));
            let p = percent / 100.0;
            assert!(within_4_sd(observed, p), "{percent} %: observed {observed}");
        }
        // Buckets stay in [0, 1).
        assert!(
            ids.iter()
                .all(|id| (0.0..1.0).contains(&bucket(id, "radio")))
        );
    }

    #[test]
    fn zero_and_hundred_percent() {
        let ids = ids();
        assert_eq!(share(&ids, |id| in_canary(id, "radio", 0.0)), 0.0);
        assert_eq!(share(&ids, |id| in_canary(id, "radio", 100.0)), 1.0);
        assert_eq!(share(&ids, |id| in_canary(id, "radio", f64::NAN)), 0.0);
        assert_eq!(share(&ids, |id| in_canary(id, "radio", -5.0)), 0.0);
        assert_eq!(share(&ids, |id| in_canary(id, "radio", 250.0)), 1.0);
        // The extremes of the bucket range, whatever ids would reach them.
        let top = unit(u64::MAX);
        assert!(top < 1.0 && admits(top, 100.0) && !admits(top, 99.999));
        let bottom = unit(0);
        assert!(bottom == 0.0 && !admits(bottom, 0.0) && admits(bottom, 1e-9));
    }

    #[test]
    fn canaries_are_sticky() {
        let ids = ids();
        let mut at_5 = 0;
        for id in &ids {
            if in_canary(id, "radio", 5.0) {
                at_5 += 1;
                assert!(in_canary(id, "radio", 20.0), "{id}");
                assert!(in_canary(id, "radio", 50.0), "{id}");
            }
            // And the same answer every time.
            assert_eq!(bucket(id, "radio"), bucket(id, "radio"));
        }
        assert!(at_5 > 0);
    }

    #[test]
    fn salts_are_independent() {
        let ids = ids();
        // Two 50 % canaries with different salts overlap on about 25 % of
        // listeners if the assignments are independent.
        let both = share(&ids, |id| {
            in_canary(id, "radio", 50.0) && in_canary(id, "autoplay", 50.0)
        });
        assert!(within_4_sd(both, 0.25), "overlap {both}");
        // The salt is not just appended to the id.
        assert_ne!(bucket("a", "bc"), bucket("ab", "c"));
    }
}
