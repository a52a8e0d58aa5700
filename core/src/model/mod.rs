//! The vocabulary every other module speaks: nodes, resources, apps and their slots.
//!
//! Everything here is plain data plus validation. A spec that passed [`validate_apps`] is one
//! the scheduler, the balancer, the health tracker and the autoscaler can all act on without
//! further checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::limits;

mod devices;
mod frontend;
mod versions;

pub use devices::{GpuRequest, GpuShare, HostPorts, check_gpu_models_known, validate_gpu_model};
pub use frontend::{Frontend, PickerKind, Protocol};
use versions::validate_update;
pub use versions::{Cause, Revision, Template, UpdatePolicy};

/// The name of a node (a server running the agent). Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(Name);

/// The name of an app. Cheap to clone.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppName(Name);

/// A shared name whose first eight bytes are also held inline, as a number that orders as the
/// bytes do (`head`). Maps keyed by names (the registry, the members, the slots) compare keys
/// on every lookup; names differ within their first eight bytes nearly always, so a comparison
/// settles on `head` and reads no shared memory, which at a thousand nodes is a cache miss per
/// comparison. Orders, compares and hashes exactly as the string does.
#[derive(Clone)]
struct Name {
    head: u64,
    // A thin pointer: with the head, a name is as small as a plain `Arc<str>` (16 bytes), and
    // a thousand nodes' maps hold tens of millions of them.
    text: Arc<Box<str>>,
}

const _: () = assert!(std::mem::size_of::<Name>() == 16, "a name is two words");

impl Name {
    fn new(text: &str) -> Name {
        let mut head = [0u8; 8];
        let n = text.len().min(8);
        head[..n].copy_from_slice(&text.as_bytes()[..n]);
        // Padding with zeros keeps the order: if the heads differ, the first byte at which
        // they do is a real byte of the string with the greater head, and either a smaller
        // byte or the end of the other string. Equal heads fall back to the strings.
        let hash = crate::hash::stable_hash(text.as_bytes());
        let text = crate::intern::name(hash, text);
        Name { head: u64::from_be_bytes(head), text }
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.head.cmp(&other.head).then_with(|| {
            if Arc::ptr_eq(&self.text, &other.text) { std::cmp::Ordering::Equal } else { self.text.cmp(&other.text) }
        })
    }
}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name")
            }
            // Borrowed or owned, the text is copied once, into the shared name.
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Name, E> {
                Ok(Name::new(text))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

macro_rules! name_type {
    ($t:ident) => {
        impl $t {
            /// Wraps a name; see [`validate_name`] for what a valid one looks like.
            pub fn new(name: &str) -> Self {
                $t(Name::new(name))
            }
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0.text
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0.text)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&**self.0.text, f)
            }
        }
        impl From<&str> for $t {
            fn from(name: &str) -> Self {
                $t::new(name)
            }
        }
    };
}
name_type!(NodeId);
name_type!(AppName);

/// An amount of compute: CPU in thousandths of a core and memory in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores: 1000 is one core.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub mem_bytes: u64,
}

impl Resources {
    /// No resources at all.
    pub const ZERO: Resources = Resources { cpu_millis: 0, mem_bytes: 0 };

    /// Resources given in the units of the cluster file.
    pub const fn new(cpu_millis: u64, mem_mb: u64) -> Resources {
        Resources { cpu_millis, mem_bytes: mem_mb * limits::MIB }
    }

    /// Whether `self` fits inside `free` in every dimension.
    pub fn fits_in(self, free: Resources) -> bool {
        self.cpu_millis <= free.cpu_millis && self.mem_bytes <= free.mem_bytes
    }

    /// The sum, saturating.
    pub fn saturating_add(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            mem_bytes: self.mem_bytes.saturating_add(other.mem_bytes),
        }
    }

    /// The difference, saturating at zero in each dimension.
    pub fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            mem_bytes: self.mem_bytes.saturating_sub(other.mem_bytes),
        }
    }

    /// Memory in whole mebibytes, rounded down.
    pub fn mem_mb(self) -> u64 {
        self.mem_bytes / limits::MIB
    }
}

/// Node labels, matched by app constraints. Ordered, so iteration is deterministic.
pub type Labels = BTreeMap<String, String>;

/// A node as the scheduler sees it: its name, what it offers and its labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The node's unique name.
    pub id: NodeId,
    /// What the node offers to containers in total.
    pub capacity: Resources,
    /// Matched against each app's `constraints`.
    pub labels: Labels,
    /// GPUs the node offers, indexed `0..gpus`, each of `limits::GPU_MILLI` thousandths.
    #[serde(default)]
    pub gpus: u32,
    /// The model of every one of its GPUs; empty when it has none.
    #[serde(default)]
    pub gpu_model: String,
    /// The host ports its containers are published on: each replica holds one.
    #[serde(default)]
    pub host_ports: HostPorts,
}

impl NodeSpec {
    /// A node with no labels, no GPUs and the default host-port range.
    pub fn new(id: &str, capacity: Resources) -> NodeSpec {
        NodeSpec {
            id: NodeId::new(id),
            capacity,
            labels: Labels::new(),
            gpus: 0,
            gpu_model: String::new(),
            host_ports: HostPorts::default(),
        }
    }
}

/// A replica's identity: the app and an index in `0..replicas`. Stable when the replica moves.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotId {
    /// The app the replica belongs to.
    pub app: AppName,
    /// Which of the app's replicas this is.
    pub index: u32,
}

impl SlotId {
    /// The slot `index` of `app`.
    pub fn new(app: impl Into<AppName>, index: u32) -> SlotId {
        SlotId { app: app.into(), index }
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.index)
    }
}

impl fmt::Debug for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How a replica's health is probed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// An HTTP GET of `path` on the container port; a 2xx answer is a success.
    Http,
    /// A TCP connect to the container port: what every server answers, so the default for an
    /// app that says nothing of its health (an image without `/health` still serves).
    #[default]
    Tcp,
    /// No probe: a running container is healthy.
    None,
}

impl HealthKind {
    /// Every kind, by the name used in files.
    pub const ALL: [(&'static str, HealthKind); 3] =
        [("http", HealthKind::Http), ("tcp", HealthKind::Tcp), ("none", HealthKind::None)];

    /// What a spec saved before kinds existed meant: an HTTP probe of its path.
    fn saved_before_kinds() -> HealthKind {
        HealthKind::Http
    }

    /// The name used in files.
    pub fn name(self) -> &'static str {
        HealthKind::ALL.iter().find(|(_, k)| *k == self).map(|(n, _)| *n).unwrap_or("?")
    }
}

/// An active health check of each replica.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthCheck {
    /// How the probe is made.
    #[serde(default = "HealthKind::saved_before_kinds")]
    pub kind: HealthKind,
    /// HTTP path probed on the container port (kind `http`); a 2xx answer is a success.
    pub path: String,
    /// Time between two probes of one container.
    pub interval_ms: u64,
    /// A probe not answered within this counts as a failure.
    pub timeout_ms: u64,
    /// Consecutive failures that make a healthy container unhealthy.
    pub failures: u32,
    /// Consecutive successes that make a starting or unhealthy container healthy.
    pub successes: u32,
    /// Failures are not counted for this long after the container runs (the runtime reported
    /// it started): the app is booting.
    pub start_grace_ms: u64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            kind: HealthKind::Tcp,
            path: "/health".to_owned(),
            interval_ms: 1000,
            timeout_ms: 500,
            failures: 3,
            successes: 1,
            start_grace_ms: 5000,
        }
    }
}

/// How an autoscaled app computes its replica count from its request load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleRule {
    /// Keep each replica near `target_rps_per_replica`, measured over `window_ms`.
    TargetRps {
        /// Requests per second one replica should carry.
        target_rps_per_replica: u64,
        /// No change while the load per replica is within this many percent of the target.
        tolerance_percent: u32,
        /// The load is the mean request rate over this window.
        window_ms: u64,
        /// A scale-down happens only if every recommendation over this long allowed it.
        scale_down_stabilization_ms: u64,
    },
    /// The original student orchestrator's rule: every `period_ms`, the target is
    /// `requests in the last period / requests_per_replica + 1`, capped at max.
    PerRequests {
        /// Requests that justify one more replica (20 in the original).
        requests_per_replica: u64,
        /// How often the rule is evaluated, and the window it counts over (120 s in the original).
        period_ms: u64,
    },
}

impl ScaleRule {
    /// The preset named `per-20-requests-120s` in cluster files.
    pub const PER_20_REQUESTS_120S: ScaleRule = ScaleRule::PerRequests { requests_per_replica: 20, period_ms: 120_000 };

    /// A target-tracking rule with the default tolerance, window and stabilization.
    pub fn target_rps(target_rps_per_replica: u64) -> ScaleRule {
        ScaleRule::TargetRps {
            target_rps_per_replica,
            tolerance_percent: 10,
            window_ms: 30_000,
            scale_down_stabilization_ms: 300_000,
        }
    }
}

/// Autoscaling bounds and rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Autoscale {
    /// Never fewer replicas than this.
    pub min: u32,
    /// Never more replicas than this.
    pub max: u32,
    /// How the target is computed.
    pub rule: ScaleRule,
}

/// A named volume shared by every replica of an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// The volume's name on the node (one per app and node on Docker).
    pub name: String,
    /// Where it is mounted inside each container.
    pub mount_path: String,
}

/// How soon a failed container is started again, and when a slot gives up on its node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartBackoff {
    /// Delay before the first restart.
    pub initial_ms: u64,
    /// The delay doubles on each consecutive failure up to this.
    pub max_ms: u64,
    /// A container healthy for this long resets the delay to `initial_ms`.
    pub reset_after_ms: u64,
    /// Restarts allowed in a row; the failure after the last of them reschedules the slot elsewhere.
    pub budget: u32,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        RestartBackoff { initial_ms: 1000, max_ms: 60_000, reset_after_ms: 60_000, budget: 10 }
    }
}

/// Everything the operator says about one app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    /// Unique name: the app's identity in the cluster.
    pub name: AppName,
    /// Docker image reference.
    pub image: String,
    /// Command and arguments; empty means the image's default.
    pub command: Vec<String>,
    /// Environment variables given to every replica.
    pub env: BTreeMap<String, String>,
    /// The replica count; with `autoscale` it is the starting count.
    pub replicas: u32,
    /// Reserved for each replica; the scheduler never places more than a node offers.
    pub resources: Resources,
    /// The GPUs each replica holds.
    #[serde(default)]
    pub gpu: GpuRequest,
    /// Apps with a higher priority are placed first.
    pub priority: i32,
    /// The published port, where every node's balancer listens for this app.
    pub port: u16,
    /// The port the app listens on inside its container.
    pub container_port: u16,
    /// Labels a node must carry, all of them, to run this app.
    pub constraints: Labels,
    /// How each replica's health is probed.
    pub health: HealthCheck,
    /// Present when the replica count follows the load.
    pub autoscale: Option<Autoscale>,
    /// A volume mounted into every replica.
    pub volume: Option<Volume>,
    /// Restart back-off and budget.
    pub restart: RestartBackoff,
    /// How the balancer picks a replica for each request.
    pub balance: PickerKind,
    /// What the balancer speaks on `port`: HTTP requests, or TCP connections passed through.
    #[serde(default)]
    pub protocol: Protocol,
    /// The largest request body the balancer passes on (413 past it); `None`: no cap.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// How a new version replaces the running one.
    #[serde(default)]
    pub update: UpdatePolicy,
    /// The version: 1 when the app is first applied, one more on every change of its
    /// [`Template`] (and every restart or undo). Set by the node that applies the spec; what
    /// the operator sends is ignored.
    #[serde(default)]
    pub version: u64,
    /// Times `canteen restart` asked for fresh containers (part of the template).
    #[serde(default)]
    pub redeploys: u32,
    /// Whether the operator promoted this version's canaries.
    #[serde(default)]
    pub promoted: bool,
    /// Earlier versions, oldest first, at most `limits::REVISIONS_MAX`; set by the node that
    /// applies the spec.
    #[serde(default)]
    pub history: Vec<Revision>,
    /// Why this version was made.
    #[serde(default = "apply_cause")]
    pub cause: Cause,
}

fn apply_cause() -> Cause {
    Cause::Apply
}

impl AppSpec {
    /// A spec with every optional field at its default, for tests and examples.
    pub fn new(name: &str, image: &str, replicas: u32, resources: Resources) -> AppSpec {
        AppSpec {
            name: AppName::new(name),
            image: image.to_owned(),
            command: Vec::new(),
            env: BTreeMap::new(),
            replicas,
            resources,
            gpu: GpuRequest::default(),
            priority: 0,
            port: 8080,
            container_port: 80,
            constraints: Labels::new(),
            health: HealthCheck::default(),
            autoscale: None,
            volume: None,
            restart: RestartBackoff::default(),
            balance: PickerKind::RoundRobin,
            protocol: Protocol::Http,
            max_body_bytes: None,
            update: UpdatePolicy::default(),
            version: 0,
            redeploys: 0,
            promoted: false,
            history: Vec::new(),
            cause: Cause::Apply,
        }
    }

    /// The slots the app should run now.
    pub fn slots(&self) -> impl Iterator<Item = SlotId> + '_ {
        (0..self.replicas).map(|index| SlotId { app: self.name.clone(), index })
    }

    /// What its balancer is set up with.
    pub fn frontend(&self) -> Frontend {
        Frontend { port: self.port, picker: self.balance, protocol: self.protocol, max_body_bytes: self.max_body_bytes }
    }

    /// Whether `labels` carry every label this app requires.
    pub fn admits(&self, labels: &Labels) -> bool {
        self.constraints.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Why a spec was rejected. Nothing was changed: a rejected spec is not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A field holds a value outside what is allowed.
    #[error("`{field}`: {problem}")]
    Invalid {
        /// The field, as named in the cluster file (`replicas`, `health.timeout_ms`, ...).
        field: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// Two apps share a name.
    #[error("`name`: app name {0:?} is used twice; app names must be unique")]
    DuplicateName(String),
    /// Two apps share a published port.
    #[error("`port`: published port {port} is used by both {first:?} and {second:?}")]
    DuplicatePort {
        /// The port.
        port: u16,
        /// The app listed first.
        first: String,
        /// The app listed second.
        second: String,
    },
}

pub(super) fn invalid(field: &'static str, problem: String) -> SpecError {
    SpecError::Invalid { field, problem }
}

/// `value` of `field` at most `max`, or an error naming both.
fn at_most(field: &'static str, value: u64, max: u64, unit: &str) -> Result<(), SpecError> {
    if value > max {
        return Err(invalid(field, format!("{value} {unit} is more than the limit of {max}")));
    }
    Ok(())
}

/// Checks a node, app or volume name: 1 to 63 characters of `a-z`, `0-9`, `-`, `_` and `.`,
/// starting with a letter or digit. These end up in Docker names and labels, so they stay simple.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > limits::NAME_LEN_MAX {
        return Err(format!("{:?} is {} characters; at most {} are allowed", name, name.len(), limits::NAME_LEN_MAX));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.';
    if !name.chars().all(ok_char) || name.starts_with(['-', '_', '.']) {
        return Err(format!(
            "{name:?} is not allowed: use lowercase letters, digits, '-', '_' and '.', starting with a letter or digit"
        ));
    }
    Ok(())
}

impl AppSpec {
    /// Checks one spec on its own. See [`validate_apps`] for checks across apps.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(self.name.as_str()).map_err(|p| invalid("name", p))?;
        if self.image.trim().is_empty() {
            return Err(invalid("image", "must not be empty".into()));
        }
        if self.replicas > limits::REPLICAS_PER_APP_MAX {
            return Err(invalid(
                "replicas",
                format!("{} is more than the limit of {}", self.replicas, limits::REPLICAS_PER_APP_MAX),
            ));
        }
        // `replicas = 0` keeps an app stopped but applied.
        if let Some(a) = &self.autoscale {
            validate_autoscale(a, self.replicas)?;
        }
        if self.resources.cpu_millis == 0 {
            return Err(invalid("cpu_millis", "must be greater than 0".into()));
        }
        if self.resources.mem_bytes == 0 {
            return Err(invalid("mem_mb", "must be greater than 0".into()));
        }
        at_most("cpu_millis", self.resources.cpu_millis, limits::CPU_MILLIS_MAX, "millicores")?;
        at_most("mem_mb", self.resources.mem_bytes / limits::MIB, limits::MEM_MB_MAX, "MiB")?;
        self.gpu.validate()?;
        if self.port == 0 {
            return Err(invalid("port", "must be between 1 and 65535".into()));
        }
        if self.container_port == 0 {
            return Err(invalid("container_port", "must be between 1 and 65535".into()));
        }
        validate_health(&self.health)?;
        self.frontend().validate()?;
        let r = &self.restart;
        if r.initial_ms == 0 || r.max_ms < r.initial_ms {
            return Err(invalid(
                "restart",
                format!("need 0 < initial_ms <= max_ms, got initial_ms = {} and max_ms = {}", r.initial_ms, r.max_ms),
            ));
        }
        if r.budget == 0 {
            return Err(invalid("restart.budget", "must be at least 1".into()));
        }
        at_most("restart.max_ms", r.max_ms, limits::RESTART_BACKOFF_MS_MAX, "ms")?;
        at_most("restart.reset_after_ms", r.reset_after_ms, limits::DURATION_MS_MAX, "ms")?;
        at_most("restart.budget", u64::from(r.budget), limits::COUNT_MAX, "restarts")?;
        if let Some(v) = &self.volume {
            validate_name(&v.name).map_err(|p| invalid("volume.name", p))?;
            if !v.mount_path.starts_with('/') {
                return Err(invalid("volume.mount_path", format!("{:?} must be an absolute path", v.mount_path)));
            }
        }
        validate_update(&self.update)?;
        self.validate_history()
    }
}

fn validate_autoscale(a: &Autoscale, replicas: u32) -> Result<(), SpecError> {
    if a.max == 0 {
        return Err(invalid("autoscale.max", "must be at least 1".into()));
    }
    if a.min > a.max {
        return Err(invalid("autoscale.min", format!("min ({}) must not exceed max ({})", a.min, a.max)));
    }
    if a.max > limits::REPLICAS_PER_APP_MAX {
        return Err(invalid(
            "autoscale.max",
            format!("{} is more than the limit of {}", a.max, limits::REPLICAS_PER_APP_MAX),
        ));
    }
    if replicas < a.min || replicas > a.max {
        return Err(invalid(
            "replicas",
            format!("the starting count {replicas} must lie within autoscale [min, max] = [{}, {}]", a.min, a.max),
        ));
    }
    match &a.rule {
        ScaleRule::TargetRps { target_rps_per_replica, window_ms, scale_down_stabilization_ms, .. } => {
            at_most(
                "autoscale.scale_down_stabilization_ms",
                *scale_down_stabilization_ms,
                limits::DURATION_MS_MAX,
                "ms",
            )?;
            if *target_rps_per_replica == 0 {
                return Err(invalid("autoscale.target_rps_per_replica", "must be greater than 0".into()));
            }
            if *window_ms == 0 {
                return Err(invalid("autoscale.window_ms", "must be greater than 0".into()));
            }
            at_most("autoscale.window_ms", *window_ms, limits::DURATION_MS_MAX, "ms")?;
        }
        ScaleRule::PerRequests { requests_per_replica, period_ms } => {
            if *requests_per_replica == 0 || *period_ms == 0 {
                return Err(invalid(
                    "autoscale.preset",
                    "requests_per_replica and period_ms must be greater than 0".into(),
                ));
            }
            at_most("autoscale.period_ms", *period_ms, limits::DURATION_MS_MAX, "ms")?;
        }
    }
    Ok(())
}

fn validate_health(h: &HealthCheck) -> Result<(), SpecError> {
    if !h.path.starts_with('/') {
        return Err(invalid("health.path", format!("{:?} must start with '/'", h.path)));
    }
    if h.interval_ms == 0 {
        return Err(invalid("health.interval_ms", "must be greater than 0".into()));
    }
    if h.timeout_ms == 0 || h.timeout_ms > h.interval_ms {
        return Err(invalid(
            "health.timeout_ms",
            format!("must be greater than 0 and at most interval_ms ({}), got {}", h.interval_ms, h.timeout_ms),
        ));
    }
    if h.failures == 0 {
        return Err(invalid("health.failures", "must be at least 1".into()));
    }
    if h.successes == 0 {
        return Err(invalid("health.successes", "must be at least 1".into()));
    }
    at_most("health.interval_ms", h.interval_ms, limits::PROBE_INTERVAL_MS_MAX, "ms")?;
    at_most("health.start_grace_ms", h.start_grace_ms, limits::DURATION_MS_MAX, "ms")?;
    at_most("health.failures", u64::from(h.failures), limits::COUNT_MAX, "probes")?;
    at_most("health.successes", u64::from(h.successes), limits::COUNT_MAX, "probes")?;
    if h.path.len() > limits::PATH_LEN_MAX {
        return Err(invalid(
            "health.path",
            format!("{} bytes, more than the limit of {}", h.path.len(), limits::PATH_LEN_MAX),
        ));
    }
    Ok(())
}

/// Checks every spec and what must hold across them: unique names and unique published ports.
/// On error, returns the index of the offending app with the error.
pub fn validate_apps(apps: &[AppSpec]) -> Result<(), (usize, SpecError)> {
    if apps.len() > limits::APPS_MAX {
        return Err((
            limits::APPS_MAX,
            invalid("app", format!("{} apps; at most {} are allowed", apps.len(), limits::APPS_MAX)),
        ));
    }
    let mut names = BTreeSet::new();
    let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
    for (i, app) in apps.iter().enumerate() {
        app.validate().map_err(|e| (i, e))?;
        if !names.insert(app.name.as_str()) {
            return Err((i, SpecError::DuplicateName(app.name.to_string())));
        }
        if let Some(first) = ports.insert(app.port, app.name.as_str()) {
            return Err((
                i,
                SpecError::DuplicatePort { port: app.port, first: first.to_owned(), second: app.name.to_string() },
            ));
        }
        // Others named for the volume anywhere in the list, or declaring it earlier.
        let others = apps
            .iter()
            .enumerate()
            .filter(|(j, a)| *j != i && (*j < i || app.volume.as_ref().is_some_and(|v| a.name.as_str() == v.name)));
        if let Some(owner) = volume_owner(app, others.map(|(_, a)| a)) {
            return Err((i, volume_taken(app, owner)));
        }
    }
    Ok(())
}

/// The app among `others` that owns `app`'s volume: the one named as the volume, or one that
/// declares it too (an app mounts only its own volumes; the first to declare one owns it).
pub fn volume_owner<'a>(app: &AppSpec, others: impl IntoIterator<Item = &'a AppSpec>) -> Option<&'a AppSpec> {
    let volume = app.volume.as_ref()?;
    others.into_iter().find(|a| {
        a.name != app.name
            && (a.name.as_str() == volume.name || a.volume.as_ref().is_some_and(|v| v.name == volume.name))
    })
}

/// The error of an app whose volume is `owner`'s.
pub fn volume_taken(app: &AppSpec, owner: &AppSpec) -> SpecError {
    let name = app.volume.as_ref().map_or("", |v| v.name.as_str());
    invalid("volume.name", format!("volume {name:?} belongs to app {}; an app mounts only its own volumes", owner.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_counts_and_sizes_have_upper_bounds_named_by_their_key() {
        let base = || AppSpec::new("web", "img", 1, Resources::new(100, 64));
        let mut a = base();
        a.health.interval_ms = u64::MAX;
        a.health.timeout_ms = 1;
        assert!(a.validate().unwrap_err().to_string().contains("health.interval_ms"));
        let mut a = base();
        a.restart.max_ms = u64::MAX;
        assert!(a.validate().unwrap_err().to_string().contains("restart.max_ms"));
        let mut a = base();
        a.resources.cpu_millis = u64::MAX;
        assert!(a.validate().unwrap_err().to_string().contains("cpu_millis"));
        let mut a = base();
        a.health.failures = u32::MAX;
        assert!(a.validate().unwrap_err().to_string().contains("health.failures"));
    }

    proptest! {
        /// Names order, compare, hash and travel exactly as their strings do (the inline head
        /// is only a short cut), NUL bytes and shared prefixes included.
        #[test]
        fn a_name_behaves_as_its_string(a in "[a-c\\x00]{0,10}", b in "[a-c\\x00]{0,10}") {
            let (x, y) = (NodeId::new(&a), NodeId::new(&b));
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x == y, a == b);
            prop_assert_eq!(x.cmp(&x.clone()), std::cmp::Ordering::Equal);
            let hash = |v: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                v(&mut h);
                std::hash::Hasher::finish(&h)
            };
            use std::hash::Hash;
            prop_assert_eq!(hash(&|h| x.hash(h)), hash(&|h| a.hash(h)));
            let bytes = postcard::to_allocvec(&x).expect("a name encodes");
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&a).expect("a string encodes"));
            prop_assert_eq!(postcard::from_bytes::<NodeId>(&bytes).expect("a name decodes"), x);
            let app = AppName::new(&a);
            prop_assert_eq!(app.cmp(&AppName::new(&b)), a.cmp(&b));
            prop_assert_eq!(app.as_str(), a.as_str());
        }
    }

    fn web() -> AppSpec {
        AppSpec::new("web", "canteen-demo:latest", 3, Resources::new(500, 256))
    }

    #[test]
    fn a_default_spec_is_valid() {
        web().validate().unwrap();
    }

    #[test]
    fn bad_specs_are_rejected_naming_the_field() {
        type Case = (fn(&mut AppSpec), &'static str);
        let cases: Vec<Case> = vec![
            (|a| a.name = AppName::new(""), "name"),
            (|a| a.name = AppName::new("Web App"), "name"),
            (|a| a.image = " ".into(), "image"),
            (|a| a.resources.cpu_millis = 0, "cpu_millis"),
            (|a| a.resources.mem_bytes = 0, "mem_mb"),
            (|a| a.port = 0, "port"),
            (|a| a.container_port = 0, "container_port"),
            (|a| a.health.timeout_ms = 5000, "health.timeout_ms"),
            (|a| a.health.path = "health".into(), "health.path"),
            (|a| a.autoscale = Some(Autoscale { min: 5, max: 2, rule: ScaleRule::target_rps(10) }), "autoscale.min"),
            (|a| a.autoscale = Some(Autoscale { min: 1, max: 2, rule: ScaleRule::target_rps(10) }), "replicas"),
        ];
        for (mutate, field) in cases {
            let mut app = web();
            mutate(&mut app);
            match app.validate() {
                Err(SpecError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected an error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn zero_replicas_are_allowed_when_autoscaled_from_zero() {
        let mut app = web();
        app.replicas = 0;
        app.autoscale = Some(Autoscale { min: 0, max: 4, rule: ScaleRule::PER_20_REQUESTS_120S });
        app.validate().unwrap();
    }

    #[test]
    fn duplicate_names_and_ports_are_rejected() {
        let mut other = web();
        other.port = 9090;
        assert_eq!(validate_apps(&[web(), other]), Err((1, SpecError::DuplicateName("web".into()))));
        let mut other = web();
        other.name = AppName::new("api");
        assert!(matches!(validate_apps(&[web(), other]), Err((1, SpecError::DuplicatePort { port: 8080, .. }))));
    }

    #[test]
    fn constraints_require_every_label() {
        let mut app = web();
        app.constraints.insert("disk".into(), "ssd".into());
        let mut labels = Labels::new();
        assert!(!app.admits(&labels));
        labels.insert("disk".into(), "ssd".into());
        labels.insert("zone".into(), "a".into());
        assert!(app.admits(&labels));
        labels.insert("disk".into(), "hdd".into());
        assert!(!app.admits(&labels));
    }
}
