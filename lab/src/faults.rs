//! The fault timeline's faults, for real, one function each: processes SIGKILLed and started,
//! links down, nftables sets, netem, `docker kill` and `docker pause`, commands through an
//! agent's API. Each also tells the world what became true, as the simulator's faults do, so
//! the checkers judge both the same way.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bollard::query_parameters::{KillContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use canteen_core::model::AppName;
use canteen_docker::api::{Api, call};
use canteen_sim::checker::Checker;
use canteen_sim::scenario::{Fault, FaultKind, Scenario};
use canteen_sim::world::World;
use hyper::Method;

use crate::hosts::Agents;
use crate::load::Live;
use crate::net::Net;
use crate::observe::Observer;

/// What the faults act on.
pub struct Faults {
    /// The network.
    pub net: Arc<Net>,
    /// The agents.
    pub agents: Arc<Mutex<Agents>>,
    /// What the checkers read.
    pub world: Arc<Mutex<World>>,
    /// Where clients send.
    pub live: Live,
    /// Docker, to kill and pause containers.
    pub lister: Observer,
    /// Each app's `[[app]]` table of the scenario file, as last applied (without `[app.sim]`).
    pub apps: Vec<toml::Table>,
}

impl Faults {
    /// The apps' tables of the scenario file `text`.
    pub fn app_tables(text: &str) -> Vec<toml::Table> {
        let table: toml::Table = toml::from_str(text).unwrap_or_default();
        let apps = table.get("app").and_then(|a| a.as_array()).cloned().unwrap_or_default();
        apps.into_iter()
            .filter_map(|a| a.as_table().cloned())
            .map(|mut t| {
                t.remove("sim");
                t
            })
            .collect()
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().expect("never poisoned")
    }

    fn identities(&self) -> HashSet<String> {
        self.agents.lock().expect("never poisoned").identities()
    }

    /// Begins `fault` at `now` ms; the checker hears of it as the simulator's does.
    pub async fn begin(&mut self, fault: &Fault, now: u64, scenario: &Scenario, checker: &Mutex<Checker>) {
        let crashed = match &fault.kind {
            FaultKind::CrashNode { node } if self.world().nodes[*node].up => Some(*node),
            _ => None,
        };
        checker.lock().expect("never poisoned").fault_started(fault.describe(), fault.at_s, fault.end_s(), crashed);
        let result = match &fault.kind {
            FaultKind::CrashNode { node } => self.crash_node(*node, now).await,
            FaultKind::RestartNode { node } => self.restart_node(*node, now),
            FaultKind::RestartAgent { node } => self.restart_agent(*node, now),
            FaultKind::StartNode { node } => self.start_node(*node, now),
            FaultKind::Apply { node, app } => {
                // Desired from now on, unless the command is lost with a node not running.
                if self.agents.lock().expect("never poisoned").running(*node) {
                    let replicas = scenario.cluster.apps.iter().find(|a| a.name == *app).map_or(0, |a| a.replicas);
                    self.world().truth.desired.insert(app.clone(), replicas);
                }
                self.apply(*node, app, fault, checker).await;
                Ok(())
            }
            FaultKind::KillContainer { app, slot } => self.kill_container(app, *slot).await,
            FaultKind::HangContainer { app, slot } => self.hang_container(app, *slot).await,
            FaultKind::Partition { groups } => self.partition(groups, now),
            FaultKind::Heal => self.heal(now),
            FaultKind::PacketLoss { ratio } => self.net.packet_loss(*ratio).map_err(|e| e.0),
            FaultKind::Update { node, app, image, command, env } => {
                self.update(app, image, command, env, now);
                self.apply(*node, app, fault, checker).await;
                Ok(())
            }
            FaultKind::Promote { node, app } => {
                self.world().truth.changes_s.push(now as f64 / 1000.0);
                let body = serde_json::json!({ "app": app.as_str(), "action": "promote" }).to_string();
                self.command(*node, "/rollout", body, fault, checker).await;
                Ok(())
            }
            FaultKind::SlowNode { .. } | FaultKind::FlapContainer { .. } => {
                Err("refused before the run: the lab cannot do this fault".to_owned())
            }
        };
        if let Err(e) = result {
            eprintln!("canteen-lab: {} at {:.1}s: {e}", fault.describe(), now as f64 / 1000.0);
        }
    }

    /// A fault that lasts ends.
    pub fn end(&mut self, fault: &Fault, now: u64) {
        if let FaultKind::Partition { .. } | FaultKind::PacketLoss { .. } = fault.kind
            && let Err(e) = self.heal(now)
        {
            eprintln!("canteen-lab: ending {}: {e}", fault.describe());
        }
    }

    /// Every partition and packet loss ends.
    pub fn heal(&mut self, now: u64) -> Result<(), String> {
        self.net.heal().map_err(|e| e.0)?;
        let mut w = self.world();
        if w.group.iter().any(|g| *g != 0) {
            let whole = vec![0; w.group.len()];
            w.set_groups(whole, now);
        }
        Ok(())
    }

    /// The machine is gone: its link first (it answers nothing from then on), its agent
    /// SIGKILLed, its containers killed and removed.
    async fn crash_node(&mut self, node: usize, now: u64) -> Result<(), String> {
        if !self.world().nodes[node].up {
            return Ok(());
        }
        // Clients stop choosing it first: a request sent to it from now on is the crash's own.
        self.live.lock().expect("never poisoned")[node] = false;
        self.net.set_link(node, false).map_err(|e| e.0)?;
        self.agents.lock().expect("never poisoned").kill(node);
        self.world().node_crashed(node, now);
        let identities = self.identities();
        let docker = self.lister.docker().clone();
        for id in self.lister.containers_on(&identities, node).await {
            let _ = docker.kill_container(&id, None::<bollard::query_parameters::KillContainerOptions>).await;
            let _ = docker.remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
        }
        Ok(())
    }

    /// A crashed node's machine is replaced: it boots empty (no containers, no saved state).
    fn restart_node(&mut self, node: usize, now: u64) -> Result<(), String> {
        if self.world().nodes[node].up {
            return Ok(());
        }
        self.agents.lock().expect("never poisoned").wipe(node);
        self.net.set_link(node, true).map_err(|e| e.0)?;
        self.boot(node, now)
    }

    /// Node `node`'s agent starts; the world marks its machine up.
    fn boot(&mut self, node: usize, now: u64) -> Result<(), String> {
        self.agents.lock().expect("never poisoned").start(node)?;
        let mut w = self.world();
        let n = &mut w.nodes[node];
        n.up = true;
        n.starts += 1;
        n.agent_started_ms = now;
        w.membership_version += 1;
        drop(w);
        self.live.lock().expect("never poisoned")[node] = true;
        Ok(())
    }

    /// The agent process is SIGKILLed and started again at once; its containers run on.
    fn restart_agent(&mut self, node: usize, now: u64) -> Result<(), String> {
        if !self.world().nodes[node].up {
            return Ok(());
        }
        self.world().agent_stopped(node, now);
        let mut agents = self.agents.lock().expect("never poisoned");
        agents.kill(node);
        agents.start(node)?;
        drop(agents);
        self.world().nodes[node].agent_started_ms = now;
        Ok(())
    }

    /// A late node boots for the first time.
    fn start_node(&mut self, node: usize, now: u64) -> Result<(), String> {
        if self.world().nodes[node].up {
            return Ok(());
        }
        self.boot(node, now)
    }

    async fn kill_container(&mut self, app: &AppName, slot: u32) -> Result<(), String> {
        let identities = self.identities();
        let Some(id) = self.lister.containers_of(&identities, app.as_str(), slot).await.into_iter().next() else {
            return Err(format!("{app}/{slot} runs nowhere"));
        };
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        self.lister.docker().kill_container(&id, Some(options)).await.map_err(|e| format!("docker kill: {e}"))
    }

    async fn hang_container(&mut self, app: &AppName, slot: u32) -> Result<(), String> {
        let identities = self.identities();
        let Some(id) = self.lister.containers_of(&identities, app.as_str(), slot).await.into_iter().next() else {
            return Err(format!("{app}/{slot} runs nowhere"));
        };
        self.lister.docker().pause_container(&id).await.map_err(|e| format!("docker pause: {e}"))
    }

    fn partition(&mut self, groups: &[Vec<usize>], now: u64) -> Result<(), String> {
        let n = self.world().nodes.len();
        let mut group = vec![groups.len(); n];
        for (g, members) in groups.iter().enumerate() {
            for &m in members {
                group[m] = g;
            }
        }
        self.net.partition(&group).map_err(|e| e.0)?;
        self.world().set_groups(group, now);
        Ok(())
    }

    /// The app's spec as last applied, with what an `update` fault gives changed, in both the
    /// file table sent to the agent and the world's truth.
    fn update(
        &mut self,
        app: &AppName,
        image: &Option<String>,
        command: &Option<Vec<String>>,
        env: &Option<std::collections::BTreeMap<String, String>>,
        now: u64,
    ) {
        let mut w = self.world.lock().expect("never poisoned");
        let spec = w.truth.specs.get_mut(app).expect("checked: an app of the file");
        let table = self.apps.iter_mut().find(|t| t.get("name").and_then(|n| n.as_str()) == Some(app.as_str()));
        let table = table.expect("checked: an app of the file");
        if let Some(image) = image {
            spec.image = image.clone();
            table.insert("image".into(), toml::Value::String(image.clone()));
        }
        if let Some(command) = command {
            spec.command = command.clone();
            table.insert(
                "command".into(),
                toml::Value::Array(command.iter().cloned().map(toml::Value::String).collect()),
            );
        }
        if let Some(env) = env {
            spec.env = env.clone();
            let env: toml::Table = env.iter().map(|(k, v)| (k.clone(), toml::Value::String(v.clone()))).collect();
            table.insert("env".into(), toml::Value::Table(env));
        }
        w.truth.changes_s.push(now as f64 / 1000.0);
    }

    /// Applies `app`'s table as last applied through node `node`'s API.
    async fn apply(&mut self, node: usize, app: &AppName, fault: &Fault, checker: &Mutex<Checker>) {
        let table = self.apps.iter().find(|t| t.get("name").and_then(|n| n.as_str()) == Some(app.as_str()));
        let mut file = toml::Table::new();
        file.insert("app".into(), toml::Value::Array(table.cloned().into_iter().map(toml::Value::Table).collect()));
        let text = toml::to_string(&file).expect("a table encodes");
        let body = serde_json::json!({ "file": "canteen-lab", "text": text }).to_string();
        self.command(node, "/apply", body, fault, checker).await;
    }

    /// One command through node `node`'s API. A node not running loses it; a refusal is a
    /// failed check, as in the simulator.
    async fn command(&mut self, node: usize, path: &str, body: String, fault: &Fault, checker: &Mutex<Checker>) {
        let api: Option<Api> = {
            let mut agents = self.agents.lock().expect("never poisoned");
            agents.running(node).then(|| agents.api(node))
        };
        let Some(api) = api else {
            checker.lock().expect("never poisoned").lost_apply(fault.describe());
            return;
        };
        if let Err(e) = call(&api, Method::POST, path, Some(body)).await {
            self.world().truth.refused_commands.push(format!("{}: {e}", fault.describe()));
        }
    }
}

/// Applies the apps the scenario applies at start (`[app.sim] apply_at_start`, the default)
/// through `api`, as an operator would.
pub async fn apply_at_start(api: &Api, scenario: &Scenario, apps: &[toml::Table]) -> Result<(), String> {
    let at_start: Vec<toml::Value> = apps
        .iter()
        .filter(|t| {
            let name = t.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            scenario.app_sim.get(&AppName::new(name)).is_none_or(|s| s.apply_at_start)
        })
        .cloned()
        .map(toml::Value::Table)
        .collect();
    if at_start.is_empty() {
        return Ok(());
    }
    let mut file = toml::Table::new();
    file.insert("app".into(), toml::Value::Array(at_start));
    let text = toml::to_string(&file).expect("a table encodes");
    let body = serde_json::json!({ "file": scenario.file, "text": text }).to_string();
    call(api, Method::POST, "/apply", Some(body)).await.map(|_| ()).map_err(|e| format!("apply: {e}"))
}
