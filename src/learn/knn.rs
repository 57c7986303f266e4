//! FREEDOM's frozen item-item graph: per modality, the cosine k-nearest-neighbour graph of the raw
//! item features, binary, normalised D^-1/2 S D^-1/2, then a weighted sum over modalities
//! (MMRec: S = 0.1 S_image + 0.9 S_text).
//!
//! Built in row blocks: each block of normalised rows is multiplied by all normalised rows
//! (one [block, n] similarity slab at a time, never n x n) and each row keeps its top k in one
//! pass, rows in parallel with rayon. Items added later extend the lists
//! ([`extend_neighbours`]: only the new rows' similarities are computed).
//!
//! As in MMRec's `get_knn_adj_mat`, a row's k neighbours include the item itself (its cosine with
//! itself is 1) and the graph is directed (row i holds i's k neighbours), so with D the row sums
//! every value is 1/k. `symmetrize = true` instead uses S = max(S, S^T) with D its degrees.

use super::npy::Modality;
use super::sparse::Csr;
use super::{LearnError, Result};
use rayon::prelude::*;

/// Options of the item-item graph.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnnParams {
    /// Neighbours per item (self included, as in MMRec).
    pub k: usize,
    /// Make the binary kNN graph symmetric before normalising (MMRec does not).
    pub symmetrize: bool,
    /// Rows per similarity block (memory is block x n floats).
    pub block_rows: usize,
}

impl Default for KnnParams {
    fn default() -> Self {
        Self { k: 10, symmetrize: false, block_rows: 512 }
    }
}

/// L2-normalises each row of a row-major [n, d] matrix (all-zero rows stay zero).
fn normalize_rows(n: usize, d: usize, feats: &[f32]) -> Vec<f32> {
    let mut out = feats.to_vec();
    out.par_chunks_mut(d.max(1)).take(n).for_each(|row| {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 && norm.is_finite() {
            row.iter_mut().for_each(|x| *x /= norm);
        } else {
            row.iter_mut().for_each(|x| *x = 0.0);
        }
    });
    out
}

/// For each of the n rows of a row-major [n, d] feature matrix, the indices of its `k` most
/// cosine-similar rows (itself included), sorted by decreasing similarity, ties by lower index.
pub fn knn_indices(n: usize, d: usize, feats: &[f32], k: usize, block_rows: usize) -> Result<Vec<Vec<u32>>> {
    if feats.len() != n * d {
        return Err(LearnError::Invalid(format!("knn: {} values for a {n} x {d} matrix", feats.len())));
    }
    if feats.iter().any(|x| !x.is_finite()) {
        return Err(LearnError::Invalid("knn: features contain NaN or infinity".into()));
    }
    if n == 0 {
        return Ok(vec![]);
    }
    let k = k.min(n);
    let normed = normalize_rows(n, d, feats);
    let all = candle_core::Tensor::from_slice(&normed, (n, d), &candle_core::Device::Cpu)?;
    let all_t = all.t()?.contiguous()?;
    let block = block_rows.max(1);
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(block) {
        let rows = block.min(n - start);
        let sims = all.narrow(0, start, rows)?.matmul(&all_t)?; // [rows, n]
        let part: Vec<Vec<u32>> =
            super::sparse::with_cpu_slice(&sims, |s: &[f32]| s.par_chunks(n).map(|row| top_k(row, k)).collect())?;
        out.extend(part);
    }
    Ok(out)
}

/// Indices of the k largest values of `row`, by decreasing value then increasing index, in one
/// pass keeping the best k so far (sorted) and the value a newcomer must beat.
fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    use std::cmp::Ordering::Greater;
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (j, &s) in row.iter().enumerate() {
        if best.len() == k && best.last().is_none_or(|w| s.total_cmp(&w.0) != Greater) {
            continue;
        }
        // after every kept value >= s (an equal value came first: lower index wins)
        let at = best.partition_point(|b| b.0.total_cmp(&s) != std::cmp::Ordering::Less);
        best.insert(at, (s, j as u32));
        best.truncate(k);
    }
    best.into_iter().map(|(_, j)| j).collect()
}

/// The binary kNN graph of one modality, normalised D^-1/2 S D^-1/2, as an n x n CSR.
pub fn knn_graph(n: usize, d: usize, feats: &[f32], p: &KnnParams) -> Result<Csr> {
    Ok(neighbour_graph(n, &knn_indices(n, d, feats, p.k, p.block_rows)?, p.symmetrize))
}

/// The normalised graph of per-row neighbour lists (what [`knn_indices`] returns).
pub fn neighbour_graph(n: usize, nbrs: &[Vec<u32>], symmetrize: bool) -> Csr {
    let mut rows: Vec<Vec<u32>> = nbrs.to_vec();
    if symmetrize {
        for (i, r) in nbrs.iter().enumerate() {
            for &j in r {
                rows[j as usize].push(i as u32);
            }
        }
    }
    for r in rows.iter_mut() {
        r.sort_unstable();
        r.dedup();
    }
    let deg: Vec<f32> = rows.iter().map(|r| r.len() as f32 + 1e-7).collect();
    let inv: Vec<f32> = deg.iter().map(|x| x.powf(-0.5)).collect();
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0usize);
    let mut indices = Vec::new();
    let mut values = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        for &j in r {
            indices.push(j);
            values.push(inv[i] * inv[j as usize]);
        }
        indptr.push(indices.len());
    }
    Csr { n_rows: n, n_cols: n, indptr, indices, values }
}

/// Adds `m` items to the neighbour lists of `n` items without recomputing the n x n similarities:
/// the new rows get their k nearest among all n + m items (themselves included), and an old row
/// takes a new item when it beats the row's current k-th neighbour. `old` and `new` are row-major
/// [n, d] and [m, d] raw features; `nbrs` (n lists, as [`knn_indices`] returned them: decreasing
/// similarity, ties by lower index) grows to n + m lists. The result is what [`knn_indices`] gives
/// on all n + m rows, up to the rounding of near-equal similarities. Cost: the [m, n + m]
/// similarities, computed in blocks of at most 2^24 values, plus k dot products per old row that
/// takes a new neighbour.
pub fn extend_neighbours(d: usize, old: &[f32], new: &[f32], nbrs: &mut Vec<Vec<u32>>, k: usize) -> Result<()> {
    extend_in_slabs(d, old, new, nbrs, k, 1 << 24)
}

/// [`extend_neighbours`] with new rows in blocks of at most `slab` similarities.
fn extend_in_slabs(d: usize, old: &[f32], new: &[f32], nbrs: &mut Vec<Vec<u32>>, k: usize, slab: usize) -> Result<()> {
    let (n, m) = (nbrs.len(), new.len() / d.max(1));
    if old.len() != n * d || new.len() != m * d {
        return Err(LearnError::Invalid(format!(
            "extend_neighbours: {} old and {} new values for {n} + {m} rows of {d}",
            old.len(),
            new.len()
        )));
    }
    if new.iter().any(|x| !x.is_finite()) {
        return Err(LearnError::Invalid("knn: features contain NaN or infinity".into()));
    }
    if m == 0 {
        return Ok(());
    }
    let all = normalize_rows(n + m, d, &[old, new].concat());
    let w = n + m;
    let all_t = candle_core::Tensor::from_slice(&all, (w, d), &candle_core::Device::Cpu)?.t()?.contiguous()?;
    let row = |i: usize| &all[i * d..(i + 1) * d];
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    // new rows in blocks (a catalogue import adds many at once)
    let block = (slab / w).max(1);
    let mut fresh_lists = Vec::with_capacity(m);
    for start in (0..m).step_by(block) {
        let b = block.min(m - start);
        let rows = candle_core::Tensor::from_slice(
            &all[(n + start) * d..(n + start + b) * d],
            (b, d),
            &candle_core::Device::Cpu,
        )?;
        let sims: Vec<f32> = rows.matmul(&all_t)?.flatten_all()?.to_vec1()?; // [b, n + m]
        nbrs.par_iter_mut().enumerate().for_each(|(i, list)| {
            let kth = match list.last() {
                Some(&j) if list.len() >= k => dot(row(i), row(j as usize)),
                _ => f32::NEG_INFINITY,
            };
            // a new item has a higher index than every item in the list: it must beat the k-th strictly
            let wins: Vec<(f32, u32)> =
                (0..b).map(|r| (sims[r * w + i], (n + start + r) as u32)).filter(|&(s, _)| s > kth).collect();
            if wins.is_empty() {
                return;
            }
            let mut merged: Vec<(f32, u32)> = list.iter().map(|&j| (dot(row(i), row(j as usize)), j)).collect();
            merged.extend(wins);
            merged.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            merged.truncate(k);
            *list = merged.into_iter().map(|(_, j)| j).collect();
        });
        fresh_lists.extend(sims.par_chunks(w).map(|r| top_k(r, k.min(w))).collect::<Vec<_>>());
    }
    nbrs.extend(fresh_lists);
    Ok(())
}

/// Weighted sum of same-shape CSR matrices (entries with the same (row, col) are added).
pub fn weighted_sum(mats: &[(f32, &Csr)]) -> Result<Csr> {
    let Some((_, first)) = mats.first() else {
        return Err(LearnError::Invalid("weighted_sum of no matrices".into()));
    };
    let (nr, nc) = (first.n_rows, first.n_cols);
    if mats.iter().any(|(_, m)| m.n_rows != nr || m.n_cols != nc) {
        return Err(LearnError::Invalid("weighted_sum: matrices differ in shape".into()));
    }
    let mut coo = Vec::with_capacity(mats.iter().map(|(_, m)| m.values.len()).sum());
    for (w, m) in mats {
        for r in 0..nr {
            for k in m.indptr[r]..m.indptr[r + 1] {
                coo.push((r as u32, m.indices[k], w * m.values[k]));
            }
        }
    }
    Ok(Csr::from_coo(nr, nc, &coo))
}

/// FREEDOM's multimodal item graph: per modality kNN graphs combined with `weights`
/// (one per modality; MMRec uses 0.1 for the image and 0.9 for the text modality).
/// `modalities` are row-major [n_items, d_m] matrices given as (d_m, data).
pub fn item_graph(n_items: usize, modalities: &[(usize, &[f32])], weights: &[f32], p: &KnnParams) -> Result<Csr> {
    Ok(item_graph_with_neighbours(n_items, modalities, weights, p)?.0)
}

/// [`item_graph`] and, per modality, the neighbour lists it was built from (for
/// [`extend_neighbours`] when items are added after training).
pub fn item_graph_with_neighbours(
    n_items: usize,
    modalities: &[(usize, &[f32])],
    weights: &[f32],
    p: &KnnParams,
) -> Result<(Csr, Vec<Vec<Vec<u32>>>)> {
    if modalities.is_empty() {
        return Err(LearnError::Invalid("item graph needs at least one modality".into()));
    }
    if weights.len() != modalities.len() {
        return Err(LearnError::Invalid(format!(
            "{} modality weights for {} modalities",
            weights.len(),
            modalities.len()
        )));
    }
    let t0 = std::time::Instant::now();
    let nbrs = modalities
        .iter()
        .map(|(d, data)| knn_indices(n_items, *d, data, p.k, p.block_rows))
        .collect::<Result<Vec<_>>>()?;
    let graphs: Vec<Csr> = nbrs.iter().map(|l| neighbour_graph(n_items, l, p.symmetrize)).collect();
    let pairs: Vec<(f32, &Csr)> = weights.iter().copied().zip(graphs.iter()).collect();
    let g = weighted_sum(&pairs)?;
    tracing::info!(
        items = n_items,
        modalities = modalities.len(),
        k = p.k,
        nnz = g.indices.len(),
        ms = t0.elapsed().as_millis() as u64,
        "built item-item kNN graph"
    );
    Ok((g, nbrs))
}

/// What a model's item representations owe to its frozen item-item kNN graph: item i's embedding
/// is `base_i + h_i` with `h = S^layers x item_id` and `S = sum_m weights[m] S_m`, `S_m` the
/// normalised graph of `neighbours[m]` (FREEDOM, directed lists). Serving extends the lists to
/// items added after training ([`ItemGraphParts::extend`]: an item with no interactions has a zero
/// `base` and a zero ID row) and recomputes `h` ([`ItemGraphParts::propagate`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemGraphParts {
    pub k: usize,
    pub layers: usize,
    pub weights: Vec<f32>,
    /// Per modality, per item: its neighbours, by decreasing similarity (itself included).
    pub neighbours: Vec<Vec<Vec<u32>>>,
    /// `[n_items * dim]`, the ID embeddings the graph propagates.
    pub item_id: Vec<f32>,
}

impl ItemGraphParts {
    pub fn n_items(&self) -> usize {
        self.neighbours.first().map_or(0, Vec::len)
    }

    /// Checks that the parts fit together (lists per modality, indices in range, `dim` columns).
    pub fn check(&self, dim: usize) -> Result<()> {
        let n = self.n_items();
        let bad = |m: String| Err(LearnError::Invalid(format!("item graph: {m}")));
        if self.neighbours.is_empty() || self.weights.len() != self.neighbours.len() {
            return bad(format!("{} weights for {} modalities", self.weights.len(), self.neighbours.len()));
        }
        if self.neighbours.iter().any(|l| l.len() != n) {
            return bad("modalities list different item counts".into());
        }
        if self.neighbours.iter().flatten().flatten().any(|&j| j as usize >= n) {
            return bad("a neighbour index is out of range".into());
        }
        if self.item_id.len() != n * dim {
            return bad(format!("{} ID values for {n} items of {dim}", self.item_id.len()));
        }
        Ok(())
    }

    /// `h = S^layers x item_id`, row-major `[n_items * dim]`, S as [`neighbour_graph`] and
    /// [`weighted_sum`] build it.
    pub fn propagate(&self, dim: usize) -> Vec<f32> {
        let mut h = self.item_id.clone();
        for _ in 0..self.layers {
            h = self.mix(&h, dim, 0..self.n_items());
        }
        h
    }

    /// `S[rows, :] x` for a row-major `[n_items * dim]` matrix `x`.
    pub fn mix(&self, x: &[f32], dim: usize, rows: std::ops::Range<usize>) -> Vec<f32> {
        let inv: Vec<Vec<f32>> =
            self.neighbours.iter().map(|l| l.iter().map(|r| (r.len() as f32 + 1e-7).powf(-0.5)).collect()).collect();
        let mut out = vec![0f32; rows.len() * dim];
        out.par_chunks_mut(dim.max(1)).zip(rows).for_each(|(out, i)| {
            for ((lists, inv), &w) in self.neighbours.iter().zip(&inv).zip(&self.weights) {
                for &j in &lists[i] {
                    let c = w * inv[i] * inv[j as usize];
                    let src = &x[j as usize * dim..(j as usize + 1) * dim];
                    out.iter_mut().zip(src).for_each(|(o, v)| *o += c * v);
                }
            }
        });
        out
    }

    /// Adds the items of `new`: `old` and `new` hold, per modality of the lists, the raw
    /// features of the listed items and of the new ones; the new ID rows are zero.
    pub fn extend(&mut self, old: &[Modality], new: &[Modality], dim: usize) -> Result<()> {
        if old.len() != self.neighbours.len() || new.len() != old.len() {
            return Err(LearnError::Invalid("item graph: feature matrices do not match its modalities".into()));
        }
        for ((lists, o), x) in self.neighbours.iter_mut().zip(old).zip(new) {
            if o.dim != x.dim {
                return Err(LearnError::Invalid(format!("item graph: {} and {} feature dims", o.dim, x.dim)));
            }
            extend_neighbours(o.dim, &o.data, &x.data, lists, self.k)?;
        }
        let m = new.first().map_or(0, |x| x.n_items);
        self.item_id.extend(std::iter::repeat_n(0.0, m * dim));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.9, -1.0], 3), vec![1, 3, 2]);
        assert_eq!(top_k(&[0.3, 0.2], 5), vec![0, 1]);
        assert_eq!(top_k(&[0.5, 0.5, 0.5, 0.7], 2), vec![3, 0]);
        assert!(top_k(&[0.5], 0).is_empty());
    }

    /// The one-pass selection gives what a full sort by (value desc, index asc) gives.
    #[test]
    fn top_k_matches_a_full_sort() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for n in [1usize, 7, 100, 1000] {
            // few distinct values: many ties
            let row: Vec<f32> = (0..n).map(|_| rng.random_range(0..20) as f32 / 10.0 - 1.0).collect();
            let mut sorted: Vec<(f32, u32)> = row.iter().enumerate().map(|(j, &s)| (s, j as u32)).collect();
            sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for k in [1usize, 3, 10, n + 2] {
                let want: Vec<u32> = sorted.iter().take(k).map(|e| e.1).collect();
                assert_eq!(top_k(&row, k), want, "n {n} k {k}");
            }
        }
    }

    /// Adding items to the lists of a smaller set gives the lists of the whole set.
    #[test]
    fn extending_neighbours_matches_a_rebuild() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (d, k) = (6usize, 4usize);
        for (n, m) in [(40usize, 1usize), (40, 15), (3, 2), (1, 1), (25, 0)] {
            let x: Vec<f32> = (0..(n + m) * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let whole = knn_indices(n + m, d, &x, k, 7).unwrap();
            for slab in [1usize << 24, 3 * (n + m), 1] {
                let mut grown = knn_indices(n, d, &x[..n * d], k, 7).unwrap();
                extend_in_slabs(d, &x[..n * d], &x[n * d..], &mut grown, k, slab).unwrap();
                assert_eq!(grown, whole, "n {n} m {m} slab {slab}");
            }
        }
        let mut l = vec![vec![0u32]];
        assert!(extend_neighbours(2, &[1.0, 0.0], &[f32::NAN, 1.0], &mut l, 1).is_err());
        assert!(extend_neighbours(2, &[1.0], &[0.0, 1.0], &mut l, 1).is_err());
    }

    /// `propagate` is the product with the CSR the training graph is built as.
    #[test]
    fn propagate_matches_the_sparse_graph() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let (n, dim) = (30usize, 3usize);
        let x1: Vec<f32> = (0..n * 4).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let x2: Vec<f32> = (0..n * 5).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let p = KnnParams { k: 4, ..Default::default() };
        let (g, neighbours) = item_graph_with_neighbours(n, &[(4, &x1), (5, &x2)], &[0.3, 0.7], &p).unwrap();
        let item_id: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let parts = ItemGraphParts { k: 4, layers: 2, weights: vec![0.3, 0.7], neighbours, item_id };
        parts.check(dim).unwrap();
        let mut want = parts.item_id.clone();
        for _ in 0..2 {
            let mut next = vec![0f32; n * dim];
            for r in 0..n {
                for e in g.indptr[r]..g.indptr[r + 1] {
                    for c in 0..dim {
                        next[r * dim + c] += g.values[e] * want[g.indices[e] as usize * dim + c];
                    }
                }
            }
            want = next;
        }
        for (a, b) in parts.propagate(dim).iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let mut bad = parts.clone();
        bad.item_id.pop();
        assert!(bad.check(dim).is_err());
    }

    #[test]
    fn rejects_bad_features() {
        assert!(knn_indices(2, 2, &[1.0, 0.0, f32::NAN, 1.0], 1, 4).is_err());
        assert!(knn_indices(2, 2, &[1.0, 0.0, 1.0], 1, 4).is_err());
        assert!(item_graph(2, &[], &[], &KnnParams::default()).is_err());
    }
}
