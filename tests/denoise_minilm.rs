//! all-MiniLM-L6-v2 through our BERT encoder matches sentence-transformers to 4 decimals, and
//! candle's BertModel (the encoder it replaced) to 1e-5.
//!
//! Reference scores are the ones published in the sentence-transformers documentation
//! (sbert.net, "Computing Embeddings" usage page and "Semantic Textual Similarity" page), printed
//! there to 4 decimals for `SentenceTransformer("all-MiniLM-L6-v2")` with cosine similarity.
//! Needs the model files: `sgbd-edge models fetch` (CI runs it first); skips with a message otherwise.
use sgbd_edge::config::Config;
use sgbd_edge::denoise::embed::cosine;
use sgbd_edge::denoise::TextEncoder;

fn encoder() -> Option<TextEncoder> {
    encoder_with(false)
}

fn encoder_with(upstream: bool) -> Option<TextEncoder> {
    let mut cfg = Config::default().denoise;
    if let Ok(d) = std::env::var("SGBD_MODELS_DIR") {
        cfg.models_dir = d.into();
    }
    match TextEncoder::from_config_with(&cfg, upstream) {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("skipping: MiniLM model files unavailable ({e}); run `sgbd-edge models fetch`");
            None
        }
    }
}

fn check(enc: &TextEncoder, a: &[&str], b: &[&str], expected: &[[f32; 3]]) {
    let ea = enc.embed(a).unwrap();
    let eb = enc.embed(b).unwrap();
    for (i, row) in expected.iter().enumerate() {
        for (j, &want) in row.iter().enumerate() {
            let got = cosine(&ea[i], &eb[j]);
            assert!(
                (got - want).abs() < 5e-5 + 1e-6,
                "cos({:?}, {:?}) = {got:.5}, published {want:.4}",
                a[i],
                b[j]
            );
        }
    }
}

#[test]
fn minilm_matches_published_sentence_transformers_scores() {
    let Some(enc) = encoder() else { return };
    assert_eq!(enc.dim(), 384);
    // sbert.net, usage page: similarities of three sentences with themselves.
    let s = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."];
    check(&enc, &s, &s, &[[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]]);
    // sbert.net, semantic textual similarity page.
    let a = ["The new movie is awesome", "The cat sits outside", "A man is playing guitar"];
    let b = ["The dog plays in the garden", "The new movie is so great", "A woman watches TV"];
    check(&enc, &a, &b, &[[0.0543, 0.8939, -0.0502], [0.2838, -0.0029, 0.1310], [0.2277, -0.0136, -0.0327]]);
}

#[test]
fn our_encoder_equals_candles_bert_model() {
    let (Some(ours), Some(upstream)) = (encoder(), encoder_with(true)) else { return };
    let texts = [
        "A navy blue cotton shirt with long sleeves and a button-down collar.",
        "short",
        "BEST PRICE!!! free shipping, limited offer",
        "Jersey top in soft organic cotton with a round neckline and a straight hem; regular fit.",
    ];
    let a = ours.embed(&texts).unwrap();
    let b = upstream.embed(&texts).unwrap();
    for (t, (x, y)) in texts.iter().zip(a.iter().zip(&b)) {
        let worst = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "{t:?}: max difference {worst}");
    }
}

#[test]
fn batched_and_single_embeddings_agree_and_are_unit_length() {
    let Some(enc) = encoder() else { return };
    let texts = ["short", "a somewhat longer sentence about a navy blue cotton shirt with long sleeves", "mid length text here"];
    let batched = enc.embed(&texts).unwrap();
    for (t, row) in texts.iter().zip(&batched) {
        let single = enc.embed(&[t]).unwrap().remove(0);
        let n: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4);
        assert!(cosine(row, &single) > 0.99999, "padding changed the embedding of {t:?}");
    }
    // Inputs longer than 256 word pieces are truncated, not an error.
    let long = "word ".repeat(600);
    assert_eq!(enc.embed(&[long.as_str()]).unwrap()[0].len(), 384);
}

#[test]
fn caption_filter_drops_an_off_topic_phrase_and_near_duplicates() {
    let Some(enc) = encoder() else { return };
    let cfg = Config::default().denoise;
    let d = sgbd_edge::denoise::clean_description(
        "Denim jacket",
        "Jacket in washed denim with a collar and chest pockets. \
         The smartphone has a 6.1 inch OLED display and 128 GB of storage. \
         Jacket in washed denim with a collar and chest pocket.",
        Some("a man wearing a blue denim jacket"),
        &[("colour".to_string(), "blue".to_string())],
        &cfg,
        Some(&enc),
    )
    .unwrap();
    let reasons: Vec<&str> = d.phrases.iter().map(|p| p.reason.as_str()).collect();
    assert_eq!(reasons, vec!["kept", "off-topic", "near-duplicate"], "{:?}", d.phrases);
    assert!(d.phrases[1].similarity.unwrap() < d.phrases[0].similarity.unwrap());
    assert_eq!(d.item_text, "Denim jacket. Jacket in washed denim with a collar and chest pockets. a man wearing a blue denim jacket.");
}
