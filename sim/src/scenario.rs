//! A scenario file: a cluster file plus a load timeline, a fault timeline, simulator options and
//! expectations. Parsed and checked here; every error names the file, the key and what is
//! allowed.

use std::collections::BTreeMap;

use canteen_core::cluster_file::{self, Cluster, FileError, RawApp, RawCluster, RawNode};
use canteen_core::model::AppName;
use serde::Deserialize;

/// How each replica of an app behaves when simulated (`[app.sim]`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSim {
    /// Mean time one request keeps a replica busy.
    #[serde(default = "default_service_time_ms")]
    pub service_time_ms: f64,
    /// Requests one replica serves at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Requests one replica queues beyond those; more are refused (503).
    #[serde(default = "default_queue_max")]
    pub queue_max: u32,
    /// Whether the app is applied (through the first node started) when the run begins; an app
    /// with `false` is applied later by a `kind = "apply"` fault.
    #[serde(default = "default_apply_at_start")]
    pub apply_at_start: bool,
}

impl Default for AppSim {
    fn default() -> Self {
        AppSim {
            service_time_ms: default_service_time_ms(),
            concurrency: default_concurrency(),
            queue_max: default_queue_max(),
            apply_at_start: default_apply_at_start(),
        }
    }
}

fn default_service_time_ms() -> f64 {
    5.0
}
fn default_concurrency() -> u32 {
    16
}
fn default_queue_max() -> u32 {
    64
}
fn default_apply_at_start() -> bool {
    true
}

/// How nodes learn who is alive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Membership {
    /// SWIM through foca, as the real agent runs it, the default: every node joins through the
    /// seeds (the first three nodes started at time 0) and learns who is down from its peers;
    /// the simulator says nothing about who is alive. A restarted node (or agent) comes back
    /// with a higher generation.
    #[default]
    Swim,
    /// The simulator tells every node who is up and reachable, at once: a perfect failure
    /// detector, no protocol at all. Only for comparing scheduling policies without detection
    /// noise; a scenario that uses it says so in its goal line.
    PerfectFailureDetector,
}

impl Membership {
    /// The name a scenario file and every report use.
    pub fn name(self) -> &'static str {
        match self {
            Membership::PerfectFailureDetector => "perfect-failure-detector",
            Membership::Swim => "swim",
        }
    }
}

/// How the containers of one image behave when simulated (`[sim.images."NAME"]`); an image
/// the scenario does not name behaves as every image did before.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSim {
    /// `false`: it runs, but never passes a health check.
    #[serde(default = "default_true")]
    pub healthy: bool,
    /// Its process exits this long after it is up, every time it is started.
    pub crash_after_s: Option<f64>,
}

fn default_true() -> bool {
    true
}

/// Simulator options (`[sim]`); every key has a default.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimOptions {
    /// How nodes learn who is alive.
    #[serde(default)]
    pub membership: Membership,
    /// Mean container start time.
    #[serde(default = "default_start_latency_ms")]
    pub start_latency_ms: u64,
    /// Start time varies uniformly by up to this much either way.
    #[serde(default = "default_start_jitter_ms")]
    pub start_jitter_ms: u64,
    /// One-way network latency between nodes: drawn in `[min, max]`.
    #[serde(default = "default_net_latency_ms_min")]
    pub net_latency_ms_min: u64,
    /// See `net_latency_ms_min`.
    #[serde(default = "default_net_latency_ms_max")]
    pub net_latency_ms_max: u64,
    /// A request to a hung replica fails after this long.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Requests are generated and routed in steps of this length.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Invariants are sampled this often.
    #[serde(default = "default_check_interval_ms")]
    pub check_interval_ms: u64,
    /// When the fault phase ends and everything heals; by default once the last fault is over.
    pub heal_at_s: Option<f64>,
    /// Nodes (by index) that are not started at time 0: each boots at its `kind = "start-node"`
    /// fault and joins the running cluster.
    #[serde(default)]
    pub late_nodes: Vec<usize>,
    /// Whether an agent that starts adopts the containers it finds running on its node, as the
    /// real agent does. `false` shows what adoption prevents (duplicates, orphans); the tests
    /// use it to prove that the checks catch them.
    #[serde(default = "default_adopt")]
    pub adopt: bool,
    /// Whether nodes seal every datagram under a cluster key, as the real agent does off
    /// loopback (`core::seal`). `false` measures what sealing costs.
    #[serde(default = "default_gossip_keys")]
    pub gossip_keys: bool,
    /// Images that behave otherwise, by image name.
    #[serde(default)]
    pub images: BTreeMap<String, ImageSim>,
    /// The nodes started at time 0 boot at random offsets within this many milliseconds
    /// (drawn from the seed), as the agents of a real cluster start at different times; the
    /// apps are applied once all have. 0 (the default): all boot at once, so every node's
    /// periodic timers (SWIM's announce to down members every 2 s among them) run in phase
    /// with the others' and with the scenario's round fault times, and a heal's convergence
    /// depends on where the heal falls in that period (the lab showed it: benches/README.md).
    #[serde(default)]
    pub boot_spread_ms: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        toml::from_str("").expect("every key has a default")
    }
}

fn default_gossip_keys() -> bool {
    true
}
fn default_start_latency_ms() -> u64 {
    500
}
fn default_start_jitter_ms() -> u64 {
    200
}
fn default_net_latency_ms_min() -> u64 {
    1
}
fn default_net_latency_ms_max() -> u64 {
    5
}
fn default_request_timeout_ms() -> u64 {
    5000
}
fn default_tick_ms() -> u64 {
    10
}
fn default_check_interval_ms() -> u64 {
    100
}
fn default_adopt() -> bool {
    true
}

/// One step of the load timeline: from `at_s` on, `app` receives `rps` requests per second.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadStep {
    /// The app.
    pub app: String,
    /// From when, in simulated seconds.
    pub at_s: f64,
    /// Requests per second.
    pub rps: f64,
}

/// A fault's kind, with what each needs.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// The node stops at once: its agent and containers are gone.
    CrashNode {
        /// Node index.
        node: usize,
    },
    /// A crashed node boots again, empty (a replaced machine: no containers, no saved state).
    RestartNode {
        /// Node index.
        node: usize,
    },
    /// The node's agent process dies and starts again at once, while its containers keep
    /// running: the new agent restores the apps it had saved (those applied through it, as the
    /// real agent keeps them in its `data_dir`) and adopts the node's running containers, and
    /// joins SWIM under a higher generation.
    RestartAgent {
        /// Node index.
        node: usize,
    },
    /// A node of `[sim] late_nodes` boots for the first time and joins the running cluster.
    StartNode {
        /// Node index.
        node: usize,
    },
    /// An operator applies an app (one marked `[app.sim] apply_at_start = false`) through
    /// one node.
    Apply {
        /// The node the command goes to.
        node: usize,
        /// The app.
        app: AppName,
    },
    /// A replica's process exits.
    KillContainer {
        /// The app.
        app: AppName,
        /// The slot index.
        slot: u32,
    },
    /// A replica stops answering: probes time out, requests never complete.
    HangContainer {
        /// The app.
        app: AppName,
        /// The slot index.
        slot: u32,
    },
    /// A replica's health check flaps: failing for `period_ms`, passing for `period_ms`, ...
    FlapContainer {
        /// The app.
        app: AppName,
        /// The slot index.
        slot: u32,
        /// Half the flap cycle.
        period_ms: u64,
    },
    /// A node's containers serve `factor` times slower.
    SlowNode {
        /// Node index.
        node: usize,
        /// Service time multiplier.
        factor: f64,
    },
    /// The network splits into groups of node indexes; nodes in no group form one more group.
    Partition {
        /// The groups.
        groups: Vec<Vec<usize>>,
    },
    /// Every partition and every packet-loss setting ends.
    Heal,
    /// Each datagram is lost with this probability.
    PacketLoss {
        /// In [0, 1).
        ratio: f64,
    },
    /// An operator applies a new version of an app through one node: its spec as last
    /// applied, with what the fault gives changed.
    Update {
        /// The node the command goes to.
        node: usize,
        /// The app.
        app: AppName,
        /// A new image.
        image: Option<String>,
        /// A new command.
        command: Option<Vec<String>>,
        /// A new environment.
        env: Option<BTreeMap<String, String>>,
    },
    /// An operator promotes an app's canaries through one node (`canteen promote`).
    Promote {
        /// The node the command goes to.
        node: usize,
        /// The app.
        app: AppName,
    },
}

/// One fault of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// When, in simulated seconds.
    pub at_s: f64,
    /// What.
    pub kind: FaultKind,
    /// For faults that can end by themselves (slow-node, partition, packet-loss, flap): how long.
    pub duration_s: Option<f64>,
}

impl Fault {
    /// A one-line description, as the report and the plot show it.
    pub fn describe(&self) -> String {
        match &self.kind {
            FaultKind::CrashNode { node } => format!("crash-node {node}"),
            FaultKind::RestartNode { node } => format!("restart-node {node}"),
            FaultKind::RestartAgent { node } => format!("restart-agent {node}"),
            FaultKind::StartNode { node } => format!("start-node {node}"),
            FaultKind::Apply { node, app } => format!("apply {app} through {node}"),
            FaultKind::KillContainer { app, slot } => format!("kill-container {app}/{slot}"),
            FaultKind::HangContainer { app, slot } => format!("hang-container {app}/{slot}"),
            FaultKind::FlapContainer { app, slot, .. } => format!("flap-container {app}/{slot}"),
            FaultKind::SlowNode { node, factor } => format!("slow-node {node} x{factor}"),
            FaultKind::Partition { groups } => format!("partition {groups:?}"),
            FaultKind::Heal => "heal".to_owned(),
            FaultKind::PacketLoss { ratio } => format!("packet-loss {ratio}"),
            FaultKind::Update { node, app, image, .. } => match image {
                Some(image) => format!("update {app} to {image} through {node}"),
                None => format!("update {app} through {node}"),
            },
            FaultKind::Promote { node, app } => format!("promote {app} through {node}"),
        }
    }

    /// When the fault ends by itself, if it does.
    pub fn end_s(&self) -> Option<f64> {
        self.duration_s.map(|d| self.at_s + d)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at_s: f64,
    kind: String,
    node: Option<usize>,
    app: Option<String>,
    slot: Option<u32>,
    groups: Option<Vec<Vec<usize>>>,
    ratio: Option<f64>,
    factor: Option<f64>,
    duration_s: Option<f64>,
    period_ms: Option<u64>,
    image: Option<String>,
    command: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
}

/// What must hold for the scenario to pass (`[expect]`); an absent key is not checked.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Every fault recovered within this (all desired slots healthy, no duplicates).
    pub recovery_s_max: Option<f64>,
    /// Successful requests over all requests.
    pub success_ratio_min: Option<f64>,
    /// Replica-seconds of duplicates (a slot running twice).
    pub duplicate_replica_s_max: Option<f64>,
    /// After the heal, every desired slot runs healthy, no duplicates, registries agree: within
    /// `converge_s_max` if given, else within `recovery_s_max`.
    #[serde(default)]
    pub converged: bool,
    /// 99th percentile latency of successful requests.
    pub latency_ms_p99_max: Option<f64>,
    /// The highest replica count of any autoscaled app reached at least this.
    pub replicas_peak_min: Option<u32>,
    /// With `replicas_peak_min`: from the load step that raised an app's rate the most, the
    /// autoscaler asks for that many replicas within this many seconds.
    pub scale_up_s_max: Option<f64>,
    /// Scale-downs over the whole run, at most (no flapping).
    pub scale_downs_max: Option<u32>,
    /// Scale-ups over the whole run, at least.
    pub scale_ups_min: Option<u32>,
    /// At the end, at least this many slots are reported unschedulable.
    pub unschedulable_min: Option<u32>,
    /// At the end, every slot of these apps runs healthy.
    #[serde(default)]
    pub fully_placed: Vec<String>,
    /// Slots moved to another node, at most.
    pub moves_max: Option<u64>,
    /// No container stays orphaned longer than this: running on a live node while its slot is
    /// not desired, or while its node's agent does not track it (does not list it in its
    /// status).
    pub orphan_s_max: Option<f64>,
    /// Wrongly declared down, at most this many times: a node drops a peer from its members
    /// while that peer is up and reachable from it (and was for the previous
    /// `FALSE_DOWN_GRACE_MS`, so suspicions begun during a partition or a restart do not
    /// count). Counted at every change of a node's view, not sampled.
    pub false_down_max: Option<u64>,
    /// Node-seconds during which a node missed a peer it had wrongly declared down, at most.
    pub false_down_node_s_max: Option<f64>,
    /// After the heal, within this many seconds every live node's registry is identical and no
    /// slot runs twice, and it stays so to the end.
    pub converge_s_max: Option<f64>,
    /// Rollouts that completed (every slot on the new version), at least.
    pub rollouts_completed_min: Option<u32>,
    /// Rollouts that failed and went back to the previous version, at least.
    pub rollbacks_min: Option<u32>,
    /// The same, at most.
    pub rollbacks_max: Option<u32>,
    /// Each completed rollout took at most this, from the update to its last slot replaced.
    pub rollout_s_max: Option<f64>,
    /// At the end, every replica of each app runs the given image.
    #[serde(default)]
    pub images_at_end: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default = "default_seed")]
    seed: u64,
    duration_s: f64,
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    node: Vec<RawNode>,
    #[serde(default)]
    app: Vec<RawApp>,
    #[serde(default)]
    sim: Option<SimOptions>,
    #[serde(default)]
    load: Vec<LoadStep>,
    #[serde(default)]
    fault: Vec<RawFault>,
    #[serde(default)]
    expect: Expect,
}

fn default_seed() -> u64 {
    1
}

/// A checked scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The file it came from, as given.
    pub file: String,
    /// Its name.
    pub name: String,
    /// The seed in the file; `--seed` overrides it.
    pub seed: u64,
    /// Simulated length of the run.
    pub duration_s: f64,
    /// Nodes, apps, policy.
    pub cluster: Cluster,
    /// How each app's replicas behave, by app name.
    pub app_sim: BTreeMap<AppName, AppSim>,
    /// Simulator options.
    pub sim: SimOptions,
    /// The load timeline, sorted by time.
    pub load: Vec<LoadStep>,
    /// The fault timeline, sorted by time.
    pub faults: Vec<Fault>,
    /// What must hold.
    pub expect: Expect,
}

/// One step of a run's fault timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Fault `i` (of [`Scenario::faults`]) begins.
    Begin(usize),
    /// Lasting fault `i` ends by itself.
    End(usize),
    /// Every fault ends: the heal, after which convergence is measured.
    Heal,
}

impl Scenario {
    /// The fault timeline as every driver runs it, with when each step is due: each fault's
    /// begin, and end for those that last, by time and then by fault, and the heal once, before
    /// the first step due after it (or last).
    pub fn timeline(&self) -> Vec<(f64, Step)> {
        let mut steps: Vec<(f64, usize, Step)> = Vec::new();
        for (i, f) in self.faults.iter().enumerate() {
            steps.push((f.at_s, i, Step::Begin(i)));
            if let Some(end) = f.end_s() {
                steps.push((end, i, Step::End(i)));
            }
        }
        steps.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let heal_at = self.heal_at_s();
        let heal = steps.iter().position(|(at, _, _)| *at > heal_at).unwrap_or(steps.len());
        steps.insert(heal, (heal_at, usize::MAX, Step::Heal));
        steps.into_iter().map(|(at, _, step)| (at, step)).collect()
    }

    /// When the fault phase ends and the simulator heals everything.
    pub fn heal_at_s(&self) -> f64 {
        self.sim
            .heal_at_s
            .unwrap_or_else(|| self.faults.iter().map(|f| f.end_s().unwrap_or(f.at_s)).fold(0.0, f64::max))
    }
}

/// Parses and checks a scenario file's text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Scenario, FileError> {
    let raw: RawScenario = toml::from_str(text).map_err(|e| FileError::from_toml(file, text, &e))?;
    let err = |key: String, message: String| FileError::new(file, key, message);
    let cluster = cluster_file::build(file, &raw.cluster, &raw.node, &raw.app)?;
    if !(raw.duration_s > 0.0 && raw.duration_s <= MAX_DURATION_S) {
        return Err(err("duration_s".into(), format!("must be in (0, {MAX_DURATION_S}], got {}", raw.duration_s)));
    }
    if raw.name.trim().is_empty() {
        return Err(err("name".into(), "must not be empty".into()));
    }
    let mut app_sim = BTreeMap::new();
    for (i, app) in raw.app.iter().enumerate() {
        let sim = match &app.sim {
            None => AppSim::default(),
            Some(table) => AppSim::deserialize(toml::Value::Table(table.clone()))
                .map_err(|e| err(format!("app[{i}].sim"), e.message().to_owned()))?,
        };
        if !(sim.service_time_ms > 0.0 && sim.service_time_ms.is_finite()) {
            return Err(err(format!("app[{i}].sim.service_time_ms"), "must be greater than 0".into()));
        }
        if sim.concurrency == 0 || sim.concurrency > 100_000 {
            return Err(err(format!("app[{i}].sim.concurrency"), "must be in 1..=100000".into()));
        }
        app_sim.insert(cluster.apps[i].name.clone(), sim);
    }
    let sim = raw.sim.unwrap_or_default();
    if sim.net_latency_ms_min > sim.net_latency_ms_max {
        return Err(err("sim.net_latency_ms_min".into(), "must not exceed sim.net_latency_ms_max".into()));
    }
    if sim.tick_ms == 0 || sim.tick_ms > 1000 {
        return Err(err("sim.tick_ms".into(), "must be in 1..=1000".into()));
    }
    if sim.check_interval_ms == 0 {
        return Err(err("sim.check_interval_ms".into(), "must be greater than 0".into()));
    }
    if sim.boot_spread_ms > BOOT_SPREAD_MS_MAX {
        return Err(err(
            "sim.boot_spread_ms".into(),
            format!("must be at most {BOOT_SPREAD_MS_MAX} (a minute), got {}", sim.boot_spread_ms),
        ));
    }
    if sim.start_jitter_ms > sim.start_latency_ms {
        return Err(err("sim.start_jitter_ms".into(), "must not exceed sim.start_latency_ms".into()));
    }
    let nodes = cluster.nodes.len();
    let mut late = vec![false; nodes];
    for (i, &n) in sim.late_nodes.iter().enumerate() {
        if n >= nodes {
            return Err(err(
                format!("sim.late_nodes[{i}]"),
                format!("node index {n} is out of range: the cluster has nodes 0..{}", nodes - 1),
            ));
        }
        if std::mem::replace(&mut late[n], true) {
            return Err(err(format!("sim.late_nodes[{i}]"), format!("node {n} is listed twice")));
        }
    }
    if late.iter().all(|l| *l) {
        return Err(err("sim.late_nodes".into(), "at least one node must start at time 0".into()));
    }
    let app_names: Vec<&str> = cluster.apps.iter().map(|a| a.name.as_str()).collect();
    let mut load = raw.load.clone();
    for (i, step) in load.iter().enumerate() {
        if !app_names.contains(&step.app.as_str()) {
            return Err(err(
                format!("load[{i}].app"),
                format!("{:?} is not an app of this scenario; apps: {}", step.app, app_names.join(", ")),
            ));
        }
        if !(step.at_s >= 0.0 && step.at_s <= raw.duration_s) {
            return Err(err(format!("load[{i}].at_s"), format!("must be in [0, duration_s = {}]", raw.duration_s)));
        }
        if !(step.rps >= 0.0 && step.rps <= MAX_RPS) {
            return Err(err(format!("load[{i}].rps"), format!("must be in [0, {MAX_RPS}]")));
        }
    }
    load.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let later: Vec<&str> =
        cluster.apps.iter().filter(|a| !app_sim[&a.name].apply_at_start).map(|a| a.name.as_str()).collect();
    let context = FaultContext { nodes, late: &late, apps: &app_names, later: &later, duration_s: raw.duration_s };
    let mut faults = Vec::new();
    for (i, f) in raw.fault.iter().enumerate() {
        faults.push(fault(f, &context).map_err(|(k, m)| err(format!("fault[{i}].{k}"), m))?);
    }
    // A late node starts once, and an app applied later is applied once.
    let mut started = vec![None; nodes];
    let mut applied: BTreeMap<&AppName, usize> = BTreeMap::new();
    for (i, f) in faults.iter().enumerate() {
        match &f.kind {
            FaultKind::StartNode { node } => {
                if let Some(first) = started[*node].replace(i) {
                    return Err(err(
                        format!("fault[{i}].node"),
                        format!("node {node} is started by fault[{first}] already"),
                    ));
                }
            }
            FaultKind::Apply { app, .. } => {
                if let Some(first) = applied.insert(app, i) {
                    return Err(err(
                        format!("fault[{i}].app"),
                        format!("{app:?} is applied by fault[{first}] already"),
                    ));
                }
            }
            _ => {}
        }
    }
    for (i, app) in cluster.apps.iter().enumerate() {
        if !app_sim[&app.name].apply_at_start && !applied.contains_key(&app.name) {
            return Err(err(
                format!("app[{i}].sim.apply_at_start"),
                format!("{:?} is never applied: add a fault with kind = \"apply\" and app = {:?}", app.name, app.name),
            ));
        }
    }
    faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    for (i, name) in raw.expect.fully_placed.iter().enumerate() {
        if !app_names.contains(&name.as_str()) {
            return Err(err(format!("expect.fully_placed[{i}]"), format!("{name:?} is not an app of this scenario")));
        }
    }
    for name in raw.expect.images_at_end.keys() {
        if !app_names.contains(&name.as_str()) {
            return Err(err(
                format!("expect.images_at_end.{name}"),
                format!("{name:?} is not an app of this scenario; apps: {}", app_names.join(", ")),
            ));
        }
    }
    for (name, image) in &sim.images {
        if let Some(s) = image.crash_after_s
            && !(s > 0.0 && s.is_finite())
        {
            return Err(err(
                format!("sim.images.{name}.crash_after_s"),
                format!("must be a number of seconds > 0, got {s}"),
            ));
        }
    }
    if let Some(r) = raw.expect.success_ratio_min
        && !(0.0..=1.0).contains(&r)
    {
        return Err(err("expect.success_ratio_min".into(), "must be in [0, 1]".into()));
    }
    let seconds = [
        ("expect.orphan_s_max", raw.expect.orphan_s_max),
        ("expect.false_down_node_s_max", raw.expect.false_down_node_s_max),
        ("expect.converge_s_max", raw.expect.converge_s_max),
        ("expect.recovery_s_max", raw.expect.recovery_s_max),
        ("expect.rollout_s_max", raw.expect.rollout_s_max),
        ("expect.scale_up_s_max", raw.expect.scale_up_s_max),
    ];
    for (key, value) in seconds {
        if let Some(v) = value
            && !(v >= 0.0 && v.is_finite())
        {
            return Err(err(key.into(), format!("must be a number of seconds >= 0, got {v}")));
        }
    }
    Ok(Scenario {
        file: file.to_owned(),
        name: raw.name,
        seed: raw.seed,
        duration_s: raw.duration_s,
        cluster,
        app_sim,
        sim,
        load,
        faults,
        expect: raw.expect,
    })
}

/// Longest simulated run: one day.
pub const MAX_DURATION_S: f64 = 86_400.0;
/// Highest request rate of one app.
pub const MAX_RPS: f64 = 1_000_000.0;
/// Largest `[sim] boot_spread_ms`.
pub const BOOT_SPREAD_MS_MAX: u64 = 60_000;

const FAULT_KINDS: &str = "crash-node, restart-node, restart-agent, start-node, apply, update, promote, kill-container, hang-container, flap-container, slow-node, partition, heal, packet-loss";

/// What a fault is checked against.
struct FaultContext<'a> {
    nodes: usize,
    /// Whether each node is in `[sim] late_nodes`.
    late: &'a [bool],
    apps: &'a [&'a str],
    /// The apps marked `[app.sim] apply_at_start = false`.
    later: &'a [&'a str],
    duration_s: f64,
}

fn fault(f: &RawFault, cx: &FaultContext) -> Result<Fault, (&'static str, String)> {
    let (nodes, apps, duration_s) = (cx.nodes, cx.apps, cx.duration_s);
    if !(f.at_s >= 0.0 && f.at_s <= duration_s) {
        return Err(("at_s", format!("must be in [0, duration_s = {duration_s}]")));
    }
    let node = || match f.node {
        Some(n) if n < nodes => Ok(n),
        Some(n) => Err(("node", format!("node index {n} is out of range: the cluster has nodes 0..{}", nodes - 1))),
        None => Err(("node", format!("kind {:?} needs `node`, a node index", f.kind))),
    };
    let app_slot = || -> Result<(AppName, u32), (&'static str, String)> {
        let app = f.app.as_deref().ok_or(("app", format!("kind {:?} needs `app`", f.kind)))?;
        if !apps.contains(&app) {
            return Err(("app", format!("{app:?} is not an app of this scenario; apps: {}", apps.join(", "))));
        }
        Ok((AppName::new(app), f.slot.unwrap_or(0)))
    };
    let kind = match f.kind.as_str() {
        "crash-node" => FaultKind::CrashNode { node: node()? },
        "restart-node" => FaultKind::RestartNode { node: node()? },
        "restart-agent" => FaultKind::RestartAgent { node: node()? },
        "start-node" => {
            let node = node()?;
            if !cx.late[node] {
                let late: Vec<String> = (0..nodes).filter(|n| cx.late[*n]).map(|n| n.to_string()).collect();
                return Err((
                    "node",
                    format!(
                        "node {node} starts at time 0; start-node takes a node of [sim] late_nodes ({})",
                        if late.is_empty() { "none given".to_owned() } else { late.join(", ") }
                    ),
                ));
            }
            FaultKind::StartNode { node }
        }
        "apply" => {
            let node = node()?;
            let app = f.app.as_deref().ok_or(("app", "kind \"apply\" needs `app`, the app to apply".to_owned()))?;
            if !apps.contains(&app) {
                return Err(("app", format!("{app:?} is not an app of this scenario; apps: {}", apps.join(", "))));
            }
            if !cx.later.contains(&app) {
                return Err((
                    "app",
                    format!(
                        "{app:?} is applied at start; mark it [app.sim] apply_at_start = false to apply it with this fault (apps applied later: {})",
                        if cx.later.is_empty() { "none".to_owned() } else { cx.later.join(", ") }
                    ),
                ));
            }
            FaultKind::Apply { node, app: AppName::new(app) }
        }
        "update" => {
            let node = node()?;
            let (app, _) = app_slot()?;
            if f.image.is_none() && f.command.is_none() && f.env.is_none() {
                return Err(("image", "kind \"update\" needs at least one of `image`, `command`, `env`".into()));
            }
            if f.image.as_ref().is_some_and(|i| i.trim().is_empty()) {
                return Err(("image", "must not be empty".into()));
            }
            FaultKind::Update { node, app, image: f.image.clone(), command: f.command.clone(), env: f.env.clone() }
        }
        "promote" => {
            let node = node()?;
            let (app, _) = app_slot()?;
            FaultKind::Promote { node, app }
        }
        "kill-container" => {
            let (app, slot) = app_slot()?;
            FaultKind::KillContainer { app, slot }
        }
        "hang-container" => {
            let (app, slot) = app_slot()?;
            FaultKind::HangContainer { app, slot }
        }
        "flap-container" => {
            let (app, slot) = app_slot()?;
            let period_ms = f.period_ms.unwrap_or(2000);
            if period_ms == 0 {
                return Err(("period_ms", "must be greater than 0".into()));
            }
            FaultKind::FlapContainer { app, slot, period_ms }
        }
        "slow-node" => {
            let factor = f.factor.ok_or(("factor", "slow-node needs `factor`, a multiplier >= 1".to_owned()))?;
            if !(1.0..=1000.0).contains(&factor) {
                return Err(("factor", "must be in [1, 1000]".into()));
            }
            FaultKind::SlowNode { node: node()?, factor }
        }
        "partition" => {
            let groups =
                f.groups.clone().ok_or(("groups", "partition needs `groups`, lists of node indexes".to_owned()))?;
            let mut seen = vec![false; nodes];
            for g in &groups {
                for &n in g {
                    if n >= nodes {
                        return Err((
                            "groups",
                            format!("node index {n} is out of range: the cluster has nodes 0..{}", nodes - 1),
                        ));
                    }
                    if std::mem::replace(&mut seen[n], true) {
                        return Err(("groups", format!("node {n} is in two groups")));
                    }
                }
            }
            FaultKind::Partition { groups }
        }
        "heal" => FaultKind::Heal,
        "packet-loss" => {
            let ratio = f.ratio.ok_or(("ratio", "packet-loss needs `ratio` in [0, 1)".to_owned()))?;
            if !(0.0..1.0).contains(&ratio) {
                return Err(("ratio", "must be in [0, 1)".into()));
            }
            FaultKind::PacketLoss { ratio }
        }
        other => return Err(("kind", format!("unknown fault kind {other:?}; allowed: {FAULT_KINDS}"))),
    };
    if let Some(d) = f.duration_s
        && d.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
    {
        return Err(("duration_s", "must be greater than 0".into()));
    }
    Ok(Fault { at_s: f.at_s, kind, duration_s: f.duration_s })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "name = \"t\"\nduration_s = 60\n[cluster]\nnodes = 3\n[[app]]\nname = \"web\"\nimage = \"x\"\nport = 80\n";

    #[test]
    fn a_minimal_scenario_takes_every_default() {
        let s = parse("t.toml", BASE).unwrap();
        assert_eq!(s.seed, 1);
        assert_eq!(s.sim.start_latency_ms, 500);
        assert_eq!(s.app_sim[&AppName::new("web")], AppSim::default());
    }

    #[test]
    fn the_timeline_orders_begins_and_ends_by_time_and_heals_once_before_what_follows() {
        let faults = "[[fault]]\nat_s = 20\nkind = \"partition\"\ngroups = [[0]]\nduration_s = 10\n\
                      [[fault]]\nat_s = 10\nkind = \"crash-node\"\nnode = 1\n\
                      [[fault]]\nat_s = 20\nkind = \"packet-loss\"\nratio = 0.1\nduration_s = 5\n";
        let s = parse("t.toml", &format!("{BASE}{faults}")).unwrap();
        // Sorted by time: crash (10), partition (20), loss (20), loss ends (25), partition ends (30).
        let t: Vec<(f64, Step)> = s.timeline();
        assert_eq!(
            t,
            vec![
                (10.0, Step::Begin(0)),
                (20.0, Step::Begin(1)),
                (20.0, Step::Begin(2)),
                (25.0, Step::End(2)),
                (30.0, Step::End(1)),
                (30.0, Step::Heal),
            ]
        );
        let early = parse("t.toml", &format!("{BASE}[sim]\nheal_at_s = 22\n{faults}")).unwrap();
        let heal = early.timeline().iter().position(|(_, step)| *step == Step::Heal).unwrap();
        assert_eq!(early.timeline()[heal], (22.0, Step::Heal));
        assert_eq!(early.timeline()[heal + 1], (25.0, Step::End(2)), "the heal comes before what follows it");
        assert_eq!(parse("t.toml", BASE).unwrap().timeline(), vec![(0.0, Step::Heal)]);
    }

    #[test]
    fn boots_are_spread_only_when_asked_and_within_a_minute() {
        assert_eq!(parse("t.toml", BASE).unwrap().sim.boot_spread_ms, 0);
        let s = parse("t.toml", &format!("{BASE}[sim]\nboot_spread_ms = 2000\n")).unwrap();
        assert_eq!(s.sim.boot_spread_ms, 2000);
        let e = parse("t.toml", &format!("{BASE}[sim]\nboot_spread_ms = 60001\n")).unwrap_err();
        assert_eq!(e.key, "sim.boot_spread_ms");
        assert!(e.message.contains("60000"), "{}", e.message);
    }

    #[test]
    fn bad_faults_name_the_key_and_what_is_allowed() {
        let cases = [
            ("[[fault]]\nat_s = 1\nkind = \"explode\"\n", "fault[0].kind", "allowed: crash-node"),
            ("[[fault]]\nat_s = 1\nkind = \"crash-node\"\nnode = 9\n", "fault[0].node", "0..2"),
            ("[[fault]]\nat_s = 1\nkind = \"kill-container\"\napp = \"api\"\n", "fault[0].app", "apps: web"),
            ("[[fault]]\nat_s = 99\nkind = \"heal\"\n", "fault[0].at_s", "duration_s = 60"),
            ("[[fault]]\nat_s = 1\nkind = \"packet-loss\"\nratio = 1.5\n", "fault[0].ratio", "[0, 1)"),
            ("[[fault]]\nat_s = 1\nkind = \"partition\"\ngroups = [[0], [0, 1]]\n", "fault[0].groups", "two groups"),
            ("[[load]]\napp = \"db\"\nat_s = 0\nrps = 5\n", "load[0].app", "apps: web"),
            ("[app.sim]\nconcurrency = 0\n", "app[0].sim.concurrency", "1..=100000"),
            ("[app.sim]\nspeed = 1\n", "app[0].sim", "unknown field"),
        ];
        for (extra, key, allowed) in cases {
            let e = parse("t.toml", &format!("{BASE}{extra}")).unwrap_err();
            assert_eq!(e.key, key, "{extra}");
            assert!(e.message.contains(allowed), "{extra}: {}", e.message);
        }
    }

    #[test]
    fn bad_restarts_joins_and_applies_name_the_key_and_what_is_allowed() {
        let later = "[[app]]\nname = \"api\"\nimage = \"x\"\nport = 81\n[app.sim]\napply_at_start = false\n";
        let apply_api = "[[fault]]\nat_s = 5\nkind = \"apply\"\nnode = 0\napp = \"api\"\n";
        let cases = [
            ("[[fault]]\nat_s = 1\nkind = \"restart-agent\"\n".to_owned(), "fault[0].node", "needs `node`"),
            ("[[fault]]\nat_s = 1\nkind = \"restart-agent\"\nnode = 3\n".to_owned(), "fault[0].node", "0..2"),
            ("[[fault]]\nat_s = 1\nkind = \"start-node\"\nnode = 1\n".to_owned(), "fault[0].node", "late_nodes (none given)"),
            (
                "[sim]\nlate_nodes = [2]\n[[fault]]\nat_s = 1\nkind = \"start-node\"\nnode = 2\n[[fault]]\nat_s = 2\nkind = \"start-node\"\nnode = 2\n".to_owned(),
                "fault[1].node",
                "started by fault[0] already",
            ),
            ("[sim]\nlate_nodes = [0, 1, 2]\n".to_owned(), "sim.late_nodes", "at least one node"),
            ("[sim]\nlate_nodes = [1, 1]\n".to_owned(), "sim.late_nodes[1]", "listed twice"),
            ("[sim]\nlate_nodes = [7]\n".to_owned(), "sim.late_nodes[0]", "0..2"),
            ("[[fault]]\nat_s = 1\nkind = \"apply\"\nnode = 0\n".to_owned(), "fault[0].app", "needs `app`"),
            (
                "[[fault]]\nat_s = 1\nkind = \"apply\"\nnode = 0\napp = \"web\"\n".to_owned(),
                "fault[0].app",
                "apply_at_start = false",
            ),
            (format!("{later}[[fault]]\nat_s = 1\nkind = \"apply\"\napp = \"api\"\n"), "fault[0].node", "needs `node`"),
            (later.to_owned(), "app[1].sim.apply_at_start", "never applied"),
            (format!("{later}{apply_api}{apply_api}"), "fault[1].app", "applied by fault[0] already"),
            ("[expect]\nconverge_s_max = -1\n".to_owned(), "expect.converge_s_max", ">= 0"),
            ("[expect]\norphan_s_max = nan\n".to_owned(), "expect.orphan_s_max", ">= 0"),
        ];
        for (extra, key, allowed) in cases {
            let e = parse("t.toml", &format!("{BASE}{extra}")).unwrap_err();
            assert_eq!(e.key, key, "{extra}");
            assert!(e.message.contains(allowed), "{extra}: {}", e.message);
        }
    }

    #[test]
    fn a_late_node_and_a_later_app_are_accepted_with_their_faults() {
        let s = parse(
            "t.toml",
            &format!(
                "{BASE}[[app]]\nname = \"api\"\nimage = \"x\"\nport = 81\n[app.sim]\napply_at_start = false\n[sim]\nlate_nodes = [2]\n[[fault]]\nat_s = 9\nkind = \"apply\"\nnode = 2\napp = \"api\"\n[[fault]]\nat_s = 5\nkind = \"start-node\"\nnode = 2\n[[fault]]\nat_s = 7\nkind = \"restart-agent\"\nnode = 0\n"
            ),
        )
        .unwrap();
        assert_eq!(s.sim.late_nodes, vec![2]);
        assert!(!s.app_sim[&AppName::new("api")].apply_at_start);
        let kinds: Vec<String> = s.faults.iter().map(Fault::describe).collect();
        assert_eq!(kinds, ["start-node 2", "restart-agent 0", "apply api through 2"]);
    }

    #[test]
    fn swim_is_the_default_membership_and_the_oracle_is_named_as_such() {
        assert_eq!(parse("t.toml", BASE).unwrap().sim.membership, Membership::Swim);
        let s = parse("t.toml", &format!("{BASE}[sim]\nmembership = \"perfect-failure-detector\"\n")).unwrap();
        assert_eq!(s.sim.membership.name(), "perfect-failure-detector");
    }

    #[test]
    fn the_heal_comes_after_the_last_fault_ends() {
        let s = parse(
            "t.toml",
            &format!("{BASE}[[fault]]\nat_s = 10\nkind = \"partition\"\ngroups = [[0]]\nduration_s = 20\n[[fault]]\nat_s = 15\nkind = \"crash-node\"\nnode = 1\n"),
        )
        .unwrap();
        assert_eq!(s.heal_at_s(), 30.0);
    }
}
