//! Why a slot fits nowhere: the reason a plan gives, and how it is worked out.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits;
use crate::model::{NodeId, Resources, SlotId};

use super::Plan;
use super::gpu::GpuNeed;

/// Nodes named in a reason: the first few, then a count of the rest.
const NAMED_NODES_MAX: usize = 5;

/// Why a slot could not be placed. The slot is left unplaced, never over-committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unplaceable {
    /// No live node carries the labels the app requires (or no node is live).
    NoNodeMatches {
        /// The required labels, `k=v` joined by commas; empty when there are no live nodes.
        constraints: String,
    },
    /// Live nodes carry the labels, but none has a GPU of a model the app allows.
    NoGpuNode {
        /// The models allowed, joined by `|`; empty when any model is.
        models: String,
    },
    /// It ran, or was placed, where a higher-priority slot that fit nowhere else now runs.
    Preempted {
        /// The slot that took its place.
        by: SlotId,
        /// That slot's priority.
        priority: i32,
    },
    /// Nodes have the CPU, memory and GPUs free, but every host port of theirs is held.
    NoFreeHostPort {
        /// The first few of those nodes, by name.
        nodes: Vec<NodeId>,
        /// How many there are.
        count: usize,
    },
    /// Nodes match, but none has the resources free.
    Insufficient {
        /// What one replica needs.
        needs: Resources,
        /// Whole GPUs it needs.
        #[serde(default)]
        gpus: u32,
        /// The share of one GPU it needs, in thousandths.
        #[serde(default)]
        gpu_milli: u32,
        /// Live nodes that match the constraints (and have GPUs of an allowed model).
        eligible: usize,
        /// The most CPU free on any of them.
        cpu_free_max: u64,
        /// The most memory free on any of them.
        mem_free_max: u64,
        /// The most GPUs wholly free on any of them.
        #[serde(default)]
        gpus_free_max: u32,
        /// The most thousandths free on one GPU of any of them.
        #[serde(default)]
        gpu_milli_free_max: u32,
    },
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unplaceable::NoNodeMatches { constraints } if constraints.is_empty() => f.write_str("no live node"),
            Unplaceable::NoNodeMatches { constraints } => write!(f, "no live node has labels {constraints}"),
            Unplaceable::NoGpuNode { models } if models.is_empty() => {
                f.write_str("no live node it may run on has GPUs")
            }
            Unplaceable::NoGpuNode { models } => write!(f, "no live node it may run on has GPUs of model {models}"),
            Unplaceable::Preempted { by, priority } => {
                write!(f, "preempted by {by} (priority {priority}) and fits nowhere else")
            }
            Unplaceable::NoFreeHostPort { nodes, count } => {
                let names: Vec<&str> = nodes.iter().map(|n| n.as_str()).collect();
                let more = count.saturating_sub(nodes.len());
                let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                write!(
                    f,
                    "no free host port on {}{more}, which have room for it otherwise (a replica holds a host port; a node runs at most {})",
                    names.join(", "),
                    limits::LOCAL_SLOTS_MAX
                )
            }
            Unplaceable::Insufficient {
                needs,
                gpus,
                gpu_milli,
                eligible,
                cpu_free_max,
                mem_free_max,
                gpus_free_max,
                gpu_milli_free_max,
            } => {
                let mut short = Vec::new();
                if needs.cpu_millis > *cpu_free_max {
                    short.push("cpu");
                }
                if needs.mem_bytes > *mem_free_max {
                    short.push("memory");
                }
                if gpus > gpus_free_max || gpu_milli > gpu_milli_free_max {
                    short.push("gpu");
                }
                let what = match (short.is_empty(), gpus + gpu_milli) {
                    (true, 0) => "cpu and memory together".to_owned(),
                    (true, _) => "cpu, memory and gpu together".to_owned(),
                    (false, _) => short.join(" and "),
                };
                write!(f, "insufficient {what}: needs {}m cpu and {} MiB", needs.cpu_millis, needs.mem_mb())?;
                match (gpus, gpu_milli) {
                    (0, 0) => {}
                    (0, m) => write!(f, " and {m} thousandths of a GPU")?,
                    (g, _) => write!(f, " and {g} whole GPUs")?,
                }
                write!(
                    f,
                    ", {eligible} eligible nodes have at most {}m cpu and {} MiB",
                    cpu_free_max,
                    mem_free_max / limits::MIB
                )?;
                match (gpus, gpu_milli) {
                    (0, 0) => {}
                    (0, _) => write!(f, " and {gpu_milli_free_max} thousandths of one GPU")?,
                    (_, _) => write!(f, " and {gpus_free_max} whole GPUs")?,
                }
                f.write_str(" free")
            }
        }
    }
}

/// A slot that fits nowhere, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unschedulable {
    /// The slot.
    pub slot: SlotId,
    /// Why it fits nowhere.
    pub reason: Unplaceable,
}

impl Plan {
    /// Why no node of `eligible` (the live nodes that match app `a`'s labels and GPU models)
    /// takes a replica of app `a`.
    pub(super) fn why_unplaceable(&self, a: usize, eligible: &[u32]) -> Unplaceable {
        let app = &self.apps[a];
        if eligible.is_empty() {
            let labelled = (0..self.nodes.len()).any(|n| self.alive[n] && app.admits(&self.nodes[n].labels));
            if labelled && !app.gpu.is_none() {
                return Unplaceable::NoGpuNode { models: app.gpu.gpu_models.join("|") };
            }
            let constraints: Vec<String> = app.constraints.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return Unplaceable::NoNodeMatches { constraints: constraints.join(",") };
        }
        let need = self.needs[a].gpu;
        // Nodes where everything but a host port is free.
        let portless: Vec<usize> = eligible
            .iter()
            .map(|&n| n as usize)
            .filter(|&n| {
                self.rooms[n].ports == 0
                    && app.resources.fits_in(self.rooms[n].res())
                    && self.gpus.fits(n, need, &self.needs[a].models)
            })
            .collect();
        if !portless.is_empty() {
            return Unplaceable::NoFreeHostPort {
                nodes: portless.iter().take(NAMED_NODES_MAX).map(|&n| self.nodes[n].id.clone()).collect(),
                count: portless.len(),
            };
        }
        let free = eligible.iter().map(|&n| self.rooms[n as usize].res());
        let rooms = eligible.iter().map(|&n| self.gpus.room(n as usize));
        let (gpus, gpu_milli) = match need {
            GpuNeed::None => (0, 0),
            GpuNeed::Whole(k) => (u32::from(k), 0),
            GpuNeed::Share(m) => (0, u32::from(m)),
        };
        Unplaceable::Insufficient {
            needs: app.resources,
            gpus,
            gpu_milli,
            eligible: eligible.len(),
            cpu_free_max: free.clone().map(|f| f.cpu_millis).max().unwrap_or(0),
            mem_free_max: free.map(|f| f.mem_bytes).max().unwrap_or(0),
            gpus_free_max: rooms.clone().map(|r| u32::from(r.whole)).max().unwrap_or(0),
            gpu_milli_free_max: rooms.map(|r| u32::from(r.share_max)).max().unwrap_or(0),
        }
    }
}
