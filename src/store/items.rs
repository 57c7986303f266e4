//! Catalogue items, their photos and their feature vectors.

use super::{FeatureKind, ImageRow, ItemRow, NewItem, Result, Store, StoreError};
use crate::sys::now_ms;
use rusqlite::{params, Connection, OptionalExtension, Row};

const ITEM_COLS: &str =
    "id, sku, title, description, clean_description, caption, attributes, image_path, created_ms, updated_ms";

fn item_row(r: &Row<'_>) -> rusqlite::Result<ItemRow> {
    let attrs: String = r.get(6)?;
    Ok(ItemRow {
        id: r.get(0)?,
        sku: r.get(1)?,
        title: r.get(2)?,
        description: r.get(3)?,
        clean_description: r.get(4)?,
        caption: r.get(5)?,
        // Written by this module as a JSON object; a hand-edited bad value reads as null.
        attributes: serde_json::from_str(&attrs).unwrap_or(serde_json::Value::Null),
        image_path: r.get(7)?,
        created_ms: r.get(8)?,
        updated_ms: r.get(9)?,
    })
}

fn item_id(c: &Connection, sku: &str) -> Result<i64> {
    c.prepare_cached("SELECT id FROM items WHERE sku = ?1")?
        .query_row([sku], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::UnknownSku(sku.to_string()))
}

/// Little-endian f32 bytes.
pub(super) fn f32_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(super) fn blob_to_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

impl Store {
    /// Inserts the item, or updates title, description, attributes and image path of the item
    /// with the same SKU. Returns `(id, created)`. When the description changes, the cleaned
    /// description is reset (the denoiser will redo it); unchanged items are not rewritten.
    pub fn upsert_item(&self, item: &NewItem) -> Result<(i64, bool)> {
        let sku = item.sku.trim();
        if sku.is_empty() {
            return Err(StoreError::Invalid("empty sku".into()));
        }
        let attrs = match &item.attributes {
            serde_json::Value::Null => "{}".to_string(),
            v @ serde_json::Value::Object(_) => v.to_string(),
            _ => return Err(StoreError::Invalid(format!("attributes of {sku} must be a JSON object"))),
        };
        let now = now_ms();
        self.write(|c| {
            let existing: Option<i64> =
                c.prepare_cached("SELECT id FROM items WHERE sku = ?1")?.query_row([sku], |r| r.get(0)).optional()?;
            match existing {
                Some(id) => {
                    c.prepare_cached(
                        "UPDATE items SET title = ?2, description = ?3, attributes = ?4, image_path = ?5,
                            clean_description = CASE WHEN description = ?3 THEN clean_description ELSE NULL END,
                            updated_ms = ?6
                         WHERE id = ?1 AND (title IS NOT ?2 OR description IS NOT ?3 OR attributes IS NOT ?4
                                            OR image_path IS NOT ?5)",
                    )?
                    .execute(params![
                        id,
                        item.title,
                        item.description,
                        attrs,
                        item.image_path,
                        now
                    ])?;
                    Ok((id, false))
                }
                None => {
                    c.prepare_cached(
                        "INSERT INTO items (sku, title, description, attributes, image_path, created_ms, updated_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                    )?
                    .execute(params![
                        sku,
                        item.title,
                        item.description,
                        attrs,
                        item.image_path,
                        now
                    ])?;
                    let id = c.last_insert_rowid();
                    let released = super::events::release_held(c, sku)?;
                    if released > 0 {
                        tracing::info!(sku, released, "kiosk events held for an unknown SKU joined the interactions");
                    }
                    Ok((id, true))
                }
            }
        })
    }

    /// The item with this SKU, if any.
    pub fn item_by_sku(&self, sku: &str) -> Result<Option<ItemRow>> {
        let sql = format!("SELECT {ITEM_COLS} FROM items WHERE sku = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([sku], item_row).optional()?)
    }

    /// All items, in insertion order (by id).
    pub fn items(&self) -> Result<Vec<ItemRow>> {
        let sql = format!("SELECT {ITEM_COLS} FROM items ORDER BY id");
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map([], item_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Stores the denoised description and (when given) the photo caption of an item.
    pub fn set_item_text(&self, sku: &str, clean_description: &str, caption: Option<&str>) -> Result<()> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE items SET clean_description = ?2, caption = coalesce(?3, caption), updated_ms = ?4 WHERE sku = ?1",
            )?
            .execute(params![sku, clean_description, caption, now_ms()])?;
        if n == 0 {
            return Err(StoreError::UnknownSku(sku.to_string()));
        }
        Ok(())
    }

    /// Stores (replaces) the item's feature vector of this kind, made by `model_id`.
    pub fn set_item_feature(&self, sku: &str, kind: FeatureKind, model_id: &str, v: &[f32]) -> Result<()> {
        if v.is_empty() {
            return Err(StoreError::Invalid(format!("empty {} feature for {sku}", kind.as_str())));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(StoreError::Invalid(format!("non-finite {} feature for {sku}", kind.as_str())));
        }
        self.write(|c| {
            let id = item_id(c, sku)?;
            c.prepare_cached(
                "INSERT INTO item_features (item_id, kind, model_id, dim, vec, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (item_id, kind) DO UPDATE SET model_id = excluded.model_id, dim = excluded.dim,
                     vec = excluded.vec, updated_ms = excluded.updated_ms",
            )?
            .execute(params![id, kind.as_str(), model_id, v.len() as i64, f32_to_blob(v), now_ms()])?;
            Ok(())
        })
    }

    /// All feature vectors of this kind: `(sku, model_id, vector)`, by item id.
    pub fn item_features(&self, kind: FeatureKind) -> Result<Vec<(String, String, Vec<f32>)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT i.sku, f.model_id, f.vec FROM item_features f JOIN items i ON i.id = f.item_id
             WHERE f.kind = ?1 ORDER BY i.id",
        )?;
        let rows = st
            .query_map([kind.as_str()], |r| Ok((r.get(0)?, r.get(1)?, blob_to_f32(&r.get::<_, Vec<u8>>(2)?))))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Records a photo of an item; the same `(sku, path)` again updates source, time and hash.
    /// Returns the image id.
    pub fn add_image(&self, sku: &str, path: &str, source: &str, captured_ms: i64, phash: Option<u64>) -> Result<i64> {
        self.write(|c| {
            let id = item_id(c, sku)?;
            let image_id = c
                .prepare_cached(
                    "INSERT INTO images (item_id, path, source, captured_ms, phash) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (item_id, path) DO UPDATE SET source = excluded.source,
                         captured_ms = excluded.captured_ms, phash = excluded.phash
                     RETURNING id",
                )?
                .query_row(params![id, path, source, captured_ms, phash.map(|h| h as i64)], |r| r.get(0))?;
            Ok(image_id)
        })
    }

    /// The photos of an item, newest first.
    pub fn item_images(&self, sku: &str) -> Result<Vec<ImageRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT m.id, i.sku, m.path, m.source, m.captured_ms, m.phash FROM images m JOIN items i ON i.id = m.item_id
             WHERE i.sku = ?1 ORDER BY m.captured_ms DESC, m.id DESC",
        )?;
        let rows = st
            .query_map([sku], |r| {
                Ok(ImageRow {
                    id: r.get(0)?,
                    sku: r.get(1)?,
                    path: r.get(2)?,
                    source: r.get(3)?,
                    captured_ms: r.get(4)?,
                    phash: r.get::<_, Option<i64>>(5)?.map(|h| h as u64),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(sku: &str, desc: &str) -> NewItem {
        NewItem {
            sku: sku.into(),
            title: format!("title {sku}"),
            description: desc.into(),
            attributes: json!({"colour": "blue"}),
            image_path: None,
        }
    }

    #[test]
    fn upsert_creates_then_updates_and_resets_clean_text_on_change() {
        let s = Store::open_in_memory().unwrap();
        let (id, created) = s.upsert_item(&item("a", "d1")).unwrap();
        assert!(created);
        s.set_item_text("a", "clean d1", Some("a photo")).unwrap();
        // Same description: clean text kept, same id.
        assert_eq!(s.upsert_item(&item("a", "d1")).unwrap(), (id, false));
        assert_eq!(s.item_by_sku("a").unwrap().unwrap().clean_description.as_deref(), Some("clean d1"));
        // New description: clean text reset, caption kept.
        s.upsert_item(&item("a", "d2")).unwrap();
        let row = s.item_by_sku("a").unwrap().unwrap();
        assert_eq!(row.description, "d2");
        assert_eq!(row.clean_description, None);
        assert_eq!(row.caption.as_deref(), Some("a photo"));
        assert_eq!(row.attributes, json!({"colour": "blue"}));
        assert_eq!(s.items().unwrap().len(), 1);
        assert!(s.item_by_sku("zz").unwrap().is_none());
    }

    #[test]
    fn bad_inputs_are_refused() {
        let s = Store::open_in_memory().unwrap();
        let mut it = item("a", "d");
        it.attributes = json!([1, 2]);
        assert!(matches!(s.upsert_item(&it), Err(StoreError::Invalid(_))));
        assert!(matches!(s.upsert_item(&item(" ", "d")), Err(StoreError::Invalid(_))));
        assert!(matches!(s.set_item_text("nope", "x", None), Err(StoreError::UnknownSku(_))));
        assert!(matches!(s.set_item_feature("nope", FeatureKind::Text, "m", &[1.0]), Err(StoreError::UnknownSku(_))));
        s.upsert_item(&item("a", "d")).unwrap();
        assert!(matches!(s.set_item_feature("a", FeatureKind::Text, "m", &[]), Err(StoreError::Invalid(_))));
        assert!(matches!(s.set_item_feature("a", FeatureKind::Text, "m", &[f32::NAN]), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn features_round_trip_and_replace() {
        let s = Store::open_in_memory().unwrap();
        s.upsert_item(&item("a", "d")).unwrap();
        s.upsert_item(&item("b", "d")).unwrap();
        s.set_item_feature("a", FeatureKind::Text, "minilm", &[0.5, -1.25, 3.0]).unwrap();
        s.set_item_feature("b", FeatureKind::Text, "minilm", &[1.0, 2.0, 3.0]).unwrap();
        s.set_item_feature("a", FeatureKind::Image, "blip", &[7.0]).unwrap();
        s.set_item_feature("a", FeatureKind::Text, "minilm-v2", &[0.0, 1.0, 2.0]).unwrap();
        let t = s.item_features(FeatureKind::Text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], ("a".into(), "minilm-v2".into(), vec![0.0, 1.0, 2.0]));
        assert_eq!(t[1].2, vec![1.0, 2.0, 3.0]);
        assert_eq!(s.item_features(FeatureKind::Image).unwrap(), vec![("a".into(), "blip".into(), vec![7.0])]);
    }

    #[test]
    fn images_upsert_by_path_and_keep_full_u64_hash() {
        let s = Store::open_in_memory().unwrap();
        s.upsert_item(&item("a", "d")).unwrap();
        let i1 = s.add_image("a", "crops/a.jpg", "shelf-a", 10, Some(u64::MAX - 3)).unwrap();
        let i2 = s.add_image("a", "crops/a.jpg", "shelf-a", 20, None).unwrap();
        assert_eq!(i1, i2);
        s.add_image("a", "catalog/a.jpg", "catalog", 5, Some(42)).unwrap();
        let imgs = s.item_images("a").unwrap();
        assert_eq!(imgs.len(), 2);
        assert_eq!((imgs[0].captured_ms, imgs[0].phash), (20, None));
        assert_eq!(imgs[1].phash, Some(42));
        s.add_image("a", "x.jpg", "c", 1, Some(u64::MAX - 3)).unwrap();
        assert_eq!(s.item_images("a").unwrap()[2].phash, Some(u64::MAX - 3));
        assert!(matches!(s.add_image("zz", "p", "c", 1, None), Err(StoreError::UnknownSku(_))));
    }
}
