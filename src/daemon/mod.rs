//! The running appliance: tokio stages with bounded channels, systemd notify and watchdog,
//! signals, clean shutdown.
