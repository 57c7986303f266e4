//! Benchmarks behind `sgbd-edge bench ...`: each prints a table and can write JSON.

pub mod caption;
pub mod capture;
pub mod embed;
pub mod online;
pub mod serve;
pub mod soak;
pub mod train;
