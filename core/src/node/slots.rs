//! This node's own slots and the lifecycle of each: claimed, starting, running (healthy or
//! not), backing off after a failure, failed past its budget, forgotten. Every transition
//! checks the phase it leaves; every start attempt has its own number, so a late answer to an
//! older one is recognised and undone.
//!
//! A slot may have two instances here during a rolling update: its old version's container
//! and the new one started beside it. Each instance is keyed by its slot and the number of the
//! start attempt that made it, and knows its version; every input names the instance by its
//! current attempt (timers, the runtime's answers) or its container.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::health::{Backoff, BackoffDecision, HealthState, HealthTracker, ProbeOutcome};
use crate::limits;
use crate::model::HealthCheck;
use crate::model::{AppSpec, GpuShare, SlotId};
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

/// One instance of a slot on this node: the slot and the attempt that made it.
pub(super) type InstanceKey = (SlotId, u64);

/// One of this node's slot instances.
#[derive(Debug)]
pub(super) struct Local {
    /// The version of its app it runs.
    pub(super) version: u64,
    /// Whether it is a new version's replica on trial (`crate::rollout::on_trial`): its first
    /// failure, or its deadline passing before it is ready, fails the rollout.
    pub(super) on_trial: bool,
    /// Whether it counts in a rollout: healthy for the update's `min_healthy_ms` (at once when
    /// not on trial).
    pub(super) ready: bool,
    /// The host port it listens on, the same through every restart.
    pub(super) host_port: u16,
    /// The GPUs it holds, the same through every restart.
    pub(super) gpus: Vec<GpuShare>,
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

    /// The GPUs peers hear it holds: none once it failed for good, since placement gives
    /// them to others then.
    fn reported_gpus(&self) -> Vec<GpuShare> {
        if self.phase == Phase::Failed { Vec::new() } else { self.gpus.clone() }
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
    /// Whether it has not yet passed a probe.
    pub(super) starting: bool,
}

/// This node's slots.
#[derive(Debug, Default)]
pub(super) struct Slots {
    local: BTreeMap<InstanceKey, Local>,
    /// The last start attempt numbered, on any slot.
    starts: u64,
    /// Host ports of containers stopped after a drain, with when each is free again: a
    /// draining container still holds its port, and a new one bound there would fail to start
    /// (on trial in a rollout, failing the rollout).
    draining: Vec<(u16, Time)>,
}

impl Slots {
    /// The instances of `slot` here, oldest first.
    pub(super) fn instances<'a>(&'a self, slot: &SlotId) -> impl Iterator<Item = (&'a InstanceKey, &'a Local)> + 'a {
        self.local.range((slot.clone(), 0)..=(slot.clone(), u64::MAX))
    }

    /// The instance of `slot` at start attempt `start`, if there is one.
    pub(super) fn at(&self, slot: &SlotId, start: u64) -> Option<(&InstanceKey, &Local)> {
        self.instances(slot).find(|(_, l)| l.start == start)
    }

    fn key_at(&self, slot: &SlotId, start: u64) -> Option<InstanceKey> {
        self.at(slot, start).map(|(k, _)| k.clone())
    }

    /// Whether an instance of `slot` is at start attempt `start` and in `phase`.
    pub(super) fn is_at(&self, slot: &SlotId, start: u64, phase: Phase) -> bool {
        self.at(slot, start).is_some_and(|(_, l)| l.phase == phase)
    }

    /// The instance of `slot` whose reported container is `container`.
    pub(super) fn reporting(&self, slot: &SlotId, container: &str) -> Option<(&InstanceKey, &Local)> {
        self.instances(slot).find(|(_, l)| l.reports_container(container))
    }

    fn next_start(&mut self) -> u64 {
        self.starts += 1;
        self.starts
    }

    /// A new instance of `slot` here, of `version`, from `spec`'s health check and restart
    /// budget (the defaults when the app is gone). Returns its key.
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        now: Time,
        slot: SlotId,
        version: u64,
        (host_port, gpus): (u16, Vec<GpuShare>),
        phase: Phase,
        container: Option<String>,
        spec: Option<&AppSpec>,
    ) -> InstanceKey {
        let (health, backoff) = match spec {
            Some(s) => (HealthTracker::new(&s.health, now), Backoff::new(&s.restart)),
            None => (HealthTracker::new(&Default::default(), now), Backoff::new(&Default::default())),
        };
        let start = self.next_start();
        let container = container.map(Arc::from);
        let key = (slot, start);
        let l =
            Local { version, on_trial: false, ready: false, host_port, gpus, container, phase, health, backoff, start };
        assert!(self.local.insert(key.clone(), l).is_none(), "an instance is inserted once");
        key
    }

    /// Placement put `slot` here: an instance of `version` is claimed on `host_port`, with
    /// the GPUs placement gave it, for `settle_ms`, then started if no other node's claim won
    /// it (`Timer::Claim`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn claim(
        &mut self,
        now: Time,
        slot: SlotId,
        version: u64,
        held: (u16, Vec<GpuShare>),
        spec: Option<&AppSpec>,
        settle_ms: u64,
        out: &mut Effects,
    ) {
        let (slot, start) = self.insert(now, slot, version, held, Phase::Claimed, None, spec);
        out.schedule(now + Duration::from_millis(settle_ms), Timer::Claim { slot, start });
    }

    /// A container of `version` this node runs already (found by its labels at start-up):
    /// kept and probed, unless the slot has one of that version already or the node holds as
    /// many as it may, when it is stopped. Returns whether it was kept.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn adopt(
        &mut self,
        now: Time,
        slot: SlotId,
        version: u64,
        container: String,
        held: (u16, Vec<GpuShare>),
        spec: Option<&AppSpec>,
        out: &mut Effects,
    ) -> bool {
        assert!(container.len() <= limits::CONTAINER_ID_LEN_MAX, "container ids are bounded");
        let twin = self.instances(&slot).any(|(_, l)| l.version == version);
        if twin || self.local.len() >= limits::LOCAL_SLOTS_MAX {
            // Two containers of one version for one slot on this node (keep the first), or more
            // than a node runs.
            out.push(Action::StopContainer { container, slot, drain_ms: 0 });
            return false;
        }
        let key = self.insert(now, slot, version, held, Phase::Running, Some(container), spec);
        self.arm_health(now, &key, out);
        true
    }

    /// Asks the runtime for a container for the instance of `slot` at attempt `start`
    /// (claimed, or backing off), as `spec` says (its version is the instance's from now on);
    /// `on_trial` as `crate::rollout::on_trial` says of it, with its deadline set if so.
    pub(super) fn start(
        &mut self,
        now: Time,
        slot: &SlotId,
        start: u64,
        spec: AppSpec,
        on_trial: bool,
        out: &mut Effects,
    ) {
        let key = self.key_at(slot, start).expect("a slot is local before it starts");
        let attempt = self.next_start();
        let l = self.local.get_mut(&key).expect("found");
        assert!(matches!(l.phase, Phase::Claimed | Phase::BackingOff), "started from {:?}", l.phase);
        l.start = attempt;
        l.phase = Phase::Starting;
        l.container = None;
        l.version = spec.version;
        l.on_trial = on_trial;
        l.ready = false;
        if on_trial {
            let deadline = now + Duration::from_millis(spec.update.healthy_deadline_ms);
            out.schedule(deadline, Timer::Deadline { slot: slot.clone(), start: attempt });
        }
        // Its health tracker is made when the container runs (`started`).
        let host_port = l.host_port;
        out.event(Event::Starting { slot: slot.clone(), host_port });
        out.push(Action::StartContainer {
            slot: slot.clone(),
            app: Box::new(spec),
            host_port,
            gpus: l.gpus.clone(),
            generation: attempt,
        });
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
        let Some(key) = self.key_at(&slot, start).filter(|_| self.is_at(&slot, start, Phase::Starting)) else {
            out.push(Action::StopContainer { container, slot, drain_ms: 0 });
            return false;
        };
        // The start grace counts from here, when the container runs, not from the start
        // request: creating and starting a container can take a good part of the grace, and a
        // booting app would be restarted for it.
        let l = self.local.get_mut(&key).expect("checked");
        l.container = Some(Arc::from(container));
        l.phase = Phase::Running;
        l.health = HealthTracker::new(check, now);
        self.arm_health(now, &key, out);
        true
    }

    /// The slot and attempt of the instance running `container`, if any.
    pub(super) fn running(&self, container: &str) -> Option<(SlotId, u64)> {
        self.local
            .iter()
            .find(|(_, l)| l.container.as_deref() == Some(container))
            .map(|((s, _), l)| (s.clone(), l.start))
    }

    /// A probe's outcome for `container`: the slot, the attempt and its new health, if that
    /// changed. A slot turning healthy resets its back-off.
    pub(super) fn probed(
        &mut self,
        now: Time,
        container: &str,
        outcome: ProbeOutcome,
    ) -> Option<(SlotId, u64, HealthState)> {
        let ((slot, _), l) = self
            .local
            .iter_mut()
            .find(|(_, l)| l.phase == Phase::Running && l.container.as_deref() == Some(container))?;
        let to = l.health.record(now, outcome)?.to;
        match to {
            HealthState::Healthy => {
                l.backoff.on_healthy(now);
                // Off trial it counts at once; on trial, once `Timer::Ready` says so.
                l.ready = !l.on_trial;
            }
            _ => l.ready = false,
        }
        Some((slot.clone(), l.start, to))
    }

    /// Whether the instance of `slot` at `start` runs, healthy since at least `min_healthy_ms`
    /// before `now`, and is not yet ready: it is now. Returns whether it turned ready.
    pub(super) fn make_ready(&mut self, now: Time, slot: &SlotId, start: u64, min_healthy_ms: u64) -> bool {
        let Some(key) = self.key_at(slot, start) else { return false };
        let l = self.local.get_mut(&key).expect("found");
        let since = l.health.healthy_since().filter(|_| l.phase == Phase::Running);
        if l.ready || since.is_none_or(|t| t + Duration::from_millis(min_healthy_ms) > now) {
            return false;
        }
        l.ready = true;
        true
    }

    /// The first probe of an instance's running container, at its tracker's first probe time.
    fn arm_health(&mut self, now: Time, key: &InstanceKey, out: &mut Effects) {
        let l = &self.local[key];
        let first = l.health.next_probe_at().max(now);
        out.schedule(first, Timer::Probe { slot: key.0.clone(), start: l.start });
    }

    /// What to probe for `slot` at attempt `start`, if it still runs it, and whether its
    /// container has not yet passed a probe (it is probed sooner then).
    pub(super) fn probe_target(&self, slot: &SlotId, start: u64) -> Option<ProbeTarget> {
        let (_, l) = self.at(slot, start).filter(|(_, l)| l.phase == Phase::Running)?;
        let container = l.container.as_deref().expect("a running slot has a container").to_owned();
        // Quick probes until its first success, while no failure counted (a failing app is
        // judged at its interval, as its `failures` threshold means).
        let starting = l.health.state() == HealthState::Starting && l.health.consecutive_failures() == 0;
        Some(ProbeTarget { container, host_port: l.host_port, starting })
    }

    /// The container of `slot`'s instance at `start` failed (it exited, its start failed, or
    /// it turned unhealthy): out of every balancer at once, stopped, and started again after
    /// its back-off on the same host port, or given up past its budget, or at once when it is
    /// on trial (its rollout fails), and forgotten `cooldown_ms` later. Returns whether that
    /// instance is this node's.
    pub(super) fn fail(
        &mut self,
        now: Time,
        slot: &SlotId,
        start: u64,
        cooldown_ms: u64,
        reason: &str,
        out: &mut Effects,
    ) -> bool {
        let Some(key) = self.key_at(slot, start) else { return false };
        let attempt = self.next_start();
        let l = self.local.get_mut(&key).expect("checked");
        assert!(matches!(l.phase, Phase::Starting | Phase::Running), "failed from {:?}", l.phase);
        if let Some(container) = l.container.take() {
            out.push(Action::StopContainer { container: container.to_string(), slot: slot.clone(), drain_ms: 0 });
        }
        l.start = attempt;
        l.ready = false;
        let decision = if l.on_trial { BackoffDecision::GiveUp } else { l.backoff.on_failure(now) };
        match decision {
            BackoffDecision::RestartAt(at) => {
                l.phase = Phase::BackingOff;
                out.event(Event::Restarting { slot: slot.clone(), at });
                out.schedule(at, Timer::Restart { slot: slot.clone(), start: attempt });
            }
            BackoffDecision::GiveUp => {
                l.phase = Phase::Failed;
                if l.on_trial {
                    let (version, reason) = (l.version, reason.to_owned());
                    out.event(Event::TrialFailed { slot: slot.clone(), version, reason });
                } else {
                    out.event(Event::GaveUp { slot: slot.clone() });
                }
                let forget = now + Duration::from_millis(cooldown_ms);
                out.schedule(forget, Timer::ForgetFailure { slot: slot.clone(), start: attempt });
            }
        }
        true
    }

    /// A failed instance of `slot` at `start`, placed back here because nowhere else fits: it
    /// backs off with a fresh budget from `spec` (its old one when the app is gone), to be
    /// started at once.
    pub(super) fn retry_failed(&mut self, slot: &SlotId, start: u64, gpus: Vec<GpuShare>, spec: Option<&AppSpec>) {
        let key = self.key_at(slot, start).expect("present");
        let l = self.local.get_mut(&key).expect("found");
        assert_eq!(l.phase, Phase::Failed, "only a failed slot is retried");
        l.gpus = gpus;
        if let Some(spec) = spec {
            l.backoff = Backoff::new(&spec.restart);
        }
        l.phase = Phase::BackingOff;
    }

    /// Forgets the failure of `slot`'s instance at attempt `start`, if it is still failed;
    /// returns whether it did.
    pub(super) fn forget(&mut self, slot: &SlotId, start: u64) -> bool {
        if !self.is_at(slot, start, Phase::Failed) {
            return false;
        }
        let key = self.key_at(slot, start).expect("checked");
        self.local.remove(&key);
        true
    }

    /// Takes the instance of `slot` at `start` away from this node (placement moved, replaced
    /// or stopped it): the container, if it has one, is stopped after `drain_ms`.
    pub(super) fn stop(&mut self, now: Time, slot: &SlotId, start: u64, drain_ms: u64, out: &mut Effects) {
        let key = self.key_at(slot, start).expect("a slot is stopped while it is here");
        let l = self.local.remove(&key).expect("found");
        assert_ne!(l.phase, Phase::Failed, "a failed slot has no container to stop");
        if l.container.is_some() && drain_ms > 0 {
            let free_at = now + Duration::from_millis(drain_ms + limits::PORT_REUSE_AFTER_DRAIN_MS);
            self.draining.push((l.host_port, free_at));
        }
        if let Some(container) = l.container {
            out.push(Action::StopContainer { container: container.to_string(), slot: slot.clone(), drain_ms });
        }
    }

    /// The lowest port of `min..=max` that no slot holds and none of `published` is: every
    /// node's balancer listens on every app's published port, so a container bound there
    /// would fail to start.
    pub(super) fn free_host_port(
        &mut self,
        now: Time,
        min: u16,
        max: u16,
        published: impl Iterator<Item = u16>,
    ) -> Option<u16> {
        if self.local.len() >= limits::LOCAL_SLOTS_MAX {
            return None;
        }
        self.draining.retain(|(_, free_at)| *free_at > now);
        let mut used: BTreeSet<u16> = self.local.values().map(|l| l.host_port).collect();
        used.extend(self.draining.iter().map(|(port, _)| *port));
        used.extend(published);
        (min..=max).find(|p| !used.contains(p))
    }

    /// What placement observes of this node's slots.
    pub(super) fn observed(&self) -> Vec<ObservedContainer> {
        self.local
            .iter()
            .map(|((slot, _), l)| ObservedContainer {
                slot: slot.clone(),
                container: l.reported_container(),
                state: l.reported_state(),
                version: l.version,
                ready: l.ready,
                gpus: l.reported_gpus(),
            })
            .collect()
    }

    /// What this node's status says of its slots, by slot and version (the order the view
    /// keeps; a slot's two instances may have been made in either order).
    pub(super) fn statuses(&self) -> Vec<ContainerStatus> {
        let mut list: Vec<ContainerStatus> = self
            .local
            .iter()
            .map(|((slot, _), l)| ContainerStatus {
                slot: slot.clone(),
                container: l.reported_container(),
                host_port: l.host_port,
                state: l.reported_state(),
                version: l.version,
                ready: l.ready,
                gpus: l.reported_gpus(),
            })
            .collect();
        // Sorted by slot already; only a slot's instances may be out of version order.
        list.sort_by(|a, b| (&a.slot, a.version).cmp(&(&b.slot, b.version)));
        list
    }

    /// Each instance with its host port and reported state.
    pub(super) fn summary(&self) -> Vec<(SlotId, u16, ContainerState)> {
        self.local.iter().map(|((s, _), l)| (s.clone(), l.host_port, l.reported_state())).collect()
    }

    /// Ends the trial of `app`'s instances whose version `on_trial` no longer says is (their
    /// rollout has a verdict, or a newer version superseded theirs); failed ones stay failed.
    pub(super) fn end_trials(&mut self, app: &crate::model::AppName, on_trial: impl Fn(u64) -> bool) {
        for ((slot, _), l) in self.local.iter_mut() {
            if slot.app == *app && l.on_trial && l.phase != Phase::Failed && !on_trial(l.version) {
                l.on_trial = false;
                l.ready = l.phase == Phase::Running && l.health.state() == HealthState::Healthy;
            }
        }
    }

    /// What must hold for every slot, `ports` being the size of the node's host port range.
    pub(super) fn check_invariants(&self, ports: usize) {
        assert!(self.local.len() <= ports, "a node runs at most a slot per host port");
        assert!(self.local.len() <= limits::LOCAL_SLOTS_MAX, "a node runs a bounded number of slots");
        assert!(self.draining.len() <= 2 * limits::LOCAL_SLOTS_MAX, "draining ports are pruned");
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
        debug_assert!(
            self.local
                .values()
                .all(|l| !l.ready || (l.phase == Phase::Running && l.health.state() == HealthState::Healthy)),
            "only a healthy running instance is ready"
        );
        debug_assert!(self.local.values().all(|l| l.start <= self.starts), "start attempts are numbered in order");
    }
}
