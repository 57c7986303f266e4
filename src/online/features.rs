//! Item content vectors from the store (MiniLM text, BLIP image features) for cold start, and the
//! ridge projection from feature space to the item-embedding space that scores new items.
//!
//! A feature row is the concatenation, in layout order, of each modality's L2-normalised vector
//! (zeros when the item lacks that modality), L2-normalised again, so cosine similarity is a dot
//! product.

use super::{OnlineError, Result};
use crate::registry::Projection;
use crate::store::{FeatureKind, Store};
use std::collections::HashMap;

/// Item feature rows, one per SKU that has at least one modality of the layout.
#[derive(Debug, Clone, Default)]
pub struct ItemFeatures {
    /// (modality, dimension) in row order.
    pub layout: Vec<(String, usize)>,
    pub dim: usize,
    pub index: HashMap<String, usize>,
    pub skus: Vec<String>,
    /// `[skus.len() * dim]`, each row unit length.
    pub rows: Vec<f32>,
    /// Per modality of the layout: the items that have it, and the encoders (model ids) of those
    /// vectors, sorted.
    pub counts: Vec<usize>,
    pub encoders: Vec<Vec<String>>,
}

fn kind_of(name: &str) -> Option<FeatureKind> {
    match name {
        "text" => Some(FeatureKind::Text),
        "image" => Some(FeatureKind::Image),
        _ => None,
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

impl ItemFeatures {
    /// Loads every stored feature. Per modality, the most common dimension wins (vectors of
    /// another size, from another encoder, are ignored).
    pub fn load(store: &Store) -> Result<Self> {
        let mut layout = Vec::new();
        let mut per_kind = Vec::new();
        for (name, kind) in [("text", FeatureKind::Text), ("image", FeatureKind::Image)] {
            let v = store.item_features(kind)?;
            let mut counts: HashMap<usize, usize> = HashMap::new();
            for (_, _, x) in &v {
                *counts.entry(x.len()).or_default() += 1;
            }
            if let Some((&d, _)) = counts.iter().filter(|(&d, _)| d > 0).max_by_key(|(&d, &c)| (c, d)) {
                layout.push((name.to_string(), d));
                per_kind.push(v);
            }
        }
        Ok(Self::assemble(layout, per_kind))
    }

    /// Loads the features in a given layout (the one a projection was learned with).
    pub fn load_with_layout(store: &Store, layout: &[(String, usize)]) -> Result<Self> {
        let mut per_kind = Vec::new();
        for (name, _) in layout {
            let kind =
                kind_of(name).ok_or_else(|| OnlineError::Invalid(format!("unknown feature modality {name:?}")))?;
            per_kind.push(store.item_features(kind)?);
        }
        Ok(Self::assemble(layout.to_vec(), per_kind))
    }

    fn assemble(layout: Vec<(String, usize)>, per_kind: Vec<Vec<(String, String, Vec<f32>)>>) -> Self {
        let dim: usize = layout.iter().map(|(_, d)| d).sum();
        let mut out = Self { layout: layout.clone(), dim, ..Default::default() };
        let mut offset = 0;
        for ((_, d), v) in layout.iter().zip(per_kind) {
            let (mut count, mut encoders) = (0usize, std::collections::BTreeSet::new());
            for (sku, model_id, mut x) in v {
                if x.len() != *d || x.iter().any(|f| !f.is_finite()) {
                    continue;
                }
                count += 1;
                encoders.insert(model_id);
                normalise(&mut x);
                let r = match out.index.get(&sku) {
                    Some(&r) => r,
                    None => {
                        let r = out.skus.len();
                        out.index.insert(sku.clone(), r);
                        out.skus.push(sku);
                        out.rows.extend(std::iter::repeat_n(0.0, dim));
                        r
                    }
                };
                out.rows[r * dim + offset..r * dim + offset + d].copy_from_slice(&x);
            }
            out.counts.push(count);
            out.encoders.push(encoders.into_iter().collect());
            offset += d;
        }
        for r in 0..out.skus.len() {
            normalise(&mut out.rows[r * dim..(r + 1) * dim]);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.skus.len()
    }

    pub fn is_empty(&self) -> bool {
        self.skus.is_empty()
    }

    /// What the rows were built from, as the registry records it per version: per modality its
    /// name, dimension, encoders and how many items have it.
    pub fn record(&self) -> serde_json::Value {
        let sets: Vec<serde_json::Value> = self
            .layout
            .iter()
            .zip(self.counts.iter().zip(&self.encoders))
            .map(|((name, d), (n, enc))| serde_json::json!({"modality": name, "dim": d, "encoders": enc, "items": n}))
            .collect();
        serde_json::Value::Array(sets)
    }

    /// Whether vectors of `other` (a [`ItemFeatures::record`]) came from the same encoders in the
    /// same layout (item counts may differ).
    pub fn same_sets(&self, other: &serde_json::Value) -> bool {
        let key = |v: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value, serde_json::Value)> {
            v.as_array()
                .map(|a| a.iter().map(|s| (s["modality"].clone(), s["dim"].clone(), s["encoders"].clone())).collect())
                .unwrap_or_default()
        };
        key(&self.record()) == key(other)
    }

    /// One [`Modality`](crate::learn::npy::Modality) per layout entry, rows in the order of
    /// `items` (zeros for an item without that modality), for FREEDOM and VBPR.
    pub fn modalities(&self, items: &[String]) -> Result<Vec<crate::learn::npy::Modality>> {
        let mut out = Vec::with_capacity(self.layout.len());
        let mut offset = 0;
        for (name, d) in &self.layout {
            let mut data = vec![0f32; items.len() * d];
            for (r, sku) in items.iter().enumerate() {
                if let Some(row) = self.row(sku) {
                    data[r * d..(r + 1) * d].copy_from_slice(&row[offset..offset + d]);
                }
            }
            out.push(crate::learn::npy::Modality::new(name.clone(), items.len(), *d, data)?);
            offset += d;
        }
        Ok(out)
    }

    /// The unit feature row of `sku`.
    pub fn row(&self, sku: &str) -> Option<&[f32]> {
        self.index.get(sku).map(|&r| &self.rows[r * self.dim..(r + 1) * self.dim])
    }
}

/// Fits `W = argmin ||X W - Y||^2 + ridge ||W||^2` from the items that have both a feature row
/// and an embedding (`emb(sku) -> Option<&[f32]>` of length `d`). `None` with fewer than 2 such items.
pub fn fit_projection<'a>(
    feats: &ItemFeatures,
    d: usize,
    ridge: f64,
    emb: impl Fn(&str) -> Option<&'a [f32]>,
) -> Result<Option<Projection>> {
    let f = feats.dim;
    if f == 0 || d == 0 {
        return Ok(None);
    }
    let mut xtx = vec![0f64; f * f];
    let mut xty = vec![0f64; f * d];
    let mut n = 0usize;
    for (r, sku) in feats.skus.iter().enumerate() {
        let Some(y) = emb(sku) else { continue };
        if y.len() != d {
            continue;
        }
        n += 1;
        let x = &feats.rows[r * f..(r + 1) * f];
        for (a, &xa) in x.iter().enumerate() {
            if xa == 0.0 {
                continue;
            }
            let xa = xa as f64;
            let row = &mut xtx[a * f..(a + 1) * f];
            for (b, &xb) in x.iter().enumerate() {
                row[b] += xa * xb as f64;
            }
            let out = &mut xty[a * d..(a + 1) * d];
            for (c, &yc) in y.iter().enumerate() {
                out[c] += xa * yc as f64;
            }
        }
    }
    if n < 2 {
        return Ok(None);
    }
    for a in 0..f {
        xtx[a * f + a] += ridge;
    }
    let w = cholesky_solve(&mut xtx, f, &xty, d)?;
    Ok(Some(Projection {
        layout: feats.layout.clone(),
        feature_dim: f,
        weights: w.into_iter().map(|x| x as f32).collect(),
    }))
}

/// Solves `A X = B` for symmetric positive definite `A` (`n x n`, overwritten by its Cholesky
/// factor) and `B` (`n x m`).
fn cholesky_solve(a: &mut [f64], n: usize, b: &[f64], m: usize) -> Result<Vec<f64>> {
    for j in 0..n {
        let mut s = a[j * n + j];
        for k in 0..j {
            s -= a[j * n + k] * a[j * n + k];
        }
        if s <= 0.0 || !s.is_finite() {
            return Err(OnlineError::Invalid("projection system is not positive definite".into()));
        }
        let l = s.sqrt();
        a[j * n + j] = l;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / l;
        }
    }
    let mut x = b.to_vec();
    for c in 0..m {
        // L y = b
        for i in 0..n {
            let mut s = x[i * m + c];
            for k in 0..i {
                s -= a[i * n + k] * x[k * m + c];
            }
            x[i * m + c] = s / a[i * n + i];
        }
        // L^T x = y
        for i in (0..n).rev() {
            let mut s = x[i * m + c];
            for k in i + 1..n {
                s -= a[k * n + i] * x[k * m + c];
            }
            x[i * m + c] = s / a[i * n + i];
        }
    }
    Ok(x)
}

/// `x W` for one feature row.
pub fn project(p: &Projection, x: &[f32], d: usize) -> Vec<f32> {
    let mut out = vec![0f32; d];
    for (a, &xa) in x.iter().enumerate().take(p.feature_dim) {
        if xa == 0.0 {
            continue;
        }
        let w = &p.weights[a * d..(a + 1) * d];
        out.iter_mut().zip(w).for_each(|(o, &wv)| *o += xa * wv);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        // A = [[4, 2], [2, 3]], B = [[2], [5]] -> x = [-0.5, 2]
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let x = cholesky_solve(&mut a, 2, &[2.0, 5.0], 1).unwrap();
        assert!((x[0] + 0.5).abs() < 1e-12 && (x[1] - 2.0).abs() < 1e-12, "{x:?}");
    }

    #[test]
    fn projection_recovers_a_linear_map() {
        // y = x M for a known M; with a tiny ridge the fit maps held-out x close to x M.
        let (f, d) = (4, 3);
        let m: Vec<f32> = (0..f * d).map(|i| ((i * 7 % 5) as f32 - 2.0) / 3.0).collect();
        let mut feats = ItemFeatures { layout: vec![("text".into(), f)], dim: f, ..Default::default() };
        let mut embs = HashMap::new();
        for k in 0..12 {
            let mut x: Vec<f32> = (0..f).map(|j| (((k * 3 + j * 5) % 11) as f32 - 5.0) / 5.0).collect();
            normalise(&mut x);
            let sku = format!("s{k}");
            let y: Vec<f32> = (0..d).map(|c| (0..f).map(|a| x[a] * m[a * d + c]).sum()).collect();
            feats.index.insert(sku.clone(), k);
            feats.skus.push(sku.clone());
            feats.rows.extend(&x);
            embs.insert(sku, y);
        }
        let p = fit_projection(&feats, d, 1e-6, |s| embs.get(s).map(|v| v.as_slice())).unwrap().unwrap();
        let x = feats.row("s3").unwrap();
        let got = project(&p, x, d);
        for (g, w) in got.iter().zip(&embs["s3"]) {
            assert!((g - w).abs() < 1e-3, "{got:?} vs {:?}", embs["s3"]);
        }
    }
}
