//! The tensor-op path (what training runs on CUDA: `index_select` / `index_add` sparse products,
//! LightGCN's loss from tensor ops with autograd, tensor-op Adam and SAM updates) against the
//! fused CPU kernels, both run here on the CPU from the same seed. Stated tolerances (f32, of the
//! largest magnitude): losses, gradients and parameters after one SGBD step agree to 1e-5;
//! after six steps parameters to 1e-4 and Adam's moments to 1e-3 (float sums in another order,
//! which SAM's perturbation and Adam's division by small second moments amplify step by step).

use crate::harness::planted::{Multimodal, World};
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sgbd_edge::learn::freedom::{Freedom, FreedomParams};
use sgbd_edge::learn::lightgcn::LightGcn;
use sgbd_edge::learn::mf::MfBpr;
use sgbd_edge::learn::model::{Batch, Recommender};
use sgbd_edge::learn::optim::{build_on, OptimKind, OptimParams, Optimizer, Variant};
use sgbd_edge::learn::sparse::{normalized_bipartite, Csr, SparseOp};
use sgbd_edge::learn::vbpr::{Vbpr, VbprParams};
use sgbd_edge::learn::OpPath;
use std::sync::Arc;

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// `max |a - b| / max(max |a|, 1e-12)`.
fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f64, |m, &x| m.max(x.abs() as f64)).max(1e-12);
    a.iter().zip(b).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs())) / scale
}

fn world() -> Multimodal {
    World::new(2, 15, 20, 6).cold(3).features(&[("image", 6), ("text", 5)]).seed(21).multimodal()
}

fn batch(p: &Multimodal, n: usize, seed: u64) -> Batch {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut us, mut ps, mut ns) = (vec![], vec![], vec![]);
    for _ in 0..n {
        let (u, i) = p.train[rng.random_range(0..p.train.len())];
        us.push(u);
        ps.push(i);
        ns.push(rng.random_range(0..p.n_items as u32));
    }
    Batch::from_vecs(us, ps, ns, &Device::Cpu).unwrap()
}

/// The four models, each built twice from one seed: as built (fused on the CPU) and placed on
/// the tensor-op path.
/// A model's name, then the model as built (fused) and placed on the tensor-op path.
type ModelPair = (&'static str, Box<dyn Recommender>, Box<dyn Recommender>);

fn model_pairs(p: &Multimodal) -> Vec<ModelPair> {
    let make = |name: &str| -> Box<dyn Recommender> {
        let rng = &mut StdRng::seed_from_u64(5);
        match name {
            "mf" => Box::new(MfBpr::new(p.n_users, p.n_items, 8, 1e-3, DType::F32, rng).unwrap()),
            "lightgcn" => Box::new(LightGcn::new(p.n_users, p.n_items, &p.train, 8, 2, 1e-3, DType::F32, rng).unwrap()),
            "vbpr" => Box::new(
                Vbpr::new(p.n_users, p.n_items, &p.modalities, &VbprParams { dim: 8, reg: 1e-3 }, DType::F32, rng)
                    .unwrap(),
            ),
            _ => {
                let fp = FreedomParams {
                    dim: 8,
                    dropout: 0.3,
                    lambda: 1e-2,
                    knn: sgbd_edge::learn::knn::KnnParams { k: 4, ..Default::default() },
                    ..Default::default()
                };
                Box::new(Freedom::new(p.n_users, p.n_items, &p.train, &p.modalities, &fp, DType::F32, rng).unwrap())
            }
        }
    };
    ["mf", "lightgcn", "vbpr", "freedom"]
        .into_iter()
        .map(|name| {
            let fused = make(name);
            let mut ops = make(name);
            ops.place(&Device::Cpu, OpPath::TensorOps).unwrap();
            // FREEDOM prunes its graph per epoch: the same draw for both
            let (mut r1, mut r2) = (StdRng::seed_from_u64(8), StdRng::seed_from_u64(8));
            let fused = {
                let mut f = fused;
                f.on_epoch_start(&mut r1).unwrap();
                f
            };
            ops.on_epoch_start(&mut r2).unwrap();
            (name, fused, ops)
        })
        .collect()
}

/// The loss and the gradients of `named_vars` (from the model's fused kernel or autograd).
fn loss_and_grads(m: &dyn Recommender, b: &Batch) -> (f32, Vec<Vec<f32>>) {
    let lg = m.loss_and_grads(b).unwrap();
    let loss = values(&lg.loss)[0];
    let grads = match lg.grads {
        Some(g) => g.iter().map(values).collect(),
        None => {
            let gs = lg.loss.backward().unwrap();
            m.named_vars()
                .iter()
                .map(|(_, v)| gs.get(v.as_tensor()).map_or_else(|| vec![0.0; v.elem_count()], values))
                .collect()
        }
    };
    (loss, grads)
}

fn random_csr(rows: usize, cols: usize, nnz: usize, seed: u64) -> Csr {
    let mut rng = StdRng::seed_from_u64(seed);
    let e: Vec<(u32, u32, f32)> = (0..nnz)
        .map(|_| (rng.random_range(0..rows as u32), rng.random_range(0..cols as u32), rng.random_range(-1.0..1.0)))
        .collect();
    Csr::from_coo(rows, cols, &e)
}

#[test]
fn sparse_products_agree_with_the_csr_kernels_forward_and_backward() {
    let _turn = crate::harness::shared();
    for (a, square) in [
        (random_csr(40, 25, 160, 1), false),
        (random_csr(30, 30, 120, 2), true), // not symmetric: backward needs the transpose
        (normalized_bipartite(12, 9, &[(0, 1), (1, 1), (2, 8), (11, 0), (5, 5), (5, 6)]), true),
        (Csr::from_coo(6, 6, &[]), true), // no entries at all
    ] {
        let fused = SparseOp::new(Arc::new(a.clone()));
        let ops = SparseOp::new(Arc::new(a.clone())).with_path(OpPath::TensorOps);
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (a.n_cols, 7), &Device::Cpu).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (a.n_rows, 7), &Device::Cpu).unwrap();
        // None: A x; Some(l): mean_{0..=l} A^l x
        let cases: &[Option<usize>] = if square { &[None, Some(0), Some(1), Some(3)] } else { &[None] };
        for &layers in cases {
            let what = format!("{layers:?}");
            let f = |op: &SparseOp| match layers {
                None => op.apply(x.as_tensor()).unwrap(),
                Some(l) => op.propagate_mean(x.as_tensor(), l).unwrap(),
            };
            let (yf, yo) = (f(&fused), f(&ops));
            let d = rel_diff(&values(&yf), &values(&yo));
            assert!(d < 1e-5, "{what} forward differs by {d:.2e} ({}x{})", a.n_rows, a.n_cols);
            let grad = |y: &Tensor| {
                let gs = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
                gs.get(x.as_tensor()).map_or_else(|| vec![0.0; x.elem_count()], values)
            };
            let (gf, go) = (grad(&yf), grad(&yo));
            let d = rel_diff(&gf, &go);
            assert!(d < 1e-5, "{what} gradient differs by {d:.2e}");
        }
    }
}

#[test]
fn model_losses_gradients_and_embeddings_agree_on_both_paths() {
    let _turn = crate::harness::shared();
    let p = world();
    let b = batch(&p, 40, 3);
    for (name, fused, ops) in model_pairs(&p) {
        let (lf, gf) = loss_and_grads(fused.as_ref(), &b);
        let (lo, go) = loss_and_grads(ops.as_ref(), &b);
        assert!(((lf - lo) / lf.abs().max(1e-12)).abs() < 1e-5, "{name}: loss {lf} vs {lo}");
        assert_eq!(gf.len(), go.len());
        for (k, (a, c)) in gf.iter().zip(&go).enumerate() {
            let d = rel_diff(a, c);
            assert!(d < 1e-5, "{name}: gradient of parameter {k} differs by {d:.2e}");
        }
        // the loss is not constant in the parameters (the comparison above is not vacuous)
        assert!(gf.iter().any(|g| g.iter().any(|&x| x != 0.0)), "{name}: all gradients zero");
        let ((uf, itf), (uo, ito)) = (fused.embeddings().unwrap(), ops.embeddings().unwrap());
        assert!(rel_diff(&values(&uf), &values(&uo)) < 1e-5, "{name}: user embeddings");
        assert!(rel_diff(&values(&itf), &values(&ito)) < 1e-5, "{name}: item embeddings");
    }
}

#[test]
fn sgbd_steps_and_adam_state_agree_on_both_paths() {
    let _turn = crate::harness::shared();
    let p = world();
    let kind = OptimKind::Sgbd(Variant::S1);
    let params = OptimParams { lr: 0.01, beta: 2, ..Default::default() };
    let batches: Vec<Batch> = (0..6).map(|s| batch(&p, 32, 100 + s)).collect();
    for (name, fused, ops) in model_pairs(&p) {
        let mut of = build_on(kind, &params, fused.named_vars(), OpPath::Fused).unwrap();
        let mut oo = build_on(kind, &params, ops.named_vars(), OpPath::TensorOps).unwrap();
        let start = values(&fused.named_vars()[0].1.as_tensor().clone());
        for (k, b) in batches.iter().enumerate() {
            let lf = of.step_with(&mut || fused.loss_and_grads(b), k).unwrap();
            let lo = oo.step_with(&mut || ops.loss_and_grads(b), k).unwrap();
            assert!(((lf - lo) / lf.abs().max(1e-12)).abs() < 1e-4, "{name} step {k}: loss {lf} vs {lo}");
            if k == 0 {
                for ((n, vf), (_, vo)) in fused.named_vars().iter().zip(ops.named_vars()) {
                    let d = rel_diff(&values(vf.as_tensor()), &values(vo.as_tensor()));
                    assert!(d < 1e-5, "{name}: parameter {n} differs by {d:.2e} after one step");
                }
            }
        }
        assert_eq!(of.grad_evals(), oo.grad_evals(), "{name}: the same schedule");
        for ((n, vf), (_, vo)) in fused.named_vars().iter().zip(ops.named_vars()) {
            let d = rel_diff(&values(vf.as_tensor()), &values(vo.as_tensor()));
            assert!(d < 1e-4, "{name}: parameter {n} differs by {d:.2e} after six steps");
        }
        let moved = rel_diff(&start, &values(fused.named_vars()[0].1.as_tensor()));
        assert!(moved > 1e-3, "{name}: the steps changed nothing ({moved:.2e})");
        let (sf, so) = (of.state().unwrap(), oo.state().unwrap());
        assert_eq!(sf.step, so.step);
        assert_eq!(sf.tensors.len(), so.tensors.len());
        for ((kf, tf), (ko, to)) in sf.tensors.iter().zip(&so.tensors) {
            assert_eq!(kf, ko);
            assert_eq!(tf.dims(), to.dims(), "{name}: {kf} is flat on both paths");
            let d = rel_diff(&values(tf), &values(to));
            assert!(d < 1e-3, "{name}: Adam state {kf} differs by {d:.2e}");
        }
        // a checkpointed state loads back onto the tensor-op path and continues the same way
        let map = sf.tensors.iter().cloned().collect();
        oo.load_state(&map, sf.step).unwrap();
        let again = oo.state().unwrap();
        for ((_, a), (_, c)) in sf.tensors.iter().zip(&again.tensors) {
            assert_eq!(values(a), values(c));
        }
    }
}
