//! The real `canteen` binary on the real Docker engine: nothing is mocked.
//!
//! Each test runs its own agent with its own node name (the label its containers carry), API
//! port, host port range, app ports and data directory, and a guard removes its containers,
//! volumes and files at the end, even when it fails. The workload is the project's own
//! `canteen-demo:latest`, built first by `scripts/demo-image` (quick when already built).
//!
//! Without a reachable Docker engine each test prints a loud SKIP and passes, unless `CI=true`:
//! then it fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const CANTEEN: &str = env!("CARGO_BIN_EXE_canteen");

mod common;
#[path = "common/http.rs"]
mod http;
use common::docker_ready;
use http::http;

/// One test's agent and everything it made; dropping it removes them.
struct Env {
    name: String,
    dir: PathBuf,
    api: SocketAddr,
    config: PathBuf,
    child: Option<Child>,
    volumes: Vec<String>,
}

impl Env {
    /// An environment numbered `n` (ports from 17000 + 100 n): API on +0, gossip (UDP) on +1,
    /// host ports +10..+59.
    fn new(name: &str, n: u16, extra_config: &str) -> Env {
        let dir = std::env::temp_dir().join(format!("canteen-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let base = 17000 + 100 * n;
        let api = SocketAddr::from(([127, 0, 0, 1], base));
        let node = format!("it-{name}");
        let config = dir.join("canteen.toml");
        let text = format!(
            "node_name = \"{node}\"\napi_addr = \"{api}\"\ngossip_addr = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n\
             host_port_min = {}\nhost_port_max = {}\n{extra_config}",
            base + 1,
            dir.join("data").display(),
            base + 10,
            base + 59
        );
        std::fs::write(&config, text).unwrap();
        let env = Env { name: node, dir, api, config, child: None, volumes: Vec::new() };
        env.remove_containers();
        env
    }

    fn start_agent(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("agent.log")).unwrap();
        let child = Command::new(CANTEEN)
            .args(["agent", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let api = self.api;
        self.wait("the API to answer", Duration::from_secs(20), || http(api, "GET", "/status", "").is_ok());
    }

    fn kill_agent(&mut self) {
        let mut child = self.child.take().expect("an agent");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn apply(&self, text: &str) {
        let path = self.file("apps.toml", text);
        let out =
            Command::new(CANTEEN).arg("apply").arg(&path).args(["--api", &self.api.to_string()]).output().unwrap();
        assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn status(&self) -> Value {
        let (code, body) = http(self.api, "GET", "/status", "").expect("status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The slots of `app`: (index, host port, health, restarts).
    fn slots(&self, app: &str) -> Vec<(u64, u16, String, u64)> {
        self.status()["slots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["app"] == app)
            .map(|s| {
                (
                    s["slot"].as_u64().unwrap(),
                    s["host_port"].as_u64().unwrap() as u16,
                    s["health"].as_str().unwrap().to_owned(),
                    s["restarts"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    fn healthy(&self, app: &str) -> usize {
        self.slots(app).iter().filter(|s| s.2 == "healthy").count()
    }

    fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--no-trunc", "--filter", &format!("label=canteen.node={}", self.name)])
            .output()
            .unwrap();
        let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        ids.sort();
        ids
    }

    fn remove_containers(&self) {
        for id in self.containers() {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
    }

    fn wait(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            if start.elapsed() > timeout {
                panic!("timed out after {timeout:?} waiting for {what}\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("agent log (last lines):\n{}", lines[lines.len().saturating_sub(40)..].join("\n"))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.remove_containers();
        for v in &self.volumes {
            let _ = Command::new("docker").args(["volume", "rm", "-f", v]).output();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("{}", self.log_tail());
        }
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn demo_app(name: &str, port: u16, replicas: u32, extra: &str) -> String {
    format!(
        "[[app]]\nname = \"{name}\"\nimage = \"canteen-demo:latest\"\nport = {port}\ncontainer_port = 8080\n\
         replicas = {replicas}\ncpu_millis = 50\nmem_mb = 32\n{extra}\n\
         [app.health]\npath = \"/health\"\ninterval_ms = 200\ntimeout_ms = 200\nfailures = 2\nstart_grace_ms = 1000\n"
    )
}

#[test]
fn round_robin_over_three_replicas_gives_each_a_third() {
    if !docker_ready("round_robin_over_three_replicas_gives_each_a_third") {
        return;
    }
    let mut env = Env::new("rr", 1, "");
    env.start_agent();
    env.apply(&demo_app("web", 17190, 3, ""));
    env.wait("3 healthy replicas", Duration::from_secs(30), || env.healthy("web") == 3);
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..300 {
        let (code, body) = http(local(17190), "GET", "/", "").unwrap();
        assert_eq!(code, 200, "{body}");
        *counts.entry(body.trim().to_owned()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (replica, n) in &counts {
        assert!((99..=101).contains(n), "{replica} answered {n} of 300: {counts:?}");
    }
    // The agent's metrics saw them.
    let (_, metrics) = http(env.api, "GET", "/metrics", "").unwrap();
    assert!(metrics.contains("canteen_requests_total{app=\"web\"} 300"), "{metrics}");
    assert!(metrics.contains("canteen_replicas{app=\"web\"} 3"), "{metrics}");
}

#[test]
fn a_crashed_replica_is_replaced_on_its_port_and_no_request_fails() {
    if !docker_ready("a_crashed_replica_is_replaced_on_its_port_and_no_request_fails") {
        return;
    }
    let mut env = Env::new("crash", 2, "");
    env.start_agent();
    env.apply(&demo_app("web", 17290, 3, ""));
    env.wait("3 healthy replicas", Duration::from_secs(30), || env.healthy("web") == 3);
    let before = env.containers();
    // The slot may have been restarted already (a first probe failing as the app boots): the
    // crash's restart is the next one.
    let (_, port, _, restarts) = env.slots("web")[0].clone();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (stop, ok, failed, failures) = (stop.clone(), ok.clone(), failed.clone(), failures.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match http(local(17290), "GET", "/", "") {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        failures.lock().unwrap().push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let (code, _) = http(local(port), "GET", "/crash", "").unwrap();
    assert_eq!(code, 200);
    env.wait("slot 0 restarted and healthy on its port", Duration::from_secs(30), || {
        let s = &env.slots("web")[0];
        s.1 == port && s.2 == "healthy" && s.3 > restarts
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let after = env.containers();
    assert_eq!(after.len(), 3, "no duplicate, no leftover: {after:?}");
    assert_ne!(before, after, "slot 0 runs a new container");
    assert!(ok.load(Ordering::Relaxed) > 50, "the client kept going");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests: {:?}", failures.lock().unwrap());
    // The replacement answers on the same host port.
    assert_eq!(http(local(port), "GET", "/health", "").unwrap().0, 200);
}

#[test]
fn load_above_the_target_adds_replicas_and_they_go_after_the_window() {
    if !docker_ready("load_above_the_target_adds_replicas_and_they_go_after_the_window") {
        return;
    }
    let mut env = Env::new("scale", 3, "scaling_interval_ms = 250\n");
    env.start_agent();
    let autoscale = "[app.autoscale]\nmin = 1\nmax = 3\ntarget_rps_per_replica = 10\ntolerance_percent = 10\n\
                     window_ms = 2000\nscale_down_stabilization_ms = 3000\n";
    env.apply(&demo_app("web", 17390, 1, autoscale));
    env.wait("1 healthy replica", Duration::from_secs(30), || env.healthy("web") == 1);

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // About 80 requests/s, bounded to 60 s.
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                let _ = http(local(17390), "GET", "/", "");
                std::thread::sleep(Duration::from_millis(12));
            }
        })
    };
    env.wait("3 healthy replicas under load", Duration::from_secs(30), || env.healthy("web") == 3);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let stopped = Instant::now();
    env.wait("back to 1 replica after the load stopped", Duration::from_secs(30), || env.slots("web").len() == 1);
    // Not before the stabilization window (3 s) has passed since the load stopped.
    assert!(stopped.elapsed() >= Duration::from_secs(2), "scaled down after {:?}", stopped.elapsed());
    env.wait("1 container left", Duration::from_secs(10), || env.containers().len() == 1);
    let (_, metrics) = http(env.api, "GET", "/metrics", "").unwrap();
    assert!(metrics.contains("canteen_scale_events_total{app=\"web\"}"), "{metrics}");
}

#[test]
fn a_file_written_through_one_replica_is_read_through_another() {
    if !docker_ready("a_file_written_through_one_replica_is_read_through_another") {
        return;
    }
    let mut env = Env::new("volume", 4, "");
    let volume = format!("canteen-it-volume-{}", std::process::id());
    env.volumes.push(volume.clone());
    env.start_agent();
    env.apply(&demo_app("web", 17490, 2, &format!("[app.volume]\nname = \"{volume}\"\npath = \"/data\"\n")));
    env.wait("2 healthy replicas", Duration::from_secs(30), || env.healthy("web") == 2);
    let slots = env.slots("web");
    let (code, body) = http(local(slots[0].1), "POST", "/data", "written by web-0").unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(local(slots[1].1), "GET", "/data", "").unwrap();
    assert_eq!((code, body.as_str()), (200, "written by web-0"));
}

#[test]
fn a_tcp_app_is_balanced_per_connection_and_an_upload_over_the_old_cap_streams() {
    if !docker_ready("a_tcp_app_is_balanced_per_connection_and_an_upload_over_the_old_cap_streams") {
        return;
    }
    let mut env = Env::new("tcp", 14, "");
    env.start_agent();
    // The demo speaks HTTP, but this app's balancer does not: it passes each connection's
    // bytes to one replica, health checked by a TCP connect.
    let tcp_app = demo_app("db", 18490, 2, "protocol = \"tcp\"").replace("path = \"/health\"", "kind = \"tcp\"");
    env.apply(&format!("{tcp_app}\n{}", demo_app("web", 18491, 1, "max_body_bytes = 12000000")));
    env.wait("3 healthy replicas", Duration::from_secs(30), || env.healthy("db") == 2 && env.healthy("web") == 1);
    let mut replicas = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (code, body) = http(local(18490), "GET", "/", "").unwrap();
        assert_eq!(code, 200, "{body}");
        replicas.insert(body.trim().to_owned());
    }
    assert_eq!(replicas.len(), 2, "connections go round the replicas: {replicas:?}");
    // 9 MB: over the 8 MiB the balancer used to buffer (and refuse past), under the app's cap.
    let upload = "u".repeat(9_000_000);
    let (code, body) = http(local(18491), "POST", "/upload", &upload).unwrap();
    assert_eq!((code, body.trim()), (200, "replica web-0 received 9000000 bytes"));
    // Over the cap: refused from its length, before its body is sent.
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 12000001\r\n\r\n";
    let answer = raw(local(18491), head);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[test]
fn a_killed_agent_adopts_its_containers_on_restart() {
    if !docker_ready("a_killed_agent_adopts_its_containers_on_restart") {
        return;
    }
    let mut env = Env::new("adopt", 5, "");
    env.start_agent();
    env.apply(&demo_app("web", 17590, 2, ""));
    env.wait("2 healthy replicas", Duration::from_secs(30), || env.healthy("web") == 2);
    let before = env.containers();
    assert_eq!(before.len(), 2);
    env.kill_agent();
    env.start_agent();
    env.wait("2 healthy replicas after the restart", Duration::from_secs(30), || env.healthy("web") == 2);
    // Give a wrong reconcile time to show itself.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(env.containers(), before, "the same containers: no duplicate, no orphan");
    assert_eq!(http(local(17590), "GET", "/", "").unwrap().0, 200);
}

#[test]
fn an_image_that_cannot_be_pulled_fails_its_app_only() {
    if !docker_ready("an_image_that_cannot_be_pulled_fails_its_app_only") {
        return;
    }
    let mut env = Env::new("pull", 6, "");
    env.start_agent();
    let ghost = "[[app]]\nname = \"ghost\"\nimage = \"canteen-no-such-image:never\"\nport = 17691\n";
    env.apply(&format!("{}\n{ghost}", demo_app("web", 17690, 1, "")));
    env.wait("web healthy", Duration::from_secs(30), || env.healthy("web") == 1);
    env.wait("the pull error on ghost", Duration::from_secs(30), || {
        env.status()["apps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "ghost" && a["error"].as_str().is_some_and(|e| e.contains("pulling it failed")))
    });
    assert_eq!(http(local(17690), "GET", "/", "").unwrap().0, 200);
    let out = Command::new(CANTEEN).args(["status", "--api", &env.api.to_string()]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("app ghost: image \"canteen-no-such-image:never\""), "{table}");
}

#[test]
fn a_container_killed_behind_the_agents_back_is_noticed_and_started_again() {
    if !docker_ready("a_container_killed_behind_the_agents_back_is_noticed_and_started_again") {
        return;
    }
    let mut env = Env::new("exit", 7, "");
    env.start_agent();
    // Probes every 10 s: only the event stream can notice the exit within the wait below.
    env.apply(&demo_app("web", 17790, 1, "").replace("interval_ms = 200", "interval_ms = 10000"));
    env.wait("1 healthy replica", Duration::from_secs(30), || env.healthy("web") == 1);
    let before = env.containers();
    let port = env.slots("web")[0].1;
    let out = Command::new("docker").args(["kill", &before[0]]).output().unwrap();
    assert!(out.status.success());
    env.wait("the slot restarted in a new container on its port", Duration::from_secs(8), || {
        let s = &env.slots("web")[0];
        let now = env.containers();
        s.1 == port && s.3 >= 1 && now.len() == 1 && now != before
    });
    env.wait("the new container serving on the same port", Duration::from_secs(5), || {
        http(local(port), "GET", "/health", "").is_ok_and(|(code, _)| code == 200)
    });
}

#[test]
fn up_runs_the_apps_and_ctrl_c_removes_what_it_started() {
    if !docker_ready("up_runs_the_apps_and_ctrl_c_removes_what_it_started") {
        return;
    }
    let mut env = Env::new("up", 8, "");
    let file = env.file("web.toml", &demo_app("web", 17890, 2, ""));
    let log = std::fs::File::create(env.dir.join("agent.log")).unwrap();
    let child =
        Command::new(CANTEEN).arg("up").arg(&file).arg("--config").arg(&env.config).stderr(log).spawn().unwrap();
    let pid = child.id();
    env.child = Some(child);
    env.wait("2 healthy replicas", Duration::from_secs(30), || {
        http(env.api, "GET", "/status", "").is_ok() && env.healthy("web") == 2
    });
    let (code, body) = http(local(17890), "GET", "/", "").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(env.containers().len(), 2);
    let out = Command::new("kill").args(["-INT", &pid.to_string()]).output().unwrap();
    assert!(out.status.success());
    let status = env.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "canteen up exited with {status}\n{}", env.log_tail());
    assert!(env.containers().is_empty(), "left behind: {:?}", env.containers());
    assert!(!env.dir.join("data/state.json").exists(), "the desired state is cleared");
}

#[test]
fn replicas_removed_by_a_scale_down_are_drained_first() {
    if !docker_ready("replicas_removed_by_a_scale_down_are_drained_first") {
        return;
    }
    let mut env = Env::new("drain", 9, "drain_ms = 1000\n");
    env.start_agent();
    env.apply(&demo_app("web", 17990, 3, ""));
    env.wait("3 healthy replicas", Duration::from_secs(30), || env.healthy("web") == 3);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::new())));
    // Four clients with slow POSTs (300 ms; not idempotent, so never retried after being sent):
    // some are in flight on the replicas removed, and only draining lets them finish.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match http(local(17990), "POST", "/slow?ms=300", "x") {
                        Ok((200, _)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let out = Command::new(CANTEEN).args(["scale", "web", "1", "--api", &env.api.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.wait("1 container left", Duration::from_secs(20), || env.containers().len() == 1);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert!(ok.load(Ordering::Relaxed) >= 8, "the clients kept going");
    assert!(failures.lock().unwrap().is_empty(), "failed requests: {:?}", failures.lock().unwrap());
    assert_eq!(env.slots("web").len(), 1);
}

fn canteen(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(CANTEEN);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_files_exit_2_naming_file_key_and_what_is_allowed() {
    let dir = std::env::temp_dir().join(format!("canteen-it-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = dir.join("bad-cluster.toml");
    std::fs::write(&cluster, "[[app]]\nname = \"web\"\nimage = \"x\"\nport = 8080\nbalance = \"fastest\"\n").unwrap();
    for cmd in ["apply", "up"] {
        let (code, err) =
            canteen(&[cmd, cluster.to_str().unwrap(), "--api", "127.0.0.1:1"][..if cmd == "up" { 2 } else { 4 }], &[]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("bad-cluster.toml"), "{err}");
        assert!(err.contains("app.balance"), "{err}");
        assert!(err.contains("round-robin"), "{err}");
    }
    let config = dir.join("bad-config.toml");
    std::fs::write(&config, "host_port_min = 9000\nhost_port_max = 8000\n").unwrap();
    let (code, err) = canteen(&["agent", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad-config.toml") && err.contains("host_port_min") && err.contains("between"), "{err}");
    std::fs::write(&config, "policy = \"best\"\n").unwrap();
    let (code, err) = canteen(&["agent", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("policy") && err.contains("binpack"), "{err}");
    for bad in ["10.0.0.2", "node-a:0", "0.0.0.0:7946", "no_such:host:1"] {
        let (code, err) = canteen(&["agent", "--join", bad], &[]);
        assert_eq!(code, 2, "--join {bad}: {err}");
        assert!(err.contains("--join") && err.contains("HOST:PORT"), "{err}");
    }
    std::fs::write(&config, "join = [\"127.0.0.1:7946\", \"node-a\"]\n").unwrap();
    let (code, err) = canteen(&["agent", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad-config.toml") && err.contains("join") && err.contains("HOST:PORT"), "{err}");
    std::fs::write(&config, "gossip_addr = \"0.0.0.0:7946\"\n").unwrap();
    let (code, err) = canteen(&["agent", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gossip_addr") && err.contains("advertise_ip"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    // An API reachable from other machines needs a token.
    let dir = std::env::temp_dir().join(format!("canteen-it-open-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("open.toml");
    std::fs::write(&config, "api_addr = \"0.0.0.0:17980\"\n").unwrap();
    let (code, err) = canteen(&["agent", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("api_token") && err.contains("open.toml"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn docker_unreachable_is_a_clear_message_and_exit_1() {
    let dir = std::env::temp_dir().join(format!("canteen-it-nodocker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("canteen.toml");
    std::fs::write(&config, format!("api_addr = \"127.0.0.1:17099\"\ndata_dir = \"{}\"\n", dir.display())).unwrap();
    let (code, err) = canteen(
        &["agent", "--config", config.to_str().unwrap()],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the Docker engine"), "{err}");
    let (code, err) = canteen(&["status", "--api", "127.0.0.1:1"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the agent"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One raw HTTP/1.1 exchange on a fresh connection: the whole response (head and body).
fn raw(addr: SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

const TOKEN: &str = "it-token-0123456789abcdef";

#[test]
fn the_api_needs_its_token_json_posts_and_bounded_requests() {
    if !docker_ready("the_api_needs_its_token_json_posts_and_bounded_requests") {
        return;
    }
    let mut env = Env::new("api", 10, &format!("api_token = \"{TOKEN}\"\n"));
    env.start_agent();
    let api = env.api;
    let get = |path: &str, auth: &str| {
        raw(api, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"))
    };
    // No token, a wrong one: 401 on every route, /metrics included.
    for path in ["/status", "/metrics", "/nope"] {
        let r = get(path, "");
        assert!(r.starts_with("HTTP/1.1 401") && r.contains("www-authenticate: Bearer"), "{path}: {r}");
    }
    assert!(get("/status", "Authorization: Bearer not-the-token-at-all\r\n").starts_with("HTTP/1.1 401"));
    assert!(get("/status", &format!("Authorization: Bearer {TOKEN}\r\n")).starts_with("HTTP/1.1 200"));
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    // A form post from a web page, and a GET of a POST route.
    let body = "file=x&text=y";
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = raw(
            api,
            &format!(
                "POST /apply HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert!(r.starts_with("HTTP/1.1 415") && r.contains("application/json"), "{content_type}: {r}");
    }
    let r = get("/apply", &auth);
    assert!(r.starts_with("HTTP/1.1 405") && r.contains("allow: POST"), "{r}");
    // Too large, said before the body is read.
    let r = raw(
        api,
        &format!(
            "POST /apply HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 9000000\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(r.starts_with("HTTP/1.1 413") && r.contains("4 MiB"), "{r}");
    // The CLI: no token is bad input naming the way to give one; --token and CANTEEN_TOKEN work.
    let api_arg = api.to_string();
    let (code, err) = canteen(&["status", "--api", &api_arg], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("CANTEEN_TOKEN"), "{err}");
    assert_eq!(canteen(&["status", "--api", &api_arg, "--token", TOKEN], &[]).0, 0);
    assert_eq!(canteen(&["status", "--api", &api_arg], &[("CANTEEN_TOKEN", TOKEN)]).0, 0);
    let big = env.file("big.toml", &format!("{}# {}\n", demo_app("big", 18091, 1, ""), "x".repeat(5 << 20)));
    let (code, err) = canteen(&["apply", big.to_str().unwrap(), "--api", &api_arg, "--token", TOKEN], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("too large"), "{err}");
    // A closed stdout ends the CLI quietly.
    let mut child = Command::new(CANTEEN)
        .args(["status", "--api", &api_arg, "--json", "--token", TOKEN])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn stalled_api_clients_time_out_and_are_capped_while_the_balancer_serves() {
    if !docker_ready("stalled_api_clients_time_out_and_are_capped_while_the_balancer_serves") {
        return;
    }
    let mut env = Env::new("stall", 11, "");
    env.start_agent();
    env.apply(&demo_app("stall", 18190, 1, ""));
    env.wait("a healthy replica", Duration::from_secs(30), || env.healthy("stall") == 1);
    let balancer = local(18190);
    env.wait("the balancer to serve", Duration::from_secs(10), || {
        http(balancer, "GET", "/", "").is_ok_and(|(code, _)| code == 200)
    });
    // 400 clients (CANTEEN_STALLED_CLIENTS for the figures) send a head promising a body, then
    // nothing.
    use std::io::Write;
    let clients: usize = std::env::var("CANTEEN_STALLED_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    let mut stalled = Vec::new();
    for _ in 0..clients {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&env.api, Duration::from_secs(2)) else { continue };
        let _ = s.write_all(
            b"POST /scale HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        );
        stalled.push(s);
    }
    // The balancer serves all the while.
    let start = Instant::now();
    let mut served = 0;
    while start.elapsed() < Duration::from_secs(3) {
        if http(balancer, "GET", "/", "").is_ok_and(|(code, _)| code == 200) {
            served += 1;
        }
    }
    eprintln!("{} stalled API clients: the balancer served {served} requests in 3 s", stalled.len());
    assert!(served > 50, "the balancer served {served} requests in 3 s");
    // Past the cap, connections are closed at once; within the cap, each times out.
    let mut closed_at_once = 0;
    let mut timed_out = 0;
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut response = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut response);
        if response.is_empty() {
            closed_at_once += 1;
        } else if response.starts_with("HTTP/1.1 408") {
            timed_out += 1;
        }
    }
    assert!(closed_at_once >= clients - 256, "closed at once past the cap: {closed_at_once}");
    assert!(timed_out > 0 && timed_out <= 256, "timed out with 408: {timed_out}");
    assert_eq!(http(env.api, "GET", "/status", "").unwrap().0, 200, "the API serves again");
}

#[test]
fn a_command_answers_only_once_on_disk_and_a_lost_state_keeps_the_containers() {
    if !docker_ready("a_command_answers_only_once_on_disk_and_a_lost_state_keeps_the_containers") {
        return;
    }
    let mut env = Env::new("durable", 12, "");
    env.start_agent();
    // The state file cannot be written (a directory where its temporary file goes; root
    // ignores permissions): apply answers 503 and nothing changes.
    let data = env.dir.join("data");
    let blocker = data.join("state.json.tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    let path = env.file("apps.toml", &demo_app("web", 18290, 2, ""));
    let api = env.api.to_string();
    let (code, err) = canteen(&["apply", path.to_str().unwrap(), "--api", &api], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("503") && err.contains("cannot persist"), "{err}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(env.status()["apps"].as_array().unwrap().is_empty(), "nothing applied");
    assert!(env.containers().is_empty(), "nothing started");
    std::fs::remove_dir(&blocker).unwrap();
    env.apply(&demo_app("web", 18290, 2, ""));
    env.wait("2 healthy replicas", Duration::from_secs(30), || env.healthy("web") == 2);
    let before = env.containers();
    // The data directory loses its state: the restarted agent keeps its containers, says so,
    // and adopts them once the operator applies the app again.
    env.kill_agent();
    std::fs::remove_file(data.join("state.json")).unwrap();
    env.start_agent();
    env.wait("the agent to say it keeps them", Duration::from_secs(10), || env.log_tail().contains("they are kept"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.containers(), before, "kept, not removed");
    env.apply(&demo_app("web", 18290, 2, ""));
    env.wait("2 healthy replicas", Duration::from_secs(30), || env.healthy("web") == 2);
    assert_eq!(env.containers(), before, "the same containers, adopted");
}

/// A CA and a server certificate it signed for 127.0.0.1, made by openssl in `dir`: (ca.pem,
/// server.pem, server.key).
fn test_certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=canteen-test-ca"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=canteen-test"]].concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

#[test]
fn the_api_over_tls_answers_the_cli_that_trusts_its_ca_only() {
    if !docker_ready("the_api_over_tls_answers_the_cli_that_trusts_its_ca_only") {
        return;
    }
    let certs_dir = std::env::temp_dir().join(format!("canteen-it-tls-certs-{}", std::process::id()));
    std::fs::create_dir_all(&certs_dir).unwrap();
    let (ca, cert, key) = test_certificates(&certs_dir);
    let extra = format!(
        "api_token = \"{TOKEN}\"\napi_tls_cert = {:?}\napi_tls_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let mut env = Env::new("tls", 13, &extra);
    // A key that does not go with the certificate is bad input naming the key.
    let bad = env.file(
        "bad.toml",
        &std::fs::read_to_string(&env.config)
            .unwrap()
            .replace(&key.display().to_string(), &ca.display().to_string().replace("ca.pem", "ca.key")),
    );
    let (code, err) = canteen(&["agent", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("api_tls_key"), "{err}");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(env.dir.join("agent.log")).unwrap();
    env.child = Some(
        Command::new(CANTEEN)
            .args(["agent", "--config"])
            .arg(&env.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let api = env.api.to_string();
    let ca_arg = ca.to_str().unwrap();
    env.wait("the API to answer over TLS", Duration::from_secs(20), || {
        canteen(&["status", "--api", &api, "--token", TOKEN, "--tls-ca", ca_arg], &[]).0 == 0
    });
    assert_eq!(canteen(&["status", "--api", &api], &[("CANTEEN_TOKEN", TOKEN), ("CANTEEN_TLS_CA", ca_arg)]).0, 0);
    // Plain HTTP gets no answer, and a CA that did not sign the certificate is refused.
    assert_ne!(canteen(&["status", "--api", &api, "--token", TOKEN], &[]).0, 0);
    assert!(http(env.api, "GET", "/status", "").is_err(), "no plain HTTP");
    let (code, err) = canteen(&["status", "--api", &api, "--token", TOKEN, "--tls-ca", cert.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("TLS"), "{err}");
    let _ = std::fs::remove_dir_all(&certs_dir);
}

/// Requests on one keep-alive connection to `addr`, one after another until `stop`, as a
/// browser or a pooled client sends them; a broken connection is opened again, and a request
/// that got no complete 200 answer counts as failed.
struct KeepAliveLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl KeepAliveLoad {
    fn start(addr: SocketAddr, clients: usize) -> KeepAliveLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let mut conn: Option<std::io::BufReader<std::net::TcpStream>> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let stream = match &mut conn {
                            Some(c) => c,
                            None => match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                                Ok(s) => {
                                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                                    conn.insert(std::io::BufReader::new(s))
                                }
                                Err(e) => {
                                    failures.lock().unwrap().push(format!("connect: {e}"));
                                    std::thread::sleep(Duration::from_millis(20));
                                    continue;
                                }
                            },
                        };
                        match keep_alive_get(stream, addr) {
                            Ok(200) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failures.lock().unwrap().push(format!("{other:?}"));
                                conn = None;
                            }
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        KeepAliveLoad { stop, ok, failures, threads }
    }

    /// Stops the clients: (requests answered 200, failures described).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// One `GET /` on an open keep-alive connection: the status, once the whole body is read.
fn keep_alive_get(conn: &mut std::io::BufReader<std::net::TcpStream>, addr: SocketAddr) -> std::io::Result<u16> {
    use std::io::{BufRead, Read, Write};
    conn.get_mut().write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok());
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if conn.read_line(&mut header)? == 0 {
            return Err(std::io::Error::other("the connection closed in the headers"));
        }
        if header == "\r\n" {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    status.ok_or_else(|| std::io::Error::other(format!("no status in {line:?}")))
}

impl Env {
    /// The images of this agent's running containers of `app`, sorted.
    fn images(&self, app: &str) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "ps",
                "--filter",
                &format!("label=canteen.node={}", self.name),
                "--filter",
                &format!("label=canteen.app={app}"),
                "--format",
                "{{.Image}}",
            ])
            .output()
            .unwrap();
        let mut images: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        images.sort();
        images
    }

    /// `app`'s entry in the status.
    fn app(&self, app: &str) -> Value {
        self.status()["apps"].as_array().unwrap().iter().find(|a| a["name"] == app).cloned().expect("the app")
    }

    /// Runs `canteen ARGS --api <this agent>`: (exit code, stdout and stderr).
    fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(CANTEEN).args(args).args(["--api", &self.api.to_string()]).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }
}

/// A second tag of the demo image: a new version whose containers are the same program.
fn demo_tag(tag: &str) -> String {
    let image = format!("canteen-demo:{tag}");
    let out = Command::new("docker").args(["tag", "canteen-demo:latest", &image]).output().unwrap();
    assert!(out.status.success(), "docker tag: {}", String::from_utf8_lossy(&out.stderr));
    image
}

/// web with 3 replicas of `image`, counted after 1 s healthy in a rollout.
fn rolled_app(port: u16, image: &str, update: &str) -> String {
    demo_app("web", port, 3, "").replace("canteen-demo:latest", image)
        + &format!("[app.update]\nmin_healthy_ms = 1000\nhealthy_deadline_ms = 20000\n{update}")
}

#[test]
fn an_image_update_under_keep_alive_load_fails_no_request() {
    if !docker_ready("an_image_update_under_keep_alive_load_fails_no_request") {
        return;
    }
    let v2 = demo_tag("it-rollout-v2");
    let mut env = Env::new("rollout", 30, "");
    env.start_agent();
    env.apply(&rolled_app(20090, "canteen-demo:latest", ""));
    env.wait("version 1 steady", Duration::from_secs(30), || env.app("web")["rollout"] == "steady");
    let path = env.file("v2.toml", &rolled_app(20090, &v2, ""));
    let (code, plan) = env.cli(&["apply", "--dry-run", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("web: changes image; starts a rollout, version 1 -> 2"), "{plan}");
    assert_eq!(env.app("web")["version"], 1, "a dry run changes nothing");

    let load = KeepAliveLoad::start(local(20090), 2);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    env.apply(&rolled_app(20090, &v2, ""));
    env.wait("version 2 completed", Duration::from_secs(60), || {
        let app = env.app("web");
        app["version"] == 2 && app["rollout"] == "steady"
    });
    let took = started.elapsed();
    env.wait("the old containers gone", Duration::from_secs(10), || env.images("web") == vec![v2.clone(); 3]);
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failures) = load.finish();
    assert!(failures.is_empty(), "{} failed requests of {}: {failures:?}", failures.len(), ok + failures.len() as u64);
    assert!(ok > 100, "the clients kept going: {ok}");
    eprintln!("rolled 3 replicas in {took:?} under keep-alive load: {ok} requests, 0 failed");

    let (code, history) = env.cli(&["rollout", "history", "web"]);
    assert_eq!(code, 0, "{history}");
    assert!(history.contains("v1") && history.contains("v2") && history.contains(&v2), "{history}");
    assert_eq!(history.matches("completed").count(), 2, "{history}");
    let (code, status) = env.cli(&["rollout", "status", "web"]);
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("rollout steady"), "{status}");
    let (_, table) = env.cli(&["status"]);
    assert_eq!(table.matches(" v2 ").count(), 3, "every slot shows its version: {table}");
    let (_, metrics) = http(env.api, "GET", "/metrics", "").unwrap();
    assert!(metrics.contains("canteen_rollouts_total{app=\"web\",result=\"started\"} 1"), "{metrics}");
    assert!(metrics.contains("canteen_rollouts_total{app=\"web\",result=\"completed\"} 2"), "{metrics}");
}

#[test]
fn a_missing_image_is_rolled_back_with_no_request_failed() {
    if !docker_ready("a_missing_image_is_rolled_back_with_no_request_failed") {
        return;
    }
    let mut env = Env::new("missing", 31, "");
    env.start_agent();
    env.apply(&rolled_app(20190, "canteen-demo:latest", ""));
    env.wait("version 1 steady", Duration::from_secs(30), || env.app("web")["rollout"] == "steady");
    let before = env.containers();
    let load = KeepAliveLoad::start(local(20190), 2);
    let started = Instant::now();
    env.apply(&rolled_app(20190, "canteen-no-such-image:v2", ""));
    env.wait("version 2 failed and reverted", Duration::from_secs(60), || env.app("web")["rollout"] == "reverting");
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (ok, failures) = load.finish();
    assert!(failures.is_empty(), "{} failed requests: {failures:?}", failures.len());
    assert!(ok > 50, "the clients kept going: {ok}");
    assert_eq!(env.containers(), before, "the old replicas never stopped");
    assert_eq!(env.app("web")["running_version"], 1);
    let (_, history) = env.cli(&["rollout", "history", "web"]);
    assert!(history.contains("failed") && history.contains("reverted to version 1"), "{history}");
    let (_, metrics) = http(env.api, "GET", "/metrics", "").unwrap();
    assert!(metrics.contains("canteen_rollouts_total{app=\"web\",result=\"reverted\"} 1"), "{metrics}");
    eprintln!("a missing image failed its rollout in {took:?}");
}

#[test]
fn a_rolling_restart_replaces_every_container_with_no_request_failed() {
    if !docker_ready("a_rolling_restart_replaces_every_container_with_no_request_failed") {
        return;
    }
    let mut env = Env::new("restart", 32, "");
    env.start_agent();
    // No [app.health]: the default check, a TCP connect.
    let tcp_checked = |app: String| {
        let start = app.find("[app.health]").expect("demo_app has a health table");
        let end = app[start..].find("[app.update]").map_or(app.len(), |e| start + e);
        format!("{}{}", &app[..start], &app[end..])
    };
    env.apply(&tcp_checked(rolled_app(20290, "canteen-demo:latest", "")));
    env.wait("version 1 steady", Duration::from_secs(30), || env.app("web")["rollout"] == "steady");
    let before = env.containers();
    let load = KeepAliveLoad::start(local(20290), 2);
    let (code, out) = env.cli(&["restart", "web"]);
    assert_eq!(code, 0, "{out}");
    env.wait("version 2 completed", Duration::from_secs(60), || {
        let app = env.app("web");
        app["version"] == 2 && app["rollout"] == "steady"
    });
    env.wait("3 containers", Duration::from_secs(10), || env.containers().len() == 3);
    let (ok, failures) = load.finish();
    assert!(failures.is_empty(), "{} failed requests: {failures:?}", failures.len());
    assert!(ok > 50);
    let after = env.containers();
    assert!(after.iter().all(|id| !before.contains(id)), "every container replaced: {before:?} -> {after:?}");
    let (code, out) = env.cli(&["rollout", "undo", "web", "--to", "7"]);
    assert_eq!(code, 2, "an unknown version is bad input: {out}");
    assert!(out.contains("version 7 is not kept"), "{out}");
    // A TCP check through Docker's proxy passes only an app that listens: one told to listen
    // elsewhere than its container port never serves.
    let deaf = "[[app]]\nname = \"deaf\"\nimage = \"canteen-demo:latest\"\nport = 20291\ncontainer_port = 9999\n\
                cpu_millis = 50\nmem_mb = 32\nenv = { PORT = \"8080\" }\n";
    env.apply(&format!("{}\n{deaf}", tcp_checked(rolled_app(20290, "canteen-demo:latest", ""))));
    env.wait("deaf's container running", Duration::from_secs(20), || !env.slots("deaf").is_empty());
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(env.healthy("deaf"), 0, "nothing listens on deaf's port: {:?}", env.slots("deaf"));
}

#[test]
fn a_canary_runs_beside_the_old_replicas_until_promoted() {
    if !docker_ready("a_canary_runs_beside_the_old_replicas_until_promoted") {
        return;
    }
    let v2 = demo_tag("it-canary-v2");
    let mut env = Env::new("canary", 33, "");
    env.start_agent();
    env.apply(&rolled_app(20390, "canteen-demo:latest", "canary = 1\n"));
    env.wait("version 1 steady", Duration::from_secs(30), || env.app("web")["rollout"] == "steady");
    env.apply(&rolled_app(20390, &v2, "canary = 1\n"));
    env.wait("one canary beside three old replicas", Duration::from_secs(30), || {
        let mut want = vec!["canteen-demo:latest".to_owned(); 3];
        want.push(v2.clone());
        want.sort();
        env.images("web") == want && env.slots("web").iter().filter(|s| s.2 == "healthy").count() == 4
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.images("web").len(), 4, "the rollout waits for the promote");
    let (_, status) = env.cli(&["rollout", "status", "web"]);
    assert!(status.contains("rollout canary") && status.contains("canteen promote web"), "{status}");
    let (code, out) = env.cli(&["promote", "web"]);
    assert_eq!(code, 0, "{out}");
    env.wait("every replica on the new version", Duration::from_secs(60), || env.images("web") == vec![v2.clone(); 3]);
    env.wait("version 2 completed", Duration::from_secs(10), || env.app("web")["rollout"] == "steady");
    let (code, out) = env.cli(&["promote", "web"]);
    assert_eq!(code, 2, "a second promote is bad input: {out}");
}
