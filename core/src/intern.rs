//! Shared copies of the short strings that every message repeats: node and app names, peer
//! addresses.
//!
//! A node decodes the same few hundred or thousand names over and over: every status names its
//! node and the apps of its slots, every SWIM packet its sender and receiver. Decoded each
//! time, a name is two allocations and a copy, and a thousand nodes' registries hold millions
//! of copies of a thousand strings. Decoding through this cache hands out one shared copy per
//! string instead, and names that are one copy compare by pointer.
//!
//! The cache belongs to the thread (the simulator runs every node on one thread, the real agent
//! is one node), holds at most [`limits::INTERNED_MAX`] strings, and changes no result: a
//! string is handed out equal to the one asked for, shared or not.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use crate::hash::{KeyHashHasher, stable_hash};
use crate::limits;

/// A shared value as the cache holds it.
pub(crate) trait Held: Clone {
    /// Whether only the cache holds it.
    fn unused(&self) -> bool;
}

/// A shared string as the cache holds it.
pub(crate) trait Shared: Held {
    /// A new shared copy of `text`.
    fn make(text: &str) -> Self;
    /// Its text.
    fn text(&self) -> &str;
}

impl Held for Arc<str> {
    fn unused(&self) -> bool {
        Arc::strong_count(self) == 1
    }
}

impl Shared for Arc<str> {
    fn make(text: &str) -> Self {
        Arc::from(text)
    }
    fn text(&self) -> &str {
        self
    }
}

impl Held for Arc<Box<str>> {
    fn unused(&self) -> bool {
        Arc::strong_count(self) == 1
    }
}

impl Shared for Arc<Box<str>> {
    fn make(text: &str) -> Self {
        Arc::new(Box::from(text))
    }
    fn text(&self) -> &str {
        self
    }
}

/// Values by a 64-bit hash of what they hold (strings, or whatever the caller hashes).
pub(crate) struct Interner<V> {
    table: HashMap<u64, V, BuildHasherDefault<KeyHashHasher>>,
}

impl<V: Held> Interner<V> {
    pub(crate) fn new() -> Interner<V> {
        Interner { table: HashMap::default() }
    }

    /// The shared value under `hash` if `is` says it is the one wanted, else a new one from
    /// `make`, kept for the next caller unless another value holds the hash.
    pub(crate) fn get_or_make(&mut self, hash: u64, is: impl FnOnce(&V) -> bool, make: impl FnOnce() -> V) -> V {
        if let Some(held) = self.table.get(&hash) {
            if is(held) {
                return held.clone();
            }
            // Two values with one 64-bit hash: the second is not shared.
            return make();
        }
        if self.table.len() >= limits::INTERNED_MAX {
            // Full: drop what only the cache holds; if most is still in use, start over (the
            // values in use stay valid, they are just no longer shared with new copies).
            self.table.retain(|_, held| !held.unused());
            if self.table.len() >= limits::INTERNED_MAX / 2 {
                self.table.clear();
            }
        }
        let value = make();
        self.table.insert(hash, value.clone());
        value
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

impl<V: Shared> Interner<V> {
    /// The shared copy of `text`, whose [`stable_hash`] is `hash` (callers that keep the hash
    /// compute it once), made if there is none.
    pub(crate) fn get(&mut self, hash: u64, text: &str) -> V {
        debug_assert_eq!(hash, stable_hash(text.as_bytes()));
        self.get_or_make(hash, |held| held.text() == text, || V::make(text))
    }
}

thread_local! {
    /// Node and app names (`model::NodeId`, `model::AppName`: this module sits below them).
    static NAMES: RefCell<Interner<Arc<Box<str>>>> = RefCell::new(Interner::new());
    /// Peers' gossip addresses (`membership::PeerAddr`).
    static ADDRS: RefCell<Interner<Arc<str>>> = RefCell::new(Interner::new());
    /// The host addresses in balancers' backends (`node::Backend::addr`): every node
    /// lists every peer's replicas, and a copy per node and peer was a thousand copies of each
    /// address at a thousand nodes, each cold when a balancer's list is copied out.
    static HOSTS: RefCell<Interner<Arc<str>>> = RefCell::new(Interner::new());
}

/// This thread's shared copy of the name `text`, whose [`stable_hash`] is `hash`.
pub(crate) fn name(hash: u64, text: &str) -> Arc<Box<str>> {
    with(&NAMES, |names| names.get(hash, text))
}

/// This thread's shared copy of the peer address `text`, whose [`stable_hash`] is `hash`.
pub(crate) fn peer_addr(hash: u64, text: &str) -> Arc<str> {
    with(&ADDRS, |addrs| addrs.get(hash, text))
}

/// This thread's shared copy of the backend host `text`, whose [`stable_hash`] is `hash`.
pub(crate) fn host(hash: u64, text: &str) -> Arc<str> {
    with(&HOSTS, |hosts| hosts.get(hash, text))
}

/// Runs `f` on this thread's cache of type `V`: the three string caches above, and the SWIM
/// identities' (`membership`, which sits above this module, holds that one: its values are
/// membership's own type).
pub(crate) fn with<V: Held + 'static, R>(
    cache: &'static std::thread::LocalKey<RefCell<Interner<V>>>,
    f: impl FnOnce(&mut Interner<V>) -> R,
) -> R {
    cache.with(|c| f(&mut c.borrow_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(i: &mut Interner<Arc<str>>, text: &str) -> Arc<str> {
        i.get(stable_hash(text.as_bytes()), text)
    }

    #[test]
    fn one_copy_per_string_and_equal_to_it() {
        let mut i = Interner::new();
        let a = get(&mut i, "node-1");
        let b = get(&mut i, "node-1");
        let c = get(&mut i, "node-2");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!((&*a, &*c), ("node-1", "node-2"));
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn the_cache_stays_bounded_and_keeps_what_is_in_use() {
        let mut i = Interner::new();
        let kept: Vec<Arc<str>> = (0..10).map(|n| get(&mut i, &format!("kept-{n}"))).collect();
        for n in 0..3 * limits::INTERNED_MAX {
            get(&mut i, &format!("name-{n}"));
            assert!(i.len() <= limits::INTERNED_MAX);
        }
        // Every copy handed out is still its string; the ones in use are still shared.
        for (n, k) in kept.iter().enumerate() {
            assert_eq!(&**k, format!("kept-{n}"));
            assert!(Arc::ptr_eq(k, &get(&mut i, &format!("kept-{n}"))));
        }
    }
}
