//! `bench train`: optimisers x seeds on one data set in one process; a table of test metrics,
//! epochs, time per epoch / evaluation, cost relative to the baseline, peak RSS, and the
//! PyTorch MMRec anchors measured on the same kind of machine (constants, labelled as such).

use crate::learn::data::Interactions;
use crate::learn::model::{Batch, Recommender};
use crate::learn::optim::Optimizer;
use crate::learn::sampler::NegativeSampler;
use crate::learn::Result;
use candle_core::Device;
use rand::SeedableRng;
use std::time::Instant;


/// Wall and CPU milliseconds of `f`, averaged over `reps`.
fn time<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, f64)> {
    let (w, c) = (Instant::now(), crate::sys::process_cpu_seconds());
    for _ in 0..reps {
        f()?;
    }
    let n = reps.max(1) as f64;
    Ok((w.elapsed().as_secs_f64() * 1e3 / n, (crate::sys::process_cpu_seconds() - c) * 1e3 / n))
}

/// Times the parts of one training step and one evaluation (wall ms, CPU ms).
pub fn profile_parts(
    model: &dyn Recommender,
    opt: &mut dyn Optimizer,
    data: &Interactions,
    batch: usize,
    eval_block: usize,
    reps: usize,
) -> Result<Vec<(String, f64, f64)>> {
    let train_ui = data.train_by_user();
    let valid_ui = data.valid_by_user();
    let sampler = NegativeSampler::new(data.n_items, &train_ui)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut out = vec![];
    let (w, c) = time(reps, || sampler.epoch(&data.train, batch, &mut rng))?;
    out.push(("negative sampling, one epoch".to_string(), w, c));
    let b = sampler.epoch(&data.train, batch, &mut rng)?.remove(0);
    let b = Batch::from_vecs(b.users, b.pos, b.neg, &Device::Cpu)?;
    {
        use crate::learn::sparse::{normalized_bipartite, SparseOp};
        let a = SparseOp::symmetric(std::sync::Arc::new(normalized_bipartite(
            data.n_users,
            data.n_items,
            &data.train,
        )));
        let x = candle_core::Var::from_tensor(&candle_core::Tensor::randn(
            0f32,
            0.1,
            (data.n_users + data.n_items, 64),
            &Device::Cpu,
        )?)?;
        let (w, c) = time(reps, || Ok(a.apply(x.as_tensor())?))?;
        out.push(("spmm A x (d 64)".into(), w, c));
        let (w, c) = time(reps, || Ok(a.propagate_mean(x.as_tensor(), 2)?))?;
        out.push(("propagate_mean, 2 layers".into(), w, c));
        let (w, c) = time(reps, || {
            Ok(a.propagate_mean(x.as_tensor(), 2)?.sum_all()?.backward()?)
        })?;
        out.push(("propagate_mean fwd + bwd".into(), w, c));
        let g = x.as_tensor().ones_like()?;
        let vars = vec![x.clone()];
        let mut adam = crate::learn::optim::Adam::new(&vars, 1e-3, 0.9, 0.999, 1e-8)?;
        let (w, c) = time(reps, || {
            crate::learn::optim::BaseOptimizer::apply(&mut adam, &vars, std::slice::from_ref(&g), 1.0)
        })?;
        out.push(("adam update of a table this size".into(), w, c));
    }
    let (w, c) = time(reps, || model.embeddings())?;
    out.push(("propagation (embeddings)".into(), w, c));
    let (w, c) = time(reps, || model.batch_loss(&b))?;
    out.push(("batch loss forward".into(), w, c));
    let (w, c) = time(reps, || {
        let lg = model.loss_and_grads(&b)?;
        match lg.grads {
            Some(g) => Ok(g.len()),
            None => Ok(lg.loss.backward().map(|_| 1)?),
        }
    })?;
    out.push(("batch loss and gradients (as training)".into(), w, c));
    let mut k = 1usize; // not a mirror batch for beta > 1
    let (w, c) = time(reps, || {
        k += 1;
        opt.step_with(&mut || model.loss_and_grads(&b), k)
    })?;
    out.push((format!("optimiser step ({})", opt.kind().label()), w, c));
    let (u, i) = model.embeddings()?;
    let it = i.t()?.contiguous()?;
    let (w, c) = time(reps.div_ceil(4), || {
        for s in (0..data.n_users).step_by(eval_block.max(1)) {
            let n = eval_block.max(1).min(data.n_users - s);
            u.narrow(0, s, n)?.matmul(&it)?;
        }
        Ok(())
    })?;
    out.push(("evaluation: score matmuls only".into(), w, c));
    let (w, c) = time(reps.div_ceil(4), || {
        let (u, i) = model.embeddings()?;
        crate::learn::eval::evaluate(&u, &i, &train_ui, &valid_ui, &[5, 10, 20], eval_block)
    })?;
    out.push(("full evaluation (valid)".into(), w, c));
    Ok(out)
}

/// A PyTorch MMRec reference run (from `measured-anchors.md`; not measured by this binary).
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    pub label: &'static str,
    pub test_r20: f64,
    pub test_n20: f64,
    pub best_epoch: usize,
    pub train_s_per_epoch: f64,
    pub eval_s: f64,
    pub peak_rss_mb: f64,
    pub wall_s: f64,
}

const ANCHORS: &[(&str, &str, Anchor)] = &[
    (
        "lightgcn",
        "baby",
        Anchor {
            label: "PyTorch LightGCN Baby",
            test_r20: 0.0756,
            test_n20: 0.0321,
            best_epoch: 61,
            train_s_per_epoch: 3.07,
            eval_s: 2.83,
            peak_rss_mb: 1320.0,
            wall_s: 706.0,
        },
    ),
    (
        "lightgcn",
        "baby",
        Anchor {
            label: "PyTorch LightGCN Baby + MG",
            test_r20: 0.0760,
            test_n20: 0.0319,
            best_epoch: 63,
            train_s_per_epoch: 4.07,
            eval_s: 2.82,
            peak_rss_mb: 1350.0,
            wall_s: 785.0,
        },
    ),
    (
        "freedom",
        "tiktok",
        Anchor {
            label: "PyTorch FREEDOM TikTok",
            test_r20: 0.0880,
            test_n20: 0.0388,
            best_epoch: 57,
            train_s_per_epoch: 1.07,
            eval_s: 0.43,
            peak_rss_mb: 1170.0,
            wall_s: 191.0,
        },
    ),
    (
        "freedom",
        "tiktok",
        Anchor {
            label: "PyTorch FREEDOM TikTok + MG",
            test_r20: 0.0877,
            test_n20: 0.0395,
            best_epoch: 54,
            train_s_per_epoch: 1.49,
            eval_s: 0.44,
            peak_rss_mb: 1160.0,
            wall_s: 218.0,
        },
    ),
    (
        "vbpr",
        "tiktok",
        Anchor {
            label: "PyTorch VBPR TikTok",
            test_r20: 0.0214,
            test_n20: 0.0084,
            best_epoch: 58,
            train_s_per_epoch: 0.53,
            eval_s: 0.44,
            peak_rss_mb: 1080.0,
            wall_s: 153.0,
        },
    ),
    (
        "vbpr",
        "tiktok",
        Anchor {
            label: "PyTorch VBPR TikTok + MG",
            test_r20: 0.0216,
            test_n20: 0.0084,
            best_epoch: 56,
            train_s_per_epoch: 0.57,
            eval_s: 0.43,
            peak_rss_mb: 1080.0,
            wall_s: 151.0,
        },
    ),
];

/// The anchors for a model on a data set (`dataset` is the `.inter` file stem: baby, tiktok, ...).
pub fn anchors(model: crate::learn::model::ModelKind, dataset: &str) -> Vec<Anchor> {
    let m = format!("{model:?}").to_ascii_lowercase();
    ANCHORS
        .iter()
        .filter(|(am, ad, _)| *am == m && *ad == dataset)
        .map(|(_, _, a)| *a)
        .collect()
}
