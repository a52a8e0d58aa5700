//! Backend pickers: which replica serves the next request.
//!
//! Every node's proxy picks among the same replicas, and the simulator must replay those picks bit
//! for bit, so a pick is a function of the backend set, the in-flight counts and a seeded RNG, and
//! nothing else. The set changes under the picker (replicas come and go, a connection fails), so
//! each picker carries on across a change instead of starting over: round-robin resumes after the
//! last key it picked, smooth weighted round-robin keeps its running weights, and in-flight counts
//! survive for the backends that stay. Backends live in a `Vec` sorted by key, so a pick scans
//! contiguous memory and never allocates.

use crate::limits;
use crate::model::PickerKind;
use crate::rng::SplitMix64;

/// One backend and what the pickers track about it.
#[derive(Clone, Debug)]
struct Backend<K> {
    key: K,
    /// Relative share for the weighted picker; at least 1.
    weight: u32,
    /// Requests sent and not yet finished.
    in_flight: u32,
    /// Smooth weighted round-robin's running weight; unused by the other pickers.
    current_weight: i64,
}

/// Chooses a backend for each request, as its [`PickerKind`] says.
///
/// `K` names a backend (a slot id, a socket address); picks return a clone of it.
#[derive(Clone, Debug)]
pub struct Balancer<K> {
    kind: PickerKind,
    /// Sorted by key, keys unique.
    backends: Vec<Backend<K>>,
    /// Index of the backend after the last one picked: where round-robin goes next and where
    /// least-in-flight starts looking. Always `< backends.len()`, or 0 when there are none.
    cursor: usize,
    /// Sum of all weights.
    total_weight: u64,
    rng: SplitMix64,
}

impl<K: Ord + Clone> Balancer<K> {
    /// An empty balancer. `seed` drives power-of-two-choices draws and where round-robin starts,
    /// so that nodes given different seeds do not all send their first request to the same backend.
    pub fn new(kind: PickerKind, seed: u64) -> Self {
        Balancer { kind, backends: Vec::new(), cursor: 0, total_weight: 0, rng: SplitMix64::new(seed) }
    }

    /// The picker in use.
    pub fn kind(&self) -> PickerKind {
        self.kind
    }

    /// Replaces the backend set with `backends`, given as `(key, weight)`.
    ///
    /// Backends that stay keep their in-flight counts; a removed one is never picked again; a new
    /// one takes its turn at once (round-robin continues after the last key it picked, so a new key
    /// is reached within one pass). Panics on a weight of 0, a duplicate key, or more than
    /// [`limits::BACKENDS_MAX`] backends: those are the caller's mistakes.
    pub fn set_backends(&mut self, backends: impl IntoIterator<Item = (K, u32)>) {
        let mut next: Vec<Backend<K>> = backends
            .into_iter()
            .map(|(key, weight)| {
                assert!(weight >= 1, "a backend's weight must be at least 1");
                Backend { key, weight, in_flight: 0, current_weight: 0 }
            })
            .collect();
        assert!(
            next.len() <= limits::BACKENDS_MAX,
            "{} backends; at most {} allowed",
            next.len(),
            limits::BACKENDS_MAX
        );
        next.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        assert!(next.windows(2).all(|w| w[0].key != w[1].key), "backend keys must be unique");
        for backend in &mut next {
            if let Ok(i) = self.index_of(&backend.key) {
                backend.in_flight = self.backends[i].in_flight;
                backend.current_weight = self.backends[i].current_weight;
            }
        }
        self.cursor = match self.backends.len() {
            _ if next.is_empty() => 0,
            0 => self.rng.below(next.len()),
            len => {
                let last_picked = &self.backends[(self.cursor + len - 1) % len].key;
                let after = next.partition_point(|b| b.key <= *last_picked);
                if after == next.len() { 0 } else { after }
            }
        };
        self.backends = next;
        self.total_weight = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        self.recenter_current_weights();
        self.check_invariants();
    }

    /// Removes `k` at once (after a connection error, say) until a later [`set_backends`]
    /// includes it again. Its in-flight count is forgotten. Unknown keys are ignored.
    ///
    /// [`set_backends`]: Balancer::set_backends
    pub fn eject(&mut self, k: &K) {
        let Ok(i) = self.index_of(k) else { return };
        let removed = self.backends.remove(i);
        self.total_weight -= u64::from(removed.weight);
        if i < self.cursor {
            self.cursor -= 1;
        }
        if self.cursor >= self.backends.len() {
            self.cursor = 0;
        }
        self.recenter_current_weights();
        self.check_invariants();
    }

    /// The backend for the next request, or `None` when there are none.
    pub fn pick(&mut self) -> Option<K> {
        let i = self.pick_index(None)?;
        Some(self.backends[i].key.clone())
    }

    /// The backend for a retry elsewhere: any but `exclude`, or `None` when `exclude` is the only
    /// one (or there are none).
    pub fn pick_excluding(&mut self, exclude: &K) -> Option<K> {
        let excluded = self.index_of(exclude).ok();
        let i = self.pick_index(excluded)?;
        Some(self.backends[i].key.clone())
    }

    /// Notes a request sent to `k`. Unknown keys are ignored.
    pub fn request_started(&mut self, k: &K) {
        if let Ok(i) = self.index_of(k) {
            let in_flight = &mut self.backends[i].in_flight;
            *in_flight = in_flight.saturating_add(1);
        }
    }

    /// Notes a request to `k` finished, however it ended. Unknown keys are ignored; a count
    /// never goes below zero.
    pub fn request_finished(&mut self, k: &K) {
        if let Ok(i) = self.index_of(k) {
            let in_flight = &mut self.backends[i].in_flight;
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// Requests in flight to `k`, or `None` if `k` is not a backend.
    pub fn in_flight(&self, k: &K) -> Option<u32> {
        self.index_of(k).ok().map(|i| self.backends[i].in_flight)
    }

    /// Whether `k` is a backend now.
    pub fn contains(&self, k: &K) -> bool {
        self.index_of(k).is_ok()
    }

    /// How many backends there are.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether there are no backends.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The backends' keys, in key order.
    pub fn backends(&self) -> impl ExactSizeIterator<Item = &K> + '_ {
        self.backends.iter().map(|b| &b.key)
    }

    fn index_of(&self, k: &K) -> Result<usize, usize> {
        self.backends.binary_search_by(|b| b.key.cmp(k))
    }

    /// The index picked, skipping `excluded`; moves the cursor past it.
    fn pick_index(&mut self, excluded: Option<usize>) -> Option<usize> {
        let len = self.backends.len();
        let candidates = len - usize::from(excluded.is_some());
        if candidates == 0 {
            return None;
        }
        let picked = match self.kind {
            PickerKind::RoundRobin => {
                if Some(self.cursor) == excluded {
                    (self.cursor + 1) % len
                } else {
                    self.cursor
                }
            }
            PickerKind::LeastInFlight => {
                // Scanning from the cursor and keeping the first minimum makes ties go round-robin.
                let mut best = usize::MAX;
                let mut best_in_flight = u32::MAX;
                for i in (self.cursor..len).chain(0..self.cursor) {
                    let in_flight = self.backends[i].in_flight;
                    if Some(i) != excluded && (best == usize::MAX || in_flight < best_in_flight) {
                        best = i;
                        best_in_flight = in_flight;
                    }
                }
                best
            }
            PickerKind::PowerOfTwoChoices => {
                // Draw among the candidates, then skip over the excluded index.
                let skip = |c: usize| if excluded.is_some_and(|e| c >= e) { c + 1 } else { c };
                if candidates == 1 {
                    skip(0)
                } else {
                    let first = self.rng.below(candidates);
                    let mut second = self.rng.below(candidates - 1);
                    if second >= first {
                        second += 1;
                    }
                    let (first, second) = (skip(first), skip(second));
                    if self.backends[second].in_flight < self.backends[first].in_flight { second } else { first }
                }
            }
            PickerKind::Weighted => {
                // nginx's smooth weighted round-robin; ties go to the first in key order.
                let mut best = usize::MAX;
                let mut best_weight = i64::MIN;
                let mut total_weight = 0i64;
                for (i, backend) in self.backends.iter_mut().enumerate() {
                    if Some(i) == excluded {
                        continue;
                    }
                    backend.current_weight += i64::from(backend.weight);
                    total_weight += i64::from(backend.weight);
                    if backend.current_weight > best_weight {
                        best = i;
                        best_weight = backend.current_weight;
                    }
                }
                self.backends[best].current_weight -= total_weight;
                best
            }
        };
        self.cursor = if picked + 1 == len { 0 } else { picked + 1 };
        assert!(Some(picked) != excluded, "the excluded backend is never picked");
        self.check_invariants();
        Some(picked)
    }

    /// Shifts running weights so they sum to zero again after backends came or went, which keeps
    /// them bounded and the weighted picker's shares exact; the order among them barely moves.
    fn recenter_current_weights(&mut self) {
        let len = self.backends.len() as i128;
        if len == 0 {
            return;
        }
        let sum: i128 = self.backends.iter().map(|b| i128::from(b.current_weight)).sum();
        let (quotient, remainder) = ((sum / len) as i64, (sum % len) as i64);
        for (i, backend) in self.backends.iter_mut().enumerate() {
            backend.current_weight -= quotient;
            if (i as i64) < remainder.abs() {
                backend.current_weight -= remainder.signum();
            }
        }
    }

    fn check_invariants(&self) {
        assert!(self.cursor < self.backends.len() || (self.cursor == 0 && self.backends.is_empty()));
        assert!(self.backends.len() <= limits::BACKENDS_MAX);
        debug_assert!(self.backends.windows(2).all(|w| w[0].key < w[1].key), "sorted, keys unique");
        debug_assert_eq!(self.total_weight, self.backends.iter().map(|b| u64::from(b.weight)).sum::<u64>());
        debug_assert_eq!(self.backends.iter().map(|b| i128::from(b.current_weight)).sum::<i128>(), 0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn balancer(kind: PickerKind, keys: impl IntoIterator<Item = u32>) -> Balancer<u32> {
        let mut b = Balancer::new(kind, 42);
        b.set_backends(keys.into_iter().map(|k| (k, 1)));
        b
    }

    fn picks(b: &mut Balancer<u32>, count: usize) -> Vec<u32> {
        (0..count).map(|_| b.pick().expect("backends present")).collect()
    }

    fn counts(picked: &[u32]) -> BTreeMap<u32, usize> {
        let mut counts = BTreeMap::new();
        for k in picked {
            *counts.entry(*k).or_default() += 1;
        }
        counts
    }

    /// The key after `k` in `keys` (sorted), wrapping around.
    fn successor(keys: &[u32], k: u32) -> u32 {
        *keys.iter().find(|&&x| x > k).unwrap_or(&keys[0])
    }

    #[test]
    fn an_empty_balancer_picks_nothing() {
        for (_, kind) in PickerKind::ALL {
            let mut b = balancer(kind, []);
            assert_eq!(b.pick(), None);
            assert_eq!(b.pick_excluding(&1), None);
            assert!(b.is_empty());
        }
    }

    #[test]
    fn round_robin_takes_each_backend_in_key_order() {
        let mut b = balancer(PickerKind::RoundRobin, [30, 10, 20]);
        let picked = picks(&mut b, 6);
        for pair in picked.windows(2) {
            assert_eq!(pair[1], successor(&[10, 20, 30], pair[0]));
        }
    }

    #[test]
    fn round_robin_start_depends_on_the_seed_only() {
        let first = |seed| {
            let mut b = Balancer::new(PickerKind::RoundRobin, seed);
            b.set_backends((0..100u32).map(|k| (k, 1)));
            b.pick().unwrap()
        };
        assert_eq!(first(1), first(1));
        assert!((0..20).map(first).collect::<std::collections::BTreeSet<_>>().len() > 1);
    }

    #[test]
    fn round_robin_continues_after_the_last_key_when_the_set_changes() {
        let mut b = balancer(PickerKind::RoundRobin, [10, 20, 30, 40]);
        while b.pick() != Some(20) {}
        b.set_backends([(10, 1), (25, 1), (40, 1)]);
        assert_eq!(picks(&mut b, 4), [25, 40, 10, 25]);
    }

    #[test]
    fn least_in_flight_picks_the_least_loaded() {
        let mut b = balancer(PickerKind::LeastInFlight, [1, 2, 3]);
        for (k, load) in [(1, 2), (2, 0), (3, 1)] {
            (0..load).for_each(|_| b.request_started(&k));
        }
        assert_eq!(b.pick(), Some(2));
        b.request_started(&2);
        b.request_started(&2);
        assert_eq!(b.pick(), Some(3));
    }

    #[test]
    fn least_in_flight_spreads_equal_load_round_robin() {
        let mut b = balancer(PickerKind::LeastInFlight, [1, 2, 3]);
        let picked = picks(&mut b, 9);
        assert_eq!(counts(&picked).values().copied().collect::<Vec<_>>(), [3, 3, 3]);
        for pair in picked.windows(2) {
            assert_eq!(pair[1], successor(&[1, 2, 3], pair[0]));
        }
    }

    #[test]
    fn power_of_two_choices_picks_the_less_loaded_of_two() {
        let mut b = balancer(PickerKind::PowerOfTwoChoices, [1, 2]);
        b.request_started(&1);
        assert!(picks(&mut b, 50).iter().all(|&k| k == 2));
    }

    #[test]
    fn power_of_two_choices_never_picks_the_single_most_loaded() {
        let mut b = balancer(PickerKind::PowerOfTwoChoices, 0..10);
        b.request_started(&7);
        let picked = picks(&mut b, 1000);
        assert!(!picked.contains(&7));
        assert_eq!(counts(&picked).len(), 9, "every other backend is reached");
    }

    #[test]
    fn power_of_two_choices_is_reproducible_from_its_seed() {
        let run = || picks(&mut balancer(PickerKind::PowerOfTwoChoices, 0..20), 100);
        assert_eq!(run(), run());
    }

    #[test]
    fn weighted_is_smooth_like_nginx() {
        let mut b = Balancer::new(PickerKind::Weighted, 0);
        b.set_backends([('a', 5), ('b', 1), ('c', 1)]);
        let picked: String = (0..7).map(|_| b.pick().unwrap()).collect();
        assert_eq!(picked, "aabacaa");
    }

    #[test]
    fn pick_excluding_goes_elsewhere_or_nowhere() {
        for (_, kind) in PickerKind::ALL {
            let mut b = balancer(kind, [1, 2, 3]);
            for _ in 0..20 {
                assert_ne!(b.pick_excluding(&2), Some(2), "{kind:?}");
            }
            assert!(b.pick_excluding(&99).is_some(), "an unknown exclusion excludes nothing");
            b.set_backends([(2, 1)]);
            assert_eq!(b.pick_excluding(&2), None, "{kind:?}");
            assert_eq!(b.pick(), Some(2));
        }
    }

    #[test]
    fn in_flight_counts_survive_a_set_change_and_never_underflow() {
        let mut b = balancer(PickerKind::LeastInFlight, [1, 2]);
        b.request_started(&1);
        b.request_started(&1);
        b.request_finished(&2);
        b.request_started(&9);
        assert_eq!(b.in_flight(&2), Some(0));
        assert_eq!(b.in_flight(&9), None);
        b.set_backends([(1, 1), (3, 1)]);
        assert_eq!(b.in_flight(&1), Some(2));
        assert_eq!(b.in_flight(&3), Some(0));
    }

    #[test]
    fn ejected_backend_is_skipped_until_set_again() {
        for (_, kind) in PickerKind::ALL {
            let mut b = balancer(kind, [1, 2, 3]);
            b.eject(&2);
            b.eject(&42);
            assert_eq!(b.len(), 2);
            assert!(!picks(&mut b, 30).contains(&2), "{kind:?}");
            b.set_backends([(1, 1), (2, 1), (3, 1)]);
            assert!(picks(&mut b, 30).contains(&2), "{kind:?}");
        }
    }

    #[test]
    #[should_panic(expected = "unique")]
    fn duplicate_keys_are_a_programming_error() {
        balancer(PickerKind::RoundRobin, [1, 1]);
    }

    fn kind() -> impl Strategy<Value = PickerKind> {
        prop::sample::select(PickerKind::ALL.map(|(_, k)| k).to_vec())
    }

    fn key_set(max_len: usize) -> impl Strategy<Value = Vec<u32>> {
        prop::collection::btree_set(0..64u32, 1..=max_len).prop_map(|s| s.into_iter().collect())
    }

    proptest! {
        #[test]
        fn round_robin_is_fair_over_every_full_cycle(keys in key_set(20), rounds in 1..5usize, seed: u64) {
            let mut b = Balancer::new(PickerKind::RoundRobin, seed);
            b.set_backends(keys.iter().map(|&k| (k, 1)));
            let n = keys.len();
            let picked = picks(&mut b, n * rounds);
            prop_assert!(counts(&picked).values().all(|&c| c == rounds));
            prop_assert_eq!(counts(&picked).len(), n);
            for window in picked.windows(n) {
                prop_assert_eq!(counts(window).len(), n, "each backend once in every {} picks", n);
            }
        }

        #[test]
        fn removed_backend_is_never_picked_again(
            kind in kind(), before in key_set(16), after in key_set(16), picks_before in 0..40usize, seed: u64,
        ) {
            let mut b = Balancer::new(kind, seed);
            b.set_backends(before.iter().map(|&k| (k, 1 + k % 3)));
            for _ in 0..picks_before {
                let k = b.pick().unwrap();
                b.request_started(&k);
            }
            b.set_backends(after.iter().map(|&k| (k, 1 + k % 3)));
            for _ in 0..100 {
                let k = b.pick().unwrap();
                prop_assert!(after.contains(&k));
                let retry = b.pick_excluding(&k);
                prop_assert!(retry.is_none_or(|r| r != k && after.contains(&r)));
            }
        }

        #[test]
        fn newly_added_backend_is_picked_within_one_round_robin_pass(
            before in key_set(16), added in key_set(8), picks_before in 0..40usize, seed: u64,
        ) {
            let mut b = Balancer::new(PickerKind::RoundRobin, seed);
            b.set_backends(before.iter().map(|&k| (k, 1)));
            picks(&mut b, picks_before);
            let all: std::collections::BTreeSet<u32> = before.iter().chain(&added).copied().collect();
            b.set_backends(all.iter().map(|&k| (k, 1)));
            let picked = picks(&mut b, all.len());
            for k in &added {
                prop_assert!(picked.contains(k), "{} not picked in {:?}", k, picked);
            }
        }

        #[test]
        fn weighted_picks_are_proportional_to_weights_over_a_full_cycle(
            weights in prop::collection::vec(1..10u32, 1..10), rounds in 1..4usize,
        ) {
            let mut b = Balancer::new(PickerKind::Weighted, 0);
            b.set_backends(weights.iter().enumerate().map(|(k, &w)| (k as u32, w)));
            let total: usize = weights.iter().map(|&w| w as usize).sum();
            for _ in 0..rounds {
                let picked = counts(&picks(&mut b, total));
                for (k, &w) in weights.iter().enumerate() {
                    prop_assert_eq!(picked.get(&(k as u32)).copied().unwrap_or(0), w as usize);
                }
            }
        }

        #[test]
        fn least_in_flight_never_picks_above_the_minimum(
            keys in key_set(12), ops in prop::collection::vec((0..3u8, 0..64u32), 1..200), seed: u64,
        ) {
            let mut b = Balancer::new(PickerKind::LeastInFlight, seed);
            b.set_backends(keys.iter().map(|&k| (k, 1)));
            for (op, key) in ops {
                match op {
                    0 => b.request_finished(&key),
                    1 => b.request_started(&key),
                    _ => {
                        let min = keys.iter().map(|k| b.in_flight(k).unwrap()).min().unwrap();
                        let k = b.pick().unwrap();
                        prop_assert_eq!(b.in_flight(&k), Some(min));
                        b.request_started(&k);
                    }
                }
            }
        }
    }
}
