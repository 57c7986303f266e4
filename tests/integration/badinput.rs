//! Bad input: every parser of outside data must return an error, never panic, on arbitrary bytes
//! (property tests), and on the fixed corpus of nasty cases in `tests/corpus/` (run in CI).
//! Also the resource limits: payload size, image dimensions (decompression bombs).

use proptest::prelude::*;
use sgbd_edge::capture::planogram::{self, DecodeLimits};
use sgbd_edge::mqtt::contract::{self, Command, EventMsg, RecommendRequest, Topics};
use sgbd_edge::store::Store;
use std::path::{Path, PathBuf};

const MAX: usize = 64 * 1024;

/// Runs every parser on `bytes`; none may panic. Returns how many accepted it (for the report).
fn feed_all(bytes: &[u8], dir: &Path) -> usize {
    let mut accepted = 0;
    accepted += contract::decode::<EventMsg>(bytes, MAX).is_ok() as usize;
    if let Ok(r) = contract::decode::<RecommendRequest>(bytes, MAX) {
        let _ = r.deadline_ms();
        accepted += 1;
    }
    accepted += contract::decode::<Command>(bytes, MAX).is_ok() as usize;
    let text = String::from_utf8_lossy(bytes);
    let t = Topics::new("sgbd", "s1", "edge-1");
    let _ = t.classify(&text);
    let _ = t.classify(&format!("sgbd/s1/edge-1/{text}"));
    let _ = t.reply_topic_allowed("k1", &format!("sgbd/s1/edge-1/kiosk/k1/{text}"));
    accepted += sgbd_edge::config::validate_str(&text).is_ok() as usize;
    accepted += planogram::decode(bytes, "fuzz", DecodeLimits::default()).is_ok() as usize;
    let f = dir.join("input.csv");
    std::fs::write(&f, bytes).unwrap();
    let mut store = Store::open_in_memory().unwrap();
    accepted += sgbd_edge::store::import_interactions(&mut store, &f).is_ok() as usize;
    accepted += sgbd_edge::store::import_catalog_csv(&mut store, &f).is_ok() as usize;
    let inter = dir.join("input.inter");
    std::fs::write(&inter, bytes).unwrap();
    accepted += sgbd_edge::store::import_interactions(&mut store, &inter).is_ok() as usize;
    assert_eq!(store.integrity_check().unwrap(), "ok");
    accepted
}

/// JSON-shaped payloads: the contract's fields with arbitrary values, to get past `not JSON`.
fn json_like() -> impl Strategy<Value = Vec<u8>> {
    let val = prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| if v.is_finite() { v.to_string() } else { "1e400".into() }),
        ".{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("18446744073709551615".to_string()),
        Just("-9223372036854775808".to_string()),
        "[0-9]{1,3}\\.[0-9]{1,3}".prop_map(|s| format!("\"{s}\"")),
    ];
    let key = prop_oneof![
        Just("schema_version"),
        Just("ts"),
        Just("event_id"),
        Just("user"),
        Just("sku"),
        Just("kind"),
        Just("k"),
        Just("exclude"),
        Just("reply_to"),
        Just("request_id"),
        Just("ttl_ms"),
        Just("expires_at"),
        Just("items"),
        Just("node_id"),
        Just("zzz"),
    ];
    proptest::collection::vec((key, val), 0..12).prop_map(|kv| {
        let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _turn = crate::harness::shared();
        let dir = tempfile::tempdir().unwrap();
        feed_all(&bytes, dir.path());
    }

    #[test]
    fn json_shaped_payloads_never_panic(bytes in json_like()) {
        let _turn = crate::harness::shared();
        let dir = tempfile::tempdir().unwrap();
        feed_all(&bytes, dir.path());
    }

    #[test]
    fn config_text_never_panics(lines in proptest::collection::vec(
        prop_oneof![
            Just("[mqtt]".to_string()), Just("[node]".to_string()), Just("[mqtt.tls]".to_string()),
            Just("[capture]".to_string()), Just("[[capture.cameras]]".to_string()), Just("[serve]".to_string()),
            "[a-z_]{1,12} = [0-9]{1,20}", "[a-z_]{1,12} = \"[^\"\\\\]{0,10}\"", "[a-z_.]{1,12} = \\[\\]", ".{0,30}",
            Just("kiosk_rate_per_s = nan".to_string()), Just("port = 70000".to_string()),
            Just("max_payload_bytes = -1".to_string()),
        ], 0..20)) {
        let _turn = crate::harness::shared();
        let _ = sgbd_edge::config::validate_str(&lines.join("\n"));
    }

    #[test]
    fn csv_imports_never_panic(rows in proptest::collection::vec(
        proptest::collection::vec(prop_oneof![".{0,12}", "[0-9]{1,20}", Just(String::new()), Just("\"".to_string())], 0..8), 0..30),
        header in prop_oneof![
            Just("event_id,user,sku,kind,ts_ms,kiosk,split"), Just("user_id:token\titem_id:token\trating:float\ttimestamp:float"),
            Just("id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"),
            Just("userID\titemID\trating\ttimestamp\tx_label"), Just(""),
        ],
        tab in any::<bool>()) {
        let _turn = crate::harness::shared();
        let sep = if tab { "\t" } else { "," };
        let mut text = format!("{header}\n");
        for r in &rows { text.push_str(&r.join(sep)); text.push('\n'); }
        let dir = tempfile::tempdir().unwrap();
        feed_all(text.as_bytes(), dir.path());
    }
}

#[test]
fn oversized_payload_is_refused_before_parsing() {
    let _turn = crate::harness::shared();
    let big = format!("{{\"schema_version\":\"1.0\",\"ts\":1,\"user\":\"{}\"}}", "a".repeat(MAX));
    let e = contract::decode::<RecommendRequest>(big.as_bytes(), MAX).unwrap_err();
    assert_eq!(e.code, contract::ErrorCode::TooLarge);
}

#[test]
fn image_dimension_limits_refuse_decompression_bombs() {
    let _turn = crate::harness::shared();
    // A tiny PNG that claims 60000 x 60000 pixels: refused from its header, nothing allocated.
    let mut png = Vec::new();
    let img = image::RgbImage::new(8, 8);
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    // IHDR width/height are bytes 16..24; the IHDR CRC then fails, so also fix it up.
    png[16..20].copy_from_slice(&60000u32.to_be_bytes());
    png[20..24].copy_from_slice(&60000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let lim = DecodeLimits::default();
    let e = planogram::decode(&png, "bomb.png", lim).unwrap_err().to_string();
    assert!(e.contains("bomb.png"), "{e}");
    // Within limits the same image decodes; a limit below its size refuses it.
    let mut ok = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut ok), image::ImageFormat::Png).unwrap();
    assert_eq!(planogram::decode(&ok, "ok.png", lim).unwrap().dimensions(), (8, 8));
    let small = DecodeLimits { max_width: 4, max_height: 4, ..lim };
    assert!(planogram::decode(&ok, "ok.png", small).is_err());
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// Every file of `tests/corpus/` through every parser; files named `*.accept.*` must be accepted
/// by at least one parser (they are the valid controls), all others only must not panic.
#[test]
fn fixed_corpus_of_nasty_cases() {
    let _turn = crate::harness::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(crate::harness::repo("tests/corpus")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in &files {
        if f.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let bytes = std::fs::read(f).unwrap();
        let accepted = feed_all(&bytes, dir.path());
        let name = f.file_name().unwrap().to_string_lossy();
        if name.contains(".accept.") {
            assert!(accepted > 0, "{name}: a valid control was refused by every parser");
        }
        n += 1;
    }
    eprintln!("corpus: {n} files");
    assert!(n >= 20, "corpus too small: {n}");
}
