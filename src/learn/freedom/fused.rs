//! FREEDOM's fused batch loss on the CPU: the loss and every parameter's gradient in one pass,
//! handed to the optimiser without candle's autograd (as LightGCN's, see [`super::super::lightgcn`]).
//!
//! Forward, at the batch's rows only where the loss reads no other row:
//! - the user-item layer mean over the pruned graph ([`LayerMean::rows`]: full products for
//!   layers `1..L-1`, the last at the batch's distinct users and items);
//! - `h = S^L_mm E_item` at the batch's distinct items (full products for layers `1..L_mm-1`);
//! - the modality projections `T_m(i) = W_m f_m(i) + b_m` of the batch's distinct items only
//!   ([`crate::learn::vbpr::Linear::project_rows`], candle's matmul);
//! - `BPR(u, i+, i-) + lambda sum_m BPR(u, T_m(i+), T_m(i-))`.
//!
//! Backward: the gradient `H` at the batch's final rows goes back through the user-item graph by
//! Horner's rule ([`LayerMean::grad`]) and, for the item rows, through `(S^T)^L_mm` (the first
//! product reading `H` as compact non-zero rows); the projections' gradients are
//! `dW = G^T F_B`, `db = sum G`, `dF_B = G W` with `G` the gradient at the projected rows, and
//! the feature tables' gradients are zero outside the batch's items.

use super::Freedom;
use crate::learn::lightgcn::{axpy_row, bpr_coefs, bpr_mean, dot, BatchRows, LayerMean};
use crate::learn::model::{Batch, LossGrads};
use crate::learn::sparse::{mul_rows, mul_selected_acc, with_cpu_slice, Elem};
use crate::learn::vbpr::ProjectedRows;
use crate::learn::{LearnError, Result};
use candle_core::{Device, Tensor, WithDType};
use rayon::prelude::*;

/// Copies the `len` values of `t` into `out` (checked).
fn copy_into<T: Elem + WithDType>(t: &Tensor, out: &mut [T], what: &str) -> Result<()> {
    with_cpu_slice(t, |v: &[T]| {
        if v.len() != out.len() {
            return Err(LearnError::Invalid(format!("FREEDOM {what} has {} values, expected {}", v.len(), out.len())));
        }
        out.copy_from_slice(v);
        Ok(())
    })?
}

fn to_tensor<T: Elem + WithDType>(v: Vec<T>, shape: (usize, usize)) -> Result<Tensor> {
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

impl Freedom {
    /// The loss and the gradients of [`crate::learn::model::Recommender::named_vars`], in that
    /// order, for parameters of type `T` on the CPU.
    pub(super) fn fused_loss<T: Elem + WithDType>(&self, b: &Batch) -> Result<LossGrads> {
        let (nu, ni, d) = (self.n_users, self.n_items, self.params.dim);
        let rows = BatchRows::of_batch(b, nu, ni)?;
        let ws = &*self.ws;
        let mut x = ws.take::<T>((nu + ni) * d);
        copy_into(self.user.as_tensor(), &mut x[..nu * d], "user table")?;
        copy_into(self.item.as_tensor(), &mut x[nu * d..], "item table")?;
        let lm = LayerMean { a: self.masked.matrix(), at: self.masked.transposed(), layers: self.params.ui_layers, ws };
        let mut fin = lm.rows(&x, d, &rows.uniq);
        let us = rows.user_slots;
        let items: Vec<u32> = rows.uniq[us..].iter().map(|&r| r - nu as u32).collect();
        self.add_item_graph_rows(&x[nu * d..], d, &items, &mut fin[us * d..]);
        ws.give(x);

        let modal = self.params.lambda > 0.0;
        let projected = if modal { self.project(&items)? } else { vec![] };
        let bsz = rows.batch();
        let row = |k: usize| {
            let s = rows.at(k);
            &fin[s * d..(s + 1) * d]
        };
        fn trow<'p, T>(p: &'p ProjectedRows<T>, rows: &BatchRows, us: usize, d: usize, k: usize) -> &'p [T] {
            let s = rows.at(k) - us;
            &p.rows[s * d..(s + 1) * d]
        }
        let trow = |p, k| trow(p, &rows, us, d, k);
        let diffs: Vec<f64> = (0..bsz)
            .into_par_iter()
            .with_min_len(256)
            .map(|k| dot(row(k), row(bsz + k)) - dot(row(k), row(2 * bsz + k)))
            .collect();
        let mdiffs: Vec<Vec<f64>> = projected
            .iter()
            .map(|p| {
                (0..bsz)
                    .into_par_iter()
                    .with_min_len(256)
                    .map(|k| dot(row(k), trow(p, bsz + k)) - dot(row(k), trow(p, 2 * bsz + k)))
                    .collect()
            })
            .collect();
        let lambda = self.params.lambda;
        let loss = bpr_mean(&diffs) + lambda * mdiffs.iter().map(|z| bpr_mean(z)).sum::<f64>();

        let c = bpr_coefs(&diffs, 1.0);
        let cm: Vec<Vec<f64>> = mdiffs.iter().map(|z| bpr_coefs(z, lambda)).collect();
        let nb = items.len();
        let mut h = vec![T::default(); fin.len()];
        let mut gts: Vec<Vec<T>> = projected.iter().map(|_| vec![T::default(); nb * d]).collect();
        let (hu, hi) = h.split_at_mut(us * d);
        rayon::join(
            || {
                // users: c (p - n) + sum_m c_m (T_m p - T_m n)
                for k in 0..bsz {
                    let su = rows.at(k);
                    let o = &mut hu[su * d..(su + 1) * d];
                    axpy_row(o, c[k], row(bsz + k));
                    axpy_row(o, -c[k], row(2 * bsz + k));
                    for (p, cm) in projected.iter().zip(&cm) {
                        axpy_row(o, cm[k], trow(p, bsz + k));
                        axpy_row(o, -cm[k], trow(p, 2 * bsz + k));
                    }
                }
            },
            || {
                // items: +-c u; projected items: +-c_m u
                for k in 0..bsz {
                    let (sp, sn) = (rows.at(bsz + k) - us, rows.at(2 * bsz + k) - us);
                    axpy_row(&mut hi[sp * d..(sp + 1) * d], c[k], row(k));
                    axpy_row(&mut hi[sn * d..(sn + 1) * d], -c[k], row(k));
                    for (g, cm) in gts.iter_mut().zip(&cm) {
                        axpy_row(&mut g[sp * d..(sp + 1) * d], cm[k], row(k));
                        axpy_row(&mut g[sn * d..(sn + 1) * d], -cm[k], row(k));
                    }
                }
            },
        );
        drop(fin);

        let ego = lm.grad(&h, &rows.slot, d, |_, _| {});
        let user_grad = to_tensor(ego[..nu * d].to_vec(), (nu, d))?;
        let item_grad = self.item_graph_grad(&h, &rows.slot[nu..], &ego[nu * d..], d);
        let mut grads = vec![user_grad, to_tensor(item_grad, (ni, d))?];
        for ((p, g), t) in projected.iter().zip(gts).zip(&self.trs) {
            let g = p.output_grad(g)?;
            // the bias cancels in T(i+) - T(i-): exactly zero, as on the autograd path
            grads.extend([p.table_grad(&g, t, ni)?, p.weight_grad(&g)?, t.bias.as_tensor().zeros_like()?]);
        }
        let loss = Tensor::from_vec(vec![<T as WithDType>::from_f64(loss)], (), &Device::Cpu)?;
        Ok(LossGrads { loss, grads: Some(grads) })
    }

    /// `out_j += (S^L_mm E_item)[items[j]]` (`out` compact `[items, d]`, `item_x` full).
    fn add_item_graph_rows<T: Elem>(&self, item_x: &[T], d: usize, items: &[u32], out: &mut [T]) {
        let layers = self.params.mm_layers;
        if layers == 0 {
            for (o, &i) in out.chunks_mut(d).zip(items) {
                axpy_row(o, 1.0, &item_x[i as usize * d..(i as usize + 1) * d]);
            }
            return;
        }
        let (s, ws) = (self.mm.matrix(), &*self.ws);
        let mut cur: Option<Vec<T>> = None;
        for _ in 1..layers {
            let mut next = ws.take::<T>(self.n_items * d);
            mul_rows(s, cur.as_deref().unwrap_or(item_x), None, d, &mut next, |_, _| {});
            if let Some(c) = cur.replace(next) {
                ws.give(c);
            }
        }
        mul_selected_acc(s, items, cur.as_deref().unwrap_or(item_x), d, out, |_| {});
        if let Some(c) = cur {
            ws.give(c);
        }
    }

    /// The item table's gradient: `ego_items` (through the user-item graph) plus
    /// `(S^T)^L_mm H_items`, `H` compact with `item_slot` mapping items to its rows.
    fn item_graph_grad<T: Elem>(&self, h: &[T], item_slot: &[u32], ego_items: &[T], d: usize) -> Vec<T> {
        let layers = self.params.mm_layers;
        let add_ego = |r: usize, o: &mut [T]| {
            for (ov, &e) in o.iter_mut().zip(&ego_items[r * d..(r + 1) * d]) {
                *ov += e;
            }
        };
        if layers == 0 {
            let mut g = ego_items.to_vec();
            for (i, &s) in item_slot.iter().enumerate() {
                if s != crate::kernels::sparse::NO_SLOT {
                    axpy_row(&mut g[i * d..(i + 1) * d], 1.0, &h[s as usize * d..(s as usize + 1) * d]);
                }
            }
            return g;
        }
        let (st, ws, n) = (self.mm.transposed(), &*self.ws, self.n_items);
        let buf = |l: usize| if l == layers { vec![T::default(); n * d] } else { ws.take::<T>(n * d) };
        let mut cur = buf(1);
        mul_rows(st, h, Some(item_slot), d, &mut cur, |r, o| {
            if layers == 1 {
                add_ego(r, o)
            }
        });
        for l in 2..=layers {
            let mut next = buf(l);
            mul_rows(st, &cur, None, d, &mut next, |r, o| {
                if l == layers {
                    add_ego(r, o)
                }
            });
            ws.give(std::mem::replace(&mut cur, next));
        }
        cur
    }

    /// Each modality's projection of the batch's distinct `items`.
    fn project<T: WithDType>(&self, items: &[u32]) -> Result<Vec<ProjectedRows<T>>> {
        self.feats.iter().zip(&self.trs).map(|(f, t)| t.project_rows(f.as_tensor(), items)).collect()
    }
}
