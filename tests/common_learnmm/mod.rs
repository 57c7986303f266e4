//! Shared helpers of the learnmm tests: tiny planted data, a plain sampler, gradient checks.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sgbd_edge::learn::model::{Batch, Recommender};
use sgbd_edge::learn::npy::Modality;
use std::collections::HashSet;

/// Two user groups x two item groups. Items of group g have features near a group centroid in
/// each of two modalities; users of group g interact only with warm items of group g. The last
/// `cold_per_group` items of each group have no interactions at all.
pub struct Planted {
    pub n_users: usize,
    pub n_items: usize,
    pub train: Vec<(u32, u32)>,
    pub user_group: Vec<usize>,
    pub item_group: Vec<usize>,
    pub cold: Vec<u32>,
    pub modalities: Vec<Modality>,
}

pub fn planted(users_per_group: usize, items_per_group: usize, cold_per_group: usize, per_user: usize, seed: u64) -> Planted {
    let mut rng = StdRng::seed_from_u64(seed);
    let n_users = 2 * users_per_group;
    let n_items = 2 * items_per_group;
    let user_group: Vec<usize> = (0..n_users).map(|u| u / users_per_group).collect();
    let item_group: Vec<usize> = (0..n_items).map(|i| i / items_per_group).collect();
    let warm = items_per_group - cold_per_group;
    let cold: Vec<u32> = (0..2)
        .flat_map(|g| (warm..items_per_group).map(move |k| (g * items_per_group + k) as u32))
        .collect();
    let mut train = Vec::new();
    for u in 0..n_users {
        let g = user_group[u];
        let mut picked = HashSet::new();
        while picked.len() < per_user.min(warm) {
            picked.insert(g * items_per_group + rng.random_range(0..warm));
        }
        let mut picked: Vec<usize> = picked.into_iter().collect();
        picked.sort_unstable();
        train.extend(picked.into_iter().map(|i| (u as u32, i as u32)));
    }
    let mut modality = |name: &str, d: usize| {
        let centroids: Vec<Vec<f32>> = (0..2).map(|_| (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
        let data: Vec<f32> = (0..n_items)
            .flat_map(|i| centroids[item_group[i]].clone())
            .map(|c| c + rng.random_range(-0.3f32..0.3))
            .collect();
        Modality::new(name, n_items, d, data).unwrap()
    };
    let modalities = vec![modality("image", 6), modality("audio", 5)];
    Planted { n_users, n_items, train, user_group, item_group, cold, modalities }
}

/// One epoch of shuffled (user, pos, uniform negative not in the user's train items) triples.
pub fn epoch_batches(n_items: usize, train: &[(u32, u32)], batch: usize, rng: &mut StdRng) -> Vec<Batch> {
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
pub fn train_adam(model: &mut dyn Recommender, n_items: usize, train: &[(u32, u32)], epochs: usize, lr: f64, seed: u64) {
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
pub fn scores(model: &dyn Recommender) -> Vec<Vec<f32>> {
    let (u, i) = model.embeddings().unwrap();
    u.matmul(&i.t().unwrap()).unwrap().to_dtype(DType::F32).unwrap().to_vec2().unwrap()
}

/// Compares the autograd gradient of `model.batch_loss` with central finite differences on
/// `per_var` random coordinates of every parameter (f64 models). Returns the worst relative error.
pub fn grad_check(model: &dyn Recommender, batch: &Batch, per_var: usize, seed: u64) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let loss = model.batch_loss(batch).unwrap();
    let grads = loss.backward().unwrap();
    let mut worst = 0f64;
    for (name, var) in model.named_vars() {
        assert_eq!(var.dtype(), DType::F64, "{name} must be f64 for the check");
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        let shape = var.shape().clone();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        // Mostly coordinates with a non-zero gradient (embedding rows are sparse), some anywhere;
        // an all-zero gradient (e.g. a bias that cancels in i+ - i-) must then be zero by
        // finite differences too.
        let touched: Vec<usize> = (0..g.len()).filter(|&k| g[k] != 0.0).collect();
        for t in 0..per_var {
            let k = if t % 3 == 2 || touched.is_empty() {
                rng.random_range(0..base.len())
            } else {
                touched[rng.random_range(0..touched.len())]
            };
            let eps = 1e-6;
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[k] += delta;
                var.set(&Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap()).unwrap();
                model.batch_loss(batch).unwrap().to_scalar::<f64>().unwrap()
            };
            let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
            var.set(&Tensor::from_vec(base.clone(), shape.clone(), &Device::Cpu).unwrap()).unwrap();
            let err = (fd - g[k]).abs() / (fd.abs().max(g[k].abs()).max(1e-6));
            assert!(err < 1e-4 || (fd - g[k]).abs() < 1e-9, "{name}[{k}]: autograd {} vs finite difference {fd}", g[k]);
            if g[k].abs() > 1e-7 {
                worst = worst.max(err);
            }
        }
    }
    worst
}
