//! A device object's storage: its SQLite tables, read once into a [`Stored`] and written from
//! a step's [`Persist`].
//!
//! `doc` holds one JSON row per piece of state (`identity`, `twin`, `connection`,
//! `subscriptions`, `desired_seen`) and the object's counters (`seq`, `index_pending`,
//! `index_pushed`, `committed_at`, `device_id`), all read by one statement when the object
//! wakes. A step's write is one `INSERT OR REPLACE` of the rows it changed, plus the history,
//! job and queue rows it names, with no `await` between them: Durable Objects commit that
//! stretch as one transaction (one fsync on workerd).

use crate::clock;
use crate::config::Config;
use crate::objects::{sql_int, to_json};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;
use twinhub_core::device::{Device, DeviceState, JobMark, JobRecord, Persist};
use twinhub_core::UnixMillis;
use worker::{Result, SqlStorage, SqlStorageValue};

/// The tables of a device object, created by its first commit.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS doc (name TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS history (version INTEGER PRIMARY KEY, body TEXT NOT NULL)",
    // Bodies are stored base64: they are arbitrary bytes, and text columns round-trip exactly.
    "CREATE TABLE IF NOT EXISTS c2d (seq INTEGER PRIMARY KEY AUTOINCREMENT, properties TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS telemetry (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, properties TEXT NOT NULL, body TEXT NOT NULL)",
    // The jobs that changed this twin: what makes a job's update exactly-once across
    // restarts, and its undo for a rollback.
    "CREATE TABLE IF NOT EXISTS job_applied (job_id TEXT PRIMARY KEY, version INTEGER NOT NULL, revert TEXT, rolled_back INTEGER NOT NULL DEFAULT 0)",
];

/// What the object holds in memory between requests: the device's state for the rules, and
/// the counters that order its projections.
#[derive(Default)]
pub struct Stored {
    pub device: DeviceState,
    /// The commit counter the fleet index orders by. Starts from the clock (microseconds), so
    /// a device re-created after its storage was freed outranks its own tombstone.
    pub seq: u64,
    /// The newest `seq` committed but perhaps not yet in the index.
    pub index_pending: u64,
    /// The newest `seq` the index is known to hold. Kept in memory and written with the next
    /// commit, not after each push: a write of its own would cost every twin write a second
    /// transaction. After a restart it may lag by one push, which the alarm repeats (the
    /// index keeps the newest `seq`, so a repeat is harmless).
    pub index_pushed: u64,
    /// When the newest commit was made (Unix ms), for the index lag figures.
    pub committed_at: Option<u64>,
    /// The device's id: kept with the tombstone so the alarm can push it.
    pub device_id: Option<String>,
}

impl Stored {
    /// Whether the newest commit may not have reached the index.
    pub fn index_behind(&self) -> bool {
        self.index_pending > self.index_pushed
    }
}

#[derive(Deserialize)]
struct DocRow {
    name: String,
    body: String,
}

/// Reads everything `doc` holds, in one statement. Rows that do not parse are an error: the
/// object must not act on a device it cannot read.
pub fn load(sql: &SqlStorage) -> Result<Stored> {
    let rows: Vec<DocRow> = sql.exec("SELECT name, body FROM doc", None)?.to_array()?;
    let mut stored = Stored::default();
    let (mut identity, mut twin) = (None, None);
    for DocRow { name, body } in rows {
        let number = || body.parse::<u64>().unwrap_or(0);
        match name.as_str() {
            "identity" => identity = Some(parse(&body)?),
            "twin" => twin = Some(parse(&body)?),
            "connection" => stored.device.session = serde_json::from_str(&body).ok(),
            "subscriptions" => stored.device.kept_subscriptions = serde_json::from_str(&body).ok(),
            "desired_seen" => stored.device.desired_seen = serde_json::from_str(&body).ok(),
            "seq" => stored.seq = number(),
            "index_pending" => stored.index_pending = number(),
            "index_pushed" => stored.index_pushed = number(),
            "committed_at" => stored.committed_at = body.parse().ok(),
            "device_id" => stored.device_id = Some(body),
            _ => {}
        }
    }
    if let (Some(identity), Some(twin)) = (identity, twin) {
        stored.device.device = Some(Device { identity, twin });
    }
    Ok(stored)
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| worker::Error::RustError(format!("stored device is unreadable: {e}")))
}

/// Writes what `persist` names from `stored` (already changed by the step), moving `seq` when
/// the device was committed. No `await` inside: one transaction.
pub fn write(sql: &SqlStorage, stored: &mut Stored, persist: &Persist, config: &Config, now: UnixMillis) -> Result<()> {
    let mut rows: Vec<(&'static str, String)> = Vec::new();
    let mut gone: Vec<&'static str> = Vec::new();
    let state = &stored.device;
    let deleted = persist.device && state.device.is_none();
    if persist.device {
        stored.seq = (stored.seq + 1).max(now.0.saturating_mul(1000));
        stored.index_pending = stored.seq;
        stored.committed_at = Some(now.0);
        match &state.device {
            Some(d) => {
                rows.push(("identity", to_json(&d.identity)?));
                rows.push(("twin", to_json(&d.twin)?));
                // The identity's key (a module's is `{deviceId}/{moduleId}`): its index row.
                rows.push(("device_id", d.identity.key()));
                stored.device_id = Some(d.identity.key());
            }
            None => {
                // Everything goes; the tombstone (seq, index_pending) stays until the index
                // has it, then the storage is freed.
                sql.exec(
                    "DELETE FROM doc WHERE name IN ('identity', 'twin', 'connection', 'subscriptions', 'desired_seen')",
                    None,
                )?;
                for table in ["history", "job_applied", "c2d", "telemetry"] {
                    sql.exec(&format!("DELETE FROM {table}"), None)?;
                }
            }
        }
        rows.push(("seq", stored.seq.to_string()));
        rows.push(("index_pending", stored.index_pending.to_string()));
        rows.push(("index_pushed", stored.index_pushed.to_string()));
        rows.push(("committed_at", now.0.to_string()));
    }
    if !deleted {
        let mut row = |changed: bool, name: &'static str, value: Option<String>| match (changed, value) {
            (false, _) => {}
            (true, Some(text)) => rows.push((name, text)),
            (true, None) => gone.push(name),
        };
        row(persist.session, "connection", state.session.as_ref().map(to_json).transpose()?);
        row(persist.kept_subscriptions, "subscriptions", state.kept_subscriptions.as_ref().map(to_json).transpose()?);
        row(persist.desired_seen, "desired_seen", state.desired_seen.as_ref().map(to_json).transpose()?);
    }
    if !rows.is_empty() {
        let placeholders = vec!["(?, ?)"; rows.len()].join(", ");
        let values: Vec<SqlStorageValue> =
            rows.into_iter().flat_map(|(name, body)| [SqlStorageValue::from(name), body.into()]).collect();
        sql.exec(&format!("INSERT OR REPLACE INTO doc (name, body) VALUES {placeholders}"), values)?;
    }
    if !gone.is_empty() {
        let placeholders = vec!["?"; gone.len()].join(", ");
        let names: Vec<SqlStorageValue> = gone.into_iter().map(SqlStorageValue::from).collect();
        sql.exec(&format!("DELETE FROM doc WHERE name IN ({placeholders})"), names)?;
    }
    if let Some(entry) = &persist.history {
        sql.exec(
            "INSERT OR REPLACE INTO history (version, body) VALUES (?, ?)",
            vec![sql_int(entry.version)?, to_json(entry)?.into()],
        )?;
        // Nothing to trim until the twin has made more changes than are kept.
        if entry.version > config.history_retention {
            sql.exec(
                "DELETE FROM history WHERE version <= ?",
                vec![sql_int(entry.version - config.history_retention)?],
            )?;
        }
    }
    match &persist.job {
        Some(JobMark::Applied { job_id, revert }) => {
            let revert = revert.as_ref().map_or(SqlStorageValue::Null, |p| p.to_string().into());
            let version = state.device.as_ref().map_or(0, |d| d.twin.version);
            sql.exec(
                "INSERT OR REPLACE INTO job_applied (job_id, version, revert) VALUES (?, ?, ?)",
                vec![job_id.as_str().into(), sql_int(version)?, revert],
            )?;
        }
        Some(JobMark::RolledBack { job_id }) => {
            sql.exec("UPDATE job_applied SET rolled_back = 1 WHERE job_id = ?", vec![job_id.as_str().into()])?;
        }
        None => {}
    }
    if let Some(message) = &persist.enqueue {
        sql.exec(
            "INSERT INTO c2d (properties, body) VALUES (?, ?)",
            vec![to_json(&message.properties)?.into(), BASE64.encode(&message.body).into()],
        )?;
    }
    Ok(())
}

/// What job `job_id` did to this twin, if it reached it.
pub fn job_record(sql: &SqlStorage, job_id: &str) -> Result<Option<JobRecord>> {
    #[derive(Deserialize)]
    struct Row {
        version: u64,
        revert: Option<String>,
        rolled_back: i64,
    }
    let rows: Vec<Row> = sql
        .exec("SELECT version, revert, rolled_back FROM job_applied WHERE job_id = ?", vec![job_id.into()])?
        .to_array()?;
    Ok(rows.into_iter().next().map(|r| JobRecord {
        version: r.version,
        revert: r.revert,
        rolled_back: r.rolled_back != 0,
    }))
}

/// Writes the index's progress after a push made outside a commit (the alarm's retry), so a
/// restart does not repeat it.
pub fn write_index_pushed(sql: &SqlStorage, pushed: u64) -> Result<()> {
    sql.exec("INSERT OR REPLACE INTO doc (name, body) VALUES ('index_pushed', ?)", vec![pushed.to_string().into()])?;
    Ok(())
}

/// The clock as microseconds, the unit of `seq`.
pub fn now_micros() -> u64 {
    clock::now().0.saturating_mul(1000)
}
