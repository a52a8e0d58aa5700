//! Keyed gossip: every datagram between nodes sealed with XChaCha20-Poly1305 under the
//! cluster's key, the cluster's name bound in as associated data, and replays dropped.
//!
//! A [`Keyring`] holds one to [`KEYS_MAX`] keys: the first seals, every one opens, so a key is
//! rotated without downtime as memberlist and Consul do (add the new key second everywhere,
//! then move it first everywhere, then remove the old one). A [`Sealer`] seals what one node
//! sends; an [`Opener`] opens what it receives and keeps, per source, a window of the counters
//! it has taken.
//!
//! A sealed datagram is `[VERSION][sender: 8][nonce: 24][ciphertext][tag: 16]`; the sender
//! (a hash of the node's name, the same in every life) is in the clear and, with the version,
//! covered by the tag as associated data. Its nonce is
//! `[prefix: 8][life: 8][counter: 8]`: the sender's life (`NodeConfig::generation`, higher
//! after every restart), a counter from 0 in each life, and a prefix the driver gives for the
//! life (the real agent draws it from the OS; the simulator takes the node's index, which keeps
//! its runs replayable). No nonce repeats under a key: the counter never repeats within a
//! life, and two lives differ in life or, by 2^-64 odds, in prefix. The nonce travels in the
//! clear but cannot be altered: it is an input of the tag. Life and counter in the nonce, not
//! in the ciphertext, keep the overhead at [`OVERHEAD`] bytes.
//!
//! Replays: a receiver keeps a window per sender and life (not per source address, which
//! whoever replays a datagram chooses), and refuses a life further ahead than a clock may be.
//! It drops a datagram whose counter it took already or that is more than [`REPLAY_WINDOW`]
//! behind the highest (as IPsec and WireGuard do). What is left: a receiver that restarted, or
//! forgot a window, takes once each datagram of that life replayed to it; a replayed registry
//! entry or SWIM message is old news, which the registry's versions and SWIM's incarnations
//! already ignore.
//!
//! Nothing here reads a clock or draws randomness: the same inputs give the same outputs.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};

use crate::hash::StableHasher;
use crate::limits;

/// Bytes in a cluster key.
pub const KEY_BYTES: usize = 32;
/// Bytes in a nonce.
pub const NONCE_BYTES: usize = 24;
/// Bytes in an authentication tag.
pub const TAG_BYTES: usize = 16;
/// Most keys a keyring holds.
pub const KEYS_MAX: usize = 8;
/// How far behind the highest counter taken from a source a datagram may be and still be
/// taken (once): UDP reorders.
pub const REPLAY_WINDOW: u64 = 64;
/// The format's version, first byte of every sealed datagram.
const VERSION: u8 = 1;
/// Where the nonce starts: after the version and the sender.
const NONCE_AT: usize = 1 + 8;
/// What sealing adds to a packet.
pub const OVERHEAD: usize = NONCE_AT + NONCE_BYTES + TAG_BYTES;

const _: () = assert!(limits::PACKET_BYTES_MAX + OVERHEAD <= 65_507, "a sealed packet is one UDP datagram");

/// A cluster key: 32 random bytes.
pub type Key = [u8; KEY_BYTES];

/// The keys of one cluster, and its name.
pub struct Keyring {
    ciphers: Vec<XChaCha20Poly1305>,
    /// Associated data of every datagram: the format and the cluster's name, so a datagram of
    /// one cluster is never taken by another that shares a key by mistake.
    aad: Vec<u8>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Keyring").field("keys", &self.ciphers.len()).finish_non_exhaustive()
    }
}

/// Why a keyring cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// No key, or more than [`KEYS_MAX`].
    #[error("give 1 to {KEYS_MAX} keys, got {0}")]
    Count(usize),
    /// The same key twice.
    #[error("key {0} repeats an earlier key")]
    Repeated(usize),
}

impl Keyring {
    /// The keyring of cluster `cluster`: `keys[0]` seals, every key opens.
    pub fn new(cluster: &str, keys: &[Key]) -> Result<Keyring, KeyringError> {
        if keys.is_empty() || keys.len() > KEYS_MAX {
            return Err(KeyringError::Count(keys.len()));
        }
        if let Some(i) = (1..keys.len()).find(|&i| keys[..i].contains(&keys[i])) {
            return Err(KeyringError::Repeated(i));
        }
        let ciphers = keys.iter().map(|k| XChaCha20Poly1305::new(&(*k).into())).collect();
        let mut aad = b"canteen-gossip-v1\0".to_vec();
        aad.extend_from_slice(cluster.as_bytes());
        Ok(Keyring { ciphers, aad })
    }

    /// The associated data of a datagram that starts with `front` (version and sender).
    fn aad_with(&self, front: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.aad.len() + front.len());
        aad.extend_from_slice(&self.aad);
        aad.extend_from_slice(front);
        aad
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.ciphers.len()
    }

    /// Never: a keyring holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.ciphers.is_empty()
    }
}

/// Seals what one node sends, in one life.
#[derive(Debug)]
pub struct Sealer {
    keyring: Arc<Keyring>,
    /// The version and the sender, as every datagram starts.
    front: [u8; NONCE_AT],
    /// The associated data of every datagram it seals: the keyring's, then `front`.
    aad: Vec<u8>,
    prefix: [u8; 8],
    life: u64,
    counter: u64,
}

impl Sealer {
    /// The sealer of node `sender` (a hash of its name, see [`sender_of`]) in life `life`,
    /// counting from 0, whose nonces start with `prefix` (see the module documentation).
    pub fn new(keyring: Arc<Keyring>, sender: u64, life: u64, prefix: [u8; 8]) -> Sealer {
        let mut front = [VERSION; NONCE_AT];
        front[1..].copy_from_slice(&sender.to_le_bytes());
        let aad = keyring.aad_with(&front);
        Sealer { keyring, front, aad, prefix, life, counter: 0 }
    }

    /// `packet` sealed under the first key.
    pub fn seal(&mut self, packet: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..8].copy_from_slice(&self.prefix);
        nonce[8..16].copy_from_slice(&self.life.to_le_bytes());
        nonce[16..].copy_from_slice(&self.counter.to_le_bytes());
        // A counter at its end would repeat a nonce: never in practice (2^64 datagrams), and a
        // panic rather than a silent repeat if it ever were.
        self.counter = self.counter.checked_add(1).expect("2^64 datagrams in one life");
        let mut out = Vec::with_capacity(packet.len() + OVERHEAD);
        out.extend_from_slice(&self.front);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(packet);
        let body = &mut out[NONCE_AT + NONCE_BYTES..];
        let tag = self.keyring.ciphers[0]
            .encrypt_inout_detached(&XNonce::from(nonce), &self.aad, body.into())
            .expect("a datagram is far below the cipher's length limit");
        out.extend_from_slice(&tag);
        out
    }
}

/// The sender id of node `name` in sealed datagrams: the same in every life of the node.
pub fn sender_of(name: &str) -> u64 {
    crate::hash::stable_hash(name.as_bytes())
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short, or of another format version.
    #[error("not a sealed datagram of this version")]
    Malformed,
    /// No key of the ring opens it: another cluster's, an outsider's, or altered.
    #[error("no cluster key opens it (another cluster, a stale key, or forged)")]
    Unauthentic,
    /// Its counter was taken already from its sender, or is too far behind.
    #[error("a replay: its counter was seen already or is too old")]
    Replayed,
    /// From a life of its sender further ahead than a clock may be
    /// (`limits::REGISTRY_CLOCK_AHEAD_MS_MAX`): a forgery that would own the sender's windows.
    #[error("from a life of its sender further ahead than a clock may be")]
    FutureLife,
}

/// What an [`Opener`] remembers of one life of one sender.
#[derive(Clone, Copy, Debug)]
struct Window {
    /// The highest counter taken.
    top: u64,
    /// Bit `i` set: counter `top - i` taken.
    seen: u64,
    /// When it was last used, in datagrams opened: the least recently used window goes first.
    used: u64,
}

const _: () = assert!(REPLAY_WINDOW == u64::BITS as u64, "one bit of `Window::seen` per counter");

impl Window {
    /// Whether `counter` may be taken; the window is not changed.
    fn check(&self, counter: u64) -> Result<(), OpenError> {
        if counter > self.top {
            return Ok(());
        }
        let behind = self.top - counter;
        if behind >= REPLAY_WINDOW || self.seen & (1 << behind) != 0 {
            return Err(OpenError::Replayed);
        }
        Ok(())
    }

    /// Takes `counter`, which [`Window::check`] allowed.
    fn take(&mut self, counter: u64) {
        if counter > self.top {
            let ahead = counter - self.top;
            self.seen = if ahead >= REPLAY_WINDOW { 1 } else { (self.seen << ahead) | 1 };
            self.top = counter;
        } else {
            self.seen |= 1 << (self.top - counter);
        }
    }
}

/// Opens what one node receives, keeping a replay window per sender (at most
/// [`limits::NODES_MAX`]; past that, one of the least recently used is forgotten).
#[derive(Debug)]
pub struct Opener {
    keyring: Arc<Keyring>,
    /// By sender and life: a window per life, so that no life (a restart with the clock set
    /// back, a second agent under a taken name) shuts another out.
    windows: HashMap<(u64, u64), Window, BuildHasherDefault<StableHasher>>,
    opened: u64,
    /// The associated data of the datagram being opened, its buffer kept between datagrams.
    aad: Vec<u8>,
    /// Most windows kept: [`limits::NODES_MAX`] (tests lower it).
    senders_max: usize,
}

/// How many windows a full opener looks at to choose the one it forgets.
const EVICTION_SAMPLE: usize = 64;

impl Opener {
    /// An opener with no window yet.
    pub fn new(keyring: Arc<Keyring>) -> Opener {
        let aad = keyring.aad_with(&[0; NONCE_AT]);
        Opener { keyring, windows: HashMap::default(), opened: 0, aad, senders_max: limits::NODES_MAX }
    }

    /// The packet inside `datagram`, opened in place at `now_ms` (on the clock lives are
    /// counted on: Unix milliseconds in the agent), or why it was dropped. Windows change only
    /// for a datagram that a key opened.
    pub fn open(&mut self, mut datagram: Vec<u8>, now_ms: u64) -> Result<Vec<u8>, OpenError> {
        if datagram.len() < OVERHEAD || datagram[0] != VERSION {
            return Err(OpenError::Malformed);
        }
        let (front, rest) = datagram.split_at_mut(NONCE_AT);
        let (nonce, rest) = rest.split_at_mut(NONCE_BYTES);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_BYTES);
        let sender = u64::from_le_bytes(front[1..].try_into().expect("8 bytes"));
        let nonce = XNonce::try_from(&*nonce).expect("sliced to a nonce's length");
        let tag = Tag::try_from(&*tag).expect("sliced to a tag's length");
        self.aad.truncate(self.keyring.aad.len());
        self.aad.extend_from_slice(front);
        // RustCrypto's ChaCha20-Poly1305 checks the tag before it decrypts: a key that fails
        // leaves the body as it was for the next.
        let opened = self
            .keyring
            .ciphers
            .iter()
            .any(|cipher| cipher.decrypt_inout_detached(&nonce, &self.aad, (&mut *body).into(), &tag).is_ok());
        if !opened {
            return Err(OpenError::Unauthentic);
        }
        let life = u64::from_le_bytes(nonce[8..16].try_into().expect("8 bytes"));
        let counter = u64::from_le_bytes(nonce[16..].try_into().expect("8 bytes"));
        if life > now_ms.saturating_add(limits::REGISTRY_CLOCK_AHEAD_MS_MAX) {
            return Err(OpenError::FutureLife);
        }
        self.take(sender, life, counter)?;
        let end = datagram.len() - TAG_BYTES;
        datagram.truncate(end);
        datagram.drain(..NONCE_AT + NONCE_BYTES);
        Ok(datagram)
    }

    /// Checks `counter` against the window of `sender`'s `life` and takes it.
    fn take(&mut self, sender: u64, life: u64, counter: u64) -> Result<(), OpenError> {
        self.opened += 1;
        let used = self.opened;
        if let Some(window) = self.windows.get_mut(&(sender, life)) {
            window.check(counter)?;
            window.take(counter);
            window.used = used;
            return Ok(());
        }
        // Full: the least recently used of a few windows goes. A scan of all of them for
        // every new sender would let whoever holds the key make each datagram cost 100,000
        // steps by naming a new sender in each.
        if self.windows.len() >= self.senders_max
            && let Some(oldest) = self.windows.iter().take(EVICTION_SAMPLE).min_by_key(|(_, w)| w.used).map(|(k, _)| *k)
        {
            self.windows.remove(&oldest);
        }
        self.windows.insert((sender, life), Window { top: counter, seen: 1, used });
        Ok(())
    }

    /// How many lives of senders it keeps a window for.
    pub fn senders(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The receivers' clock in the tests: lives up to a few minutes past it are allowed.
    const NOW: u64 = 1000;

    fn ring(cluster: &str, keys: &[u8]) -> Arc<Keyring> {
        let keys: Vec<Key> = keys.iter().map(|&b| [b; KEY_BYTES]).collect();
        Arc::new(Keyring::new(cluster, &keys).unwrap())
    }

    #[test]
    fn a_sealed_packet_opens_once_under_the_same_key_and_cluster() {
        let mut sealer = Sealer::new(ring("prod", &[1]), 1, 5, [9; 8]);
        let mut opener = Opener::new(ring("prod", &[1]));
        let sealed = sealer.seal(b"hello");
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert!(!sealed.windows(5).any(|w| w == b"hello"), "the packet is encrypted");
        assert_eq!(opener.open(sealed.clone(), NOW).unwrap(), b"hello");
        assert_eq!(opener.open(sealed.clone(), NOW), Err(OpenError::Replayed));
        assert_eq!(Opener::new(ring("prod", &[2])).open(sealed.clone(), NOW), Err(OpenError::Unauthentic));
        assert_eq!(Opener::new(ring("staging", &[1])).open(sealed.clone(), NOW), Err(OpenError::Unauthentic));
    }

    #[test]
    fn a_replay_is_refused_whatever_address_it_comes_from() {
        // The window is the sender's, named inside the datagram under the tag: replaying from
        // another address or port changes nothing, and a changed sender breaks the tag.
        let mut sealer = Sealer::new(ring("c", &[1]), sender_of("node-a"), 1, [9; 8]);
        let sealed = sealer.seal(b"x");
        let mut opener = Opener::new(ring("c", &[1]));
        assert!(opener.open(sealed.clone(), NOW).is_ok());
        assert_eq!(opener.open(sealed.clone(), NOW), Err(OpenError::Replayed));
        let mut renamed = sealed.clone();
        renamed[1..9].copy_from_slice(&sender_of("node-b").to_le_bytes());
        assert_eq!(opener.open(renamed.clone(), NOW), Err(OpenError::Unauthentic));
    }

    #[test]
    fn a_full_opener_forgets_a_window_to_take_a_new_sender() {
        let keys = ring("c", &[1]);
        let mut opener = Opener::new(keys.clone());
        opener.senders_max = 100;
        for sender in 0..1000 {
            assert!(opener.open(Sealer::new(keys.clone(), sender, 1, [9; 8]).seal(b"x"), NOW).is_ok());
            assert!(opener.senders() <= 100);
        }
        assert_eq!(opener.senders(), 100);
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let mut sealer = Sealer::new(ring("c", &[1]), 1, 1, [9; 8]);
        let sealed = sealer.seal(b"0123456789");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x20;
            let e = Opener::new(ring("c", &[1])).open(bad.clone(), NOW).unwrap_err();
            assert!(matches!(e, OpenError::Unauthentic | OpenError::Malformed), "byte {i}: {e:?}");
        }
        for len in 0..sealed.len() {
            assert!(Opener::new(ring("c", &[1])).open(sealed[..len].to_vec(), NOW).is_err());
        }
    }

    #[test]
    fn every_key_of_the_ring_opens_and_the_first_seals() {
        // A rotation: the old cluster seals with 1, the new key 2 is added second, then first.
        let mut old = Sealer::new(ring("c", &[1]), 1, 1, [9; 8]);
        let mut adding = Sealer::new(ring("c", &[1, 2]), 2, 1, [8; 8]);
        let mut moved = Sealer::new(ring("c", &[2, 1]), 3, 1, [7; 8]);
        let mut opener = Opener::new(ring("c", &[2, 1]));
        assert!(opener.open(old.seal(b"a"), NOW).is_ok());
        assert!(opener.open(adding.seal(b"b"), NOW).is_ok());
        assert!(opener.open(moved.seal(b"c"), NOW).is_ok());
        assert_eq!(Opener::new(ring("c", &[1])).open(moved.seal(b"d"), NOW), Err(OpenError::Unauthentic));
        assert_eq!(Keyring::new("c", &[]).unwrap_err(), KeyringError::Count(0));
        assert_eq!(Keyring::new("c", &[[1; 32], [1; 32]]).unwrap_err(), KeyringError::Repeated(1));
        assert_eq!(Keyring::new("c", &[[1; 32]; KEYS_MAX + 1]).unwrap_err(), KeyringError::Count(KEYS_MAX + 1));
    }

    #[test]
    fn the_window_takes_reordered_datagrams_once_and_every_life_has_its_own() {
        let keys = ring("c", &[1]);
        let mut first_life = Sealer::new(keys.clone(), 1, 10, [9; 8]);
        let early: Vec<Vec<u8>> = (0..3).map(|_| first_life.seal(b"x")).collect();
        let mut sealer = Sealer::new(keys.clone(), 1, 11, [9; 8]);
        let sealed: Vec<Vec<u8>> = (0..100).map(|_| sealer.seal(b"x")).collect();
        let mut opener = Opener::new(keys.clone());
        assert!(opener.open(early[1].clone(), NOW).is_ok());
        assert!(opener.open(early[0].clone(), NOW).is_ok(), "reordered within the window");
        assert!(opener.open(sealed[5].clone(), NOW).is_ok(), "a later life has a window of its own");
        // An earlier life is not shut out by a later one (a clock set back, a twin): its own
        // window still refuses its replays.
        assert!(opener.open(early[2].clone(), NOW).is_ok());
        assert_eq!(opener.open(early[2].clone(), NOW), Err(OpenError::Replayed));
        assert!(opener.open(sealed[3].clone(), NOW).is_ok());
        assert_eq!(opener.open(sealed[3].clone(), NOW), Err(OpenError::Replayed));
        assert!(opener.open(sealed[99].clone(), NOW).is_ok());
        assert_eq!(opener.open(sealed[5].clone(), NOW), Err(OpenError::Replayed), "taken already");
        assert_eq!(opener.open(sealed[10].clone(), NOW), Err(OpenError::Replayed), "too far behind 99");
        assert!(opener.open(sealed[40].clone(), NOW).is_ok(), "within 64 of 99");
        let mut other = Sealer::new(ring("c", &[1]), 2, 11, [9; 8]);
        assert!(opener.open(other.seal(b"x"), NOW).is_ok(), "windows are per sender");
        assert_eq!(opener.senders(), 3);
        // A life far ahead of the clock is a forgery that would own the sender's windows.
        let mut future = Sealer::new(keys, 1, NOW + limits::REGISTRY_CLOCK_AHEAD_MS_MAX + 1, [9; 8]);
        assert_eq!(opener.open(future.seal(b"x"), NOW), Err(OpenError::FutureLife));
    }
}
