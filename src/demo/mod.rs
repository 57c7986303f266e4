//! The demo: what `run --demo` adds to the appliance and the bundled demo shelf, kept out of the
//! production modules (the daemon only starts it, from [`crate::daemon::run`] when
//! `DaemonOptions::demo` is set).
//!
//! - [`kiosk`]: the simulated kiosk that imports the demo catalogue and prints the replies,
//! - [`shelf`]: drops the bundled shelf pictures into the folder cameras,
//! - [`assets`]: the demo shelf composed from `assets/demo` (`capture compose-demo`, `bench capture`).

pub mod assets;
pub mod kiosk;
pub mod shelf;

/// Default location of the demo catalogue (relative to the working directory).
pub const DEMO_CATALOG: &str = "assets/demo/catalog.csv";
