//! VBPR and FREEDOM: gradient checks in f64, FREEDOM's degree-sensitive edge pruning, and
//! planted data where only the item features can place cold items.

use crate::harness::grad::model_grad_check;
use crate::harness::planted::{Multimodal, World};
use candle_core::{DType, Device};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sgbd_edge::learn::freedom::{weighted_sample_without_replacement, Freedom, FreedomParams};
use sgbd_edge::learn::model::{Batch, Recommender};
use sgbd_edge::learn::vbpr::{Vbpr, VbprParams};
use std::collections::HashSet;

/// Two item feature modalities: items of a group have features near the group's axis in each.
const MODALITIES: &[(&str, usize)] = &[("image", 6), ("audio", 5)];

/// One epoch of shuffled (user, pos, uniform negative not in the user's train items) triples.
fn epoch_batches(n_items: usize, train: &[(u32, u32)], batch: usize, rng: &mut StdRng) -> Vec<Batch> {
    let seen: HashSet<(u32, u32)> = train.iter().copied().collect();
    let mut order: Vec<usize> = (0..train.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
        .chunks(batch)
        .map(|chunk| {
            let (mut us, mut ps, mut ns) = (vec![], vec![], vec![]);
            for &k in chunk {
                let (u, p) = train[k];
                let n = loop {
                    let n = rng.random_range(0..n_items as u32);
                    if !seen.contains(&(u, n)) {
                        break n;
                    }
                };
                us.push(u);
                ps.push(p);
                ns.push(n);
            }
            Batch::from_vecs(us, ps, ns, &Device::Cpu).unwrap()
        })
        .collect()
}

/// Trains with Adam (candle_nn's AdamW without weight decay) for `epochs`.
fn train_adam(model: &mut dyn Recommender, n_items: usize, train: &[(u32, u32)], epochs: usize, lr: f64, seed: u64) {
    use candle_nn::Optimizer;
    let vars = model.named_vars().into_iter().map(|(_, v)| v).collect();
    let params = candle_nn::ParamsAdamW { lr, weight_decay: 0.0, ..Default::default() };
    let mut opt = candle_nn::AdamW::new(vars, params).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..epochs {
        model.on_epoch_start(&mut rng).unwrap();
        for b in epoch_batches(n_items, train, 64, &mut rng) {
            let loss = model.batch_loss(&b).unwrap();
            opt.backward_step(&loss).unwrap();
        }
    }
}

/// Scores [U, I] from the model's final embeddings.
fn scores(model: &dyn Recommender) -> Vec<Vec<f32>> {
    let (u, i) = model.embeddings().unwrap();
    u.matmul(&i.t().unwrap()).unwrap().to_dtype(DType::F32).unwrap().to_vec2().unwrap()
}

fn tiny_batch(p: &Multimodal, seed: u64) -> Batch {
    let mut rng = StdRng::seed_from_u64(seed);
    epoch_batches(p.n_items, &p.train, 24, &mut rng).remove(0)
}

#[test]
fn vbpr_gradients_match_finite_differences() {
    let _turn = crate::harness::shared();
    let p = World::new(2, 4, 6, 3).cold(1).features(MODALITIES).seed(11).multimodal();
    let mut rng = StdRng::seed_from_u64(1);
    let params = VbprParams { dim: 4, reg: 0.3 };
    let m = Vbpr::new(p.n_users, p.n_items, &p.modalities, &params, DType::F64, &mut rng).unwrap();
    let worst = model_grad_check(&m, &tiny_batch(&p, 2), 12, 3);
    eprintln!("vbpr worst relative error {worst:.2e}");
}

#[test]
fn freedom_gradients_match_finite_differences() {
    let _turn = crate::harness::shared();
    let p = World::new(2, 4, 6, 3).cold(1).features(MODALITIES).seed(12).multimodal();
    let mut rng = StdRng::seed_from_u64(1);
    let params = FreedomParams {
        dim: 4,
        dropout: 0.5,
        lambda: 0.7,
        knn: sgbd_edge::learn::knn::KnnParams { k: 3, ..Default::default() },
        ..Default::default()
    };
    let mut m = Freedom::new(p.n_users, p.n_items, &p.train, &p.modalities, &params, DType::F64, &mut rng).unwrap();
    m.on_epoch_start(&mut rng).unwrap();
    let worst = model_grad_check(&m, &tiny_batch(&p, 2), 12, 3);
    eprintln!("freedom worst relative error {worst:.2e}");
    // lambda = 0: the feature tables and projections are not parameters (they get no gradient).
    let params0 = FreedomParams { lambda: 0.0, ..params };
    let m0 = Freedom::new(p.n_users, p.n_items, &p.train, &p.modalities, &params0, DType::F64, &mut rng).unwrap();
    assert_eq!(m0.named_vars().len(), 2);
    model_grad_check(&m0, &tiny_batch(&p, 2), 8, 4);
}

fn flat(t: &candle_core::Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// `loss_and_grads` (the fused CPU kernel) against `batch_loss` + autograd, every parameter
/// within `tol` of the gradient's largest entry; a bias that cancels in i+ - i- is exactly zero.
fn assert_fused_matches_autograd(m: &dyn Recommender, b: &Batch, tol: f64, what: &str) {
    let l = m.batch_loss(b).unwrap();
    let store = l.backward().unwrap();
    let lg = m.loss_and_grads(b).unwrap();
    let fused = lg.grads.expect("the CPU path returns gradients");
    let vars = m.named_vars();
    assert_eq!(fused.len(), vars.len(), "{what}");
    let (la, lf) = (flat(&l)[0], flat(&lg.loss)[0]);
    assert!((la - lf).abs() <= tol * la.abs().max(1.0), "{what}: loss {la} vs {lf}");
    for ((name, v), g) in vars.iter().zip(&fused) {
        assert_eq!(g.dims(), v.dims(), "{what}: {name}");
        let auto = store.get(v.as_tensor()).map_or_else(|| vec![0.0; v.elem_count()], flat);
        let g = flat(g);
        let scale = auto.iter().fold(0f64, |a, &x| a.max(x.abs()));
        if name.ends_with(".bias") && scale == 0.0 {
            // it cancels in i+ - i- (FREEDOM's T(i+) - T(i-), VBPR without EmbLoss): exactly
            // zero on both paths
            assert!(g.iter().all(|&x| x == 0.0), "{what}: {name} {g:?}");
            continue;
        }
        assert!(scale > 0.0, "{what}: {name} has a zero gradient");
        for (a, f) in auto.iter().zip(&g) {
            assert!((a - f).abs() <= tol * scale, "{what}: {name}: {a} vs {f}");
        }
    }
}

/// The same for VBPR, with and without the EmbLoss term.
#[test]
fn vbpr_fused_gradients_match_autograd() {
    let _turn = crate::harness::shared();
    let p = World::new(2, 4, 6, 3).cold(1).features(MODALITIES).seed(14).multimodal();
    let b = epoch_batches(p.n_items, &p.train, 40, &mut StdRng::seed_from_u64(4)).remove(0);
    for (dtype, dim, tol) in [(DType::F64, 4, 1e-12), (DType::F32, 64, 2e-5), (DType::F32, 12, 2e-5)] {
        for reg in [0.0, 0.3] {
            let params = VbprParams { dim, reg };
            let m =
                Vbpr::new(p.n_users, p.n_items, &p.modalities, &params, dtype, &mut StdRng::seed_from_u64(8)).unwrap();
            assert_fused_matches_autograd(&m, &b, tol, &format!("vbpr {dtype:?} d {dim} reg {reg}"));
        }
    }
}

/// FREEDOM's fused kernel (`loss_and_grads` on the CPU) gives `batch_loss` + autograd's loss and
/// gradients for every parameter: f64 (generic kernels) and f32 at widths that use the AVX2 row
/// kernel (64, 72) or its fallback (12), 0-3 user-item layers, 0-2 item-graph layers, with and
/// without the modality terms, a pruned graph, an isolated (cold) item and repeated batch rows.
#[test]
fn freedom_fused_gradients_match_autograd() {
    let _turn = crate::harness::shared();
    let p = World::new(2, 4, 6, 3).cold(1).features(MODALITIES).seed(13).multimodal();
    let b = {
        let mut rng = StdRng::seed_from_u64(3);
        let mut all = epoch_batches(p.n_items, &p.train, 40, &mut rng);
        all.remove(0)
    };
    let users: Vec<u32> = b.users.to_vec1().unwrap();
    assert!(users.len() > users.iter().collect::<HashSet<_>>().len(), "the batch repeats users");
    let mut cases = 0;
    for (dtype, dim, tol) in
        [(DType::F64, 4, 1e-12), (DType::F32, 64, 2e-5), (DType::F32, 72, 2e-5), (DType::F32, 12, 2e-5)]
    {
        for (ui_layers, mm_layers, lambda) in [(2, 1, 0.7), (0, 0, 0.7), (1, 2, 0.3), (3, 1, 0.0), (2, 0, 1e-4)] {
            let params = FreedomParams {
                dim,
                ui_layers,
                mm_layers,
                lambda,
                dropout: 0.5,
                knn: sgbd_edge::learn::knn::KnnParams { k: 3, ..Default::default() },
                ..Default::default()
            };
            let mut rng = StdRng::seed_from_u64(7);
            let mut m = Freedom::new(p.n_users, p.n_items, &p.train, &p.modalities, &params, dtype, &mut rng).unwrap();
            m.on_epoch_start(&mut rng).unwrap();
            let what = format!("{dtype:?} d {dim} ui {ui_layers} mm {mm_layers} lambda {lambda}");
            assert_fused_matches_autograd(&m, &b, tol, &what);
            cases += 1;
        }
    }
    assert_eq!(cases, 20);
}

#[test]
fn pruning_keeps_the_count_without_duplicates_and_favours_low_degree() {
    let _turn = crate::harness::shared();
    // Weighted sampling without replacement: exact count, distinct, frequency ordered by weight.
    let w = [1.0, 1.0, 4.0, 4.0, 0.0, 2.0];
    let mut rng = StdRng::seed_from_u64(5);
    let mut freq = [0usize; 6];
    for _ in 0..4000 {
        let s = weighted_sample_without_replacement(&w, 2, &mut rng);
        assert_eq!(s.len(), 2);
        assert!(s[0] < s[1], "sorted and distinct");
        for i in s {
            freq[i] += 1;
        }
    }
    assert_eq!(freq[4], 0, "zero weight is never drawn");
    assert!(freq[2] > freq[5] && freq[5] > freq[0] && freq[3] > freq[1], "{freq:?}");
    // Exact first-draw probability of a weight-4 edge: 4 / 12; with two draws each weight-4 edge is
    // in about 0.6 of the samples (successive sampling); check it is in a sane band.
    let f2 = freq[2] as f64 / 4000.0;
    assert!((0.5..0.75).contains(&f2), "{f2}");

    // On a graph with a hub user (degree 20) and light users (degree 1 with light items), the
    // light edges survive much more often.
    let n_users = 21;
    let n_items = 40;
    let mut train: Vec<(u32, u32)> = (0..20).map(|i| (0, i)).collect(); // hub user 0, items 0..20
    for u in 1..21 {
        train.push((u, 19 + u)); // items 20..40, one user each
    }
    let feats =
        sgbd_edge::learn::npy::Modality::new("f", n_items, 2, (0..n_items * 2).map(|x| (x % 7) as f32 + 1.0).collect())
            .unwrap();
    let params = FreedomParams { dim: 4, dropout: 0.5, modality_weights: vec![], ..Default::default() };
    let mut m = Freedom::new(n_users, n_items, &train, &[feats], &params, DType::F32, &mut rng).unwrap();
    let (mut hub, mut light) = (0usize, 0usize);
    for _ in 0..300 {
        let kept = m.prune(&mut rng);
        assert_eq!(kept.len(), 20, "(1 - 0.5) * 40 edges");
        assert_eq!(kept.iter().collect::<HashSet<_>>().len(), 20, "no duplicate edges");
        assert!(kept.iter().all(|e| train.contains(e)));
        hub += kept.iter().filter(|e| e.0 == 0).count();
        light += kept.iter().filter(|e| e.0 != 0).count();
    }
    // Hub edges have weight 1/sqrt(20 * 1), light ones 1: light edges dominate (a uniform
    // sampler would keep as many hub as light edges).
    assert!(light > 2 * hub, "light {light} hub {hub}");
    // The epoch graph is the renormalised pruned graph; evaluation uses the full graph.
    let before = m.embeddings().unwrap().1.to_vec2::<f32>().unwrap();
    m.on_epoch_start(&mut rng).unwrap();
    assert_eq!(m.train_graph().nnz(), 2 * 20);
    m.train_graph().check().unwrap();
    assert_eq!(m.embeddings().unwrap().1.to_vec2::<f32>().unwrap(), before);
}

/// Mean over users of P(score(cold item of own group) > score(cold item of the other group)).
fn cold_auc(p: &Multimodal, s: &[Vec<f32>]) -> f64 {
    let mut total = 0.0;
    for (su, &g) in s.iter().zip(&p.user_group) {
        let own: Vec<u32> = p.cold.iter().copied().filter(|&i| p.item_group[i as usize] == g).collect();
        let other: Vec<u32> = p.cold.iter().copied().filter(|&i| p.item_group[i as usize] != g).collect();
        let mut wins = 0.0;
        for &a in &own {
            for &b in &other {
                wins += if su[a as usize] > su[b as usize] { 1.0 } else { 0.0 };
            }
        }
        total += wins / (own.len() * other.len()) as f64;
    }
    total / p.n_users as f64
}

#[test]
fn features_place_cold_items_for_their_group() {
    let _turn = crate::harness::shared();
    let p = World::new(2, 15, 20, 6).cold(3).features(MODALITIES).seed(21).multimodal();
    for (name, mut model) in [
        (
            "vbpr",
            Box::new(
                Vbpr::new(
                    p.n_users,
                    p.n_items,
                    &p.modalities,
                    &VbprParams { dim: 8, reg: 1e-4 },
                    DType::F32,
                    &mut StdRng::seed_from_u64(1),
                )
                .unwrap(),
            ) as Box<dyn Recommender>,
        ),
        (
            "freedom",
            Box::new(
                Freedom::new(
                    p.n_users,
                    p.n_items,
                    &p.train,
                    &p.modalities,
                    &FreedomParams {
                        dim: 8,
                        dropout: 0.3,
                        lambda: 1e-3,
                        knn: sgbd_edge::learn::knn::KnnParams { k: 5, ..Default::default() },
                        ..Default::default()
                    },
                    DType::F32,
                    &mut StdRng::seed_from_u64(1),
                )
                .unwrap(),
            ),
        ),
    ] {
        let before = cold_auc(&p, &scores(model.as_ref()));
        train_adam(model.as_mut(), p.n_items, &p.train, 60, 0.02, 7);
        let s = scores(model.as_ref());
        let auc = cold_auc(&p, &s);
        // Cold items of the user's own group also beat the other group's warm items.
        let mut beats = 0usize;
        let mut pairs = 0usize;
        for (su, &g) in s.iter().zip(&p.user_group) {
            for &c in p.cold.iter().filter(|&&c| p.item_group[c as usize] == g) {
                for i in (0..p.n_items).filter(|&i| p.item_group[i] != g && !p.cold.contains(&(i as u32))) {
                    pairs += 1;
                    beats += (su[c as usize] > su[i]) as usize;
                }
            }
        }
        let frac = beats as f64 / pairs as f64;
        eprintln!("{name}: cold-item AUC {before:.3} -> {auc:.3}, own cold vs other warm {frac:.3}");
        assert!(auc > 0.95, "{name}: cold AUC {auc}");
        assert!(frac > 0.9, "{name}: own cold vs other warm {frac}");
    }
}

#[test]
fn params_parse_from_toml_with_defaults_and_reject_unknown_keys() {
    let _turn = crate::harness::shared();
    let f: FreedomParams = toml::from_str("dropout = 0.9\nmodality_weights = [0.2, 0.8]\n[knn]\nk = 5\n").unwrap();
    assert_eq!((f.dropout, f.knn.k, f.dim), (0.9, 5, 64));
    assert_eq!(f.modality_weights, vec![0.2, 0.8]);
    assert!(toml::from_str::<FreedomParams>("dropuot = 0.9").is_err());
    assert!(FreedomParams { dropout: 1.0, ..Default::default() }.validate().is_err());
    let v: VbprParams = toml::from_str("reg = 0.01").unwrap();
    assert_eq!((v.dim, v.reg), (64, 0.01));
    assert!(toml::from_str::<VbprParams>("regg = 1").is_err());
    assert!(VbprParams { dim: 0, ..Default::default() }.validate().is_err());
}
