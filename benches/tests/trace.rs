//! Replays a slice of the openb trace with every policy and checks every placement against the
//! trace's own numbers, from the plan's JSON lines, as anyone reading `--plan-out` would.

use std::collections::BTreeMap;

use canteen_benches::trace::{self, Protocol, TraceNode, TracePod};
use canteen_core::schedule::Policy;

fn slice() -> (Vec<TraceNode>, Vec<TracePod>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/openb-slice");
    let nodes = std::fs::read_to_string(format!("{dir}/nodes.csv")).unwrap();
    let pods = std::fs::read_to_string(format!("{dir}/pods.csv")).unwrap();
    (trace::parse_nodes("nodes.csv", &nodes).unwrap(), trace::parse_pods("pods.csv", &pods).unwrap())
}

/// Checks the plan's lines: each placed task on a node of the replay, within its CPU, memory
/// and GPUs, holding what it asks of GPUs of a model it allows, no GPU past its whole and a
/// whole GPU held alone.
fn check_feasible(nodes: &[&TraceNode], lines: &[serde_json::Value]) {
    let by_name: BTreeMap<&str, &TraceNode> = nodes.iter().map(|n| (n.name.as_str(), *n)).collect();
    let mut cpu: BTreeMap<&str, u64> = BTreeMap::new();
    let mut mem: BTreeMap<&str, u64> = BTreeMap::new();
    let mut gpu: BTreeMap<(&str, u64), u64> = BTreeMap::new();
    for line in lines {
        let Some(name) = line["node"].as_str() else {
            assert!(line["gpus"].as_array().unwrap().is_empty(), "an unplaced task holds no GPU: {line}");
            continue;
        };
        let node = by_name.get(name).unwrap_or_else(|| panic!("{line}: no such node in the replay"));
        *cpu.entry(name).or_default() += line["cpu_milli"].as_u64().unwrap();
        *mem.entry(name).or_default() += line["memory_mib"].as_u64().unwrap();
        let (num, milli) = (line["num_gpu"].as_u64().unwrap(), line["gpu_milli"].as_u64().unwrap());
        let gpus = line["gpus"].as_array().unwrap();
        let held: u64 = gpus.iter().map(|g| g["milli"].as_u64().unwrap()).sum();
        let asked = if num == 0 || milli == 0 {
            0
        } else if num == 1 {
            milli.min(1000)
        } else {
            num * 1000
        };
        assert_eq!(held, asked, "{line}: holds what it asks");
        let spec = line["gpu_spec"].as_str().unwrap();
        assert!(gpus.is_empty() || spec.is_empty() || spec.split('|').any(|m| m == node.model), "{line}: model");
        for g in gpus {
            let (index, m) = (g["index"].as_u64().unwrap(), g["milli"].as_u64().unwrap());
            assert!(index < u64::from(node.gpus), "{line}: GPU {index} of {}", node.gpus);
            let h = gpu.entry((name, index)).or_default();
            assert!(m == 1000 && *h == 0 || m < 1000 && *h + m <= 1000, "{line}: GPU {index} held past its whole");
            *h += m;
        }
    }
    for (name, used) in cpu {
        assert!(used <= by_name[name].cpu_milli, "{name}: CPU {used} of {}", by_name[name].cpu_milli);
    }
    for (name, used) in mem {
        assert!(used <= by_name[name].memory_mib, "{name}: memory {used} of {}", by_name[name].memory_mib);
    }
}

fn run(policy: Policy, seed: u64, tune: f64, all_nodes: bool) -> (trace::Report, Vec<serde_json::Value>) {
    let (nodes, pods) = slice();
    let nodes = trace::replay_nodes(&nodes, all_nodes);
    let capacity: u64 = nodes.iter().map(|n| u64::from(n.gpus) * 1000).sum();
    let arrivals = trace::arrivals(&pods, capacity, tune, seed);
    let (report, placed) = trace::replay(&nodes, &pods, &arrivals, &Protocol { policy, seed, tune, all_nodes });
    let lines: Vec<serde_json::Value> =
        placed.iter().map(|p| serde_json::from_str(&trace::plan_line(&pods, &nodes, p)).unwrap()).collect();
    check_feasible(&nodes, &lines);
    (report, lines)
}

#[test]
fn every_policy_places_the_slice_within_every_nodes_resources() {
    for (_, policy) in Policy::ALL {
        let (report, lines) = run(policy, 42, 1.3, false);
        assert_eq!(report.pods_arrived, lines.len());
        assert_eq!(report.pods_placed, lines.iter().filter(|l| !l["node"].is_null()).count());
        assert!(report.gpu_arrived_percent > 125.0 && report.gpu_arrived_percent <= 130.0, "{report}");
        assert!(report.gpu_alloc_percent > 50.0 && report.gpu_alloc_percent <= 100.0, "{report}");
        assert!(report.gpu_alloc_percent_at_first_failure <= report.gpu_alloc_percent, "{report}");
        let (_, once) = run(policy, 7, 0.0, true);
        assert_eq!(once.len(), slice().1.len(), "--tune 0 replays the trace once");
        assert_eq!(once[0]["pod"], "openb-pod-0000", "in its order");
    }
}

#[test]
fn a_replay_is_the_same_for_the_same_seed_and_differs_for_another() {
    let (_, a) = run(Policy::Fgd, 42, 1.3, false);
    let (_, b) = run(Policy::Fgd, 42, 1.3, false);
    let (_, c) = run(Policy::Fgd, 43, 1.3, false);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn a_malformed_trace_is_refused_naming_the_file_line_and_column() {
    let e = trace::parse_nodes("n.csv", "sn,cpu_milli,memory_mib,gpu,model\nx,1000,1024,two,A100\n").unwrap_err();
    assert_eq!(e.to_string(), "n.csv: line 2: gpu = \"two\" is not a whole number");
    let e = trace::parse_pods("p.csv", "name,cpu_milli\n").unwrap_err();
    assert!(e.to_string().starts_with("p.csv: line 1: no column \"memory_mib\""), "{e}");
    let e = trace::parse_nodes("n.csv", "sn,cpu_milli,memory_mib,gpu,model\nx,1000,1024,65,A100\n").unwrap_err();
    assert!(e.to_string().contains("at most 64 GPUs"), "{e}");
}
