//! An app's versions: how a new one replaces the running one (`[app.update]`), what its
//! containers are made from (its [`Template`]), and the earlier versions a spec keeps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AppSpec, GpuRequest, HealthCheck, Resources, SpecError, Volume, at_most, invalid};
use crate::limits;

/// How a new version replaces the running one (`[app.update]`): a rolling update, start-first
/// by default, gated on health (`crate::rollout`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    /// New replicas that may run beside the old ones at once, each a slot being replaced.
    pub max_surge: u32,
    /// Slots that may be without a healthy replica at once while they are replaced
    /// (stop-first); with `max_surge = 0` this is the pace of the update.
    pub max_unavailable: u32,
    /// How long a new replica stays healthy before it counts, and its slot's old one stops.
    pub min_healthy_ms: u64,
    /// A new replica not counted within this of its start fails the rollout.
    pub healthy_deadline_ms: u64,
    /// Whether a failed rollout goes back to the last version that completed one.
    pub auto_revert: bool,
    /// With N > 0, only N slots get the new version, beside their old replicas, until the
    /// operator promotes it (`canteen promote`).
    pub canary: u32,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            max_surge: 1,
            max_unavailable: 0,
            min_healthy_ms: 5000,
            healthy_deadline_ms: 60_000,
            auto_revert: true,
            canary: 0,
        }
    }
}

/// What a replica's container is made from: the fields of a spec whose change needs new
/// containers. Two versions with equal templates run the same containers, so a container of
/// either serves both (an undo back to a version whose replicas still run restarts nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// Docker image reference.
    pub image: String,
    /// Command and arguments.
    pub command: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Reserved for each replica.
    pub resources: Resources,
    /// The GPUs each replica holds.
    #[serde(default)]
    pub gpu: GpuRequest,
    /// The port the app listens on inside its container.
    pub container_port: u16,
    /// A volume mounted into every replica.
    pub volume: Option<Volume>,
    /// How each replica's health is probed.
    pub health: HealthCheck,
    /// Times `canteen restart` asked for fresh containers.
    pub redeploys: u32,
}

/// Why a version was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// `canteen apply` changed what the containers are made from.
    Apply,
    /// `canteen restart`: the same spec, fresh containers.
    Restart,
    /// `canteen rollout undo`: the spec of an earlier version.
    Undo {
        /// That version.
        to: u64,
    },
}

/// An earlier version of an app, kept so that a rollout can go back to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Its version.
    pub version: u64,
    /// What its containers were made from.
    pub template: Template,
    /// Why it was made.
    pub cause: Cause,
}

impl AppSpec {
    /// What this version's containers are made from.
    pub fn template(&self) -> Template {
        Template {
            image: self.image.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            resources: self.resources,
            gpu: self.gpu.clone(),
            container_port: self.container_port,
            volume: self.volume.clone(),
            health: self.health.clone(),
            redeploys: self.redeploys,
        }
    }

    /// Whether `template` is what this version's containers are made from, without building
    /// this version's template.
    pub fn has_template(&self, t: &Template) -> bool {
        self.image == t.image
            && self.command == t.command
            && self.env == t.env
            && self.resources == t.resources
            && self.gpu == t.gpu
            && self.container_port == t.container_port
            && self.volume == t.volume
            && self.health == t.health
            && self.redeploys == t.redeploys
    }

    /// This spec with its containers made from `template`, as version `version`.
    pub fn with_template(&self, template: &Template, version: u64) -> AppSpec {
        let t = template.clone();
        AppSpec {
            image: t.image,
            command: t.command,
            env: t.env,
            resources: t.resources,
            gpu: t.gpu,
            container_port: t.container_port,
            volume: t.volume,
            health: t.health,
            redeploys: t.redeploys,
            version,
            ..self.clone()
        }
    }

    /// The template of `version`: this one's, or an earlier one kept in the history.
    pub fn template_of(&self, version: u64) -> Option<Template> {
        if version == self.version {
            return Some(self.template());
        }
        self.history.iter().find(|r| r.version == version).map(|r| r.template.clone())
    }

    /// The versions whose containers are made as this version's are: this one and every kept
    /// one with an equal template (see [`AppSpec::runs_as`]; 0 is left out).
    pub fn versions_run_as(&self) -> Vec<u64> {
        let mut versions = vec![self.version];
        versions.extend(self.history.iter().filter(|r| self.has_template(&r.template)).map(|r| r.version));
        versions
    }

    /// Whether a container of `version` is made as this version's are: the same version, one
    /// whose template is equal, or one from before versions were recorded (0), which an
    /// upgraded agent adopts without replacing.
    pub fn runs_as(&self, version: u64) -> bool {
        version == self.version
            || version == 0
            || self.history.iter().any(|r| r.version == version && self.has_template(&r.template))
    }

    /// The versions a node sets: earlier versions below this one, in order, each template as
    /// valid as a spec's, at most `limits::REVISIONS_MAX` of them.
    pub(super) fn validate_history(&self) -> Result<(), SpecError> {
        if self.history.len() > limits::REVISIONS_MAX {
            return Err(invalid(
                "history",
                format!("{} earlier versions; at most {} are kept", self.history.len(), limits::REVISIONS_MAX),
            ));
        }
        let ordered = self.history.windows(2).all(|w| w[0].version < w[1].version)
            && self.history.last().is_none_or(|r| r.version < self.version);
        if !ordered {
            return Err(invalid("history", "earlier versions must be below the version, in order".into()));
        }
        for r in &self.history {
            let mut spec = self.with_template(&r.template, r.version);
            spec.history.clear();
            spec.validate().map_err(|e| invalid("history", format!("version {}: {e}", r.version)))?;
        }
        Ok(())
    }
}

pub(super) fn validate_update(u: &UpdatePolicy) -> Result<(), SpecError> {
    if u.max_surge == 0 && u.max_unavailable == 0 {
        return Err(invalid(
            "update.max_surge",
            "max_surge and max_unavailable are both 0, so no slot could ever be replaced; give one of them at least 1"
                .into(),
        ));
    }
    at_most("update.max_surge", u64::from(u.max_surge), u64::from(limits::REPLICAS_PER_APP_MAX), "replicas")?;
    at_most(
        "update.max_unavailable",
        u64::from(u.max_unavailable),
        u64::from(limits::REPLICAS_PER_APP_MAX),
        "replicas",
    )?;
    at_most("update.canary", u64::from(u.canary), u64::from(limits::REPLICAS_PER_APP_MAX), "replicas")?;
    at_most("update.healthy_deadline_ms", u.healthy_deadline_ms, limits::DURATION_MS_MAX, "ms")?;
    if u.min_healthy_ms >= u.healthy_deadline_ms {
        return Err(invalid(
            "update.min_healthy_ms",
            format!(
                "{} ms must be less than healthy_deadline_ms ({} ms): a new replica must be able to count before its deadline",
                u.min_healthy_ms, u.healthy_deadline_ms
            ),
        ));
    }
    Ok(())
}
