//! The agent's settings: [`NodeConfig`], with a default for every field.

use serde::{Deserialize, Serialize};

use crate::limits;
use crate::membership::{MembershipMode, PeerAddr, SwimConfig};
use crate::model::{HostPorts, Labels, NodeId, NodeSpec, Resources};
use crate::schedule::Policy;

/// How one agent behaves. Every field has a default that suits a LAN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// This node's unique name.
    pub id: NodeId,
    /// The host other nodes' balancers use to reach this node's containers.
    pub addr: String,
    /// Where peers send this node's packets (gossip and SWIM): the real agent's UDP socket as
    /// `host:port`, the simulator's node address. By default the node's name.
    pub gossip_addr: PeerAddr,
    /// What this node offers to containers.
    pub capacity: Resources,
    /// This node's labels, matched by app constraints.
    pub labels: Labels,
    /// GPUs this node offers to containers, indexed from 0 (`NodeSpec::gpus`).
    pub gpus: u32,
    /// Their model; empty when it has none.
    pub gpu_model: String,
    /// The placement policy. Every node of a cluster must use the same one.
    pub policy: Policy,
    /// Host ports for containers: `host_port_min..=host_port_max`.
    pub host_port_min: u16,
    /// See `host_port_min`.
    pub host_port_max: u16,
    /// How often news is pushed to a few peers.
    pub gossip_interval_ms: u64,
    /// How many peers each round of news goes to.
    pub gossip_fanout: usize,
    /// How many rounds a piece of news is pushed by each node that learns it.
    pub rumor_rounds: u32,
    /// How often this node compares its registry with one random peer's. With SWIM, whose
    /// packets carry the sender's root, the least time between two digests this node sends
    /// in answer to a root that differs from its own.
    pub anti_entropy_interval_ms: u64,
    /// How long after a change of facts the placement is computed again (changes in a burst
    /// cost one pass).
    pub reconcile_delay_ms: u64,
    /// The least time between two placement passes: under a storm of changes (a thousand nodes
    /// starting at once) a node computes placement this often at most, instead of once per
    /// burst. A lone change still gets its pass after `reconcile_delay_ms`.
    pub reconcile_interval_min_ms: u64,
    /// How often request counts go to each app's coordinator.
    pub load_report_interval_ms: u64,
    /// How often a coordinator evaluates its apps' autoscalers.
    pub autoscale_interval_ms: u64,
    /// A slot that failed here past its restart budget is kept away from this node this long.
    pub failed_cooldown_ms: u64,
    /// How long a stopped replica keeps serving requests it already has.
    pub drain_ms: u64,
    /// How long a node claims a slot placed on it before starting a container for it. Nodes
    /// whose views differ for a moment may both claim a slot; the claims meet in the registry
    /// and the loser withdraws before any container exists. Should exceed the time a status
    /// takes to spread.
    pub claim_settle_ms: u64,
    /// How long a replica that turned healthy waits before this node's status says so, so
    /// that the replicas a node starts together are announced in one status version instead
    /// of one each: every version of every status is merged by every peer. Anything else (a
    /// claim, a replica unhealthy or stopped) is published at once and carries what waits.
    /// Peers send a new replica requests this much later at most; 0 publishes at once.
    pub status_batch_ms: u64,
    /// Seeds this node's randomness (peer choice, balancer start positions).
    pub seed: u64,
    /// How this node learns which peers are alive.
    pub membership: MembershipMode,
    /// SWIM settings, used in [`MembershipMode::Swim`]: see [`SwimConfig`] for the preset and
    /// its detection time.
    pub swim: SwimConfig,
    /// The addresses to join through at start in [`MembershipMode::Swim`] (this node's own may
    /// be among them; it is left out). Their names need not be known. More can be given later
    /// through [`super::Node::handle_join`].
    pub seeds: Vec<PeerAddr>,
    /// This life of the node, for SWIM: higher after every restart, so peers that declared the
    /// previous life down take the node back. The real agent may use its start time.
    pub generation: u64,
}

impl NodeConfig {
    /// A config with every default, for a node named `id` reachable at `addr`.
    pub fn new(id: NodeId, addr: &str, capacity: Resources) -> NodeConfig {
        NodeConfig {
            gossip_addr: PeerAddr::new(id.as_str()),
            id,
            addr: addr.to_owned(),
            capacity,
            labels: Labels::new(),
            gpus: 0,
            gpu_model: String::new(),
            policy: Policy::default(),
            host_port_min: 8000,
            host_port_max: 8999,
            gossip_interval_ms: 200,
            gossip_fanout: 3,
            rumor_rounds: 3,
            anti_entropy_interval_ms: 1000,
            reconcile_delay_ms: 20,
            reconcile_interval_min_ms: 500,
            load_report_interval_ms: 1000,
            autoscale_interval_ms: 1000,
            failed_cooldown_ms: 300_000,
            drain_ms: 1000,
            claim_settle_ms: 400,
            status_batch_ms: 500,
            seed: 0,
            membership: MembershipMode::default(),
            swim: SwimConfig::default(),
            seeds: Vec::new(),
            generation: 0,
        }
    }

    /// Checks what a driver takes from its operator: the node's name, its addresses and the
    /// size of its spec (a status listing every slot must fit one registry value). The error
    /// names the field and what is allowed; [`super::Node::new`] asserts this holds.
    pub fn check(&self) -> Result<(), String> {
        crate::model::validate_name(self.id.as_str()).map_err(|e| format!("node name: {e}"))?;
        for (field, addr) in [("addr", self.addr.as_str()), ("gossip_addr", self.gossip_addr.as_str())] {
            if addr.is_empty() || addr.len() > limits::NODE_ADDR_LEN_MAX {
                return Err(format!(
                    "{field}: must be 1 to {} characters, got {}",
                    limits::NODE_ADDR_LEN_MAX,
                    addr.len()
                ));
            }
        }
        let spec_bytes = postcard::to_allocvec(&self.spec()).expect("specs encode").len();
        if spec_bytes > limits::NODE_SPEC_BYTES_MAX {
            return Err(format!(
                "labels: {spec_bytes} bytes encoded, at most {} allowed: fewer or shorter labels",
                limits::NODE_SPEC_BYTES_MAX
            ));
        }
        if self.gpus > limits::GPUS_PER_NODE_MAX {
            return Err(format!("gpus: {} is more than the limit of {}", self.gpus, limits::GPUS_PER_NODE_MAX));
        }
        if self.gpus > 0 {
            crate::model::validate_gpu_model(&self.gpu_model).map_err(|e| format!("gpu_model: {e}"))?;
        } else if !self.gpu_model.is_empty() {
            return Err("gpu_model: given for a node with no GPUs (gpus = 0)".into());
        }
        if self.host_port_min > self.host_port_max {
            return Err(format!(
                "host_port_min ({}) is above host_port_max ({})",
                self.host_port_min, self.host_port_max
            ));
        }
        Ok(())
    }

    pub(super) fn spec(&self) -> NodeSpec {
        NodeSpec {
            id: self.id.clone(),
            capacity: self.capacity,
            labels: self.labels.clone(),
            gpus: self.gpus,
            gpu_model: self.gpu_model.clone(),
            host_ports: HostPorts { min: self.host_port_min, max: self.host_port_max },
        }
    }
}
