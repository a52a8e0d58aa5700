use super::*;
use crate::membership::{SwimId, SwimMember};
use crate::model::Resources;

fn swim_nodes() -> [Node; 2] {
    ["a", "b"].map(|id| {
        let mut config = NodeConfig::new(NodeId::new(id), "10.0.0.1", Resources::new(4000, 4096));
        config.membership = MembershipMode::Swim;
        config.gossip_addr = PeerAddr::new(&format!("10.0.0.{}:7946", if id == "a" { 1 } else { 2 }));
        // b knows a's address only, not its name.
        config.seeds = vec![PeerAddr::new("10.0.0.1:7946")];
        config.generation = 1;
        let mut node = Node::new(Time::ZERO, config);
        // The first announce is lost: the node announces again while it knows no peer.
        while node.poll_action().is_some() {}
        node
    })
}

#[test]
fn swim_nodes_find_each_other_through_a_seed_and_declare_a_silent_peer_down() {
    let mut nodes = swim_nodes();
    tests_pump(&mut nodes, 0, 3000, |_| false);
    assert!(nodes[0].members().contains(&NodeId::new("b")), "a learnt b from its announce");
    assert!(nodes[1].members().contains(&NodeId::new("a")), "b joined through its seed");
    // b stops answering: a declares it down within the preset's detection time.
    let swim = nodes[0].config().swim.clone();
    let bound_ms = 2 * swim.probe_period_ms + swim.suspect_to_down_ms + 3 * swim.gossip_interval_ms;
    let b = NodeId::new("b");
    let mut suspected_while_member = false;
    for t in (3001..3001 + bound_ms).step_by(50) {
        tests_pump(&mut nodes, t, t + 49, |m| matches!(m, Message::Swim(..)));
        suspected_while_member |= nodes[0].members().contains(&b) && nodes[0].suspected().contains(&b);
    }
    assert!(suspected_while_member, "a suspected b before declaring it down");
    assert!(nodes[0].members().is_empty(), "a declared the silent b down");
    assert!(nodes[0].suspected().is_empty(), "a member declared down is no longer suspected");
}

#[test]
fn small_news_rides_on_swim_packets_alone() {
    let mut nodes = swim_nodes();
    tests_pump(&mut nodes, 0, 3000, |_| false);
    let web = AppSpec::new("web", "canteen-demo:latest", 1, Resources::new(100, 64));
    nodes[0].handle_command(Time::from_millis(3001), Command::Apply(Box::new(web))).unwrap();
    // Rumors and anti-entropy are all lost: only SWIM's packets get through.
    tests_pump(&mut nodes, 3002, 5000, |m| !matches!(m, Message::Swim(..)));
    let apps: Vec<String> = nodes[1].apps().iter().map(|a| a.name.to_string()).collect();
    assert_eq!(apps, ["web"], "the spec reached b inside SWIM packets");
}

#[test]
fn with_swim_the_root_rides_on_its_packets_and_anti_entropy_alone_brings_registries_together() {
    let mut nodes = swim_nodes();
    tests_pump(&mut nodes, 0, 3000, |_| false);
    // Specs too large to ride in SWIM's packets as broadcast items: they go as rumors.
    for (node, name) in nodes.iter_mut().zip(["web", "api"]) {
        let mut spec = AppSpec::new(name, "canteen-demo:latest", 1, Resources::new(100, 64));
        spec.port = if name == "web" { 9000 } else { 9001 };
        spec.env.insert("PADDING".into(), "v".repeat(limits::SWIM_ITEM_BYTES_MAX));
        node.handle_command(Time::from_millis(3001), Command::Apply(Box::new(spec))).unwrap();
    }
    assert_ne!(nodes[0].registry().root_hash(), nodes[1].registry().root_hash());
    // Every rumor is lost, and no root goes out on its own: the roots on SWIM's packets
    // start the digest, summary and repair steps.
    let digests = std::cell::Cell::new(0);
    tests_pump(&mut nodes, 3002, 8000, |m| match m {
        Message::Updates(_) => true,
        Message::Root(_) => panic!("with SWIM, no root goes out on its own"),
        Message::Digest(_) => {
            digests.set(digests.get() + 1);
            false
        }
        _ => false,
    });
    assert!(digests.get() > 0, "a root on a SWIM packet started an exchange");
    assert_eq!(nodes[0].registry().root_hash(), nodes[1].registry().root_hash());
    for node in &nodes {
        let apps: Vec<String> = node.apps().iter().map(|a| a.name.to_string()).collect();
        assert_eq!(apps, ["api", "web"], "{} has both specs", node.id());
    }
}

/// foca's periodic gossip timers pending in `node`'s heap.
fn pending_swim_gossip(node: &Node) -> usize {
    node.out.timers.pending().filter(|t| matches!(t, Timer::Swim(foca::Timer::PeriodicGossip(_)))).count()
}

#[test]
fn an_idle_swim_node_parks_foca_gossip_timer_and_news_wakes_it_at_once() {
    let mut nodes = swim_nodes();
    tests_pump(&mut nodes, 0, 6000, |_| false);
    assert_eq!(nodes[0].members().len(), 1, "a and b know each other");
    assert_eq!(pending_swim_gossip(&nodes[0]), 0, "nothing to gossip: no timer wakes a");
    assert_eq!(nodes[0].liveness.swim().unwrap().parked(), 1, "it waits, parked");
    let web = AppSpec::new("web", "canteen-demo:latest", 1, Resources::new(100, 64));
    nodes[0].handle_command(Time::from_millis(6001), Command::Apply(Box::new(web))).unwrap();
    while nodes[0].poll_action().is_some() {}
    nodes[0].handle_timeout(Time::from_millis(6002));
    // (What it sent is lost; foca sends an item several times.)
    while nodes[0].poll_action().is_some() {}
    // The news went to foca as a broadcast item: its gossip timer went back to it at once,
    // it gossiped, and armed the timer again.
    assert!(nodes[0].liveness.swim().unwrap().parked() == 0);
    assert_eq!(pending_swim_gossip(&nodes[0]), 1);
    tests_pump(&mut nodes, 6002, 7000, |m| !matches!(m, Message::Swim(..)));
    assert_eq!(nodes[1].apps().len(), 1, "the spec reached b inside SWIM packets");
}

#[test]
#[should_panic(expected = "perfect failure detector")]
fn the_perfect_failure_detector_is_refused_in_swim_mode() {
    let mut nodes = swim_nodes();
    nodes[0].handle_membership(Time::from_millis(1), [(NodeId::new("b"), PeerAddr::new("b"))]);
}

#[test]
fn a_garbled_swim_packet_is_reported_as_the_senders_and_changes_no_member() {
    let mut nodes = swim_nodes();
    let bytes = Packet::encode(&NodeId::new("b"), &Message::Swim(0, &[0xff, 0xff, 0xff]));
    nodes[0].handle_message(Time::from_millis(1), &bytes);
    let Some(Action::Event(Event::BadMessage { from, .. })) = nodes[0].poll_action() else {
        panic!("a bad swim packet is reported");
    };
    assert_eq!(from, Some(NodeId::new("b")));
    assert_eq!(nodes[0].poll_action(), None);
    assert!(nodes[0].members().is_empty());
}

#[test]
fn a_suspected_peer_hears_it_straight_away_and_its_refutation_clears_the_suspicion() {
    let mut nodes = swim_nodes();
    tests_pump(&mut nodes, 0, 3000, |_| false);
    let b = NodeId::new("b");
    assert!(nodes[0].members().contains(&b));
    // Every SWIM packet from a to b is lost: a's probes of b fail, and no gossip from a
    // reaches b. b hears of each suspicion only from a's `SwimSuspicion`, and its answer,
    // an announce from b to a, is all that can clear it.
    let (mut suspected_at, mut longest_ms, mut suspicions) = (None, 0, 0);
    let lost = |from: usize, m: &Message| from == 0 && matches!(m, Message::Swim(..));
    super::tests::pump_directed(&mut nodes, 3001, 8000, lost, |t, nodes| {
        assert!(nodes[0].members().contains(&b), "a declared the live b down at {t} ms");
        match (nodes[0].suspected().contains(&b), suspected_at) {
            (true, None) => {
                suspected_at = Some(t);
                suspicions += 1;
            }
            (false, Some(since)) => {
                longest_ms = longest_ms.max(t - since);
                suspected_at = None;
            }
            _ => {}
        }
    });
    assert!(suspicions >= 3, "a's probes of b failed, and a suspected it each time ({suspicions})");
    assert!(longest_ms <= 10, "b's refutation cleared each suspicion within a round trip ({longest_ms} ms)");
}

/// Node a takes in a push-pull sync that lists b as suspected at the incarnation a holds
/// it at: a suspicion a heard of, with no timer of its own.
fn hear_by_sync_that_b_is_suspected(a: &mut Node, at_ms: u64) {
    let swim = a.liveness.swim().unwrap().foca();
    let held = swim.member(&NodeId::new("b")).unwrap();
    let members = vec![
        SwimMember::new(swim.identity().clone(), 0, foca::State::Alive),
        SwimMember::new(held.id().clone(), held.incarnation(), foca::State::Suspect),
    ];
    let bytes = Packet::encode(&NodeId::new("a"), &Message::SwimSync { members, reply: false });
    a.handle_message(Time::from_millis(at_ms), &bytes);
    while a.poll_action().is_some() {}
}

#[test]
fn a_suspicion_heard_by_gossip_and_never_refuted_ends_in_a_down_declaration() {
    let mut nodes = swim_nodes();
    tests_pump(&mut nodes, 0, 3000, |_| false);
    let b = NodeId::new("b");
    assert!(nodes[0].members().contains(&b));
    // a hears, by a push-pull sync, that b is suspected at its current incarnation: the
    // suspicion began elsewhere, and a missed both its end and b's refutation. b never
    // hears of it either (a's tellings are lost), while a's probes of b still succeed.
    hear_by_sync_that_b_is_suspected(&mut nodes[0], 3001);
    let heard = nodes[0].liveness.swim().unwrap().foca().suspects();
    assert_eq!(heard.len(), 1, "a holds b suspected, with no suspicion timer of its own");
    assert!(!nodes[0].suspected().contains(&b), "not a suspicion of a's own: b is still in the balancers");
    // Two full checks (4 s apart) see it, then the suspicion runs out.
    let swim = nodes[0].config().swim.clone();
    let check_ms = swim::FULL_CHECK_TICKS * swim::TICK_PERIODS * swim.probe_period_ms;
    let bound_ms = 2 * check_ms + swim.suspect_to_down_ms + swim.probe_period_ms;
    let mut left_at = None;
    let lost = |from: usize, m: &Message| from == 0 && matches!(m, Message::SwimSuspicion { .. });
    super::tests::pump_directed(&mut nodes, 3002, 3002 + bound_ms, lost, |t, nodes| {
        if left_at.is_none() && !nodes[0].members().contains(&b) {
            left_at = Some(t);
        }
    });
    let left_at = left_at.expect("a declared the stale suspect down");
    assert!(left_at >= 3001 + check_ms, "not before a second check saw the suspicion ({left_at} ms)");
}

#[test]
fn a_live_member_suspected_by_hearsay_is_told_and_its_refutation_clears_the_suspicion() {
    let mut nodes = swim_nodes();
    tests_pump(&mut nodes, 0, 3000, |_| false);
    let b = NodeId::new("b");
    // As above, a hears by a sync that b is suspected; this time b hears a's tellings.
    hear_by_sync_that_b_is_suspected(&mut nodes[0], 3001);
    let swim = nodes[0].config().swim.clone();
    let check_ms = swim::FULL_CHECK_TICKS * swim::TICK_PERIODS * swim.probe_period_ms;
    let until = 3002 + 2 * check_ms + swim.suspect_to_down_ms + swim.probe_period_ms;
    super::tests::pump_directed(
        &mut nodes,
        3002,
        until,
        |_, _| false,
        |t, nodes| {
            assert!(nodes[0].members().contains(&b), "a declared the live b down at {t} ms");
        },
    );
    assert!(nodes[0].liveness.swim().unwrap().foca().suspects().is_empty(), "b's refutation ended the suspicion at a");
    assert!(nodes[0].suspected().is_empty(), "b is back in a's balancers");
}

/// The foca header of a SWIM packet.
fn swim_header(message: &Message) -> Option<foca::Header<SwimId>> {
    let Message::Swim(_, bytes) = message else { return None };
    let mut buf: &[u8] = bytes;
    foca::Codec::<SwimId>::decode_header(&mut foca::PostcardCodec, &mut buf).ok()
}

#[test]
fn a_suspicion_of_an_earlier_life_is_answered_with_this_life_and_not_refuted() {
    let mut nodes = swim_nodes();
    tests_pump(&mut nodes, 0, 3000, |_| false);
    let swim_a = nodes[0].liveness.swim().unwrap().foca();
    let sender = swim_a.identity().clone();
    let b_now = nodes[1].liveness.swim().unwrap().foca().identity().clone();
    // b's incarnation as a holds it: no refutation since (no packet was lost).
    let before = nodes[0].liveness.swim().unwrap().foca().member(b_now.node()).unwrap().incarnation();
    let earlier = SwimId::new(b_now.node().clone(), b_now.peer_addr().clone(), b_now.generation() - 1);
    let suspect = SwimMember::new(earlier, 0, foca::State::Suspect);
    let bytes = Packet::encode(&NodeId::new("a"), &Message::SwimSuspicion { sender: sender.clone(), suspect });
    nodes[1].handle_message(Time::from_millis(3001), &bytes);
    let mut sent = Vec::new();
    while let Some(action) = nodes[1].poll_action() {
        if let Action::Send { bytes, .. } = action {
            let packet = postcard::from_bytes::<Packet>(&bytes).unwrap();
            sent.extend(swim_header(&packet.message).map(|h| (h.src, h.src_incarnation, h.dst, h.message)));
        }
    }
    let announce = (b_now, before, sender, foca::Message::Announce);
    assert_eq!(sent, [announce], "b tells a of its current life, at the incarnation a holds: nothing refuted");
}

#[test]
fn a_refuted_suspicion_leaves_the_suspect_its_identity() {
    let mut nodes = swim_nodes();
    tests_pump(&mut nodes, 0, 3000, |_| false);
    let b = NodeId::new("b");
    let generation = |node: &Node| node.liveness.swim().unwrap().foca().identity().generation();
    assert_eq!(generation(&nodes[1]), 1);
    // a's SWIM packets to b are lost until a's probe of b fails and a suspects it; b hears
    // of it from a's telling and refutes, and from then on nothing is lost. When a's
    // suspicion runs out, b is alive at a higher incarnation: foca 2.0.0 would still send
    // it its "you are declared down" (`TurnUndead`), and b would renew its identity, a
    // new life that a's and every peer's probes of the old one no longer reach.
    let suspected = std::cell::Cell::new(false);
    let lost = |from: usize, m: &Message| from == 0 && matches!(m, Message::Swim(..)) && !suspected.get();
    let turn_undead = std::cell::Cell::new(0);
    let count =
        |from: usize, m: &Message| from == 0 && swim_header(m).is_some_and(|h| h.message == foca::Message::TurnUndead);
    super::tests::pump_directed(
        &mut nodes,
        3001,
        8000,
        |from, m| {
            if count(from, m) && !lost(from, m) {
                turn_undead.set(turn_undead.get() + 1);
            }
            lost(from, m)
        },
        |t, nodes| {
            assert!(nodes[0].members().contains(&b), "a declared the live b down at {t} ms");
            suspected.set(suspected.get() || nodes[0].suspected().contains(&b));
        },
    );
    assert!(suspected.get(), "a's probe of b failed, and a suspected it");
    assert_eq!(turn_undead.get(), 0, "a told the refuted b it was declared down");
    assert_eq!(generation(&nodes[1]), 1, "b kept its identity");
    assert!(nodes[0].suspected().is_empty());
}

#[test]
fn a_peer_holding_an_earlier_life_learns_the_current_one_from_the_answer_to_its_telling() {
    let mut nodes = swim_nodes();
    tests_pump(&mut nodes, 0, 3000, |_| false);
    let b = NodeId::new("b");
    // b's agent restarts: its new life (generation 2) announces itself to its seed a, but
    // every SWIM packet from b to a is lost except b's answer to a's telling (an announce
    // to a's exact identity, not to a seed's address). a's probes of b's earlier life go
    // unanswered (foca drops packets addressed to another identity), so a suspects it and
    // tells b.
    let mut config = nodes[1].config().clone();
    config.generation = 2;
    nodes[1] = Node::new(Time::from_millis(3001), config);
    while nodes[1].poll_action().is_some() {}
    let a_id = nodes[0].liveness.swim().unwrap().foca().identity().clone();
    let lost = |from: usize, m: &Message| {
        from == 1
            && match m {
                Message::Swim(..) => {
                    !swim_header(m).is_some_and(|h| h.message == foca::Message::Announce && h.dst == a_id)
                }
                Message::SwimSync { .. } => true,
                _ => false,
            }
    };
    let mut suspected = false;
    super::tests::pump_directed(&mut nodes, 3001, 8000, lost, |t, nodes| {
        assert!(nodes[0].members().contains(&b), "a declared the live b down at {t} ms");
        suspected |= nodes[0].suspected().contains(&b);
    });
    assert!(suspected, "a's probes of b's earlier life failed, and a suspected it");
    let held = nodes[0].liveness.swim().unwrap().foca().member(&b).unwrap();
    assert_eq!((held.id().generation(), held.state()), (2, foca::State::Alive), "a holds b's current life");
}

fn tests_pump(nodes: &mut [Node; 2], from_ms: u64, until_ms: u64, drop: impl Fn(&Message) -> bool) {
    super::tests::pump(nodes, from_ms, until_ms, drop)
}
