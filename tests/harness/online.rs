//! The learning loop's test configuration: small and fast, for the planted worlds of
//! [`super::planted`].

use sgbd_edge::config::Config;
use sgbd_edge::store::Store;
use std::path::Path;

/// The item text features of the planted worlds in the store (the first table feeds
/// [`super::planted::World::catalog`]).
pub const TEXT: &[(&str, usize)] = &[("text", 8)];

/// A small, fast configuration rooted at `dir`: MF (also for the rounds), 16 dims, SGBD, high learning rate.
pub fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.node.data_dir = dir.join("var");
    c.learn.model = sgbd_edge::learn::model::ModelKind::Mf;
    // MF even where the store holds item features (`auto` would pick FREEDOM there)
    c.online.model = sgbd_edge::config::OnlineModel::Mf;
    c.learn.dim = 16;
    c.learn.lr = 0.05;
    c.learn.batch = 64;
    c.learn.reg = 0.0;
    c.learn.seed = 7;
    c.online.epochs = 40;
    c.online.patience = 10;
    c.online.time_budget_s = 15;
    c.online.min_new_events = 1;
    c.online.min_interval_s = 0;
    c.online.poll_s = 1;
    c
}

pub fn open(cfg: &Config) -> Store {
    sgbd_edge::store::open_config(cfg).unwrap()
}
