//! Checkpoints: model + optimiser state saved every epoch; a resumed run continues exactly as an
//! uninterrupted one; mismatched checkpoints are refused with a clear error.

use crate::harness::planted::World;
use candle_core::DType;
use rand::SeedableRng;
use sgbd_edge::learn::lightgcn::LightGcn;
use sgbd_edge::learn::model::Recommender;
use sgbd_edge::learn::optim::{build, OptimKind, OptimParams, Variant};
use sgbd_edge::learn::trainer::{fit, Hooks, TrainOptions, TrainReport};

fn run(
    epochs: usize,
    init_seed: u64,
    ckpt: Option<std::path::PathBuf>,
    kind: OptimKind,
) -> sgbd_edge::learn::Result<TrainReport> {
    let data = World::new(2, 20, 15, 5).seed(4).interactions();
    let mut rng = rand::rngs::StdRng::seed_from_u64(init_seed);
    let mut model = LightGcn::new(40, 30, &data.train, 8, 2, 1e-4, DType::F32, &mut rng).unwrap();
    let params = OptimParams { lr: 0.02, beta: 2, ..OptimParams::default() };
    let mut opt = build(kind, &params, model.named_vars()).unwrap();
    let opts = TrainOptions {
        epochs,
        patience: 0,
        batch: 32,
        seed: 5,
        ks: vec![5, 20],
        checkpoint: ckpt,
        ..TrainOptions::default()
    };
    fit(&mut model, &mut opt, &data, &opts, Hooks::default())
}

/// Equal up to the JSON round trip of the stored curve (last bit of an f64).
fn same(a: &sgbd_edge::learn::eval::RankMetrics, b: &sgbd_edge::learn::eval::RankMetrics) {
    assert_eq!(a.ks, b.ks);
    for (x, y) in
        a.recall.iter().chain(&a.ndcg).chain(&a.precision).zip(b.recall.iter().chain(&b.ndcg).chain(&b.precision))
    {
        assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
    }
}

#[test]
fn resume_gives_the_same_next_loss_as_not_stopping() {
    let _turn = crate::harness::shared();
    let kind = OptimKind::Sgbd(Variant::S1);
    let full = run(4, 1, None, kind).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = run(2, 1, Some(dir.path().to_path_buf()), kind).unwrap();
    assert_eq!(first.curve.len(), 2);
    assert!(dir.path().join("checkpoint.safetensors").exists() && dir.path().join("state.json").exists());
    // a different initialisation: everything must come from the checkpoint
    let resumed = run(4, 999, Some(dir.path().to_path_buf()), kind).unwrap();
    assert_eq!(resumed.curve.len(), 4, "curve carries the first two epochs");
    for e in 0..4 {
        assert_eq!(resumed.curve[e].loss, full.curve[e].loss, "epoch {e} loss");
        same(&resumed.curve[e].valid, &full.curve[e].valid);
    }
    same(resumed.test.as_ref().unwrap(), full.test.as_ref().unwrap());
    assert_eq!(resumed.best_epoch, full.best_epoch);
}

#[test]
fn mismatched_or_damaged_checkpoints_are_refused() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    run(1, 1, Some(dir.path().to_path_buf()), OptimKind::Adam).unwrap();
    let e = run(2, 1, Some(dir.path().to_path_buf()), OptimKind::Mg).unwrap_err();
    assert!(e.to_string().contains("optimiser"), "{e}");
    std::fs::write(dir.path().join("checkpoint.safetensors"), b"not a safetensors file").unwrap();
    let e = run(2, 1, Some(dir.path().to_path_buf()), OptimKind::Adam).unwrap_err();
    assert!(e.to_string().contains("checkpoint.safetensors"), "{e}");
    std::fs::write(dir.path().join("state.json"), b"{ broken").unwrap();
    assert!(run(2, 1, Some(dir.path().to_path_buf()), OptimKind::Adam).is_err());
}
