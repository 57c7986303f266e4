//! `bench caption`: full-size BLIP-large with random weights (latency does not depend on the
//! values) written as a temporary GGUF, loaded through the real loader. Measures the vision encoder
//! (one image, and batched), decoding a fixed number of tokens with the upstream decoder (image
//! keys/values recomputed every token, one image at a time) and with ours (cached, batched), and
//! peak RSS (VmHWM). The GGUF is written by a child process so that its memory does not count.
use crate::denoise::blip::{Captioner, DecodeMode};
use crate::denoise::testutil;
use crate::denoise::{DenoiseError, Result};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use candle_transformers::models::blip;
use image::{DynamicImage, Rgb, RgbImage};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    Q4k,
    #[value(name = "q8_0")]
    Q8_0,
}

#[derive(clap::Args, Debug)]
pub struct CaptionBenchArgs {
    /// Weight format of the random BLIP-large.
    #[arg(long, value_enum, default_value = "q4k")]
    pub quant: Quant,
    /// Tokens decoded per image (no early stop).
    #[arg(long, default_value_t = 20)]
    pub tokens: usize,
    /// Images (also the batch size of the batched runs).
    #[arg(long, default_value_t = 4)]
    pub images: usize,
    /// Skip the upstream (uncached) decoder.
    #[arg(long)]
    pub skip_uncached: bool,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Internal: only write the random GGUF to this path and exit.
    #[arg(long, hide = true)]
    pub write_gguf: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CaptionBench {
    pub quant: String,
    pub threads: usize,
    pub gguf_mb: f64,
    pub load_s: f64,
    pub images: usize,
    pub tokens: usize,
    pub vision_s_per_image_single: f64,
    pub vision_s_per_image_batched: f64,
    pub decode_ms_per_token_uncached: Option<f64>,
    pub decode_ms_per_token_cached: f64,
    pub decode_ms_per_token_per_image_cached_batched: f64,
    pub images_per_s_uncached_sequential: Option<f64>,
    pub images_per_s_cached_batched: f64,
    pub peak_rss_mb: f64,
    /// VmHWM right after loading, and after the single-image vision pass.
    pub rss_after_load_mb: f64,
    pub rss_after_single_vision_mb: f64,
    /// CPU seconds (all threads) of the same phases: robust to other load on the machine.
    pub vision_cpu_s_per_image_batched: f64,
    pub decode_cpu_ms_per_token_uncached: Option<f64>,
    pub decode_cpu_ms_per_token_cached: f64,
    pub decode_cpu_ms_per_token_per_image_cached_batched: f64,
    pub loadavg: f64,
}

/// Peak resident set size of this process (VmHWM), in MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// User + system CPU seconds used by this process so far (robust to other load on the machine).
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Load average over the last minute (other work on the machine skews wall-clock numbers).
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn gg(q: Quant) -> GgmlDType {
    match q {
        Quant::Q4k => GgmlDType::Q4K,
        Quant::Q8_0 => GgmlDType::Q8_0,
    }
}

fn bench_images(n: usize) -> Vec<DynamicImage> {
    (0..n)
        .map(|k| {
            DynamicImage::ImageRgb8(RgbImage::from_fn(360, 540, |x, y| {
                Rgb([((x + 7 * k as u32) % 256) as u8, ((y * 3) % 256) as u8, ((x ^ y) % 256) as u8])
            }))
        })
        .collect()
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Runs the benchmark (or, with `--write-gguf`, only writes the random checkpoint).
pub fn run(a: &CaptionBenchArgs) -> Result<Option<CaptionBench>> {
    let cfg = blip::Config::image_captioning_large();
    if let Some(p) = &a.write_gguf {
        testutil::write_random_blip_gguf(&cfg, 1, gg(a.quant), p)?;
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("sgbd-bench-caption-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DenoiseError::Io { path: dir.display().to_string(), source })?;
    let res = run_in(a, &cfg, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    res.map(Some)
}

fn write_gguf_in_child(a: &CaptionBenchArgs, path: &Path) -> Result<()> {
    let exe = std::env::current_exe().map_err(|source| DenoiseError::Io { path: "current_exe".into(), source })?;
    let q = match a.quant {
        Quant::Q4k => "q4k",
        Quant::Q8_0 => "q8_0",
    };
    let st = std::process::Command::new(exe)
        .args(["bench", "caption", "--quant", q, "--write-gguf"])
        .arg(path)
        .status()
        .map_err(|source| DenoiseError::Io { path: "bench child".into(), source })?;
    if !st.success() {
        return Err(DenoiseError::Config(format!("writing the random GGUF failed: {st}")));
    }
    Ok(())
}

fn run_in(a: &CaptionBenchArgs, cfg: &blip::Config, dir: &Path) -> Result<CaptionBench> {
    let n = a.images.max(1);
    let tokens = a.tokens.max(1);
    let gguf = dir.join("blip-large-random.gguf");
    let tok = dir.join("tokenizer.json");
    eprintln!("writing a random full-size BLIP-large GGUF ({:?}) ...", a.quant);
    let t = Instant::now();
    write_gguf_in_child(a, &gguf)?;
    eprintln!("  done in {:.1} s", secs(t));
    testutil::write_tiny_tokenizer(&tok).map_err(DenoiseError::Tokenizer)?;
    let gguf_mb = std::fs::metadata(&gguf).map(|m| m.len() as f64 / 1048576.0).unwrap_or(f64::NAN);
    let t = Instant::now();
    let mut cap = Captioner::load_files(&gguf, &tok, cfg, &Device::Cpu, "random-blip-large", tokens, n)?;
    let load_s = secs(t);
    let rss_load = peak_rss_mb();
    let imgs = bench_images(n);
    let px: Vec<Tensor> = imgs.iter().map(|i| cap.preprocess(i)).collect::<candle_core::Result<_>>()?;
    let px = Tensor::stack(&px, 0)?;

    eprintln!("vision encoder ...");
    let one = px.narrow(0, 0, 1)?;
    let t = Instant::now();
    let e1 = cap.encode(&one)?;
    let vision_single = secs(t);
    let rss_single = peak_rss_mb();
    let (t, c) = (Instant::now(), cpu_seconds());
    let eb = cap.encode(&px)?;
    let vision_batched = secs(t) / n as f64;
    let vision_cpu = (cpu_seconds() - c) / n as f64;

    eprintln!("decoding {tokens} tokens ...");
    let (uncached_ms, uncached_ips, uncached_cpu) = if a.skip_uncached {
        (None, None, None)
    } else {
        let (t, c) = (Instant::now(), cpu_seconds());
        let out = cap.generate_fixed(&e1, tokens, DecodeMode::Uncached)?;
        let k = out[0].len().max(1) as f64;
        let ms = secs(t) * 1e3 / k;
        let cpu = (cpu_seconds() - c) * 1e3 / k;
        // Sequential images: vision one at a time + uncached decoding, from the measured parts.
        let per_image = vision_single + ms * tokens as f64 / 1e3;
        (Some(ms), Some(1.0 / per_image), Some(cpu))
    };
    let (t, c) = (Instant::now(), cpu_seconds());
    let out = cap.generate_fixed(&e1, tokens, DecodeMode::Cached)?;
    let k = out[0].len().max(1) as f64;
    let cached_ms = secs(t) * 1e3 / k;
    let cached_cpu = (cpu_seconds() - c) * 1e3 / k;
    let (t, c) = (Instant::now(), cpu_seconds());
    let out = cap.generate_fixed(&eb, tokens, DecodeMode::Cached)?;
    let k = (out[0].len().max(1) * n) as f64;
    let batched_ms = secs(t) * 1e3 / k;
    let batched_cpu = (cpu_seconds() - c) * 1e3 / k;
    let per_image = vision_batched + batched_ms * tokens as f64 / 1e3;
    Ok(CaptionBench {
        quant: format!("{:?}", a.quant),
        threads: candle_core::utils::get_num_threads(),
        gguf_mb,
        load_s,
        images: n,
        tokens,
        vision_s_per_image_single: vision_single,
        vision_s_per_image_batched: vision_batched,
        decode_ms_per_token_uncached: uncached_ms,
        decode_ms_per_token_cached: cached_ms,
        decode_ms_per_token_per_image_cached_batched: batched_ms,
        images_per_s_uncached_sequential: uncached_ips,
        images_per_s_cached_batched: 1.0 / per_image,
        peak_rss_mb: peak_rss_mb(),
        rss_after_load_mb: rss_load,
        rss_after_single_vision_mb: rss_single,
        vision_cpu_s_per_image_batched: vision_cpu,
        decode_cpu_ms_per_token_uncached: uncached_cpu,
        decode_cpu_ms_per_token_cached: cached_cpu,
        decode_cpu_ms_per_token_per_image_cached_batched: batched_cpu,
        loadavg: loadavg(),
    })
}

/// Prints the results as a table.
pub fn print(b: &CaptionBench) {
    let opt = |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into());
    println!("BLIP-large random weights, {} ({:.0} MiB GGUF), {} threads, {} images, {} tokens", b.quant, b.gguf_mb, b.threads, b.images, b.tokens);
    println!("{:<46} {:>12}", "metric", "value");
    println!("{:<46} {:>12.2}", "load (s)", b.load_s);
    println!("{:<46} {:>12.2}", "vision encoder, 1 image (s/image)", b.vision_s_per_image_single);
    println!("{:<46} {:>12.2}", "vision encoder, batched (s/image)", b.vision_s_per_image_batched);
    println!("{:<46} {:>12}", "decode, upstream uncached, 1 image (ms/token)", opt(b.decode_ms_per_token_uncached, 1));
    println!("{:<46} {:>12.1}", "decode, cached, 1 image (ms/token)", b.decode_ms_per_token_cached);
    println!("{:<46} {:>12.1}", "decode, cached, batched (ms/token/image)", b.decode_ms_per_token_per_image_cached_batched);
    println!("{:<46} {:>12}", "images/s, upstream, one at a time", opt(b.images_per_s_uncached_sequential, 3));
    println!("{:<46} {:>12.3}", "images/s, cached + batched", b.images_per_s_cached_batched);
    println!("{:<46} {:>12.0}", "peak RSS after load (MiB)", b.rss_after_load_mb);
    println!("{:<46} {:>12.0}", "peak RSS after 1-image vision pass (MiB)", b.rss_after_single_vision_mb);
    println!("{:<46} {:>12.0}", "peak RSS, whole run (MiB, VmHWM)", b.peak_rss_mb);
    println!("CPU time (all threads), robust to other load (load average {:.1}):", b.loadavg);
    println!("{:<46} {:>12.2}", "vision encoder, batched (CPU s/image)", b.vision_cpu_s_per_image_batched);
    println!("{:<46} {:>12}", "decode, upstream uncached (CPU ms/token)", opt(b.decode_cpu_ms_per_token_uncached, 1));
    println!("{:<46} {:>12.1}", "decode, cached (CPU ms/token)", b.decode_cpu_ms_per_token_cached);
    println!("{:<46} {:>12.1}", "decode, cached, batched (CPU ms/token/image)", b.decode_cpu_ms_per_token_per_image_cached_batched);
}
