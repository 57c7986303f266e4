//! systemd notifications from the daemon binary: READY=1 once serving, STATUS= lines a technician
//! can read, WATCHDOG=1 while the pipeline makes progress, STOPPING=1 on SIGTERM, exit 0.

use crate::harness::daemon::*;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn notify_ready_status_watchdog_and_stopping() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_pair();
    let cfg = write_config(dir.path(), port, false, "");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut child = bin()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut msgs: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(20);
    let has = |msgs: &[String], s: &str| msgs.iter().any(|m| m.lines().any(|l| l.starts_with(s)));
    while Instant::now() < until
        && !(has(&msgs, "READY=1")
            && msgs.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2
            && has(&msgs, "STATUS=serving"))
    {
        if let Ok(n) = sock.recv(&mut buf) {
            msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(has(&msgs, "READY=1"), "{msgs:?}");
    assert!(has(&msgs, "STATUS=serving: 0 requests, 0 events, broker connected, model popularity"), "{msgs:?}");
    assert!(msgs.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2, "{msgs:?}");
    // READY comes after "connecting to the broker".
    let ready_at = msgs.iter().position(|m| m.contains("READY=1")).unwrap();
    let connecting = msgs.iter().position(|m| m.contains("STATUS=connecting")).unwrap();
    assert!(connecting < ready_at);

    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until && !has(&msgs, "STOPPING=1") {
        if let Ok(n) = sock.recv(&mut buf) {
            msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(has(&msgs, "STOPPING=1"), "{msgs:?}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
