//! canteen-core: the decisions of the canteen orchestrator, as pure functions and state machines.
//!
//! Nothing in this crate does I/O, reads a clock, spawns, sleeps or draws ambient randomness:
//! time comes in as an argument ([`time::Time`]) and randomness from a seed its driver chooses.
//! The same inputs in the same order give the same outputs, which is what lets the simulator
//! replay a run bit for bit and the real agent act on the very same rules.
//!
//! # Layout
//!
//! - [`model`]: nodes, resources, app specs, slots, and the validation of a spec.
//! - [`schedule`]: `place(apps, nodes, observed, policy) -> Plan`, sticky, with four policies.
//! - [`balance`]: the pickers that choose a backend for each request.
//! - [`health`]: per-container health tracking and restart back-off.
//! - [`autoscale`]: request load to a target replica count.
//! - [`cluster_file`]: the TOML cluster file, parsed and checked, with errors naming the key.
//! - [`registry`]: the gossiped last-writer-wins registry, with a hybrid logical clock and digests.
//! - [`membership`]: SWIM through foca: which peers are alive, learnt from the peers.
//! - [`node`]: the agent state machine every driver runs: `handle_*` in, `poll_*` out; a facade
//!   over sub-machines, one file each (see its `# Layout`).
//! - [`seal`]: keyed gossip: datagrams sealed under the cluster's keys, replays dropped.
//! - [`hash`]: the hashes every node computes alike (FNV-1a, splitmix64), and maps keyed by them.
//! - [`rng`]: the seeded generator, core's only randomness.
//! - [`time`]: the `Time` type that every `now` argument has.
//! - [`limits`]: every bound in one place.
//!
//! The one piece of state shared beyond a `Node`: per-thread caches that hand out one shared
//! copy of each decoded name, address and SWIM identity (`intern`, and membership's identity
//! cache built on it). They change no result.
//!
//! Layering, without cycles: `limits`, `time`, `hash` -> `intern` -> `model` -> `registry`,
//! `schedule`, `health`, `balance`, `autoscale`, `cluster_file` -> `membership` -> `node`;
//! `seal` depends on `limits` and `hash` only.

pub mod autoscale;
pub mod balance;
pub mod cluster_file;
pub mod hash;
pub mod health;
mod intern;
pub mod limits;
pub mod membership;
pub mod model;
pub mod node;
pub mod registry;
pub mod rng;
pub mod rollout;
pub mod schedule;
pub mod seal;
pub mod time;
