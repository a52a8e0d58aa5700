//! The registry's hybrid logical clock (Kulkarni et al., "Logical Physical Clocks").

use super::Version;
use crate::time::Time;

/// A hybrid logical clock: never goes backwards, stays close to the wall clock, and once it has
/// observed a version it only issues later ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HlcClock {
    wall_ms: u64,
    logical: u32,
}

impl HlcClock {
    /// A clock that has seen nothing yet.
    pub const fn new() -> HlcClock {
        HlcClock { wall_ms: 0, logical: 0 }
    }

    /// The last `(wall_ms, logical)` the clock issued or moved to.
    pub fn last(&self) -> (u64, u32) {
        (self.wall_ms, self.logical)
    }

    /// Ticks for a local event at `now` and returns the event's `(wall_ms, logical)`, strictly
    /// after everything the clock issued or observed before, even when `now` went backwards.
    pub fn now(&mut self, now: Time) -> (u64, u32) {
        let before = self.last();
        if now.as_millis() > self.wall_ms {
            self.wall_ms = now.as_millis();
            self.logical = 0;
        } else {
            self.tick();
        }
        assert!(self.last() > before, "the clock only moves forward");
        self.last()
    }

    /// Takes in a version received at `now`: afterwards the clock is strictly after both what it
    /// was and `remote`.
    pub fn observe(&mut self, now: Time, remote: &Version) {
        let before = self.last();
        let wall_ms = self.wall_ms.max(remote.wall_ms).max(now.as_millis());
        match (wall_ms == self.wall_ms, wall_ms == remote.wall_ms) {
            (true, true) => {
                self.logical = self.logical.max(remote.logical);
                self.tick();
            }
            (true, false) => self.tick(),
            (false, true) => {
                self.wall_ms = wall_ms;
                self.logical = remote.logical;
                self.tick();
            }
            (false, false) => {
                self.wall_ms = wall_ms;
                self.logical = 0;
            }
        }
        assert!(self.last() > before, "the clock only moves forward");
        assert!(self.last() > (remote.wall_ms, remote.logical), "the clock is past what it observed");
    }

    /// One logical step; a full counter carries into the wall time, one millisecond ahead.
    fn tick(&mut self) {
        match self.logical.checked_add(1) {
            Some(logical) => self.logical = logical,
            None => {
                self.wall_ms = self.wall_ms.checked_add(1).expect("a wall time near u64::MAX ms is a driver bug");
                self.logical = 0;
            }
        }
    }
}
