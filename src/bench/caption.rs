//! `bench caption`: full-size BLIP-large with random weights (latency does not depend on the
//! values) written as a temporary GGUF, loaded through the real loader. Measures the vision encoder
//! (one image, and batched), decoding a fixed number of tokens with the upstream decoder (image
//! keys/values recomputed every token, one image at a time) and with ours (cached, batched), and
//! peak RSS (VmHWM). The GGUF is written by a child process so that its memory does not count.
use crate::denoise::blip::{Captioner, DecodeMode};
use crate::denoise::testutil;
use crate::denoise::{DenoiseError, Result};
use candle_core::quantized::GgmlDType;
use candle_core::Tensor;
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
    /// Vision-encoder passes timed per row (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Skip the upstream candle baselines (vision encoder and uncached decoder).
    #[arg(long)]
    pub skip_upstream: bool,
    /// cpu, cuda or auto (cuda needs a `--features cuda` build; without a GPU it falls back to
    /// the CPU with a log line, and the report's `device` says which ran).
    #[arg(long, default_value = "cpu")]
    pub device: crate::device::DevicePref,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Internal: only write the random GGUF to this path and exit.
    #[arg(long, hide = true)]
    pub write_gguf: Option<PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CaptionBenchReport {
    pub quant: String,
    /// Where it ran: "cpu" or "cuda".
    pub device: String,
    pub threads: usize,
    pub gguf_mb: f64,
    pub load_s: f64,
    pub images: usize,
    pub tokens: usize,
    /// Vision-encoder passes per row (median reported).
    pub repeat: usize,
    /// The first pass also repacks each quantized matrix for the CPU kernel (once per process).
    pub vision_s_first_pass: f64,
    pub vision_s_per_image_single: f64,
    pub vision_s_per_image_batched: f64,
    /// candle's upstream vision model on the same weights (baseline), one image and batched.
    pub vision_s_per_image_single_upstream: Option<f64>,
    pub vision_s_per_image_batched_upstream: Option<f64>,
    pub decode_ms_per_token_uncached: Option<f64>,
    pub decode_ms_per_token_cached: f64,
    pub decode_ms_per_token_per_image_cached_batched: f64,
    pub images_per_s_uncached_sequential: Option<f64>,
    pub images_per_s_cached_batched: f64,
    /// VmHWM of our captioner (before any upstream model is built), and of the whole run.
    pub peak_rss_ours_mb: f64,
    pub peak_rss_mb: f64,
    /// VmHWM right after loading, and after the first vision pass.
    pub rss_after_load_mb: f64,
    pub rss_after_single_vision_mb: f64,
    /// CPU seconds (all threads) of the same phases: robust to other load on the machine.
    pub vision_cpu_s_per_image_batched: f64,
    pub vision_cpu_s_per_image_batched_upstream: Option<f64>,
    pub decode_cpu_ms_per_token_uncached: Option<f64>,
    pub decode_cpu_ms_per_token_cached: f64,
    pub decode_cpu_ms_per_token_per_image_cached_batched: f64,
    pub loadavg: f64,
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

/// `--write-gguf`: only writes the random checkpoint (what the benchmark's child process does).
pub fn write_gguf(a: &CaptionBenchArgs, path: &Path) -> Result<()> {
    testutil::write_random_blip_gguf(&blip::Config::image_captioning_large(), 1, gg(a.quant), path)?;
    Ok(())
}

/// Runs the benchmark.
pub fn run(a: &CaptionBenchArgs) -> Result<CaptionBenchReport> {
    let cfg = blip::Config::image_captioning_large();
    let dir = std::env::temp_dir().join(format!("sgbd-bench-caption-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DenoiseError::Io { path: dir.display().to_string(), source })?;
    let res = run_in(a, &cfg, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    res
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

fn run_in(a: &CaptionBenchArgs, cfg: &blip::Config, dir: &Path) -> Result<CaptionBenchReport> {
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
    let device = crate::device::select(a.device);
    let mut cap = Captioner::load_files(&gguf, &tok, cfg, &device, "random-blip-large", tokens, n)?;
    let load_s = secs(t);
    let rss_load = crate::sys::peak_rss_mib();
    let imgs = bench_images(n);
    let px: Vec<Tensor> = imgs.iter().map(|i| cap.preprocess(i)).collect::<candle_core::Result<_>>()?;
    let px = Tensor::stack(&px, 0)?;

    eprintln!("vision encoder ...");
    let one = px.narrow(0, 0, 1)?;
    let t = Instant::now();
    let e1 = cap.encode(&one)?;
    let vision_first = secs(t);
    let rss_single = crate::sys::peak_rss_mib();
    let r = a.repeat.max(1);
    let (vision_single, _, _) = median_of(r, 1, || cap.encode(&one))?;
    let (vision_batched, vision_cpu, eb) = median_of(r, n, || cap.encode(&px))?;

    eprintln!("decoding {tokens} tokens ...");
    let (cached_ms, cached_cpu) = time_decode(&mut cap, &e1, tokens, DecodeMode::Cached)?;
    let (batched_ms, batched_cpu) = time_decode(&mut cap, &eb, tokens, DecodeMode::Cached)?;
    let per_image = vision_batched + batched_ms * tokens as f64 / 1e3;
    let rss_ours = crate::sys::peak_rss_mib();

    let mut up = Upstream::default();
    if !a.skip_upstream {
        eprintln!("upstream baselines: vision encoder, uncached decoding ...");
        let (s1, _, _) = median_of(r, 1, || cap.encode_upstream(&one))?;
        let (sb, cb, _) = median_of(r, n, || cap.encode_upstream(&px))?;
        let (ms, cpu) = time_decode(&mut cap, &e1, tokens, DecodeMode::Uncached)?;
        up = Upstream {
            vision_single: Some(s1),
            vision_batched: Some(sb),
            vision_cpu: Some(cb),
            decode_ms: Some(ms),
            decode_cpu: Some(cpu),
            // Sequential images: upstream vision one at a time + uncached decoding.
            images_per_s: Some(1.0 / (s1 + ms * tokens as f64 / 1e3)),
        };
    }
    Ok(CaptionBenchReport {
        quant: format!("{:?}", a.quant),
        device: crate::device::describe(&device).to_string(),
        threads: candle_core::utils::get_num_threads(),
        gguf_mb,
        load_s,
        images: n,
        tokens,
        repeat: r,
        vision_s_first_pass: vision_first,
        vision_s_per_image_single: vision_single,
        vision_s_per_image_batched: vision_batched,
        vision_s_per_image_single_upstream: up.vision_single,
        vision_s_per_image_batched_upstream: up.vision_batched,
        decode_ms_per_token_uncached: up.decode_ms,
        decode_ms_per_token_cached: cached_ms,
        decode_ms_per_token_per_image_cached_batched: batched_ms,
        images_per_s_uncached_sequential: up.images_per_s,
        images_per_s_cached_batched: 1.0 / per_image,
        peak_rss_ours_mb: rss_ours,
        peak_rss_mb: crate::sys::peak_rss_mib(),
        rss_after_load_mb: rss_load,
        rss_after_single_vision_mb: rss_single,
        vision_cpu_s_per_image_batched: vision_cpu,
        vision_cpu_s_per_image_batched_upstream: up.vision_cpu,
        decode_cpu_ms_per_token_uncached: up.decode_cpu,
        decode_cpu_ms_per_token_cached: cached_cpu,
        decode_cpu_ms_per_token_per_image_cached_batched: batched_cpu,
        loadavg: crate::sys::loadavg(),
    })
}

/// The upstream baselines' results (absent with `--skip-upstream`).
#[derive(Default)]
struct Upstream {
    vision_single: Option<f64>,
    vision_batched: Option<f64>,
    vision_cpu: Option<f64>,
    decode_ms: Option<f64>,
    decode_cpu: Option<f64>,
    images_per_s: Option<f64>,
}

/// Runs `f` `times` times: the median wall and CPU seconds per image, and the last result.
fn median_of<T>(times: usize, images: usize, mut f: impl FnMut() -> candle_core::Result<T>) -> Result<(f64, f64, T)> {
    let mut runs = Vec::with_capacity(times);
    let mut last = None;
    for _ in 0..times.max(1) {
        let (w, c, out) = timed_per_image(images, &mut f)?;
        runs.push((w, c));
        last = Some(out);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let wall = median(runs.iter().map(|r| r.0).collect());
    let cpu = median(runs.iter().map(|r| r.1).collect());
    let out = last.ok_or_else(|| DenoiseError::Config("no timed run".into()))?;
    Ok((wall, cpu, out))
}

/// Decodes exactly `tokens` tokens for every image of `embeds`: (wall ms, CPU ms) per token and image.
fn time_decode(cap: &mut Captioner, embeds: &Tensor, tokens: usize, mode: DecodeMode) -> Result<(f64, f64)> {
    let (wall, cpu, out) = timed(|| cap.generate_fixed(embeds, tokens, mode))?;
    let k = out.iter().map(|t| t.len()).sum::<usize>().max(1) as f64;
    Ok((wall * 1e3 / k, cpu * 1e3 / k))
}

/// Runs `f` once: (wall s per image, CPU s per image, its result).
fn timed_per_image<T>(images: usize, f: impl FnOnce() -> candle_core::Result<T>) -> Result<(f64, f64, T)> {
    let (wall, cpu, out) = timed(f)?;
    Ok((wall / images as f64, cpu / images as f64, out))
}

/// Runs `f` once: (wall seconds, CPU seconds of all threads, its result).
pub fn timed<T, E>(f: impl FnOnce() -> std::result::Result<T, E>) -> std::result::Result<(f64, f64, T), E> {
    let (t, c) = (Instant::now(), crate::sys::process_cpu_seconds());
    let out = f()?;
    Ok((secs(t), crate::sys::process_cpu_seconds() - c, out))
}

/// The results as a table: ours against candle's upstream model where both exist.
impl std::fmt::Display for CaptionBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self;
        let opt = |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into());
        let ratio =
            |base: Option<f64>, ours: f64| base.map(|x| format!("x{:.2}", x / ours)).unwrap_or_else(|| "-".into());
        writeln!(
            f,
            "BLIP-large random weights, {} ({:.0} MiB GGUF), on {}, {} threads, {} images, {} tokens",
            b.quant, b.gguf_mb, b.device, b.threads, b.images, b.tokens
        )?;
        writeln!(f, "{:<44} {:>10} {:>10} {:>8}", "metric", "upstream", "ours", "speedup")?;
        let rows = [
            ("vision encoder, 1 image (s/image)", b.vision_s_per_image_single_upstream, b.vision_s_per_image_single, 2),
            (
                "vision encoder, batched (s/image)",
                b.vision_s_per_image_batched_upstream,
                b.vision_s_per_image_batched,
                2,
            ),
            (
                "vision encoder, batched (CPU s/image)",
                b.vision_cpu_s_per_image_batched_upstream,
                b.vision_cpu_s_per_image_batched,
                2,
            ),
            ("decode, 1 image (ms/token)", b.decode_ms_per_token_uncached, b.decode_ms_per_token_cached, 1),
            ("decode, 1 image (CPU ms/token)", b.decode_cpu_ms_per_token_uncached, b.decode_cpu_ms_per_token_cached, 1),
            ("decode, batched (ms/token/image)", None, b.decode_ms_per_token_per_image_cached_batched, 1),
            ("decode, batched (CPU ms/token/image)", None, b.decode_cpu_ms_per_token_per_image_cached_batched, 1),
        ];
        for (name, base, ours, d) in rows {
            writeln!(f, "{:<44} {:>10} {:>10.d$} {:>8}", name, opt(base, d), ours, ratio(base, ours))?;
        }
        let (ips_base, ips) = (b.images_per_s_uncached_sequential, b.images_per_s_cached_batched);
        writeln!(
            f,
            "{:<44} {:>10} {:>10.3} {:>8}",
            "images/s (vision + decoding)",
            opt(ips_base, 3),
            ips,
            ips_base.map(|x| format!("x{:.2}", ips / x)).unwrap_or_else(|| "-".into())
        )?;
        writeln!(f, "vision rows: median of {} passes", b.repeat)?;
        writeln!(f, "{:<44} {:>10.2}", "load (s)", b.load_s)?;
        writeln!(f, "{:<44} {:>10.2}", "first vision pass, incl. weight repacking (s)", b.vision_s_first_pass)?;
        writeln!(f, "{:<44} {:>10.0}", "peak RSS after load (MiB)", b.rss_after_load_mb)?;
        writeln!(f, "{:<44} {:>10.0}", "peak RSS after first vision pass (MiB)", b.rss_after_single_vision_mb)?;
        writeln!(f, "{:<44} {:>10.0}", "peak RSS, our captioner (MiB, VmHWM)", b.peak_rss_ours_mb)?;
        writeln!(f, "{:<44} {:>10.0}", "peak RSS, with upstream baselines (MiB)", b.peak_rss_mb)?;
        writeln!(f, "load average during the run: {:.1} (2 idle cores: about 0-1)", b.loadavg)
    }
}

impl super::Report for CaptionBenchReport {}
