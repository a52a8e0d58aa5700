//! The peers this node believes alive: one list sorted by name, each member with its gossip
//! address, its life and its name's hash; the lives of every peer ever seen; the members SWIM
//! suspects.

use std::collections::BTreeSet;

use crate::hash::{StableMap, stable_hash};
use crate::membership::PeerAddr;
use crate::model::NodeId;
use crate::rng::SplitMix64;
use crate::schedule::rendezvous_owner_hashed;

/// One peer believed alive.
#[derive(Clone, Debug)]
pub(super) struct Member {
    /// Its name.
    pub(super) id: NodeId,
    /// Where its packets go.
    pub(super) addr: PeerAddr,
    /// Its life (SWIM's generation; 0 with the perfect failure detector).
    pub(super) life: u64,
    /// The stable hash of its name, for rendezvous.
    pub(super) hash: u64,
}

/// What a new list of live peers changes.
#[derive(Debug, Default)]
pub(super) struct MembersChange {
    /// Peers seen for the first time, or in another life than the one known: what their status
    /// says is looked at again, since a status from an earlier life counts as none.
    pub(super) renewed: Vec<(NodeId, u64)>,
    /// Peers that joined.
    pub(super) joined: Vec<NodeId>,
    /// Peers that left, each with whether it was suspected (its replicas left the balancers
    /// already).
    pub(super) left: Vec<(NodeId, bool)>,
}

/// The peers believed alive, this node excluded.
#[derive(Debug, Default)]
pub(super) struct Members {
    /// Sorted by name, each once.
    list: Vec<Member>,
    /// The names of `list`, for [`super::Node::members`] and for lookups by name: a copy,
    /// checked against the list.
    names: BTreeSet<NodeId>,
    /// The life of each peer this node knows, kept after it leaves: its status counts only if
    /// written by that life or a later one.
    lives: StableMap<NodeId, u64>,
    /// Members SWIM suspects: their replicas are out of the balancers.
    suspected: BTreeSet<NodeId>,
    /// Bumped whenever the names change.
    version: u64,
}

impl Members {
    /// The names of the members.
    pub(super) fn names(&self) -> &BTreeSet<NodeId> {
        &self.names
    }

    /// How many members there are.
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there is none.
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Bumped whenever the names change.
    pub(super) fn version(&self) -> u64 {
        self.version
    }

    /// Whether `node` is a member. Asked on every status merge: the B-tree of names answers
    /// from a few cache lines, where a binary search of the list touches one per probe.
    pub(super) fn contains(&self, node: &NodeId) -> bool {
        self.names.contains(node)
    }

    /// The member named `node`.
    fn index(&self, node: &NodeId) -> Option<usize> {
        self.list.binary_search_by(|m| m.id.cmp(node)).ok()
    }

    /// The copy of `node`'s name this node holds, if it is a member.
    pub(super) fn shared_name(&self, node: &NodeId) -> Option<&NodeId> {
        self.names.get(node)
    }

    /// Where `node`'s packets go, if it is a member.
    pub(super) fn addr_of(&self, node: &NodeId) -> Option<&PeerAddr> {
        self.index(node).map(|i| &self.list[i].addr)
    }

    /// The members SWIM suspects.
    pub(super) fn suspected(&self) -> &BTreeSet<NodeId> {
        &self.suspected
    }

    /// Whether `node` is suspected.
    pub(super) fn is_suspected(&self, node: &NodeId) -> bool {
        self.suspected.contains(node)
    }

    /// Whether `node` is a member SWIM does not suspect: one whose replicas take requests.
    pub(super) fn is_trusted(&self, node: &NodeId) -> bool {
        self.contains(node) && !self.suspected.contains(node)
    }

    /// Marks a member suspected or not; returns whether that changed anything (a peer that is
    /// no member is never suspected).
    pub(super) fn set_suspected(&mut self, node: &NodeId, suspected: bool) -> bool {
        if !self.contains(node) {
            return false;
        }
        if suspected { self.suspected.insert(node.clone()) } else { self.suspected.remove(node) }
    }

    /// Whether `status_life`, the life that wrote a status of `node`, is the one this node
    /// knows for `node` or a later one (a peer never seen counts).
    pub(super) fn life_counts(&self, node: &NodeId, status_life: u64) -> bool {
        self.lives.get(node).is_none_or(|known| status_life >= *known)
    }

    /// The addresses of up to `count` distinct members drawn at random (all of them when there
    /// are fewer).
    pub(super) fn random_addrs(&self, rng: &mut SplitMix64, count: usize) -> Vec<PeerAddr> {
        let len = self.list.len();
        let count = count.min(len);
        let mut picked: Vec<usize> = Vec::with_capacity(count);
        if count * 2 > len {
            // A partial Fisher-Yates over the indexes when most peers are wanted.
            let mut all: Vec<usize> = (0..len).collect();
            for i in 0..count {
                let j = i + rng.below(len - i);
                all.swap(i, j);
            }
            picked.extend_from_slice(&all[..count]);
        } else {
            // Draws with rejection when few are: at most half are taken, so each draw is new
            // with probability at least one half.
            while picked.len() < count {
                let i = rng.below(len);
                if !picked.contains(&i) {
                    picked.push(i);
                }
            }
        }
        picked.into_iter().map(|i| self.list[i].addr.clone()).collect()
    }

    /// The node that ranks first for `key` by rendezvous hash among the members and `me`.
    pub(super) fn rendezvous_owner(&self, key: &str, me: &NodeId) -> NodeId {
        let me = (stable_hash(me.as_str().as_bytes()), me);
        let peers = self.list.iter().map(|m| (m.hash, &m.id));
        rendezvous_owner_hashed(key, peers.chain(std::iter::once(me))).expect("this node is alive").clone()
    }

    /// What `alive` (sorted by name, each once) would change, or `None` when it is the list as
    /// it is. One walk over both lists: at a thousand members this runs a few dozen times per
    /// node in a cold start, and a map built or a lookup made per name was a tenth of it.
    pub(super) fn change(&self, alive: &[(NodeId, PeerAddr, u64)]) -> Option<MembersChange> {
        debug_assert!(alive.windows(2).all(|w| w[0].0 < w[1].0), "sorted by name, each once");
        let unchanged = alive.len() == self.list.len()
            && alive.iter().zip(&self.list).all(|((n, a, g), m)| *n == m.id && *a == m.addr && *g == m.life);
        if unchanged {
            return None;
        }
        let mut change = MembersChange::default();
        let mut old = 0;
        for (node, _, life) in alive {
            while old < self.list.len() && self.list[old].id < *node {
                change.left.push((self.list[old].id.clone(), self.suspected.contains(&self.list[old].id)));
                old += 1;
            }
            // A member's known life is its listed one (`check_invariants`): only a peer that
            // joins is looked up among the lives.
            let renewed = if old < self.list.len() && self.list[old].id == *node {
                old += 1;
                self.list[old - 1].life != *life
            } else {
                change.joined.push(node.clone());
                self.lives.get(node) != Some(life)
            };
            if renewed {
                change.renewed.push((node.clone(), *life));
            }
        }
        change.left.extend(self.list[old..].iter().map(|m| (m.id.clone(), self.suspected.contains(&m.id))));
        Some(change)
    }

    /// Takes `node`'s life as known (one of `MembersChange::renewed`).
    pub(super) fn know_life(&mut self, node: &NodeId, life: u64) {
        self.lives.insert(node.clone(), life);
    }

    /// Makes `alive` the members, as `change` (from [`Members::change`] on the same list, its
    /// lives known since) says: only the names that joined are hashed.
    pub(super) fn replace(&mut self, alive: Vec<(NodeId, PeerAddr, u64)>, change: &MembersChange) {
        let old = std::mem::replace(&mut self.list, Vec::with_capacity(alive.len()));
        let mut old = old.into_iter().peekable();
        for (id, addr, life) in alive {
            while old.next_if(|m| m.id < id).is_some() {}
            let hash = match old.next_if(|m| m.id == id) {
                Some(m) => m.hash,
                None => stable_hash(id.as_str().as_bytes()),
            };
            self.list.push(Member { id, addr, life, hash });
        }
        for (node, _) in &change.left {
            self.names.remove(node);
            self.suspected.remove(node);
        }
        for node in &change.joined {
            self.names.insert(node.clone());
        }
        if !change.joined.is_empty() || !change.left.is_empty() {
            self.version += 1;
        }
    }

    /// What must hold between the list and what is derived from it.
    pub(super) fn check_invariants(&self, me: &NodeId) {
        assert_eq!(self.names.len(), self.list.len(), "the names mirror the list");
        assert!(self.suspected.is_subset(&self.names), "only members are suspected");
        debug_assert!(!self.names.contains(me), "a node is not its own peer");
        debug_assert!(self.list.windows(2).all(|w| w[0].id < w[1].id), "the list is sorted, each once");
        debug_assert!(self.names.iter().eq(self.list.iter().map(|m| &m.id)), "the names are the list's");
        debug_assert!(
            self.list.iter().all(|m| self.lives.get(&m.id) == Some(&m.life)),
            "a member's known life is its listed one"
        );
        debug_assert!(
            self.list.iter().all(|m| m.hash == stable_hash(m.id.as_str().as_bytes())),
            "a member's hash is its name's"
        );
    }
}
