//! Model files named in `models/manifest.toml`: fetch what can be fetched, verify sha256.
