//! Request traffic for the simulator: a seeded RNG, Poisson arrivals, a replica's queue, and the
//! measurements taken of them (a latency histogram and a rate counter).
//!
//! Everything here is deterministic: no clock, no ambient randomness, no
//! hash-map iteration. Time is integer microseconds (`u64`, names ending in `_us`). The one caveat
//! is [`SimRng::exp`], which calls `f64::ln`: the same binary on the same platform gives the same
//! bits, but another libm may differ in the last ulp.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;

use canteen_core::rng::SplitMix64;

/// A seeded random number generator: core's splitmix64, plus the draws the traffic model needs.
#[derive(Clone, Debug)]
pub struct SimRng(SplitMix64);

impl SimRng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(SplitMix64::new(seed))
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A uniform float in [0, 1), with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in [0, n), without modulo bias; panics when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no value to return");
        // Reject the top partial copy of [0, n) so every residue is equally likely.
        let zone = u64::MAX - (u64::MAX - n + 1) % n;
        loop {
            let x = self.next_u64();
            if x <= zone {
                return x % n;
            }
        }
    }

    /// An exponentially distributed float with the given mean (in whatever unit `mean` has).
    pub fn exp(&mut self, mean: f64) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        -mean * (1.0 - self.next_f64()).ln()
    }
}

/// Appends to `out` the arrival times of an open-loop Poisson process of `rate_per_s` requests per
/// second in [`from_us`, `to_us`), in increasing order. A rate that is not positive and finite
/// gives none. Allocates nothing besides the growth of `out`.
pub fn poisson_arrivals(rng: &mut SimRng, rate_per_s: f64, from_us: u64, to_us: u64, out: &mut Vec<u64>) {
    if !(rate_per_s > 0.0 && rate_per_s.is_finite()) || from_us >= to_us {
        return;
    }
    let mean_gap_us = 1e6 / rate_per_s;
    // Accumulate in f64 so that rounding each gap to whole microseconds does not bias the rate.
    let mut t_us = from_us as f64;
    loop {
        t_us += rng.exp(mean_gap_us);
        let at_us = t_us as u64;
        if t_us >= to_us as f64 || at_us >= to_us {
            return;
        }
        out.push(at_us.max(from_us));
    }
}

/// Why [`ReplicaQueue::offer`] turned a request away: every server was busy and the queue was full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// How many accepted requests were waiting to start when this one arrived.
    pub waiting: u32,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "overloaded: all servers busy and {} requests already waiting", self.waiting)
    }
}

impl std::error::Error for Rejected {}

/// One replica: `concurrency` parallel servers in front of a first-come-first-served queue that
/// holds at most `queue_max` waiting requests (requests in service do not count).
#[derive(Clone, Debug)]
pub struct ReplicaQueue {
    concurrency: u32,
    queue_max: u32,
    /// When each server becomes free, earliest on top.
    server_free_us: BinaryHeap<Reverse<u64>>,
    /// Start times of accepted requests that had not started at the latest arrival, in order.
    waiting_start_us: VecDeque<u64>,
    last_arrival_us: u64,
}

impl ReplicaQueue {
    /// An idle replica; panics when `concurrency` is 0.
    pub fn new(concurrency: u32, queue_max: u32) -> ReplicaQueue {
        assert!(concurrency > 0, "a replica needs at least one server");
        let server_free_us = (0..concurrency).map(|_| Reverse(0)).collect();
        ReplicaQueue { concurrency, queue_max, server_free_us, waiting_start_us: VecDeque::new(), last_arrival_us: 0 }
    }

    /// The number of parallel servers.
    pub fn concurrency(&self) -> u32 {
        self.concurrency
    }

    /// The most requests that may wait for a server.
    pub fn queue_max(&self) -> u32 {
        self.queue_max
    }

    /// Offers a request arriving at `arrival_us` that needs `service_us` of a server. It starts at
    /// the later of its arrival and the earliest time a server is free, and the time it finishes is
    /// returned. It is rejected when it would have to wait and `queue_max` accepted requests are
    /// already waiting. Panics when arrivals go back in time.
    pub fn offer(&mut self, arrival_us: u64, service_us: u64) -> Result<u64, Rejected> {
        assert!(arrival_us >= self.last_arrival_us, "arrival {arrival_us}us before {}us", self.last_arrival_us);
        self.last_arrival_us = arrival_us;
        while self.waiting_start_us.front().is_some_and(|&start_us| start_us <= arrival_us) {
            self.waiting_start_us.pop_front();
        }
        let Some(&Reverse(free_us)) = self.server_free_us.peek() else { unreachable!("concurrency > 0") };
        let start_us = arrival_us.max(free_us);
        let waiting = self.waiting_start_us.len();
        if start_us > arrival_us && waiting >= self.queue_max as usize {
            return Err(Rejected { waiting: waiting as u32 });
        }
        let finish_us = start_us.saturating_add(service_us);
        self.server_free_us.pop();
        self.server_free_us.push(Reverse(finish_us));
        if start_us > arrival_us {
            // Starts are nondecreasing (FCFS), so the deque stays sorted.
            self.waiting_start_us.push_back(start_us);
        }
        Ok(finish_us)
    }

    /// Requests in service plus waiting at `at_us`. Exact when `at_us` is at or after the latest
    /// arrival offered; for earlier instants it undercounts requests that have since started.
    /// Costs O(concurrency).
    pub fn in_system(&self, at_us: u64) -> u32 {
        // A server free after `at_us` is serving exactly one request at `at_us` (see the tests).
        let in_service = self.server_free_us.iter().filter(|&&Reverse(free_us)| free_us > at_us).count();
        let waiting = self.waiting_start_us.iter().filter(|&&start_us| start_us > at_us).count();
        (in_service + waiting) as u32
    }

    /// Drops all state, as when the container restarts: servers idle, queue empty, and arrivals
    /// may start again from any time.
    pub fn reset(&mut self) {
        *self = ReplicaQueue::new(self.concurrency, self.queue_max);
    }
}

/// Sub-buckets per power of two: values below this are exact, larger ones within 1/128 (< 1%).
const SUB_BUCKETS: u64 = 128;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// The largest value told apart from larger ones, about 71.6 minutes.
pub const HISTOGRAM_MAX_TRACKED_US: u64 = (1 << 32) - 1;
const BUCKETS: usize = ((32 - SUB_BITS + 1) as u64 * SUB_BUCKETS) as usize;

/// A log-linear histogram of latencies in microseconds (HdrHistogram-like, 2 significant digits):
/// quantiles are a bucket's upper bound, within 1% above the exact value. Values over
/// [`HISTOGRAM_MAX_TRACKED_US`] share the top bucket, though `max` stays exact. Fixed memory (26 KiB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Box<[u64]>,
    count: u64,
    sum_us: u128,
    min_us: u64,
    max_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        LatencyHistogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum_us: 0,
            min_us: u64::MAX,
            max_us: 0,
        }
    }

    fn bucket(value_us: u64) -> usize {
        let v = value_us.min(HISTOGRAM_MAX_TRACKED_US);
        if v < SUB_BUCKETS {
            return v as usize;
        }
        let shift = (63 - v.leading_zeros()) - SUB_BITS;
        ((shift as u64 + 1) * SUB_BUCKETS + ((v >> shift) - SUB_BUCKETS)) as usize
    }

    fn upper_us(bucket: usize) -> u64 {
        let b = bucket as u64;
        if b < SUB_BUCKETS {
            return b;
        }
        let shift = b / SUB_BUCKETS - 1;
        ((b % SUB_BUCKETS + SUB_BUCKETS + 1) << shift) - 1
    }

    /// Records one latency.
    pub fn record(&mut self, value_us: u64) {
        self.counts[Self::bucket(value_us)] += 1;
        self.count += 1;
        self.sum_us += u128::from(value_us);
        self.min_us = self.min_us.min(value_us);
        self.max_us = self.max_us.max(value_us);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (0.5 for p50, 0.99 for p99; clamped to [0, 1]): the upper bound of the bucket
    /// holding the value of rank ceil(q * count), capped at `max`. Zero when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::upper_us(bucket).clamp(self.min_us, self.max_us);
            }
        }
        self.max_us
    }

    /// The largest latency recorded, exact; zero when empty.
    pub fn max(&self) -> u64 {
        self.max_us
    }

    /// The smallest latency recorded, exact; zero when empty.
    pub fn min(&self) -> u64 {
        if self.count == 0 { 0 } else { self.min_us }
    }

    /// The exact mean in microseconds; zero when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum_us as f64 / self.count as f64 }
    }

    /// Adds every latency recorded in `other` to this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, &theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Forgets every latency recorded.
    pub fn clear(&mut self) {
        *self = LatencyHistogram::new();
    }
}

/// Counts events per fixed window of time from 0, for a time series (requests per second, say).
/// Memory is bounded: when an event falls beyond `max_windows` windows, adjacent pairs of windows
/// are merged and the window doubles, so no event is lost but the series gets coarser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateCounter {
    window_us: u64,
    max_windows: usize,
    counts: Vec<u64>,
}

impl RateCounter {
    /// A counter with windows of `window_us` (at least 1) and at most `max_windows` (at least 2).
    pub fn new(window_us: u64, max_windows: usize) -> RateCounter {
        assert!(window_us > 0 && max_windows >= 2, "window_us must be > 0 and max_windows >= 2");
        RateCounter { window_us, max_windows, counts: Vec::new() }
    }

    /// The current window length, which doubles each time the series is coarsened.
    pub fn window_us(&self) -> u64 {
        self.window_us
    }

    /// Counts one event at `at_us`; events may come in any order.
    pub fn record(&mut self, at_us: u64) {
        while at_us / self.window_us >= self.max_windows as u64 {
            let merged: Vec<u64> = self.counts.chunks(2).map(|pair| pair.iter().sum()).collect();
            self.counts = merged;
            self.window_us *= 2;
        }
        let index = (at_us / self.window_us) as usize;
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
    }

    /// Every event counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(window_start_us, count)` for each window from 0 to the last with an event, empty ones too.
    pub fn series(&self) -> Vec<(u64, u64)> {
        self.counts.iter().enumerate().map(|(i, &n)| (i as u64 * self.window_us, n)).collect()
    }

    /// `(window_start_s, events_per_s)` for each window, ready to plot.
    pub fn rates_per_s(&self) -> Vec<(f64, f64)> {
        let window_s = self.window_us as f64 / 1e6;
        self.series().into_iter().map(|(start_us, n)| (start_us as f64 / 1e6, n as f64 / window_s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: u64 = 1000;
    const S: u64 = 1_000_000;

    #[test]
    fn the_same_seed_gives_the_same_arrivals_and_another_seed_others() {
        let run = |seed| {
            let mut out = Vec::new();
            poisson_arrivals(&mut SimRng::new(seed), 50.0, 0, 10 * S, &mut out);
            out
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn poisson_count_over_a_long_interval_is_within_3_percent_of_rate_times_time() {
        let mut out = Vec::new();
        poisson_arrivals(&mut SimRng::new(42), 200.0, 5 * S, 605 * S, &mut out);
        let expected = 200.0 * 600.0;
        assert!((out.len() as f64 - expected).abs() < 0.03 * expected, "{} arrivals", out.len());
        assert!(out.windows(2).all(|w| w[0] <= w[1]));
        assert!(out.iter().all(|&t| (5 * S..605 * S).contains(&t)));
    }

    #[test]
    fn a_rate_of_zero_or_an_empty_interval_gives_no_arrivals() {
        let mut out = vec![1];
        let mut rng = SimRng::new(1);
        poisson_arrivals(&mut rng, 0.0, 0, 10 * S, &mut out);
        poisson_arrivals(&mut rng, f64::NAN, 0, 10 * S, &mut out);
        poisson_arrivals(&mut rng, 100.0, 10 * S, 10 * S, &mut out);
        assert_eq!(out, [1]);
    }

    #[test]
    fn rng_helpers_stay_in_range_and_exp_has_the_right_mean() {
        let mut rng = SimRng::new(3);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            assert!(rng.below(7) < 7);
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u));
            sum += rng.exp(2.0);
        }
        assert!((sum / n as f64 - 2.0).abs() < 0.05);
    }

    #[test]
    fn two_simultaneous_arrivals_on_one_server_finish_at_10_and_20_ms() {
        let mut q = ReplicaQueue::new(1, 10);
        assert_eq!(q.offer(0, 10 * MS), Ok(10 * MS));
        assert_eq!(q.offer(0, 10 * MS), Ok(20 * MS));
        assert_eq!(q.in_system(0), 2);
        assert_eq!(q.in_system(15 * MS), 1);
    }

    #[test]
    fn queue_max_zero_rejects_only_when_all_servers_are_busy() {
        let mut q = ReplicaQueue::new(2, 0);
        assert!(q.offer(0, 10 * MS).is_ok());
        assert!(q.offer(1, 10 * MS).is_ok());
        assert_eq!(q.offer(2, 10 * MS), Err(Rejected { waiting: 0 }));
        assert_eq!(q.offer(10 * MS, 10 * MS), Ok(20 * MS));
    }

    #[test]
    fn reset_drops_the_queue_and_accepts_earlier_arrivals() {
        let mut q = ReplicaQueue::new(1, 0);
        q.offer(5 * S, 10 * S).unwrap();
        q.reset();
        assert_eq!(q.in_system(5 * S), 0);
        assert_eq!(q.offer(0, MS), Ok(MS));
    }

    #[test]
    fn capacity_c_over_s_is_sustained_without_rejections() {
        // 4 servers at 100 ms each serve 40 requests per second.
        let mut q = ReplicaQueue::new(4, 0);
        let period_us = 100 * MS / 4;
        for i in 0..40 * 60 {
            assert!(q.offer(i * period_us, 100 * MS).is_ok(), "request {i} rejected at exactly capacity");
        }
        let mut arrivals = Vec::new();
        poisson_arrivals(&mut SimRng::new(9), 0.7 * 40.0, 0, 600 * S, &mut arrivals);
        let mut q = ReplicaQueue::new(4, 1000);
        assert!(arrivals.iter().all(|&at_us| q.offer(at_us, 100 * MS).is_ok()));
    }

    #[test]
    fn overload_beyond_capacity_is_rejected_in_proportion() {
        let mut arrivals = Vec::new();
        poisson_arrivals(&mut SimRng::new(5), 60.0, 0, 600 * S, &mut arrivals);
        let mut q = ReplicaQueue::new(4, 8);
        let rejected = arrivals.iter().filter(|&&at_us| q.offer(at_us, 100 * MS).is_err()).count();
        let share = rejected as f64 / arrivals.len() as f64;
        assert!((share - 1.0 / 3.0).abs() < 0.03, "rejected share {share}");
    }

    #[test]
    fn histogram_quantiles_are_within_1_percent_of_exact() {
        let mut h = LatencyHistogram::new();
        for v in 1..=100_000 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q) as f64;
            assert!(got >= exact && got <= exact * 1.01, "q{q}: {got} vs {exact}");
        }
        assert_eq!((h.count(), h.min(), h.max(), h.quantile(0.0), h.quantile(1.0)), (100_000, 1, 100_000, 1, 100_000));
        assert_eq!(h.mean(), 50_000.5);
        h.record(u64::MAX);
        assert_eq!(h.max(), u64::MAX);
    }

    #[test]
    fn an_empty_histogram_reports_zeros() {
        let h = LatencyHistogram::default();
        assert_eq!((h.count(), h.quantile(0.99), h.min(), h.max(), h.mean()), (0, 0, 0, 0, 0.0));
    }

    #[test]
    fn merge_equals_recording_both_and_clear_empties() {
        let (mut a, mut b, mut both) = (LatencyHistogram::new(), LatencyHistogram::new(), LatencyHistogram::new());
        let mut rng = SimRng::new(11);
        for i in 0..10_000 {
            let v = rng.exp(20_000.0) as u64;
            if i % 3 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
            both.record(v);
        }
        a.merge(&b);
        assert_eq!(a, both);
        a.clear();
        assert_eq!(a, LatencyHistogram::new());
    }

    #[test]
    fn rate_counter_counts_per_window_and_coarsens_past_the_limit() {
        let mut r = RateCounter::new(S, 4);
        for at_us in [0, 10, S + 1, 3 * S] {
            r.record(at_us);
        }
        assert_eq!(r.series(), [(0, 2), (S, 1), (2 * S, 0), (3 * S, 1)]);
        r.record(5 * S);
        assert_eq!((r.window_us(), r.series()), (2 * S, vec![(0, 3), (2 * S, 1), (4 * S, 1)]));
        assert_eq!(r.total(), 5);
        assert_eq!(r.rates_per_s()[0], (0.0, 1.5));
    }

    proptest! {
        #[test]
        fn the_queue_is_fcfs_bounded_and_rejects_only_when_full(
            concurrency in 1..6u32, queue_max in 0..5u32,
            requests in prop::collection::vec((0..30u64, 0..100u64), 0..200),
        ) {
            let mut q = ReplicaQueue::new(concurrency, queue_max);
            let mut accepted: Vec<(u64, u64, u64)> = Vec::new(); // (arrival, start, finish)
            let mut arrival_us = 0;
            for (gap_us, service_us) in requests {
                arrival_us += gap_us;
                let in_service = |at: u64, acc: &[(u64, u64, u64)]| acc.iter().filter(|r| r.1 <= at && at < r.2).count();
                let waiting = accepted.iter().filter(|r| r.1 > arrival_us).count();
                match q.offer(arrival_us, service_us) {
                    Ok(finish_us) => {
                        prop_assert!(finish_us >= arrival_us + service_us);
                        let start_us = finish_us - service_us;
                        prop_assert!(accepted.last().is_none_or(|r| r.1 <= start_us), "not FCFS");
                        accepted.push((arrival_us, start_us, finish_us));
                        prop_assert!(in_service(start_us, &accepted) <= concurrency as usize);
                    }
                    Err(rejected) => {
                        prop_assert!(waiting >= queue_max as usize && rejected.waiting as usize == waiting);
                        prop_assert_eq!(in_service(arrival_us, &accepted), concurrency as usize);
                    }
                }
                let in_system = accepted.iter().filter(|r| r.2 > arrival_us).count();
                prop_assert_eq!(q.in_system(arrival_us) as usize, in_system);
            }
            for &(_, start_us, _) in &accepted {
                let busy = accepted.iter().filter(|r| r.1 <= start_us && start_us < r.2).count();
                prop_assert!(busy <= concurrency as usize, "{} in service at {}us", busy, start_us);
            }
        }

        #[test]
        fn histogram_quantiles_never_undershoot_and_overshoot_by_under_1_percent(
            mut values in prop::collection::vec(0..HISTOGRAM_MAX_TRACKED_US, 1..300), q in 0.0..=1.0f64,
        ) {
            let mut h = LatencyHistogram::new();
            values.iter().for_each(|&v| h.record(v));
            values.sort_unstable();
            let rank = ((q * values.len() as f64).ceil() as usize).max(1);
            let exact = values[rank - 1];
            let got = h.quantile(q);
            prop_assert!(got >= exact && got as f64 <= exact as f64 * 1.01, "{} vs exact {}", got, exact);
        }
    }
}
