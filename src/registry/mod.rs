//! Versioned recommender models on disk: checksums, metrics, promotion gate, rollback.
