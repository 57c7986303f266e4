//! The technician's self-test (`doctor`): one line per check, and the `status` report.
//!
//! [`run_checks`] never panics and never needs the WAN: each check becomes a [`Check`] with
//! `ok` / `warn` / `FAIL` and a detail line. [`status_report`] gathers what `sgbd-edge status`
//! shows: store counts, the active model and the daemon's live `status.json`.

use crate::config::{BrokerMode, CameraKind, Config, Issues, Validate};
use crate::modelfiles::{self, FileState};
use crate::mqtt::kiosk::Protocol;
use crate::mqtt::probe::Probe;
use crate::store::{self, ModelVersionRow, Store, TableCounts};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    /// Works, but a technician should look (low disk, unpinned model file, no active model).
    Warn,
    /// Broken: `doctor` exits non-zero.
    Fail,
}

impl std::fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "FAIL",
        })
    }
}

/// One line of the self-test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, status: CheckStatus, detail: impl Into<String>) -> Check {
        Check { name: name.into(), status, detail: detail.into() }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<4} {:<16} {}", self.status.to_string(), self.name, self.detail)
    }
}

/// Free space below this is a warning.
pub const DISK_WARN_BYTES: u64 = 1 << 30;
/// Free space below this is a failure.
pub const DISK_FAIL_BYTES: u64 = 100 << 20;
/// TCP connect timeout of the broker check.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(2);
/// `status.json` older than this means the daemon is not running.
pub const STATUS_MAX_AGE_MS: i64 = 120_000;

/// True when any check failed (`doctor` then exits 1).
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == CheckStatus::Fail)
}

/// Runs every check, in the order a technician reads them.
pub fn run_checks(cfg: &Config) -> Vec<Check> {
    let mut out = vec![check_config(cfg)];
    out.extend(check_data_dir(cfg.data_dir()));
    out.push(check_database(cfg));
    out.push(check_active_model(cfg));
    out.extend(check_model_files(cfg));
    out.push(check_broker(cfg));
    out.extend(check_mqtt_files(cfg));
    out.extend(check_cameras(cfg));
    out.push(check_gpu());
    out
}

fn check_config(cfg: &Config) -> Check {
    let mut issues = Issues::default();
    cfg.validate(&mut issues);
    if issues.0.is_empty() {
        Check::new("config", CheckStatus::Ok, format!("valid (hash {})", cfg.hash()))
    } else {
        let list: Vec<String> = issues.0.iter().map(|i| i.to_string()).collect();
        Check::new("config", CheckStatus::Fail, list.join("; "))
    }
}

/// The directory itself, or its nearest existing ancestor (where it would be created).
fn existing_ancestor(p: &Path) -> Option<&Path> {
    p.ancestors().find(|a| !a.as_os_str().is_empty() && a.exists()).or(Some(Path::new(".")))
}

fn check_data_dir(dir: &Path) -> Vec<Check> {
    let shown = dir.display();
    let writable = if dir.is_dir() {
        let probe = dir.join(format!(".doctor-{}", std::process::id()));
        match std::fs::write(&probe, b"probe").and_then(|_| std::fs::remove_file(&probe)) {
            Ok(()) => Check::new("data_dir", CheckStatus::Ok, format!("{shown} is writable")),
            Err(e) => Check::new("data_dir", CheckStatus::Fail, format!("{shown} is not writable: {e}")),
        }
    } else if dir.exists() {
        Check::new("data_dir", CheckStatus::Fail, format!("{shown} exists but is not a directory"))
    } else {
        let parent = existing_ancestor(dir).map(|p| p.display().to_string()).unwrap_or_default();
        Check::new(
            "data_dir",
            CheckStatus::Warn,
            format!("{shown} does not exist yet (created by `run` under {parent})"),
        )
    };
    let disk = match existing_ancestor(dir).map(crate::sys::disk_free_bytes) {
        Some(Ok(free)) => Check::new("disk", disk_status(free), format!("{} free in {shown}", human_bytes(free))),
        Some(Err(e)) => Check::new("disk", CheckStatus::Fail, format!("statvfs {shown}: {e}")),
        None => Check::new("disk", CheckStatus::Fail, format!("no existing directory above {shown}")),
    };
    vec![writable, disk]
}

/// `warn` under 1 GiB free, `FAIL` under 100 MiB.
pub fn disk_status(free: u64) -> CheckStatus {
    if free < DISK_FAIL_BYTES {
        CheckStatus::Fail
    } else if free < DISK_WARN_BYTES {
        CheckStatus::Warn
    } else {
        CheckStatus::Ok
    }
}

fn human_bytes(b: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if b as f64 >= GIB {
        format!("{:.1} GiB", b as f64 / GIB)
    } else {
        format!("{:.0} MiB", b as f64 / MIB)
    }
}

fn check_database(cfg: &Config) -> Check {
    let path = store::db_path(cfg);
    if !path.exists() {
        return Check::new(
            "database",
            CheckStatus::Warn,
            format!("{} does not exist yet (created by `run` or `import`)", path.display()),
        );
    }
    let st = match Store::open(&path, cfg.store.busy_timeout_ms) {
        Ok(s) => s,
        Err(e) => return Check::new("database", CheckStatus::Fail, e.to_string()),
    };
    let version = st.schema_version().unwrap_or(-1);
    match st.integrity_check() {
        Ok(r) if r == "ok" => {
            let counts = st
                .counts()
                .map(|c| format!(", {} items, {} interactions", c.items, c.interactions))
                .unwrap_or_default();
            Check::new(
                "database",
                CheckStatus::Ok,
                format!("{}: schema {version}, integrity ok{counts}", path.display()),
            )
        }
        Ok(r) => Check::new(
            "database",
            CheckStatus::Fail,
            format!("{}: integrity check: {}", path.display(), r.lines().take(3).collect::<Vec<_>>().join("; ")),
        ),
        Err(e) => Check::new("database", CheckStatus::Fail, format!("{}: integrity check failed: {e}", path.display())),
    }
}

/// A model path as stored in a `model_versions` row that the registry did not write itself
/// (imported rows): absolute, or relative to `node.data_dir`.
fn under_data_dir(cfg: &Config, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cfg.data_dir().join(p)
    }
}

/// The active recommender model. A registry version is checked where the daemon loads it from,
/// `<data_dir>/registry/<version>/` ([`crate::registry::Registry::verify`]: `manifest.json`
/// against the row's sha256, every file against the manifest), whatever path the row records:
/// earlier builds recorded the folder relative to the working directory of the process that
/// trained (`./var/registry/<v>` under `data_dir = "./var"`), which joined under `data_dir` again
/// named a folder that does not exist (a false FAIL after every promotion in the demo). Other
/// rows name a file whose sha256 must match.
fn check_active_model(cfg: &Config) -> Check {
    let path = store::db_path(cfg);
    if !path.exists() {
        return Check::new("recommender", CheckStatus::Warn, "no database yet: no active model (popularity fallback)");
    }
    let active = match Store::open(&path, cfg.store.busy_timeout_ms).and_then(|s| s.active_model()) {
        Ok(a) => a,
        Err(e) => return Check::new("recommender", CheckStatus::Fail, format!("cannot read the model registry: {e}")),
    };
    let Some(m) = active else {
        return Check::new("recommender", CheckStatus::Warn, "no active model: serving falls back to popularity");
    };
    let registry = crate::registry::Registry::from_config(cfg);
    let dir = registry.dir(&m.version);
    if dir.is_dir() {
        return match registry.verify(&m) {
            Ok(manifest) => Check::new(
                "recommender",
                CheckStatus::Ok,
                format!(
                    "active {} at {} (manifest and {} files sha256 ok)",
                    m.version,
                    dir.display(),
                    manifest.files.len()
                ),
            ),
            Err(e) => Check::new("recommender", CheckStatus::Fail, format!("active {}: {e}", m.version)),
        };
    }
    let file = under_data_dir(cfg, &m.path);
    // A version directory is checked through its manifest, a single file directly.
    let (digested, what, missing) = if file.is_dir() {
        (file.join("manifest.json"), "manifest sha256 ok", String::new())
    } else {
        (file.clone(), "sha256 ok", format!(" (not in {})", registry.root().display()))
    };
    match crate::sys::sha256_file(&digested) {
        Ok(h) if h.eq_ignore_ascii_case(m.sha256.trim()) => {
            Check::new("recommender", CheckStatus::Ok, format!("active {} at {} ({what})", m.version, file.display()))
        }
        Ok(h) => Check::new(
            "recommender",
            CheckStatus::Fail,
            format!("active {}: {} has sha256 {h}, registry says {}", m.version, digested.display(), m.sha256),
        ),
        Err(e) => Check::new(
            "recommender",
            CheckStatus::Fail,
            format!("active {}: {}{missing}: {e}", m.version, digested.display()),
        ),
    }
}

/// The model files the config uses. A missing one fails only when `denoise.require_models` is
/// set; otherwise it is a warning (the denoiser runs degraded: rule-based cleaning without MiniLM,
/// no captions without BLIP). A file with the wrong sha256 or that cannot be read always fails.
fn check_model_files(cfg: &Config) -> Vec<Check> {
    let required = cfg.denoise.require_models;
    modelfiles::verify_all(cfg)
        .into_iter()
        .map(|f| {
            let p = f.path.display();
            let (status, detail) = match &f.state {
                FileState::Ok { sha256 } => {
                    (CheckStatus::Ok, format!("{p} (sha256 {})", sha256.get(..12).unwrap_or(sha256)))
                }
                FileState::Unpinned { actual } => (
                    CheckStatus::Warn,
                    format!("{p} present, sha256 {actual} not pinned (`sgbd-edge models pin {}`)", f.model_id),
                ),
                FileState::Missing { expected } => (
                    if required { CheckStatus::Fail } else { CheckStatus::Warn },
                    format!(
                        "{p} missing (expected sha256 {}){}",
                        expected.as_deref().unwrap_or("to be pinned on install"),
                        if required {
                            "; required by denoise.require_models"
                        } else {
                            "; optional (denoise.require_models = false): the denoiser runs degraded without it"
                        }
                    ),
                ),
                FileState::Mismatch { expected, actual } => {
                    (CheckStatus::Fail, format!("{p} has sha256 {actual}, expected {expected}"))
                }
                FileState::Unreadable { error } => (CheckStatus::Fail, format!("{p}: {error}")),
            };
            Check::new(format!("model {}", f.model_id), status, detail)
        })
        .collect()
}

fn broker_listening(host: &str, port: u16) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
    let mut last = format!("{host} resolves to no address");
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, BROKER_TIMEOUT) {
            Ok(_) => return Ok(a),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

/// A real MQTT handshake (CONNECT, CONNACK, DISCONNECT) with a client id of its own.
fn mqtt_probe(cfg: &Config, port: u16, protocol: Protocol, node_credentials: bool) -> Result<Duration, String> {
    let (credentials, tls) = if node_credentials {
        (
            crate::mqtt::credentials(&cfg.mqtt).map_err(|e| e.to_string())?,
            crate::mqtt::tls::from_config(&cfg.mqtt).map_err(|e| e.to_string())?,
        )
    } else {
        (None, None)
    };
    let p = Probe {
        host: cfg.mqtt.host.clone(),
        port,
        protocol,
        client_id: format!("{}-doctor-{}-{protocol:?}", cfg.node.node_id, std::process::id()),
        credentials,
        tls,
        timeout: BROKER_TIMEOUT,
    };
    crate::mqtt::probe::handshake(&p).map_err(|e| e.to_string())
}

fn check_broker(cfg: &Config) -> Check {
    let (host, port) = (cfg.mqtt.host.as_str(), cfg.mqtt.port);
    let running = daemon_state(cfg.data_dir(), crate::sys::now_ms()).running;
    match cfg.mqtt.broker {
        BrokerMode::Embedded => {
            if broker_listening(host, port).is_err() {
                // Nothing listening is normal while the daemon is stopped; not while it runs.
                let status = if running { CheckStatus::Warn } else { CheckStatus::Ok };
                let why = if running { "the daemon runs but " } else { "" };
                return Check::new(
                    "broker",
                    status,
                    format!("{why}nothing listens on {host}:{port}; the embedded broker is started by `run`"),
                );
            }
            // Both listeners must complete an MQTT session, each in both protocol versions.
            let mut ok = Vec::new();
            let mut bad = Vec::new();
            for (p, v) in [(port, Protocol::V5), (port + 1, Protocol::V311)] {
                match mqtt_probe(cfg, p, v, false) {
                    Ok(t) => ok.push(format!("{host}:{p} MQTT {} CONNACK in {} ms", v.label(), t.as_millis())),
                    Err(e) => bad.push(format!("{host}:{p} MQTT {}: {e}", v.label())),
                }
            }
            if bad.is_empty() {
                Check::new("broker", CheckStatus::Ok, ok.join("; "))
            } else {
                Check::new("broker", CheckStatus::Fail, format!("embedded broker refuses sessions: {}", bad.join("; ")))
            }
        }
        // While the daemon runs, a probe with the node's credentials could take over its session
        // (mosquitto's `use_username_as_clientid`): reachability and the daemon's own view only.
        BrokerMode::External if running => match broker_listening(host, port) {
            Ok(a) => {
                let connected = daemon_state(cfg.data_dir(), crate::sys::now_ms())
                    .status
                    .and_then(|s| s.get("broker_connected").and_then(|b| b.as_bool()));
                match connected {
                    Some(true) => Check::new("broker", CheckStatus::Ok, format!("{a} reachable; the daemon's MQTT session is up")),
                    _ => Check::new("broker", CheckStatus::Warn, format!("{a} reachable, but the daemon reports no MQTT session (credentials, TLS or ACL? see its log)")),
                }
            }
            Err(e) => Check::new("broker", CheckStatus::Fail, format!("external broker unreachable: {e}")),
        },
        BrokerMode::External => match mqtt_probe(cfg, port, Protocol::V5, true) {
            Ok(t) => Check::new(
                "broker",
                CheckStatus::Ok,
                format!("{host}:{port} MQTT 5 session with the node's credentials (CONNACK in {} ms)", t.as_millis()),
            ),
            Err(e) => Check::new("broker", CheckStatus::Fail, format!("external broker: {e}")),
        },
    }
}

/// TLS files and the password file `mqtt` names: present, valid PEM, key matching its cert.
fn check_mqtt_files(cfg: &Config) -> Option<Check> {
    if cfg.mqtt.tls.is_none() && cfg.mqtt.password_file.is_none() {
        return None;
    }
    let problems = crate::mqtt::tls::check_files(&cfg.mqtt);
    let status = if problems.iter().any(|p| p.fatal) {
        CheckStatus::Fail
    } else if problems.is_empty() {
        CheckStatus::Ok
    } else {
        CheckStatus::Warn
    };
    let detail = if problems.is_empty() {
        "TLS and password files readable and valid".to_string()
    } else {
        problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ")
    };
    Some(Check::new("mqtt files", status, detail))
}

fn check_cameras(cfg: &Config) -> Vec<Check> {
    if cfg.capture.cameras.is_empty() {
        return vec![Check::new("cameras", CheckStatus::Ok, "none configured")];
    }
    cfg.capture
        .cameras
        .iter()
        .map(|cam| {
            let name = format!("camera {}", cam.id);
            match &cam.source {
                CameraKind::Folder { dir, .. } if dir.is_dir() => {
                    Check::new(name, CheckStatus::Ok, format!("folder {} exists", dir.display()))
                }
                CameraKind::Folder { dir, .. } => {
                    Check::new(name, CheckStatus::Fail, format!("folder {} does not exist", dir.display()))
                }
                CameraKind::Serial { port, .. } if Path::new(port).exists() => {
                    Check::new(name, CheckStatus::Ok, format!("serial port {port} exists"))
                }
                CameraKind::Serial { port, .. } => {
                    Check::new(name, CheckStatus::Fail, format!("serial port {port} does not exist"))
                }
            }
        })
        .collect()
}

/// Jetson GPU load in percent, from `/sys/devices/gpu.0/load` (per mille).
pub fn jetson_gpu_load() -> Option<f64> {
    let s = std::fs::read_to_string("/sys/devices/gpu.0/load").ok()?;
    s.trim().parse::<f64>().ok().map(|v| v / 10.0)
}

fn check_gpu() -> Check {
    let load = jetson_gpu_load().map(|l| format!(", Jetson GPU load {l:.0}%")).unwrap_or_default();
    if cfg!(feature = "cuda") {
        if candle_core::utils::cuda_is_available() && candle_core::Device::new_cuda(0).is_ok() {
            Check::new("gpu", CheckStatus::Ok, format!("CUDA build, device 0 available{load}"))
        } else {
            Check::new(
                "gpu",
                CheckStatus::Warn,
                format!("CUDA build but no CUDA device could be opened: running on CPU{load}"),
            )
        }
    } else {
        Check::new("gpu", CheckStatus::Ok, format!("CPU build (built without the `cuda` feature){load}"))
    }
}

/// Human-readable lines for the `shelf` object of a `status.json` (for `sgbd-edge status`).
pub(crate) fn describe_shelf(status: &serde_json::Value) -> Vec<String> {
    let Some(shelf) = status.get("shelf") else { return Vec::new() };
    let mut out = Vec::new();
    for c in shelf.get("cameras").and_then(|c| c.as_array()).into_iter().flatten() {
        let s = |k: &str| c.get(k).map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
        let state = match c.get("state").and_then(|s| s.get("state")).and_then(|s| s.as_str()) {
            Some("ok") => "ok".to_string(),
            Some(other) => format!(
                "{other}: {}",
                c.get("state").and_then(|s| s.get("reason")).and_then(|r| r.as_str()).unwrap_or("?")
            ),
            None => "?".into(),
        };
        out.push(format!(
            "camera {}: {state} ({} frames, {} errors)",
            s("id").unwrap_or_default(),
            s("frames").unwrap_or_default(),
            s("errors").unwrap_or_default()
        ));
    }
    if let Some(d) = shelf.get("denoise") {
        let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
        out.push(format!("denoise {}: {}; {}", s("state"), s("caption_detail"), s("text_detail")));
    }
    out
}

/// The daemon's live state, from `<data_dir>/status.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DaemonState {
    /// The file is fresh (under 2 minutes), does not say the daemon stopped, and the pid it names
    /// is alive.
    pub running: bool,
    /// Human-readable summary.
    pub detail: String,
    /// Age of the file in seconds, if it exists.
    pub age_s: Option<f64>,
    /// The file's content (as the daemon wrote it), when it parsed.
    pub status: Option<serde_json::Value>,
}

/// Reads `<data_dir>/status.json`. Freshness comes from its `updated_at` (ms) field, else from
/// the file's modification time; a file whose `pid` is not a live process is stale however fresh
/// ([`crate::sys::pid_alive`]).
pub fn daemon_state(data_dir: &Path, now_ms: i64) -> DaemonState {
    let path = crate::daemon::health::status_path(data_dir);
    let not_running = |detail: String, age_s, status| DaemonState { running: false, detail, age_s, status };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => return not_running(format!("not running (no {})", path.display()), None, None),
    };
    let mtime_ms = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64);
    let value: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let updated = value.as_ref().and_then(|v| v.get("updated_at")).and_then(|v| v.as_i64()).or(mtime_ms);
    let age_ms = updated.map(|u| (now_ms - u).max(0));
    let age_s = age_ms.map(|a| a as f64 / 1000.0);
    let Some(v) = value else {
        return not_running(format!("{} does not parse", path.display()), age_s, None);
    };
    if v.get("running").and_then(|r| r.as_bool()) == Some(false) {
        return not_running("stopped (clean shutdown)".into(), age_s, Some(v));
    }
    // A daemon killed with SIGKILL (or crashed) leaves a fresh-looking file: its pid tells.
    if let Some(pid) = v.get("pid").and_then(|p| p.as_u64()) {
        if !u32::try_from(pid).is_ok_and(crate::sys::pid_alive) {
            return not_running(
                format!(
                    "not running (stale status.json: pid {pid} is gone, killed or crashed {} s ago at most)",
                    age_s.map(|a| format!("{a:.0}")).unwrap_or("?".into())
                ),
                age_s,
                Some(v),
            );
        }
    }
    match age_ms {
        Some(a) if a <= STATUS_MAX_AGE_MS => {
            let s = |k: &str| v.get(k).map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()));
            let detail = format!(
                "running: pid {}, up {} s, broker {} ({}), model {}",
                s("pid").unwrap_or_else(|| "?".into()),
                s("uptime_s").unwrap_or_else(|| "?".into()),
                s("broker").unwrap_or_else(|| "?".into()),
                match v.get("broker_connected").and_then(|b| b.as_bool()) {
                    Some(true) => "connected",
                    Some(false) => "disconnected",
                    None => "?",
                },
                s("model_version").unwrap_or_else(|| "?".into()),
            );
            DaemonState { running: true, detail, age_s, status: Some(v) }
        }
        _ => not_running(
            format!(
                "not running (status.json last updated {} s ago)",
                age_s.map(|a| format!("{a:.0}")).unwrap_or("?".into())
            ),
            age_s,
            Some(v),
        ),
    }
}

/// What `sgbd-edge status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub node_id: String,
    pub store_id: String,
    pub db_path: PathBuf,
    /// Rows per table; `None` when the database is missing or unreadable (see `db_error`).
    pub counts: Option<TableCounts>,
    pub db_error: Option<String>,
    pub active_model: Option<ModelVersionRow>,
    /// Registered model versions, all statuses.
    pub model_versions: usize,
    pub daemon: DaemonState,
}

/// Gathers the status report. Never creates the database.
pub fn status_report(cfg: &Config) -> StatusReport {
    let db_path = store::db_path(cfg);
    let mut r = StatusReport {
        node_id: cfg.node.node_id.clone(),
        store_id: cfg.node.store_id.clone(),
        db_path: db_path.clone(),
        counts: None,
        db_error: None,
        active_model: None,
        model_versions: 0,
        daemon: daemon_state(cfg.data_dir(), crate::sys::now_ms()),
    };
    if !db_path.exists() {
        r.db_error = Some("no database yet (created by `run` or `import`)".into());
        return r;
    }
    let read = Store::open(&db_path, cfg.store.busy_timeout_ms)
        .and_then(|s| Ok((s.counts()?, s.active_model()?, s.model_versions()?.len())));
    match read {
        Ok((c, a, n)) => {
            r.counts = Some(c);
            r.active_model = a;
            r.model_versions = n;
        }
        Err(e) => r.db_error = Some(e.to_string()),
    }
    r
}

impl std::fmt::Display for StatusReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "node       {}/{}", self.store_id, self.node_id)?;
        writeln!(f, "database   {}", self.db_path.display())?;
        match (&self.counts, &self.db_error) {
            (Some(c), _) => writeln!(
                f,
                "           {} items, {} images, {} interactions, {} users, {} feature vectors, outbox backlog {}",
                c.items, c.images, c.interactions, c.users, c.item_features, c.outbox
            )?,
            (None, Some(e)) => writeln!(f, "           {e}")?,
            (None, None) => {}
        }
        match &self.active_model {
            Some(m) => {
                writeln!(f, "model      {} (of {} registered), metrics {}", m.version, self.model_versions, m.metrics)?
            }
            None => writeln!(f, "model      none active (of {} registered): popularity fallback", self.model_versions)?,
        }
        write!(f, "daemon     {}", self.daemon.detail)?;
        if self.daemon.running {
            for line in self.daemon.status.as_ref().map(describe_shelf).unwrap_or_default() {
                write!(f, "\n           {line}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_thresholds() {
        assert_eq!(disk_status(50 << 20), CheckStatus::Fail);
        assert_eq!(disk_status(500 << 20), CheckStatus::Warn);
        assert_eq!(disk_status(2 << 30), CheckStatus::Ok);
    }

    #[test]
    fn daemon_state_from_status_file() {
        let dir = std::env::temp_dir().join(format!("sgbd-doctor-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = 1_800_000_000_000i64;
        assert!(!daemon_state(&dir, now).running);
        let write = |v: serde_json::Value| std::fs::write(dir.join("status.json"), v.to_string()).unwrap();
        let me = std::process::id();
        write(serde_json::json!({"running": true, "updated_at": now - 5_000, "pid": me, "uptime_s": 99,
            "broker": "127.0.0.1:1883", "broker_connected": true, "model_version": "v7"}));
        let s = daemon_state(&dir, now);
        assert!(s.running, "{s:?}");
        assert_eq!(s.age_s, Some(5.0));
        assert!(
            s.detail.contains(&format!("pid {me}")) && s.detail.contains("connected") && s.detail.contains("v7"),
            "{}",
            s.detail
        );
        write(serde_json::json!({"running": true, "updated_at": now - 180_000}));
        assert!(!daemon_state(&dir, now).running, "stale file");
        write(serde_json::json!({"running": false, "updated_at": now}));
        assert!(daemon_state(&dir, now).detail.contains("stopped"));
        std::fs::write(dir.join("status.json"), "{not json").unwrap();
        assert!(!daemon_state(&dir, now).running);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
