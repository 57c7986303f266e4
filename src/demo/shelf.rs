//! `run --demo`: the bundled shelf pictures dropped into the folder cameras, so that the log shows
//! each picture cut into its planogram crops, each product denoised and stored.
use crate::config::{CameraKind, Config};
use std::path::{Path, PathBuf};

/// `run --demo`: copies `<demo_dir>/shelf/<camera id>.jpg` into each folder camera's directory
/// that has one (written under a hidden name, then renamed, so the camera never reads half a
/// file). Returns the files written.
pub fn drop_demo_shelves(cfg: &Config, demo_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for cam in &cfg.capture.cameras {
        let CameraKind::Folder { dir, .. } = &cam.source else { continue };
        let src = demo_dir.join("shelf").join(format!("{}.jpg", cam.id));
        if !src.is_file() {
            continue;
        }
        let name = format!("{}-{}.jpg", cam.id, crate::sys::now_ms());
        let (tmp, dst) = (dir.join(format!(".{name}.tmp")), dir.join(&name));
        let r = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::copy(&src, &tmp))
            .and_then(|_| std::fs::rename(&tmp, &dst));
        match r {
            Ok(()) => {
                tracing::info!(camera = %cam.id, file = %dst.display(), "demo: shelf picture dropped into the camera folder");
                out.push(dst);
            }
            Err(e) => {
                tracing::warn!(camera = %cam.id, dir = %dir.display(), error = %e, "demo: shelf picture not dropped")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_shelf_dropped_into_folder_cameras_only() {
        let d = tempfile::tempdir().unwrap();
        let demo = d.path().join("demo");
        std::fs::create_dir_all(demo.join("shelf")).unwrap();
        std::fs::write(demo.join("shelf/shelf-a.jpg"), b"jpeg").unwrap();
        let mut cfg = Config::default();
        let inbox = d.path().join("in");
        cfg.capture.cameras = vec![
            crate::config::CameraConfig {
                id: "shelf-a".into(),
                source: CameraKind::Folder { dir: inbox.clone(), done_dir: "done".into() },
                slots: vec![],
            },
            crate::config::CameraConfig {
                id: "other".into(),
                source: CameraKind::Folder { dir: d.path().join("other"), done_dir: "done".into() },
                slots: vec![],
            },
        ];
        let files = drop_demo_shelves(&cfg, &demo);
        assert_eq!(files.len(), 1);
        assert_eq!(std::fs::read(&files[0]).unwrap(), b"jpeg");
        let names: Vec<_> = std::fs::read_dir(&inbox).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
        assert!(!d.path().join("other").exists());
    }
}
