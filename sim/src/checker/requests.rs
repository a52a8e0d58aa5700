//! The request path: messages that did not decode, the success ratio and the latency of the
//! clients' requests.

use crate::report::{Check, Requests};
use crate::scenario::Expect;
use crate::world::World;

/// Every gossip message decoded, and no node refused one.
pub fn wire_format_check(w: &World) -> Check {
    if w.truth.bad_messages == 0 {
        Check::pass("wire format", "every gossip message decoded".into())
    } else {
        Check::fail("wire format", format!("{} messages did not decode or were refused", w.truth.bad_messages))
    }
}

/// The success ratio, at least the scenario's.
pub fn success_check(e: &Expect, requests: &Requests) -> Option<Check> {
    let min = e.success_ratio_min?;
    let detail = format!("{:.5} of {} requests succeeded (min {min})", requests.success_ratio, requests.total);
    Some(Check::new("success ratio", requests.success_ratio >= min, detail))
}

/// The p99 latency, at most the scenario's.
pub fn latency_check(e: &Expect, requests: &Requests) -> Option<Check> {
    let max = e.latency_ms_p99_max?;
    let detail = format!("p99 {:.1} ms (max {max})", requests.latency_ms_p99);
    Some(Check::new("latency p99", requests.latency_ms_p99 <= max, detail))
}
