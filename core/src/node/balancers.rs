//! What each app's balancer is sent: the healthy replicas of the live nodes.

use std::collections::BTreeSet;

use crate::hash::{mix, stable_hash};

use super::Backend;

/// An app's healthy backends, with a fingerprint of the set kept up to date as backends come
/// and go: telling whether a balancer's list changed costs one comparison, not a pass over
/// the list (in a cold start every status version of every peer changes some app's set).
#[derive(Debug, Default)]
pub(super) struct BackendSet {
    backends: BTreeSet<Backend>,
    /// The wrapping sum of `backend_hash` over `backends`: equal sets have equal sums, and two
    /// different sets share one with odds of about 1 in 2^64.
    sum: u64,
}

impl BackendSet {
    /// Adds `backend`; returns whether it was new.
    pub(super) fn insert(&mut self, backend: Backend) -> bool {
        let hash = backend_hash(&backend);
        let new = self.backends.insert(backend);
        if new {
            self.sum = self.sum.wrapping_add(hash);
        }
        new
    }

    /// Takes `backend` out; returns whether it was there.
    pub(super) fn remove(&mut self, backend: &Backend) -> bool {
        let was = self.backends.remove(backend);
        if was {
            self.sum = self.sum.wrapping_sub(backend_hash(backend));
        }
        was
    }

    /// Whether it holds no backend.
    pub(super) fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// A fingerprint of the set (of an empty one when `set` is `None`).
    pub(super) fn fingerprint(set: Option<&BackendSet>) -> u64 {
        set.map_or(mix(0), |s| mix(s.sum ^ (s.backends.len() as u64).rotate_left(32)))
    }
}

impl<'a> IntoIterator for &'a BackendSet {
    type Item = &'a Backend;
    type IntoIter = std::collections::btree_set::Iter<'a, Backend>;

    fn into_iter(self) -> Self::IntoIter {
        self.backends.iter()
    }
}

/// A stable hash of one backend: its node, address, port and slot.
fn backend_hash(b: &Backend) -> u64 {
    let name = stable_hash(b.node.as_str().as_bytes()) ^ stable_hash(b.addr.as_bytes()).rotate_left(17);
    let slot = stable_hash(b.slot.app.as_str().as_bytes()) ^ (u64::from(b.slot.index) << 16 | u64::from(b.host_port));
    mix(name ^ slot.rotate_left(31))
}
