//! Row kernels of the sparse-dense products (`learn::sparse`, LightGCN's fused loss): one
//! output row `o (+)= sum_k vals[k] * src(cols[k])` at a time, an AVX2+FMA f32 kernel (chosen
//! through [`super::isa`]) keeping up to 64 output columns in registers, and the portable
//! [`row_generic`] for everything else.

/// Marks a column without a compact source row (see [`RowFn`]).
pub const NO_SLOT: u32 = u32::MAX;

/// One output row of a sparse-dense product: `o (+)= sum_k vals[k] * src(cols[k])`, where
/// `src(c)` is row `c` of `x` (`slot` = None) or row `slot[c]` of the compact `x`, columns
/// with `slot[c] == NO_SLOT` being zero rows. `accumulate` adds to `o` instead of overwriting.
pub type RowFn<T> = fn(&[u32], &[f32], &[T], Option<&[u32]>, usize, &mut [T], bool);

/// Element types of the row kernels (f32, f64).
pub trait RowElem:
    Copy + Default + Send + Sync + std::ops::AddAssign + std::ops::Mul<Output = Self> + From<f32> + 'static
{
    /// The row kernel for this CPU (picked once per product).
    fn row_kernel() -> RowFn<Self> {
        row_generic::<Self>
    }
}

impl RowElem for f64 {}

impl RowElem for f32 {
    fn row_kernel() -> RowFn<f32> {
        #[cfg(target_arch = "x86_64")]
        if super::isa().avx2_fma() {
            return row_f32_avx2_checked;
        }
        row_generic::<f32>
    }
}

/// Source row of column `c`, or None for a zero row.
#[inline(always)]
fn src_row(c: u32, slot: Option<&[u32]>) -> Option<usize> {
    match slot {
        None => Some(c as usize),
        Some(s) => match s[c as usize] {
            NO_SLOT => None,
            p => Some(p as usize),
        },
    }
}

/// The portable row kernel (any [`RowElem`]; the twin of the AVX2+FMA f32 one).
pub fn row_generic<T: RowElem>(
    cols: &[u32],
    vals: &[f32],
    x: &[T],
    slot: Option<&[u32]>,
    d: usize,
    o: &mut [T],
    acc: bool,
) {
    if !acc {
        o.iter_mut().for_each(|v| *v = T::default());
    }
    for (&c, &w) in cols.iter().zip(vals) {
        let Some(src) = src_row(c, slot) else { continue };
        let w = T::from(w);
        for (ov, &xv) in o.iter_mut().zip(&x[src * d..(src + 1) * d]) {
            *ov += w * xv;
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn row_f32_avx2_checked(
    cols: &[u32],
    vals: &[f32],
    x: &[f32],
    slot: Option<&[u32]>,
    d: usize,
    o: &mut [f32],
    acc: bool,
) {
    if !d.is_multiple_of(8) || o.len() != d {
        return row_generic(cols, vals, x, slot, d, o, acc);
    }
    // SAFETY: only returned by `<f32 as RowElem>::row_kernel` when the CPU has AVX2 and FMA
    // (`super::isa`); `d % 8 == 0` and `o.len() == d` (checked above), and every load and store
    // goes through bounds-checked slices of 8 values.
    unsafe { row_f32_avx2(cols, vals, x, slot, d, o, acc) }
}

/// AVX2 + FMA row kernel for `d % 8 == 0`: up to 64 columns of the output row stay in eight
/// registers while the row's non-zeros stream by (one load + one FMA per 8 floats).
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_f32_avx2(
    cols: &[u32],
    vals: &[f32],
    x: &[f32],
    slot: Option<&[u32]>,
    d: usize,
    o: &mut [f32],
    acc: bool,
) {
    use std::arch::x86_64::*;
    let mut j = 0;
    while j < d {
        let w8 = ((d - j) / 8).min(8);
        let mut r = [_mm256_setzero_ps(); 8];
        let out = &mut o[j..j + 8 * w8];
        if acc {
            for (t, rt) in r.iter_mut().enumerate().take(w8) {
                *rt = _mm256_loadu_ps(out[8 * t..8 * t + 8].as_ptr());
            }
        }
        for (&c, &w) in cols.iter().zip(vals) {
            let Some(src) = src_row(c, slot) else { continue };
            let xr = &x[src * d + j..src * d + j + 8 * w8];
            let wv = _mm256_set1_ps(w);
            if w8 == 8 {
                for (t, rt) in r.iter_mut().enumerate() {
                    *rt = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr[8 * t..8 * t + 8].as_ptr()), *rt);
                }
            } else {
                for (t, rt) in r.iter_mut().enumerate().take(w8) {
                    *rt = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr[8 * t..8 * t + 8].as_ptr()), *rt);
                }
            }
        }
        for (t, rt) in r.iter().enumerate().take(w8) {
            _mm256_storeu_ps(out[8 * t..8 * t + 8].as_mut_ptr(), *rt);
        }
        j += 8 * w8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 row kernel of this CPU (AVX2 where available) against the generic f64 one, for
    /// widths with and without a 64-column block and a tail, full and compact inputs, overwrite
    /// and accumulate.
    #[test]
    fn f32_row_kernel_matches_generic() {
        let cols: Vec<u32> = vec![0, 3, 4, 7, 9];
        let vals: Vec<f32> = vec![0.5, -1.25, 2.0, 0.75, -0.3];
        let slot: Vec<u32> = (0..10).map(|c| if c % 3 == 0 { NO_SLOT } else { (9 - c) as u32 }).collect();
        for d in [5usize, 8, 16, 64, 72, 136] {
            let x32: Vec<f32> = (0..10 * d).map(|k| ((k * 37 % 101) as f32 - 50.0) / 25.0).collect();
            let x64: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
            for s in [None, Some(slot.as_slice())] {
                for acc in [false, true] {
                    let mut o32: Vec<f32> = (0..d).map(|k| k as f32 * 0.1).collect();
                    let mut o64: Vec<f64> = o32.iter().map(|&v| v as f64).collect();
                    f32::row_kernel()(&cols, &vals, &x32, s, d, &mut o32, acc);
                    row_generic::<f64>(&cols, &vals, &x64, s, d, &mut o64, acc);
                    for (a, b) in o32.iter().zip(&o64) {
                        assert!((*a as f64 - b).abs() < 1e-5, "d {d} acc {acc}: {a} vs {b}");
                    }
                }
            }
        }
    }
}
