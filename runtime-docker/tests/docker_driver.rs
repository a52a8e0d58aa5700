//! The Docker driver alone, on the real engine: what a started container carries (labels,
//! port bound on 127.0.0.1, CPU and memory limits, the volume, the environment), listing by
//! label, the exit stream, removal.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use canteen_core::model::{AppSpec, GpuShare, NodeId, Resources, SlotId, Volume};
use canteen_docker::docker::Docker;
use serde_json::Value;

mod common;
use common::docker_ready;

fn inspect(id: &str) -> Value {
    let out = Command::new("docker").args(["inspect", id]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
}

/// Removes the node's containers and the volume, even when the test fails.
struct Cleanup {
    node: &'static str,
    volume: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=canteen.node={}", self.node)])
            .output()
            .unwrap();
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
        let _ = Command::new("docker").args(["volume", "rm", "-f", &self.volume]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_container_carries_labels_limits_port_and_volume_and_its_exit_is_seen() {
    if !docker_ready("a_started_container_carries_labels_limits_port_and_volume_and_its_exit_is_seen") {
        return;
    }
    let volume = format!("canteen-it-driver-{}", std::process::id());
    let _cleanup = Cleanup { node: "it-driver", volume: volume.clone() };
    let docker = Docker::connect(NodeId::new("it-driver"), "0123456789abcdef").await.expect("docker");
    let mut app = AppSpec::new("web", "canteen-demo:latest", 1, Resources::new(250, 64));
    app.container_port = 8080;
    app.volume = Some(Volume { name: volume.clone(), mount_path: "/data".into() });
    app.env = BTreeMap::from([("MODE".to_owned(), "test".to_owned())]);
    app.version = 7;
    let slot = SlotId::new("web", 3);
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let id = docker.start(&slot, &app, ip, 17951, &[]).await.expect("start");

    let c = inspect(&id);
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["canteen.app"], "web");
    assert_eq!(labels["canteen.slot"], "3");
    assert_eq!(labels["canteen.node"], "it-driver");
    assert_eq!(labels["canteen.host_port"], "17951");
    assert_eq!(labels["canteen.identity"], "0123456789abcdef");
    let binding = &c["HostConfig"]["PortBindings"]["8080/tcp"][0];
    assert_eq!(binding["HostIp"], "127.0.0.1");
    assert_eq!(binding["HostPort"], "17951");
    assert_eq!(c["HostConfig"]["NanoCpus"], 250_000_000);
    assert_eq!(c["HostConfig"]["Memory"], 64 * 1024 * 1024);
    assert_eq!(c["Mounts"][0]["Name"], volume.as_str());
    assert_eq!(c["Mounts"][0]["Destination"], "/data");
    let env: Vec<&str> = c["Config"]["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for expected in ["CANTEEN_SLOT=web-3", "PORT=8080", "MODE=test", "CANTEEN_DATA_DIR=/data"] {
        assert!(env.contains(&expected), "{expected} missing from {env:?}");
    }
    assert_eq!(labels["canteen.version"], "7");
    // Named by version too: a slot's two versions run side by side in a rolling update.
    assert_eq!(c["Name"], "/canteen-it-driver-01234567-web-3-v7");

    // Another agent under the same name (another identity) does not see it as its own.
    let twin = Docker::connect(NodeId::new("it-driver"), "fedcba9876543210").await.unwrap();
    assert!(twin.list_own().await.unwrap().is_empty(), "a twin never adopts another's container");
    let own = docker.list_own().await.unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!((own[0].slot.clone(), own[0].host_port, own[0].running), (slot.clone(), 17951, true));
    assert_eq!(own[0].version, 7, "adopted with its version");

    // The volume is the app's, and no other app's.
    let labels = serde_json::from_slice::<serde_json::Value>(
        &Command::new("docker").args(["volume", "inspect", &volume]).output().unwrap().stdout,
    )
    .unwrap()[0]["Labels"]
        .clone();
    assert_eq!(labels["canteen.app"], "web");
    let mut other = app.clone();
    other.name = "api".into();
    let e = docker.start(&SlotId::new("api", 0), &other, ip, 17952, &[]).await.unwrap_err().to_string();
    assert!(e.contains("belongs to app web"), "{e}");
    let foreign = format!("canteen-it-foreign-{}", std::process::id());
    assert!(Command::new("docker").args(["volume", "create", &foreign]).output().unwrap().status.success());
    other.volume = Some(Volume { name: foreign.clone(), mount_path: "/data".into() });
    let e = docker.start(&SlotId::new("api", 0), &other, ip, 17952, &[]).await.unwrap_err().to_string();
    assert!(e.contains("not made by canteen"), "{e}");
    // A volume made before canteen labelled them is the app's whose containers mount it.
    let legacy = Command::new("docker")
        .args(["create", "--label", "canteen.app=api", "-v", &format!("{foreign}:/data"), "canteen-demo:latest"])
        .output()
        .unwrap();
    assert!(legacy.status.success(), "{}", String::from_utf8_lossy(&legacy.stderr));
    let legacy = String::from_utf8_lossy(&legacy.stdout).trim().to_owned();
    let started = docker.start(&SlotId::new("api", 0), &other, ip, 17952, &[]).await;
    let _ = Command::new("docker").args(["rm", "-f", &legacy]).output();
    let api_id = started.expect("the legacy volume is api's");
    docker.remove(&api_id).await.unwrap();
    let _ = Command::new("docker").args(["volume", "rm", "-f", &foreign]).output();

    // Starting the slot again replaces the leftover of the same name.
    let again = docker.start(&slot, &app, ip, 17951, &[]).await.expect("second start");
    assert_ne!(again, id);
    assert_eq!(docker.list_own().await.unwrap().len(), 1);

    // Its death comes through the event stream.
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(docker.clone().watch_exits(tx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(Command::new("docker").args(["kill", &again]).output().unwrap().status.success());
    // (The stream starts from the current second, so the first container's death may come first.)
    tokio::time::timeout(Duration::from_secs(10), async {
        while rx.recv().await.expect("the stream is open") != again {}
    })
    .await
    .expect("its exit within 10 s");
    assert!(!docker.list_own().await.unwrap()[0].running);

    docker.remove(&again).await.unwrap();
    docker.remove(&again).await.expect("removing a removed container is fine");
    assert!(docker.list_own().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_that_cannot_be_pulled_is_a_pull_error_and_nothing_is_created() {
    if !docker_ready("a_missing_image_that_cannot_be_pulled_is_a_pull_error_and_nothing_is_created") {
        return;
    }
    let docker = Docker::connect(NodeId::new("it-driver-pull"), "0123456789abcdef").await.expect("docker");
    let app = AppSpec::new("ghost", "canteen-no-such-image:never", 1, Resources::new(100, 64));
    let e = docker.start(&SlotId::new("ghost", 0), &app, "127.0.0.1".parse().unwrap(), 17952, &[]).await.unwrap_err();
    assert!(e.to_string().contains("canteen-no-such-image:never"), "{e}");
    assert!(e.to_string().contains("pulling it failed"), "{e}");
    assert!(docker.list_own().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_replica_is_created_with_a_device_request_for_its_gpu_indexes() {
    if !docker_ready("a_gpu_replica_is_created_with_a_device_request_for_its_gpu_indexes") {
        return;
    }
    // This machine has no GPU: the container is created, as the agent creates it, and
    // inspected; starting it would need the NVIDIA runtime.
    let _cleanup = Cleanup { node: "it-gpu", volume: format!("canteen-it-gpu-{}", std::process::id()) };
    let docker = Docker::connect(NodeId::new("it-gpu"), "0123456789abcdef").await.expect("docker");
    let mut app = AppSpec::new("train", "canteen-demo:latest", 1, Resources::new(250, 64));
    app.gpu.gpus = 2;
    let gpus = [GpuShare { index: 1, milli: 1000 }, GpuShare { index: 3, milli: 1000 }];
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let (id, _) = docker.create(&SlotId::new("train", 0), &app, ip, 17953, &gpus).await.expect("create");
    let c = inspect(&id);
    let requests = c["HostConfig"]["DeviceRequests"].as_array().expect("device requests");
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["DeviceIDs"], serde_json::json!(["1", "3"]));
    assert_eq!(requests[0]["Capabilities"], serde_json::json!([["gpu"]]));
    assert_eq!(c["Config"]["Labels"]["canteen.gpus"], "1:1000,3:1000");
    let env: Vec<&str> = c["Config"]["Env"].as_array().unwrap().iter().filter_map(|e| e.as_str()).collect();
    assert!(env.contains(&"CANTEEN_GPUS=1:1000,3:1000"), "{env:?}");
    // A share of one GPU is a request for that GPU; the share is the scheduler's to keep.
    app.gpu = canteen_core::model::GpuRequest { gpus: 0, gpu_milli: 250, gpu_models: Vec::new() };
    let share = [GpuShare { index: 2, milli: 250 }];
    let (id, _) = docker.create(&SlotId::new("train", 1), &app, ip, 17954, &share).await.expect("create");
    let c = inspect(&id);
    assert_eq!(c["HostConfig"]["DeviceRequests"][0]["DeviceIDs"], serde_json::json!(["2"]));
    // The agent finds both again by their labels, with their GPUs.
    let own = docker.list_own().await.expect("list");
    let found: Vec<_> = own.iter().map(|c| (c.slot.index, c.gpus.clone())).collect();
    assert_eq!(found, [(0, gpus.to_vec()), (1, share.to_vec())]);
}
