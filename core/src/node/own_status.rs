//! This node's own status: when it is written, and when a change waits to go out with others
//! (`NodeConfig::status_batch_ms`).

use std::time::Duration;

use crate::time::Time;

use super::NodeStatus;
use super::io::Effects;
use super::timers::Timer;

/// Whether a status change is held back, and the life the status was last written by.
#[derive(Debug, Default)]
pub(super) struct OwnStatus {
    /// The life this node's status was last written with.
    written_life: Option<u64>,
    /// A change waits for the `PublishStatus` timer.
    held: bool,
}

impl OwnStatus {
    /// Holds a change back for `batch_ms`, unless one is held already (its timer carries both).
    pub(super) fn hold(&mut self, now: Time, batch_ms: u64, out: &mut Effects) {
        if !self.held {
            self.held = true;
            out.schedule(now + Duration::from_millis(batch_ms), Timer::PublishStatus);
        }
    }

    /// Whether a change is held back.
    pub(super) fn is_held(&self) -> bool {
        self.held
    }

    /// The status is being published: whatever was held goes with it. Returns whether
    /// something was held.
    pub(super) fn take_held(&mut self) -> bool {
        std::mem::replace(&mut self.held, false)
    }

    /// The status was written by `life`.
    pub(super) fn written(&mut self, life: u64) {
        self.written_life = Some(life);
    }

    /// Whether the status was written by a life other than `life` (this node was declared down
    /// and came back under a renewed identity): peers that know the new life would count the
    /// old status as none.
    pub(super) fn is_of_another_life(&self, life: u64) -> bool {
        self.written_life.is_some_and(|written| written != life)
    }

    /// Whether `new` says nothing peers act on that `old` does not: which slots run here, on
    /// which ports, in which state, at which version, ready or not. A change of container id alone (a start confirmed, the state
    /// still `Starting`) waits for the next change that matters, and goes out with it: a cold
    /// start of a large cluster spreads a third fewer versions.
    pub(super) fn same_for_peers(old: &NodeStatus, new: &NodeStatus) -> bool {
        old.spec == new.spec
            && old.addr == new.addr
            && old.generation == new.generation
            && old.containers.len() == new.containers.len()
            && old.containers.iter().zip(&new.containers).all(|(a, b)| {
                a.slot == b.slot
                    && a.host_port == b.host_port
                    && a.state == b.state
                    && a.version == b.version
                    && a.ready == b.ready
            })
    }
}
