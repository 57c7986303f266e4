//! Every test that starts a process (the sgbd-edge binary, mosquitto, mount, sh), by area.
//! In-process tests are in `tests/integration`.
//!
//! All of them run in this one process, two at a time (libtest's threads): each test takes its turn
//! first, `harness::exclusive()` where it measures time, latency or memory, floods the machine or
//! counts on its timing, `harness::shared()` otherwise.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The in-process tests' part of the harness (gradient checks, the multimodal view) is unused here.
#[allow(dead_code)]
#[path = "../harness/mod.rs"]
mod harness;

/// The command line: one subcommand at a time, exit codes and output.
mod cli {
    mod capture;
    mod config;
    mod denoise;
    mod doctor;
    mod import;
    mod kiosk;
    mod train;
}
/// SIGKILL during ingest, a full or read-only data directory.
mod crash {
    mod disk;
    mod kill;
}
/// `sgbd-edge run`: MQTT, mosquitto, systemd notifications, the learning loop, the Python kiosk
/// example, the shelf pipeline.
mod daemon {
    mod mosquitto;
    mod mqtt;
    mod notify;
    mod online;
    mod paho;
    mod shelf;
}
mod mqtt {
    mod link;
}
/// Broker outage, a slow kiosk, other processes on the store.
mod netfault {
    mod outage;
    mod slow_kiosk;
    mod store_locks;
}
/// The Debian package's pieces agree (sh -n on the maintainer scripts).
mod packaging;
/// TLS, credentials and ACLs on mosquitto; the per-kiosk rate limit.
mod security {
    mod ratelimit;
    mod tls;
}
/// A short soak of the daemon under kiosk load.
mod soak;
