//! The lab's network: one bridge on this machine, and per node a network namespace with its own
//! address on it, as if each node were a machine of its own on one switch.
//!
//! ```text
//!   root namespace: bridge cl-br0 10.77.0.254 (the lab, Docker's published ports)
//!      |-- veth cl-v0 == eth0 in netns cl-n0, 10.77.0.1  (agent node 0)
//!      |-- veth cl-v1 == eth0 in netns cl-n1, 10.77.0.2  (agent node 1)
//!      ...
//! ```
//!
//! Docker runs in the root namespace, so it publishes every node's containers there; each
//! node's namespace forwards its own host-port range (`node_ports`) at its own address to them
//! (DNAT, and masquerade so answers come back through it), as a separate machine's Docker
//! would. A peer's balancer therefore reaches a node's containers only through that node's
//! address, which is what partitions cut and packet loss degrades. In each namespace, one
//! nftables table does it all: the port forwarding, the set `cut` of peer addresses dropped in
//! and out (a partition), and packet loss as a random drop of packets to peers only, so the
//! lab's own probes and samples are not degraded. The links add no latency: this machine's
//! kernel has no netem, so the scenario's `net_latency_ms_*` is not emulated (a veth hop takes
//! tens of microseconds).

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The bridge every node's link plugs into.
pub const BRIDGE: &str = "cl-br0";
/// Network namespaces are named this, then the node's index.
pub const NETNS_PREFIX: &str = "cl-n";
/// The bridge's own address: the root namespace, where Docker publishes ports.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
/// Node addresses are `10.77.0.1` up; this prefix holds them all and not the gateway.
const PEERS_PREFIX: &str = "10.77.0.0/25";
/// Node `i`'s host ports start here plus 100 times `i`.
pub const HOST_PORT_BASE: u16 = 28000;
/// Host ports per node.
pub const HOST_PORTS_PER_NODE: u16 = 100;
/// The forward rule the lab adds when the bridge's frames go through iptables.
const FORWARD_RULE: [&str; 6] = ["-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"];

/// Node `i`'s address.
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, i as u8 + 1)
}

/// Node `i`'s network namespace.
pub fn netns(i: usize) -> String {
    format!("{NETNS_PREFIX}{i}")
}

/// Node `i`'s host-port range, inclusive.
pub fn node_ports(i: usize) -> (u16, u16) {
    let lo = HOST_PORT_BASE + HOST_PORTS_PER_NODE * i as u16;
    (lo, lo + HOST_PORTS_PER_NODE - 1)
}

/// A command that failed: which, and what it printed.
#[derive(Debug)]
pub struct CommandError(pub String);

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CommandError {}

/// Runs `args` (program first); an error names the command and carries its stderr.
pub fn sh(args: &[&str]) -> Result<String, CommandError> {
    sh_with_input(args, None)
}

fn sh_with_input(args: &[&str], input: Option<&str>) -> Result<String, CommandError> {
    use std::io::Write as _;
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]).stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| CommandError(format!("{}: cannot run: {e}", args.join(" "))))?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(text.as_bytes()).map_err(|e| CommandError(format!("{}: stdin: {e}", args.join(" "))))?;
    }
    let out = child.wait_with_output().map_err(|e| CommandError(format!("{}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(CommandError(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The network of a run of `nodes` nodes; [`Net::remove`] (or [`clean`]) takes it down.
#[derive(Debug)]
pub struct Net {
    nodes: usize,
}

impl Net {
    /// Creates the bridge and every node's namespace, link, address, forwarding and filters.
    pub fn create(nodes: usize) -> Result<Net, CommandError> {
        let gw = format!("{GATEWAY}/24");
        sh(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
        sh(&["ip", "addr", "add", &gw, "dev", BRIDGE])?;
        sh(&["ip", "link", "set", BRIDGE, "up"])?;
        // Docker's FORWARD policy is DROP: where bridged frames go through iptables
        // (br_netfilter), frames between two nodes would be dropped without this.
        if std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables").is_ok_and(|v| v.trim() == "1") {
            let mut args = vec!["iptables", "-I", "FORWARD", "1"];
            args.extend(FORWARD_RULE);
            sh(&args)?;
        }
        let net = Net { nodes };
        for i in 0..nodes {
            net.create_node(i)?;
        }
        Ok(net)
    }

    fn create_node(&self, i: usize) -> Result<(), CommandError> {
        let ns = netns(i);
        let veth = format!("cl-v{i}");
        let addr = format!("{}/24", node_ip(i));
        sh(&["ip", "netns", "add", &ns])?;
        sh(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        sh(&["ip", "link", "set", &veth, "master", BRIDGE, "up"])?;
        sh(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        sh(&["ip", "netns", "exec", &ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let (lo, hi) = node_ports(i);
        let me = node_ip(i);
        let gossip = crate::hosts::GOSSIP_PORT;
        let table = format!(
            "table ip canteen_lab {{
  set cut {{ type ipv4_addr; }}
  chain cut_in {{ type filter hook prerouting priority raw; policy accept; ip saddr @cut drop; }}
  chain cut_out {{ type filter hook output priority raw; policy accept; ip daddr @cut drop; }}
  chain forward_in {{ type nat hook prerouting priority dstnat; policy accept; ip daddr {me} tcp dport {lo}-{hi} dnat to {GATEWAY}; }}
  chain forward_local {{ type nat hook output priority -100; policy accept; ip daddr {me} tcp dport {lo}-{hi} dnat to {GATEWAY}; }}
  chain answers {{ type nat hook postrouting priority srcnat; policy accept; ip daddr {GATEWAY} tcp dport {lo}-{hi} masquerade; }}
  chain loss {{ type filter hook postrouting priority filter; policy accept; }}
  counter gossip_sent {{ }}
  chain gossip {{ type filter hook output priority filter; policy accept; udp dport {gossip} counter name gossip_sent; }}
}}
"
        );
        sh_with_input(&["ip", "netns", "exec", &ns, "nft", "-f", "-"], Some(&table))?;
        Ok(())
    }

    /// Node `i` drops each packet it sends to a peer with probability `loss` (0 to 1): an
    /// nftables rule drawing a random number per packet, on the way out (its own packets and
    /// those it forwards: answers from its containers). Not `tc netem`: this machine's kernel
    /// has no netem (nor any classful qdisc but htb), and the rule does the same to each packet.
    fn set_loss(&self, i: usize, loss: f64) -> Result<(), CommandError> {
        let permille = (loss * 1000.0).round() as u32;
        let mut script = "flush chain ip canteen_lab loss\n".to_owned();
        if permille > 0 {
            script.push_str(&format!(
                "add rule ip canteen_lab loss ip daddr {PEERS_PREFIX} numgen random mod 1000 < {permille} drop\n"
            ));
        }
        sh_with_input(&["ip", "netns", "exec", &netns(i), "nft", "-f", "-"], Some(&script))?;
        Ok(())
    }

    /// Bytes node `i` has sent to its peers' gossip port, IP and UDP headers included.
    pub fn gossip_bytes(&self, i: usize) -> Option<u64> {
        let out =
            sh(&["ip", "netns", "exec", &netns(i), "nft", "-j", "list", "counter", "ip", "canteen_lab", "gossip_sent"])
                .ok()?;
        let json: serde_json::Value = serde_json::from_str(&out).ok()?;
        json["nftables"].as_array()?.iter().find_map(|o| o["counter"]["bytes"].as_u64())
    }

    /// Every datagram and segment between nodes is lost with probability `ratio`.
    pub fn packet_loss(&self, ratio: f64) -> Result<(), CommandError> {
        (0..self.nodes).try_for_each(|i| self.set_loss(i, ratio))
    }

    /// Node `i`'s link goes down (a crashed machine answers nothing) or up.
    pub fn set_link(&self, i: usize, up: bool) -> Result<(), CommandError> {
        sh(&["ip", "-n", &netns(i), "link", "set", "eth0", if up { "up" } else { "down" }])?;
        Ok(())
    }

    /// The partition map: `group[i]` is node `i`'s side; nodes of different sides drop each
    /// other's packets, gossip and data alike. All sides equal: the network is whole.
    pub fn partition(&self, group: &[usize]) -> Result<(), CommandError> {
        for i in 0..self.nodes {
            let ns = netns(i);
            let cut: Vec<String> =
                (0..self.nodes).filter(|j| group[*j] != group[i]).map(|j| node_ip(j).to_string()).collect();
            let mut script = "flush set ip canteen_lab cut\n".to_owned();
            if !cut.is_empty() {
                script.push_str(&format!("add element ip canteen_lab cut {{ {} }}\n", cut.join(", ")));
            }
            sh_with_input(&["ip", "netns", "exec", &ns, "nft", "-f", "-"], Some(&script))?;
        }
        Ok(())
    }

    /// Ends every partition and every packet loss.
    pub fn heal(&self) -> Result<(), CommandError> {
        self.partition(&vec![0; self.nodes])?;
        self.packet_loss(0.0)
    }
}

/// Removes whatever a lab run left: the processes in its namespaces, the namespaces (their
/// links go with them), the bridge and the forward rule. Quiet when there is nothing.
pub fn clean() {
    let list = sh(&["ip", "netns", "list"]).unwrap_or_default();
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(NETNS_PREFIX)) {
        for pid in sh(&["ip", "netns", "pids", ns]).unwrap_or_default().split_whitespace() {
            let _ = sh(&["kill", "-9", pid]);
        }
        let _ = sh(&["ip", "netns", "del", ns]);
    }
    // A namespace goes only once its last process is gone, and its links with it: the host
    // ends of the links are removed here rather than waited for.
    let links = sh(&["ip", "-o", "link", "show"]).unwrap_or_default();
    for link in links.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap_or(n)) {
        if link.starts_with("cl-v") {
            let _ = sh(&["ip", "link", "del", link]);
        }
    }
    let _ = sh(&["ip", "link", "del", BRIDGE]);
    loop {
        let mut args = vec!["iptables", "-D", "FORWARD"];
        args.extend(FORWARD_RULE);
        if sh(&args).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_have_distinct_addresses_and_port_ranges_below_the_gateway() {
        assert_eq!(node_ip(0), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(node_ip(9), Ipv4Addr::new(10, 77, 0, 10));
        assert_eq!(node_ports(0), (28000, 28099));
        assert_eq!(node_ports(9), (28900, 28999));
        assert!(node_ip(crate::admit::NODES_MAX - 1).octets()[3] < 128, "inside {PEERS_PREFIX}");
    }

    #[test]
    fn a_failed_command_names_itself_and_what_it_said() {
        let e = sh(&["sh", "-c", "echo oops >&2; exit 3"]).unwrap_err();
        assert!(e.0.contains("sh -c") && e.0.contains("oops"), "{e}");
        let e = sh(&["/nonexistent-canteen-lab-binary"]).unwrap_err();
        assert!(e.0.contains("cannot run"), "{e}");
    }
}
