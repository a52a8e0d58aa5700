//! One app's balancer state, shared by its connections (HTTP or TCP): the picker over the
//! node's list of backends, ejections, in-flight counts, and the counters the node and the
//! metrics read.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use canteen_core::balance::Balancer;
use canteen_core::model::{AppName, PickerKind, SlotId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::watch;

use super::{ABANDON_AFTER_MS, EJECTION_MS, Target};

struct Picking {
    balancer: Balancer<Target>,
    /// The node's list, to restore after an ejection.
    listed: Vec<Target>,
    ejected_at: Option<Instant>,
}

/// One app's balancer, shared by its connections.
pub(super) struct AppProxy {
    pub(super) app: AppName,
    /// This app's metrics, looked up once (a family lookup hashes the label on every call).
    pub(super) requests_metric: Counter,
    pub(super) errors_metric: Counter,
    pub(super) latency_metric: Histogram,
    picking: Mutex<Picking>,
    /// Requests since the last report to the node.
    requests: AtomicU64,
    /// The app's `max_body_bytes`, `u64::MAX` for none: set by the node, read per request.
    max_body: AtomicU64,
    /// Bumped whenever the node sets the backends: requests waiting on a backend look again
    /// whether it is still listed.
    backends_changed: watch::Sender<u64>,
}

impl AppProxy {
    pub(super) fn new(
        app: AppName,
        metrics: (Counter, Counter, Histogram),
        picker: PickerKind,
        seed: u64,
        targets: Vec<Target>,
        max_body: Option<u64>,
    ) -> AppProxy {
        let mut balancer = Balancer::new(picker, seed);
        balancer.set_backends(targets.iter().map(|t| (t.clone(), 1)));
        let (requests_metric, errors_metric, latency_metric) = metrics;
        AppProxy {
            app,
            requests_metric,
            errors_metric,
            latency_metric,
            picking: Mutex::new(Picking { balancer, listed: targets, ejected_at: None }),
            requests: AtomicU64::new(0),
            max_body: AtomicU64::new(max_body.unwrap_or(u64::MAX)),
            backends_changed: watch::Sender::new(0),
        }
    }

    /// The node's new list (and picker, and body cap): ejections end, in-flight counts of the
    /// backends that stay carry on, and so do their request counts (a replica listed before
    /// keeps its `Target`).
    pub(super) fn set(&self, picker: PickerKind, seed: u64, targets: Vec<Target>, max_body: Option<u64>) {
        self.max_body.store(max_body.unwrap_or(u64::MAX), Ordering::Relaxed);
        let mut p = self.picking.lock().expect("balancer lock");
        let mut before = p.listed.clone();
        before.sort_unstable();
        let targets: Vec<Target> =
            targets.into_iter().map(|t| before.binary_search(&t).map_or(t, |i| before[i].clone())).collect();
        if p.balancer.kind() != picker {
            p.balancer = Balancer::new(picker, seed);
        }
        p.balancer.set_backends(targets.iter().map(|t| (t.clone(), 1)));
        p.listed = targets;
        p.ejected_at = None;
        drop(p);
        self.backends_changed.send_modify(|g| *g += 1);
    }

    /// The largest request body passed on.
    pub(super) fn max_body(&self) -> u64 {
        self.max_body.load(Ordering::Relaxed)
    }

    /// Counts one request (or connection) for the autoscaler and the metrics.
    pub(super) fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.requests_metric.inc();
    }

    /// A backend for the next request, any but `exclude`; counted in flight until
    /// [`AppProxy::finished`].
    pub(super) fn pick(&self, exclude: Option<&Target>) -> Option<Target> {
        let mut p = self.picking.lock().expect("balancer lock");
        let picked = match exclude {
            None => p.balancer.pick(),
            Some(t) => p.balancer.pick_excluding(t),
        }?;
        p.balancer.request_started(&picked);
        drop(p);
        picked.sent.fetch_add(1, Ordering::Relaxed);
        Some(picked)
    }

    pub(super) fn finished(&self, t: &Target) {
        self.picking.lock().expect("balancer lock").balancer.request_finished(t);
    }

    /// Resolves once `t` has left the node's list of backends while another is listed, and
    /// `ABANDON_AFTER_MS` have passed since `sent`; never otherwise.
    pub(super) async fn abandoned(&self, t: &Target, sent: Instant) {
        let mut changes = self.backends_changed.subscribe();
        loop {
            let gone = || {
                let p = self.picking.lock().expect("balancer lock");
                !p.listed.contains(t) && !p.listed.is_empty()
            };
            if gone() {
                let due = sent + Duration::from_millis(ABANDON_AFTER_MS);
                tokio::time::sleep_until(due.into()).await;
                if gone() {
                    return;
                }
            }
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Takes `t` out until the node's next list, or [`EJECTION_MS`]: it refused a connection.
    pub(super) fn eject(&self, t: &Target) {
        let mut p = self.picking.lock().expect("balancer lock");
        if p.balancer.contains(t) {
            tracing::warn!(app = %self.app, slot = %t.slot, addr = %t.addr, "backend refused the connection: ejected");
            p.balancer.eject(t);
            p.ejected_at = Some(Instant::now());
        }
    }

    /// Requests since the last call; each slot's rate into `rates`; ejections past
    /// [`EJECTION_MS`] end.
    pub(super) fn report(&self, elapsed_s: f64, rates: &mut BTreeMap<SlotId, f64>) -> u64 {
        let mut p = self.picking.lock().expect("balancer lock");
        for t in &p.listed {
            rates.insert(t.slot.clone(), t.sent.swap(0, Ordering::Relaxed) as f64 / elapsed_s);
        }
        if p.ejected_at.is_some_and(|at| at.elapsed() >= Duration::from_millis(EJECTION_MS)) {
            let listed = p.listed.clone();
            p.balancer.set_backends(listed.into_iter().map(|t| (t, 1)));
            p.ejected_at = None;
        }
        self.requests.swap(0, Ordering::Relaxed)
    }

    /// The backends it may pick now (ejected ones are out).
    #[cfg(test)]
    pub(super) fn backends(&self) -> usize {
        self.picking.lock().expect("balancer lock").balancer.len()
    }
}
