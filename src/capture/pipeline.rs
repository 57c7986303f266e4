//! Capture pipeline (being built).
