//! Request load to a target replica count, for one autoscaled app.
//!
//! The app's coordinator feeds the request counts summed over nodes into an [`Autoscaler`] and asks
//! it, now and then, whether the replica count should change. Two rules exist. `TargetRps` tracks a
//! rate per replica the way Kubernetes' HPA does: a tolerance band so that noise changes nothing,
//! scale-up at once because an overloaded app is failing now, and scale-down only to the highest
//! recommendation of a stabilization window, so a brief dip removes nothing and the count does not
//! flap. `PerRequests` is the original student orchestrator's rule, kept as a preset. Counts are
//! integers and rates fixed-point, so a replay gives the same decisions bit for bit.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::limits;
use crate::model::{Autoscale, ScaleRule};
use crate::time::Time;

/// How often a driver is told to evaluate a `TargetRps` rule (it may evaluate at any time). HPA
/// syncs every 15 s; evaluating is O(1) here, so once a second keeps scale-up prompt.
const TARGET_RPS_EVALUATION_INTERVAL_MS: u64 = 1000;

/// A change of an app's replica count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleDecision {
    /// The replica count the decision was made against.
    pub from: u32,
    /// The new target; always within the autoscaler's `[min, max]`.
    pub to: u32,
    /// The measurement behind it.
    pub reason: ScaleReason,
}

/// The load measurement that led to a [`ScaleDecision`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleReason {
    /// `TargetRps`: the mean request rate over the window.
    RequestRate {
        /// Requests per second, in thousandths.
        milli_requests_per_s: u64,
        /// The window the rate was measured over.
        window_ms: u64,
    },
    /// `PerRequests`: the requests counted over the last period.
    RequestCount {
        /// Requests in the period.
        requests: u64,
        /// The period.
        period_ms: u64,
    },
}

impl fmt::Display for ScaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleReason::RequestRate { milli_requests_per_s: rate, window_ms } => {
                write!(f, "{}.{:03} requests/s over {}", rate / 1000, rate % 1000, Time::from_millis(*window_ms))
            }
            ScaleReason::RequestCount { requests, period_ms } => {
                write!(f, "{requests} requests in {}", Time::from_millis(*period_ms))
            }
        }
    }
}

/// Requests counted up to `at`, since the previous sample.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Time,
    requests: u64,
}

/// A `TargetRps` recommendation, kept for the scale-down stabilization window.
#[derive(Clone, Copy, Debug)]
struct Recommendation {
    at: Time,
    replicas: u32,
}

/// Turns one app's request counts into replica-count decisions, always within `[min, max]`.
///
/// Call [`record_requests`] as counts arrive and [`evaluate`] at [`next_evaluation_at`] or later,
/// with the same monotonic clock for both.
///
/// [`record_requests`]: Autoscaler::record_requests
/// [`evaluate`]: Autoscaler::evaluate
/// [`next_evaluation_at`]: Autoscaler::next_evaluation_at
#[derive(Clone, Debug)]
pub struct Autoscaler {
    min: u32,
    max: u32,
    rule: ScaleRule,
    created_at: Time,
    /// The latest `now` given to any input; inputs must not go back in time.
    latest_input_at: Time,
    /// Samples are kept this long: the rule's window or period.
    retain_ms: u64,
    /// Samples within one bucket of this width are merged, so that at most
    /// [`limits::AUTOSCALE_SAMPLES_MAX`] cover `retain_ms`.
    sample_bucket_ms: u64,
    /// Oldest first, one per bucket.
    samples: VecDeque<Sample>,
    /// The sum of `samples`.
    requests_retained: u128,
    /// `TargetRps` only: recommendations of the stabilization window, as a sliding maximum
    /// (oldest first, replicas strictly decreasing), so the front is the window's highest.
    recommendations: VecDeque<Recommendation>,
    /// `TargetRps` only: the last time the recommendation was at or above the count then
    /// running, or the count last changed. A scale-down needs a whole stabilization window
    /// after it, so the count steps down once, not once per second as the window slides.
    last_held_at: Time,
    next_evaluation_at: Time,
    /// `TargetRps` only: the requests and the span of the rate the last evaluation followed.
    decided_by: (u128, u64),
}

impl Autoscaler {
    /// An autoscaler for an app running `current_replicas`, created at `now`.
    ///
    /// Panics on a spec that [`Autoscale`] validation rejects (`min > max`, zero rates, windows or
    /// periods).
    pub fn new(spec: &Autoscale, current_replicas: u32, now: Time) -> Autoscaler {
        assert!(spec.min <= spec.max, "autoscale needs min <= max");
        let (retain_ms, first_evaluation_ms) = match spec.rule {
            ScaleRule::TargetRps { target_rps_per_replica, window_ms, .. } => {
                assert!(
                    target_rps_per_replica > 0 && window_ms > 0,
                    "target_rps_per_replica and window_ms must be positive"
                );
                (window_ms, 0)
            }
            ScaleRule::PerRequests { requests_per_replica, period_ms } => {
                assert!(
                    requests_per_replica > 0 && period_ms > 0,
                    "requests_per_replica and period_ms must be positive"
                );
                (period_ms, period_ms)
            }
        };
        let buckets = limits::AUTOSCALE_SAMPLES_MAX as u64 - 1;
        let mut recommendations = VecDeque::new();
        // As HPA does: the count the app runs at the start is the first recommendation, so no
        // scale-down happens before a full stabilization window of measurements allows it.
        recommendations.push_back(Recommendation { at: now, replicas: current_replicas.clamp(spec.min, spec.max) });
        let autoscaler = Autoscaler {
            min: spec.min,
            max: spec.max,
            rule: spec.rule.clone(),
            created_at: now,
            last_held_at: now,
            latest_input_at: now,
            retain_ms,
            sample_bucket_ms: retain_ms.div_ceil(buckets).max(1),
            samples: VecDeque::new(),
            requests_retained: 0,
            recommendations,
            next_evaluation_at: now + Duration::from_millis(first_evaluation_ms),
            decided_by: (0, retain_ms),
        };
        autoscaler.check_invariants();
        autoscaler
    }

    /// Adds `count` requests served up to `now` (since the driver's previous report). Panics if
    /// `now` is earlier than a previous input's.
    pub fn record_requests(&mut self, now: Time, count: u64) {
        self.advance_to(now);
        if count > 0 {
            let bucket = |at: Time| at.as_millis() / self.sample_bucket_ms;
            match self.samples.back_mut() {
                Some(last) if bucket(last.at) == bucket(now) => {
                    let before = last.requests;
                    last.requests = last.requests.saturating_add(count);
                    last.at = now;
                    self.requests_retained += u128::from(last.requests - before);
                }
                _ => {
                    if self.samples.len() == limits::AUTOSCALE_SAMPLES_MAX {
                        // Unreachable with the bucket width above; kept so the bound holds regardless.
                        self.drop_oldest_sample();
                    }
                    self.samples.push_back(Sample { at: now, requests: count });
                    self.requests_retained += u128::from(count);
                }
            }
        }
        self.check_invariants();
    }

    /// Decides at `now` whether an app running `current_replicas` should run another count.
    ///
    /// Returns `None` when the count should stay (and, for `PerRequests`, before the next
    /// evaluation is due). A returned target is always within `[min, max]`; a current count outside
    /// them is brought back inside at the next evaluation. Panics if `now` is earlier than a
    /// previous input's.
    pub fn evaluate(&mut self, now: Time, current_replicas: u32) -> Option<ScaleDecision> {
        self.advance_to(now);
        let decision = match self.rule {
            ScaleRule::TargetRps {
                target_rps_per_replica,
                tolerance_percent,
                window_ms,
                scale_down_stabilization_ms,
            } => {
                self.next_evaluation_at = now + Duration::from_millis(TARGET_RPS_EVALUATION_INTERVAL_MS);
                let target = self.target_rps(
                    now,
                    current_replicas,
                    target_rps_per_replica,
                    tolerance_percent,
                    window_ms,
                    scale_down_stabilization_ms,
                );
                // The rate that decided: the window's, or the recent one a scale-up follows.
                let (requests, window_ms) = self.decided_by;
                let rate = requests * 1_000_000 / u128::from(window_ms);
                let milli_requests_per_s = u64::try_from(rate).unwrap_or(u64::MAX);
                (target, ScaleReason::RequestRate { milli_requests_per_s, window_ms })
            }
            ScaleRule::PerRequests { requests_per_replica, period_ms } => {
                if now < self.next_evaluation_at {
                    self.check_invariants();
                    return None;
                }
                self.next_evaluation_at = now + Duration::from_millis(period_ms);
                let requests = u64::try_from(self.requests_retained).unwrap_or(u64::MAX);
                let target = u32::try_from(requests / requests_per_replica).unwrap_or(u32::MAX).saturating_add(1);
                (target, ScaleReason::RequestCount { requests, period_ms })
            }
        };
        let (target, reason) = decision;
        let to = target.clamp(self.min, self.max);
        assert!(self.min <= to && to <= self.max, "a target never leaves [min, max]");
        self.check_invariants();
        (to != current_replicas).then_some(ScaleDecision { from: current_replicas, to, reason })
    }

    /// When the next evaluation is due. `PerRequests` ignores earlier calls; `TargetRps` accepts
    /// any, and suggests one a second.
    pub fn next_evaluation_at(&self) -> Time {
        self.next_evaluation_at
    }

    /// Requests counted over the rule's window or period, as of the latest input.
    pub fn requests_in_window(&self) -> u64 {
        u64::try_from(self.requests_retained).unwrap_or(u64::MAX)
    }

    /// The `TargetRps` recommendation after tolerance and stabilization, before clamping.
    fn target_rps(
        &mut self,
        now: Time,
        current: u32,
        target_rps_per_replica: u64,
        tolerance_percent: u32,
        window_ms: u64,
        scale_down_stabilization_ms: u64,
    ) -> u32 {
        // The load per replica, requests * 1000 / window_ms / current, against the target, with
        // both sides multiplied by window_ms * current * 100 to stay in integers.
        let load = self.requests_retained.saturating_mul(100_000);
        let capacity = u128::from(target_rps_per_replica)
            .saturating_mul(u128::from(window_ms))
            .saturating_mul(u128::from(current));
        let within_tolerance = current > 0
            && load.abs_diff(capacity.saturating_mul(100)) <= capacity.saturating_mul(u128::from(tolerance_percent));
        let desired = (self.requests_retained.saturating_mul(1000))
            .div_ceil(u128::from(target_rps_per_replica).saturating_mul(u128::from(window_ms)));
        let desired = u32::try_from(desired).unwrap_or(u32::MAX).clamp(self.min, self.max);
        // Scale-up follows the recent rate, not the window's average: a tenfold spike averaged
        // over a 30 s window took 27 s, in thirteen small steps. The window still decides every
        // scale-down, so a short lull removes nothing.
        let recent_ms = window_ms.min(limits::AUTOSCALE_RECENT_MS);
        let recent_requests: u128 = self
            .samples
            .iter()
            .rev()
            .take_while(|s| now.saturating_since(s.at) < Duration::from_millis(recent_ms))
            .map(|s| u128::from(s.requests))
            .sum();
        let recent_load = recent_requests.saturating_mul(100_000);
        let recent_capacity = u128::from(target_rps_per_replica)
            .saturating_mul(u128::from(recent_ms))
            .saturating_mul(u128::from(current));
        let recent_above =
            current == 0 || recent_load > recent_capacity.saturating_mul(100 + u128::from(tolerance_percent));
        let recent_desired = recent_requests
            .saturating_mul(1000)
            .div_ceil(u128::from(target_rps_per_replica).saturating_mul(u128::from(recent_ms)));
        let recent_desired = u32::try_from(recent_desired).unwrap_or(u32::MAX).clamp(self.min, self.max);
        let up_now = recent_above && recent_desired > desired.max(current);
        let desired = if up_now { recent_desired } else { desired };
        let within_tolerance = within_tolerance && !up_now;
        self.decided_by = if up_now { (recent_requests, recent_ms) } else { (self.requests_retained, window_ms) };
        // Until a full window has passed since creation the rate is a lower bound: enough to
        // scale up on, never to scale down on.
        let warmed_up = now.saturating_since(self.created_at) >= Duration::from_millis(window_ms);
        let recommendation = if within_tolerance || (!warmed_up && desired < current) {
            current.clamp(self.min, self.max)
        } else {
            desired
        };

        let stabilization = Duration::from_millis(scale_down_stabilization_ms);
        while self.recommendations.front().is_some_and(|r| now.saturating_since(r.at) >= stabilization) {
            self.recommendations.pop_front();
        }
        while self.recommendations.back().is_some_and(|r| r.replicas <= recommendation) {
            self.recommendations.pop_back();
        }
        let full = self.recommendations.len() == limits::AUTOSCALE_SAMPLES_MAX;
        match self.recommendations.back_mut() {
            // Full (only with evaluations closer than the window over 4096, and long falls):
            // fold the new one into the newest, which is higher; that errs towards keeping replicas.
            Some(newest) if full => newest.at = now,
            _ => self.recommendations.push_back(Recommendation { at: now, replicas: recommendation }),
        }
        if recommendation >= current {
            self.last_held_at = now;
        }
        if recommendation > current {
            return recommendation;
        }
        if now.saturating_since(self.last_held_at) < stabilization {
            return current;
        }
        // Every recommendation of the stabilization window was below the running count: step
        // down once, to the highest recommendation of the last rate window (the load as it is
        // now, not as it was while the window average decayed), then hold for another window.
        let recent = Duration::from_millis(window_ms);
        let target = self
            .recommendations
            .iter()
            .find(|r| now.saturating_since(r.at) < recent)
            .map_or(recommendation, |r| r.replicas)
            .min(current);
        self.last_held_at = now;
        target
    }

    fn advance_to(&mut self, now: Time) {
        assert!(now >= self.latest_input_at, "time must not go backwards: {now} after {}", self.latest_input_at);
        self.latest_input_at = now;
        let retain = Duration::from_millis(self.retain_ms);
        while self.samples.front().is_some_and(|s| now.saturating_since(s.at) >= retain) {
            self.drop_oldest_sample();
        }
    }

    fn drop_oldest_sample(&mut self) {
        if let Some(oldest) = self.samples.pop_front() {
            self.requests_retained -= u128::from(oldest.requests);
        }
    }

    fn check_invariants(&self) {
        assert!(self.samples.len() <= limits::AUTOSCALE_SAMPLES_MAX);
        assert!(self.recommendations.len() <= limits::AUTOSCALE_SAMPLES_MAX);
        assert!(self.min <= self.max);
        debug_assert_eq!(self.requests_retained, self.samples.iter().map(|s| u128::from(s.requests)).sum::<u128>());
        debug_assert!(self.samples.iter().zip(self.samples.iter().skip(1)).all(|(a, b)| a.at < b.at));
        debug_assert!(
            self.recommendations
                .iter()
                .zip(self.recommendations.iter().skip(1))
                .all(|(a, b)| a.at <= b.at && a.replicas > b.replicas),
            "recommendations are a sliding maximum"
        );
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secs(s: u64) -> Time {
        Time::from_millis(s * 1000)
    }

    fn target_rps(min: u32, max: u32, target: u64, window_ms: u64, stabilization_ms: u64) -> Autoscale {
        let rule = ScaleRule::TargetRps {
            target_rps_per_replica: target,
            tolerance_percent: 10,
            window_ms,
            scale_down_stabilization_ms: stabilization_ms,
        };
        Autoscale { min, max, rule }
    }

    /// Records `rps` requests at the end of each second in `(from_s, to_s]`.
    fn steady(a: &mut Autoscaler, from_s: u64, to_s: u64, rps: u64) {
        for s in from_s + 1..=to_s {
            a.record_requests(secs(s), rps);
        }
    }

    fn per_20_requests(min: u32, max: u32) -> Autoscale {
        Autoscale { min, max, rule: ScaleRule::PER_20_REQUESTS_120S }
    }

    #[test]
    fn per_requests_adds_one_replica_per_20_requests_plus_one() {
        let mut a = Autoscaler::new(&per_20_requests(1, 10), 1, secs(0));
        a.record_requests(secs(10), 60);
        a.record_requests(secs(100), 40);
        let decision = a.evaluate(secs(120), 1).expect("100 requests call for 6 replicas");
        assert_eq!((decision.from, decision.to), (1, 6));
        assert_eq!(decision.reason, ScaleReason::RequestCount { requests: 100, period_ms: 120_000 });
        assert_eq!(decision.reason.to_string(), "100 requests in 120.000s");
        assert_eq!(
            a.evaluate(secs(240), 6),
            Some(ScaleDecision {
                from: 6,
                to: 1,
                reason: ScaleReason::RequestCount { requests: 0, period_ms: 120_000 }
            })
        );
    }

    #[test]
    fn per_requests_is_evaluated_once_a_period_only() {
        let mut a = Autoscaler::new(&per_20_requests(1, 10), 1, secs(5));
        assert_eq!(a.next_evaluation_at(), secs(125));
        a.record_requests(secs(10), 1000);
        assert_eq!(a.evaluate(secs(124), 1), None, "not due yet");
        assert_eq!(a.evaluate(secs(125), 1).map(|d| d.to), Some(10), "capped at max");
        assert_eq!(a.next_evaluation_at(), secs(245));
        assert_eq!(a.evaluate(secs(130), 1), None);
        assert_eq!(a.evaluate(secs(245), 10).map(|d| d.to), Some(1), "nothing in the last period");
        assert_eq!(a.evaluate(secs(365), 1), None, "no change, no decision");
    }

    #[test]
    fn per_requests_respects_min() {
        let mut a = Autoscaler::new(&per_20_requests(3, 10), 3, secs(0));
        assert_eq!(a.evaluate(secs(120), 3), None);
        assert_eq!(a.evaluate(secs(240), 1).map(|d| d.to), Some(3));
    }

    #[test]
    fn a_spike_scales_up_at_once() {
        let mut a = Autoscaler::new(&target_rps(1, 20, 10, 10_000, 60_000), 2, secs(0));
        steady(&mut a, 0, 30, 20);
        assert_eq!(a.evaluate(secs(30), 2), None, "20 requests/s is 10 per replica");
        steady(&mut a, 30, 31, 1000);
        let decision = a.evaluate(secs(31), 2).expect("scale up");
        assert_eq!(decision.to, 20, "(2 * 20 + 1000) / 3 s = 346.7 requests/s, at most 20 replicas");
        assert_eq!(decision.reason.to_string(), "346.666 requests/s over 3.000s");
    }

    #[test]
    fn a_tenfold_spike_reaches_its_target_within_seconds_whatever_the_window() {
        for window_s in [10, 30, 120] {
            let mut a = Autoscaler::new(&target_rps(2, 20, 100, window_s * 1000, 300_000), 2, secs(0));
            steady(&mut a, 0, window_s, 150);
            let mut replicas = 2;
            assert_eq!(a.evaluate(secs(window_s), replicas), None, "150 requests/s on 2 replicas");
            let mut reached = None;
            for t in window_s..window_s + 30 {
                steady(&mut a, t, t + 1, 1500);
                if let Some(d) = a.evaluate(secs(t + 1), replicas) {
                    replicas = d.to;
                }
                if replicas >= 15 && reached.is_none() {
                    reached = Some(t + 1 - window_s);
                }
            }
            let reached = reached.expect("the target is reached");
            assert!(reached <= 3, "window {window_s} s: 15 replicas after {reached} s");
            assert_eq!(replicas, 15, "and no further");
        }
    }

    #[test]
    fn a_short_lull_removes_nothing() {
        let mut a = Autoscaler::new(&target_rps(2, 20, 100, 30_000, 60_000), 10, secs(0));
        steady(&mut a, 0, 120, 1000);
        assert_eq!(a.evaluate(secs(120), 10), None);
        steady(&mut a, 120, 126, 100);
        assert_eq!(a.evaluate(secs(126), 10), None, "the window decides a scale-down, after stabilization");
    }

    #[test]
    fn load_within_tolerance_changes_nothing() {
        let mut a = Autoscaler::new(&target_rps(1, 20, 10, 10_000, 0), 4, secs(0));
        steady(&mut a, 0, 20, 43);
        assert_eq!(a.evaluate(secs(20), 4), None, "10.75 per replica is within 10% of 10");
        steady(&mut a, 20, 40, 37);
        assert_eq!(a.evaluate(secs(40), 4), None, "9.25 per replica is within 10% of 10");
        steady(&mut a, 40, 60, 45);
        assert_eq!(a.evaluate(secs(60), 4).map(|d| d.to), Some(5));
    }

    #[test]
    fn stabilization_holds_a_scale_down_until_the_window_passes() {
        let mut a = Autoscaler::new(&target_rps(1, 20, 10, 10_000, 60_000), 1, secs(0));
        steady(&mut a, 0, 60, 60);
        assert_eq!(a.evaluate(secs(60), 1).map(|d| d.to), Some(6));
        steady(&mut a, 60, 75, 20);
        let mut decisions = Vec::new();
        for s in (80..=150).step_by(5) {
            steady(&mut a, s - 5, s, 20);
            if let Some(d) = a.evaluate(secs(s), decisions.last().map_or(6, |d: &ScaleDecision| d.to)) {
                decisions.push(d);
            }
        }
        let decisions: Vec<_> = decisions.iter().map(|d| (d.from, d.to)).collect();
        assert_eq!(decisions, [(6, 2)], "down once, to the right value");
        let mut a2 = Autoscaler::new(&target_rps(1, 20, 10, 10_000, 60_000), 1, secs(0));
        steady(&mut a2, 0, 60, 60);
        a2.evaluate(secs(60), 1);
        steady(&mut a2, 60, 119, 20);
        assert_eq!(a2.evaluate(secs(119), 6), None, "held: 6 was recommended 59 s ago");
        assert_eq!(a2.evaluate(secs(120), 6).map(|d| d.to), Some(2), "released after 60 s");
    }

    #[test]
    fn a_brief_dip_removes_nothing() {
        let mut a = Autoscaler::new(&target_rps(1, 20, 10, 5_000, 60_000), 5, secs(0));
        steady(&mut a, 0, 60, 50);
        assert_eq!(a.evaluate(secs(60), 5), None);
        steady(&mut a, 60, 70, 0);
        assert_eq!(a.evaluate(secs(70), 5), None, "no load for 10 s");
        steady(&mut a, 70, 80, 50);
        assert_eq!(a.evaluate(secs(80), 5), None);
    }

    #[test]
    fn no_scale_down_before_the_first_window_is_measured() {
        let mut a = Autoscaler::new(&target_rps(1, 20, 10, 30_000, 0), 4, secs(0));
        steady(&mut a, 0, 10, 40);
        assert_eq!(a.evaluate(secs(10), 4), None, "13.3 requests/s measured over 30 s is a lower bound");
        steady(&mut a, 10, 30, 40);
        assert_eq!(a.evaluate(secs(30), 4), None);
    }

    #[test]
    fn scale_to_zero_and_back() {
        let mut a = Autoscaler::new(&target_rps(0, 5, 10, 10_000, 0), 1, secs(0));
        assert_eq!(a.evaluate(secs(10), 1).map(|d| d.to), Some(0));
        a.record_requests(secs(11), 5);
        assert_eq!(a.evaluate(secs(11), 0).map(|d| d.to), Some(1));
    }

    #[test]
    fn a_count_outside_the_bounds_is_brought_back() {
        let mut a = Autoscaler::new(&target_rps(2, 4, 10, 10_000, 300_000), 3, secs(0));
        steady(&mut a, 0, 10, 60);
        assert_eq!(a.evaluate(secs(10), 9).map(|d| d.to), Some(4), "6 wanted, 4 at most");
        assert_eq!(a.evaluate(secs(10), 1).map(|d| d.to), Some(4));
        let mut idle = Autoscaler::new(&target_rps(2, 4, 10, 10_000, 300_000), 3, secs(0));
        assert_eq!(idle.evaluate(secs(10), 1).map(|d| d.to), Some(2), "none wanted, 2 at least");
    }

    #[test]
    fn samples_stay_bounded_under_a_flood_of_reports() {
        // A window of 4095 ms has 1 ms buckets: a report every millisecond fills every one.
        let mut a = Autoscaler::new(&target_rps(1, 100, 10, 4095, 0), 1, secs(0));
        for ms in 0..6000 {
            a.record_requests(Time::from_millis(ms), 1);
        }
        assert_eq!(a.samples.len(), 4095);
        assert_eq!(a.requests_in_window(), 4095);
        // Ten times the window: reports 3 ms apart share 10 ms buckets, counted a bucket late at most.
        let mut a = Autoscaler::new(&target_rps(1, 100, 10, 40_950, 0), 1, secs(0));
        for i in 0..15_000 {
            a.record_requests(Time::from_millis(i * 3), 1);
        }
        assert!(a.samples.len() <= limits::AUTOSCALE_SAMPLES_MAX);
        assert!((13_650..=13_654).contains(&a.requests_in_window()), "{}", a.requests_in_window());
    }

    fn scale_rule() -> impl Strategy<Value = ScaleRule> {
        prop_oneof![
            (1..50u64, 0..50u32, 1..60_000u64, 0..120_000u64).prop_map(|(target, tolerance, window, stabilization)| {
                ScaleRule::TargetRps {
                    target_rps_per_replica: target,
                    tolerance_percent: tolerance,
                    window_ms: window,
                    scale_down_stabilization_ms: stabilization,
                }
            }),
            (1..50u64, 1..60_000u64)
                .prop_map(|(per, period)| ScaleRule::PerRequests { requests_per_replica: per, period_ms: period }),
        ]
    }

    proptest! {
        #[test]
        fn target_never_leaves_min_max(
            min in 0..10u32, extra in 0..20u32, start in 0..40u32, rule in scale_rule(),
            inputs in prop::collection::vec((0..5_000u64, prop::option::of(0..10_000u64), 0..40u32), 1..300),
        ) {
            let spec = Autoscale { min, max: min + extra, rule };
            let mut a = Autoscaler::new(&spec, start, Time::ZERO);
            let mut now_ms = 0;
            let mut current = start;
            for (gap_ms, requests, other_count) in inputs {
                now_ms += gap_ms;
                match requests {
                    Some(count) => a.record_requests(Time::from_millis(now_ms), count),
                    None => {
                        // Mostly the count the autoscaler asked for, sometimes whatever the driver runs.
                        let asked = if other_count % 4 == 0 { other_count } else { current };
                        if let Some(d) = a.evaluate(Time::from_millis(now_ms), asked) {
                            prop_assert_eq!(d.from, asked);
                            prop_assert!(spec.min <= d.to && d.to <= spec.max, "{:?}", d);
                            current = d.to;
                        }
                    }
                }
            }
        }

        #[test]
        fn steady_load_within_tolerance_never_changes_direction(
            replicas in 1..20u32, target in 1..100u64, tolerance in 0..30u32, offset_percent in -30..30i64,
            window_s in 1..60u64, stabilization_s in 0..120u64, evaluations in prop::collection::vec(1..3_000u64, 1..200),
        ) {
            let per_replica_milli = (target as i64 * (1000 + 10 * offset_percent)) as u64;
            let rps = per_replica_milli * u64::from(replicas) / 1000;
            let rule = ScaleRule::TargetRps {
                target_rps_per_replica: target,
                tolerance_percent: tolerance,
                window_ms: window_s * 1000,
                scale_down_stabilization_ms: stabilization_s * 1000,
            };
            // Inside the band by the same measure the autoscaler uses.
            let (load, capacity) = (u128::from(rps) * 100, u128::from(target) * u128::from(replicas));
            prop_assume!(load.abs_diff(capacity * 100) <= capacity * u128::from(tolerance));
            let spec = Autoscale { min: 1, max: 40, rule };
            let mut a = Autoscaler::new(&spec, replicas, Time::ZERO);
            let (mut now_ms, mut recorded_s, mut current) = (0, 0, replicas);
            let mut direction = 0i64;
            for gap_ms in evaluations {
                now_ms += gap_ms;
                steady(&mut a, recorded_s, now_ms / 1000, rps);
                recorded_s = now_ms / 1000;
                if let Some(d) = a.evaluate(Time::from_millis(now_ms), current) {
                    let step = i64::from(d.to) - i64::from(d.from);
                    prop_assert!(direction * step >= 0, "changed direction at {} ms: {:?}", now_ms, d);
                    direction = step.signum();
                    current = d.to;
                }
            }
        }
    }
}
