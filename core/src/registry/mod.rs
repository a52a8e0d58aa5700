//! The replicated registry: the desired and observed state every node gossips, as a map from
//! [`Key`] to a last-writer-wins [`Entry`], versioned by a hybrid logical clock.
//!
//! Each write gets a [`Version`] from the writer's [`HlcClock`] (Kulkarni et al., "Logical
//! Physical Clocks"): its wall time in milliseconds, a logical counter that orders writes within
//! one millisecond and lets a clock run past a peer's, and the writer's name to break the last
//! tie. Versions are totally ordered, so two nodes that hold the same set of entries agree on
//! every value whatever order the entries arrived in: [`Registry::merge`] keeps the newest
//! version of each key and nothing else. A removal is a write of a tombstone (`value: None`), so
//! an older write arriving late cannot bring a removed key back.
//!
//! Spreading entries is the caller's job, and the registry supports both halves of it:
//! [`Registry::take_recent`] lists the keys changed since the last call, for rumors, and
//! [`Registry::digest`] hashes the key space in [`limits::REGISTRY_BUCKETS`] buckets (folded
//! into one [`Registry::root_hash`]), so two nodes find the buckets they disagree on
//! ([`Registry::mismatched_buckets`]): anti-entropy repairs whatever rumors missed. A caller can
//! then send each other every entry of those buckets ([`Registry::entries_in_buckets`]), or, as
//! `node` does, compare their [`Head`]s ([`Registry::heads_in_buckets`], [`Registry::is_news`])
//! and send only the entries the other lacks ([`Registry::entries_by_key_hash`]).
//!
//! # What the driver must guarantee
//!
//! - `now` is on an epoch every node shares (Unix time for the real agent, the run's start in
//!   the simulator): versions compare wall times across nodes, entries more than
//!   [`limits::REGISTRY_CLOCK_AHEAD_MS_MAX`] ahead of the receiver's `now` are refused, and
//!   tombstones are collected by age. On per-process epochs the registry stays consistent but
//!   "last" writer stops meaning latest in real time.
//! - A writer never issues one version twice. Its clock guarantees that within one process; a
//!   node that restarts with an empty registry must not have its wall clock behind the writes it
//!   made before (or must merge its old entries back before writing).
//!
//! The digest hashes keys and versions, not values: two entries with the same key and version
//! are taken to be the same write, which the rule above makes true.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet, VecDeque, hash_map};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::hash::{KeyHashHasher, KeyHashMap, mix, stable_hash};
use crate::limits;
use crate::model::{AppName, NodeId};
use crate::time::Time;

mod hlc;
pub use hlc::HlcClock;

/// The version of one write: ordered by wall time, then logical counter, then writer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// The writer's hybrid clock wall time, in milliseconds since the shared epoch.
    pub wall_ms: u64,
    /// Orders writes that share a wall time.
    pub logical: u32,
    /// The node that wrote; breaks the last tie.
    pub writer: NodeId,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.logical, self.writer)
    }
}

/// What an entry is about. Ordered by kind, then name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Key {
    /// An app's spec; any node writes it, on behalf of the API.
    App(AppName),
    /// A node's containers, their health and ports; only that node writes a value here.
    Status(NodeId),
    /// A node's request counters; only that node writes a value here.
    Load(NodeId),
    /// An app's replica count; only the app's coordinator writes it (the caller checks).
    Scale(AppName),
    /// The verdicts on an app's rollouts; only the app's coordinator writes it.
    Rollout(AppName),
}

impl Key {
    /// The app or node name in the key.
    pub fn name(&self) -> &str {
        match self {
            Key::App(a) | Key::Scale(a) | Key::Rollout(a) => a.as_str(),
            Key::Status(n) | Key::Load(n) => n.as_str(),
        }
    }

    /// Whether the key is part of the desired state (`app/`, `scale/`, `rollout/`): what an
    /// agent persists and restores; statuses and loads are facts of a node's life.
    pub fn is_desired_state(&self) -> bool {
        matches!(self, Key::App(_) | Key::Scale(_) | Key::Rollout(_))
    }

    /// The only node allowed to write a value under this key, for keys that have one. Anyone
    /// may write a tombstone there, so the cluster can forget a node that left.
    pub fn owner(&self) -> Option<&NodeId> {
        match self {
            Key::Status(n) | Key::Load(n) => Some(n),
            Key::App(_) | Key::Scale(_) | Key::Rollout(_) => None,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::App(a) => write!(f, "app/{a}"),
            Key::Status(n) => write!(f, "status/{n}"),
            Key::Load(n) => write!(f, "load/{n}"),
            Key::Scale(a) => write!(f, "scale/{a}"),
            Key::Rollout(a) => write!(f, "rollout/{a}"),
        }
    }
}

/// One key's latest write: a value, or a tombstone when `value` is `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<V> {
    /// Who wrote it, and when.
    pub version: Version,
    /// The value; `None` is a tombstone, a removal that beats every older write.
    pub value: Option<V>,
}

impl<V> Entry<V> {
    /// Whether this entry records a removal.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// One entry's key and version in a fixed-size, allocation-free form: enough for a node to tell
/// whether a peer's entry is news before it decodes the entry. Gossip sends a head in front of
/// every entry, and anti-entropy compares heads instead of whole entries.
///
/// Keys and writers appear as 64-bit hashes. Two keys of one registry whose hashes collide would
/// shadow each other in gossip (anti-entropy would not repair them); with a million keys the odds
/// are about 1 in 10^7.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Head {
    /// [`key_hash`] of the entry's key.
    pub key_hash: u64,
    /// The version's wall time.
    pub wall_ms: u64,
    /// The version's logical counter.
    pub logical: u32,
    /// A hash of the version's writer.
    pub writer_hash: u64,
}

/// A head on the wire: 28 bytes, little-endian, in field order. Fixed width because the two
/// hashes are random 64-bit numbers, which varints would make longer, and slower to read: a
/// node reads a head for every copy of every rumor it receives.
pub const HEAD_BYTES: usize = 28;

impl Serialize for Head {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = [0u8; HEAD_BYTES];
        bytes[0..8].copy_from_slice(&self.key_hash.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.wall_ms.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.logical.to_le_bytes());
        bytes[20..28].copy_from_slice(&self.writer_hash.to_le_bytes());
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Head, D::Error> {
        struct HeadVisitor;
        impl serde::de::Visitor<'_> for HeadVisitor {
            type Value = Head;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{HEAD_BYTES} bytes of an entry head")
            }
            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Head, E> {
                if b.len() != HEAD_BYTES {
                    return Err(E::invalid_length(b.len(), &self));
                }
                let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
                Ok(Head {
                    key_hash: u64_at(0),
                    wall_ms: u64_at(8),
                    logical: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
                    writer_hash: u64_at(20),
                })
            }
        }
        deserializer.deserialize_bytes(HeadVisitor)
    }
}

impl Head {
    /// The head of `key` at `version`.
    pub fn of(key: &Key, version: &Version) -> Head {
        Head::with_key_hash(key_hash(key), version)
    }

    fn with_key_hash(key_hash: u64, version: &Version) -> Head {
        Head {
            key_hash,
            wall_ms: version.wall_ms,
            logical: version.logical,
            writer_hash: stable_hash(version.writer.as_str().as_bytes()),
        }
    }

    /// Whether an entry with this head may be newer than one with `other` for the same key:
    /// it is when its time is later, and may be when the times tie and the writers differ (the
    /// writers' names break that tie, and a head carries only their hashes).
    pub fn may_beat(&self, other: &Head) -> bool {
        let (mine, theirs) = ((self.wall_ms, self.logical), (other.wall_ms, other.logical));
        mine > theirs || (mine == theirs && self.writer_hash != other.writer_hash)
    }

    /// What the entry puts in its bucket's hash: `entry_hash` of its key hash and version,
    /// from the head alone.
    fn entry_hash(&self) -> u64 {
        mix(self.key_hash ^ mix(self.wall_ms ^ mix(u64::from(self.logical) ^ self.writer_hash)))
    }

    /// The anti-entropy bucket of the entry's key.
    pub fn bucket(&self) -> u16 {
        bucket_of_hash(self.key_hash)
    }
}

/// The registry's anti-entropy summary: one hash per bucket of the key space, over the keys and
/// versions of the entries in it, tombstones included.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest {
    /// The hash of each bucket, [`limits::REGISTRY_BUCKETS`] of them; 0 for an empty bucket.
    pub buckets: Vec<u64>,
}

/// Why a write was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry holds `keys_max` keys already and `key` is not one of them. Nothing changed,
    /// not even the clock.
    #[error(
        "registry full: it holds {keys_max} keys of this kind or in all, the most allowed, so {key} was not written"
    )]
    Full {
        /// The key that was not written.
        key: Key,
        /// How many keys the registry holds at most.
        keys_max: usize,
    },
    /// A value encodes to more bytes than allowed. Nothing changed: the caller must not write it.
    #[error("{key}: the value is {size_bytes} bytes encoded; at most {max_bytes} are allowed")]
    TooLarge {
        /// The key the value was meant for.
        key: Key,
        /// The encoded size.
        size_bytes: usize,
        /// [`limits::REGISTRY_VALUE_BYTES_MAX`].
        max_bytes: usize,
    },
}

/// Checks a value's encoded size before it is written under `key` or sent.
pub fn check_size(key: &Key, size_bytes: usize) -> Result<(), RegistryError> {
    if size_bytes > limits::REGISTRY_VALUE_BYTES_MAX {
        return Err(RegistryError::TooLarge {
            key: key.clone(),
            size_bytes,
            max_bytes: limits::REGISTRY_VALUE_BYTES_MAX,
        });
    }
    Ok(())
}

/// The anti-entropy bucket of `key`, in `0..REGISTRY_BUCKETS`.
pub fn bucket_of(key: &Key) -> u16 {
    bucket_of_hash(key_hash(key))
}

/// A stable 64-bit hash of `key`, the same on every node and every build: its kind, then its
/// name.
pub fn key_hash(key: &Key) -> u64 {
    let kind: u64 = match key {
        Key::App(_) => 1,
        Key::Status(_) => 2,
        Key::Load(_) => 3,
        Key::Scale(_) => 4,
        Key::Rollout(_) => 5,
    };
    mix(stable_hash(key.name().as_bytes()) ^ kind)
}

fn bucket_of_hash(key_hash: u64) -> u16 {
    (key_hash % limits::REGISTRY_BUCKETS as u64) as u16
}

/// What an entry puts in its bucket's hash (see [`Head::entry_hash`]).
fn entry_hash(key_hash: u64, version: &Version) -> u64 {
    Head::with_key_hash(key_hash, version).entry_hash()
}

/// The bucket hashes folded in order: [`Registry::root_hash`].
fn root_of(buckets: &[u64; limits::REGISTRY_BUCKETS]) -> u64 {
    buckets.iter().fold(0, |acc, b| mix(acc ^ b))
}

/// `true` at each bucket listed; out-of-range ones are ignored.
fn bucket_mask(buckets: &[u16]) -> [bool; limits::REGISTRY_BUCKETS] {
    let mut wanted = [false; limits::REGISTRY_BUCKETS];
    for &b in buckets {
        if let Some(w) = wanted.get_mut(usize::from(b)) {
            *w = true;
        }
    }
    wanted
}

fn name_is_bounded(name: &str) -> bool {
    !name.is_empty() && name.len() <= limits::NAME_LEN_MAX
}

/// Above this many keys the O(n) invariant checks are skipped even in debug builds, so a large
/// simulated cluster does not turn every merge into a full scan.
const FULL_CHECK_KEYS_MAX: usize = 1024;

/// A last-writer-wins map from [`Key`] to `V`, replicated by merging [`Entry`]s.
#[derive(Clone, Debug)]
pub struct Registry<V> {
    me: NodeId,
    clock: HlcClock,
    entries: BTreeMap<Key, Entry<V>>,
    /// The head of every entry, by key hash, with its key: what gossip compares.
    heads: KeyHashMap<(Head, Key)>,
    /// XOR of `entry_hash` over the entries of each bucket.
    buckets: [u64; limits::REGISTRY_BUCKETS],
    /// [`Registry::root_hash`], folded when first read after a change (`None` until then): a
    /// packet of news stores dozens of entries, and folding the buckets after each was a few
    /// percent of a thousand-node cold start; drivers read the root once per input.
    root: Cell<Option<u64>>,
    /// Keys changed since the last `take_recent`, oldest first, each once.
    recent: VecDeque<Key>,
    /// The hashes of the keys in `recent` (see [`Head`] on collisions).
    recent_set: HashSet<u64, BuildHasherDefault<KeyHashHasher>>,
    /// Tombstones older than this were collected; ones that come back are not taken again.
    tombstone_horizon_ms: u64,
    /// [`limits::REGISTRY_KEYS_MAX`], lowered by tests.
    keys_max: usize,
    /// Keys held of each kind ([`kind_of`]), tombstones included: bounded by [`kind_max`], so
    /// that no peer can fill the registry with one kind (junk apps, statuses of nodes that do
    /// not exist) and crowd out the others.
    kinds: [usize; 5],
}

/// The index of `key`'s kind in [`Registry::kinds`].
fn kind_of(key: &Key) -> usize {
    match key {
        Key::App(_) => 0,
        Key::Status(_) => 1,
        Key::Load(_) => 2,
        Key::Scale(_) => 3,
        Key::Rollout(_) => 4,
    }
}

/// Most keys of `key`'s kind a registry holds, tombstones included: each app and node once
/// live and once removed (within the tombstone horizon).
pub fn kind_max(key: &Key) -> usize {
    match key {
        Key::App(_) | Key::Scale(_) | Key::Rollout(_) => 2 * limits::APPS_MAX,
        Key::Status(_) | Key::Load(_) => 2 * limits::NODES_MAX,
    }
}

impl<V: Clone> Registry<V> {
    /// An empty registry on node `me`, whose writes carry `me` as their writer.
    pub fn new(me: NodeId) -> Registry<V> {
        assert!(name_is_bounded(me.as_str()), "node name {me:?} must be 1 to {} bytes", limits::NAME_LEN_MAX);
        Registry {
            me,
            clock: HlcClock::new(),
            entries: BTreeMap::new(),
            heads: KeyHashMap::default(),
            buckets: [0; limits::REGISTRY_BUCKETS],
            root: Cell::new(None),
            recent: VecDeque::new(),
            recent_set: HashSet::default(),
            tombstone_horizon_ms: 0,
            keys_max: limits::REGISTRY_KEYS_MAX,
            kinds: [0; 5],
        }
    }

    /// The node this registry writes as.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// The registry's hybrid logical clock.
    pub fn clock(&self) -> &HlcClock {
        &self.clock
    }

    /// Writes `value` under `key` at `now`, with a version newer than any this registry holds,
    /// and returns that version. `Full` when `key` is new and the registry holds
    /// [`limits::REGISTRY_KEYS_MAX`] keys; nothing changes then.
    ///
    /// Panics when `key` has an [owner](Key::owner) other than this node, or a name that is
    /// empty or longer than [`limits::NAME_LEN_MAX`]: both are the caller's bugs.
    pub fn put(&mut self, now: Time, key: Key, value: V) -> Result<Version, RegistryError> {
        assert!(
            key.owner().is_none_or(|owner| *owner == self.me),
            "{} writes {key}: only {} may write a value there",
            self.me,
            key.name()
        );
        self.write(now, key, Some(value))
    }

    /// Removes `key` at `now` by writing a tombstone, even when the key is absent here (a value
    /// this node has not seen yet may be on its way), and returns the tombstone's version. Any
    /// node may remove any key.
    ///
    /// The one exception: when `key` is absent here and the registry holds
    /// [`limits::REGISTRY_KEYS_MAX`] keys, there is nothing here to remove and no room for a
    /// tombstone, so none is stored (the version is still issued). While the registry is full,
    /// merges refuse new keys too, so the key stays absent until room frees up.
    pub fn remove(&mut self, now: Time, key: Key) -> Version {
        match self.write(now, key, None) {
            Ok(version) => version,
            Err(RegistryError::Full { .. }) => {
                let (wall_ms, logical) = self.clock.now(now);
                self.check_invariants();
                Version { wall_ms, logical, writer: self.me.clone() }
            }
            Err(e) => unreachable!("a removal only fails as full: {e}"),
        }
    }

    /// Checks a value's encoded size before it is written under `key`: [`check_size`], for
    /// callers that hold a registry.
    pub fn check_size(&self, key: &Key, size_bytes: usize) -> Result<(), RegistryError> {
        check_size(key, size_bytes)
    }

    fn write(&mut self, now: Time, key: Key, value: Option<V>) -> Result<Version, RegistryError> {
        assert!(name_is_bounded(key.name()), "{key:?}: names must be 1 to {} bytes", limits::NAME_LEN_MAX);
        if !self.entries.contains_key(&key) && !self.has_room_for(&key) {
            return Err(RegistryError::Full { keys_max: self.keys_max.min(kind_max(&key)), key });
        }
        let (wall_ms, logical) = self.clock.now(now);
        let version = Version { wall_ms, logical, writer: self.me.clone() };
        if let Some(old) = self.entries.get(&key) {
            assert!(version > old.version, "the clock is past every version it stored");
        }
        self.store(key, Entry { version: version.clone(), value });
        self.check_invariants();
        Ok(version)
    }

    /// Takes in an entry from a peer at `now`. Returns true when it was stored, which is only when
    /// it is strictly newer than what this registry holds for `key` (so an older write never
    /// overwrites a newer value nor brings back a removed key, and merging an entry twice stores
    /// it once). An entry that passes the checks below is observed into the clock even when it
    /// is older, so this node's next writes come after it.
    ///
    /// Refused (false, nothing changed) whatever its version, an entry:
    /// - whose key or writer name is empty or longer than [`limits::NAME_LEN_MAX`];
    /// - holding a value under a key whose [owner](Key::owner) is not its writer;
    /// - with a wall time more than [`limits::REGISTRY_CLOCK_AHEAD_MS_MAX`] after `now`;
    /// - for a new key when the registry holds [`limits::REGISTRY_KEYS_MAX`] keys, or
    ///   [`kind_max`] of its kind (anti-entropy offers it again once there is room);
    /// - that is a tombstone for an absent key, older than the tombstones already collected.
    pub fn merge(&mut self, now: Time, key: Key, entry: Entry<V>) -> bool {
        let version = &entry.version;
        let well_formed = name_is_bounded(key.name())
            && name_is_bounded(version.writer.as_str())
            && (entry.is_tombstone() || key.owner().is_none_or(|owner| *owner == version.writer))
            && version.wall_ms <= now.as_millis().saturating_add(limits::REGISTRY_CLOCK_AHEAD_MS_MAX);
        if !well_formed {
            return false;
        }
        self.clock.observe(now, version);
        let key_hash = key_hash(&key);
        // The head held for the key settles most comparisons without a walk of the entries:
        // versions order by wall time, then logical counter, then writer.
        let held = match self.heads.get(&key_hash) {
            Some((head, held_key)) if *held_key == key => Some(*head),
            _ => None,
        };
        let newer = match held {
            Some(head) if (head.wall_ms, head.logical) != (version.wall_ms, version.logical) => {
                (version.wall_ms, version.logical) > (head.wall_ms, head.logical)
            }
            _ => match self.entries.get(&key) {
                Some(old) => *version > old.version,
                None => {
                    self.has_room_for(&key) && !(entry.is_tombstone() && version.wall_ms < self.tombstone_horizon_ms)
                }
            },
        };
        if newer {
            self.store_hashed(key_hash, key, entry);
        }
        self.check_invariants();
        newer
    }

    /// Whether a new key `key` fits: under [`limits::REGISTRY_KEYS_MAX`] keys in all and
    /// [`kind_max`] of its kind.
    fn has_room_for(&self, key: &Key) -> bool {
        self.entries.len() < self.keys_max && self.kinds[kind_of(key)] < kind_max(key)
    }

    /// Stores `entry` under `key`, replacing what was there, and updates the bucket hash and the
    /// recent keys.
    fn store(&mut self, key: Key, entry: Entry<V>) {
        self.store_hashed(key_hash(&key), key, entry);
    }

    /// [`Registry::store`], for a caller that has the key's hash already.
    fn store_hashed(&mut self, key_hash: u64, key: Key, entry: Entry<V>) {
        debug_assert_eq!(key_hash, self::key_hash(&key));
        let bucket = usize::from(bucket_of_hash(key_hash));
        let head = Head::with_key_hash(key_hash, &entry.version);
        self.buckets[bucket] ^= head.entry_hash();
        // One walk of each map: the old head says what the old entry put in the bucket hash.
        match self.heads.entry(key_hash) {
            hash_map::Entry::Occupied(mut held) => {
                debug_assert_eq!(held.get().1, key, "two keys share a 64-bit hash");
                let old = std::mem::replace(&mut held.get_mut().0, head);
                self.buckets[bucket] ^= old.entry_hash();
            }
            hash_map::Entry::Vacant(free) => {
                free.insert((head, key.clone()));
            }
        }
        self.root.set(None);
        let recent = self.recent_set.insert(key_hash);
        if recent && self.recent.len() == limits::REGISTRY_RECENT_MAX {
            let oldest = self.recent.pop_front().expect("the queue is full");
            self.recent_set.remove(&self::key_hash(&oldest));
        }
        match self.entries.get_mut(&key) {
            Some(held) => *held = entry,
            None => {
                self.kinds[kind_of(&key)] += 1;
                self.entries.insert(key.clone(), entry);
            }
        }
        if recent {
            self.recent.push_back(key);
        }
    }

    /// The live value under `key`; `None` when absent or removed.
    pub fn get(&self, key: &Key) -> Option<&V> {
        self.entries.get(key).and_then(|e| e.value.as_ref())
    }

    /// The entry under `key`, tombstones included.
    pub fn entry(&self, key: &Key) -> Option<&Entry<V>> {
        self.entries.get(key)
    }

    /// The version of the entry under `key`, tombstones included.
    pub fn version_of(&self, key: &Key) -> Option<&Version> {
        self.entries.get(key).map(|e| &e.version)
    }

    /// Every entry, tombstones included, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Entry<V>)> + '_ {
        self.entries.iter()
    }

    /// Keys held, tombstones included: what [`limits::REGISTRY_KEYS_MAX`] bounds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the registry holds no key, not even a tombstone.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The live `(key, value)` pairs from `from` (inclusive) to `to` (exclusive, or the end).
    fn live_between(&self, from: Key, to: Option<Key>) -> impl Iterator<Item = (&Key, &V)> + '_ {
        let to = to.map_or(Bound::Unbounded, Bound::Excluded);
        self.entries.range((Bound::Included(from), to)).filter_map(|(k, e)| e.value.as_ref().map(|v| (k, v)))
    }

    /// Every live app spec, by app name.
    pub fn apps(&self) -> impl Iterator<Item = (&AppName, &V)> + '_ {
        self.live_between(Key::App(AppName::new("")), Some(Key::Status(NodeId::new(""))))
            .filter_map(|(k, v)| if let Key::App(a) = k { Some((a, v)) } else { None })
    }

    /// Every live node status, by node name.
    pub fn statuses(&self) -> impl Iterator<Item = (&NodeId, &V)> + '_ {
        self.live_between(Key::Status(NodeId::new("")), Some(Key::Load(NodeId::new(""))))
            .filter_map(|(k, v)| if let Key::Status(n) = k { Some((n, v)) } else { None })
    }

    /// Every live node load, by node name.
    pub fn loads(&self) -> impl Iterator<Item = (&NodeId, &V)> + '_ {
        self.live_between(Key::Load(NodeId::new("")), Some(Key::Scale(AppName::new(""))))
            .filter_map(|(k, v)| if let Key::Load(n) = k { Some((n, v)) } else { None })
    }

    /// Every live app scale, by app name.
    pub fn scales(&self) -> impl Iterator<Item = (&AppName, &V)> + '_ {
        self.live_between(Key::Scale(AppName::new("")), Some(Key::Rollout(AppName::new(""))))
            .filter_map(|(k, v)| if let Key::Scale(a) = k { Some((a, v)) } else { None })
    }

    /// Every live rollout record, by app name.
    pub fn rollouts(&self) -> impl Iterator<Item = (&AppName, &V)> + '_ {
        self.live_between(Key::Rollout(AppName::new("")), None)
            .filter_map(|(k, v)| if let Key::Rollout(a) = k { Some((a, v)) } else { None })
    }

    /// The hash of each bucket. Registries holding the same entries have equal digests.
    pub fn digest(&self) -> Digest {
        Digest { buckets: self.buckets.to_vec() }
    }

    /// One hash of the whole registry: the bucket hashes folded in order. Registries holding
    /// the same entries have equal roots; anti-entropy sends this first and the digest only
    /// when the roots differ.
    pub fn root_hash(&self) -> u64 {
        self.root.get().unwrap_or_else(|| {
            let root = root_of(&self.buckets);
            self.root.set(Some(root));
            root
        })
    }

    /// The buckets, ascending, whose hash differs in `other`. A bucket that `other` lacks (a
    /// digest of the wrong length, from a peer) counts as different; extra ones are ignored.
    pub fn mismatched_buckets(&self, other: &Digest) -> Vec<u16> {
        (0..limits::REGISTRY_BUCKETS)
            .filter(|&b| other.buckets.get(b) != Some(&self.buckets[b]))
            .map(|b| u16::try_from(b).expect("bucket count fits u16"))
            .collect()
    }

    /// Whether an entry with `head` would be news here: its key is unknown, or the entry may be
    /// newer than the one held ([`Head::may_beat`]). Decoding an entry that is not news can be
    /// skipped: [`Registry::merge`] would not store it.
    pub fn is_news(&self, head: &Head) -> bool {
        self.heads.get(&head.key_hash).is_none_or(|(mine, _)| head.may_beat(mine))
    }

    /// The heads of every entry in the given buckets (out-of-range ones ignored), in key-hash
    /// order: what anti-entropy sends a peer whose digest differs there.
    pub fn heads_in_buckets(&self, buckets: &[u16]) -> Vec<Head> {
        let wanted = bucket_mask(buckets);
        let mut heads: Vec<Head> =
            self.heads.values().map(|(h, _)| *h).filter(|h| wanted[usize::from(h.bucket())]).collect();
        heads.sort_unstable_by_key(|h| h.key_hash);
        heads
    }

    /// The entries whose key hashes are listed (unknown ones skipped), for a peer that asked.
    pub fn entries_by_key_hash(&self, key_hashes: &[u64]) -> Vec<(Key, Entry<V>)> {
        key_hashes
            .iter()
            .filter_map(|h| self.heads.get(h))
            .filter_map(|(_, key)| self.entries.get(key).map(|e| (key.clone(), e.clone())))
            .collect()
    }

    /// Every entry, tombstones included, in the given buckets, in key order: what a peer whose
    /// digest differs there needs. Buckets out of range are ignored. One scan of the registry;
    /// the result holds about `len() / REGISTRY_BUCKETS` entries per bucket asked for.
    pub fn entries_in_buckets(&self, buckets: &[u16]) -> Vec<(Key, Entry<V>)> {
        let wanted = bucket_mask(buckets);
        if !wanted.contains(&true) {
            return Vec::new();
        }
        self.entries
            .iter()
            .filter(|(k, _)| wanted[usize::from(bucket_of(k))])
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    /// Removes the tombstones written before `now - older_than_ms` and returns how many. From
    /// then on, a tombstone that old for an absent key is not taken from a peer again.
    ///
    /// The trade-off: a collected tombstone no longer beats older writes. A node partitioned
    /// for longer than `older_than_ms` that still holds the removed value would bring it back
    /// through anti-entropy, so pick `older_than_ms` far above any partition the cluster
    /// tolerates (and above the clock skew between nodes).
    pub fn collect_tombstones(&mut self, now: Time, older_than_ms: u64) -> usize {
        let cutoff_ms = now.as_millis().saturating_sub(older_than_ms);
        let before = self.entries.len();
        let buckets = &mut self.buckets;
        let heads = &mut self.heads;
        let kinds = &mut self.kinds;
        self.entries.retain(|key, entry| {
            let keep = !entry.is_tombstone() || entry.version.wall_ms >= cutoff_ms;
            if !keep {
                kinds[kind_of(key)] -= 1;
                let key_hash = key_hash(key);
                buckets[usize::from(bucket_of_hash(key_hash))] ^= entry_hash(key_hash, &entry.version);
                heads.remove(&key_hash);
            }
            keep
        });
        self.tombstone_horizon_ms = self.tombstone_horizon_ms.max(cutoff_ms);
        self.root.set(None);
        self.check_invariants();
        before - self.entries.len()
    }

    /// Whether a key changed since the last [`Registry::take_recent`].
    pub fn has_recent(&self) -> bool {
        !self.recent.is_empty()
    }

    /// Drains the keys changed (put, removed, or merged and stored) since the last call, each
    /// once, in the order each first changed, leaving out keys collected since. At most
    /// [`limits::REGISTRY_RECENT_MAX`]: when more changed, the oldest were dropped, and
    /// anti-entropy spreads those instead.
    pub fn take_recent(&mut self) -> Vec<Key> {
        if self.recent.is_empty() {
            return Vec::new();
        }
        self.recent_set.clear();
        let entries = &self.entries;
        let keys = self.recent.drain(..).filter(|k| entries.contains_key(k)).collect();
        self.check_invariants();
        keys
    }

    fn check_invariants(&self) {
        assert!(self.entries.len() <= self.keys_max);
        assert!(self.keys_max <= limits::REGISTRY_KEYS_MAX);
        assert!(self.recent.len() <= limits::REGISTRY_RECENT_MAX);
        assert_eq!(self.recent.len(), self.recent_set.len());
        assert_eq!(self.heads.len(), self.entries.len(), "one head per entry");
        assert_eq!(self.kinds.iter().sum::<usize>(), self.entries.len(), "every key counted in its kind");
        if cfg!(debug_assertions) && self.entries.len() <= FULL_CHECK_KEYS_MAX {
            let mut kinds = [0usize; 5];
            for key in self.entries.keys() {
                kinds[kind_of(key)] += 1;
            }
            debug_assert_eq!(kinds, self.kinds, "each kind's count matches the entries");
            debug_assert!(
                self.entries
                    .iter()
                    .all(|(k, e)| self.heads.get(&key_hash(k)) == Some(&(Head::of(k, &e.version), k.clone()))),
                "each head matches its entry"
            );
            let mut buckets = [0u64; limits::REGISTRY_BUCKETS];
            for (key, entry) in &self.entries {
                let key_hash = key_hash(key);
                buckets[usize::from(bucket_of_hash(key_hash))] ^= entry_hash(key_hash, &entry.version);
            }
            debug_assert_eq!(buckets, self.buckets, "bucket hashes match the entries");
            debug_assert!(self.root.get().is_none_or(|r| r == root_of(&self.buckets)), "the root is the buckets' fold");
            debug_assert!(
                self.entries.values().all(|e| (e.version.wall_ms, e.version.logical) <= self.clock.last()),
                "the clock is at or past every stored version"
            );
            debug_assert!(self.recent.iter().all(|k| self.recent_set.contains(&key_hash(k))));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_head_is_28_bytes_on_the_wire_and_a_short_one_is_refused() {
        let version = Version { wall_ms: 1_700_000_000_000, logical: 7, writer: NodeId::new("node-1") };
        let head = Head::of(&Key::Status(NodeId::new("node-1")), &version);
        let bytes = postcard::to_allocvec(&head).unwrap();
        assert_eq!(bytes.len(), 1 + HEAD_BYTES, "a length byte, then the fixed fields");
        assert_eq!(postcard::from_bytes::<Head>(&bytes).unwrap(), head);
        let short = postcard::to_allocvec(&[0u8; 27].as_slice()).unwrap();
        assert!(postcard::from_bytes::<Head>(&short).is_err());
    }

    #[test]
    fn news_is_what_may_beat_the_entry_held() {
        let mut r: Registry<u32> = Registry::new(NodeId::new("a"));
        let key = Key::App(AppName::new("web"));
        let version = r.put(Time::from_millis(10), key.clone(), 1).unwrap();
        let held = Head::of(&key, &version);
        assert!(!r.is_news(&held), "the entry held is no news");
        assert!(r.is_news(&Head { wall_ms: held.wall_ms + 1, ..held }), "a later write is");
        assert!(!r.is_news(&Head { wall_ms: held.wall_ms - 1, ..held }), "an earlier one is not");
        assert!(r.is_news(&Head { writer_hash: held.writer_hash ^ 1, ..held }), "a tie between writers may be");
        assert!(r.is_news(&Head { key_hash: held.key_hash ^ 1, ..held }), "an unknown key is");
    }

    fn ms(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    fn node(name: &str) -> NodeId {
        NodeId::new(name)
    }

    fn app(name: &str) -> Key {
        Key::App(AppName::new(name))
    }

    fn version(wall_ms: u64, logical: u32, writer: &str) -> Version {
        Version { wall_ms, logical, writer: node(writer) }
    }

    fn value(version: Version, value: u32) -> Entry<u32> {
        Entry { version, value: Some(value) }
    }

    fn tombstone(version: Version) -> Entry<u32> {
        Entry { version, value: None }
    }

    fn contents(r: &Registry<u32>) -> Vec<(Key, Entry<u32>)> {
        r.iter().map(|(k, e)| (k.clone(), e.clone())).collect()
    }

    #[test]
    fn the_clock_never_goes_backwards_when_the_wall_clock_does() {
        let mut c = HlcClock::new();
        assert_eq!(c.now(ms(100)), (100, 0));
        assert_eq!(c.now(ms(100)), (100, 1));
        assert_eq!(c.now(ms(40)), (100, 2));
        assert_eq!(c.now(ms(0)), (100, 3));
        assert_eq!(c.now(ms(101)), (101, 0), "the logical counter resets when the wall advances");
    }

    #[test]
    fn observing_a_remote_version_moves_the_clock_past_it() {
        let mut c = HlcClock::new();
        c.now(ms(10));
        c.observe(ms(10), &version(50, 7, "b"));
        assert_eq!(c.last(), (50, 8));
        assert!(c.now(ms(20)) > (50, 7));
        c.observe(ms(20), &version(50, 3, "b"));
        assert_eq!(c.last(), (50, 10), "an older remote on the same wall time still ticks");
        c.observe(ms(80), &version(60, 9, "b"));
        assert_eq!(c.last(), (80, 0), "the wall clock ahead of both wins");
    }

    #[test]
    fn a_full_logical_counter_carries_into_the_wall_time() {
        let mut c = HlcClock::new();
        c.observe(ms(5), &version(9, u32::MAX, "b"));
        assert_eq!(c.last(), (10, 0));
        assert!(c.now(ms(0)) > (10, 0));
    }

    #[test]
    fn versions_order_by_wall_then_logical_then_writer() {
        assert!(version(1, 9, "z") < version(2, 0, "a"));
        assert!(version(2, 0, "z") < version(2, 1, "a"));
        assert!(version(2, 1, "a") < version(2, 1, "b"));
        assert_eq!(version(3, 4, "n").to_string(), "3.4@n");
    }

    #[test]
    fn keys_display_as_kind_slash_name() {
        assert_eq!(app("web").to_string(), "app/web");
        assert_eq!(Key::Status(node("n1")).to_string(), "status/n1");
        assert_eq!(Key::Load(node("n1")).to_string(), "load/n1");
        assert_eq!(Key::Scale(AppName::new("web")).to_string(), "scale/web");
    }

    #[test]
    fn a_put_is_read_back_and_each_write_gets_a_newer_version() {
        let mut r = Registry::new(node("a"));
        let v1 = r.put(ms(10), app("web"), 1).unwrap();
        let v2 = r.put(ms(10), app("web"), 2).unwrap();
        assert!(v2 > v1);
        assert_eq!(r.get(&app("web")), Some(&2));
        assert_eq!(r.version_of(&app("web")), Some(&v2));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn removing_writes_a_tombstone_even_for_an_absent_key() {
        let mut r: Registry<u32> = Registry::new(node("a"));
        let v = r.remove(ms(10), app("ghost"));
        assert_eq!(r.get(&app("ghost")), None);
        assert_eq!(r.entry(&app("ghost")), Some(&tombstone(v.clone())));
        assert!(!r.merge(ms(10), app("ghost"), value(version(5, 0, "b"), 1)), "an older write stays removed");
        assert_eq!(r.len(), 1);
        assert!(!r.is_empty());
    }

    #[test]
    fn a_tombstone_beats_an_older_write_and_loses_to_a_newer_one() {
        let mut r = Registry::new(node("a"));
        assert!(r.merge(ms(100), app("web"), tombstone(version(50, 0, "b"))));
        assert!(!r.merge(ms(100), app("web"), value(version(49, 5, "c"), 1)));
        assert!(!r.merge(ms(100), app("web"), value(version(50, 0, "a"), 1)));
        assert_eq!(r.get(&app("web")), None);
        assert!(r.merge(ms(100), app("web"), value(version(50, 1, "c"), 2)));
        assert_eq!(r.get(&app("web")), Some(&2));
        assert!(!r.merge(ms(100), app("web"), tombstone(version(50, 0, "z"))), "older tombstone loses");
        assert_eq!(r.get(&app("web")), Some(&2));
    }

    #[test]
    fn equal_wall_and_logical_times_are_broken_by_the_writer() {
        let mut r = Registry::new(node("x"));
        assert!(r.merge(ms(100), app("web"), value(version(50, 2, "b"), 1)));
        assert!(!r.merge(ms(100), app("web"), value(version(50, 2, "a"), 2)));
        assert!(r.merge(ms(100), app("web"), value(version(50, 2, "c"), 3)));
        assert_eq!(r.get(&app("web")), Some(&3));
    }

    #[test]
    fn merging_the_same_entry_twice_stores_it_once() {
        let mut r = Registry::new(node("a"));
        let e = value(version(50, 0, "b"), 1);
        assert!(r.merge(ms(100), app("web"), e.clone()));
        let digest = r.digest();
        assert!(!r.merge(ms(100), app("web"), e));
        assert_eq!(r.digest(), digest);
    }

    #[test]
    fn a_local_write_after_a_merge_beats_the_merged_entry() {
        let mut r = Registry::new(node("a"));
        assert!(r.merge(ms(10), app("web"), value(version(90_000, 4, "z"), 1)));
        let v = r.put(ms(10), app("web"), 2).unwrap();
        assert_eq!(v, version(90_000, 6, "a"));
        assert_eq!(r.get(&app("web")), Some(&2));
    }

    #[test]
    fn owned_keys_take_values_only_from_their_owner_but_tombstones_from_anyone() {
        let mut r = Registry::new(node("a"));
        let status_b = Key::Status(node("b"));
        assert!(!r.merge(ms(100), status_b.clone(), value(version(50, 0, "c"), 1)));
        assert_eq!(r.clock().last(), (0, 0), "a refused entry is not observed");
        assert!(r.merge(ms(100), status_b.clone(), value(version(50, 0, "b"), 1)));
        assert!(r.merge(ms(100), status_b.clone(), tombstone(version(60, 0, "c"))));
        assert!(!r.merge(ms(100), Key::Load(node("b")), value(version(70, 0, "a"), 1)));
        r.put(ms(100), Key::Load(node("a")), 5).unwrap();
        r.remove(ms(100), Key::Load(node("b")));
        assert_eq!(r.get(&status_b), None);
    }

    #[test]
    #[should_panic(expected = "only b may write a value there")]
    fn putting_another_nodes_status_panics() {
        let mut r = Registry::new(node("a"));
        let _ = r.put(ms(1), Key::Status(node("b")), 1);
    }

    #[test]
    fn entries_from_a_clock_too_far_ahead_are_refused() {
        let mut r = Registry::new(node("a"));
        let ahead = 1000 + limits::REGISTRY_CLOCK_AHEAD_MS_MAX;
        assert!(!r.merge(ms(1000), app("web"), value(version(ahead + 1, 0, "b"), 1)));
        assert_eq!(r.clock().last(), (0, 0));
        assert!(r.merge(ms(1000), app("web"), value(version(ahead, 0, "b"), 1)));
    }

    #[test]
    fn malformed_names_are_refused_on_merge() {
        let mut r = Registry::new(node("a"));
        let long = "x".repeat(limits::NAME_LEN_MAX + 1);
        assert!(!r.merge(ms(100), app(""), value(version(1, 0, "b"), 1)));
        assert!(!r.merge(ms(100), app(&long), value(version(1, 0, "b"), 1)));
        assert!(!r.merge(ms(100), app("web"), value(version(1, 0, &long), 1)));
        assert!(r.is_empty());
    }

    #[test]
    fn typed_iterators_yield_the_live_values_of_their_kind_only() {
        let mut r = Registry::new(node("a"));
        r.put(ms(1), app("api"), 1).unwrap();
        r.put(ms(1), app("web"), 2).unwrap();
        r.remove(ms(1), app("old"));
        r.put(ms(1), Key::Status(node("a")), 3).unwrap();
        r.merge(ms(1), Key::Status(node("b")), value(version(1, 0, "b"), 4));
        r.put(ms(1), Key::Load(node("a")), 5).unwrap();
        r.put(ms(1), Key::Scale(AppName::new("web")), 6).unwrap();
        let apps: Vec<_> = r.apps().map(|(a, v)| (a.as_str(), *v)).collect();
        assert_eq!(apps, [("api", 1), ("web", 2)]);
        let statuses: Vec<_> = r.statuses().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(statuses, [("a", 3), ("b", 4)]);
        let loads: Vec<_> = r.loads().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(loads, [("a", 5)]);
        let scales: Vec<_> = r.scales().map(|(a, v)| (a.as_str(), *v)).collect();
        assert_eq!(scales, [("web", 6)]);
        assert_eq!(r.iter().count(), 7);
    }

    #[test]
    fn digests_are_equal_for_equal_entries_and_name_the_buckets_that_differ() {
        let mut a: Registry<u32> = Registry::new(node("a"));
        let mut b: Registry<u32> = Registry::new(node("b"));
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().buckets.len(), limits::REGISTRY_BUCKETS);
        let entries = [(app("web"), value(version(5, 0, "c"), 1)), (app("api"), tombstone(version(6, 1, "c")))];
        for (k, e) in entries.iter().cloned() {
            a.merge(ms(10), k, e);
        }
        for (k, e) in entries.iter().rev().cloned() {
            b.merge(ms(10), k, e);
        }
        assert_eq!(a.digest(), b.digest());
        assert!(a.mismatched_buckets(&b.digest()).is_empty());

        b.merge(ms(10), app("web"), value(version(7, 0, "c"), 2));
        assert_eq!(a.mismatched_buckets(&b.digest()), [bucket_of(&app("web"))]);
        let sent = b.entries_in_buckets(&a.mismatched_buckets(&b.digest()));
        assert!(sent.iter().any(|(k, _)| *k == app("web")));
        assert!(sent.iter().all(|(k, _)| bucket_of(k) == bucket_of(&app("web"))));
        for (k, e) in sent {
            a.merge(ms(10), k, e);
        }
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn a_digest_of_the_wrong_length_mismatches_where_buckets_are_missing() {
        let r: Registry<u32> = Registry::new(node("a"));
        let short = Digest { buckets: vec![0; 10] };
        assert_eq!(r.mismatched_buckets(&short), (10..limits::REGISTRY_BUCKETS as u16).collect::<Vec<_>>());
        assert!(r.entries_in_buckets(&[u16::MAX]).is_empty(), "out of range buckets are ignored");
    }

    #[test]
    fn collecting_tombstones_removes_only_old_tombstones() {
        let mut r = Registry::new(node("a"));
        r.merge(ms(10_000), app("old"), tombstone(version(1_000, 0, "b")));
        r.merge(ms(10_000), app("new"), tombstone(version(9_000, 0, "b")));
        r.merge(ms(10_000), app("live"), value(version(1_000, 0, "b"), 1));
        let empty: Registry<u32> = Registry::new(node("z"));
        assert_eq!(r.collect_tombstones(ms(10_000), 20_000), 0, "nothing is old enough yet");
        assert_eq!(r.collect_tombstones(ms(10_000), 5_000), 1);
        assert_eq!(r.entry(&app("old")), None);
        assert!(r.entry(&app("new")).is_some_and(Entry::is_tombstone));
        assert_eq!(r.get(&app("live")), Some(&1));
        assert_eq!(r.collect_tombstones(ms(100_000), 5_000), 1);
        assert_eq!(r.len(), 1);
        let mut fresh: Registry<u32> = Registry::new(node("b"));
        fresh.merge(ms(1), app("live"), value(version(1_000, 0, "b"), 1));
        assert_eq!(r.digest(), fresh.digest(), "collected tombstones leave the digest");
        assert_ne!(r.digest(), empty.digest());
    }

    #[test]
    fn a_collected_tombstone_is_not_taken_back_from_a_peer() {
        let mut r: Registry<u32> = Registry::new(node("a"));
        let old = tombstone(version(1_000, 0, "b"));
        r.merge(ms(10_000), app("old"), old.clone());
        assert_eq!(r.collect_tombstones(ms(10_000), 5_000), 1);
        assert!(!r.merge(ms(10_000), app("old"), old));
        assert!(r.merge(ms(10_000), app("old"), tombstone(version(6_000, 0, "b"))), "newer than the horizon");
        assert!(r.merge(ms(10_000), app("other"), value(version(1_000, 0, "b"), 1)), "old values are taken");
    }

    #[test]
    fn a_full_registry_refuses_new_keys_and_stays_unchanged() {
        let mut r = Registry::new(node("a"));
        r.keys_max = 2;
        r.put(ms(1), app("one"), 1).unwrap();
        r.put(ms(1), app("two"), 2).unwrap();
        let (before, digest, clock) = (contents(&r), r.digest(), *r.clock());
        let err = r.put(ms(2), app("three"), 3).unwrap_err();
        assert_eq!(err, RegistryError::Full { key: app("three"), keys_max: 2 });
        assert!(err.to_string().contains("app/three"));
        assert_eq!(*r.clock(), clock, "a local write refused as full does not tick the clock");
        assert!(!r.merge(ms(2), app("three"), value(version(1, 0, "b"), 3)));
        assert_eq!((contents(&r), r.digest()), (before.clone(), digest.clone()));
        let v = r.remove(ms(2), app("three"));
        assert!(v.wall_ms == 2 && v.writer == node("a"), "a removal issues a version even when full");
        assert_eq!((contents(&r), r.digest()), (before, digest), "but stores no tombstone");
        assert!(r.take_recent().iter().all(|k| *k != app("three")));
        r.put(ms(2), app("one"), 10).unwrap();
        r.remove(ms(2), app("two"));
        assert_eq!(r.get(&app("one")), Some(&10));
    }

    #[test]
    fn check_size_refuses_values_over_the_limit() {
        assert_eq!(check_size(&app("web"), limits::REGISTRY_VALUE_BYTES_MAX), Ok(()));
        let err = check_size(&app("web"), limits::REGISTRY_VALUE_BYTES_MAX + 1).unwrap_err();
        assert_eq!(
            err,
            RegistryError::TooLarge {
                key: app("web"),
                size_bytes: limits::REGISTRY_VALUE_BYTES_MAX + 1,
                max_bytes: limits::REGISTRY_VALUE_BYTES_MAX
            }
        );
        assert!(err.to_string().starts_with("app/web: "));
    }

    #[test]
    fn take_recent_returns_each_changed_key_once_in_order() {
        let mut r = Registry::new(node("a"));
        r.put(ms(1), app("b"), 1).unwrap();
        r.put(ms(1), app("a"), 1).unwrap();
        r.put(ms(1), app("b"), 2).unwrap();
        r.merge(ms(1), app("c"), value(version(0, 0, "z"), 1));
        assert!(!r.merge(ms(1), app("a"), value(version(0, 0, "z"), 1)), "a refused merge is not recent");
        r.remove(ms(1), app("d"));
        assert_eq!(r.take_recent(), [app("b"), app("a"), app("c"), app("d")]);
        assert!(r.take_recent().is_empty());
        r.put(ms(1), app("a"), 3).unwrap();
        assert_eq!(r.take_recent(), [app("a")]);
    }

    #[test]
    fn the_recent_queue_drops_the_oldest_keys_when_full() {
        let mut r = Registry::new(node("a"));
        let extra = 3;
        for i in 0..limits::REGISTRY_RECENT_MAX + extra {
            r.put(ms(1), app(&format!("app-{i}")), 0).unwrap();
        }
        let recent = r.take_recent();
        assert_eq!(recent.len(), limits::REGISTRY_RECENT_MAX);
        assert_eq!(recent[0], app(&format!("app-{extra}")));
    }

    #[test]
    fn take_recent_leaves_out_keys_collected_since() {
        let mut r: Registry<u32> = Registry::new(node("a"));
        r.remove(ms(1), app("gone"));
        r.put(ms(1), app("kept"), 1).unwrap();
        assert_eq!(r.collect_tombstones(ms(100), 10), 1);
        assert_eq!(r.take_recent(), [app("kept")]);
    }

    // Property tests: entries from a few writers over a few keys, each (key, version) once, as
    // a writer's clock guarantees.

    const NOW: Time = Time::from_millis(1_000);

    const WRITERS: [&str; 3] = ["a", "b", "c"];

    fn keys() -> Vec<Key> {
        vec![
            app("x"),
            app("y"),
            Key::Status(node("a")),
            Key::Status(node("b")),
            Key::Load(node("a")),
            Key::Load(node("c")),
            Key::Scale(AppName::new("x")),
            Key::Scale(AppName::new("y")),
        ]
    }

    fn arb_entry() -> impl Strategy<Value = (Key, Entry<u32>)> {
        (0..keys().len(), 0..WRITERS.len(), 0..6u64, 0..3u32, prop::option::of(0..100u32)).prop_map(
            |(k, w, wall_ms, logical, value)| {
                let key = keys()[k].clone();
                // A value under an owned key is written by its owner; tombstones by anyone.
                let writer = match (key.owner(), value) {
                    (Some(owner), Some(_)) => owner.clone(),
                    _ => node(WRITERS[w]),
                };
                (key, Entry { version: Version { wall_ms, logical, writer }, value })
            },
        )
    }

    fn arb_entries() -> impl Strategy<Value = Vec<(Key, Entry<u32>)>> {
        prop::collection::vec(arb_entry(), 0..40).prop_map(|entries| {
            let mut seen = BTreeSet::new();
            entries.into_iter().filter(|(k, e)| seen.insert((k.clone(), e.version.clone()))).collect()
        })
    }

    fn registry_of(me: &str, entries: &[(Key, Entry<u32>)]) -> Registry<u32> {
        let mut r = Registry::new(node(me));
        for (k, e) in entries {
            r.merge(NOW, k.clone(), e.clone());
        }
        r
    }

    fn absorb(into: &mut Registry<u32>, from: &Registry<u32>) {
        for (k, e) in from.iter() {
            into.merge(NOW, k.clone(), e.clone());
        }
    }

    proptest! {
        #[test]
        fn the_clock_issues_strictly_increasing_times_past_everything_it_observed(
            events in prop::collection::vec(
                (0..200u64, prop::option::of((0..300u64, prop_oneof![0..4u32, (u32::MAX - 2)..=u32::MAX]))),
                1..60,
            ),
        ) {
            let mut c = HlcClock::new();
            let mut last = c.last();
            for (now_ms, remote) in events {
                match remote {
                    None => {
                        let t = c.now(ms(now_ms));
                        prop_assert!(t > last);
                        prop_assert!(t.0 >= now_ms);
                    }
                    Some((wall_ms, logical)) => {
                        c.observe(ms(now_ms), &version(wall_ms, logical, "r"));
                        prop_assert!(c.last() > last);
                        prop_assert!(c.last() > (wall_ms, logical));
                    }
                }
                last = c.last();
            }
        }

        #[test]
        fn merging_in_any_order_gives_the_same_registry(
            (entries, shuffled) in arb_entries().prop_flat_map(|e| (Just(e.clone()), Just(e).prop_shuffle())),
        ) {
            let a = registry_of("a", &entries);
            let b = registry_of("b", &shuffled);
            prop_assert_eq!(contents(&a), contents(&b));
            prop_assert_eq!(a.digest(), b.digest());
        }

        #[test]
        fn merging_a_whole_registry_equals_merging_its_entries_one_by_one(
            entries in arb_entries(), cut1 in 0..40usize, cut2 in 0..40usize,
        ) {
            let (cut1, cut2) = (cut1.min(entries.len()), cut2.min(entries.len()));
            let (lo, hi) = (cut1.min(cut2), cut1.max(cut2));
            let (ea, eb, ec) = (&entries[..lo], &entries[lo..hi], &entries[hi..]);
            let (ra, rb, rc) = (registry_of("a", ea), registry_of("b", eb), registry_of("c", ec));

            // (A + B) + C
            let mut left = ra.clone();
            absorb(&mut left, &rb);
            absorb(&mut left, &rc);
            // A + (B + C)
            let mut bc = rb.clone();
            absorb(&mut bc, &rc);
            let mut right = ra.clone();
            absorb(&mut right, &bc);
            // A's registry merged whole into B, against A's raw entries one by one.
            let mut whole = rb.clone();
            absorb(&mut whole, &ra);
            let mut one_by_one = rb.clone();
            for (k, e) in ea {
                one_by_one.merge(NOW, k.clone(), e.clone());
            }

            prop_assert_eq!(contents(&left), contents(&right));
            prop_assert_eq!(left.digest(), right.digest());
            prop_assert_eq!(contents(&left), contents(&registry_of("z", &entries)));
            prop_assert_eq!(contents(&whole), contents(&one_by_one));
            prop_assert_eq!(whole.digest(), one_by_one.digest());
        }

        #[test]
        fn merging_the_same_entries_twice_changes_nothing(entries in arb_entries()) {
            let mut r = registry_of("a", &entries);
            let (before, digest) = (contents(&r), r.digest());
            r.take_recent();
            for (k, e) in &entries {
                prop_assert!(!r.merge(NOW, k.clone(), e.clone()), "{} merged twice", k);
            }
            prop_assert_eq!(contents(&r), before);
            prop_assert_eq!(r.digest(), digest);
            prop_assert!(r.take_recent().is_empty());
        }

        #[test]
        fn the_newest_write_wins_and_a_tombstone_is_never_resurrected_by_an_older_write(
            entries in arb_entries(),
        ) {
            let mut r = registry_of("a", &entries);
            for key in keys() {
                let newest = entries.iter().filter(|(k, _)| *k == key).map(|(_, e)| e).max_by_key(|e| &e.version);
                prop_assert_eq!(r.entry(&key), newest);
                let Some(grave) = newest.filter(|e| e.is_tombstone()).cloned() else { continue };
                for (_, e) in entries.iter().filter(|(k, e)| *k == key && e.version < grave.version) {
                    let writer = key.owner().cloned().unwrap_or_else(|| e.version.writer.clone());
                    let older = Entry { version: Version { writer, ..e.version.clone() }, value: Some(7) };
                    if older.version < grave.version {
                        prop_assert!(!r.merge(NOW, key.clone(), older));
                    }
                    prop_assert_eq!(r.get(&key), None);
                }
            }
        }

        #[test]
        fn exchanging_mismatched_buckets_both_ways_makes_two_registries_identical(
            entries in arb_entries(), sides in prop::collection::vec(0..3u8, 40),
        ) {
            // Each write reached one side or both: 0 ours, 1 theirs, 2 both.
            let ours: Vec<_> = entries.iter().zip(&sides).filter(|(_, s)| **s != 1).map(|(e, _)| e.clone()).collect();
            let theirs: Vec<_> = entries.iter().zip(&sides).filter(|(_, s)| **s != 0).map(|(e, _)| e.clone()).collect();
            let mut a = registry_of("a", &ours);
            let mut b = registry_of("b", &theirs);
            let mismatched = a.mismatched_buckets(&b.digest());
            prop_assert_eq!(&mismatched, &b.mismatched_buckets(&a.digest()));
            let to_b = a.entries_in_buckets(&mismatched);
            let to_a = b.entries_in_buckets(&mismatched);
            for (k, e) in to_a {
                a.merge(NOW, k, e);
            }
            for (k, e) in to_b {
                b.merge(NOW, k, e);
            }
            prop_assert_eq!(contents(&a), contents(&b));
            prop_assert_eq!(a.digest(), b.digest());
            prop_assert!(a.mismatched_buckets(&b.digest()).is_empty());
        }
    }
}
