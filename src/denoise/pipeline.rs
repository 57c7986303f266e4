//! Cleaning a whole catalogue: caption photos in batches (when BLIP is loaded), clean each
//! description, embed the item texts, and store texts and features (when given a store).
use super::features::CatalogItem;
use super::text::{clean_batch, CleanInput, Denoised, Denoiser};
use super::Result;
use crate::store::{FeatureKind, NewItem, Store};
use std::collections::BTreeMap;

/// What happened to one item.
#[derive(Debug, Clone)]
pub struct ItemResult {
    pub denoised: Denoised,
    /// MiniLM embedding of `denoised.item_text` (when the encoder is loaded).
    pub text_feature: Option<Vec<f32>>,
    /// Pooled BLIP vision feature (when the photo was captioned).
    pub image_feature: Option<Vec<f32>>,
}

/// Totals over a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub items: usize,
    pub captioned: usize,
    pub phrases: usize,
    pub kept: usize,
    /// Dropped phrases by reason (the reason's first word: `promotional`, `repeated`, ...).
    pub dropped: BTreeMap<String, usize>,
    pub degraded: bool,
    pub stored: usize,
}

/// Runs the cleaning over `items`, `embed_batch` at a time (photos captioned `caption_batch` at a
/// time). `on_item` sees every result.
pub fn denoise_catalog(
    d: &mut Denoiser,
    items: &[CatalogItem],
    store: Option<&Store>,
    mut on_item: impl FnMut(&CatalogItem, &ItemResult),
) -> Result<Summary> {
    let mut sum = Summary { degraded: d.captioner.is_none(), ..Default::default() };
    let batch = d.cfg.embed_batch.max(d.cfg.caption_batch).max(1);
    for chunk in items.chunks(batch) {
        // Captions for the photos that load.
        let mut captions: Vec<Option<super::Caption>> = vec![None; chunk.len()];
        if let Some(cap) = d.captioner.as_mut() {
            let mut idx = Vec::new();
            let mut imgs = Vec::new();
            for (i, it) in chunk.iter().enumerate() {
                let Some(p) = &it.image else { continue };
                match super::load_image(p) {
                    Ok(img) => {
                        idx.push(i);
                        imgs.push(img);
                    }
                    Err(e) => tracing::warn!(sku = %it.sku, error = %e, "photo not captioned"),
                }
            }
            if !imgs.is_empty() {
                for (i, c) in idx.into_iter().zip(cap.caption(&imgs)?) {
                    tracing::info!(sku = %chunk[i].sku, ms = c.vision_ms + c.decode_ms, caption = %c.text, "captioned");
                    captions[i] = Some(c);
                }
            }
        }
        let inputs: Vec<CleanInput> = chunk
            .iter()
            .zip(&captions)
            .map(|(it, cap)| CleanInput {
                title: &it.title,
                description: &it.description,
                caption: cap.as_ref().map(|c| c.text.as_str()),
                attributes: &it.attributes,
            })
            .collect();
        let mut results: Vec<ItemResult> = clean_batch(&inputs, &d.cfg, d.encoder.as_ref())?
            .into_iter()
            .zip(&captions)
            .map(|(dn, cap)| ItemResult { denoised: dn, text_feature: None, image_feature: cap.as_ref().map(|c| c.feature.clone()) })
            .collect();
        if let Some(enc) = &d.encoder {
            let texts: Vec<&str> = results.iter().map(|r| r.denoised.item_text.as_str()).collect();
            let feats = enc.embed(&texts)?;
            for (r, f) in results.iter_mut().zip(feats) {
                r.text_feature = Some(f);
            }
        }
        for (it, r) in chunk.iter().zip(&results) {
            sum.items += 1;
            sum.captioned += usize::from(r.denoised.caption.is_some());
            for p in &r.denoised.phrases {
                sum.phrases += 1;
                if p.kept {
                    sum.kept += 1;
                } else {
                    let key = p.reason.split_whitespace().next().unwrap_or("other").to_string();
                    *sum.dropped.entry(key).or_default() += 1;
                }
            }
            if let Some(st) = store {
                store_item(st, it, r, d)?;
                sum.stored += 1;
            }
            on_item(it, r);
        }
    }
    Ok(sum)
}

fn store_item(st: &Store, it: &CatalogItem, r: &ItemResult, d: &Denoiser) -> Result<()> {
    let attrs: serde_json::Map<String, serde_json::Value> =
        it.attributes.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    st.upsert_item(&NewItem {
        sku: it.sku.clone(),
        title: it.title.clone(),
        description: it.description.clone(),
        attributes: serde_json::Value::Object(attrs),
        image_path: it.image.as_ref().filter(|p| p.is_file()).map(|p| p.display().to_string()),
    })?;
    st.set_item_text(&it.sku, &r.denoised.clean_description, r.denoised.caption.as_deref())?;
    if let (Some(f), Some(enc)) = (&r.text_feature, &d.encoder) {
        st.set_item_feature(&it.sku, FeatureKind::Text, &enc.model_id, f)?;
    }
    if let (Some(f), Some(cap)) = (&r.image_feature, &d.captioner) {
        st.set_item_feature(&it.sku, FeatureKind::Image, &cap.model_id, f)?;
    }
    Ok(())
}
