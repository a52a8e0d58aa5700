//! The hashes every node computes alike: the same on every machine, build and run.
//!
//! A leaf of the crate (it uses nothing of core's): placement, the registry's digests, the
//! names' caches and the nodes' maps all hash through here, so that two nodes given the same
//! facts compute the same hashes, and a replayed run the same order.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a, then [`mix`]: a hash that is the same on every machine and in every version, unlike
/// std's.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::default();
    h.write(bytes);
    h.finish()
}

/// The splitmix64 finalizer: spreads every input bit over every output bit.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a, then [`mix`]: [`stable_hash`], and as a [`Hasher`] for hash maps keyed by names. The
/// same on every build and run (no random keys), fast on short strings.
#[derive(Clone, Copy, Debug)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        mix(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// A hash map keyed by names (or anything hashed as bytes) with [`StableHasher`]: for what is
/// looked up often and never walked in order, where a walk's order could reach an output.
pub type StableMap<K, V> = HashMap<K, V, BuildHasherDefault<StableHasher>>;

/// A hasher for keys that are hashes already (a registry key's hash, an interned string's):
/// it is its own hash. A map keyed so costs one memory access per lookup where a B-tree of a
/// thousand keys costs three or four, on a path every received copy of every rumor takes.
/// Iteration order is the map's own: callers that hand out keys in order sort them. (A peer
/// that chose keys whose hashes collide would slow its own entries' lookups only as far as
/// the registry's bounded size lets it.)
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHashHasher(u64);

impl Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (keys are u64); fold anything else in all the same.
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A hash map keyed by 64-bit hashes ([`KeyHashHasher`]).
pub type KeyHashMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHashHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stable_hash_is_fnv_1a_then_mixed() {
        // FNV-1a of the empty string is its offset basis; of "a", a published test vector.
        assert_eq!(stable_hash(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(stable_hash(b"a"), mix(0xaf63_dc4c_8601_ec8c));
    }

    #[test]
    fn a_key_hash_is_its_own_hash() {
        let mut h = KeyHashHasher::default();
        h.write_u64(0xdead_beef);
        assert_eq!(h.finish(), 0xdead_beef);
    }
}
