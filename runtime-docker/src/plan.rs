//! `canteen plan`: place every app of a cluster file and show where each slot lands.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use canteen_core::cluster_file::Cluster;
use canteen_core::limits::MIB;
use canteen_core::model::GpuShare;
use canteen_core::schedule::{self, Observed, Plan, Policy};
use serde::Serialize;

/// Places `cluster` from scratch (nothing observed running) with `policy`, or the file's own.
pub fn plan(cluster: &Cluster, policy: Option<Policy>) -> Plan {
    schedule::place(&cluster.apps, &cluster.nodes, &Observed::new(), policy.unwrap_or(cluster.policy))
}

/// The `--json` form of a plan.
#[derive(Debug, Serialize)]
pub struct PlanJson {
    /// The policy used.
    pub policy: String,
    /// Every placed slot.
    pub placements: Vec<PlacementJson>,
    /// Every slot that fits nowhere.
    pub unschedulable: Vec<UnschedulableJson>,
    /// Every node with what its slots reserve.
    pub nodes: Vec<NodeJson>,
}

/// One placed slot.
#[derive(Debug, Serialize)]
pub struct PlacementJson {
    /// The app.
    pub app: String,
    /// The slot index within the app.
    pub slot: u32,
    /// The node it runs on.
    pub node: String,
    /// The GPUs it holds there, by index (`milli` 1000 for a whole one).
    pub gpus: Vec<GpuJson>,
}

/// One GPU a slot holds.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct GpuJson {
    /// Its index on the node.
    pub index: u32,
    /// Thousandths of it held.
    pub milli: u32,
}

impl GpuJson {
    /// Each of `gpus`.
    pub fn list(gpus: &[GpuShare]) -> Vec<GpuJson> {
        gpus.iter().map(|g| GpuJson { index: g.index, milli: g.milli }).collect()
    }
}

/// One slot that fits nowhere.
#[derive(Debug, Serialize)]
pub struct UnschedulableJson {
    /// The app.
    pub app: String,
    /// The slot index within the app.
    pub slot: u32,
    /// Why it fits nowhere.
    pub reason: String,
}

/// One node's usage.
#[derive(Debug, Serialize)]
pub struct NodeJson {
    /// Its name.
    pub name: String,
    /// CPU reserved by its slots, in millicores.
    pub cpu_millis_used: u64,
    /// Its CPU capacity, in millicores.
    pub cpu_millis: u64,
    /// Memory reserved by its slots, in MiB.
    pub mem_mb_used: u64,
    /// Its memory capacity, in MiB.
    pub mem_mb: u64,
    /// Its GPUs.
    pub gpus: u32,
    /// Their model.
    pub gpu_model: String,
    /// Thousandths of a GPU its slots hold, over all its GPUs.
    pub gpu_milli_used: u64,
}

/// The plan as the `--json` output describes it.
pub fn to_json(plan: &Plan) -> PlanJson {
    let gpu_used = gpu_used(plan);
    PlanJson {
        policy: plan.policy().to_string(),
        placements: plan
            .placements()
            .map(|(slot, node)| PlacementJson {
                app: slot.app.to_string(),
                slot: slot.index,
                node: node.to_string(),
                gpus: GpuJson::list(&plan.gpus_of(&slot)),
            })
            .collect(),
        unschedulable: plan
            .unschedulable()
            .iter()
            .map(|u| UnschedulableJson {
                app: u.slot.app.to_string(),
                slot: u.slot.index,
                reason: u.reason.to_string(),
            })
            .collect(),
        nodes: plan
            .usage()
            .map(|(n, used)| NodeJson {
                name: n.id.to_string(),
                cpu_millis_used: used.cpu_millis,
                cpu_millis: n.capacity.cpu_millis,
                mem_mb_used: used.mem_bytes / MIB,
                mem_mb: n.capacity.mem_bytes / MIB,
                gpus: n.gpus,
                gpu_model: n.gpu_model.clone(),
                gpu_milli_used: gpu_used.get(n.id.as_str()).copied().unwrap_or(0),
            })
            .collect(),
    }
}

/// Thousandths of a GPU held on each node.
fn gpu_used(plan: &Plan) -> BTreeMap<String, u64> {
    let mut used: BTreeMap<String, u64> = BTreeMap::new();
    for (slot, node) in plan.placements() {
        let held: u64 = plan.gpus_of(&slot).iter().map(|g| u64::from(g.milli)).sum();
        if held > 0 {
            *used.entry(node.to_string()).or_default() += held;
        }
    }
    used
}

/// The plan as a table: each node with its slots and usage, then the unschedulable slots.
pub fn to_table(plan: &Plan) -> String {
    // Slot indexes per node and app, so a node line reads `web[0,3] api[1]`.
    let mut by_node: BTreeMap<&str, BTreeMap<String, Vec<u32>>> = BTreeMap::new();
    let mut placed = 0usize;
    for (slot, node) in plan.placements() {
        by_node.entry(node.as_str()).or_default().entry(slot.app.to_string()).or_default().push(slot.index);
        placed += 1;
    }
    let gpu_used = gpu_used(plan);
    let mut rows = vec![[
        "NODE".to_owned(),
        "CPU (m)".to_owned(),
        "MEMORY (MiB)".to_owned(),
        "GPU".to_owned(),
        "SLOTS".to_owned(),
    ]];
    for (node, used) in plan.usage() {
        let slots = by_node.get(node.id.as_str()).map_or_else(
            || "-".to_owned(),
            |apps| {
                apps.iter()
                    .map(|(app, idx)| {
                        format!("{app}[{}]", idx.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        );
        rows.push([
            node.id.to_string(),
            format!("{}/{}", used.cpu_millis, node.capacity.cpu_millis),
            format!("{}/{}", used.mem_bytes / MIB, node.capacity.mem_bytes / MIB),
            if node.gpus == 0 {
                "-".to_owned()
            } else {
                let held = gpu_used.get(node.id.as_str()).copied().unwrap_or(0) as f64 / 1000.0;
                format!("{held}/{} {}", node.gpus, node.gpu_model)
            },
            slots,
        ]);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy {}: {} slots placed on {} nodes, {} unschedulable\n",
        plan.policy(),
        placed,
        rows.len() - 1,
        plan.unschedulable().len()
    );
    out.push_str(&table(&rows));
    if !plan.unschedulable().is_empty() {
        let mut rows = vec![["SLOT".to_owned(), "REASON".to_owned()]];
        rows.extend(plan.unschedulable().iter().map(|u| [u.slot.to_string(), u.reason.to_string()]));
        out.push_str("\nunschedulable:\n");
        out.push_str(&table(&rows));
    }
    out
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    }
    out
}
