//! [`ExactSum`]: a sum of `f64`s that does not depend on the order of its
//! terms.
//!
//! Floating-point addition rounds at every step, so `a + b + c` and
//! `c + a + b` may differ in the last bits. A replay split into shards and
//! merged adds the same terms in another order than one process does; with
//! an exact sum the merged figures equal the single run's bit for bit.
//!
//! Every finite `f64` is an integer multiple of 2⁻¹⁰⁷⁴ below 2¹⁰²⁴, so the
//! sum is kept as one wide integer (in units of 2⁻¹⁰⁷⁴, in 32-bit limbs with
//! room for carries) and rounded once, correctly (to nearest, ties to even),
//! when read ([`ExactSum::value`]). Adding costs a few integer operations;
//! the state is 69 words. Non-finite terms are kept apart: the sum is NaN
//! with a NaN or with infinities of both signs, else the infinity.

use serde::{Deserialize, Serialize};

/// Limbs of 32 bits: 2098 bits of value (2¹⁰²⁴⁺⁵³ in units of 2⁻¹⁰⁷⁴) and
/// 62 bits of headroom for the count of terms.
const LIMBS: usize = 68;
/// Terms added before carries are propagated: each adds less than 2³² to a
/// limb, which holds an `i64`.
const CARRY_EVERY: u32 = 1 << 30;

/// An order-independent, exactly rounded sum of `f64`s.
///
/// ```
/// use oasis::exact::ExactSum;
/// let mut a = ExactSum::default();
/// for x in [1e100, 1.0, -1e100] {
///     a.add(x);
/// }
/// assert_eq!(a.value(), 1.0); // the naive sum is 0
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactSum {
    limbs: [i64; LIMBS],
    pending: u32,
    /// Sum of the non-finite terms (NaN, ±∞), if any.
    special: Option<u64>,
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum {
            limbs: [0; LIMBS],
            pending: 0,
            special: None,
        }
    }
}

impl ExactSum {
    /// Adds `x`.
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            let s = self.special.map_or(x, |s| f64::from_bits(s) + x);
            self.special = Some(s.to_bits());
            return;
        }
        if x == 0.0 {
            return;
        }
        let bits = x.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as usize;
        let fraction = bits & ((1 << 52) - 1);
        // x = ±mantissa × 2^(shift − 1074).
        let (mantissa, shift) = if exponent == 0 {
            (fraction, 0)
        } else {
            (fraction | (1 << 52), exponent - 1)
        };
        let wide = u128::from(mantissa) << (shift % 32);
        let at = shift / 32;
        let sign = if x < 0.0 { -1 } else { 1 };
        for k in 0..3 {
            let chunk = ((wide >> (32 * k)) & 0xffff_ffff) as i64;
            if chunk != 0 {
                self.limbs[at + k] += sign * chunk;
            }
        }
        self.bump();
    }

    /// Adds every term of `other`.
    pub fn merge(&mut self, other: &ExactSum) {
        let mut other = other.clone();
        other.carry();
        self.carry();
        for (a, b) in self.limbs.iter_mut().zip(other.limbs) {
            *a += b;
        }
        if let Some(s) = other.special {
            self.add(f64::from_bits(s));
        }
        self.bump();
    }

    /// The sum, rounded once to the nearest `f64` (ties to even).
    pub fn value(&self) -> f64 {
        if let Some(s) = self.special {
            return f64::from_bits(s);
        }
        let mut limbs = self.limbs;
        carry(&mut limbs);
        let negative = limbs[LIMBS - 1] < 0;
        if negative {
            for l in &mut limbs {
                *l = -*l;
            }
            carry(&mut limbs);
        }
        let magnitude = to_f64(&limbs);
        if negative { -magnitude } else { magnitude }
    }

    fn bump(&mut self) {
        self.pending += 1;
        if self.pending >= CARRY_EVERY {
            self.carry();
        }
    }

    fn carry(&mut self) {
        carry(&mut self.limbs);
        self.pending = 0;
    }
}

/// Propagates carries: every limb but the last in `[0, 2³²)`, the last
/// signed.
fn carry(limbs: &mut [i64; LIMBS]) {
    for i in 0..LIMBS - 1 {
        let c = limbs[i] >> 32;
        limbs[i] -= c << 32;
        limbs[i + 1] += c;
    }
}

/// A non-negative, carried integer (in units of 2⁻¹⁰⁷⁴) as the nearest
/// `f64`.
fn to_f64(limbs: &[i64; LIMBS]) -> f64 {
    let bit = |i: usize| (limbs[i / 32] >> (i % 32)) & 1 == 1;
    let Some(top) = (0..LIMBS).rev().find(|&i| limbs[i] != 0) else {
        return 0.0;
    };
    let msb = 32 * top + 63 - (limbs[top] as u64).leading_zeros() as usize;
    if msb < 53 {
        // Below 2^53 units: exactly a subnormal or the smallest normals.
        let n = (limbs[0] as u64) | ((limbs[1] as u64) << 32);
        return n as f64 * f64::from_bits(1);
    }
    // 53 significant bits, then round to nearest, ties to even.
    let low = msb - 52;
    let mut mantissa: u64 = 0;
    for i in (low..=msb).rev() {
        mantissa = (mantissa << 1) | u64::from(bit(i));
    }
    let round = bit(low - 1);
    let sticky = (0..low - 1).any(bit);
    let mut exponent = low; // value = mantissa × 2^(exponent − 1074)
    if round && (sticky || mantissa & 1 == 1) {
        mantissa += 1;
        if mantissa == 1 << 53 {
            mantissa >>= 1;
            exponent += 1;
        }
    }
    // Biased exponent of mantissa × 2^(exponent − 1074) with the leading
    // bit at 2^52: exponent − 1074 + 52 + 1023.
    let biased = exponent + 1; // (exponent + 52 − 1074 + 1023) = exponent + 1
    if biased >= 0x7ff {
        return f64::INFINITY;
    }
    f64::from_bits(((biased as u64) << 52) | (mantissa & ((1 << 52) - 1)))
}

/// Serialized as its carried limbs (index, value) that are not zero, and
/// the non-finite part's bits: exact, and small for sums of similar terms.
#[derive(Serialize, Deserialize)]
struct Wire {
    limbs: Vec<(u16, i64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    special: Option<u64>,
}

impl Serialize for ExactSum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut limbs = self.limbs;
        carry(&mut limbs);
        Wire {
            limbs: limbs
                .iter()
                .enumerate()
                .filter(|(_, l)| **l != 0)
                .map(|(i, l)| (i as u16, *l))
                .collect(),
            special: self.special,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ExactSum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        let mut sum = ExactSum {
            special: wire.special,
            ..ExactSum::default()
        };
        for (i, l) in wire.limbs {
            let i = usize::from(i);
            if i >= LIMBS || (i < LIMBS - 1 && !(0..1 << 32).contains(&l)) {
                return Err(serde::de::Error::custom(format!(
                    "exact sum limb {i} = {l} out of range"
                )));
            }
            sum.limbs[i] = l;
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::ChaCha8Rng;
    use rand::{RngExt, SeedableRng};

    fn sum(xs: &[f64]) -> f64 {
        let mut s = ExactSum::default();
        for &x in xs {
            s.add(x);
        }
        s.value()
    }

    #[test]
    fn cancellation_and_tiny_terms_are_exact() {
        assert_eq!(sum(&[]), 0.0);
        assert_eq!(sum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(sum(&[0.1, 0.2]), 0.1 + 0.2, "one rounding, like one add");
        assert_eq!(sum(&[0.1; 10]), 1.0, "0.1 ten times, rounded once");
        let tiny = f64::from_bits(1);
        assert_eq!(sum(&[tiny, tiny, tiny]), 3.0 * tiny);
        assert_eq!(sum(&[f64::MIN_POSITIVE, -tiny]), f64::MIN_POSITIVE - tiny);
        assert_eq!(sum(&[-2.5, 1.0]), -1.5);
        assert_eq!(sum(&[f64::MAX, f64::MAX]), f64::INFINITY);
        assert_eq!(sum(&[f64::MAX, f64::MAX, -f64::MAX]), f64::MAX);
        assert_eq!(sum(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(sum(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert!(sum(&[f64::NAN, 1.0]).is_nan());
    }

    #[test]
    fn ties_round_to_even() {
        // 1 + 2^-53 is halfway between 1 and its successor: rounds to 1.
        let half_ulp = f64::EPSILON / 2.0;
        assert_eq!(sum(&[1.0, half_ulp]), 1.0);
        // (1 + 2^-52) + 2^-53 is halfway too: rounds up to even.
        assert_eq!(
            sum(&[1.0 + f64::EPSILON, half_ulp]),
            1.0 + 2.0 * f64::EPSILON
        );
        // A sticky bit below the halfway point rounds up.
        assert_eq!(
            sum(&[1.0, half_ulp, half_ulp * f64::EPSILON]),
            1.0 + f64::EPSILON
        );
    }

    #[test]
    fn the_order_does_not_matter_and_merging_is_adding() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let xs: Vec<f64> = (0..5000)
            .map(|_| {
                let m: f64 = rng.random_range(-1.0..1.0);
                m * 10f64.powi(rng.random_range(-30..30))
            })
            .collect();
        let forward = sum(&xs);
        let mut reversed = xs.clone();
        reversed.reverse();
        assert_eq!(sum(&reversed).to_bits(), forward.to_bits());
        // Four shards, merged.
        let mut merged = ExactSum::default();
        for shard in xs.chunks(1250) {
            let mut s = ExactSum::default();
            for &x in shard {
                s.add(x);
            }
            merged.merge(&s);
        }
        assert_eq!(merged.value().to_bits(), forward.to_bits());
        // Against a sum that is exact in f64: integers.
        let ints: Vec<f64> = (0..1000).map(|i| f64::from(i * 7 - 3000)).collect();
        assert_eq!(sum(&ints), ints.iter().sum::<f64>());
    }

    #[test]
    fn it_round_trips_through_json() {
        let mut s = ExactSum::default();
        for x in [0.1, -3.7e-300, 5e200, 2.0] {
            s.add(x);
        }
        let json = serde_json::to_string(&s).unwrap();
        let back: ExactSum = serde_json::from_str(&json).unwrap();
        assert_eq!(back.value().to_bits(), s.value().to_bits());
        assert!(serde_json::from_str::<ExactSum>(r#"{"limbs":[[3,-1]]}"#).is_err());
        assert!(serde_json::from_str::<ExactSum>(r#"{"limbs":[[99,1]]}"#).is_err());
    }
}
