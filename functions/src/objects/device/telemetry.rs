//! A device's stored telemetry: appended per batch, kept by count and by age, read back as
//! pages and as downsampled series.

use crate::config::Config;
use crate::objects::{sql_int, to_json};
use crate::rpc::TelemetryMessage;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use twinhub_core::telemetry::{downsample, numeric_field, Point};
use twinhub_core::UnixMillis;
use worker::{Result, SqlStorage};

/// The stored (base64) body bytes one telemetry page carries at most.
pub const MAX_TELEMETRY_PAGE_BYTES: u64 = 8 * 1024 * 1024;

/// Appends a batch, then applies the retention by count and by age in one statement (the table
/// is small: at most the retention count, so the age test's scan is cheap). No `await` between
/// the statements: the batch commits as one.
pub fn store(sql: &SqlStorage, messages: &[TelemetryMessage], config: &Config, now: UnixMillis) -> Result<()> {
    let oldest = now.0.saturating_sub(config.telemetry_retention_secs.saturating_mul(1000));
    for m in messages {
        sql.exec(
            "INSERT INTO telemetry (time, properties, body) VALUES (?, ?, ?)",
            vec![sql_int(now.0)?, to_json(&m.properties)?.into(), BASE64.encode(&m.body).into()],
        )?;
    }
    sql.exec(
        "DELETE FROM telemetry WHERE id <= (SELECT MAX(id) FROM telemetry) - ? OR time < ?",
        vec![sql_int(config.telemetry_retention)?, sql_int(oldest)?],
    )?;
    Ok(())
}

/// A message as the API shows it: its body as JSON when it is JSON, else as text.
pub fn render(time: UnixMillis, properties: Value, body: &[u8]) -> Value {
    let text = String::from_utf8_lossy(body).into_owned();
    let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    json!({ "enqueuedTime": time.to_iso(), "properties": properties, "body": body })
}

/// The newest `limit` messages whose stored bodies add up to at most
/// [`MAX_TELEMETRY_PAGE_BYTES`] (a page of 256 KB messages would not fit in a Worker's 128 MB
/// otherwise), the newest one always; oldest first.
pub fn list(sql: &SqlStorage, limit: usize) -> Result<Vec<Value>> {
    #[derive(Deserialize)]
    struct Message {
        time: u64,
        properties: String,
        body: String,
    }
    let rows: Vec<Message> = sql
        .exec(
            "SELECT time, properties, body FROM (
                 SELECT id, time, properties, body,
                        SUM(LENGTH(body)) OVER (ORDER BY id DESC) AS bytes,
                        ROW_NUMBER() OVER (ORDER BY id DESC) AS n
                 FROM (SELECT * FROM telemetry ORDER BY id DESC LIMIT ?))
             WHERE bytes <= ? OR n = 1 ORDER BY id",
            vec![sql_int(limit as u64)?, sql_int(MAX_TELEMETRY_PAGE_BYTES)?],
        )?
        .to_array()?;
    Ok(rows
        .into_iter()
        .map(|m| {
            let properties: Value = serde_json::from_str(&m.properties).unwrap_or(Value::Null);
            render(UnixMillis(m.time), properties, &BASE64.decode(&m.body).unwrap_or_default())
        })
        .collect())
}

/// `field` of the messages in `[from, to)`, downsampled to at most `buckets` points.
pub fn series(sql: &SqlStorage, field: &str, from: u64, to: u64, buckets: usize) -> Result<Value> {
    #[derive(Deserialize)]
    struct Reading {
        time: u64,
        body: String,
    }
    // Row by row: the bodies are read one at a time, never all at once.
    let cursor = sql.exec(
        "SELECT time, body FROM telemetry WHERE time >= ? AND time < ? ORDER BY id",
        vec![sql_int(from)?, sql_int(to)?],
    )?;
    let points: Vec<Point> = cursor
        .next::<Reading>()
        .filter_map(|r| r.ok())
        .filter_map(|r| {
            let bytes = BASE64.decode(&r.body).ok()?;
            let body: Value = serde_json::from_slice(&bytes).ok()?;
            Some(Point { time: UnixMillis(r.time), value: numeric_field(&body, field)? })
        })
        .collect();
    Ok(json!(downsample(&points, UnixMillis(from), UnixMillis(to), buckets)))
}
