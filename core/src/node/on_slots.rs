//! The facade's routing of placement and of this node's slots: when a placement pass runs and
//! how its orders are carried out, and the timers of a slot's lifecycle (probe, restart,
//! claim, forget).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::health::{HealthState, ProbeOutcome};
use crate::limits;
use crate::model::{AppName, GpuShare, HealthKind, NodeSpec, SlotId};
use crate::schedule::{Observed, ObservedContainer, place_owned};
use crate::time::Time;

use super::placement::{self, Order, Shortcut};
use super::slots::Phase;
use super::swim::MembersRead;
use super::{Action, ContainerEvent, Event, Node, Timer, Value, scaling, view};

impl Node {
    /// The placement pass requested is due.
    pub(super) fn placement_pass_due(&mut self, now: Time) {
        self.placement.fired();
        self.placement_pass(now);
    }

    /// What the container runtime reports: a start confirmed (or undone when no longer
    /// wanted), a start failed or a container exited (the slot fails), the containers found
    /// at the node's start (adopted).
    pub(super) fn container_event(&mut self, now: Time, event: ContainerEvent) {
        match event {
            ContainerEvent::Started { slot, generation, container } => {
                let version = self.slots.at(&slot, generation).map_or(0, |(_, l)| l.version);
                let check = self.instance_health(&slot.app, version).unwrap_or_default();
                if self.slots.started(now, slot, generation, container, &check, &mut self.out) {
                    // Only the container id changed, which no peer acts on: it goes out with
                    // the next change, and does not send out one held back.
                    self.hold_status(now);
                }
            }
            ContainerEvent::StartFailed { slot, generation, error } => {
                if self.slots.is_at(&slot, generation, Phase::Starting) {
                    self.fail(now, &slot, generation, &format!("its start failed: {error}"));
                }
            }
            ContainerEvent::Exited { container } => {
                if let Some((slot, start)) = self.slots.running(&container) {
                    self.fail(now, &slot, start, "its container exited");
                }
            }
            ContainerEvent::Adopted { containers } => {
                // Containers of its own, and no desired state at all: the state may be lost
                // (a wiped data directory), not empty. They are kept until a peer or the
                // operator says what the desired state is (`desired_confirmed`).
                let unknown = containers.iter().filter(|f| !self.knows_app(&f.slot.app)).count();
                if unknown > 0 && !self.registry.iter().any(|(k, _)| k.is_desired_state()) {
                    self.desired_confirmed = false;
                    self.out.event(Event::KeptUnconfirmed { containers: unknown });
                }
                // A container's GPUs, from its labels, must be GPUs this node has, held within
                // their whole: peers refuse a status that says otherwise (after the node's
                // GPUs were changed, or a label was). One that breaks it is stopped; its slot
                // is placed again.
                let mut held = vec![0u32; self.config.gpus as usize];
                for f in containers {
                    let mut with = held.clone();
                    if !GpuShare::fit_in(&f.gpus, &mut with) {
                        self.out.push(Action::StopContainer { container: f.container, slot: f.slot, drain_ms: 0 });
                        continue;
                    }
                    let spec = self.instance_spec(&f.slot.app, f.version);
                    let (slot, version, container) = (f.slot, f.version, f.container);
                    // Its GPUs count once it is kept (a twin of its slot is stopped).
                    if self.slots.adopt(
                        now,
                        slot,
                        version,
                        container,
                        (f.host_port, f.gpus),
                        spec.as_ref(),
                        &mut self.out,
                    ) {
                        held = with;
                    }
                }
                self.publish_status(now);
            }
        }
    }

    /// What a probe's outcome changes: a replica turning healthy is published (and on trial,
    /// counted once it stays healthy for its update's `min_healthy_ms`); one turning
    /// unhealthy fails.
    pub(super) fn probe_outcome(&mut self, now: Time, container: &str, outcome: ProbeOutcome) {
        let Some((slot, start, state)) = self.slots.probed(now, container, outcome) else { return };
        match state {
            HealthState::Healthy => {
                self.out.event(Event::Health { slot: slot.clone(), state });
                self.arm_ready(now, slot, start);
                self.hold_status(now);
            }
            HealthState::Unhealthy => {
                self.out.event(Event::Health { slot: slot.clone(), state });
                self.fail(now, &slot, start, "it turned unhealthy");
            }
            HealthState::Starting => {}
        }
    }

    /// A slot's back-off is over: started again, if it still backs off at that attempt.
    pub(super) fn restart(&mut self, now: Time, slot: SlotId, start: u64) {
        if self.slots.is_at(&slot, start, Phase::BackingOff) {
            self.start(now, &slot, start);
        }
    }

    /// A claim's settle is over: the slot starts if it is still claimed here.
    pub(super) fn claim_settled(&mut self, now: Time, slot: SlotId, start: u64) {
        // Facts that arrived during the settle (another node's claim, say) are looked at
        // before the start, whatever the pass throttle says.
        if self.placement.is_pending() {
            self.placement_pass(now);
        }
        // Still ours after the settle: no other claim won it.
        if self.slots.is_at(&slot, start, Phase::Claimed) {
            self.start(now, &slot, start);
        }
    }

    /// A failed slot's cooldown is over: forgotten, so placement may use this node again.
    pub(super) fn forget_failure(&mut self, now: Time, slot: SlotId, start: u64) {
        if self.slots.forget(&slot, start) {
            self.publish_status(now);
        }
    }

    /// Probes `slot`'s container if it still runs attempt `start`, and sets the next probe.
    pub(super) fn probe(&mut self, now: Time, slot: SlotId, start: u64) {
        let Some(target) = self.slots.probe_target(&slot, start) else { return };
        let version = self.slots.at(&slot, start).map_or(0, |(_, l)| l.version);
        let Some(health) = self.instance_health(&slot.app, version) else {
            if !self.desired_confirmed {
                // Kept unconfirmed (`Event::KeptUnconfirmed`): probed once its app is known.
                let next =
                    self.grid.at(now + Duration::from_millis(1), crate::model::HealthCheck::default().interval_ms);
                self.out.schedule(next, Timer::Probe { slot, start });
            }
            return;
        };
        // A replica that has not passed a probe yet is probed every `READINESS_PROBE_MS`, so
        // that it serves from its first success, not an interval later; then on the node's own
        // grid (at most an interval away), with its other periodic timers: a node's probes of
        // equal intervals go out in one wake-up, not one each.
        let next = if target.starting {
            now + Duration::from_millis(limits::READINESS_PROBE_MS.min(health.interval_ms))
        } else {
            self.grid.at(now + Duration::from_millis(1), health.interval_ms)
        };
        self.out.schedule(next, Timer::Probe { slot, start });
        if health.kind == HealthKind::None {
            // Nothing to ask: a running container passes.
            self.probe_outcome(now, &target.container, ProbeOutcome::Success);
            return;
        }
        self.out.push(Action::Probe {
            container: target.container,
            host_port: target.host_port,
            kind: health.kind,
            path: health.path,
            timeout_ms: health.timeout_ms,
        });
    }

    /// The slots this node's last placement pass could place nowhere, with the reasons.
    pub fn unschedulable(&self) -> &[(SlotId, crate::schedule::Unplaceable)] {
        self.placement.unschedulable()
    }

    /// Live node specs and what they run, as this node sees them.
    pub(super) fn facts(&self) -> (Vec<NodeSpec>, Observed) {
        let mut nodes = vec![self.config.spec()];
        // Built from a list sorted by node, all at once: a thousand inserts into the map, each
        // a walk from its root comparing names, were a tenth of a pass.
        let mut observed = Vec::with_capacity(self.members.len() + 1);
        for (node, status) in view::live_statuses(&self.registry, &self.members) {
            nodes.push(status.spec.clone());
            let containers = status
                .containers
                .iter()
                .map(|c| ObservedContainer {
                    slot: c.slot.clone(),
                    container: c.container.clone(),
                    state: c.state,
                    version: c.version,
                    ready: c.ready,
                    gpus: c.gpus.clone(),
                })
                .collect();
            observed.push((node.clone(), containers));
        }
        let me = observed.partition_point(|(node, _)| *node < self.config.id);
        observed.insert(me, (self.config.id.clone(), self.slots.observed()));
        (nodes, observed.into_iter().collect())
    }

    /// One placement pass: start what is placed here, stop what must go.
    ///
    /// A node that lacks the status of a peer it believes alive does not act: placing with a
    /// partial view would put everything on the nodes it happens to know. The pass runs again
    /// when the missing status arrives, or once it has waited `limits::STATUS_WAIT_MS` for it
    /// (`Placement::waited_out`); then it places on the nodes whose statuses it has.
    pub(super) fn placement_pass(&mut self, now: Time) {
        self.read_swim_members(now, MembersRead::Now { fingerprint: None });
        // The view is complete when every live peer's status is known: a count kept in step,
        // since a walk over the statuses for it was a tenth of a thousand-node cold start.
        let complete = self.view.is_complete(self.members.len());
        let waited_out = self.placement.waited_out(now, complete);
        // The plan depends on the facts only, and what this node does with it on its own
        // containers: when neither changed since the last pass, this pass would do nothing.
        let own = self.slots.observed();
        if let Shortcut::Unchanged { complete } = self.placement.shortcut(&own)
            && (complete || !waited_out)
        {
            if complete {
                self.update_backends();
            }
            return;
        }
        if self.placement.structure_unchanged() && self.settled() {
            // Every slot runs once and nothing that moves slots changed since the last full
            // pass: a pass would keep everything and act on nothing.
            self.placement.ran(own, true);
            self.debug_check_settled();
            self.update_backends();
            return;
        }
        // An earlier life of this node's name is alive elsewhere: this is a second agent under
        // a taken name (its driver stops it), and it places nothing meanwhile. The earlier one
        // places on, without it (`Node::name_conflicts`). Checked before the pass is recorded:
        // the conflict ending changes no fact, and the report timer asks for a pass again.
        let mine = self.own_generation();
        self.held_by_twin = self.name_conflicts().iter().any(|(_, generation)| *generation < mine);
        if self.held_by_twin {
            return;
        }
        self.placement.ran(own, complete || waited_out);
        if !complete && !waited_out {
            return;
        }
        self.placement.placing(now);
        let apps = self.apps();
        let (nodes, observed) = self.facts();
        debug_assert!(waited_out || nodes.len() == self.members.len() + 1);
        // Which versions each app's containers run as now (the specs themselves go to the plan).
        let current: BTreeMap<AppName, Vec<u64>> = apps.iter().map(|a| (a.name.clone(), a.versions_run_as())).collect();
        let paused = self.paused_apps();
        let plan = place_owned(apps, nodes, &observed, self.config.policy, paused);
        let runs_current = |slot: &SlotId, version: u64| {
            current.get(&slot.app).is_some_and(|versions| version == 0 || versions.contains(&version))
        };
        let mut orders = placement::orders(&plan, &self.config.id, &self.slots, runs_current);
        if !self.desired_confirmed {
            // Kept until the desired state is confirmed (see `Event::KeptUnconfirmed`).
            orders.retain(|o| !matches!(o, Order::Stop(slot, _) if !self.knows_app(&slot.app)));
        }
        let mut changed = false;
        for order in orders {
            changed |= self.carry_out(now, order);
        }
        let unschedulable = plan.unschedulable().iter().map(|u| (u.slot.clone(), u.reason.clone())).collect();
        self.placement.set_unschedulable(unschedulable, &mut self.out);
        if changed {
            self.publish_status(now);
        }
        self.update_backends();
    }

    /// Carries out one order of a placement pass; returns whether this node's slots changed
    /// (a claim finds no free host port when every one is taken).
    pub(super) fn carry_out(&mut self, now: Time, order: Order) -> bool {
        match order {
            Order::Stop(slot, start) => self.slots.stop(now, &slot, start, self.config.drain_ms, &mut self.out),
            Order::Claim(slot, gpus) => {
                let Some(port) = self.free_host_port(now) else { return false };
                let spec = self.effective_spec(&slot.app);
                let version = spec.as_ref().map_or(0, |s| s.version);
                let settle_ms = self.config.claim_settle_ms;
                self.slots.claim(now, slot, version, (port, gpus), spec.as_ref(), settle_ms, &mut self.out);
            }
            Order::Retry(slot, start, gpus) => {
                let spec = self.effective_spec(&slot.app);
                self.slots.retry_failed(&slot, start, gpus, spec.as_ref());
                self.start(now, &slot, start);
            }
        }
        true
    }

    /// In debug builds, checks what `settled` promises: a full pass would start and stop
    /// nothing here and report nothing unschedulable.
    pub(super) fn debug_check_settled(&self) {
        if !cfg!(debug_assertions) || !self.view.is_complete(self.members.len()) {
            return;
        }
        let (nodes, observed) = self.facts();
        let plan = place_owned(self.apps(), nodes, &observed, self.config.policy, self.paused_apps());
        let me = &self.config.id;
        assert!(plan.starts_on(me).is_empty(), "a settled view starts nothing");
        assert!(plan.unschedulable().is_empty(), "a settled view has nothing unschedulable");
        for stop in plan.stops_on(me) {
            let failed =
                self.slots.reporting(&stop.slot, &stop.container).is_some_and(|(_, l)| l.phase == Phase::Failed);
            assert!(failed, "a settled view stops nothing but records of failed slots: {stop:?}");
        }
    }

    /// Starts `slot`'s instance at attempt `start` (claimed, or backing off) as its version's
    /// spec says; a slot whose app is gone stays as it is, for the next pass to stop.
    pub(super) fn start(&mut self, now: Time, slot: &SlotId, start: u64) {
        let version = self.slots.at(slot, start).map_or(0, |(_, l)| l.version);
        let Some(spec) = self.instance_spec(&slot.app, version) else { return };
        let on_trial = self.is_on_trial(&slot.app, spec.version);
        self.slots.start(now, slot, start, spec, on_trial, &mut self.out);
    }

    /// A container failed: out of every balancer at once, stopped, and started again after its
    /// back-off on the same host port, or given up past its budget (or failed for good, on
    /// trial in a rollout, for `reason`).
    pub(super) fn fail(&mut self, now: Time, slot: &SlotId, start: u64, reason: &str) {
        if self.slots.fail(now, slot, start, self.config.failed_cooldown_ms, reason, &mut self.out) {
            self.publish_status(now);
            self.request_pass(now);
        }
    }

    /// The lowest port of the node's range that no local slot holds and no app publishes.
    pub(super) fn free_host_port(&mut self, now: Time) -> Option<u16> {
        let published = self.registry.apps().filter_map(|(_, v)| match v {
            Value::App(spec) => Some(spec.port),
            _ => None,
        });
        let (min, max) = (self.config.host_port_min, self.config.host_port_max);
        let published: Vec<u16> = published.collect();
        self.slots.free_host_port(now, min, max, published.into_iter())
    }

    /// Whether every desired slot runs exactly once in this node's view, nothing runs that is
    /// not desired, and nothing is reported unschedulable. Then, unless apps, scales,
    /// membership or node specs changed since, a placement pass keeps everything where it is
    /// and starts and stops nothing: it need not run.
    pub(super) fn settled(&self) -> bool {
        if self.placement.has_unschedulable() {
            return false;
        }
        let mut all_specs = true;
        let apps = self.registry.apps().map_while(|(name, value)| match value {
            Value::App(spec) => Some((name, scaling::replicas(&self.registry, name, spec))),
            _ => {
                all_specs = false;
                None
            }
        });
        let once = self.view.runs_each_slot_once(apps);
        once && all_specs && self.runs_current_versions()
    }
}
