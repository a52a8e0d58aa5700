//! The facade's routing of an operator's commands: an app applied (checked alone and against
//! the others, its volume its own), and the confirmation of the desired state that a command
//! or a peer's identical registry gives a node that kept containers it could not place
//! (`Event::KeptUnconfirmed`).

use crate::limits;
use crate::model::{AppName, AppSpec, NodeId};
use crate::registry::Key;
use crate::time::Time;

use super::{CommandError, Node, Value};

impl Node {
    pub(super) fn apply(&mut self, now: Time, spec: AppSpec) -> Result<(), CommandError> {
        // The spec alone, then against the others: two apps that others applied at once
        // through two nodes with one port conflict with each other, and must not make every
        // later command fail.
        let others: Vec<AppSpec> = self.apps().into_iter().filter(|a| a.name != spec.name).collect();
        let invalid = |problem: String| CommandError::Invalid { app: spec.name.to_string(), problem };
        spec.validate().map_err(|e| invalid(e.to_string()))?;
        if others.len() >= limits::APPS_MAX {
            return Err(invalid(format!("the cluster runs {} apps, the most allowed", others.len())));
        }
        if let Some(owner) = crate::model::volume_owner(&spec, &others) {
            return Err(invalid(crate::model::volume_taken(&spec, owner).to_string()));
        }
        // The other way: a volume named for this app that another declared first is that one's.
        if let Some(declarer) = others.iter().find(|a| a.volume.as_ref().is_some_and(|v| v.name == spec.name.as_str()))
        {
            return Err(invalid(format!(
                "name: app {} mounts a volume named {:?}, which is its own; name this app otherwise",
                declarer.name, spec.name
            )));
        }
        if let Some(other) = others.iter().find(|a| a.port == spec.port) {
            let e = crate::model::SpecError::DuplicatePort {
                port: spec.port,
                first: other.name.to_string(),
                second: spec.name.to_string(),
            };
            return Err(invalid(e.to_string()));
        }
        let name = spec.name.clone();
        let autoscaled = spec.autoscale.is_some();
        let value = Value::App(Box::new(spec));
        let bytes = postcard::to_allocvec(&value).expect("specs encode");
        self.registry.check_size(&Key::App(name.clone()), bytes.len())?;
        self.write(now, Key::App(name.clone()), value)?;
        if autoscaled {
            // A new spec resets the count the coordinator chose; it starts again from here.
            if self.registry.get(&Key::Scale(name.clone())).is_some() {
                self.remove(now, Key::Scale(name));
            }
        }
        self.request_pass(now);
        Ok(())
    }

    /// Whether the registry holds `app`, live or removed.
    pub(super) fn knows_app(&self, app: &AppName) -> bool {
        self.registry.entry(&Key::App(app.clone())).is_some()
    }

    /// A member `from` holds a registry whose root is `root`: when it is this node's very
    /// registry, the desired state is the cluster's, and confirmed.
    pub(super) fn confirm_by_peer_root(&mut self, now: Time, from: &NodeId, root: u64) {
        if !self.desired_confirmed && root == self.registry.root_hash() && self.members.contains(from) {
            self.confirm_desired_state(now);
        }
    }

    /// The desired state is confirmed (by the operator, or a peer whose registry is this
    /// node's): containers of apps the registry does not know may be stopped from now on.
    pub(super) fn confirm_desired_state(&mut self, now: Time) {
        if !self.desired_confirmed {
            self.desired_confirmed = true;
            self.placement.facts_changed();
            self.request_pass(now);
        }
    }
}
