//! Timing and summary statistics: the best-of-N mean timer of the
//! in-process figures, and nearest-rank percentiles.

use std::time::{Duration, Instant};

/// Nearest-rank percentile `q` (0–1) of `sorted` (ascending); `None` when
/// empty. `q = 0.99` of 100 values is the 99th smallest.
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of `v`: its nearest-rank 50th percentile (the lower middle
/// value of an even count); NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5).unwrap_or(f64::NAN)
}

/// `n` single calls of `f`, each timed: their durations, ascending.
pub fn single_calls(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t
}

/// How many calls make one round of about `budget`, given one call took
/// `one`: at least `min`, at most `max`.
pub fn iterations(one: Duration, budget: Duration, min: u64, max: u64) -> u64 {
    let one = one.as_nanos().max(1);
    ((budget.as_nanos() / one) as u64).clamp(min, max)
}

/// The best-of-N mean: `rounds` rounds of back-to-back calls (about
/// `budget` each, after three warm-up calls), the lowest round mean. On a
/// shared machine the lowest mean is the one least disturbed by other
/// processes; it is not a best single call.
pub fn best_mean(rounds: usize, budget: Duration, mut f: impl FnMut()) -> Duration {
    let s = Instant::now();
    for _ in 0..3 {
        f();
    }
    let n = iterations(s.elapsed() / 3, budget, 5, 200_000);
    (0..rounds.max(1))
        .map(|_| {
            let s = Instant::now();
            for _ in 0..n {
                f();
            }
            s.elapsed() / n as u32
        })
        .min()
        .expect("at least one round")
}

/// Microseconds of `d`, as a float.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.0);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7u64], 0.99), Some(7));
        assert_eq!(percentile::<u64>(&[], 0.5), None);
        // 10 values: p99 is the largest, p90 the 9th.
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 0.99), Some(10));
        assert_eq!(percentile(&v, 0.9), Some(9));
    }

    #[test]
    fn single_calls_are_sorted_and_counted() {
        let mut calls = 0;
        let t = single_calls(9, || calls += 1);
        assert_eq!((calls, t.len()), (9, 9));
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn iterations_are_bounded() {
        let ms = Duration::from_millis;
        assert_eq!(iterations(ms(1), ms(50), 5, 1000), 50);
        assert_eq!(iterations(ms(100), ms(50), 5, 1000), 5);
        assert_eq!(iterations(Duration::ZERO, ms(50), 5, 1000), 1000);
    }

    #[test]
    fn best_mean_runs_warmup_and_every_round() {
        let mut calls = 0u64;
        best_mean(4, Duration::ZERO, || calls += 1);
        // 3 warm-up calls, then 4 rounds of the minimum 5.
        assert_eq!(calls, 3 + 4 * 5);
    }
}
