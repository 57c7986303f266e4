//! Compute device selection: CUDA when built with the `cuda` feature and a GPU is present,
//! otherwise the CPU, with a log line saying which and why.

use serde::{Deserialize, Serialize};

/// What the configuration asks for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DevicePref {
    /// CUDA if available, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// Picks the device. Never fails: an unavailable GPU falls back to the CPU with a warning.
pub fn select(pref: DevicePref) -> candle_core::Device {
    match pref {
        DevicePref::Cpu => candle_core::Device::Cpu,
        DevicePref::Auto | DevicePref::Cuda => cuda_or_cpu(pref == DevicePref::Cuda),
    }
}

#[cfg(feature = "cuda")]
fn cuda_or_cpu(explicit: bool) -> candle_core::Device {
    match candle_core::Device::new_cuda(0) {
        Ok(d) => {
            tracing::info!(device = "cuda:0", "using the GPU");
            d
        }
        Err(e) => {
            tracing::warn!(error = %e, requested = explicit, "CUDA not available at run time; falling back to the CPU");
            candle_core::Device::Cpu
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_or_cpu(explicit: bool) -> candle_core::Device {
    if explicit {
        tracing::warn!("device = \"cuda\" requested but this binary was built without the `cuda` feature; using the CPU");
    }
    candle_core::Device::Cpu
}

/// A short description for the birth document and `doctor`.
pub fn describe(d: &candle_core::Device) -> &'static str {
    if d.is_cuda() {
        "cuda"
    } else {
        "cpu"
    }
}
