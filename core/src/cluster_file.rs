//! The cluster file: nodes, apps and a policy, in TOML. It is also the first half of every
//! simulator scenario, which is why the raw tables are public and carry an opaque `sim` table.
//!
//! Parsing takes text, not a path: core does no I/O. Every error names the file, the key and
//! what is allowed, so a driver can print it as it is and exit.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::limits;
use crate::model::{
    AppName, AppSpec, Autoscale, GpuRequest, HealthCheck, HealthKind, HostPorts, Labels, NodeId, NodeSpec, PickerKind,
    Protocol, Resources, RestartBackoff, ScaleRule, SpecError, UpdatePolicy, Volume, check_gpu_models_known,
    validate_apps, validate_gpu_model, validate_name,
};
use crate::schedule::Policy;

/// A cluster file that parsed and passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Every node, in file order: the identical ones first, then each `[[node]]`.
    pub nodes: Vec<NodeSpec>,
    /// Every app, in file order.
    pub apps: Vec<AppSpec>,
    /// The placement policy.
    pub policy: Policy,
}

/// A cluster file that cannot be used. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    /// The file's name as the user gave it.
    pub file: String,
    /// The key at fault (`app[1].replicas`), or empty when the text is not valid TOML.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: key `{}`: {}", self.file, self.key, self.message)
        }
    }
}

impl FileError {
    /// An error on `key` of `file`.
    pub fn new(file: &str, key: impl Into<String>, message: impl Into<String>) -> FileError {
        FileError { file: file.to_owned(), key: key.into(), message: message.into() }
    }

    /// A TOML syntax or type error, with the key path it is at (`cluster.policy`), its line and
    /// column.
    pub fn from_toml(file: &str, text: &str, err: &toml::de::Error) -> FileError {
        let at = err.span().map(|s| line_col(text, s.start)).map(|(l, c)| format!("line {l}, column {c}: "));
        FileError {
            file: file.to_owned(),
            key: err.span().and_then(|s| key_at(text, s.start)).unwrap_or_default(),
            message: format!("{}{}", at.unwrap_or_default(), err.message().trim_end()),
        }
    }
}

/// The dotted key whose line holds `offset`: the last table header above it, then the key
/// before `=` on its line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim().trim_matches('"').to_owned());
    let header = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    match (header, key) {
        (Some(h), Some(k)) => Some(format!("{h}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(h), None) => Some(h),
        (None, None) => None,
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// `[cluster]`: identical nodes and the policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// How many identical nodes, named `node-0` up.
    #[serde(default)]
    pub nodes: u32,
    /// CPU of each identical node, in millicores.
    #[serde(default = "default_node_cpu_millis")]
    pub cpu_millis: u64,
    /// Memory of each identical node, in MiB.
    #[serde(default = "default_node_mem_mb")]
    pub mem_mb: u64,
    /// Labels of each identical node.
    #[serde(default)]
    pub labels: Labels,
    /// GPUs of each identical node.
    #[serde(default)]
    pub gpus: u32,
    /// Their model.
    #[serde(default)]
    pub gpu_model: String,
    /// The lowest host port of each identical node.
    #[serde(default = "default_host_port_min")]
    pub host_port_min: u16,
    /// The highest host port of each identical node.
    #[serde(default = "default_host_port_max")]
    pub host_port_max: u16,
    /// The placement policy.
    #[serde(default)]
    pub policy: Policy,
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            nodes: 0,
            cpu_millis: default_node_cpu_millis(),
            mem_mb: default_node_mem_mb(),
            labels: Labels::new(),
            gpus: 0,
            gpu_model: String::new(),
            host_port_min: default_host_port_min(),
            host_port_max: default_host_port_max(),
            policy: Policy::default(),
        }
    }
}

fn default_node_cpu_millis() -> u64 {
    4000
}
fn default_node_mem_mb() -> u64 {
    8192
}
fn default_host_port_min() -> u16 {
    HostPorts::default().min
}
fn default_host_port_max() -> u16 {
    HostPorts::default().max
}

/// `[[node]]`: one node given by hand.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// Its unique name.
    pub name: String,
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub mem_mb: u64,
    /// Its labels.
    #[serde(default)]
    pub labels: Labels,
    /// Its GPUs.
    #[serde(default)]
    pub gpus: u32,
    /// Their model.
    #[serde(default)]
    pub gpu_model: String,
    /// Its lowest host port.
    #[serde(default = "default_host_port_min")]
    pub host_port_min: u16,
    /// Its highest host port.
    #[serde(default = "default_host_port_max")]
    pub host_port_max: u16,
}

/// `[app.health]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    kind: Option<String>,
    path: Option<String>,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    failures: Option<u32>,
    successes: Option<u32>,
    start_grace_ms: Option<u64>,
}

/// `[app.update]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpdate {
    max_surge: Option<u32>,
    max_unavailable: Option<u32>,
    min_healthy_ms: Option<u64>,
    healthy_deadline_ms: Option<u64>,
    auto_revert: Option<bool>,
    canary: Option<u32>,
}

/// `[app.autoscale]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoscale {
    min: u32,
    max: u32,
    target_rps_per_replica: Option<u64>,
    preset: Option<String>,
    tolerance_percent: Option<u32>,
    window_ms: Option<u64>,
    scale_down_stabilization_ms: Option<u64>,
}

/// `[app.volume]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVolume {
    name: String,
    #[serde(default = "default_volume_path")]
    path: String,
}

fn default_volume_path() -> String {
    "/data".to_owned()
}

/// `[app.restart]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    initial_ms: Option<u64>,
    max_ms: Option<u64>,
    reset_after_ms: Option<u64>,
    budget: Option<u32>,
}

/// `[[app]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    name: String,
    image: String,
    #[serde(default = "one")]
    replicas: u32,
    #[serde(default = "default_app_cpu_millis")]
    cpu_millis: u64,
    #[serde(default = "default_app_mem_mb")]
    mem_mb: u64,
    gpus: Option<u32>,
    gpu_milli: Option<u32>,
    #[serde(default)]
    gpu_models: Vec<String>,
    #[serde(default)]
    priority: i32,
    port: u16,
    #[serde(default = "default_container_port")]
    container_port: u16,
    #[serde(default)]
    constraints: Labels,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    balance: PickerKind,
    #[serde(default)]
    protocol: Protocol,
    max_body_bytes: Option<u64>,
    health: Option<RawHealth>,
    update: Option<RawUpdate>,
    autoscale: Option<RawAutoscale>,
    volume: Option<RawVolume>,
    restart: Option<RawRestart>,
    /// How the app's replicas behave under the simulator; read by canteen-sim, ignored here.
    pub sim: Option<toml::Table>,
}

fn one() -> u32 {
    1
}
fn default_app_cpu_millis() -> u64 {
    100
}
fn default_app_mem_mb() -> u64 {
    128
}
fn default_container_port() -> u16 {
    80
}

/// The tables a cluster file holds. A scenario file holds these and more.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClusterFile {
    /// `[cluster]`.
    #[serde(default)]
    pub cluster: RawCluster,
    /// `[[node]]`.
    #[serde(default)]
    pub node: Vec<RawNode>,
    /// `[[app]]`.
    #[serde(default)]
    pub app: Vec<RawApp>,
}

/// Parses and checks a cluster file's text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Cluster, FileError> {
    let raw: RawClusterFile = toml::from_str(text).map_err(|e| FileError::from_toml(file, text, &e))?;
    build(file, &raw.cluster, &raw.node, &raw.app)
}

/// Turns the raw tables into a checked [`Cluster`]. Apps' GPU models are checked against the
/// file's nodes.
pub fn build(file: &str, cluster: &RawCluster, nodes: &[RawNode], apps: &[RawApp]) -> Result<Cluster, FileError> {
    build_with(file, cluster, nodes, apps, true)
}

/// [`build`], checking apps' GPU models against the file's nodes only if `nodes_are_the_cluster`:
/// a file of apps alone, applied to a running cluster, knows none of its nodes.
pub fn build_with(
    file: &str,
    cluster: &RawCluster,
    nodes: &[RawNode],
    apps: &[RawApp],
    nodes_are_the_cluster: bool,
) -> Result<Cluster, FileError> {
    let err = |key: String, message: String| FileError::new(file, key, message);
    let mut specs = Vec::new();
    if cluster.nodes > 0 {
        if cluster.cpu_millis == 0 {
            return Err(err("cluster.cpu_millis".into(), "must be greater than 0".into()));
        }
        if cluster.mem_mb == 0 {
            return Err(err("cluster.mem_mb".into(), "must be greater than 0".into()));
        }
    }
    let node_count = cluster.nodes as usize + nodes.len();
    if node_count == 0 {
        return Err(err(
            "cluster.nodes".into(),
            "the cluster has no nodes: set cluster.nodes > 0 or add [[node]] tables".into(),
        ));
    }
    if node_count > limits::NODES_MAX {
        return Err(err(
            "cluster.nodes".into(),
            format!("{node_count} nodes; at most {} are allowed", limits::NODES_MAX),
        ));
    }
    if cluster.nodes > 0 {
        let (gpus, model, ports) = (cluster.gpus, &cluster.gpu_model, (cluster.host_port_min, cluster.host_port_max));
        node_extras(gpus, model, ports).map_err(|(key, m)| err(format!("cluster.{key}"), m))?;
    }
    for i in 0..cluster.nodes {
        specs.push(NodeSpec {
            id: NodeId::new(&format!("node-{i}")),
            capacity: Resources::new(cluster.cpu_millis, cluster.mem_mb),
            labels: cluster.labels.clone(),
            gpus: cluster.gpus,
            gpu_model: cluster.gpu_model.clone(),
            host_ports: HostPorts { min: cluster.host_port_min, max: cluster.host_port_max },
        });
    }
    for (i, n) in nodes.iter().enumerate() {
        validate_name(&n.name).map_err(|p| err(format!("node[{i}].name"), p))?;
        if n.cpu_millis == 0 {
            return Err(err(format!("node[{i}].cpu_millis"), "must be greater than 0".into()));
        }
        if n.mem_mb == 0 {
            return Err(err(format!("node[{i}].mem_mb"), "must be greater than 0".into()));
        }
        if specs.iter().any(|s| s.id.as_str() == n.name) {
            return Err(err(
                format!("node[{i}].name"),
                format!("node name {:?} is used twice; names must be unique", n.name),
            ));
        }
        node_extras(n.gpus, &n.gpu_model, (n.host_port_min, n.host_port_max))
            .map_err(|(key, m)| err(format!("node[{i}].{key}"), m))?;
        specs.push(NodeSpec {
            id: NodeId::new(&n.name),
            capacity: Resources::new(n.cpu_millis, n.mem_mb),
            labels: n.labels.clone(),
            gpus: n.gpus,
            gpu_model: n.gpu_model.clone(),
            host_ports: HostPorts { min: n.host_port_min, max: n.host_port_max },
        });
    }
    let mut app_specs = Vec::with_capacity(apps.len());
    let models: Vec<&str> = specs.iter().filter(|s| s.gpus > 0).map(|s| s.gpu_model.as_str()).collect();
    for (i, raw) in apps.iter().enumerate() {
        let spec = app_spec(raw).map_err(|(field, message)| err(format!("app[{i}].{field}"), message))?;
        let known = |spec: &AppSpec| {
            if nodes_are_the_cluster { check_gpu_models_known(spec, models.iter().copied()) } else { Ok(()) }
        };
        spec.gpu.validate().and_then(|()| known(&spec)).map_err(|e| match e {
            SpecError::Invalid { field, problem } => err(format!("app[{i}].{field}"), problem),
            other => err(format!("app[{i}]"), other.to_string()),
        })?;
        app_specs.push(spec);
    }
    validate_apps(&app_specs).map_err(|(i, e)| {
        let field = match &e {
            SpecError::Invalid { field, .. } => field,
            SpecError::DuplicateName(_) => "name",
            SpecError::DuplicatePort { .. } => "port",
        };
        let message = match e {
            SpecError::Invalid { problem, .. } => problem,
            other => other.to_string(),
        };
        let name = apps.get(i).map(|a| format!(" (app {:?})", a.name)).unwrap_or_default();
        err(format!("app[{i}].{field}{name}"), message)
    })?;
    Ok(Cluster { nodes: specs, apps: app_specs, policy: cluster.policy })
}

/// Checks a node's GPUs and host ports; the key at fault and the problem.
fn node_extras(gpus: u32, model: &str, (min, max): (u16, u16)) -> Result<(), (&'static str, String)> {
    if gpus > limits::GPUS_PER_NODE_MAX {
        return Err(("gpus", format!("{gpus} is more than the limit of {}", limits::GPUS_PER_NODE_MAX)));
    }
    match (gpus, model.is_empty()) {
        (0, false) => return Err(("gpu_model", "given for a node with no GPUs: set gpus too".into())),
        (1.., true) => return Err(("gpu_model", "a node with GPUs names their model (gpu_model = \"A100\")".into())),
        (1.., false) => validate_gpu_model(model).map_err(|p| ("gpu_model", p))?,
        _ => {}
    }
    if min == 0 || min > max {
        return Err(("host_port_min", format!("need 0 < host_port_min <= host_port_max, got {min} and {max}")));
    }
    Ok(())
}

/// The spec of one raw app, or the field at fault and the problem.
fn app_spec(raw: &RawApp) -> Result<AppSpec, (&'static str, String)> {
    let mut spec = AppSpec::new(&raw.name, &raw.image, raw.replicas, Resources::new(raw.cpu_millis, raw.mem_mb));
    spec.name = AppName::new(&raw.name);
    spec.priority = raw.priority;
    spec.port = raw.port;
    spec.container_port = raw.container_port;
    spec.constraints = raw.constraints.clone();
    spec.command = raw.command.clone();
    spec.env = raw.env.clone();
    spec.balance = raw.balance;
    spec.protocol = raw.protocol;
    spec.max_body_bytes = raw.max_body_bytes;
    if raw.gpus == Some(0) {
        return Err(("gpus", "0 GPUs: leave gpus out for an app that needs none".into()));
    }
    if raw.gpu_milli == Some(0) {
        return Err(("gpu_milli", "a share of 0: allowed 1 to 999 thousandths of one GPU".into()));
    }
    spec.gpu = GpuRequest {
        gpus: raw.gpus.unwrap_or(0),
        gpu_milli: raw.gpu_milli.unwrap_or(0),
        gpu_models: raw.gpu_models.clone(),
    };
    if let Some(h) = &raw.health {
        let d = HealthCheck::default();
        // A health table says HTTP unless it names its kind, as it did before kinds existed;
        // an app with no table at all gets the spec's default, a TCP connect.
        let kind =
            match &h.kind {
                None => HealthKind::Http,
                Some(k) => HealthKind::ALL.iter().find(|(n, _)| n == k).map(|(_, k)| *k).ok_or_else(|| {
                    ("health.kind", format!("unknown kind {k:?}; allowed: \"http\", \"tcp\", \"none\""))
                })?,
            };
        if h.path.is_some() && kind != HealthKind::Http {
            return Err(("health.path", format!("a path is probed only by kind = \"http\", not {:?}", kind.name())));
        }
        spec.health = HealthCheck {
            kind,
            path: h.path.clone().unwrap_or(d.path),
            interval_ms: h.interval_ms.unwrap_or(d.interval_ms),
            timeout_ms: h.timeout_ms.unwrap_or(d.timeout_ms),
            failures: h.failures.unwrap_or(d.failures),
            successes: h.successes.unwrap_or(d.successes),
            start_grace_ms: h.start_grace_ms.unwrap_or(d.start_grace_ms),
        };
    }
    if let Some(u) = &raw.update {
        let d = UpdatePolicy::default();
        spec.update = UpdatePolicy {
            max_surge: u.max_surge.unwrap_or(d.max_surge),
            max_unavailable: u.max_unavailable.unwrap_or(d.max_unavailable),
            min_healthy_ms: u.min_healthy_ms.unwrap_or(d.min_healthy_ms),
            healthy_deadline_ms: u.healthy_deadline_ms.unwrap_or(d.healthy_deadline_ms),
            auto_revert: u.auto_revert.unwrap_or(d.auto_revert),
            canary: u.canary.unwrap_or(d.canary),
        };
    }
    if let Some(r) = &raw.restart {
        let d = RestartBackoff::default();
        spec.restart = RestartBackoff {
            initial_ms: r.initial_ms.unwrap_or(d.initial_ms),
            max_ms: r.max_ms.unwrap_or(d.max_ms),
            reset_after_ms: r.reset_after_ms.unwrap_or(d.reset_after_ms),
            budget: r.budget.unwrap_or(d.budget),
        };
    }
    if let Some(v) = &raw.volume {
        spec.volume = Some(Volume { name: v.name.clone(), mount_path: v.path.clone() });
    }
    if let Some(a) = &raw.autoscale {
        spec.autoscale = Some(autoscale(a)?);
    }
    Ok(spec)
}

/// The autoscale policy of one raw app, or the field at fault and the problem.
fn autoscale(a: &RawAutoscale) -> Result<Autoscale, (&'static str, String)> {
    let rule = match (&a.preset, a.target_rps_per_replica) {
        (Some(p), None) if p == "per-20-requests-120s" => ScaleRule::PER_20_REQUESTS_120S,
        (Some(p), None) => {
            return Err(("autoscale.preset", format!("unknown preset {p:?}; allowed: \"per-20-requests-120s\"")));
        }
        (None, Some(t)) => {
            let ScaleRule::TargetRps { tolerance_percent, window_ms, scale_down_stabilization_ms, .. } =
                ScaleRule::target_rps(t)
            else {
                unreachable!("target_rps builds a TargetRps rule")
            };
            ScaleRule::TargetRps {
                target_rps_per_replica: t,
                tolerance_percent: a.tolerance_percent.unwrap_or(tolerance_percent),
                window_ms: a.window_ms.unwrap_or(window_ms),
                scale_down_stabilization_ms: a.scale_down_stabilization_ms.unwrap_or(scale_down_stabilization_ms),
            }
        }
        _ => {
            return Err((
                "autoscale",
                "give exactly one of target_rps_per_replica = N or preset = \"per-20-requests-120s\"".into(),
            ));
        }
    };
    if matches!(rule, ScaleRule::PerRequests { .. })
        && (a.tolerance_percent.is_some() || a.window_ms.is_some() || a.scale_down_stabilization_ms.is_some())
    {
        return Err((
            "autoscale.preset",
            "the preset fixes its own period; tolerance_percent, window_ms and scale_down_stabilization_ms are allowed only with target_rps_per_replica".into(),
        ));
    }
    Ok(Autoscale { min: a.min, max: a.max, rule })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[cluster]
nodes = 5
cpu_millis = 4000
mem_mb = 8192
policy = "spread"

[[node]]
name = "big-0"
cpu_millis = 16000
mem_mb = 65536
labels = { zone = "a", disk = "ssd" }

[[app]]
name = "web"
image = "canteen-demo:latest"
replicas = 3
cpu_millis = 500
mem_mb = 256
priority = 0
port = 8080
container_port = 80
constraints = { disk = "ssd" }
[app.health]
path = "/health"
interval_ms = 1000
timeout_ms = 500
failures = 3
[app.autoscale]
min = 1
max = 10
target_rps_per_replica = 100
"#;

    #[test]
    fn the_issue_example_parses_with_every_key() {
        let c = parse("example.toml", EXAMPLE).unwrap();
        assert_eq!(c.nodes.len(), 6);
        assert_eq!(c.nodes[5].id.as_str(), "big-0");
        assert_eq!(c.nodes[5].labels["disk"], "ssd");
        assert_eq!(c.policy, Policy::Spread);
        let web = &c.apps[0];
        assert_eq!(web.resources, Resources::new(500, 256));
        assert_eq!(web.constraints["disk"], "ssd");
        assert_eq!(web.autoscale.as_ref().unwrap().max, 10);
        assert_eq!(web.health.successes, 1, "an unset key takes its default");
    }

    #[test]
    fn health_kinds_and_update_settings_read_with_their_defaults_and_errors() {
        let base = "[cluster]\nnodes = 1\n[[app]]\nname = \"web\"\nimage = \"x\"\nport = 80\n";
        let app = |extra: &str| parse("f.toml", &format!("{base}{extra}")).map(|c| c.apps[0].clone());
        assert_eq!(app("").unwrap().health.kind, HealthKind::Tcp, "no table: a TCP connect");
        assert_eq!(app("[app.health]\ninterval_ms = 2000\n").unwrap().health.kind, HealthKind::Http, "a table: HTTP");
        assert_eq!(app("[app.health]\nkind = \"none\"\n").unwrap().health.kind, HealthKind::None);
        let e = app("[app.health]\nkind = \"udp\"\n").unwrap_err();
        assert!(e.key == "app[0].health.kind" && e.message.contains("\"tcp\""), "{e}");
        let e = app("[app.health]\nkind = \"tcp\"\npath = \"/x\"\n").unwrap_err();
        assert!(e.key.contains("health.path"), "{e}");
        let u = app("[app.update]\nmax_surge = 2\ncanary = 1\n").unwrap().update;
        assert_eq!((u.max_surge, u.max_unavailable, u.min_healthy_ms, u.canary, u.auto_revert), (2, 0, 5000, 1, true));
        let e = app("[app.update]\nmax_surge = 0\n").unwrap_err();
        assert!(e.key.contains("update.max_surge") && e.message.contains("max_unavailable"), "{e}");
        let e = app("[app.update]\nmin_healthy_ms = 70000\n").unwrap_err();
        assert!(e.key.contains("update.min_healthy_ms"), "{e}");
        assert_eq!(app("replicas = 0\n").unwrap().replicas, 0, "an app may be stopped but kept");
    }

    #[test]
    fn protocol_and_body_cap_read_with_their_defaults_and_errors() {
        let base = "[cluster]\nnodes = 1\n[[app]]\nname = \"db\"\nimage = \"x\"\nport = 5432\n";
        let app = |extra: &str| parse("f.toml", &format!("{base}{extra}")).map(|c| c.apps[0].clone());
        let plain = app("").unwrap();
        assert_eq!((plain.protocol, plain.max_body_bytes), (Protocol::Http, None), "HTTP with no cap");
        assert_eq!(app("protocol = \"tcp\"\n").unwrap().protocol, Protocol::Tcp);
        assert_eq!(app("max_body_bytes = 1048576\n").unwrap().max_body_bytes, Some(1 << 20));
        let e = app("protocol = \"udp\"\n").unwrap_err();
        assert!(e.key == "app.protocol" && e.message.contains("`http` or `tcp`"), "{e}");
        let e = app("max_body_bytes = 0\n").unwrap_err();
        assert!(e.key.contains("app[0].max_body_bytes") && e.message.contains("at least 1"), "{e}");
        let e = app("max_body_bytes = 2000000000000\n").unwrap_err();
        assert!(e.key.contains("app[0].max_body_bytes") && e.message.contains("limit"), "{e}");
        let e = app("protocol = \"tcp\"\nmax_body_bytes = 10\n").unwrap_err();
        assert!(e.key.contains("app[0].max_body_bytes") && e.message.contains("HTTP"), "{e}");
    }

    fn error_of(text: &str) -> FileError {
        parse("bad.toml", text).unwrap_err()
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_what_is_allowed() {
        let e = error_of("[cluster]\nnodes = 2\n[[app]]\nname = \"web\"\nimage = \"x\"\nport = 80\nreplica = 3\n");
        let text = e.to_string();
        assert!(text.starts_with("bad.toml: key `app.replica`: line 7"), "{text}");
        assert!(text.contains("replica"), "{text}");
        assert!(text.contains("replicas"), "lists the allowed keys: {text}");
    }

    #[test]
    fn an_unknown_policy_lists_the_allowed_ones() {
        let e = error_of("[cluster]\nnodes = 2\npolicy = \"random\"\n");
        assert_eq!(e.key, "cluster.policy", "a bad value names its key path");
        let text = e.to_string();
        assert!(text.contains("random") && text.contains("binpack") && text.contains("rendezvous"), "{text}");
    }

    #[test]
    fn semantic_errors_name_the_key_and_the_app() {
        let base = "[cluster]\nnodes = 2\n[[app]]\nname = \"web\"\nimage = \"x\"\nport = 80\n";
        let e = error_of(&format!("{base}replicas = 1000000\n"));
        assert_eq!(e.key, "app[0].replicas (app \"web\")");
        let e = error_of(&format!("{base}[app.autoscale]\nmin = 3\nmax = 2\n"));
        assert_eq!(e.key, "app[0].autoscale");
        let e = error_of(&format!("{base}[app.autoscale]\nmin = 3\nmax = 2\ntarget_rps_per_replica = 5\n"));
        assert_eq!(e.key, "app[0].autoscale.min (app \"web\")");
        let e = error_of(&format!("{base}[[app]]\nname = \"web\"\nimage = \"y\"\nport = 81\n"));
        assert_eq!(e.key, "app[1].name (app \"web\")");
        let e = error_of("[cluster]\nnodes = 0\n");
        assert_eq!(e.key, "cluster.nodes");
        let e = error_of("[[node]]\nname = \"a\"\ncpu_millis = 0\nmem_mb = 1\n");
        assert_eq!(e.key, "node[0].cpu_millis");
    }

    #[test]
    fn gpus_read_from_nodes_and_apps_and_bad_ones_are_refused_naming_the_key() {
        let nodes = "[cluster]\nnodes = 2\ngpus = 8\ngpu_model = \"A100\"\n\
                     [[node]]\nname = \"t4\"\ncpu_millis = 8000\nmem_mb = 8192\ngpus = 2\ngpu_model = \"T4\"\n";
        let app = |extra: &str| format!("{nodes}[[app]]\nname = \"job\"\nimage = \"x\"\nport = 80\n{extra}");
        let c = parse("f.toml", &app("gpu_milli = 250\ngpu_models = [\"T4\"]\n")).unwrap();
        assert_eq!((c.nodes[0].gpus, c.nodes[0].gpu_model.as_str(), c.nodes[2].gpus), (8, "A100", 2));
        assert_eq!(c.apps[0].gpu.gpu_milli, 250);
        let refused = [
            ("gpu_milli = 0\n", "app[0].gpu_milli", "a share of 0"),
            ("gpu_milli = 1000\n", "app[0].gpu_milli", "1000 is not a share of one GPU"),
            ("gpus = 1\ngpu_milli = 500\n", "app[0].gpu_milli", "not both"),
            ("gpus = 0\n", "app[0].gpus", "leave gpus out"),
            ("gpus = 65\n", "app[0].gpus", "more than a node may offer"),
            (
                "gpus = 1\ngpu_models = [\"H100\"]\n",
                "app[0].gpu_models",
                "unknown GPU model \"H100\"; the cluster's models: A100, T4",
            ),
            ("gpu_models = [\"T4\"]\n", "app[0].gpu_models", "asks for no GPU"),
        ];
        for (extra, key, message) in refused {
            let e = error_of(&app(extra));
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(e.message.contains(message), "{extra}: {e}");
        }
        let e = error_of("[cluster]\nnodes = 1\ngpus = 2\n");
        assert_eq!(e.key, "cluster.gpu_model", "{e}");
        let e = error_of("[[node]]\nname = \"a\"\ncpu_millis = 1\nmem_mb = 1\ngpu_model = \"A100\"\n");
        assert_eq!(e.key, "node[0].gpu_model", "{e}");
        let e = error_of(
            "[[node]]\nname = \"a\"\ncpu_millis = 1\nmem_mb = 1\nhost_port_min = 9000\nhost_port_max = 8000\n",
        );
        assert_eq!(e.key, "node[0].host_port_min", "{e}");
    }

    #[test]
    fn negative_resources_are_a_type_error_naming_the_line() {
        let text = error_of("[cluster]\nnodes = 2\ncpu_millis = -5\n").to_string();
        assert!(text.contains("line 3"), "{text}");
    }

    #[test]
    fn the_preset_is_the_original_rule() {
        let c = parse(
            "p.toml",
            "[cluster]\nnodes = 1\n[[app]]\nname = \"w\"\nimage = \"x\"\nport = 80\n[app.autoscale]\nmin = 1\nmax = 9\npreset = \"per-20-requests-120s\"\n",
        )
        .unwrap();
        assert_eq!(c.apps[0].autoscale.as_ref().unwrap().rule, ScaleRule::PER_20_REQUESTS_120S);
    }
}
