//! `canteen plan` as a user runs it: the binary, real files, exit codes.

use std::process::Command;

fn canteen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_canteen"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("the binary runs")
}

#[test]
fn plan_prints_every_node_and_places_every_slot_of_the_example() {
    let out = canteen(&["plan", "examples/cluster.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("policy spread: 16 slots placed on 7 nodes, 0 unschedulable"), "{text}");
    for node in ["node-0", "node-4", "ssd-0", "ssd-1"] {
        assert!(text.contains(node), "{node} missing from\n{text}");
    }
}

#[test]
fn plan_json_has_the_documented_shape() {
    let out = canteen(&["plan", "examples/cluster.toml", "--policy", "binpack", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["policy"], "binpack");
    assert_eq!(v["placements"].as_array().unwrap().len(), 16);
    let first = &v["placements"][0];
    assert!(first["app"].is_string() && first["slot"].is_u64() && first["node"].is_string());
    assert!(v["unschedulable"].as_array().unwrap().is_empty());
    for n in v["nodes"].as_array().unwrap() {
        assert!(n["cpu_millis_used"].as_u64().unwrap() <= n["cpu_millis"].as_u64().unwrap());
        assert!(n["mem_mb_used"].as_u64().unwrap() <= n["mem_mb"].as_u64().unwrap());
    }
}

#[test]
fn a_bad_file_exits_2_naming_the_file_and_the_key() {
    let out = canteen(&["plan", "examples/bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("examples/bad.toml: key `app[0].update.max_surge"), "{err}");
    assert!(err.contains("give one of them at least 1"), "{err}");
}

#[test]
fn an_unknown_policy_or_a_missing_file_exits_2() {
    let out = canteen(&["plan", "examples/cluster.toml", "--policy", "random"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allowed: round-robin, binpack, spread, rendezvous, fgd"));
    let out = canteen(&["plan", "examples/missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("examples/missing.toml: cannot read"));
}

#[test]
fn a_gpu_plan_gives_each_placement_its_gpus_and_says_why_a_slot_has_no_host_port() {
    let out = canteen(&["plan", "examples/gpu-cluster.toml", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["policy"], "fgd");
    for p in v["placements"].as_array().unwrap() {
        let gpus = p["gpus"].as_array().unwrap();
        let held: u64 = gpus.iter().map(|g| g["milli"].as_u64().unwrap()).sum();
        let expected = match p["app"].as_str().unwrap() {
            "train" => 4000,
            "infer" => 250,
            "notebook" => 500,
            _ => 0,
        };
        assert_eq!(held, expected, "{p}");
        if p["app"] == "train" {
            assert!(p["node"].as_str().unwrap().starts_with("a100-"), "{p}");
            assert!(gpus.iter().all(|g| g["milli"] == 1000 && g["index"].as_u64().unwrap() < 8), "{p}");
        }
    }
    let unschedulable = v["unschedulable"].as_array().unwrap();
    assert_eq!(unschedulable.len(), 1);
    assert_eq!(unschedulable[0]["app"], "gateway");
    assert!(unschedulable[0]["reason"].as_str().unwrap().starts_with("no free host port on edge"), "{unschedulable:?}");
    let edge = v["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "edge").unwrap();
    assert_eq!(edge["gpus"], 0);
    let a100 = v["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "a100-0").unwrap();
    assert_eq!((a100["gpus"].as_u64(), a100["gpu_model"].as_str()), (Some(8), Some("A100")));
}
