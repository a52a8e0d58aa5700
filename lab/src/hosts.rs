//! The lab's hosts: one `canteen agent` process per node, in the node's network namespace, with
//! its own config, data directory, API, gossip and balancer addresses and host-port range, on
//! this machine's Docker engine. Cluster keys and an API token are made fresh for every run.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use canteen_docker::api::Api;
use canteen_sim::scenario::Scenario;

use crate::net;

/// Where a run keeps its agents' configs, data directories and logs.
pub const LAB_DIR: &str = "/tmp/canteen-lab";
/// Every agent's API port, on its own address.
pub const API_PORT: u16 = 7070;
/// Every agent's gossip port, on its own address.
pub const GOSSIP_PORT: u16 = 7946;
/// Agents join the cluster through the first few nodes started at time 0, as simulated nodes do.
const SEEDS: usize = 3;

/// The agents of a run. Dropping it SIGKILLs every agent still running.
#[derive(Debug)]
pub struct Agents {
    bin: PathBuf,
    dir: PathBuf,
    token: String,
    procs: Vec<Option<Child>>,
    configs: Vec<String>,
}

/// `n` random bytes from the kernel.
fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

impl Agents {
    /// The agents of `scenario`, run from the `canteen` binary `bin`; nothing starts yet.
    pub fn new(bin: &Path, scenario: &Scenario) -> std::io::Result<Agents> {
        let dir = PathBuf::from(LAB_DIR);
        let token: String = random_bytes(16)?.iter().map(|b| format!("{b:02x}")).collect();
        let key = base64::engine::general_purpose::STANDARD.encode(random_bytes(32)?);
        let late = &scenario.sim.late_nodes;
        let seeds: Vec<usize> = (0..scenario.cluster.nodes.len()).filter(|i| !late.contains(i)).take(SEEDS).collect();
        let configs =
            (0..scenario.cluster.nodes.len()).map(|i| config_text(scenario, i, &seeds, &dir, &token, &key)).collect();
        for i in 0..scenario.cluster.nodes.len() {
            std::fs::create_dir_all(dir.join(format!("n{i}")))?;
        }
        Ok(Agents {
            bin: bin.to_owned(),
            dir,
            token,
            procs: (0..scenario.cluster.nodes.len()).map(|_| None).collect(),
            configs,
        })
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{i}"))
    }

    /// Starts node `i`'s agent in its namespace; its output goes to `n<i>/agent.log`.
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let dir = self.node_dir(i);
        let config = dir.join("canteen.toml");
        std::fs::write(&config, &self.configs[i]).map_err(|e| format!("{}: {e}", config.display()))?;
        let log_path = dir.join("agent.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &net::netns(i)])
            .arg(&self.bin)
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {} in {}: {e}", self.bin.display(), net::netns(i)))?;
        self.procs[i] = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i`'s agent, as a crash would, and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Removes node `i`'s saved state: a replaced machine starts empty.
    pub fn wipe(&self, i: usize) {
        let _ = std::fs::remove_dir_all(self.node_dir(i).join("data"));
    }

    /// Whether node `i`'s agent process runs (it may have exited on its own: an error).
    pub fn running(&mut self, i: usize) -> bool {
        match &mut self.procs[i] {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Node `i`'s agent process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(Child::id)
    }

    /// Node `i`'s API, with the run's token.
    pub fn api(&self, i: usize) -> Api {
        Api {
            addr: std::net::SocketAddr::from((net::node_ip(i), API_PORT)),
            token: Some(self.token.clone()),
            tls_ca: None,
        }
    }

    /// The last lines of node `i`'s agent log, for an error message.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.node_dir(i).join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// The identities of the agents started so far (each agent makes its own in its data
    /// directory): every container of the lab carries one of them.
    pub fn identities(&self) -> std::collections::HashSet<String> {
        (0..self.procs.len())
            .filter_map(|i| std::fs::read_to_string(self.node_dir(i).join("data").join("identity")).ok())
            .map(|id| id.trim().to_owned())
            .collect()
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}

/// The identities (`data/identity`) of the agents a run left in [`LAB_DIR`]: their containers
/// carry them, so they can be found and removed whatever became of the run.
pub fn leftover_identities() -> Vec<String> {
    let Ok(dirs) = std::fs::read_dir(LAB_DIR) else { return Vec::new() };
    dirs.filter_map(|d| d.ok())
        .filter_map(|d| std::fs::read_to_string(d.path().join("data").join("identity")).ok())
        .map(|id| id.trim().to_owned())
        .collect()
}

/// Node `i`'s agent config.
fn config_text(scenario: &Scenario, i: usize, seeds: &[usize], dir: &Path, token: &str, key: &str) -> String {
    let node = &scenario.cluster.nodes[i];
    let ip = net::node_ip(i);
    let (lo, hi) = net::node_ports(i);
    let join: Vec<String> =
        seeds.iter().filter(|s| **s != i).map(|s| format!("\"{}:{GOSSIP_PORT}\"", net::node_ip(*s))).collect();
    let labels: Vec<String> = node.labels.iter().map(|(k, v)| format!("{k:?} = {v:?}")).collect();
    format!(
        "# canteen-lab: node {i} of {file}\n\
         node_name = {name:?}\n\
         api_addr = \"{ip}:{API_PORT}\"\n\
         gossip_addr = \"{ip}:{GOSSIP_PORT}\"\n\
         advertise_ip = \"{ip}\"\n\
         join = [{join}]\n\
         proxy_ip = \"{ip}\"\n\
         container_ip = \"0.0.0.0\"\n\
         host_port_min = {lo}\n\
         host_port_max = {hi}\n\
         data_dir = {data:?}\n\
         cpu_millis = {cpu}\n\
         mem_mb = {mem}\n\
         {gpus}\
         policy = \"{policy}\"\n\
         cluster_name = \"canteen-lab\"\n\
         cluster_keys = [\"{key}\"]\n\
         api_token = \"{token}\"\n\
         [labels]\n{labels}\n",
        file = scenario.file,
        name = node.id.as_str(),
        join = join.join(", "),
        data = dir.join(format!("n{i}")).join("data").display().to_string(),
        cpu = node.capacity.cpu_millis,
        mem = node.capacity.mem_bytes / canteen_core::limits::MIB,
        policy = scenario.cluster.policy,
        gpus = if node.gpus > 0 {
            format!("gpus = {}\ngpu_model = {:?}\n", node.gpus, node.gpu_model)
        } else {
            String::new()
        },
        labels = labels.join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agent_config_parses_as_the_agent_reads_it() {
        let text = "name = \"t\"\nduration_s = 60\n[cluster]\nnodes = 4\ncpu_millis = 2000\nmem_mb = 2048\n\
                    [sim]\nlate_nodes = [1]\n";
        let s = canteen_sim::scenario::parse("t.toml", text).expect("valid");
        let seeds = [0, 2, 3];
        for i in 0..4 {
            let config = config_text(&s, i, &seeds, Path::new("/tmp/x"), "0123456789abcdef0123", &"A".repeat(43));
            let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
            let config = config.replace(&"A".repeat(43), &key);
            let parsed = canteen_docker::config::AgentConfig::parse("lab.toml", &config)
                .unwrap_or_else(|e| panic!("node {i}: {e}\n{config}"));
            assert_eq!(parsed.node_name, s.cluster.nodes[i].id.as_str());
            assert_eq!(parsed.reachable_container_ip(), std::net::IpAddr::V4(net::node_ip(i)));
            assert_eq!((parsed.host_port_min, parsed.host_port_max), net::node_ports(i));
            assert!(!parsed.join.iter().any(|j| j.starts_with(&format!("{}:", net::node_ip(i)))), "no self-join");
            assert_eq!(parsed.resources(), s.cluster.nodes[i].capacity);
        }
    }
}
