//! The shard's forwarding delay: from the kernel's receive timestamp of a publisher's
//! datagram (`SO_TIMESTAMPNS`) to the moment each copy of it was handed back to the kernel.
//! Kept as a fixed-bucket histogram of atomics, written by the shard's thread and read by
//! `/metrics` on another; `observe` takes no lock and allocates nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (the last bucket, +Inf, is implied): fine from
/// 1 to 50 ms, where a loaded shard's fan-out puts its copies.
pub const FORWARD_DELAY_BUCKETS: [f64; BUCKETS] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.001_5, 0.002, 0.003, 0.004, 0.005, 0.006,
    0.008, 0.01, 0.012_5, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
];
const BUCKETS: usize = 26;

const BUCKET_NANOS: [u64; BUCKETS] = {
    let mut nanos = [0u64; BUCKETS];
    let mut i = 0;
    while i < BUCKETS {
        nanos[i] = (FORWARD_DELAY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    nanos
};

/// A histogram of delays with [`FORWARD_DELAY_BUCKETS`].
#[derive(Debug, Default)]
pub struct DelayHistogram {
    /// Per bucket (not cumulative); the last one is above the last bound.
    counts: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
}

/// A copy of a [`DelayHistogram`] at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct DelaySnapshot {
    /// (upper bound in seconds, observations at or below it), cumulative, ending with +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl DelayHistogram {
    /// Records `copies` observations of `delay`.
    pub fn observe(&self, delay: Duration, copies: u64) {
        if copies == 0 {
            return;
        }
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS.partition_point(|&bound| bound < nanos);
        self.counts[bucket].fetch_add(copies, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(nanos.saturating_mul(copies), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> DelaySnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS + 1);
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let bound = FORWARD_DELAY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        DelaySnapshot {
            buckets,
            count: cumulative,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

impl DelaySnapshot {
    /// `(upper bound, observations in this bucket only)`, as Prometheus encoders take them.
    pub fn per_bucket(&self) -> Vec<(f64, u64)> {
        let mut below = 0;
        self.buckets
            .iter()
            .map(|&(bound, cumulative)| {
                let inside = cumulative - below;
                below = cumulative;
                (bound, inside)
            })
            .collect()
    }

    /// The `q` quantile (0..=1) by linear interpolation inside its bucket, as Prometheus'
    /// `histogram_quantile` does; `None` without observations. Above the last finite bound
    /// the answer is that bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.buckets, q)
    }
}

/// The `q` quantile of cumulative `(upper bound, count)` buckets ending with +Inf.
pub fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            if bound.is_infinite() {
                return Some(below.0);
            }
            let inside = (count - below.1) as f64;
            let fraction = if inside == 0.0 {
                1.0
            } else {
                (rank - below.1 as f64) / inside
            };
            return Some(below.0 + (bound - below.0) * fraction);
        }
        below = (bound, count);
    }
    Some(below.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_covers_them() {
        assert!(
            FORWARD_DELAY_BUCKETS.windows(2).all(|w| w[0] < w[1]),
            "bounds ascend"
        );
        let histogram = DelayHistogram::default();
        histogram.observe(Duration::from_micros(20), 3);
        histogram.observe(Duration::from_micros(25), 1);
        histogram.observe(Duration::from_micros(26), 2);
        histogram.observe(Duration::from_secs(5), 1);
        histogram.observe(Duration::from_secs(5), 0);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets.len(), BUCKETS + 1);
        assert_eq!(snapshot.buckets[0], (0.000_025, 4));
        assert_eq!(snapshot.buckets[1], (0.000_05, 6));
        assert_eq!(snapshot.buckets[BUCKETS - 1], (1.0, 6));
        assert_eq!(snapshot.buckets[BUCKETS].1, 7);
        assert!(snapshot.buckets[BUCKETS].0.is_infinite());
        assert_eq!(snapshot.count, 7);
        let expected = (3.0 * 20e-6) + 25e-6 + 2.0 * 26e-6 + 5.0;
        assert!((snapshot.sum_seconds - expected).abs() < 1e-9);
        let per_bucket = snapshot.per_bucket();
        assert_eq!(&per_bucket[..2], &[(0.000_025, 4), (0.000_05, 2)]);
        assert_eq!(per_bucket.iter().map(|b| b.1).sum::<u64>(), 7);
    }

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let histogram = DelayHistogram::default();
        assert_eq!(histogram.snapshot().quantile(0.5), None);
        // 100 observations between 100 and 250 us: the median is half way.
        histogram.observe(Duration::from_micros(200), 100);
        let median = histogram.snapshot().quantile(0.5).unwrap();
        assert!((median - 0.000_175).abs() < 1e-9, "{median}");
        // One slow copy moves p99 but not the median.
        histogram.observe(Duration::from_millis(40), 1);
        let snapshot = histogram.snapshot();
        assert!(snapshot.quantile(0.5).unwrap() < 0.000_25);
        assert!(snapshot.quantile(1.0).unwrap() > 0.025);
        histogram.observe(Duration::from_secs(3), 10);
        assert_eq!(histogram.snapshot().quantile(1.0), Some(1.0));
    }
}
