//! Compute device selection: CUDA when built with the `cuda` feature and a GPU is present,
//! otherwise the CPU, with a log line saying which and why. Every concern that picks a device
//! goes through [`select`] (the denoiser through `denoise::select_device`, which maps the
//! `denoise.device` string onto a [`DevicePref`]).

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

/// A device name that is none of `auto`, `cpu`, `cuda`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device {0:?}: expected \"cpu\", \"cuda\" or \"auto\"")]
pub struct UnknownDevice(pub String);

impl std::str::FromStr for DevicePref {
    type Err = UnknownDevice;

    /// `cpu`, `cuda` or `auto` (exactly, lower case: the spelling of the configuration file).
    fn from_str(s: &str) -> Result<Self, UnknownDevice> {
        match s {
            "auto" => Ok(DevicePref::Auto),
            "cpu" => Ok(DevicePref::Cpu),
            "cuda" => Ok(DevicePref::Cuda),
            other => Err(UnknownDevice(other.to_string())),
        }
    }
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
            // candle attaches a backtrace when RUST_BACKTRACE is set: the reason alone is enough here
            let reason = match &e {
                candle_core::Error::WithBacktrace { inner, .. } => inner.to_string(),
                other => other.to_string(),
            };
            tracing::warn!(error = %reason, requested = explicit, "CUDA not available at run time; falling back to the CPU");
            candle_core::Device::Cpu
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_or_cpu(explicit: bool) -> candle_core::Device {
    if explicit {
        tracing::warn!(
            "device = \"cuda\" requested but this binary was built without the `cuda` feature; using the CPU"
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_names_are_refused_clearly() {
        assert_eq!("cpu".parse(), Ok(DevicePref::Cpu));
        assert_eq!("cuda".parse(), Ok(DevicePref::Cuda));
        assert_eq!("auto".parse(), Ok(DevicePref::Auto));
        let e = "gpu".parse::<DevicePref>().unwrap_err();
        assert_eq!(e, UnknownDevice("gpu".into()));
        assert_eq!(e.to_string(), "unknown device \"gpu\": expected \"cpu\", \"cuda\" or \"auto\"");
        assert!("CUDA".parse::<DevicePref>().is_err(), "the configuration's spelling only");
    }

    #[test]
    fn cpu_is_the_cpu_and_cuda_falls_back_without_a_gpu() {
        assert_eq!(describe(&select(DevicePref::Cpu)), "cpu");
        if !cfg!(feature = "cuda") {
            assert_eq!(describe(&select(DevicePref::Cuda)), "cpu");
            assert_eq!(describe(&select(DevicePref::Auto)), "cpu");
        }
    }
}
