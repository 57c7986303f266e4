//! Catalogue CSV and interaction imports (events CSV, MMRec `.inter`, id maps) on an in-memory
//! store: any file gives a summary with row errors, or an error, never a panic.
//!
//! One store serves many inputs (opening one runs the migrations, which cost more than most
//! imports): the summaries must add up whatever earlier inputs stored, and earlier rows make
//! duplicates and known SKUs happen. It is replaced every `REOPEN_EVERY` inputs to bound its size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sgbd_edge::store::{import, Store};
use std::sync::{Mutex, OnceLock};

const REOPEN_EVERY: u32 = 2000;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir for the fuzz target")).path()
}

fn shared() -> &'static Mutex<Option<(Store, u32)>> {
    static STORE: OnceLock<Mutex<Option<(Store, u32)>>> = OnceLock::new();
    STORE.get_or_init(|| Mutex::new(None))
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    let mut slot = shared().lock().unwrap_or_else(|p| p.into_inner());
    if slot.as_ref().is_none_or(|(_, uses)| *uses >= REOPEN_EVERY) {
        let Ok(fresh) = Store::open_in_memory() else { return };
        *slot = Some((fresh, 0));
    }
    let Some((store, uses)) = slot.as_mut() else { return };
    *uses += 1;
    let csv = d.join("input.csv");
    if std::fs::write(&csv, data).is_err() {
        return;
    }
    if let Ok(s) = import::import_catalog_csv(store, &csv) {
        assert_eq!(s.rows, s.inserted + s.duplicates + s.errors.len(), "catalogue summary does not add up: {s:?}");
    }
    // The same bytes as interactions (the header's tab decides events CSV or `.inter`), after the
    // catalogue, so that held and known SKUs both happen.
    let mut stored = false;
    if let Ok(s) = import::import_interactions(store, &csv) {
        assert_eq!(s.rows, s.inserted + s.duplicates + s.errors.len(), "interaction summary does not add up: {s:?}");
        stored = s.inserted > 0;
    }
    let _ = import::read_id_map(&csv, "itemID");
    // reading back what is stored (all of it: only when this input added rows, or now and then)
    if stored || *uses % 64 == 0 {
        let _ = store.interactions_with_split();
    }
});
