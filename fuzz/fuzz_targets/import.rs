//! Catalogue CSV and interaction imports (events CSV, MMRec `.inter`, id maps) on an in-memory
//! store: any file gives a summary with row errors, or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sgbd_edge::store::{import, Store};
use std::sync::OnceLock;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir for the fuzz target")).path()
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    let Ok(mut store) = Store::open_in_memory() else { return };
    let csv = d.join("input.csv");
    if std::fs::write(&csv, data).is_err() {
        return;
    }
    if let Ok(s) = import::import_catalog_csv(&mut store, &csv) {
        assert_eq!(s.rows, s.inserted + s.duplicates + s.errors.len(), "catalogue summary does not add up: {s:?}");
    }
    // The same bytes as interactions (the header's tab decides events CSV or `.inter`), after the
    // catalogue, so that held and known SKUs both happen.
    if let Ok(s) = import::import_interactions(&mut store, &csv) {
        assert_eq!(s.rows, s.inserted + s.duplicates + s.errors.len(), "interaction summary does not add up: {s:?}");
    }
    let _ = import::read_id_map(&csv, "itemID");
    let _ = store.interactions_with_split();
});
