//! Disk trouble: the data directory fills up, or turns read-only, under a running daemon. Events
//! then get a clear `internal` error reply (send again), requests are still answered from memory,
//! a restart while the disk is full still serves, writes work again by themselves once space is
//! back (the WAL does not keep the disk full), and the database is never corrupted.
//! Needs root to mount a 2 MiB tmpfs as the data directory; skipped visibly otherwise.

use crate::harness::daemon::{free_port_pair, seed_catalog, write_config, Daemon};
use crate::harness::mqtt::kiosk_when_ready;
use sgbd_edge::mqtt::kiosk::{KioskClient, Protocol};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).unwrap();
        if !sgbd_edge::sys::is_root() {
            eprintln!("skipping: mounting a tmpfs needs root");
            return None;
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipping: this environment does not allow mounting a tmpfs");
            return None;
        }
        Some(Mount(at.to_path_buf()))
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount").args(["-o", &format!("remount,{opts}")]).arg(&self.0).status().unwrap();
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Sends `n` events with acknowledgements; returns (stored ids, `internal` error count).
async fn send(k: &KioskClient, tag: &str, n: usize, pad: usize) -> (Vec<String>, usize) {
    let (mut stored, mut internal) = (Vec::new(), 0);
    // Padded ids fill the disk fast (each field stays within the contract's 256 bytes).
    let user = format!("u-{}", "x".repeat(pad.min(250)));
    for i in 0..n {
        let id = format!("{tag}-{i}-{}", "p".repeat(pad.min(200)));
        match k.event(&id, &user, &format!("sku{}", i % 7), "view", Some(Duration::from_secs(5))).await {
            Ok(Some(r)) if r.json["stored"] == true => stored.push(id),
            Ok(Some(r)) => {
                assert_eq!(r.error_code(), Some("internal"), "unexpected reply {}", r.json);
                assert!(r.json["error"]["message"].as_str().unwrap_or("").contains("disk"), "{}", r.json);
                internal += 1;
            }
            other => panic!("no acknowledgement for {id}: {:?}", other.map(|r| r.map(|r| r.json))),
        }
    }
    (stored, internal)
}

async fn assert_serves(k: &KioskClient) {
    let r = k.recommend("u1", Some(3), Duration::from_secs(5)).await.expect("request answered");
    assert!(r.error_code().is_none(), "{}", r.json);
}

fn fill(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if std::io::Write::write_all(&mut f, &block).is_err() {
            break;
        }
    }
    // The last partial block too.
    for _ in 0..64 {
        let _ = std::io::Write::write_all(&mut f, &block[..1024]);
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_or_read_only_data_dir_gives_errors_keeps_serving_and_corrupts_nothing() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(&dir.path().join("var"), "2M") else {
        return;
    };
    let port = free_port_pair();
    // A 2 MiB disk: refuse events under 192 KiB free, keep a 128 KiB reserve.
    let cfg_path =
        write_config(dir.path(), port, false, "\n[store]\nmin_free_bytes = 196608\nreserve_bytes = 131072\n");
    let cfg = sgbd_edge::config::Config::load(&cfg_path).unwrap();
    let skus: Vec<String> = (0..7).map(|i| format!("sku{i}")).collect();
    seed_catalog(&cfg_path, &skus.iter().map(String::as_str).collect::<Vec<_>>());
    let mut daemon = Daemon::spawn(&cfg_path);
    let k = kiosk_when_ready(port, "k1", Protocol::V5).await;
    let mut acked: HashSet<String> = HashSet::new();

    let (ok, err) = send(&k, "before", 30, 0).await;
    assert_eq!((ok.len(), err), (30, 0));
    acked.extend(ok);

    // Something else fills the disk: events are refused with a clear error, requests served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(mount.0.join(".space-reserve").is_file(), "no space reserve written at start");
    let filler = fill(&mount.0, "filler");
    let (ok, full_errors) = send(&k, "full", 150, 250).await;
    eprintln!("disk full: {} stored, {full_errors} refused with `internal`", ok.len());
    assert!(full_errors > 0, "a full disk never refused an event");
    acked.extend(ok);
    assert_serves(&k).await;

    // A restart while the disk is still full: the daemon starts and serves from memory.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", daemon.log_text());
    let log = daemon.log_text();
    assert!(log.contains("event batch not stored"), "no clear log line:\n{log}");
    drop(k);
    // (The clean stop checkpointed and removed the WAL: fill what that freed too.)
    let filler2 = fill(&mount.0, "filler2");
    let mut daemon = Daemon::spawn(&cfg_path);
    let k = kiosk_when_ready(port, "k1", Protocol::V5).await;
    assert_serves(&k).await;
    let (ok, refused) = send(&k, "full-again", 5, 250).await;
    assert_eq!(ok.len() + refused, 5);
    assert!(refused > 0, "a full disk accepted every event after a restart");
    acked.extend(ok);

    // Space back: writes work again without a restart, and the WAL does not keep the disk full.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&filler2).unwrap();
    let (ok, err) = send(&k, "after-full", 20, 0).await;
    assert_eq!((ok.len(), err), (20, 0), "writes did not resume after space came back");
    acked.extend(ok);
    let wal = std::fs::metadata(cfg.node.data_dir.join("sgbd.db-wal")).map(|m| m.len()).unwrap_or(0);
    let free = sgbd_edge::sys::disk_free_bytes(&mount.0).unwrap();
    eprintln!("after the full disk: WAL {wal} bytes, {free} bytes free");
    assert!(free > 1 << 20, "the disk stayed full after the filler went: {free} bytes free, WAL {wal}");

    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", daemon.log_text());
    drop(k);

    // Read-only data directory (Linux refuses an ro remount while the daemon holds files open for
    // writing, so the daemon starts on it): a clear start-up error, nothing changed.
    mount.remount("ro");
    let mut ro = Daemon::spawn(&cfg_path);
    let st = ro.wait(Duration::from_secs(20)).expect("daemon on a read-only data dir must exit, not hang");
    assert!(!st.success(), "daemon ran on a read-only data dir");
    let ro_log = ro.log_text();
    eprintln!("read-only start: {}", ro_log.lines().rfind(|l| l.contains("ERROR") || l.contains("rror")).unwrap_or(""));
    assert!(ro_log.contains("is not writable") && ro_log.contains("Read-only file system"), "unclear error:\n{ro_log}");
    mount.remount("rw");

    // Writable again: starts, keeps every event, accepts new ones.
    let mut daemon = Daemon::spawn(&cfg_path);
    let k = kiosk_when_ready(port, "k1", Protocol::V5).await;
    let (ok, err) = send(&k, "after-ro", 20, 0).await;
    assert_eq!((ok.len(), err), (20, 0), "writes did not resume after the remount");
    acked.extend(ok);
    assert_serves(&k).await;
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait(Duration::from_secs(15)).is_some_and(|s| s.success()), "{}", daemon.log_text());
    let store = sgbd_edge::store::open_config(&cfg).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let stored: HashSet<String> = store.interactions().unwrap().into_iter().map(|e| e.event_id).collect();
    assert!(store.held_interactions().unwrap().is_empty(), "every SKU is catalogued");
    let missing: Vec<&String> = acked.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    eprintln!("crash::disk: {} acknowledged events all stored, {full_errors} refused on a full disk", acked.len());
}
