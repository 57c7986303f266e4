//! The TOML config (`Config` parser and validation, also used by `cmd/config-reload`) and the
//! model manifest: bad input must come back as issues, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = sgbd_edge::config::validate_str(src) {
        let _ = cfg.hash();
    }
    let _ = sgbd_edge::modelfiles::Manifest::parse(src);
});
