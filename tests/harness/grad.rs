//! Gradient checks: the backward gradient of a loss over f64 `Var`s against central finite
//! differences, norm-wise over any parameters ([`grad_check`]) or coordinate by coordinate over a
//! recommender's parameters ([`model_grad_check`]).

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sgbd_edge::learn::model::{Batch, Recommender};

/// The step of the central differences.
const EPS: f64 = 1e-6;

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn set(var: &Var, v: Vec<f64>) {
    var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
}

/// (loss(x + eps e_k) - loss(x - eps e_k)) / 2 eps in coordinate `k` of `var`; `var` is restored.
fn central_difference(var: &Var, k: usize, loss: &dyn Fn() -> f64) -> f64 {
    let base = values(var.as_tensor());
    let eval = |delta: f64| {
        let mut v = base.clone();
        v[k] += delta;
        set(var, v);
        loss()
    };
    let fd = (eval(EPS) - eval(-EPS)) / (2.0 * EPS);
    set(var, base);
    fd
}

/// Max over parameters of the relative error between the backward gradient and central finite
/// differences of `loss` (f64 parameters), over up to `per_var` entries per parameter.
pub fn grad_check(vars: &[Var], loss: &dyn Fn() -> Tensor, per_var: usize) -> f64 {
    let l = loss();
    let grads = l.backward().unwrap();
    let scalar = || loss().to_scalar::<f64>().unwrap();
    let mut worst = 0f64;
    let mut rng = StdRng::seed_from_u64(7);
    for v in vars {
        assert_eq!(v.dtype(), DType::F64);
        let g: Vec<f64> = match grads.get(v.as_tensor()) {
            Some(g) => values(g),
            None => vec![0.0; v.elem_count()],
        };
        let n = v.elem_count();
        let picks: Vec<usize> =
            if n <= per_var { (0..n).collect() } else { (0..per_var).map(|_| rng.random_range(0..n)).collect() };
        let num: Vec<f64> = picks.iter().map(|&i| central_difference(v, i, &scalar)).collect();
        let ana: Vec<f64> = picks.iter().map(|&i| g[i]).collect();
        // norm-wise relative error over the checked entries
        let diff: f64 = num.iter().zip(&ana).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        let scale: f64 =
            num.iter().map(|a| a * a).sum::<f64>().sqrt().max(ana.iter().map(|a| a * a).sum::<f64>().sqrt());
        let nonzero = ana.iter().any(|&a| a != 0.0);
        assert!(nonzero || scale < 1e-12, "all-zero analytic gradient where finite differences are not");
        if scale > 1e-12 {
            worst = worst.max(diff / scale);
        }
    }
    worst
}

/// Compares the autograd gradient of `model.batch_loss` with central finite differences on
/// `per_var` random coordinates of every parameter (f64 models); each must agree to 1e-4. Returns
/// the worst relative error.
pub fn model_grad_check(model: &dyn Recommender, batch: &Batch, per_var: usize, seed: u64) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let loss = model.batch_loss(batch).unwrap();
    let grads = loss.backward().unwrap();
    let scalar = || model.batch_loss(batch).unwrap().to_scalar::<f64>().unwrap();
    let mut worst = 0f64;
    for (name, var) in model.named_vars() {
        assert_eq!(var.dtype(), DType::F64, "{name} must be f64 for the check");
        // no gradient means zero (as the optimisers read it): finite differences must agree
        let g = grads.get(var.as_tensor()).map_or_else(|| vec![0.0; var.elem_count()], values);
        // Mostly coordinates with a non-zero gradient (embedding rows are sparse), some anywhere;
        // an all-zero gradient (e.g. a bias that cancels in i+ - i-) must then be zero by
        // finite differences too.
        let touched: Vec<usize> = (0..g.len()).filter(|&k| g[k] != 0.0).collect();
        for t in 0..per_var {
            let k = if t % 3 == 2 || touched.is_empty() {
                rng.random_range(0..g.len())
            } else {
                touched[rng.random_range(0..touched.len())]
            };
            let fd = central_difference(&var, k, &scalar);
            let err = (fd - g[k]).abs() / (fd.abs().max(g[k].abs()).max(1e-6));
            assert!(err < 1e-4 || (fd - g[k]).abs() < 1e-9, "{name}[{k}]: autograd {} vs finite difference {fd}", g[k]);
            if g[k].abs() > 1e-7 {
                worst = worst.max(err);
            }
        }
    }
    worst
}
