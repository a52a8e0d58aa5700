//! The agent's config file (`canteen.toml`): every key has a default, printed whole by
//! `canteen config --defaults`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use canteen_core::cluster_file::FileError;
use canteen_core::limits::MIB;
use canteen_core::model::{NodeId, PickerKind, Resources, validate_name};
use canteen_core::schedule::Policy;
use serde::{Deserialize, Serialize};

/// How one agent runs. Keys missing from the file take their default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// This node's name: unique in the cluster, and the label its containers carry. Default:
    /// the host name.
    pub node_name: String,
    /// Where the HTTP API (used by the CLI) listens.
    pub api_addr: SocketAddr,
    /// Where gossip listens (UDP). Used by the cluster protocol, not built yet.
    pub gossip_addr: SocketAddr,
    /// The address the apps' balancers (proxies) listen on, one port per app.
    pub proxy_ip: IpAddr,
    /// The address containers' ports are published on, and that balancers connect to.
    pub container_ip: IpAddr,
    /// Host ports for containers: `host_port_min..=host_port_max`.
    pub host_port_min: u16,
    /// See `host_port_min`.
    pub host_port_max: u16,
    /// The health-check interval of apps whose file does not give `[app.health] interval_ms`.
    pub health_interval_ms: u64,
    /// How often request counts feed the autoscaler and the autoscaler is evaluated.
    pub scaling_interval_ms: u64,
    /// Where the desired state is kept across restarts.
    pub data_dir: PathBuf,
    /// CPU offered to containers, in millicores. Default: 1000 per host core.
    pub cpu_millis: Option<u64>,
    /// Memory offered to containers, in MiB. Default: the host's memory.
    pub mem_mb: Option<u64>,
    /// This node's labels, matched by apps' constraints.
    pub labels: BTreeMap<String, String>,
    /// The balancing policy of apps whose file does not give `balance`.
    pub balance: PickerKind,
    /// The placement policy (every node of a cluster must use the same).
    pub policy: Policy,
    /// How long a replica keeps serving what it has before it is stopped.
    pub drain_ms: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_name: host_name(),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
            proxy_ip: IpAddr::from([127, 0, 0, 1]),
            container_ip: IpAddr::from([127, 0, 0, 1]),
            host_port_min: 8000,
            host_port_max: 8999,
            health_interval_ms: 1000,
            scaling_interval_ms: 1000,
            data_dir: PathBuf::from("/var/lib/canteen"),
            cpu_millis: None,
            mem_mb: None,
            labels: BTreeMap::new(),
            balance: PickerKind::RoundRobin,
            policy: Policy::Spread,
            drain_ms: 1000,
        }
    }
}

impl AgentConfig {
    /// Reads and checks a config file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<AgentConfig, FileError> {
        let config: AgentConfig = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
        config.check(file)?;
        Ok(config)
    }

    /// Reads a config file from disk.
    pub fn load(path: &Path) -> Result<AgentConfig, FileError> {
        let name = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| FileError::new(&name, "(file)", format!("cannot read: {e}")))?;
        AgentConfig::parse(&name, &text)
    }

    fn check(&self, file: &str) -> Result<(), FileError> {
        let err = |key: &str, message: &str| Err(FileError::new(file, key, message));
        if let Err(problem) = validate_name(&self.node_name) {
            return err("node_name", &problem);
        }
        if self.host_port_min == 0 || self.host_port_min > self.host_port_max {
            return err("host_port_min", "must be between 1 and host_port_max");
        }
        if self.health_interval_ms == 0 {
            return err("health_interval_ms", "must be at least 1");
        }
        if self.scaling_interval_ms == 0 {
            return err("scaling_interval_ms", "must be at least 1");
        }
        if self.cpu_millis == Some(0) {
            return err("cpu_millis", "must be at least 1 (or leave it out to use the host's cores)");
        }
        if self.mem_mb == Some(0) {
            return err("mem_mb", "must be at least 1 (or leave it out to use the host's memory)");
        }
        if self.data_dir.as_os_str().is_empty() {
            return err("data_dir", "must name a directory");
        }
        Ok(())
    }

    /// The resources offered to containers: as configured, or the host's.
    pub fn resources(&self) -> Resources {
        let cpu_millis = self.cpu_millis.unwrap_or_else(host_cpu_millis);
        let mem_mb = self.mem_mb.unwrap_or_else(host_mem_mb);
        Resources::new(cpu_millis, mem_mb)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        NodeId::new(&self.node_name)
    }

    /// The config with every default filled in (the host's resources resolved), as TOML.
    pub fn to_toml_with_defaults(&self) -> String {
        let mut resolved = self.clone();
        let resources = self.resources();
        resolved.cpu_millis = Some(resources.cpu_millis);
        resolved.mem_mb = Some(resources.mem_bytes / MIB);
        let body = toml::to_string(&resolved).expect("the config encodes");
        format!("# canteen agent config: every key with its default (cpu_millis and mem_mb from this host).\n{body}")
    }
}

/// A TOML syntax or type error with the key it is at (`app.port`), its line and column, and
/// what the decoder expected.
pub fn toml_error(file: &str, text: &str, err: &toml::de::Error) -> FileError {
    let mut e = FileError::from_toml(file, text, err);
    if let Some(span) = err.span() {
        e.key = key_at(text, span.start).unwrap_or_default();
    }
    e
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

/// The host's name, or `node` when it has none usable as a node name.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if validate_name(&name).is_ok() { name } else { "node".to_owned() }
}

fn host_cpu_millis() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000
}

fn host_mem_mb() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(1024, |kb| kb / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_every_default() {
        assert_eq!(AgentConfig::parse("c.toml", "").unwrap(), AgentConfig::default());
    }

    #[test]
    fn the_printed_defaults_parse_back() {
        let text = AgentConfig::default().to_toml_with_defaults();
        let back = AgentConfig::parse("c.toml", &text).unwrap();
        assert_eq!(back.host_port_min, 8000);
        assert!(back.cpu_millis.is_some() && back.mem_mb.is_some());
    }

    #[test]
    fn a_bad_key_names_the_file_and_the_key() {
        let e = AgentConfig::parse("c.toml", "host_port_min = 9000\nhost_port_max = 8000\n").unwrap_err();
        assert_eq!(e.key, "host_port_min");
        let e = AgentConfig::parse("c.toml", "bogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("c.toml"), "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = AgentConfig::parse("c.toml", "balance = \"fastest\"\n").unwrap_err();
        assert_eq!(e.key, "balance");
        assert!(e.to_string().contains("round-robin"), "{e}");
    }
}
