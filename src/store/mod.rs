//! The SQLite store: catalogue, images, interactions, users, features, model versions, outbox.
