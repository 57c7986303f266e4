//! VBPR's fused batch loss on the CPU: the loss and the gradients of the user and item tables
//! and of the projection in one pass, without candle's autograd. The projection runs once over
//! the batch's distinct items ([`super::Linear::project_rows`]) instead of once per positive and per
//! negative row, and the tables' gradients are written only at the batch's rows.
//!
//! With `z_k = <u_k, i+_k> - <u_k, i-_k>`, `c_k = -1 / (B (1 + e^z_k))` and the EmbLoss norms
//! `n_U, n_+, n_-` of the batch's user, positive and negative rows:
//! `du_k += c_k (i+_k - i-_k) + reg u_k / (B n_U)`, `di+_k += c_k u_k + reg i+_k / (B n_+)`,
//! `di-_k += -c_k u_k + reg i-_k / (B n_-)`; an item row's first `d` columns are its id
//! embedding's gradient, the last `d` the projection's (`dW = G^T X`; `db` sums only the EmbLoss
//! terms, the bias cancelling in `i+ - i-`).

use super::Vbpr;
use crate::learn::lightgcn::{axpy_row, bpr_coefs, bpr_mean, dot, BatchRows};
use crate::learn::model::{Batch, LossGrads};
use crate::learn::sparse::{with_cpu_slice, Elem};
use crate::learn::{LearnError, Result};
use candle_core::{Device, Tensor, WithDType};
use rayon::prelude::*;

impl Vbpr {
    /// The loss and the gradients of `named_vars` (user, item, proj.weight, proj.bias) for
    /// parameters of type `T` on the CPU.
    pub(super) fn fused_loss<T: Elem + WithDType>(&self, b: &Batch) -> Result<LossGrads> {
        let (nu, du) = self.user.dims2()?;
        let (ni, d) = self.item.dims2()?;
        if du != 2 * d {
            return Err(LearnError::Invalid(format!("VBPR user width {du} is not twice the item width {d}")));
        }
        // the batch's rows (ids checked), its distinct items ascending, item -> row of `uniq`
        let rows = BatchRows::of_batch(b, nu, ni)?;
        let (bsz, us, off) = (rows.batch(), rows.user_slots, nu as u32);
        let users = &rows.idx[..bsz];
        let pos: Vec<u32> = rows.idx[bsz..2 * bsz].iter().map(|&r| r - off).collect();
        let neg: Vec<u32> = rows.idx[2 * bsz..].iter().map(|&r| r - off).collect();
        let items: Vec<u32> = rows.uniq[us..].iter().map(|&r| r - off).collect();
        let slot = &rows.slot[nu..];
        let proj = self.proj.project_rows::<T>(&self.feats, &items)?;
        let p_row = |i: u32| {
            let s = slot[i as usize] as usize - us;
            &proj.rows[s * d..(s + 1) * d]
        };
        let reg = self.reg;
        let (loss, gu, gi, gp, rc) = with_cpu_slice(self.user.as_tensor(), |ut: &[T]| {
            with_cpu_slice(self.item.as_tensor(), |it: &[T]| {
                let u_row = |u: u32| &ut[u as usize * du..(u as usize + 1) * du];
                let id_row = |i: u32| &it[i as usize * d..(i as usize + 1) * d];
                // score = <u[..d], id(i)> + <u[d..], proj(i)>
                let score = |u: &[T], i: u32| dot(&u[..d], id_row(i)) + dot(&u[d..], p_row(i));
                let diffs: Vec<f64> = (0..bsz)
                    .into_par_iter()
                    .with_min_len(256)
                    .map(|k| {
                        let u = u_row(users[k]);
                        score(u, pos[k]) - score(u, neg[k])
                    })
                    .collect();
                let sq_item = |i: u32| dot(id_row(i), id_row(i)) + dot(p_row(i), p_row(i));
                let norms = [
                    users.par_iter().map(|&u| dot(u_row(u), u_row(u))).sum::<f64>().sqrt(),
                    pos.par_iter().map(|&i| sq_item(i)).sum::<f64>().sqrt(),
                    neg.par_iter().map(|&i| sq_item(i)).sum::<f64>().sqrt(),
                ];
                let bpr = bpr_mean(&diffs);
                let loss = if reg == 0.0 { bpr } else { bpr + reg * norms.iter().sum::<f64>() / bsz as f64 };

                let c = bpr_coefs(&diffs, 1.0);
                let rc = norms.map(|n| if reg != 0.0 && n > 0.0 { reg / (bsz as f64 * n) } else { 0.0 });
                let mut gu = vec![T::default(); nu * du];
                let mut gi = vec![T::default(); ni * d];
                let mut gp = vec![T::default(); items.len() * d];
                rayon::join(
                    || {
                        for k in 0..bsz {
                            let u = users[k] as usize;
                            let o = &mut gu[u * du..(u + 1) * du];
                            let (p, n) = (pos[k], neg[k]);
                            axpy_row(&mut o[..d], c[k], id_row(p));
                            axpy_row(&mut o[..d], -c[k], id_row(n));
                            axpy_row(&mut o[d..], c[k], p_row(p));
                            axpy_row(&mut o[d..], -c[k], p_row(n));
                            axpy_row(o, rc[0], &ut[u * du..(u + 1) * du]);
                        }
                    },
                    || {
                        for k in 0..bsz {
                            let u = u_row(users[k]);
                            for (i, ck, r) in [(pos[k], c[k], rc[1]), (neg[k], -c[k], rc[2])] {
                                let s = slot[i as usize] as usize - us;
                                let gid = &mut gi[i as usize * d..(i as usize + 1) * d];
                                axpy_row(gid, ck, &u[..d]);
                                axpy_row(gid, r, id_row(i));
                                let g = &mut gp[s * d..(s + 1) * d];
                                axpy_row(g, ck, &u[d..]);
                                axpy_row(g, r, p_row(i));
                            }
                        }
                    },
                );
                Ok::<_, LearnError>((loss, gu, gi, gp, rc))
            })
        })???;
        // the bias: only the EmbLoss term (its BPR terms cancel in i+ - i-; summing them would
        // leave rounding noise)
        let mut db = vec![0f64; d];
        for (ids, r) in [(&pos, rc[1]), (&neg, rc[2])] {
            if r != 0.0 {
                for &i in ids.iter() {
                    db.iter_mut().zip(p_row(i)).for_each(|(o, &v)| *o += r * Elem::to_f64(v));
                }
            }
        }
        let db = Tensor::from_vec(db, d, &Device::Cpu)?.to_dtype(self.proj.bias.dtype())?;
        let dw = proj.weight_grad(&proj.output_grad(gp)?)?;
        let table = |v: Vec<T>, shape: (usize, usize)| Tensor::from_vec(v, shape, &Device::Cpu);
        let loss = Tensor::from_vec(vec![<T as WithDType>::from_f64(loss)], (), &Device::Cpu)?;
        Ok(LossGrads { loss, grads: Some(vec![table(gu, (nu, du))?, table(gi, (ni, d))?, dw, db]) })
    }
}
