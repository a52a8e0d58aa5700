//! The agent's Prometheus metrics, served on `GET /metrics` in Prometheus' text format 0.0.4
//! ([`CONTENT_TYPE`]), which `promtool check metrics` checks.
//!
//! prometheus-client adds `_total` to counters itself, so counters are named without it. It
//! writes OpenMetrics, whose counter families are named without `_total`; [`Metrics::encode`]
//! names them after their samples instead, as the text format wants, and drops the
//! OpenMetrics-only `# EOF`.

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label of every per-app metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    /// The app's name.
    pub app: String,
}

impl AppLabel {
    /// The label for `app`.
    pub fn new(app: &str) -> AppLabel {
        AppLabel { app: app.to_owned() }
    }
}

/// The label of rollout counts: the app and what happened (`started`, `completed`,
/// `reverted`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabel {
    /// The app's name.
    pub app: String,
    /// What happened to the rollout.
    pub result: &'static str,
}

impl RolloutLabel {
    /// The label for `app`'s rollouts that `result`.
    pub fn new(app: &str, result: &'static str) -> RolloutLabel {
        RolloutLabel { app: app.to_owned(), result }
    }
}

/// The label of refused gossip datagrams: why (`core::seal::OpenError`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `malformed`, `unauthentic`, `replayed` or `future_life`.
    pub reason: &'static str,
}

/// The label of rejected gossip inputs: what was refused (`Event::Refused`'s `input`, or
/// `undecodable`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InputLabel {
    /// `undecodable`, `entry` or `load`.
    pub input: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Every metric the agent keeps. Cheap to share behind an `Arc`; updates are lock-free or take
/// a short read lock.
pub struct Metrics {
    registry: Registry,
    /// Requests that entered an app's balancer.
    pub requests: Family<AppLabel, Counter>,
    /// Requests answered with a 502/503 by the balancer (no backend, backend unreachable).
    pub errors: Family<AppLabel, Counter>,
    /// Time from a request entering the balancer to its response head, in seconds.
    pub latency: Family<AppLabel, Histogram, fn() -> Histogram>,
    /// Healthy replicas in each app's balancer.
    pub replicas: Family<AppLabel, Gauge>,
    /// Containers restarted after a failure.
    pub restarts: Family<AppLabel, Counter>,
    /// Autoscaler changes of an app's replica count.
    pub scale_events: Family<AppLabel, Counter>,
    /// Rollouts this node started (an operator's command through it) or ended (as the app's
    /// coordinator), by app and result; the cluster's total is the sum over its agents.
    pub rollouts: Family<RolloutLabel, Counter>,
    /// Cluster members this node believes alive (SWIM: alive or suspected), itself included.
    pub gossip_members: Gauge,
    /// Gossip datagrams sent.
    pub gossip_sent: Counter,
    /// Gossip datagrams received.
    pub gossip_received: Counter,
    /// Gossip datagrams not sent: the socket's buffer full, no route, too large, a bad address.
    pub gossip_dropped: Counter,
    /// Gossip datagrams received and refused unopened, by reason: no key opens them (another
    /// cluster, a stale key, forged), replays, or not sealed at all.
    pub gossip_refused: Family<ReasonLabel, Counter>,
    /// Gossip inputs from peers that opened but were refused: undecodable, or an entry or load
    /// report that would break this node (`core::node::Event::Refused`).
    pub gossip_rejected: Family<InputLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `canteen_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("canteen");
        let requests = Family::<AppLabel, Counter>::default();
        let errors = Family::<AppLabel, Counter>::default();
        let latency = Family::<AppLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let replicas = Family::<AppLabel, Gauge>::default();
        let restarts = Family::<AppLabel, Counter>::default();
        let scale_events = Family::<AppLabel, Counter>::default();
        let gossip_members = Gauge::default();
        let (gossip_sent, gossip_received, gossip_dropped) =
            (Counter::default(), Counter::default(), Counter::default());
        registry.register("requests", "Requests that entered an app's balancer", requests.clone());
        registry.register("errors", "Requests the balancer answered with 502 or 503", errors.clone());
        registry.register("request_latency_seconds", "Balancer latency to the response head", latency.clone());
        registry.register("replicas", "Healthy replicas in an app's balancer", replicas.clone());
        registry.register("restarts", "Containers restarted after a failure", restarts.clone());
        registry.register("scale_events", "Autoscaler changes of the replica count", scale_events.clone());
        let rollouts = Family::<RolloutLabel, Counter>::default();
        registry.register(
            "rollouts",
            "Rollouts started through this node, or ended (completed, reverted, failed) as the app's coordinator",
            rollouts.clone(),
        );
        registry.register(
            "gossip_members",
            "Cluster members believed alive, this node included",
            gossip_members.clone(),
        );
        registry.register("gossip_sent_packets", "Gossip datagrams sent", gossip_sent.clone());
        registry.register("gossip_received_packets", "Gossip datagrams received", gossip_received.clone());
        registry.register("gossip_dropped_packets", "Gossip datagrams that could not be sent", gossip_dropped.clone());
        let gossip_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "gossip_refused_packets",
            "Gossip datagrams refused unopened: unsealed, no key opens them, or replayed",
            gossip_refused.clone(),
        );
        let gossip_rejected = Family::<InputLabel, Counter>::default();
        registry.register(
            "gossip_rejected_inputs",
            "Gossip inputs refused after opening: undecodable, or entries or loads that would break the node",
            gossip_rejected.clone(),
        );
        Metrics {
            registry,
            requests,
            errors,
            latency,
            replicas,
            restarts,
            scale_events,
            rollouts,
            gossip_members,
            gossip_sent,
            gossip_received,
            gossip_dropped,
            gossip_refused,
            gossip_rejected,
        }
    }

    /// Forgets every series of `app`, once it is removed: a removed app's counters must not be
    /// served for ever.
    pub fn forget_app(&self, app: &str) {
        let label = AppLabel::new(app);
        self.requests.remove(&label);
        self.errors.remove(&label);
        self.latency.remove(&label);
        self.replicas.remove(&label);
        self.restarts.remove(&label);
        self.scale_events.remove(&label);
        for result in ["started", "completed", "reverted", "failed"] {
            self.rollouts.remove(&RolloutLabel::new(app, result));
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut open = String::new();
        prometheus_client::encoding::text::encode(&mut open, &self.registry).expect("writing to a String");
        to_text_format(&open)
    }
}

/// OpenMetrics to Prometheus' text format 0.0.4: a counter family's `# HELP` and `# TYPE`
/// name it as its samples are named (`..._total`), and `# EOF` goes.
fn to_text_format(open: &str) -> String {
    let counters: std::collections::BTreeSet<&str> =
        open.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_once_with_total() {
        let m = Metrics::new();
        m.requests.get_or_create(&AppLabel::new("web")).inc();
        m.latency.get_or_create(&AppLabel::new("web")).observe(0.002);
        let text = m.encode();
        assert!(text.contains("canteen_requests_total{app=\"web\"} 1"), "{text}");
        assert!(!text.contains("total_total"), "{text}");
        assert!(text.contains("canteen_request_latency_seconds_bucket"), "{text}");
        assert!(text.contains("# HELP canteen_requests_total "), "{text}");
        assert!(text.contains("# TYPE canteen_requests_total counter"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn a_removed_apps_series_go_away() {
        let m = Metrics::new();
        m.requests.get_or_create(&AppLabel::new("web")).inc();
        m.replicas.get_or_create(&AppLabel::new("web")).set(2);
        m.requests.get_or_create(&AppLabel::new("api")).inc();
        m.forget_app("web");
        let text = m.encode();
        assert!(!text.contains("app=\"web\""), "{text}");
        assert!(text.contains("app=\"api\""), "{text}");
    }

    /// `promtool check metrics` (Debian's `prometheus` package, which `scripts/test` installs
    /// in CI) finds nothing wrong with what the agent serves.
    #[test]
    fn promtool_checks_the_exposition() {
        let m = Metrics::new();
        m.requests.get_or_create(&AppLabel::new("web")).inc();
        m.errors.get_or_create(&AppLabel::new("web")).inc();
        m.latency.get_or_create(&AppLabel::new("web")).observe(0.002);
        m.replicas.get_or_create(&AppLabel::new("web")).set(2);
        m.gossip_refused.get_or_create(&ReasonLabel { reason: "unauthentic" }).inc();
        m.gossip_rejected.get_or_create(&InputLabel { input: "entry" }).inc();
        let mut child = match std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and promtool cannot run: {e}");
                eprintln!("\n!!!!!!!! SKIP promtool_checks_the_exposition: promtool cannot run ({e}) !!!!!!!!\n");
                return;
            }
        };
        use std::io::Write;
        child.stdin.take().unwrap().write_all(m.encode().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}\n{}", m.encode());
    }
}
