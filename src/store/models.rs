//! Recommender model versions: registry metadata (the model files live on disk).

use super::{ModelStatus, ModelVersionRow, NewModelVersion, Result, Store, StoreError};
use crate::sys::now_ms;
use rusqlite::{params, Connection, OptionalExtension, Row};

const MV_COLS: &str = "id, version, path, sha256, metrics, parent, status, created_ms, updated_ms";

fn mv_row(r: &Row<'_>) -> rusqlite::Result<ModelVersionRow> {
    let metrics: String = r.get(4)?;
    let status: String = r.get(6)?;
    Ok(ModelVersionRow {
        id: r.get(0)?,
        version: r.get(1)?,
        path: r.get(2)?,
        sha256: r.get(3)?,
        metrics: serde_json::from_str(&metrics).unwrap_or(serde_json::Value::Null),
        parent: r.get(5)?,
        // The CHECK constraint admits only the four names.
        status: status.parse().unwrap_or(ModelStatus::Rejected),
        created_ms: r.get(7)?,
        updated_ms: r.get(8)?,
    })
}

/// Retires the active version other than `except` (inside the caller's transaction).
fn retire_active(c: &Connection, except: Option<&str>, now: i64) -> Result<()> {
    c.prepare_cached(
        "UPDATE model_versions SET status = 'retired', updated_ms = ?2 WHERE status = 'active' AND version IS NOT ?1",
    )?
    .execute(params![except, now])?;
    Ok(())
}

impl Store {
    /// Registers a model version; returns its id. Registering it as `Active` retires the previous
    /// active version in the same transaction. A version string already registered is an error.
    pub fn insert_model_version(&self, mv: &NewModelVersion) -> Result<i64> {
        if mv.version.trim().is_empty() {
            return Err(StoreError::Invalid("empty model version".into()));
        }
        let metrics = match &mv.metrics {
            serde_json::Value::Null => "{}".to_string(),
            v @ serde_json::Value::Object(_) => v.to_string(),
            _ => return Err(StoreError::Invalid("model metrics must be a JSON object".into())),
        };
        let now = now_ms();
        self.write(|c| {
            if mv.status == ModelStatus::Active {
                retire_active(c, None, now)?;
            }
            c.prepare_cached(
                "INSERT INTO model_versions (version, path, sha256, metrics, parent, status, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            )?
            .execute(params![
                mv.version,
                mv.path,
                mv.sha256,
                metrics,
                mv.parent,
                mv.status.as_str(),
                now
            ])?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Changes a version's status. `Active` is exclusive: the previous active version is retired
    /// in the same transaction, so readers never see two or none in between.
    pub fn set_model_status(&self, version: &str, status: ModelStatus) -> Result<()> {
        let now = now_ms();
        self.write(|c| {
            let exists = c
                .prepare_cached("SELECT 1 FROM model_versions WHERE version = ?1")?
                .query_row([version], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Err(StoreError::UnknownModel(version.to_string()));
            }
            if status == ModelStatus::Active {
                retire_active(c, Some(version), now)?;
            }
            c.prepare_cached(
                "UPDATE model_versions SET status = ?2, updated_ms = ?3 WHERE version = ?1 AND status IS NOT ?2",
            )?
            .execute(params![version, status.as_str(), now])?;
            Ok(())
        })
    }

    /// All registered versions, oldest first.
    pub fn model_versions(&self) -> Result<Vec<ModelVersionRow>> {
        let sql = format!("SELECT {MV_COLS} FROM model_versions ORDER BY id");
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map([], mv_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The version currently serving, if any.
    pub fn active_model(&self) -> Result<Option<ModelVersionRow>> {
        let sql = format!("SELECT {MV_COLS} FROM model_versions WHERE status = 'active'");
        Ok(self.conn.prepare_cached(&sql)?.query_row([], mv_row).optional()?)
    }

    /// One version by its version string.
    pub fn model_version(&self, version: &str) -> Result<Option<ModelVersionRow>> {
        let sql = format!("SELECT {MV_COLS} FROM model_versions WHERE version = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([version], mv_row).optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mv(v: &str, status: ModelStatus) -> NewModelVersion {
        NewModelVersion {
            version: v.into(),
            path: format!("models/{v}.safetensors"),
            sha256: "ab".repeat(32),
            metrics: json!({"recall@20": 0.07}),
            parent: None,
            status,
        }
    }

    #[test]
    fn activation_is_exclusive_and_rollback_works() {
        let s = Store::open_in_memory().unwrap();
        s.insert_model_version(&mv("v1", ModelStatus::Active)).unwrap();
        s.insert_model_version(&mv("v2", ModelStatus::Candidate)).unwrap();
        assert_eq!(s.active_model().unwrap().unwrap().version, "v1");
        s.set_model_status("v2", ModelStatus::Active).unwrap();
        let st: Vec<_> = s.model_versions().unwrap().into_iter().map(|m| (m.version, m.status)).collect();
        assert_eq!(st, vec![("v1".into(), ModelStatus::Retired), ("v2".into(), ModelStatus::Active)]);
        // Re-activating the active one keeps it active.
        s.set_model_status("v2", ModelStatus::Active).unwrap();
        assert_eq!(s.active_model().unwrap().unwrap().version, "v2");
        // Rollback.
        s.set_model_status("v1", ModelStatus::Active).unwrap();
        assert_eq!(s.active_model().unwrap().unwrap().version, "v1");
        assert_eq!(s.model_version("v2").unwrap().unwrap().status, ModelStatus::Retired);
        // Inserting a new active retires the old one.
        s.insert_model_version(&mv("v3", ModelStatus::Active)).unwrap();
        let active: Vec<_> =
            s.model_versions().unwrap().into_iter().filter(|m| m.status == ModelStatus::Active).collect();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].version, "v3");
        assert_eq!(active[0].metrics, json!({"recall@20": 0.07}));
        assert!(matches!(s.set_model_status("nope", ModelStatus::Active), Err(StoreError::UnknownModel(_))));
        assert!(s.insert_model_version(&mv("v1", ModelStatus::Active)).is_err(), "duplicate version");
        assert_eq!(s.active_model().unwrap().unwrap().version, "v3", "a failed insert changes nothing");
    }
}
