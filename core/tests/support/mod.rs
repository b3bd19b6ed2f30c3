//! The fleet index table on bundled SQLite, for the query tests and the query benchmark: the
//! same schema and the same parameter binding as the Worker's index shards.
#![allow(clippy::expect_used, dead_code)]

use rusqlite::Connection;
use serde_json::Value;
use twinhub_core::query::sql::INDEX_SCHEMA;

/// An in-memory index holding `docs` (each with a `deviceId`), as JSONB like the fleet index,
/// or as JSON text when `jsonb` is false (the benchmark's comparison).
pub fn load(docs: &[Value], jsonb: bool) -> Connection {
    let db = Connection::open_in_memory().expect("sqlite");
    db.execute_batch(INDEX_SCHEMA).expect("schema");
    let insert = if jsonb {
        "INSERT INTO device (device_id, seq, identity, twin, drifting, refused) VALUES (?1, 1, '{}', jsonb(?2), ?3, ?4)"
    } else {
        "INSERT INTO device (device_id, seq, identity, twin, drifting, refused) VALUES (?1, 1, '{}', ?2, ?3, ?4)"
    };
    let tx = db.unchecked_transaction().expect("transaction");
    {
        let mut stmt = tx.prepare(insert).expect("insert");
        for doc in docs {
            let id = doc["deviceId"].as_str().expect("a deviceId");
            // The drift columns as the device object writes them beside the twin.
            let drift = twinhub_core::twin::drift::drift_counts(doc);
            stmt.execute(rusqlite::params![id, doc.to_string(), drift.drifting, drift.refused]).expect("insert row");
        }
    }
    tx.commit().expect("commit");
    db
}

/// Binds as the Worker does: strings as text, every number as a JavaScript double.
pub fn bind(params: &[Value]) -> Vec<rusqlite::types::Value> {
    params
        .iter()
        .map(|p| match p {
            Value::String(s) => rusqlite::types::Value::Text(s.clone()),
            Value::Number(n) => rusqlite::types::Value::Real(n.as_f64().unwrap_or(0.0)),
            _ => rusqlite::types::Value::Null,
        })
        .collect()
}
