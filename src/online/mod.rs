//! The on-device learning loop: fine-tune rounds on the store's interactions, the promotion gate,
//! and a ranker that serves a trained model (cold start through item features).
