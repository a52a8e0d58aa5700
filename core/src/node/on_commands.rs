//! The facade's routing of an operator's commands: an app applied (checked alone and against
//! the others, its volume its own), and the confirmation of the desired state that a command
//! or a peer's identical registry gives a node that kept containers it could not place
//! (`Event::KeptUnconfirmed`).

use crate::limits;
use crate::model::{AppName, AppSpec, NodeId};
use crate::registry::Key;
use crate::time::Time;

use super::{CommandError, Node, Value};

/// A command on an app's versions (`Node::roll_command`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Roll {
    /// A new version with the same spec.
    Restart,
    /// A new version with the spec of an earlier one (the previous, when `None`).
    Undo(Option<u64>),
    /// The canaries are promoted.
    Promote,
}

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
        let old = match self.registry.get(&Key::App(spec.name.clone())) {
            Some(Value::App(old)) => Some((**old).clone()),
            _ => None,
        };
        let mut spec = spec;
        // The version, the history and the restarts are the cluster's, not the operator's.
        spec.redeploys = old.as_ref().map_or(0, |o| o.redeploys);
        let rescaled = old.as_ref().is_none_or(|o| o.replicas != spec.replicas || o.autoscale != spec.autoscale);
        match &old {
            Some(o) if o.has_template(&spec.template()) => {
                spec.version = o.version;
                spec.history = o.history.clone();
                spec.promoted = o.promoted;
                spec.cause = o.cause;
            }
            _ => self.next_version(&mut spec, old.as_ref(), crate::model::Cause::Apply),
        }
        self.write_spec(now, spec, rescaled)
    }

    /// Makes `spec` the version after `old`'s (the first when there is none), made for
    /// `cause`: `old` joins the history, whose oldest versions go past `REVISIONS_MAX`.
    pub(super) fn next_version(&mut self, spec: &mut AppSpec, old: Option<&AppSpec>, cause: crate::model::Cause) {
        spec.cause = cause;
        spec.promoted = false;
        let Some(old) = old else {
            spec.version = 1;
            spec.history.clear();
            return;
        };
        spec.version = old.version + 1;
        spec.history = old.history.clone();
        spec.history.push(crate::model::Revision { version: old.version, template: old.template(), cause: old.cause });
        let extra = spec.history.len().saturating_sub(limits::REVISIONS_MAX);
        spec.history.drain(..extra);
        // Versions whose containers no longer run are not worth keeping: an undo names one.
        self.out.event(super::Event::RolloutStarted { app: spec.name.clone(), from: old.version, to: spec.version });
    }

    /// Writes an app's spec, its oldest versions dropped while it is too large for one entry;
    /// `rescaled` resets the count its coordinator chose, which starts again from the spec.
    pub(super) fn write_spec(&mut self, now: Time, mut spec: AppSpec, rescaled: bool) -> Result<(), CommandError> {
        let name = spec.name.clone();
        let key = Key::App(name.clone());
        let value = loop {
            let value = Value::App(Box::new(spec));
            let bytes = postcard::to_allocvec(&value).expect("specs encode");
            match self.registry.check_size(&key, bytes.len()) {
                Ok(()) => break value,
                Err(e) => {
                    let Value::App(back) = value else { unreachable!("built above") };
                    spec = *back;
                    if spec.history.is_empty() {
                        return Err(e.into());
                    }
                    spec.history.remove(0);
                }
            }
        };
        let autoscaled = matches!(&value, Value::App(s) if s.autoscale.is_some());
        self.write(now, key, value)?;
        if autoscaled && rescaled && self.registry.get(&Key::Scale(name.clone())).is_some() {
            self.remove(now, Key::Scale(name));
        }
        self.request_pass(now);
        Ok(())
    }

    /// `canteen restart`, `canteen rollout undo` and `canteen promote`: a new version of
    /// `app` made from its current spec, or from an earlier version's, or its canaries
    /// promoted.
    pub(super) fn roll_command(&mut self, now: Time, app: &AppName, command: Roll) -> Result<(), CommandError> {
        let Some(Value::App(old)) = self.registry.get(&Key::App(app.clone())) else {
            return Err(CommandError::UnknownApp(app.to_string()));
        };
        let old = (**old).clone();
        let not = |problem: String| CommandError::NotApplicable { app: app.to_string(), problem };
        let mut spec = old.clone();
        match command {
            Roll::Restart => {
                spec.redeploys = spec.redeploys.wrapping_add(1);
                self.next_version(&mut spec, Some(&old), crate::model::Cause::Restart);
            }
            Roll::Undo(to) => {
                let to = match to.or_else(|| old.history.last().map(|r| r.version)) {
                    Some(to) => to,
                    None => {
                        return Err(not(format!(
                            "version {} is the only one; there is none to go back to",
                            old.version
                        )));
                    }
                };
                let Some(template) = old.template_of(to) else {
                    let kept: Vec<String> = old.history.iter().map(|r| r.version.to_string()).collect();
                    return Err(not(format!("version {to} is not kept; kept: {}", kept.join(", "))));
                };
                if old.has_template(&template) {
                    return Err(not(format!("version {} already runs the spec of version {to}", old.version)));
                }
                spec = old.with_template(&template, old.version);
                self.next_version(&mut spec, Some(&old), crate::model::Cause::Undo { to });
            }
            Roll::Promote => {
                if old.update.canary == 0 {
                    return Err(not("it has no canaries (update.canary = 0)".into()));
                }
                if old.promoted {
                    return Err(not(format!("version {} is promoted already", old.version)));
                }
                spec.promoted = true;
            }
        }
        self.write_spec(now, spec, false)
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
