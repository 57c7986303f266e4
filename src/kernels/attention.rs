//! Multi-head attention on the CPU, from the query-key-value product to the contexts, one
//! (image, head) pair per rayon task: scores straight from the strided product (no per-head
//! copies), the vectorised softmax of [`super::softmax`], and one n × n score buffer per task
//! instead of a (heads, n, n) tensor per image. BLIP's ViT runs it (`denoise::vision`).
use super::matmul::{matmul_f32, MatRef, Parallel};
use super::softmax::softmax_in_place;
use rayon::prelude::*;

/// The context buffer, written by tasks at disjoint (image, head) column blocks.
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint elements (see `attention_f32`) and the buffer outlives them.
unsafe impl Sync for SharedOut {}

/// The (b, n, h) contexts of `heads`-head attention over `src`, the row-major (b, n, 3h)
/// query-key-value product (queries, keys, values each h wide, heads of h / heads features),
/// with scores scaled by `scale`. Panics unless `h3` is a multiple of `3 · heads` and `src` holds
/// b · n · h3 values.
pub fn attention_f32(src: &[f32], b: usize, n: usize, h3: usize, heads: usize, scale: f32) -> Vec<f32> {
    assert!(heads > 0 && h3.is_multiple_of(3 * heads), "attention: width {h3} is not 3 x {heads} heads");
    assert!(b.checked_mul(n).and_then(|bn| bn.checked_mul(h3)).is_some_and(|len| len <= src.len()));
    assert!(isize::try_from(h3.max(n)).is_ok(), "attention: strides too large");
    let (h, d) = (h3 / 3, h3 / 3 / heads);
    let mut ctx = vec![0f32; b * n * h];
    let out = SharedOut(ctx.as_mut_ptr());
    let out = &out;
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0f32; n * n],
        |scores, task| {
            let (img, head) = (task / heads, task % heads);
            let base = img * n * h3 + head * d;
            // scores (n × n) = scale · q (n × d, row stride h3) · kᵀ (d × n, column stride h3).
            let q = MatRef::new(&src[base..], h3, 1);
            let kt = MatRef::new(&src[base + h..], 1, h3);
            matmul_f32(n, n, d, scores, false, q, kt, scale, Parallel::No);
            softmax_in_place(scores, n);
            // SAFETY: the reads stay inside image `img` of `src` (n rows of h3 values, columns
            // 2h + head·d .. 2h + (head + 1)·d, checked against `src`'s length above) and the n × n
            // `scores`; the write goes to this task's own (image, head) block of `ctx` (n rows of
            // stride h from img·n·h + head·d, d columns), which no other task touches, of b·n·h
            // values that outlive the loop.
            unsafe {
                gemm::gemm(
                    n,
                    d,
                    n,
                    out.0.add(img * n * h + head * d),
                    1,
                    h as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    n as isize,
                    src.as_ptr().add(base + 2 * h),
                    1,
                    h3 as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct f64 attention of one image.
    fn reference(src: &[f32], n: usize, h3: usize, heads: usize, scale: f32) -> Vec<f64> {
        let (h, d) = (h3 / 3, h3 / 3 / heads);
        let mut out = vec![0f64; n * h];
        for hd in 0..heads {
            for i in 0..n {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..d)
                            .map(|t| src[i * h3 + hd * d + t] as f64 * src[j * h3 + h + hd * d + t] as f64)
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for t in 0..d {
                    out[i * h + hd * d + t] =
                        (0..n).map(|j| e[j] / z * src[j * h3 + 2 * h + hd * d + t] as f64).sum::<f64>();
                }
            }
        }
        out
    }

    #[test]
    fn contexts_match_the_direct_formula() {
        let (b, n, heads, d) = (2, 9, 3, 4);
        let h3 = 3 * heads * d;
        let src: Vec<f32> = (0..b * n * h3).map(|i| ((i * 29 % 83) as f32 - 41.0) * 0.03).collect();
        let got = attention_f32(&src, b, n, h3, heads, 0.5);
        assert_eq!(got.len(), b * n * h3 / 3);
        for img in 0..b {
            let want = reference(&src[img * n * h3..(img + 1) * n * h3], n, h3, heads, 0.5);
            let got = &got[img * n * h3 / 3..(img + 1) * n * h3 / 3];
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-5, "{g} against {w}");
            }
        }
    }
}
