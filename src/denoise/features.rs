//! Catalogue readers (H&M `articles_sample.csv`, Myntra `styles.csv`) and item text features.
use super::embed::TextEncoder;
use super::text::clean_description;
use super::{DenoiseError, Result};
use crate::config::DenoiseConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One catalogue row.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogItem {
    pub sku: String,
    pub title: String,
    pub description: String,
    /// Other columns, in file order.
    pub attributes: Vec<(String, String)>,
    /// Photo path under the images folder, when given (it may not exist).
    pub image: Option<PathBuf>,
}

impl CatalogItem {
    /// An item as the store holds it, with `image` the photo to caption (the daemon: a shelf crop).
    /// Attributes keep the string and number values of the stored JSON object.
    pub fn from_row(row: &crate::store::ItemRow, image: Option<PathBuf>) -> Self {
        CatalogItem {
            sku: row.sku.clone(),
            title: row.title.clone(),
            description: row.description.clone(),
            attributes: attributes_of(&row.attributes),
            image,
        }
    }

    /// The store row of this catalogue item (its photo path only when the file exists).
    pub fn to_new_item(&self) -> crate::store::NewItem {
        let attrs: serde_json::Map<String, serde_json::Value> =
            self.attributes.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        crate::store::NewItem {
            sku: self.sku.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            attributes: serde_json::Value::Object(attrs),
            image_path: self.image.as_ref().filter(|p| p.is_file()).map(|p| p.display().to_string()),
        }
    }
}

/// The non-empty string and the number values of a JSON object, as `(key, text)`.
fn attributes_of(v: &serde_json::Value) -> Vec<(String, String)> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) if !s.is_empty() => Some((k.clone(), s.clone())),
            serde_json::Value::Number(n) => Some((k.clone(), n.to_string())),
            _ => None,
        })
        .collect()
}

/// Which layout a catalogue file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogLayout {
    /// H&M: `article_id, prod_name, ..., detail_desc`; photos `<dir>/<first 3 digits>/<id>.jpg`.
    HM,
    /// Myntra: `id, ..., productDisplayName` (no description); photos `<dir>/<id>.jpg`.
    Myntra,
    /// Generic: `sku, title, description, ...`; photos `<dir>/<sku>.jpg`.
    Generic,
}

fn detect(header: &[String]) -> Option<(CatalogLayout, usize, usize, Option<usize>)> {
    let pos = |n: &str| header.iter().position(|h| h == n);
    if let (Some(id), Some(t)) = (pos("article_id"), pos("prod_name")) {
        return Some((CatalogLayout::HM, id, t, pos("detail_desc")));
    }
    if let (Some(id), Some(t)) = (pos("id"), pos("productDisplayName")) {
        return Some((CatalogLayout::Myntra, id, t, None));
    }
    if let (Some(id), Some(t)) = (pos("sku"), pos("title")) {
        return Some((CatalogLayout::Generic, id, t, pos("description")));
    }
    None
}

/// Reads a catalogue CSV (layout detected from the header). Rows that cannot be read are skipped
/// with a warning naming the line. `limit` caps the number of items.
pub fn read_catalog(path: &Path, images: Option<&Path>, limit: Option<usize>) -> Result<Vec<CatalogItem>> {
    let cerr = |msg: String| DenoiseError::Catalog { path: path.display().to_string(), msg };
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_path(path).map_err(|e| cerr(e.to_string()))?;
    let header: Vec<String> =
        rdr.headers().map_err(|e| cerr(e.to_string()))?.iter().map(|s| s.trim().to_string()).collect();
    let (layout, id_col, title_col, desc_col) = detect(&header)
        .ok_or_else(|| cerr("unknown layout: need article_id+prod_name, id+productDisplayName, or sku+title".into()))?;
    let mut out = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(file = %path.display(), line = n + 2, error = %e, "catalogue row skipped");
                continue;
            }
        };
        let mut fields: Vec<String> = rec.iter().map(|s| s.to_string()).collect();
        // Myntra's styles.csv has unquoted commas in the last column (the title): join the extras.
        if fields.len() > header.len() && title_col == header.len() - 1 {
            let extra = fields.split_off(title_col);
            fields.push(extra.join(","));
        }
        if fields.len() < header.len() {
            tracing::warn!(file = %path.display(), line = n + 2, "catalogue row has too few columns, skipped");
            continue;
        }
        let sku = fields[id_col].trim().to_string();
        if sku.is_empty() {
            continue;
        }
        let attributes = header
            .iter()
            .zip(&fields)
            .enumerate()
            .filter(|(i, _)| *i != id_col && *i != title_col && Some(*i) != desc_col)
            .map(|(_, (h, v))| (h.clone(), v.clone()))
            .collect();
        let image = images.map(|d| match layout {
            CatalogLayout::HM => d.join(sku.get(..3).unwrap_or(&sku)).join(format!("{sku}.jpg")),
            CatalogLayout::Myntra | CatalogLayout::Generic => d.join(format!("{sku}.jpg")),
        });
        out.push(CatalogItem {
            sku,
            title: fields[title_col].trim().to_string(),
            description: desc_col.map(|c| fields[c].trim().to_string()).unwrap_or_default(),
            attributes,
            image,
        });
    }
    Ok(out)
}

/// Which text of an item to embed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TextMode {
    /// `title. description` as the merchant wrote it (MMRec's H&M-style text feature).
    Raw,
    /// The item text after cleaning (title + clean description + caption when given).
    Cleaned,
}

/// The text [`embed_catalog`] embeds for one item.
pub fn item_text(
    item: &CatalogItem,
    mode: TextMode,
    caption: Option<&str>,
    cfg: &DenoiseConfig,
    enc: Option<&TextEncoder>,
) -> Result<String> {
    Ok(match mode {
        TextMode::Raw => {
            if item.description.is_empty() {
                item.title.clone()
            } else {
                format!("{}. {}", item.title, item.description)
            }
        }
        TextMode::Cleaned => {
            clean_description(&item.title, &item.description, caption, &item.attributes, cfg, enc)?.item_text
        }
    })
}

/// MiniLM embeddings (384-d, L2-normalised) of the items' texts, one row per item in order.
/// `captions` (by sku) feed the cleaned mode when BLIP ran; without them cleaning is degraded.
pub fn embed_catalog(
    enc: &TextEncoder,
    items: &[CatalogItem],
    mode: TextMode,
    captions: &HashMap<String, String>,
    cfg: &DenoiseConfig,
) -> Result<Vec<Vec<f32>>> {
    let texts = items
        .iter()
        .map(|it| item_text(it, mode, captions.get(&it.sku).map(|s| s.as_str()), cfg, Some(enc)))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    enc.embed(&refs)
}

/// An MMRec `i_id_mapping.csv` (tab-separated `<id column>\titemID`, a header line first),
/// read once and used for filtering a catalogue and ordering its feature rows.
pub struct IdMapping {
    path: PathBuf,
    text: String,
}

impl IdMapping {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| DenoiseError::Io { path: path.display().to_string(), source })?;
        Ok(Self { path: path.to_path_buf(), text })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The item ids (first column), in file order.
    pub fn skus(&self) -> Vec<String> {
        self.text
            .lines()
            .skip(1)
            .filter_map(|l| l.split('\t').next())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The catalogue items the mapping names, in catalogue order.
    pub fn retain_mapped(&self, mut items: Vec<CatalogItem>) -> Vec<CatalogItem> {
        let keep: std::collections::HashSet<String> = self.skus().into_iter().collect();
        items.retain(|it| keep.contains(&it.sku));
        items
    }

    /// Reorders rows (one per item of `items`) so that row i belongs to itemID i. Items absent
    /// from the mapping are dropped; an itemID without a row is an error (the .npy must cover
    /// every item).
    pub fn order(&self, items: &[CatalogItem], rows: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        let merr = |msg: String| DenoiseError::Catalog { path: self.path.display().to_string(), msg };
        let by_sku: HashMap<&str, usize> = items.iter().enumerate().map(|(i, it)| (it.sku.as_str(), i)).collect();
        let mut pairs = Vec::new();
        for (n, line) in self.text.lines().enumerate().skip(1) {
            let mut f = line.split('\t');
            let (Some(sku), Some(id)) = (f.next(), f.next()) else { continue };
            let id: usize = id.trim().parse().map_err(|_| merr(format!("line {}: bad itemID", n + 1)))?;
            pairs.push((id, sku.trim()));
        }
        let n = pairs.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
        let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
        for (id, sku) in pairs {
            let i = *by_sku
                .get(sku)
                .ok_or_else(|| merr(format!("item {sku} (itemID {id}) is not in the catalogue read")))?;
            out[id] = Some(rows[i].clone());
        }
        out.into_iter().enumerate().map(|(i, r)| r.ok_or_else(|| merr(format!("no row for itemID {i}")))).collect()
    }
}

/// Writes rows as a float32 NumPy .npy (n x dim, C order).
pub fn write_npy(rows: &[Vec<f32>], path: &Path) -> Result<()> {
    let dim = rows.first().map(|r| r.len()).unwrap_or(0);
    if rows.iter().any(|r| r.len() != dim) {
        return Err(DenoiseError::Config("rows of different lengths".into()));
    }
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let t = candle_core::Tensor::from_vec(flat, (rows.len(), dim), &candle_core::Device::Cpu)?;
    t.write_npy(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hm_myntra_and_generic_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let hm = dir.path().join("a.csv");
        std::fs::write(&hm, "article_id,prod_name,colour_group_name,detail_desc\n0111565001,20 den Stockings,Black,\"Semi shiny, nylon.\"\n").unwrap();
        let items = read_catalog(&hm, Some(Path::new("/img")), None).unwrap();
        assert_eq!(items[0].sku, "0111565001");
        assert_eq!(items[0].description, "Semi shiny, nylon.");
        assert_eq!(items[0].attributes, vec![("colour_group_name".to_string(), "Black".to_string())]);
        assert_eq!(items[0].image.as_deref(), Some(Path::new("/img/011/0111565001.jpg")));
        let my = dir.path().join("s.csv");
        std::fs::write(&my, "id,gender,productDisplayName\n1,Men,Shirt, slim fit\n2,Women\n").unwrap();
        let items = read_catalog(&my, Some(Path::new("/i")), None).unwrap();
        assert_eq!(items.len(), 1, "short row skipped");
        assert_eq!(items[0].title, "Shirt, slim fit");
        assert_eq!(items[0].image.as_deref(), Some(Path::new("/i/1.jpg")));
        let bad = dir.path().join("b.csv");
        std::fs::write(&bad, "x,y\n1,2\n").unwrap();
        assert!(matches!(read_catalog(&bad, None, None), Err(DenoiseError::Catalog { .. })));
    }

    #[test]
    fn attributes_keep_strings_and_numbers() {
        let v = serde_json::json!({"colour": "Red", "year": 2011, "empty": "", "nested": {"a": 1}});
        let mut a = attributes_of(&v);
        a.sort();
        assert_eq!(a, vec![("colour".into(), "Red".into()), ("year".into(), "2011".into())]);
        assert!(attributes_of(&serde_json::Value::Null).is_empty());
    }

    #[test]
    fn store_rows_round_trip_through_catalogue_items() {
        let dir = tempfile::tempdir().unwrap();
        let photo = dir.path().join("a.jpg");
        std::fs::write(&photo, b"x").unwrap();
        let it = CatalogItem {
            sku: "A1".into(),
            title: "Jacket".into(),
            description: "Denim.".into(),
            attributes: vec![("colour".into(), "blue".into())],
            image: Some(photo.clone()),
        };
        let st = crate::store::Store::open_in_memory().unwrap();
        st.upsert_item(&it.to_new_item()).unwrap();
        let row = st.item_by_sku("A1").unwrap().unwrap();
        assert_eq!(row.image_path.as_deref(), Some(photo.to_str().unwrap()));
        assert_eq!(CatalogItem::from_row(&row, Some(photo)), it);
        let absent = CatalogItem { image: Some(dir.path().join("none.jpg")), ..it };
        assert_eq!(absent.to_new_item().image_path, None, "a photo that is not there is not recorded");
    }

    #[test]
    fn npy_roundtrip_and_mapping_order() {
        let dir = tempfile::tempdir().unwrap();
        let items: Vec<CatalogItem> = ["a", "b"]
            .iter()
            .map(|s| CatalogItem {
                sku: s.to_string(),
                title: String::new(),
                description: String::new(),
                attributes: vec![],
                image: None,
            })
            .collect();
        let map = dir.path().join("m.csv");
        std::fs::write(&map, "article_id\titemID\nb\t0\na\t1\n").unwrap();
        let mapping = IdMapping::read(&map).unwrap();
        assert_eq!(mapping.skus(), ["b", "a"]);
        let rows = mapping.order(&items, vec![vec![1.0, 2.0], vec![3.0, 4.0]]).unwrap();
        assert_eq!(rows, vec![vec![3.0, 4.0], vec![1.0, 2.0]]);
        let p = dir.path().join("x.npy");
        write_npy(&rows, &p).unwrap();
        let t = candle_core::Tensor::read_npy(&p).unwrap();
        assert_eq!(t.to_vec2::<f32>().unwrap(), rows);
    }
}
