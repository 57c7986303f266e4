//! `bench embed`: all-MiniLM-L6-v2 sentences/s in one run: our encoder batched, our encoder one
//! sentence at a time, and candle's `BertModel` batched (the baseline our encoder replaced).
//! Needs the real model files (`sgbd-edge models fetch`). Sentences: H&M descriptions from
//! `$SGBD_DATA/hm_sample/articles_sample.csv` when present, else generated product sentences.
use super::caption::{loadavg, timed};
use crate::denoise::features::read_catalog;
use crate::denoise::text::split_phrases;
use crate::denoise::{Result, TextEncoder};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct EmbedBenchArgs {
    /// Sentences embedded in the batched run.
    #[arg(long, default_value_t = 512)]
    pub sentences: usize,
    /// Sentences embedded one at a time (the baseline).
    #[arg(long, default_value_t = 64)]
    pub single: usize,
    /// Batch size (default: the configuration's embed_batch).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Data folder (H&M sentences); also read from SGBD_DATA.
    #[arg(long, env = "SGBD_DATA")]
    pub data: Option<PathBuf>,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EmbedBench {
    pub source: String,
    pub batch: usize,
    pub threads: usize,
    pub mean_chars: f64,
    pub single_sentences: usize,
    pub single_per_s: f64,
    pub single_ms_per_sentence: f64,
    pub batched_sentences: usize,
    pub batched_per_s: f64,
    pub speedup: f64,
    /// Word pieces per sentence ([CLS] and [SEP] included) and per second, batched.
    pub mean_tokens: f64,
    pub batched_tokens_per_s: f64,
    /// candle's `BertModel`, batched, on the same sentences.
    pub upstream_batched_per_s: f64,
    pub upstream_batched_cpu_ms_per_sentence: f64,
    /// CPU seconds per sentence (user + system, all threads): robust to other load.
    pub single_cpu_ms_per_sentence: f64,
    pub batched_cpu_ms_per_sentence: f64,
    /// Machine load average when the run ended.
    pub loadavg: f64,
}

fn sentences(a: &EmbedBenchArgs) -> (String, Vec<String>) {
    if let Some(d) = &a.data {
        let p = d.join("hm_sample").join("articles_sample.csv");
        if let Ok(items) = read_catalog(&p, None, Some(4 * a.sentences)) {
            let s: Vec<String> = items.iter().flat_map(|i| split_phrases(&i.description)).take(a.sentences).collect();
            if s.len() >= a.sentences.min(16) {
                return (p.display().to_string(), s);
            }
        }
    }
    let colours = ["black", "navy blue", "light beige", "dark green", "white", "red"];
    let kinds = ["jersey top", "denim jacket", "cotton shirt", "knitted jumper", "chino trousers", "summer dress"];
    let details = ["with a round neckline and long sleeves", "in a relaxed fit with side pockets", "made from soft organic cotton", "with a zip at the back and a lined bodice"];
    let s = (0..a.sentences)
        .map(|i| format!("A {} {} {}.", colours[i % 6], kinds[(i / 6) % 6], details[(i / 36) % 4]))
        .collect();
    ("generated".into(), s)
}

/// Runs the benchmark with the configured encoder.
pub fn run(a: &EmbedBenchArgs, cfg: &crate::config::DenoiseConfig) -> Result<EmbedBench> {
    let mut enc = TextEncoder::from_config(cfg)?;
    if let Some(b) = a.batch {
        enc.batch = b.max(1);
    }
    let (source, s) = sentences(a);
    let refs: Vec<&str> = s.iter().map(|x| x.as_str()).collect();
    // Warm-up.
    enc.embed(&refs[..refs.len().min(8)])?;
    let single = refs.len().min(a.single.max(1));
    let (single_s, single_cpu, ()) = timed(|| refs[..single].iter().try_for_each(|r| enc.embed_batch(&[r]).map(drop)))?;
    let (batched_s, batched_cpu, out) = timed(|| enc.embed(&refs))?;
    let mut up = TextEncoder::from_config_with(cfg, true)?;
    up.batch = enc.batch;
    up.embed(&refs[..refs.len().min(8)])?;
    let (up_s, up_cpu, up_out) = timed(|| up.embed(&refs))?;
    drop(up);
    let single_per_s = single as f64 / single_s;
    let batched_per_s = out.len() as f64 / batched_s;
    let tokens = refs.iter().map(|r| enc.token_count(r)).sum::<Result<usize>>()?;
    let mean_tokens = tokens as f64 / refs.len().max(1) as f64;
    Ok(EmbedBench {
        source,
        batch: enc.batch,
        threads: candle_core::utils::get_num_threads(),
        mean_chars: s.iter().map(|x| x.len()).sum::<usize>() as f64 / s.len().max(1) as f64,
        single_sentences: single,
        single_per_s,
        single_ms_per_sentence: 1e3 / single_per_s,
        batched_sentences: out.len(),
        batched_per_s,
        speedup: batched_per_s / single_per_s,
        single_cpu_ms_per_sentence: single_cpu * 1e3 / single as f64,
        batched_cpu_ms_per_sentence: batched_cpu * 1e3 / out.len().max(1) as f64,
        mean_tokens,
        batched_tokens_per_s: batched_per_s * mean_tokens,
        upstream_batched_per_s: up_out.len() as f64 / up_s,
        upstream_batched_cpu_ms_per_sentence: up_cpu * 1e3 / up_out.len().max(1) as f64,
        loadavg: loadavg(),
    })
}


/// Prints the results as a table.
pub fn print(b: &EmbedBench) {
    println!(
        "all-MiniLM-L6-v2, {} threads, sentences from {} (mean {:.0} chars, {:.1} word pieces)",
        b.threads, b.source, b.mean_chars, b.mean_tokens
    );
    println!("{:<40} {:>10} {:>12} {:>16}", "mode", "sentences", "sentences/s", "CPU ms/sentence");
    let row = |name: String, n: usize, per_s: f64, cpu: f64| println!("{name:<40} {n:>10} {per_s:>12.1} {cpu:>16.2}");
    row("ours, one at a time".into(), b.single_sentences, b.single_per_s, b.single_cpu_ms_per_sentence);
    row(format!("candle BertModel, batched (batch {})", b.batch), b.batched_sentences, b.upstream_batched_per_s, b.upstream_batched_cpu_ms_per_sentence);
    row(format!("ours, batched (batch {})", b.batch), b.batched_sentences, b.batched_per_s, b.batched_cpu_ms_per_sentence);
    println!(
        "ours batched: x{:.2} one at a time, x{:.2} candle's BertModel; {:.0} word pieces/s; load average {:.1} on {} cores",
        b.speedup,
        b.batched_per_s / b.upstream_batched_per_s,
        b.batched_tokens_per_s,
        b.loadavg,
        b.threads
    );
}
