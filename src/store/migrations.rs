//! Versioned schema. `PRAGMA user_version` holds the number of migrations applied; each
//! migration runs in its own transaction together with the version bump. A database whose version
//! is higher than [`LATEST`] was written by a newer binary and is refused.

use super::{Result, StoreError};
use rusqlite::Connection;

/// Migration `i` (0-based) brings the schema from version `i` to `i + 1`. Append only.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
CREATE TABLE items (
    id                INTEGER PRIMARY KEY,
    sku               TEXT NOT NULL UNIQUE,
    title             TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    clean_description TEXT,
    caption           TEXT,
    attributes        TEXT NOT NULL DEFAULT '{}',   -- JSON object
    image_path        TEXT,
    created_ms        INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL
);
CREATE TABLE images (
    id          INTEGER PRIMARY KEY,
    item_id     INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    source      TEXT NOT NULL,
    captured_ms INTEGER NOT NULL,
    phash       INTEGER,                            -- u64 bits stored as i64
    UNIQUE (item_id, path)
);
CREATE TABLE item_features (
    item_id    INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('text', 'image')),
    model_id   TEXT NOT NULL,
    dim        INTEGER NOT NULL,
    vec        BLOB NOT NULL,                       -- dim little-endian f32
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (item_id, kind)
);
-- Interactions reference items by sku, not by foreign key: an event for an item the catalogue
-- does not know yet is still kept.
CREATE TABLE interactions (
    id          INTEGER PRIMARY KEY,                -- arrival order, used by interactions_since
    event_id    TEXT NOT NULL UNIQUE,               -- idempotency key
    user        TEXT NOT NULL,
    sku         TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('view', 'scan', 'cart', 'purchase')),
    ts_ms       INTEGER NOT NULL,
    kiosk       TEXT,
    split       INTEGER CHECK (split IN (0, 1, 2)), -- MMRec x_label (0 train, 1 valid, 2 test); NULL for live events
    received_ms INTEGER NOT NULL
);
CREATE INDEX interactions_user ON interactions (user, kind);
CREATE INDEX interactions_ts ON interactions (ts_ms);
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused after an ack
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    qos        INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
    retain     INTEGER NOT NULL CHECK (retain IN (0, 1)),
    created_ms INTEGER NOT NULL
);
CREATE TABLE model_versions (
    id         INTEGER PRIMARY KEY,
    version    TEXT NOT NULL UNIQUE,
    path       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    metrics    TEXT NOT NULL DEFAULT '{}',          -- JSON object
    parent     TEXT,
    status     TEXT NOT NULL CHECK (status IN ('candidate', 'active', 'retired', 'rejected')),
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
-- At most one active model, enforced by the database itself.
CREATE UNIQUE INDEX model_versions_one_active ON model_versions (status) WHERE status = 'active';
"#,
    // 2: idempotency per sender (a kiosk's `event_id` no longer collides with another kiosk's),
    // and kiosk events for SKUs the catalogue does not know kept apart until the item arrives.
    r#"
CREATE TABLE interactions_v2 (
    id          INTEGER PRIMARY KEY,                -- arrival order, used by interactions_since
    event_id    TEXT NOT NULL,                      -- idempotency key, per sender (kiosk; '' = import)
    user        TEXT NOT NULL,
    sku         TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('view', 'scan', 'cart', 'purchase')),
    ts_ms       INTEGER NOT NULL,
    kiosk       TEXT,
    split       INTEGER CHECK (split IN (0, 1, 2)), -- MMRec x_label (0 train, 1 valid, 2 test); NULL for live events
    received_ms INTEGER NOT NULL
);
INSERT INTO interactions_v2 (id, event_id, user, sku, kind, ts_ms, kiosk, split, received_ms)
    SELECT id, event_id, user, sku, kind, ts_ms, kiosk, split, received_ms FROM interactions;
DROP TABLE interactions;
ALTER TABLE interactions_v2 RENAME TO interactions;
CREATE UNIQUE INDEX interactions_event ON interactions (coalesce(kiosk, ''), event_id);
CREATE INDEX interactions_user ON interactions (user, kind);
CREATE INDEX interactions_ts ON interactions (ts_ms);
CREATE INDEX interactions_sku ON interactions (sku);
-- Kiosk events whose SKU is not in the catalogue: acknowledged, never served or trained on, moved
-- into interactions when the item is catalogued.
CREATE TABLE held_interactions (
    id          INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL,
    user        TEXT NOT NULL,
    sku         TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('view', 'scan', 'cart', 'purchase')),
    ts_ms       INTEGER NOT NULL,
    kiosk       TEXT,
    received_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX held_interactions_event ON held_interactions (coalesce(kiosk, ''), event_id);
CREATE INDEX held_interactions_sku ON held_interactions (sku);
"#,
];

/// The schema version this binary writes.
pub const LATEST: i64 = MIGRATIONS.len() as i64;

/// Reads `PRAGMA user_version`.
pub fn version(conn: &Connection) -> Result<i64> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Refuses a schema newer than [`LATEST`]. Reads only.
pub fn check_not_newer(conn: &Connection) -> Result<i64> {
    let found = version(conn)?;
    if found > LATEST {
        return Err(StoreError::SchemaTooNew { found, known: LATEST });
    }
    Ok(found)
}

/// Applies the missing migrations, each atomically with its version bump. Returns the version.
pub fn migrate(conn: &Connection) -> Result<i64> {
    loop {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        // Re-read under the write lock: another process may have migrated meanwhile.
        let step = (|| -> Result<Option<i64>> {
            let v = check_not_newer(conn)?;
            if v >= LATEST {
                return Ok(None);
            }
            conn.execute_batch(MIGRATIONS[v as usize])?;
            conn.pragma_update(None, "user_version", v + 1)?;
            Ok(Some(v + 1))
        })();
        match step {
            Ok(Some(v)) => {
                conn.execute_batch("COMMIT")?;
                tracing::info!(schema_version = v, "store: migration applied");
            }
            Ok(None) => {
                conn.execute_batch("COMMIT")?;
                return version(conn);
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
}
