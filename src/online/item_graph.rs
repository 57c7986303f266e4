//! New items through FREEDOM's own item-item graph: an item catalogued with features after the
//! serving model was trained joins the model's kNN lists ([`ItemGraphParts::extend`](crate::learn::knn::ItemGraphParts::extend): only its
//! similarities to the other items are computed, and an old item takes it as a neighbour when it
//! beats that item's k-th), and every item's graph part `h = S^L x item_id` is recomputed, as
//! FREEDOM computes it, with the new item's ID row zero (it has no interactions).
//!
//! The new item lacks the other part of a FREEDOM item, the user-item (LightGCN) part `b`, which
//! carries most of a trained item's score: with `b_new = 0` it scores `h_new` only, and on the
//! planted replay of `bench loop`'s test 1 of 12 new items was ever recommended (8 of 12 through
//! the projection). So `b_new` is imputed by one step of the same graph over its neighbours,
//! `b_new = sum_j S[new, j] b_j`: the item is scored as `b_new + h_new`, from the model's own
//! graph and parameters, no separate regressor.
//!
//! Features are read from the store as the round read them; an old item whose stored vector
//! changed since training keeps the neighbours it was trained with.

use super::features::ItemFeatures;
use super::{OnlineError, Result};
use crate::registry::{ServingGraph, ServingModel};

/// The item embeddings of `sm.items` followed by `new` (SKUs with features that `sm` lacks),
/// `[(items + new) * dim]`, through `sm`'s item graph extended to the new items.
pub fn extend(sm: &ServingModel, g: &ServingGraph, feats: &ItemFeatures, new: &[String]) -> Result<Vec<f32>> {
    if feats.layout != g.layout {
        return Err(OnlineError::Invalid(format!(
            "item graph trained on features {:?}, the store holds {:?}",
            g.layout, feats.layout
        )));
    }
    let d = sm.dim;
    let mut parts = g.parts.clone();
    parts.check(d)?;
    if parts.n_items() != sm.items.len() {
        return Err(OnlineError::Invalid(format!(
            "item graph of {} items for {} served items",
            parts.n_items(),
            sm.items.len()
        )));
    }
    // the user-item part of each trained item's embedding
    let mut emb: Vec<f32> = sm.item_emb.iter().zip(parts.propagate(d)).map(|(e, h)| e - h).collect();
    // per graph modality (the layouts match), the feature rows of the old and the new items
    let (old, fresh) = (feats.modalities(&sm.items)?, feats.modalities(new)?);
    parts.extend(&old, &fresh, d)?;
    // a new item's missing user-item part: one graph step over its neighbours' (its own is zero)
    emb.extend(std::iter::repeat_n(0.0, new.len() * d));
    let n = sm.items.len();
    let imputed = parts.mix(&emb, d, n..n + new.len());
    emb[n * d..].copy_from_slice(&imputed);
    emb.iter_mut().zip(parts.propagate(d)).for_each(|(e, h)| *e += h);
    Ok(emb)
}
