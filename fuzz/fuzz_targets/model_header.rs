//! Model files as the crate opens them: a GGUF (`Weights::from_gguf`, the captioner's quantized
//! weights) or a safetensors file (`Weights::from_safetensors`, and the registry's
//! `ServingModel::load`, which also checks the tensors against `ids.json`). A hostile or truncated
//! header must give an error, never a panic or an allocation the size of what the header claims.
#![no_main]
use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use sgbd_edge::denoise::weights::Weights;
use sgbd_edge::registry::ServingModel;
use std::sync::OnceLock;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("temp dir for the fuzz target");
        // Two users, three items, dimension 2: what the seed `serving.safetensors` holds.
        let ids = r#"{"model":"mf","dim":2,"users":["u1","u2"],"items":["a","b","c"]}"#;
        std::fs::write(d.path().join("ids.json"), ids).expect("ids.json");
        d
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    if data.starts_with(b"GGUF") {
        let p = d.join("model.gguf");
        if std::fs::write(&p, data).is_ok() {
            let _ = Weights::from_gguf(&p, &Device::Cpu);
        }
    } else {
        let p = d.join("model.safetensors");
        if std::fs::write(&p, data).is_ok() {
            let _ = Weights::from_safetensors(&p, DType::F32, &Device::Cpu);
        }
        if std::fs::write(d.join(sgbd_edge::registry::SERVING), data).is_ok() {
            let _ = ServingModel::load(d, "fuzz");
        }
    }
});
