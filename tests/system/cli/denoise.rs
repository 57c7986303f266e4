//! The `models verify`, `caption` and `denoise` commands, end to end through the binary.

use crate::harness::daemon::bin;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("c.toml");
    let text = format!(
        "[node]\ndata_dir = \"{}\"\n[denoise]\nmodels_dir = \"{}\"\n[log]\nfilter = \"warn\"\n",
        dir.join("var").display(),
        dir.join("models").display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn verify_and_caption_name_the_missing_file_and_hash() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = bin().args(["models", "verify", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("MISSING") && text.contains("model.safetensors") && text.contains("53aa51172d142c89"),
        "{text}"
    );
    let img = dir.path().join("x.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3])).save(&img).unwrap();
    let out = bin().arg("caption").arg(&img).arg("--config").arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("blip-image-captioning-large-q4k.gguf") && err.contains("missing"), "{err}");
}

#[test]
fn denoise_prints_decisions_and_stores_cleaned_text() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let csv = dir.path().join("cat.csv");
    std::fs::write(
        &csv,
        "sku,title,description,colour\nA1,Denim jacket,\"Jacket in washed denim. HOT SALE!!! Chest pockets. Chest pockets.\",blue\n",
    )
    .unwrap();
    let out = bin().args(["denoise", "--catalog"]).arg(&csv).arg("--config").arg(&cfg).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("  + Jacket in washed denim."), "{text}");
    assert!(text.contains("  - [punctuation] HOT SALE!!!"), "{text}");
    assert!(text.contains("  - [duplicate] Chest pockets."), "{text}");
    assert!(text.contains("\"degraded\": true"), "{text}");
    let store = sgbd_edge::store::Store::open(&dir.path().join("var").join("sgbd.db"), 1000).unwrap();
    let row = store.item_by_sku("A1").unwrap().unwrap();
    assert_eq!(row.clean_description.as_deref(), Some("Jacket in washed denim. Chest pockets."));
}
