//! Health tracking and restart back-off for one container.
//!
//! A single probe result is noise; a verdict is what the balancer and the reconciler act on. The
//! [`HealthTracker`] turns probe outcomes into verdict changes, each reported exactly once, with
//! hysteresis (`failures` in a row to fail, `successes` in a row to recover) so that one lost probe
//! does not eject a replica and one lucky answer does not re-admit a broken one, and with a start
//! grace so an app may boot. The [`Backoff`] keeps a crash-looping container from being restarted
//! as fast as Docker allows, and its budget tells the scheduler when to stop trying on this node
//! and move the slot elsewhere.

use std::fmt;
use std::time::Duration;

use crate::limits;
use crate::model::{HealthCheck, RestartBackoff};
use crate::time::Time;

/// What the tracker thinks of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthState {
    /// Started, no verdict yet: not a backend until it turns healthy.
    Starting,
    /// Passing its probes: a backend.
    Healthy,
    /// Failing its probes: out of the balancer, to be replaced.
    Unhealthy,
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        })
    }
}

/// How one probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeOutcome {
    /// A 2xx answer in time.
    Success,
    /// Any other answer, or no connection.
    Failure,
    /// No answer within `timeout_ms`; counts as a failure.
    Timeout,
}

/// A change of verdict, reported once by [`HealthTracker::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HealthTransition {
    /// The state before.
    pub from: HealthState,
    /// The state now; never equal to `from`.
    pub to: HealthState,
    /// When the probe that decided it was recorded.
    pub at: Time,
}

/// The health verdict of one container, from its probe outcomes.
#[derive(Clone, Debug)]
pub struct HealthTracker {
    interval_ms: u64,
    failures_to_fail: u32,
    successes_to_recover: u32,
    started_at: Time,
    /// Failures before this, while still starting, are not counted.
    grace_ends_at: Time,
    state: HealthState,
    consecutive_failures: u32,
    consecutive_successes: u32,
    last_probe_at: Option<Time>,
    healthy_since: Option<Time>,
}

impl HealthTracker {
    /// A tracker for a container started at `started_at`, probed as `check` says. Panics on a
    /// check that [`HealthCheck`] validation rejects (zero interval or thresholds).
    pub fn new(check: &HealthCheck, started_at: Time) -> HealthTracker {
        assert!(check.interval_ms > 0, "health.interval_ms must be positive");
        assert!(check.failures > 0 && check.successes > 0, "health thresholds must be positive");
        HealthTracker {
            interval_ms: check.interval_ms,
            failures_to_fail: check.failures,
            successes_to_recover: check.successes,
            started_at,
            grace_ends_at: started_at + Duration::from_millis(check.start_grace_ms),
            state: HealthState::Starting,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last_probe_at: None,
            healthy_since: None,
        }
    }

    /// Records a probe that ended at `now`; returns the transition if the verdict changed.
    ///
    /// `failures` failures in a row make a starting or healthy container unhealthy, except that a
    /// starting container's failures before the start grace ends are not counted; `successes`
    /// successes in a row make a starting or unhealthy container healthy. Panics if `now` is
    /// earlier than the previous probe.
    pub fn record(&mut self, now: Time, outcome: ProbeOutcome) -> Option<HealthTransition> {
        assert!(self.last_probe_at.is_none_or(|last| last <= now), "probe times must not go backwards");
        self.last_probe_at = Some(now);
        let from = self.state;
        match outcome {
            ProbeOutcome::Success => {
                self.consecutive_failures = 0;
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                if from != HealthState::Healthy && self.consecutive_successes >= self.successes_to_recover {
                    self.state = HealthState::Healthy;
                    self.healthy_since = Some(now);
                }
            }
            ProbeOutcome::Failure | ProbeOutcome::Timeout => {
                self.consecutive_successes = 0;
                let in_grace = from == HealthState::Starting && now < self.grace_ends_at;
                if !in_grace {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                }
                if from != HealthState::Unhealthy && self.consecutive_failures >= self.failures_to_fail {
                    self.state = HealthState::Unhealthy;
                    self.healthy_since = None;
                }
            }
        }
        self.check_invariants();
        (self.state != from).then_some(HealthTransition { from, to: self.state, at: now })
    }

    /// The current verdict.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// When the container last turned healthy, if it is healthy now.
    pub fn healthy_since(&self) -> Option<Time> {
        self.healthy_since
    }

    /// When the first probe is due: at once (`started_at`), so that a replacement serves as
    /// soon as it answers, not an interval later (a first probe that comes too early costs
    /// nothing inside the start grace); after a recorded one, `interval_ms` later. `Node`
    /// takes only the first from here: it sends the next ones on its own grid, at most an
    /// interval apart.
    pub fn next_probe_at(&self) -> Time {
        match self.last_probe_at {
            Some(last) => last + Duration::from_millis(self.interval_ms),
            None => self.started_at,
        }
    }

    /// Failures in a row that counted towards the threshold.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    fn check_invariants(&self) {
        assert!(self.consecutive_failures == 0 || self.consecutive_successes == 0);
        assert_eq!(self.state == HealthState::Healthy, self.healthy_since.is_some());
        match self.state {
            HealthState::Starting => {
                assert!(self.consecutive_failures < self.failures_to_fail);
                assert!(self.consecutive_successes < self.successes_to_recover);
            }
            HealthState::Healthy => assert!(self.consecutive_failures < self.failures_to_fail),
            HealthState::Unhealthy => assert!(self.consecutive_successes < self.successes_to_recover),
        }
    }
}

/// What to do about a container that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackoffDecision {
    /// Start it again at this time.
    RestartAt(Time),
    /// The budget is spent: stop restarting it here and let the scheduler move the slot.
    GiveUp,
}

/// Restart back-off of one slot on one node: exponential delays, a reset after a healthy
/// period, and a budget of consecutive failures.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial_ms: u64,
    /// The spec's `max_ms`, capped at [`limits::RESTART_BACKOFF_MS_MAX`].
    max_ms: u64,
    reset_after_ms: u64,
    /// Restarts allowed in a row; the failure after the last of them gives up.
    budget: u32,
    consecutive_failures: u32,
    /// Set by `on_healthy`, cleared by `on_failure`.
    healthy_since: Option<Time>,
}

impl Backoff {
    /// A fresh back-off following `spec`. Panics on a spec that validation rejects
    /// (`initial_ms` of 0, or `max_ms` below it).
    pub fn new(spec: &RestartBackoff) -> Backoff {
        assert!(spec.initial_ms > 0 && spec.initial_ms <= spec.max_ms, "restart needs 0 < initial_ms <= max_ms");
        let backoff = Backoff {
            initial_ms: spec.initial_ms,
            max_ms: spec.max_ms.min(limits::RESTART_BACKOFF_MS_MAX),
            reset_after_ms: spec.reset_after_ms,
            budget: spec.budget,
            consecutive_failures: 0,
            healthy_since: None,
        };
        backoff.check_invariants();
        backoff
    }

    /// The container failed (crashed, or was found unhealthy) at `now`.
    ///
    /// Returns when to restart it: `initial_ms` after the first failure in a row, doubling with
    /// each further one up to `max_ms`; or [`BackoffDecision::GiveUp`] once the failures in a row
    /// exceed the budget. A healthy period shorter than `reset_after_ms` does not break the row.
    pub fn on_failure(&mut self, now: Time) -> BackoffDecision {
        self.tick(now);
        self.healthy_since = None;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let decision = if self.consecutive_failures > self.budget {
            BackoffDecision::GiveUp
        } else {
            BackoffDecision::RestartAt(now + Duration::from_millis(self.delay_ms(self.consecutive_failures)))
        };
        assert!(self.consecutive_failures > 0);
        assert!(self.healthy_since.is_none());
        self.check_invariants();
        decision
    }

    /// The container turned healthy at `now`. Repeated calls keep the earliest time.
    pub fn on_healthy(&mut self, now: Time) {
        self.healthy_since.get_or_insert(now);
        self.tick(now);
        assert!(self.healthy_since.is_some());
    }

    /// Forgets the failures once the container has been healthy for `reset_after_ms` by `now`.
    /// [`on_failure`] does this itself; call it to see the reset earlier.
    ///
    /// [`on_failure`]: Backoff::on_failure
    pub fn tick(&mut self, now: Time) {
        if let Some(since) = self.healthy_since
            && now.saturating_since(since) >= Duration::from_millis(self.reset_after_ms)
        {
            self.consecutive_failures = 0;
        }
        self.check_invariants();
    }

    /// Failures in a row since the last reset.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The delay the next failure would get if the budget allows it.
    pub fn next_delay_ms(&self) -> u64 {
        self.delay_ms(self.consecutive_failures.saturating_add(1))
    }

    fn check_invariants(&self) {
        assert!(self.initial_ms > 0);
        assert!(self.max_ms <= limits::RESTART_BACKOFF_MS_MAX);
    }

    /// `initial_ms * 2^(failures - 1)`, capped at `max_ms`.
    fn delay_ms(&self, failures: u32) -> u64 {
        let factor = 1u64.checked_shl(failures.saturating_sub(1)).unwrap_or(u64::MAX);
        self.initial_ms.saturating_mul(factor).min(self.max_ms)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    fn check(failures: u32, successes: u32, start_grace_ms: u64) -> HealthCheck {
        HealthCheck { failures, successes, start_grace_ms, interval_ms: 1000, ..HealthCheck::default() }
    }

    fn transition(from: HealthState, to: HealthState, at: u64) -> Option<HealthTransition> {
        Some(HealthTransition { from, to, at: ms(at) })
    }

    use HealthState::{Healthy, Starting, Unhealthy};
    use ProbeOutcome::{Failure, Success, Timeout};

    #[test]
    fn grace_period_ignores_early_failures() {
        let mut t = HealthTracker::new(&check(2, 1, 5000), ms(0));
        for at in [1000, 2000, 3000, 4000] {
            assert_eq!(t.record(ms(at), Failure), None);
        }
        assert_eq!(t.consecutive_failures(), 0);
        assert_eq!(t.state(), Starting);
        assert_eq!(t.record(ms(5000), Failure), None);
        assert_eq!(t.record(ms(6000), Failure), transition(Starting, Unhealthy, 6000));
    }

    #[test]
    fn a_healthy_container_fails_even_within_the_start_grace() {
        let mut t = HealthTracker::new(&check(2, 1, 60_000), ms(0));
        assert_eq!(t.record(ms(1000), Success), transition(Starting, Healthy, 1000));
        assert_eq!(t.record(ms(2000), Failure), None);
        assert_eq!(t.record(ms(3000), Failure), transition(Healthy, Unhealthy, 3000));
    }

    #[test]
    fn each_transition_is_reported_exactly_once() {
        let mut t = HealthTracker::new(&check(2, 2, 0), ms(0));
        let outcomes = [Success, Success, Success, Failure, Failure, Failure, Success, Success, Success];
        let reported: Vec<_> = outcomes.iter().enumerate().filter_map(|(i, &o)| t.record(ms(i as u64), o)).collect();
        let pairs: Vec<_> = reported.iter().map(|tr| (tr.from, tr.to, tr.at.as_millis())).collect();
        assert_eq!(pairs, [(Starting, Healthy, 1), (Healthy, Unhealthy, 4), (Unhealthy, Healthy, 7)]);
        assert_eq!(t.healthy_since(), Some(ms(7)));
    }

    #[test]
    fn timeout_counts_as_failure() {
        let mut t = HealthTracker::new(&check(3, 1, 0), ms(0));
        t.record(ms(1), Success);
        assert_eq!(t.record(ms(2), Timeout), None);
        assert_eq!(t.record(ms(3), Failure), None);
        assert_eq!(t.record(ms(4), Timeout), transition(Healthy, Unhealthy, 4));
        assert_eq!(t.healthy_since(), None);
    }

    #[test]
    fn flapping_container_never_reaches_the_failure_threshold() {
        let mut t = HealthTracker::new(&check(3, 1, 0), ms(0));
        for i in 1..200u64 {
            let outcome = if i % 2 == 0 { Failure } else { Success };
            if let Some(tr) = t.record(ms(i * 1000), outcome) {
                assert_eq!(tr.to, Healthy, "only the first success changes anything");
            }
        }
        assert_eq!(t.state(), Healthy);
        assert_eq!(t.healthy_since(), Some(ms(1000)));
    }

    #[test]
    fn the_first_probe_is_due_at_the_start_and_the_next_one_interval_after_the_last() {
        let mut t = HealthTracker::new(&check(3, 1, 0), ms(500));
        assert_eq!(t.next_probe_at(), ms(500));
        t.record(ms(1700), Success);
        assert_eq!(t.next_probe_at(), ms(2700));
    }

    fn backoff(initial_ms: u64, max_ms: u64, reset_after_ms: u64, budget: u32) -> Backoff {
        Backoff::new(&RestartBackoff { initial_ms, max_ms, reset_after_ms, budget })
    }

    fn delays_ms(b: &mut Backoff, now_ms: u64, failures: usize) -> Vec<u64> {
        (0..failures)
            .map(|_| match b.on_failure(ms(now_ms)) {
                BackoffDecision::RestartAt(at) => at.as_millis() - now_ms,
                BackoffDecision::GiveUp => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = backoff(1000, 10_000, 60_000, 100);
        assert_eq!(delays_ms(&mut b, 0, 6), [1000, 2000, 4000, 8000, 10_000, 10_000]);
        let mut b = backoff(1000, u64::MAX, 60_000, 100);
        assert_eq!(delays_ms(&mut b, 0, 80).last(), Some(&limits::RESTART_BACKOFF_MS_MAX));
    }

    #[test]
    fn backoff_resets_only_after_a_healthy_period() {
        let mut b = backoff(1000, 60_000, 10_000, 100);
        delays_ms(&mut b, 0, 3);
        b.on_healthy(ms(1000));
        assert_eq!(delays_ms(&mut b, 5000, 1), [8000], "healthy for 4 s: the row continues");
        b.on_healthy(ms(20_000));
        b.tick(ms(29_999));
        assert_eq!(b.consecutive_failures(), 4);
        b.tick(ms(30_000));
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(b.next_delay_ms(), 1000);
        b.on_healthy(ms(40_000));
        assert_eq!(delays_ms(&mut b, 41_000, 1), [1000], "the earliest healthy time counts");
    }

    #[test]
    fn exhausted_budget_gives_up() {
        let mut b = backoff(1000, 60_000, 10_000, 3);
        assert!(delays_ms(&mut b, 0, 3).iter().all(|&d| d < u64::MAX));
        assert_eq!(b.on_failure(ms(0)), BackoffDecision::GiveUp);
        assert_eq!(b.on_failure(ms(0)), BackoffDecision::GiveUp);
        assert_eq!(b.consecutive_failures(), 5);
    }

    fn outcome() -> impl Strategy<Value = ProbeOutcome> {
        prop::sample::select(vec![Success, Failure, Timeout])
    }

    proptest! {
        #[test]
        fn transitions_alternate_and_match_the_state(
            failures in 1..5u32, successes in 1..5u32, grace_ms in 0..5000u64,
            probes in prop::collection::vec((0..2000u64, outcome()), 0..200),
        ) {
            let mut t = HealthTracker::new(&check(failures, successes, grace_ms), ms(0));
            let mut now_ms = 0;
            let mut last: Option<HealthTransition> = None;
            for (gap_ms, outcome) in probes {
                now_ms += gap_ms;
                let before = t.state();
                match t.record(ms(now_ms), outcome) {
                    Some(tr) => {
                        prop_assert_eq!(tr.from, before);
                        prop_assert_ne!(tr.from, tr.to);
                        prop_assert!(last.is_none_or(|l| l.to != tr.to), "two identical transitions in a row");
                        last = Some(tr);
                    }
                    None => prop_assert_eq!(t.state(), before),
                }
                prop_assert_eq!(t.state(), last.map_or(Starting, |l| l.to));
                prop_assert_eq!(t.healthy_since(), last.filter(|l| l.to == Healthy).map(|l| l.at));
            }
        }
    }
}
