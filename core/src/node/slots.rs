//! This node's own slots and the lifecycle of each: claimed, starting, running (healthy or
//! not), backing off after a failure, failed past its budget, forgotten. Every transition
//! checks the phase it leaves; every start attempt has its own number, so a late answer to an
//! older one is recognised and undone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::health::{Backoff, BackoffDecision, HealthState, HealthTracker, ProbeOutcome};
use crate::limits;
use crate::model::HealthCheck;
use crate::model::{AppSpec, SlotId};
use crate::schedule::{ContainerState, ObservedContainer};
use crate::time::Time;

use super::io::Effects;
use super::timers::Timer;
use super::{Action, ContainerStatus, Event, STARTING};

/// Where a slot of this node is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Placed here; no container yet until the claim settles.
    Claimed,
    /// Start asked for, no answer yet.
    Starting,
    /// Running; health as the tracker says.
    Running,
    /// Stopped after a failure; started again at the `Restart` timer.
    BackingOff,
    /// Failed past its budget; kept as a marker until `ForgetFailure`.
    Failed,
}

/// One of this node's slots.
#[derive(Debug)]
pub(super) struct Local {
    /// The host port it listens on, the same through every restart.
    pub(super) host_port: u16,
    /// The runtime's id, while the phase is `Running`.
    container: Option<Arc<str>>,
    /// Where it is in its lifecycle.
    pub(super) phase: Phase,
    health: HealthTracker,
    backoff: Backoff,
    /// The start attempt it is at: timers and the runtime's answers carry it, and one of an
    /// older attempt is ignored.
    pub(super) start: u64,
}

impl Local {
    /// The state peers hear of.
    fn reported_state(&self) -> ContainerState {
        match self.phase {
            Phase::Claimed | Phase::Starting => ContainerState::Starting,
            Phase::BackingOff => ContainerState::Unhealthy,
            Phase::Failed => ContainerState::Failed,
            Phase::Running => match self.health.state() {
                HealthState::Starting => ContainerState::Starting,
                HealthState::Healthy => ContainerState::Healthy,
                HealthState::Unhealthy => ContainerState::Unhealthy,
            },
        }
    }

    /// Whether the container peers hear of is `id` ([`STARTING`] while there is none).
    pub(super) fn reports_container(&self, id: &str) -> bool {
        self.container.as_deref().unwrap_or(STARTING) == id
    }

    /// The container id peers hear of: [`STARTING`] while there is none.
    fn reported_container(&self) -> Arc<str> {
        self.container.clone().unwrap_or_else(|| Arc::from(STARTING))
    }
}

/// What a probe is to check.
#[derive(Debug)]
pub(super) struct ProbeTarget {
    /// The runtime's id.
    pub(super) container: String,
    /// The host port it listens on.
    pub(super) host_port: u16,
}

/// This node's slots.
#[derive(Debug, Default)]
pub(super) struct Slots {
    local: BTreeMap<SlotId, Local>,
    /// The last start attempt numbered, on any slot.
    starts: u64,
}

impl Slots {
    /// The slot `slot`, if it is this node's.
    pub(super) fn get(&self, slot: &SlotId) -> Option<&Local> {
        self.local.get(slot)
    }

    /// Whether `slot` is at start attempt `start` and in `phase`.
    pub(super) fn is_at(&self, slot: &SlotId, start: u64, phase: Phase) -> bool {
        self.local.get(slot).is_some_and(|l| l.start == start && l.phase == phase)
    }

    fn next_start(&mut self) -> u64 {
        self.starts += 1;
        self.starts
    }

    /// A new slot of this node, from `spec`'s health check and restart budget (the defaults
    /// when the app is gone).
    fn insert(
        &mut self,
        now: Time,
        slot: SlotId,
        host_port: u16,
        phase: Phase,
        container: Option<String>,
        spec: Option<&AppSpec>,
    ) {
        assert!(!self.local.contains_key(&slot), "a slot is inserted once");
        let (health, backoff) = match spec {
            Some(s) => (HealthTracker::new(&s.health, now), Backoff::new(&s.restart)),
            None => (HealthTracker::new(&Default::default(), now), Backoff::new(&Default::default())),
        };
        let start = self.next_start();
        let container = container.map(Arc::from);
        self.local.insert(slot, Local { host_port, container, phase, health, backoff, start });
    }

    /// Placement put `slot` here: it is claimed on `host_port` for `settle_ms`, then started if
    /// no other node's claim won it (`Timer::Claim`).
    pub(super) fn claim(
        &mut self,
        now: Time,
        slot: SlotId,
        host_port: u16,
        spec: Option<&AppSpec>,
        settle_ms: u64,
        out: &mut Effects,
    ) {
        self.insert(now, slot.clone(), host_port, Phase::Claimed, None, spec);
        let start = self.local[&slot].start;
        out.schedule(now + Duration::from_millis(settle_ms), Timer::Claim { slot, start });
    }

    /// A container this node runs already (found by its labels at start-up): kept and probed,
    /// unless the slot has one already or the node holds as many as it may, when it is stopped.
    pub(super) fn adopt(
        &mut self,
        now: Time,
        slot: SlotId,
        container: String,
        host_port: u16,
        spec: Option<&AppSpec>,
        out: &mut Effects,
    ) {
        assert!(container.len() <= limits::CONTAINER_ID_LEN_MAX, "container ids are bounded");
        if self.local.contains_key(&slot) || self.local.len() >= limits::LOCAL_SLOTS_MAX {
            // Two containers for one slot on this node (keep the first), or more than a node runs.
            out.push(Action::StopContainer { container, slot, drain_ms: 0 });
            return;
        }
        self.insert(now, slot.clone(), host_port, Phase::Running, Some(container), spec);
        self.arm_health(now, &slot, out);
    }

    /// Asks the runtime for a container for `slot` (claimed, or backing off), as `spec` says.
    pub(super) fn start(&mut self, slot: &SlotId, spec: AppSpec, out: &mut Effects) {
        let start = self.next_start();
        let l = self.local.get_mut(slot).expect("a slot is local before it starts");
        assert!(matches!(l.phase, Phase::Claimed | Phase::BackingOff), "started from {:?}", l.phase);
        l.start = start;
        l.phase = Phase::Starting;
        l.container = None;
        // Its health tracker is made when the container runs (`started`).
        let host_port = l.host_port;
        out.event(Event::Starting { slot: slot.clone(), host_port });
        out.push(Action::StartContainer { slot: slot.clone(), app: Box::new(spec), host_port, generation: start });
    }

    /// The runtime started `container` for `slot`'s attempt `start`. Returns whether that is
    /// the attempt the slot is at; a start this node no longer wants is undone.
    pub(super) fn started(
        &mut self,
        now: Time,
        slot: SlotId,
        start: u64,
        container: String,
        check: &HealthCheck,
        out: &mut Effects,
    ) -> bool {
        assert!(container.len() <= limits::CONTAINER_ID_LEN_MAX, "container ids are bounded");
        if !self.is_at(&slot, start, Phase::Starting) {
            out.push(Action::StopContainer { container, slot, drain_ms: 0 });
            return false;
        }
        // The start grace counts from here, when the container runs, not from the start
        // request: creating and starting a container can take a good part of the grace, and a
        // booting app would be restarted for it.
        let l = self.local.get_mut(&slot).expect("checked");
        l.container = Some(Arc::from(container));
        l.phase = Phase::Running;
        l.health = HealthTracker::new(check, now);
        self.arm_health(now, &slot, out);
        true
    }

    /// The slot running `container`, if any.
    pub(super) fn running(&self, container: &str) -> Option<SlotId> {
        self.local.iter().find(|(_, l)| l.container.as_deref() == Some(container)).map(|(s, _)| s.clone())
    }

    /// A probe's outcome for `container`: the slot and its new health, if that changed. A slot
    /// turning healthy resets its back-off.
    pub(super) fn probed(
        &mut self,
        now: Time,
        container: &str,
        outcome: ProbeOutcome,
    ) -> Option<(SlotId, HealthState)> {
        let (slot, l) = self
            .local
            .iter_mut()
            .find(|(_, l)| l.phase == Phase::Running && l.container.as_deref() == Some(container))?;
        let to = l.health.record(now, outcome)?.to;
        if to == HealthState::Healthy {
            l.backoff.on_healthy(now);
        }
        Some((slot.clone(), to))
    }

    /// The first probe of `slot`'s running container, at its tracker's first probe time.
    fn arm_health(&mut self, now: Time, slot: &SlotId, out: &mut Effects) {
        let l = &self.local[slot];
        let first = l.health.next_probe_at().max(now);
        out.schedule(first, Timer::Probe { slot: slot.clone(), start: l.start });
    }

    /// What to probe for `slot` at attempt `start`, if it still runs it.
    pub(super) fn probe_target(&self, slot: &SlotId, start: u64) -> Option<ProbeTarget> {
        let l = self.local.get(slot).filter(|l| l.start == start && l.phase == Phase::Running)?;
        let container = l.container.as_deref().expect("a running slot has a container").to_owned();
        Some(ProbeTarget { container, host_port: l.host_port })
    }

    /// `slot`'s container failed (it exited, its start failed, or it turned unhealthy): out of
    /// every balancer at once, stopped, and started again after its back-off on the same host
    /// port, or given up past its budget and forgotten `cooldown_ms` later. Returns whether
    /// `slot` is this node's.
    pub(super) fn fail(&mut self, now: Time, slot: &SlotId, cooldown_ms: u64, out: &mut Effects) -> bool {
        if !self.local.contains_key(slot) {
            return false;
        }
        let start = self.next_start();
        let l = self.local.get_mut(slot).expect("checked");
        assert!(matches!(l.phase, Phase::Starting | Phase::Running), "failed from {:?}", l.phase);
        if let Some(container) = l.container.take() {
            out.push(Action::StopContainer { container: container.to_string(), slot: slot.clone(), drain_ms: 0 });
        }
        l.start = start;
        match l.backoff.on_failure(now) {
            BackoffDecision::RestartAt(at) => {
                l.phase = Phase::BackingOff;
                out.event(Event::Restarting { slot: slot.clone(), at });
                out.schedule(at, Timer::Restart { slot: slot.clone(), start });
            }
            BackoffDecision::GiveUp => {
                l.phase = Phase::Failed;
                out.event(Event::GaveUp { slot: slot.clone() });
                let forget = now + Duration::from_millis(cooldown_ms);
                out.schedule(forget, Timer::ForgetFailure { slot: slot.clone(), start });
            }
        }
        true
    }

    /// A failed slot placed back here because nowhere else fits: it backs off with a fresh
    /// budget from `spec` (its old one when the app is gone), to be started at once.
    pub(super) fn retry_failed(&mut self, slot: &SlotId, spec: Option<&AppSpec>) {
        let l = self.local.get_mut(slot).expect("present");
        assert_eq!(l.phase, Phase::Failed, "only a failed slot is retried");
        if let Some(spec) = spec {
            l.backoff = Backoff::new(&spec.restart);
        }
        l.phase = Phase::BackingOff;
    }

    /// Forgets `slot`'s failure, if it is still the one of attempt `start`; returns whether
    /// it did.
    pub(super) fn forget(&mut self, slot: &SlotId, start: u64) -> bool {
        if !self.is_at(slot, start, Phase::Failed) {
            return false;
        }
        self.local.remove(slot);
        true
    }

    /// Takes `slot` away from this node (placement moved or stopped it): the container, if it
    /// has one, is stopped after `drain_ms`.
    pub(super) fn stop(&mut self, slot: &SlotId, drain_ms: u64, out: &mut Effects) {
        let l = self.local.remove(slot).expect("a slot is stopped while it is here");
        assert_ne!(l.phase, Phase::Failed, "a failed slot has no container to stop");
        if let Some(container) = l.container {
            out.push(Action::StopContainer { container: container.to_string(), slot: slot.clone(), drain_ms });
        }
    }

    /// The lowest port of `min..=max` that no slot holds and none of `published` is: every
    /// node's balancer listens on every app's published port, so a container bound there
    /// would fail to start.
    pub(super) fn free_host_port(&self, min: u16, max: u16, published: impl Iterator<Item = u16>) -> Option<u16> {
        if self.local.len() >= limits::LOCAL_SLOTS_MAX {
            return None;
        }
        let mut used: BTreeSet<u16> = self.local.values().map(|l| l.host_port).collect();
        used.extend(published);
        (min..=max).find(|p| !used.contains(p))
    }

    /// What placement observes of this node's slots.
    pub(super) fn observed(&self) -> Vec<ObservedContainer> {
        self.local
            .iter()
            .map(|(slot, l)| ObservedContainer {
                slot: slot.clone(),
                container: l.reported_container(),
                state: l.reported_state(),
            })
            .collect()
    }

    /// What this node's status says of its slots.
    pub(super) fn statuses(&self) -> Vec<ContainerStatus> {
        self.local
            .iter()
            .map(|(slot, l)| ContainerStatus {
                slot: slot.clone(),
                container: l.reported_container(),
                host_port: l.host_port,
                state: l.reported_state(),
            })
            .collect()
    }

    /// Each slot with its host port and reported state.
    pub(super) fn summary(&self) -> Vec<(SlotId, u16, ContainerState)> {
        self.local.iter().map(|(s, l)| (s.clone(), l.host_port, l.reported_state())).collect()
    }

    /// What must hold for every slot, `ports` being the size of the node's host port range.
    pub(super) fn check_invariants(&self, ports: usize) {
        assert!(self.local.len() <= ports, "a node runs at most a slot per host port");
        assert!(self.local.len() <= limits::LOCAL_SLOTS_MAX, "a node runs a bounded number of slots");
        debug_assert!(
            {
                let ports: BTreeSet<u16> = self.local.values().map(|l| l.host_port).collect();
                ports.len() == self.local.len()
            },
            "each local slot has its own host port"
        );
        debug_assert!(
            self.local.values().all(|l| l.container.is_some() == (l.phase == Phase::Running)),
            "a slot has a container exactly while it runs"
        );
        debug_assert!(self.local.values().all(|l| l.start <= self.starts), "start attempts are numbered in order");
    }
}
