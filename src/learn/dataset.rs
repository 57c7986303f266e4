//! Where `train` and `bench train` read their data: an MMRec `.inter` file (named directly or as a
//! data set under `$SGBD_DATA`) with the feature files the model needs, or the store's
//! interactions with a per-user time split.
use super::data::{self, Interactions};
use super::model::ModelKind;
use super::{LearnError, Result};
use crate::config::{Config, LearnConfig};
use std::path::{Path, PathBuf};

/// The data a training run reads (the command line's `--data`, `--dataset`, `--features`,
/// `--from-store`).
#[derive(Debug, Clone, Default)]
pub struct DataSource {
    /// A `.inter` file, or a folder holding one (with its feature files).
    pub data: Option<PathBuf>,
    /// Data set name under `$SGBD_DATA`: baby, tiktok or hm (used when `data` is absent).
    pub dataset: Option<String>,
    /// Item feature files (.npy); empty: the default ones beside the data, when the model needs them.
    pub features: Vec<PathBuf>,
    /// The store's interactions table instead of a `.inter` file.
    pub from_store: bool,
}

/// Loaded data: where it came from, the interactions, and the item features with their files.
pub struct Dataset {
    /// The `.inter` file, or the store's database file.
    pub path: PathBuf,
    pub inter: Interactions,
    pub features: super::trainer::Features,
    /// The file each of `features` was read from.
    pub feature_files: Vec<PathBuf>,
}

/// Feature files looked for beside the `.inter` file, in this order (FREEDOM weighs the first
/// 0.1 and the second 0.9, as MMRec's image / text).
pub const DEFAULT_FEATURES: [&str; 3] = ["image_feat.npy", "text_feat.npy", "audio_feat.npy"];

/// The folder of data set `name` (baby, tiktok, hm) under `$SGBD_DATA`.
pub fn named_dir(name: &str) -> Result<PathBuf> {
    let root = std::env::var_os("SGBD_DATA").ok_or_else(|| {
        LearnError::Invalid(format!("data set {name:?} needs SGBD_DATA (the data root); or pass --data"))
    })?;
    let sub = match name {
        "baby" => "mmrec_baby",
        "tiktok" => "tiktok_mmssl",
        "hm" => "hm_sample",
        other => return Err(LearnError::Invalid(format!("unknown --dataset {other:?} (baby, tiktok, hm)"))),
    };
    Ok(Path::new(&root).join(sub))
}

/// The `.inter` path of `data`, or of `dataset` under `$SGBD_DATA`.
pub fn resolve(src: &DataSource) -> Result<PathBuf> {
    let dir = match (&src.data, &src.dataset) {
        (Some(d), _) => d.clone(),
        (None, Some(name)) => named_dir(name)?,
        (None, None) => {
            return Err(LearnError::Invalid("give --data DIR|FILE.inter or --dataset NAME with SGBD_DATA".into()))
        }
    };
    data::find_inter(&dir)
}

/// Loads the interactions and the feature files the model (`learn.model`) needs; `cfg` names the
/// store for `from_store`.
pub fn load(src: &DataSource, cfg: &Config, learn: &LearnConfig) -> Result<Dataset> {
    if src.from_store {
        let path = crate::store::db_path(cfg);
        let store = crate::store::Store::open(&path, cfg.store.busy_timeout_ms)
            .map_err(|source| LearnError::Store { path: path.clone(), source })?;
        let events = store.interactions().map_err(|source| LearnError::Store { path: path.clone(), source })?;
        let (inter, _maps) = Interactions::from_events(&events, learn.valid_per_user, learn.test_per_user);
        inter.validate().map_err(|e| LearnError::Data { path: path.clone(), msg: e.to_string() })?;
        return Ok(Dataset { path, inter, features: Vec::new(), feature_files: Vec::new() });
    }
    let path = resolve(src)?;
    let inter = data::load_inter(&path)?;
    let mut features = Vec::new();
    let mut feature_files = Vec::new();
    let wants = matches!(learn.model, ModelKind::Vbpr | ModelKind::Freedom) || !src.features.is_empty();
    if wants {
        let files = if src.features.is_empty() { default_features(&path) } else { src.features.clone() };
        if files.is_empty() {
            return Err(LearnError::Invalid(format!(
                "no feature files: pass --features a.npy,b.npy (none of {DEFAULT_FEATURES:?} beside the data)"
            )));
        }
        for f in files {
            features.push(super::npy::Modality::load(&f, inter.n_items)?);
            feature_files.push(f);
        }
    }
    Ok(Dataset { path, inter, features, feature_files })
}

fn default_features(inter: &Path) -> Vec<PathBuf> {
    let dir = inter.parent().unwrap_or(Path::new("."));
    DEFAULT_FEATURES.iter().map(|f| dir.join(f)).filter(|p| p.exists()).take(2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_needs_a_source() {
        let e = resolve(&DataSource::default()).unwrap_err().to_string();
        assert!(e.contains("--data"), "{e}");
    }
}
