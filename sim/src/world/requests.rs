//! The request path: open-loop clients' requests enter a node's balancer, which picks a
//! replica; a refused connection ejects the backend and retries once elsewhere; each replica is
//! a queue of its own (`traffic::ReplicaQueue`); hung replicas time out. And what came of the
//! requests, for the report and the plot.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use canteen_core::model::AppName;

use super::{RequestError, SimBackend, World};
use crate::scenario::AppSim;
use crate::traffic::LatencyHistogram;

/// The requests in service and their outcomes so far.
#[derive(Debug)]
pub struct RequestPath {
    /// Requests still in service: (finish time, entry node, app index, backend), for in-flight
    /// counts of the balancers.
    pub in_flight: BinaryHeap<Reverse<(u64, u32, u32, SimBackend)>>,
    /// Latencies of successful requests, whole run.
    pub latency: LatencyHistogram,
    /// Latencies of successful requests, current second (for the plot).
    pub latency_second: LatencyHistogram,
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed, by reason.
    pub failed: BTreeMap<RequestError, u64>,
    /// The one-way network time of a request hop.
    pub hop_us: u64,
    /// How long a request to a hung replica takes to fail.
    pub request_timeout_us: u64,
    /// How each app's replicas serve, by app index.
    pub app_sims: Vec<AppSim>,
    /// Requests per simulated second: (ok, failed, p99 latency in ms of the ok ones).
    pub seconds: Vec<(u64, u64, f64)>,
}

impl World {
    /// Finishes the requests that completed by `now_us`, for the balancers' in-flight counts.
    pub fn finish_requests(&mut self, now_us: u64) {
        while let Some(Reverse((finish, _, _, _))) = self.requests.in_flight.peek() {
            if *finish > now_us {
                break;
            }
            let Reverse((_, entry, app, backend)) = self.requests.in_flight.pop().expect("peeked");
            if let Some(b) = &mut self.nodes[entry as usize].balancers[app as usize] {
                b.request_finished(&backend);
            }
        }
    }

    /// One request for app index `app` entering node `entry` at `at_us`: picked by that node's
    /// balancer, retried once elsewhere when the connection fails before the request is sent.
    /// Returns the latency in microseconds.
    pub fn route(&mut self, at_us: u64, entry: usize, app: usize) -> Result<u64, RequestError> {
        self.nodes[entry].entered[app] += 1;
        let now_ms = at_us / 1000;
        let mut tried: Option<SimBackend> = None;
        for _ in 0..2 {
            let Some(balancer) = &mut self.nodes[entry].balancers[app] else { return Err(RequestError::NoBackend) };
            let pick = match &tried {
                None => balancer.pick(),
                Some(t) => balancer.pick_excluding(t),
            };
            let Some(backend) = pick else {
                return Err(if tried.is_some() { RequestError::ConnectFailed } else { RequestError::NoBackend });
            };
            let target = backend.node as usize;
            let reachable = self.nodes[target].up && self.group[target] == self.group[entry];
            let container = self.by_port.get(&(target, backend.host_port)).copied();
            let usable = reachable
                && container.is_some_and(|id| {
                    let c = &self.containers[&id];
                    // A replica being drained still answers until it is removed: balancers on
                    // other nodes learn of the stop a gossip round later.
                    c.app == app
                        && c.slot.index == backend.slot
                        && c.removed_at_ms.is_none_or(|t| t > now_ms)
                        && !c.exited
                        && now_ms >= c.ready_at_ms
                });
            if !usable {
                // Refused before anything was sent: out of this balancer, and one more try.
                if let Some(b) = &mut self.nodes[entry].balancers[app] {
                    b.eject(&backend);
                }
                tried = Some(backend);
                continue;
            }
            let id = container.expect("usable");
            let slow = self.nodes[target].slow_factor;
            let c = self.containers.get_mut(&id).expect("usable");
            if c.hung {
                return Err(RequestError::Timeout);
            }
            let service_us = (self.rng.exp(c.sim.service_time_ms * 1000.0 * slow)).max(1.0) as u64;
            let arrival = at_us + self.requests.hop_us;
            return match c.queue.offer(arrival, service_us) {
                Ok(finish) => {
                    if let Some(b) = &mut self.nodes[entry].balancers[app] {
                        b.request_started(&backend);
                    }
                    self.requests.in_flight.push(Reverse((finish, entry as u32, app as u32, backend)));
                    Ok(finish + self.requests.hop_us - at_us)
                }
                Err(_) => Err(RequestError::Overloaded),
            };
        }
        Err(RequestError::ConnectFailed)
    }

    /// How `app`'s replicas serve.
    pub fn app_sim(&self, app: &AppName) -> AppSim {
        self.app_index.get(app).map(|&i| self.requests.app_sims[i].clone()).unwrap_or_default()
    }

    /// Counts a request in the per-second series, closing earlier seconds as time passes.
    pub fn record_second(&mut self, at_us: u64, outcome: Result<u64, RequestError>) {
        let second = (at_us / 1_000_000) as usize;
        while self.requests.seconds.len() <= second {
            if let Some(last) = self.requests.seconds.last_mut() {
                last.2 = self.requests.latency_second.quantile(0.99) as f64 / 1000.0;
            }
            self.requests.latency_second.clear();
            self.requests.seconds.push((0, 0, 0.0));
        }
        let s = self.requests.seconds.last_mut().expect("pushed");
        match outcome {
            Ok(_) => s.0 += 1,
            Err(_) => s.1 += 1,
        }
    }

    /// Records the outcome of one request.
    pub fn record(&mut self, outcome: Result<u64, RequestError>) {
        match outcome {
            Ok(latency_us) => {
                self.requests.ok += 1;
                self.requests.latency.record(latency_us);
                self.requests.latency_second.record(latency_us);
            }
            Err(e) => *self.requests.failed.entry(e).or_default() += 1,
        }
    }
}
