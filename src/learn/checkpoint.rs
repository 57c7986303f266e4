//! Checkpoints: model parameters and optimiser state in one safetensors file
//! (`checkpoint.safetensors`, keys `model.<var>` and `optim.<name>`), scalars in `state.json`.
//! Both are written to a temporary name and renamed, so a crash never leaves a half checkpoint.

use super::model::Recommender;
use super::optim::Optimizer;
use super::{LearnError, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const TENSORS: &str = "checkpoint.safetensors";
pub const STATE: &str = "state.json";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LearnError + '_ {
    move |source| LearnError::Io { path: path.to_path_buf(), source }
}

/// Writes model + optimiser tensors and `state` (any JSON the trainer wants back) into `dir`.
pub fn save(dir: &Path, model: &dyn Recommender, opt: &dyn Optimizer, state: &serde_json::Value) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in model.named_vars() {
        map.insert(format!("model.{name}"), var.as_detached_tensor());
    }
    let st = opt.state()?;
    for (name, t) in st.tensors {
        map.insert(format!("optim.{name}"), t);
    }
    let tmp = dir.join(format!("{TENSORS}.tmp"));
    candle_core::safetensors::save(&map, &tmp)?;
    let fin = dir.join(TENSORS);
    std::fs::rename(&tmp, &fin).map_err(io(&fin))?;
    let mut state = state.clone();
    if let Some(obj) = state.as_object_mut() {
        obj.insert("optim_step".into(), st.step.into());
        obj.insert("model".into(), model.name().into());
        obj.insert("optim".into(), opt.kind().label().into());
    }
    let text = serde_json::to_vec_pretty(&state).map_err(|e| LearnError::Invalid(e.to_string()))?;
    let fin = dir.join(STATE);
    crate::sys::write_atomic(&fin, &text, false).map_err(io(&fin))?;
    Ok(())
}

/// Restores model + optimiser from `dir`; `Ok(None)` when `dir` holds no checkpoint.
/// The model and optimiser kinds must match the ones saved.
pub fn load(dir: &Path, model: &dyn Recommender, opt: &mut dyn Optimizer) -> Result<Option<serde_json::Value>> {
    let state_path: PathBuf = dir.join(STATE);
    if !state_path.exists() {
        return Ok(None);
    }
    let text = std::fs::read(&state_path).map_err(io(&state_path))?;
    let bad = |msg: String| LearnError::Data { path: state_path.clone(), msg };
    let state: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if state.get("model").and_then(|v| v.as_str()) != Some(model.name()) {
        return Err(bad(format!("checkpoint is for model {:?}, not {}", state.get("model"), model.name())));
    }
    let label = opt.kind().label();
    if state.get("optim").and_then(|v| v.as_str()) != Some(label.as_str()) {
        return Err(bad(format!("checkpoint is for optimiser {:?}, not {label}", state.get("optim"))));
    }
    let tpath = dir.join(TENSORS);
    let tensors = candle_core::safetensors::load(&tpath, &Device::Cpu)
        .map_err(|e| LearnError::Data { path: tpath.clone(), msg: e.to_string() })?;
    for (name, var) in model.named_vars() {
        let key = format!("model.{name}");
        let t =
            tensors.get(&key).ok_or_else(|| LearnError::Data { path: tpath.clone(), msg: format!("missing {key}") })?;
        if t.shape() != var.shape() {
            return Err(LearnError::Data {
                path: tpath.clone(),
                msg: format!("{key} has shape {:?}, model has {:?}", t.shape(), var.shape()),
            });
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    let opt_tensors: HashMap<String, Tensor> =
        tensors.into_iter().filter_map(|(k, v)| k.strip_prefix("optim.").map(|s| (s.to_string(), v))).collect();
    let step = state.get("optim_step").and_then(|v| v.as_u64()).ok_or_else(|| bad("missing optim_step".into()))?;
    opt.load_state(&opt_tensors, step)?;
    Ok(Some(state))
}
