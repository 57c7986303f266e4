//! Optimisers as composable steps over candle `Var`s.
//!
//! A [`BaseOptimizer`] turns a gradient into a parameter update (Adam, plain SGD). A
//! [`Composite`] decides which gradients to feed it, per batch:
//! - `Adam`: one step with `g(theta)`.
//! - `Sam`: `g_s = g(theta + rho g / ||g||)` (global L2 norm over all parameters), parameters
//!   restored bit for bit, then a step with `g_s`.
//! - `Mg` (Mirror Gradient, as the reference code): on batches with `k mod beta == 0`, a step with
//!   `alpha1 g(theta)`, then, at the new point on the same batch, a step with `-alpha2 g(theta')`,
//!   both through the *same* base state (Adam's moments and step counter advance twice).
//! - `Sgbd(variant)`: SAM inside MG. `S1`: every descent gradient is a SAM gradient, the mirror
//!   gradient is plain. `S2`: SAM only for the descent step of mirror batches. `M2`: as S1 and the
//!   mirror gradient is a SAM gradient too.
//!
//! SGBD's full text is not public: the three variants are this project's reading of its
//! abstract ("SAM inside Mirror Gradient"), not the authors' algorithm. `S1` is the default
//! ([`Variant::default`], `[learn] variant`).
//!
//! The loss closure is called once per gradient evaluation and must use the same batch (and
//! negatives) every time within one `step`.

use super::{LearnError, OpPath, Result};
use crate::kernels::adam;
use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

/// Which SAM-inside-MG variant (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    #[default]
    S1,
    S2,
    M2,
}

/// Optimiser names as the configuration and command line spell them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimName {
    Adam,
    Sam,
    Mg,
    #[default]
    Sgbd,
}

impl OptimName {
    pub fn with_variant(self, v: Variant) -> OptimKind {
        match self {
            OptimName::Adam => OptimKind::Adam,
            OptimName::Sam => OptimKind::Sam,
            OptimName::Mg => OptimKind::Mg,
            OptimName::Sgbd => OptimKind::Sgbd(v),
        }
    }
}

/// The training strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimKind {
    Adam,
    Sam,
    Mg,
    Sgbd(Variant),
}

impl std::str::FromStr for Variant {
    type Err = LearnError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "s1" => Ok(Variant::S1),
            "s2" => Ok(Variant::S2),
            "m2" => Ok(Variant::M2),
            _ => Err(LearnError::Invalid(format!("unknown SGBD variant {s:?} (s1, s2, m2)"))),
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::S1 => "s1",
            Variant::S2 => "s2",
            Variant::M2 => "m2",
        })
    }
}

impl OptimKind {
    /// Parses `adam|sam|mg|sgbd`; `variant` applies to `sgbd` only.
    pub fn parse(name: &str, variant: Variant) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "adam" => Ok(OptimKind::Adam),
            "sam" => Ok(OptimKind::Sam),
            "mg" => Ok(OptimKind::Mg),
            "sgbd" => Ok(OptimKind::Sgbd(variant)),
            _ => Err(LearnError::Invalid(format!("unknown optimiser {name:?} (adam, sam, mg, sgbd)"))),
        }
    }

    /// Short label: `adam`, `sam`, `mg`, `sgbd-s1`, ...
    pub fn label(&self) -> String {
        match self {
            OptimKind::Adam => "adam".into(),
            OptimKind::Sam => "sam".into(),
            OptimKind::Mg => "mg".into(),
            OptimKind::Sgbd(v) => format!("sgbd-{v}"),
        }
    }

    fn uses_mirror(&self) -> bool {
        matches!(self, OptimKind::Mg | OptimKind::Sgbd(_))
    }

    /// Expected gradient evaluations per batch, on average over `beta` batches.
    pub fn grad_evals_per_batch(&self, beta: usize) -> f64 {
        let b = beta.max(1) as f64;
        match self {
            OptimKind::Adam => 1.0,
            OptimKind::Sam => 2.0,
            OptimKind::Mg => 1.0 + 1.0 / b,
            OptimKind::Sgbd(Variant::S1) => 2.0 + 1.0 / b,
            OptimKind::Sgbd(Variant::S2) => 1.0 + 2.0 / b,
            OptimKind::Sgbd(Variant::M2) => 2.0 + 2.0 / b,
        }
    }
}

/// Hyper-parameters of all optimisers (unused ones are ignored).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// SAM radius.
    pub rho: f64,
    /// MG descent weight.
    pub alpha1: f64,
    /// MG mirror (ascent) weight.
    pub alpha2: f64,
    /// MG period: mirror steps on batches with `k mod beta == 0`.
    pub beta: usize,
}

impl Default for OptimParams {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, rho: 0.05, alpha1: 1.0, alpha2: 0.2, beta: 3 }
    }
}

impl OptimParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(LearnError::Invalid(m.to_string()));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr must be > 0");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("Adam betas must be in [0, 1)");
        }
        if self.eps.is_nan() || self.eps <= 0.0 || self.rho.is_nan() || self.rho < 0.0 || !self.rho.is_finite() {
            return bad("eps must be > 0 and rho >= 0");
        }
        if self.beta == 0 {
            return bad("MG beta must be >= 1");
        }
        if !(self.alpha1 > self.alpha2 && self.alpha2 >= 0.0) {
            return bad("MG needs alpha1 > alpha2 >= 0");
        }
        Ok(())
    }
}

/// Saved optimiser state: named tensors and the step counter.
#[derive(Debug, Clone)]
pub struct OptimState {
    pub tensors: Vec<(String, Tensor)>,
    pub step: u64,
}

/// Turns one gradient per parameter into an in-place parameter update.
pub trait BaseOptimizer: Send {
    /// Updates `vars` with the gradient `scale * grads[i]` (one step; advances the step counter).
    fn apply(&mut self, vars: &[Var], grads: &[Tensor], scale: f64) -> Result<()>;
    /// Step counter (number of `apply` calls).
    fn steps(&self) -> u64;
    fn state(&self, names: &[String]) -> Result<OptimState>;
    fn load_state(
        &mut self,
        names: &[String],
        vars: &[Var],
        tensors: &HashMap<String, Tensor>,
        step: u64,
    ) -> Result<()>;
}

/// One evaluation of the loss: the scalar loss and, when the model computed them itself (a fused
/// kernel), the gradients of its parameters in `named_vars` order; `None` means autograd.
pub struct LossGrads {
    pub loss: Tensor,
    pub grads: Option<Vec<Tensor>>,
}

impl LossGrads {
    /// A loss whose gradients come from `loss.backward()`.
    pub fn autograd(loss: Tensor) -> Self {
        Self { loss, grads: None }
    }
}

/// One training step per batch (see the module doc).
pub trait Optimizer: Send {
    /// Runs the strategy on one batch; returns the loss at the starting point.
    fn step(&mut self, loss_fn: &mut dyn FnMut() -> Result<Tensor>, batch_index: usize) -> Result<f32> {
        self.step_with(&mut || Ok(LossGrads::autograd(loss_fn()?)), batch_index)
    }
    /// As [`Optimizer::step`], for a closure that may return the gradients itself
    /// (`Recommender::loss_and_grads`).
    fn step_with(&mut self, eval: &mut dyn FnMut() -> Result<LossGrads>, batch_index: usize) -> Result<f32>;
    /// Gradient evaluations done so far (for cost accounting).
    fn grad_evals(&self) -> u64;
    fn kind(&self) -> OptimKind;
    fn state(&self) -> Result<OptimState>;
    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()>;
}

// ---------------------------------------------------------------------------------------------
// In-place kernels on CPU storage

fn contiguous<'a, T>(v: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((s, e)) => Ok(&v[s..e]),
        None => candle_core::bail!("optimizer: tensor must be contiguous"),
    }
}

fn contiguous_mut<'a, T>(v: &'a mut [T], l: &Layout) -> candle_core::Result<&'a mut [T]> {
    match l.contiguous_offsets() {
        Some((s, e)) => Ok(&mut v[s..e]),
        None => candle_core::bail!("optimizer: tensor must be contiguous"),
    }
}

const MIN_LEN: usize = 8192;

/// `p += a * g`.
struct Axpy(f64);

impl InplaceOp2 for Axpy {
    fn name(&self) -> &'static str {
        "axpy"
    }
    fn cpu_fwd(&self, p: &mut CpuStorage, pl: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
        match (p, g) {
            (CpuStorage::F32(p), CpuStorage::F32(g)) => {
                let (p, g, a) = (contiguous_mut(p, pl)?, contiguous(g, gl)?, self.0 as f32);
                p.par_chunks_mut(MIN_LEN)
                    .zip(g.par_chunks(MIN_LEN))
                    .for_each(|(p, g)| p.iter_mut().zip(g).for_each(|(p, &g)| *p += a * g));
            }
            (CpuStorage::F64(p), CpuStorage::F64(g)) => {
                let (p, g, a) = (contiguous_mut(p, pl)?, contiguous(g, gl)?, self.0);
                p.par_chunks_mut(MIN_LEN)
                    .zip(g.par_chunks(MIN_LEN))
                    .for_each(|(p, g)| p.iter_mut().zip(g).for_each(|(p, &g)| *p += a * g));
            }
            _ => candle_core::bail!("axpy: f32 or f64 tensors of one dtype"),
        }
        Ok(())
    }
}

/// A saved copy of one parameter (SAM's restore point), in the parameter's dtype.
#[derive(Default)]
enum Backup {
    #[default]
    Empty,
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// On the tensor-op path: a copy on the parameter's device.
    Tensor(Tensor),
}

/// `backup = p; p += a * g` in one parallel pass.
struct SaveAndAxpy<'a> {
    a: f64,
    backup: RefCell<&'a mut Backup>,
}

macro_rules! save_axpy {
    ($t:ty, $variant:ident, $p:expr, $g:expr, $backup:expr, $a:expr) => {{
        let b = match &mut **$backup {
            Backup::$variant(b) if b.len() == $p.len() => b,
            other => {
                *other = Backup::$variant(vec![0.0; $p.len()]);
                match other {
                    Backup::$variant(b) => b,
                    _ => candle_core::bail!("sam backup: internal type mismatch"),
                }
            }
        };
        let a = $a as $t;
        $p.par_chunks_mut(MIN_LEN).zip($g.par_chunks(MIN_LEN)).zip(b.par_chunks_mut(MIN_LEN)).for_each(
            |((p, g), b)| {
                b.copy_from_slice(p);
                p.iter_mut().zip(g).for_each(|(p, &g)| *p += a * g);
            },
        );
    }};
}

impl InplaceOp2 for SaveAndAxpy<'_> {
    fn name(&self) -> &'static str {
        "sam-save-axpy"
    }
    fn cpu_fwd(&self, p: &mut CpuStorage, pl: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
        let mut backup = self.backup.borrow_mut();
        match (p, g) {
            (CpuStorage::F32(p), CpuStorage::F32(g)) => {
                let (p, g) = (contiguous_mut(p, pl)?, contiguous(g, gl)?);
                if p.len() != g.len() {
                    candle_core::bail!("sam: gradient size mismatch");
                }
                save_axpy!(f32, F32, p, g, backup, self.a);
            }
            (CpuStorage::F64(p), CpuStorage::F64(g)) => {
                let (p, g) = (contiguous_mut(p, pl)?, contiguous(g, gl)?);
                if p.len() != g.len() {
                    candle_core::bail!("sam: gradient size mismatch");
                }
                save_axpy!(f64, F64, p, g, backup, self.a);
            }
            _ => candle_core::bail!("sam: f32 or f64 tensors of one dtype"),
        }
        Ok(())
    }
}

/// `p = backup` (parallel copy).
struct Restore<'a>(&'a Backup);

impl InplaceOp1 for Restore<'_> {
    fn name(&self) -> &'static str {
        "sam-restore"
    }
    fn cpu_fwd(&self, p: &mut CpuStorage, pl: &Layout) -> candle_core::Result<()> {
        match (p, self.0) {
            (CpuStorage::F32(p), Backup::F32(b)) => restore_from(contiguous_mut(p, pl)?, b)?,
            (CpuStorage::F64(p), Backup::F64(b)) => restore_from(contiguous_mut(p, pl)?, b)?,
            _ => candle_core::bail!("sam restore: no backup of this dtype"),
        }
        Ok(())
    }
}

/// Copies the saved parameters back, in parallel.
fn restore_from<T: Copy + Send + Sync>(p: &mut [T], b: &[T]) -> candle_core::Result<()> {
    if p.len() != b.len() {
        candle_core::bail!("sam restore: size mismatch");
    }
    p.par_chunks_mut(MIN_LEN).zip(b.par_chunks(MIN_LEN)).for_each(|(p, b)| p.copy_from_slice(b));
    Ok(())
}

fn axpy(v: &Var, g: &Tensor, a: f64, path: OpPath) -> Result<()> {
    let g = g.contiguous()?;
    if g.shape() != v.shape() {
        return Err(LearnError::Invalid(format!("gradient shape {:?} != parameter {:?}", g.shape(), v.shape())));
    }
    if path.fused_on(v.device()) {
        v.as_tensor().inplace_op2(&g, &Axpy(a))?;
    } else {
        v.set(&v.as_tensor().add(&g.detach().affine(a, 0.0)?)?)?;
    }
    Ok(())
}

/// Adam's update from tensor ops (any device): the formula of [`adam::adam_f32`], with its
/// constants rounded to the parameter's type the same way (`1 - b1` computed in that type).
fn adam_tensor_ops(p: &Var, g: &Tensor, m: &mut Tensor, v: &mut Tensor, k: AdamStep) -> Result<()> {
    let r = |x: f64| if p.dtype() == DType::F32 { x as f32 as f64 } else { x };
    let one_minus = |b: f64| if p.dtype() == DType::F32 { (1.0f32 - b as f32) as f64 } else { 1.0 - b };
    let g = g.detach().affine(r(k.scale), 0.0)?;
    *m = m.affine(r(k.b1), 0.0)?.add(&g.affine(one_minus(k.b1), 0.0)?)?;
    *v = v.affine(r(k.b2), 0.0)?.add(&g.sqr()?.affine(one_minus(k.b2), 0.0)?)?;
    let bc2s = Tensor::new(k.bc2_sqrt, p.device())?.to_dtype(p.dtype())?;
    let denom = v.sqrt()?.broadcast_div(&bc2s)?.affine(1.0, r(k.eps))?;
    p.set(&p.as_tensor().sub(&m.affine(r(k.step_size), 0.0)?.div(&denom)?)?)?;
    Ok(())
}

/// Adam moments for one parameter, in the parameter's dtype.
enum Moments {
    F32(Vec<f32>, Vec<f32>),
    F64(Vec<f64>, Vec<f64>),
    /// On the tensor-op path: tensors on the parameter's device.
    Tensor(Tensor, Tensor),
}

/// The constants of one Adam update.
#[derive(Clone, Copy)]
struct AdamStep {
    step_size: f64,
    bc2_sqrt: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    scale: f64,
}

struct AdamKernel<'a> {
    mom: RefCell<&'a mut Moments>,
    k: AdamStep,
}

macro_rules! adam_body {
    ($t:ty, $p:expr, $g:expr, $m:expr, $v:expr, $k:expr, $chunk:expr) => {{
        let k = adam::AdamConsts::<$t> {
            b1: $k.b1 as $t,
            b2: $k.b2 as $t,
            eps: $k.eps as $t,
            step: $k.step_size as $t,
            bc2s: $k.bc2_sqrt as $t,
            scale: $k.scale as $t,
        };
        $p.par_chunks_mut(MIN_LEN)
            .zip($g.par_chunks(MIN_LEN))
            .zip($m.par_chunks_mut(MIN_LEN))
            .zip($v.par_chunks_mut(MIN_LEN))
            .for_each(|(((p, g), m), v)| $chunk(p, g, m, v, k));
    }};
}

impl InplaceOp2 for AdamKernel<'_> {
    fn name(&self) -> &'static str {
        "adam"
    }
    fn cpu_fwd(&self, p: &mut CpuStorage, pl: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
        let mut mom = self.mom.borrow_mut();
        match (p, g, &mut **mom) {
            (CpuStorage::F32(p), CpuStorage::F32(g), Moments::F32(m, v)) => {
                let (p, g) = (contiguous_mut(p, pl)?, contiguous(g, gl)?);
                if p.len() != m.len() || g.len() != p.len() {
                    candle_core::bail!("adam: state size mismatch");
                }
                adam_body!(f32, p, g, m, v, self.k, adam::adam_f32);
            }
            (CpuStorage::F64(p), CpuStorage::F64(g), Moments::F64(m, v)) => {
                let (p, g) = (contiguous_mut(p, pl)?, contiguous(g, gl)?);
                if p.len() != m.len() || g.len() != p.len() {
                    candle_core::bail!("adam: state size mismatch");
                }
                adam_body!(f64, p, g, m, v, self.k, adam::adam_f64);
            }
            _ => candle_core::bail!("adam: f32 or f64 parameters, gradients and state of one dtype"),
        }
        Ok(())
    }
}

/// Adam (PyTorch's formulation, no weight decay), updating parameters in place.
pub struct Adam {
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    t: u64,
    moments: Vec<Moments>,
    path: OpPath,
}

impl Adam {
    /// Adam on the usual op path for the parameters' device ([`OpPath::for_device`]).
    pub fn new(vars: &[Var], lr: f64, b1: f64, b2: f64, eps: f64) -> Result<Self> {
        Self::on_path(vars, lr, b1, b2, eps, path_of(vars))
    }

    /// Adam whose updates run on `path` (fused in-place kernels on CPU storage, tensor ops otherwise).
    pub fn on_path(vars: &[Var], lr: f64, b1: f64, b2: f64, eps: f64, path: OpPath) -> Result<Self> {
        let moments = vars.iter().map(|v| zero_moments(v, path)).collect::<Result<Vec<_>>>()?;
        Ok(Self { lr, b1, b2, eps, t: 0, moments, path })
    }
}

/// The op path for parameters on their device (that of the first).
fn path_of(vars: &[Var]) -> OpPath {
    vars.first().map_or(OpPath::Fused, |v| OpPath::for_device(v.device()))
}

fn zero_moments(v: &Var, path: OpPath) -> Result<Moments> {
    let n = v.elem_count();
    match v.dtype() {
        DType::F32 | DType::F64 if !path.fused_on(v.device()) => {
            Ok(Moments::Tensor(v.as_tensor().zeros_like()?, v.as_tensor().zeros_like()?))
        }
        DType::F32 => Ok(Moments::F32(vec![0.0; n], vec![0.0; n])),
        DType::F64 => Ok(Moments::F64(vec![0.0; n], vec![0.0; n])),
        d => Err(LearnError::Invalid(format!("parameters must be f32 or f64, got {d:?}"))),
    }
}

impl BaseOptimizer for Adam {
    fn apply(&mut self, vars: &[Var], grads: &[Tensor], scale: f64) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.b1.powi(t);
        let bc2 = 1.0 - self.b2.powi(t);
        for ((v, g), mom) in vars.iter().zip(grads).zip(self.moments.iter_mut()) {
            let g = g.contiguous()?;
            let k = AdamStep {
                step_size: self.lr / bc1,
                bc2_sqrt: bc2.sqrt(),
                b1: self.b1,
                b2: self.b2,
                eps: self.eps,
                scale,
            };
            match mom {
                Moments::Tensor(m, mv) => adam_tensor_ops(v, &g, m, mv, k)?,
                _ => v.as_tensor().inplace_op2(&g, &AdamKernel { mom: RefCell::new(mom), k })?,
            }
        }
        Ok(())
    }

    fn steps(&self) -> u64 {
        self.t
    }

    fn state(&self, names: &[String]) -> Result<OptimState> {
        let mut tensors = Vec::with_capacity(2 * names.len());
        for (name, mom) in names.iter().zip(&self.moments) {
            let (m, v) = match mom {
                Moments::F32(m, v) => (
                    Tensor::new(m.as_slice(), &candle_core::Device::Cpu)?,
                    Tensor::new(v.as_slice(), &candle_core::Device::Cpu)?,
                ),
                Moments::F64(m, v) => (
                    Tensor::new(m.as_slice(), &candle_core::Device::Cpu)?,
                    Tensor::new(v.as_slice(), &candle_core::Device::Cpu)?,
                ),
                Moments::Tensor(m, v) => (
                    m.flatten_all()?.to_device(&candle_core::Device::Cpu)?,
                    v.flatten_all()?.to_device(&candle_core::Device::Cpu)?,
                ),
            };
            tensors.push((format!("adam.m.{name}"), m));
            tensors.push((format!("adam.v.{name}"), v));
        }
        Ok(OptimState { tensors, step: self.t })
    }

    fn load_state(
        &mut self,
        names: &[String],
        vars: &[Var],
        tensors: &HashMap<String, Tensor>,
        step: u64,
    ) -> Result<()> {
        let mut moments = Vec::with_capacity(names.len());
        for (name, var) in names.iter().zip(vars) {
            let get = |k: String| tensors.get(&k).ok_or_else(|| LearnError::Invalid(format!("checkpoint lacks {k}")));
            let (m, v) = (get(format!("adam.m.{name}"))?, get(format!("adam.v.{name}"))?);
            if m.elem_count() != var.elem_count() || v.elem_count() != var.elem_count() {
                return Err(LearnError::Invalid(format!("checkpoint moments of {name} have the wrong size")));
            }
            moments.push(match var.dtype() {
                DType::F32 | DType::F64 if !self.path.fused_on(var.device()) => {
                    let on = |t: &Tensor| -> Result<Tensor> {
                        Ok(t.to_dtype(var.dtype())?.reshape(var.shape())?.to_device(var.device())?)
                    };
                    Moments::Tensor(on(m)?, on(v)?)
                }
                DType::F32 => Moments::F32(
                    m.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
                    v.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
                ),
                DType::F64 => Moments::F64(
                    m.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?,
                    v.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?,
                ),
                d => return Err(LearnError::Invalid(format!("parameters must be f32 or f64, got {d:?}"))),
            });
        }
        self.moments = moments;
        self.t = step;
        Ok(())
    }
}

/// Plain SGD `theta -= lr * g` (used to check MG against the paper's Algorithm 1).
pub struct Sgd {
    pub lr: f64,
    t: u64,
}

impl Sgd {
    pub fn new(lr: f64) -> Self {
        Self { lr, t: 0 }
    }
}

impl BaseOptimizer for Sgd {
    fn apply(&mut self, vars: &[Var], grads: &[Tensor], scale: f64) -> Result<()> {
        self.t += 1;
        for (v, g) in vars.iter().zip(grads) {
            axpy(v, g, -self.lr * scale, OpPath::Fused)?;
        }
        Ok(())
    }
    fn steps(&self) -> u64 {
        self.t
    }
    fn state(&self, _names: &[String]) -> Result<OptimState> {
        Ok(OptimState { tensors: vec![], step: self.t })
    }
    fn load_state(&mut self, _: &[String], _: &[Var], _: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        self.t = step;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

/// Any strategy of [`OptimKind`] over a pluggable [`BaseOptimizer`].
pub struct Composite {
    kind: OptimKind,
    params: OptimParams,
    names: Vec<String>,
    vars: Vec<Var>,
    base: Box<dyn BaseOptimizer>,
    grad_evals: u64,
    /// Reused copies of the parameters for SAM's restore (allocated on first use).
    backups: Vec<Backup>,
    /// Where SAM's save / perturb / restore run (fused in-place kernels or tensor ops).
    path: OpPath,
}

/// Builds `kind` over Adam (the MMRec setting), on the op path for the parameters' device.
pub fn build(kind: OptimKind, params: &OptimParams, named_vars: Vec<(String, Var)>) -> Result<Composite> {
    let vars: Vec<Var> = named_vars.iter().map(|(_, v)| v.clone()).collect();
    build_on(kind, params, named_vars, path_of(&vars))
}

/// As [`build`], with every update on `path`.
pub fn build_on(
    kind: OptimKind,
    params: &OptimParams,
    named_vars: Vec<(String, Var)>,
    path: OpPath,
) -> Result<Composite> {
    let vars: Vec<Var> = named_vars.iter().map(|(_, v)| v.clone()).collect();
    let adam = Adam::on_path(&vars, params.lr, params.beta1, params.beta2, params.eps, path)?;
    Ok(Composite::new(kind, params, named_vars, Box::new(adam))?.with_path(path))
}

impl Composite {
    pub fn new(
        kind: OptimKind,
        params: &OptimParams,
        named_vars: Vec<(String, Var)>,
        base: Box<dyn BaseOptimizer>,
    ) -> Result<Self> {
        if params.beta == 0 {
            return Err(LearnError::Invalid("MG beta must be >= 1".into()));
        }
        let (names, vars): (Vec<String>, Vec<Var>) = named_vars.into_iter().unzip();
        let path = path_of(&vars);
        Ok(Self { kind, params: params.clone(), names, vars, base, grad_evals: 0, backups: vec![], path })
    }

    /// SAM's updates on `path` (the base optimiser keeps its own).
    pub fn with_path(mut self, path: OpPath) -> Self {
        self.path = path;
        self
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Base optimiser steps taken (MG mirror batches count two).
    pub fn base_steps(&self) -> u64 {
        self.base.steps()
    }

    fn grads(&mut self, lg: LossGrads) -> Result<Vec<Tensor>> {
        self.grad_evals += 1;
        if let Some(g) = lg.grads {
            if g.len() != self.vars.len() {
                return Err(LearnError::Invalid(format!("{} gradients for {} parameters", g.len(), self.vars.len())));
            }
            return Ok(g);
        }
        let gs = lg.loss.backward()?;
        self.vars
            .iter()
            .map(|v| match gs.get(v.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => Ok(v.as_tensor().zeros_like()?),
            })
            .collect()
    }

    /// SAM gradient at the current point, given the plain gradient `g` there.
    fn sam_grad(&mut self, loss_fn: &mut dyn FnMut() -> Result<LossGrads>, g: &[Tensor]) -> Result<Vec<Tensor>> {
        let norm = global_norm(g)?;
        let a = self.params.rho / (norm + 1e-12);
        if self.backups.len() != self.vars.len() {
            self.backups = self.vars.iter().map(|_| Backup::Empty).collect();
        }
        if let Some((v, g)) = self.vars.iter().zip(g).find(|(v, g)| g.shape() != v.shape()) {
            return Err(LearnError::Invalid(format!("gradient shape {:?} != parameter {:?}", g.shape(), v.shape())));
        }
        // save the point and perturb it in one pass per parameter
        for ((v, g), b) in self.vars.iter().zip(g).zip(self.backups.iter_mut()) {
            let g = g.contiguous()?;
            if self.path.fused_on(v.device()) {
                v.as_tensor().inplace_op2(&g, &SaveAndAxpy { a, backup: RefCell::new(b) })?;
            } else {
                *b = Backup::Tensor(v.as_tensor().copy()?);
                axpy(v, &g, a, OpPath::TensorOps)?;
            }
        }
        let res = loss_fn().and_then(|l| self.grads(l));
        // restore (an exact copy) even when the perturbed evaluation failed
        for (v, b) in self.vars.iter().zip(&self.backups) {
            match b {
                Backup::Tensor(t) => v.set(t)?,
                _ => v.as_tensor().inplace_op1(&Restore(b))?,
            }
        }
        res
    }
}

/// `sqrt(sum_i ||g_i||^2)` over all tensors.
pub fn global_norm(g: &[Tensor]) -> Result<f64> {
    let mut s = 0f64;
    for t in g {
        s += sum_sq(t)?;
    }
    Ok(s.sqrt())
}

/// `sum(x^2)` in f64 with eight independent lanes (so the compiler can vectorise it).
fn lane_sum_sq<T: Copy + Into<f64>>(c: &[T]) -> f64 {
    let mut acc = [0f64; 8];
    let mut it = c.chunks_exact(8);
    for ch in &mut it {
        for (a, &x) in acc.iter_mut().zip(ch) {
            let x: f64 = x.into();
            *a += x * x;
        }
    }
    let tail: f64 = it.remainder().iter().map(|&x| x.into() * x.into()).sum();
    acc.iter().sum::<f64>() + tail
}

/// `sum(t^2)` in f64; one parallel pass over CPU storage, candle ops otherwise.
fn sum_sq(t: &Tensor) -> Result<f64> {
    {
        let (st, l) = t.storage_and_layout();
        if let (candle_core::Storage::Cpu(c), Some((a, b))) = (&*st, l.contiguous_offsets()) {
            match c {
                CpuStorage::F32(v) => return Ok(v[a..b].par_chunks(MIN_LEN).map(lane_sum_sq).sum()),
                CpuStorage::F64(v) => return Ok(v[a..b].par_chunks(MIN_LEN).map(lane_sum_sq).sum()),
                _ => {}
            }
        }
    }
    Ok(t.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

impl Optimizer for Composite {
    fn step_with(&mut self, loss_fn: &mut dyn FnMut() -> Result<LossGrads>, batch_index: usize) -> Result<f32> {
        let mirror = self.kind.uses_mirror() && batch_index.is_multiple_of(self.params.beta);
        let lg = loss_fn()?;
        let value = lg.loss.to_dtype(DType::F64)?.to_scalar::<f64>()? as f32;
        if !value.is_finite() {
            return Err(LearnError::Invalid(format!("loss is {value} at batch {batch_index}")));
        }
        let g = self.grads(lg)?;
        let sam_descent = match self.kind {
            OptimKind::Adam | OptimKind::Mg => false,
            OptimKind::Sam | OptimKind::Sgbd(Variant::S1) | OptimKind::Sgbd(Variant::M2) => true,
            OptimKind::Sgbd(Variant::S2) => mirror,
        };
        let g = if sam_descent { self.sam_grad(loss_fn, &g)? } else { g };
        if !mirror {
            self.base.apply(&self.vars, &g, 1.0)?;
            return Ok(value);
        }
        self.base.apply(&self.vars, &g, self.params.alpha1)?;
        drop(g);
        let l2 = loss_fn()?;
        let g2 = self.grads(l2)?;
        let g2 = if self.kind == OptimKind::Sgbd(Variant::M2) { self.sam_grad(loss_fn, &g2)? } else { g2 };
        self.base.apply(&self.vars, &g2, -self.params.alpha2)?;
        Ok(value)
    }

    fn grad_evals(&self) -> u64 {
        self.grad_evals
    }

    fn kind(&self) -> OptimKind {
        self.kind
    }

    fn state(&self) -> Result<OptimState> {
        self.base.state(&self.names)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        self.base.load_state(&self.names, &self.vars, tensors, step)
    }
}
