//! When a placement pass runs, and what it orders this node to do.
//!
//! A pass runs `reconcile_delay_ms` after the facts change (a burst costs one pass), no sooner
//! than `reconcile_interval_min_ms` after the last one, and not before the node has joined. It
//! is skipped when nothing it reads changed since the last, or when the view is *settled*
//! (every slot runs once and nothing that moves slots changed); it places nothing while the
//! view is incomplete, for `limits::STATUS_WAIT_MS` at most. What it decides is a list of [`Order`]s for the node to carry out.

use std::time::Duration;

use crate::model::{GpuShare, NodeId, SlotId};
use crate::schedule::{ObservedContainer, Plan, Unplaceable};
use crate::time::Time;

use super::Event;
use super::io::Effects;
use super::slots::{Phase, Slots};
use super::timers::Timer;

/// What a pass orders this node to do with one of its slots, in the order to do it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Order {
    /// Stop the container of the slot's instance at this attempt and forget the instance: the
    /// slot runs elsewhere, twice, on a newer version, or no more.
    Stop(SlotId, u64),
    /// Claim the slot, placed here, on a free host port and the GPUs placement gave it: a new
    /// instance, beside an old version's if the slot is being replaced.
    Claim(SlotId, Vec<GpuShare>),
    /// Start the slot's instance at this attempt, which failed here past its budget, again
    /// with a fresh budget, on the GPUs placement gave it: nowhere else fits.
    Retry(SlotId, u64, Vec<GpuShare>),
}

/// What this node orders itself from `plan`: its stops (of containers that are still the ones
/// the plan saw, failed records aside: they keep the slot away from here), then its starts.
/// `current` says whether an instance's version is the one its app's containers run now.
pub(super) fn orders(plan: &Plan, me: &NodeId, slots: &Slots, current: impl Fn(&SlotId, u64) -> bool) -> Vec<Order> {
    let mut orders = Vec::new();
    for stop in plan.stops_on(me) {
        let Some((_, l)) = slots.reporting(&stop.slot, &stop.container) else { continue };
        if l.phase == Phase::Failed {
            continue;
        }
        orders.push(Order::Stop(stop.slot.clone(), l.start));
    }
    for slot in plan.starts_on(me) {
        // An instance of the version the app runs now is the one the plan placed here.
        let instances: Vec<_> = slots.instances(&slot).filter(|(_, l)| current(&slot, l.version)).collect();
        if instances.iter().any(|(_, l)| l.phase != Phase::Failed) {
            continue;
        }
        let gpus = plan.gpus_of(&slot);
        match instances.first() {
            Some((_, l)) => orders.push(Order::Retry(slot, l.start, gpus)),
            None => orders.push(Order::Claim(slot, gpus)),
        }
    }
    orders
}

/// The last pass that ran: the facts it saw, this node's containers then, and whether its
/// view was complete (it acted).
#[derive(Debug)]
struct LastPass {
    facts: u64,
    own: Vec<ObservedContainer>,
    complete: bool,
}

/// What a pass about to run should do, before it computes anything.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Shortcut {
    /// Nothing it reads changed since the last pass; `complete` is that pass's.
    Unchanged {
        /// Whether the last pass's view was complete.
        complete: bool,
    },
    /// It has to look further.
    None,
}

/// When passes run, and what the last one saw.
#[derive(Debug)]
pub(super) struct Placement {
    /// Bumped on every change to what placement reads (registry facts, membership).
    facts: u64,
    /// Bumped by the changes that can move slots even when every slot runs exactly once:
    /// apps, scales, membership, node specs.
    structure: u64,
    last_pass: Option<LastPass>,
    /// `structure` at the last pass that ran `place` on a complete view.
    structure_at_last_place: Option<u64>,
    /// When the last pass placed (see `NodeConfig::reconcile_interval_min_ms`).
    last_placed_at: Option<Time>,
    /// Whether a `PlacementPass` timer is set.
    pending: bool,
    /// The slots the last pass could place nowhere, reported when the list changes.
    unschedulable: Vec<(SlotId, Unplaceable)>,
    /// No pass runs before this (`SwimConfig::join_settle_ms` after the start in SWIM mode;
    /// the start otherwise).
    places_from: Time,
    /// Since when passes have found a live member with no status, if the last one did.
    incomplete_since: Option<Time>,
}

impl Placement {
    /// Passes from `places_from` on.
    pub(super) fn new(places_from: Time) -> Placement {
        Placement {
            facts: 0,
            structure: 0,
            last_pass: None,
            structure_at_last_place: None,
            last_placed_at: None,
            pending: false,
            unschedulable: Vec::new(),
            places_from,
            incomplete_since: None,
        }
    }

    /// Whether a pass at `now` whose view is not `complete` has waited `limits::STATUS_WAIT_MS`
    /// for the missing statuses, and places without them. A member that publishes no status
    /// for that long is broken or forged (a sync of thousands of members that do not exist):
    /// waiting for it would freeze placement until SWIM declared it down.
    pub(super) fn waited_out(&mut self, now: Time, complete: bool) -> bool {
        if complete {
            self.incomplete_since = None;
            return false;
        }
        let since = *self.incomplete_since.get_or_insert(now);
        now >= since + Duration::from_millis(crate::limits::STATUS_WAIT_MS)
    }

    /// Whether the last pass found the view incomplete and has waited long enough since
    /// (`Placement::waited_out`) that a pass would now place without the missing statuses.
    pub(super) fn wait_is_over(&self, now: Time) -> bool {
        self.incomplete_since.is_some_and(|since| now >= since + Duration::from_millis(crate::limits::STATUS_WAIT_MS))
    }

    /// Something a pass reads changed.
    pub(super) fn facts_changed(&mut self) {
        self.facts += 1;
    }

    /// Something that can move slots changed (apps, scales, membership, node specs).
    pub(super) fn structure_changed(&mut self) {
        self.structure += 1;
    }

    /// Whether `now` is before the first pass may run: the node is joining.
    pub(super) fn is_joining(&self, now: Time) -> bool {
        now < self.places_from
    }

    /// Sets a pass's timer, unless one is set: `delay_ms` from now, at least `interval_min_ms`
    /// after the last pass that placed, and not before `places_from`.
    pub(super) fn request(&mut self, now: Time, delay_ms: u64, interval_min_ms: u64, out: &mut Effects) {
        if self.pending {
            return;
        }
        self.pending = true;
        let mut at = now + Duration::from_millis(delay_ms);
        if let Some(last) = self.last_placed_at {
            at = at.max(last + Duration::from_millis(interval_min_ms));
        }
        at = at.max(self.places_from);
        out.schedule(at, Timer::PlacementPass);
    }

    /// Whether a pass's timer is set.
    pub(super) fn is_pending(&self) -> bool {
        self.pending
    }

    /// The pass's timer fired.
    pub(super) fn fired(&mut self) {
        self.pending = false;
    }

    /// Whether the pass about to run, with this node's containers `own`, would see what the
    /// last one saw.
    pub(super) fn shortcut(&self, own: &[ObservedContainer]) -> Shortcut {
        match &self.last_pass {
            Some(last) if last.facts == self.facts && last.own == own => {
                Shortcut::Unchanged { complete: last.complete }
            }
            _ => Shortcut::None,
        }
    }

    /// Whether nothing that moves slots changed since the last pass that placed.
    pub(super) fn structure_unchanged(&self) -> bool {
        self.structure_at_last_place == Some(self.structure)
    }

    /// A pass ran with `own` and a view `complete` or not (it placed, or had nothing to place).
    pub(super) fn ran(&mut self, own: Vec<ObservedContainer>, complete: bool) {
        self.last_pass = Some(LastPass { facts: self.facts, own, complete });
    }

    /// The pass places now.
    pub(super) fn placing(&mut self, now: Time) {
        self.last_placed_at = Some(now);
        self.structure_at_last_place = Some(self.structure);
    }

    /// The slots the last pass that placed could place nowhere, with the reasons.
    pub(super) fn unschedulable(&self) -> &[(SlotId, Unplaceable)] {
        &self.unschedulable
    }

    /// Whether the last pass that placed left slots unschedulable.
    pub(super) fn has_unschedulable(&self) -> bool {
        !self.unschedulable.is_empty()
    }

    /// The slots the pass could place nowhere; reported when the list changed.
    pub(super) fn set_unschedulable(&mut self, unschedulable: Vec<(SlotId, Unplaceable)>, out: &mut Effects) {
        if unschedulable != self.unschedulable {
            self.unschedulable = unschedulable.clone();
            out.event(Event::Unschedulable { slots: unschedulable });
        }
    }
}
