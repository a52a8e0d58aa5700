//! The facade's routing of rolling updates (`crate::rollout`): which spec an app's instances
//! run (the effective one, and an old instance's own version), a new replica's trial (ready
//! after `min_healthy_ms`, failed at its deadline), and the coordinator's verdicts under
//! `rollout/<app>`, written from the statuses every node sees.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::limits;
use crate::model::{AppName, AppSpec, HealthCheck, SlotId};
use crate::registry::Key;
use crate::rollout::{self, Outcome, Phase, RolloutRecord};
use crate::schedule::ContainerState;
use crate::time::Time;

use super::slots::Phase as SlotPhase;
use super::{Event, Node, Timer, Value, scaling, view};

/// What `canteen status` and `canteen rollout` show of an app's versions.
#[derive(Clone, Debug)]
pub struct RolloutView {
    /// The spec as the operator last applied it, with its version and earlier versions.
    pub spec: AppSpec,
    /// The coordinator's verdicts.
    pub record: Option<RolloutRecord>,
    /// Where the rollout of `spec.version` stands.
    pub phase: Phase,
    /// The version the app's slots are placed and started with (another while reverting).
    pub running: u64,
}

impl Node {
    /// `app`'s versions and its rollout, as this node sees them.
    pub fn rollout_view(&self, app: &AppName) -> Option<RolloutView> {
        let Some(Value::App(spec)) = self.registry.get(&Key::App(app.clone())) else { return None };
        let record = self.rollout_record(app).cloned();
        let phase = self.app_phase(app)?;
        let running = match phase {
            Phase::Reverting { to } => to,
            _ => spec.version,
        };
        Some(RolloutView { spec: (**spec).clone(), record, phase, running })
    }

    /// Every app's spec as the operator last applied it (the registry's), by name.
    pub fn applied_specs(&self) -> Vec<AppSpec> {
        self.registry
            .apps()
            .filter_map(|(_, v)| match v {
                Value::App(spec) => Some((**spec).clone()),
                _ => None,
            })
            .collect()
    }

    /// This node's containers as its status says them now (claims and back-offs included),
    /// each with its version and readiness.
    pub fn local_statuses(&self) -> Vec<super::ContainerStatus> {
        self.slots.statuses()
    }

    /// The coordinator's verdicts on `app`'s versions, if it wrote any.
    pub(super) fn rollout_record(&self, app: &AppName) -> Option<&RolloutRecord> {
        match self.registry.get(&Key::Rollout(app.clone())) {
            Some(Value::Rollout(record)) => Some(record),
            _ => None,
        }
    }

    /// The spec `app`'s slots are placed and started with: the operator's, with the count its
    /// coordinator chose, or while a failed version reverts, the version it goes back to.
    pub(super) fn effective_spec(&self, app: &AppName) -> Option<AppSpec> {
        let spec = scaling::spec_with_scale(&self.registry, app)?;
        Some(rollout::effective(spec, self.rollout_record(app)))
    }

    /// The spec an instance of `app` at `version` runs: the effective one if `version` is made
    /// as it is, else that version's own (an old replica restarted in a rollout stays old, for
    /// the rollout to replace), or the effective one when that version is no longer kept.
    pub(super) fn instance_spec(&self, app: &AppName, version: u64) -> Option<AppSpec> {
        let effective = self.effective_spec(app)?;
        if effective.runs_as(version) {
            return Some(effective);
        }
        let Some(Value::App(spec)) = self.registry.get(&Key::App(app.clone())) else { return Some(effective) };
        match spec.template_of(version) {
            Some(template) => Some(effective.with_template(&template, version)),
            None => Some(effective),
        }
    }

    /// The health check of an instance of `app` at `version`, read in place.
    pub(super) fn instance_health(&self, app: &AppName, version: u64) -> Option<HealthCheck> {
        let Some(Value::App(spec)) = self.registry.get(&Key::App(app.clone())) else { return None };
        if version == spec.version || version == 0 {
            return Some(spec.health.clone());
        }
        Some(spec.template_of(version).map_or_else(|| spec.health.clone(), |t| t.health))
    }

    /// Whether a replica of `app` at `version` started now is on trial.
    pub(super) fn is_on_trial(&self, app: &AppName, version: u64) -> bool {
        let Some(Value::App(spec)) = self.registry.get(&Key::App(app.clone())) else { return false };
        rollout::on_trial(spec, self.rollout_record(app), version)
    }

    /// Where `app`'s rollout stands, read in place (none without a spec).
    pub(super) fn app_phase(&self, app: &AppName) -> Option<Phase> {
        let Some(Value::App(spec)) = self.registry.get(&Key::App(app.clone())) else { return None };
        Some(rollout::phase(spec, self.rollout_record(app)))
    }

    /// The apps whose rollout failed with no revert: placement replaces none of their slots.
    /// Only an app with a verdict can be paused.
    pub(super) fn paused_apps(&self) -> BTreeSet<AppName> {
        self.registry
            .rollouts()
            .map(|(name, _)| name)
            .filter(|name| self.app_phase(name) == Some(Phase::Paused))
            .cloned()
            .collect()
    }

    /// Whether every container the live view counts runs its app's effective version (or one
    /// made as it is): else a rollout has slots to replace, and a placement pass must run.
    pub(super) fn runs_current_versions(&self) -> bool {
        self.view.versions().all(|(app, version)| match self.registry.get(&Key::App(app.clone())) {
            Some(Value::App(spec)) if version == spec.version || version == 0 => {
                // The common case, read in place; a revert's effective spec differs.
                !matches!(self.app_phase(app), Some(Phase::Reverting { .. }))
            }
            Some(Value::App(_)) => self.effective_spec(app).is_some_and(|s| s.runs_as(version)),
            _ => true,
        })
    }

    /// `app`'s spec or verdicts changed: its instances whose version is no longer on trial
    /// (a verdict came, or a newer version superseded theirs) are tried no more.
    pub(super) fn end_trials(&mut self, app: &AppName) {
        let spec = match self.registry.get(&Key::App(app.clone())) {
            Some(Value::App(spec)) => Some((**spec).clone()),
            _ => None,
        };
        let record = self.rollout_record(app).cloned();
        let on_trial = |version: u64| spec.as_ref().is_some_and(|s| rollout::on_trial(s, record.as_ref(), version));
        self.slots.end_trials(app, on_trial);
    }

    /// `app`'s spec or verdicts changed: whether its version awaits a verdict.
    pub(super) fn verdict_changed(&mut self, app: &AppName) {
        let awaits = match self.registry.get(&Key::App(app.clone())) {
            Some(Value::App(spec)) => self.rollout_record(app).is_none_or(|r| r.outcome(spec.version).is_none()),
            _ => false,
        };
        if awaits {
            self.awaiting_verdict.insert(app.clone());
        } else {
            self.awaiting_verdict.remove(app);
        }
    }

    /// `slot`'s instance at `start` turned healthy: on trial, it counts once it stays healthy
    /// for its update's `min_healthy_ms` (`Timer::Ready`).
    pub(super) fn arm_ready(&mut self, now: Time, slot: SlotId, start: u64) {
        let Some((_, l)) = self.slots.at(&slot, start) else { return };
        if !l.on_trial {
            return;
        }
        let Some(spec) = self.instance_spec(&slot.app, l.version) else { return };
        let at = now + Duration::from_millis(spec.update.min_healthy_ms);
        self.out.schedule(at, Timer::Ready { slot, start });
    }

    /// `Timer::Ready`: the instance counts if it has stayed healthy since.
    pub(super) fn ready_due(&mut self, now: Time, slot: SlotId, start: u64) {
        let Some((_, l)) = self.slots.at(&slot, start) else { return };
        let Some(spec) = self.instance_spec(&slot.app, l.version) else { return };
        if self.slots.make_ready(now, &slot, start, spec.update.min_healthy_ms) {
            self.publish_status(now);
            self.request_pass(now);
        }
    }

    /// `Timer::Deadline`: an instance still on trial and not ready fails its rollout.
    pub(super) fn deadline_due(&mut self, now: Time, slot: SlotId, start: u64) {
        let Some((_, l)) = self.slots.at(&slot, start) else { return };
        if !l.on_trial || l.ready || !matches!(l.phase, SlotPhase::Starting | SlotPhase::Running) {
            return;
        }
        let deadline = self.instance_spec(&slot.app, l.version).map_or(0, |s| s.update.healthy_deadline_ms);
        self.fail(
            now,
            &slot,
            start,
            &format!("it was not healthy for min_healthy_ms within healthy_deadline_ms ({deadline} ms)"),
        );
    }

    /// The coordinator's verdicts, once a second: for each app it coordinates whose version
    /// has none yet, `failed` when a replica of that version on trial failed (the node that ran
    /// it reports it failed), `completed` when every slot runs that version (or one made as
    /// it is), healthy and ready, and nothing else of the app runs.
    pub(super) fn check_rollouts(&mut self, now: Time) {
        let mut pending: BTreeMap<AppName, (AppSpec, Tally)> = BTreeMap::new();
        for name in &self.awaiting_verdict {
            if self.coordinator_of(name) != self.config.id {
                continue;
            }
            let Some(effective) = self.effective_spec(name) else { continue };
            pending.insert(name.clone(), (effective, Tally::default()));
        }
        if pending.is_empty() {
            return;
        }
        let own = self.current_status();
        let peers = view::live_statuses(&self.registry, &self.members).filter(|(n, _)| **n != self.config.id);
        for status in std::iter::once(&own).chain(peers.map(|(_, s)| s)) {
            for c in &status.containers {
                let Some((spec, tally)) = pending.get_mut(&c.slot.app) else { continue };
                tally.count(spec, c.slot.index, c.version, c.state, c.ready);
            }
        }
        for (name, (spec, tally)) in pending {
            let record = self.rollout_record(&name).cloned().unwrap_or_default();
            let on_trial = self.is_on_trial(&name, spec.version);
            let outcome = if on_trial && tally.failed > 0 {
                let reason = format!(
                    "{} new replica(s) of version {} failed (did not stay healthy {} ms within {} ms, exited, or did not start)",
                    tally.failed, spec.version, spec.update.min_healthy_ms, spec.update.healthy_deadline_ms
                );
                Outcome::Failed { reason: reason.chars().take(limits::REASON_LEN_MAX).collect() }
            } else if tally.old == 0 && tally.ready.len() as u32 == spec.replicas {
                Outcome::Completed
            } else {
                continue;
            };
            let Some(Value::App(raw)) = self.registry.get(&Key::App(name.clone())) else { continue };
            let raw_version = raw.version;
            let record = record.with(raw_version, outcome.clone());
            let reverted_to = match rollout::phase(raw, Some(&record)) {
                Phase::Reverting { to } => Some(to),
                _ => None,
            };
            self.write(now, Key::Rollout(name.clone()), Value::Rollout(Box::new(record)))
                .expect("a rollout record fits the registry");
            self.out.event(Event::RolloutEnded { app: name, version: raw_version, outcome, reverted_to });
        }
    }
}

/// What the coordinator counts of one app's containers in the live statuses.
#[derive(Debug, Default)]
struct Tally {
    /// The slots with a container of the effective version, healthy and ready.
    ready: BTreeSet<u32>,
    /// Containers of an older version that have not failed.
    old: usize,
    /// Containers of the effective version reported failed.
    failed: usize,
}

impl Tally {
    fn count(&mut self, spec: &AppSpec, index: u32, version: u64, state: ContainerState, ready: bool) {
        let current = spec.runs_as(version);
        match state {
            ContainerState::Failed if current && version == spec.version => self.failed += 1,
            ContainerState::Failed => {}
            _ if !current => self.old += 1,
            ContainerState::Healthy if ready && index < spec.replicas => {
                self.ready.insert(index);
            }
            _ => {}
        }
    }
}
