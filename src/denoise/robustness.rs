//! Robustness of the cleaning on real descriptions with injected noise.
//!
//! Each description gets, at random positions: one generic promotional phrase, one keyword-stuffed
//! phrase built from its own title, one shouted phrase, and one phrase of another product's
//! description (of a different product type when the catalogue says). We count which injected
//! phrases cleaning removes and which genuine phrases it keeps, in two modes:
//! - `rules`: no caption (degraded mode, what runs without BLIP weights);
//! - `proxy_caption`: the similarity filter on, with a stand-in caption made from the catalogue's
//!   colour and product type (e.g. "Black Trousers"), since BLIP weights are not available here.
use super::embed::TextEncoder;
use super::features::CatalogItem;
use super::text::{clean_batch, split_phrases, CleanInput};
use super::Result;
use crate::config::DenoiseConfig;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Realistic generic promotional phrases.
pub const PROMO_PHRASES: &[&str] = &[
    "Free shipping on all orders over $50!",
    "Limited time offer: get 20% off today.",
    "Best seller, order now before it is gone.",
    "Shop now and save with our exclusive discount code.",
    "Hot sale this week only.",
    "Top quality guaranteed or your money back.",
    "Trending now, don't miss out.",
    "Cheap price, best deal in town.",
];

/// Removal rates for one mode.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ModeReport {
    /// Fraction of injected phrases removed, by kind (`promo`, `stuffing`, `shouting`, `foreign`).
    pub removed: BTreeMap<String, f64>,
    /// Fraction of all injected phrases removed.
    pub removed_all: f64,
    /// Fraction of genuine phrases kept.
    pub genuine_kept: f64,
    /// With a caption: (similarity threshold, coherence threshold, foreign phrases removed,
    /// genuine phrases kept) for phrases that passed the rules.
    pub sweep: Vec<(f32, f32, f64, f64)>,
}

/// The robustness check's result.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub items: usize,
    pub genuine_phrases: usize,
    pub injected_phrases: usize,
    pub rules: ModeReport,
    /// Only with the encoder.
    pub proxy_caption: Option<ModeReport>,
    pub min_phrase_similarity: f32,
}

/// The first of `names` the item has as an attribute.
pub(crate) fn attr<'a>(it: &'a CatalogItem, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| it.attributes.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()))
}

/// A stand-in caption from the catalogue: colour + product type (H&M or Myntra columns).
pub fn proxy_caption(it: &CatalogItem) -> String {
    let colour = attr(it, &["colour_group_name", "baseColour"]).unwrap_or("");
    let kind = attr(it, &["product_type_name", "articleType"]).unwrap_or(&it.title);
    format!("{colour} {kind}").trim().to_lowercase()
}

/// Runs the check on the items with at least two description phrases.
pub fn check(items: &[CatalogItem], cfg: &DenoiseConfig, enc: Option<&TextEncoder>, seed: u64) -> Result<Report> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let usable: Vec<&CatalogItem> = items.iter().filter(|it| split_phrases(&it.description).len() >= 2).collect();
    // (description, per phrase: None = genuine / Some(kind) = injected)
    let mut cases: Vec<(&CatalogItem, String, Vec<Option<&'static str>>)> = Vec::new();
    for it in &usable {
        let mut phrases: Vec<(String, Option<&'static str>)> =
            split_phrases(&it.description).into_iter().map(|p| (p, None)).collect();
        let promo = PROMO_PHRASES.choose(&mut rng).copied().unwrap_or("Hot sale!");
        let word = it
            .title
            .split_whitespace()
            .rfind(|w| w.chars().all(|c| c.is_alphabetic()) && w.len() >= 3)
            .unwrap_or("style")
            .to_lowercase();
        let stuffing = format!("{word} cheap {word} new {word} women {word} men {word}.");
        let shouting = format!("THE {} EVERYONE WANTS THIS SEASON.", word.to_uppercase());
        let kind = attr(it, &["product_type_name", "articleType"]);
        let other = usable
            .iter()
            .filter(|o| o.sku != it.sku && (kind.is_none() || attr(o, &["product_type_name", "articleType"]) != kind))
            .collect::<Vec<_>>()
            .choose(&mut rng)
            .and_then(|o| split_phrases(&o.description).into_iter().next());
        let mut inject: Vec<(String, &'static str)> =
            vec![(promo.to_string(), "promo"), (stuffing, "stuffing"), (shouting, "shouting")];
        if let Some(f) = other {
            inject.push((f, "foreign"));
        }
        inject.shuffle(&mut rng);
        for (p, k) in inject {
            let at = rng.random_range(0..=phrases.len());
            phrases.insert(at, (p, Some(k)));
        }
        let desc = phrases.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(" ");
        let labels = phrases.iter().map(|(_, k)| *k).collect();
        cases.push((it, desc, labels));
    }
    let mut report =
        Report { items: cases.len(), min_phrase_similarity: cfg.min_phrase_similarity, ..Default::default() };
    let run = |with_caption: bool| -> Result<ModeReport> {
        let mut removed: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let (mut gen_kept, mut gen_all) = (0usize, 0usize);
        let mut sims: Vec<(f32, Option<f32>, bool)> = Vec::new();
        let caps: Vec<Option<String>> =
            cases.iter().map(|(it, _, _)| with_caption.then(|| proxy_caption(it))).collect();
        let inputs: Vec<CleanInput> = cases
            .iter()
            .zip(&caps)
            .map(|((it, desc, _), cap)| CleanInput {
                title: &it.title,
                description: desc,
                caption: cap.as_deref(),
                attributes: &it.attributes,
            })
            .collect();
        let cleaned = clean_batch(&inputs, cfg, enc)?;
        for ((it, _, labels), d) in cases.iter().zip(cleaned) {
            // Phrase splitting of the noisy text must give back the labelled phrases.
            if d.phrases.len() != labels.len() {
                tracing::warn!(sku = %it.sku, "phrase split changed by injection; item skipped");
                continue;
            }
            for (p, l) in d.phrases.iter().zip(labels) {
                if let Some(s) = p.similarity {
                    if l.is_none() || *l == Some("foreign") {
                        sims.push((s, p.coherence, l.is_some()));
                    }
                }
                match l {
                    None => {
                        gen_all += 1;
                        gen_kept += usize::from(p.kept);
                    }
                    Some(k) => {
                        let e = removed.entry(k.to_string()).or_default();
                        e.0 += usize::from(!p.kept);
                        e.1 += 1;
                    }
                }
            }
        }
        let sweep = if sims.is_empty() {
            Vec::new()
        } else {
            let n_f = sims.iter().filter(|s| s.2).count().max(1) as f64;
            let n_g = sims.iter().filter(|s| !s.2).count().max(1) as f64;
            let mut v = Vec::new();
            for ts in [0.1f32, 0.15, 0.2, 0.25, 0.3, 0.35] {
                for tc in [0.2f32, 0.3, 0.4, 0.5, 1.0] {
                    let drop = |s: &(f32, Option<f32>, bool)| s.0 < ts && s.1.is_none_or(|c| c < tc);
                    let f = sims.iter().filter(|s| s.2 && drop(s)).count() as f64 / n_f;
                    let g = sims.iter().filter(|s| !s.2 && !drop(s)).count() as f64 / n_g;
                    v.push((ts, tc, f, g));
                }
            }
            v
        };
        let (r_all, n_all) = removed.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
        Ok(ModeReport {
            removed: removed.into_iter().map(|(k, (r, n))| (k, r as f64 / n.max(1) as f64)).collect(),
            removed_all: r_all as f64 / n_all.max(1) as f64,
            genuine_kept: gen_kept as f64 / gen_all.max(1) as f64,
            sweep,
        })
    };
    report.rules = run(false)?;
    if enc.is_some() {
        report.proxy_caption = Some(run(true)?);
    }
    report.genuine_phrases = cases.iter().map(|c| c.2.iter().filter(|l| l.is_none()).count()).sum();
    report.injected_phrases = cases.iter().map(|c| c.2.iter().filter(|l| l.is_some()).count()).sum();
    Ok(report)
}
