//! Row softmax with a vectorised `exp`, for the attention of our encoders.
//!
//! candle 0.11's CPU softmax calls libm's `expf` once per score, which was 8 % of BLIP-large's
//! vision-encoder time (577² scores per head and layer). Here `exp` is Cephes' `expf` written
//! branch-free (Cody–Waite reduction to r in [-ln2/2, ln2/2], a degree-7 polynomial, 2ⁿ from the
//! exponent bits; about 1 ulp), so the compiler vectorises the loops; with AVX2+FMA present
//! ([`super::isa`]) a copy compiled for them is used.

/// Eight independent partial results, so that reductions vectorise without reassociation rights.
const LANES: usize = 8;

/// e^x for x ≤ 88.7; 0 below -87.3 (where the true value is subnormal).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    let under = x < -87.33;
    let xc = x.clamp(-87.33, 88.72);
    // n = round(x / ln 2), both as a float and, from the low mantissa bits of the rounded sum, as
    // an integer (no float-to-int conversion: that one is not vectorised).
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = xc - n * C1 - n * C2;
    let poly = P.iter().fold(0.0f32, |acc, &c| acc.mul_add(r, c));
    let e = poly * (r * r) + r + 1.0;
    let scaled = e * f32::from_bits((ni.wrapping_add(127) << 23) as u32);
    if under {
        0.0
    } else {
        scaled
    }
}

/// max and sum with `LANES` partial results (simple loops that the compiler vectorises).
#[inline(always)]
fn lane_reduce(row: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder().iter().copied().fold(init, &f);
    for c in chunks {
        for i in 0..LANES {
            acc[i] = f(acc[i], c[i]);
        }
    }
    acc.iter().copied().fold(tail, f)
}

/// The portable kernel (and the body of the AVX2+FMA copy).
#[inline(always)]
fn softmax_rows(x: &mut [f32], width: usize) {
    for row in x.chunks_exact_mut(width) {
        // A comparison rather than f32::max (whose NaN rule keeps the loop scalar).
        let max = lane_reduce(row, f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
        // One plain loop per step: the exponential's body vectorises as a whole.
        for v in row.iter_mut() {
            *v = exp_f32(*v - max);
        }
        let inv = 1.0 / lane_reduce(row, 0.0, |a, b| a + b);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// [`softmax_rows`] compiled for AVX2 and FMA.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(x: &mut [f32], width: usize) {
    softmax_rows(x, width)
}

/// Softmax of every `width`-long row of `x`, in place, on the calling thread.
pub fn softmax_in_place(x: &mut [f32], width: usize) {
    if width == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::isa().avx2_fma() {
        // SAFETY: the CPU supports the features the function was compiled for (checked above).
        unsafe { softmax_rows_avx2(x, width) };
        return;
    }
    softmax_rows(x, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulps_where_it_matters() {
        let mut worst = 0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp_f32(x) as f64 - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "max relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1e9), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn softmax_rows_match_the_direct_formula() {
        // Widths around the 8 lanes, one row with a large spread and one constant row.
        for width in [1usize, 7, 8, 9, 577] {
            let mut x: Vec<f32> = (0..3 * width).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37).collect();
            x[width..2 * width].fill(3.0);
            let want: Vec<f64> = x
                .chunks(width)
                .flat_map(|r| {
                    let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                    let s: f64 = r.iter().map(|&v| (v as f64 - m).exp()).sum();
                    r.iter().map(move |&v| (v as f64 - m).exp() / s).collect::<Vec<_>>()
                })
                .collect();
            softmax_in_place(&mut x, width);
            for (g, w) in x.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-6, "width {width}: {g} against {w}");
            }
            for r in x.chunks(width) {
                assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn dispatched_kernel_matches_the_portable_twin() {
        for width in [1usize, 7, 8, 9, 577] {
            let x: Vec<f32> = (0..5 * width).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.41).collect();
            let (mut fast, mut portable) = (x.clone(), x);
            softmax_in_place(&mut fast, width);
            softmax_rows(&mut portable, width);
            assert_eq!(fast, portable, "width {width}");
        }
    }
}
