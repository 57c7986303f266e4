//! Disk trouble: the data directory fills up, or turns read-only, under a running daemon. Events
//! then get a clear `internal` error reply (send again), requests are still answered from memory,
//! writes work again once space / write access is back, and the database is never corrupted.
//! Needs root to mount a 2 MiB tmpfs as the data directory; skipped visibly otherwise.

use crate::harness::daemon::{free_port_pair, write_config, Daemon};
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
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
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
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .unwrap();
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
    let user = format!("u-{}", "x".repeat(pad));
    for i in 0..n {
        let id = format!("{tag}-{i}");
        match k
            .event(
                &id,
                &user,
                &format!("sku{}", i % 7),
                "view",
                Some(Duration::from_secs(5)),
            )
            .await
        {
            Ok(Some(r)) if r.json["stored"] == true => stored.push(id),
            Ok(Some(r)) => {
                assert_eq!(r.error_code(), Some("internal"), "unexpected reply {}", r.json);
                internal += 1;
            }
            other => panic!("no acknowledgement for {id}: {:?}", other.map(|r| r.map(|r| r.json))),
        }
    }
    (stored, internal)
}

async fn assert_serves(k: &KioskClient) {
    let r = k
        .recommend("u1", Some(3), Duration::from_secs(5))
        .await
        .expect("request answered");
    assert!(r.error_code().is_none(), "{}", r.json);
}

fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
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
    let cfg_path = write_config(dir.path(), port, false, "");
    let cfg = sgbd_edge::config::Config::load(&cfg_path).unwrap();
    let mut daemon = Daemon::spawn(&cfg_path);
    let k = kiosk_when_ready(port, "k1", Protocol::V5).await;
    let mut acked: HashSet<String> = HashSet::new();

    let (ok, err) = send(&k, "before", 30, 0).await;
    assert_eq!((ok.len(), err), (30, 0));
    acked.extend(ok);

    // Disk full: big events until SQLite cannot grow its files any more.
    let filler = fill(&mount.0);
    let (ok, full_errors) = send(&k, "full", 150, 4000).await;
    eprintln!(
        "disk full: {} stored from free pages, {full_errors} refused with `internal`",
        ok.len()
    );
    assert!(full_errors > 0, "a full disk never refused an event");
    acked.extend(ok);
    assert_serves(&k).await;

    // Space back: writes work again without a restart.
    std::fs::remove_file(&filler).unwrap();
    let (ok, err) = send(&k, "after-full", 20, 0).await;
    assert_eq!((ok.len(), err), (20, 0), "writes did not resume after space came back");
    acked.extend(ok);

    daemon.signal(libc::SIGTERM);
    assert!(
        daemon.wait(Duration::from_secs(15)).is_some_and(|s| s.success()),
        "{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    assert!(log.contains("event batch not stored"), "no clear log line:\n{log}");
    drop(k);

    // Read-only data directory (Linux refuses an ro remount while the daemon holds files open for
    // writing, so the daemon starts on it): a clear start-up error, nothing changed.
    mount.remount("ro");
    let mut ro = Daemon::spawn(&cfg_path);
    let st = ro
        .wait(Duration::from_secs(20))
        .expect("daemon on a read-only data dir must exit, not hang");
    assert!(!st.success(), "daemon ran on a read-only data dir");
    let ro_log = ro.log_text();
    eprintln!(
        "read-only start: {}",
        ro_log
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("rror"))
            .last()
            .unwrap_or("")
    );
    assert!(
        ro_log.contains("is not writable") && ro_log.contains("Read-only file system"),
        "unclear error:\n{ro_log}"
    );
    mount.remount("rw");

    // Writable again: starts, keeps every event, accepts new ones.
    let mut daemon = Daemon::spawn(&cfg_path);
    let k = kiosk_when_ready(port, "k1", Protocol::V5).await;
    let (ok, err) = send(&k, "after-ro", 20, 0).await;
    assert_eq!((ok.len(), err), (20, 0), "writes did not resume after the remount");
    acked.extend(ok);
    assert_serves(&k).await;
    daemon.signal(libc::SIGTERM);
    assert!(
        daemon.wait(Duration::from_secs(15)).is_some_and(|s| s.success()),
        "{}",
        daemon.log_text()
    );
    let store = sgbd_edge::store::open_config(&cfg).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let stored: HashSet<String> = store.interactions().unwrap().into_iter().map(|e| e.event_id).collect();
    let missing: Vec<&String> = acked.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    eprintln!(
        "crash::disk: {} acknowledged events all stored, {full_errors} refused on a full disk",
        acked.len()
    );
}
