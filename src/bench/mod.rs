//! Benchmarks behind `sgbd-edge bench ...`: each `run` measures against a baseline taken in the
//! same run and returns one [`Report`], which the command line prints (its table), writes as JSON
//! (`--json FILE`) and turns into the exit code ([`Report::passed`]). Progress goes to stderr.

pub mod caption;
pub mod capture;
pub mod embed;
pub mod online;
pub mod plot;
pub mod robustness;
pub mod serve;
pub mod soak;
pub mod train;

/// The result of one benchmark run: its table (`Display`) and its JSON (`Serialize`).
pub trait Report: serde::Serialize + std::fmt::Display {
    /// Whether the run met its targets; only benchmarks with a verdict (`bench soak`) say no.
    fn passed(&self) -> bool {
        true
    }
}
