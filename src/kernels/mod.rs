//! Hand-written numeric kernels: every SIMD and `unsafe` loop of the crate lives here (the rest
//! of the crate denies `unsafe_code`; the platform calls are in [`crate::sys`]).
//!
//! - [`gelu`]: exact (erf) GELU, vectorised, and the candle operation around it,
//! - [`softmax`]: row softmax with a vectorised `exp`,
//! - [`qgemm`]: int8 linear layers (AVX-512 VNNI, or a portable kernel),
//! - [`matmul`]: f32 matrix products through the `gemm` crate behind bounds-checked views,
//! - [`attention`]: multi-head attention from a query-key-value product, one (image, head) pair
//!   per task,
//! - [`sparse`]: the CSR row kernels of the sparse-dense products (AVX2+FMA for f32),
//! - [`adam`]: Adam's element-wise update.
//!
//! One dispatch style: the CPU's instruction sets are detected once ([`isa`]), and a kernel with a
//! SIMD copy checks [`Isa`] before calling it; otherwise its portable twin runs (the same loop
//! for the compiler to vectorise, or plain scalar code), and tests hold the two together. A
//! SIMD copy is an `unsafe fn` with `#[target_feature]`, called only behind that check.

pub mod adam;
pub mod attention;
pub mod gelu;
pub mod matmul;
pub mod qgemm;
pub mod softmax;
pub mod sparse;

use std::sync::OnceLock;

/// The instruction sets of this CPU that the kernels use, detected once per process by [`isa`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Isa {
    avx2: bool,
    fma: bool,
    avx512_vnni: bool,
}

impl Isa {
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            Isa {
                avx2: std::is_x86_feature_detected!("avx2"),
                fma: std::is_x86_feature_detected!("fma"),
                avx512_vnni: std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Isa::default()
        }
    }

    /// AVX2 (x86_64).
    pub fn avx2(&self) -> bool {
        self.avx2
    }

    /// AVX2 and FMA (x86_64).
    pub fn avx2_fma(&self) -> bool {
        self.avx2 && self.fma
    }

    /// AVX-512 F, BW and VNNI (x86_64): the int8 kernel of [`qgemm`].
    pub fn avx512_vnni(&self) -> bool {
        self.avx512_vnni
    }
}

/// This CPU's [`Isa`], detected on first use.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(Isa::detect)
}

/// The values of a custom operation's CPU input: f32 and contiguous, or an error naming `op`.
pub(crate) fn contiguous_f32<'a>(
    op: &str,
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else { candle_core::bail!("{op}: f32 only") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{op}: input must be contiguous") };
    Ok(&data[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isa_is_detected_once_and_consistent() {
        let a = isa();
        assert_eq!(a, isa());
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(a.avx2(), std::is_x86_feature_detected!("avx2"));
            assert_eq!(a.avx2_fma(), a.avx2() && std::is_x86_feature_detected!("fma"));
        }
        #[cfg(not(target_arch = "x86_64"))]
        assert_eq!(a, Isa::default());
    }
}
