//! What each node has room for, and the one path by which a replica's reservation on a node
//! is made or given back (`hold`, `release`): its resources, a host port and its GPUs.

use crate::model::{Labels, NodeSpec, Resources};

use super::gpu::{GpuNeed, GpuRoom, Grant, Models};
use super::{FRESH, ObservedContainer, Plan, Policy};

/// What a node has left, at a glance: every policy reads it for every candidate node, so it
/// holds all a scan asks (a GPU's model aside) in 24 bytes, and a scan of ten thousand nodes
/// stays in a core's cache (32 bytes made a reschedule's scans 40% slower, and reading the GPU
/// table beside it, with a division per node, doubled a pass with GPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Room {
    /// Its memory less what its replicas reserve, in bytes; nothing once the node is dead.
    mem: u64,
    /// Its CPU less what its replicas reserve, in millicores (a node offers at most
    /// `limits::CPU_MILLIS_MAX`).
    cpu: u32,
    /// The sum of its used fractions of CPU and memory, in units of 2^-20 (at most 2^21).
    pub(super) score: u32,
    /// Its host ports free (see `Plan::ports_cap`; at most `limits::LOCAL_SLOTS_MAX`).
    pub(super) ports: u16,
    /// Thousandths of its GPUs in use, over all of them: 1000 when none is free, or it has
    /// none.
    pub(super) gpu_used: u16,
    /// The most thousandths free on one of its GPUs.
    share_max: u16,
    /// Its GPUs wholly free.
    whole: u8,
}

const _: () = assert!(std::mem::size_of::<Room>() == 24);
const _: () = assert!(crate::limits::CPU_MILLIS_MAX <= u32::MAX as u64);
const _: () = assert!(crate::limits::LOCAL_SLOTS_MAX <= u16::MAX as usize);

impl Room {
    /// A room of `free` resources, `ports` host ports, GPUs as `gpus` sums them up out of
    /// `gpu_total` thousandths, and allocation score `score`.
    pub(super) fn new(free: Resources, ports: u32, (gpus, gpu_total): (GpuRoom, u32), score: u64) -> Room {
        let used = gpu_total.saturating_sub(gpus.free);
        Room {
            mem: free.mem_bytes,
            cpu: u32::try_from(free.cpu_millis).unwrap_or(u32::MAX),
            score: score as u32,
            ports: ports.min(u32::from(u16::MAX)) as u16,
            gpu_used: if gpus.free == 0 { 1000 } else { (u64::from(used) * 1000 / u64::from(gpu_total)) as u16 },
            share_max: gpus.share_max,
            whole: gpus.whole,
        }
    }

    /// The room of `node`, with nothing placed on it and `ports` host ports.
    pub(super) fn empty(node: &NodeSpec, ports: u32) -> Room {
        let gpus = node.gpus.min(crate::limits::GPUS_PER_NODE_MAX);
        let total = gpus * crate::limits::GPU_MILLI;
        let room = GpuRoom { whole: gpus as u8, share_max: if gpus > 0 { 1000 } else { 0 }, free: total };
        Room::new(node.capacity, ports, (room, total), 0)
    }

    /// CPU and memory free.
    pub(super) fn res(&self) -> Resources {
        Resources { cpu_millis: u64::from(self.cpu), mem_bytes: self.mem }
    }

    /// Whether `need` fits in the CPU and memory free, and a host port is free.
    #[inline]
    pub(super) fn takes(&self, need: Resources) -> bool {
        need.cpu_millis <= u64::from(self.cpu) && need.mem_bytes <= self.mem && self.ports > 0
    }

    /// Whether `need` fits in the GPUs free (their model aside).
    #[inline]
    pub(super) fn takes_gpus(&self, need: GpuNeed) -> bool {
        match need {
            GpuNeed::None => true,
            GpuNeed::Whole(k) => self.whole >= k,
            GpuNeed::Share(m) => self.share_max >= m,
        }
    }
}

impl Plan {
    /// What decides which nodes app `a` may run on: its labels, and for an app that asks for
    /// GPUs, the models it allows.
    pub(super) fn eligibility(&self, a: usize) -> (Labels, Option<Models>) {
        let gpu = (self.needs[a].gpu != GpuNeed::None).then(|| self.needs[a].models.clone());
        (self.apps[a].constraints.clone(), gpu)
    }

    /// The live nodes app `a` may run on, whatever they have free: they carry its labels and,
    /// if it asks for GPUs, have GPUs of a model it allows.
    pub(super) fn eligible(&self, a: usize) -> Vec<u32> {
        let gpu = self.needs[a].gpu != GpuNeed::None;
        (0..self.nodes.len() as u32)
            .filter(|&n| {
                let n = n as usize;
                self.alive[n]
                    && self.apps[a].admits(&self.nodes[n].labels)
                    && (!gpu || self.needs[a].models.allows(self.gpus.model(n)))
            })
            .collect()
    }

    /// Whether one more replica of app `a` fits on node `n`: its resources, a host port and
    /// its GPUs are free there. Never true of a dead node, since every replica asks for some
    /// CPU and a dead node has none free.
    #[inline]
    pub(super) fn fits(&self, a: usize, n: usize) -> bool {
        let (room, need) = (&self.rooms[n], &self.needs[a]);
        room.takes(self.apps[a].resources)
            && room.takes_gpus(need.gpu)
            && (need.gpu == GpuNeed::None || need.models.allows(self.gpus.model(n)))
    }

    /// [`Plan::fits`] for app `a`, with what the app asks read once: the scans of every node
    /// call it for each.
    pub(super) fn fitter(&self, a: usize) -> impl Fn(&Plan, usize) -> bool + use<> {
        let (res, cpu_only) = (self.apps[a].resources, self.needs[a].gpu == GpuNeed::None);
        move |plan: &Plan, n: usize| plan.rooms[n].takes(res) && (cpu_only || plan.fits(a, n))
    }

    /// What container `c` of app `a` on node `n` holds there, if the node still admits it: it
    /// carries the app's labels, and its GPUs are ones a replica may hold on the node; one of
    /// the app's version holds what the version asks for, of a model it allows (an older one
    /// holds what it was given).
    pub(super) fn grant_of(&self, a: usize, n: usize, c: &ObservedContainer) -> Option<Grant> {
        if !self.apps[a].admits(&self.nodes[n].labels) {
            return None;
        }
        let grant = Grant::from_shares(&c.gpus, self.gpus.count(n))?;
        let need = &self.needs[a];
        let answers = grant.answers(need.gpu) && (need.gpu == GpuNeed::None || need.models.allows(self.gpus.model(n)));
        (answers || !self.apps[a].runs_as(c.version)).then_some(grant)
    }

    /// Reserves on node `n` what one replica holds: `resources`, a host port and the GPUs of
    /// `grant`; false, reserving nothing, when those GPUs are not free there.
    pub(super) fn hold(&mut self, n: usize, resources: Resources, grant: Grant) -> bool {
        if !self.gpus.take(n, grant) {
            return false;
        }
        self.ports_used[n] += 1;
        self.set_used(n, self.used[n].saturating_add(resources));
        true
    }

    /// Gives back what [`Plan::hold`] reserved.
    pub(super) fn release(&mut self, n: usize, resources: Resources, grant: Grant) {
        self.gpus.give(n, grant);
        self.ports_used[n] -= 1;
        self.set_used(n, self.used[n].saturating_sub(resources));
    }

    /// Slot `index` of app `a` holds the GPUs of `grant`. An app's row is made on its first
    /// grant: an app that asks for no GPU may still have old containers that hold some.
    pub(super) fn set_grant(&mut self, a: usize, index: u32, grant: Grant) {
        let row = &mut self.grants[a];
        if row.is_empty() {
            if grant == Grant::None {
                return;
            }
            row.resize(self.slots[a].len(), Grant::None);
        }
        row[index as usize] = grant;
    }

    /// The GPUs slot `index` of app `a` holds, which it holds no more.
    pub(super) fn take_grant(&mut self, a: usize, index: u32) -> Grant {
        self.grants[a].get_mut(index as usize).map(std::mem::take).unwrap_or_default()
    }

    /// Sets what node `n`'s replicas reserve, and what follows from it: its room.
    pub(super) fn set_used(&mut self, n: usize, used: Resources) {
        self.used[n] = used;
        let cap = self.nodes[n].capacity;
        let frac = |u: u64, c: u64| ((u128::from(u) << 20) / u128::from(c.max(1))) as u64;
        self.rooms[n] = if self.alive[n] {
            Room::new(
                cap.saturating_sub(used),
                self.ports_cap[n].saturating_sub(self.ports_used[n]),
                (self.gpus.room(n), self.gpus.count(n) * crate::limits::GPU_MILLI),
                frac(used.cpu_millis, cap.cpu_millis) + frac(used.mem_bytes, cap.mem_bytes),
            )
        } else {
            Room::default()
        };
        if let Some(w) = &mut self.workload {
            w.touch(n);
        }
    }

    /// Places slot `index` of app `a` on node `n`, where it fits, on the GPUs the policy
    /// picks there.
    pub(super) fn assign(&mut self, a: usize, index: u32, n: usize) {
        let grant = match self.needs[a].gpu {
            GpuNeed::None => Grant::None,
            _ if self.policy == Policy::Fgd => self.fgd_best_on(a, n).map_or(Grant::None, |(_, g)| g),
            need => self.gpus.best_fit(n, need),
        };
        self.assign_with(a, index, n, grant);
    }

    /// Places slot `index` of app `a` on node `n`, where it fits, on the GPUs of `grant`.
    pub(super) fn assign_with(&mut self, a: usize, index: u32, n: usize, grant: Grant) {
        debug_assert!(self.fits(a, n));
        let held = self.hold(n, self.apps[a].resources, grant);
        assert!(held, "a node where a replica fits has its GPUs free");
        self.set_grant(a, index, grant);
        self.slots[a][index as usize] = n as u32 | FRESH;
    }
}
