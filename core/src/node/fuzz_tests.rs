//! A fuzzer over `Node::handle_message`: no input from the network may panic a node, grow it
//! past its bounds, or make it answer with more than it was sent.
//!
//! Inputs: packets two SWIM nodes really exchanged while running an app, mutated (bits
//! flipped, bytes set to edge values, cut, spliced, varints stretched), random bytes, and
//! well-formed messages with hostile fields (names of every length including the receiver's
//! own, generations and versions at the edges, thousands of members, capacities of zero and
//! of u64::MAX, statuses naming other nodes). Each case feeds one node a stream of them, with
//! its timers firing in between, so that a poisoned state shows up in later passes too.
//!
//! `CANTEEN_FUZZ_INPUTS` sets the number of inputs (default 20,000, a few seconds in a debug
//! build); the note of issue 19 gives a run of millions.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;

use super::*;
use crate::membership::{SwimId, SwimMember};
use crate::model::{Labels, NodeSpec, Resources};
use crate::registry::Head;
use crate::rng::SplitMix64;

const NAMES: [&str; 6] = ["a", "b", "c", "web", "x", ""];

fn swim_node(id: &str, last_octet: u8) -> Node {
    let mut config = NodeConfig::new(NodeId::new(id), &format!("10.0.0.{last_octet}"), Resources::new(4000, 4096));
    config.membership = MembershipMode::Swim;
    config.gossip_addr = PeerAddr::new(&format!("10.0.0.{last_octet}:7946"));
    config.seeds = vec![PeerAddr::new("10.0.0.1:7946")];
    config.generation = 1;
    Node::new(Time::ZERO, config)
}

/// What a node asked for, carried out: packets to the other node (and kept in `sent`),
/// containers started at once, probes answered by an exit (so that slots churn).
struct Corpus {
    sent: Vec<Vec<u8>>,
    in_flight: VecDeque<(u64, usize, Vec<u8>)>,
    next_container: u64,
}

impl Corpus {
    fn drain(&mut self, node: &mut Node, i: usize, now: u64) {
        let mut events = Vec::new();
        while let Some(action) = node.poll_action() {
            match action {
                Action::Send { bytes, .. } => {
                    self.sent.push(bytes.clone());
                    self.in_flight.push_back((now + 1, 1 - i, bytes));
                }
                Action::StartContainer { slot, generation, .. } => {
                    self.next_container += 1;
                    let container = format!("c{}", self.next_container);
                    events.push(ContainerEvent::Started { slot, generation, container });
                }
                Action::Probe { container, .. } => events.push(ContainerEvent::Exited { container }),
                _ => {}
            }
        }
        for event in events {
            node.handle_container_event(Time::from_millis(now), event);
            self.drain(node, i, now);
        }
    }
}

/// Two SWIM nodes `a` and `b` run an app of 4 replicas for `ms`; returns `a` and every packet
/// they sent.
fn corpus(ms: u64) -> (Node, Vec<Vec<u8>>) {
    let mut nodes = [swim_node("a", 1), swim_node("b", 2)];
    let mut c = Corpus { sent: Vec::new(), in_flight: VecDeque::new(), next_container: 0 };
    c.drain(&mut nodes[0], 0, 0);
    c.drain(&mut nodes[1], 1, 0);
    let mut spec = AppSpec::new("web", "canteen-demo:latest", 4, Resources::new(100, 64));
    spec.port = 9000;
    nodes[0].handle_command(Time::from_millis(1), Command::Apply(Box::new(spec))).unwrap();
    c.drain(&mut nodes[0], 0, 1);
    for now in 1..=ms {
        let t = Time::from_millis(now);
        while c.in_flight.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, to, bytes) = c.in_flight.pop_front().expect("peeked");
            nodes[to].handle_message(t, &bytes);
            c.drain(&mut nodes[to], to, now);
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            if node.poll_timeout().is_some_and(|due| due <= t) {
                node.handle_timeout(t);
                c.drain(node, i, now);
            }
        }
    }
    let [a, _] = nodes;
    (a, c.sent)
}

/// Drains `node`'s actions, checking that what it sends fits one datagram.
fn drain_checked(node: &mut Node) {
    while let Some(action) = node.poll_action() {
        if let Action::Send { bytes, .. } = action {
            assert!(bytes.len() <= limits::PACKET_BYTES_MAX, "a reply fits one datagram");
        }
    }
}

/// A name: mostly short and known, sometimes long or odd.
fn name(rng: &mut SplitMix64) -> String {
    match rng.below(10) {
        0 => "n".repeat(1 + rng.below(3000)),
        1 => "é\u{0}/..".to_owned(),
        2 => format!("node-{}", rng.below(5000)),
        _ => NAMES[rng.below(NAMES.len())].to_owned(),
    }
}

/// A number at the edges as often as in the middle.
fn edge(rng: &mut SplitMix64) -> u64 {
    match rng.below(6) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.below(4) as u64,
        3 => 1 << rng.below(64),
        _ => rng.next_u64(),
    }
}

fn resources(rng: &mut SplitMix64) -> Resources {
    Resources { cpu_millis: edge(rng), mem_bytes: edge(rng) }
}

fn app_spec(rng: &mut SplitMix64) -> AppSpec {
    let mut spec = AppSpec::new("web", "img", 1, Resources::new(100, 64));
    spec.name = AppName::new(&name(rng));
    spec.replicas = edge(rng) as u32;
    spec.resources = resources(rng);
    spec.port = edge(rng) as u16;
    spec.container_port = edge(rng) as u16;
    spec.priority = edge(rng) as i32;
    spec.health.interval_ms = edge(rng);
    spec.health.timeout_ms = edge(rng);
    spec.health.failures = edge(rng) as u32;
    spec.restart.initial_ms = edge(rng);
    if rng.below(3) == 0 {
        spec.image = "i".repeat(rng.below(100_000));
    }
    spec
}

fn status(rng: &mut SplitMix64, writer: &str) -> NodeStatus {
    let owner = if rng.below(2) == 0 { writer.to_owned() } else { name(rng) };
    let most = if rng.below(4) == 0 { 500 } else { 5 };
    let containers = (0..rng.below(most))
        .map(|_| ContainerStatus {
            slot: SlotId::new(AppName::new(&name(rng)), edge(rng) as u32),
            container: name(rng).into(),
            host_port: edge(rng) as u16,
            state: [
                ContainerState::Starting,
                ContainerState::Healthy,
                ContainerState::Unhealthy,
                ContainerState::Failed,
            ][rng.below(4)],
            version: edge(rng),
            ready: rng.below(2) == 0,
            gpus: Vec::new(),
        })
        .collect();
    NodeStatus {
        spec: NodeSpec {
            id: NodeId::new(&owner),
            capacity: resources(rng),
            labels: Labels::new(),
            ..NodeSpec::new("", Resources::ZERO)
        },
        addr: name(rng),
        containers,
        generation: edge(rng),
    }
}

fn entry(rng: &mut SplitMix64, now: u64) -> (Key, Entry<Value>) {
    let writer = name(rng);
    let key_name = if rng.below(2) == 0 { writer.clone() } else { name(rng) };
    let (key, value) = match rng.below(4) {
        0 => (Key::App(AppName::new(&key_name)), Value::App(Box::new(app_spec(rng)))),
        1 => (Key::Status(NodeId::new(&key_name)), Value::Status(status(rng, &writer))),
        2 => (Key::Scale(AppName::new(&key_name)), Value::Scale(edge(rng) as u32)),
        // A load key never carries a value today; whatever arrives there must be refused.
        _ => (Key::Load(NodeId::new(&key_name)), Value::Scale(edge(rng) as u32)),
    };
    let wall_ms = match rng.below(4) {
        0 => now + rng.below(1_000_000) as u64,
        1 => edge(rng),
        _ => now.saturating_sub(rng.below(10_000) as u64),
    };
    let version = crate::registry::Version { wall_ms, logical: edge(rng) as u32, writer: NodeId::new(&writer) };
    let value = (rng.below(5) != 0).then_some(value);
    (key, Entry { version, value })
}

fn swim_member(rng: &mut SplitMix64) -> SwimMember {
    let addr = match rng.below(4) {
        0 => "10.0.0.1:7946".to_owned(),
        1 => "10.0.0.2:7946".to_owned(),
        _ => name(rng),
    };
    let id = SwimId::new(NodeId::new(&name(rng)), PeerAddr::new(&addr), edge(rng));
    let state = [foca::State::Alive, foca::State::Suspect, foca::State::Down][rng.below(3)];
    SwimMember::new(id, edge(rng) as u16, state)
}

/// A well-formed message with hostile fields, encoded.
fn hostile_message(rng: &mut SplitMix64, now: u64, corpus: &[Vec<u8>]) -> Vec<u8> {
    let from = NodeId::new(&name(rng));
    let hashes = |rng: &mut SplitMix64, n: usize| (0..n).map(|_| edge(rng)).collect::<Vec<u64>>();
    match rng.below(8) {
        0 | 1 => {
            let entries: Vec<(Key, Entry<Value>)> = (0..1 + rng.below(40)).map(|_| entry(rng, now)).collect();
            let bodies: Vec<Vec<u8>> = entries.iter().map(|e| postcard::to_allocvec(e).unwrap()).collect();
            let wire: Vec<WireEntry<'_>> = entries
                .iter()
                .zip(&bodies)
                .map(|((k, e), body)| {
                    // Sometimes a head that lies about its body.
                    let head = if rng.below(8) == 0 {
                        Head::of(&Key::App(AppName::new("liar")), &e.version)
                    } else {
                        Head::of(k, &e.version)
                    };
                    WireEntry { head, body }
                })
                .collect();
            if rng.below(2) == 0 {
                Packet::encode(&from, &Message::Updates(wire))
            } else {
                let n = rng.below(5000);
                let want = hashes(rng, n);
                Packet::encode(&from, &Message::Repair { entries: wire, want })
            }
        }
        2 => {
            let most = if rng.below(3) == 0 { 3000 } else { 10 };
            let members = (0..rng.below(most)).map(|_| swim_member(rng)).collect();
            Packet::encode(&from, &Message::SwimSync { members, reply: rng.below(2) == 0 })
        }
        3 => {
            let sender = swim_member(rng).id().clone();
            Packet::encode(&from, &Message::SwimSuspicion { sender, suspect: swim_member(rng) })
        }
        4 => Packet::encode(&from, &Message::Load { app: AppName::new(&name(rng)), requests: edge(rng) }),
        5 => {
            let buckets = (0..rng.below(300)).map(|_| edge(rng) as u16).collect();
            let heads = (0..rng.below(3000))
                .map(|_| Head::of(&Key::App(AppName::new(&name(rng))), &entry(rng, now).1.version))
                .collect();
            Packet::encode(&from, &Message::Summary { buckets, heads })
        }
        6 => {
            let n = rng.below(200);
            let digest = crate::registry::Digest { buckets: hashes(rng, n) };
            Packet::encode(&from, &Message::Digest(digest))
        }
        _ => {
            // A real SWIM payload under another sender name and root.
            let Some(bytes) = corpus.get(rng.below(corpus.len().max(1))) else { return Vec::new() };
            match postcard::from_bytes::<Packet<'_>>(bytes) {
                Ok(Packet { message: Message::Swim(_, swim), .. }) => {
                    Packet::encode(&from, &Message::Swim(edge(rng), swim))
                }
                _ => bytes.clone(),
            }
        }
    }
}

/// A corpus packet, mutated.
fn mutated(rng: &mut SplitMix64, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(6) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = [0x00, 0xff, 0x7f, 0x80, 0x01][rng.below(5)],
            2 => bytes.truncate(at),
            3 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len().max(1));
                bytes.truncate(at);
                bytes.extend_from_slice(&other[from.min(other.len())..]);
            }
            4 => {
                let varint = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
                bytes.splice(at..at, varint[10 - 1 - rng.below(9)..].iter().copied());
            }
            _ => {
                let n = rng.below(64);
                bytes.splice(at..at, (0..n).map(|_| rng.next_u64() as u8));
            }
        }
    }
    bytes
}

/// Feeds node `a` `inputs` hostile inputs drawn from `seed`, its timers firing every 50 ms of
/// simulated time, and checks after each that what it sends fits a datagram and that its
/// members and registry stay within their bounds.
fn fuzz(seed: u64, inputs: usize) {
    let (mut node, corpus) = corpus(6000);
    assert!(corpus.len() > 50, "the two nodes talked");
    let mut rng = SplitMix64::new(seed);
    let mut now = 6000u64;
    for i in 0..inputs {
        let input = match rng.below(4) {
            0 => hostile_message(&mut rng, now, &corpus),
            1 => (0..rng.below(200)).map(|_| rng.next_u64() as u8).collect(),
            _ => mutated(&mut rng, &corpus),
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            node.handle_message(Time::from_millis(now), &input);
            drain_checked(&mut node);
            if i % 8 == 0 {
                now += 50;
                node.handle_timeout(Time::from_millis(now));
                drain_checked(&mut node);
            }
            assert!(node.members().len() <= limits::NODES_MAX);
            assert!(node.registry().len() <= limits::REGISTRY_KEYS_MAX);
        }));
        if let Err(panic) = outcome {
            eprintln!("seed {seed}, input {i} panicked the node; the input: {input:02x?}");
            std::panic::resume_unwind(panic);
        }
    }
}

fn inputs() -> usize {
    std::env::var("CANTEEN_FUZZ_INPUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

#[test]
fn no_input_from_the_network_panics_a_node() {
    let seeds = std::env::var("CANTEEN_FUZZ_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1u64);
    for seed in 0..seeds {
        fuzz(seed, inputs());
    }
}
