//! Fleet index shards: a projection of every device's identity and twin, for listing (and, in
//! the query issue, for queries). Device objects push each commit with their `seq`; a shard
//! keeps only the newest `seq` per device, so retries and reordering are harmless. Deletions are
//! kept as tombstones (identity NULL) for the same reason.

use crate::http::{self, ApiResult};
use crate::rpc::{IndexEntry, IndexOp, ShardStatistics};
use serde::Deserialize;
use twinhub_core::{ErrorCode, HubError};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorageValue, State};

#[durable_object]
pub struct FleetIndex {
    state: State,
}

#[derive(Deserialize)]
struct IdentityRow {
    identity: String,
}

#[derive(Deserialize)]
struct CountRow {
    total: u64,
    enabled: Option<u64>,
    connected: Option<u64>,
}

impl DurableObject for FleetIndex {
    fn new(state: State, _env: Env) -> Self {
        let schema = "CREATE TABLE IF NOT EXISTS device (
            device_id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            identity TEXT,
            twin TEXT
        )";
        if let Err(e) = state.storage().sql().exec(schema, None) {
            worker::console_error!("fleet index schema: {e}");
        }
        Self { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op: IndexOp = match req.json().await {
            Ok(op) => op,
            Err(e) => return http::finish(Err(HubError::new(ErrorCode::ServerError, format!("bad rpc: {e}")).into())),
        };
        http::finish(self.handle(op))
    }
}

impl FleetIndex {
    fn handle(&self, op: IndexOp) -> ApiResult {
        let sql = self.state.storage().sql();
        match op {
            IndexOp::Upsert { entry } => {
                let IndexEntry { device_id, seq, identity, twin } = entry;
                let text = |v: Option<serde_json::Value>| -> SqlStorageValue {
                    v.map_or(SqlStorageValue::Null, |v| v.to_string().into())
                };
                sql.exec(
                    "INSERT INTO device (device_id, seq, identity, twin) VALUES (?, ?, ?, ?)
                     ON CONFLICT (device_id) DO UPDATE
                     SET seq = excluded.seq, identity = excluded.identity, twin = excluded.twin
                     WHERE excluded.seq > device.seq",
                    vec![device_id.into(), SqlStorageValue::try_from_i64(seq_i64(seq))?, text(identity), text(twin)],
                )?;
                Ok(http::no_content()?)
            }
            IndexOp::ListIdentities { top } => {
                let rows: Vec<IdentityRow> = sql
                    .exec(
                        "SELECT identity FROM device WHERE identity IS NOT NULL ORDER BY device_id LIMIT ?",
                        vec![SqlStorageValue::try_from_i64(i64::try_from(top).unwrap_or(1000))?],
                    )?
                    .to_array()?;
                let list: Vec<serde_json::Value> =
                    rows.into_iter().filter_map(|r| serde_json::from_str(&r.identity).ok()).collect();
                Ok(http::json(200, &serde_json::Value::Array(list), None)?)
            }
            IndexOp::Statistics => {
                let row: CountRow = sql
                    .exec(
                        "SELECT COUNT(*) AS total,
                                SUM(json_extract(identity, '$.status') = 'enabled') AS enabled,
                                SUM(json_extract(identity, '$.connectionState') = 'Connected') AS connected
                         FROM device WHERE identity IS NOT NULL",
                        None,
                    )?
                    .one()?;
                let stats = ShardStatistics {
                    total: row.total,
                    enabled: row.enabled.unwrap_or(0),
                    connected: row.connected.unwrap_or(0),
                };
                Ok(http::json(200, &serde_json::to_value(stats).unwrap_or_default(), None)?)
            }
        }
    }
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
