//! The agent's config file (`canteen.toml`): every key has a default, printed whole by
//! `canteen config --defaults`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use canteen_core::cluster_file::FileError;
use canteen_core::limits::MIB;
use canteen_core::membership::{MembershipMode, PeerAddr};
use canteen_core::model::{NodeId, PickerKind, Resources, validate_name};
use canteen_core::node::NodeConfig;
use canteen_core::schedule::Policy;
use canteen_core::seal;
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
    /// Where gossip (the cluster protocol: SWIM membership and the registry's updates) listens,
    /// on one UDP socket. Peers send to it: unless `advertise_ip` is given, its address is the
    /// one this node tells them, so it must not be unspecified (`0.0.0.0`) without one.
    pub gossip_addr: SocketAddr,
    /// The address peers reach this node at, when `gossip_addr` or `container_ip` listens on
    /// every address (`0.0.0.0` or `::`): gossip is advertised at `advertise_ip` with
    /// `gossip_addr`'s port, and peers' balancers reach this node's containers at it. Unset by
    /// default: the two addresses are advertised as they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_ip: Option<IpAddr>,
    /// Gossip addresses of agents to join the cluster through (`HOST:PORT`, a host name or an
    /// IP address), on top of `canteen agent --join`. Empty: this agent starts a cluster of its
    /// own (and others may join it).
    pub join: Vec<String>,
    /// The address the apps' balancers (proxies) listen on, one port per app.
    pub proxy_ip: IpAddr,
    /// The address containers' ports are published on. Balancers of every node connect to it
    /// (`advertise_ip` instead when it is unspecified): on several machines, an address the
    /// others can reach.
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
    /// GPUs this node offers, indexed from 0 as the GPU driver numbers them: containers get
    /// them as device requests. Placement needs no driver: it plans from this.
    pub gpus: u32,
    /// Their model (`A100`); required with `gpus`.
    pub gpu_model: String,
    /// The balancing policy of apps whose file does not give `balance`.
    pub balance: PickerKind,
    /// The placement policy (every node of a cluster must use the same).
    pub policy: Policy,
    /// How long a replica keeps serving what it has before it is stopped.
    pub drain_ms: u64,
    /// The cluster's name, bound into every gossip datagram: a datagram of another cluster is
    /// refused even under the same key.
    pub cluster_name: String,
    /// The cluster keys (base64 of 32 bytes each, from `canteen keygen`): the first seals every
    /// gossip datagram, every one opens. To rotate: add the new key second on every agent,
    /// then move it first on every agent, then remove the old one. Required when gossip is
    /// not on loopback (or `gossip_insecure`).
    pub cluster_keys: Vec<String>,
    /// A file of cluster keys, one per line (`#` comments), after `cluster_keys`' own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_keys_file: Option<PathBuf>,
    /// The token every API request must carry (`Authorization: Bearer <token>`; the CLI's
    /// `--token` or `CANTEEN_TOKEN`): 16 to 256 printable characters, no spaces. Required when
    /// `api_addr` is not loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
    /// A file holding the API token (its first line), instead of `api_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,
    /// The API's TLS certificate chain (PEM), with `api_tls_key`: the API then speaks HTTPS
    /// only (the CLI's `--tls-ca` or `CANTEEN_TLS_CA` names the CA to trust).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `api_tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_tls_key: Option<PathBuf>,
    /// Gossip with no keys on an address that is not loopback: anyone who can send a datagram
    /// to it can then command the cluster. Logged as a warning every minute.
    pub gossip_insecure: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_name: host_name(),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
            advertise_ip: None,
            join: Vec::new(),
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
            gpus: 0,
            gpu_model: String::new(),
            balance: PickerKind::RoundRobin,
            policy: Policy::Spread,
            drain_ms: 1000,
            cluster_name: "canteen".to_owned(),
            cluster_keys: Vec::new(),
            cluster_keys_file: None,
            api_token: None,
            api_token_file: None,
            api_tls_cert: None,
            api_tls_key: None,
            gossip_insecure: false,
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
        use canteen_core::limits::{CPU_MILLIS_MAX, DRAIN_MS_MAX, MEM_MB_MAX, PROBE_INTERVAL_MS_MAX};
        let bounds = [
            ("health_interval_ms", self.health_interval_ms, 1, PROBE_INTERVAL_MS_MAX),
            ("scaling_interval_ms", self.scaling_interval_ms, 1, PROBE_INTERVAL_MS_MAX),
            ("drain_ms", self.drain_ms, 0, DRAIN_MS_MAX),
            ("cpu_millis", self.cpu_millis.unwrap_or(1), 1, CPU_MILLIS_MAX),
            ("mem_mb", self.mem_mb.unwrap_or(1), 1, MEM_MB_MAX),
        ];
        for (key, value, min, max) in bounds {
            if value < min || value > max {
                let hint = if key.starts_with("cpu") || key.starts_with("mem") {
                    " (or leave it out to use the host's)"
                } else {
                    ""
                };
                return err(key, &format!("must be between {min} and {max}, got {value}{hint}"));
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return err("data_dir", "must name a directory");
        }
        if let Some(ip) = self.advertise_ip
            && ip.is_unspecified()
        {
            return err("advertise_ip", &format!("{ip} is no address a peer can reach: give this host's address"));
        }
        if self.gossip_addr.port() == 0 {
            return err("gossip_addr", "needs a port (peers send to it): give HOST:PORT, e.g. 127.0.0.1:7946");
        }
        if self.gossip_addr.ip().is_unspecified() && self.advertise_ip.is_none() {
            return err(
                "gossip_addr",
                &format!(
                    "{} listens on every address, so peers need another to reach this node: give advertise_ip \
                     (this host's address), or a specific gossip_addr",
                    self.gossip_addr
                ),
            );
        }
        if self.container_ip.is_unspecified() && self.advertise_ip.is_none() {
            return err(
                "container_ip",
                &format!(
                    "{} publishes containers on every address, so peers' balancers need another to reach them: \
                     give advertise_ip (this host's address), or a specific container_ip",
                    self.container_ip
                ),
            );
        }
        if let Err(problem) = validate_name(&self.cluster_name) {
            return err("cluster_name", &problem);
        }
        let keys = self.cluster_keys(file)?;
        // The socket's own address counts as well as the advertised one: `0.0.0.0` listens
        // on every interface whatever it advertises.
        let exposed = !self.gossip_advertised().ip().is_loopback() || !self.gossip_addr.ip().is_loopback();
        if keys.is_empty() && !self.gossip_insecure && exposed {
            return err(
                "cluster_keys",
                &format!(
                    "gossip on {} is not loopback: give the cluster's keys (`canteen keygen` prints one; every \
                     agent of the cluster takes the same), or set gossip_insecure = true to let anyone who \
                     can reach that address command the cluster",
                    self.gossip_advertised()
                ),
            );
        }
        if self.api_tls_cert.is_some() != self.api_tls_key.is_some() {
            let key = if self.api_tls_cert.is_some() { "api_tls_key" } else { "api_tls_cert" };
            return err(key, "give both api_tls_cert and api_tls_key (PEM files), or neither");
        }
        if let Err((key, problem)) = self.api_tls() {
            return err(key, &problem);
        }
        let token = self.api_token(file)?;
        if token.is_none() && !self.api_addr.ip().is_loopback() {
            return err(
                "api_token",
                &format!(
                    "the API on {} is reachable from other machines: give api_token (or api_token_file), 16 to \
                     256 printable characters, e.g. a `canteen keygen` key",
                    self.api_addr
                ),
            );
        }
        for addr in &self.join {
            if let Err(problem) = check_peer_addr(addr) {
                return err("join", &format!("{addr:?}: {problem}"));
            }
        }
        // What core bounds (the labels' size above all), named by the key that sets it.
        if let Err(problem) = self.node_config().check() {
            let key = match problem.split(':').next().unwrap_or_default() {
                "node name" => "node_name",
                "addr" => "container_ip",
                "gossip_addr" => "gossip_addr",
                "host_port_min" => "host_port_min",
                "gpus" => "gpus",
                "gpu_model" => "gpu_model",
                _ => "labels",
            };
            return err(key, &problem);
        }
        Ok(())
    }

    /// The cluster keys: `cluster_keys`, then `cluster_keys_file`'s, decoded and checked (32
    /// bytes each, at most `seal::KEYS_MAX`, none twice). Errors name the key or the file.
    pub fn cluster_keys(&self, file: &str) -> Result<Vec<seal::Key>, FileError> {
        let mut keys = Vec::new();
        for (i, text) in self.cluster_keys.iter().enumerate() {
            let key =
                decode_key(text).map_err(|problem| FileError::new(file, format!("cluster_keys[{i}]"), problem))?;
            keys.push(key);
        }
        if let Some(path) = &self.cluster_keys_file {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| FileError::new(file, "cluster_keys_file", format!("cannot read {name}: {e}")))?;
            let lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
            for (i, line) in lines.enumerate() {
                let key =
                    decode_key(line).map_err(|problem| FileError::new(&name, format!("key {}", i + 1), problem))?;
                keys.push(key);
            }
        }
        if keys.len() > seal::KEYS_MAX {
            return Err(FileError::new(
                file,
                "cluster_keys",
                format!("at most {} keys, got {}", seal::KEYS_MAX, keys.len()),
            ));
        }
        if let Err(problem) = seal::Keyring::new(&self.cluster_name, &keys)
            && !keys.is_empty()
        {
            return Err(FileError::new(file, "cluster_keys", problem.to_string()));
        }
        Ok(keys)
    }

    /// The API's TLS server config, when `api_tls_cert` and `api_tls_key` are given: the
    /// certificate chain and key read and checked. Errors name the key.
    pub fn api_tls(&self) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, (&'static str, String)> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (Some(cert), Some(key)) = (&self.api_tls_cert, &self.api_tls_key) else { return Ok(None) };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ("api_tls_cert", format!("{}: not a PEM certificate chain: {e}", cert.display())))?;
        if certs.is_empty() {
            return Err(("api_tls_cert", format!("{}: holds no certificate", cert.display())));
        }
        let private = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| ("api_tls_key", format!("{}: not a PEM private key: {e}", key.display())))?;
        let config = rustls::ServerConfig::builder_with_provider(crate::api::tls_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ("api_tls_cert", e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, private)
            .map_err(|e| ("api_tls_key", format!("does not go with api_tls_cert: {e}")))?;
        Ok(Some(std::sync::Arc::new(config)))
    }

    /// The API token: `api_token`, or the first line of `api_token_file`; checked (16 to 256
    /// printable ASCII characters, no spaces). Errors name the key.
    pub fn api_token(&self, file: &str) -> Result<Option<String>, FileError> {
        let (key, token) = match (&self.api_token, &self.api_token_file) {
            (Some(_), Some(_)) => {
                return Err(FileError::new(file, "api_token_file", "give api_token or api_token_file, not both"));
            }
            (Some(token), None) => ("api_token", token.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    FileError::new(file, "api_token_file", format!("cannot read {}: {e}", path.display()))
                })?;
                ("api_token_file", text.lines().next().unwrap_or("").trim().to_owned())
            }
            (None, None) => return Ok(None),
        };
        let printable = token.bytes().all(|b| b.is_ascii_graphic());
        if !(16..=256).contains(&token.len()) || !printable {
            return Err(FileError::new(
                file,
                key,
                format!("a token is 16 to 256 printable characters with no spaces; got {} characters", token.len()),
            ));
        }
        Ok(Some(token))
    }

    /// The node's config for core: name, the addresses peers reach it at, resources, labels,
    /// policy, host ports, intervals, SWIM membership. The driver adds the seeds, the
    /// generation and the random seed.
    pub fn node_config(&self) -> NodeConfig {
        let mut node = NodeConfig::new(self.node_id(), &self.reachable_container_ip().to_string(), self.resources());
        node.gossip_addr = PeerAddr::new(&self.gossip_advertised().to_string());
        node.membership = MembershipMode::Swim;
        node.labels = self.labels.clone();
        node.gpus = self.gpus;
        node.gpu_model = self.gpu_model.clone();
        node.policy = self.policy;
        node.host_port_min = self.host_port_min;
        node.host_port_max = self.host_port_max;
        node.load_report_interval_ms = self.scaling_interval_ms;
        node.autoscale_interval_ms = self.scaling_interval_ms;
        node.drain_ms = self.drain_ms;
        node
    }

    /// The gossip address this node tells its peers: `gossip_addr`, with `advertise_ip` in
    /// place of its address when given.
    pub fn gossip_advertised(&self) -> SocketAddr {
        SocketAddr::new(self.advertise_ip.unwrap_or(self.gossip_addr.ip()), self.gossip_addr.port())
    }

    /// The address peers' balancers reach this node's containers at: `container_ip`, or
    /// `advertise_ip` when `container_ip` is unspecified.
    pub fn reachable_container_ip(&self) -> IpAddr {
        match self.advertise_ip {
            Some(ip) if self.container_ip.is_unspecified() => ip,
            _ => self.container_ip,
        }
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
        let unset = if resolved.advertise_ip.is_none() {
            "# advertise_ip = \"10.0.0.1\"   (unset: gossip_addr and container_ip are advertised as they are)\n"
        } else {
            ""
        };
        format!(
            "# canteen agent config: every key with its default (cpu_millis and mem_mb from this host).\n{unset}{body}"
        )
    }
}

/// A new cluster key from the OS's randomness, as base64 (`canteen keygen`).
pub fn generate_key() -> Result<String, String> {
    let mut key = [0u8; seal::KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| format!("the OS gave no randomness: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

/// A cluster key from its base64 text: 32 bytes.
fn decode_key(text: &str) -> Result<seal::Key, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64 ({e}): give a key printed by `canteen keygen`"))?;
    seal::Key::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "{} bytes once decoded, a key is {}: give a key printed by `canteen keygen`",
            bytes.len(),
            seal::KEY_BYTES
        )
    })
}

/// What a peer's gossip address may be (`join`, `--join`): `HOST:PORT` with a host name, an
/// IPv4 address or a bracketed IPv6 address, and a port from 1. Says what is wrong otherwise.
pub fn check_peer_addr(addr: &str) -> Result<(), String> {
    const ALLOWED: &str = "must be HOST:PORT (a host name or IP address, and a port from 1 to 65535), \
                           e.g. 127.0.0.1:7946 or node-a:7946";
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        return if socket.port() == 0 || socket.ip().is_unspecified() { Err(ALLOWED.to_owned()) } else { Ok(()) };
    }
    let Some((host, port)) = addr.rsplit_once(':') else { return Err(ALLOWED.to_owned()) };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(()),
        _ => Err(ALLOWED.to_owned()),
    }
}

/// Resolves a peer's gossip address (checked by [`check_peer_addr`]) to one socket address,
/// looking a host name up once. Says what failed otherwise.
pub fn resolve_peer_addr(addr: &str) -> Result<SocketAddr, String> {
    check_peer_addr(addr)?;
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        return Ok(socket);
    }
    let mut found = std::net::ToSocketAddrs::to_socket_addrs(addr).map_err(|e| format!("cannot resolve it: {e}"))?;
    found.next().ok_or_else(|| "the host name resolves to no address".to_owned())
}

/// A TOML syntax or type error with the key it is at (`app.port`), its line and column, and
/// what the decoder expected ([`FileError::from_toml`]).
pub fn toml_error(file: &str, text: &str, err: &toml::de::Error) -> FileError {
    FileError::from_toml(file, text, err)
}

/// `canteen up`'s node name when its config gives none: the host's name and a hash of the
/// data directory, so that two `canteen up`s on one host (each with its own data directory)
/// are two nodes, and one started again on the same directory is the same node.
pub fn node_name_for(data_dir: &Path) -> String {
    let dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_owned());
    let hash = canteen_core::hash::stable_hash(dir.to_string_lossy().as_bytes());
    let mut host = host_name();
    host.truncate(canteen_core::limits::NAME_LEN_MAX - 7);
    let host = host.trim_end_matches('-');
    format!("{host}-{:06x}", hash & 0xff_ffff)
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

    #[test]
    fn an_unspecified_gossip_or_container_address_needs_an_advertise_ip() {
        let e = AgentConfig::parse("c.toml", "gossip_addr = \"0.0.0.0:7946\"\n").unwrap_err();
        assert_eq!(e.key, "gossip_addr");
        assert!(e.to_string().contains("advertise_ip"), "{e}");
        let e = AgentConfig::parse("c.toml", "container_ip = \"0.0.0.0\"\n").unwrap_err();
        assert_eq!(e.key, "container_ip");
        let c = AgentConfig::parse(
            "c.toml",
            "gossip_addr = \"0.0.0.0:7000\"\ncontainer_ip = \"0.0.0.0\"\nadvertise_ip = \"10.1.2.3\"\ngossip_insecure = true\n",
        )
        .unwrap();
        assert_eq!(c.gossip_advertised(), "10.1.2.3:7000".parse().unwrap());
        assert_eq!(c.reachable_container_ip(), "10.1.2.3".parse::<IpAddr>().unwrap());
        let c = AgentConfig::parse(
            "c.toml",
            "container_ip = \"127.0.0.2\"\nadvertise_ip = \"10.1.2.3\"\ngossip_insecure = true\n",
        )
        .unwrap();
        assert_eq!(c.reachable_container_ip(), "127.0.0.2".parse::<IpAddr>().unwrap(), "a specific address stays");
        let e = AgentConfig::parse("c.toml", "advertise_ip = \"0.0.0.0\"\n").unwrap_err();
        assert_eq!(e.key, "advertise_ip");
    }

    #[test]
    fn gossip_off_loopback_needs_cluster_keys_and_keys_are_checked() {
        let e = AgentConfig::parse("c.toml", "advertise_ip = \"10.1.2.3\"\n").unwrap_err();
        assert_eq!(e.key, "cluster_keys", "{e}");
        // Listening on every address needs keys whatever is advertised.
        let e =
            AgentConfig::parse("c.toml", "gossip_addr = \"0.0.0.0:7000\"\nadvertise_ip = \"127.0.0.1\"\n").unwrap_err();
        assert_eq!(e.key, "cluster_keys", "{e}");
        assert!(e.to_string().contains("canteen keygen"), "{e}");
        let key = generate_key().unwrap();
        let c = AgentConfig::parse("c.toml", &format!("advertise_ip = \"10.1.2.3\"\ncluster_keys = [\"{key}\"]\n"))
            .unwrap();
        assert_eq!(c.cluster_keys("c.toml").unwrap().len(), 1);
        for (bad, says) in [("not base64!", "not base64"), ("AAAA", "3 bytes once decoded")] {
            let e = AgentConfig::parse("c.toml", &format!("cluster_keys = [\"{key}\", \"{bad}\"]\n")).unwrap_err();
            assert_eq!(e.key, "cluster_keys[1]", "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = AgentConfig::parse("c.toml", &format!("cluster_keys = [\"{key}\", \"{key}\"]\n")).unwrap_err();
        assert!(e.to_string().contains("repeats"), "{e}");
        let dir = std::env::temp_dir().join(format!("canteen-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        std::fs::write(&file, format!("# rotation in progress\n{}\n\n{key}\n", generate_key().unwrap())).unwrap();
        let c =
            AgentConfig::parse("c.toml", &format!("cluster_keys_file = {:?}\n", file.display().to_string())).unwrap();
        assert_eq!(c.cluster_keys("c.toml").unwrap().len(), 2);
        std::fs::write(&file, "AAAA\n").unwrap();
        let e = AgentConfig::parse("c.toml", &format!("cluster_keys_file = {:?}\n", file.display().to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("key 1"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn durations_and_sizes_have_upper_bounds_named_by_their_key() {
        for (key, value) in [("drain_ms", "18446744073709551615"), ("health_interval_ms", "0"), ("cpu_millis", "0")] {
            let e = AgentConfig::parse("c.toml", &format!("{key} = {value}\n")).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.to_string().contains("between"), "{e}");
        }
    }

    #[test]
    fn an_api_off_loopback_needs_a_token_and_tokens_are_checked() {
        let e = AgentConfig::parse("c.toml", "api_addr = \"0.0.0.0:7070\"\n").unwrap_err();
        assert_eq!(e.key, "api_token", "{e}");
        let c =
            AgentConfig::parse("c.toml", "api_addr = \"0.0.0.0:7070\"\napi_token = \"0123456789abcdef\"\n").unwrap();
        assert_eq!(c.api_token("c.toml").unwrap().as_deref(), Some("0123456789abcdef"));
        for bad in ["short", "has a space in it!!", &"x".repeat(300)] {
            let e = AgentConfig::parse("c.toml", &format!("api_token = {bad:?}\n")).unwrap_err();
            assert_eq!(e.key, "api_token", "{bad}: {e}");
        }
        let e =
            AgentConfig::parse("c.toml", "api_token = \"0123456789abcdef\"\napi_token_file = \"/x\"\n").unwrap_err();
        assert_eq!(e.key, "api_token_file", "{e}");
    }

    #[test]
    fn labels_too_large_for_a_status_are_refused_by_their_key() {
        let big = "x".repeat(1000);
        let text = format!("[labels]\na = \"{big}\"\nb = \"{big}\"\nc = \"{big}\"\nd = \"{big}\"\ne = \"{big}\"\n");
        let e = AgentConfig::parse("c.toml", &text).unwrap_err();
        assert_eq!(e.key, "labels", "{e}");
        assert!(e.to_string().contains("at most"), "{e}");
    }

    #[test]
    fn gpus_come_with_their_model_and_bad_ones_are_refused_by_their_key() {
        let c = AgentConfig::parse("c.toml", "gpus = 8\ngpu_model = \"A100\"\n").unwrap();
        let node = c.node_config();
        assert_eq!((node.gpus, node.gpu_model.as_str()), (8, "A100"));
        for (text, key) in [
            ("gpus = 2\n", "gpu_model"),
            ("gpu_model = \"A100\"\n", "gpu_model"),
            ("gpus = 65\ngpu_model = \"A100\"\n", "gpus"),
            ("gpus = 1\ngpu_model = \"A 100\"\n", "gpu_model"),
        ] {
            let e = AgentConfig::parse("c.toml", text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }

    #[test]
    fn join_addresses_are_host_and_port() {
        for good in ["127.0.0.1:7946", "node-a:7946", "a.example.org:1", "[::1]:7946"] {
            assert!(check_peer_addr(good).is_ok(), "{good}");
        }
        for bad in ["127.0.0.1", "node-a", ":7946", "node-a:0", "node-a:70000", "no_underscore:1", "0.0.0.0:7946", ""] {
            assert!(check_peer_addr(bad).is_err(), "{bad}");
        }
        let e = AgentConfig::parse("c.toml", "join = [\"10.0.0.2\"]\n").unwrap_err();
        assert_eq!(e.key, "join");
        assert!(e.to_string().contains("HOST:PORT"), "{e}");
        assert_eq!(resolve_peer_addr("localhost:7946").unwrap().port(), 7946);
    }
}
