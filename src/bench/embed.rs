//! `bench embed`: all-MiniLM-L6-v2 sentences/s in one run: our encoder batched, our encoder one
//! sentence at a time, and candle's `BertModel` batched (the baseline our encoder replaced).
//! Needs the real model files (`sgbd-edge models fetch`). Sentences: H&M descriptions from
//! `$SGBD_DATA/hm_sample/articles_sample.csv` when present, else generated product sentences.
use super::caption::timed;
use crate::denoise::embed::cosine;
use crate::denoise::features::read_catalog;
use crate::denoise::packed_bert::Precision;
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

/// One timed way of embedding the sentences.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EmbedRow {
    pub mode: String,
    pub sentences: usize,
    pub per_s: f64,
    /// CPU milliseconds per sentence (user + system, all threads): robust to other load.
    pub cpu_ms_per_sentence: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EmbedBenchReport {
    pub source: String,
    pub batch: usize,
    pub threads: usize,
    pub mean_chars: f64,
    /// Word pieces per sentence (`[CLS]` and `[SEP]` included).
    pub mean_tokens: f64,
    /// Whether the int8 rows ran the AVX-512 VNNI kernel (else the portable one).
    pub int8_vnni: bool,
    /// candle's `BertModel` batched (the baseline), ours f32 one at a time, ours f32 batched, ours
    /// int8 batched, and (where VNNI is present) ours int8 batched with the portable kernel.
    pub rows: Vec<EmbedRow>,
    /// Cosine of each sentence's int8 embedding with its f32 one: mean and smallest.
    pub int8_cosine_mean: f64,
    pub int8_cosine_min: f64,
    /// Largest |f32 − candle| over all values of all embeddings.
    pub f32_max_abs_diff_vs_candle: f64,
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
    let details = [
        "with a round neckline and long sleeves",
        "in a relaxed fit with side pockets",
        "made from soft organic cotton",
        "with a zip at the back and a lined bodice",
    ];
    let s = (0..a.sentences)
        .map(|i| format!("A {} {} {}.", colours[i % 6], kinds[(i / 6) % 6], details[(i / 36) % 4]))
        .collect();
    ("generated".into(), s)
}

/// Loads an encoder (`None`: candle's `BertModel`) with the benchmark's batch size and warms it up.
fn encoder(
    cfg: &crate::config::DenoiseConfig,
    precision: Option<Precision>,
    batch: Option<usize>,
    warm: &[&str],
) -> Result<TextEncoder> {
    let mut cfg = cfg.clone();
    if let Some(p) = precision {
        cfg.text_precision = p;
    }
    let mut enc = TextEncoder::from_config_with(&cfg, precision.is_none())?;
    if let Some(b) = batch {
        enc.batch = b.max(1);
    }
    enc.embed(&warm[..warm.len().min(8)])?;
    Ok(enc)
}

/// Times `f` over `n` sentences.
fn row<T>(mode: String, n: usize, f: impl FnOnce() -> Result<T>) -> Result<(EmbedRow, T)> {
    let (wall, cpu, out) = timed(f)?;
    let row = EmbedRow { mode, sentences: n, per_s: n as f64 / wall, cpu_ms_per_sentence: cpu * 1e3 / n.max(1) as f64 };
    Ok((row, out))
}

/// Runs the benchmark: candle's `BertModel`, then our encoder in f32 and in int8, on the same
/// sentences in one process.
pub fn run(a: &EmbedBenchArgs, cfg: &crate::config::DenoiseConfig) -> Result<EmbedBenchReport> {
    let (source, s) = sentences(a);
    let refs: Vec<&str> = s.iter().map(|x| x.as_str()).collect();
    let n = refs.len();
    let up = encoder(cfg, None, a.batch, &refs)?;
    let batch = up.batch;
    let (up_row, up_out) = row(format!("candle BertModel, batched (batch {batch})"), n, || up.embed(&refs))?;
    drop(up);
    let f32 = encoder(cfg, Some(Precision::F32), a.batch, &refs)?;
    let single = n.min(a.single.max(1));
    let (single_row, ()) = row("ours f32, one at a time".into(), single, || {
        refs[..single].iter().try_for_each(|r| f32.embed_batch(&[r]).map(drop))
    })?;
    let (f32_row, f32_out) = row(format!("ours f32, batched (batch {batch})"), n, || f32.embed(&refs))?;
    let tokens = refs.iter().map(|r| f32.token_count(r)).sum::<Result<usize>>()?;
    drop(f32);
    let int8 = encoder(cfg, Some(Precision::Int8), a.batch, &refs)?;
    let vnni = crate::kernels::qgemm::vnni_available();
    let kernel = if vnni { "VNNI" } else { "portable" };
    let (int8_row, int8_out) = row(format!("ours int8 ({kernel}), batched (batch {batch})"), n, || int8.embed(&refs))?;
    let mut rows = vec![up_row, single_row, f32_row, int8_row];
    drop(int8);
    if vnni {
        // What a CPU without VNNI (or an arm64 board) runs: the same sums, portable code.
        crate::kernels::qgemm::force_portable(true);
        let portable = encoder(cfg, Some(Precision::Int8), a.batch, &refs)
            .and_then(|enc| row(format!("ours int8 (portable), batched (batch {batch})"), n, || enc.embed(&refs)));
        crate::kernels::qgemm::force_portable(false);
        rows.push(portable?.0);
    }
    let cos: Vec<f64> = int8_out.iter().zip(&f32_out).map(|(a, b)| cosine(a, b) as f64).collect();
    let diff = f32_out
        .iter()
        .zip(&up_out)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64))
        .fold(0f64, f64::max);
    Ok(EmbedBenchReport {
        source,
        batch,
        threads: rayon::current_num_threads(),
        mean_chars: s.iter().map(|x| x.len()).sum::<usize>() as f64 / n.max(1) as f64,
        mean_tokens: tokens as f64 / n.max(1) as f64,
        int8_vnni: vnni,
        rows,
        int8_cosine_mean: cos.iter().sum::<f64>() / cos.len().max(1) as f64,
        int8_cosine_min: cos.iter().copied().fold(1.0, f64::min),
        f32_max_abs_diff_vs_candle: diff,
        loadavg: crate::sys::loadavg(),
    })
}

/// The results as a table, each row also against candle's `BertModel` (the first row).
impl std::fmt::Display for EmbedBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "all-MiniLM-L6-v2, {} threads, sentences from {} (mean {:.0} chars, {:.1} word pieces)",
            self.threads, self.source, self.mean_chars, self.mean_tokens
        )?;
        writeln!(
            f,
            "{:<44} {:>10} {:>12} {:>16} {:>10} {:>12}",
            "mode", "sentences", "sentences/s", "CPU ms/sentence", "x candle", "word pieces/s"
        )?;
        let base = self.rows.first().map_or(f64::NAN, |r| r.per_s);
        for r in &self.rows {
            writeln!(
                f,
                "{:<44} {:>10} {:>12.1} {:>16.2} {:>10.2} {:>12.0}",
                r.mode,
                r.sentences,
                r.per_s,
                r.cpu_ms_per_sentence,
                r.per_s / base,
                r.per_s * self.mean_tokens
            )?;
        }
        writeln!(
            f,
            "int8 against f32: cosine mean {:.5}, min {:.5}; f32 against candle: max |difference| {:.1e}; load average {:.1} on {} cores",
            self.int8_cosine_mean, self.int8_cosine_min, self.f32_max_abs_diff_vs_candle, self.loadavg, self.threads
        )
    }
}

impl super::Report for EmbedBenchReport {}
