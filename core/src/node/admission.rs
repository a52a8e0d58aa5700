//! What a peer may write into this node's registry: every entry that arrives by gossip,
//! news, repair or a SWIM broadcast passes [`check_entry`] before it is merged. A peer is not
//! trusted blindly, even one that holds the cluster key (a bug, a stolen key): an entry that
//! would break what this node derives from the registry is refused here, counted and reported
//! as an [`super::Event::Refused`], never stored, so it can neither panic this node nor spread
//! from it.

use crate::limits;
use crate::model::{AppName, validate_name};
use crate::registry::{Entry, Key};

use super::wire::{NodeStatus, Value};

/// Whether an entry from a peer may be merged: `Err` says why not.
pub(super) fn check_entry(key: &Key, entry: &Entry<Value>) -> Result<(), String> {
    validate_name(key.name()).map_err(|e| format!("{key}: key name: {e}"))?;
    validate_name(entry.version.writer.as_str()).map_err(|e| format!("{key}: writer: {e}"))?;
    match (key, &entry.value) {
        (Key::Load(_), _) => Err(format!("{key}: no node writes load keys")),
        (Key::Status(node), _) if *node != entry.version.writer => {
            // Only a node writes (or removes) its own status: a status written by another would
            // let one member speak for all (traffic sent to it, replicas stopped as duplicates).
            Err(format!("{key}: written by {}, not by {node}", entry.version.writer))
        }
        (_, None) => Ok(()),
        (Key::App(name), Some(Value::App(spec))) => {
            if spec.name != *name {
                return Err(format!("{key}: holds the spec of {}", spec.name));
            }
            spec.validate().map_err(|e| format!("{key}: invalid spec: {e}"))
        }
        (Key::Status(node), Some(Value::Status(status))) => {
            check_status(node, status).map_err(|e| format!("{key}: {e}"))
        }
        (Key::Scale(_), Some(Value::Scale(replicas))) if *replicas > limits::REPLICAS_PER_APP_MAX => {
            Err(format!("{key}: {replicas} replicas, more than the limit of {}", limits::REPLICAS_PER_APP_MAX))
        }
        (Key::Scale(_), Some(Value::Scale(_))) => Ok(()),
        (Key::Rollout(_), Some(Value::Rollout(record))) => record.check().map_err(|e| format!("{key}: {e}")),
        (_, Some(_)) => Err(format!("{key}: holds a value of another kind")),
    }
}

/// What a status must be: about its writer, within the sizes a node publishes, each slot once
/// on a port of its own.
fn check_status(node: &crate::model::NodeId, status: &NodeStatus) -> Result<(), String> {
    if status.spec.id != *node {
        return Err(format!("describes node {}", status.spec.id));
    }
    if status.addr.is_empty() || status.addr.len() > limits::NODE_ADDR_LEN_MAX {
        return Err(format!("an address of {} bytes", status.addr.len()));
    }
    let spec_bytes = postcard::experimental::serialized_size(&status.spec).expect("specs encode");
    if spec_bytes > limits::NODE_SPEC_BYTES_MAX {
        return Err(format!("a node spec of {spec_bytes} bytes"));
    }
    if status.containers.len() > limits::LOCAL_SLOTS_MAX {
        return Err(format!("{} containers, more than a node runs", status.containers.len()));
    }
    if status.spec.gpus > limits::GPUS_PER_NODE_MAX {
        return Err(format!("{} GPUs, more than a node may offer", status.spec.gpus));
    }
    if status.spec.gpus > 0 {
        crate::model::validate_gpu_model(&status.spec.gpu_model)?;
    }
    let mut slots = std::collections::BTreeSet::new();
    let mut ports = std::collections::BTreeSet::new();
    // Thousandths held of each GPU, over the containers.
    let mut held = vec![0u32; status.spec.gpus as usize];
    // In slot and version order, as a node lists them and the view keeps them.
    if !status.containers.windows(2).all(|w| (&w[0].slot, w[0].version) <= (&w[1].slot, w[1].version)) {
        return Err("containers not in slot and version order".into());
    }
    for c in &status.containers {
        validate_name(c.slot.app.as_str()).map_err(|e| format!("slot {}: app name: {e}", c.slot))?;
        if c.slot.index >= limits::REPLICAS_PER_APP_MAX {
            return Err(format!("slot {}: index past the replica limit", c.slot));
        }
        if c.container.is_empty() || c.container.len() > limits::CONTAINER_ID_LEN_MAX {
            return Err(format!("slot {}: a container id of {} bytes", c.slot, c.container.len()));
        }
        if c.host_port == 0 {
            return Err(format!("slot {}: host port 0", c.slot));
        }
        // Two versions of a slot run side by side in a rolling update; one version runs once.
        if !slots.insert((&c.slot.app, c.slot.index, c.version)) {
            return Err(format!("slot {} listed twice at version {}", c.slot, c.version));
        }
        if c.ready && c.state != crate::schedule::ContainerState::Healthy {
            return Err(format!("slot {}: ready but {:?}", c.slot, c.state));
        }
        if !ports.insert(c.host_port) {
            return Err(format!("host port {} given to two slots", c.host_port));
        }
        // Whole GPUs, each once, or one share of one, on the node's GPUs; none held past
        // its whole over the containers.
        if !crate::model::GpuShare::fit_in(&c.gpus, &mut held) {
            return Err(format!("slot {}: GPUs {:?} that no replica may hold on this node", c.slot, c.gpus));
        }
    }
    Ok(())
}

/// Whether `app` is a name an app may have: a `Load` for anything else is refused.
pub(super) fn check_app_name(app: &AppName) -> Result<(), String> {
    validate_name(app.as_str()).map_err(|e| format!("app name: {e}"))
}
