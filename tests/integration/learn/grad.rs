//! Finite-difference gradient checks (f64, tiny sizes) of the CSR ops and of the MF and
//! LightGCN losses.

use crate::harness::grad::grad_check;
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use sgbd_edge::learn::lightgcn::LightGcn;
use sgbd_edge::learn::mf::MfBpr;
use sgbd_edge::learn::model::{Batch, Recommender};
use sgbd_edge::learn::sparse::{normalized_bipartite, spmm, Csr, SparseOp};
use std::sync::Arc;

fn random_csr(rows: usize, cols: usize, nnz: usize, seed: u64) -> Csr {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let e: Vec<(u32, u32, f32)> = (0..nnz)
        .map(|_| (rng.random_range(0..rows as u32), rng.random_range(0..cols as u32), rng.random_range(-1.0..1.0)))
        .collect();
    Csr::from_coo(rows, cols, &e)
}

fn dense_mul(a: &Csr, x: &[f64], d: usize) -> Vec<f64> {
    let dense = a.to_dense();
    let mut out = vec![0f64; a.n_rows * d];
    for r in 0..a.n_rows {
        for c in 0..a.n_cols {
            for j in 0..d {
                out[r * d + j] += dense[r * a.n_cols + c] as f64 * x[c * d + j];
            }
        }
    }
    out
}

#[test]
fn spmm_forward_matches_dense_and_gradient_checks() {
    let _turn = crate::harness::shared();
    let a = Arc::new(random_csr(7, 5, 18, 1));
    let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (5, 3), &Device::Cpu).unwrap()).unwrap();
    let y: Vec<f64> = spmm(&a, x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let want = dense_mul(&a, &x.flatten_all().unwrap().to_vec1().unwrap(), 3);
    for (p, q) in y.iter().zip(&want) {
        assert!((p - q).abs() < 1e-9, "{p} vs {q}");
    }
    // f32 path (the vectorised kernel) agrees too
    let y32: Vec<f32> = spmm(&a, &x.to_dtype(DType::F32).unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    for (p, q) in y32.iter().zip(&want) {
        assert!((*p as f64 - q).abs() < 1e-5);
    }
    let w = Tensor::randn(0f64, 1.0, (7, 3), &Device::Cpu).unwrap();
    let err = grad_check(
        std::slice::from_ref(&x),
        &|| spmm(&a, x.as_tensor()).unwrap().mul(&w).unwrap().sum_all().unwrap(),
        100,
    );
    assert!(err < 1e-6, "spmm gradient relative error {err}");
    // the precomputed-transpose form, nested twice (gradient through two products)
    let op = SparseOp::new(Arc::new(random_csr(5, 5, 12, 2)));
    let w5 = Tensor::randn(0f64, 1.0, (5, 3), &Device::Cpu).unwrap();
    let err = grad_check(
        std::slice::from_ref(&x),
        &|| op.apply(&op.apply(x.as_tensor()).unwrap().tanh().unwrap()).unwrap().mul(&w5).unwrap().sum_all().unwrap(),
        100,
    );
    assert!(err < 1e-6, "nested spmm gradient relative error {err}");
}

#[test]
fn propagate_mean_matches_layers_and_gradient_checks() {
    let _turn = crate::harness::shared();
    let a = Arc::new(random_csr(6, 6, 20, 3)); // not symmetric: exercises the transpose
    let op = SparseOp::new(a.clone());
    let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (6, 4), &Device::Cpu).unwrap()).unwrap();
    let x1 = op.apply(x.as_tensor()).unwrap();
    let x2 = op.apply(&x1).unwrap();
    let want = ((x.as_tensor() + &x1).unwrap() + &x2).unwrap().affine(1.0 / 3.0, 0.0).unwrap();
    let got = op.propagate_mean(x.as_tensor(), 2).unwrap();
    let diff = (want - &got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    assert!(diff < 1e-12, "{diff}");
    let w = Tensor::randn(0f64, 1.0, (6, 4), &Device::Cpu).unwrap();
    let err = grad_check(
        std::slice::from_ref(&x),
        &|| op.propagate_mean(x.as_tensor(), 2).unwrap().sqr().unwrap().mul(&w).unwrap().sum_all().unwrap(),
        100,
    );
    assert!(err < 1e-6, "propagate_mean gradient relative error {err}");
}

fn batch(n_users: u32, n_items: u32, b: usize, seed: u64) -> Batch {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let u = (0..b).map(|_| rng.random_range(0..n_users)).collect();
    let p = (0..b).map(|_| rng.random_range(0..n_items)).collect();
    let n = (0..b).map(|_| rng.random_range(0..n_items)).collect();
    Batch::from_vecs(u, p, n, &Device::Cpu).unwrap()
}

#[test]
fn mf_loss_gradient_checks() {
    let _turn = crate::harness::shared();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let m = MfBpr::new(6, 9, 4, 0.3, DType::F64, &mut rng).unwrap();
    let b = batch(6, 9, 10, 6);
    let vars: Vec<Var> = m.named_vars().into_iter().map(|(_, v)| v).collect();
    let err = grad_check(&vars, &|| m.batch_loss(&b).unwrap(), 200);
    assert!(err < 1e-5, "MF gradient relative error {err}");
}

#[test]
fn lightgcn_loss_gradient_checks() {
    let _turn = crate::harness::shared();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let edges: Vec<(u32, u32)> = (0..25).map(|_| (rng.random_range(0..7), rng.random_range(0..8))).collect();
    for layers in [0, 1, 2, 3] {
        let m = LightGcn::new(7, 8, &edges, 4, layers, 0.2, DType::F64, &mut rng).unwrap();
        let b = batch(7, 8, 12, 9);
        let vars: Vec<Var> = m.named_vars().into_iter().map(|(_, v)| v).collect();
        let err = grad_check(&vars, &|| m.batch_loss(&b).unwrap(), 60);
        assert!(err < 1e-5, "LightGCN ({layers} layers) gradient relative error {err}");
    }
    // the layer mean over the normalised graph is what embeddings() returns
    let m = LightGcn::new(7, 8, &edges, 4, 2, 0.0, DType::F64, &mut rng).unwrap();
    let (u, i) = m.embeddings().unwrap();
    assert_eq!(u.dims(), &[7, 4]);
    assert_eq!(i.dims(), &[8, 4]);
    let g = normalized_bipartite(7, 8, &edges);
    let e0 = m.named_vars()[0].1.as_tensor().clone();
    let x0: Vec<f64> = e0.flatten_all().unwrap().to_vec1().unwrap();
    let x1 = dense_mul(&g, &x0, 4);
    let x2 = dense_mul(&g, &x1, 4);
    let all: Vec<f64> = Tensor::cat(&[&u, &i], 0).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    for k in 0..all.len() {
        assert!((all[k] - (x0[k] + x1[k] + x2[k]) / 3.0).abs() < 1e-6);
    }
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// The training path (`loss_and_grads`, gradients computed by the fused kernel and handed over
/// without autograd) gives the loss and gradient of `batch_loss` + autograd, in f64 (generic
/// kernel) and in f32 at widths that use the AVX2 kernel (64, 72 = 64 + 8) or its fallback (12),
/// with duplicate rows in the batch and isolated nodes in the graph.
#[test]
fn lightgcn_fused_gradients_match_autograd() {
    let _turn = crate::harness::shared();
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let (nu, ni) = (30u32, 25u32);
    // users 28, 29 and items 23, 24 have no edges
    let edges: Vec<(u32, u32)> = (0..120).map(|_| (rng.random_range(0..nu - 2), rng.random_range(0..ni - 2))).collect();
    for (dtype, dim) in [(DType::F64, 4), (DType::F32, 64), (DType::F32, 72), (DType::F32, 12)] {
        for layers in [0, 1, 2, 3] {
            let mut init = rand::rngs::StdRng::seed_from_u64(3);
            let m = LightGcn::new(nu as usize, ni as usize, &edges, dim, layers, 0.1, dtype, &mut init).unwrap();
            let b = batch(nu, ni, 40, 4 + layers as u64);
            let var = m.named_vars()[0].1.clone();
            let l = m.batch_loss(&b).unwrap();
            let g_auto = flat(l.backward().unwrap().get(var.as_tensor()).unwrap());
            let lg = m.loss_and_grads(&b).unwrap();
            let grads = lg.grads.expect("the fused path returns gradients");
            assert_eq!(grads.len(), 1);
            assert_eq!(grads[0].dims(), var.dims());
            let g_fused = flat(&grads[0]);
            let (la, lf) = (flat(&l)[0], flat(&lg.loss)[0]);
            assert!((la - lf).abs() < 1e-12, "loss {la} vs {lf}");
            let scale = g_auto.iter().fold(0f64, |a, &v| a.max(v.abs()));
            assert!(scale > 0.0);
            for (a, f) in g_auto.iter().zip(&g_fused) {
                assert!((a - f).abs() <= 1e-12 * scale, "{dtype:?} d {dim} L {layers}: {a} vs {f}");
            }
        }
    }
}

/// f32 (AVX2 kernel where the CPU has it) and f64 (generic kernel) agree on the same weights.
#[test]
fn lightgcn_f32_kernel_matches_f64() {
    let _turn = crate::harness::shared();
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    let (nu, ni) = (40u32, 30u32);
    let edges: Vec<(u32, u32)> = (0..200).map(|_| (rng.random_range(0..nu), rng.random_range(0..ni))).collect();
    for dim in [8, 64, 72, 136] {
        let b = batch(nu, ni, 50, 5);
        let run = |dt: DType| {
            let mut init = rand::rngs::StdRng::seed_from_u64(9);
            let m = LightGcn::new(nu as usize, ni as usize, &edges, dim, 2, 1e-2, dt, &mut init).unwrap();
            let lg = m.loss_and_grads(&b).unwrap();
            let (u, i) = m.embeddings().unwrap();
            (flat(&lg.loss)[0], flat(&lg.grads.unwrap()[0]), flat(&u), flat(&i))
        };
        let (l32, g32, u32_, i32_) = run(DType::F32);
        let (l64, g64, u64_, i64_) = run(DType::F64);
        assert!((l32 - l64).abs() < 1e-5, "d {dim}: loss {l32} vs {l64}");
        for (x, y) in g32.iter().zip(&g64).chain(u32_.iter().zip(&u64_)).chain(i32_.iter().zip(&i64_)) {
            assert!((x - y).abs() < 1e-5, "d {dim}: {x} vs {y}");
        }
    }
}
