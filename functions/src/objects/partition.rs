//! An Event Hub partition (`partition-{n}`) of the built-in Event Hub-compatible endpoint: the
//! device-to-cloud events of the devices that map to it (`core::eventhub::partition_of`), in
//! the order they were enqueued, numbered from 0, read by the AMQP consumers (`crate::amqp`).
//!
//! A gateway shard appends each device's stored batch here before the device's message is
//! acknowledged, so an acknowledged message is in the event stream too; a shard's concurrent
//! batches travel in one call ([`Appender`]), and calls from several shards share commits
//! ([`GroupCommit`]). Retention follows the telemetry settings by age
//! (`TELEMETRY_RETENTION_SECS`), and a partition keeps at most [`MAX_EVENTS`].
//!
//! Beside each event it keeps what fleet-wide telemetry reads in SQL ([`EVENT_COLUMNS`]): the
//! device's key, its `alert` property, and the body as JSON when it is JSON, so a series of a
//! field over many devices or the newest alerts are one statement per partition
//! (`routes/fleet.rs`), not a call per device.

use crate::clock;
use crate::config::Config;
use crate::http::{self, ApiResult};
use crate::objects::group_commit::GroupCommit;
use crate::objects::{sql_int, to_json};
use crate::rpc::{DeviceBatch, PartitionOp};
use serde::Deserialize;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use twinhub_core::eventhub::{Event, PartitionInfo, StartPosition};
use twinhub_core::overview;
use twinhub_core::telemetry::Partial;
use twinhub_core::{ErrorCode, HubError, UnixMillis};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, SqlStorageValue, State};

/// The namespace binding.
pub const PARTITION_BINDING: &str = "EVENTHUB_PARTITION";
/// The most events a partition keeps (the oldest go first).
pub const MAX_EVENTS: u64 = 100_000;
/// The most body bytes one read returns (an AMQP consumer's prefetch is met in several).
const MAX_READ_BYTES: usize = 1024 * 1024;
/// How often the age retention runs (it scans from the oldest event).
const AGE_SWEEP_MS: u64 = 60_000;

/// The stub of partition `n`.
pub fn partition_stub(env: &Env, partition: u32) -> worker::Result<worker::Stub> {
    env.durable_object(PARTITION_BINDING)?.get_by_name(&format!("partition-{partition}"))
}

/// The partition a device's (or module's) messages go to, or `None` with the endpoint off.
pub fn partition_for(env: &Env, key: &str) -> Option<u32> {
    let partitions = Config::of(env).eventhub_partitions;
    (partitions > 0).then(|| twinhub_core::eventhub::partition_of_key(key, partitions))
}

/// A gateway shard's appends, one queue per partition: the batches its devices store while an
/// append is under way go to the partition together in the next call (the group commit's
/// queue, with the call as its "sync"), so a busy shard makes one partition call per round
/// rather than one per device batch.
pub struct Appender {
    queues: RefCell<HashMap<u32, Rc<GroupCommit<DeviceBatch>>>>,
}

impl Appender {
    pub fn new() -> Self {
        Self { queues: RefCell::new(HashMap::new()) }
    }

    /// Appends a device's stored batch to its partition; answered once the partition has it
    /// durably (nothing to do with the endpoint off).
    pub async fn append(&self, env: &Env, batch: DeviceBatch) -> std::result::Result<(), String> {
        let Some(partition) = partition_for(env, &batch.key) else { return Ok(()) };
        let queue = Rc::clone(self.queues.borrow_mut().entry(partition).or_insert_with(GroupCommit::new));
        let gathered: Rc<RefCell<Vec<DeviceBatch>>> = Rc::new(RefCell::new(Vec::new()));
        let into = Rc::clone(&gathered);
        let write = move |b: &DeviceBatch| {
            into.borrow_mut().push(b.clone());
            Ok(())
        };
        let env = env.clone();
        let send = move || {
            let batches = std::mem::take(&mut *gathered.borrow_mut());
            let env = env.clone();
            async move {
                let stub = partition_stub(&env, partition).map_err(|e| e.to_string())?;
                let sent = crate::rpc::tell(&stub, &PartitionOp::Append { batches }).await;
                sent.map_err(|e| format!("partition {partition}: {e}"))
            }
        };
        queue.submit(batch, write, send).await
    }
}

/// `event.seq` is the sequence number; `next_seq` holds the next one, so numbers are never
/// reused after retention empties the table.
const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS event (seq INTEGER PRIMARY KEY, enqueued INTEGER NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS next_seq (k INTEGER PRIMARY KEY CHECK (k = 0), seq INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS event_enqueued ON event (enqueued)",
];

/// Columns added to `event` for fleet-wide reads (a store from before gets them empty: its
/// older events are in the stream, not in fleet series): the device or module key, the value
/// of the `alert` property, and the body as JSONB when it is JSON.
const EVENT_COLUMNS: [(&str, &str); 3] = [("device", "TEXT"), ("alert", "TEXT"), ("doc", "BLOB")];

/// The most alerts one call returns.
pub const MAX_ALERTS: usize = 200;

#[durable_object]
pub struct EventHubPartition {
    state: State,
    env: Env,
    appends: Rc<GroupCommit<Vec<Event>>>,
    /// The last enqueued time given: times never go back within a partition.
    last_enqueued: Rc<Cell<u64>>,
    last_age_sweep: Cell<u64>,
}

#[derive(Deserialize)]
struct EventRow {
    body: String,
}

#[derive(Deserialize)]
struct Bounds {
    first: Option<i64>,
    last_enqueued: Option<i64>,
    next: Option<i64>,
}

impl DurableObject for EventHubPartition {
    fn new(state: State, env: Env) -> Self {
        for statement in SCHEMA {
            if let Err(e) = state.storage().sql().exec(statement, None) {
                worker::console_error!("partition schema: {e}");
            }
        }
        for (column, kind) in EVENT_COLUMNS {
            // Refused when it is there already (every start but the first).
            let _ = state.storage().sql().exec(&format!("ALTER TABLE event ADD COLUMN {column} {kind}"), None);
        }
        Self {
            state,
            env,
            appends: GroupCommit::new(),
            last_enqueued: Rc::new(Cell::new(0)),
            last_age_sweep: Cell::new(0),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op: PartitionOp = match crate::rpc::read(req.text().await).await {
            Ok(op) => op,
            Err(e) => return http::finish(Err(HubError::new(ErrorCode::ServerError, format!("bad rpc: {e}")).into())),
        };
        http::finish(self.handle(op).await)
    }
}

impl EventHubPartition {
    async fn handle(&self, op: PartitionOp) -> ApiResult {
        let sql = self.state.storage().sql();
        match op {
            PartitionOp::Append { batches } => {
                let events: Vec<Event> = batches
                    .into_iter()
                    .flat_map(|batch| {
                        let (device_id, module_id) = twinhub_core::identity::split_key(&batch.key);
                        let (device_id, module_id) = (device_id.to_owned(), module_id.map(str::to_owned));
                        batch.messages.into_iter().map(move |m| Event {
                            sequence_number: 0,
                            enqueued: UnixMillis(0),
                            device_id: device_id.clone(),
                            module_id: module_id.clone(),
                            properties: m.properties,
                            body: m.body,
                        })
                    })
                    .collect();
                let last = Rc::clone(&self.last_enqueued);
                let write = move |batch: &Vec<Event>| insert(&sql, batch, &last).map_err(|e| e.to_string());
                let storage = Rc::new(self.state.storage());
                let sync = move || {
                    let storage = Rc::clone(&storage);
                    async move { storage.sync().await.map_err(|e| e.to_string()) }
                };
                self.appends
                    .submit(events, write, sync)
                    .await
                    .map_err(|e| HubError::new(ErrorCode::ServerError, format!("partition append: {e}")))?;
                self.retain()?;
                Ok(http::no_content()?)
            }
            PartitionOp::Read { from, max } => {
                let rows: Vec<EventRow> = sql
                    .exec(
                        "SELECT body FROM event WHERE seq >= ? ORDER BY seq LIMIT ?",
                        vec![sql_int(from)?, sql_int(max.clamp(1, 1000) as u64)?],
                    )?
                    .to_array()?;
                let mut events = Vec::with_capacity(rows.len());
                let mut bytes = 0;
                for row in rows {
                    bytes += row.body.len();
                    if bytes > MAX_READ_BYTES && !events.is_empty() {
                        break;
                    }
                    events.push(
                        serde_json::from_str::<Event>(&row.body)
                            .map_err(|e| worker::Error::RustError(e.to_string()))?,
                    );
                }
                Ok(http::json(200, &events, None)?)
            }
            PartitionOp::Start { position } => {
                let info = info(&sql)?;
                let next = info.last_sequence_number.map_or(0, |n| n + 1);
                let first = match position {
                    StartPosition::Sequence(n) => n,
                    StartPosition::Latest => next,
                    StartPosition::Enqueued { at, inclusive } => {
                        let op = if inclusive { ">=" } else { ">" };
                        let rows: Vec<Bounds> = sql
                            .exec(
                                &format!("SELECT MIN(seq) AS first, NULL AS last_enqueued, NULL AS next FROM event WHERE enqueued {op} ?"),
                                vec![sql_int(at.0)?],
                            )?
                            .to_array()?;
                        rows.first().and_then(|b| b.first).map_or(next, |s| s as u64)
                    }
                };
                Ok(http::json(200, &first, None)?)
            }
            PartitionOp::Info => Ok(http::json(200, &info(&sql)?, None)?),
            PartitionOp::Series { path, window, devices } => {
                #[derive(Deserialize)]
                struct Row {
                    bucket: u64,
                    count: u64,
                    min: f64,
                    max: f64,
                    sum: f64,
                }
                let mut params = vec![sql_int(window.from)?, sql_int(window.width)?, path.into(), sql_int(window.to)?];
                let only = device_filter(devices.as_deref(), &mut params);
                let rows: Vec<Row> = sql
                    .exec(
                        &format!(
                            "SELECT CAST((enqueued - ?1) / ?2 AS INTEGER) AS bucket, COUNT(v) AS count, MIN(v) AS min, MAX(v) AS max,
                                    TOTAL(v) AS sum
                             FROM (SELECT enqueued, json_extract(doc, ?3) AS v, json_type(doc, ?3) AS t FROM event
                                   WHERE enqueued >= ?1 AND enqueued < ?4{only})
                             WHERE t IN ('integer', 'real') GROUP BY bucket"
                        ),
                        params,
                    )?
                    .to_array()?;
                let partials: Vec<Partial> = rows
                    .into_iter()
                    .map(|r| Partial { bucket: r.bucket, count: r.count, min: r.min, max: r.max, sum: r.sum })
                    .collect();
                Ok(http::json(200, &partials, None)?)
            }
            PartitionOp::Activity { from, to } => {
                #[derive(Deserialize)]
                struct Minute {
                    minute: u64,
                    messages: u64,
                    alerts: u64,
                }
                #[derive(Deserialize)]
                struct Alerting {
                    device: String,
                    alerts: u64,
                }
                let window = vec![sql_int(from)?, sql_int(to)?, sql_int(overview::MINUTE_MS)?];
                let minutes: Vec<Minute> = sql
                    .exec(
                        "SELECT CAST((enqueued - ?1) / ?3 AS INTEGER) AS minute, COUNT(*) AS messages,
                                COUNT(alert) AS alerts
                         FROM event WHERE enqueued >= ?1 AND enqueued < ?2 GROUP BY minute",
                        window.clone(),
                    )?
                    .to_array()?;
                let alerting: Vec<Alerting> = sql
                    .exec(
                        &format!(
                            "SELECT device, COUNT(*) AS alerts FROM event
                             WHERE alert IS NOT NULL AND device IS NOT NULL AND enqueued >= ?1 AND enqueued < ?2
                             GROUP BY device ORDER BY alerts DESC LIMIT {}",
                            overview::MAX_ALERTING_DEVICES
                        ),
                        window[..2].to_vec(),
                    )?
                    .to_array()?;
                let activity = overview::PartitionActivity {
                    minutes: minutes.into_iter().map(|m| (m.minute, m.messages, m.alerts)).collect(),
                    alerting: alerting.into_iter().map(|a| (a.device, a.alerts)).collect(),
                };
                Ok(http::json(200, &activity, None)?)
            }
            PartitionOp::Alerts { since, devices, limit } => {
                let mut params = vec![sql_int(since)?, sql_int(limit.clamp(1, MAX_ALERTS) as u64)?];
                let only = device_filter(devices.as_deref(), &mut params);
                let rows: Vec<EventRow> = sql
                    .exec(
                        &format!(
                            "SELECT body FROM event WHERE alert IS NOT NULL AND enqueued >= ?1{only}
                             ORDER BY enqueued DESC LIMIT ?2"
                        ),
                        params,
                    )?
                    .to_array()?;
                let events: Vec<Event> = rows.iter().filter_map(|r| serde_json::from_str(&r.body).ok()).collect();
                Ok(http::json(200, &events, None)?)
            }
        }
    }

    /// Keeps at most [`MAX_EVENTS`], and (once a minute) none older than the telemetry
    /// retention.
    fn retain(&self) -> Result<()> {
        let sql = self.state.storage().sql();
        sql.exec("DELETE FROM event WHERE seq <= (SELECT MAX(seq) FROM event) - ?", vec![sql_int(MAX_EVENTS)?])?;
        let now = clock::now().0;
        if now >= self.last_age_sweep.get() + AGE_SWEEP_MS {
            self.last_age_sweep.set(now);
            let oldest = now.saturating_sub(Config::of(&self.env).telemetry_retention_secs.saturating_mul(1000));
            sql.exec("DELETE FROM event WHERE enqueued < ?", vec![sql_int(oldest)?])?;
        }
        Ok(())
    }
}

/// The condition a fleet read adds for `devices`, bound after `params` as their keys in one
/// JSON array (any number of devices stays one parameter, within Cloudflare's 100).
fn device_filter(devices: Option<&[String]>, params: &mut Vec<SqlStorageValue>) -> String {
    let Some(keys) = devices else { return String::new() };
    params.push(serde_json::to_string(keys).map_or(SqlStorageValue::Null, SqlStorageValue::from));
    format!(" AND device IN (SELECT value FROM json_each(?{}))", params.len())
}

/// The next sequence number to give.
fn next_seq(sql: &SqlStorage) -> Result<u64> {
    let rows: Vec<Bounds> = sql
        .exec("SELECT NULL AS first, NULL AS last_enqueued, (SELECT seq FROM next_seq WHERE k = 0) AS next", None)?
        .to_array()?;
    Ok(rows.first().and_then(|b| b.next).map_or(0, |n| n as u64))
}

/// Writes a batch: sequence numbers from `next_seq`, enqueued times from the clock, never
/// going back.
fn insert(sql: &SqlStorage, batch: &[Event], last: &Cell<u64>) -> Result<()> {
    let now = clock::now().0.max(last.get());
    last.set(now);
    let mut seq = next_seq(sql)?;
    for event in batch {
        let stored = Event { sequence_number: seq, enqueued: UnixMillis(now), ..event.clone() };
        let key = match &event.module_id {
            Some(module) => twinhub_core::identity::module_key(&event.device_id, module),
            None => event.device_id.clone(),
        };
        let alert = event.properties.iter().find(|(k, _)| k == "alert").and_then(|(_, v)| v.clone());
        // SQLite decides whether the body is JSON (json_valid), faster than parsing it here.
        let text = std::str::from_utf8(&event.body).map_or(SqlStorageValue::Null, SqlStorageValue::from);
        sql.exec(
            "INSERT INTO event (seq, enqueued, body, device, alert, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN json_valid(?6) THEN jsonb(?6) END)",
            vec![sql_int(seq)?, sql_int(now)?, to_json(&stored)?.into(), key.into(), alert.into(), text],
        )?;
        seq += 1;
    }
    sql.exec("INSERT OR REPLACE INTO next_seq (k, seq) VALUES (0, ?)", vec![sql_int(seq)?])?;
    Ok(())
}

fn info(sql: &SqlStorage) -> Result<PartitionInfo> {
    let rows: Vec<Bounds> = sql
        .exec(
            "SELECT MIN(seq) AS first, (SELECT enqueued FROM event ORDER BY seq DESC LIMIT 1) AS last_enqueued, \
             NULL AS next FROM event",
            None,
        )?
        .to_array()?;
    let b = rows.into_iter().next().unwrap_or(Bounds { first: None, last_enqueued: None, next: None });
    let next = next_seq(sql)?;
    Ok(PartitionInfo {
        begin_sequence_number: b.first.map_or(next, |f| f as u64),
        last_sequence_number: next.checked_sub(1),
        last_enqueued: b.last_enqueued.map(|t| UnixMillis(t as u64)),
        empty: b.first.is_none(),
    })
}
