//! Several real `canteen` agents, as separate processes, forming one cluster over real UDP
//! sockets on the real Docker engine: nothing is mocked, and no traffic leaves this machine.
//!
//! Every agent of a test has its own node name, API address, gossip address (127.0.0.1:79xx),
//! host port range (disjoint, from 8000 up), data directory, and its own loopback address
//! (127.0.0.2, 127.0.0.3, ...) for its balancers and its containers' published ports, so every
//! agent's balancer listens on the same app port, as on separate machines. Agents after the
//! first join through the first one's gossip address (`--join`). A guard kills every agent and
//! removes every container of the test's nodes at the end, even when the test fails.
//!
//! Without a reachable Docker engine each test prints a loud SKIP and passes, unless `CI=true`:
//! then it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const CANTEEN: &str = env!("CARGO_BIN_EXE_canteen");

mod common;
#[path = "common/forge.rs"]
mod forge;
#[path = "common/http.rs"]
mod http;
use common::docker_ready;
use http::http;

/// The app every test runs; its balancer listens on `Cluster::app_port` on every agent.
const APP: &str = "web";

/// The cluster key of every test's agents (base64 of 32 bytes of 0x11), as in production: a
/// cluster's gossip is keyed.
const KEY: &str = "ERERERERERERERERERERERERERERERERERERERERERE=";
/// A second key (32 bytes of 0x22), for rotations.
const KEY2: &str = "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=";
/// The test clusters' name.
const CLUSTER: &str = "canteen-it";

/// One agent of a test's cluster.
struct Agent {
    name: String,
    dir: PathBuf,
    api: SocketAddr,
    gossip: SocketAddr,
    /// Its balancers listen here, and its containers' ports are published here.
    ip: String,
    config: PathBuf,
    /// Its config file's text, but for the cluster keys.
    config_text: String,
    child: Option<Child>,
    /// The gossip address it joins through (`--join`), none for the first.
    join: Option<SocketAddr>,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Writes its config with these cluster keys (the first seals).
    fn set_keys(&mut self, keys: &[&str]) {
        let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        let text = format!("{}cluster_name = \"{CLUSTER}\"\ncluster_keys = [{}]\n", self.config_text, keys.join(", "));
        std::fs::write(&self.config, text).unwrap();
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("agent.log")).unwrap();
        let mut cmd = Command::new(CANTEEN);
        cmd.args(["agent", "--config"]).arg(&self.config);
        if let Some(seed) = self.join {
            cmd.args(["--join", &seed.to_string()]);
        }
        let child = cmd.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: the agent ends at once, its containers keep running.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("a running agent");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn status(&self) -> Option<Value> {
        let (code, body) = http(self.api, "GET", "/status", "").ok()?;
        (code == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    fn metric(&self, line_start: &str) -> Option<f64> {
        let (_, text) = http(self.api, "GET", "/metrics", "").ok()?;
        text.lines().find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
    }

    /// The nodes this agent believes alive, itself included.
    fn alive(&self) -> BTreeSet<String> {
        self.nodes().into_iter().filter(|(_, state)| state == "alive").map(|(n, _)| n).collect()
    }

    /// Every node this agent knows of, with `alive` or `down`.
    fn nodes(&self) -> Vec<(String, String)> {
        let Some(status) = self.status() else { return Vec::new() };
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["name"].as_str().unwrap().to_owned(), n["state"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// The slots of [`APP`] this agent's status lists: (slot, node, health).
    fn slots(&self) -> Vec<(u64, String, String)> {
        let Some(status) = self.status() else { return Vec::new() };
        status["slots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["app"] == APP)
            .map(|s| {
                (
                    s["slot"].as_u64().unwrap(),
                    s["node"].as_str().unwrap().to_owned(),
                    s["health"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The proxy of this agent, at its own address on the app's port.
    fn proxy(&self, port: u16) -> SocketAddr {
        format!("{}:{port}", self.ip).parse().unwrap()
    }
}

/// A test's agents and everything they made; dropping it removes them.
struct Cluster {
    agents: Vec<Agent>,
    app_port: u16,
    started: Instant,
}

impl Cluster {
    /// `size` agents for test number `t` (1 to 9): API 127.0.0.1:18t0i, gossip 127.0.0.1:79ti,
    /// host ports 8000 + 100 (3 t + i) and the 49 after, agent i's own address 127.0.0.(2 + i),
    /// the app's published port 18t90. None started yet.
    fn new(test: &str, t: u16, size: u16) -> Cluster {
        assert!((1..=9).contains(&t) && size <= 3);
        let agents = (0..size)
            .map(|i| {
                let name = format!("cl{t}-{}", (b'a' + i as u8) as char);
                let dir = std::env::temp_dir().join(format!("canteen-it-{test}-{name}-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
                let api = SocketAddr::from(([127, 0, 0, 1], 18000 + 100 * t + i));
                let gossip = SocketAddr::from(([127, 0, 0, 1], 7900 + 10 * t + i));
                let ip = format!("127.0.0.{}", 2 + i);
                let host_port_min = 8000 + 100 * (3 * t + i);
                let config = dir.join("canteen.toml");
                let text = format!(
                    "node_name = \"{name}\"\napi_addr = \"{api}\"\ngossip_addr = \"{gossip}\"\n\
                     proxy_ip = \"{ip}\"\ncontainer_ip = \"{ip}\"\ndata_dir = \"{}\"\n\
                     host_port_min = {host_port_min}\nhost_port_max = {}\ncpu_millis = 4000\nmem_mb = 4096\n",
                    dir.join("data").display(),
                    host_port_min + 49,
                );
                let mut agent =
                    Agent { name, dir, api, gossip, ip, config, config_text: text, child: None, join: None };
                agent.set_keys(&[KEY]);
                agent
            })
            .collect();
        let cluster = Cluster { agents, app_port: 18000 + 100 * t + 90, started: Instant::now() };
        cluster.remove_containers();
        cluster
    }

    /// Starts every agent, the first alone, the others joining through it, and waits until
    /// each believes every other alive.
    fn start_all(&mut self) {
        let seed = self.agents[0].gossip;
        for (i, agent) in self.agents.iter_mut().enumerate() {
            agent.join = (i > 0).then_some(seed);
            agent.start();
        }
        self.wait_whole();
    }

    /// Waits until every agent believes every other alive.
    fn wait_whole(&self) {
        let all: BTreeSet<String> = self.agents.iter().map(|a| a.name.clone()).collect();
        self.wait("every agent to see every other alive", Duration::from_secs(20), || {
            self.agents.iter().all(|a| a.alive() == all)
        });
        for a in &self.agents {
            assert_eq!(
                a.metric("canteen_gossip_members "),
                Some(all.len() as f64),
                "{} counts the members in its metrics",
                a.name
            );
        }
    }

    fn apply(&self, through: usize, replicas: u32) {
        let text = format!(
            "[[app]]\nname = \"{APP}\"\nimage = \"canteen-demo:latest\"\nport = {}\ncontainer_port = 8080\n\
             replicas = {replicas}\ncpu_millis = 50\nmem_mb = 32\n\
             [app.health]\npath = \"/health\"\ninterval_ms = 200\ntimeout_ms = 200\nfailures = 2\nstart_grace_ms = 1000\n",
            self.app_port
        );
        let path = self.agents[through].dir.join("apps.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(CANTEEN)
            .arg("apply")
            .arg(&path)
            .args(["--api", &self.agents[through].api.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The containers of the test's nodes, from Docker: (node, slot label) per container.
    fn containers(&self) -> Vec<(String, String)> {
        let mut all = Vec::new();
        for a in &self.agents {
            let out = Command::new("docker")
                .args([
                    "ps",
                    "-a",
                    "--filter",
                    &format!("label=canteen.node={}", a.name),
                    "--format",
                    "{{.Label \"canteen.app\"}}-{{.Label \"canteen.slot\"}}",
                ])
                .output()
                .unwrap();
            all.extend(String::from_utf8_lossy(&out.stdout).lines().map(|slot| (a.name.clone(), slot.to_owned())));
        }
        all.sort();
        all
    }

    fn container_ids(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        for a in &self.agents {
            ids.extend(ids_of(&a.name));
        }
        ids
    }

    fn remove_containers(&self) {
        for a in &self.agents {
            remove_containers_of(&a.name);
        }
    }

    /// Whether `through` lists every slot of `replicas` exactly once, healthy, on the nodes
    /// `on`, and Docker runs exactly those containers: one per slot.
    fn settled(&self, through: usize, replicas: u64, on: &BTreeSet<String>) -> bool {
        let slots = self.agents[through].slots();
        let indexes: BTreeSet<u64> = slots.iter().map(|s| s.0).collect();
        let containers = self.containers();
        let distinct: BTreeSet<&String> = containers.iter().map(|c| &c.1).collect();
        slots.len() as u64 == replicas
            && indexes == (0..replicas).collect()
            && slots.iter().all(|s| s.2 == "healthy" && on.contains(&s.1))
            && containers.len() as u64 == replicas
            && distinct.len() as u64 == replicas
    }

    fn wait(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !done() {
            if start.elapsed() > timeout {
                panic!("timed out after {timeout:?} waiting for {what}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for a in &self.agents {
            let log = a.log();
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!(
                "--- agent {} (last lines):\n{}\n",
                a.name,
                lines[lines.len().saturating_sub(30)..].join("\n")
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            if let Some(mut child) = a.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.remove_containers();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        } else {
            for a in &self.agents {
                let _ = std::fs::remove_dir_all(&a.dir);
            }
        }
        eprintln!("cluster test took {:?}", self.started.elapsed());
    }
}

fn ids_of(node: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter", &format!("label=canteen.node={node}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

fn remove_containers_of(node: &str) {
    let ids = ids_of(node);
    if !ids.is_empty() {
        let _ = Command::new("docker").args(["rm", "-f"]).args(&ids).output();
    }
}

/// `n` requests through `proxy`: how many each replica answered.
fn round_robin(proxy: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let (code, body) = http(proxy, "GET", "/", "").unwrap();
        assert_eq!(code, 200, "through {proxy}: {body}");
        *counts.entry(body.trim().to_owned()).or_default() += 1;
    }
    counts
}

/// A client sending requests through `proxy` back to back until stopped: what succeeded, and
/// when each failure happened (since the client started) with what it was.
struct Client {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<(Duration, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(proxy: SocketAddr) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    match http(proxy, "GET", "/", "") {
                        Ok((200, _)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.lock().unwrap().push((start.elapsed(), format!("{other:?}"))),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Client { stop, ok, failures, thread: Some(thread) }
    }

    /// Stops it: (requests that succeeded, the failures).
    fn stop(mut self) -> (u64, Vec<(Duration, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (self.ok.load(Ordering::Relaxed), self.failures.lock().unwrap().clone())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn names(agents: &[&Agent]) -> BTreeSet<String> {
    agents.iter().map(|a| a.name.clone()).collect()
}

#[test]
fn three_agents_joined_through_one_seed_spread_six_replicas_and_every_proxy_reaches_all_six() {
    if !docker_ready("three_agents_joined_through_one_seed_spread_six_replicas_and_every_proxy_reaches_all_six") {
        return;
    }
    let mut cluster = Cluster::new("spread", 1, 3);
    cluster.start_all();
    cluster.apply(0, 6);
    let all = names(&cluster.agents.iter().collect::<Vec<_>>());
    let took =
        cluster.wait("6 healthy replicas, one container each", Duration::from_secs(30), || cluster.settled(0, 6, &all));
    eprintln!("apply to 6 healthy replicas on 3 agents: {took:?}");
    // Spread over three equal nodes: two each.
    let mut per_node = BTreeMap::<String, usize>::new();
    for (node, _) in cluster.containers() {
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{per_node:?}");
    for (i, a) in cluster.agents.iter().enumerate() {
        // Every agent sees the same slots in the same places: within the status batch
        // (`NodeConfig::status_batch_ms`, 500 ms) of the agent the test watched, which sees
        // its own replicas turn healthy at once and its peers' a little later.
        cluster.wait(&format!("{} to see 6 healthy replicas", a.name), Duration::from_secs(5), || {
            cluster.settled(i, 6, &all)
        });
        cluster.wait("the balancer to list all 6 replicas", Duration::from_secs(10), || {
            a.metric("canteen_replicas{app=\"web\"} ") == Some(6.0)
        });
        let counts = round_robin(a.proxy(cluster.app_port), 60);
        assert_eq!(counts.len(), 6, "through {}: {counts:?}", a.name);
        for (replica, n) in &counts {
            assert!((9..=11).contains(n), "through {}: {replica} answered {n} of 60: {counts:?}", a.name);
        }
    }
}

#[test]
fn a_crashed_agent_is_declared_down_and_its_slots_run_again_on_the_survivors() {
    if !docker_ready("a_crashed_agent_is_declared_down_and_its_slots_run_again_on_the_survivors") {
        return;
    }
    let mut cluster = Cluster::new("crash", 2, 3);
    cluster.start_all();
    cluster.apply(0, 6);
    let all = names(&cluster.agents.iter().collect::<Vec<_>>());
    cluster.wait("6 healthy replicas", Duration::from_secs(30), || cluster.settled(0, 6, &all));
    let survivors = names(&[&cluster.agents[0], &cluster.agents[1]]);
    let crashed = cluster.agents[2].name.clone();
    let moved: BTreeSet<String> = cluster.containers().into_iter().filter(|c| c.0 == crashed).map(|c| c.1).collect();
    assert_eq!(moved.len(), 2, "the node to crash runs two slots");
    let client = Client::start(cluster.agents[0].proxy(cluster.app_port));
    std::thread::sleep(Duration::from_millis(500));

    // The crash: the agent and its containers gone at once.
    let crash = Instant::now();
    cluster.agents[2].kill();
    remove_containers_of(&crashed);
    let detected = cluster.wait("both survivors to declare the crashed node down", Duration::from_secs(15), || {
        cluster.agents[..2].iter().all(|a| a.nodes().iter().any(|(n, s)| *n == crashed && s == "down"))
    });
    let recovered = cluster.wait("its slots healthy on the survivors", Duration::from_secs(15), || {
        cluster.settled(0, 6, &survivors) && cluster.settled(1, 6, &survivors)
    });
    let serving = crash.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failures) = client.stop();
    eprintln!(
        "crash: declared down after {detected:?}, slots healthy elsewhere {serving:?} after the crash \
         ({recovered:?} after detection); client: {ok} ok, {} failed: {failures:?}",
        failures.len()
    );
    // No slot lost, none twice: exactly the six, each in one container, on the survivors.
    let after = cluster.containers();
    assert_eq!(after.len(), 6, "{after:?}");
    assert!(after.iter().all(|c| survivors.contains(&c.0)), "{after:?}");
    assert!(serving < Duration::from_secs(15), "took {serving:?}");
    // The dead node's replicas left the survivors' balancers: six backends, not eight.
    for a in &cluster.agents[..2] {
        cluster.wait("the balancer to list the 6 live replicas", Duration::from_secs(5), || {
            a.metric("canteen_replicas{app=\"web\"} ") == Some(6.0)
        });
        let counts = round_robin(a.proxy(cluster.app_port), 60);
        assert_eq!(counts.len(), 6, "through {}: {counts:?}", a.name);
    }
    assert!(ok > 100, "the client kept going");
    // A refused connection ejects the dead node's replica and the request is retried on another.
    assert!(failures.is_empty(), "requests failed through a survivor: {failures:?}");
}

#[test]
fn an_agent_restarted_after_sigkill_rejoins_adopts_its_containers_and_no_duplicate_appears() {
    if !docker_ready("an_agent_restarted_after_sigkill_rejoins_adopts_its_containers_and_no_duplicate_appears") {
        return;
    }
    let mut cluster = Cluster::new("rejoin", 3, 3);
    cluster.start_all();
    cluster.apply(0, 6);
    let all = names(&cluster.agents.iter().collect::<Vec<_>>());
    cluster.wait("6 healthy replicas", Duration::from_secs(30), || cluster.settled(0, 6, &all));
    let before = cluster.container_ids();
    let generation = cluster.agents[1].status().unwrap()["generation"].as_u64().unwrap();
    let client = Client::start(cluster.agents[2].proxy(cluster.app_port));

    cluster.agents[1].kill();
    cluster.agents[1].start();
    let took = cluster.wait("the restarted agent back with its slots healthy", Duration::from_secs(20), || {
        cluster.agents[1].status().is_some_and(|s| s["generation"].as_u64().unwrap() > generation)
            && cluster.agents.iter().all(|a| a.alive() == all)
            && (0..3).all(|i| cluster.settled(i, 6, &all))
    });
    eprintln!("restart: back with its slots healthy after {took:?}");
    // Long enough for a wrong placement to show: SWIM's detection time and a pass or two.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(4) {
        assert_eq!(cluster.container_ids(), before, "the same containers: none moved, no duplicate");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!((0..3).all(|i| cluster.settled(i, 6, &all)));
    let (ok, failures) = client.stop();
    eprintln!("restart: client {ok} ok, {} failed: {failures:?}", failures.len());
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    assert!(cluster.agents[1].log().contains("adopting container"), "it adopted its containers");
    let restarted = cluster.agents[1].status().unwrap();
    let mine = restarted["slots"].as_array().unwrap().iter().filter(|s| s["node"] == restarted["node"]).count();
    assert_eq!(restarted["adopted"].as_u64(), Some(mine as u64), "its status counts what it adopted: {restarted}");
    // Converged: every registry holds the same, so every status shows the same root hash.
    cluster.wait("every registry identical", Duration::from_secs(10), || {
        let hashes: BTreeSet<String> = (0..3)
            .filter_map(|i| cluster.agents[i].status().map(|s| s["registry_hash"].as_str().unwrap_or("").to_owned()))
            .collect();
        hashes.len() == 1 && hashes.iter().all(|h| h.len() == 16)
    });
}

#[test]
fn an_app_applied_through_one_agent_reaches_the_others() {
    if !docker_ready("an_app_applied_through_one_agent_reaches_the_others") {
        return;
    }
    let mut cluster = Cluster::new("apply", 4, 3);
    cluster.start_all();
    cluster.apply(1, 3);
    let all = names(&cluster.agents.iter().collect::<Vec<_>>());
    cluster.wait("3 healthy replicas, seen through every agent", Duration::from_secs(30), || {
        (0..3).all(|i| cluster.settled(i, 3, &all))
    });
    let out = Command::new(CANTEEN).args(["status", "--api", &cluster.agents[2].api.to_string()]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    for a in &cluster.agents {
        assert!(table.contains(&a.name), "the table names node {}: {table}", a.name);
    }
    assert_eq!(table.lines().filter(|l| l.starts_with("web ") && l.contains("healthy")).count(), 3, "{table}");
    // A scale through another agent, and a removal through a third, reach every agent too.
    let scale =
        Command::new(CANTEEN).args(["scale", APP, "4", "--api", &cluster.agents[2].api.to_string()]).output().unwrap();
    assert!(scale.status.success(), "{}", String::from_utf8_lossy(&scale.stderr));
    cluster.wait("4 healthy replicas", Duration::from_secs(20), || (0..3).all(|i| cluster.settled(i, 4, &all)));
    let rm = Command::new(CANTEEN).args(["rm", APP, "--api", &cluster.agents[0].api.to_string()]).output().unwrap();
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    cluster.wait("the app gone everywhere", Duration::from_secs(20), || {
        cluster.containers().is_empty()
            && cluster.agents.iter().all(|a| a.status().is_some_and(|s| s["apps"].as_array().unwrap().is_empty()))
    });
}

#[test]
fn an_app_removed_while_an_agent_is_down_stays_removed_when_it_rejoins() {
    if !docker_ready("an_app_removed_while_an_agent_is_down_stays_removed_when_it_rejoins") {
        return;
    }
    let mut cluster = Cluster::new("removed", 5, 2);
    cluster.start_all();
    cluster.apply(0, 2);
    let all = names(&cluster.agents.iter().collect::<Vec<_>>());
    cluster.wait("2 healthy replicas, one on each", Duration::from_secs(30), || {
        (0..2).all(|i| cluster.settled(i, 2, &all))
    });
    // The agent the app was applied through goes down (its container keeps running, orphaned),
    // and the app is removed through the other.
    cluster.agents[0].kill();
    let other = cluster.agents[1].name.clone();
    cluster.wait("the survivor to declare it down", Duration::from_secs(15), || {
        cluster.agents[1].alive() == BTreeSet::from([other.clone()])
    });
    let rm = Command::new(CANTEEN).args(["rm", APP, "--api", &cluster.agents[1].api.to_string()]).output().unwrap();
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    cluster.wait("the survivor's replica removed", Duration::from_secs(10), || ids_of(&other).is_empty());
    // Back: it restores the app from its disk as the old write it was, learns of the newer
    // removal, and removes its orphan instead of bringing the app back.
    cluster.agents[0].start();
    cluster.wait("no container and no app anywhere", Duration::from_secs(20), || {
        cluster.containers().is_empty()
            && cluster.agents.iter().all(|a| a.status().is_some_and(|s| s["apps"].as_array().unwrap().is_empty()))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(cluster.containers().is_empty(), "{:?}", cluster.containers());
    assert!(cluster.agents[0].log().contains("desired state restored"), "it read its disk");
}

fn key_bytes(byte: u8) -> [u8; 32] {
    [byte; 32]
}

#[test]
fn unkeyed_foreign_and_replayed_datagrams_change_nothing_and_are_counted() {
    if !docker_ready("unkeyed_foreign_and_replayed_datagrams_change_nothing_and_are_counted") {
        return;
    }
    let mut cluster = Cluster::new("forged", 6, 2);
    cluster.start_all();
    let target = cluster.agents[0].gossip;
    // A take-over attempt: an app with an attacker's image, written by a node that is not a
    // member, a minute ahead so it beats any real write.
    let wall_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let evil = forge::app_write("mallory", forge::spec("evil", "attacker/miner:latest", 18699), wall_ms + 60_000);
    for _ in 0..100 {
        forge::send(target, &evil); // unsealed
        forge::send(target, &forge::sealed(CLUSTER, &[key_bytes(0x33)], "mallory", 1, &evil)); // another key
        forge::send(target, &forge::sealed("other-cluster", &[key_bytes(0x11)], "mallory", 1, &evil)); // another cluster
    }
    // A datagram sealed under the cluster's key (by a key holder) is taken once; the same
    // bytes again, from another port, are a replay.
    let good = forge::sealed(CLUSTER, &[key_bytes(0x11)], "mallory", 7, &forge::root("mallory"));
    forge::send(target, &good);
    forge::send(target, &good);
    let a = &cluster.agents[0];
    cluster.wait("the refusals to be counted", Duration::from_secs(5), || {
        a.metric("canteen_gossip_refused_packets_total{reason=\"replayed\"} ") == Some(1.0)
    });
    assert_eq!(a.metric("canteen_gossip_refused_packets_total{reason=\"malformed\"} "), Some(100.0));
    assert_eq!(a.metric("canteen_gossip_refused_packets_total{reason=\"unauthentic\"} "), Some(200.0));
    std::thread::sleep(Duration::from_secs(1));
    for agent in &cluster.agents {
        let status = agent.status().expect("the agent serves");
        assert!(status["apps"].as_array().unwrap().is_empty(), "{}: {status}", agent.name);
    }
    assert!(cluster.containers().is_empty(), "no container started: {:?}", cluster.containers());
    let refusals = a.log().lines().filter(|l| l.contains("gossip datagram refused")).count();
    assert_eq!(refusals, 1, "one line a minute for one source address:\n{}", a.log());
    cluster.wait_whole();
}

#[test]
fn agents_rotating_their_cluster_key_stay_one_cluster() {
    if !docker_ready("agents_rotating_their_cluster_key_stay_one_cluster") {
        return;
    }
    let mut cluster = Cluster::new("rotate", 7, 3);
    // Mid-rotation: a still seals with the old key, b and c already with the new one; every
    // agent opens both.
    cluster.agents[0].set_keys(&[KEY, KEY2]);
    cluster.agents[1].set_keys(&[KEY2, KEY]);
    cluster.agents[2].set_keys(&[KEY2, KEY]);
    cluster.start_all();
    cluster.apply(1, 3);
    let all = names(&cluster.agents.iter().collect::<Vec<_>>());
    cluster.wait("3 healthy replicas", Duration::from_secs(30), || cluster.settled(0, 3, &all));
    // The rotation ends: a restarts with the new key alone, and the old key is gone from b.
    cluster.agents[0].kill();
    cluster.agents[0].set_keys(&[KEY2]);
    cluster.agents[0].start();
    cluster.agents[1].kill();
    cluster.agents[1].set_keys(&[KEY2]);
    cluster.agents[1].start();
    cluster.wait_whole();
    cluster.wait("3 healthy replicas after the rotation", Duration::from_secs(30), || cluster.settled(2, 3, &all));
    // An agent with only the old key is outside the cluster: it sees no one, and no one it.
    cluster.agents[2].kill();
    cluster.agents[2].set_keys(&[KEY]);
    cluster.agents[2].start();
    std::thread::sleep(Duration::from_secs(3));
    let c = &cluster.agents[2];
    assert_eq!(c.alive(), BTreeSet::from([c.name.clone()]), "the old key joins nothing");
    assert!(c.metric("canteen_gossip_refused_packets_total{reason=\"unauthentic\"} ").unwrap_or(0.0) > 0.0);
}

#[test]
fn a_second_agent_under_a_taken_name_stops_with_exit_2_and_the_first_keeps_running() {
    if !docker_ready("a_second_agent_under_a_taken_name_stops_with_exit_2_and_the_first_keeps_running") {
        return;
    }
    let mut cluster = Cluster::new("twin", 8, 2);
    // b takes a's name: the same node_name, its own addresses and data directory.
    let (a_name, b_name) = (cluster.agents[0].name.clone(), cluster.agents[1].name.clone());
    let text = cluster.agents[1]
        .config_text
        .replace(&format!("node_name = \"{b_name}\""), &format!("node_name = \"{a_name}\""));
    cluster.agents[1].config_text = text;
    cluster.agents[1].set_keys(&[KEY]);
    cluster.agents[0].start();
    cluster.wait("a to serve", Duration::from_secs(10), || cluster.agents[0].status().is_some());
    cluster.apply(0, 2);
    let a_only = BTreeSet::from([a_name.clone()]);
    cluster.wait("2 healthy replicas on a", Duration::from_secs(30), || cluster.settled(0, 2, &a_only));
    cluster.agents[1].join = Some(cluster.agents[0].gossip);
    cluster.agents[1].start();
    let mut child = cluster.agents[1].child.take().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(40), "the second agent stopped\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status.code(), Some(2), "{}", cluster.agents[1].log());
    let log = cluster.agents[1].log();
    assert!(
        log.contains("is taken by a live agent at") && log.contains(&cluster.agents[0].gossip.to_string()),
        "{log}"
    );
    // a never stopped serving, and its replicas are untouched.
    assert!(cluster.settled(0, 2, &a_only), "{:?}", cluster.containers());
}

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

#[test]
fn keyed_but_malicious_inputs_leave_every_agent_serving_within_its_bounds() {
    if !docker_ready("keyed_but_malicious_inputs_leave_every_agent_serving_within_its_bounds") {
        return;
    }
    use canteen_core::node::{ContainerStatus, NodeStatus, Value};
    use canteen_core::registry::Key;
    let mut cluster = Cluster::new("malice", 9, 3);
    cluster.start_all();
    cluster.apply(0, 2);
    let all = names(&cluster.agents.iter().collect::<Vec<_>>());
    cluster.wait("2 healthy replicas", Duration::from_secs(30), || cluster.settled(0, 2, &all));
    let (a, b) = (&cluster.agents[0], &cluster.agents[1]);
    let target = a.gossip;
    let key = key_bytes(0x11);
    let mut life = 1_000u64;
    let mut send = |packet: &[u8]| {
        life += 1;
        forge::send(target, &forge::sealed(CLUSTER, &[key], "mallory", life, packet));
        std::thread::sleep(Duration::from_millis(1));
    };
    let rss_before: Vec<u64> = cluster.agents.iter().map(|a| rss_mib(a.child.as_ref().unwrap().id())).collect();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let mallory = forge::member("mallory", "127.0.0.1:7999", 1, foca::State::Alive);
    // b declared down under a generation far ahead; a's own name at another address; a name of
    // 3,000 bytes; 2,000 members that do not exist.
    send(&forge::sync(
        mallory.clone(),
        vec![forge::member(&b.name, &b.gossip.to_string(), 1 << 60, foca::State::Down)],
    ));
    send(&forge::sync(mallory.clone(), vec![forge::member(&a.name, "127.0.0.1:7998", 5, foca::State::Alive)]));
    send(&forge::sync(
        mallory.clone(),
        vec![forge::member(&"x".repeat(3000), "127.0.0.1:7997", 1, foca::State::Alive)],
    ));
    for chunk in 0..4 {
        let fakes = (0..500)
            .map(|i| {
                let n = chunk * 500 + i;
                forge::member(
                    &format!("fake-{n}"),
                    &format!("10.77.{}.{}:7946", n / 250, n % 250),
                    1,
                    foca::State::Alive,
                )
            })
            .collect();
        send(&forge::sync(mallory.clone(), fakes));
    }
    // 200,000 junk entries: invalid specs and load keys (refused), and 20,000 versions of the
    // status of a node that is no member (each stored over the last, within the bounds).
    let bad = {
        let mut spec = forge::spec("junk", "img", 1);
        spec.resources.cpu_millis = 0;
        spec
    };
    for batch in 0..500u64 {
        let entries: Vec<(Key, u64, Option<Value>)> = (0..400u64)
            .map(|i| {
                let n = batch * 400 + i;
                let name = format!("junk-{n}");
                match n % 10 {
                    0 => {
                        let status = NodeStatus {
                            spec: canteen_core::model::NodeSpec::new(
                                "mallory",
                                canteen_core::model::Resources::new(1, 1),
                            ),
                            addr: "10.66.6.6".into(),
                            containers: Vec::<ContainerStatus>::new(),
                            generation: 1,
                        };
                        (Key::Status("mallory".into()), now_ms + n, Some(Value::Status(status)))
                    }
                    1..=5 => {
                        let mut spec = bad.clone();
                        spec.name = name.as_str().into();
                        (Key::App(name.as_str().into()), now_ms, Some(Value::App(Box::new(spec))))
                    }
                    _ => (Key::Load(name.as_str().into()), now_ms, Some(Value::Scale(1))),
                }
            })
            .collect();
        send(&forge::updates("mallory", &entries));
    }
    // A forged load for the app, far past any balancer.
    send(&forge::load(&b.name, APP, u64::MAX));
    std::thread::sleep(Duration::from_secs(3));
    for (i, agent) in cluster.agents.iter().enumerate() {
        let started = Instant::now();
        let status = agent.status().unwrap_or_else(|| panic!("{} serves its API\n{}", agent.name, cluster.logs()));
        let status_ms = started.elapsed().as_millis();
        let apps: Vec<&str> = status["apps"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
        assert_eq!(apps, [APP], "{}: no junk app taken", agent.name);
        let rss = rss_mib(agent.child.as_ref().unwrap().id());
        eprintln!("{}: RSS {} -> {rss} MiB, /status {status_ms} ms", agent.name, rss_before[i]);
        assert!(rss < rss_before[i] + 100, "{}: RSS grew from {} to {rss} MiB", agent.name, rss_before[i]);
        let counts = round_robin(agent.proxy(cluster.app_port), 20);
        assert_eq!(counts.values().sum::<usize>(), 20, "{} balances: {counts:?}", agent.name);
    }
    assert!(a.metric("canteen_gossip_rejected_inputs_total{input=\"entry\"} ").unwrap_or(0.0) >= 100_000.0);
    assert!(a.metric("canteen_gossip_rejected_inputs_total{input=\"undecodable\"} ").unwrap_or(0.0) >= 2.0);
    // b was never taken down, and the cluster stays whole with its replicas.
    for agent in &cluster.agents {
        let alive = agent.alive();
        assert!(all.iter().all(|n| alive.contains(n)), "{} sees every real agent alive: {alive:?}", agent.name);
    }
    cluster.wait("2 healthy replicas still", Duration::from_secs(10), || cluster.settled(0, 2, &all));
}
