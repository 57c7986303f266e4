//! H&M item text features for the multimodal experiments (docs/multimodal.md), built with the
//! denoise concern's MiniLM encoder. Ignored by default (needs the model files):
//!
//! ```text
//! SGBD_DATA=... LEARNMM_MINILM_DIR=.../all-MiniLM-L6-v2 LEARNMM_HM_OUT=/tmp/hm_feats \
//!   nice -n 10 cargo test --release --test integration learn::multimodal::hm_features -- --ignored --nocapture
//! ```

use std::path::PathBuf;

/// H&M item text features with the denoise concern's MiniLM encoder: writes
/// `$LEARNMM_HM_OUT/hm_text_raw.npy` (`title. description`) and `hm_text_clean.npy` (the cleaned
/// item text; without BLIP captions the cleaning runs degraded), rows in itemID order. Needs the
/// MiniLM files in `$LEARNMM_MINILM_DIR` (config.json, tokenizer.json, model.safetensors).
#[test]
#[ignore = "needs the MiniLM files; run explicitly with --ignored"]
fn hm_text_features() {
    // The whole H&M sample through MiniLM, and it reports its time.
    let _turn = crate::harness::exclusive();
    use sgbd_edge::denoise::features::{embed_catalog, read_catalog, IdMapping, TextMode};
    let (Some(root), Ok(minilm), Ok(out)) =
        (std::env::var_os("SGBD_DATA"), std::env::var("LEARNMM_MINILM_DIR"), std::env::var("LEARNMM_HM_OUT"))
    else {
        eprintln!("skipping: SGBD_DATA, LEARNMM_MINILM_DIR or LEARNMM_HM_OUT not set");
        return;
    };
    let dir = PathBuf::from(root).join("hm_sample");
    let mapping = IdMapping::read(&dir.join("i_id_mapping.csv")).unwrap();
    let items =
        mapping.retain_mapped(read_catalog(&dir.join("articles_sample.csv"), Some(&dir.join("images")), None).unwrap());
    let cfg = sgbd_edge::config::Config::default().denoise;
    let enc = sgbd_edge::denoise::TextEncoder::load(
        std::path::Path::new(&minilm),
        "all-MiniLM-L6-v2",
        cfg.max_seq_len,
        cfg.embed_batch,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    std::fs::create_dir_all(&out).unwrap();
    for (mode, name) in [(TextMode::Raw, "hm_text_raw.npy"), (TextMode::Cleaned, "hm_text_clean.npy")] {
        let t = std::time::Instant::now();
        let rows = embed_catalog(&enc, &items, mode, &Default::default(), &cfg).unwrap();
        let rows = mapping.order(&items, rows).unwrap();
        let dim = rows[0].len();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let path = PathBuf::from(&out).join(name);
        sgbd_edge::learn::npy::write_npy_f32(&path, &[rows.len(), dim], &flat).unwrap();
        eprintln!("{mode:?}: {} items x {dim} in {:.1} s -> {}", rows.len(), t.elapsed().as_secs_f64(), path.display());
    }
}
