//! Every in-process test (library calls, the embedded broker, the camera simulator on a pty), one
//! module per concern of `src/`. Tests that start processes are in `tests/system`.
//!
//! All of them run in this one process, two at a time (libtest's threads): each test takes its turn
//! first, `harness::exclusive()` where it counts on a quiet machine or sets process-wide state,
//! `harness::shared()` otherwise.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The system tests' part of the harness (daemon, brokers, network faults) is unused here.
#[allow(dead_code)]
#[path = "../harness/mod.rs"]
mod harness;

/// Every parser of outside data on arbitrary bytes and on `tests/corpus/`.
mod badinput;
mod capture {
    mod demo;
    mod pipeline;
    mod vc0706;
    mod vc0706_fuzz;
}
mod denoise {
    mod blip;
    mod minilm;
    mod pipeline;
}
mod doctor;
mod learn {
    mod checkpoint;
    mod data;
    mod eval;
    mod grad;
    mod op_paths;
    mod optim;
    mod planted;
    mod multimodal {
        mod experiments;
        mod hm_features;
        mod knn;
        mod models;
        mod npy;
        mod robustness;
    }
}
mod mqtt {
    mod link;
    mod tls;
    mod wrong_protocol;
}
mod online {
    mod bench_loop;
    mod learning_loop;
}
mod store {
    mod db;
    mod import;
}
mod telemetry;
