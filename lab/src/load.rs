//! The load generator: the scenario's requests, open-loop (Poisson arrivals at each load step's
//! rate, whatever the answers), each to a random live node's balancer for its app, as the
//! simulated clients send them. Each outcome (latency, or why it failed) is recorded in the
//! world the checkers read, as the simulator records its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use canteen_sim::scenario::Scenario;
use canteen_sim::traffic::{SimRng, poisson_arrivals};
use canteen_sim::world::{RequestError, World};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::net;

/// Which nodes the clients may send to: those whose machine is up (a node whose agent is
/// restarting is up, and refuses, as it does in the simulator).
pub type Live = Arc<Mutex<Vec<bool>>>;

/// What one request came to.
fn outcome_of(status: Result<hyper::StatusCode, RequestError>) -> Result<(), RequestError> {
    match status? {
        s if s.is_success() => Ok(()),
        // The balancer's own answers: no replica it could use, a replica that failed.
        hyper::StatusCode::SERVICE_UNAVAILABLE => Err(RequestError::NoBackend),
        hyper::StatusCode::BAD_GATEWAY => Err(RequestError::ConnectFailed),
        hyper::StatusCode::GATEWAY_TIMEOUT => Err(RequestError::Timeout),
        _ => Err(RequestError::Overloaded),
    }
}

/// Sends the scenario's load until aborted, from `start` (time 0 of the run).
pub async fn run(world: Arc<Mutex<World>>, live: Live, scenario: Scenario, seed: u64, start: Instant) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(scenario.sim.request_timeout_ms)));
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        // Well below the balancer's 30 s idle timeout, as a client should: a connection the
        // balancer closes just as a request goes out on it fails that request.
        .pool_idle_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build(connector);
    let timeout = Duration::from_millis(scenario.sim.request_timeout_ms);
    let tick_us = scenario.sim.tick_ms * 1000;
    let mut rng = SimRng::new(seed ^ 0x1ab_10ad);
    let apps: Vec<(u16, Vec<(f64, f64)>)> = scenario
        .cluster
        .apps
        .iter()
        .map(|a| {
            let steps = scenario.load.iter().filter(|l| l.app == a.name.as_str()).map(|l| (l.at_s, l.rps)).collect();
            (a.port, steps)
        })
        .collect();
    let mut arrivals = Vec::new();
    let mut t_us = 0u64;
    loop {
        let next = t_us + tick_us;
        tokio::time::sleep_until(start + Duration::from_micros(t_us)).await;
        for (port, steps) in &apps {
            let rate = steps.iter().rfind(|(at_s, _)| *at_s <= t_us as f64 / 1e6).map_or(0.0, |(_, rps)| *rps);
            if rate <= 0.0 {
                continue;
            }
            arrivals.clear();
            poisson_arrivals(&mut rng, rate, t_us, next, &mut arrivals);
            for &at_us in &arrivals {
                // The entry node is chosen when the request is sent, among the nodes up then,
                // as the simulator's clients choose among those up when they route: a request
                // chosen for a node in the tick it crashes would be lost for want of a node.
                let draw = rng.next_u64();
                let port = *port;
                let (client, world, live) = (client.clone(), world.clone(), live.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(start + Duration::from_micros(at_us)).await;
                    let entry = {
                        let live = live.lock().expect("never poisoned");
                        let up: Vec<usize> = (0..live.len()).filter(|i| live[*i]).collect();
                        if up.is_empty() { None } else { Some(up[(draw % up.len() as u64) as usize]) }
                    };
                    let Some(entry) = entry else {
                        record(&world, at_us, Err(RequestError::NoBackend));
                        return;
                    };
                    let uri: hyper::Uri =
                        format!("http://{}:{port}/", net::node_ip(entry)).parse().expect("a valid address");
                    let sent = Instant::now();
                    let answer = tokio::time::timeout(timeout, async {
                        let response = client.get(uri).await.map_err(|e| {
                            if std::env::var_os("CANTEEN_LAB_DEBUG").is_some() {
                                eprintln!("{:.1}s request to node {entry}: {e:?}", start.elapsed().as_secs_f64());
                            }
                            if e.is_connect() { RequestError::ConnectFailed } else { RequestError::Timeout }
                        })?;
                        let status = response.status();
                        response.into_body().collect().await.map_err(|_| RequestError::ConnectFailed)?;
                        Ok(status)
                    })
                    .await
                    .unwrap_or(Err(RequestError::Timeout));
                    let latency_us = sent.elapsed().as_micros() as u64;
                    if std::env::var_os("CANTEEN_LAB_DEBUG").is_some() && !matches!(answer, Ok(s) if s.is_success()) {
                        eprintln!(
                            "{:.1}s request to node {entry}: {answer:?} after {latency_us} us",
                            at_us as f64 / 1e6
                        );
                    }
                    record(&world, at_us, outcome_of(answer).map(|()| latency_us));
                });
            }
        }
        t_us = next;
    }
}

fn record(world: &Mutex<World>, at_us: u64, outcome: Result<u64, RequestError>) {
    let mut w = world.lock().expect("never poisoned");
    w.record(outcome);
    w.record_second(at_us, outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balancers_answers_map_to_the_simulators_reasons() {
        assert_eq!(outcome_of(Ok(hyper::StatusCode::OK)), Ok(()));
        assert_eq!(outcome_of(Ok(hyper::StatusCode::SERVICE_UNAVAILABLE)), Err(RequestError::NoBackend));
        assert_eq!(outcome_of(Ok(hyper::StatusCode::BAD_GATEWAY)), Err(RequestError::ConnectFailed));
        assert_eq!(outcome_of(Ok(hyper::StatusCode::GATEWAY_TIMEOUT)), Err(RequestError::Timeout));
        assert_eq!(outcome_of(Ok(hyper::StatusCode::TOO_MANY_REQUESTS)), Err(RequestError::Overloaded));
        assert_eq!(outcome_of(Err(RequestError::Timeout)), Err(RequestError::Timeout));
    }
}
