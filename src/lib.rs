//! sgbd-edge: an in-store edge appliance.
//!
//! Data flows capture -> denoise -> store -> learn -> serve (see `docs/architecture.md`):
//! - [`capture`]: camera sources and planogram crops,
//! - [`denoise`]: BLIP captioning, description cleaning, MiniLM / BLIP features,
//! - [`store`]: the SQLite store (catalogue, interactions, features, model versions, outbox),
//! - [`learn`]: multimodal recommenders trained with SGBD (SAM inside Mirror Gradient),
//! - [`registry`]: versioned recommender models, promotion and rollback,
//! - [`online`]: the on-device learning loop: fine-tune rounds, promotion gate, serving a trained model,
//! - [`serve`]: ranking for kiosk requests,
//! - [`mqtt`]: the versioned MQTT contract, embedded broker, client with durable outbox, fleet sync,
//! - [`daemon`]: the running appliance (tokio stages, systemd notify, signals),
//! - [`doctor`]: the technician's self-test and status report,
//! - [`config`]: the one typed TOML file,
//! - [`kernels`]: the hand-written SIMD and `unsafe` numeric kernels (GELU, softmax, int8 and f32
//!   products, attention, sparse rows, Adam), one CPU detection for all; [`sys`]: the platform,
//! - [`cli`]: subcommands of the `sgbd-edge` binary, [`mod@bench`]: benchmarks, [`demo`]: `run --demo`
//!   and the bundled demo shelf.

#![deny(unsafe_code)]

pub mod bench;
pub mod capture;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod denoise;
pub mod device;
pub mod doctor;
#[allow(unsafe_code)]
pub mod kernels;
pub mod learn;
pub mod modelfiles;
pub mod mqtt;
pub mod online;
pub mod registry;
pub mod serve;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
pub mod telemetry;

/// Version of this software, as published in the MQTT birth document.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
