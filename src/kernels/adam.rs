//! Adam's element-wise update (PyTorch's formulation, no weight decay) over one chunk of a
//! parameter, its gradient and its two moments: a plain indexed loop the compiler vectorises,
//! and for f32 the same loop compiled for AVX2 where [`super::isa`] has it (same IEEE
//! operations, so the same results, 8 lanes wide). `learn::optim` runs it over rayon chunks.

/// Adam's constants for one update, in the parameter's type.
#[derive(Debug, Clone, Copy)]
pub struct AdamConsts<T> {
    pub b1: T,
    pub b2: T,
    pub eps: T,
    /// The learning rate over the first moment's bias correction.
    pub step: T,
    /// The square root of the second moment's bias correction.
    pub bc2s: T,
    /// The gradient's scale.
    pub scale: T,
}

macro_rules! adam_chunk {
    ($name:ident, $t:ty) => {
        /// One chunk of the Adam update (a plain indexed loop the compiler vectorises).
        #[inline(always)]
        #[allow(clippy::needless_range_loop)] // one index over four slices vectorises best
        fn $name(p: &mut [$t], g: &[$t], m: &mut [$t], v: &mut [$t], k: AdamConsts<$t>) {
            let n = p.len().min(g.len()).min(m.len()).min(v.len());
            let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
            for i in 0..n {
                let gi = g[i] * k.scale;
                m[i] = k.b1 * m[i] + (1.0 - k.b1) * gi;
                v[i] = k.b2 * v[i] + (1.0 - k.b2) * gi * gi;
                p[i] -= k.step * m[i] / (v[i].sqrt() / k.bc2s + k.eps);
            }
        }
    };
}
adam_chunk!(adam_chunk_f32, f32);
adam_chunk!(adam_chunk_f64, f64);

/// The f32 loop compiled for AVX2.
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn adam_chunk_f32_avx2(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: AdamConsts<f32>) {
    adam_chunk_f32(p, g, m, v, k)
}

/// One Adam update of `p` with gradient `g` and moments `m`, `v` (over their common length).
pub fn adam_f32(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: AdamConsts<f32>) {
    #[cfg(target_arch = "x86_64")]
    if super::isa().avx2() {
        // SAFETY: the CPU supports AVX2 (checked above).
        return unsafe { adam_chunk_f32_avx2(p, g, m, v, k) };
    }
    adam_chunk_f32(p, g, m, v, k)
}

/// [`adam_f32`] in f64 (portable only).
pub fn adam_f64(p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], k: AdamConsts<f64>) {
    adam_chunk_f64(p, g, m, v, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consts() -> AdamConsts<f32> {
        AdamConsts { b1: 0.9, b2: 0.999, eps: 1e-8, step: 1e-3 / 0.1, bc2s: 0.001f32.sqrt(), scale: 0.5 }
    }

    #[test]
    fn dispatched_kernel_matches_the_portable_twin() {
        let n = 1_003;
        let g: Vec<f32> = (0..n).map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.01).collect();
        let p0: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
        let (mut p1, mut m1, mut v1) = (p0.clone(), vec![0.01f32; n], vec![0.02f32; n]);
        let (mut p2, mut m2, mut v2) = (p0, vec![0.01f32; n], vec![0.02f32; n]);
        for _ in 0..3 {
            adam_f32(&mut p1, &g, &mut m1, &mut v1, consts());
            adam_chunk_f32(&mut p2, &g, &mut m2, &mut v2, consts());
        }
        assert_eq!((p1, m1, v1), (p2, m2, v2));
    }

    #[test]
    fn one_step_matches_the_formula() {
        let k = consts();
        let (mut p, mut m, mut v) = ([1.0f64], [0.0f64], [0.0f64]);
        let kd = AdamConsts {
            b1: k.b1 as f64,
            b2: k.b2 as f64,
            eps: k.eps as f64,
            step: k.step as f64,
            bc2s: k.bc2s as f64,
            scale: k.scale as f64,
        };
        adam_f64(&mut p, &[0.4], &mut m, &mut v, kd);
        let gi = 0.4 * kd.scale;
        let (m1, v1) = ((1.0 - kd.b1) * gi, (1.0 - kd.b2) * gi * gi);
        assert_eq!(m[0], m1);
        assert_eq!(v[0], v1);
        assert_eq!(p[0], 1.0 - kd.step * m1 / (v1.sqrt() / kd.bc2s + kd.eps));
    }
}
