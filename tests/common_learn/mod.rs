//! Helpers shared by the learn tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sgbd_edge::learn::data::Interactions;

/// Max over parameters of the relative error between the backward gradient and central finite
/// differences of `loss` (f64 parameters), over up to `per_var` entries per parameter.
pub fn grad_check(vars: &[Var], loss: &dyn Fn() -> Tensor, per_var: usize) -> f64 {
    let l = loss();
    let grads = l.backward().unwrap();
    let h = 1e-6;
    let mut worst = 0f64;
    let mut rng = StdRng::seed_from_u64(7);
    for v in vars {
        assert_eq!(v.dtype(), DType::F64);
        let g: Vec<f64> = match grads.get(v.as_tensor()) {
            Some(g) => g.flatten_all().unwrap().to_vec1().unwrap(),
            None => vec![0.0; v.elem_count()],
        };
        let base: Vec<f64> = v.flatten_all().unwrap().to_vec1().unwrap();
        let n = base.len();
        let picks: Vec<usize> = if n <= per_var {
            (0..n).collect()
        } else {
            (0..per_var).map(|_| rng.random_range(0..n)).collect()
        };
        let mut num = vec![];
        let mut ana = vec![];
        for &i in &picks {
            let mut p = base.clone();
            p[i] += h;
            v.set(&Tensor::from_vec(p.clone(), v.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let lp = loss().to_scalar::<f64>().unwrap();
            p[i] -= 2.0 * h;
            v.set(&Tensor::from_vec(p, v.shape(), &Device::Cpu).unwrap()).unwrap();
            let lm = loss().to_scalar::<f64>().unwrap();
            num.push((lp - lm) / (2.0 * h));
            ana.push(g[i]);
        }
        v.set(&Tensor::from_vec(base, v.shape(), &Device::Cpu).unwrap())
            .unwrap();
        // norm-wise relative error over the checked entries
        let diff: f64 = num.iter().zip(&ana).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        let scale: f64 = num
            .iter()
            .map(|a| a * a)
            .sum::<f64>()
            .sqrt()
            .max(ana.iter().map(|a| a * a).sum::<f64>().sqrt());
        let nonzero = ana.iter().any(|&a| a != 0.0);
        assert!(
            nonzero || scale < 1e-12,
            "all-zero analytic gradient where finite differences are not"
        );
        if scale > 1e-12 {
            worst = worst.max(diff / scale);
        }
    }
    worst
}

/// Planted preferences: users and items in `groups` groups; each user interacts with
/// `per_user` random items of its own group (train), plus 1 valid and 1 test item of its group.
pub fn planted(n_users: usize, n_items: usize, groups: usize, per_user: usize, seed: u64) -> Interactions {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut d = Interactions {
        n_users,
        n_items,
        ..Default::default()
    };
    let items_of = |g: usize| (0..n_items).filter(move |i| i % groups == g).collect::<Vec<_>>();
    for u in 0..n_users {
        let mut own = items_of(u % groups);
        // shuffle
        for i in (1..own.len()).rev() {
            let j = rng.random_range(0..=i);
            own.swap(i, j);
        }
        let take = &own[..per_user + 2];
        for &i in &take[..per_user] {
            d.train.push((u as u32, i as u32));
        }
        d.valid.push((u as u32, take[per_user] as u32));
        d.test.push((u as u32, take[per_user + 1] as u32));
    }
    d
}
