//! Simulated Docker for one node's driver: a container starts after the scenario's start
//! latency (and its jitter), a probe is answered from the container's state (at once, or after
//! the probe's timeout for a hung one), a stop lets the container drain first. Answers wait in
//! a queue of their own until due, in the order they were given.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use canteen_core::health::ProbeOutcome;
use canteen_core::model::{AppSpec, GpuShare, SlotId};
use canteen_core::node::ContainerEvent;

use crate::world::{Input, World, container_id, container_name};

/// One node's pending answers from the simulated runtime and prober.
#[derive(Debug, Default)]
pub struct SimDocker {
    /// (due ms, order given, key into `inputs`), soonest first.
    later: BinaryHeap<Reverse<(u64, u64, usize)>>,
    inputs: BTreeMap<usize, Input>,
    given: u64,
}

impl SimDocker {
    fn answer(&mut self, at_ms: u64, input: Input) {
        self.given += 1;
        self.later.push(Reverse((at_ms, self.given, self.given as usize)));
        self.inputs.insert(self.given as usize, input);
    }

    /// Starts a container for `slot` of `app` on node `index`, listening on `host_port`: it
    /// runs after the start latency, or fails at once if the port is taken.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        w: &mut World,
        index: usize,
        now: u64,
        slot: SlotId,
        app: &AppSpec,
        (host_port, gpus): (u16, Vec<GpuShare>),
        generation: u64,
    ) {
        let sim = w.app_sim(&app.name);
        let (latency, jitter) = w.start_latency;
        let offset = if jitter == 0 { 0 } else { w.rng.below(2 * jitter + 1) };
        let ready = now + latency - jitter + offset;
        let input = match w.create_container(index, slot.clone(), (host_port, gpus), app, ready, sim) {
            Some(id) => Input::Container(ContainerEvent::Started { slot, generation, container: container_name(id) }),
            None => Input::Container(ContainerEvent::StartFailed {
                slot,
                generation,
                error: format!("host port {host_port} is taken"),
            }),
        };
        self.answer(ready, input);
    }

    /// Stops `container` after it drains for `drain_ms`.
    pub fn stop(w: &mut World, container: &str, now: u64, drain_ms: u64) {
        if let Some(id) = container_id(container) {
            w.stop_container(id, now, drain_ms);
        }
    }

    /// Probes `container`: a hung one times out after `timeout_ms`, the others answer at once
    /// (within the node's wake-up).
    pub fn probe(&mut self, w: &World, now: u64, container: String, timeout_ms: u64) {
        let (outcome, after_ms) = match container_id(&container).and_then(|id| w.containers.get(&id)) {
            Some(c) if c.removed_at_ms.is_none() && c.hung => (ProbeOutcome::Timeout, timeout_ms),
            Some(c) if c.removed_at_ms.is_none() && c.healthy_at(now) => (ProbeOutcome::Success, 0),
            _ => (ProbeOutcome::Failure, 0),
        };
        self.answer(now + after_ms, Input::Probe(container, outcome));
    }

    /// When the next answer is due.
    pub fn next_due(&self) -> Option<u64> {
        self.later.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next answer due at or before `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<Input> {
        let Reverse((at, _, key)) = *self.later.peek()?;
        if at > now {
            return None;
        }
        self.later.pop();
        Some(self.inputs.remove(&key).expect("every answer has its input"))
    }
}
