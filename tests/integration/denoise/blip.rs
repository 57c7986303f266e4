//! The real BLIP loading, preprocessing and decoding code on tiny random checkpoints in the HF
//! tensor layout (safetensors f32, GGUF Q8_0 and Q4K): our vision encoder and our cached, batched
//! decoder against candle's upstream vision model and (uncached, one image at a time) decoder.

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use image::{DynamicImage, Rgb, RgbImage};
use sgbd_edge::denoise::blip::{preprocess, Captioner, DecodeMode};
use sgbd_edge::denoise::testutil::*;
use std::path::Path;

fn images() -> Vec<DynamicImage> {
    let a = RgbImage::from_fn(360, 540, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let b = RgbImage::from_fn(224, 224, |x, _| if x < 112 { Rgb([250, 10, 10]) } else { Rgb([10, 10, 250]) });
    let c = RgbImage::from_fn(500, 300, |x, y| Rgb([((x * y) % 251) as u8, 200, ((x + y) % 256) as u8]));
    vec![DynamicImage::ImageRgb8(a), DynamicImage::ImageRgb8(b), DynamicImage::ImageRgb8(c)]
}

/// Captions with both decoders; checks they agree token for token and the outputs are sane.
/// `vision_tol`: allowed max difference from the upstream vision encoder, relative to its largest
/// output. With Q4K weights the activations are quantized to 8 bits before each matrix product, so
/// a last-bit difference of the GELU can move a value by one 8-bit step: about 1e-2, not 1e-4.
fn check_captioner(mut cap: Captioner, hidden: usize, max_tokens: usize, vision_tol: f32) {
    let imgs = images();
    let px: Vec<_> = imgs.iter().map(|i| cap.preprocess(i).unwrap()).collect();
    let px = candle_core::Tensor::stack(&px, 0).unwrap();
    let embeds = cap.encode(&px).unwrap();
    assert_eq!(embeds.dims(), &[3, 577, hidden]);
    // Our vision encoder computes what candle's upstream one does (the fast GELU differs by < 1e-6).
    let upstream = cap.encode_upstream(&px).unwrap();
    let diff = (&embeds - &upstream).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = upstream.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(scale > 0.1 && diff < vision_tol * scale, "vision encoder differs from upstream: {diff} (scale {scale})");
    let cached = cap.generate(&embeds, max_tokens, DecodeMode::Cached).unwrap();
    let uncached = cap.generate(&embeds, max_tokens, DecodeMode::Uncached).unwrap();
    assert_eq!(cached, uncached, "cached batched decoder differs from upstream");
    let distinct: std::collections::HashSet<u32> = cached.iter().flatten().copied().collect();
    assert!(distinct.len() >= 2, "degenerate decoding makes the comparison weak: {cached:?}");
    for t in &cached {
        assert!(t.len() <= max_tokens && !t.contains(&102) && !t.contains(&30522));
    }
    // The full path: batches of 2, text, features.
    cap.batch = 2;
    cap.max_tokens = max_tokens;
    let out = cap.caption(&imgs).unwrap();
    assert_eq!(out.len(), 3);
    for (o, t) in out.iter().zip(&cached) {
        assert_eq!(&o.tokens, t, "batching changed the tokens");
        assert_eq!(o.text, cap.detokenize(t).unwrap());
        assert!(!o.text.is_empty());
        assert_eq!(o.feature.len(), hidden);
        let n: f32 = o.feature.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4);
    }
    assert_ne!(out[0].feature, out[1].feature);
}

fn tokenizer(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("tokenizer.json");
    write_tiny_tokenizer(&p).unwrap();
    p
}

#[test]
fn tiny_blip_safetensors_and_q8_gguf_cached_equals_uncached() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_blip_config(32, 2);
    let tok = tokenizer(dir.path());
    let st = dir.path().join("blip.safetensors");
    write_random_blip_safetensors(&cfg, 7, &st).unwrap();
    let cap = Captioner::load_files(&st, &tok, &cfg, &Device::Cpu, "tiny-f32", 12, 4).unwrap();
    check_captioner(cap, 32, 12, 1e-4);
    // Same weights, quantized: every matrix with 32 | in_dim becomes Q8_0.
    let tensors: Vec<_> = candle_core::safetensors::load(&st, &Device::Cpu).unwrap().into_iter().collect();
    let gg = dir.path().join("blip-q8.gguf");
    tensors_to_gguf(&tensors, GgmlDType::Q8_0, &gg).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut std::fs::File::open(&gg).unwrap()).unwrap();
    let q = &content.tensor_infos["text_decoder.bert.encoder.layer.0.crossattention.self.key.weight"];
    assert_eq!(q.ggml_dtype, GgmlDType::Q8_0);
    let cap = Captioner::load_files(&gg, &tok, &cfg, &Device::Cpu, "tiny-q8", 12, 4).unwrap();
    check_captioner(cap, 32, 12, 1e-4);
}

#[test]
fn tiny_blip_q4k_gguf_cached_equals_uncached() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    // Q4K blocks are 256 wide: hidden 256 so that the matrices really are quantized.
    let cfg = tiny_blip_config(256, 1);
    let tok = tokenizer(dir.path());
    let gg = dir.path().join("blip-q4k.gguf");
    write_random_blip_gguf(&cfg, 11, GgmlDType::Q4K, &gg).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut std::fs::File::open(&gg).unwrap()).unwrap();
    assert_eq!(content.tensor_infos["vision_model.encoder.layers.0.mlp.fc1.weight"].ggml_dtype, GgmlDType::Q4K);
    assert_eq!(content.tensor_infos["vision_model.embeddings.position_embedding"].ggml_dtype, GgmlDType::F32);
    let cap = Captioner::load_files(&gg, &tok, &cfg, &Device::Cpu, "tiny-q4k", 8, 4).unwrap();
    check_captioner(cap, 256, 8, 1e-2);
}

#[test]
fn preprocessing_fills_crops_and_normalises() {
    let _turn = crate::harness::shared();
    // A flat colour stays flat after resize-to-fill; values follow (v/255 - mean) / std.
    let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(360, 540, Rgb([255, 0, 128])));
    let t = preprocess(&img, 384, &Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[3, 384, 384]);
    let v = t.to_vec3::<f32>().unwrap();
    let want =
        [(1.0 - 0.48145466) / 0.26862954, (0.0 - 0.4578275) / 0.261_302_6, (128.0 / 255.0 - 0.40821073) / 0.275_777_1];
    for c in 0..3 {
        for (y, x) in [(0, 0), (383, 383), (200, 17)] {
            assert!((v[c][y][x] - want[c]).abs() < 1e-4, "channel {c}");
        }
    }
    // Centre crop: the middle band of a tall image is kept (top/bottom are cut).
    let tall =
        RgbImage::from_fn(100, 300, |_, y| if (100..200).contains(&y) { Rgb([255, 255, 255]) } else { Rgb([0, 0, 0]) });
    let t = preprocess(&DynamicImage::ImageRgb8(tall), 384, &Device::Cpu).unwrap().to_vec3::<f32>().unwrap();
    assert!(t[0][192][192] > 1.5 && t[0][5][192] > 1.5 && t[0][378][192] > 1.5, "crop kept the white band only");
}

#[test]
fn missing_blip_files_give_a_clear_error_and_degraded_denoiser() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sgbd_edge::config::Config::default().denoise;
    cfg.models_dir = dir.path().to_path_buf();
    let err = match Captioner::from_config(&cfg) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded a captioner from an empty folder"),
    };
    assert!(err.contains("blip-image-captioning-large-q4k.gguf") && err.contains("missing"), "{err}");
    let (d, _) = sgbd_edge::denoise::Denoiser::load(&cfg);
    assert!(d.captioner.is_none() && d.encoder.is_none());
    // Mismatch: a wrong MiniLM file names expected and actual hashes.
    let m = dir.path().join("all-MiniLM-L6-v2");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        std::fs::write(m.join(f), b"not the model").unwrap();
    }
    let err = match sgbd_edge::denoise::TextEncoder::from_config(&cfg) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded a corrupt encoder"),
    };
    assert!(err.contains("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"), "{err}");
}
