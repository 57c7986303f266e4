//! Multimodal recommenders (MF-BPR, LightGCN, VBPR, FREEDOM) in candle, trained with SGBD
//! (sharpness-aware minimisation inside Mirror Gradient), with MMRec-comparable evaluation.
//!
//! - [`data`]: `.inter` files, store interactions, id maps, splits; [`sampler`]: negatives,
//! - [`dataset`]: what `train` / `bench train` read (`--data`, `--dataset`, `--from-store`, features),
//! - [`npy`]: feature files; [`corrupt`]: deliberate feature noise for robustness runs,
//! - [`sparse`]: the CSR sparse-dense product as a candle custom op with its backward,
//! - [`knn`]: FREEDOM's frozen item-item kNN graph, built in row blocks,
//! - [`model`]: the [`model::Recommender`] trait; [`mf`], [`lightgcn`], [`vbpr`], [`freedom`],
//! - [`optim`]: Adam, SAM, Mirror Gradient and SGBD as composable steps,
//! - [`eval`]: full-ranking Recall / NDCG / Precision; [`trainer`]: epochs, early stopping, reports,
//! - [`checkpoint`]: model and optimiser state in safetensors.

pub mod checkpoint;
pub mod corrupt;
pub mod data;
pub mod dataset;
pub mod eval;
pub mod freedom;
pub mod knn;
pub mod lightgcn;
pub mod mf;
pub mod model;
pub mod npy;
pub mod optim;
pub mod sampler;
pub mod sparse;
pub mod trainer;
pub mod vbpr;

/// Errors of the learning engine.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("i/o error on {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("bad data in {path}: {msg}")]
    Data { path: std::path::PathBuf, msg: String },
    #[error("store {path}: {source}")]
    Store { path: std::path::PathBuf, source: crate::store::StoreError },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, LearnError>;

/// Which implementation of the training ops runs: the fused CPU kernels (the CSR products of
/// [`sparse`], LightGCN's fused BPR loss, the optimisers' in-place updates) or candle tensor ops
/// with autograd (`index_select` + `index_add` for the sparse products), which run on any device,
/// CUDA included. [`OpPath::for_device`] picks the fused kernels on the CPU and tensor ops
/// elsewhere; the tests run both on the CPU and compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpPath {
    /// The hand-written CPU kernels where the tensors are on the CPU (tensor ops otherwise).
    #[default]
    Fused,
    /// candle tensor ops only, on whatever device the tensors are.
    TensorOps,
}

impl OpPath {
    /// Fused kernels on the CPU, tensor ops on any other device.
    pub fn for_device(device: &candle_core::Device) -> Self {
        if device.is_cpu() {
            OpPath::Fused
        } else {
            OpPath::TensorOps
        }
    }

    /// Whether the fused CPU kernel runs for a tensor on `device` under this path.
    pub fn fused_on(self, device: &candle_core::Device) -> bool {
        self == OpPath::Fused && device.is_cpu()
    }
}
