//! The facade's routing of request load and autoscaling: every node's counts to each
//! autoscaled app's coordinator (`Message::Load`, checked before it counts), the coordinator's
//! evaluation and the count it writes under `scale/<app>`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::limits;
use crate::model::{AppName, AppSpec, NodeId};
use crate::registry::Key;
use crate::time::Time;

use super::{Event, Message, Node, Timer, Value, admission, scaling};

impl Node {
    /// The live node that coordinates `app`: ranked first by rendezvous hash on its name.
    pub fn coordinator_of(&self, app: &AppName) -> NodeId {
        self.members.rendezvous_owner(app.as_str(), &self.config.id)
    }

    /// Sends each autoscaled app's request count to its coordinator (or records it, here), and
    /// sets the next report.
    pub(super) fn report_load(&mut self, now: Time) {
        for (app, requests) in self.scaling.take_reports(now, 2 * self.config.load_report_interval_ms) {
            let coordinator = self.coordinator_of(&app);
            if coordinator == self.config.id {
                self.record_load(now, &app, requests);
            } else {
                self.send(&coordinator, &Message::Load { app, requests });
            }
        }
        self.out.schedule(now + Duration::from_millis(self.config.load_report_interval_ms), Timer::LoadReport);
    }

    /// A peer's report of the requests that entered its balancers for `app`. Only a live
    /// member's report counts, once per app per half report interval and at most
    /// `LOAD_REQUESTS_PER_REPORT_MAX` requests: a forged or looping report must not scale an
    /// app to its maximum.
    pub(super) fn take_load_report(&mut self, now: Time, from: &NodeId, app: &AppName, requests: u64) {
        let refusal = if !self.members.contains(from) {
            Some(format!("a load report from {from}, not a live member"))
        } else if let Err(e) = admission::check_app_name(app) {
            Some(e)
        } else if requests > limits::LOAD_REQUESTS_PER_REPORT_MAX {
            Some(format!(
                "{requests} requests for {app} in one report, more than {}",
                limits::LOAD_REQUESTS_PER_REPORT_MAX
            ))
        } else if !self.scaling.may_take_report(now, from, app, self.config.load_report_interval_ms / 2) {
            Some(format!("a second load report from {from} for {app} within half an interval"))
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.out.event(Event::Refused { from: Some(from.clone()), input: "load", reason });
            return;
        }
        self.record_load(now, app, requests);
    }

    /// Requests for `app`, counted here or reported by a member, recorded if this node
    /// coordinates it.
    pub(super) fn record_load(&mut self, now: Time, app: &AppName, requests: u64) {
        if self.coordinator_of(app) != self.config.id {
            return; // a report that raced a change of coordinator; the next one goes right
        }
        let registry = &self.registry;
        self.scaling.record(now, app, requests, || scaling::spec_with_scale(registry, app));
    }

    /// The coordinator of each autoscaled app evaluates its autoscaler and writes `scale/<app>`;
    /// then the next evaluation.
    pub(super) fn autoscale(&mut self, now: Time) {
        // Only the autoscaled apps this node coordinates are copied out of the registry.
        let mine: BTreeMap<AppName, AppSpec> = self
            .scaling
            .autoscaled()
            .iter()
            .filter(|name| self.coordinator_of(name) == self.config.id)
            .filter_map(|name| scaling::spec_with_scale(&self.registry, name).map(|spec| (name.clone(), spec)))
            .collect();
        for (name, decision) in self.scaling.evaluate(now, &mine) {
            let to = decision.to;
            self.out.event(Event::Scaled { app: name.clone(), decision });
            self.write(now, Key::Scale(name), Value::Scale(to)).expect("a count fits the registry");
            self.request_pass(now);
        }
        self.out.schedule(now + Duration::from_millis(self.config.autoscale_interval_ms), Timer::Autoscale);
    }
}
