//! Sparse-dense products for graph propagation: a CSR matrix and two candle custom ops with
//! verified backward passes, rayon-parallel over output rows (no index_add / scatter_add).
//!
//! - [`spmm`] / [`SparseOp::apply`]: `Y = A X`, backward `dX = A^T dY`.
//! - [`SparseOp::propagate_mean`]: LightGCN's `mean_{l=0..L} A^l X` in one op (no per-layer
//!   autograd intermediates); backward `dX = mean_{l=0..L} (A^T)^l dY`, by Horner's rule.
//! - Row kernels shared with LightGCN's fused BPR loss ([`super::lightgcn`]): full products with a
//!   per-row epilogue, products restricted to selected rows, and products whose input is a
//!   compact set of non-zero rows, over the row kernels of [`crate::kernels::sparse`] (an AVX2+FMA
//!   f32 one keeps up to 64 output columns in registers). [`Workspace`] recycles full-size
//!   scratch buffers.
//!
//! The custom ops run on CPU storage (f32 and f64). [`SparseOp`] also has a tensor-op path for
//! other devices (CUDA) and for [`OpPath::TensorOps`]: `index_add(rows, index_select(x, cols) *
//! values)` over the matrix's entries, differentiated by candle's autograd (both ops have correct
//! backward passes); it gives the same results as the CSR kernels to float rounding.

use super::OpPath;
use crate::kernels::sparse::RowElem;
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Compressed sparse rows with f32 values. Column indices within a row are sorted.
#[derive(Clone, Debug, PartialEq)]
pub struct Csr {
    pub n_rows: usize,
    pub n_cols: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl Csr {
    /// Builds a CSR from (row, col, value) entries; duplicate (row, col) entries are summed.
    /// Entries outside `n_rows x n_cols` are dropped (callers validate their ids).
    pub fn from_coo(n_rows: usize, n_cols: usize, entries: &[(u32, u32, f32)]) -> Csr {
        let mut counts = vec![0usize; n_rows + 1];
        for &(r, c, _) in entries {
            if (r as usize) < n_rows && (c as usize) < n_cols {
                counts[r as usize + 1] += 1;
            }
        }
        for i in 0..n_rows {
            counts[i + 1] += counts[i];
        }
        let mut fill = counts.clone();
        let mut tmp = vec![(0u32, 0f32); counts[n_rows]];
        for &(r, c, v) in entries {
            if (r as usize) < n_rows && (c as usize) < n_cols {
                tmp[fill[r as usize]] = (c, v);
                fill[r as usize] += 1;
            }
        }
        let mut indptr = Vec::with_capacity(n_rows + 1);
        let mut indices = Vec::with_capacity(tmp.len());
        let mut values = Vec::with_capacity(tmp.len());
        indptr.push(0);
        for r in 0..n_rows {
            let row = &mut tmp[counts[r]..counts[r + 1]];
            row.sort_unstable_by_key(|e| e.0);
            for &(c, v) in row.iter() {
                if indices.len() > *indptr.last().unwrap_or(&0) && indices.last() == Some(&c) {
                    if let Some(last) = values.last_mut() {
                        *last += v;
                    }
                } else {
                    indices.push(c);
                    values.push(v);
                }
            }
            indptr.push(indices.len());
        }
        Csr { n_rows, n_cols, indptr, indices, values }
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// The transpose, in O(nnz), with sorted column indices.
    pub fn transpose(&self) -> Csr {
        let mut counts = vec![0usize; self.n_cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for i in 0..self.n_cols {
            counts[i + 1] += counts[i];
        }
        let mut fill = counts.clone();
        let mut indices = vec![0u32; self.nnz()];
        let mut values = vec![0f32; self.nnz()];
        for r in 0..self.n_rows {
            for k in self.indptr[r]..self.indptr[r + 1] {
                let c = self.indices[k] as usize;
                indices[fill[c]] = r as u32;
                values[fill[c]] = self.values[k];
                fill[c] += 1;
            }
        }
        Csr { n_rows: self.n_cols, n_cols: self.n_rows, indptr: counts, indices, values }
    }

    /// Dense row-major copy (tests and debugging only).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut d = vec![0f32; self.n_rows * self.n_cols];
        for r in 0..self.n_rows {
            for k in self.indptr[r]..self.indptr[r + 1] {
                d[r * self.n_cols + self.indices[k] as usize] += self.values[k];
            }
        }
        d
    }

    /// Structural and value check (row pointers monotone, columns in range).
    pub fn check(&self) -> Result<(), String> {
        if self.indptr.len() != self.n_rows + 1 || self.indptr[0] != 0 {
            return Err("indptr length must be n_rows + 1 and start at 0".into());
        }
        if self.indptr.windows(2).any(|w| w[0] > w[1]) || self.indptr[self.n_rows] != self.indices.len() {
            return Err("indptr must be non-decreasing and end at nnz".into());
        }
        if self.values.len() != self.indices.len() {
            return Err("values and indices differ in length".into());
        }
        if self.indices.iter().any(|&c| c as usize >= self.n_cols) {
            return Err("column index out of range".into());
        }
        Ok(())
    }
}

/// LightGCN's normalised adjacency `D^-1/2 A D^-1/2` of the bipartite graph, nodes ordered
/// users `0..n_users` then items `n_users..n_users+n_items`; duplicate edges count once.
/// Isolated nodes get empty rows.
pub fn normalized_bipartite(n_users: usize, n_items: usize, edges: &[(u32, u32)]) -> Csr {
    let n = n_users + n_items;
    let mut e: Vec<(u32, u32)> =
        edges.iter().copied().filter(|&(u, i)| (u as usize) < n_users && (i as usize) < n_items).collect();
    e.sort_unstable();
    e.dedup();
    let mut deg = vec![0f32; n];
    for &(u, i) in &e {
        deg[u as usize] += 1.0;
        deg[n_users + i as usize] += 1.0;
    }
    let inv: Vec<f32> = deg.iter().map(|&d| if d > 0.0 { 1.0 / d.sqrt() } else { 0.0 }).collect();
    let mut coo = Vec::with_capacity(2 * e.len());
    for &(u, i) in &e {
        let (a, b) = (u as usize, n_users + i as usize);
        let w = inv[a] * inv[b];
        coo.push((a as u32, b as u32, w));
        coo.push((b as u32, a as u32, w));
    }
    Csr::from_coo(n, n, &coo)
}

/// Kernel types (f32, f64).
pub(crate) trait Elem: RowElem {
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// The workspace's buffer pool of this type.
    fn pool(ws: &Workspace) -> &std::sync::Mutex<Vec<Vec<Self>>>;
}

impl Elem for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn pool(ws: &Workspace) -> &std::sync::Mutex<Vec<Vec<Self>>> {
        &ws.f64
    }
}

impl Elem for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn pool(ws: &Workspace) -> &std::sync::Mutex<Vec<Vec<Self>>> {
        &ws.f32
    }
}

/// Reusable full-size scratch buffers, so that a training step does not allocate (and the OS
/// does not zero) fresh pages for every product.
#[derive(Default, Debug)]
pub struct Workspace {
    f32: std::sync::Mutex<Vec<Vec<f32>>>,
    f64: std::sync::Mutex<Vec<Vec<f64>>>,
}

impl Workspace {
    /// A buffer of `len` elements with unspecified contents (callers overwrite it).
    pub(crate) fn take<T: Elem>(&self, len: usize) -> Vec<T> {
        let v = T::pool(self).lock().ok().and_then(|mut p| p.pop());
        match v {
            Some(v) if v.len() == len => v,
            _ => vec![T::default(); len],
        }
    }

    /// Returns a buffer to the pool (at most two are kept per type).
    pub(crate) fn give<T: Elem>(&self, v: Vec<T>) {
        if let Ok(mut p) = T::pool(self).lock() {
            if p.len() < 2 {
                p.push(v);
            }
        }
    }
}

/// `out = A src` over all rows of `A` (parallel), then `post(row, out_row)` on each row while
/// it is hot in cache. `x` is full (`slot` None) or compact (see [`crate::kernels::sparse::RowFn`]).
pub(crate) fn mul_rows<T: Elem>(
    a: &Csr,
    x: &[T],
    slot: Option<&[u32]>,
    d: usize,
    out: &mut [T],
    post: impl Fn(usize, &mut [T]) + Sync,
) {
    let k = T::row_kernel();
    out.par_chunks_mut(d.max(1)).with_min_len(64).enumerate().for_each(|(r, o)| {
        let (s, e) = (a.indptr[r], a.indptr[r + 1]);
        k(&a.indices[s..e], &a.values[s..e], x, slot, d, o, false);
        post(r, o);
    });
}

/// For each `rows[k]`: `out_k += (A x)[rows[k]]`, then `post(out_k)` (parallel).
pub(crate) fn mul_selected_acc<T: Elem>(
    a: &Csr,
    rows: &[u32],
    x: &[T],
    d: usize,
    out: &mut [T],
    post: impl Fn(&mut [T]) + Sync,
) {
    let k = T::row_kernel();
    out.par_chunks_mut(d.max(1)).zip(rows.par_iter()).with_min_len(16).for_each(|(o, &r)| {
        let r = r as usize;
        let (s, e) = (a.indptr[r], a.indptr[r + 1]);
        k(&a.indices[s..e], &a.values[s..e], x, None, d, o, true);
        post(o);
    });
}

/// `out = A x` (`x` row-major `[n_cols, d]`, `out` `[n_rows, d]`), parallel over rows.
fn csr_mul<T: Elem>(a: &Csr, x: &[T], d: usize, out: &mut [T]) {
    mul_rows(a, x, None, d, out, |_, _| {})
}

/// `mean_{l=0..layers} A^l x`, with two scratch buffers.
fn poly_mean<T: Elem>(a: &Csr, x: &[T], d: usize, layers: usize) -> Vec<T> {
    let scale = T::from_f64(1.0 / (layers as f64 + 1.0));
    let mut acc: Vec<T> = x.to_vec();
    let mut cur: Vec<T> = x.to_vec();
    let mut next = vec![T::default(); a.n_rows * d];
    for _ in 0..layers {
        csr_mul(a, &cur, d, &mut next);
        acc.par_iter_mut().zip(next.par_iter()).with_min_len(4096).for_each(|(s, &v)| *s += v);
        std::mem::swap(&mut cur, &mut next);
    }
    acc.par_iter_mut().with_min_len(4096).for_each(|s| *s = *s * scale);
    acc
}

pub(crate) fn slice_of<'a, T>(v: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((s, e)) => Ok(&v[s..e]),
        None => candle_core::bail!("sparse op: input must be contiguous"),
    }
}

/// Runs `f` on the values of the contiguous CPU tensor `t`, without copying them.
pub(crate) fn with_cpu_slice<T: candle_core::WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> R,
) -> candle_core::Result<R> {
    let (st, l) = t.storage_and_layout();
    let candle_core::Storage::Cpu(st) = &*st else {
        candle_core::bail!("expected a tensor on the CPU");
    };
    Ok(f(slice_of(st.as_slice::<T>()?, l)?))
}

fn check_shape(a: &Csr, layout: &Layout, name: &str) -> candle_core::Result<usize> {
    let dims = layout.dims();
    if dims.len() != 2 || dims[0] != a.n_cols {
        candle_core::bail!("{name}: expected x of shape [{}, d], got {:?}", a.n_cols, dims);
    }
    Ok(dims[1])
}

/// A sparse matrix ready for autograd: holds `A` and its precomputed transpose.
/// On the tensor-op path, it also keeps the matrix's entries as tensors on the device last used.
#[derive(Clone, Debug)]
pub struct SparseOp {
    a: Arc<Csr>,
    at: Arc<Csr>,
    path: OpPath,
    entries: Arc<Mutex<Option<Entries>>>,
}

/// `A`'s entries in row-major order as tensors: row and column ids (u32, `[nnz]`) and values
/// (f32, `[nnz, 1]`).
#[derive(Clone, Debug)]
struct Entries {
    rows: Tensor,
    cols: Tensor,
    values: Tensor,
}

impl Entries {
    fn new(a: &Csr, device: &Device) -> candle_core::Result<Self> {
        let nnz = a.indices.len();
        let mut rows = Vec::with_capacity(nnz);
        for r in 0..a.n_rows {
            rows.extend(std::iter::repeat_n(r as u32, a.indptr[r + 1] - a.indptr[r]));
        }
        Ok(Self {
            rows: Tensor::from_vec(rows, nnz, device)?,
            cols: Tensor::from_slice(&a.indices, nnz, device)?,
            values: Tensor::from_slice(&a.values, (nnz, 1), device)?,
        })
    }
}

impl SparseOp {
    /// Precomputes the transpose.
    pub fn new(a: Arc<Csr>) -> Self {
        let at = Arc::new(a.transpose());
        Self::with(a, at)
    }

    /// For a matrix known to be symmetric (e.g. [`normalized_bipartite`]): shares `A` as `A^T`.
    pub fn symmetric(a: Arc<Csr>) -> Self {
        Self::with(a.clone(), a)
    }

    fn with(a: Arc<Csr>, at: Arc<Csr>) -> Self {
        Self { a, at, path: OpPath::Fused, entries: Arc::new(Mutex::new(None)) }
    }

    /// The same matrix on op path `path`.
    pub fn with_path(mut self, path: OpPath) -> Self {
        self.path = path;
        self
    }

    pub fn path(&self) -> OpPath {
        self.path
    }

    pub fn matrix(&self) -> &Arc<Csr> {
        &self.a
    }

    /// `A^T` (the same `Arc` as [`SparseOp::matrix`] for a symmetric matrix).
    pub fn transposed(&self) -> &Arc<Csr> {
        &self.at
    }

    /// `A x`, differentiable in `x`.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.path.fused_on(x.device()) {
            return x.apply_op1(Spmm { a: self.a.clone(), at: Some(self.at.clone()) });
        }
        self.apply_tensor_ops(x, &self.entries_on(x.device())?)
    }

    /// `mean_{l=0..layers} A^l x` (LightGCN propagation with layer averaging), differentiable in `x`.
    pub fn propagate_mean(&self, x: &Tensor, layers: usize) -> candle_core::Result<Tensor> {
        if self.path.fused_on(x.device()) {
            return x.apply_op1(PropagateMean { a: self.a.clone(), at: self.at.clone(), layers });
        }
        if layers > 0 && self.a.n_rows != self.a.n_cols {
            candle_core::bail!("csr-propagate-mean: matrix must be square");
        }
        let e = self.entries_on(x.device())?;
        let (mut sum, mut cur) = (x.clone(), x.clone());
        for _ in 0..layers {
            cur = self.apply_tensor_ops(&cur, &e)?;
            sum = sum.add(&cur)?;
        }
        sum.affine(1.0 / (layers as f64 + 1.0), 0.0)
    }

    /// The entries on `device`: cached for the device last asked for.
    fn entries_on(&self, device: &Device) -> candle_core::Result<Entries> {
        let mut slot =
            self.entries.lock().map_err(|_| candle_core::Error::Msg("sparse entries lock poisoned".into()))?;
        if let Some(e) = slot.as_ref().filter(|e| e.rows.device().same_device(device)) {
            return Ok(e.clone());
        }
        let e = Entries::new(&self.a, device)?;
        *slot = Some(e.clone());
        Ok(e)
    }

    /// `A x` from tensor ops: each entry `(r, c, v)` adds `v * x[c]` to row `r`.
    fn apply_tensor_ops(&self, x: &Tensor, e: &Entries) -> candle_core::Result<Tensor> {
        let (n, d) = x.dims2()?;
        if n != self.a.n_cols {
            candle_core::bail!("csr-spmm: expected x of shape [{}, d], got {:?}", self.a.n_cols, x.dims());
        }
        let out = Tensor::zeros((self.a.n_rows, d), x.dtype(), x.device())?;
        if self.a.indices.is_empty() {
            return Ok(out); // no entries: zero, and no gradient (the optimiser reads zeros)
        }
        let msg = x.index_select(&e.cols, 0)?.broadcast_mul(&e.values.to_dtype(x.dtype())?)?;
        out.index_add(&e.rows, &msg, 0)
    }
}

/// `A x` as a candle op. The transpose for the backward pass is computed there (once per
/// backward call); use [`SparseOp`] to precompute it when the matrix is reused.
pub fn spmm(a: &Arc<Csr>, x: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op1(Spmm { a: a.clone(), at: None })
}

struct Spmm {
    a: Arc<Csr>,
    at: Option<Arc<Csr>>,
}

impl CustomOp1 for Spmm {
    fn name(&self) -> &'static str {
        "csr-spmm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = check_shape(&self.a, l, self.name())?;
        let shape = Shape::from((self.a.n_rows, d));
        match s {
            CpuStorage::F32(v) => {
                let mut out = vec![0f32; self.a.n_rows * d];
                csr_mul(&self.a, slice_of(v, l)?, d, &mut out);
                Ok((CpuStorage::F32(out), shape))
            }
            CpuStorage::F64(v) => {
                let mut out = vec![0f64; self.a.n_rows * d];
                csr_mul(&self.a, slice_of(v, l)?, d, &mut out);
                Ok((CpuStorage::F64(out), shape))
            }
            _ => candle_core::bail!("csr-spmm: only f32 and f64 are supported"),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let at = match &self.at {
            Some(at) => at.clone(),
            None => Arc::new(self.a.transpose()),
        };
        let g = grad_res.contiguous()?.apply_op1(Spmm { a: at, at: Some(self.a.clone()) })?;
        Ok(Some(g))
    }
}

struct PropagateMean {
    a: Arc<Csr>,
    at: Arc<Csr>,
    layers: usize,
}

impl CustomOp1 for PropagateMean {
    fn name(&self) -> &'static str {
        "csr-propagate-mean"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = check_shape(&self.a, l, self.name())?;
        if self.a.n_rows != self.a.n_cols {
            candle_core::bail!("csr-propagate-mean: matrix must be square");
        }
        let shape = Shape::from((self.a.n_rows, d));
        match s {
            CpuStorage::F32(v) => Ok((CpuStorage::F32(poly_mean(&self.a, slice_of(v, l)?, d, self.layers)), shape)),
            CpuStorage::F64(v) => Ok((CpuStorage::F64(poly_mean(&self.a, slice_of(v, l)?, d, self.layers)), shape)),
            _ => candle_core::bail!("csr-propagate-mean: only f32 and f64 are supported"),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // d/dx mean_l A^l x  applied to g  =  mean_l (A^T)^l g: the same op with A^T.
        let op = PropagateMean { a: self.at.clone(), at: self.a.clone(), layers: self.layers };
        Ok(Some(grad_res.contiguous()?.apply_op1(op)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coo_sums_duplicates_and_transposes() {
        let a = Csr::from_coo(2, 3, &[(0, 2, 1.0), (0, 0, 2.0), (0, 2, 0.5), (1, 1, 3.0)]);
        a.check().unwrap();
        assert_eq!(a.indptr, vec![0, 2, 3]);
        assert_eq!(a.indices, vec![0, 2, 1]);
        assert_eq!(a.values, vec![2.0, 1.5, 3.0]);
        let t = a.transpose();
        t.check().unwrap();
        assert_eq!((t.n_rows, t.n_cols), (3, 2));
        let (d, dt) = (a.to_dense(), t.to_dense());
        for r in 0..2 {
            for c in 0..3 {
                assert_eq!(d[r * 3 + c], dt[c * 2 + r]);
            }
        }
    }

    #[test]
    fn bipartite_normalisation() {
        // users 0,1; items 0,1; edges u0-i0, u0-i1, u1-i1 (+ a duplicate)
        let a = normalized_bipartite(2, 2, &[(0, 0), (0, 1), (1, 1), (0, 1)]);
        a.check().unwrap();
        let d = a.to_dense();
        let w = |r: usize, c: usize| d[r * 4 + c];
        // deg: u0 2, u1 1, i0 1, i1 2
        assert!((w(0, 2) - 1.0 / (2f32 * 1.0).sqrt()).abs() < 1e-6);
        assert!((w(0, 3) - 1.0 / (2f32 * 2.0).sqrt()).abs() < 1e-6);
        assert!((w(1, 3) - 1.0 / (1f32 * 2.0).sqrt()).abs() < 1e-6);
        assert_eq!(w(1, 2), 0.0);
        assert_eq!(a, a.transpose());
    }
}
