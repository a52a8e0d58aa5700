//! canteen-sim: the deterministic simulator. Each simulated server is a madsim node running a
//! driver loop around the very `canteen_core::node::Node` the real agent runs; a scenario file
//! drives load and faults, and checkers watch invariants all the time. The same file and seed
//! replay the same run bit for bit.
//!
//! # Layout
//!
//! - [`scenario`]: the scenario file, parsed and checked.
//! - [`world`]: what is physically true: simulated Docker, the network's partitions, the
//!   balancers and the request path.
//! - `harness` (under `--cfg madsim` only): one run, as an outline: the madsim runtime, the
//!   nodes booted, the traffic, the fault timeline, the checkers sampled, the report.
//! - `driver` (under `--cfg madsim` only): one node's driver loop, step by step.
//! - `faults` (under `--cfg madsim` only): one function per kind of fault.
//! - [`docker`]: simulated Docker: container starts, stops and probes, answered when due.
//! - [`checker`]: one checker per invariant, sampled from the world all along a run.
//! - [`report`]: a run's report as a table, JSON and an SVG timeline.
//! - [`traffic`]: Poisson arrivals, replica queues, latency histograms.
//! - [`plot`]: the SVG timeline writer.
//! - [`cli`]: the `canteen-sim` command line.

pub mod checker;
pub mod cli;
pub mod docker;
#[cfg(madsim)]
pub mod driver;
#[cfg(madsim)]
pub mod faults;
#[cfg(madsim)]
pub mod harness;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod traffic;
pub mod world;
