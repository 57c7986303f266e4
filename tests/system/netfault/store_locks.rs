//! Another process reading the database while the daemon runs (a technician's `doctor`, an
//! import, the fleet tooling) must not cost acknowledged events.
//!
//! Regression test for a lost-events bug found by `netfault::outage`: `Store::open` re-read the
//! database header through a second file descriptor on every open, and closing it dropped all of
//! the daemon's POSIX locks on the file (SQLite's included). The next process to close its last
//! connection then saw no other user, checkpointed and deleted the WAL under the running daemon,
//! whose later commits went to an unlinked file.

use crate::harness::daemon::*;
use crate::harness::mqtt::*;
use crate::harness::netfault::stored_counts;
use sgbd_edge::mqtt::kiosk::Protocol;
use std::time::Duration;

/// Files of the daemon's database it holds open although they were deleted.
fn deleted_db_files(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .filter(|p| p.contains("sgbd.db") && p.ends_with("(deleted)"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_process_reading_the_store_loses_no_acknowledged_event() {
    // Interleaves its reads with the daemon's once-a-second stats connection.
    let _turn = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    // Stats every second: the daemon opens a short-lived connection each time.
    let cfg = write_config(dir.path(), port, false, "");
    let db = dir.path().join("var/sgbd.db");
    let mut d = Daemon::spawn(&cfg);
    let k = kiosk_when_ready(port, "k1", Protocol::V5).await;
    let mut acked = Vec::new();
    for round in 0..5 {
        for i in 0..40 {
            let id = format!("lock-r{round}-e{i}");
            let r = k.event(&id, "u1", &format!("S{i}"), "view", Some(Duration::from_secs(5))).await.unwrap().unwrap();
            assert_eq!(r.json["stored"], true, "{}", r.json);
            acked.push(id);
        }
        // Let the daemon open (and close) its stats connection, then read the store from here
        // and close it again, as `sgbd-edge doctor` would.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let seen = stored_counts(&db);
        assert!(acked.iter().all(|id| seen.contains_key(id)), "round {round}: acknowledged events not visible");
        let deleted = deleted_db_files(d.pid());
        assert!(deleted.is_empty(), "round {round}: the daemon writes to deleted files: {deleted:?}");
    }
    d.signal(libc::SIGTERM);
    assert!(d.wait(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", d.log_text());
    let stored = stored_counts(&db);
    let lost: Vec<&String> = acked.iter().filter(|id| stored.get(*id) != Some(&1)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged events lost: {:?}", lost.len(), acked.len(), lost);
}
