//! Replays a production trace through the placement policies: the openb trace of Alibaba's GPU
//! cluster (Weng et al., "Beware of Fragmentation", ATC '23), in its CSV format.
//!
//! The protocol is the paper artifact's (`kubernetes-scheduler-simulator`, Fig. 9(a)): the GPU
//! nodes only; the trace's tasks shuffled, then tasks drawn from the trace again (with
//! replacement) until the tasks ask for `tune` times the cluster's GPUs; each placed on
//! arrival, as an app of one replica that the plan never moves; a task that fits nowhere is
//! counted and the replay goes on. What differs from the artifact: the shuffle and draws use
//! canteen's generator (`SplitMix64`), not Go's, so seed 42 is not the artifact's seed 42; a
//! draw that would pass the target ends the draws (the artifact compares only one GPU's share
//! of a multi-GPU task with what is left); ties go as each policy breaks them (the artifact
//! sends them to a random node); memory counts in fragmentation too.

use std::fmt;
use std::time::Instant;

use canteen_core::limits;
use canteen_core::model::{AppSpec, GpuRequest, GpuShare, NodeSpec, Resources};
use canteen_core::rng::SplitMix64;
use canteen_core::schedule::{Observed, Plan, Policy, Shape, place};

/// One node of `nodes.csv`: `sn, cpu_milli, memory_mib, gpu, model`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceNode {
    /// Its name.
    pub name: String,
    /// CPU in thousandths of a core.
    pub cpu_milli: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// GPUs.
    pub gpus: u32,
    /// Their model.
    pub model: String,
}

/// One task of `pods.csv`: `name, cpu_milli, memory_mib, num_gpu, gpu_milli, gpu_spec, ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracePod {
    /// Its name.
    pub name: String,
    /// CPU in thousandths of a core.
    pub cpu_milli: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// GPUs.
    pub num_gpu: u32,
    /// Thousandths of each GPU.
    pub gpu_milli: u32,
    /// The GPU models it may run on, `|`-separated; empty for any.
    pub gpu_spec: String,
}

impl TracePod {
    /// What it asks of GPUs, in canteen's terms: a share of one GPU below a whole, or whole
    /// GPUs (a share above a whole, which the trace does not hold, counts as a whole).
    pub fn gpu(&self) -> GpuRequest {
        let models: Vec<String> =
            self.gpu_spec.split('|').map(str::trim).filter(|m| !m.is_empty()).map(str::to_owned).collect();
        match (self.num_gpu, self.gpu_milli) {
            (0, _) | (_, 0) => GpuRequest::default(),
            (1, m) if m < limits::GPU_MILLI => GpuRequest { gpus: 0, gpu_milli: m, gpu_models: models },
            (n, _) => GpuRequest { gpus: n, gpu_milli: 0, gpu_models: models },
        }
    }

    /// Thousandths of a GPU it asks for in all.
    pub fn gpu_milli_total(&self) -> u64 {
        let g = self.gpu();
        u64::from(g.gpus) * u64::from(limits::GPU_MILLI) + u64::from(g.gpu_milli)
    }

    fn resources(&self) -> Resources {
        Resources { cpu_millis: self.cpu_milli, mem_bytes: self.memory_mib * limits::MIB }
    }
}

/// A CSV file that cannot be read as the trace's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: line {line}: {message}")]
pub struct TraceError {
    /// The file.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The rows of a CSV text, each a map from the header's column names, with their line numbers.
fn rows<'a>(file: &str, text: &'a str, needed: &[&str]) -> Result<Vec<(usize, Vec<&'a str>)>, TraceError> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let err = |line: usize, message: String| TraceError { file: file.to_owned(), line, message };
    let (_, header) = lines.next().ok_or_else(|| err(1, "empty: no header".into()))?;
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut index = Vec::new();
    for name in needed {
        let at = columns.iter().position(|c| c == name).ok_or_else(|| {
            err(1, format!("no column {name:?} in the header; the columns needed: {}", needed.join(", ")))
        })?;
        index.push(at);
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < columns.len() {
            return Err(err(i + 1, format!("{} fields, the header has {}", fields.len(), columns.len())));
        }
        out.push((i + 1, index.iter().map(|&at| fields[at]).collect()));
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(file: &str, line: usize, column: &str, text: &str) -> Result<T, TraceError> {
    text.parse().map_err(|_| TraceError {
        file: file.to_owned(),
        line,
        message: format!("{column} = {text:?} is not a whole number"),
    })
}

/// The nodes of a `nodes.csv` text; `file` names it in errors.
pub fn parse_nodes(file: &str, text: &str) -> Result<Vec<TraceNode>, TraceError> {
    let mut nodes = Vec::new();
    for (line, f) in rows(file, text, &["sn", "cpu_milli", "memory_mib", "gpu", "model"])? {
        let gpus: u32 = number(file, line, "gpu", f[3])?;
        if gpus > limits::GPUS_PER_NODE_MAX {
            return Err(TraceError {
                file: file.to_owned(),
                line,
                message: format!("gpu = {gpus}: at most {} GPUs a node", limits::GPUS_PER_NODE_MAX),
            });
        }
        nodes.push(TraceNode {
            name: f[0].to_owned(),
            cpu_milli: number(file, line, "cpu_milli", f[1])?,
            memory_mib: number(file, line, "memory_mib", f[2])?,
            gpus,
            model: if gpus == 0 { String::new() } else { f[4].to_owned() },
        });
    }
    Ok(nodes)
}

/// The tasks of a `pods.csv` text, in its order; `file` names it in errors.
pub fn parse_pods(file: &str, text: &str) -> Result<Vec<TracePod>, TraceError> {
    let mut pods = Vec::new();
    let needed = ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec"];
    for (line, f) in rows(file, text, &needed)? {
        let pod = TracePod {
            name: f[0].to_owned(),
            cpu_milli: number(file, line, "cpu_milli", f[1])?,
            memory_mib: number(file, line, "memory_mib", f[2])?,
            num_gpu: number(file, line, "num_gpu", f[3])?,
            gpu_milli: number(file, line, "gpu_milli", f[4])?,
            gpu_spec: f[5].to_owned(),
        };
        if pod.cpu_milli == 0 || pod.num_gpu > limits::GPUS_PER_NODE_MAX {
            return Err(TraceError {
                file: file.to_owned(),
                line,
                message: format!(
                    "cpu_milli = {} and num_gpu = {}: a task asks for some CPU, and at most {} GPUs",
                    pod.cpu_milli,
                    pod.num_gpu,
                    limits::GPUS_PER_NODE_MAX
                ),
            });
        }
        pods.push(pod);
    }
    Ok(pods)
}

/// How a replay runs.
#[derive(Clone, Debug)]
pub struct Protocol {
    /// The placement policy.
    pub policy: Policy,
    /// Seeds the shuffle and the draws.
    pub seed: u64,
    /// Tasks are drawn until they ask for this many times the cluster's GPUs; 0 replays the
    /// trace once, in its order.
    pub tune: f64,
    /// Every node, not only those with GPUs.
    pub all_nodes: bool,
}

/// Where one arrived task went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The task (its index in the trace).
    pub pod: usize,
    /// Its node (an index into the replay's nodes), if it fit.
    pub node: Option<usize>,
    /// The GPUs it holds there.
    pub gpus: Vec<GpuShare>,
}

/// What a replay measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Report {
    /// The policy.
    pub policy: String,
    /// The seed.
    pub seed: u64,
    /// The tune.
    pub tune: f64,
    /// Nodes in the replay.
    pub nodes: usize,
    /// Their GPUs.
    pub gpus: u64,
    /// Share of the GPUs allocated at the end, in percent (thousandths held over thousandths
    /// offered).
    pub gpu_alloc_percent: f64,
    /// The same, when the first task failed to fit (at the end if none failed).
    pub gpu_alloc_percent_at_first_failure: f64,
    /// GPUs left unallocated at the end (thousandths over a thousand).
    pub unallocated_gpus: f64,
    /// Tasks that arrived.
    pub pods_arrived: usize,
    /// Tasks placed.
    pub pods_placed: usize,
    /// Tasks placed before the first failure.
    pub pods_placed_before_first_failure: usize,
    /// GPUs the arrived tasks asked for, in percent of the cluster's.
    pub gpu_arrived_percent: f64,
    /// Share of the CPU allocated at the end, in percent.
    pub cpu_alloc_percent: f64,
    /// Share of the memory allocated at the end, in percent.
    pub mem_alloc_percent: f64,
    /// How long the placements took, in milliseconds (the trace's reading and the workload's
    /// making aside).
    pub wall_ms: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seed {} tune {}: {} of {} tasks placed on {} nodes; GPUs allocated {:.2}% ({:.1} of {} unallocated), \
             {:.2}% at the first failure (after {} tasks); CPU {:.2}%, memory {:.2}%; {:.0} ms",
            self.policy,
            self.seed,
            self.tune,
            self.pods_placed,
            self.pods_arrived,
            self.nodes,
            self.gpu_alloc_percent,
            self.unallocated_gpus,
            self.gpus,
            self.gpu_alloc_percent_at_first_failure,
            self.pods_placed_before_first_failure,
            self.cpu_alloc_percent,
            self.mem_alloc_percent,
            self.wall_ms
        )
    }
}

/// The replay's nodes: the GPU nodes only, unless `all_nodes`.
pub fn replay_nodes(nodes: &[TraceNode], all_nodes: bool) -> Vec<&TraceNode> {
    nodes.iter().filter(|n| all_nodes || n.gpus > 0).collect()
}

/// The arrivals, as indexes into `pods`: the trace once in its order (`tune` 0), or shuffled
/// by `seed` and followed by draws until they ask for `tune` times `gpu_capacity` thousandths.
pub fn arrivals(pods: &[TracePod], gpu_capacity: u64, tune: f64, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pods.len()).collect();
    if tune <= 0.0 || pods.is_empty() {
        return order;
    }
    let mut rng = SplitMix64::new(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let target = (tune * gpu_capacity as f64) as u64;
    let mut asked: u64 = pods.iter().map(TracePod::gpu_milli_total).sum();
    // A trace that asks for no GPU at all would draw for ever.
    if pods.iter().all(|p| p.gpu_milli_total() == 0) {
        return order;
    }
    loop {
        let i = rng.below(pods.len());
        let more = pods[i].gpu_milli_total();
        if asked + more > target {
            break;
        }
        asked += more;
        order.push(i);
    }
    order
}

/// Replays `arrivals` of `pods` on `nodes` with `policy`; the workload `fgd` weighs is the
/// trace's tasks, each once. Returns the report (with `seed` and `tune` as given) and where
/// each arrival went.
pub fn replay(
    nodes: &[&TraceNode],
    pods: &[TracePod],
    arrivals: &[usize],
    protocol: &Protocol,
) -> (Report, Vec<Placed>) {
    let specs: Vec<NodeSpec> = nodes
        .iter()
        .map(|n| {
            let mut spec =
                NodeSpec::new(&n.name, Resources { cpu_millis: n.cpu_milli, mem_bytes: n.memory_mib * limits::MIB });
            spec.gpus = n.gpus;
            spec.gpu_model = n.model.clone();
            spec
        })
        .collect();
    // The plan keeps its nodes sorted by name; the report names them by their index here.
    let mut by_name: Vec<(&str, usize)> = nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
    by_name.sort_unstable();
    let mut plan: Plan = place(&[], &specs, &Observed::new(), protocol.policy);
    let mut shapes: Vec<(Shape, u64)> = Vec::new();
    for p in pods {
        shapes.push((Shape { resources: p.resources(), gpu: p.gpu() }, 1));
    }
    plan.set_workload(&shapes);
    let gpu_capacity: u64 = nodes.iter().map(|n| u64::from(n.gpus) * u64::from(limits::GPU_MILLI)).sum();
    let started = Instant::now();
    let mut placed = Vec::with_capacity(arrivals.len());
    let mut first_failure: Option<(f64, usize)> = None;
    let mut asked = 0u64;
    let percent = |part: u64, whole: u64| if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 };
    for (k, &i) in arrivals.iter().enumerate() {
        let pod = &pods[i];
        asked += pod.gpu_milli_total();
        // Names are unique per arrival: a task drawn again is a new app.
        let mut app = AppSpec::new(&format!("t{k}"), "trace", 1, pod.resources());
        app.gpu = pod.gpu();
        // A task publishes no port (`Plan::add_app`).
        app.port = 0;
        let slot = canteen_core::model::SlotId::new(app.name.as_str(), 0);
        plan.add_app(app);
        let node = plan.node_of(&slot).map(|id| {
            let at = by_name.binary_search_by(|(n, _)| (*n).cmp(id.as_str())).expect("a node of the replay");
            by_name[at].1
        });
        if node.is_none() && first_failure.is_none() {
            let (allocated, total) = plan.gpu_allocation();
            first_failure =
                Some((percent(allocated, total), placed.iter().filter(|p: &&Placed| p.node.is_some()).count()));
        }
        placed.push(Placed { pod: i, node, gpus: plan.gpus_of(&slot) });
    }
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (allocated, total) = plan.gpu_allocation();
    let (mut cpu_used, mut cpu_total, mut mem_used, mut mem_total) = (0u64, 0u64, 0u64, 0u64);
    for (node, used) in plan.usage() {
        cpu_used += used.cpu_millis;
        cpu_total += node.capacity.cpu_millis;
        mem_used += used.mem_bytes;
        mem_total += node.capacity.mem_bytes;
    }
    let pods_placed = placed.iter().filter(|p| p.node.is_some()).count();
    let at_end = percent(allocated, total);
    let (at_first, before_first) = first_failure.unwrap_or((at_end, pods_placed));
    let report = Report {
        policy: protocol.policy.to_string(),
        seed: protocol.seed,
        tune: protocol.tune,
        nodes: nodes.len(),
        gpus: total / u64::from(limits::GPU_MILLI),
        gpu_alloc_percent: at_end,
        gpu_alloc_percent_at_first_failure: at_first,
        unallocated_gpus: (total - allocated) as f64 / f64::from(limits::GPU_MILLI),
        pods_arrived: arrivals.len(),
        pods_placed,
        pods_placed_before_first_failure: before_first,
        gpu_arrived_percent: percent(asked, gpu_capacity),
        cpu_alloc_percent: percent(cpu_used, cpu_total),
        mem_alloc_percent: percent(mem_used, mem_total),
        wall_ms,
    };
    (report, placed)
}

/// One line of `--plan-out`: where an arrived task went.
pub fn plan_line(pods: &[TracePod], nodes: &[&TraceNode], p: &Placed) -> String {
    let pod = &pods[p.pod];
    let gpus: Vec<serde_json::Value> =
        p.gpus.iter().map(|g| serde_json::json!({ "index": g.index, "milli": g.milli })).collect();
    serde_json::json!({
        "pod": pod.name,
        "cpu_milli": pod.cpu_milli,
        "memory_mib": pod.memory_mib,
        "num_gpu": pod.num_gpu,
        "gpu_milli": pod.gpu_milli,
        "gpu_spec": pod.gpu_spec,
        "node": p.node.map(|n| nodes[n].name.clone()),
        "gpus": gpus,
    })
    .to_string()
}
