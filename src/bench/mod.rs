//! Benchmarks behind `sgbd-edge bench ...`: each prints a table and can write JSON.

pub mod capture;
pub mod serve;
pub mod soak;
