//! Exact (erf) GELU for inference, vectorised on the CPU.
//!
//! candle 0.11 computes `gelu_erf` one element at a time through a scalar libm `erf`, which was a
//! fifth of BLIP-large's vision-encoder time and an eighth of MiniLM's on 2 cores. Here `erf` is
//! the branch-free rational approximation used by XLA and Eigen (x clamped to [-4, 4], then
//! x·P(x²)/Q(x²); max abs error 6.5e-8 against the exact function in f64), so the compiler
//! vectorises the loop; with AVX2+FMA present ([`super::isa`]) a copy of the loop compiled for
//! them runs. It runs on the calling thread (see `cpu_fwd`).
//! Other devices and dtypes use candle's own kernel. Inference only: no gradient.
use super::contiguous_f32;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

const ALPHA: [f32; 7] =
    [-2.726_142_3e-10, 2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906_3e-4, -2.954_6e-3, -1.609_603_3e-2];
const BETA: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2];

/// erf(x), branch-free (see the module notes).
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ALPHA.iter().fold(0.0f32, |acc, &c| acc.mul_add(x2, c));
    let q = BETA.iter().fold(0.0f32, |acc, &c| acc.mul_add(x2, c));
    x * p / q
}

/// 0.5·x·(1 + erf(x/√2)).
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The portable kernel (and the body of the AVX2+FMA copy).
#[inline(always)]
fn gelu_slice(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_f32(*v);
    }
}

/// [`gelu_slice`] compiled for AVX2 and FMA.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_slice_avx2(x: &mut [f32]) {
    gelu_slice(x)
}

/// Exact GELU of every value of `x`, in place, on the calling thread.
pub fn gelu_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::isa().avx2_fma() {
        // SAFETY: the CPU supports the features the function was compiled for (checked above).
        unsafe { gelu_slice_avx2(x) };
        return;
    }
    gelu_slice(x)
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "fast-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(self.name(), storage, layout)?;
        // One thread: vectorised, a ViT-L layer's 577 x 4096 values take about a millisecond, and
        // handing work to a thread pool between candle's own parallel operations cost more.
        let mut out = src.to_vec();
        gelu_in_place(&mut out);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Exact GELU: the vectorised kernel for contiguous f32 CPU tensors, candle's otherwise.
pub fn gelu_erf(xs: &Tensor) -> Result<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == candle_core::DType::F32 {
        xs.contiguous()?.apply_op1_no_bwd(&GeluErf)
    } else {
        xs.gelu_erf()
    }
}

/// Applies a configured activation, with the fast kernel for exact GELU.
pub fn activate(act: candle_nn::Activation, xs: &Tensor) -> Result<Tensor> {
    match act {
        candle_nn::Activation::Gelu => gelu_erf(xs),
        other => xs.apply(&other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: candle's f64 erf.
    fn erf64(x: f64) -> f64 {
        candle_core::cpu::erf::erf_f64(x)
    }

    #[test]
    fn erf_matches_the_exact_function() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f64 / 10_000.0;
            worst = worst.max((erf_f32(x as f32) as f64 - erf64(x)).abs());
        }
        // A few f32 ulps (the approximation itself is within 6.5e-8 in exact arithmetic).
        assert!(worst < 5e-7, "max |erf error| {worst}");
        assert!((erf_f32(f32::INFINITY) - 1.0).abs() < 2e-7);
        assert!((erf_f32(f32::NEG_INFINITY) + 1.0).abs() < 2e-7);
        assert!(erf_f32(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_tensor_matches_candle_and_keeps_shape() {
        let dev = candle_core::Device::Cpu;
        let xs = Tensor::randn(0f32, 3f32, (3, 70_001), &dev).unwrap();
        let ours = gelu_erf(&xs).unwrap();
        let theirs = xs.gelu_erf().unwrap();
        assert_eq!(ours.dims(), theirs.dims());
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 2e-6, "max diff {diff}");
        // A non-contiguous view goes through the same kernel.
        let t = xs.t().unwrap();
        let d2 = (gelu_erf(&t).unwrap() - t.gelu_erf().unwrap()).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d2.to_scalar::<f32>().unwrap() < 2e-6);
    }

    #[test]
    fn dispatched_kernel_matches_the_portable_twin() {
        let x: Vec<f32> = (0..10_007).map(|i| (i as f32 - 5_000.0) * 1.3e-3).collect();
        let (mut fast, mut portable) = (x.clone(), x);
        gelu_in_place(&mut fast);
        gelu_slice(&mut portable);
        // Same operations (mul_add is fused in both), so the same bits.
        assert_eq!(fast, portable);
    }
}
