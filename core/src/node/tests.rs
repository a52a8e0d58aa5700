use super::wire::encode_with_entries;
use super::*;
use crate::model::{Autoscale, ScaleRule, Volume};
use crate::model::{Labels, NodeSpec, Resources};
use crate::registry::Head;
use std::collections::VecDeque;

fn full_spec() -> AppSpec {
    let mut spec = AppSpec::new("web", "canteen-demo:latest", 3, Resources::new(500, 256));
    spec.autoscale = Some(Autoscale { min: 1, max: 9, rule: ScaleRule::target_rps(100) });
    spec.volume = Some(Volume { name: "web-data".into(), mount_path: "/data".into() });
    spec.constraints.insert("disk".into(), "ssd".into());
    spec.env.insert("MODE".into(), "prod".into());
    spec.command = vec!["/demo".into(), "--port".into(), "80".into()];
    spec
}

#[test]
fn every_message_survives_the_wire_format() {
    let mut registry: Registry<Value> = Registry::new(NodeId::new("a"));
    let t = Time::from_millis(5);
    registry.put(t, Key::App(AppName::new("web")), Value::App(Box::new(full_spec()))).unwrap();
    let per_requests =
        AppSpec { autoscale: Some(Autoscale { min: 1, max: 5, rule: ScaleRule::PER_20_REQUESTS_120S }), ..full_spec() };
    registry
        .put(
            t,
            Key::App(AppName::new("w2")),
            Value::App(Box::new(AppSpec { name: AppName::new("w2"), ..per_requests })),
        )
        .unwrap();
    registry.put(t, Key::Scale(AppName::new("web")), Value::Scale(4)).unwrap();
    let status = NodeStatus {
        spec: NodeSpec {
            id: NodeId::new("a"),
            capacity: Resources::new(1000, 1000),
            labels: Labels::new(),
            ..NodeSpec::new("", Resources::ZERO)
        },
        addr: "10.0.0.1".into(),
        generation: 1,
        containers: vec![ContainerStatus {
            slot: SlotId::new("web", 0),
            container: "c1".into(),
            host_port: 8000,
            state: ContainerState::Healthy,
            version: 0,
            ready: false,
            gpus: Vec::new(),
        }],
    };
    registry.put(t, Key::Status(NodeId::new("a")), Value::Status(status)).unwrap();
    registry.remove(t, Key::App(AppName::new("gone")));
    let entries: Vec<(Key, Entry<Value>)> = registry.iter().map(|(k, e)| (k.clone(), e.clone())).collect();
    let bodies: Vec<Vec<u8>> = entries.iter().map(|e| postcard::to_allocvec(e).unwrap()).collect();
    let wire: Vec<WireEntry> =
        entries.iter().zip(&bodies).map(|((k, e), body)| WireEntry { head: Head::of(k, &e.version), body }).collect();
    let heads: Vec<Head> = wire.iter().map(|w| w.head).collect();
    let messages = [
        Message::Updates(wire.clone()),
        Message::Root(registry.root_hash()),
        Message::Digest(registry.digest()),
        Message::Summary { buckets: vec![0, 63], heads },
        Message::Repair { entries: wire.clone(), want: vec![1, 2] },
        Message::Load { app: AppName::new("web"), requests: 7 },
        Message::SwimSync {
            members: vec![foca::Member::alive(crate::membership::SwimId::new(
                NodeId::new("a"),
                PeerAddr::new("10.0.0.1:7946"),
                3,
            ))],
            reply: true,
        },
        Message::SwimSuspicion {
            sender: crate::membership::SwimId::new(NodeId::new("a"), PeerAddr::new("10.0.0.1:7946"), 3),
            suspect: foca::Member::new(
                crate::membership::SwimId::new(NodeId::new("b"), PeerAddr::new("10.0.0.2:7946"), 1),
                4,
                foca::State::Suspect,
            ),
        },
    ];
    let from = NodeId::new("a");
    for m in messages {
        let bytes = Packet::encode(&from, &m);
        assert_eq!(postcard::from_bytes::<Packet>(&bytes).unwrap(), Packet { from: from.clone(), message: m });
    }
    for (w, (key, entry)) in wire.iter().zip(&entries) {
        let decoded: (Key, Entry<Value>) = postcard::from_bytes(w.body).unwrap();
        assert_eq!((&decoded.0, &decoded.1), (key, entry), "each body decodes to its entry");
    }
}

/// Runs two nodes that believe each other alive until `until_ms`, delivering their
/// messages 1 ms after they are sent, except those `drop` rejects.
pub(super) fn pump(nodes: &mut [Node; 2], from_ms: u64, until_ms: u64, drop: impl Fn(&Message) -> bool) {
    pump_directed(nodes, from_ms, until_ms, |_, m| drop(m), |_, _| {})
}

/// [`pump`], where `drop` also sees which node sent the message (0 or 1), and `observe`
/// sees both nodes at the end of every millisecond.
pub(super) fn pump_directed(
    nodes: &mut [Node; 2],
    from_ms: u64,
    until_ms: u64,
    drop: impl Fn(usize, &Message) -> bool,
    mut observe: impl FnMut(u64, &[Node; 2]),
) {
    let addrs = [nodes[0].config().gossip_addr.clone(), nodes[1].config().gossip_addr.clone()];
    let mut in_flight: VecDeque<(u64, usize, Vec<u8>)> = VecDeque::new();
    let drain = |node: &mut Node, from: usize, now: u64, in_flight: &mut VecDeque<(u64, usize, Vec<u8>)>| {
        while let Some(action) = node.poll_action() {
            if let Action::Send { to, bytes } = action {
                assert!(bytes.len() <= limits::PACKET_BYTES_MAX, "every packet fits one datagram");
                let packet = postcard::from_bytes::<Packet>(&bytes).expect("own messages decode");
                assert_eq!(packet.from, *node.id(), "a packet names its sender");
                // Only two nodes: whatever a node sends goes to the other, seeds included.
                assert!(to == addrs[1 - from] || node.config().seeds.contains(&to), "sent to {to}");
                if !drop(from, &packet.message) {
                    in_flight.push_back((now + 1, 1 - from, bytes));
                }
            }
        }
    };
    for now in from_ms..=until_ms {
        while in_flight.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, to, bytes) = in_flight.pop_front().expect("peeked");
            nodes[to].handle_message(Time::from_millis(now), &bytes);
            drain(&mut nodes[to], to, now, &mut in_flight);
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            if node.poll_timeout().is_some_and(|t| t.as_millis() <= now) {
                node.handle_timeout(Time::from_millis(now));
                drain(node, i, now, &mut in_flight);
            }
        }
        observe(now, nodes);
    }
}

fn two_nodes() -> [Node; 2] {
    let mut nodes = ["a", "b"]
        .map(|id| Node::new(Time::ZERO, NodeConfig::new(NodeId::new(id), "10.0.0.1", Resources::new(4000, 4096))));
    for (node, peer) in nodes.iter_mut().zip(["b", "a"]) {
        while node.poll_action().is_some() {}
        node.handle_membership(Time::from_millis(1), [(NodeId::new(peer), PeerAddr::new(peer))]);
        while node.poll_action().is_some() {}
    }
    nodes
}

/// `b`'s status, written by its life `generation`, running `web-0` healthy on port 8000,
/// as a packet from `b`.
fn status_packet(generation: u64, wall_ms: u64) -> Vec<u8> {
    let b = NodeId::new("b");
    let mut registry: Registry<Value> = Registry::new(b.clone());
    let status = NodeStatus {
        spec: NodeSpec {
            id: b.clone(),
            capacity: Resources::new(4000, 4096),
            labels: Labels::new(),
            ..NodeSpec::new("", Resources::ZERO)
        },
        addr: "10.0.0.2".into(),
        generation,
        containers: vec![ContainerStatus {
            slot: SlotId::new("web", 0),
            container: "c1".into(),
            host_port: 8000,
            state: ContainerState::Healthy,
            version: 0,
            ready: false,
            gpus: Vec::new(),
        }],
    };
    registry.put(Time::from_millis(wall_ms), Key::Status(b.clone()), Value::Status(status)).unwrap();
    let entries: Vec<(Key, Entry<Value>)> = registry.iter().map(|(k, e)| (k.clone(), e.clone())).collect();
    let mut packets = encode_with_entries(&entries, |wire| Packet::encode(&b, &Message::Updates(wire)));
    assert_eq!(packets.len(), 1, "one small status is one packet");
    packets.pop().expect("one packet")
}

/// A container that took 900 ms to start, of a 1,000 ms start grace, still has the whole
/// grace to boot: failed probes in the first second after it runs are not counted; the
/// first failure after that is (one failure makes it unhealthy here), and it is stopped.
#[test]
fn the_start_grace_counts_from_when_the_container_runs() {
    let mut a = Node::new(Time::ZERO, NodeConfig::new(NodeId::new("a"), "10.0.0.1", Resources::new(4000, 4096)));
    a.handle_membership(Time::from_millis(1), []);
    let mut spec = AppSpec::new("web", "canteen-demo:latest", 1, Resources::new(500, 256));
    spec.health.start_grace_ms = 1000;
    spec.health.interval_ms = 100;
    spec.health.timeout_ms = 50;
    spec.health.failures = 1;
    a.handle_command(Time::from_millis(2), Command::Apply(Box::new(spec))).expect("a valid app");
    // Timers run until the node asks for its container.
    let mut now = 2;
    let (slot, generation) = loop {
        let start = std::iter::from_fn(|| a.poll_action()).find_map(|action| match action {
            Action::StartContainer { slot, generation, .. } => Some((slot, generation)),
            _ => None,
        });
        if let Some(start) = start {
            break start;
        }
        now = a.poll_timeout().expect("a claim is pending").as_millis();
        assert!(now < 5_000, "the slot is started");
        a.handle_timeout(Time::from_millis(now));
    };
    let running = now + 900;
    a.handle_container_event(
        Time::from_millis(running),
        ContainerEvent::Started { slot, generation, container: "c1".into() },
    );
    // Every probe fails; the node is woken at each of its timers.
    let mut stopped_at = None;
    while stopped_at.is_none() && now < running + 3_000 {
        while let Some(action) = a.poll_action() {
            match action {
                Action::Probe { container, .. } => {
                    a.handle_probe_result(Time::from_millis(now), &container, ProbeOutcome::Failure)
                }
                Action::StopContainer { .. } => stopped_at = Some(now),
                _ => {}
            }
        }
        now = a.poll_timeout().expect("probes are due").as_millis().max(now);
        a.handle_timeout(Time::from_millis(now));
    }
    let stopped_at = stopped_at.expect("a container that never answers is stopped");
    assert!(stopped_at >= running + 1000, "stopped {} ms after it ran, inside its grace", stopped_at - running);
    assert!(stopped_at <= running + 1100, "the first failure after the grace counts");
}

/// The replicas a node starts together turn healthy at different times (each start takes
/// its own time) and are announced in one status version, `status_batch_ms` after the
/// first; the node's own balancer takes each at once; a replica that turns unhealthy is
/// announced at once.
#[test]
fn replicas_turning_healthy_together_are_announced_in_one_status_version() {
    let mut a = Node::new(Time::ZERO, NodeConfig::new(NodeId::new("a"), "10.0.0.1", Resources::new(4000, 4096)));
    let batch = a.config.status_batch_ms;
    a.handle_membership(Time::from_millis(1), []);
    let mut spec = AppSpec::new("web", "canteen-demo:latest", 2, Resources::new(500, 256));
    spec.health.interval_ms = 100;
    spec.health.timeout_ms = 50;
    spec.health.start_grace_ms = 0;
    spec.health.failures = 1;
    a.handle_command(Time::from_millis(2), Command::Apply(Box::new(spec))).expect("a valid app");
    let key = Key::Status(NodeId::new("a"));
    let states = |a: &Node| match a.registry.get(&key) {
        Some(Value::Status(s)) => s.containers.iter().map(|c| c.state).collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    // Timers run until the node asks for both containers.
    let mut now = 2;
    let mut starts = Vec::new();
    while starts.len() < 2 {
        starts.extend(std::iter::from_fn(|| a.poll_action()).filter_map(|action| match action {
            Action::StartContainer { slot, generation, .. } => Some((slot, generation)),
            _ => None,
        }));
        now = a.poll_timeout().expect("a claim is pending").as_millis();
        assert!(now < 5_000, "both slots are started");
        a.handle_timeout(Time::from_millis(now));
    }
    // The first runs 100 ms after the request, the second 400 ms after; every probe
    // passes until `failing` is set.
    let mut pending: Vec<(u64, SlotId, u64, String)> = starts
        .into_iter()
        .zip([100, 400])
        .map(|((slot, g), after)| (now + after, slot, g, format!("c{after}")))
        .collect();
    let mut versions = vec![(now, states(&a))];
    let mut first_healthy_at = None;
    let mut failing: Option<String> = None;
    let mut failed_at = None;
    // This node's own balancer for the app: when it changed, and to how many replicas.
    let mut balancer: Vec<(u64, usize)> = Vec::new();
    let end = now + 3_000;
    let mut todo: VecDeque<Action> = VecDeque::new();
    while now < end {
        for (_, slot, generation, container) in pending.extract_if(.., |(at, ..)| *at <= now) {
            a.handle_container_event(Time::from_millis(now), ContainerEvent::Started { slot, generation, container });
            todo.extend(std::iter::from_fn(|| a.poll_action()));
        }
        while let Some(action) = todo.pop_front() {
            if let Action::SetBackends { backends, .. } = &action {
                balancer.push((now, backends.len()));
            }
            if let Action::Probe { container, .. } = action {
                let outcome =
                    if failing.as_deref() == Some(&container) { ProbeOutcome::Failure } else { ProbeOutcome::Success };
                a.handle_probe_result(Time::from_millis(now), &container, outcome);
                todo.extend(std::iter::from_fn(|| a.poll_action()));
                match outcome {
                    ProbeOutcome::Success => first_healthy_at.get_or_insert(now),
                    _ => failed_at.get_or_insert(now),
                };
            }
        }
        if versions.last().is_none_or(|(_, s)| *s != states(&a)) {
            versions.push((now, states(&a)));
        }
        if failing.is_none() && states(&a) == [ContainerState::Healthy, ContainerState::Healthy] {
            failing = Some("c100".to_owned());
        }
        let next = pending.iter().map(|(at, ..)| *at).chain(a.poll_timeout().map(|t| t.as_millis())).min();
        now = next.expect("timers are due").max(now + 1);
        a.handle_timeout(Time::from_millis(now));
        todo.extend(std::iter::from_fn(|| a.poll_action()));
    }
    let healthy = [ContainerState::Healthy, ContainerState::Healthy];
    let both = versions.iter().position(|(_, s)| *s == healthy).expect("both turn healthy");
    assert!(
        versions[..both].iter().all(|(_, s)| !s.contains(&ContainerState::Healthy)),
        "never one healthy and one starting: {versions:?}"
    );
    let at = versions[both].0;
    let first = first_healthy_at.expect("probes passed");
    assert!(at <= first + batch, "announced {} ms after the first turned healthy", at - first);
    // Its own balancer did not wait: it sends the first replica requests at once.
    assert_eq!(balancer.first(), Some(&(first, 1)), "the node's own balancer: {balancer:?}");
    let (unhealthy_at, _) =
        versions.iter().find(|(_, s)| s.contains(&ContainerState::Unhealthy)).expect("c100 turns unhealthy");
    let failed_probe_at = failed_at.expect("a probe of c100 failed");
    assert_eq!(*unhealthy_at, failed_probe_at, "an unhealthy replica is announced at once");
}

#[test]
fn a_status_from_an_earlier_life_of_a_peer_counts_as_none() {
    let mut a = Node::new(Time::ZERO, NodeConfig::new(NodeId::new("a"), "10.0.0.1", Resources::new(4000, 4096)));
    let b = NodeId::new("b");
    let web0 = SlotId::new("web", 0);
    let live = |life: u64| vec![(NodeId::new("b"), PeerAddr::new("10.0.0.2:7946"), life)];
    a.set_members(Time::from_millis(1), live(1));
    a.handle_message(Time::from_millis(2), &status_packet(1, 2));
    assert_eq!(a.view.count(&web0), Some(1), "b's life 1 runs web-0");
    assert!(a.balancers.lists_node(&b), "and it is in the balancer");
    assert_eq!(view::live_statuses(&a.registry, &a.members).count(), 1);
    // b reboots: its containers are gone, and it comes back as life 2 before its new
    // status arrives. What life 1 said counts for nothing now.
    a.set_members(Time::from_millis(3), live(2));
    assert_eq!(a.view.count(&web0), None, "web-0 runs nowhere that a knows of");
    assert!(!a.balancers.lists_node(&b), "b's old replica is out");
    assert_eq!(view::live_statuses(&a.registry, &a.members).count(), 0, "a's view waits for b's new status");
    // A status from life 2 counts again.
    a.handle_message(Time::from_millis(4), &status_packet(2, 4));
    assert_eq!(a.view.count(&web0), Some(1));
    assert!(a.balancers.lists_node(&b));
    a.check_invariants();
}

/// `canteen status` reads the cluster through `cluster_view`: a peer whose only status is of
/// an earlier life is alive with no status, not alive running what it ran before its reboot.
#[test]
fn the_cluster_view_counts_no_status_of_an_earlier_life() {
    let mut a = Node::new(Time::ZERO, NodeConfig::new(NodeId::new("a"), "10.0.0.1", Resources::new(4000, 4096)));
    let b = NodeId::new("b");
    let live = |life: u64| vec![(NodeId::new("b"), PeerAddr::new("10.0.0.2:7946"), life)];
    a.set_members(Time::from_millis(1), live(1));
    a.handle_message(Time::from_millis(2), &status_packet(1, 2));
    let view = a.cluster_view();
    let names: Vec<&str> = view.iter().map(|v| v.node.as_str()).collect();
    assert_eq!(names, ["a", "b"], "every node, this one included, by name");
    assert!(view[1].alive && view[1].status.is_some_and(|s| s.containers.len() == 1));
    a.set_members(Time::from_millis(3), live(2));
    let view = a.cluster_view();
    assert!(view[1].alive, "b is alive in its new life");
    assert_eq!(view[1].status, None, "what its earlier life said counts for nothing");
    a.set_members(Time::from_millis(4), Vec::new());
    let view = a.cluster_view();
    assert_eq!((view[1].node, view[1].alive), (&b, false), "a node that left is listed down");
}

/// A restarted agent gives its node the desired state it persisted. Entries come back as the
/// writes they were (same versions: nothing new spreads), a removal the cluster made since wins
/// over them, and an entry that is not desired state is refused.
#[test]
fn restored_entries_are_the_old_writes_and_newer_news_wins_over_them() {
    let config = |id: &str| NodeConfig::new(NodeId::new(id), "10.0.0.1", Resources::new(4000, 4096));
    let mut first = Node::new(Time::ZERO, config("a"));
    while first.poll_action().is_some() {}
    first.handle_membership(Time::from_millis(1), []);
    let web = AppSpec::new("web", "canteen-demo:latest", 1, Resources::new(100, 64));
    let api = AppSpec { port: 9090, ..AppSpec::new("api", "canteen-demo:latest", 1, Resources::new(100, 64)) };
    let commands =
        [Command::Apply(Box::new(web)), Command::Apply(Box::new(api)), Command::Scale(AppName::new("web"), 3)];
    for (at, command) in (2..).zip(commands) {
        first.handle_command(Time::from_millis(at), command).unwrap();
        while first.poll_action().is_some() {}
    }
    let persisted = first.desired_entries();
    assert_eq!(persisted.len(), 2, "two apps; statuses are not desired state");
    assert!(first.desired_version() >= 3, "every write of the desired state moved the version");

    // The next life restores them: the very same entries, no new version of any.
    let mut next = Node::new(Time::from_millis(10), config("a"));
    while next.poll_action().is_some() {}
    let mut with_a_status = persisted.clone();
    with_a_status.push((Key::Status(NodeId::new("z")), persisted[0].1.clone()));
    let before = next.desired_version();
    next.handle_restore(Time::from_millis(11), with_a_status);
    let refused: Vec<Action> = std::iter::from_fn(|| next.poll_action())
        .filter(|a| matches!(a, Action::Event(Event::BadMessage { .. })))
        .collect();
    assert_eq!(refused.len(), 1, "the status entry is refused: {refused:?}");
    assert_eq!(next.desired_entries(), persisted, "restored as the writes they were");
    assert!(next.desired_version() > before);
    while next.poll_action().is_some() {}
    assert_eq!(next.apps().iter().find(|s| s.name.as_str() == "web").map(|s| s.replicas), Some(3));

    // Meanwhile the cluster removed `api`: that removal is newer than the restored write.
    let mut peer = Node::new(Time::from_millis(20), config("b"));
    while peer.poll_action().is_some() {}
    peer.handle_restore(Time::from_millis(21), persisted.clone());
    while peer.poll_action().is_some() {}
    peer.handle_command(Time::from_millis(22), Command::Remove(AppName::new("api"))).unwrap();
    while peer.poll_action().is_some() {}
    let newer = peer.desired_entries();
    let mut late = Node::new(Time::from_millis(30), config("c"));
    while late.poll_action().is_some() {}
    late.handle_restore(Time::from_millis(31), newer);
    while late.poll_action().is_some() {}
    late.handle_restore(Time::from_millis(32), persisted);
    while late.poll_action().is_some() {}
    let apps: Vec<String> = late.apps().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(apps, ["web"], "the removal wins over the older write restored after it");
}

#[test]
fn anti_entropy_alone_brings_two_registries_together() {
    let mut nodes = two_nodes();
    let web = AppSpec::new("web", "canteen-demo:latest", 1, Resources::new(100, 64));
    let api = AppSpec::new("api", "canteen-demo:latest", 1, Resources::new(100, 64));
    nodes[0].handle_command(Time::from_millis(2), Command::Apply(Box::new(web))).unwrap();
    nodes[1].handle_command(Time::from_millis(2), Command::Apply(Box::new(api))).unwrap();
    assert_ne!(nodes[0].registry().root_hash(), nodes[1].registry().root_hash());
    // Every rumor is lost: only the root, digest, summary and repair steps get through.
    pump(&mut nodes, 3, 5_000, |m| matches!(m, Message::Updates(_)));
    assert_eq!(nodes[0].registry().root_hash(), nodes[1].registry().root_hash());
    assert_eq!(nodes[0].registry().digest(), nodes[1].registry().digest());
    for node in &nodes {
        let apps: Vec<String> = node.apps().iter().map(|a| a.name.to_string()).collect();
        assert_eq!(apps, ["api", "web"], "{} has both specs", node.id());
    }
}

/// Applies `count` apps through `node`, each with a spec of about 30 KB (its `env`): ten of
/// them are five packets' worth. They publish ports from `port_min` up.
fn apply_large_apps(node: &mut Node, prefix: &str, count: usize, port_min: u16) {
    for i in 0..count {
        let mut spec = AppSpec::new(&format!("{prefix}{i}"), "canteen-demo:latest", 1, Resources::new(1, 1));
        spec.port = port_min + i as u16;
        for k in 0..300 {
            spec.env.insert(format!("KEY_{k}"), "v".repeat(90));
        }
        node.handle_command(Time::from_millis(2 + i as u64), Command::Apply(Box::new(spec))).unwrap();
        while node.poll_action().is_some() {}
    }
}

#[test]
fn news_larger_than_a_packet_goes_out_in_several_and_arrives_whole() {
    let mut nodes = two_nodes();
    apply_large_apps(&mut nodes[0], "big", 10, 9000);
    // Only rumors: pump asserts every packet fits one datagram.
    pump(&mut nodes, 20, 1_000, |m| !matches!(m, Message::Updates(_)));
    assert_eq!(nodes[1].apps().len(), 10, "every spec arrived");
    assert_eq!(nodes[0].registry().root_hash(), nodes[1].registry().root_hash());
}

#[test]
fn anti_entropy_repairs_a_registry_larger_than_a_packet() {
    let mut nodes = two_nodes();
    apply_large_apps(&mut nodes[0], "big", 10, 9000);
    apply_large_apps(&mut nodes[1], "other", 4, 9500);
    pump(&mut nodes, 20, 6_000, |m| matches!(m, Message::Updates(_)));
    assert_eq!(nodes[0].registry().root_hash(), nodes[1].registry().root_hash());
    assert_eq!(nodes[1].apps().len(), 14);
}

#[test]
fn a_rumor_reaches_the_peer_unchanged() {
    let mut nodes = two_nodes();
    let web = AppSpec::new("web", "canteen-demo:latest", 1, Resources::new(100, 64));
    nodes[0].handle_command(Time::from_millis(2), Command::Apply(Box::new(web))).unwrap();
    pump(&mut nodes, 3, 1_000, |_| false);
    let key = Key::App(AppName::new("web"));
    assert_eq!(nodes[1].registry().entry(&key), nodes[0].registry().entry(&key));
}

#[test]
fn host_ports_skip_the_ports_apps_publish() {
    let mut config = NodeConfig::new(NodeId::new("a"), "10.0.0.1", Resources::new(4000, 4096));
    (config.host_port_min, config.host_port_max) = (8000, 8003);
    let mut node = Node::new(Time::ZERO, config);
    while node.poll_action().is_some() {}
    node.handle_membership(Time::from_millis(1), []);
    while node.poll_action().is_some() {}
    let mut web = AppSpec::new("web", "canteen-demo:latest", 3, Resources::new(100, 64));
    web.port = 8001;
    node.handle_command(Time::from_millis(2), Command::Apply(Box::new(web))).unwrap();
    while node.poll_action().is_some() {}
    node.handle_timeout(Time::from_millis(100));
    while node.poll_action().is_some() {}
    let ports: Vec<u16> = node.local_slots().iter().map(|(_, port, _)| *port).collect();
    assert_eq!(ports, [8000, 8002, 8003], "8001 is where the web balancer listens");
}

#[test]
fn garbage_from_a_peer_is_reported_and_changes_nothing() {
    let mut node = Node::new(Time::ZERO, NodeConfig::new(NodeId::new("a"), "10.0.0.1", Resources::new(1000, 1000)));
    while node.poll_action().is_some() {}
    node.handle_message(Time::from_millis(1), &[0xff, 0xff, 0xff]);
    assert!(matches!(node.poll_action(), Some(Action::Event(Event::BadMessage { from: None, .. }))));
    assert_eq!(node.poll_action(), None);
}

#[test]
fn an_app_mounts_only_its_own_volumes() {
    let mut node = Node::new(Time::ZERO, NodeConfig::new(NodeId::new("a"), "10.0.0.1", Resources::new(4000, 4096)));
    let mut web = AppSpec::new("web", "img", 1, Resources::new(100, 64));
    web.volume = Some(Volume { name: "web-data".into(), mount_path: "/data".into() });
    node.handle_command(Time::from_millis(1), Command::Apply(Box::new(web.clone()))).unwrap();
    let mut api = AppSpec::new("api", "img", 1, Resources::new(100, 64));
    api.port = 81;
    for taken in ["web-data", "web"] {
        api.volume = Some(Volume { name: taken.into(), mount_path: "/data".into() });
        let e = node.handle_command(Time::from_millis(2), Command::Apply(Box::new(api.clone()))).unwrap_err();
        assert!(e.to_string().contains("belongs to app web"), "{e}");
    }
    api.volume = Some(Volume { name: "api-data".into(), mount_path: "/data".into() });
    node.handle_command(Time::from_millis(3), Command::Apply(Box::new(api))).unwrap();
    // In one file, the later of two apps sharing a volume is refused.
    let mut second = AppSpec::new("second", "img", 1, Resources::new(100, 64));
    second.port = 82;
    second.volume = Some(Volume { name: "shared".into(), mount_path: "/data".into() });
    let mut first = second.clone();
    first.name = AppName::new("first");
    first.port = 83;
    let (i, e) = crate::model::validate_apps(&[first, second]).unwrap_err();
    assert_eq!(i, 1);
    assert!(e.to_string().contains("volume.name") && e.to_string().contains("belongs to app first"), "{e}");
    // An app named as another's volume is refused too: that volume is the other's.
    let named_for = AppSpec { port: 84, volume: None, ..AppSpec::new("web-data", "img", 1, Resources::new(100, 64)) };
    let e = node.handle_command(Time::from_millis(3), Command::Apply(Box::new(named_for))).unwrap_err();
    assert!(e.to_string().contains("app web mounts a volume named"), "{e}");
    // The owner may apply itself again with its volume.
    node.handle_command(Time::from_millis(4), Command::Apply(Box::new(web))).unwrap();
    while node.poll_action().is_some() {}
}
