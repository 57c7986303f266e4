//! The SQLite store: catalogue, images, interactions, users, features, model versions, outbox.
//!
//! One [`Store`] owns one `rusqlite::Connection`: it is `Send` but not `Sync`, so open one per
//! thread or task (WAL mode lets one writer and many readers work at once). Every write runs in a
//! `BEGIN IMMEDIATE` transaction with `synchronous=FULL`, so a call that returned `Ok` survives a
//! power cut; batch writes ([`Store::insert_events`]) share one fsync. See `docs/store.md`.
//!
//! Files: [`db`] (open, pragmas, transactions, counts), [`migrations`] (versioned schema),
//! `items`, `events`, `outbox`, `models` (the tables' methods), [`import`] (CSV and MMRec `.inter`).

pub mod db;
mod events;
pub mod import;
mod items;
pub mod migrations;
mod models;
mod outbox;
pub mod space;

pub use db::{Store, TableCounts};
pub use import::{
    import_catalog_csv, import_interactions, import_interactions_with, ImportSummary, InterImportOptions,
};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An error reported by SQLite (constraint, I/O, lock timeout, ...).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file exists but is not an SQLite database, or is truncated. The file is left untouched.
    #[error("{path} is not a usable SQLite database ({reason}); the file was left untouched")]
    NotSqlite { path: PathBuf, reason: String },
    /// The database was written by a newer version of this software.
    #[error("database schema version {found} is newer than this binary knows ({known}); upgrade sgbd-edge or restore an older backup")]
    SchemaTooNew { found: i64, known: i64 },
    /// A file could not be read or a directory created.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// An import file is unusable (unknown header, unreadable); `line` is 1-based.
    #[error("import failed at line {line}: {msg}")]
    Import { line: usize, msg: String },
    /// No item with this SKU in the catalogue.
    #[error("unknown sku {0:?}")]
    UnknownSku(String),
    /// No model version with this version string.
    #[error("unknown model version {0:?}")]
    UnknownModel(String),
    /// A value the caller passed is not acceptable (empty vector, attributes not an object, ...).
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// Result of every store call.
pub type Result<T> = std::result::Result<T, StoreError>;

/// What a shopper did with an item. Popularity weights: see [`EventKind::weight`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    View,
    Scan,
    Cart,
    Purchase,
}

impl EventKind {
    /// All kinds, weakest signal first.
    pub const ALL: [EventKind; 4] = [EventKind::View, EventKind::Scan, EventKind::Cart, EventKind::Purchase];

    /// The lowercase name stored in the database and used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::View => "view",
            EventKind::Scan => "scan",
            EventKind::Cart => "cart",
            EventKind::Purchase => "purchase",
        }
    }

    /// Weight in [`Store::popularity`]: view 1, scan 2, cart 4, purchase 8 (each step says twice
    /// as much about intent as the one before).
    pub fn weight(self) -> f64 {
        match self {
            EventKind::View => 1.0,
            EventKind::Scan => 2.0,
            EventKind::Cart => 4.0,
            EventKind::Purchase => 8.0,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = StoreError;
    /// Accepts the lowercase names, case-insensitively, and `add_to_cart` / `add-to-cart` for cart.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "view" => Ok(EventKind::View),
            "scan" => Ok(EventKind::Scan),
            "cart" | "add_to_cart" | "add-to-cart" => Ok(EventKind::Cart),
            "purchase" => Ok(EventKind::Purchase),
            other => Err(StoreError::Invalid(format!("unknown event kind {other:?} (view, scan, cart, purchase)"))),
        }
    }
}

/// One interaction. `event_id` is the idempotency key: storing the same id twice keeps the first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    pub user: String,
    pub sku: String,
    pub kind: EventKind,
    /// When it happened (ms since the Unix epoch, UTC), as the kiosk says.
    pub ts_ms: i64,
    pub kiosk: Option<String>,
}

/// Longest `event_id`, `user`, `sku` or kiosk id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Why an interaction's field is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: &'static str,
    pub problem: String,
}

/// The rule for every identifier of an interaction: not blank, no leading or trailing white space
/// (the catalogue and the imports trim SKUs, so `" a"` would never meet item `a`), at most
/// [`MAX_ID_BYTES`], no control characters.
pub fn check_id(field: &'static str, v: &str) -> std::result::Result<(), FieldError> {
    let bad = |problem: &str| Err(FieldError { field, problem: problem.into() });
    if v.trim().is_empty() {
        bad("must not be empty or blank")
    } else if v.trim() != v {
        bad("has leading or trailing white space")
    } else if v.len() > MAX_ID_BYTES {
        bad(&format!("longer than {MAX_ID_BYTES} bytes"))
    } else if v.chars().any(char::is_control) {
        bad("contains control characters")
    } else {
        Ok(())
    }
}

impl Event {
    /// The rules every stored interaction follows. The daemon's router checks kiosk events with
    /// this same function before they reach the store's writer, so a bad event is refused alone,
    /// at the edge, with the field named.
    pub fn check(&self) -> std::result::Result<(), FieldError> {
        check_id("event_id", &self.event_id)?;
        check_id("user", &self.user)?;
        check_id("sku", &self.sku)?;
        if let Some(k) = &self.kiosk {
            check_id("kiosk", k)?;
        }
        Ok(())
    }
}

/// What [`Store::ingest`] did with one kiosk event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingested {
    /// Stored now.
    New,
    /// This sender stored this `event_id` before, with the same content: nothing changed.
    Duplicate,
    /// This sender stored this `event_id` before for another user, item or kind; the first copy
    /// is kept.
    IdReused,
    /// The SKU is not in the catalogue: kept apart (never served, never trained on) until the
    /// item is catalogued, then moved into the interactions.
    HeldUnknownItem,
}

/// A catalogue item to insert or update (keyed by `sku`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewItem {
    pub sku: String,
    pub title: String,
    pub description: String,
    /// A JSON object of free attributes (colour, category, ...); `null` is stored as `{}`.
    pub attributes: serde_json::Value,
    /// The merchant's product photo, if any.
    pub image_path: Option<String>,
}

/// A catalogue item as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemRow {
    pub id: i64,
    pub sku: String,
    pub title: String,
    /// The merchant's description as imported.
    pub description: String,
    /// The denoised description; reset to `None` when the merchant description changes.
    pub clean_description: Option<String>,
    /// The BLIP caption of the item's photo.
    pub caption: Option<String>,
    pub attributes: serde_json::Value,
    pub image_path: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// One photo of an item (merchant photo or a shelf crop).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRow {
    pub id: i64,
    pub sku: String,
    pub path: String,
    /// Where it came from, e.g. `catalog` or a camera id.
    pub source: String,
    pub captured_ms: i64,
    /// 64-bit perceptual hash, if computed.
    pub phash: Option<u64>,
}

/// Which modality a stored item feature vector describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureKind {
    Text,
    Image,
}

impl FeatureKind {
    /// The lowercase name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::Text => "text",
            FeatureKind::Image => "image",
        }
    }
}

/// A message waiting to be published (the daemon's durable outbox).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Increasing, never reused (AUTOINCREMENT): acknowledge with [`Store::outbox_ack`].
    pub id: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub created_ms: i64,
}

/// Lifecycle of a recommender model version. At most one is `Active`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    /// Trained, waiting for (or failed to reach) the promotion gate.
    Candidate,
    /// Serving. Activating a version retires the previous active one in the same transaction.
    Active,
    /// Was active once; can be re-activated (rollback).
    Retired,
    /// Failed the promotion gate or its checksum.
    Rejected,
}

impl ModelStatus {
    /// The lowercase name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Candidate => "candidate",
            ModelStatus::Active => "active",
            ModelStatus::Retired => "retired",
            ModelStatus::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ModelStatus {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "candidate" => Ok(ModelStatus::Candidate),
            "active" => Ok(ModelStatus::Active),
            "retired" => Ok(ModelStatus::Retired),
            "rejected" => Ok(ModelStatus::Rejected),
            other => Err(StoreError::Invalid(format!("unknown model status {other:?}"))),
        }
    }
}

/// A recommender model version to register (the files live on disk, under the registry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewModelVersion {
    /// Unique version string, e.g. `2026-11-27T01:00:00Z-lightgcn`.
    pub version: String,
    /// Path of the model file or directory.
    pub path: String,
    /// Hex sha256 of the model file.
    pub sha256: String,
    /// Offline metrics (JSON object), e.g. `{"recall@20": 0.071}`.
    pub metrics: serde_json::Value,
    /// The version it was fine-tuned from.
    pub parent: Option<String>,
    pub status: ModelStatus,
}

/// A registered model version as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelVersionRow {
    pub id: i64,
    pub version: String,
    pub path: String,
    pub sha256: String,
    pub metrics: serde_json::Value,
    pub parent: Option<String>,
    pub status: ModelStatus,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// The database file the configuration names: `store.path`, under `node.data_dir` when relative.
pub fn db_path(cfg: &crate::config::Config) -> PathBuf {
    if cfg.store.path.is_absolute() {
        cfg.store.path.clone()
    } else {
        cfg.node.data_dir.join(&cfg.store.path)
    }
}

/// Opens the database the configuration names (see [`db_path`]).
pub fn open_config(cfg: &crate::config::Config) -> Result<Store> {
    Store::open(&db_path(cfg), cfg.store.busy_timeout_ms)
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kind_round_trips_and_orders_weights() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), k);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        }
        assert_eq!("Add-To-Cart".parse::<EventKind>().unwrap(), EventKind::Cart);
        assert!("like".parse::<EventKind>().is_err());
        let w: Vec<f64> = EventKind::ALL.iter().map(|k| k.weight()).collect();
        assert!(w.windows(2).all(|p| p[0] < p[1]));
    }

    #[test]
    fn ids_with_surrounding_white_space_are_refused_like_blank_ones() {
        assert!(check_id("sku", "a").is_ok());
        assert!(check_id("sku", "a b").is_ok(), "inner spaces are part of an id");
        for v in [" a", "a ", "\u{3000}a", ""] {
            let e = check_id("sku", v).unwrap_err();
            assert_eq!(e.field, "sku", "{v:?}");
        }
        assert_eq!(check_id("sku", " a").unwrap_err().problem, "has leading or trailing white space");
        assert_eq!(check_id("user", "   ").unwrap_err().problem, "must not be empty or blank");
    }

    #[test]
    fn db_path_joins_relative_under_data_dir() {
        let mut cfg = crate::config::Config::default();
        cfg.node.data_dir = PathBuf::from("/var/lib/sgbd-edge");
        assert_eq!(db_path(&cfg), PathBuf::from("/var/lib/sgbd-edge/sgbd.db"));
        cfg.store.path = PathBuf::from("/tmp/x.db");
        assert_eq!(db_path(&cfg), PathBuf::from("/tmp/x.db"));
    }
}
