//! Rolling updates: what a rollout has decided so far, and what every node derives from it.
//!
//! A rollout needs no leader. Its progress is a function of replicated facts: the app's spec
//! (its version, its template and its earlier versions), each container's version and
//! readiness in its node's status, and this record. Every node computes in its placement pass
//! which slots may be replaced next (`schedule`), and acts on its own share, as it does for
//! every other placement. Only verdicts need one writer: the app's coordinator (rendezvous, as
//! for autoscaling) writes `rollout/<app>` when a version completes or fails. It never writes
//! the operator's `app/<app>`: two writers of one last-writer-wins entry would lose one
//! another's writes, and an apply racing a revert must not vanish.

use serde::{Deserialize, Serialize};

use crate::limits;
use crate::model::AppSpec;

/// How a version's rollout ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every slot ran it, healthy.
    Completed,
    /// A new replica did not turn healthy in time, or failed; `reason` says which.
    Failed {
        /// What the coordinator saw.
        reason: String,
    },
}

/// `rollout/<app>`: the verdicts on an app's versions, written by its coordinator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// Each version's verdict, oldest first, at most `limits::REVISIONS_MAX + 1`.
    pub outcomes: Vec<(u64, Outcome)>,
}

impl RolloutRecord {
    /// The last version whose rollout completed: where an auto-revert goes back to.
    pub fn stable(&self) -> Option<u64> {
        self.outcomes.iter().rev().find(|(_, o)| *o == Outcome::Completed).map(|(v, _)| *v)
    }

    /// The verdict on `version`, if there is one.
    pub fn outcome(&self, version: u64) -> Option<&Outcome> {
        self.outcomes.iter().find(|(v, _)| *v == version).map(|(_, o)| o)
    }

    /// This record with `outcome` for `version`, keeping the newest verdicts.
    pub fn with(&self, version: u64, outcome: Outcome) -> RolloutRecord {
        let mut outcomes: Vec<(u64, Outcome)> = self.outcomes.iter().filter(|(v, _)| *v != version).cloned().collect();
        outcomes.push((version, outcome));
        outcomes.sort_by_key(|(v, _)| *v);
        let extra = outcomes.len().saturating_sub(limits::REVISIONS_MAX + 1);
        outcomes.drain(..extra);
        RolloutRecord { outcomes }
    }

    /// Whether a peer's record is one a coordinator could have written.
    pub fn check(&self) -> Result<(), String> {
        if self.outcomes.len() > limits::REVISIONS_MAX + 1 {
            return Err(format!("{} verdicts; at most {}", self.outcomes.len(), limits::REVISIONS_MAX + 1));
        }
        if !self.outcomes.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err("verdicts must be in version order".into());
        }
        for (_, o) in &self.outcomes {
            if let Outcome::Failed { reason } = o
                && reason.len() > limits::REASON_LEN_MAX
            {
                return Err(format!("a reason of {} bytes; at most {}", reason.len(), limits::REASON_LEN_MAX));
            }
        }
        Ok(())
    }
}

/// Where an app's rollout stands, as every node derives it from the spec and the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing to replace: the version is the first, or it completed.
    Steady,
    /// Slots are being replaced by the spec's version.
    Rolling,
    /// The version failed and auto-revert is off: nothing more is replaced until a new version
    /// is applied.
    Paused,
    /// The version failed: the app goes back to version `to`.
    Reverting {
        /// The last version that completed.
        to: u64,
    },
}

/// The phase of `spec`'s rollout, given the record (none before the first verdict).
pub fn phase(spec: &AppSpec, record: Option<&RolloutRecord>) -> Phase {
    let Some(record) = record else { return Phase::Rolling };
    match record.outcome(spec.version) {
        Some(Outcome::Completed) => Phase::Steady,
        Some(Outcome::Failed { .. }) => match record.stable() {
            Some(to) if spec.update.auto_revert && spec.template_of(to).is_some() => Phase::Reverting { to },
            _ => Phase::Paused,
        },
        None => Phase::Rolling,
    }
}

/// The spec a node places and starts: `spec` itself, or while reverting, the spec with the
/// template of the version it goes back to (and that version's number, which its containers
/// report).
pub fn effective(spec: AppSpec, record: Option<&RolloutRecord>) -> AppSpec {
    match phase(&spec, record) {
        Phase::Reverting { to } => {
            let template = spec.template_of(to).expect("phase checked the template is kept");
            spec.with_template(&template, to)
        }
        _ => spec,
    }
}

/// Whether a new replica of `version` is on trial: a rollout from a version that completed
/// is under way, so it fails the rollout at its first failure or when it misses its deadline,
/// rather than back off and retry. An app's first version, and one that completed, are not.
pub fn on_trial(spec: &AppSpec, record: Option<&RolloutRecord>, version: u64) -> bool {
    let Some(record) = record else { return false };
    let Some(stable) = record.stable() else { return false };
    version > stable && version == spec.version && record.outcome(version).is_none()
}

/// The fields of an app's spec that differ between `old` and `new`, as the cluster file names
/// them, and whether the change starts a rollout (new containers): what
/// `canteen apply --dry-run` prints.
pub fn changes(old: &AppSpec, new: &AppSpec) -> (Vec<&'static str>, bool) {
    let mut fields = Vec::new();
    let mut differs = |name: &'static str, differ: bool| {
        if differ {
            fields.push(name);
        }
    };
    differs("image", old.image != new.image);
    differs("command", old.command != new.command);
    differs("env", old.env != new.env);
    differs("cpu_millis", old.resources.cpu_millis != new.resources.cpu_millis);
    differs("mem_mb", old.resources.mem_bytes != new.resources.mem_bytes);
    differs("container_port", old.container_port != new.container_port);
    differs("volume", old.volume != new.volume);
    differs("health", old.health != new.health);
    differs("replicas", old.replicas != new.replicas);
    differs("autoscale", old.autoscale != new.autoscale);
    differs("balance", old.balance != new.balance);
    differs("priority", old.priority != new.priority);
    differs("port", old.port != new.port);
    differs("constraints", old.constraints != new.constraints);
    differs("restart", old.restart != new.restart);
    differs("update", old.update != new.update);
    // The restarts are the cluster's: an applied spec keeps them.
    let mut template = new.template();
    template.redeploys = old.redeploys;
    (fields, !old.has_template(&template))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cause, Resources, Revision};

    fn v2() -> AppSpec {
        let mut spec = AppSpec::new("web", "img:2", 3, Resources::new(100, 64));
        let mut v1 = spec.template();
        v1.image = "img:1".into();
        spec.history = vec![Revision { version: 1, template: v1, cause: Cause::Apply }];
        spec.version = 2;
        spec
    }

    #[test]
    fn a_failed_version_reverts_to_the_last_completed_one_when_asked_to() {
        let spec = v2();
        assert_eq!(phase(&spec, None), Phase::Rolling);
        let done = RolloutRecord::default().with(1, Outcome::Completed);
        assert_eq!(phase(&spec, Some(&done)), Phase::Rolling);
        assert!(on_trial(&spec, Some(&done), 2));
        assert!(!on_trial(&spec, Some(&done), 1));
        let failed = done.with(2, Outcome::Failed { reason: "deadline".into() });
        assert_eq!(phase(&spec, Some(&failed)), Phase::Reverting { to: 1 });
        let back = effective(spec.clone(), Some(&failed));
        assert_eq!((back.image.as_str(), back.version), ("img:1", 1));
        assert!(!on_trial(&spec, Some(&failed), 2), "a failed version is on trial no more");
        let mut manual = spec.clone();
        manual.update.auto_revert = false;
        assert_eq!(phase(&manual, Some(&failed)), Phase::Paused);
        assert_eq!(effective(manual.clone(), Some(&failed)).version, 2);
    }

    #[test]
    fn the_record_keeps_the_newest_verdicts_in_order() {
        let mut r = RolloutRecord::default();
        for v in (1..=30).rev() {
            r = r.with(v, Outcome::Completed);
        }
        assert_eq!(r.outcomes.len(), limits::REVISIONS_MAX + 1);
        assert_eq!(r.stable(), Some(30));
        r.check().unwrap();
    }

    #[test]
    fn a_dry_run_names_the_changed_fields_and_says_which_restart_containers() {
        let old = v2();
        let mut new = old.clone();
        new.replicas = 5;
        new.priority = 3;
        assert_eq!(changes(&old, &new), (vec!["replicas", "priority"], false));
        new.env.insert("A".into(), "1".into());
        assert_eq!(changes(&old, &new), (vec!["env", "replicas", "priority"], true));
    }

    #[test]
    fn an_equal_template_runs_as_the_newer_version() {
        let mut spec = v2();
        assert!(!spec.runs_as(1));
        spec.image = "img:1".into();
        assert!(spec.runs_as(1), "an undo to version 1's template keeps version 1's containers");
        assert!(spec.runs_as(0), "containers from before versions are kept");
    }
}
