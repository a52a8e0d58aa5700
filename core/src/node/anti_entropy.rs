//! Anti-entropy: what rumors miss, a comparison with one peer at a time repairs, in up to four
//! steps, each only when the last showed a difference: the root hash of the registry
//! ([`Message::Root`], or the root every SWIM packet carries); the 64 bucket hashes
//! ([`Message::Digest`]); the heads of the entries in the buckets that differ
//! ([`Message::Summary`]); the entries each side lacks or holds older ([`Message::Repair`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::limits;
use crate::model::NodeId;
use crate::registry::{Head, Registry};
use crate::time::Time;

use super::wire::encode_with_entries;
use super::{Message, Packet, Value};

/// The answer to a peer's root: this node's digest when the roots differ.
pub(super) fn answer_root(registry: &Registry<Value>, root: u64) -> Option<Message<'static>> {
    (root != registry.root_hash()).then(|| Message::Digest(registry.digest()))
}

/// The summaries of `buckets`: the heads of this node's entries in them, in packets of whole
/// buckets, so that a receiver reads each bucket's heads complete (a bucket too large for one
/// packet is the one exception: it is cut, and the receiver sends back a few entries the sender
/// had).
pub(super) fn summaries(registry: &Registry<Value>, buckets: &[u16]) -> Vec<(Vec<u16>, Vec<Head>)> {
    const HEADS_PER_PACKET: usize =
        (limits::PACKET_BYTES_MAX - limits::PACKET_HEADER_BYTES_MAX) / (crate::registry::HEAD_BYTES + 3);
    let mut by_bucket: BTreeMap<u16, Vec<Head>> = buckets.iter().map(|b| (*b, Vec::new())).collect();
    for head in registry.heads_in_buckets(buckets) {
        by_bucket.entry(head.bucket()).or_default().push(head);
    }
    let mut out: Vec<(Vec<u16>, Vec<Head>)> = Vec::new();
    for (bucket, heads) in by_bucket {
        for run in heads.chunks(HEADS_PER_PACKET).chain(heads.is_empty().then_some(&[][..])) {
            match out.last_mut() {
                Some((b, h)) if h.len() + run.len() <= HEADS_PER_PACKET => {
                    b.push(bucket);
                    h.extend_from_slice(run);
                }
                _ => out.push((vec![bucket], run.to_vec())),
            }
        }
    }
    out
}

/// The answer to a peer's summary of `buckets`: the key hashes of the entries to send it (it
/// lacks them or holds them older), and of those to ask back (it holds them newer).
pub(super) fn answer_summary(registry: &Registry<Value>, buckets: &[u16], heads: &[Head]) -> (Vec<u64>, Vec<u64>) {
    let theirs: BTreeMap<u64, Head> = heads.iter().map(|h| (h.key_hash, *h)).collect();
    let send: Vec<u64> = registry
        .heads_in_buckets(buckets)
        .into_iter()
        .filter(|mine| theirs.get(&mine.key_hash).is_none_or(|t| mine.may_beat(t)))
        .map(|h| h.key_hash)
        .collect();
    let want: Vec<u64> = heads
        .iter()
        .filter(|h| registry.is_news(h))
        .map(|h| h.key_hash)
        .take(limits::ENTRIES_PER_MESSAGE_MAX)
        .collect();
    (send, want)
}

/// The packets of a repair from `me`: the entries with these key hashes (about `bytes_max` of
/// them at most), then the hashes of the entries wanted back (at most `ENTRIES_PER_MESSAGE_MAX`
/// of each), in a packet of their own. None when there is nothing to send or ask.
pub(super) fn repair_packets(
    registry: &Registry<Value>,
    me: &NodeId,
    key_hashes: &[u64],
    want: Vec<u64>,
    bytes_max: usize,
) -> Vec<Vec<u8>> {
    let key_hashes = &key_hashes[..key_hashes.len().min(limits::ENTRIES_PER_MESSAGE_MAX)];
    let entries = registry.entries_by_key_hash(key_hashes);
    if entries.is_empty() && want.is_empty() {
        return Vec::new();
    }
    let mut packets =
        encode_with_entries(&entries, |entries| Packet::encode(me, &Message::Repair { entries, want: Vec::new() }));
    // At most `bytes_max` of entries, in whole packets (always the first): the rest are asked
    // for again at the next exchange, whose digests still differ.
    let mut bytes = 0usize;
    let keep = packets
        .iter()
        .position(|p| {
            bytes += p.len();
            bytes > bytes_max
        })
        .map_or(packets.len(), |i| i.max(1));
    packets.truncate(keep);
    if !want.is_empty() {
        packets.push(Packet::encode(me, &Message::Repair { entries: Vec::new(), want }));
    }
    packets
}

/// With SWIM, the roots SWIM's packets carry start the exchanges; this throttles the answers.
#[derive(Debug, Default)]
pub(super) struct AntiEntropy {
    /// When this node last answered a root carried by a SWIM packet with its digest.
    digest_sent_at: Option<Time>,
}

impl AntiEntropy {
    /// Whether a root carried by a SWIM packet may be answered at `now`: at most once an
    /// anti-entropy interval, or a busy node's packets would start one exchange each.
    pub(super) fn may_answer(&self, now: Time, interval_ms: u64) -> bool {
        self.digest_sent_at.is_none_or(|at| now >= at + Duration::from_millis(interval_ms))
    }

    /// A root carried by a SWIM packet was answered at `now`.
    pub(super) fn answered(&mut self, now: Time) {
        self.digest_sent_at = Some(now);
    }
}
