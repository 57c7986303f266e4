//! A catalogue through captioning (tiny random BLIP), cleaning, embedding and the store; and the
//! injected-noise robustness check on real H&M descriptions (skips without SGBD_DATA).

use candle_core::Device;
use sgbd_edge::config::Config;
use sgbd_edge::denoise::features::{read_catalog, CatalogItem};
use sgbd_edge::denoise::testutil::*;
use sgbd_edge::denoise::{pipeline, robustness, Captioner, Denoiser, TextEncoder};
use sgbd_edge::store::{FeatureKind, Store};

fn hm_items(n: usize) -> Option<Vec<CatalogItem>> {
    let d = crate::harness::sgbd_data()?.join("hm_sample");
    Some(read_catalog(&d.join("articles_sample.csv"), Some(&d.join("images")), Some(n)).unwrap())
}

#[test]
fn catalogue_with_tiny_blip_stores_text_caption_and_features() {
    let _turn = crate::harness::shared();
    let Some(items) = hm_items(40) else { return };
    // Items whose photo is in the sample.
    let items: Vec<CatalogItem> =
        items.into_iter().filter(|i| i.image.as_ref().is_some_and(|p| p.is_file())).take(3).collect();
    assert_eq!(items.len(), 3, "sample photos not found");
    let dir = tempfile::tempdir().unwrap();
    let cfg_blip = tiny_blip_config(32, 1);
    let st_path = dir.path().join("b.safetensors");
    write_random_blip_safetensors(&cfg_blip, 3, &st_path).unwrap();
    let tok = dir.path().join("tokenizer.json");
    write_tiny_tokenizer(&tok).unwrap();
    let cap = Captioner::load_files(&st_path, &tok, &cfg_blip, &Device::Cpu, "tiny-blip", 5, 2).unwrap();
    let mut cfg = Config::default().denoise;
    cfg.caption_batch = 2;
    let encoder = TextEncoder::from_config(&cfg).ok();
    if encoder.is_none() {
        eprintln!("MiniLM files absent: text features not checked (run `sgbd-edge models fetch`)");
    }
    let has_enc = encoder.is_some();
    let mut d = Denoiser { cfg, captioner: Some(cap), encoder };
    let store = Store::open_in_memory().unwrap();
    let mut seen = 0;
    let sum = pipeline::denoise_catalog(&mut d, &items, Some(&store), |_, r| {
        seen += 1;
        assert!(!r.denoised.degraded);
        assert_eq!(r.image_feature.as_ref().map(|f| f.len()), Some(32));
    })
    .unwrap();
    assert_eq!((sum.items, sum.captioned, sum.stored, seen), (3, 3, 3, 3));
    for it in &items {
        let row = store.item_by_sku(&it.sku).unwrap().unwrap();
        assert!(row.caption.as_deref().is_some_and(|c| !c.is_empty()));
        assert!(row.clean_description.is_some());
    }
    let img = store.item_features(FeatureKind::Image).unwrap();
    assert_eq!(img.len(), 3);
    assert!(img.iter().all(|(_, model, v)| model == "tiny-blip" && v.len() == 32));
    let txt = store.item_features(FeatureKind::Text).unwrap();
    assert_eq!(txt.len(), if has_enc { 3 } else { 0 });
    if has_enc {
        assert!(txt.iter().all(|(_, model, v)| model == "all-minilm-l6-v2" && v.len() == 384));
    }
}

#[test]
fn degraded_pipeline_without_models_still_cleans_and_stores() {
    let _turn = crate::harness::shared();
    let Some(items) = hm_items(5) else { return };
    let mut cfg = Config::default().denoise;
    cfg.models_dir = tempfile::tempdir().unwrap().path().to_path_buf();
    let (mut d, _) = Denoiser::load(&cfg);
    assert!(d.captioner.is_none() && d.encoder.is_none());
    let store = Store::open_in_memory().unwrap();
    let sum = pipeline::denoise_catalog(&mut d, &items, Some(&store), |_, r| assert!(r.denoised.degraded)).unwrap();
    assert!(sum.degraded && sum.stored == 5 && sum.captioned == 0);
    let row = store.item_by_sku(&items[0].sku).unwrap().unwrap();
    assert_eq!(
        row.clean_description.as_deref(),
        Some(
            "Semi shiny nylon stockings with a wide, reinforced trim at the top. Use with a suspender belt. 20 denier."
        )
    );
}

#[test]
fn injected_noise_is_removed_from_real_descriptions_by_the_rules() {
    let _turn = crate::harness::shared();
    let Some(items) = hm_items(150) else { return };
    let cfg = Config::default().denoise;
    let r = robustness::check(&items, &cfg, None, 7).unwrap();
    assert!(r.items >= 40, "{}", r.items);
    for kind in ["promo", "stuffing", "shouting"] {
        assert!(r.rules.removed[kind] >= 0.95, "{kind}: {:?}", r.rules.removed);
    }
    assert!(r.rules.genuine_kept >= 0.97, "genuine kept {}", r.rules.genuine_kept);
}
