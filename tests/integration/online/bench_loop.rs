//! `bench loop` on a planted timed replay: items first sold after the warm-up enter the
//! catalogue when their chunk opens, and FREEDOM serves them through its item graph within that
//! one poll.

use sgbd_edge::bench::online::{run, LoopBenchArgs};
use std::fmt::Write as _;

/// Two groups of 30 items (SKU = row of the feature file) and 24 users; each user buys 10 items
/// of its group over time, the last 3 of them among the group's 6 late items (rows 24..29 of the
/// group), which nobody buys before the second half of the replay.
fn write_world(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (groups, items, users, dim) = (2usize, 30usize, 24usize, 8usize);
    let mut text = String::from("userID\titemID\ttimestamp\n");
    for g in 0..groups {
        for u in 0..users {
            let mut early: Vec<usize> = (0..24).collect();
            let mut late: Vec<usize> = (24..30).collect();
            for j in 0..10 {
                let pool = if j < 7 { &mut early } else { &mut late };
                let i = pool.swap_remove(rng.random_range(0..pool.len()));
                let ts = if j < 7 { j * 100 + u } else { 10_000 + (j - 7) * 100 + u };
                writeln!(text, "{}\t{}\t{ts}", g * users + u, g * items + i).unwrap();
            }
        }
    }
    let inter = dir.join("w.inter");
    std::fs::write(&inter, text).unwrap();
    let mut feats = Vec::new();
    for g in 0..groups {
        for _ in 0..items {
            feats.extend(
                (0..dim).map(|c| (if (c % 2 == 0) == (g == 0) { 1.0 } else { -1.0 }) + rng.random_range(-0.2..0.2)),
            );
        }
    }
    let npy = dir.join("w_text.npy");
    sgbd_edge::learn::npy::write_npy_f32(&npy, &[groups * items, dim], &feats).unwrap();
    (inter, npy)
}

#[test]
fn new_items_are_catalogued_on_arrival_and_served_through_the_item_graph_within_one_poll() {
    let _turn = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let (inter, npy) = write_world(dir.path());
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[learn]\ndim = 16\nlr = 0.05\nbatch = 64\nseed = 3\n\
         [online]\nmodel = \"freedom\"\nepochs = 15\npatience = 5\ntolerance = 0.5\nholdout_per_user = 1\n",
    )
    .unwrap();
    let args = LoopBenchArgs {
        data: inter,
        arms: vec!["adam".into(), "popularity".into()],
        warmup: 0.5,
        rounds: 2,
        k: 10,
        epochs: None,
        config: Some(cfg),
        features: vec![npy],
        json: None,
    };
    let r = run(&args).unwrap();
    let table = r.to_string();
    assert!(table.contains("new items"), "{table}");
    let adam = &r.arms[0];
    assert!(adam.rounds.iter().all(|x| x.model == "freedom"), "{table}");
    let paths: Vec<&str> = adam.new_items.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(paths, ["graph", "projection"], "{table}");
    let graph = &adam.new_items[0];
    // the 12 late items arrive with the second half
    assert_eq!(graph.catalogued, 12, "{table}");
    assert!(graph.recommended >= 2, "{table}");
    assert!(graph.hits > 0, "{table}");
    assert_eq!(r.arms[1].new_items[0].path, "popularity");
    assert_eq!(r.arms[1].new_items[0].catalogued, 12);
}
