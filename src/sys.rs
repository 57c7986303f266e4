//! The operating system behind one door: the clock, disk space, this process's memory and CPU
//! time, thread priority, signals, file digests and atomic writes, pseudo terminals, the
//! allocator's options. Everything goes through `rustix` (no `unsafe`) except the allocator
//! option, the one foreign call left; the rest of the crate denies `unsafe_code`.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;

/// Milliseconds since the Unix epoch, UTC (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Bytes available to an unprivileged user on the file system holding `path`.
pub fn disk_free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// CPU time (user + system, all threads) this process has used, in seconds.
pub fn process_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// A `/proc/<pid>/status` memory field (`VmRSS`, `VmHWM`, ...) in KiB; `pid` may be `self`.
/// `None` off Linux, for a process that is gone, or a field that is absent.
pub fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].split_whitespace().next()?.parse().ok()
}

/// Peak resident set size of this process (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kib("self", "VmHWM").map(|k| k * 1024)
}

/// Peak resident set size of this process (`VmHWM`), in MiB (NaN where unknown), for reports.
pub fn peak_rss_mib() -> f64 {
    proc_status_kib("self", "VmHWM").map_or(f64::NAN, |k| k as f64 / 1024.0)
}

/// Load average over the last minute (other work on the machine skews wall-clock numbers).
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Resident set size of this process (`VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    proc_status_kib("self", "VmRSS").map(|k| k * 1024)
}

/// Lowers the calling thread's priority to `nice` (Linux: the priority of a thread id applies to
/// that thread only). A failure (e.g. raising priority without the capability) is returned.
pub fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    Ok(rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)?)
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad pid {pid}")))?;
    Ok(rustix::process::kill_process(pid, rustix::process::Signal::TERM)?)
}

/// Whether a process with this id exists: `kill(pid, 0)`. `EPERM` (it exists but belongs to
/// another user, e.g. the daemon's own user seen from a technician's shell) counts as alive; a
/// zombie (exited, not yet reaped: `Z` in `/proc/<pid>/stat`) does not. Ids that are not a
/// positive `pid_t` are never alive.
pub fn pid_alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    let exists = match rustix::process::test_kill_process(p) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    };
    exists && !is_zombie(pid)
}

/// `/proc/<pid>/stat` names the state after the command in parentheses; `Z` (zombie) and `X`
/// (dead) are processes that have exited. Without `/proc` nothing is a zombie.
fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    matches!(state, Some("Z" | "X"))
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Writes `bytes` to `path` and fsyncs the file.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Fsyncs a directory (after a rename into it) or a file.
pub fn fsync_path(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Replaces `path` atomically: writes a hidden temporary file beside it, then renames it over
/// `path`, so a reader sees the old or the new content, never a part. With `durable` the file
/// and its directory are fsynced (survives power loss); without, only the rename is atomic.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = if durable { write_synced(&tmp, bytes) } else { std::fs::write(&tmp, bytes) };
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if durable {
        fsync_path(dir)?;
    }
    Ok(())
}

/// A pseudo terminal in raw mode: the controller side, the device side and the device's path
/// (for tests and the VC0706 camera simulator).
pub struct Pty {
    pub controller: std::fs::File,
    pub device: std::fs::File,
    pub path: String,
}

/// Opens a pseudo terminal pair with the device side in raw mode.
pub fn open_raw_pty() -> std::io::Result<Pty> {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let controller = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&controller)?;
    unlockpt(&controller)?;
    let name = ptsname(&controller, Vec::new())?;
    let path = name.to_string_lossy().into_owned();
    let device = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
    let mut t = rustix::termios::tcgetattr(&device)?;
    t.make_raw();
    rustix::termios::tcsetattr(&device, rustix::termios::OptionalActions::Now, &t)?;
    Ok(Pty { controller: controller.into(), device, path })
}

/// What [`wait_readable`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Data to read.
    Readable,
    /// Nothing within the timeout.
    Idle,
    /// No data, but the other side hung up (a pty with no client): polling again returns at once.
    HungUp,
}

/// Waits up to `timeout_ms` for `f` to become readable.
pub fn wait_readable(f: &impl std::os::fd::AsFd, timeout_ms: u64) -> std::io::Result<Readiness> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(f, PollFlags::IN)];
    let ts = Timespec { tv_sec: (timeout_ms / 1000) as _, tv_nsec: ((timeout_ms % 1000) * 1_000_000) as _ };
    let n = match poll(&mut fds, Some(&ts)) {
        Ok(n) => n,
        Err(rustix::io::Errno::INTR) => 0,
        Err(e) => return Err(e.into()),
    };
    let ev = fds[0].revents();
    Ok(if n == 0 {
        Readiness::Idle
    } else if ev.contains(PollFlags::IN) {
        Readiness::Readable
    } else {
        Readiness::HungUp
    })
}

/// Turns off Nagle's algorithm on descriptor `fd` of this process, which this code does not own
/// (the embedded broker's sockets, found under `/proc/self/fd`). A descriptor that is not a TCP
/// socket, or was closed meanwhile, gives an error and is otherwise untouched.
pub fn set_tcp_nodelay_raw(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: the borrow lives only for this one setsockopt call and nothing closes or reuses the
    // descriptor through it; if the number was closed and reused meanwhile, the option lands on
    // another socket of this process, where TCP_NODELAY is harmless, or fails on a non-socket.
    #[allow(unsafe_code)]
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    Ok(rustix::net::sockopt::set_tcp_nodelay(b, true)?)
}

/// `mi_option_purge_delay` (the same index in mimalloc v2 and v3's `mi_option_e`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc gives freed memory back to the OS after 10 ms by default, so candle's large
/// per-operation buffers are zeroed again by the kernel on every use (5-10 % of BLIP's vision
/// encoder and of a training epoch on 2 cores). One second keeps them warm across a batch and
/// still returns memory when the daemon idles. `MIMALLOC_PURGE_DELAY` in the environment wins.
pub fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option of the allocator; no pointers are involved.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_disk_memory_and_cpu_read_sensible_values() {
        assert!(now_ms() > 1_600_000_000_000);
        assert!(disk_free_bytes(Path::new("/")).unwrap() > 0);
        assert!(disk_free_bytes(Path::new("/no/such/dir")).is_err());
        let rss = rss_bytes().unwrap();
        assert!(rss > 1 << 20 && peak_rss_bytes().unwrap() >= rss);
        assert_eq!(proc_status_kib("self", "NoSuchField"), None);
        assert_eq!(proc_status_kib("0", "VmRSS"), None);
        let t0 = process_cpu_seconds();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_seconds() > t0);
    }

    #[test]
    fn digests_and_atomic_writes() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        write_atomic(&p, b"one", true).unwrap();
        write_atomic(&p, b"two", false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(b"two"));
        // No temporary file is left behind, and a write into a missing folder fails cleanly.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        assert!(write_atomic(&d.path().join("no/such/f"), b"x", true).is_err());
    }

    #[test]
    fn thread_priority_can_be_lowered_and_a_pty_carries_bytes() {
        let h = std::thread::spawn(|| set_thread_nice(5));
        h.join().unwrap().unwrap();
        let mut pty = open_raw_pty().unwrap();
        assert!(pty.path.starts_with("/dev/pts/"), "{}", pty.path);
        assert_eq!(wait_readable(&pty.controller, 10).unwrap(), Readiness::Idle);
        pty.device.write_all(b"\x56\x00").unwrap();
        assert_eq!(wait_readable(&pty.controller, 1000).unwrap(), Readiness::Readable);
        let mut buf = [0u8; 2];
        pty.controller.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [0x56, 0x00], "raw mode: bytes pass unchanged");
        assert!(terminate(0).is_err());
    }

    #[test]
    fn pid_liveness() {
        assert!(pid_alive(std::process::id()));
        // pid 1 exists and usually belongs to root: alive, through EPERM when we are not root.
        assert!(pid_alive(1));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped yet: a zombie, not alive.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!pid_alive(pid));
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }
}
