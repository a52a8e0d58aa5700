//! canteen-docker: the canteen agent on real Docker and sockets, and the `canteen` command.
//!
//! # Layout
//!
//! - [`cli`]: the command line, and what each command exits with.
//! - [`plan`]: `canteen plan`, placing a cluster file's apps and printing the plan.
//! - [`config`]: the agent's config file, every key with a default.
//! - [`docker`]: containers through bollard: labelled, started, removed, listed, watched.

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod docker;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod proxy;
pub mod rollout_cli;
pub mod state;
