//! The node's timers: what each is for, one heap they wait in, and the grid its periodic
//! timers fall on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::limits;
use crate::membership::{SwimId, SwimTimer};
use crate::model::SlotId;
use crate::time::Time;

/// Timers are data: what they are for, and for per-slot timers the generation they belong to,
/// so a stale one is ignored (STYLE.md, rule 3).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A gossip round: push recent news to a few peers. Set only while there is news.
    Gossip,
    /// Compare roots with a random peer (without SWIM, whose packets carry the root).
    AntiEntropy,
    /// A placement pass, requested by a change of facts (`Node::request_pass`).
    PlacementPass,
    /// Send the request counts to each autoscaled app's coordinator; once an hour, collect
    /// the registry's old tombstones too, and ask for a pass that waited out a missing status.
    LoadReport,
    /// Evaluate the autoscalers of the apps this node coordinates.
    Autoscale,
    /// Probe a running slot's container, if the slot is still at start attempt `start`.
    Probe { slot: SlotId, start: u64 },
    /// Start a slot backing off after a failure again.
    Restart { slot: SlotId, start: u64 },
    /// The end of a claim's settle: start the slot if it is still claimed here.
    Claim { slot: SlotId, start: u64 },
    /// Forget a slot that failed here past its budget, so placement may use this node again.
    ForgetFailure { slot: SlotId, start: u64 },
    /// A new version's replica on trial has been healthy for its `min_healthy_ms`, if it
    /// still is: it counts, and its slot's old replica may stop.
    Ready { slot: SlotId, start: u64 },
    /// A new version's replica on trial must be ready by now, or its rollout fails.
    Deadline { slot: SlotId, start: u64 },
    /// Publish the status held back by `NodeConfig::status_batch_ms`, if still held.
    PublishStatus,
    /// One of foca's timers; foca ignores a stale one itself.
    Swim(SwimTimer),
    /// SWIM's own periodic tick: announce again to the seeds while no peer is known, read
    /// foca's members, and every few ticks check them all (`SWIM_FULL_CHECK_PERIODS`).
    SwimTick,
    /// A push-pull membership sync with one peer: the first with a seed, right after the
    /// start.
    SwimSync,
    /// Tell a suspected member again, if it still is (`Message::SwimSuspicion`).
    SwimSuspicion { member: SwimId, incarnation: u16, left: u32 },
    /// The end of a stale suspicion this node took up (`Node::take_up_stale_suspicions`):
    /// declared down if foca still suspects it at that incarnation.
    SwimSuspectDown { member: SwimId, incarnation: u16 },
}

/// The pending timers, earliest first; two due at the same time fire in the order they were
/// set (foca needs its timers in order: its issue #26).
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Time, u64, Timer)>>,
    /// How many timers were ever set: each timer's place among those due at the same time.
    set: u64,
}

impl Timers {
    /// Sets `timer` to fire at `at`.
    pub(super) fn schedule(&mut self, at: Time, timer: Timer) {
        self.set += 1;
        self.heap.push(Reverse((at, self.set, timer)));
    }

    /// When the next timer is due.
    pub(super) fn next_due(&self) -> Option<Time> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// The next timer due at or before `now`, taken out.
    pub(super) fn pop_due(&mut self, now: Time) -> Option<Timer> {
        if self.next_due()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, _, timer))| timer)
    }

    /// Checks the bound on pending timers.
    pub(super) fn check_invariants(&self) {
        assert!(self.heap.len() <= limits::TIMERS_MAX, "timers are bounded");
    }

    /// Every pending timer, in no order (for tests).
    #[cfg(test)]
    pub(super) fn pending(&self) -> impl Iterator<Item = &Timer> {
        self.heap.iter().map(|Reverse((_, _, timer))| timer)
    }
}

/// Where a node's periodic timers fall: `started`, plus a phase drawn at the start taken
/// modulo the interval, plus whole intervals. Timers of equal intervals then come due together
/// and wake the node once; nodes started together do not tick in lockstep.
#[derive(Clone, Copy, Debug)]
pub(super) struct Grid {
    /// When the node started.
    pub(super) started: Time,
    /// A random number drawn at the start.
    pub(super) phase_ms: u64,
}

impl Grid {
    /// The offset of this node's grid of `interval_ms` from its start.
    pub(super) fn jitter_ms(&self, interval_ms: u64) -> u64 {
        self.phase_ms % interval_ms.max(1)
    }

    /// The first time at or after `at` on this node's grid of `interval_ms`.
    pub(super) fn at(&self, at: Time, interval_ms: u64) -> Time {
        let interval_ms = interval_ms.max(1);
        let origin = self.started.as_millis() + self.phase_ms % interval_ms;
        let at_ms = at.as_millis().max(origin);
        let steps = (at_ms - origin).div_ceil(interval_ms);
        Time::from_millis(origin + steps * interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_timers_fall_on_the_nodes_own_grid() {
        let grid = Grid { started: Time::from_millis(100), phase_ms: 1234 };
        // Origin 100 + 1234 % 1000 = 334, then every second.
        assert_eq!(grid.at(Time::from_millis(0), 1000), Time::from_millis(334));
        assert_eq!(grid.at(Time::from_millis(334), 1000), Time::from_millis(334));
        assert_eq!(grid.at(Time::from_millis(335), 1000), Time::from_millis(1334));
        assert_eq!(grid.at(Time::from_millis(5000), 1000), Time::from_millis(5334));
        // A 500 ms grid holds every point of the 1 s one.
        assert_eq!(grid.at(Time::from_millis(335), 500), Time::from_millis(834));
    }

    #[test]
    fn timers_due_together_fire_in_the_order_they_were_set() {
        let mut timers = Timers::default();
        timers.schedule(Time::from_millis(5), Timer::Autoscale);
        timers.schedule(Time::from_millis(3), Timer::Gossip);
        timers.schedule(Time::from_millis(5), Timer::AntiEntropy);
        assert_eq!(timers.pop_due(Time::from_millis(2)), None);
        let due: Vec<Timer> = std::iter::from_fn(|| timers.pop_due(Time::from_millis(5))).collect();
        assert_eq!(due, [Timer::Gossip, Timer::Autoscale, Timer::AntiEntropy]);
        assert_eq!(timers.next_due(), None);
    }
}
