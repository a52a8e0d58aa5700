//! The Docker driver: containers labelled with app, slot and node, started from an app's spec
//! on a host port, listed by label for adoption, and their exits from the event stream.
//!
//! Every call goes through bollard to the local engine. The engine on our machines speaks API
//! 1.41, older than bollard's default, so [`Docker::connect`] negotiates the version first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, Mount, MountType, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use canteen_core::model::{AppSpec, GpuShare, NodeId, SlotId};
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Label naming the app a container serves.
pub const LABEL_APP: &str = "canteen.app";
/// Label naming the slot index within the app.
pub const LABEL_SLOT: &str = "canteen.slot";
/// Label naming the node (agent) that runs the container.
pub const LABEL_NODE: &str = "canteen.node";
/// Label holding the identity of the agent that runs the container (`state::identity`).
pub const LABEL_IDENTITY: &str = "canteen.identity";
/// Label holding the host port the container publishes.
pub const LABEL_HOST_PORT: &str = "canteen.host_port";
/// The label of the version of its app a container runs (none before versions: 0).
pub const LABEL_VERSION: &str = "canteen.version";
/// The label of the GPUs a container holds: `index:milli` joined by commas (absent: none).
pub const LABEL_GPUS: &str = "canteen.gpus";

/// The GPUs of a label, `index:milli` joined by commas; `None` if it is not one.
pub fn parse_gpus(label: &str) -> Option<Vec<GpuShare>> {
    if label.is_empty() {
        return Some(Vec::new());
    }
    label
        .split(',')
        .map(|g| {
            let (index, milli) = g.split_once(':')?;
            Some(GpuShare { index: index.parse().ok()?, milli: milli.parse().ok()? })
        })
        .collect()
}

/// The label of `gpus`.
pub fn gpus_label(gpus: &[GpuShare]) -> String {
    gpus.iter().map(|g| format!("{}:{}", g.index, g.milli)).collect::<Vec<_>>().join(",")
}

/// What went wrong talking to Docker. No variant leaves a container half made: a failed start
/// removes what it created.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine cannot be reached at all; nothing changed.
    #[error(
        "cannot reach the Docker engine ({0}); is Docker running and is its socket (DOCKER_HOST or /var/run/docker.sock) readable?"
    )]
    Unreachable(String),
    /// The image is not on this machine and pulling it failed; no container was created.
    #[error("image {image:?} is not on this machine and pulling it failed: {error}")]
    Pull {
        /// The image reference.
        image: String,
        /// What the engine said.
        error: String,
    },
    /// Any other refusal by the engine; what was created for the call was removed.
    #[error("{what}: {error}")]
    Engine {
        /// What was being done.
        what: String,
        /// What the engine said.
        error: String,
    },
}

fn engine(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let what = what.into();
    move |e| DockerError::Engine { what, error: e.to_string() }
}

/// A container this node runs, as its labels describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labelled {
    /// Docker's id.
    pub id: String,
    /// The slot, from the labels.
    pub slot: SlotId,
    /// The host port, from the labels.
    pub host_port: u16,
    /// The version of its app, from the labels (0 when it has none).
    pub version: u64,
    /// The GPUs it holds, from the labels.
    pub gpus: Vec<GpuShare>,
    /// Whether it is running (an exited one is not adopted, it is removed).
    pub running: bool,
}

/// The handle the agent uses; cheap to clone.
#[derive(Clone, Debug)]
pub struct Docker {
    client: bollard::Docker,
    node: NodeId,
    /// The identity of the agent (`state::identity`): its containers carry it.
    identity: String,
}

impl Docker {
    /// Connects to the local engine and negotiates the API version, for the agent of `node`
    /// whose identity is `identity`.
    pub async fn connect(node: NodeId, identity: &str) -> Result<Docker, DockerError> {
        let client =
            bollard::Docker::connect_with_local_defaults().map_err(|e| DockerError::Unreachable(e.to_string()))?;
        let client = tokio::time::timeout(Duration::from_secs(10), client.negotiate_version())
            .await
            .map_err(|_| DockerError::Unreachable("no answer within 10 s".to_owned()))?
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        client.ping().await.map_err(|e| DockerError::Unreachable(e.to_string()))?;
        Ok(Docker { client, node, identity: identity.to_owned() })
    }

    /// The node whose containers this handle manages.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The container name of a slot on this node.
    pub fn container_name(&self, slot: &SlotId, version: u64) -> String {
        let identity = &self.identity[..self.identity.len().min(8)];
        format!("canteen-{}-{identity}-{}-{}-v{version}", self.node, slot.app, slot.index)
    }

    /// Whether `image` is on this machine.
    pub async fn has_image(&self, image: &str) -> bool {
        self.client.inspect_image(image).await.is_ok()
    }

    /// Makes sure `image` is on this machine, pulling it when it is not.
    pub async fn ensure_image(&self, image: &str) -> Result<(), DockerError> {
        if self.has_image(image).await {
            return Ok(());
        }
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        let mut stream = self.client.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(error) = info.error_detail.and_then(|d| d.message) {
                        return Err(DockerError::Pull { image: image.to_owned(), error });
                    }
                }
                Err(e) => return Err(DockerError::Pull { image: image.to_owned(), error: e.to_string() }),
            }
        }
        if self.has_image(image).await {
            Ok(())
        } else {
            Err(DockerError::Pull { image: image.to_owned(), error: "the pull ended without the image".to_owned() })
        }
    }

    /// Creates and starts the container of `slot` from `app`, publishing its container port on
    /// `ip:host_port`, with `gpus`. A leftover container of the same name (a previous life) is
    /// removed first. Returns Docker's id.
    pub async fn start(
        &self,
        slot: &SlotId,
        app: &AppSpec,
        ip: IpAddr,
        host_port: u16,
        gpus: &[GpuShare],
    ) -> Result<String, DockerError> {
        let (id, name) = self.create(slot, app, ip, host_port, gpus).await?;
        if let Err(e) = self.client.start_container(&id, None).await {
            let _ = self.remove(&id).await;
            return Err(engine(format!("start {name}"))(e));
        }
        Ok(id)
    }

    /// Creates, without starting it, the container [`Docker::start`] starts; returns its id
    /// and name. Its GPUs are a device request for those indexes (as `docker run --gpus
    /// device=0,1` makes), whole or shared: a share is a reservation the scheduler keeps, and
    /// the container learns it from `CANTEEN_GPUS`.
    pub async fn create(
        &self,
        slot: &SlotId,
        app: &AppSpec,
        ip: IpAddr,
        host_port: u16,
        gpus: &[GpuShare],
    ) -> Result<(String, String), DockerError> {
        self.ensure_image(&app.image).await?;
        if let Some(volume) = &app.volume {
            self.ensure_volume(&volume.name, app.name.as_str()).await?;
        }
        // Named by version too: a rolling update runs a slot's new version beside its old one.
        let name = self.container_name(slot, app.version);
        self.remove(&name).await?;
        let port_key = format!("{}/tcp", app.container_port);
        let labels = HashMap::from([
            (LABEL_APP.to_owned(), app.name.to_string()),
            (LABEL_SLOT.to_owned(), slot.index.to_string()),
            (LABEL_NODE.to_owned(), self.node.to_string()),
            (LABEL_IDENTITY.to_owned(), self.identity.clone()),
            (LABEL_HOST_PORT.to_owned(), host_port.to_string()),
            (LABEL_VERSION.to_owned(), app.version.to_string()),
            (LABEL_GPUS.to_owned(), gpus_label(gpus)),
        ]);
        // The agent tells each replica who it is and where to listen; the spec's env wins.
        let mut env = vec![
            format!("CANTEEN_APP={}", app.name),
            format!("CANTEEN_SLOT={}-{}", app.name, slot.index),
            format!("CANTEEN_NODE={}", self.node),
        ];
        if !app.env.contains_key("PORT") {
            env.push(format!("PORT={}", app.container_port));
        }
        if let Some(volume) = &app.volume
            && !app.env.contains_key("CANTEEN_DATA_DIR")
        {
            env.push(format!("CANTEEN_DATA_DIR={}", volume.mount_path));
        }
        if !gpus.is_empty() {
            env.push(format!("CANTEEN_GPUS={}", gpus_label(gpus)));
        }
        env.extend(app.env.iter().map(|(k, v)| format!("{k}={v}")));
        let device_requests = (!gpus.is_empty()).then(|| {
            vec![DeviceRequest {
                device_ids: Some(gpus.iter().map(|g| g.index.to_string()).collect()),
                capabilities: Some(vec![vec!["gpu".to_owned()]]),
                ..Default::default()
            }]
        });
        let mounts = app.volume.as_ref().map(|v| {
            vec![Mount {
                target: Some(v.mount_path.clone()),
                source: Some(v.name.clone()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]
        });
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding { host_ip: Some(ip.to_string()), host_port: Some(host_port.to_string()) }]),
            )])),
            nano_cpus: Some(i64::try_from(app.resources.cpu_millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
            memory: Some(i64::try_from(app.resources.mem_bytes).unwrap_or(i64::MAX)),
            mounts,
            device_requests,
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(app.image.clone()),
            cmd: (!app.command.is_empty()).then(|| app.command.clone()),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: Some(vec![port_key]),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created =
            self.client.create_container(Some(options), body).await.map_err(engine(format!("create {name}")))?;
        Ok((created.id, name))
    }

    /// Makes sure volume `name` exists and is `app`'s: made here labelled with the app the
    /// first time; one labelled with another app (which may be gone: its data stays its own)
    /// is refused, and so is one that canteen did not make, which may be anyone's.
    pub async fn ensure_volume(&self, name: &str, app: &str) -> Result<(), DockerError> {
        let refused = |why: String| DockerError::Engine { what: format!("volume {name}"), error: why };
        match self.client.inspect_volume(name).await {
            Ok(volume) => match volume.labels.get(LABEL_APP) {
                Some(owner) if owner == app => Ok(()),
                Some(owner) => Err(refused(format!(
                    "it belongs to app {owner}; an app mounts only its own volumes (name another volume, or remove \
                     this one with `docker volume rm {name}` if its data may go)"
                ))),
                // Made before canteen labelled its volumes: the app's own if its containers
                // already mount it, and none of another app's.
                None => match self.apps_mounting(name).await?.as_slice() {
                    [only] if only == app => Ok(()),
                    [] => Err(refused(
                        "it exists and was not made by canteen, so it may hold anyone's data; name another volume"
                            .to_owned(),
                    )),
                    others => Err(refused(format!(
                        "it is mounted by containers of {}; an app mounts only its own volumes",
                        others.join(", ")
                    ))),
                },
            },
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                let request = bollard::models::VolumeCreateRequest {
                    name: Some(name.to_owned()),
                    labels: Some(HashMap::from([(LABEL_APP.to_owned(), app.to_owned())])),
                    ..Default::default()
                };
                self.client.create_volume(request).await.map_err(engine(format!("create volume {name}")))?;
                Ok(())
            }
            Err(e) => Err(engine(format!("inspect volume {name}"))(e)),
        }
    }

    /// The apps (by their `canteen.app` label, sorted, each once) whose containers, running or
    /// not, mount volume `name`; `-` for a container canteen did not make.
    async fn apps_mounting(&self, name: &str) -> Result<Vec<String>, DockerError> {
        let filters = HashMap::from([("volume", vec![name.to_owned()])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let list = self.client.list_containers(Some(options)).await.map_err(engine("list containers"))?;
        let mut apps: Vec<String> = list
            .into_iter()
            .map(|c| c.labels.unwrap_or_default().get(LABEL_APP).cloned().unwrap_or_else(|| "-".to_owned()))
            .collect();
        apps.sort();
        apps.dedup();
        Ok(apps)
    }

    /// Stops and removes a container at once (SIGKILL); one already gone counts as removed.
    pub async fn remove(&self, id_or_name: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.client.remove_container(id_or_name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404 | 304, .. }) => Ok(()),
            Err(e) => Err(engine(format!("remove {id_or_name}"))(e)),
        }
    }

    /// Every container labelled with this node and this agent's identity, running or not (and
    /// those with no identity label: started before agents had one).
    pub async fn list_own(&self) -> Result<Vec<Labelled>, DockerError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_NODE}={}", self.node)])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let list = self.client.list_containers(Some(options)).await.map_err(engine("list containers"))?;
        let mut own = Vec::new();
        for c in list {
            let labels = c.labels.unwrap_or_default();
            if labels.get(LABEL_IDENTITY).is_some_and(|id| *id != self.identity) {
                continue; // another agent under the same name: never this one's to touch
            }
            let (Some(id), Some(app), Some(index), Some(port)) = (
                c.id,
                labels.get(LABEL_APP),
                labels.get(LABEL_SLOT).and_then(|s| s.parse::<u32>().ok()),
                labels.get(LABEL_HOST_PORT).and_then(|s| s.parse::<u16>().ok()),
            ) else {
                continue;
            };
            let running = c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING);
            let version = labels.get(LABEL_VERSION).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
            // A label that does not parse holds no GPU: placement then replaces the container.
            let gpus = labels.get(LABEL_GPUS).and_then(|s| parse_gpus(s)).unwrap_or_default();
            let slot = SlotId::new(app.as_str(), index);
            own.push(Labelled { id, slot, host_port: port, version, gpus, running });
        }
        own.sort_by(|a, b| (&a.slot, &a.id).cmp(&(&b.slot, &b.id)));
        Ok(own)
    }

    /// Sends the id of every container of this node that dies, for as long as `exits` is open.
    /// The stream is re-opened after an error, from where it stopped, so no exit is missed.
    pub async fn watch_exits(self, exits: mpsc::Sender<String>) {
        let mut since = unix_seconds();
        loop {
            let filters = HashMap::from([
                ("type", vec!["container".to_owned()]),
                ("event", vec!["die".to_owned()]),
                ("label", vec![format!("{LABEL_NODE}={}", self.node)]),
            ]);
            let options = EventsOptionsBuilder::new().since(&since.to_string()).filters(&filters).build();
            let mut stream = self.client.events(Some(options));
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        if let Some(t) = event.time {
                            since = since.max(t);
                        }
                        if let Some(id) = event.actor.and_then(|a| a.id)
                            && exits.send(id).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("docker event stream: {e}; reconnecting");
                        break;
                    }
                }
            }
            if exits.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
