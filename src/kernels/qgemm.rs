//! Int8 linear layers for inference: y = x·Wᵀ + b with 8-bit weights and activations.
//!
//! - Weights are quantized once, symmetrically, with one scale per output feature (the rows of a
//!   PyTorch `Linear` weight), and packed in panels of 64 output features: × 4 inputs for AVX-512
//!   VNNI's `vpdpbusd` (16 features × 4 byte products summed into 16 i32 per instruction), or one
//!   input at a time for the portable kernel (a broadcast multiply-add that compilers vectorise).
//! - Activations are quantized at each product, asymmetrically, per row (token): the row's
//!   [min, max] (0 included) is mapped onto the 256 unsigned bytes, the other operand of
//!   `vpdpbusd`, with 0 on a whole byte z (the zero point). Σₖ w is precomputed per feature and
//!   z·Σₖ w subtracted from the integer sum, so the result is the exact integer dot product of the
//!   weights with the activations' steps.
//! - With calibration maxima ([`QLinear::quantize_smoothed`]), the few input features whose largest
//!   value is far above the layer's typical one skip the 8-bit product and are added in f32
//!   (LLM.int8()'s decomposition, Dettmers et al., 2022); the others are smoothed (SmoothQuant).
//! - Two kernels compute the same integer sums: the AVX-512 VNNI one, chosen at run time when the
//!   layer is quantized, and a portable one (other x86 CPUs, arm64). Their outputs are
//!   bit-identical (tested).
//! - Rows are split over the rayon pool; each task walks every panel for its rows, so a panel
//!   (k × 64 bytes) is reused from cache by all of the task's rows.
//!
//! This is the dynamic int8 quantization that ONNX Runtime and PyTorch apply to BERT linears (which
//! also quantize activations asymmetrically), with a finer (per-token rather than per-tensor)
//! activation scale.
use super::matmul::{matmul_f32, MatRef, Parallel};
use rayon::prelude::*;

/// Output features per packed panel (4 × 16 i32 lanes).
const NR: usize = 64;
/// Activation rows per micro-kernel call.
const MR: usize = 6;
/// An input feature whose calibration maximum exceeds this multiple of the layer's median feature
/// maximum is an outlier, computed in f32 ([`QLinear::quantize_smoothed`]).
pub const OUTLIER_RATIO: f32 = 3.0;
/// At most this share (1/16) of a layer's inputs are outliers: the largest ones, if more qualify.
const MAX_OUTLIER_SHARE: usize = 16;

/// A quantized linear layer (see the module notes).
#[derive(Clone)]
pub struct QLinear {
    n: usize,
    k: usize,
    /// `k` rounded up to a multiple of 4 (the padding is zero).
    kp: usize,
    /// Signed weights in panels of 64 features: [k/4][64 features][4 inputs] for the VNNI kernel,
    /// [k][64 features] for the portable one.
    w: Vec<i8>,
    /// Which kernel the layout is for (decided when quantizing).
    vnni: bool,
    /// Per feature (padded to whole panels): weight scale, Σw (of the int8 values), bias.
    scale: Vec<f32>,
    wsum: Vec<i32>,
    bias: Vec<f32>,
    /// Per input feature: the divisor that moved activation outliers into the weights (see
    /// [`QLinear::quantize_smoothed`]); inputs are multiplied by these before quantization
    /// (0 for the outlier inputs, whose int8 weights are 0 too).
    smooth: Option<Vec<f32>>,
    /// Outlier inputs computed in f32, and their weights, one column of `n` per outlier.
    outliers: Vec<usize>,
    outlier_w: Vec<f32>,
}

/// Rows of activations quantized for [`QLinear::forward_quantized`]: bytes, and per row a scale
/// and the byte that stands for 0.
pub struct QRows {
    kp: usize,
    data: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
}

/// Rounds to the nearest integer (ties to even) for |v| < 2²²: two additions, so the loop vectorises
/// on any target (`f32::round` is a libm call without SSE4.1).
#[inline(always)]
fn round_small(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    (v + MAGIC) - MAGIC
}

impl QLinear {
    /// Quantizes a row-major (n, k) weight (PyTorch `Linear` layout) and its bias, for the kernel
    /// that [`use_vnni`] picks now.
    pub fn quantize(weight: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        Self::quantize_with(weight, bias, n, k, None, use_vnni())
    }

    /// [`QLinear::quantize`] for the portable kernel (`vnni` false) or, where the CPU has it, the
    /// VNNI one.
    pub fn quantize_for(weight: &[f32], bias: Option<&[f32]>, n: usize, k: usize, vnni: bool) -> Self {
        Self::quantize_with(weight, bias, n, k, None, vnni && vnni_available())
    }

    /// [`QLinear::quantize`] calibrated by the largest |input| of each input feature on typical
    /// data (`act_max`), in two steps:
    ///
    /// 1. Outliers: the inputs whose maximum exceeds [`OUTLIER_RATIO`] times the median of the
    ///    maxima (at most 1/16 of the inputs, the largest) are taken out of the 8-bit product and
    ///    computed in f32 by [`QLinear::forward`] (in BERT a handful of hidden features and FFN
    ///    neurons reach 10-30 where the rest stay near 1; in the 8-bit product they would set the
    ///    step of every token that has them, and, smoothed, the step of every weight row).
    /// 2. SmoothQuant's migration (Xiao et al., 2023) for the others: input j is divided by
    ///    sⱼ = √(max|xⱼ| / max|W·ⱼ|) and weight column j multiplied by it. The product is
    ///    unchanged, but the remaining spread of the features is shared between activations and
    ///    weights.
    pub fn quantize_smoothed(weight: &[f32], bias: Option<&[f32]>, n: usize, k: usize, act_max: &[f32]) -> Self {
        assert_eq!(act_max.len(), k, "{} activation maxima for {k} inputs", act_max.len());
        assert_eq!(weight.len(), n * k, "weight is not {n} x {k}");
        let outliers = outlier_inputs(act_max);
        let mut w_max = vec![0f32; k];
        for row in weight.chunks_exact(k) {
            w_max.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(v.abs()));
        }
        let mut s: Vec<f32> = act_max
            .iter()
            .zip(&w_max)
            .map(|(&a, &w)| if a > 0.0 && w > 0.0 { (a / w).sqrt().clamp(1e-3, 1e3) } else { 1.0 })
            .collect();
        // An outlier's int8 weight column is 0 (so it sets no row's scale) and its input is
        // multiplied by 0 (so it sets no token's scale).
        let mut inv: Vec<f32> = s.iter().map(|s| 1.0 / s).collect();
        for &j in &outliers {
            s[j] = 0.0;
            inv[j] = 0.0;
        }
        let scaled: Vec<f32> = weight.chunks_exact(k).flat_map(|row| row.iter().zip(&s).map(|(v, s)| v * s)).collect();
        let mut q = Self::quantize_with(&scaled, bias, n, k, Some(inv), use_vnni());
        q.outlier_w = outliers.iter().flat_map(|&j| (0..n).map(move |f| weight[f * k + j])).collect();
        q.outliers = outliers;
        q
    }

    fn quantize_with(
        weight: &[f32],
        bias: Option<&[f32]>,
        n: usize,
        k: usize,
        smooth: Option<Vec<f32>>,
        vnni: bool,
    ) -> Self {
        assert_eq!(weight.len(), n * k, "weight is not {n} x {k}");
        let kp = k.div_ceil(4) * 4;
        let panels = n.div_ceil(NR);
        let mut w = vec![0i8; panels * NR * kp];
        let mut scale = vec![0f32; panels * NR];
        let mut wsum = vec![0i32; panels * NR];
        let mut b = vec![0f32; panels * NR];
        for f in 0..n {
            let row = &weight[f * k..(f + 1) * k];
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            scale[f] = s;
            b[f] = bias.map_or(0.0, |b| b[f]);
            let (panel, col) = (f / NR, f % NR);
            let mut sum = 0i32;
            for (kk, &v) in row.iter().enumerate() {
                let q = round_small(v / s).clamp(-127.0, 127.0) as i8;
                sum += q as i32;
                let at = if vnni { (kk / 4) * NR * 4 + col * 4 + kk % 4 } else { kk * NR + col };
                w[panel * NR * kp + at] = q;
            }
            wsum[f] = sum;
        }
        Self { n, k, kp, w, vnni, scale, wsum, bias: b, smooth, outliers: Vec::new(), outlier_w: Vec::new() }
    }

    pub fn out_features(&self) -> usize {
        self.n
    }

    /// The input features computed in f32 (see [`QLinear::quantize_smoothed`]).
    pub fn outlier_inputs(&self) -> &[usize] {
        &self.outliers
    }

    /// Quantizes `m` rows of `x` (row-major, `k` wide) for this layer's input width.
    pub fn quantize_rows(&self, x: &[f32], m: usize) -> QRows {
        quantize_rows(x, m, self.k, self.kp, self.smooth.as_deref())
    }

    /// `out` (m × n, row-major) = x·Wᵀ + b (+ `residual`, same shape as `out`), for `m` rows of `x`.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32], residual: Option<&[f32]>) {
        let q = self.quantize_rows(x, m);
        self.forward_quantized(&q, out, residual);
        if self.outliers.is_empty() || m == 0 {
            return;
        }
        // The outlier inputs' share in f32: out += x[:, outliers] (m × c) · W[:, outliers]ᵀ (c × n),
        // a thin product for the `gemm` crate (candle's f32 kernel).
        let (n, k, c) = (self.n, self.k, self.outliers.len());
        let xo: Vec<f32> =
            x[..m * k].chunks_exact(k).flat_map(|row| self.outliers.iter().map(move |&j| row[j])).collect();
        assert!(xo.len() == m * c && self.outlier_w.len() == c * n && out.len() == m * n);
        // out (m × n) += xo (m × c) · the row-major c × n outlier weights.
        matmul_f32(
            m,
            n,
            c,
            out,
            true,
            MatRef::row_major(&xo, c),
            MatRef::row_major(&self.outlier_w, n),
            1.0,
            Parallel::Rayon,
        );
    }

    /// Whether this layer runs the VNNI kernel (else the portable one).
    pub fn is_vnni(&self) -> bool {
        self.vnni
    }

    /// [`QLinear::forward`] on rows already quantized, without the outlier inputs' share.
    pub fn forward_quantized(&self, q: &QRows, out: &mut [f32], residual: Option<&[f32]>) {
        assert_eq!(q.kp, self.kp, "activations quantized for another width");
        let m = q.scale.len();
        let n = self.n;
        assert_eq!(q.zero.len(), m);
        assert_eq!(out.len(), m * n);
        if let Some(r) = residual {
            assert_eq!(r.len(), m * n);
        }
        if m == 0 {
            return;
        }
        let vnni = self.vnni;
        // Enough tasks to balance the pool, each a whole number of micro-kernel calls.
        let tasks = 4 * rayon::current_num_threads().max(1);
        let rows_per_task = m.div_ceil(tasks).div_ceil(MR) * MR;
        out.par_chunks_mut(rows_per_task * n).enumerate().for_each(|(t, out)| {
            let r0 = t * rows_per_task;
            let rows = out.len() / n;
            let mut acc = [[0i32; NR]; MR];
            for panel in 0..n.div_ceil(NR) {
                let wp = &self.w[panel * NR * self.kp..(panel + 1) * NR * self.kp];
                let cols = NR.min(n - panel * NR);
                let mut r = 0;
                while r < rows {
                    let mr = MR.min(rows - r);
                    let a = &q.data[(r0 + r) * self.kp..(r0 + r + mr) * self.kp];
                    kernel(a, self.kp, wp, mr, &mut acc, vnni);
                    for (i, acc) in acc.iter().enumerate().take(mr) {
                        let row = r0 + r + i;
                        let dst = &mut out[(r + i) * n + panel * NR..][..cols];
                        let (sa, z) = (q.scale[row], q.zero[row]);
                        let f0 = panel * NR;
                        let res = residual.map(|res| &res[row * n + f0..row * n + f0 + cols]);
                        let (sw, wsum, b) =
                            (&self.scale[f0..f0 + cols], &self.wsum[f0..f0 + cols], &self.bias[f0..f0 + cols]);
                        epilogue(&acc[..cols], sa, z, sw, wsum, b, res, dst);
                    }
                    r += mr;
                }
            }
        });
    }
}

/// dst = (acc − z·Σw)·sa·sw + b (+ residual).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn epilogue(acc: &[i32], sa: f32, z: i32, sw: &[f32], wsum: &[i32], b: &[f32], res: Option<&[f32]>, dst: &mut [f32]) {
    for i in 0..dst.len() {
        dst[i] = ((acc[i] - z * wsum[i]) as f32 * (sa * sw[i]) + b[i]) + res.map_or(0.0, |r| r[i]);
    }
}

/// The outlier inputs for calibration maxima `act_max` (see [`QLinear::quantize_smoothed`]), in
/// increasing order.
fn outlier_inputs(act_max: &[f32]) -> Vec<usize> {
    let mut sorted: Vec<f32> = act_max.iter().copied().filter(|a| a.is_finite()).collect();
    if sorted.is_empty() {
        return Vec::new();
    }
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    if median <= 0.0 {
        return Vec::new();
    }
    let mut out: Vec<usize> = (0..act_max.len()).filter(|&j| act_max[j] > OUTLIER_RATIO * median).collect();
    let cap = act_max.len() / MAX_OUTLIER_SHARE;
    if out.len() > cap {
        out.sort_by(|&a, &b| act_max[b].total_cmp(&act_max[a]));
        out.truncate(cap);
        out.sort_unstable();
    }
    out
}

/// Quantizes rows of `x`, each input first multiplied by `smooth` when given, asymmetrically: a
/// row's [min, max] with 0 included is cut into 255 steps of s = (max − min)/255, value v becomes the
/// byte round(v/s) + z with z = round(−min/s), and 0 is exactly byte z. The step is at most
/// max|v|/127.5, the symmetric one's, and half of it for a row of one sign (GELU outputs lie in
/// [−0.17, ∞)).
fn quantize_rows(x: &[f32], m: usize, k: usize, kp: usize, smooth: Option<&[f32]>) -> QRows {
    assert!(x.len() >= m * k, "{} values for {m} rows of {k}", x.len());
    // The padding (k..kp) meets zero weights: any byte will do.
    let mut data = vec![0u8; m * kp];
    let mut scale = vec![0f32; m];
    let mut zero = vec![0i32; m];
    let work = |(row, (dst, (s, z))): (usize, (&mut [u8], (&mut f32, &mut i32)))| {
        let src = &x[row * k..(row + 1) * k];
        // The smoothing factors (1 when absent) are applied on the fly, in both passes.
        let factor = |j: usize| smooth.map_or(1.0, |f| f[j]);
        let (lo, hi) = row_range(src, smooth);
        *s = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let inv = 1.0 / *s;
        // lo <= 0 <= hi, so z and every byte are in 0..=255 by construction; the clamps only guard
        // NaN and rounding at the edges.
        let zf = round_small(-lo * inv).clamp(0.0, 255.0);
        *z = zf as i32;
        for (j, (d, &v)) in dst.iter_mut().zip(src).enumerate() {
            // Through i32: a float-to-u8 cast saturates element by element, which keeps the loop
            // scalar; the clamp has already done that work.
            *d = (round_small(v * factor(j) * inv) + zf).clamp(0.0, 255.0) as i32 as u8;
        }
    };
    if m * k >= 1 << 16 {
        data.par_chunks_mut(kp).zip(scale.par_iter_mut().zip(zero.par_iter_mut())).enumerate().for_each(work);
    } else {
        data.chunks_mut(kp).zip(scale.iter_mut().zip(zero.iter_mut())).enumerate().for_each(work);
    }
    QRows { kp, data, scale, zero }
}

/// The smallest and largest value of `src` (times `smooth`, when given) and 0, kept in 16 lanes
/// with comparisons so that the loop vectorises (`f32::min`'s NaN rule keeps a fold scalar; a NaN
/// is skipped here).
#[inline(always)]
fn row_range(src: &[f32], smooth: Option<&[f32]>) -> (f32, f32) {
    const L: usize = 16;
    let (mut lo, mut hi) = ([0f32; L], [0f32; L]);
    let mut fold = |lanes: &[f32]| {
        for (i, &v) in lanes.iter().enumerate() {
            lo[i] = if v < lo[i] { v } else { lo[i] };
            hi[i] = if v > hi[i] { v } else { hi[i] };
        }
    };
    match smooth {
        Some(f) => {
            let mut buf = [0f32; L];
            for (a, b) in src.chunks(L).zip(f.chunks(L)) {
                let n = a.len();
                buf[..n].iter_mut().zip(a.iter().zip(b)).for_each(|(d, (a, b))| *d = a * b);
                fold(&buf[..n]);
            }
        }
        None => src.chunks(L).for_each(&mut fold),
    }
    let lo = lo.iter().fold(0f32, |m, &v| if v < m { v } else { m });
    let hi = hi.iter().fold(0f32, |m, &v| if v > m { v } else { m });
    (lo, hi)
}

static PORTABLE_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes layers quantized from now on use the portable kernel even where VNNI is present
/// (process-wide; `bench embed` uses it to show what CPUs without VNNI get).
pub fn force_portable(on: bool) {
    PORTABLE_ONLY.store(on, std::sync::atomic::Ordering::Relaxed)
}

/// Whether layers quantized now get the VNNI kernel.
pub fn use_vnni() -> bool {
    !PORTABLE_ONLY.load(std::sync::atomic::Ordering::Relaxed) && vnni_available()
}

/// Whether the AVX-512 VNNI kernel can run on this CPU ([`super::Isa::avx512_vnni`]).
pub fn vnni_available() -> bool {
    super::isa().avx512_vnni()
}

/// Integer sums of `mr` activation rows (`a`, stride `kp`, unsigned bytes) with one panel.
#[inline(always)]
fn kernel(a: &[u8], kp: usize, w: &[i8], mr: usize, acc: &mut [[i32; NR]; MR], vnni: bool) {
    assert!(mr <= MR && a.len() >= mr * kp && w.len() >= NR * kp && kp.is_multiple_of(4));
    #[cfg(target_arch = "x86_64")]
    if vnni {
        // SAFETY: `vnni` is only true after `vnni_available()` (a layer's layout is decided by
        // `quantize_with`, whose callers check it); the slices cover mr rows of kp bytes and one
        // whole panel (checked by the callers' indexing above).
        unsafe {
            match mr {
                1 => vnni_kernel::<1>(a, kp, w, acc),
                2 => vnni_kernel::<2>(a, kp, w, acc),
                3 => vnni_kernel::<3>(a, kp, w, acc),
                4 => vnni_kernel::<4>(a, kp, w, acc),
                5 => vnni_kernel::<5>(a, kp, w, acc),
                _ => vnni_kernel::<6>(a, kp, w, acc),
            }
        }
        return;
    }
    let _ = vnni;
    #[cfg(target_arch = "x86_64")]
    if super::isa().avx2() {
        // SAFETY: the CPU supports the feature the copy was compiled for (checked above).
        unsafe { portable_kernel_avx2(a, kp, w, mr, acc) };
        return;
    }
    portable_kernel(a, kp, w, mr, acc)
}

/// The portable kernel compiled for AVX2 (x86 CPUs without VNNI).
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn portable_kernel_avx2(a: &[u8], kp: usize, w: &[i8], mr: usize, acc: &mut [[i32; NR]; MR]) {
    portable_kernel(a, kp, w, mr, acc)
}

#[inline(always)]
/// The portable kernel over the [k][64] layout: one broadcast multiply-add per input, each byte
/// product in 16 bits (255 · 127 fits) widened into the 32-bit sums, which compilers vectorise on
/// SSE2 and NEON alike.
fn portable_kernel(a: &[u8], kp: usize, w: &[i8], mr: usize, acc: &mut [[i32; NR]; MR]) {
    for (r, acc) in acc.iter_mut().enumerate().take(mr) {
        acc.fill(0);
        let a = &a[r * kp..(r + 1) * kp];
        for (&ak, wk) in a.iter().zip(w.chunks_exact(NR)) {
            let ak = ak as i16;
            for (s, &wc) in acc.iter_mut().zip(wk) {
                *s += (ak * wc as i16) as i32;
            }
        }
    }
}

/// The VNNI kernel over the [k/4][64][4] layout, for `R` rows.
///
/// # Safety
///
/// The CPU must support AVX-512 F, BW and VNNI; `a` must hold `R` rows of `kp` bytes, `w` one
/// whole panel (64 · kp bytes), and `kp` be a multiple of 4.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vnni_kernel<const R: usize>(a: &[u8], kp: usize, w: &[i8], acc: &mut [[i32; NR]; MR]) {
    use std::arch::x86_64::*;
    let mut s = [[_mm512_setzero_si512(); 4]; R];
    let ap = a.as_ptr();
    let wp = w.as_ptr();
    for k4 in 0..kp / 4 {
        let wk = wp.add(k4 * NR * 4) as *const __m512i;
        let w0 = _mm512_loadu_si512(wk);
        let w1 = _mm512_loadu_si512(wk.add(1));
        let w2 = _mm512_loadu_si512(wk.add(2));
        let w3 = _mm512_loadu_si512(wk.add(3));
        for (r, sr) in s.iter_mut().enumerate() {
            let av = _mm512_set1_epi32(std::ptr::read_unaligned(ap.add(r * kp + 4 * k4) as *const i32));
            sr[0] = _mm512_dpbusd_epi32(sr[0], av, w0);
            sr[1] = _mm512_dpbusd_epi32(sr[1], av, w1);
            sr[2] = _mm512_dpbusd_epi32(sr[2], av, w2);
            sr[3] = _mm512_dpbusd_epi32(sr[3], av, w3);
        }
    }
    for (sr, acc) in s.iter().zip(acc.iter_mut()) {
        for (j, v) in sr.iter().enumerate() {
            _mm512_storeu_si512(acc.as_mut_ptr().add(16 * j) as *mut __m512i, *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n).map(|_| lcg(&mut s)).collect()
    }

    /// f32 reference of x·Wᵀ + b.
    fn reference(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = b[j] + (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum::<f32>();
            }
        }
        y
    }

    #[test]
    fn int8_product_is_close_to_f32_for_odd_shapes() {
        // Widths that are not multiples of 4 or 64, and row counts around the micro-kernel's 6.
        for &(m, n, k) in &[(1, 1, 1), (7, 70, 13), (13, 130, 384), (6, 64, 8), (25, 200, 1536)] {
            let (x, w, b) = (random(m * k, 1), random(n * k, 2), random(n, 3));
            let q = QLinear::quantize(&w, Some(&b), n, k);
            let mut y = vec![0f32; m * n];
            q.forward(&x, m, &mut y, None);
            let want = reference(&x, &w, &b, m, n, k);
            // Each operand is within half a step (1/254 of its row's max) of the real value.
            let tol = 0.02 * (k as f32).sqrt() + 1e-3;
            let worst = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < tol, "{m}x{n}x{k}: max error {worst} (tolerance {tol})");
            let spread = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
            assert!(spread > 10.0 * worst, "{m}x{n}x{k}: error {worst} against values up to {spread}");
        }
    }

    #[test]
    fn residual_is_added_and_zero_rows_stay_finite() {
        let (m, n, k) = (9, 80, 20);
        let (mut x, w, b) = (random(m * k, 4), random(n * k, 5), random(n, 6));
        x[..k].fill(0.0); // a row of zeros quantizes with scale 1, not 0/0
        let r = random(m * n, 7);
        let q = QLinear::quantize(&w, Some(&b), n, k);
        let (mut plain, mut with) = (vec![0f32; m * n], vec![0f32; m * n]);
        q.forward(&x, m, &mut plain, None);
        q.forward(&x, m, &mut with, Some(&r));
        for i in 0..m * n {
            assert!((with[i] - (plain[i] + r[i])).abs() < 1e-5);
        }
        assert!(plain[..n].iter().zip(&b).all(|(y, b)| (y - b).abs() < 1e-6), "a zero row gives the bias");
    }

    #[test]
    fn rows_are_quantized_over_their_own_range_with_zero_exact() {
        // One row of one sign (like GELU outputs), one of both signs, one of zeros.
        let k = 50;
        let mut x: Vec<f32> = (0..k).map(|i| i as f32 / 49.0).collect();
        x.extend((0..k).map(|i| (i as f32 - 10.0) / 7.0));
        x.extend(std::iter::repeat_n(0.0, k));
        let q = quantize_rows(&x, 3, k, k.div_ceil(4) * 4, None);
        for (r, row) in x.chunks_exact(k).enumerate() {
            let (s, z) = (q.scale[r], q.zero[r]);
            let bytes = &q.data[r * q.kp..r * q.kp + k];
            for (&v, &b) in row.iter().zip(bytes) {
                let back = s * (b as i32 - z) as f32;
                assert!((back - v).abs() <= 0.5 * s + 1e-6, "row {r}: {v} came back as {back}");
                if v == 0.0 {
                    assert_eq!(back, 0.0, "row {r}: 0 must stay exact");
                }
            }
            let (lo, hi) = row.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
            if hi > lo {
                assert!((s - (hi - lo) / 255.0).abs() < 1e-7, "row {r}: step {s}");
            }
        }
        // [0, 1]: step 1/255, half of the symmetric 1/127.
        assert!((q.scale[0] - 1.0 / 255.0).abs() < 1e-7 && q.zero[0] == 0);
    }

    #[test]
    fn outlier_inputs_are_computed_in_f32() {
        let (m, n, k) = (40, 96, 64);
        let mut x = random(m * k, 10);
        // Input 5 is a BERT-style outlier feature: 25x the others on every token.
        for row in x.chunks_exact_mut(k) {
            row[5] += 25.0;
        }
        let (w, b) = (random(n * k, 11), random(n, 12));
        let mut act_max = vec![0f32; k];
        for row in x.chunks_exact(k) {
            act_max.iter_mut().zip(row).for_each(|(a, v)| *a = a.max(v.abs()));
        }
        let want = reference(&x, &w, &b, m, n, k);
        let err = |q: &QLinear| {
            let mut y = vec![0f32; m * n];
            q.forward(&x, m, &mut y, None);
            y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
        };
        let calibrated = QLinear::quantize_smoothed(&w, Some(&b), n, k, &act_max);
        assert_eq!(calibrated.outlier_inputs(), &[5]);
        let plain = QLinear::quantize(&w, Some(&b), n, k);
        assert!(plain.outlier_inputs().is_empty());
        let (ec, ep) = (err(&calibrated), err(&plain));
        assert!(ec < 0.5 * ep, "calibrated max error {ec}, plain {ep}");
        assert!(ec < 0.02 * (k as f32).sqrt(), "calibrated max error {ec}");
        // No outliers where the maxima are flat, zero or empty.
        assert!(outlier_inputs(&[1.0; 8]).is_empty() && outlier_inputs(&[0.0; 8]).is_empty());
        assert!(outlier_inputs(&[]).is_empty());
        // At most 1/16 of the inputs, the largest.
        let mut many = vec![1.0f32; 32];
        many[3] = 9.0;
        many[30] = 20.0;
        many[7] = 5.0;
        assert_eq!(outlier_inputs(&many), vec![3, 30]);
    }

    #[test]
    fn dispatched_portable_layout_kernel_matches_the_portable_twin() {
        // The [k][64] layout: the AVX2 copy where the CPU has it, against the plain loop.
        let kp = 44;
        let a: Vec<u8> = (0..MR * kp).map(|i| (i * 7 % 256) as u8).collect();
        let w: Vec<i8> = (0..NR * kp).map(|i| ((i * 13 % 255) as i32 - 127) as i8).collect();
        for mr in 1..=MR {
            let (mut fast, mut plain) = ([[0i32; NR]; MR], [[0i32; NR]; MR]);
            kernel(&a, kp, &w, mr, &mut fast, false);
            portable_kernel(&a, kp, &w, mr, &mut plain);
            assert_eq!(fast[..mr], plain[..mr], "{mr} rows");
        }
    }

    #[test]
    fn vnni_and_portable_kernels_give_identical_sums() {
        if !vnni_available() {
            eprintln!("skipping: no AVX-512 VNNI on this CPU (the portable kernel is covered above)");
            return;
        }
        for &(m, n, k) in &[(1, 64, 4), (11, 192, 384), (17, 70, 1536), (6, 384, 36)] {
            let (x, w) = (random(m * k, 8), random(n * k, 9));
            let (qv, qp) = (QLinear::quantize_for(&w, None, n, k, true), QLinear::quantize_for(&w, None, n, k, false));
            assert!(qv.is_vnni() && !qp.is_vnni());
            let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
            qv.forward(&x, m, &mut a, None);
            qp.forward(&x, m, &mut b, None);
            assert_eq!(a, b, "{m}x{n}x{k}");
        }
    }
}
