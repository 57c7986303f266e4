//! `bench robustness` end to end on a small H&M-shaped data folder with a tiny random sentence
//! encoder: every (rate, source, optimiser, seed) trains, the corruption counts, fidelity, cells,
//! JSON, plot and feature cache are what they claim, and bad input is refused.
use sgbd_edge::bench::robustness::{run, RobustnessArgs, RobustnessError};
use sgbd_edge::config::Config;
use sgbd_edge::denoise::catalog_noise::Corruption;
use sgbd_edge::denoise::features::TextMode;
use sgbd_edge::learn::model::ModelKind;
use sgbd_edge::learn::optim::OptimName;
use std::path::Path;

const KINDS: [&str; 3] = ["Trousers", "Sweater", "Dress"];

/// 24 items in three product types, 30 users who each buy within one type: 5 train, 1 valid,
/// 1 test interaction; catalogue in H&M's columns, `i_id_mapping.csv` and `shop.inter`.
fn write_data(dir: &Path) {
    let mut csv = String::from("article_id,prod_name,product_type_name,colour_group_name,detail_desc\n");
    let mut map = String::from("article_id\titemID\n");
    for i in 0..24 {
        let kind = KINDS[i % 3];
        let material = ["cotton", "wool", "denim", "linen"][i % 4];
        csv += &format!(
            "{:010},{kind} {i},{kind},Black,\"Soft {material} {} in a relaxed fit. Pockets at the front and a {} lining.\"\n",
            9000 + i,
            kind.to_lowercase(),
            ["jersey", "mesh", "satin"][i % 3]
        );
        map += &format!("{:010}\t{i}\n", 9000 + i);
    }
    let mut inter = String::from("userID\titemID\trating\ttimestamp\tx_label\n");
    for u in 0..30usize {
        let own: Vec<usize> = (0..24).filter(|i| i % 3 == u % 3).collect();
        for k in 0..7 {
            let item = own[(u + 3 * k) % own.len()];
            let x = match k {
                5 => 1,
                6 => 2,
                _ => 0,
            };
            inter += &format!("{u}\t{item}\t1\t{}\t{x}\n", 1000 + k);
        }
    }
    std::fs::write(dir.join("articles_sample.csv"), csv).unwrap();
    std::fs::write(dir.join("i_id_mapping.csv"), map).unwrap();
    std::fs::write(dir.join("shop.inter"), inter).unwrap();
}

fn args(data: &Path) -> RobustnessArgs {
    RobustnessArgs {
        data: Some(data.to_path_buf()),
        catalog: "articles_sample.csv".into(),
        rates: vec![50.0],
        kinds: Corruption::ALL.to_vec(),
        sources: vec![TextMode::Raw, TextMode::Cleaned],
        optims: vec![OptimName::Adam, OptimName::Sgbd],
        seeds: 2,
        seed: 999,
        noise_seed: 7,
        model: ModelKind::Freedom,
        epochs: Some(3),
        patience: None,
        cache: None,
        json: None,
        plot: None,
    }
}

fn config() -> Config {
    let mut c = Config::default();
    c.learn.batch = 64;
    c.learn.dim = 8;
    // Random weights: no phrase may be judged off-topic by their similarities.
    c.denoise.min_phrase_similarity = -1.0;
    c
}

#[test]
fn every_cell_trains_and_the_report_json_plot_and_cache_agree() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shop");
    std::fs::create_dir_all(&data).unwrap();
    write_data(&data);
    let enc = sgbd_edge::denoise::testutil::tiny_text_encoder(&dir.path().join("bert")).unwrap();
    let cache = dir.path().join("cache");
    let mut a = args(&data);
    a.cache = Some(cache.clone());
    a.json = Some(dir.path().join("r.json"));
    a.plot = Some(dir.path().join("r.svg"));
    let r = run(&a, &config(), &enc).unwrap();

    assert_eq!(r.rates, vec![0.0, 50.0], "rate 0 is added as the baseline");
    assert_eq!((r.users, r.items, r.model), (30, 24, ModelKind::Freedom));
    assert_eq!(r.runs.len(), 2 * 2 * 2 * 2, "rates x sources x optimisers x seeds");
    assert!(r.corrupted["0"].is_empty());
    let c50 = &r.corrupted["50"];
    assert_eq!(c50.values().sum::<usize>(), 12);
    assert!(c50.values().all(|&n| n == 3), "{c50:?}");
    for run in &r.runs {
        assert!((0.0..=1.0).contains(&run.recall_at_20) && (0.0..=1.0).contains(&run.ndcg_at_20), "{run:?}");
        assert!(run.epochs_run >= 1 && run.epochs_run <= 3);
    }
    assert_eq!(r.cells.len(), 2 * 2 * 2);
    for c in &r.cells {
        assert_eq!(c.seeds, 2);
        let seeds: Vec<f64> = r
            .runs
            .iter()
            .filter(|x| x.rate == c.rate && x.source == c.source && x.optim == c.optim)
            .map(|x| x.recall_at_20)
            .collect();
        assert!((c.recall_mean - (seeds[0] + seeds[1]) / 2.0).abs() < 1e-12);
        if c.rate == 0.0 {
            assert!(c.recall_change.abs() < 1e-12 || c.recall_mean == 0.0);
        }
    }
    // Fidelity: one entry per source and kind at 50 %; cut texts always move their feature.
    assert_eq!(r.fidelity.len(), 2 * 4);
    for f in &r.fidelity {
        assert_eq!((f.rate, f.items), (50.0, 3));
        assert!((-1.0..=1.0 + 1e-5).contains(&f.mean_cosine), "{f:?}");
        if f.kind == Corruption::Truncation {
            assert!(f.mean_cosine < 1.0 - 1e-6, "{f:?}");
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().map(|v| v.len()), Some(16));
    assert_eq!(json["degraded_cleaning"], serde_json::Value::Bool(true));
    let svg = std::fs::read_to_string(dir.path().join("r.svg")).unwrap();
    for label in ["adam, raw text", "adam, cleaned text", "sgbd-s1, raw text", "sgbd-s1, cleaned text"] {
        assert!(svg.contains(label), "plot legend lacks {label}");
    }
    let table = r.to_string();
    assert!(table.contains("| raw | adam |") && table.contains("| cleaned | sgbd-s1 |"), "{table}");

    // The cache holds one file per (source, rate); a later run reads them: zeroing the raw rate-0
    // features makes every raw corrupted item's cosine to them 0.
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().filter_map(|e| e.ok()).collect();
    assert_eq!(files.len(), 4);
    let base = files
        .iter()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.contains("-raw-") && n.contains("-r0-")
        })
        .unwrap();
    let (n, dim, _) = sgbd_edge::learn::npy::read_features(&base).unwrap();
    sgbd_edge::learn::npy::write_npy_f32(&base, &[n, dim], &vec![0.0; n * dim]).unwrap();
    let mut again = args(&data);
    again.cache = Some(cache);
    again.sources = vec![TextMode::Raw];
    again.optims = vec![OptimName::Adam];
    again.seeds = 1;
    let r2 = run(&again, &config(), &enc).unwrap();
    assert_eq!(r2.runs.len(), 2);
    assert!(r2.fidelity.iter().all(|f| f.mean_cosine == 0.0), "{:?}", r2.fidelity);
}

#[test]
fn bad_requests_and_mismatched_data_are_refused() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let enc = sgbd_edge::denoise::testutil::tiny_text_encoder(&dir.path().join("bert")).unwrap();
    let invalid = |a: RobustnessArgs| match run(&a, &config(), &enc) {
        Err(RobustnessError::Invalid(msg)) => msg,
        other => panic!("expected a refusal, got {:?}", other.map(|r| r.runs.len())),
    };
    let msg = invalid(RobustnessArgs { model: ModelKind::Mf, ..args(dir.path()) });
    assert!(msg.contains("freedom or vbpr"), "{msg}");
    let msg = invalid(RobustnessArgs { rates: vec![150.0], ..args(dir.path()) });
    assert!(msg.contains("150"), "{msg}");
    let msg = invalid(RobustnessArgs { seeds: 0, ..args(dir.path()) });
    assert!(msg.contains("seed"), "{msg}");
    // A mapping naming an item the interactions do not have.
    let mut map = std::fs::read_to_string(dir.path().join("i_id_mapping.csv")).unwrap();
    map += "0000009999\t24\n";
    std::fs::write(dir.path().join("i_id_mapping.csv"), map).unwrap();
    let msg = invalid(args(dir.path()));
    assert!(msg.contains("names 25 items") && msg.contains("has 24"), "{msg}");
    // A catalogue without the mapped items.
    std::fs::write(dir.path().join("articles_sample.csv"), "article_id,prod_name,detail_desc\n1,x,y\n").unwrap();
    let msg = invalid(args(dir.path()));
    assert!(msg.contains("no item of"), "{msg}");
}
