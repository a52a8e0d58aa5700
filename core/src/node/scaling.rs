//! Autoscaling: every node counts the requests entering its balancers and reports them to each
//! autoscaled app's coordinator; the coordinator runs the app's [`Autoscaler`] and writes the
//! count it chooses under `scale/<app>`. Also how many replicas an app runs, which is where the
//! registry's `scale/<app>` is read.

use std::collections::{BTreeMap, BTreeSet};

use crate::autoscale::{Autoscaler, ScaleDecision};
use crate::model::{AppName, AppSpec, NodeId};
use crate::registry::{Key, Registry};
use crate::time::Time;

use super::Value;

/// How many replicas app `name` with `spec` runs: the count its coordinator chose, within its
/// bounds, when it is autoscaled; the spec's otherwise.
pub(super) fn replicas(registry: &Registry<Value>, name: &AppName, spec: &AppSpec) -> u32 {
    let Some(a) = &spec.autoscale else { return spec.replicas };
    match registry.get(&Key::Scale(name.clone())) {
        Some(Value::Scale(n)) => (*n).clamp(a.min, a.max),
        _ => spec.replicas,
    }
}

/// App `name`'s spec, with the replica count its coordinator chose if it is autoscaled.
pub(super) fn spec_with_scale(registry: &Registry<Value>, name: &AppName) -> Option<AppSpec> {
    let Some(Value::App(spec)) = registry.get(&Key::App(name.clone())) else { return None };
    let replicas = replicas(registry, name, spec);
    Some(AppSpec { replicas, ..(**spec).clone() })
}

/// Request counts waiting to be reported, the autoscalers of the apps this node coordinates,
/// and which apps autoscale.
#[derive(Debug, Default)]
pub(super) struct Scaling {
    /// Requests that entered this node's balancers since the last report, by app.
    pending: BTreeMap<AppName, u64>,
    /// The autoscaler of each autoscaled app this node coordinates.
    autoscalers: BTreeMap<AppName, Autoscaler>,
    /// The apps whose spec in the registry autoscales: the load reports and the coordinator's
    /// evaluation, every second, look only at these (reading every spec for it was 2% of a
    /// thousand-node run, whose apps do not autoscale).
    autoscaled: BTreeSet<AppName>,
    /// When each member last reported each autoscaled app's load here, for the last report
    /// interval: a member reports once an interval.
    reported: BTreeMap<(NodeId, AppName), Time>,
}

impl Scaling {
    /// `requests` entered this node's balancer for `app`.
    pub(super) fn count(&mut self, app: &AppName, requests: u64) {
        *self.pending.entry(app.clone()).or_default() += requests;
    }

    /// `app`'s spec changed: `spec` is the one now in the registry (none when removed).
    pub(super) fn app_changed(&mut self, app: &AppName, spec: Option<&AppSpec>) {
        if spec.is_some_and(|s| s.autoscale.is_some()) {
            self.autoscaled.insert(app.clone());
        } else {
            self.autoscaled.remove(app);
        }
    }

    /// The apps that autoscale.
    pub(super) fn autoscaled(&self) -> &BTreeSet<AppName> {
        &self.autoscaled
    }

    /// Whether a load report from `from` for `app` may be taken at `now`: `app` autoscales
    /// (others' reports are dropped anyway) and `from` reported none in the last `gap_ms`.
    pub(super) fn may_take_report(&mut self, now: Time, from: &NodeId, app: &AppName, gap_ms: u64) -> bool {
        if !self.autoscaled.contains(app) {
            return true;
        }
        let last = self.reported.entry((from.clone(), app.clone())).or_insert(Time::ZERO);
        if *last != Time::ZERO && now.as_millis() < last.as_millis().saturating_add(gap_ms) {
            return false;
        }
        *last = now;
        true
    }

    /// The counts to report, by app, of the apps that autoscale (the others' are dropped).
    /// Forgets the reports taken more than `interval_ms` before `now`.
    pub(super) fn take_reports(&mut self, now: Time, interval_ms: u64) -> Vec<(AppName, u64)> {
        let since = now.as_millis().saturating_sub(interval_ms);
        self.reported.retain(|_, at| at.as_millis() >= since);
        let pending = std::mem::take(&mut self.pending);
        pending.into_iter().filter(|(app, _)| self.autoscaled.contains(app)).collect()
    }

    /// Records `requests` for `app`, which this node coordinates; its autoscaler starts from
    /// `spec` (the app with its current count) if it has none yet.
    pub(super) fn record(&mut self, now: Time, app: &AppName, requests: u64, spec: impl FnOnce() -> Option<AppSpec>) {
        if let Some(scaler) = self.autoscalers.get_mut(app) {
            scaler.record_requests(now, requests);
        } else if let Some(spec) = spec()
            && let Some(policy) = &spec.autoscale
        {
            let mut scaler = Autoscaler::new(policy, spec.replicas, now);
            scaler.record_requests(now, requests);
            self.autoscalers.insert(app.clone(), scaler);
        }
    }

    /// Evaluates the autoscalers of `mine`, the autoscaled apps this node coordinates with
    /// their current counts (the others' autoscalers are dropped); returns the decisions to
    /// write, in app order.
    pub(super) fn evaluate(&mut self, now: Time, mine: &BTreeMap<AppName, AppSpec>) -> Vec<(AppName, ScaleDecision)> {
        self.autoscalers.retain(|app, _| mine.contains_key(app));
        let mut decisions = Vec::new();
        for (name, spec) in mine {
            let policy = spec.autoscale.as_ref().expect("an autoscaled app");
            let scaler =
                self.autoscalers.entry(name.clone()).or_insert_with(|| Autoscaler::new(policy, spec.replicas, now));
            if let Some(decision) = scaler.evaluate(now, spec.replicas) {
                decisions.push((name.clone(), decision));
            }
        }
        decisions
    }

    /// What must hold: the autoscaled apps are the registry's.
    pub(super) fn check_invariants(&self, registry: &Registry<Value>) {
        debug_assert!(
            self.autoscaled.iter().eq(registry
                .apps()
                .filter(|(_, v)| matches!(v, Value::App(spec) if spec.autoscale.is_some()))
                .map(|(name, _)| name)),
            "the autoscaled apps are the registry's"
        );
    }
}
