//! The multimodal experiments of docs/multimodal.md (VBPR / FREEDOM on real data, Adam vs MG vs
//! SGBD, clean and corrupted features). Ignored by default: run explicitly, e.g.
//!
//! ```text
//! SGBD_DATA=/path/to/data LEARNMM_MODELS=freedom,vbpr LEARNMM_OPTIMS=adam,mg,sgbd LEARNMM_SEEDS=999,1000,1001 \
//!   nice -n 10 cargo test --release --test integration learn::multimodal::experiments -- --ignored --nocapture
//! ```
//!
//! Environment (all optional except SGBD_DATA): LEARNMM_DATASET (tiktok_mmssl), LEARNMM_FEATURES
//! (image_feat.npy,audio_feat.npy), LEARNMM_MODELS, LEARNMM_OPTIMS, LEARNMM_SEEDS, LEARNMM_EPOCHS
//! (80), LEARNMM_PATIENCE (20), LEARNMM_NOISE (comma list of sigma, 0), LEARNMM_SWAP (comma list of
//! fractions, 0), LEARNMM_CORRUPT_SEED (7), LEARNMM_JSON (write all reports), LEARNMM_RHO (0.05),
//! LEARNMM_ALPHA2 (0.2), LEARNMM_FREEDOM_LAMBDA, LEARNMM_FREEDOM_DROPOUT, LEARNMM_VBPR_REG.

use candle_core::DType;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sgbd_edge::learn::corrupt::Corruption;
use sgbd_edge::learn::data::{find_inter, load_inter};
use sgbd_edge::learn::freedom::{Freedom, FreedomParams};
use sgbd_edge::learn::model::Recommender;
use sgbd_edge::learn::npy::Modality;
use sgbd_edge::learn::optim::{build, OptimKind, OptimParams, Variant};
use sgbd_edge::learn::trainer::{fit, Hooks, TrainOptions};
use sgbd_edge::learn::vbpr::{Vbpr, VbprParams};

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn list<T: std::str::FromStr>(key: &str, default: &str) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    env_or(key, default).split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect()
}

fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = if x.len() > 1 { x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, v.sqrt())
}

#[test]
#[ignore = "long experiment: run explicitly with --ignored"]
fn multimodal_experiments() {
    // Hours of training, and it reports seconds per epoch.
    let _turn = crate::harness::exclusive();
    let Some(root) = crate::harness::sgbd_data() else { return };
    let dir = root.join(env_or("LEARNMM_DATASET", "tiktok_mmssl"));
    let data = load_inter(&find_inter(&dir).unwrap()).unwrap();
    let feature_files: Vec<String> = list("LEARNMM_FEATURES", "image_feat.npy,audio_feat.npy");
    let clean: Vec<Modality> =
        feature_files.iter().map(|f| Modality::load(&dir.join(f), data.n_items).unwrap()).collect();
    let models: Vec<String> = list("LEARNMM_MODELS", "freedom,vbpr");
    let optims: Vec<String> = list("LEARNMM_OPTIMS", "adam,mg,sgbd");
    let seeds: Vec<u64> = list("LEARNMM_SEEDS", "999,1000,1001");
    let noises: Vec<f32> = list("LEARNMM_NOISE", "0");
    let swaps: Vec<f32> = list("LEARNMM_SWAP", "0");
    let corrupt_seed: u64 = env_or("LEARNMM_CORRUPT_SEED", "7").parse().unwrap();
    let opts = TrainOptions {
        epochs: env_or("LEARNMM_EPOCHS", "80").parse().unwrap(),
        patience: env_or("LEARNMM_PATIENCE", "20").parse().unwrap(),
        ..TrainOptions::default()
    };
    let optim_params = OptimParams {
        rho: env_or("LEARNMM_RHO", "0.05").parse().unwrap(),
        alpha2: env_or("LEARNMM_ALPHA2", "0.2").parse().unwrap(),
        ..OptimParams::default()
    };
    let mut fp = FreedomParams::default();
    if let Ok(v) = std::env::var("LEARNMM_FREEDOM_LAMBDA") {
        fp.lambda = v.parse().unwrap();
    }
    if let Ok(v) = std::env::var("LEARNMM_FREEDOM_DROPOUT") {
        fp.dropout = v.parse().unwrap();
    }
    let mut vp = VbprParams::default();
    if let Ok(v) = std::env::var("LEARNMM_VBPR_REG") {
        vp.reg = v.parse().unwrap();
    }
    eprintln!(
        "data {}: {} users, {} items, train {}, modalities {:?}; epochs {} patience {}; {fp:?}; {vp:?}; {optim_params:?}",
        dir.display(),
        data.n_users,
        data.n_items,
        data.train.len(),
        feature_files,
        opts.epochs,
        opts.patience
    );

    let mut rows = Vec::new();
    let mut reports = Vec::new();
    for &noise in &noises {
        for &swap in &swaps {
            let corruption = Corruption { noise_sigma: noise, swap_frac: swap, seed: corrupt_seed };
            let mods: Vec<Modality> = clean
                .iter()
                .enumerate()
                .map(|(k, m)| {
                    let mut m = m.clone();
                    corruption.apply(m.n_items, m.dim, &mut m.data, k as u64).unwrap();
                    m
                })
                .collect();
            for model_name in &models {
                for optim in &optims {
                    let kind = OptimKind::parse(optim, Variant::S1).unwrap();
                    let mut r20 = vec![];
                    let mut n20 = vec![];
                    let mut info = vec![];
                    for &seed in &seeds {
                        let mut rng = StdRng::seed_from_u64(seed);
                        let mut model: Box<dyn Recommender> = match model_name.as_str() {
                            "vbpr" => Box::new(
                                Vbpr::new(data.n_users, data.n_items, &mods, &vp, DType::F32, &mut rng).unwrap(),
                            ),
                            "freedom" => Box::new(
                                Freedom::new(data.n_users, data.n_items, &data.train, &mods, &fp, DType::F32, &mut rng)
                                    .unwrap(),
                            ),
                            m => panic!("unknown model {m}"),
                        };
                        let mut opt = build(kind, &optim_params, model.named_vars()).unwrap();
                        let o = TrainOptions { seed, ..opts.clone() };
                        let rep = fit(model.as_mut(), &mut opt, &data, &o, Hooks::default()).unwrap();
                        let test = rep.test.clone().unwrap();
                        eprintln!(
                            "{model_name} {} noise {noise} swap {swap} seed {seed}: test R@20 {:.4} N@20 {:.4} R@10 {:.4} best {:?}/{} epochs, {:.3} s/epoch, {:.3} s/eval, total {:.1} s",
                            kind.label(),
                            test.recall_at(20),
                            test.ndcg_at(20),
                            test.recall_at(10),
                            rep.best_epoch,
                            rep.epochs_run,
                            rep.train_s_per_epoch,
                            rep.eval_s_per_pass,
                            rep.total_s
                        );
                        r20.push(test.recall_at(20));
                        n20.push(test.ndcg_at(20));
                        info.push((
                            rep.best_epoch.unwrap_or(0),
                            rep.epochs_run,
                            rep.train_s_per_epoch,
                            rep.eval_s_per_pass,
                        ));
                        reports.push(serde_json::json!({
                            "model": model_name, "optim": kind.label(), "noise": noise, "swap": swap, "seed": seed,
                            "report": serde_json::to_value(&rep).unwrap(),
                        }));
                        if let Ok(path) = std::env::var("LEARNMM_JSON") {
                            std::fs::write(&path, serde_json::to_string_pretty(&reports).unwrap()).unwrap();
                        }
                    }
                    let (rm, rs) = mean_sd(&r20);
                    let (nm, ns) = mean_sd(&n20);
                    let n = info.len() as f64;
                    let best = info.iter().map(|x| x.0 as f64).sum::<f64>() / n;
                    let epochs = info.iter().map(|x| x.1 as f64).sum::<f64>() / n;
                    let tr = info.iter().map(|x| x.2).sum::<f64>() / n;
                    let ev = info.iter().map(|x| x.3).sum::<f64>() / n;
                    rows.push(format!(
                        "| {model_name} | {} | {noise} | {swap} | {} | {rm:.4} ± {rs:.4} | {nm:.4} ± {ns:.4} | {best:.0} | {epochs:.0} | {tr:.3} | {ev:.3} |",
                        kind.label(),
                        seeds.len()
                    ));
                }
            }
        }
    }
    println!("| model | optim | noise sigma | swap frac | seeds | test R@20 | test N@20 | best epoch | epochs | train s/epoch | eval s/pass |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    if let Ok(path) = std::env::var("LEARNMM_JSON") {
        eprintln!("wrote {path}");
    }
}
