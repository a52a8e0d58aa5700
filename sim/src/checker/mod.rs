//! The checkers of a run: each watches one invariant or figure, sampled every
//! `check_interval_ms` from the world's ground truth, and gives its verdicts for the report.
//! One walk over the containers per sample feeds the capacity, service and orphan checkers.
//!
//! - [`capacity`]: no node over capacity.
//! - [`service`]: every desired slot served, each once; slots lost, apps fully placed, moves.
//! - [`recovery`]: each fault's recovery time, and a crash's detection.
//! - [`orphans`]: no container that no agent tracks or whose slot is not desired.
//! - [`convergence`]: registries identical and nothing duplicated after the heal.
//! - [`scaling`]: the peak of desired replicas, scale-ups and -downs, unschedulable slots.
//! - [`membership`]: wrong down declarations, agent restarts.
//! - [`requests`]: messages that did not decode, success ratio, latency.
//! - [`rollouts`]: rolling updates completed, rolled back, how long they took; the images
//!   running at the end.

pub mod capacity;
pub mod convergence;
pub mod membership;
pub mod orphans;
pub mod recovery;
pub mod requests;
pub mod rollouts;
pub mod scaling;
pub mod service;

use canteen_core::model::Resources;

use crate::report::{Check, Report, Requests, Timeline};
use crate::scenario::Scenario;
use crate::world::World;

/// Every checker of a run, and the figures the report adds to their verdicts.
#[derive(Debug)]
pub struct Checker {
    capacity: capacity::Capacity,
    service: service::Service,
    recoveries: recovery::Recoveries,
    orphans: orphans::Orphans,
    convergence: convergence::Convergence,
    scaling: scaling::Scaling,
    /// `apply` faults whose node was not running.
    lost_applies: Vec<String>,
    /// Rollouts: when a reverted one had its old version back everywhere.
    rollouts: rollouts::Rollouts,
    /// How many changes of the desired state (updates, scale decisions) the last sample saw.
    changes_seen: usize,
    /// When the last minute of the run began (the second half, for shorter runs), and the
    /// bytes every node had sent by then: the steady state's gossip, after start-up and faults.
    bytes_at_last_minute: Option<(f64, u64)>,
    timeline: Timeline,
    last_second: u64,
}

impl Checker {
    /// The checkers of a run of `scenario`.
    pub fn new(scenario: &Scenario) -> Checker {
        Checker {
            capacity: Default::default(),
            service: Default::default(),
            recoveries: Default::default(),
            orphans: Default::default(),
            convergence: Default::default(),
            scaling: Default::default(),
            rollouts: Default::default(),
            changes_seen: 0,
            lost_applies: Vec::new(),
            bytes_at_last_minute: None,
            timeline: Timeline::new(scenario),
            last_second: 0,
        }
    }

    /// An `apply` fault named a node that was not running: the command was lost.
    pub fn lost_apply(&mut self, describe: String) {
        self.lost_applies.push(describe);
    }

    /// A fault began (see [`recovery::Recoveries::fault_started`]).
    pub fn fault_started(&mut self, describe: String, at_s: f64, end_s: Option<f64>, crashed: Option<usize>) {
        self.recoveries.fault_started(describe, at_s, end_s, crashed);
    }

    /// The fault phase ended at `at_s`.
    pub fn healed_at(&mut self, at_s: f64) {
        self.convergence.healed_at(at_s);
    }

    /// One sample of the world at `now_ms`.
    pub fn sample(&mut self, now_ms: u64, w: &World, scenario: &Scenario) {
        let now_s = now_ms as f64 / 1000.0;
        let last_minute_from_s = (scenario.duration_s - 60.0).max(scenario.duration_s / 2.0);
        if self.bytes_at_last_minute.is_none() && now_s >= last_minute_from_s {
            self.bytes_at_last_minute = Some((now_s, w.nodes.iter().map(|n| n.bytes_sent).sum()));
        }
        let dt_s = scenario.sim.check_interval_ms as f64 / 1000.0;
        let desired: Vec<u32> = w.apps.iter().map(|a| w.truth.desired.get(a).copied().unwrap_or(0)).collect();
        // One walk over the containers for three checkers (each its own walk was a few
        // percent of a quiet thousand-node run): what each node's containers reserve, the
        // serving replicas by app index and slot index (containers of apps the scenario does
        // not name are not counted), the orphans.
        let mut used = vec![Resources::ZERO; w.nodes.len()];
        let mut gpus = std::collections::BTreeMap::new();
        let mut serving: Vec<Vec<u32>> = vec![Vec::new(); w.apps.len()];
        // Per slot, the version of the first serving replica seen, and how many serving
        // replicas of another version: a rolling update's new replica beside its old one is
        // no duplicate.
        let mut first_version: Vec<Vec<u64>> = vec![Vec::new(); w.apps.len()];
        let mut surge = 0u32;
        for (&id, c) in &w.containers {
            if c.removed_at_ms.is_none() {
                used[c.node] = used[c.node].saturating_add(c.resources);
                if c.stopping_at_ms.is_none() && !c.gpus.is_empty() {
                    capacity::Capacity::hold(&mut gpus, c.node, &c.gpus);
                }
            }
            if c.app < w.apps.len() && c.serving_at(now_ms, &w.nodes) {
                let counts = &mut serving[c.app];
                let versions = &mut first_version[c.app];
                let i = c.slot.index as usize;
                if counts.len() <= i {
                    counts.resize(i + 1, 0);
                    versions.resize(i + 1, u64::MAX);
                }
                counts[i] += 1;
                if versions[i] == u64::MAX {
                    versions[i] = c.version;
                } else if versions[i] != c.version {
                    surge += 1;
                }
            }
            self.orphans.sample(now_ms, dt_s, w, &desired, id, c);
        }
        self.orphans.end_sample();
        self.capacity.sample(now_s, &used, &gpus, w);
        // Changes of the desired state besides the heal: convergence is measured from the last.
        let changes = w.truth.changes_s.len() + w.truth.scale_events.len();
        if changes != self.changes_seen {
            self.changes_seen = changes;
            let last = w
                .truth
                .changes_s
                .iter()
                .chain(w.truth.scale_events.iter().map(|e| &e.at_s))
                .fold(0.0, |a: f64, b| a.max(*b));
            self.convergence.changed_at(last);
        }
        self.rollouts.sample(now_ms, w, &serving, &desired);
        let served = self.service.sample(now_s, dt_s, &serving, surge, &desired, w);
        self.recoveries.sample(now_ms, served.good, w);
        self.convergence.sample(now_s, served.good, served.duplicates, w);
        // Once a second: the plot's series.
        let second = now_ms / 1000;
        if second != self.last_second {
            self.last_second = second;
            for ((app, counts), &desired) in w.apps.iter().zip(&serving).zip(&desired) {
                self.scaling.desired(desired);
                let running = counts.iter().filter(|n| **n > 0).count() as u32;
                self.timeline.replicas(app, now_s, running, desired);
            }
        }
    }

    /// The report of the run: every checker's verdicts, in a fixed order, and the figures.
    pub fn report(&self, scenario: &Scenario, seed: u64, w: &World) -> (Report, Timeline) {
        let e = &scenario.expect;
        let end_ms = (scenario.duration_s * 1000.0) as u64;
        let serving_at_end = service::Service::serving_at_end(w, scenario);
        let recoveries = self.recoveries.recoveries();
        let requests = Requests::from_world(w);
        let mut checks: Vec<Check> = vec![
            self.capacity.check(),
            requests::wire_format_check(w),
            service::Service::lost_check(w, scenario, &serving_at_end),
        ];
        checks.extend(recovery::Recoveries::check(e, &recoveries));
        checks.extend(requests::success_check(e, &requests));
        checks.extend(self.service.duplicates_check(e));
        checks.extend(self.convergence.converged_check(e, scenario));
        checks.extend(requests::latency_check(e, &requests));
        checks.extend(self.scaling.checks(e, w, &scenario.load));
        checks.extend(service::Service::fully_placed_checks(e, w, &serving_at_end));
        checks.extend(service::Service::moves_check(e, w));
        checks.extend(self.convergence.converge_time_check(e, scenario));
        checks.extend(membership::false_down_checks(e, w, end_ms));
        checks.extend(self.orphans.check(e));
        checks.extend(membership::agent_restart_checks(w));
        checks.extend(self.rollouts.checks(e, w, end_ms));
        for refused in &w.truth.refused_commands {
            checks.push(Check::fail("commands", format!("refused: {refused}")));
        }
        for lost in &self.lost_applies {
            checks.push(Check::fail("apply", format!("{lost}: the node was not running, the command was lost")));
        }
        let up = w.nodes.iter().filter(|n| n.up).count().max(1);
        let bytes: u64 = w.nodes.iter().map(|n| n.bytes_sent).sum();
        let report = Report {
            scenario: scenario.name.clone(),
            file: scenario.file.clone(),
            seed,
            passed: checks.iter().all(|c| c.passed),
            membership: scenario.sim.membership.name().to_owned(),
            policy: scenario.cluster.policy.to_string(),
            nodes: w.nodes.len(),
            checks,
            requests,
            recoveries,
            moves: w.truth.moves,
            duplicate_replica_s: self.service.duplicate_replica_s,
            scale_events: w.truth.scale_events.iter().cloned().map(Into::into).collect(),
            sim_s: scenario.duration_s,
            wall_ms: 0,
            gossip_bytes_per_node_s: bytes as f64 / scenario.duration_s / up as f64,
            gossip_bytes_per_node_s_last_minute: self.bytes_at_last_minute.map_or(0.0, |(at_s, at_bytes)| {
                (bytes - at_bytes) as f64 / (scenario.duration_s - at_s).max(1e-3) / up as f64
            }),
            gossip_keys: w.keyring.is_some(),
            datagrams_refused: w.nodes.iter().map(|n| n.datagrams_refused).sum(),
            heal_at_s: scenario.heal_at_s(),
            converge_s: self.convergence.converge_s(),
            false_down_events: w.truth.false_down_events,
            false_down_node_s: w.false_down_node_s(end_ms),
            orphan_s_longest: self.orphans.longest.0,
            orphan_container_s: self.orphans.container_s,
            rollouts: self.rollouts.report(w),
            replay: format!("canteen-sim run {} --seed {seed}", scenario.file),
        };
        let mut timeline = self.timeline.clone();
        timeline.finish(w, scenario);
        (report, timeline)
    }
}
