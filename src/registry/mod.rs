//! Versioned recommender models on disk: checksums, metrics, lineage, promotion and rollback.
//!
//! Every version lives in `<data_dir>/registry/<version>/`:
//! - `checkpoint.safetensors` + `state.json`: the trained model (and optimiser) via
//!   [`crate::learn::checkpoint`], for warm starts;
//! - `serving.safetensors` + `ids.json`: what serving needs ([`ServingModel`]): final user and item
//!   embeddings, the user / sku id maps, and the projection from item features to item embeddings
//!   that scores new items without interactions, and for FREEDOM the item-item kNN lists and ID
//!   embeddings that score items added after training through the model itself;
//! - `metrics.json`: offline metrics of the candidate and of the model it was compared with;
//! - `manifest.json`: version, parent (lineage), creation time, model kind, and the sha256 of every
//!   file above. The store row (`model_versions`) holds the sha256 of `manifest.json`, so the row
//!   pins every byte of the version.
//!
//! Writes are atomic: files go to `.tmp-<version>/`, are fsynced, and the folder is renamed into
//! place (then the registry folder is fsynced); the store row is written after the rename, and the
//! active version changes in one SQLite transaction ([`crate::store::Store::set_model_status`]). A
//! crash at any point leaves the previous active version and its files intact. Loading verifies
//! every checksum ([`Registry::verify`]).
//!
//! Pinning (`models pin-version`, fleet `cmd/model-pin`): the pinned version is activated and the
//! learning loop keeps registering candidates but does not promote over it until unpinned. The pin
//! is the file `<registry>/PINNED` (written atomically).

use crate::store::{ModelStatus, ModelVersionRow, NewModelVersion, Store, StoreError};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// File names inside a version folder.
pub const MANIFEST: &str = "manifest.json";
pub const SERVING: &str = "serving.safetensors";
pub const IDS: &str = "ids.json";
pub const METRICS: &str = "metrics.json";
const PINNED: &str = "PINNED";

/// Errors of the model registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("model version {version}: {file} checksum mismatch (expected {expected}, found {actual})")]
    Checksum { version: String, file: String, expected: String, actual: String },
    #[error("model version {version}: {msg}")]
    Corrupt { version: String, msg: String },
    #[error("unknown model version {0:?}")]
    Unknown(String),
    #[error("version {pinned} is pinned by the fleet; unpin it first (`sgbd-edge models unpin`)")]
    Pinned { pinned: String },
    #[error("{0}")]
    Invalid(String),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io { path: path.to_path_buf(), source }
}

/// What `manifest.json` says about a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: String,
    pub parent: Option<String>,
    pub created_ms: i64,
    /// Recommender kind (`mf`, `lightgcn`, ...).
    pub model: String,
    /// sha256 (hex) of every other file in the folder.
    pub files: BTreeMap<String, String>,
}

fn sha256_file(path: &Path) -> Result<String> {
    crate::sys::sha256_file(path).map_err(io(path))
}

fn fsync_path(path: &Path) -> Result<()> {
    crate::sys::fsync_path(path).map_err(io(path))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::sys::write_synced(path, bytes).map_err(io(path))
}

/// Everything serving needs from a trained model.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingModel {
    /// External user ids, row order of `user_emb`.
    pub users: Vec<String>,
    /// SKUs, row order of `item_emb`.
    pub items: Vec<String>,
    pub dim: usize,
    /// `[users.len() * dim]`, row-major.
    pub user_emb: Vec<f32>,
    /// `[items.len() * dim]`, row-major.
    pub item_emb: Vec<f32>,
    /// Item features -> item embedding (`[feature_dim * dim]`), learned at promotion from the
    /// items that have both; scores new items that have features but no interactions.
    pub projection: Option<Projection>,
    /// FREEDOM's item-item graph ([`ServingGraph`]): new items join it and are scored by the
    /// model's own propagation; `None` for other models (they use the projection).
    pub graph: Option<ServingGraph>,
}

/// FREEDOM's item graph as served: its parts and the feature layout of its modalities.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingGraph {
    /// (modality, dimension) per graph modality, as in
    /// [`ItemFeatures::layout`](crate::online::features::ItemFeatures::layout).
    pub layout: Vec<(String, usize)>,
    pub parts: crate::learn::knn::ItemGraphParts,
}

/// `ids.json`'s record of a [`ServingGraph`] (the lists and ID rows are tensors).
#[derive(Serialize, Deserialize)]
struct GraphMeta {
    layout: Vec<(String, usize)>,
    k: usize,
    layers: usize,
    weights: Vec<f32>,
}

/// A linear map from an item's (normalised) feature vector to the embedding space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    /// Feature layout the projection expects: (modality, dimension) in row order, as in
    /// [`ItemFeatures::layout`](crate::online::features::ItemFeatures::layout).
    pub layout: Vec<(String, usize)>,
    pub feature_dim: usize,
    #[serde(skip)]
    pub weights: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct IdsFile {
    model: String,
    dim: usize,
    users: Vec<String>,
    items: Vec<String>,
    #[serde(default)]
    projection: Option<Projection>,
    #[serde(default)]
    graph: Option<GraphMeta>,
}

impl ServingModel {
    /// Writes `serving.safetensors` and `ids.json` into `dir`.
    pub fn save(&self, dir: &Path, model: &str) -> Result<()> {
        let d = self.dim;
        if self.user_emb.len() != self.users.len() * d || self.item_emb.len() != self.items.len() * d {
            return Err(RegistryError::Invalid("embedding sizes do not match the id maps".into()));
        }
        let dev = Device::Cpu;
        let mut map: HashMap<String, Tensor> = HashMap::new();
        map.insert("user_emb".into(), Tensor::from_slice(&self.user_emb, (self.users.len(), d), &dev)?);
        map.insert("item_emb".into(), Tensor::from_slice(&self.item_emb, (self.items.len(), d), &dev)?);
        if let Some(p) = &self.projection {
            map.insert("projection".into(), Tensor::from_slice(&p.weights, (p.feature_dim, d), &dev)?);
        }
        if let Some(g) = &self.graph {
            let n = g.parts.n_items();
            g.parts.check(d).map_err(|e| RegistryError::Invalid(e.to_string()))?;
            if n != self.items.len() {
                return Err(RegistryError::Invalid(format!("item graph of {n} items for {}", self.items.len())));
            }
            map.insert("graph.item_id".into(), Tensor::from_slice(&g.parts.item_id, (n, d), &dev)?);
            for (m, lists) in g.parts.neighbours.iter().enumerate() {
                let k = lists.first().map_or(0, Vec::len);
                if lists.iter().any(|l| l.len() != k) {
                    return Err(RegistryError::Invalid("item graph rows differ in length".into()));
                }
                let flat: Vec<u32> = lists.concat();
                map.insert(format!("graph.neighbours{m}"), Tensor::from_vec(flat, (n, k), &dev)?);
            }
        }
        let path = dir.join(SERVING);
        candle_core::safetensors::save(&map, &path)?;
        fsync_path(&path)?;
        let ids = IdsFile {
            model: model.to_string(),
            dim: d,
            users: self.users.clone(),
            items: self.items.clone(),
            projection: self.projection.clone(),
            graph: self.graph.as_ref().map(|g| GraphMeta {
                layout: g.layout.clone(),
                k: g.parts.k,
                layers: g.parts.layers,
                weights: g.parts.weights.clone(),
            }),
        };
        let text = serde_json::to_vec(&ids).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        write_synced(&dir.join(IDS), &text)
    }

    /// Reads what [`ServingModel::save`] wrote (no checksum check: see [`Registry::load_serving`]).
    pub fn load(dir: &Path, version: &str) -> Result<Self> {
        let corrupt = |msg: String| RegistryError::Corrupt { version: version.to_string(), msg };
        let ids_path = dir.join(IDS);
        let text = std::fs::read(&ids_path).map_err(io(&ids_path))?;
        let ids: IdsFile = serde_json::from_slice(&text).map_err(|e| corrupt(format!("{IDS}: {e}")))?;
        let path = dir.join(SERVING);
        let t = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| corrupt(format!("{SERVING}: {e}")))?;
        let get = |name: &str, rows: usize| -> Result<Vec<f32>> {
            let x = t.get(name).ok_or_else(|| corrupt(format!("{SERVING} lacks {name}")))?;
            if x.dims() != [rows, ids.dim] {
                return Err(corrupt(format!("{name} has shape {:?}, expected [{rows}, {}]", x.dims(), ids.dim)));
            }
            Ok(x.flatten_all()?.to_vec1::<f32>()?)
        };
        let user_emb = get("user_emb", ids.users.len())?;
        let item_emb = get("item_emb", ids.items.len())?;
        let projection = match ids.projection {
            Some(mut p) => {
                p.weights = get("projection", p.feature_dim)?;
                Some(p)
            }
            None => None,
        };
        let graph = match ids.graph {
            Some(meta) => {
                let n = ids.items.len();
                let neighbours = (0..meta.weights.len())
                    .map(|m| {
                        let name = format!("graph.neighbours{m}");
                        let x = t.get(&name).ok_or_else(|| corrupt(format!("{SERVING} lacks {name}")))?;
                        let (rows, k) = x.dims2().map_err(|_| corrupt(format!("{name} is not a matrix")))?;
                        if rows != n {
                            return Err(corrupt(format!("{name} has {rows} rows for {n} items")));
                        }
                        let flat: Vec<u32> = x.flatten_all()?.to_vec1()?;
                        Ok(flat.chunks(k.max(1)).map(<[u32]>::to_vec).collect::<Vec<_>>())
                    })
                    .collect::<Result<Vec<_>>>()?;
                let parts = crate::learn::knn::ItemGraphParts {
                    k: meta.k,
                    layers: meta.layers,
                    weights: meta.weights,
                    neighbours,
                    item_id: get("graph.item_id", n)?,
                };
                parts.check(ids.dim).map_err(|e| corrupt(e.to_string()))?;
                Some(ServingGraph { layout: meta.layout, parts })
            }
            None => None,
        };
        Ok(Self { users: ids.users, items: ids.items, dim: ids.dim, user_emb, item_emb, projection, graph })
    }
}

/// The registry folder of one node.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

/// A version written to disk (not yet registered in the store).
#[derive(Debug, Clone)]
pub struct Written {
    pub manifest: Manifest,
    pub dir: PathBuf,
    /// sha256 of `manifest.json` (what the store row records).
    pub sha256: String,
}

impl Registry {
    /// `<data_dir>/registry`.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self::new(cfg.node.data_dir.join("registry"))
    }

    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of `version`.
    pub fn dir(&self, version: &str) -> PathBuf {
        self.root.join(version)
    }

    /// A new version string: UTC time to the millisecond plus the model kind, e.g.
    /// `20261127T010203.456Z-lightgcn` (sortable, unique per node).
    pub fn new_version(model: &str) -> String {
        let ms = crate::sys::now_ms();
        let secs = ms.div_euclid(1000);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z-{model}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            ms.rem_euclid(1000)
        )
    }

    /// Writes a version atomically: `fill` writes its files into a temporary folder, then every
    /// file is hashed, `manifest.json` and `metrics.json` are written, everything is fsynced and
    /// the folder is renamed to `<root>/<version>`.
    pub fn write_version(
        &self,
        version: &str,
        parent: Option<&str>,
        model: &str,
        metrics: &serde_json::Value,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Written> {
        if version.is_empty() || version.contains(['/', '\\']) || version.starts_with('.') {
            return Err(RegistryError::Invalid(format!("bad version string {version:?}")));
        }
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let fin = self.dir(version);
        if fin.exists() {
            return Err(RegistryError::Invalid(format!("version {version} already exists on disk")));
        }
        let tmp = self.root.join(format!(".tmp-{version}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let res = (|| {
            fill(&tmp)?;
            let text = serde_json::to_vec_pretty(metrics).map_err(|e| RegistryError::Invalid(e.to_string()))?;
            write_synced(&tmp.join(METRICS), &text)?;
            let mut files = BTreeMap::new();
            let mut names: Vec<_> = std::fs::read_dir(&tmp)
                .map_err(io(&tmp))?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                let p = tmp.join(&name);
                fsync_path(&p)?;
                files.insert(name, sha256_file(&p)?);
            }
            let manifest = Manifest {
                version: version.to_string(),
                parent: parent.map(str::to_string),
                created_ms: crate::sys::now_ms(),
                model: model.to_string(),
                files,
            };
            let text = serde_json::to_vec_pretty(&manifest).map_err(|e| RegistryError::Invalid(e.to_string()))?;
            write_synced(&tmp.join(MANIFEST), &text)?;
            fsync_path(&tmp)?;
            Ok(manifest)
        })();
        let manifest = match res {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, &fin).map_err(io(&fin))?;
        fsync_path(&self.root)?;
        let sha256 = sha256_file(&fin.join(MANIFEST))?;
        Ok(Written { manifest, dir: fin, sha256 })
    }

    /// Records a written version in the store with `status` (metrics, sha256, parent). The path
    /// is recorded absolute: a relative `node.data_dir` (`./var`) would otherwise record a path
    /// relative to this process's working directory, which no reader can resolve.
    pub fn register(&self, store: &Store, w: &Written, metrics: &serde_json::Value, status: ModelStatus) -> Result<()> {
        let dir = std::path::absolute(&w.dir).map_err(io(&w.dir))?;
        store.insert_model_version(&NewModelVersion {
            version: w.manifest.version.clone(),
            path: dir.to_string_lossy().into_owned(),
            sha256: w.sha256.clone(),
            metrics: metrics.clone(),
            parent: w.manifest.parent.clone(),
            status,
        })?;
        Ok(())
    }

    /// Checks a registered version's files: `manifest.json` against the row's sha256, every file
    /// against the manifest. Returns the manifest.
    pub fn verify(&self, row: &ModelVersionRow) -> Result<Manifest> {
        let dir = self.dir(&row.version);
        let mpath = dir.join(MANIFEST);
        if !mpath.exists() {
            return Err(RegistryError::Corrupt {
                version: row.version.clone(),
                msg: format!("{} is missing", mpath.display()),
            });
        }
        let actual = sha256_file(&mpath)?;
        if actual != row.sha256 {
            return Err(RegistryError::Checksum {
                version: row.version.clone(),
                file: MANIFEST.into(),
                expected: row.sha256.clone(),
                actual,
            });
        }
        let text = std::fs::read(&mpath).map_err(io(&mpath))?;
        let m: Manifest = serde_json::from_slice(&text)
            .map_err(|e| RegistryError::Corrupt { version: row.version.clone(), msg: format!("{MANIFEST}: {e}") })?;
        for (name, expected) in &m.files {
            let p = dir.join(name);
            if !p.exists() {
                return Err(RegistryError::Corrupt { version: row.version.clone(), msg: format!("{name} is missing") });
            }
            let actual = sha256_file(&p)?;
            if &actual != expected {
                return Err(RegistryError::Checksum {
                    version: row.version.clone(),
                    file: name.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(m)
    }

    /// Verifies and loads the serving part of a version.
    pub fn load_serving(&self, row: &ModelVersionRow) -> Result<(Manifest, ServingModel)> {
        let m = self.verify(row)?;
        let s = ServingModel::load(&self.dir(&row.version), &row.version)?;
        Ok((m, s))
    }

    /// The pinned version, if any.
    pub fn pinned(&self) -> Result<Option<String>> {
        let p = self.root.join(PINNED);
        match std::fs::read_to_string(&p) {
            Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::Io { path: p, source: e }),
        }
    }

    /// Activates `version` after verifying its files. Refused when another version is pinned
    /// (unless `force`, used by pinning itself).
    pub fn activate(&self, store: &Store, version: &str, force: bool) -> Result<ModelVersionRow> {
        if !force {
            if let Some(p) = self.pinned()? {
                if p != version {
                    return Err(RegistryError::Pinned { pinned: p });
                }
            }
        }
        let row = store.model_version(version)?.ok_or_else(|| RegistryError::Unknown(version.to_string()))?;
        self.verify(&row)?;
        store.set_model_status(version, ModelStatus::Active)?;
        tracing::info!(version, "model version activated");
        store.model_version(version)?.ok_or_else(|| RegistryError::Unknown(version.to_string()))
    }

    /// Re-activates the most recently retired version whose files verify (the one that was active
    /// before the current one). Returns it.
    pub fn rollback(&self, store: &Store) -> Result<ModelVersionRow> {
        let current = store.active_model()?;
        let mut retired: Vec<ModelVersionRow> = store
            .model_versions()?
            .into_iter()
            .filter(|r| r.status == ModelStatus::Retired && Some(&r.version) != current.as_ref().map(|c| &c.version))
            .collect();
        retired.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then(b.id.cmp(&a.id)));
        for r in retired {
            match self.verify(&r) {
                Ok(_) => return self.activate(store, &r.version, false),
                Err(e) => {
                    tracing::warn!(version = %r.version, error = %e, "rollback skips a version that fails its checks")
                }
            }
        }
        Err(RegistryError::Invalid("no earlier version to roll back to".into()))
    }

    /// Pins `version` (activating it) or, with `None`, unpins.
    pub fn pin(&self, store: &Store, version: Option<&str>) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let p = self.root.join(PINNED);
        match version {
            Some(v) => {
                self.activate(store, v, true)?;
                crate::sys::write_atomic(&p, v.as_bytes(), true).map_err(io(&p))?;
                tracing::info!(version = v, "model version pinned");
            }
            None => {
                if p.exists() {
                    std::fs::remove_file(&p).map_err(io(&p))?;
                }
                tracing::info!("model pin removed");
            }
        }
        fsync_path(&self.root)
    }
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ServingModel {
        ServingModel {
            users: vec!["u1".into(), "u2".into()],
            items: vec!["a".into(), "b".into(), "c".into()],
            dim: 2,
            user_emb: vec![1.0, 0.0, 0.0, 1.0],
            item_emb: vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.5],
            projection: Some(Projection { layout: vec![("text".into(), 3)], feature_dim: 3, weights: vec![0.1; 6] }),
            graph: Some(ServingGraph {
                layout: vec![("text".into(), 3)],
                parts: crate::learn::knn::ItemGraphParts {
                    k: 2,
                    layers: 1,
                    weights: vec![1.0],
                    neighbours: vec![vec![vec![0, 1], vec![1, 2], vec![2, 0]]],
                    item_id: vec![0.5, -0.5, 0.25, 0.0, 1.0, 2.0],
                },
            }),
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_419), (2025, 11, 27));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn write_register_verify_and_detect_tampering() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path().join("registry"));
        let store = Store::open_in_memory().unwrap();
        let sm = tiny();
        let metrics = serde_json::json!({"recall@20": 0.5});
        let w = reg.write_version("v1", None, "mf", &metrics, |d| sm.save(d, "mf")).unwrap();
        assert!(w.manifest.files.contains_key(SERVING) && w.manifest.files.contains_key(METRICS));
        assert!(!reg.root().join(".tmp-v1").exists());
        reg.register(&store, &w, &metrics, ModelStatus::Candidate).unwrap();
        let row = store.model_version("v1").unwrap().unwrap();
        let (_, back) = reg.load_serving(&row).unwrap();
        assert_eq!(back, sm);
        // A failing writer leaves nothing behind.
        let e = reg.write_version("v2", Some("v1"), "mf", &metrics, |_| Err(RegistryError::Invalid("boom".into())));
        assert!(e.is_err());
        assert!(!reg.dir("v2").exists() && !reg.root().join(".tmp-v2").exists());
        // Tampering with a file is caught.
        let p = reg.dir("v1").join(SERVING);
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        match reg.verify(&row) {
            Err(RegistryError::Checksum { file, .. }) => assert_eq!(file, SERVING),
            other => panic!("expected a checksum error, got {other:?}"),
        }
        assert!(reg.activate(&store, "v1", false).is_err());
        assert!(store.active_model().unwrap().is_none());
    }

    #[test]
    fn pin_blocks_activation_and_rollback_goes_back() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path().join("registry"));
        let store = Store::open_in_memory().unwrap();
        let m = serde_json::json!({});
        for v in ["v1", "v2", "v3"] {
            let w = reg.write_version(v, None, "mf", &m, |d| tiny().save(d, "mf")).unwrap();
            reg.register(&store, &w, &m, ModelStatus::Candidate).unwrap();
        }
        let tick = || std::thread::sleep(std::time::Duration::from_millis(3));
        reg.activate(&store, "v1", false).unwrap();
        tick();
        reg.activate(&store, "v2", false).unwrap();
        tick();
        assert_eq!(reg.rollback(&store).unwrap().version, "v1");
        assert_eq!(store.model_version("v2").unwrap().unwrap().status, ModelStatus::Retired);
        tick();
        reg.pin(&store, Some("v3")).unwrap();
        assert_eq!(reg.pinned().unwrap().as_deref(), Some("v3"));
        assert_eq!(store.active_model().unwrap().unwrap().version, "v3");
        assert!(matches!(reg.activate(&store, "v2", false), Err(RegistryError::Pinned { .. })));
        assert!(matches!(reg.rollback(&store), Err(RegistryError::Pinned { .. })));
        reg.pin(&store, None).unwrap();
        assert_eq!(reg.pinned().unwrap(), None);
        assert_eq!(reg.rollback(&store).unwrap().version, "v1");
    }
}
