//! Fixtures shared by canteen's benchmarks: large clusters built the same way every time; and
//! the replay of a production trace (`trace`).

pub mod trace;

use canteen_core::model::{AppSpec, GpuRequest, NodeSpec, Resources};

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

/// `count` GPU servers named `gpu-00000` up, each with 64 cores, 512 GiB and eight GPUs: every
/// fifth of model `V100`, the others `A100`.
pub fn gpu_nodes(count: usize) -> Vec<NodeSpec> {
    (0..count)
        .map(|i| {
            let mut node = NodeSpec::new(&format!("gpu-{i:05}"), Resources::new(64_000, 524_288));
            node.gpus = 8;
            node.gpu_model = if i % 5 == 0 { "V100" } else { "A100" }.into();
            node
        })
        .collect()
}

/// `apps` apps of `replicas` replicas each, asking for GPUs as a GPU cluster's tasks do: a
/// quarter none (0.5 to 2 cores), a quarter one whole GPU, a quarter a share of one (a
/// quarter or a half), an eighth two whole GPUs, an eighth a tenth of one; one app in fifty
/// runs on `V100` only.
pub fn gpu_apps(apps: usize, replicas: u32) -> Vec<AppSpec> {
    (0..apps)
        .map(|i| {
            let cpu = 500 * (1 + (i as u64 / 4) % 4);
            let mut app = AppSpec::new(&format!("job-{i:05}"), "bench:latest", replicas, Resources::new(cpu, 4096));
            app.port = 10_000 + i as u16;
            app.gpu = match i % 8 {
                0 | 4 => GpuRequest::default(),
                1 | 5 => GpuRequest { gpus: 1, ..Default::default() },
                2 => GpuRequest { gpu_milli: 250, ..Default::default() },
                6 => GpuRequest { gpu_milli: 500, ..Default::default() },
                3 => GpuRequest { gpus: 2, ..Default::default() },
                _ => GpuRequest { gpu_milli: 100, ..Default::default() },
            };
            if i % 50 == 1 {
                app.gpu.gpu_models = vec!["V100".into()];
            }
            app
        })
        .collect()
}
