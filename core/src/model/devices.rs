//! What a node offers beside CPU and memory, GPUs and host ports, and what a replica asks
//! for and holds of them, with the checks of both.

use serde::{Deserialize, Serialize};

use super::{AppSpec, SpecError, invalid};
use crate::limits;

/// What one replica asks of GPUs: whole ones, held alone, or a share of one (`gpus`,
/// `gpu_milli` and `gpu_models` in a cluster file). The default asks for none.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GpuRequest {
    /// Whole GPUs, each held by this replica alone.
    pub gpus: u32,
    /// A share of one GPU in thousandths, `0 < gpu_milli < 1000`; 0 when it asks for none.
    pub gpu_milli: u32,
    /// The GPU models it may run on, any one of them; empty allows every model.
    pub gpu_models: Vec<String>,
}

impl GpuRequest {
    /// Whether the replica asks for no GPU.
    pub fn is_none(&self) -> bool {
        self.gpus == 0 && self.gpu_milli == 0
    }

    /// Thousandths of a GPU asked for in all.
    pub fn milli(&self) -> u64 {
        u64::from(self.gpus) * u64::from(limits::GPU_MILLI) + u64::from(self.gpu_milli)
    }

    /// Whether a GPU of `model` is one the replica may run on.
    pub fn allows(&self, model: &str) -> bool {
        self.gpu_models.is_empty() || self.gpu_models.iter().any(|m| m == model)
    }

    /// Checks the request on its own; [`check_gpu_models_known`] checks its models against a
    /// cluster's.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.gpus > 0 && self.gpu_milli > 0 {
            return Err(invalid(
                "gpu_milli",
                format!(
                    "both gpus ({}) and gpu_milli ({}) are given: ask for whole GPUs or a share of one, not both",
                    self.gpus, self.gpu_milli
                ),
            ));
        }
        if self.gpus > limits::GPUS_PER_NODE_MAX {
            return Err(invalid(
                "gpus",
                format!("{} is more than a node may offer ({})", self.gpus, limits::GPUS_PER_NODE_MAX),
            ));
        }
        if self.gpu_milli >= limits::GPU_MILLI {
            return Err(invalid(
                "gpu_milli",
                format!(
                    "{} is not a share of one GPU: allowed 1 to {}; for whole GPUs use gpus",
                    self.gpu_milli,
                    limits::GPU_MILLI - 1
                ),
            ));
        }
        if !self.gpu_models.is_empty() && self.is_none() {
            return Err(invalid("gpu_models", "given for an app that asks for no GPU (gpus or gpu_milli)".into()));
        }
        if self.gpu_models.len() > limits::GPU_MODELS_PER_APP_MAX {
            return Err(invalid(
                "gpu_models",
                format!("{} models, at most {} are allowed", self.gpu_models.len(), limits::GPU_MODELS_PER_APP_MAX),
            ));
        }
        for m in &self.gpu_models {
            validate_gpu_model(m).map_err(|p| invalid("gpu_models", p))?;
        }
        Ok(())
    }
}

/// Checks a GPU model name: 1 to 32 letters, digits, `-`, `_` and `.`.
pub fn validate_gpu_model(model: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if model.is_empty() || model.len() > limits::GPU_MODEL_LEN_MAX || !model.chars().all(ok) {
        return Err(format!(
            "GPU model {model:?} is not allowed: 1 to {} letters, digits, '-', '_' and '.'",
            limits::GPU_MODEL_LEN_MAX
        ));
    }
    Ok(())
}

/// Refuses an app that allows only GPU models no node of the cluster has (`known`): a typo
/// would otherwise leave its replicas unplaced for ever.
pub fn check_gpu_models_known<'a>(
    app: &AppSpec,
    known: impl IntoIterator<Item = &'a str> + Clone,
) -> Result<(), SpecError> {
    for m in &app.gpu.gpu_models {
        if !known.clone().into_iter().any(|k| k == m) {
            let mut list: Vec<&str> = known.clone().into_iter().collect();
            list.sort_unstable();
            list.dedup();
            let allowed = if list.is_empty() { "none: no node has GPUs".to_owned() } else { list.join(", ") };
            return Err(invalid("gpu_models", format!("unknown GPU model {m:?}; the cluster's models: {allowed}")));
        }
    }
    Ok(())
}

/// One GPU a replica holds: its index on the node and the thousandths of it held
/// (`limits::GPU_MILLI` for a whole one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GpuShare {
    /// The GPU's index on its node, `0..NodeSpec::gpus`.
    pub index: u32,
    /// Thousandths of it held.
    pub milli: u32,
}

impl GpuShare {
    /// Whether one replica may hold `gpus` on a node whose GPUs have `held` thousandths held
    /// already (one entry per GPU): whole GPUs each once, or one share below a whole, on GPUs
    /// of the node, none held past its whole. If so, adds them to `held`.
    pub fn fit_in(gpus: &[GpuShare], held: &mut [u32]) -> bool {
        let shares = gpus.iter().filter(|g| g.milli < limits::GPU_MILLI).count();
        let shape = gpus.len() <= 1 || shares == 0;
        let each = gpus.iter().enumerate().all(|(k, g)| {
            g.milli > 0
                && g.milli <= limits::GPU_MILLI
                && !gpus[..k].iter().any(|h| h.index == g.index)
                && held.get(g.index as usize).is_some_and(|h| h + g.milli <= limits::GPU_MILLI)
        });
        if !(shape && each) {
            return false;
        }
        for g in gpus {
            held[g.index as usize] += g.milli;
        }
        true
    }
}

/// A range of host ports, `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostPorts {
    /// The lowest.
    pub min: u16,
    /// The highest.
    pub max: u16,
}

impl Default for HostPorts {
    /// Ports from 8000 up, as the design card says: a thousand of them.
    fn default() -> Self {
        HostPorts { min: 8000, max: 8999 }
    }
}

impl HostPorts {
    /// How many ports the range holds.
    pub fn len(self) -> u32 {
        if self.min > self.max { 0 } else { u32::from(self.max - self.min) + 1 }
    }

    /// Whether the range holds no port.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        (self.min..=self.max).contains(&port)
    }
}
