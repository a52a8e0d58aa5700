//! What a run found: checks, requests, recoveries, scale events; as a table, as JSON, and as an
//! SVG timeline.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use canteen_core::model::AppName;
use serde::Serialize;

use crate::plot::{Marker, Panel, Series, timeline_svg};
use crate::scenario::Scenario;
use crate::world::{ScaleEvent, World};

/// One check and its verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// What it checks.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was measured.
    pub detail: String,
}

impl Check {
    /// A check with its verdict.
    pub fn new(name: &str, passed: bool, detail: String) -> Check {
        Check { name: name.to_owned(), passed, detail }
    }
    /// A check that held.
    pub fn pass(name: &str, detail: String) -> Check {
        Check { name: name.to_owned(), passed: true, detail }
    }
    /// A check that failed.
    pub fn fail(name: &str, detail: String) -> Check {
        Check { name: name.to_owned(), passed: false, detail }
    }
}

/// Request figures of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Requests {
    /// All requests.
    pub total: u64,
    /// Answered.
    pub ok: u64,
    /// Refused, failed or timed out.
    pub failed: u64,
    /// `ok / total`, 1 when there were none.
    pub success_ratio: f64,
    /// Median latency of answered requests.
    pub latency_ms_p50: f64,
    /// 99th percentile latency of answered requests.
    pub latency_ms_p99: f64,
    /// Highest latency of an answered request.
    pub latency_ms_max: f64,
    /// Failures by cause.
    pub failures: BTreeMap<String, u64>,
}

impl Requests {
    /// The figures the world collected.
    pub fn from_world(w: &World) -> Requests {
        let failed: u64 = w.requests.failed.values().sum();
        let total = w.requests.ok + failed;
        Requests {
            total,
            ok: w.requests.ok,
            failed,
            success_ratio: if total == 0 { 1.0 } else { w.requests.ok as f64 / total as f64 },
            latency_ms_p50: w.requests.latency.quantile(0.5) as f64 / 1000.0,
            latency_ms_p99: w.requests.latency.quantile(0.99) as f64 / 1000.0,
            latency_ms_max: w.requests.latency.max() as f64 / 1000.0,
            failures: w.requests.failed.iter().map(|(k, v)| (format!("{k:?}"), *v)).collect(),
        }
    }
}

/// How long one fault took to recover from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recovery {
    /// The fault.
    pub fault: String,
    /// When it struck.
    pub at_s: f64,
    /// From its start (or its end, for faults with a duration) until every desired slot ran
    /// healthy with no duplicate; `None` if that never happened.
    pub recovery_s: Option<f64>,
    /// For a crashed node: from the crash until no live node believed it alive any more,
    /// sampled every check interval; `None` if that never happened or for other faults.
    pub detected_s: Option<f64>,
}

/// The outcome of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// Its file.
    pub file: String,
    /// The seed of the run.
    pub seed: u64,
    /// Whether every check held.
    pub passed: bool,
    /// How nodes learned who was alive.
    pub membership: String,
    /// The placement policy.
    pub policy: String,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Each check.
    pub checks: Vec<Check>,
    /// Request figures.
    pub requests: Requests,
    /// Each fault's recovery.
    pub recoveries: Vec<Recovery>,
    /// Slots started on another node than before.
    pub moves: u64,
    /// Replica-seconds during which a slot ran twice.
    pub duplicate_replica_s: f64,
    /// Scale decisions.
    pub scale_events: Vec<ScaleEventJson>,
    /// Simulated seconds.
    pub sim_s: f64,
    /// Wall-clock milliseconds the run took; the one figure that differs between two runs of
    /// the same seed.
    pub wall_ms: u64,
    /// Bytes of gossip each live node sent per simulated second, on average.
    pub gossip_bytes_per_node_s: f64,
    /// The same over the run's last minute (its second half if shorter): the steady state,
    /// without the cold start every node's status must reach every node in.
    pub gossip_bytes_per_node_s_last_minute: f64,
    /// Whether datagrams were sealed under a cluster key (`[sim] gossip_keys`).
    pub gossip_keys: bool,
    /// Datagrams nodes dropped unopened: no key opened them, or replays (reordered beyond
    /// `core::seal::REPLAY_WINDOW`).
    pub datagrams_refused: u64,
    /// When the fault phase ended and everything healed, in simulated seconds.
    pub heal_at_s: f64,
    /// From the heal until every live registry was identical and no slot ran twice, for good
    /// (to the end of the run); `None` if that did not hold at the end.
    pub converge_s: Option<f64>,
    /// Times a node dropped a peer from its members while the peer was up and reachable from
    /// it (see `world::FALSE_DOWN_GRACE_MS`).
    pub false_down_events: u64,
    /// Node-seconds during which such a peer was missing from the node's members.
    pub false_down_node_s: f64,
    /// The longest time one container ran orphaned (its slot not desired, or not tracked by
    /// its node's agent), sampled every check interval.
    pub orphan_s_longest: f64,
    /// Container-seconds of orphans.
    pub orphan_container_s: f64,
    /// Every rollout an operator's command started, in order.
    pub rollouts: Vec<RolloutJson>,
    /// The command that replays this run.
    pub replay: String,
}

/// A rollout in the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RolloutJson {
    /// The app.
    pub app: String,
    /// The version its containers ran.
    pub from: u64,
    /// The new version.
    pub to: u64,
    /// `completed`, `reverted` (failed, back on `from`), `failed` (no auto-revert),
    /// `superseded` (a newer version came first) or `in-progress`.
    pub outcome: &'static str,
    /// When the command made the new version.
    pub started_s: f64,
    /// When it ended: the coordinator's verdict, or for a reverted one, when every slot ran
    /// the old version again; `None` while in progress.
    pub ended_s: Option<f64>,
}

/// A scale decision in the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScaleEventJson {
    /// When.
    pub at_s: f64,
    /// The app.
    pub app: String,
    /// From.
    pub from: u32,
    /// To.
    pub to: u32,
}

impl From<ScaleEvent> for ScaleEventJson {
    fn from(e: ScaleEvent) -> Self {
        ScaleEventJson { at_s: e.at_s, app: e.app.to_string(), from: e.from, to: e.to }
    }
}

impl Report {
    /// The report as a table for people. Leaves out the wall time, so that two runs of the same
    /// seed print the same bytes.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {} ({}): {} nodes, policy {}, membership {}, {:.0} simulated s",
            self.scenario, self.file, self.nodes, self.policy, self.membership, self.sim_s
        );
        let _ = writeln!(out, "\nCHECK                    RESULT  DETAIL");
        for c in &self.checks {
            let _ = writeln!(out, "{:<24} {:<7} {}", c.name, if c.passed { "ok" } else { "FAILED" }, c.detail);
        }
        let r = &self.requests;
        let _ = writeln!(
            out,
            "\nrequests: {} total, {} ok, {} failed ({:.5} success); latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            r.total, r.ok, r.failed, r.success_ratio, r.latency_ms_p50, r.latency_ms_p99, r.latency_ms_max
        );
        if !r.failures.is_empty() {
            let causes: Vec<String> = r.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "failures: {}", causes.join(", "));
        }
        if !self.recoveries.is_empty() {
            let _ = writeln!(out, "\nFAULT                                    AT (s)   RECOVERY (s)  DETECTED (s)");
            for rec in &self.recoveries {
                let recovery = rec.recovery_s.map_or("never".to_owned(), |s| format!("{s:.1}"));
                let detected = rec.detected_s.map_or("-".to_owned(), |s| format!("{s:.1}"));
                let _ = writeln!(out, "{:<40} {:>7.1}  {recovery:<12}  {detected}", rec.fault, rec.at_s);
            }
        }
        let _ = writeln!(
            out,
            "\nmoves {}, duplicates {:.1} replica-s, scale events {}, gossip {:.0} B/node/s ({:.0} in the last minute), {}, {} datagrams refused",
            self.moves,
            self.duplicate_replica_s,
            self.scale_events.len(),
            self.gossip_bytes_per_node_s,
            self.gossip_bytes_per_node_s_last_minute,
            if self.gossip_keys { "keyed" } else { "unkeyed" },
            self.datagrams_refused
        );
        let _ = writeln!(
            out,
            "converged {} after the heal, wrongly declared down {} times ({:.1} node-s), longest orphan {:.1} s ({:.1} container-s)",
            self.converge_s.map_or("never".to_owned(), |s| format!("{s:.1} s")),
            self.false_down_events,
            self.false_down_node_s,
            self.orphan_s_longest,
            self.orphan_container_s
        );
        for e in &self.scale_events {
            let _ = writeln!(out, "  {:>7.1}s  {} {} -> {}", e.at_s, e.app, e.from, e.to);
        }
        for r in &self.rollouts {
            let ended = r.ended_s.map_or("-".to_owned(), |s| format!("{s:.1}s, took {:.1} s", s - r.started_s));
            let _ = writeln!(
                out,
                "  rollout {} v{} -> v{} at {:.1}s: {} ({ended})",
                r.app, r.from, r.to, r.started_s, r.outcome
            );
        }
        let _ = writeln!(
            out,
            "\n{}",
            if self.passed { "PASSED".to_owned() } else { format!("FAILED; replay: {}", self.replay) }
        );
        out
    }
}

/// A figure's distribution over the runs of a sweep: nearest-rank quantiles of the runs where
/// it happened, and how many runs it never happened in.
#[derive(Clone, Debug, PartialEq)]
pub struct Distribution {
    /// Runs where it happened.
    pub count: usize,
    /// Runs where it never happened (a fault never recovered, a heal never converged).
    pub never: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Highest.
    pub max: f64,
}

impl Distribution {
    /// The distribution of `values`, one per run; `None` is a run where it never happened.
    /// `None` when no run had it.
    pub fn of(values: &[Option<f64>]) -> Option<Distribution> {
        let mut seen: Vec<f64> = values.iter().flatten().copied().collect();
        if seen.is_empty() {
            return None;
        }
        seen.sort_by(f64::total_cmp);
        let rank = |q: f64| seen[((q * seen.len() as f64).ceil() as usize).clamp(1, seen.len()) - 1];
        Some(Distribution {
            count: seen.len(),
            never: values.len() - seen.len(),
            p50: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
            max: *seen.last().expect("not empty"),
        })
    }

    /// `median / p90 / p99 / max` in seconds, and how many runs it never happened in.
    pub fn describe(&self) -> String {
        let never = if self.never > 0 { format!(", never in {} runs", self.never) } else { String::new() };
        format!("{:.1} / {:.1} / {:.1} / {:.1} s{never}", self.p50, self.p90, self.p99, self.max)
    }
}

type Points = Vec<(f64, f64)>;

/// Series for the SVG timeline, sampled once a simulated second.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    title: String,
    duration_s: f64,
    /// Per app: (serving, desired) samples.
    replicas: BTreeMap<AppName, (Points, Points)>,
    requests: Vec<(f64, f64)>,
    errors: Vec<(f64, f64)>,
    p99: Vec<(f64, f64)>,
    markers: Vec<Marker>,
}

impl Timeline {
    /// An empty timeline for `scenario`, with a marker per fault.
    pub fn new(scenario: &Scenario) -> Timeline {
        Timeline {
            title: format!("{} ({})", scenario.name, scenario.file),
            duration_s: scenario.duration_s,
            markers: scenario.faults.iter().map(|f| Marker { at_s: f.at_s, label: f.describe() }).collect(),
            ..Timeline::default()
        }
    }

    /// One sample of an app's serving and desired replicas.
    pub fn replicas(&mut self, app: &AppName, t_s: f64, serving: u32, desired: u32) {
        let (s, d) = self.replicas.entry(app.clone()).or_default();
        s.push((t_s, f64::from(serving)));
        d.push((t_s, f64::from(desired)));
    }

    /// Takes the per-second request series from the world at the end of the run.
    pub fn finish(&mut self, w: &World, scenario: &Scenario) {
        self.markers.push(Marker { at_s: scenario.heal_at_s(), label: "heal".into() });
        for (second, (ok, failed, p99)) in w.requests.seconds.iter().enumerate() {
            let t = second as f64;
            self.requests.push((t, (*ok + *failed) as f64));
            self.errors.push((t, *failed as f64));
            self.p99.push((t, *p99));
        }
    }

    /// The timeline as a standalone SVG.
    pub fn to_svg(&self) -> String {
        let mut replicas = Vec::new();
        for (app, (serving, desired)) in &self.replicas {
            replicas.push(Series { name: format!("{app} serving"), points: serving.clone(), step: true });
            replicas.push(Series { name: format!("{app} desired"), points: desired.clone(), step: true });
        }
        let panels = [
            Panel { title: "replicas".into(), unit: "replicas".into(), series: replicas },
            Panel {
                title: "requests".into(),
                unit: "per s".into(),
                series: vec![
                    Series { name: "requests".into(), points: self.requests.clone(), step: false },
                    Series { name: "errors".into(), points: self.errors.clone(), step: false },
                ],
            },
            Panel {
                title: "latency".into(),
                unit: "ms".into(),
                series: vec![Series { name: "p99".into(), points: self.p99.clone(), step: false }],
            },
        ];
        timeline_svg(&self.title, &panels, &self.markers, self.duration_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_and_runs_without_the_figure_are_counted_apart() {
        let mut values: Vec<Option<f64>> = (1..=100).map(|i| Some(f64::from(i))).collect();
        values.push(None);
        let d = Distribution::of(&values).expect("some runs had it");
        assert_eq!((d.count, d.never), (100, 1));
        assert_eq!((d.p50, d.p90, d.p99, d.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(d.describe(), "50.0 / 90.0 / 99.0 / 100.0 s, never in 1 runs");
        let one = Distribution::of(&[Some(2.5)]).expect("one run");
        assert_eq!((one.p50, one.p99, one.max), (2.5, 2.5, 2.5));
        assert_eq!(Distribution::of(&[None, None]), None);
    }
}
