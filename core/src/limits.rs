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

/// The largest `max_body_bytes` an app may set: 1 TiB, far past any upload a balancer should
/// pass (bodies stream through, so this bounds no memory; it catches a mistyped cap).
pub const BODY_BYTES_MAX: u64 = 1 << 40;

/// A request body kept, as it streams to a replica, so that the request can be sent again to
/// another replica if the first fails before answering (idempotent methods only). A longer
/// body is not kept: its request is retried only if none of it had been sent. Bounds the
/// balancer's memory per request in flight.
pub const RETRY_BODY_BYTES_MAX: usize = 64 * 1024;

/// Groups in the rendezvous skeleton: a slot ranks the groups, then the nodes of its group,
/// so a placement costs about `RENDEZVOUS_GROUPS + nodes / RENDEZVOUS_GROUPS` hashes.
pub const RENDEZVOUS_GROUPS: u64 = 128;

/// Most windows of request counts the autoscaler keeps per app.
pub const AUTOSCALE_SAMPLES_MAX: usize = 4096;

/// The recent rate a target-tracking autoscaler scales up on: the last few seconds, however
/// long its window (which still decides every scale-down).
pub const AUTOSCALE_RECENT_MS: u64 = 3000;

/// Longest restart back-off, whatever the spec says.
pub const RESTART_BACKOFF_MS_MAX: u64 = 10 * 60 * 1000;

/// Longest duration any key of a spec or an agent's config takes (a day): past it, a typo (or
/// `u64::MAX`) that would stop a timer for ever.
pub const DURATION_MS_MAX: u64 = 24 * 3600 * 1000;

/// Longest health-check interval, and the longest of the agent's own periodic intervals.
pub const PROBE_INTERVAL_MS_MAX: u64 = 3600 * 1000;

/// Longest drain of a stopped replica.
pub const DRAIN_MS_MAX: u64 = 3600 * 1000;

/// Most of any count in a spec (probe thresholds, a restart budget).
pub const COUNT_MAX: u64 = 1000;

/// Most CPU one replica may reserve (a thousand cores), and one node offer.
pub const CPU_MILLIS_MAX: u64 = 1_000_000;

/// Most memory one replica may reserve (a PiB), and one node offer, in MiB.
pub const MEM_MB_MAX: u64 = 1 << 30;

/// Earlier versions of an app kept for going back to (Kubernetes keeps 10 by default, Nomad 6).
pub const REVISIONS_MAX: usize = 10;

/// How often a replica that has not yet passed a health check is probed: it serves from its
/// first success, not an interval later.
pub const READINESS_PROBE_MS: u64 = 250;

/// How long after its drain a stopped container's host port is given to another: removing a
/// container takes a moment, and a new one bound to the port before it is gone fails to start.
pub const PORT_REUSE_AFTER_DRAIN_MS: u64 = 2000;

/// Longest reason a rollout's verdict gives.
pub const REASON_LEN_MAX: usize = 512;

/// Longest HTTP path of a health check.
pub const PATH_LEN_MAX: usize = 1024;

/// Most GPUs one node offers (eight is the common server; sixteen the largest sold): a node's
/// GPUs that are wholly free are one bit each of a 64-bit mask.
pub const GPUS_PER_NODE_MAX: u32 = 64;

/// Thousandths of a GPU in one GPU: an app asks for a share of one in these units.
pub const GPU_MILLI: u32 = 1000;

/// Longest GPU model name (`A100`, `V100M32`, `H100-SXM5-80GB`).
pub const GPU_MODEL_LEN_MAX: usize = 32;

/// Most GPU models one app may allow.
pub const GPU_MODELS_PER_APP_MAX: usize = 16;

/// Most distinct task shapes the `fgd` policy weighs when it measures fragmentation: the
/// most common ones, which in a production trace cover nearly every task (openb's 8,152 tasks
/// have 151 shapes; its commonest 64 cover 97% of them).
pub const FGD_SHAPES_MAX: usize = 64;

const _: () = assert!(NAME_LEN_MAX <= 63, "names end up in DNS labels");
const _: () = assert!(GPUS_PER_NODE_MAX <= 64, "a node's free GPUs are one u64 mask");
const _: () = assert!(RENDEZVOUS_GROUPS.is_power_of_two());
const _: () = assert!((REPLICAS_PER_APP_MAX as usize) <= BACKENDS_MAX, "every replica can be a backend");
const _: () = assert!(AUTOSCALE_SAMPLES_MAX >= 2);

/// Most keys one replicated registry holds, tombstones included.
pub const REGISTRY_KEYS_MAX: usize = 1_000_000;

/// Largest encoded registry value; the caller checks it after encoding (`registry::check_size`).
/// An entry must fit in one packet, next to its head and the packet's own header.
pub const REGISTRY_VALUE_BYTES_MAX: usize = 48 * 1024;

/// Buckets the registry's key space is split into for anti-entropy digests.
pub const REGISTRY_BUCKETS: usize = 64;

/// Most keys the registry remembers as recently changed, for the caller's rumors.
pub const REGISTRY_RECENT_MAX: usize = 4096;

/// How far ahead of the receiver's `now` a merged entry's wall time may be: further is a broken
/// clock, and taking it would drag every hybrid logical clock in the cluster along with it.
pub const REGISTRY_CLOCK_AHEAD_MS_MAX: u64 = 5 * 60 * 1000;

const _: () = assert!(
    REGISTRY_KEYS_MAX >= 2 * (2 * NODES_MAX + 3 * APPS_MAX),
    "room for a status and a load per node and a spec, a scale and a rollout per app, plus tombstones"
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

/// Largest packet a node sends: one UDP datagram (at most 65,507 bytes of payload), with room
/// to spare. News, anti-entropy summaries and repairs larger than this go out as several
/// packets.
pub const PACKET_BYTES_MAX: usize = 60 * 1024;

/// Room kept in each packet for what surrounds the entries or heads: the sender's name, the
/// message's tag and lengths.
pub const PACKET_HEADER_BYTES_MAX: usize = NAME_LEN_MAX + 64;

/// Largest registry entry (head and body, encoded) that rides on SWIM's packets as a custom
/// broadcast; larger ones travel as the node's own rumors. A SWIM packet is at most
/// `SwimConfig::packet_bytes_max` (1,400 bytes by default): a few such items fit beside the
/// membership updates.
pub const SWIM_ITEM_BYTES_MAX: usize = 400;

/// Most registry entries waiting in SWIM's broadcast backlog; news past that goes out as
/// rumors, which carry a burst in a few large packets.
pub const SWIM_ITEMS_PENDING_MAX: usize = 32;

/// Most requests one load report may carry for one app: a billion requests a second at the
/// default report interval is past any balancer; more is a forgery or a bug.
pub const LOAD_REQUESTS_PER_REPORT_MAX: u64 = 1_000_000_000;

/// Most members one SWIM push-pull sync may add that this node did not know: a real sync
/// brings a joining node the cluster at once, but a forged one of thousands of members would
/// have every node probe them for minutes. A cluster larger than this learns the rest by the
/// next syncs and by SWIM's gossip.
pub const SYNC_NEW_MEMBERS_MAX: usize = 1024;

/// How long placement waits for the status of a live member that has none before it places
/// without it (`node::placement`): a real node's status follows its join within a second.
pub const STATUS_WAIT_MS: u64 = 10_000;

/// How long a packet sent under a node's own name counts as evidence that another agent runs
/// under it (`Node::name_conflicts`): a few SWIM probe periods.
pub const TWIN_HEARD_MS: u64 = 5_000;

/// Tombstones older than this are collected, as Consul reaps its after 72 hours: a node away
/// longer than this may bring a removed entry back.
pub const TOMBSTONE_HORIZON_MS: u64 = 24 * 3600 * 1000;

/// Most slots one node runs: its status, which lists them, must fit one registry value.
pub const LOCAL_SLOTS_MAX: usize = 200;

/// Longest container id a runtime may report (Docker's are 64 hex digits).
pub const CONTAINER_ID_LEN_MAX: usize = 128;

/// Largest encoded node spec (capacity and labels) a node may publish.
pub const NODE_SPEC_BYTES_MAX: usize = 4096;

/// Longest address a node gives for its containers or its gossip socket.
pub const NODE_ADDR_LEN_MAX: usize = 255;

/// The most strings a thread's cache of shared names and addresses holds (`intern`): a
/// cluster's node names, app names and addresses, with room to spare: a few MiB per thread.
pub const INTERNED_MAX: usize = 1 << 16;

/// The most one container takes in a status: its slot (app name, behind its length, and
/// index), container id (behind its length), host port, state, version, readiness, and its
/// GPUs' length and one GPU (a share of one, or the first of its whole ones). Varints: an
/// index up to 5 bytes, a port 3, a version 10.
pub const CONTAINER_STATUS_BYTES_MAX: usize =
    1 + NAME_LEN_MAX + 5 + 1 + CONTAINER_ID_LEN_MAX + 3 + 1 + 10 + 1 + 1 + GPU_BYTES;

/// One GPU in a status: its index and share, varints of at most 1 and 2 bytes. A node's
/// containers hold at most one GPU each beyond its own GPUs: whole GPUs are held alone.
pub const GPU_BYTES: usize = 3;

const _: () = assert!(PACKET_BYTES_MAX <= 65_507, "a packet is one UDP datagram");
const _: () = assert!(
    ENTRIES_PER_MESSAGE_MAX * 10 + PACKET_HEADER_BYTES_MAX <= PACKET_BYTES_MAX,
    "a repair's wanted key hashes (varints of up to 10 bytes) fit one packet"
);
const _: () = assert!(
    REGISTRY_VALUE_BYTES_MAX + 2 * NAME_LEN_MAX + 64 + PACKET_HEADER_BYTES_MAX <= PACKET_BYTES_MAX,
    "the largest entry (its key, head and value) fits one packet"
);
const _: () = assert!(
    NODE_SPEC_BYTES_MAX
        + NODE_ADDR_LEN_MAX
        + 64
        + LOCAL_SLOTS_MAX * CONTAINER_STATUS_BYTES_MAX
        + GPUS_PER_NODE_MAX as usize * GPU_BYTES
        <= REGISTRY_VALUE_BYTES_MAX,
    "a node's status with every slot it may run fits one registry value"
);
