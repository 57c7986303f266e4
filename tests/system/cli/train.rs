//! `sgbd-edge train` and `sgbd-edge bench train` end to end on a tiny .inter file; bad input
//! gives a clear error. (The real Baby file's counts: `integration::learn::data`.)

use crate::harness::planted::World;
use std::io::Write;
use std::process::Command;

fn write_inter(dir: &std::path::Path) -> std::path::PathBuf {
    let d = World::new(2, 20, 12, 5).seed(9).interactions();
    let p = dir.join("tiny.inter");
    let mut f = std::fs::File::create(&p).unwrap();
    writeln!(f, "userID\titemID\tx_label").unwrap();
    for (split, pairs) in [(0, &d.train), (1, &d.valid), (2, &d.test)] {
        for (u, i) in pairs.iter() {
            writeln!(f, "{u}\t{i}\t{split}").unwrap();
        }
    }
    p
}

fn bin() -> Command {
    let mut c = crate::harness::daemon::bin();
    c.env_remove("SGBD_CONFIG").env("RUST_LOG", "warn");
    c
}

#[test]
fn train_writes_a_report() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let inter = write_inter(dir.path());
    let report = dir.path().join("r.json");
    let out = bin()
        .args(["train", "--data"])
        .arg(dir.path())
        .args([
            "--model",
            "lightgcn",
            "--optim",
            "sgbd",
            "--variant",
            "s2",
            "--epochs",
            "3",
            "--batch",
            "64",
            "--dim",
            "8",
            "--lr",
            "0.01",
            "--seed",
            "3",
            "--report",
        ])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("epoch   2") && stdout.contains("test @20"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["report"]["optim"], "sgbd-s2");
    assert_eq!(v["report"]["curve"].as_array().unwrap().len(), 3);
    assert_eq!(v["config"]["dim"], 8);
    assert!(v["report"]["test"]["recall"].as_array().unwrap().len() == 3);
    assert!(v["report"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(inter.exists());
}

#[test]
fn bench_train_prints_the_table() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let inter = write_inter(dir.path());
    let md = dir.path().join("b.md");
    let js = dir.path().join("b.json");
    let out = bin()
        .args(["bench", "train", "--data"])
        .arg(&inter)
        .args([
            "--model", "mf", "--optims", "adam,mg", "--seeds", "2", "--epochs", "2", "--batch", "64", "--dim", "8",
            "--json",
        ])
        .arg(&js)
        .arg("--markdown")
        .arg(&md)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let table = std::fs::read_to_string(&md).unwrap();
    assert!(table.contains("| adam |") && table.contains("| mg |") && table.contains("1.00x"), "{table}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&js).unwrap()).unwrap();
    assert_eq!(v["runs"][1]["reports"].as_array().unwrap().len(), 2);
}

#[test]
fn bench_train_profile_times_the_model_build_and_the_step_parts() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let inter = write_inter(dir.path());
    let out = bin()
        .args(["bench", "train", "--data"])
        .arg(&inter)
        .args(["--model", "mf", "--optims", "adam", "--dim", "8", "--profile"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for part in ["model build", "negative sampling", "optimiser step (adam)", "full evaluation"] {
        let line = stdout.lines().find(|l| l.contains(part)).unwrap_or_else(|| panic!("no {part:?} in {stdout}"));
        let ms: Vec<f64> = line.split_whitespace().rev().take(2).filter_map(|x| x.parse().ok()).collect();
        assert!(ms.len() == 2 && ms.iter().all(|x| x.is_finite() && *x >= 0.0), "{line}");
    }
}

#[test]
fn bad_data_is_a_clear_error() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.inter");
    std::fs::write(&p, "userID\titemID\tx_label\n0\t1\t0\n0\tseven\t0\n").unwrap();
    let out = bin().args(["train", "--data"]).arg(&p).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("bad.inter"), "{err}");
    let out = bin().args(["train", "--data"]).arg(dir.path().join("missing")).output().unwrap();
    assert!(!out.status.success());
    let out = bin().args(["train", "--data"]).arg(&p).args(["--alpha1", "0.1", "--alpha2", "0.2"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("alpha"));
}

#[test]
fn multimodal_models_train_from_the_cli() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    write_inter(dir.path());
    // 24 items, two modalities (4 and 3 dims); default file names are picked up beside the data
    let img: Vec<f32> = (0..24 * 4).map(|k| ((k * 7) % 11) as f32 / 11.0).collect();
    let txt: Vec<f32> = (0..24 * 3).map(|k| ((k * 5) % 13) as f32 / 13.0).collect();
    sgbd_edge::learn::npy::write_npy_f32(&dir.path().join("image_feat.npy"), &[24, 4], &img).unwrap();
    sgbd_edge::learn::npy::write_npy_f32(&dir.path().join("text_feat.npy"), &[24, 3], &txt).unwrap();
    for model in ["vbpr", "freedom"] {
        let out = bin()
            .args(["train", "--data"])
            .arg(dir.path())
            .args(["--model", model, "--optim", "mg", "--epochs", "2", "--batch", "64", "--dim", "8"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{model}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("features") && stdout.contains("test @20"), "{stdout}");
    }
    // a feature file with the wrong number of rows is refused, naming it
    sgbd_edge::learn::npy::write_npy_f32(&dir.path().join("bad.npy"), &[5, 4], &img[..20]).unwrap();
    let out = bin()
        .args(["train", "--data"])
        .arg(dir.path())
        .args(["--model", "vbpr", "--features"])
        .arg(dir.path().join("bad.npy"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.npy"));
}

#[test]
fn asking_for_cuda_without_a_gpu_trains_on_the_cpu_and_says_so() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    write_inter(dir.path());
    let report = dir.path().join("r.json");
    let out = bin()
        .args(["train", "--data"])
        .arg(dir.path())
        .args(["--device", "cuda", "--epochs", "1", "--batch", "64", "--dim", "8", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // a CPU build says it has no CUDA; a CUDA build on a machine without a GPU says it fell back
    let want = if cfg!(feature = "cuda") { "falling back to the CPU" } else { "built without the `cuda` feature" };
    assert!(err.contains(want) && err.contains("WARN"), "no fallback line in:\n{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["config"]["device"], "cuda", "the report keeps what was asked for ...");
    assert_eq!(v["report"]["device"], "cpu", "... and says where it ran");
    // a device name that is none of cpu / cuda / auto is refused before anything runs
    let out = bin().args(["train", "--data"]).arg(dir.path()).args(["--device", "gpu"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown device \"gpu\""));
}
