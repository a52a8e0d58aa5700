//! canteen-docker: the canteen agent on real Docker and sockets, and the `canteen` command.
//!
//! # Layout
//!
//! - [`plan`]: `canteen plan`, placing a cluster file's apps and printing the plan.
//! - [`cli`]: the command line, and what each command exits with.

pub mod cli;
pub mod plan;
