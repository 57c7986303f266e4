//! The bundled demo assets: catalogue, photos, composed shelf and its planogram stay consistent.

use crate::harness::demo_assets;
use sgbd_edge::capture::planogram;
use sgbd_edge::demo::assets as demo;

#[test]
fn catalog_rows_have_their_photos() {
    let _turn = crate::harness::shared();
    let cat = demo::read_catalog(&demo_assets()).unwrap();
    assert_eq!(cat.len(), 36);
    let types: std::collections::HashSet<_> = cat.iter().map(|p| p.article_type.as_str()).collect();
    assert_eq!(types.len(), 12);
    for p in &cat {
        assert!(!p.title.is_empty(), "{}", p.sku);
        let bytes = std::fs::read(demo_assets().join("images").join(format!("{}.jpg", p.sku))).unwrap();
        let img = planogram::decode(&bytes, &p.sku, planogram::DecodeLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (224, 224), "{}", p.sku);
    }
}

#[test]
fn committed_shelf_is_what_compose_demo_writes() {
    let _turn = crate::harness::shared();
    let tmp = tempfile::tempdir().unwrap();
    let d = demo::compose_demo(&demo_assets(), tmp.path(), "./var/incoming/shelf-a").unwrap();
    let committed_toml = std::fs::read_to_string(demo_assets().join("shelf/planogram.toml")).unwrap();
    assert_eq!(std::fs::read_to_string(&d.planogram_path).unwrap(), committed_toml);
    // The planogram parses as a config section and each crop of the committed shelf is its product.
    let cfg = sgbd_edge::config::validate_str(&format!("[capture]\n{committed_toml}")).unwrap();
    let slots = &cfg.capture.cameras[0].slots;
    assert_eq!(slots.len(), 12);
    let shelf_bytes = std::fs::read(demo_assets().join("shelf/shelf-a.jpg")).unwrap();
    let shelf = planogram::decode(&shelf_bytes, "shelf", planogram::DecodeLimits::default()).unwrap();
    let photo = |sku: &str| {
        let b = std::fs::read(demo_assets().join("images").join(format!("{sku}.jpg"))).unwrap();
        planogram::dhash(&planogram::decode(&b, sku, planogram::DecodeLimits::default()).unwrap())
    };
    for (i, s) in slots.iter().enumerate() {
        let c = planogram::crop(&shelf, i, s).unwrap();
        assert_eq!(c.dimensions(), (224, 224));
        let own = planogram::hamming(planogram::dhash(&c), photo(&s.sku));
        assert!(own <= 6, "slot {i} ({}) differs from its photo by {own} bits", s.sku);
        let other = planogram::hamming(planogram::dhash(&c), photo(&slots[(i + 1) % 12].sku));
        assert!(other > own, "slot {i}: neighbour photo is as close ({other} vs {own})");
    }
}
