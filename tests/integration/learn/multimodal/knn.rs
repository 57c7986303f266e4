//! FREEDOM's item-item kNN graph against a brute-force dense computation.

use rand::{Rng, SeedableRng};
use sgbd_edge::learn::knn::{item_graph, knn_graph, knn_indices, weighted_sum, KnnParams};

fn random_feats(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Dense normalised kNN adjacency computed the slow way, in f64.
fn brute_force(n: usize, d: usize, x: &[f32], k: usize, symmetrize: bool) -> Vec<f64> {
    let norm: Vec<f64> =
        (0..n).map(|i| x[i * d..(i + 1) * d].iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()).collect();
    let mut s = vec![0f64; n * n];
    for i in 0..n {
        let mut sims: Vec<(f64, usize)> = (0..n)
            .map(|j| {
                let dot: f64 = (0..d).map(|c| x[i * d + c] as f64 * x[j * d + c] as f64).sum();
                (dot / (norm[i] * norm[j]), j)
            })
            .collect();
        sims.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
        for &(_, j) in sims.iter().take(k) {
            s[i * n + j] = 1.0;
            if symmetrize {
                s[j * n + i] = 1.0;
            }
        }
    }
    let deg: Vec<f64> = (0..n).map(|i| s[i * n..(i + 1) * n].iter().sum::<f64>() + 1e-7).collect();
    (0..n * n).map(|e| s[e] / (deg[e / n] * deg[e % n]).sqrt()).collect()
}

fn assert_close(a: &[f32], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((*x as f64 - y).abs() < 1e-6, "entry {i}: {x} vs {y}");
    }
}

#[test]
fn blocked_knn_matches_brute_force() {
    let _turn = crate::harness::shared();
    let (n, d, k) = (53, 6, 5);
    let x = random_feats(n, d, 1);
    for symmetrize in [false, true] {
        for block_rows in [1, 7, 64] {
            let p = KnnParams { k, symmetrize, block_rows };
            let g = knn_graph(n, d, &x, &p).unwrap();
            g.check().unwrap();
            assert_close(&g.to_dense(), &brute_force(n, d, &x, k, symmetrize));
        }
    }
    // MMRec's directed graph: each row holds exactly k entries of 1/k, itself included.
    let nb = knn_indices(n, d, &x, k, 8).unwrap();
    for (i, row) in nb.iter().enumerate() {
        assert_eq!(row.len(), k);
        assert_eq!(row[0] as usize, i, "an item is its own nearest neighbour");
    }
}

#[test]
fn weighted_modality_sum_matches_dense() {
    let _turn = crate::harness::shared();
    let n = 40;
    let (x1, x2) = (random_feats(n, 4, 2), random_feats(n, 9, 3));
    let p = KnnParams { k: 4, symmetrize: false, block_rows: 16 };
    let g = item_graph(n, &[(4, &x1), (9, &x2)], &[0.1, 0.9], &p).unwrap();
    g.check().unwrap();
    let (b1, b2) = (brute_force(n, 4, &x1, 4, false), brute_force(n, 9, &x2, 4, false));
    let want: Vec<f64> = b1.iter().zip(&b2).map(|(a, b)| 0.1 * a + 0.9 * b).collect();
    assert_close(&g.to_dense(), &want);
    // Entries present in both graphs are merged, not duplicated.
    let (g1, g2) = (knn_graph(n, 4, &x1, &p).unwrap(), knn_graph(n, 9, &x2, &p).unwrap());
    let s = weighted_sum(&[(1.0, &g1), (1.0, &g2)]).unwrap();
    assert!(s.nnz() < g1.nnz() + g2.nnz(), "self loops appear in both and must merge");
    assert!(item_graph(n, &[(4, &x1)], &[0.5, 0.5], &p).is_err());
}

#[test]
fn real_tiktok_graph_is_bounded_and_normalised() {
    let _turn = crate::harness::shared();
    let Some(root) = crate::harness::sgbd_data() else { return };
    let dir = root.join("tiktok_mmssl");
    let img = sgbd_edge::learn::npy::Modality::load(&dir.join("image_feat.npy"), 6710).unwrap();
    let aud = sgbd_edge::learn::npy::Modality::load(&dir.join("audio_feat.npy"), 6710).unwrap();
    let g =
        item_graph(6710, &[(img.dim, &img.data), (aud.dim, &aud.data)], &[0.1, 0.9], &KnnParams::default()).unwrap();
    g.check().unwrap();
    assert!(g.nnz() <= 2 * 10 * 6710);
    // Directed k = 10 graphs: every row sums to 0.1 * 1 + 0.9 * 1 = 1.
    for r in 0..g.n_rows {
        let s: f32 = g.values[g.indptr[r]..g.indptr[r + 1]].iter().sum();
        assert!((s - 1.0).abs() < 1e-4, "row {r} sums to {s}");
    }
}
