//! Planted preferences (4 user groups x 4 item groups) are learned by every model and optimiser:
//! test Recall@10 far above a random ranking's.

use crate::harness::planted::World;
use candle_core::DType;
use rand::SeedableRng;
use sgbd_edge::learn::lightgcn::LightGcn;
use sgbd_edge::learn::mf::MfBpr;
use sgbd_edge::learn::model::Recommender;
use sgbd_edge::learn::optim::{build, OptimKind, OptimParams, Variant};
use sgbd_edge::learn::trainer::{fit, Hooks, TrainOptions};

#[test]
fn planted_preferences_are_learned_by_every_model_and_optimiser() {
    let _turn = crate::harness::shared();
    let (n_users, n_items, per_user) = (80, 80, 6);
    let data = World::new(4, n_users / 4, n_items / 4, per_user).seed(3).interactions();
    // random ranking: 1 test item among the n_items - per_user unmasked ones
    let random_r10 = 10.0 / (n_items - per_user) as f64;
    let kinds =
        [OptimKind::Adam, OptimKind::Mg, OptimKind::Sam, OptimKind::Sgbd(Variant::S1), OptimKind::Sgbd(Variant::M2)];
    let params = OptimParams { lr: 0.03, rho: 0.05, ..OptimParams::default() };
    let opts = TrainOptions {
        epochs: 40,
        patience: 0,
        batch: 64,
        seed: 1,
        ks: vec![10],
        valid_k: 10,
        ..TrainOptions::default()
    };
    for model_name in ["mf", "lightgcn"] {
        for kind in kinds {
            let mut rng = rand::rngs::StdRng::seed_from_u64(11);
            let mut model: Box<dyn Recommender> = match model_name {
                "mf" => Box::new(MfBpr::new(n_users, n_items, 8, 1e-4, DType::F32, &mut rng).unwrap()),
                _ => Box::new(LightGcn::new(n_users, n_items, &data.train, 8, 2, 1e-4, DType::F32, &mut rng).unwrap()),
            };
            let mut opt = build(kind, &params, model.named_vars()).unwrap();
            let r = fit(model.as_mut(), &mut opt, &data, &opts, Hooks::default()).unwrap();
            let r10 = r.test.unwrap().recall_at(10);
            eprintln!("{model_name} {}: test R@10 {r10:.3} (random {random_r10:.3})", kind.label());
            assert!(r10 > 3.0 * random_r10, "{model_name} + {}: R@10 {r10} not 3x random {random_r10}", kind.label());
            assert!(r.curve.last().unwrap().loss < r.curve[0].loss, "loss went down");
        }
    }
}
