//! The one denoise path, used by the CLI (`sgbd-edge denoise`, through [`denoise_catalog`]) and by
//! the daemon's shelf stage (one crop at a time, through [`Denoiser::process_item`]):
//!
//! - [`Denoiser::load`] loads the captioner and the sentence encoder as the configuration says;
//!   a model whose files are missing or wrong (or captioning switched off) is left out and the
//!   reason logged and returned in a [`LoadReport`] (degraded cleaning), never a failure;
//! - [`Denoiser::process_batch`] captions the photos (in batches of `caption_batch`), cleans the
//!   descriptions, embeds the item texts (in batches of `embed_batch`) and stores each item in
//!   the write order below.
//!
//! # Write order: clean text present means done
//!
//! Per item, [`Denoiser::process_batch`] (and nothing else) writes, one statement each:
//! 1. the text feature (`item_features`, kind `text`, with the encoder's model id),
//! 2. the image feature (kind `image`, with the captioner's model id),
//! 3. **last** the clean text (`items.clean_description` and `items.caption`).
//!
//! So an item whose `clean_description` is set has every feature this pass made, and one whose
//! `clean_description` is NULL still needs denoising. The daemon relies on it: at start it queues
//! every item with a crop from a configured camera and a NULL `clean_description`
//! (`daemon::shelf::backlog`), and `Store::upsert_item` sets it back to NULL when the merchant
//! description changes. A pass stopped anywhere before the last write (an error of a feature
//! write, a crash, a power cut, SIGKILL) leaves the clean text unset, and the item is denoised
//! again at the next pass; nothing is lost.
use super::features::CatalogItem;
use super::text::{clean_batch, CleanInput, Denoised};
use super::{Caption, Captioner, DenoiseError, Result, TextEncoder};
use crate::config::DenoiseConfig;
use crate::store::{FeatureKind, Store};
use std::collections::BTreeMap;
use std::time::Instant;

/// The configuration and the models that could be loaded.
pub struct Denoiser {
    pub cfg: DenoiseConfig,
    /// BLIP (captions and image features); `None`: degraded, rule-based cleaning only.
    pub captioner: Option<Captioner>,
    /// MiniLM (text features, similarity filter, near-duplicates).
    pub encoder: Option<TextEncoder>,
}

/// What [`Denoiser::load`] found, for `status.json`, `stats` and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoadReport {
    /// BLIP captions (and image features) are produced.
    pub captioning: bool,
    /// `captioning enabled (blip-large-q4k)`, `captioning disabled: <reason>` or `captioning off (...)`.
    pub caption_detail: String,
    /// Model id of the sentence encoder when loaded.
    pub text_model: Option<String>,
    /// `text features with all-minilm-l6-v2` or `no text features: <reason>`.
    pub text_detail: String,
}

/// What happened to one item.
#[derive(Debug, Clone)]
pub struct ItemResult {
    pub denoised: Denoised,
    /// MiniLM embedding of `denoised.item_text` (when the encoder is loaded).
    pub text_feature: Option<Vec<f32>>,
    /// Pooled BLIP vision feature (when the photo was captioned).
    pub image_feature: Option<Vec<f32>>,
}

impl ItemResult {
    /// Phrases kept and dropped.
    pub fn kept_dropped(&self) -> (usize, usize) {
        let kept = self.denoised.phrases.iter().filter(|p| p.kept).count();
        (kept, self.denoised.phrases.len() - kept)
    }
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

impl Summary {
    fn add(&mut self, r: &ItemResult) {
        self.items += 1;
        self.captioned += usize::from(r.denoised.caption.is_some());
        for p in &r.denoised.phrases {
            self.phrases += 1;
            if p.kept {
                self.kept += 1;
            } else {
                let key = p.reason.split_whitespace().next().unwrap_or("other").to_string();
                *self.dropped.entry(key).or_default() += 1;
            }
        }
    }
}

impl Denoiser {
    /// Loads the models `cfg` asks for: BLIP when `caption_enabled`, `device` is known and its
    /// files are present and verified (on the device [`super::select_device`] picks), MiniLM when
    /// its files are. A model left out is logged with the reason (`denoise: running degraded`
    /// once without BLIP, `denoise: no sentence encoder` without MiniLM); the reasons come back in
    /// the [`LoadReport`].
    pub fn load(cfg: &DenoiseConfig) -> (Self, LoadReport) {
        let (captioner, caption_detail) = load_captioner(cfg);
        let (encoder, text_detail) = load_encoder(cfg);
        if captioner.is_none() {
            tracing::warn!(
                reason = %caption_detail,
                "denoise: running degraded (rule-based cleaning only, no captions or image features)"
            );
        }
        let report = LoadReport {
            captioning: captioner.is_some(),
            caption_detail,
            text_model: encoder.as_ref().map(|e| e.model_id.clone()),
            text_detail,
        };
        (Self { cfg: cfg.clone(), captioner, encoder }, report)
    }

    /// No captioner: cleaning is rule-based only.
    pub fn degraded(&self) -> bool {
        self.captioner.is_none()
    }

    /// [`Denoiser::process_batch`] for one item.
    pub fn process_item(&mut self, item: &CatalogItem, store: Option<&Store>) -> Result<ItemResult> {
        self.process_batch(std::slice::from_ref(item), store)?
            .pop()
            .ok_or_else(|| DenoiseError::Config("process_batch returned nothing".into()))
    }

    /// Denoises `items` and, with a store, stores each one (the items must be in the store):
    /// features first, the clean text last (module docs: "clean text present means done").
    /// Photos are captioned `caption_batch` at a time when a captioner is loaded; a photo that
    /// cannot be read is logged (`photo not captioned`) and its item cleaned without a caption.
    /// Item texts are embedded `embed_batch` at a time. The first store error ends the call:
    /// the items before it are done, that one and the rest are not (their clean text is unset).
    pub fn process_batch(&mut self, items: &[CatalogItem], store: Option<&Store>) -> Result<Vec<ItemResult>> {
        let results = self.denoise_batch(items)?;
        if let Some(st) = store {
            for (it, r) in items.iter().zip(&results) {
                self.store_result(st, &it.sku, r)?;
            }
        }
        Ok(results)
    }

    /// Captions, cleaning and text features of `items` (nothing stored).
    fn denoise_batch(&mut self, items: &[CatalogItem]) -> Result<Vec<ItemResult>> {
        let captions = self.caption_photos(items)?;
        let inputs: Vec<CleanInput> = items
            .iter()
            .zip(&captions)
            .map(|(it, cap)| CleanInput {
                title: &it.title,
                description: &it.description,
                caption: cap.as_ref().map(|c| c.text.as_str()),
                attributes: &it.attributes,
            })
            .collect();
        let mut results: Vec<ItemResult> = clean_batch(&inputs, &self.cfg, self.encoder.as_ref())?
            .into_iter()
            .zip(captions)
            .map(|(denoised, cap)| ItemResult { denoised, text_feature: None, image_feature: cap.map(|c| c.feature) })
            .collect();
        if let Some(enc) = &self.encoder {
            let texts: Vec<&str> = results.iter().map(|r| r.denoised.item_text.as_str()).collect();
            let feats = enc.embed(&texts)?;
            for (r, f) in results.iter_mut().zip(feats) {
                r.text_feature = Some(f);
            }
        }
        Ok(results)
    }

    /// One caption per item whose photo loads (none without a captioner).
    fn caption_photos(&mut self, items: &[CatalogItem]) -> Result<Vec<Option<Caption>>> {
        let mut captions: Vec<Option<Caption>> = vec![None; items.len()];
        let Some(cap) = self.captioner.as_mut() else { return Ok(captions) };
        let mut idx = Vec::new();
        let mut imgs = Vec::new();
        for (i, it) in items.iter().enumerate() {
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
                tracing::info!(sku = %items[i].sku, ms = c.vision_ms + c.decode_ms, caption = %c.text, "captioned");
                captions[i] = Some(c);
            }
        }
        Ok(captions)
    }

    /// The write order, in one place: text feature, image feature, then the clean text (which
    /// marks the item done). Do not reorder: see the module docs.
    fn store_result(&self, st: &Store, sku: &str, r: &ItemResult) -> Result<()> {
        if let (Some(f), Some(enc)) = (&r.text_feature, &self.encoder) {
            st.set_item_feature(sku, FeatureKind::Text, &enc.model_id, f)?;
        }
        if let (Some(f), Some(cap)) = (&r.image_feature, &self.captioner) {
            st.set_item_feature(sku, FeatureKind::Image, &cap.model_id, f)?;
        }
        st.set_item_text(sku, &r.denoised.clean_description, r.denoised.caption.as_deref())?;
        Ok(())
    }
}

/// BLIP as configured, or why not.
fn load_captioner(cfg: &DenoiseConfig) -> (Option<Captioner>, String) {
    if !cfg.caption_enabled {
        return (None, "captioning off (denoise.caption_enabled = false)".into());
    }
    let t = Instant::now();
    match super::device_pref(&cfg.device).and_then(|_| Captioner::from_config(cfg)) {
        Ok(c) => {
            tracing::info!(
                model = %c.model_id,
                device = crate::device::describe(c.device()),
                ms = t.elapsed().as_millis() as u64,
                "denoise: BLIP captioner loaded"
            );
            let detail = format!("captioning enabled ({})", c.model_id);
            (Some(c), detail)
        }
        Err(e) => (None, format!("captioning disabled: {e}")),
    }
}

/// MiniLM as configured, or why not.
fn load_encoder(cfg: &DenoiseConfig) -> (Option<TextEncoder>, String) {
    match TextEncoder::from_config(cfg) {
        Ok(e) => {
            tracing::info!(model = %e.model_id, "denoise: sentence encoder loaded (text features)");
            let detail = format!("text features with {}", e.model_id);
            (Some(e), detail)
        }
        Err(e) => {
            let detail = format!("no text features: {e}");
            tracing::warn!(reason = %detail, "denoise: no sentence encoder (no text features, no similarity filter)");
            (None, detail)
        }
    }
}

/// A whole catalogue through [`Denoiser::process_batch`], `max(embed_batch, caption_batch)`
/// items at a time. With a store, each batch's items are first inserted or updated
/// (`Store::upsert_item`: a new or changed item has no clean text, so it is not done) and then
/// stored in the write order of [`Denoiser::process_batch`]. `on_item` sees every result.
pub fn denoise_catalog(
    d: &mut Denoiser,
    items: &[CatalogItem],
    store: Option<&Store>,
    mut on_item: impl FnMut(&CatalogItem, &ItemResult),
) -> Result<Summary> {
    let mut sum = Summary { degraded: d.degraded(), ..Default::default() };
    let batch = d.cfg.embed_batch.max(d.cfg.caption_batch).max(1);
    for chunk in items.chunks(batch) {
        if let Some(st) = store {
            for it in chunk {
                st.upsert_item(&it.to_new_item())?;
            }
        }
        let results = d.process_batch(chunk, store)?;
        for (it, r) in chunk.iter().zip(&results) {
            sum.add(r);
            sum.stored += usize::from(store.is_some());
            on_item(it, r);
        }
    }
    Ok(sum)
}

/// Tiny random models and a store that fails or logs writes on demand, for the tests of the
/// write order here and in the daemon's shelf stage.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::denoise::testutil;
    use std::path::{Path, PathBuf};

    /// A denoiser with a tiny random BLIP (`tiny-blip`, 32-d image features) and a tiny random
    /// BERT sentence encoder (`tiny-bert`, 32-d text features), files under `dir`. Descriptions
    /// for it should have one genuine phrase (random embeddings may call two a near-duplicate).
    pub(crate) fn tiny_denoiser(dir: &Path) -> Denoiser {
        let blip_cfg = testutil::tiny_blip_config(32, 1);
        let weights = dir.join("blip.safetensors");
        testutil::write_random_blip_safetensors(&blip_cfg, 3, &weights).unwrap();
        let tok = dir.join("tokenizer.json");
        testutil::write_tiny_tokenizer(&tok).unwrap();
        let cap =
            Captioner::load_files(&weights, &tok, &blip_cfg, &candle_core::Device::Cpu, "tiny-blip", 3, 2).unwrap();
        let enc = testutil::tiny_text_encoder(&dir.join("bert")).unwrap();
        // Random weights: no phrase may be judged off-topic by their similarities.
        let cfg = DenoiseConfig { min_phrase_similarity: -1.0, ..Default::default() };
        Denoiser { cfg, captioner: Some(cap), encoder: Some(enc) }
    }

    /// A small photo file.
    pub(crate) fn photo(path: &Path) -> PathBuf {
        image::RgbImage::from_fn(48, 32, |x, y| image::Rgb([(x * 5) as u8, (y * 7) as u8, 90])).save(path).unwrap();
        path.to_path_buf()
    }

    /// A second connection to the database file, to add triggers that the store's own
    /// connection then runs (SQLite triggers are part of the schema).
    pub(crate) fn side_connection(db: &Path) -> rusqlite::Connection {
        rusqlite::Connection::open(db).unwrap()
    }

    /// From now on, storing an image feature fails ("a crash between the writes": the text
    /// feature is written, the image feature and the clean text are not).
    pub(crate) fn fail_image_feature_writes(c: &rusqlite::Connection) {
        c.execute_batch(
            "CREATE TRIGGER fail_image_feature BEFORE INSERT ON item_features WHEN NEW.kind = 'image'
             BEGIN SELECT RAISE(ABORT, 'injected: image feature write failed'); END;",
        )
        .unwrap();
    }

    pub(crate) fn heal(c: &rusqlite::Connection) {
        c.execute_batch("DROP TRIGGER fail_image_feature").unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn item(sku: &str, image: Option<std::path::PathBuf>) -> CatalogItem {
        CatalogItem {
            sku: sku.into(),
            title: format!("Denim jacket {sku}"),
            description: "Jacket in washed denim. FREE SHIPPING!!!".into(),
            attributes: vec![("colour".into(), "blue".into())],
            image,
        }
    }

    /// The writes of the items, in the order the store's connection made them.
    fn write_log(c: &rusqlite::Connection) -> Vec<String> {
        let mut st = c.prepare("SELECT what FROM write_log ORDER BY n").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<Vec<String>>>().unwrap()
    }

    #[test]
    fn features_are_written_before_the_clean_text_on_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = tiny_denoiser(dir.path());
        let db = dir.path().join("s.db");
        let store = Store::open(&db, 1000).unwrap();
        let side = side_connection(&db);
        side.execute_batch(
            "CREATE TABLE write_log (n INTEGER PRIMARY KEY, what TEXT NOT NULL);
             CREATE TRIGGER log_feature_insert AFTER INSERT ON item_features
             BEGIN INSERT INTO write_log (what) SELECT sku || ' ' || NEW.kind FROM items WHERE id = NEW.item_id; END;
             CREATE TRIGGER log_feature_update AFTER UPDATE ON item_features
             BEGIN INSERT INTO write_log (what) SELECT sku || ' ' || NEW.kind FROM items WHERE id = NEW.item_id; END;
             CREATE TRIGGER log_text AFTER UPDATE OF clean_description ON items WHEN NEW.clean_description IS NOT NULL
             BEGIN INSERT INTO write_log (what) VALUES (NEW.sku || ' clean text'); END;",
        )
        .unwrap();
        // The catalogue path (CLI): two items in one batch.
        let items =
            [item("A", Some(photo(&dir.path().join("a.png")))), item("B", Some(photo(&dir.path().join("b.png"))))];
        let sum = denoise_catalog(&mut d, &items, Some(&store), |_, _| {}).unwrap();
        assert_eq!((sum.items, sum.captioned, sum.stored), (2, 2, 2));
        let want = ["A text", "A image", "A clean text", "B text", "B image", "B clean text"];
        assert_eq!(write_log(&side), want);
        // The daemon's path: one stored item at a time, again (features replaced, text last).
        side.execute_batch("DELETE FROM write_log").unwrap();
        let row = store.item_by_sku("A").unwrap().unwrap();
        let r = d.process_item(&CatalogItem::from_row(&row, items[0].image.clone()), Some(&store)).unwrap();
        assert_eq!(r.kept_dropped(), (1, 1));
        assert_eq!(write_log(&side), ["A text", "A image", "A clean text"]);
        let row = store.item_by_sku("A").unwrap().unwrap();
        assert_eq!(row.clean_description.as_deref(), Some("Jacket in washed denim."));
        assert!(row.caption.is_some());
        let feats =
            |k| store.item_features(k).unwrap().into_iter().map(|(s, m, v)| (s, m, v.len())).collect::<Vec<_>>();
        assert_eq!(
            feats(FeatureKind::Text),
            [("A".into(), "tiny-bert".into(), 32), ("B".into(), "tiny-bert".into(), 32)]
        );
        assert_eq!(
            feats(FeatureKind::Image),
            [("A".into(), "tiny-blip".into(), 32), ("B".into(), "tiny-blip".into(), 32)]
        );
    }

    #[test]
    fn a_failed_feature_write_leaves_the_item_not_done_and_the_next_pass_completes_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = tiny_denoiser(dir.path());
        let db = dir.path().join("s.db");
        let store = Store::open(&db, 1000).unwrap();
        let side = side_connection(&db);
        fail_image_feature_writes(&side);
        let items = [item("A", Some(photo(&dir.path().join("a.png"))))];
        let err = denoise_catalog(&mut d, &items, Some(&store), |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        let row = store.item_by_sku("A").unwrap().unwrap();
        assert_eq!(row.clean_description, None, "an item without its image feature must not look done");
        assert_eq!(row.caption, None);
        assert!(store.item_features(FeatureKind::Image).unwrap().is_empty());
        // The next pass (the store works again) denoises it anew and completes it.
        heal(&side);
        let sum = denoise_catalog(&mut d, &items, Some(&store), |_, _| {}).unwrap();
        assert_eq!(sum.stored, 1);
        let row = store.item_by_sku("A").unwrap().unwrap();
        assert_eq!(row.clean_description.as_deref(), Some("Jacket in washed denim."));
        assert_eq!(store.item_features(FeatureKind::Image).unwrap().len(), 1);
        assert_eq!(store.item_features(FeatureKind::Text).unwrap().len(), 1);
    }

    #[test]
    fn dry_run_stores_nothing_and_unreadable_photos_are_cleaned_without_a_caption() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = tiny_denoiser(dir.path());
        let items = [item("A", Some(dir.path().join("absent.png"))), item("B", None)];
        let mut seen = Vec::new();
        let sum =
            denoise_catalog(&mut d, &items, None, |it, r| seen.push((it.sku.clone(), r.denoised.degraded))).unwrap();
        assert_eq!((sum.items, sum.captioned, sum.stored, sum.degraded), (2, 0, 0, false));
        assert_eq!(seen, [("A".to_string(), true), ("B".to_string(), true)]);
        assert_eq!(sum.dropped.get("punctuation"), Some(&2));
    }

    #[test]
    fn load_without_model_files_is_degraded_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = DenoiseConfig { models_dir: dir.path().to_path_buf(), ..Default::default() };
        let (d, r) = Denoiser::load(&cfg);
        assert!(d.degraded() && d.encoder.is_none());
        assert!(!r.captioning && r.text_model.is_none());
        assert!(r.caption_detail.starts_with("captioning disabled: ") && r.caption_detail.contains("missing"), "{r:?}");
        assert!(r.text_detail.starts_with("no text features: "), "{r:?}");
        cfg.device = "gpu".into();
        let (_, r) = Denoiser::load(&cfg);
        assert_eq!(
            r.caption_detail,
            "captioning disabled: denoise.device: unknown device \"gpu\": expected \"cpu\", \"cuda\" or \"auto\""
        );
        cfg.caption_enabled = false;
        assert_eq!(Denoiser::load(&cfg).1.caption_detail, "captioning off (denoise.caption_enabled = false)");
    }
}
