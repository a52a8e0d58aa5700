//! The `canteen` command line. Exit codes: 0 done, 1 a runtime failure, 2 bad input (a file,
//! a key or an argument), with a message that names what to fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use canteen_core::cluster_file::{self, Cluster};
use canteen_core::schedule::Policy;
use clap::{Parser, Subcommand};

use crate::api::{self, ApplyRequest, ClientError, RemoveRequest, RolloutRequest, ScaleRequest};
use crate::config::AgentConfig;
use crate::{agent, plan, state};

/// canteen: a container orchestrator with no control plane.
#[derive(Debug, Parser)]
#[command(name = "canteen", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Place every app of a cluster file and print where each slot lands.
    Plan {
        /// The cluster file (TOML).
        file: PathBuf,
        /// Overrides the file's placement policy: round-robin, binpack, spread or rendezvous.
        #[arg(long)]
        policy: Option<Policy>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the agent of this server: Docker, the balancers, the probes and the HTTP API.
    Agent {
        /// The agent's config file; every key has a default (`canteen config --defaults`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Join the cluster through the agent whose gossip address is HOST:PORT (repeatable;
        /// added to the config's `join`). Without any, this agent starts a cluster of its own.
        #[arg(long, value_name = "HOST:PORT")]
        join: Vec<String>,
    },
    /// One machine in one command: run an agent and apply a cluster file's apps; Ctrl-C stops
    /// it and removes every container it started.
    Up {
        /// The cluster file (TOML).
        file: PathBuf,
        /// The agent's config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Apply a cluster file's apps through a running agent. A change of what an app's
    /// containers are made from (image, command, env, resources, container port, volume, health
    /// check) rolls out a new version; other changes restart nothing.
    Apply {
        /// The cluster file (TOML).
        file: PathBuf,
        /// Print what would change and whether it starts a rollout; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The agent's API.
        #[command(flatten)]
        api: ApiArgs,
    },
    /// An app's rollout: where it stands, its versions, going back.
    Rollout {
        /// What to do.
        #[command(subcommand)]
        action: RolloutAction,
    },
    /// Promote an app's canaries: its rollout goes on to every slot.
    Promote {
        /// The app.
        app: String,
        /// The agent's API.
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Restart every replica of an app, one slot at a time as a rollout does (a new version
    /// with the same spec).
    Restart {
        /// The app.
        app: String,
        /// The agent's API.
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show every slot: app, slot, node, host port, health, requests/s, restarts.
    Status {
        /// The agent's API.
        #[command(flatten)]
        api: ApiArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set an app's replica count.
    Scale {
        /// The app.
        app: String,
        /// The replica count.
        replicas: u32,
        /// The agent's API.
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove an app and all its replicas.
    Rm {
        /// The app.
        app: String,
        /// The agent's API.
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print a new random cluster key (base64 of 32 bytes) for `cluster_keys`.
    Keygen,
    /// Print the agent's config.
    Config {
        /// Print every key with its default (the host's resources resolved).
        #[arg(long)]
        defaults: bool,
        /// Print this config file with the defaults filled in instead.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `canteen rollout ...`.
#[derive(Debug, Subcommand)]
pub enum RolloutAction {
    /// Slots per version, healthy or not, and what the rollout waits on.
    Status {
        /// The app.
        app: String,
        /// The agent's API.
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Every version kept: image, why it was made, how its rollout ended.
    History {
        /// The app.
        app: String,
        /// The agent's API.
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Roll back to an earlier version's spec (the one before, unless `--to`): a new version,
    /// rolled out as any other.
    Undo {
        /// The app.
        app: String,
        /// The version to go back to.
        #[arg(long)]
        to: Option<u64>,
        /// The agent's API.
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// The agent API address the CLI talks to unless told otherwise (the config's default).
pub const DEFAULT_API: &str = "127.0.0.1:7070";

/// Where the CLI reaches an agent, and how it proves it may.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// The agent's API address.
    #[arg(long, default_value = DEFAULT_API)]
    api: SocketAddr,
    /// The agent's API token (its `api_token`), as NOMAD_TOKEN is Nomad's.
    #[arg(long, env = "CANTEEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The CA certificate (PEM) that signed the agent's `api_tls_cert`: the API is then
    /// reached over TLS.
    #[arg(long, env = "CANTEEN_TLS_CA", value_name = "CA.pem")]
    tls_ca: Option<PathBuf>,
}

impl ApiArgs {
    fn api(&self) -> api::Api {
        api::Api { addr: self.api, token: self.token.clone(), tls_ca: self.tls_ca.clone() }
    }
}

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub struct Failure {
    /// 1 for a runtime failure, 2 for bad input.
    pub code: u8,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl Failure {
    fn bad_input(message: impl Into<String>) -> Failure {
        Failure { code: 2, message: message.into() }
    }

    fn runtime(message: impl Into<String>) -> Failure {
        Failure { code: 1, message: message.into() }
    }
}

/// Reads and checks a cluster file; any problem is bad input.
pub fn read_cluster_file(path: &std::path::Path) -> Result<Cluster, Failure> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Failure::bad_input(format!("{name}: cannot read: {e}")))?;
    cluster_file::parse(&name, &text).map_err(|e| Failure::bad_input(e.to_string()))
}

/// Runs one command, printing its output on stdout.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Plan { file, policy, json } => {
            let cluster = read_cluster_file(&file)?;
            let plan = plan::plan(&cluster, policy);
            if json {
                let text = serde_json::to_string_pretty(&plan::to_json(&plan))
                    .map_err(|e| Failure::runtime(format!("cannot encode the plan: {e}")))?;
                emit(&format!("{text}\n"));
            } else {
                emit(&plan::to_table(&plan));
            }
            Ok(())
        }
        Command::Agent { config: path, join } => {
            for addr in &join {
                crate::config::check_peer_addr(addr)
                    .map_err(|problem| Failure::bad_input(format!("--join {addr:?}: {problem}")))?;
            }
            let config = read_config(path.as_deref())?;
            let seeds = resolve_seeds(&config, path.as_deref(), &join)?;
            run_agent(config, seeds, None)
        }
        Command::Up { file, config: path } => {
            let mut config = read_config(path.as_deref())?;
            if !sets_key(path.as_deref(), "node_name") {
                config.node_name = crate::config::node_name_for(&config.data_dir);
            }
            ensure_cluster_key(&mut config)?;
            let seeds = resolve_seeds(&config, path.as_deref(), &[])?;
            let name = file.display().to_string();
            let text =
                std::fs::read_to_string(&file).map_err(|e| Failure::bad_input(format!("{name}: cannot read: {e}")))?;
            let apps = state::apps_from_file(&name, &text, &config).map_err(|e| Failure::bad_input(e.to_string()))?;
            run_agent(config, seeds, Some(apps))
        }
        Command::Apply { file, dry_run, api } => {
            let name = file.display().to_string();
            let text =
                std::fs::read_to_string(&file).map_err(|e| Failure::bad_input(format!("{name}: cannot read: {e}")))?;
            // Checked here too, so a bad file fails the same way with or without an agent.
            state::apps_from_file(&name, &text, &AgentConfig::default())
                .map_err(|e| Failure::bad_input(e.to_string()))?;
            let body = serde_json::to_string(&ApplyRequest { file: name, text, dry_run }).expect("encodes");
            let out =
                block_on(api::call(&api.api(), hyper::Method::POST, "/apply", Some(body)))?.map_err(client_failure)?;
            emit(&format!("{}\n", done_message(&out)));
            Ok(())
        }
        Command::Status { api, json } => {
            let status = block_on(api::status(&api.api()))?.map_err(client_failure)?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&status).expect("encodes")));
            } else {
                emit(&status_table(&status));
            }
            Ok(())
        }
        Command::Scale { app, replicas, api } => {
            let body = serde_json::to_string(&ScaleRequest { app, replicas }).expect("encodes");
            let out =
                block_on(api::call(&api.api(), hyper::Method::POST, "/scale", Some(body)))?.map_err(client_failure)?;
            emit(&format!("{}\n", done_message(&out)));
            Ok(())
        }
        Command::Rm { app, api } => {
            let body = serde_json::to_string(&RemoveRequest { app }).expect("encodes");
            let out =
                block_on(api::call(&api.api(), hyper::Method::POST, "/rm", Some(body)))?.map_err(client_failure)?;
            emit(&format!("{}\n", done_message(&out)));
            Ok(())
        }
        Command::Rollout { action: RolloutAction::Status { app, api } } => {
            let status = block_on(api::status(&api.api()))?.map_err(client_failure)?;
            emit(&crate::rollout_cli::status(&status, &app).map_err(Failure::bad_input)?);
            Ok(())
        }
        Command::Rollout { action: RolloutAction::History { app, api } } => {
            let status = block_on(api::status(&api.api()))?.map_err(client_failure)?;
            emit(&crate::rollout_cli::history(&status, &app).map_err(Failure::bad_input)?);
            Ok(())
        }
        Command::Rollout { action: RolloutAction::Undo { app, to, api } } => {
            rollout_command(&api, RolloutRequest { app, action: "undo".into(), to })
        }
        Command::Promote { app, api } => {
            rollout_command(&api, RolloutRequest { app, action: "promote".into(), to: None })
        }
        Command::Restart { app, api } => {
            rollout_command(&api, RolloutRequest { app, action: "restart".into(), to: None })
        }
        Command::Keygen => {
            emit(&format!("{}\n", crate::config::generate_key().map_err(Failure::runtime)?));
            Ok(())
        }
        Command::Config { defaults, config } => {
            if !defaults && config.is_none() {
                return Err(Failure::bad_input("canteen config: give --defaults, or --config FILE"));
            }
            let config = read_config(config.as_deref())?;
            emit(&config.to_toml_with_defaults());
            Ok(())
        }
    }
}

/// Whether the config file at `path` sets `key` at its top level.
fn sets_key(path: Option<&Path>, key: &str) -> bool {
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else { return false };
    text.parse::<toml::Table>().is_ok_and(|t| t.contains_key(key))
}

/// `canteen up` with no cluster keys: the key in `data_dir/cluster.key`, generated there the
/// first time, so a standalone agent never takes datagrams from a cluster it was not given the
/// key of, and stays one command.
fn ensure_cluster_key(config: &mut AgentConfig) -> Result<(), Failure> {
    if !config.cluster_keys.is_empty() || config.cluster_keys_file.is_some() {
        return Ok(());
    }
    let path = config.data_dir.join("cluster.key");
    if !path.exists() {
        let key = crate::config::generate_key().map_err(Failure::runtime)?;
        let cannot = |e: std::io::Error| Failure::runtime(format!("cannot write {}: {e}", path.display()));
        std::fs::create_dir_all(&config.data_dir).map_err(cannot)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(cannot)?;
        std::io::Write::write_all(
            &mut file,
            format!("# canteen cluster key, made by `canteen up`\n{key}\n").as_bytes(),
        )
        .and_then(|()| file.sync_all())
        .map_err(cannot)?;
    }
    config.cluster_keys_file = Some(path);
    config.cluster_keys("(default config)").map_err(|e| Failure::bad_input(e.to_string()))?;
    Ok(())
}

/// Writes `text` to stdout. A closed stdout (`canteen status | head`) ends the command
/// quietly, with exit code 0: what was wanted has been read.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("canteen: cannot write the output: {e}");
        std::process::exit(1);
    }
}

fn read_config(path: Option<&Path>) -> Result<AgentConfig, Failure> {
    match path {
        // The defaults are checked too: the host's name becomes the node's.
        None => AgentConfig::parse("(default config)", "").map_err(|e| Failure::bad_input(e.to_string())),
        Some(p) => AgentConfig::load(p).map_err(|e| Failure::bad_input(e.to_string())),
    }
}

/// The seeds to join through: the config's `join`, then the `--join` flags, each resolved once
/// (a host name is looked up now). A bad or unresolvable one is bad input naming its key or flag.
fn resolve_seeds(config: &AgentConfig, path: Option<&Path>, flags: &[String]) -> Result<Vec<SocketAddr>, Failure> {
    let file = path.map_or_else(|| "(default config)".to_owned(), |p| p.display().to_string());
    let mut seeds = Vec::new();
    for addr in &config.join {
        let seed = crate::config::resolve_peer_addr(addr).map_err(|problem| {
            Failure::bad_input(cluster_file::FileError::new(&file, "join", format!("{addr:?}: {problem}")).to_string())
        })?;
        seeds.push(seed);
    }
    for addr in flags {
        let seed = crate::config::resolve_peer_addr(addr)
            .map_err(|problem| Failure::bad_input(format!("--join {addr:?}: {problem}")))?;
        seeds.push(seed);
    }
    Ok(seeds)
}

fn client_failure(e: ClientError) -> Failure {
    match e {
        ClientError::Refused(message) => Failure::bad_input(message),
        other => Failure::runtime(other.to_string()),
    }
}

fn done_message(body: &str) -> String {
    serde_json::from_str::<api::Reply>(body).ok().and_then(|r| r.done).unwrap_or_else(|| body.to_owned())
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, Failure> {
    Ok(runtime()?.block_on(f))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hyper=warn,bollard=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

/// Runs the agent until Ctrl-C or SIGTERM. With `up`, applies those apps first and removes
/// every container of this node (and the persisted state) on the way out.
fn run_agent(
    config: AgentConfig,
    seeds: Vec<SocketAddr>,
    up: Option<Vec<canteen_core::model::AppSpec>>,
) -> Result<(), Failure> {
    init_logging();
    runtime()?.block_on(async move {
        let (handle, driver, stop) = agent::start(config.clone(), seeds).await.map_err(|e| match e {
            agent::AgentError::Config(_) => Failure::bad_input(e.to_string()),
            e => Failure::runtime(e.to_string()),
        })?;
        let driver = tokio::spawn(driver);
        if let Some(apps) = &up {
            for app in apps {
                if !handle.docker.has_image(&app.image).await {
                    tracing::warn!(
                        "app {}: image {} is not on this machine; the agent will try to pull it{}",
                        app.name,
                        app.image,
                        if app.image.starts_with("canteen-demo") {
                            " (build it first: scripts/demo-image)"
                        } else {
                            ""
                        }
                    );
                }
            }
            let commands = apps.iter().map(|a| canteen_core::node::Command::Apply(Box::new(a.clone()))).collect();
            if let Err(e) = handle.commands(commands).await {
                let _ = stop.send(());
                let _ = driver.await;
                return Err(match e {
                    agent::CommandFailure::Refused(e) => Failure::bad_input(e),
                    e => Failure::runtime(e.to_string()),
                });
            }
            for app in apps {
                tracing::info!(
                    "app {}: {} replicas, balancer on http://{}:{}",
                    app.name,
                    app.replicas,
                    config.proxy_ip,
                    app.port
                );
            }
        }
        let mut driver = driver;
        let stopped = tokio::select! {
            () = wait_for_signal() => {
                tracing::info!("stopping");
                let _ = stop.send(());
                driver.await
            }
            stopped = &mut driver => stopped,
        };
        if up.is_some() {
            // Only this agent's own (its identity's): another agent of the same name keeps its.
            match agent::remove_all(&handle.docker).await {
                Ok(n) => tracing::info!("removed {n} containers"),
                Err(e) => return Err(Failure::runtime(format!("cannot remove the containers started: {e}"))),
            }
            state::clear(&config.data_dir);
        }
        if let Ok(agent::Stopped::NameTaken { name, other, mine }) = stopped {
            return Err(Failure::bad_input(format!(
                "node_name {name:?} is taken by a live agent at {other}; this agent, at {mine}, stopped: give it \
                 another node_name"
            )));
        }
        Ok(())
    })
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Sends a command on an app's versions (`canteen rollout undo`, `promote`, `restart`).
fn rollout_command(api: &ApiArgs, request: RolloutRequest) -> Result<(), Failure> {
    let body = serde_json::to_string(&request).expect("encodes");
    let out = block_on(api::call(&api.api(), hyper::Method::POST, "/rollout", Some(body)))?.map_err(client_failure)?;
    emit(&format!("{}\n", done_message(&out)));
    Ok(())
}

/// A slot's GPUs in a table: whole ones by index (`0,1`), a share as index and thousandths
/// (`2:250`), `-` for none.
fn gpus_cell(gpus: &[plan::GpuJson]) -> String {
    if gpus.is_empty() {
        return "-".to_owned();
    }
    let each: Vec<String> = gpus
        .iter()
        .map(|g| if g.milli >= 1000 { g.index.to_string() } else { format!("{}:{}", g.index, g.milli) })
        .collect();
    each.join(",")
}

/// The `canteen status` table.
pub fn status_table(status: &crate::api::StatusJson) -> String {
    let mut rows = vec![[
        "APP".to_owned(),
        "SLOT".to_owned(),
        "VERSION".to_owned(),
        "NODE".to_owned(),
        "HOST PORT".to_owned(),
        "HEALTH".to_owned(),
        "GPUS".to_owned(),
        "REQ/S".to_owned(),
        "RESTARTS".to_owned(),
    ]];
    for s in &status.slots {
        rows.push([
            s.app.clone(),
            s.slot.to_string(),
            if s.version == 0 { "-".to_owned() } else { format!("v{}", s.version) },
            s.node.clone(),
            if s.host_port == 0 { "-".to_owned() } else { s.host_port.to_string() },
            s.health.clone(),
            gpus_cell(&s.gpus),
            format!("{:.1}", s.requests_per_s),
            s.restarts.map_or_else(|| "-".to_owned(), |n| n.to_string()),
        ]);
    }
    let mut out = plan::table(&rows);
    for s in status.slots.iter().filter(|s| s.reason.is_some()) {
        out.push_str(&format!("{}/{} unplaced: {}\n", s.app, s.slot, s.reason.as_deref().unwrap_or_default()));
    }
    if status.nodes.len() > 1 {
        let mut rows =
            vec![["NODE".to_owned(), "STATE".to_owned(), "ADDR".to_owned(), "SLOTS".to_owned(), "GPUS".to_owned()]];
        for n in &status.nodes {
            let gpus = if n.gpus == 0 { "-".to_owned() } else { format!("{} {}", n.gpus, n.gpu_model) };
            rows.push([n.name.clone(), n.state.clone(), n.addr.clone(), n.slots.to_string(), gpus]);
        }
        out.push('\n');
        out.push_str(&plan::table(&rows));
        out.push_str(&format!(
            "(as node {} sees the cluster; REQ/S through its balancer, RESTARTS of its own slots)\n",
            status.node
        ));
    }
    for app in &status.apps {
        if let Some(e) = &app.error {
            out.push_str(&format!("\napp {}: {e}\n", app.name));
        }
    }
    out
}
