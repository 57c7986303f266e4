//! The daemon binary: temporary configs for a node on loopback, the process (killed when dropped),
//! and the binary for command-line tests.

use sgbd_edge::mqtt::Topics;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The sgbd-edge binary, to run one command.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sgbd-edge"))
}

pub fn free_port_pair() -> u16 {
    sgbd_edge::mqtt::broker::free_port_pair().expect("free port pair")
}

/// Writes a config for a node on `port` with its data under `dir`.
pub fn write_config(dir: &Path, port: u16, external: bool, extra: &str) -> PathBuf {
    let p = dir.join("config.toml");
    let broker = if external { "external" } else { "embedded" };
    let text = format!(
        "[node]\nstore_id = \"s1\"\nnode_id = \"edge-t\"\ndata_dir = \"{}\"\n\n[log]\nfilter = \"info,rumqttd=off\"\n\n[mqtt]\nbroker = \"{broker}\"\nport = {port}\nstats_interval_s = 1\nreconnect_max_s = 1\n{extra}\n",
        dir.join("var").display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// The topics of the node that [`write_config`] describes.
/// Puts `skus` into the catalogue of the node configured by `config` (the daemon serves and
/// trains on catalogue items only; events for other SKUs are held apart).
pub fn seed_catalog(config: &Path, skus: &[&str]) {
    let cfg = sgbd_edge::config::Config::load(config).unwrap();
    let store = sgbd_edge::store::open_config(&cfg).unwrap();
    for sku in skus {
        store
            .upsert_item(&sgbd_edge::store::NewItem {
                sku: sku.to_string(),
                title: format!("item {sku}"),
                description: String::new(),
                attributes: serde_json::json!({}),
                image_path: None,
            })
            .unwrap();
    }
}

pub fn topics() -> Topics {
    Topics::new("sgbd", "s1", "edge-t")
}

/// The daemon binary, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(config: &Path) -> Daemon {
        let log = config.with_extension("log");
        let f = std::fs::File::create(&log).unwrap();
        let child = bin().args(["run", "--config"]).arg(config).stdout(Stdio::null()).stderr(f).spawn().unwrap();
        Daemon { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the exit status (None on timeout).
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
