//! CapFilt-style cleaning of merchant descriptions.
//!
//! The description is split into phrases (sentences, bullet items). A phrase is dropped when it is
//! noise by rule: keyword stuffing (a word repeated), generic promotional terms, all-caps
//! shouting, runs of `!?*$`; or a duplicate (of the title or of an earlier kept phrase; with the
//! encoder also a near-duplicate, cosine >= 0.95). When a caption of the photo exists, a phrase whose
//! MiniLM cosine to "caption. title. attribute values" is below `min_phrase_similarity` is dropped as
//! not matching the product (BLIP's filter idea). Without a caption the rules still run and the
//! result says `degraded`. The item text is title + cleaned description + caption.
use super::embed::{cosine, TextEncoder};
use super::Result;
use crate::config::DenoiseConfig;
use std::collections::HashMap;

/// Why a phrase was kept or dropped.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PhraseDecision {
    pub text: String,
    pub kept: bool,
    /// `kept`, `duplicate`, `near-duplicate`, `repeated word "x"`, `promotional "x"`, `shouting`,
    /// `punctuation`, `off-topic`.
    pub reason: String,
    /// Cosine to caption + title, when a caption and the encoder were available.
    pub similarity: Option<f32>,
    /// Cosine to the mean of the description's other phrases (with a caption and the encoder).
    pub coherence: Option<f32>,
}

/// The result of cleaning one item.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Denoised {
    pub clean_description: String,
    pub caption: Option<String>,
    pub phrases: Vec<PhraseDecision>,
    /// title + clean description + caption: what the text encoder embeds.
    pub item_text: String,
    /// True when no caption was available (no BLIP): only rule-based cleaning ran.
    pub degraded: bool,
}

/// Near-duplicate threshold (cosine between two phrases of the same description).
pub const NEAR_DUPLICATE_COSINE: f32 = 0.95;

/// Splits a description into phrases at sentence ends (`.`, `!`, `?`, `;` followed by a space or the
/// end, with any run of terminators kept on the phrase), line breaks, bullets `•` and ` | `.
/// A dot between digits (`3.5`) does not split.
pub fn split_phrases(desc: &str) -> Vec<String> {
    let chars: Vec<char> = desc.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    let push = |cur: &mut String, out: &mut Vec<String>| {
        let t = cur.trim();
        if t.chars().any(|c| c.is_alphanumeric()) {
            out.push(t.to_string());
        }
        cur.clear();
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' || c == '\r' || c == '•' {
            push(&mut cur, &mut out);
            i += 1;
            continue;
        }
        if c == '|' && i > 0 && chars[i - 1] == ' ' {
            push(&mut cur, &mut out);
            i += 1;
            continue;
        }
        if matches!(c, '.' | '!' | '?' | ';') {
            let mut j = i;
            while j < chars.len() && matches!(chars[j], '.' | '!' | '?' | ';' | '*' | '$') {
                j += 1;
            }
            let next = chars.get(j).copied();
            let decimal = c == '.'
                && j == i + 1
                && i > 0
                && chars[i - 1].is_ascii_digit()
                && next.is_some_and(|n| n.is_ascii_digit());
            if !decimal && next.is_none_or(|n| n.is_whitespace()) {
                cur.extend(&chars[i..j]);
                push(&mut cur, &mut out);
                i = j;
                continue;
            }
        }
        cur.push(c);
        i += 1;
    }
    push(&mut cur, &mut out);
    out
}

/// Lower-case alphanumeric words.
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '%')
        .filter(|w| w.chars().any(|c| c.is_alphanumeric()))
        .map(|w| w.to_lowercase())
        .collect()
}

/// Comparison key for duplicates: lower-case words joined by one space.
pub fn normalize(s: &str) -> String {
    words(s).join(" ")
}

const STOPWORDS: &[&str] = &[
    "the", "and", "with", "for", "in", "of", "a", "an", "to", "on", "at", "or", "is", "are", "that", "this", "its",
    "it", "by", "from", "as", "has", "have", "be", "can", "your", "you", "our",
];

/// The rule that drops `phrase`, if any.
pub fn rule_reason(phrase: &str, cfg: &DenoiseConfig) -> Option<String> {
    // Runs of ! ? * $.
    let mut run = 0usize;
    for c in phrase.chars() {
        if matches!(c, '!' | '?' | '*' | '$') {
            run += 1;
            if run > cfg.max_punct_run {
                return Some("punctuation".into());
            }
        } else {
            run = 0;
        }
    }
    // Shouting.
    let ws = words(phrase);
    let letters: Vec<char> = phrase.chars().filter(|c| c.is_alphabetic()).collect();
    let long_words = ws.iter().filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 2).count();
    if long_words >= 3 && letters.len() >= 8 {
        let caps = letters.iter().filter(|c| c.is_uppercase()).count();
        if caps as f32 / letters.len() as f32 >= cfg.max_caps_ratio {
            return Some("shouting".into());
        }
    }
    // Promotional terms (whole words / phrases; terms with symbols as substrings).
    let padded = format!(" {} ", ws.join(" "));
    let lower = phrase.to_lowercase();
    let mut hits = Vec::new();
    for term in &cfg.promo_terms {
        let n = if term.chars().all(|c| c.is_alphanumeric() || c == ' ' || c == '\'') {
            padded.matches(&format!(" {} ", normalize(term))).count()
        } else {
            lower.matches(term.as_str()).count()
        };
        for _ in 0..n {
            hits.push(term.clone());
        }
    }
    if hits.len() >= cfg.max_promo_terms {
        return Some(format!("promotional \"{}\"", hits[0]));
    }
    // Keyword stuffing: one content word repeated.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in &ws {
        if w.chars().count() >= 3 && !STOPWORDS.contains(&w.as_str()) {
            *counts.entry(w.as_str()).or_default() += 1;
        }
    }
    // Long detailed descriptions repeat words legitimately ("side pockets, flap leg pockets and
    // fake back pockets"): stuffing also needs the word to be a large share of the phrase.
    let n_words = ws.len().max(1) as f32;
    let mut worst: Vec<(&str, usize)> = counts
        .into_iter()
        .filter(|(_, n)| *n > cfg.max_word_repeats && *n as f32 / n_words >= cfg.max_word_share)
        .collect();
    worst.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    if let Some((w, _)) = worst.first() {
        return Some(format!("repeated word \"{w}\""));
    }
    None
}

/// Cosine of row `k` to the mean of the other rows (None when there is no other row).
fn leave_one_out(rows: &[Vec<f32>], k: usize) -> Option<f32> {
    if rows.len() < 2 {
        return None;
    }
    let dim = rows[k].len();
    let mut mean = vec![0f32; dim];
    for (j, r) in rows.iter().enumerate().filter(|(j, _)| *j != k) {
        let _ = j;
        for (m, x) in mean.iter_mut().zip(r) {
            *m += x;
        }
    }
    Some(cosine(&rows[k], &mean))
}

/// Ends a kept phrase with one terminator.
fn tidy(phrase: &str) -> String {
    let t = phrase.trim_end_matches(['.', '!', '?', ';', '*', '$', ' ']);
    format!("{t}.")
}

/// One item to clean.
#[derive(Debug, Clone, Copy)]
pub struct CleanInput<'a> {
    pub title: &'a str,
    pub description: &'a str,
    /// From BLIP; None = degraded.
    pub caption: Option<&'a str>,
    pub attributes: &'a [(String, String)],
}

/// Cleans one description. `caption` comes from BLIP (None = degraded). `encoder` enables the
/// similarity filter (with a caption) and near-duplicate detection.
pub fn clean_description(
    title: &str,
    description: &str,
    caption: Option<&str>,
    attributes: &[(String, String)],
    cfg: &DenoiseConfig,
    encoder: Option<&TextEncoder>,
) -> Result<Denoised> {
    let input = CleanInput { title, description, caption, attributes };
    clean_batch(&[input], cfg, encoder)?
        .pop()
        .ok_or_else(|| super::DenoiseError::Config("clean_batch returned nothing".into()))
}

/// Cleans several items; the encoder embeds all their phrases in one batched call.
pub fn clean_batch(inputs: &[CleanInput], cfg: &DenoiseConfig, encoder: Option<&TextEncoder>) -> Result<Vec<Denoised>> {
    // Rules and exact duplicates, per item.
    let mut all: Vec<Vec<PhraseDecision>> = Vec::with_capacity(inputs.len());
    for inp in inputs {
        let mut decisions: Vec<PhraseDecision> = split_phrases(inp.description)
            .into_iter()
            .map(|p| PhraseDecision { text: p, kept: true, reason: "kept".into(), similarity: None, coherence: None })
            .collect();
        let mut seen = vec![normalize(inp.title)];
        for d in decisions.iter_mut() {
            if let Some(r) = rule_reason(&d.text, cfg) {
                d.kept = false;
                d.reason = r;
                continue;
            }
            let key = normalize(&d.text);
            if seen.contains(&key) {
                d.kept = false;
                d.reason = "duplicate".into();
                continue;
            }
            seen.push(key);
        }
        all.push(decisions);
    }
    if let Some(enc) = encoder {
        // Per item: the live phrases, then the reference (with a caption). Catalogue attribute
        // values help: on H&M with injected foreign phrases, the reference with them removed more
        // foreign phrases at the same share of genuine ones kept.
        let mut texts: Vec<String> = Vec::new();
        let mut spans: Vec<(usize, Vec<usize>, bool)> = Vec::new(); // (start, live phrase idx, has reference)
        for (inp, decisions) in inputs.iter().zip(&all) {
            let live: Vec<usize> = (0..decisions.len()).filter(|&i| decisions[i].kept).collect();
            let start = texts.len();
            texts.extend(live.iter().map(|&i| decisions[i].text.clone()));
            let has_ref = !live.is_empty() && inp.caption.is_some();
            if let (true, Some(c)) = (has_ref, inp.caption) {
                let attrs: Vec<&str> =
                    inp.attributes.iter().map(|(_, v)| v.as_str()).filter(|v| !v.is_empty()).collect();
                texts.push(format!("{c}. {}. {}", inp.title, attrs.join(", ")));
            }
            spans.push((start, live, has_ref));
        }
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let emb = if refs.is_empty() { Vec::new() } else { enc.embed(&refs)? };
        for (decisions, (start, live, has_ref)) in all.iter_mut().zip(spans) {
            let e = &emb[start..start + live.len()];
            let mut kept_emb: Vec<usize> = Vec::new();
            for (k, &i) in live.iter().enumerate() {
                if kept_emb.iter().any(|&j| cosine(&e[j], &e[k]) >= NEAR_DUPLICATE_COSINE) {
                    decisions[i].kept = false;
                    decisions[i].reason = "near-duplicate".into();
                    continue;
                }
                if has_ref {
                    let s = cosine(&e[k], &emb[start + live.len()]);
                    decisions[i].similarity = Some(s);
                    let coh = leave_one_out(e, k);
                    decisions[i].coherence = coh;
                    // Off-topic: far from the caption and title, and (when the description has
                    // other phrases) far from the rest of the description too.
                    if s < cfg.min_phrase_similarity && coh.is_none_or(|c| c < cfg.min_phrase_coherence) {
                        decisions[i].kept = false;
                        decisions[i].reason = "off-topic".into();
                        continue;
                    }
                }
                kept_emb.push(k);
            }
        }
    }
    Ok(inputs.iter().zip(all).map(|(inp, decisions)| finish(inp, decisions)).collect())
}

fn finish(inp: &CleanInput, decisions: Vec<PhraseDecision>) -> Denoised {
    let clean_description = decisions.iter().filter(|d| d.kept).map(|d| tidy(&d.text)).collect::<Vec<_>>().join(" ");
    let mut parts = vec![tidy(inp.title.trim())];
    if !clean_description.is_empty() {
        parts.push(clean_description.clone());
    }
    if let Some(c) = inp.caption.filter(|c| !c.trim().is_empty()) {
        parts.push(tidy(c.trim()));
    }
    let item_text = parts.into_iter().filter(|p| p != ".").collect::<Vec<_>>().join(" ");
    Denoised {
        clean_description,
        caption: inp.caption.map(|c| c.to_string()),
        phrases: decisions,
        item_text,
        degraded: inp.caption.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DenoiseConfig {
        DenoiseConfig::default()
    }

    #[test]
    fn splits_sentences_keeps_decimals_and_bullets() {
        let p = split_phrases("Jacket in 3.5 oz cotton. Regular fit!!! BUY NOW • Zip pocket\nMachine wash");
        assert_eq!(p, vec!["Jacket in 3.5 oz cotton.", "Regular fit!!!", "BUY NOW", "Zip pocket", "Machine wash"]);
        assert!(split_phrases("  ...  ").is_empty());
    }

    #[test]
    fn rules_catch_each_kind_of_noise() {
        let c = cfg();
        assert_eq!(rule_reason("Regular fit!!!", &c).as_deref(), Some("punctuation"));
        assert_eq!(rule_reason("BEST QUALITY EVER GUARANTEED FOR YOU", &c).as_deref(), Some("shouting"));
        assert!(rule_reason("Free shipping on all orders", &c).unwrap().starts_with("promotional"));
        assert!(rule_reason("Get 20% off today", &c).unwrap().starts_with("promotional"));
        assert_eq!(
            rule_reason("dress summer dress beach dress party dress", &c).as_deref(),
            Some("repeated word \"dress\"")
        );
        // Genuine product text passes; "offer" inside "offering" is not a promo term.
        assert_eq!(rule_reason("Jacket in woven fabric with a collar, zip and press-studs.", &c), None);
        assert_eq!(rule_reason("Soft jersey offering good stretch.", &c), None);
        assert_eq!(rule_reason("Made in the USA.", &c), None);
        // Real H&M text: a long phrase may repeat a word; a collab name in capitals is not shouting.
        assert_eq!(
            rule_reason("Side pockets, flap leg pockets with a hook and loop fastening and fake back pockets.", &c),
            None
        );
        assert_eq!(rule_reason("ANNA GLOVER x H&M.", &c), None);
    }

    #[test]
    fn degraded_cleaning_drops_noise_and_duplicates_and_builds_item_text() {
        let d = clean_description(
            "Denim jacket",
            "Jacket in washed denim with a collar. Free shipping!!! Jacket in washed denim with a collar. \
             denim denim denim jacket. Chest pockets with a flap.",
            None,
            &[],
            &cfg(),
            None,
        )
        .unwrap();
        assert!(d.degraded);
        assert_eq!(d.clean_description, "Jacket in washed denim with a collar. Chest pockets with a flap.");
        let reasons: Vec<&str> = d.phrases.iter().map(|p| p.reason.as_str()).collect();
        assert_eq!(reasons[0], "kept");
        assert_eq!(reasons[1], "punctuation");
        assert_eq!(reasons[2], "duplicate");
        assert!(reasons[3].starts_with("repeated word"));
        assert_eq!(d.item_text, "Denim jacket. Jacket in washed denim with a collar. Chest pockets with a flap.");
    }

    #[test]
    fn title_repeated_as_phrase_is_a_duplicate_and_caption_joins_item_text() {
        let d =
            clean_description("Denim jacket", "Denim jacket. Long sleeves.", Some("a blue jacket"), &[], &cfg(), None)
                .unwrap();
        assert!(!d.degraded);
        assert_eq!(d.phrases[0].reason, "duplicate");
        assert_eq!(d.item_text, "Denim jacket. Long sleeves. a blue jacket.");
    }
}
