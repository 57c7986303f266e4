//! f32 matrix products through the `gemm` crate (candle's own CPU kernel, which picks its SIMD
//! code at run time), behind views whose every element is checked to lie inside its slice: the
//! one place outside [`super::attention`] where the crate hands raw pointers to `gemm`.

/// A read-only strided matrix: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A view with the given strides (checked against the shape when used).
    pub fn new(data: &'a [f32], row_stride: usize, col_stride: usize) -> Self {
        Self { data, row_stride, col_stride }
    }

    /// A row-major matrix `cols` wide.
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        Self::new(data, cols, 1)
    }

    /// The transpose of a row-major matrix `cols` wide (e.g. Wᵀ of a PyTorch `Linear` weight,
    /// `cols` being its input width).
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self::new(data, 1, cols)
    }

    /// Panics unless every element of a `rows` × `cols` matrix lies inside the slice.
    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows == 0 || cols == 0 {
            return;
        }
        let last = (rows - 1)
            .checked_mul(self.row_stride)
            .and_then(|r| (cols - 1).checked_mul(self.col_stride).and_then(|c| r.checked_add(c)));
        assert!(
            last.is_some_and(|l| l < self.data.len()),
            "{what}: {rows} x {cols} with strides ({}, {}) does not fit in {} values",
            self.row_stride,
            self.col_stride,
            self.data.len()
        );
        assert!(isize::try_from(self.row_stride.max(self.col_stride)).is_ok(), "{what}: stride too large");
    }
}

/// How [`matmul_f32`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallel {
    /// On the calling thread.
    No,
    /// Over the whole rayon pool.
    Rayon,
}

/// `dst` (m × n, row-major, `n` wide) = `scale` · lhs (m × k) · rhs (k × n), added to `dst`'s
/// values when `accumulate` (else they are overwritten). Panics if a matrix does not fit in its
/// slice.
#[allow(clippy::too_many_arguments)]
pub fn matmul_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    scale: f32,
    parallel: Parallel,
) {
    assert!(m.checked_mul(n).is_some_and(|len| len <= dst.len()), "dst: {m} x {n} in {} values", dst.len());
    assert!(isize::try_from(n).is_ok(), "dst: width too large");
    lhs.check(m, k, "lhs");
    rhs.check(k, n, "rhs");
    if m == 0 || n == 0 {
        return;
    }
    let parallelism = match parallel {
        Parallel::No => gemm::Parallelism::None,
        Parallel::Rayon => gemm::Parallelism::Rayon(rayon::current_num_threads()),
    };
    // SAFETY: dst is m × n with row stride n and column stride 1 inside `dst` (checked above),
    // exclusively borrowed, so no element is written twice or read through `lhs`/`rhs`; every
    // element of lhs (m × k) and rhs (k × n) lies inside its slice (`MatRef::check`), and all
    // strides fit in isize.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            parallelism,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_the_direct_sums_for_every_view() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 - 2.0).collect(); // n × k, row-major
        let want = |i: usize, j: usize| (0..k).map(|t| a[i * k + t] * w[j * k + t]).sum::<f32>();
        for parallel in [Parallel::No, Parallel::Rayon] {
            let mut y = vec![1f32; m * n];
            matmul_f32(m, n, k, &mut y, true, MatRef::row_major(&a, k), MatRef::transposed(&w, k), 1.0, parallel);
            let mut z = vec![9f32; m * n];
            matmul_f32(m, n, k, &mut z, false, MatRef::row_major(&a, k), MatRef::transposed(&w, k), 2.0, parallel);
            for i in 0..m {
                for j in 0..n {
                    assert_eq!(y[i * n + j], 1.0 + want(i, j));
                    assert_eq!(z[i * n + j], 2.0 * want(i, j));
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "rhs")]
    fn a_view_past_its_slice_is_refused() {
        let (a, w) = (vec![0f32; 6], vec![0f32; 5]);
        let mut y = vec![0f32; 4];
        matmul_f32(2, 2, 3, &mut y, false, MatRef::row_major(&a, 3), MatRef::transposed(&w, 3), 1.0, Parallel::No);
    }
}
