//! The store on a real file: migrations, refusing bad files untouched, reopen durability, model
//! status exclusivity, one writer with concurrent readers.

use sgbd_edge::store::{migrations, Event, EventKind, ModelStatus, NewModelVersion, Store, StoreError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn ev(id: String, user: &str, sku: &str, kind: EventKind, ts: i64) -> Event {
    Event { event_id: id, user: user.into(), sku: sku.into(), kind, ts_ms: ts, kiosk: None }
}

/// A database file with a few hundred rows (several pages), closed (WAL checkpointed).
fn populated_db(path: &Path) {
    let mut s = Store::open(path, 1000).unwrap();
    let evs: Vec<Event> = (0..2000)
        .map(|i| ev(format!("e{i}"), &format!("user-{}", i % 97), &format!("sku-{}", i % 31), EventKind::View, i))
        .collect();
    assert_eq!(s.insert_events(&evs).unwrap(), 2000);
    drop(s);
    assert!(!Path::new(&format!("{}-wal", path.display())).exists(), "WAL removed on close");
}

fn assert_refused_untouched(path: &Path) {
    let before = std::fs::read(path).unwrap();
    match Store::open(path, 1000) {
        Err(StoreError::NotSqlite { path: p, reason }) => {
            assert_eq!(p, path);
            let msg = StoreError::NotSqlite { path: p.clone(), reason }.to_string();
            assert!(msg.contains(&path.display().to_string()), "message names the file: {msg}");
        }
        Err(e) => panic!("expected NotSqlite, got {e}"),
        Ok(_) => panic!("a bad file was opened"),
    }
    assert_eq!(std::fs::read(path).unwrap(), before, "bytes unchanged after the failed open");
    for suffix in ["-wal", "-shm", "-journal"] {
        assert!(!Path::new(&format!("{}{suffix}", path.display())).exists(), "no {suffix} file created");
    }
}

#[test]
fn migrations_from_empty_create_every_table_and_parent_dir() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/sgbd.db");
    let s = Store::open(&path, 1000).unwrap();
    assert_eq!(s.schema_version().unwrap(), migrations::LATEST);
    assert_eq!(s.integrity_check().unwrap(), "ok");
    drop(s);
    let c = rusqlite::Connection::open(&path).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        ["held_interactions", "images", "interactions", "item_features", "items", "model_versions", "outbox"]
    );
    let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, migrations::LATEST);
    drop(c);
    // Reopening an up-to-date database applies nothing and keeps the version.
    assert_eq!(Store::open(&path, 1000).unwrap().schema_version().unwrap(), migrations::LATEST);
}

#[test]
fn newer_schema_is_refused_and_left_alone() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sgbd.db");
    drop(Store::open(&path, 1000).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", migrations::LATEST + 1).unwrap();
    c.pragma_update(None, "journal_mode", "DELETE").unwrap();
    drop(c);
    let before = std::fs::read(&path).unwrap();
    match Store::open(&path, 1000) {
        Err(StoreError::SchemaTooNew { found, known }) => {
            assert_eq!((found, known), (migrations::LATEST + 1, migrations::LATEST));
        }
        Err(e) => panic!("expected SchemaTooNew, got {e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn non_sqlite_files_are_refused_untouched() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "this is a text file, not a database\n".repeat(200)).unwrap();
    assert_refused_untouched(&text);
    let tiny = dir.path().join("tiny.db");
    std::fs::write(&tiny, b"SQLite format 3\0abc").unwrap();
    assert_refused_untouched(&tiny);
    let mut header_only = b"SQLite format 3\0".to_vec();
    header_only.resize(4096, 0xAB); // right magic, garbage after it
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, &header_only).unwrap();
    assert_refused_untouched(&garbage);
    assert!(matches!(Store::open(dir.path(), 1000), Err(StoreError::NotSqlite { .. })), "a directory");
}

#[test]
fn another_applications_database_is_refused_untouched() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE items (name TEXT); INSERT INTO items VALUES ('x');").unwrap();
    drop(c);
    assert_refused_untouched(&path);
}

#[test]
fn truncated_database_is_refused_untouched() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.db");
    populated_db(&good);
    let bytes = std::fs::read(&good).unwrap();
    assert!(bytes.len() >= 8 * 4096, "test needs a multi-page file, got {} bytes", bytes.len());
    // Cut mid-page, at a page boundary, and inside the header.
    for (name, len) in [("mid.db", bytes.len() / 2 + 100), ("page.db", 2 * 4096), ("head.db", 60)] {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes[..len]).unwrap();
        assert_refused_untouched(&p);
    }
    // The original still opens and holds its rows.
    assert_eq!(Store::open(&good, 1000).unwrap().counts().unwrap().interactions, 2000);
}

#[test]
fn corrupt_page_is_found_by_integrity_check() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sgbd.db");
    populated_db(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    // Scribble over the last page (an index or table leaf), keeping the length.
    let n = bytes.len();
    for b in &mut bytes[n - page + 8..n - 8] {
        *b = 0x5A;
    }
    std::fs::write(&path, &bytes).unwrap();
    let s = Store::open(&path, 1000).unwrap();
    let report = s.integrity_check().unwrap();
    assert_ne!(report, "ok", "integrity_check must notice the scribbled page");
}

#[test]
fn outbox_and_events_survive_reopen() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sgbd.db");
    let ids = {
        let s = Store::open(&path, 1000).unwrap();
        let a = s.outbox_push("sgbd/s/n/status", b"online", 1, true).unwrap();
        let b = s.outbox_push("sgbd/s/n/stats", b"{\"x\":1}", 0, false).unwrap();
        let c = s.outbox_push("sgbd/s/n/events/ack", b"e1", 1, false).unwrap();
        s.outbox_ack(b).unwrap();
        assert!(s.insert_event(&ev("k1".into(), "u", "a", EventKind::Cart, 7)).unwrap());
        // Dropped without checkpoint: the rows must come back from the WAL / main file.
        (a, c)
    };
    let s = Store::open(&path, 1000).unwrap();
    let rows = s.outbox_peek(10).unwrap();
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [ids.0, ids.1]);
    assert_eq!((rows[0].payload.as_slice(), rows[0].retain, rows[0].qos), (&b"online"[..], true, 1));
    assert_eq!(s.outbox_len().unwrap(), 2);
    assert!(!s.insert_event(&ev("k1".into(), "u", "a", EventKind::Cart, 7)).unwrap(), "still a duplicate after reopen");
    let next = s.outbox_push("t", b"", 0, false).unwrap();
    assert!(next > ids.1, "ids keep increasing across reopen");
}

#[test]
fn model_activation_is_exclusive_across_connections() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sgbd.db");
    let a = Store::open(&path, 2000).unwrap();
    let b = Store::open(&path, 2000).unwrap();
    let mv = |v: &str| NewModelVersion {
        version: v.into(),
        path: format!("registry/{v}"),
        sha256: "00".repeat(32),
        metrics: serde_json::json!({"ndcg@20": 0.03}),
        parent: None,
        status: ModelStatus::Candidate,
    };
    for v in ["v1", "v2", "v3"] {
        a.insert_model_version(&mv(v)).unwrap();
    }
    a.set_model_status("v1", ModelStatus::Active).unwrap();
    b.set_model_status("v2", ModelStatus::Active).unwrap();
    a.set_model_status("v3", ModelStatus::Rejected).unwrap();
    for s in [&a, &b] {
        let all = s.model_versions().unwrap();
        let active: Vec<_> =
            all.iter().filter(|m| m.status == ModelStatus::Active).map(|m| m.version.as_str()).collect();
        assert_eq!(active, ["v2"]);
        assert_eq!(all[0].status, ModelStatus::Retired);
        assert_eq!(all[2].status, ModelStatus::Rejected);
    }
    // The database itself refuses a second active row, even written behind the store's back.
    let raw = rusqlite::Connection::open(&path).unwrap();
    assert!(raw.execute("UPDATE model_versions SET status = 'active' WHERE version = 'v1'", []).is_err());
}

#[test]
fn one_writer_and_readers_see_whole_batches_without_busy_errors() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sgbd.db");
    drop(Store::open(&path, 5000).unwrap());
    const BATCHES: usize = 150;
    const PER: usize = 40;
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(std::sync::Barrier::new(4));
    let writer = {
        let path = path.clone();
        let done = done.clone();
        let start = start.clone();
        std::thread::spawn(move || {
            let mut s = Store::open(&path, 5000).unwrap();
            start.wait();
            for b in 0..BATCHES {
                std::thread::sleep(std::time::Duration::from_millis(1));
                let evs: Vec<Event> = (0..PER)
                    .map(|i| {
                        ev(
                            format!("b{b}-{i}"),
                            &format!("u{}", i % 7),
                            &format!("s{}", (b + i) % 13),
                            EventKind::Scan,
                            (b * PER + i) as i64,
                        )
                    })
                    .collect();
                assert_eq!(s.insert_events(&evs).unwrap(), PER);
                s.outbox_push("t", &[b as u8], 1, false).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let path = path.clone();
            let done = done.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                let s = Store::open(&path, 5000).unwrap();
                start.wait();
                let (mut last_count, mut pos, mut seen, mut partial) = (0u64, 0i64, 0usize, 0usize);
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let c = s.counts().unwrap();
                    assert_eq!(c.interactions % PER as u64, 0, "reader {r} saw a partial batch: {}", c.interactions);
                    assert!(c.interactions >= last_count, "counts never go back");
                    last_count = c.interactions;
                    if c.interactions > 0 && c.interactions < (BATCHES * PER) as u64 {
                        partial += 1;
                    }
                    let (new, p) = s.interactions_since(pos).unwrap();
                    seen += new.len();
                    pos = p;
                    let _ = s.popularity(None, 5).unwrap();
                    if finished {
                        break;
                    }
                }
                (seen, partial)
            })
        })
        .collect();
    writer.join().unwrap();
    let mut overlapped = 0;
    for r in readers {
        let (seen, partial) = r.join().unwrap();
        assert_eq!(seen, BATCHES * PER, "each reader paged through every event once");
        overlapped += partial;
    }
    assert!(overlapped > 0, "readers ran while the writer was writing");
    let s = Store::open(&path, 5000).unwrap();
    let c = s.counts().unwrap();
    assert_eq!((c.interactions, c.outbox, c.users), ((BATCHES * PER) as u64, BATCHES as u64, 7));
}

#[test]
fn two_writers_wait_for_each_other_instead_of_failing() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sgbd.db");
    drop(Store::open(&path, 5000).unwrap());
    let handles: Vec<_> = (0..2)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut s = Store::open(&path, 5000).unwrap();
                for b in 0..60 {
                    let evs: Vec<Event> =
                        (0..10).map(|i| ev(format!("w{w}-{b}-{i}"), "u", "s", EventKind::View, i)).collect();
                    s.insert_events(&evs).unwrap();
                    s.insert_event(&ev(format!("w{w}-{b}-single"), "u", "s", EventKind::View, 0)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(Store::open(&path, 5000).unwrap().counts().unwrap().interactions, 2 * 60 * 11);
}

#[test]
fn schema_1_database_migrates_keeping_rows_and_scoping_event_ids_per_kiosk() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sgbd.db");
    {
        // A database as schema 1 wrote it, with one kiosk event and one imported one.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(migrations::MIGRATIONS[0]).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute_batch(
            "INSERT INTO items (sku, title, created_ms, updated_ms) VALUES ('a', 'A', 1, 1);
             INSERT INTO interactions (id, event_id, user, sku, kind, ts_ms, kiosk, split, received_ms)
             VALUES (7, 'e1', 'u', 'a', 'view', 5, 'k1', NULL, 9), (8, 'inter:x:1:2', 'u', 'a', 'cart', 6, NULL, 0, 9);",
        )
        .unwrap();
    }
    let mut s = Store::open(&path, 1000).unwrap();
    assert_eq!(s.schema_version().unwrap(), migrations::LATEST);
    let (rows, last) = s.interactions_since(0).unwrap();
    assert_eq!(rows.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(), ["e1", "inter:x:1:2"]);
    assert_eq!(last, 8, "arrival positions kept");
    assert_eq!(s.interactions_with_split().unwrap()[1].1, Some(0));
    // Another kiosk may now use the same id; the same kiosk may not.
    let ev = |kiosk: &str| sgbd_edge::store::Event {
        event_id: "e1".into(),
        user: "u".into(),
        sku: "a".into(),
        kind: sgbd_edge::store::EventKind::View,
        ts_ms: 5,
        kiosk: Some(kiosk.into()),
    };
    use sgbd_edge::store::Ingested;
    assert_eq!(s.ingest(&[ev("k1"), ev("k2")]).unwrap(), vec![Ingested::Duplicate, Ingested::New]);
    assert_eq!(s.integrity_check().unwrap(), "ok");
}
