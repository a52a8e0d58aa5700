//! canteen-lab: the simulator's scenario files on a real cluster. Each node is a real `canteen
//! agent` in a network namespace of its own on this machine, with the real Docker engine; the
//! scenario's load is sent for real, its faults are done for real (SIGKILL, links down,
//! nftables, netem, `docker kill` and `docker pause`), and the simulator's own checkers judge
//! what the lab samples, so a lab report reads as a simulated one and the two can be compared.
//!
//! # Layout
//!
//! - [`admit`]: what the lab can run, and the refusals.
//! - [`net`]: the bridge, the namespaces, port forwarding, partitions and netem.
//! - [`hosts`]: the agents: configs, processes, data directories.
//! - [`load`]: the open-loop load generator (hyper).
//! - [`observe`]: the samples (agents' `/status`, Docker, probes) written into the simulator's
//!   world for its checkers.
//! - [`faults`]: each fault, for real.
//! - [`run`]: one run as an outline, and the teardown.
//! - [`compare`]: the simulator's distributions beside the lab's.
//! - [`cli`]: the `canteen-lab` command line.

pub mod admit;
pub mod cli;
pub mod compare;
pub mod faults;
pub mod hosts;
pub mod load;
pub mod net;
pub mod observe;
pub mod run;
