//! SAM, Mirror Gradient and SGBD against hand-written references on a tiny smooth problem.

use candle_core::{Device, Tensor, Var};
use sgbd_edge::learn::optim::{build, BaseOptimizer, Composite, OptimKind, OptimParams, Optimizer, Sgd, Variant};
use std::cell::RefCell;

// L(theta) = sum_i log(1 + exp(a_i theta_i)) + 0.5 * sum_i theta_i^2, over two parameter tensors
const A0: [f64; 3] = [0.5, -1.5, 2.0];
const A1: [f64; 2] = [1.0, -0.7];

fn loss_of(vars: &[Var]) -> Tensor {
    let mut total: Option<Tensor> = None;
    for (v, a) in vars.iter().zip([&A0[..], &A1[..]]) {
        let a = Tensor::new(a, &Device::Cpu).unwrap();
        let t = v.as_tensor();
        let l = (t.mul(&a).unwrap().exp().unwrap().affine(1.0, 1.0).unwrap().log().unwrap().sum_all().unwrap()
            + t.sqr().unwrap().sum_all().unwrap().affine(0.5, 0.0).unwrap())
        .unwrap();
        total = Some(match total {
            None => l,
            Some(x) => (x + l).unwrap(),
        });
    }
    total.unwrap()
}

fn grad_ref(theta: &[f64]) -> Vec<f64> {
    let a: Vec<f64> = A0.iter().chain(&A1).copied().collect();
    theta.iter().zip(&a).map(|(&t, &a)| a / (1.0 + (-a * t).exp()) + t).collect()
}

fn start() -> Vec<Var> {
    vec![
        Var::from_tensor(&Tensor::new(&[0.3f64, -0.2, 0.1], &Device::Cpu).unwrap()).unwrap(),
        Var::from_tensor(&Tensor::new(&[-0.4f64, 0.25], &Device::Cpu).unwrap()).unwrap(),
    ]
}

fn flat(vars: &[Var]) -> Vec<f64> {
    vars.iter().flat_map(|v| v.as_tensor().to_vec1::<f64>().unwrap()).collect()
}

fn named(vars: &[Var]) -> Vec<(String, Var)> {
    vars.iter().enumerate().map(|(i, v)| (format!("p{i}"), v.clone())).collect()
}

fn sgd(kind: OptimKind, p: &OptimParams, vars: &[Var], lr: f64) -> Composite {
    Composite::new(kind, p, named(vars), Box::new(Sgd::new(lr))).unwrap()
}

fn sam_point(theta: &[f64], rho: f64) -> Vec<f64> {
    let g = grad_ref(theta);
    let n = g.iter().map(|x| x * x).sum::<f64>().sqrt();
    theta.iter().zip(&g).map(|(t, g)| t + rho * g / (n + 1e-12)).collect()
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < tol, "{a:?} vs {b:?}");
    }
}

#[test]
fn sam_perturbs_by_rho_and_restores_bit_for_bit() {
    let _turn = crate::harness::shared();
    let vars = start();
    let theta0 = flat(&vars);
    let p = OptimParams { rho: 0.37, ..OptimParams::default() };
    let mut opt = sgd(OptimKind::Sam, &p, &vars, 0.0);
    let seen = RefCell::new(vec![]);
    let loss = opt
        .step(
            &mut || {
                seen.borrow_mut().push(flat(&vars));
                Ok(loss_of(&vars))
            },
            0,
        )
        .unwrap();
    let seen = seen.into_inner();
    assert_eq!(seen.len(), 2, "one plain and one perturbed evaluation");
    let d: Vec<f64> = seen[1].iter().zip(&theta0).map(|(a, b)| a - b).collect();
    let norm = d.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 0.37).abs() < 1e-12, "perturbation norm {norm}");
    // direction = the gradient's
    close(&seen[1], &sam_point(&theta0, 0.37), 1e-12);
    // lr 0: parameters restored exactly
    let after = flat(&vars);
    assert!(after.iter().zip(&theta0).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!((loss as f64 - loss_of(&start()).to_scalar::<f64>().unwrap()).abs() < 1e-6);

    // with a real step: theta - lr * g(theta + e)
    let vars = start();
    let mut opt = sgd(OptimKind::Sam, &p, &vars, 0.1);
    opt.step(&mut || Ok(loss_of(&vars)), 0).unwrap();
    let gs = grad_ref(&sam_point(&theta0, 0.37));
    let want: Vec<f64> = theta0.iter().zip(&gs).map(|(t, g)| t - 0.1 * g).collect();
    close(&flat(&vars), &want, 1e-12);
}

/// The paper's Algorithm 1 with plain SGD: mirror batches (k mod beta == 0) do
/// theta' = theta - a1 eta g(theta); theta = theta' + a2 eta g(theta'); others theta -= eta g.
#[test]
fn mirror_gradient_with_sgd_is_algorithm_1() {
    let _turn = crate::harness::shared();
    let (eta, a1, a2, beta) = (0.2, 1.0, 0.3, 3);
    let p = OptimParams { alpha1: a1, alpha2: a2, beta, ..OptimParams::default() };
    let vars = start();
    let mut opt = sgd(OptimKind::Mg, &p, &vars, eta);
    let mut theta = flat(&vars);
    for k in 0..7 {
        opt.step(&mut || Ok(loss_of(&vars)), k).unwrap();
        if k % beta == 0 {
            let g = grad_ref(&theta);
            let t1: Vec<f64> = theta.iter().zip(&g).map(|(t, g)| t - a1 * eta * g).collect();
            let g1 = grad_ref(&t1);
            theta = t1.iter().zip(&g1).map(|(t, g)| t + a2 * eta * g).collect();
        } else {
            let g = grad_ref(&theta);
            theta = theta.iter().zip(&g).map(|(t, g)| t - eta * g).collect();
        }
        close(&flat(&vars), &theta, 1e-12);
    }
    // 3 mirror batches (0, 3, 6) of 2 evaluations + 4 plain ones
    assert_eq!(opt.grad_evals(), 10);
    assert_eq!(opt.base_steps(), 10);
}

/// MG over Adam: both sub-steps go through one Adam state (moments and step counter).
#[test]
fn mirror_gradient_over_adam_shares_one_state() {
    let _turn = crate::harness::shared();
    let p = OptimParams { lr: 0.05, alpha1: 1.0, alpha2: 0.2, beta: 3, ..OptimParams::default() };
    let vars = start();
    let mut opt = build(OptimKind::Mg, &p, named(&vars)).unwrap();
    let (b1, b2, eps) = (p.beta1, p.beta2, p.eps);
    let mut theta = flat(&vars);
    let n = theta.len();
    let (mut m, mut v, mut t) = (vec![0.0; n], vec![0.0; n], 0i32);
    let mut adam = |theta: &mut Vec<f64>, g: &[f64]| {
        t += 1;
        for i in 0..n {
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let denom = v[i].sqrt() / (1.0 - b2.powi(t)).sqrt() + eps;
            theta[i] -= p.lr / (1.0 - b1.powi(t)) * m[i] / denom;
        }
    };
    for k in 0..4 {
        opt.step(&mut || Ok(loss_of(&vars)), k).unwrap();
        let g: Vec<f64> = grad_ref(&theta);
        if k % 3 == 0 {
            adam(&mut theta, &g.iter().map(|x| x * p.alpha1).collect::<Vec<_>>());
            let g1 = grad_ref(&theta);
            adam(&mut theta, &g1.iter().map(|x| -x * p.alpha2).collect::<Vec<_>>());
        } else {
            adam(&mut theta, &g);
        }
        close(&flat(&vars), &theta, 1e-12);
    }
    assert_eq!(opt.base_steps(), 6, "step counter advances twice on each mirror batch (k = 0, 3)");
    let st = opt.state().unwrap();
    assert_eq!(st.step, 6);
    assert_eq!(st.tensors.len(), 4, "one m and one v per parameter, shared by both sub-steps");
}

/// SGBD variants with SGD, against the reference on one mirror batch and one plain batch.
#[test]
fn sgbd_variants_match_reference_and_cost() {
    let _turn = crate::harness::shared();
    let (eta, rho) = (0.1, 0.2);
    let p = OptimParams { rho, alpha1: 1.0, alpha2: 0.3, beta: 2, ..OptimParams::default() };
    for variant in [Variant::S1, Variant::S2, Variant::M2] {
        let vars = start();
        let mut opt = sgd(OptimKind::Sgbd(variant), &p, &vars, eta);
        let mut theta = flat(&vars);
        for k in 0..2 {
            opt.step(&mut || Ok(loss_of(&vars)), k).unwrap();
            let mirror = k % 2 == 0;
            let sam_descent = variant != Variant::S2 || mirror;
            let g = if sam_descent { grad_ref(&sam_point(&theta, rho)) } else { grad_ref(&theta) };
            if mirror {
                let t1: Vec<f64> = theta.iter().zip(&g).map(|(t, g)| t - p.alpha1 * eta * g).collect();
                let g1 = if variant == Variant::M2 { grad_ref(&sam_point(&t1, rho)) } else { grad_ref(&t1) };
                theta = t1.iter().zip(&g1).map(|(t, g)| t + p.alpha2 * eta * g).collect();
            } else {
                theta = theta.iter().zip(&g).map(|(t, g)| t - eta * g).collect();
            }
            close(&flat(&vars), &theta, 1e-12);
        }
        let want = match variant {
            Variant::S1 => 3 + 2,
            Variant::S2 => 3 + 1,
            Variant::M2 => 4 + 2,
        };
        assert_eq!(opt.grad_evals(), want, "{variant}");
    }
    // plain ones: Adam 1 per batch, SAM 2
    for (kind, want) in [(OptimKind::Adam, 3), (OptimKind::Sam, 6)] {
        let vars = start();
        let mut opt = sgd(kind, &p, &vars, eta);
        for k in 0..3 {
            opt.step(&mut || Ok(loss_of(&vars)), k).unwrap();
        }
        assert_eq!(opt.grad_evals(), want);
    }
}

#[test]
fn bad_loss_is_an_error_and_parameters_are_kept() {
    let _turn = crate::harness::shared();
    let vars = start();
    let theta0 = flat(&vars);
    let mut opt = build(OptimKind::Sgbd(Variant::S1), &OptimParams::default(), named(&vars)).unwrap();
    let r = opt.step(&mut || Ok(loss_of(&vars).affine(0.0, f64::NAN).unwrap()), 0);
    assert!(r.is_err());
    assert_eq!(flat(&vars), theta0);
    assert!(OptimParams { alpha1: 0.1, alpha2: 0.2, ..OptimParams::default() }.validate().is_err());
    let _ = BaseOptimizer::steps(&Sgd::new(0.1));
}

/// Every strategy gives the same parameters whether the model hands over its gradients
/// (`step_with` + `loss_and_grads`, the training path) or autograd computes them (`step` +
/// `batch_loss`): the fused LightGCN path feeds SAM's perturbed and MG's mirror evaluations too.
#[test]
fn fused_gradients_drive_every_strategy_like_autograd() {
    let _turn = crate::harness::shared();
    use rand::{Rng, SeedableRng};
    use sgbd_edge::learn::lightgcn::LightGcn;
    use sgbd_edge::learn::model::{Batch, Recommender};
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let edges: Vec<(u32, u32)> = (0..150).map(|_| (rng.random_range(0..20), rng.random_range(0..15))).collect();
    let batches: Vec<Batch> = (0..4)
        .map(|_| {
            let v = |n: u32, r: &mut rand::rngs::StdRng| (0..16).map(|_| r.random_range(0..n)).collect::<Vec<u32>>();
            Batch::from_vecs(v(20, &mut rng), v(15, &mut rng), v(15, &mut rng), &Device::Cpu).unwrap()
        })
        .collect();
    let kinds = [
        OptimKind::Adam,
        OptimKind::Sam,
        OptimKind::Mg,
        OptimKind::Sgbd(Variant::S1),
        OptimKind::Sgbd(Variant::S2),
        OptimKind::Sgbd(Variant::M2),
    ];
    let params = OptimParams { lr: 0.05, ..OptimParams::default() };
    for kind in kinds {
        let run = |fused: bool| {
            let mut init = rand::rngs::StdRng::seed_from_u64(7);
            let m = LightGcn::new(20, 15, &edges, 16, 2, 1e-3, candle_core::DType::F32, &mut init).unwrap();
            let mut opt = build(kind, &params, m.named_vars()).unwrap();
            let mut losses = vec![];
            for (k, b) in batches.iter().enumerate() {
                let l = if fused {
                    opt.step_with(&mut || m.loss_and_grads(b), k).unwrap()
                } else {
                    opt.step(&mut || m.batch_loss(b), k).unwrap()
                };
                losses.push(l);
            }
            let p: Vec<f32> = m.named_vars()[0].1.flatten_all().unwrap().to_vec1().unwrap();
            (losses, p, opt.grad_evals())
        };
        let (l_auto, p_auto, n_auto) = run(false);
        let (l_fused, p_fused, n_fused) = run(true);
        assert_eq!(l_auto, l_fused, "{kind:?}");
        assert_eq!(n_auto, n_fused, "{kind:?}");
        assert_eq!(p_auto, p_fused, "{kind:?}: parameters differ");
        let p0: Vec<f32> = {
            let mut init = rand::rngs::StdRng::seed_from_u64(7);
            let m = LightGcn::new(20, 15, &edges, 16, 2, 1e-3, candle_core::DType::F32, &mut init).unwrap();
            m.named_vars()[0].1.flatten_all().unwrap().to_vec1().unwrap()
        };
        assert_ne!(p_fused, p0, "{kind:?}: the steps moved nothing");
    }
}
