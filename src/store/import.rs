//! Imports: catalogue CSV (Myntra `styles.csv`, H&M `articles*.csv`, generic `sku,title,...`) and
//! interactions (events CSV or MMRec `.inter`). Header-driven, idempotent (importing a file twice
//! adds nothing), per-row errors reported with 1-based line numbers while the other rows import.
//!
//! MMRec `.inter` rows become `purchase` events with `user` = the `userID` and `sku` = the
//! `itemID`, both as decimal strings (no prefix), and `event_id = "inter:<file stem>:<user>:<item>"`
//! (a `.inter` row is a user-item pair, so re-importing is idempotent). `ts_ms` is the `timestamp`
//! column (Unix seconds) times 1000 when present, else the row's 0-based position in the file.
//! `x_label` is kept as the interaction's split (see [`Store::interactions_with_split`]); the
//! `price` and `sales_channel_id` columns are not stored. No catalogue rows are created.

use super::events::{insert_in, validate};
use super::{io_err, Event, EventKind, NewItem, Result, Store, StoreError};
use crate::sys::now_ms;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// What an import did. `rows == inserted + duplicates + errors.len()`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// The layout detected from the header, e.g. `myntra styles.csv`.
    pub format: String,
    /// Data rows read (header excluded).
    pub rows: usize,
    /// New items or events.
    pub inserted: usize,
    /// Rows whose SKU (catalogue) or event id (interactions) was already stored or repeated in the
    /// file; catalogue duplicates update the stored item when its fields differ.
    pub duplicates: usize,
    /// `(line, message)` for each row that was not imported; line 1 is the header.
    pub errors: Vec<(usize, String)>,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} rows, {} inserted, {} duplicates, {} errors",
            self.format,
            self.rows,
            self.inserted,
            self.duplicates,
            self.errors.len()
        )
    }
}

/// Rows per write transaction: big enough to amortise the fsync, small enough not to hold the
/// write lock for long while the daemon runs.
const CHUNK: usize = 2000;

fn reader(path: &Path, delimiter: u8) -> Result<csv::Reader<std::fs::File>> {
    let f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    Ok(csv::ReaderBuilder::new().delimiter(delimiter).flexible(true).has_headers(true).from_reader(f))
}

fn headers(rdr: &mut csv::Reader<std::fs::File>) -> Result<Vec<String>> {
    let h = rdr.headers().map_err(|e| StoreError::Import { line: 1, msg: format!("cannot read the header: {e}") })?;
    // Strip a UTF-8 byte order mark and spaces.
    Ok(h.iter().map(|s| s.trim_start_matches('\u{feff}').trim().to_string()).collect())
}

fn col(h: &[String], name: &str) -> Option<usize> {
    h.iter().position(|c| c.eq_ignore_ascii_case(name))
}

/// Reads records; calls `row(line, record)` for each well-formed one and collects errors for the
/// others. An I/O error aborts.
fn for_each_record(
    rdr: &mut csv::Reader<std::fs::File>,
    n_cols: usize,
    summary: &mut ImportSummary,
    mut row: impl FnMut(usize, &csv::StringRecord, &mut ImportSummary) -> Result<()>,
) -> Result<()> {
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let line = rec.position().map(|p| p.line() as usize).unwrap_or(0);
                if rec.len() == 1 && rec[0].trim().is_empty() {
                    continue; // blank line
                }
                summary.rows += 1;
                if rec.len() != n_cols {
                    summary.errors.push((line, format!("expected {n_cols} fields, found {}", rec.len())));
                    continue;
                }
                row(line, &rec, summary)?;
            }
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                if let csv::ErrorKind::Io(_) = e.kind() {
                    return Err(StoreError::Import { line, msg: e.to_string() });
                }
                summary.rows += 1;
                summary.errors.push((line, e.to_string()));
            }
        }
    }
}

/// Errors that belong to one row (bad value, constraint) rather than to the whole import.
fn is_row_error(e: &StoreError) -> bool {
    match e {
        StoreError::Invalid(_) | StoreError::UnknownSku(_) => true,
        StoreError::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation),
        _ => false,
    }
}

enum ImageRule {
    /// A column holds the path (relative paths are under the CSV's folder).
    Column(usize),
    /// Myntra: `<dir>/images/<id>.jpg`.
    Myntra,
    /// H&M: `<dir>/images/<first 3 digits>/<article_id>.jpg`.
    Hm,
    None,
}

struct CatalogLayout {
    name: &'static str,
    sku: usize,
    title: usize,
    description: Option<usize>,
    image: ImageRule,
}

fn catalog_layout(h: &[String]) -> Result<CatalogLayout> {
    if let (Some(sku), Some(title)) = (col(h, "sku"), col(h, "title")) {
        let image = col(h, "image_path").or_else(|| col(h, "image")).map_or(ImageRule::None, ImageRule::Column);
        return Ok(CatalogLayout {
            name: "generic catalogue csv",
            sku,
            title,
            description: col(h, "description"),
            image,
        });
    }
    if let (Some(sku), Some(title)) = (col(h, "article_id"), col(h, "prod_name")) {
        return Ok(CatalogLayout {
            name: "h&m articles csv",
            sku,
            title,
            description: col(h, "detail_desc"),
            image: ImageRule::Hm,
        });
    }
    if let (Some(sku), Some(title)) = (col(h, "id"), col(h, "productDisplayName")) {
        return Ok(CatalogLayout {
            name: "myntra styles.csv",
            sku,
            title,
            description: None,
            image: ImageRule::Myntra,
        });
    }
    Err(StoreError::Import {
        line: 1,
        msg: format!(
            "unknown catalogue header [{}]: expected sku,title[,description,image_path,...] or \
             article_id,prod_name,detail_desc,... (H&M) or id,...,productDisplayName (Myntra)",
            h.join(",")
        ),
    })
}

fn image_for(rule: &ImageRule, dir: &Path, sku: &str, rec: &csv::StringRecord) -> Option<String> {
    let p: PathBuf = match rule {
        ImageRule::None => return None,
        ImageRule::Column(i) => {
            let v = rec.get(*i)?.trim();
            if v.is_empty() {
                return None;
            }
            let p = Path::new(v);
            return Some(if p.is_absolute() { v.to_string() } else { dir.join(p).to_string_lossy().into_owned() });
        }
        ImageRule::Myntra => dir.join("images").join(format!("{sku}.jpg")),
        ImageRule::Hm => dir.join("images").join(sku.get(..3)?).join(format!("{sku}.jpg")),
    };
    p.is_file().then(|| p.to_string_lossy().into_owned())
}

/// Imports a catalogue CSV, detecting the layout by its header:
/// - generic: `sku`, `title`, optional `description` and `image_path` (or `image`);
/// - H&M `articles.csv`: `article_id` -> sku, `prod_name` -> title, `detail_desc` -> description,
///   photo `images/<first 3 digits>/<article_id>.jpg` beside the CSV when it exists;
/// - Myntra `styles.csv`: `id` -> sku, `productDisplayName` -> title, no description, photo
///   `images/<id>.jpg` beside the CSV when it exists.
///
/// Every other non-empty column goes into `attributes` as a string. Rows are upserted by SKU.
/// An unreadable file or unknown header is an error; bad rows are listed in the summary.
pub fn import_catalog_csv(store: &mut Store, path: &Path) -> Result<ImportSummary> {
    let mut rdr = reader(path, b',')?;
    let h = headers(&mut rdr)?;
    let layout = catalog_layout(&h)?;
    let dir = path.parent().map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf())).unwrap_or_default();
    let mut summary = ImportSummary { format: layout.name.to_string(), ..Default::default() };
    let mut batch: Vec<(usize, NewItem)> = Vec::with_capacity(CHUNK);
    let flush = |batch: &mut Vec<(usize, NewItem)>, summary: &mut ImportSummary| -> Result<()> {
        store.write(|_| {
            for (line, item) in batch.iter() {
                match store.upsert_item(item) {
                    Ok((_, true)) => summary.inserted += 1,
                    Ok((_, false)) => summary.duplicates += 1,
                    Err(e) if is_row_error(&e) => summary.errors.push((*line, e.to_string())),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        batch.clear();
        Ok(())
    };
    for_each_record(&mut rdr, h.len(), &mut summary, |line, rec, summary| {
        let sku = rec[layout.sku].trim();
        let title = rec[layout.title].trim();
        if sku.is_empty() {
            summary.errors.push((line, "empty sku".into()));
            return Ok(());
        }
        if title.is_empty() {
            summary.errors.push((line, format!("empty title for sku {sku}")));
            return Ok(());
        }
        let used = |i: usize| {
            i == layout.sku
                || i == layout.title
                || Some(i) == layout.description
                || matches!(layout.image, ImageRule::Column(c) if c == i)
        };
        let attributes: serde_json::Map<String, serde_json::Value> = h
            .iter()
            .enumerate()
            .filter(|(i, _)| !used(*i))
            .filter_map(|(i, name)| {
                let v = rec.get(i)?.trim();
                (!v.is_empty()).then(|| (name.clone(), serde_json::Value::String(v.to_string())))
            })
            .collect();
        let item = NewItem {
            sku: sku.to_string(),
            title: title.to_string(),
            description: layout.description.and_then(|i| rec.get(i)).unwrap_or("").trim().to_string(),
            attributes: serde_json::Value::Object(attributes),
            image_path: image_for(&layout.image, &dir, sku, rec),
        };
        batch.push((line, item));
        if batch.len() >= CHUNK {
            flush(&mut batch, summary)?;
        }
        Ok(())
    })?;
    flush(&mut batch, &mut summary)?;
    tracing::info!(file = %path.display(), format = %summary.format, rows = summary.rows, inserted = summary.inserted,
        duplicates = summary.duplicates, errors = summary.errors.len(), "catalogue imported");
    Ok(summary)
}

struct InterLayout {
    user: usize,
    item: usize,
    ts: Option<usize>,
    split: Option<usize>,
}

struct EventsLayout {
    event_id: usize,
    user: usize,
    sku: usize,
    kind: usize,
    ts_ms: usize,
    kiosk: Option<usize>,
    split: Option<usize>,
}

fn parse_split(v: &str) -> std::result::Result<Option<u8>, String> {
    match v.trim() {
        "" => Ok(None),
        "0" => Ok(Some(0)),
        "1" => Ok(Some(1)),
        "2" => Ok(Some(2)),
        other => Err(format!("split/x_label {other:?} is not 0, 1 or 2")),
    }
}

/// The optional split column of a row (`None` when the file has no such column or the cell is empty).
fn split_column(col: Option<usize>, rec: &csv::StringRecord) -> std::result::Result<Option<u8>, String> {
    col.map(|i| parse_split(&rec[i])).transpose().map(Option::flatten)
}

/// Options of [`import_interactions_with`].
#[derive(Clone, Debug, Default)]
pub struct InterImportOptions {
    /// MMRec `i_id_mapping.csv` (`<original id>\titemID`): `.inter` item ids become the original
    /// ids (e.g. H&M `article_id`), so the interactions join the imported catalogue.
    pub item_map: Option<PathBuf>,
    /// MMRec `u_id_mapping.csv` (`<original id>\tuserID`): `.inter` user ids become the original ids.
    pub user_map: Option<PathBuf>,
}

/// Reads an MMRec id mapping (header with `key_col` and one other column, tab- or comma-separated)
/// into `contiguous id -> original id`.
pub fn read_id_map(path: &Path, key_col: &str) -> Result<std::collections::HashMap<String, String>> {
    let first = first_line(path)?;
    let mut rdr = reader(path, if first.contains('\t') { b'\t' } else { b',' })?;
    let h = headers(&mut rdr)?;
    let (Some(key), Some(val)) = (col(&h, key_col), (0..h.len()).find(|&i| !h[i].eq_ignore_ascii_case(key_col))) else {
        return Err(StoreError::Import {
            line: 1,
            msg: format!(
                "{}: id map header needs {key_col} and an original-id column, found [{}]",
                path.display(),
                h.join(",")
            ),
        });
    };
    let mut map = std::collections::HashMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| StoreError::Import {
            line: e.position().map(|p| p.line() as usize).unwrap_or(0),
            msg: format!("{}: {e}", path.display()),
        })?;
        if let (Some(k), Some(v)) = (rec.get(key), rec.get(val)) {
            map.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    Ok(map)
}

fn first_line(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut line = String::new();
    std::io::BufReader::new(f)
        .read_line(&mut line)
        .map_err(|e| StoreError::Import { line: 1, msg: format!("cannot read the header: {e}") })?;
    Ok(line)
}

/// Imports interactions from an events CSV (`event_id,user,sku,kind,ts_ms[,kiosk][,split]`,
/// comma-separated, columns found by name) or an MMRec `.inter` file (tab-separated, header
/// `userID itemID [timestamp price sales_channel_id] x_label`; see the module docs for the
/// mapping). The format is told by the header line: a tab means `.inter`.
pub fn import_interactions(store: &mut Store, path: &Path) -> Result<ImportSummary> {
    import_interactions_with(store, path, &InterImportOptions::default())
}

/// [`import_interactions`] with id maps for `.inter` files. A row whose id is missing from a
/// given map is reported as a row error. The event id keeps the file's contiguous ids, so a file
/// imported with and without maps is still one set of events (the first import wins).
pub fn import_interactions_with(store: &mut Store, path: &Path, opts: &InterImportOptions) -> Result<ImportSummary> {
    let item_map = opts.item_map.as_deref().map(|p| read_id_map(p, "itemID")).transpose()?;
    let user_map = opts.user_map.as_deref().map(|p| read_id_map(p, "userID")).transpose()?;
    let inter = first_line(path)?.contains('\t');
    let mut rdr = reader(path, if inter { b'\t' } else { b',' })?;
    let h = headers(&mut rdr)?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut summary = ImportSummary::default();
    let mut batch: Vec<(usize, Event, Option<u8>)> = Vec::with_capacity(CHUNK);
    let flush = |batch: &mut Vec<(usize, Event, Option<u8>)>, summary: &mut ImportSummary| -> Result<()> {
        let now = now_ms();
        store.write(|c| {
            for (line, ev, split) in batch.iter() {
                match insert_in(c, ev, *split, now) {
                    Ok(true) => summary.inserted += 1,
                    Ok(false) => summary.duplicates += 1,
                    Err(e) if is_row_error(&e) => summary.errors.push((*line, e.to_string())),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        batch.clear();
        Ok(())
    };
    let mut push = |line: usize, ev: Event, split: Option<u8>, summary: &mut ImportSummary| -> Result<()> {
        if let Err(e) = validate(&ev) {
            summary.errors.push((line, e.to_string()));
            return Ok(());
        }
        batch.push((line, ev, split));
        if batch.len() >= CHUNK {
            flush(&mut batch, summary)?;
        }
        Ok(())
    };
    if inter {
        let (Some(user), Some(item)) = (col(&h, "userID"), col(&h, "itemID")) else {
            return Err(StoreError::Import {
                line: 1,
                msg: format!("MMRec .inter header needs userID and itemID, found [{}]", h.join(" ")),
            });
        };
        let l = InterLayout { user, item, ts: col(&h, "timestamp"), split: col(&h, "x_label") };
        summary.format = format!("mmrec .inter ({} columns)", h.len());
        let mut position: i64 = 0;
        for_each_record(&mut rdr, h.len(), &mut summary, |line, rec, summary| {
            let order = position;
            position += 1;
            let (user, item) = (rec[l.user].trim(), rec[l.item].trim());
            let ts_ms = match l.ts.map(|i| rec[i].trim()) {
                None => order,
                Some(v) => match v
                    .parse::<i64>()
                    .ok()
                    .or_else(|| v.parse::<f64>().ok().filter(|x| x.is_finite()).map(|x| x as i64))
                {
                    Some(s) => s.saturating_mul(1000),
                    None => {
                        summary.errors.push((line, format!("timestamp {v:?} is not a number")));
                        return Ok(());
                    }
                },
            };
            let split = match split_column(l.split, rec) {
                Ok(s) => s,
                Err(msg) => {
                    summary.errors.push((line, msg));
                    return Ok(());
                }
            };
            let mapped = |map: &Option<std::collections::HashMap<String, String>>, id: &str, what: &str| match map {
                None => Ok(id.to_string()),
                Some(m) => m.get(id).cloned().ok_or_else(|| format!("{what} {id} is not in the {what} map")),
            };
            let (sku, user_id) = match (mapped(&item_map, item, "itemID"), mapped(&user_map, user, "userID")) {
                (Ok(s), Ok(u)) => (s, u),
                (Err(msg), _) | (_, Err(msg)) => {
                    summary.errors.push((line, msg));
                    return Ok(());
                }
            };
            let ev = Event {
                event_id: format!("inter:{stem}:{user}:{item}"),
                user: user_id,
                sku,
                kind: EventKind::Purchase,
                ts_ms,
                kiosk: None,
            };
            push(line, ev, split, summary)
        })?;
    } else {
        let need = |name: &str| {
            col(&h, name).ok_or_else(|| StoreError::Import {
                line: 1,
                msg: format!(
                    "events CSV header needs event_id,user,sku,kind,ts_ms[,kiosk][,split] (or a tab-separated MMRec .inter); missing {name} in [{}]",
                    h.join(",")
                ),
            })
        };
        let l = EventsLayout {
            event_id: need("event_id")?,
            user: need("user")?,
            sku: need("sku")?,
            kind: need("kind")?,
            ts_ms: need("ts_ms")?,
            kiosk: col(&h, "kiosk"),
            split: col(&h, "split"),
        };
        summary.format = "events csv".into();
        for_each_record(&mut rdr, h.len(), &mut summary, |line, rec, summary| {
            let kind = match rec[l.kind].parse::<EventKind>() {
                Ok(k) => k,
                Err(e) => {
                    summary.errors.push((line, e.to_string()));
                    return Ok(());
                }
            };
            let Ok(ts_ms) = rec[l.ts_ms].trim().parse::<i64>() else {
                summary.errors.push((line, format!("ts_ms {:?} is not an integer", &rec[l.ts_ms])));
                return Ok(());
            };
            let split = match split_column(l.split, rec) {
                Ok(s) => s,
                Err(msg) => {
                    summary.errors.push((line, msg));
                    return Ok(());
                }
            };
            let kiosk = l.kiosk.map(|i| rec[i].trim()).filter(|k| !k.is_empty()).map(str::to_string);
            let ev = Event {
                event_id: rec[l.event_id].trim().to_string(),
                user: rec[l.user].trim().to_string(),
                sku: rec[l.sku].trim().to_string(),
                kind,
                ts_ms,
                kiosk,
            };
            push(line, ev, split, summary)
        })?;
    }
    flush(&mut batch, &mut summary)?;
    tracing::info!(file = %path.display(), format = %summary.format, rows = summary.rows, inserted = summary.inserted,
        duplicates = summary.duplicates, errors = summary.errors.len(), "interactions imported");
    Ok(summary)
}
