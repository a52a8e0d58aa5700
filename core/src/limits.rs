//! Every limit in one place (STYLE.md, rule 7), with compile-time checks of how they relate.

/// Bytes in a mebibyte: the cluster file gives memory in MiB.
pub const MIB: u64 = 1024 * 1024;

/// Longest node, app or volume name: a DNS label.
pub const NAME_LEN_MAX: usize = 63;

/// Most apps one cluster holds.
pub const APPS_MAX: usize = 10_000;

/// Most replicas one app may ask for, fixed or autoscaled.
pub const REPLICAS_PER_APP_MAX: u32 = 100_000;

/// Most nodes one cluster holds.
pub const NODES_MAX: usize = 100_000;

/// Most backends one balancer holds.
pub const BACKENDS_MAX: usize = 100_000;

/// Groups in the rendezvous skeleton: a slot ranks the groups, then the nodes of its group,
/// so a placement costs about `RENDEZVOUS_GROUPS + nodes / RENDEZVOUS_GROUPS` hashes.
pub const RENDEZVOUS_GROUPS: u64 = 128;

/// Most windows of request counts the autoscaler keeps per app.
pub const AUTOSCALE_SAMPLES_MAX: usize = 4096;

/// Longest restart back-off, whatever the spec says.
pub const RESTART_BACKOFF_MS_MAX: u64 = 10 * 60 * 1000;

const _: () = assert!(NAME_LEN_MAX <= 63, "names end up in DNS labels");
const _: () = assert!(RENDEZVOUS_GROUPS.is_power_of_two());
const _: () = assert!((REPLICAS_PER_APP_MAX as usize) <= BACKENDS_MAX, "every replica can be a backend");
const _: () = assert!(AUTOSCALE_SAMPLES_MAX >= 2);

/// Most keys one replicated registry holds, tombstones included.
pub const REGISTRY_KEYS_MAX: usize = 1_000_000;

/// Largest encoded registry value; the caller checks it after encoding (`registry::check_size`).
pub const REGISTRY_VALUE_BYTES_MAX: usize = 64 * 1024;

/// Buckets the registry's key space is split into for anti-entropy digests.
pub const REGISTRY_BUCKETS: usize = 64;

/// Most keys the registry remembers as recently changed, for the caller's rumors.
pub const REGISTRY_RECENT_MAX: usize = 4096;

/// How far ahead of the receiver's `now` a merged entry's wall time may be: further is a broken
/// clock, and taking it would drag every hybrid logical clock in the cluster along with it.
pub const REGISTRY_CLOCK_AHEAD_MS_MAX: u64 = 5 * 60 * 1000;

const _: () = assert!(
    REGISTRY_KEYS_MAX >= 2 * NODES_MAX + 2 * APPS_MAX,
    "room for a status and a load per node and a spec and a scale per app, plus tombstones"
);
const _: () = assert!(REGISTRY_BUCKETS.is_power_of_two() && REGISTRY_BUCKETS <= u16::MAX as usize + 1);
const _: () = assert!(REGISTRY_RECENT_MAX >= 1 && REGISTRY_RECENT_MAX <= REGISTRY_KEYS_MAX);

/// Most timers one node holds: a few per local slot plus the periodic ones.
pub const TIMERS_MAX: usize = 1 << 16;

/// Most timers one `handle_timeout` call fires; more means a timer that reschedules itself
/// at `now`, a bug.
pub const TIMERS_PER_CALL_MAX: usize = TIMERS_MAX;

/// Most registry entries one gossip message carries; a peer sending more is cut short.
pub const ENTRIES_PER_MESSAGE_MAX: usize = 4096;
