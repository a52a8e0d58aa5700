//! Fixtures shared by canteen's benchmarks: large clusters built the same way every time; and
//! the replay of a production trace (`trace`).

pub mod trace;

use canteen_core::model::{AppSpec, NodeSpec, Resources};

/// `count` identical nodes named `node-00000` up, each with 16 cores and 64 GiB; every tenth
/// carries `disk = ssd`.
pub fn nodes(count: usize) -> Vec<NodeSpec> {
    (0..count)
        .map(|i| {
            let mut node = NodeSpec::new(&format!("node-{i:05}"), Resources::new(16_000, 65_536));
            if i % 10 == 0 {
                node.labels.insert("disk".into(), "ssd".into());
            }
            node
        })
        .collect()
}

/// `apps` apps of `replicas` replicas each, in four sizes (100m to 800m CPU, 128 to 1024 MiB),
/// with priorities 0 to 3; one app in fifty requires `disk = ssd`.
pub fn apps(apps: usize, replicas: u32) -> Vec<AppSpec> {
    (0..apps)
        .map(|i| {
            let size = 1u64 << (i % 4);
            let mut app =
                AppSpec::new(&format!("app-{i:05}"), "bench:latest", replicas, Resources::new(100 * size, 128 * size));
            app.priority = (i % 4) as i32;
            app.port = 10_000 + i as u16;
            if i % 50 == 0 {
                app.constraints.insert("disk".into(), "ssd".into());
            }
            app
        })
        .collect()
}
