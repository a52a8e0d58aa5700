//! Ground truth for the checkers: the replica counts the apps should have, scale decisions,
//! moves, slots reported unschedulable, undecodable messages, wrong down declarations and agent
//! restarts, kept as the run goes.

use std::collections::{BTreeMap, BTreeSet};

use canteen_core::model::{AppName, AppSpec, NodeId, SlotId};
use canteen_core::node::Event;
use canteen_core::rollout::Outcome;

use super::{AgentRestart, FALSE_DOWN_EXAMPLES_MAX, FALSE_DOWN_GRACE_MS, ScaleEvent, World};

/// What the checkers compare the run against.
#[derive(Debug)]
pub struct Truth {
    /// Replica counts the apps should have: the spec's, then each coordinator's decision.
    pub desired: BTreeMap<AppName, u32>,
    /// Scale decisions in order.
    pub scale_events: Vec<ScaleEvent>,
    /// The node each slot was last started on, to count moves.
    pub last_node_of_slot: BTreeMap<SlotId, usize>,
    /// Slots started on another node than their previous one.
    pub moves: u64,
    /// The latest set of unschedulable slots any node reported.
    pub unschedulable: usize,
    /// Gossip messages that did not decode, or that a node refused (`Event::Refused`).
    pub bad_messages: u64,
    /// When the partition map last changed (split or heal).
    pub partition_changed_ms: u64,
    /// Wrong down declarations still open: (observer, peer) -> since when.
    pub false_down_open: BTreeMap<(usize, usize), u64>,
    /// Wrong down declarations so far.
    pub false_down_events: u64,
    /// Milliseconds of wrong down declarations that ended.
    pub false_down_closed_ms: u64,
    /// The first few wrong down declarations, described, for the report.
    pub false_down_examples: Vec<String>,
    /// Every agent restart, in order.
    pub agent_restarts: Vec<AgentRestart>,
    /// Each app's spec as the operator last applied it (`update` faults change it).
    pub specs: BTreeMap<AppName, AppSpec>,
    /// Every rollout an operator's command started, in order.
    pub rollouts: Vec<Rollout>,
    /// When the desired state last changed, besides the heal: updates, in simulated s (scale
    /// decisions are in `scale_events`).
    pub changes_s: Vec<f64>,
    /// Commands of the scenario a node refused, described.
    pub refused_commands: Vec<String>,
}

/// One rollout, as the nodes' events tell it.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollout {
    /// The app.
    pub app: AppName,
    /// The version its containers ran.
    pub from: u64,
    /// The new one.
    pub to: u64,
    /// When the command made the new version, in simulated ms.
    pub started_ms: u64,
    /// The coordinator's verdict, when it came: when, completed or not, and the version the
    /// app went back to.
    pub verdict: Option<(u64, bool, Option<u64>)>,
    /// A newer version was applied before any verdict.
    pub superseded: bool,
}

impl World {
    /// Node `index`'s driver publishes its node's members at `now_ms`. A peer dropped while
    /// it is up and has been reachable from this node for [`FALSE_DOWN_GRACE_MS`] opens a
    /// wrong down declaration; a peer taken back closes it.
    pub fn publish_members(&mut self, index: usize, members: &BTreeSet<NodeId>, now_ms: u64) {
        let old = std::mem::take(&mut self.nodes[index].members);
        for dropped in old.difference(members) {
            let Some(&peer) = self.index_of.get(dropped) else { continue };
            let p = &self.nodes[peer];
            let since = now_ms.saturating_sub(FALSE_DOWN_GRACE_MS);
            let wrong = p.up
                && p.agent_started_ms <= since
                && self.nodes[index].agent_started_ms <= since
                && self.group[peer] == self.group[index]
                && self.truth.partition_changed_ms <= since;
            if wrong && self.truth.false_down_open.insert((index, peer), now_ms).is_none() {
                self.truth.false_down_events += 1;
                if self.truth.false_down_examples.len() < FALSE_DOWN_EXAMPLES_MAX {
                    let at = now_ms as f64 / 1000.0;
                    self.truth
                        .false_down_examples
                        .push(format!("{} dropped {} at {at:.1}s", self.nodes[index].id, p.id));
                }
            }
        }
        for added in members.difference(&old) {
            if let Some(&peer) = self.index_of.get(added)
                && let Some(since) = self.truth.false_down_open.remove(&(index, peer))
            {
                self.truth.false_down_closed_ms += now_ms - since;
            }
        }
        self.nodes[index].members = members.clone();
    }

    /// Closes the open wrong down declarations `over` says are over (observer, peer).
    pub(super) fn close_false_downs(&mut self, now_ms: u64, over: impl Fn(usize, usize) -> bool) {
        let closed: Vec<(usize, usize)> =
            self.truth.false_down_open.keys().copied().filter(|&(a, b)| over(a, b)).collect();
        for key in closed {
            let since = self.truth.false_down_open.remove(&key).expect("listed");
            self.truth.false_down_closed_ms += now_ms - since;
        }
    }

    /// Node-seconds of wrong down declarations up to `now_ms`, the open ones included.
    pub fn false_down_node_s(&self, now_ms: u64) -> f64 {
        let open: u64 = self.truth.false_down_open.values().map(|since| now_ms.saturating_sub(*since)).sum();
        (self.truth.false_down_closed_ms + open) as f64 / 1000.0
    }

    /// Keeps what the checkers need from a node's event.
    pub fn record_event(&mut self, now_ms: u64, event: Event) {
        match event {
            Event::Scaled { app, decision } => {
                self.truth.desired.insert(app.clone(), decision.to);
                self.truth.scale_events.push(ScaleEvent {
                    at_s: now_ms as f64 / 1000.0,
                    app,
                    from: decision.from,
                    to: decision.to,
                });
            }
            Event::Unschedulable { slots } => self.truth.unschedulable = slots.len(),
            Event::RolloutStarted { app, from, to } => {
                for r in self.truth.rollouts.iter_mut().filter(|r| r.app == app && r.verdict.is_none()) {
                    r.superseded = true;
                }
                self.truth.rollouts.push(Rollout {
                    app,
                    from,
                    to,
                    started_ms: now_ms,
                    verdict: None,
                    superseded: false,
                });
            }
            Event::TrialFailed { slot, version, reason } if std::env::var_os("CANTEEN_SIM_DEBUG").is_some() => {
                eprintln!("{:.1}s trial of {slot} at version {version} failed: {reason}", now_ms as f64 / 1000.0);
            }
            Event::RolloutEnded { app, version, outcome, reverted_to } => {
                // Two coordinators (either side of a partition) may both judge: the first counts.
                if let Some(r) = self.truth.rollouts.iter_mut().rfind(|r| r.app == app && r.to == version)
                    && r.verdict.is_none()
                {
                    r.verdict = Some((now_ms, outcome == Outcome::Completed, reverted_to));
                }
            }
            Event::BadMessage { from, error } => {
                if std::env::var_os("CANTEEN_SIM_BAD").is_some() {
                    eprintln!("bad message from {from:?}: {error}");
                }
                self.truth.bad_messages += 1
            }
            // No simulated node forges anything: a refusal is a bug of the sender or of the
            // checks, counted with the messages that did not decode.
            Event::Refused { from, input, reason } => {
                if std::env::var_os("CANTEEN_SIM_BAD").is_some() {
                    eprintln!("{input} refused from {from:?}: {reason}");
                }
                self.truth.bad_messages += 1
            }
            _ => {}
        }
    }
}
