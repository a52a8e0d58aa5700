//! What each app's balancer is sent: the healthy replicas of the live nodes, derived from
//! every node's status and kept as sets per app, so that a status version costs the apps it
//! changes and an unchanged list is not sent again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::hash::{StableMap, mix, stable_hash};
use crate::model::{AppName, Frontend, NodeId};
use crate::registry::{Key, Registry};
use crate::schedule::ContainerState;

use super::io::Effects;
use super::{Action, Backend, NodeStatus, Value};

/// The healthy replicas of every node, and what each app's balancer was sent.
#[derive(Debug, Default)]
pub(super) struct Balancers {
    /// The healthy replicas each node's status lists, live or not, sorted.
    by_node: StableMap<NodeId, Vec<Backend>>,
    /// The healthy replicas of the nodes whose replicas take requests (this node, and the
    /// members not suspected), by app: what each balancer gets.
    healthy: BTreeMap<AppName, BackendSet>,
    /// What each balancer was last sent: its frontend and a fingerprint of its backend
    /// list, so an unchanged list is not sent again. A fingerprint, not a copy: a
    /// thousand-node cluster's lists would be held twice over on every node otherwise.
    sent: BTreeMap<AppName, (Frontend, u64)>,
    /// Apps whose list may differ from what was sent; `update` looks at these only.
    dirty: BTreeSet<AppName>,
}

impl Balancers {
    /// `node`'s healthy replicas as `status` lists them, if that differs from what was derived
    /// before (`None` when it does not): built only when it changed.
    pub(super) fn changed_list(&self, node: &NodeId, status: Option<&NodeStatus>) -> Option<Vec<Backend>> {
        let old = self.by_node.get(node).map(Vec::as_slice).unwrap_or(&[]);
        let status_addr = status.map_or("", |s| s.addr.as_str());
        let healthy =
            || status.into_iter().flat_map(|s| s.containers.iter().filter(|c| c.state == ContainerState::Healthy));
        let same = healthy().count() == old.len()
            && healthy()
                .all(|c| old.iter().any(|b| b.host_port == c.host_port && b.slot == c.slot && *b.addr == *status_addr));
        if same {
            return None;
        }
        let addr: Arc<str> = match old.first() {
            Some(b) if *b.addr == *status_addr => b.addr.clone(),
            _ => crate::intern::host(stable_hash(status_addr.as_bytes()), status_addr),
        };
        let mut list: Vec<Backend> = healthy()
            .map(|c| Backend { node: node.clone(), addr: addr.clone(), host_port: c.host_port, slot: c.slot.clone() })
            .collect();
        list.sort();
        list.dedup();
        Some(list)
    }

    /// `node`'s healthy replicas are now `list`; into the balancers' sets when its replicas
    /// take requests (`trusted`), else they wait until it does.
    pub(super) fn set_node_list(&mut self, node: &NodeId, list: Vec<Backend>, trusted: bool) {
        let old = self.by_node.remove(node).unwrap_or_default();
        if trusted {
            self.unlist(&old);
            self.list(&list);
        }
        if !list.is_empty() {
            self.by_node.insert(node.clone(), list);
        }
    }

    /// `node`'s replicas take requests now: it joined, or a suspicion of it was cleared.
    pub(super) fn list_node(&mut self, node: &NodeId) {
        let list = self.by_node.get(node).cloned().unwrap_or_default();
        self.list(&list);
    }

    /// `node`'s replicas no longer take requests: it left, or is suspected.
    pub(super) fn unlist_node(&mut self, node: &NodeId) {
        let list = self.by_node.get(node).cloned().unwrap_or_default();
        self.unlist(&list);
    }

    /// `app`'s spec changed: its balancer's port or picker may have.
    pub(super) fn app_changed(&mut self, app: &AppName) {
        self.dirty.insert(app.clone());
    }

    /// The copy of `app`'s name a balancer holds, if one does.
    pub(super) fn shared_app_name(&self, app: &AppName) -> Option<&AppName> {
        self.sent.get_key_value(app).map(|(name, _)| name)
    }

    /// Whether any balancer's set holds a replica of `node`.
    #[cfg(test)]
    pub(super) fn lists_node(&self, node: &NodeId) -> bool {
        self.healthy.values().flatten().any(|backend| backend.node == *node)
    }

    /// Adds a node's healthy replicas to their apps' sets.
    fn list(&mut self, list: &[Backend]) {
        for b in list {
            if self.healthy.entry(b.slot.app.clone()).or_default().insert(b.clone()) {
                self.dirty.insert(b.slot.app.clone());
            }
        }
    }

    /// Takes a node's replicas out of their apps' sets.
    fn unlist(&mut self, list: &[Backend]) {
        for b in list {
            if let Some(set) = self.healthy.get_mut(&b.slot.app)
                && set.remove(b)
            {
                if set.is_empty() {
                    self.healthy.remove(&b.slot.app);
                }
                self.dirty.insert(b.slot.app.clone());
            }
        }
    }

    /// Sends each balancer its healthy backends, when they changed, and closes the balancers
    /// of apps gone from `registry`. Only apps whose facts changed since the last call are
    /// looked at; the others' lists are current already.
    pub(super) fn update(&mut self, registry: &Registry<Value>, out: &mut Effects) {
        let dirty = std::mem::take(&mut self.dirty);
        let mut gone = Vec::new();
        for app in dirty {
            let Some(Value::App(spec)) = registry.get(&Key::App(app.clone())) else {
                if self.sent.contains_key(&app) {
                    gone.push(app);
                }
                continue;
            };
            let frontend = spec.frontend();
            // The list is copied out only when it changed.
            let healthy = self.healthy.get(&app);
            let fingerprint = BackendSet::fingerprint(healthy);
            let same = self.sent.get(&app).is_some_and(|&sent| sent == (frontend, fingerprint));
            if !same {
                let backends: Vec<Backend> = healthy.into_iter().flatten().cloned().collect();
                self.sent.insert(app.clone(), (frontend, fingerprint));
                out.push(Action::SetBackends { app, frontend, backends });
            }
        }
        for app in gone {
            self.sent.remove(&app);
            out.push(Action::RemoveBalancer { app });
        }
    }

    /// What must hold: a balancer's backends are on nodes whose replicas take requests.
    pub(super) fn check_invariants(&self, takes_requests: impl Fn(&NodeId) -> bool) {
        if cfg!(debug_assertions) {
            for set in self.healthy.values() {
                debug_assert!(set.into_iter().all(|b| takes_requests(&b.node)), "a backend's node takes requests");
                debug_assert!(
                    set.into_iter().all(|b| self.by_node.get(&b.node).is_some_and(|list| list.contains(b))),
                    "a backend is one its node's status lists"
                );
            }
        }
    }
}

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
