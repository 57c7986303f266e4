//! `run --demo`: a simulated kiosk (a real MQTT 5 client over the broker) that imports the bundled
//! demo catalogue into an empty store, then every couple of seconds sends a few events and a
//! recommendation request and prints the reply in a readable form on stdout. It also drops the
//! demo shelf picture (`<catalogue dir>/shelf/<camera>.jpg`) into each folder camera's directory
//! ([`super::shelf`]).

use crate::mqtt::contract::Topics;
use crate::mqtt::kiosk::{parse_reply, KioskClient, Protocol};
use crate::sys::now_ms;
use rand::seq::IndexedRandom;
use rand::Rng;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// What the demo kiosk needs from the daemon that starts it.
pub struct DemoKiosk {
    /// The daemon's configuration (store, broker, cameras).
    pub cfg: crate::config::Config,
    /// The daemon's topics.
    pub topics: Topics,
    /// Catalogue imported into an empty store (Myntra `styles.csv` layout); its folder holds
    /// `shelf/<camera>.jpg`.
    pub catalog: PathBuf,
}

/// Imports the demo catalogue when the store has no items; returns sku -> title.
fn prepare_catalogue(cfg: &crate::config::Config, path: &std::path::Path) -> Result<HashMap<String, String>, String> {
    let mut store = crate::store::open_config(cfg).map_err(|e| e.to_string())?;
    let items = store.items().map_err(|e| e.to_string())?;
    if items.is_empty() {
        if !path.exists() {
            return Err(format!("store is empty and {} is missing: skipping the catalogue import", path.display()));
        }
        let s = crate::store::import_catalog_csv(&mut store, path).map_err(|e| e.to_string())?;
        tracing::info!(rows = s.rows, inserted = s.inserted, errors = s.errors.len(), path = %path.display(), "demo catalogue imported");
    }
    Ok(store.items().map_err(|e| e.to_string())?.into_iter().map(|i| (i.sku, i.title)).collect())
}

/// Runs the demo kiosk until shutdown; `catalogue_ready` is called once the catalogue is in the
/// store (the daemon then re-reads popularity).
pub async fn run(
    demo: DemoKiosk,
    catalogue_ready: impl FnOnce() + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    let DemoKiosk { cfg, topics, catalog: path } = demo;
    let demo_dir = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let c2 = cfg.clone();
    let titles = match tokio::task::spawn_blocking(move || prepare_catalogue(&c2, &path)).await {
        Ok(Ok(t)) => t,
        Ok(Err(msg)) => {
            tracing::warn!("demo: {msg}");
            HashMap::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "demo: catalogue task failed");
            HashMap::new()
        }
    };
    catalogue_ready();
    // The bundled shelf picture goes into the camera folder once the catalogue is in, so the log
    // shows the shelf cut into crops, each denoised and stored.
    let c3 = cfg.clone();
    let _ = tokio::task::spawn_blocking(move || super::shelf::drop_demo_shelves(&c3, &demo_dir)).await;
    let skus: Vec<String> = titles.keys().cloned().collect();
    let kiosk = match KioskClient::connect(
        &cfg.mqtt.host,
        cfg.mqtt.port,
        topics,
        "demo-kiosk",
        Protocol::V5,
        crate::mqtt::credentials(&cfg.mqtt).ok().flatten(),
        Duration::from_secs(10),
    )
    .await
    {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "demo kiosk cannot connect");
            return;
        }
    };
    println!("demo kiosk connected; {} catalogue items; Ctrl-C stops", skus.len());
    let users = ["alice", "bob", "carol", "dave", "erin"];
    let kinds = ["view", "view", "scan", "cart", "purchase"];
    let mut round = 0u64;
    loop {
        round += 1;
        let (user, events) = {
            let mut rng = rand::rng();
            let user = users.choose(&mut rng).copied().unwrap_or("alice");
            let events: Vec<(String, String)> = (0..3)
                .filter_map(|_| {
                    let sku = skus.choose(&mut rng)?.clone();
                    let kind = kinds[rng.random_range(0..kinds.len())].to_string();
                    Some((sku, kind))
                })
                .collect();
            (user, events)
        };
        for (i, (sku, kind)) in events.iter().enumerate() {
            let id = format!("demo-{}-{round}-{i}", now_ms());
            match kiosk.event(&id, user, sku, kind, Some(Duration::from_secs(2))).await {
                Ok(_) => {
                    println!("[demo] {user} {kind:<8} {sku} {}", titles.get(sku).map(String::as_str).unwrap_or(""))
                }
                Err(e) => println!("[demo] event not acknowledged: {e}"),
            }
        }
        match kiosk.recommend(user, Some(5), Duration::from_secs(2)).await {
            Ok(r) => match parse_reply(&r) {
                Ok(rep) => {
                    println!("[demo] suggestions for {user} (model {}, fallback {}):", rep.model_version, rep.fallback);
                    for it in &rep.items {
                        println!(
                            "         {:>8}  {:<50} score {:>5.1}  {}",
                            it.sku,
                            titles.get(&it.sku).map(String::as_str).unwrap_or("?"),
                            it.score,
                            it.reason
                        );
                    }
                    if rep.items.is_empty() {
                        println!("         (nothing yet: the catalogue is empty)");
                    }
                }
                Err(e) => println!("[demo] {e}"),
            },
            Err(e) => println!("[demo] no reply: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
    }
    println!("demo kiosk stopped");
}
