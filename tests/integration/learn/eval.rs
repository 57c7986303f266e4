//! Ranking metrics on a hand-built case (expected values computed here by hand), masking rules,
//! and early stopping with test metrics taken at the best-valid epoch.

use candle_core::{Device, Tensor, Var};
use rand::rngs::StdRng;
use sgbd_edge::learn::data::{Interactions, UserItems};
use sgbd_edge::learn::eval::evaluate;
use sgbd_edge::learn::model::{Batch, Recommender};
use sgbd_edge::learn::optim::{build, OptimKind, OptimParams};
use sgbd_edge::learn::trainer::{evaluate_model, fit, Hooks, Split, TrainOptions};
use sgbd_edge::learn::{OpPath, Result};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Fixed embeddings (d = 1): user 0 scores items in index order, user 1 in reverse order.
/// `script[e]` multiplies item scores at epoch e (a way to script the valid/test curve).
struct Fixed {
    users: Vec<f32>,
    items: Vec<Vec<f32>>,
    epoch: AtomicUsize,
    dummy: Var,
}

impl Fixed {
    fn new(users: Vec<f32>, items: Vec<Vec<f32>>) -> Self {
        Self { users, items, epoch: AtomicUsize::new(usize::MAX), dummy: Var::new(&[1f32], &Device::Cpu).unwrap() }
    }
}

impl Recommender for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn named_vars(&self) -> Vec<(String, Var)> {
        vec![("dummy".into(), self.dummy.clone())]
    }
    fn batch_loss(&self, _b: &Batch) -> Result<Tensor> {
        Ok(self.dummy.as_tensor().affine(0.0, 1.0)?.sum_all()?)
    }
    fn on_epoch_start(&mut self, _rng: &mut StdRng) -> Result<()> {
        let e = self.epoch.load(Ordering::SeqCst).wrapping_add(1);
        self.epoch.store(e, Ordering::SeqCst);
        Ok(())
    }
    fn embeddings(&self) -> Result<(Tensor, Tensor)> {
        let e = self.epoch.load(Ordering::SeqCst);
        let row = &self.items[if e == usize::MAX { 0 } else { e.min(self.items.len() - 1) }];
        let n = self.users.len();
        Ok((
            Tensor::from_vec(self.users.clone(), (n, 1), &Device::Cpu)?,
            Tensor::from_vec(row.clone(), (row.len(), 1), &Device::Cpu)?,
        ))
    }
    fn place(&mut self, device: &Device, _path: OpPath) -> Result<()> {
        match device {
            Device::Cpu => Ok(()),
            _ => Err(sgbd_edge::learn::LearnError::Invalid("the fixed test model stays on the CPU".into())),
        }
    }
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} vs {b}");
}

#[test]
fn hand_built_metrics() {
    let _turn = crate::harness::shared();
    // 3 users, 6 items, d = 1; user 0 ranks items 0,1,2,...; user 1 ranks 5,4,3,...
    let users = Tensor::new(&[[1f32], [-1.0], [1.0]], &Device::Cpu).unwrap();
    let items = Tensor::new(&[[6f32], [5.0], [4.0], [3.0], [2.0], [1.0]], &Device::Cpu).unwrap();
    let mask = UserItems::from_pairs(3, &[(0, 0), (1, 5)]);
    // user 2 has no target: not counted
    let target = UserItems::from_pairs(3, &[(0, 1), (0, 3), (0, 5), (1, 0)]);
    let m = evaluate(&users, &items, &mask, &target, &[2, 5], 2).unwrap();
    assert_eq!(m.n_users, 2);
    // user 0 ranking after masking item 0: 1,2,3,4,5; targets {1,3,5}
    //   @2: hits 1 (item 1 at rank 1): recall 1/3, dcg 1, idcg 1 + 1/log2(3), precision 1/2
    //   @5: hits 3 at ranks 1,3,5: recall 1, dcg 1 + 1/2 + 1/log2(6), idcg 1 + 1/log2(3) + 1/2, precision 3/5
    // user 1 ranking after masking item 5: 4,3,2,1,0; target {0}
    //   @2: nothing; @5: hit at rank 5: recall 1, ndcg 1/log2(6), precision 1/5
    let l3 = 1.0 / 3f64.log2();
    let l6 = 1.0 / 6f64.log2();
    close(m.recall_at(2), (1.0 / 3.0 + 0.0) / 2.0);
    close(m.ndcg_at(2), (1.0 / (1.0 + l3) + 0.0) / 2.0);
    close(m.precision_at(2), (0.5 + 0.0) / 2.0);
    close(m.recall_at(5), (1.0 + 1.0) / 2.0);
    close(m.ndcg_at(5), ((1.0 + 0.5 + l6) / (1.0 + l3 + 0.5) + l6) / 2.0);
    close(m.precision_at(5), (0.6 + 0.2) / 2.0);
    // block size does not change anything
    assert_eq!(evaluate(&users, &items, &mask, &target, &[2, 5], 1).unwrap(), m);
    assert_eq!(evaluate(&users, &items, &mask, &target, &[2, 5], 1024).unwrap(), m);
}

#[test]
fn train_items_masked_valid_items_not_masked_at_test() {
    let _turn = crate::harness::shared();
    // user 0: train item 0, valid item 1, test item 2; scores rank 0 > 1 > 2 > 3
    let data = Interactions { n_users: 1, n_items: 4, train: vec![(0, 0)], valid: vec![(0, 1)], test: vec![(0, 2)] };
    let m = Fixed::new(vec![1.0], vec![vec![4.0, 3.0, 2.0, 1.0]]);
    let v = evaluate_model(&m, &data, Split::Valid, &[1], 16).unwrap();
    close(v.recall_at(1), 1.0); // item 0 masked: item 1 first
    let t = evaluate_model(&m, &data, Split::Test, &[1, 2], 16).unwrap();
    close(t.recall_at(1), 0.0); // valid item 1 is still ranked first at test time
    close(t.recall_at(2), 1.0);
    close(t.ndcg_at(2), 1.0 / 3f64.log2());
}

#[test]
fn early_stopping_reports_test_at_best_valid_epoch() {
    let _turn = crate::harness::shared();
    // 1 user, items 0..6; train {0}, valid {1}, test {2}.
    // epoch 0: valid at rank 3, epoch 1: valid first (best), epochs 2+: valid last, test first.
    let data = Interactions { n_users: 1, n_items: 6, train: vec![(0, 0)], valid: vec![(0, 1)], test: vec![(0, 2)] };
    let scripts = vec![
        vec![9.0, 1.0, 2.0, 5.0, 4.0, 0.0],
        vec![9.0, 8.0, 2.0, 5.0, 4.0, 0.0],
        vec![9.0, 0.0, 8.0, 5.0, 4.0, 3.0],
    ];
    let mut m = Fixed::new(vec![1.0], scripts);
    let mut opt = build(OptimKind::Adam, &OptimParams::default(), m.named_vars()).unwrap();
    let opts =
        TrainOptions { epochs: 50, patience: 3, batch: 4, ks: vec![1, 5], valid_k: 1, ..TrainOptions::default() };
    let r = fit(&mut m, &mut opt, &data, &opts, Hooks::default()).unwrap();
    assert_eq!(r.best_epoch, Some(1));
    assert!(r.stopped_early);
    assert_eq!(r.epochs_run, 2 + 4, "best at epoch 1, then patience + 1 = 4 epochs without improvement (MMRec)");
    let t = r.test.unwrap();
    // at epoch 1 the test item (score 2) ranks 4th among unmasked items 1..5 -> recall@1 0, @5 1
    close(t.recall_at(1), 0.0);
    close(t.recall_at(5), 1.0);
    close(t.ndcg_at(5), 1.0 / 5f64.log2());
    let valid_at_best = r.best_valid.unwrap();
    close(valid_at_best.recall_at(1), 1.0);
    assert_eq!(r.curve.iter().filter(|e| e.improved).map(|e| e.epoch).collect::<Vec<_>>(), vec![0, 1]);
}
