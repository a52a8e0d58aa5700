//! The attacks of issue 19, each as a keyed member (a bug or a stolen key) would send it to a
//! node of two: none may panic it, freeze it, grow it past its bounds or spread from it.

use std::collections::VecDeque;

use super::tests::pump;
use super::*;
use crate::membership::{SwimId, SwimMember};
use crate::model::{GpuShare, NodeSpec, Resources};
use crate::registry::{Head, Version};

fn swim_pair() -> [Node; 2] {
    let mut nodes = ["a", "b"].map(|id| {
        let last = if id == "a" { 1 } else { 2 };
        let mut config = NodeConfig::new(NodeId::new(id), &format!("10.0.0.{last}"), Resources::new(4000, 4096));
        config.membership = MembershipMode::Swim;
        config.gossip_addr = PeerAddr::new(&format!("10.0.0.{last}:7946"));
        config.seeds = vec![PeerAddr::new("10.0.0.1:7946")];
        config.generation = 1;
        let mut node = Node::new(Time::ZERO, config);
        while node.poll_action().is_some() {}
        node
    });
    pump(&mut nodes, 0, 3000, |_| false);
    assert!(nodes[0].members().contains(&NodeId::new("b")));
    nodes
}

/// Runs the pair from `from_ms` to `until_ms`, packets 1 ms on their way; what goes to any
/// other address (the forged members) is lost.
fn pump_lossy(nodes: &mut [Node; 2], from_ms: u64, until_ms: u64) {
    let addrs = [nodes[0].config().gossip_addr.clone(), nodes[1].config().gossip_addr.clone()];
    let mut in_flight: VecDeque<(u64, usize, Vec<u8>)> = VecDeque::new();
    for now in from_ms..=until_ms {
        while in_flight.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, to, bytes) = in_flight.pop_front().expect("peeked");
            nodes[to].handle_message(Time::from_millis(now), &bytes);
            drain_to(&mut nodes[to], &addrs, now, &mut in_flight);
        }
        for node in nodes.iter_mut() {
            if node.poll_timeout().is_some_and(|t| t.as_millis() <= now) {
                node.handle_timeout(Time::from_millis(now));
                drain_to(node, &addrs, now, &mut in_flight);
            }
        }
    }
}

fn drain_to(node: &mut Node, addrs: &[PeerAddr; 2], now: u64, in_flight: &mut VecDeque<(u64, usize, Vec<u8>)>) {
    while let Some(action) = node.poll_action() {
        if let Action::Send { to, bytes } = action
            && let Some(i) = addrs.iter().position(|a| *a == to)
        {
            in_flight.push_back((now + 1, i, bytes));
        }
    }
}

/// Feeds `bytes` to `node` at `at_ms`; returns the events it reported.
fn feed(node: &mut Node, at_ms: u64, bytes: &[u8]) -> Vec<Event> {
    node.handle_message(Time::from_millis(at_ms), bytes);
    let mut events = Vec::new();
    while let Some(action) = node.poll_action() {
        if let Action::Event(e) = action {
            events.push(e);
        }
    }
    events
}

fn sync_from_b(node: &Node, mut members: Vec<SwimMember>) -> Vec<u8> {
    let b = node.liveness.swim().unwrap().foca().member(&NodeId::new("b")).unwrap().clone();
    members.insert(0, b);
    Packet::encode(&NodeId::new("b"), &Message::SwimSync { members, reply: false })
}

fn updates(from: &str, key: Key, version: Version, value: Option<Value>) -> Vec<u8> {
    let head = Head::of(&key, &version);
    let body = postcard::to_allocvec(&(key, Entry { version, value })).unwrap();
    Packet::encode(&NodeId::new(from), &Message::Updates(vec![WireEntry { head, body: &body }]))
}

fn refused(events: &[Event], input: &str) -> bool {
    events.iter().any(|e| matches!(e, Event::Refused { input: i, .. } if *i == input))
}

#[test]
fn a_down_under_a_far_future_generation_is_refused_and_the_member_stays() {
    let mut nodes = swim_pair();
    let forged = SwimId::new(NodeId::new("b"), PeerAddr::new("10.0.0.2:7946"), 1 << 60);
    let bytes = sync_from_b(&nodes[0], vec![SwimMember::new(forged, 0, foca::State::Down)]);
    let events = feed(&mut nodes[0], 3001, &bytes);
    assert!(events.iter().any(|e| matches!(e, Event::BadMessage { .. })), "{events:?}");
    pump(&mut nodes, 3002, 8000, |_| false);
    assert!(nodes[0].members().contains(&NodeId::new("b")), "b stays a member");
}

#[test]
fn a_member_with_the_receivers_name_elsewhere_gets_nothing_and_is_listed_as_a_conflict() {
    let mut nodes = swim_pair();
    let twin = SwimId::new(NodeId::new("a"), PeerAddr::new("10.0.0.9:7946"), 5);
    let bytes = sync_from_b(&nodes[0], vec![SwimMember::new(twin, 0, foca::State::Alive)]);
    feed(&mut nodes[0], 3001, &bytes);
    assert!(nodes[0].name_conflicts().is_empty(), "a peer's listing alone is no evidence of a twin");
    // A packet under a's own name is.
    feed(&mut nodes[0], 3001, &Packet::encode(&NodeId::new("a"), &Message::Root(0)));
    assert_eq!(nodes[0].name_conflicts(), vec![(PeerAddr::new("10.0.0.9:7946"), 5)]);
    assert_eq!(nodes[0].members(), &BTreeSet::from([NodeId::new("b")]));
    // Placement still works, on a and b only.
    let web = AppSpec::new("web", "img", 2, Resources::new(100, 64));
    nodes[0].handle_command(Time::from_millis(3002), Command::Apply(Box::new(web))).unwrap();
    pump_lossy(&mut nodes, 3003, 6000);
    assert_eq!(nodes[0].local_slots().len() + nodes[1].local_slots().len(), 2);
}

#[test]
fn an_over_long_identity_is_undecodable() {
    let mut nodes = swim_pair();
    let long = SwimId::new(NodeId::new(&"x".repeat(3000)), PeerAddr::new("10.0.0.3:7946"), 1);
    let bytes = sync_from_b(&nodes[0], vec![SwimMember::new(long, 0, foca::State::Alive)]);
    let events = feed(&mut nodes[0], 3001, &bytes);
    assert!(events.iter().any(|e| matches!(e, Event::BadMessage { .. })), "{events:?}");
    assert_eq!(nodes[0].members().len(), 1);
}

#[test]
fn a_sync_of_thousands_adds_a_bounded_number_and_placement_goes_on() {
    let mut nodes = swim_pair();
    let fakes: Vec<SwimMember> = (0..3000)
        .map(|i| {
            let id = SwimId::new(
                NodeId::new(&format!("fake-{i}")),
                PeerAddr::new(&format!("10.9.{}.{}:7946", i / 250, i % 250)),
                1,
            );
            SwimMember::new(id, 0, foca::State::Alive)
        })
        .collect();
    let bytes = sync_from_b(&nodes[0], fakes);
    feed(&mut nodes[0], 3001, &bytes);
    let members = nodes[0].members().len();
    assert!(members <= 1 + limits::SYNC_NEW_MEMBERS_MAX, "{members} members");
    let web = AppSpec::new("web", "img", 2, Resources::new(100, 64));
    nodes[0].handle_command(Time::from_millis(3002), Command::Apply(Box::new(web))).unwrap();
    // The fakes publish no status: a waits `STATUS_WAIT_MS` for theirs, then places on the
    // nodes that have one, which run both slots.
    pump_lossy(&mut nodes, 3003, 3003 + limits::STATUS_WAIT_MS + 2000);
    assert_eq!(nodes[0].local_slots().len() + nodes[1].local_slots().len(), 2, "placed on a and b");
}

#[test]
fn an_invalid_spec_by_gossip_is_refused_and_never_blocks_a_later_apply() {
    let mut nodes = swim_pair();
    let mut bad = AppSpec::new("evil", "img", 1, Resources::new(0, 64));
    bad.port = 9999;
    let version = Version { wall_ms: 3000, logical: 0, writer: NodeId::new("b") };
    let bytes = updates("b", Key::App(AppName::new("evil")), version.clone(), Some(Value::App(Box::new(bad))));
    assert!(refused(&feed(&mut nodes[0], 3001, &bytes), "entry"));
    assert!(nodes[0].apps().is_empty());
    // A spec under another app's key, and a value of the wrong kind, are refused too.
    let web = AppSpec::new("web", "img", 1, Resources::new(100, 64));
    let bytes = updates("b", Key::App(AppName::new("api")), version.clone(), Some(Value::App(Box::new(web.clone()))));
    assert!(refused(&feed(&mut nodes[0], 3002, &bytes), "entry"));
    let bytes = updates("b", Key::App(AppName::new("api")), version, Some(Value::Scale(3)));
    assert!(refused(&feed(&mut nodes[0], 3003, &bytes), "entry"));
    nodes[0].handle_command(Time::from_millis(3004), Command::Apply(Box::new(web))).unwrap();
}

#[test]
fn a_status_written_by_another_node_or_listing_a_slot_twice_is_refused() {
    let mut nodes = swim_pair();
    let status = |containers: Vec<ContainerStatus>| NodeStatus {
        spec: NodeSpec {
            id: NodeId::new("b"),
            capacity: Resources::new(1, 1),
            labels: Default::default(),
            ..NodeSpec::new("", Resources::ZERO)
        },
        addr: "10.6.6.6".into(),
        containers,
        generation: 1,
    };
    // a forged by "c": traffic theft through b's name.
    let version = Version { wall_ms: 3000, logical: 0, writer: NodeId::new("c") };
    let bytes = updates("c", Key::Status(NodeId::new("b")), version, Some(Value::Status(status(Vec::new()))));
    assert!(refused(&feed(&mut nodes[0], 3001, &bytes), "entry"));
    let twice = ContainerStatus {
        slot: SlotId::new("web", 0),
        container: "c1".into(),
        host_port: 8000,
        state: ContainerState::Healthy,
        version: 0,
        ready: false,
        gpus: Vec::new(),
    };
    let version = Version { wall_ms: 3000, logical: 9, writer: NodeId::new("b") };
    let bytes =
        updates("b", Key::Status(NodeId::new("b")), version, Some(Value::Status(status(vec![twice.clone(), twice]))));
    assert!(refused(&feed(&mut nodes[0], 3002, &bytes), "entry"));
    assert_ne!(
        nodes[0]
            .registry()
            .get(&Key::Status(NodeId::new("b")))
            .map(|v| matches!(v, Value::Status(s) if s.addr == "10.6.6.6")),
        Some(true)
    );
}

#[test]
fn a_status_holding_gpus_the_node_has_not_or_past_their_whole_is_refused() {
    let mut nodes = swim_pair();
    let mut spec = NodeSpec::new("b", Resources::new(1000, 1000));
    spec.gpus = 2;
    spec.gpu_model = "A100".into();
    let container = |index: u32, gpus: Vec<GpuShare>| ContainerStatus {
        slot: SlotId::new("web", index),
        container: format!("c{index}").into(),
        host_port: 8000 + index as u16,
        state: ContainerState::Healthy,
        version: 0,
        ready: false,
        gpus,
    };
    let share = |index, milli| GpuShare { index, milli };
    let forged = [
        vec![container(0, vec![share(2, 1000)])],
        vec![container(0, vec![share(0, 500)]), container(1, vec![share(0, u32::MAX - 100)])],
        vec![container(0, vec![share(0, 600)]), container(1, vec![share(0, 600)])],
        vec![container(0, vec![share(0, 1000), share(1, 300)])],
        vec![container(0, vec![share(1, 0)])],
    ];
    for (k, containers) in forged.into_iter().enumerate() {
        let status = NodeStatus { spec: spec.clone(), addr: "10.6.6.6".into(), containers, generation: 1 };
        let version = Version { wall_ms: 3000, logical: k as u32, writer: NodeId::new("b") };
        let bytes = updates("b", Key::Status(NodeId::new("b")), version, Some(Value::Status(status)));
        assert!(refused(&feed(&mut nodes[0], 3001 + k as u64, &bytes), "entry"), "forged status {k}");
    }
}

#[test]
fn load_reports_count_only_from_members_within_bounds() {
    let mut nodes = swim_pair();
    let load = |from: &str, requests: u64| {
        Packet::encode(&NodeId::new(from), &Message::Load { app: AppName::new("web"), requests })
    };
    assert!(refused(&feed(&mut nodes[0], 3001, &load("mallory", 10)), "load"));
    assert!(refused(&feed(&mut nodes[0], 3002, &load("b", u64::MAX)), "load"));
    assert!(!refused(&feed(&mut nodes[0], 3003, &load("b", 10)), "load"));
}

#[test]
fn the_registry_holds_a_bounded_number_of_keys_of_each_kind() {
    let mut registry: Registry<Value> = Registry::new(NodeId::new("a"));
    let max = crate::registry::kind_max(&Key::Scale(AppName::new("x")));
    let mut refused = 0;
    for i in 0..max + 10 {
        let version = Version { wall_ms: 1, logical: i as u32, writer: NodeId::new("b") };
        let entry = Entry { version, value: Some(Value::Scale(1)) };
        if !registry.merge(Time::from_millis(1), Key::Scale(AppName::new(&format!("app-{i}"))), entry) {
            refused += 1;
        }
    }
    assert_eq!((registry.len(), refused), (max, 10));
    // Another kind still has room.
    let version = Version { wall_ms: 1, logical: 0, writer: NodeId::new("b") };
    assert!(registry.merge(Time::from_millis(1), Key::App(AppName::new("web")), Entry { version, value: None }));
}
