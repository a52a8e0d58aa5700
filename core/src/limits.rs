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
