//! Catalogue text corruption the way merchant catalogues really go wrong, for `bench robustness`:
//! a fraction of the items get one corruption each (seeded, reproducible), the kinds dealt out in
//! turn so that each gets its share:
//! - [`Corruption::Boilerplate`]: marketing boilerplate appended (shop-wide phrases, not about
//!   the product; deliberately not the phrases the cleaning rules were written from);
//! - [`Corruption::WrongAttribute`]: material words swapped for other materials (every
//!   occurrence) and a wrong colour put in front ("Red semi shiny nylon ..." for a black item);
//! - [`Corruption::Truncation`]: the text cut at 25-50 % of its characters, mid-word as a field
//!   limit cuts it;
//! - [`Corruption::Foreign`]: another article's description (of another product type when the
//!   catalogue says which), as when rows are shifted or copied.
//!
//! Only the description changes; the title and the attributes stay as the merchant wrote them.
use super::features::CatalogItem;
use super::robustness::attr;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// One way a description goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    Boilerplate,
    WrongAttribute,
    Truncation,
    Foreign,
}

impl Corruption {
    pub const ALL: [Corruption; 4] =
        [Corruption::Boilerplate, Corruption::WrongAttribute, Corruption::Truncation, Corruption::Foreign];
}

/// Shop-wide marketing text that feeds add to every product.
pub const BOILERPLATE: &[&str] = &[
    "Discover the full collection in our online store.",
    "Part of our new season edit, styled by our team.",
    "The perfect gift for any occasion.",
    "Free returns within 30 days, no questions asked.",
    "Follow us for new arrivals every week.",
    "Click to see more colours and sizes.",
    "Only available online while stocks last.",
    "Join our members club and earn points on every purchase.",
];

/// Colour words for the wrong-colour corruption.
pub const COLOURS: &[&str] =
    &["black", "white", "red", "blue", "green", "yellow", "pink", "grey", "beige", "brown", "orange", "purple"];

/// Material words swapped by the wrong-material corruption.
pub const MATERIALS: &[&str] = &[
    "cotton",
    "polyester",
    "wool",
    "denim",
    "leather",
    "silk",
    "linen",
    "viscose",
    "jersey",
    "lace",
    "satin",
    "velvet",
    "fleece",
    "knit",
    "chiffon",
    "cashmere",
    "suede",
    "corduroy",
    "mesh",
    "nylon",
];

/// The corrupted catalogue and what was done to it.
#[derive(Debug, Clone)]
pub struct Corrupted {
    pub items: Vec<CatalogItem>,
    /// Per changed item (index into `items`): the corruption applied.
    pub changed: BTreeMap<usize, Corruption>,
}

impl Corrupted {
    /// How many items got each kind.
    pub fn counts(&self) -> BTreeMap<Corruption, usize> {
        let mut c = BTreeMap::new();
        for k in self.changed.values() {
            *c.entry(*k).or_insert(0) += 1;
        }
        c
    }
}

/// Corrupts `round(rate * n)` items' descriptions (`rate` in `[0, 1]`), each with one of `kinds`
/// dealt out in turn over the drawn items; `rate` 0 or no kinds returns the catalogue unchanged.
pub fn corrupt_catalog(items: &[CatalogItem], rate: f64, kinds: &[Corruption], seed: u64) -> Corrupted {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = items.to_vec();
    let mut changed = BTreeMap::new();
    let n = ((rate.clamp(0.0, 1.0) * items.len() as f64).round() as usize).min(items.len());
    if kinds.is_empty() || n == 0 {
        return Corrupted { items: out, changed };
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.shuffle(&mut rng);
    for (turn, &i) in order[..n].iter().enumerate() {
        let kind = kinds[turn % kinds.len()];
        let it = &items[i];
        out[i].description = match kind {
            Corruption::Boilerplate => boilerplate(&it.description, &mut rng),
            Corruption::WrongAttribute => wrong_attribute(it, &mut rng),
            Corruption::Truncation => truncate(&it.description, &mut rng),
            Corruption::Foreign => foreign(items, i, &mut rng),
        };
        changed.insert(i, kind);
    }
    Corrupted { items: out, changed }
}

fn boilerplate(desc: &str, rng: &mut impl Rng) -> String {
    let tail = BOILERPLATE.choose_multiple(rng, 2).copied().collect::<Vec<_>>().join(" ");
    if desc.trim().is_empty() {
        tail
    } else {
        format!("{} {tail}", desc.trim_end())
    }
}

/// Whole-word, case-insensitive replacement of every `from` in `text` by `to`, keeping a leading
/// capital.
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.eq_ignore_ascii_case(from) {
            let capital = word.chars().next().is_some_and(|c| c.is_uppercase());
            out.push_str(&if capital { capitalise(to) } else { to.to_string() });
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn has_word(text: &str, w: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric()).any(|t| t.eq_ignore_ascii_case(w))
}

fn wrong_attribute(it: &CatalogItem, rng: &mut impl Rng) -> String {
    let mut desc = it.description.clone();
    for &m in MATERIALS.iter().filter(|m| has_word(&it.description, m)) {
        let others: Vec<&&str> =
            MATERIALS.iter().filter(|o| !has_word(&it.description, o) && !has_word(&desc, o)).collect();
        if let Some(to) = others.choose(rng) {
            desc = replace_word(&desc, m, to);
        }
    }
    let true_colour = attr(it, &["colour_group_name", "baseColour"]).unwrap_or("").to_lowercase();
    let wrong: Vec<&&str> = COLOURS.iter().filter(|c| !true_colour.contains(**c) && !has_word(&desc, c)).collect();
    let colour = wrong.choose(rng).map(|c| **c).unwrap_or("red");
    let rest = desc.trim_start();
    let mut chars = rest.chars();
    match chars.next() {
        // "Semi shiny ..." -> "Red semi shiny ..."; an acronym or a number keeps its case.
        Some(f) => {
            let keep = chars.next().is_some_and(|s| s.is_uppercase()) || !f.is_alphabetic();
            let first = if keep { f.to_string() } else { f.to_lowercase().collect() };
            format!("{} {first}{}", capitalise(colour), &rest[f.len_utf8()..])
        }
        None => capitalise(colour),
    }
}

fn truncate(desc: &str, rng: &mut impl Rng) -> String {
    let chars: Vec<char> = desc.chars().collect();
    if chars.len() < 2 {
        return String::new();
    }
    let keep = ((chars.len() as f64 * rng.random_range(0.25..=0.5)).round() as usize).clamp(1, chars.len() - 1);
    chars[..keep].iter().collect::<String>().trim_end().to_string()
}

fn foreign(items: &[CatalogItem], i: usize, rng: &mut impl Rng) -> String {
    let kind = attr(&items[i], &["product_type_name", "articleType"]);
    let own = items[i].description.trim();
    let differs = |o: &CatalogItem| !o.description.trim().is_empty() && o.description.trim() != own;
    let pool: Vec<&CatalogItem> = items
        .iter()
        .filter(|o| differs(o) && (kind.is_none() || attr(o, &["product_type_name", "articleType"]) != kind))
        .collect();
    let pool = if pool.is_empty() { items.iter().filter(|o| differs(o)).collect() } else { pool };
    pool.choose(rng).map(|o| o.description.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str, kind: &str, colour: &str, desc: &str) -> CatalogItem {
        CatalogItem {
            sku: sku.into(),
            title: format!("Title {sku}"),
            description: desc.into(),
            attributes: vec![("product_type_name".into(), kind.into()), ("colour_group_name".into(), colour.into())],
            image: None,
        }
    }

    fn catalogue(n: usize) -> Vec<CatalogItem> {
        (0..n)
            .map(|i| {
                let kind = ["Trousers", "Sweater", "Dress"][i % 3];
                item(&format!("s{i}"), kind, "Black", &format!("Soft cotton {kind} number {i} with a jersey lining."))
            })
            .collect()
    }

    #[test]
    fn rate_sets_the_number_of_items_and_kinds_are_dealt_in_turn() {
        let items = catalogue(40);
        for (rate, want) in [(0.0, 0), (0.1, 4), (0.25, 10), (0.5, 20), (1.0, 40)] {
            let c = corrupt_catalog(&items, rate, &Corruption::ALL, 7);
            assert_eq!(c.changed.len(), want, "rate {rate}");
            let changed = (0..40).filter(|i| c.items[*i].description != items[*i].description).count();
            assert_eq!(changed, want, "rate {rate}: every drawn item's description changes, no other");
            for (i, it) in c.items.iter().enumerate() {
                assert_eq!((&it.title, &it.attributes), (&items[i].title, &items[i].attributes));
            }
            // Dealt in turn: the first kinds get the remainder.
            let counts: Vec<usize> = Corruption::ALL.iter().map(|k| c.counts().get(k).copied().unwrap_or(0)).collect();
            let expect: Vec<usize> = (0..4).map(|k| want / 4 + usize::from(k < want % 4)).collect();
            assert_eq!(counts, expect, "rate {rate}");
        }
        let only = corrupt_catalog(&items, 0.5, &[Corruption::Truncation], 7);
        assert_eq!(only.counts(), BTreeMap::from([(Corruption::Truncation, 20)]));
    }

    #[test]
    fn seeded_runs_repeat_and_other_seeds_differ() {
        let items = catalogue(30);
        let a = corrupt_catalog(&items, 0.5, &Corruption::ALL, 1);
        let b = corrupt_catalog(&items, 0.5, &Corruption::ALL, 1);
        let c = corrupt_catalog(&items, 0.5, &Corruption::ALL, 2);
        assert_eq!(a.items, b.items);
        assert_ne!(a.items, c.items);
    }

    #[test]
    fn each_kind_does_what_it_says() {
        let items = catalogue(12);
        let d = &items[0].description;
        let run = |k| corrupt_catalog(&items, 1.0, &[k], 3);

        let b = run(Corruption::Boilerplate);
        let got = &b.items[0].description;
        assert!(got.starts_with(d.as_str()) && got.len() > d.len());
        assert_eq!(BOILERPLATE.iter().filter(|p| got.contains(**p)).count(), 2, "{got}");

        let w = run(Corruption::WrongAttribute);
        let got = &w.items[0].description;
        assert!(!has_word(got, "cotton") && !has_word(got, "jersey"), "{got}");
        assert_eq!(MATERIALS.iter().filter(|m| has_word(got, m)).count(), 2, "two other materials: {got}");
        let first = got.split_whitespace().next().unwrap_or("").to_lowercase();
        assert!(COLOURS.contains(&first.as_str()) && first != "black", "{got}");
        assert!(got.contains(" soft "), "the old first word follows, lower-cased: {got}");

        let t = run(Corruption::Truncation);
        for (c, o) in t.items.iter().zip(&items) {
            let (n, m) = (c.description.chars().count(), o.description.chars().count());
            assert!(o.description.starts_with(c.description.as_str()), "a prefix: {:?}", c.description);
            assert!(n * 5 >= m && n * 2 <= m + 1, "{n} of {m} characters kept");
        }

        let f = run(Corruption::Foreign);
        for (c, o) in f.items.iter().zip(&items) {
            let donor = items.iter().find(|x| x.description == c.description).expect("another item's text");
            assert_ne!(donor.sku, o.sku);
            assert_ne!(attr(donor, &["product_type_name"]), attr(o, &["product_type_name"]));
        }
    }

    #[test]
    fn odd_descriptions_do_not_break_it() {
        let items = vec![
            item("a", "Dress", "Black", ""),
            item("b", "Dress", "Black", "é"),
            item("c", "Dress", "", "ÉTÉ COTTON dress"),
            item("d", "Dress", "Black", "Same"),
            item("e", "Dress", "Black", "Same"),
        ];
        for k in Corruption::ALL {
            let c = corrupt_catalog(&items, 1.0, &[k], 9);
            assert_eq!(c.items.len(), 5);
        }
        let w = corrupt_catalog(&items[2..3], 1.0, &[Corruption::WrongAttribute], 9);
        let got = &w.items[0].description;
        assert!(got.contains(" ÉTÉ ") && !has_word(got, "cotton"), "{got}");
        assert_eq!(replace_word("Cotton, cotton-rich cottons", "cotton", "wool"), "Wool, wool-rich cottons");
    }
}
