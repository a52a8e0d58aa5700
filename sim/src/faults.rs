//! The fault timeline's faults, one function each: what each does to the world (the ground
//! truth) and to madsim (its nodes and network). A fault that lasts ends through
//! [`Faults::end`]; the heal ends every partition and packet loss.

use canteen_core::model::AppName;
use canteen_core::node::{Command, ContainerEvent};
use madsim::net::NetSim;
use madsim::runtime::Handle;
use madsim::task::NodeId as MadsimId;

use crate::checker::Checker;
use crate::harness::{Shared, lock};
use crate::scenario::{Fault, FaultKind, Scenario};
use crate::world::{Input, container_name};

/// What the faults act on: the world, madsim's nodes and the links clogged so far.
pub struct Faults {
    world: Shared,
    handle: Handle,
    /// Each node's madsim id, once it was spawned.
    ids: Vec<Option<MadsimId>>,
    /// Spawns node `i`'s driver as a madsim node.
    spawn: Box<dyn Fn(usize) -> MadsimId>,
    /// The links a partition clogged, both ways.
    clogged: Vec<(MadsimId, MadsimId)>,
}

impl Faults {
    /// Faults over the nodes `ids` (spawned, or `None` for the late ones), spawning late ones
    /// with `spawn`.
    pub fn new(
        world: Shared,
        handle: Handle,
        ids: Vec<Option<MadsimId>>,
        spawn: Box<dyn Fn(usize) -> MadsimId>,
    ) -> Faults {
        Faults { world, handle, ids, spawn, clogged: Vec::new() }
    }

    /// `fault` begins at `now` (ms); the checker learns of it first.
    pub fn begin(&mut self, fault: &Fault, now: u64, scenario: &Scenario, checker: &mut Checker) {
        let crashed = match &fault.kind {
            FaultKind::CrashNode { node } if lock(&self.world).nodes[*node].up => Some(*node),
            _ => None,
        };
        checker.fault_started(fault.describe(), fault.at_s, fault.end_s(), crashed);
        match &fault.kind {
            FaultKind::CrashNode { node } => self.crash_node(*node, now),
            FaultKind::RestartNode { node } => self.restart_node(*node),
            FaultKind::RestartAgent { node } => self.restart_agent(*node, now),
            FaultKind::StartNode { node } => self.start_node(*node),
            FaultKind::Apply { node, app } => {
                if !self.apply(*node, app, scenario) {
                    checker.lost_apply(fault.describe());
                }
            }
            FaultKind::KillContainer { app, slot } => self.kill_container(app, *slot),
            FaultKind::HangContainer { app, slot } => self.hang_container(app, *slot),
            FaultKind::FlapContainer { app, slot, period_ms } => {
                let until = fault.end_s().map_or(u64::MAX, |e| (e * 1000.0) as u64);
                self.flap_container(app, *slot, now, *period_ms, until);
            }
            FaultKind::SlowNode { node, factor } => lock(&self.world).nodes[*node].slow_factor = *factor,
            FaultKind::Partition { groups } => self.partition(groups, now),
            FaultKind::Heal => self.heal(now),
            FaultKind::PacketLoss { ratio } => {
                let ratio = *ratio;
                NetSim::current().update_config(|c| c.packet_loss_rate = ratio);
            }
            FaultKind::Update { node, app, image, command, env } => {
                let mut w = lock(&self.world);
                let spec = w.truth.specs.get_mut(app).expect("checked: an app of the file");
                if let Some(image) = image {
                    spec.image = image.clone();
                }
                if let Some(command) = command {
                    spec.command = command.clone();
                }
                if let Some(env) = env {
                    spec.env = env.clone();
                }
                let spec = spec.clone();
                w.truth.changes_s.push(now as f64 / 1000.0);
                if w.nodes[*node].inbox.is_none() {
                    drop(w);
                    checker.lost_apply(fault.describe());
                } else {
                    w.deliver(*node, Input::Command(Command::Apply(Box::new(spec))));
                }
            }
            FaultKind::Promote { node, app } => {
                let mut w = lock(&self.world);
                w.truth.changes_s.push(now as f64 / 1000.0);
                if w.nodes[*node].inbox.is_none() {
                    drop(w);
                    checker.lost_apply(fault.describe());
                } else {
                    w.deliver(*node, Input::Command(Command::Promote(app.clone())));
                }
            }
        }
    }

    /// `fault`, one that lasts, ends at `now`.
    pub fn end(&mut self, fault: &Fault, now: u64) {
        match &fault.kind {
            FaultKind::SlowNode { node, .. } => lock(&self.world).nodes[*node].slow_factor = 1.0,
            FaultKind::Partition { .. } | FaultKind::PacketLoss { .. } => self.heal(now),
            _ => {}
        }
    }

    /// The machine is lost: its agent, its containers, its balancers, its persisted state.
    fn crash_node(&mut self, node: usize, now: u64) {
        let mut w = lock(&self.world);
        if !w.nodes[node].up {
            return;
        }
        w.node_crashed(node, now);
        drop(w);
        self.handle.kill(self.ids[node].expect("an up node was spawned"));
    }

    /// A crashed machine boots again, empty.
    fn restart_node(&mut self, node: usize) {
        if lock(&self.world).nodes[node].up {
            return;
        }
        if let Some(id) = self.ids[node] {
            self.handle.restart(id);
        }
    }

    /// The agent dies and starts again at once; the containers keep running.
    fn restart_agent(&mut self, node: usize, now: u64) {
        let mut w = lock(&self.world);
        if !w.nodes[node].up {
            return;
        }
        w.agent_stopped(node, now);
        drop(w);
        let id = self.ids[node].expect("an up node was spawned");
        self.handle.kill(id);
        self.handle.restart(id);
    }

    /// A late node boots, cut off from the nodes of other groups if a partition is on.
    fn start_node(&mut self, node: usize) {
        if self.ids[node].is_some() {
            return;
        }
        let id = (self.spawn)(node);
        self.ids[node] = Some(id);
        let group = lock(&self.world).group.clone();
        let net = NetSim::current();
        for (other, other_id) in self.ids.iter().enumerate() {
            if let Some(other_id) = *other_id
                && group[other] != group[node]
            {
                net.clog_link(id, other_id);
                net.clog_link(other_id, id);
                self.clogged.push((id, other_id));
                self.clogged.push((other_id, id));
            }
        }
    }

    /// An operator applies `app` through `node`; returns false if the node was not running
    /// (the command is lost).
    fn apply(&mut self, node: usize, app: &AppName, scenario: &Scenario) -> bool {
        let spec = scenario.cluster.apps.iter().find(|a| a.name == *app).expect("checked: an app of the file");
        let mut w = lock(&self.world);
        if w.nodes[node].inbox.is_none() {
            return false;
        }
        w.truth.desired.insert(app.clone(), spec.replicas);
        w.deliver(node, Input::Command(Command::Apply(Box::new(spec.clone()))));
        true
    }

    /// A container exits on its own; its agent hears of it.
    fn kill_container(&mut self, app: &AppName, slot: u32) {
        let mut w = lock(&self.world);
        let Some(id) = w.container_of(app, slot) else { return };
        let c = w.containers.get_mut(&id).expect("found");
        c.exited = true;
        let node = c.node;
        w.deliver(node, Input::Container(ContainerEvent::Exited { container: container_name(id) }));
    }

    /// A container stops answering: its probes and requests time out.
    fn hang_container(&mut self, app: &AppName, slot: u32) {
        let mut w = lock(&self.world);
        if let Some(id) = w.container_of(app, slot) {
            w.containers.get_mut(&id).expect("found").hung = true;
        }
    }

    /// A container's health flaps every `period_ms` from `now` until `until` (ms).
    fn flap_container(&mut self, app: &AppName, slot: u32, now: u64, period_ms: u64, until: u64) {
        let mut w = lock(&self.world);
        if let Some(id) = w.container_of(app, slot) {
            w.containers.get_mut(&id).expect("found").flap = Some((now, period_ms, until));
        }
    }

    /// The network splits into `groups` (nodes in none form a group of their own).
    fn partition(&mut self, groups: &[Vec<usize>], now: u64) {
        let n = self.ids.len();
        let mut group = vec![groups.len(); n];
        for (g, members) in groups.iter().enumerate() {
            for &m in members {
                group[m] = g;
            }
        }
        lock(&self.world).set_groups(group.clone(), now);
        let net = NetSim::current();
        for a in 0..n {
            for b in 0..n {
                if let (Some(ida), Some(idb)) = (self.ids[a], self.ids[b])
                    && group[a] != group[b]
                {
                    net.clog_link(ida, idb);
                    self.clogged.push((ida, idb));
                }
            }
        }
    }

    /// Ends every partition and packet loss; slow nodes stay slow until their fault ends.
    pub fn heal(&mut self, now: u64) {
        let net = NetSim::current();
        for (a, b) in self.clogged.drain(..) {
            net.unclog_link(a, b);
        }
        net.update_config(|c| c.packet_loss_rate = 0.0);
        let mut w = lock(&self.world);
        if w.group.iter().any(|g| *g != 0) {
            let whole = vec![0; w.group.len()];
            w.set_groups(whole, now);
        }
    }
}
