//! The desired state across the agent's lives: restored at start through the node's own input
//! for it, persisted to `data_dir` whenever it changed (see [`crate::state`] for the file).

use canteen_core::node::Command;

use super::driver::Driver;
use super::now;
use crate::state;

impl Driver {
    /// Brings back the desired state persisted by an earlier life of this agent, through the
    /// node's own input for it ([`Node::handle_restore`]): what the cluster changed since (a
    /// removal, a scale through another agent) is newer and wins, here or when the news
    /// arrives. Specs of the first file format are applied again.
    pub(super) fn restore(&mut self, persisted: state::Persisted) {
        for spec in persisted.apps {
            let name = spec.name.clone();
            if let Err(e) = self.node.handle_command(now(), Command::Apply(Box::new(spec))) {
                tracing::error!(app = %name, "persisted app refused: {e}");
            }
            self.drain();
        }
        self.node.handle_restore(now(), persisted.entries);
        self.drain();
        let apps = self.node.apps().len();
        if apps > 0 {
            tracing::info!(apps, "desired state restored from {}", self.config.data_dir.display());
        }
    }

    /// Writes the desired state to `data_dir` when it changed, however it changed (through this
    /// agent's API or by gossip).
    pub(super) fn persist(&mut self) {
        let version = self.node.desired_version();
        if version == self.persisted {
            return;
        }
        match state::save(&self.config.data_dir, &self.node.desired_entries()) {
            Ok(()) => self.persisted = version,
            Err(e) => tracing::error!("cannot persist the desired state: {e}"),
        }
    }

    /// Writes the desired state to `data_dir` now, changed or not, and syncs it: what a
    /// command's answer waits for. Says why it could not.
    pub(super) fn persist_now(&mut self) -> Result<(), String> {
        let version = self.node.desired_version();
        match state::save(&self.config.data_dir, &self.node.desired_entries()) {
            Ok(()) => {
                self.persisted = version;
                Ok(())
            }
            Err(e) => {
                tracing::error!("cannot persist the desired state: {e}");
                Err(format!("cannot persist the desired state: {e}"))
            }
        }
    }
}
