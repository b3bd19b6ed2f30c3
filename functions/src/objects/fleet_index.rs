//! Fleet index shards: a projection of every device's identity and twin, for listing,
//! statistics and queries. Device objects push each commit with their `seq`; a shard keeps
//! only the newest `seq` per device, so retries and reordering are harmless. Deletions are
//! kept as tombstones (identity NULL) for the same reason.
//!
//! Queries arrive compiled (SQL and bound parameters from `twinhub_core::query::sql`); the
//! shard runs them and answers with raw JSON rows, so twins are not parsed and re-serialized
//! on the way. Each shard also remembers how far behind the devices its recent upserts were:
//! the index lag that query responses report.
//!
//! Every call names the shard's placement (its number and the configured count, in the URL:
//! `objects::IndexShard`). A shard told a placement other than the one it stored rebalances
//! from its alarm ([`REBALANCE_PAGE`] rows a step): rows that now live in another shard are
//! loaded there (kept only if no newer commit of the device arrived first) and then deleted
//! here. While that runs a device may be answered by both shards or, briefly, by neither;
//! statistics and queries are exact again once it ends (`twinhub_core::fleet`).
//!
//! Upserts go through a group commit (`objects::group_commit`): those that arrive while a
//! commit is being made durable share the next one, so a busy shard costs the disk far fewer
//! fsyncs than one commit per twin write.

use crate::clock;
use crate::http::{self, ApiResult};
use crate::objects::group_commit::GroupCommit;
use crate::objects::sql_int;
use crate::rpc::{DeviceOp, IndexEntry, IndexLag, IndexOp, ShardOverview, ShardStatistics};
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use twinhub_core::configuration::Configuration;
use twinhub_core::fleet::{placement_change, Placement};
use twinhub_core::identity::is_module_key;
use twinhub_core::overview;
use twinhub_core::query::sql::{DEVICES_ONLY, INDEX_MIGRATIONS, INDEX_SCHEMA};
use twinhub_core::query::Collection;
use twinhub_core::query::Query;
use twinhub_core::twin::drift::{drift_counts, DriftCounts};
use twinhub_core::twin::AppliedConfiguration;
use twinhub_core::{ErrorCode, HubError};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, SqlStorageValue, State};

/// Rows a rebalance step reads and hands over: each step's rows travel in one call per
/// receiving shard, and a twin may be up to ~32 KB.
const REBALANCE_PAGE: u64 = 200;

/// The rows still without drift columns (an older store's), and nothing else.
const UNFILLED_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS device_unfilled ON device (device_id) WHERE drifting IS NULL AND twin IS NOT NULL";

/// Rows given their drift columns per alarm step (an older store's backfill).
const BACKFILL_PAGE: usize = 500;
/// How long before a minute's end its closing connected sample is taken.
const SAMPLE_LEAD_MS: u64 = 500;

/// The connected count, sampled at the end of each minute its devices changed in (`twinhub_core::overview`), kept for
/// [`overview::SAMPLE_RETENTION_MS`].
const SAMPLES_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS connected_sample (minute INTEGER PRIMARY KEY, connected INTEGER NOT NULL)";

/// Where a shard keeps its placement and, while a rebalance runs, the last row id it handled.
const PLACEMENT_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS placement (k INTEGER PRIMARY KEY CHECK (k = 0),
    shard INTEGER NOT NULL, shards INTEGER NOT NULL, rebalance_after TEXT)";

/// How many recent upserts the lag figures cover.
const LAG_SAMPLES: usize = 1000;

#[durable_object]
pub struct FleetIndex {
    state: State,
    env: Env,
    /// The hub's configurations, as last pushed (`None`: not read from storage yet). Empty
    /// (the usual case) costs the upserts nothing.
    configurations: RefCell<Option<Rc<Targets>>>,
    /// Milliseconds from commit (in the device object) to upsert (here), most recent last.
    lags: Lags,
    /// Upserts waiting for, or in, the commit under way.
    upserts: Rc<GroupCommit<IndexEntry>>,
    /// The placement last stored, and the count before its last change (read once per
    /// isolate).
    placement: std::cell::Cell<Option<Option<Stored>>>,
    /// A rebalance of a changed count was logged as begun (its end is logged too; a new
    /// shard's first walk, over nothing, is not).
    announced: std::cell::Cell<bool>,
    /// The minute of this isolate's last connected-count sample.
    sampled: std::cell::Cell<u64>,
    /// When the alarm is to take the closing sample of a minute with changes (Unix ms).
    sample_due: std::cell::Cell<Option<u64>>,
    /// A rebalance step handed rows to other shards (the count changed).
    handed_over: std::cell::Cell<bool>,
    /// Rows written before the drift columns are waiting for theirs (the alarm fills them)...
    unfilled: std::cell::Cell<bool>,
    /// ...and the alarm is yet to be asked to, by the first request (`new` cannot).
    backfill_pending: std::cell::Cell<bool>,
}

type Lags = Rc<RefCell<VecDeque<u64>>>;

/// Configurations with their parsed target conditions.
type Targets = Vec<(Configuration, Option<Query>)>;

fn targets_of(configurations: Vec<Configuration>) -> Targets {
    configurations
        .into_iter()
        .map(|c| {
            let target = c.target();
            (c, target)
        })
        .collect()
}

/// Where a shard keeps the configurations it was sent, for after a restart: a row per
/// configuration (the whole set as one value could pass the 2 MB Cloudflare allows a stored
/// value: 100 configurations of up to 256 KB each), and a marker that a set was handed over at
/// all (an empty set is one).
const CONFIGURATIONS_SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS configuration_copy (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS configuration_copy_held (k INTEGER PRIMARY KEY CHECK (k = 0))",
];

/// This shard's stored copy of the configurations, or `None` if it was never handed one.
fn load_copy(sql: &SqlStorage) -> Result<Option<Vec<Configuration>>> {
    #[derive(Deserialize)]
    struct Row {
        body: String,
    }
    if !copy_held(sql)? {
        return Ok(None);
    }
    let rows: Vec<Row> = sql.exec("SELECT body FROM configuration_copy ORDER BY id", None)?.to_array()?;
    Ok(Some(rows.iter().filter_map(|r| serde_json::from_str(&r.body).ok()).collect()))
}

/// Whether this shard was ever handed a set of configurations.
fn copy_held(sql: &SqlStorage) -> Result<bool> {
    let held: Vec<serde_json::Value> = sql.exec("SELECT k FROM configuration_copy_held", None)?.to_array()?;
    Ok(!held.is_empty())
}

/// Replaces this shard's stored copy with `set` (one synchronous stretch: one transaction).
fn store_copy(sql: &SqlStorage, set: &[Configuration]) -> Result<()> {
    sql.exec("DELETE FROM configuration_copy", None)?;
    for c in set {
        sql.exec(
            "INSERT INTO configuration_copy (id, body) VALUES (?, ?)",
            vec![c.id.as_str().into(), crate::objects::to_json(c)?.into()],
        )?;
    }
    sql.exec("INSERT OR IGNORE INTO configuration_copy_held (k) VALUES (0)", None)?;
    Ok(())
}

/// Twins a sweep reads per statement, and device objects it calls at once.
const SWEEP_PAGE: u64 = 500;
const SWEEP_CALLS: usize = 32;
/// Device objects a sweep wakes per second, over all shards, when `JOB_DEVICES_PER_SECOND`
/// is set. Otherwise a sweep is paced by the open-file headroom (`crate::headroom`: each object
/// woken holds its SQLite files open until workerd evicts it, and unpaced, a sweep over 10,000
/// twins held more open files than the process may have, and workerd died of it), and
/// unpaced where nothing is measured (Cloudflare, which has no descriptors to run out of).

#[derive(Deserialize)]
struct IdentityRow {
    identity: String,
}

#[derive(Deserialize)]
struct CountRow {
    total: u64,
    enabled: Option<u64>,
    connected: Option<u64>,
    drifting: Option<u64>,
    refused: Option<u64>,
}

#[derive(Deserialize)]
struct IdRow {
    id: String,
}

#[derive(Deserialize)]
struct TwinRow {
    id: String,
    twin: String,
}

impl DurableObject for FleetIndex {
    fn new(state: State, env: Env) -> Self {
        for schema in
            [INDEX_SCHEMA, CONFIGURATIONS_SCHEMA[0], CONFIGURATIONS_SCHEMA[1], PLACEMENT_SCHEMA, SAMPLES_SCHEMA]
        {
            if let Err(e) = state.storage().sql().exec(schema, None) {
                worker::console_error!("fleet index schema: {e}");
            }
        }
        // The count before the last change, and the drift columns (each refused when the
        // column is there already).
        let _ = state.storage().sql().exec("ALTER TABLE placement ADD COLUMN previous INTEGER", None);
        for migration in INDEX_MIGRATIONS {
            let _ = state.storage().sql().exec(migration, None);
        }
        // Rows from before the drift columns: filled from the alarm, a page at a time, found
        // through a partial index (empty once they are filled, so finding none costs nothing).
        let _ = state.storage().sql().exec(UNFILLED_INDEX, None);
        let unfilled = state
            .storage()
            .sql()
            .exec("SELECT 1 AS k FROM device WHERE drifting IS NULL AND twin IS NOT NULL LIMIT 1", None)
            .and_then(|c| c.to_array::<serde_json::Value>())
            .is_ok_and(|rows| !rows.is_empty());
        Self {
            state,
            env,
            configurations: RefCell::new(None),
            lags: Rc::new(RefCell::new(VecDeque::with_capacity(LAG_SAMPLES))),
            upserts: GroupCommit::new(),
            placement: std::cell::Cell::new(None),
            announced: std::cell::Cell::new(false),
            sampled: std::cell::Cell::new(0),
            sample_due: std::cell::Cell::new(None),
            handed_over: std::cell::Cell::new(false),
            unfilled: std::cell::Cell::new(unfilled),
            backfill_pending: std::cell::Cell::new(unfilled),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op: IndexOp = match crate::rpc::read(req.text().await).await {
            Ok(op) => op,
            Err(e) => return http::finish(Err(HubError::new(ErrorCode::ServerError, format!("bad rpc: {e}")).into())),
        };
        if let Some(told) = req.url().ok().and_then(|u| u.query().and_then(Placement::from_query)) {
            if let Err(e) = self.told(told).await {
                worker::console_error!("fleet index: placement: {e}");
            }
        }
        if self.backfill_pending.replace(false) {
            if let Err(e) = self.state.storage().set_alarm(1).await {
                worker::console_error!("fleet index: scheduling the drift backfill: {e}");
            }
        }
        // Named in the log if it fails inside (only the op's name: a query's text is the
        // client's).
        let name = crate::objects::op_name(&op);
        let answer = self.handle(op).await;
        if let Err(crate::http::ApiError::Internal(e)) = &answer {
            worker::console_error!("fleet index, {name}: {e}");
        }
        http::finish(answer)
    }

    /// The shard's background work, each duty asking for the alarm again when it has more: a
    /// due connected sample, an older store's drift backfill, a rebalance step.
    async fn alarm(&self) -> Result<Response> {
        let now = clock::now().0;
        let sample = match self.sample_due.get() {
            Some(due) => due <= now,
            // Not known (this isolate started after it was asked for): taken, unless this
            // minute has its sample already (the alarm also runs a rebalance's or a backfill's
            // steps, which must not each count the shard).
            None => self.sampled.get() != overview::minute_of(now),
        };
        if sample {
            self.sample_due.set(None);
            if let Err(e) = self.statistics() {
                worker::console_warn!("fleet index: sampling the connected count failed: {e}");
            }
        }
        let mut again: Option<u64> = None;
        let mut soon = |ms: u64| again = Some(again.map_or(ms, |a| a.min(ms)));
        if self.unfilled.get() {
            match backfill_drift(&self.state.storage().sql()) {
                Ok(true) => soon(1),
                Ok(false) => {
                    self.unfilled.set(false);
                    self.backfill_pending.set(false);
                }
                Err(e) => {
                    worker::console_error!("fleet index: drift backfill: {e}");
                    soon(1_000);
                }
            }
        }
        match self.rebalance_step().await {
            Ok(true) => soon(1),
            Ok(false) => {}
            Err(e) => {
                // The receiving shard or the platform failed: the same rows again in a second.
                worker::console_error!("fleet index: rebalance: {e}");
                soon(1_000);
            }
        }
        // Rows handed away change the count: this minute gets its closing sample too. Read
        // after the awaits: an upsert meanwhile may have asked for a sample.
        if self.handed_over.replace(false) {
            self.due_sample(clock::now().0);
        }
        if let Some(due) = self.sample_due.get() {
            soon(due.saturating_sub(clock::now().0));
        }
        if let Some(ms) = again {
            self.state.storage().set_alarm(i64::try_from(ms.max(1)).unwrap_or(1)).await?;
        }
        Response::ok("")
    }
}

/// A shard's placement and the count before its last change, as stored.
type Stored = (Placement, Option<u32>);

#[derive(Deserialize)]
struct PlacementRow {
    shard: u32,
    shards: u32,
    previous: Option<u32>,
}

#[derive(Deserialize)]
struct CursorRow {
    rebalance_after: Option<String>,
}

#[derive(Deserialize)]
struct MoveRow {
    device_id: String,
    seq: u64,
    identity: Option<String>,
    twin: Option<String>,
    drifting: Option<u32>,
    refused: Option<u32>,
}

impl FleetIndex {
    /// The placement this shard stored, if it was ever told one.
    fn stored_placement(&self) -> Result<Option<Placement>> {
        Ok(self.stored()?.map(|(placement, _)| placement))
    }

    /// The stored placement and the count before its last change.
    fn stored(&self) -> Result<Option<Stored>> {
        if let Some(known) = self.placement.get() {
            return Ok(known);
        }
        let rows: Vec<PlacementRow> =
            self.state.storage().sql().exec("SELECT shard, shards, previous FROM placement", None)?.to_array()?;
        let stored = rows.first().map(|r| (Placement { shard: r.shard, shards: r.shards }, r.previous));
        self.placement.set(Some(stored));
        Ok(stored)
    }

    /// Where `device_id` lived before the count last changed, if that is another shard: while
    /// rebalancing, its row may still be there (a device must not look deleted meanwhile).
    fn previous_home(&self, device_id: &str) -> Result<Option<Placement>> {
        let Some((now, Some(previous))) = self.stored()? else { return Ok(None) };
        let old = twinhub_core::fleet::shard_of(device_id, previous);
        Ok((previous != now.shards && old != now.shard).then_some(Placement { shard: old, shards: now.shards }))
    }

    /// A call named this shard's placement: if it changed, store it, start a rebalance, and
    /// wake the shards past a smaller count.
    async fn told(&self, told: Placement) -> Result<()> {
        let stored = self.stored_placement()?;
        let Some(change) = placement_change(stored, told) else { return Ok(()) };
        let cursor = if change.rebalance { SqlStorageValue::from("") } else { SqlStorageValue::Null };
        let previous = match stored {
            Some(s) => Some(s.shards),
            // Called for the first time: a new shard after the count grew, or a new hub. Shard
            // 0 is within every count, and learns of a change as this call tells it.
            None if told.shard != 0 => {
                let first = crate::objects::IndexShard::at(&self.env, Placement { shard: 0, shards: told.shards })?;
                match first.call::<Option<u32>>(&IndexOp::Previous).await {
                    Ok(previous) => previous,
                    Err(e) => {
                        worker::console_warn!("fleet index: asking shard 0 for the previous count: {e}");
                        None
                    }
                }
            }
            None => None,
        }
        .filter(|&p| p != told.shards);
        self.state.storage().sql().exec(
            "INSERT OR REPLACE INTO placement (k, shard, shards, rebalance_after, previous) VALUES (0, ?, ?, ?, ?)",
            vec![
                i64::from(told.shard).into(),
                i64::from(told.shards).into(),
                cursor,
                previous.map_or(SqlStorageValue::Null, |p| i64::from(p).into()),
            ],
        )?;
        self.placement.set(Some(Some((told, previous))));
        if change.rebalance && stored.is_some() {
            self.announced.set(true);
            worker::console_log!(
                "fleet index shard {}: the count is now {}; handing over rows that live elsewhere",
                told.shard,
                told.shards
            );
        }
        if change.rebalance {
            self.state.storage().set_alarm(1).await?;
        }
        // Only a shard within the count wakes the ones past it: a woken shard would otherwise
        // wake the same range again, each call nested in the last.
        let wake = if told.shard < told.shards { change.wake } else { 0..0 };
        for shard in wake {
            let wake = crate::objects::IndexShard::at(&self.env, Placement { shard, shards: told.shards })?;
            if let Err(e) = wake.call::<serde::de::IgnoredAny>(&IndexOp::Rebalance).await {
                // Each shard in range tries once; a missed one is woken by the next that learns.
                worker::console_warn!("fleet index: waking shard {shard} to hand over its rows: {e}");
            }
        }
        Ok(())
    }

    /// One step of a rebalance: the next rows after the cursor, those that live elsewhere
    /// loaded into their shards and then deleted here. Whether there is more.
    async fn rebalance_step(&self) -> Result<bool> {
        let Some(placement) = self.stored_placement()? else { return Ok(false) };
        let sql = self.state.storage().sql();
        let cursor: Vec<CursorRow> = sql.exec("SELECT rebalance_after FROM placement", None)?.to_array()?;
        let Some(after) = cursor.into_iter().next().and_then(|c| c.rebalance_after) else { return Ok(false) };
        let rows: Vec<MoveRow> = sql
            .exec(
                &format!(
                    "SELECT device_id, seq, identity, json(twin) AS twin, drifting, refused FROM device WHERE device_id > ?
                     ORDER BY device_id LIMIT {REBALANCE_PAGE}"
                ),
                vec![after.as_str().into()],
            )?
            .to_array()?;
        let more = rows.len() as u64 == REBALANCE_PAGE;
        let last = rows.last().map(|r| r.device_id.clone());
        let mut moving: std::collections::BTreeMap<u32, Vec<IndexEntry>> = std::collections::BTreeMap::new();
        let mut moved = Vec::new();
        for row in rows.into_iter().filter(|r| !placement.holds(&r.device_id)) {
            let raw = |text: Option<String>| text.and_then(|t| serde_json::value::RawValue::from_string(t).ok());
            // A row not yet backfilled travels with the drift of its twin.
            let drift = match (row.drifting, row.refused) {
                (Some(drifting), Some(refused)) => DriftCounts { drifting, refused },
                _ => drift_of(row.twin.as_deref()),
            };
            moved.push((row.device_id.clone(), row.seq));
            moving.entry(placement.home_of(&row.device_id).shard).or_default().push(IndexEntry {
                device_id: row.device_id,
                seq: row.seq,
                identity: raw(row.identity),
                twin: raw(row.twin),
                committed_at: None,
                drift,
            });
        }
        for (shard, entries) in moving {
            let home = crate::objects::IndexShard::at(&self.env, Placement { shard, shards: placement.shards })?;
            home.call::<serde::de::IgnoredAny>(&IndexOp::Load { entries }).await.map_err(crate::rpc::fault)?;
        }
        // Told another count while the rows were away: that count's walk (started from the
        // beginning by `told`) decides; this step deletes nothing and leaves the cursor.
        if self.stored_placement()? != Some(placement) {
            return Ok(true);
        }
        // Handed over: forgotten here, unless a newer commit of the device arrived meanwhile
        // (its device object had not yet heard of the new count).
        self.handed_over.set(self.handed_over.get() || !moved.is_empty());
        for (device_id, seq) in moved {
            sql.exec(
                "DELETE FROM device WHERE device_id = ? AND seq = ?",
                vec![device_id.into(), SqlStorageValue::try_from_i64(seq_i64(seq))?],
            )?;
        }
        let next = match (&last, more) {
            (Some(id), true) => SqlStorageValue::from(id.as_str()),
            _ => {
                if self.announced.replace(false) {
                    worker::console_log!("fleet index shard {}: rebalance done", placement.shard);
                }
                SqlStorageValue::Null
            }
        };
        sql.exec("UPDATE placement SET rebalance_after = ?", vec![next])?;
        Ok(more)
    }

    /// The shard's device counts now, kept as this minute's connected-device sample (the
    /// overview's connected series). Devices only: IoT Hub's registry statistics count
    /// devices, not modules.
    fn statistics(&self) -> Result<ShardStatistics> {
        let sql = self.state.storage().sql();
        let row: CountRow = sql
            .exec(
                &format!(
                    "SELECT COUNT(*) AS total,
                        SUM(json_extract(identity, '$.status') = 'enabled') AS enabled,
                        SUM(json_extract(identity, '$.connectionState') = 'Connected') AS connected,
                        SUM(coalesce(drifting, 0) > 0) AS drifting,
                        SUM(coalesce(refused, 0) > 0) AS refused
                     FROM device WHERE identity IS NOT NULL AND {DEVICES_ONLY}"
                ),
                None,
            )?
            .one()?;
        let stats = ShardStatistics {
            total: row.total,
            enabled: row.enabled.unwrap_or(0),
            connected: row.connected.unwrap_or(0),
            drifting: row.drifting.unwrap_or(0),
            refused: row.refused.unwrap_or(0),
        };
        let now = clock::now().0;
        let minute = overview::minute_of(now);
        sql.exec(
            "INSERT OR REPLACE INTO connected_sample (minute, connected) VALUES (?, ?)",
            vec![sql_int(minute)?, sql_int(stats.connected)?],
        )?;
        if self.sampled.replace(minute) != minute {
            // Kept: the newest sample before the cutoff, the count a window after it starts from.
            sql.exec(
                "DELETE FROM connected_sample WHERE minute < (SELECT MAX(minute) FROM connected_sample WHERE minute < ?)",
                vec![sql_int(now.saturating_sub(overview::SAMPLE_RETENTION_MS))?],
            )?;
        }
        Ok(stats)
    }

    /// When this minute's closing connected sample is due (Unix ms), asked for now unless it
    /// was already.
    fn due_sample(&self, now: u64) -> u64 {
        if let Some(due) = self.sample_due.get() {
            return due;
        }
        let mut due = overview::minute_of(now) + overview::MINUTE_MS - SAMPLE_LEAD_MS;
        if due <= now {
            due += overview::MINUTE_MS;
        }
        self.sample_due.set(Some(due));
        due
    }

    /// Asks the alarm for this minute's closing connected sample, unless it is asked for
    /// already (an earlier alarm, a rebalance step, takes it as well).
    async fn sample_at_minute_end(&self) -> Result<()> {
        if self.sample_due.get().is_some() {
            return Ok(());
        }
        let now = clock::now().0;
        let due = self.due_sample(now);
        let storage = self.state.storage();
        let asked = async {
            let scheduled = storage.get_alarm().await?;
            if scheduled.is_none_or(|at| at > due as i64) {
                storage.set_alarm(i64::try_from(due - now).unwrap_or(0)).await?;
            }
            Ok::<_, worker::Error>(())
        };
        // Not asked for after all: the next upsert asks again.
        if let Err(e) = asked.await {
            self.sample_due.set(None);
            return Err(e);
        }
        Ok(())
    }

    /// One device's projection, answered once the commit that holds it is durable.
    async fn upsert_grouped(&self, entry: IndexEntry) -> ApiResult {
        let (sql, lags) = (self.state.storage().sql(), Rc::clone(&self.lags));
        let storage = Rc::new(self.state.storage());
        let write = move |entry: &IndexEntry| upsert(&sql, &lags, entry).map_err(|e| e.to_string());
        let sync = move || {
            let storage = Rc::clone(&storage);
            async move { storage.sync().await.map_err(|e| e.to_string()) }
        };
        let device_id = entry.device_id.clone();
        // Kept for the configuration check after the commit, unless this shard knows already
        // that no configuration exists (the usual case): no copy of every twin on this path.
        let none_to_apply = self.configurations.borrow().as_ref().is_some_and(|t| t.is_empty());
        let twin = if none_to_apply { None } else { entry.twin.as_ref().map(|t| t.get().to_owned()) };
        match self.upserts.submit(entry, write, sync).await {
            Ok(()) => {}
            Err(e) => return Err(HubError::new(ErrorCode::ServerError, format!("index upsert: {e}")).into()),
        }
        // The connected count changes only with an upsert: the minute it changed in gets a
        // closing sample from the alarm (`overview::connected` carries a sample through the
        // minutes without one).
        if let Err(e) = self.sample_at_minute_end().await {
            worker::console_warn!("fleet index: scheduling the connected sample failed: {e}");
        }
        // The configuration the twin should have, applied before the device's write is
        // answered: a device created or re-tagged gets its content as part of that write.
        if let Some(twin) = twin {
            if let Err(e) = self.reconsider(&device_id, &twin, false).await {
                worker::console_warn!("fleet index: applying a configuration failed: {e}");
            }
        }
        Ok(http::no_content()?)
    }

    /// The configurations, read from storage the first time. A shard that was never handed a
    /// set (one added to the index after configurations were made) asks the configurations
    /// object once and keeps the answer, even an empty one.
    async fn targets(&self) -> Result<Rc<Targets>> {
        if let Some(t) = self.configurations.borrow().as_ref() {
            return Ok(Rc::clone(t));
        }
        let list = match load_copy(&self.state.storage().sql())? {
            Some(list) => list,
            None => {
                let stub = crate::objects::configurations::configurations_stub(&self.env)?;
                let op = crate::rpc::ConfigurationOp::List { top: usize::MAX };
                let list: Vec<Configuration> = crate::rpc::ask(&stub, &op).await?;
                // Unless a set was pushed while this was asked for: that one is newer, and stays.
                let sql = self.state.storage().sql();
                if !copy_held(&sql)? {
                    store_copy(&sql, &list)?;
                }
                list
            }
        };
        // Another request may have filled it meanwhile (a push): that one is newer.
        if let Some(t) = self.configurations.borrow().as_ref() {
            return Ok(Rc::clone(t));
        }
        let targets = Rc::new(targets_of(list));
        *self.configurations.borrow_mut() = Some(Rc::clone(&targets));
        Ok(targets)
    }

    /// Applies the winning configuration to one device's twin (JSON text, as the service sees
    /// it) if it does not have it: always when `recheck` (a sweep: the device object itself
    /// skips a revision it has), else only when the winner's id differs from the one applied.
    async fn reconsider(&self, device_id: &str, twin: &str, recheck: bool) -> Result<()> {
        let targets = self.targets().await?;
        if targets.is_empty() && !recheck {
            return Ok(());
        }
        // Device and module configurations compete only among their own twins.
        let collection = if is_module_key(device_id) { Collection::Modules } else { Collection::Devices };
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(twin) else { return Ok(()) };
        let applied = doc["configurations"].as_object().and_then(|m| m.keys().next().cloned());
        let winner = twinhub_core::configuration::winner(&targets, collection, &doc);
        if !recheck && winner.map(|c| &c.id) == applied.as_ref() {
            return Ok(());
        }
        if winner.is_none() && applied.is_none() {
            return Ok(());
        }
        let op = DeviceOp::ApplyConfiguration {
            device_id: device_id.to_owned(),
            configuration: winner.map(|c| AppliedConfiguration { id: c.id.clone(), revision: c.revision }),
            patch: winner.map(Configuration::patch),
        };
        let stub = crate::objects::device_stub(&self.env, device_id)?;
        match crate::rpc::call::<_, serde::de::IgnoredAny>(&stub, &op).await {
            Ok(_) => Ok(()),
            // The hub's own fault: the caller tries again.
            Err(e) if e.code == ErrorCode::ServerError => Err(crate::rpc::fault(e)),
            // Deleted meanwhile, or a twin the content does not fit: nothing to do again.
            Err(e) if e.code == ErrorCode::DeviceNotFound || e.code == ErrorCode::ModuleNotFound => Ok(()),
            Err(e) => {
                worker::console_warn!("configuration for a device refused: {e}");
                Ok(())
            }
        }
    }

    /// Every device and module twin this shard holds, reconsidered against the configurations,
    /// each chunk of calls as large as the open-file headroom allows, and within this shard's
    /// share of `JOB_DEVICES_PER_SECOND` when that is set.
    async fn sweep(&self) -> Result<()> {
        let config = crate::config::Config::of(&self.env);
        let per_shard = match config.job_devices_per_second {
            0 => None,
            n => Some((n / u64::from(config.index_shards.max(1))).max(1)),
        };
        let chunk = per_shard.map_or(SWEEP_CALLS, |r| usize::try_from(r).unwrap_or(SWEEP_CALLS).clamp(1, SWEEP_CALLS));
        let mut after = String::new();
        loop {
            let rows: Vec<TwinRow> = self
                .state
                .storage()
                .sql()
                .exec(
                    &format!(
                        "SELECT device_id AS id, json(twin) AS twin FROM device \
                         WHERE identity IS NOT NULL AND device_id > ? ORDER BY device_id LIMIT {SWEEP_PAGE}"
                    ),
                    vec![after.as_str().into()],
                )?
                .to_array()?;
            let Some(last) = rows.last() else { return Ok(()) };
            after = last.id.clone();
            let mut rest: &[TwinRow] = &rows;
            while !rest.is_empty() {
                let granted = crate::headroom::claim_wakes(&self.env, rest.len().min(chunk) as u64).await;
                let Some(take) = usize::try_from(granted).ok().filter(|n| *n > 0) else {
                    worker::Delay::from(std::time::Duration::from_millis(crate::headroom::WAIT_MS)).await;
                    continue;
                };
                let (part, later) = rest.split_at(take.min(rest.len()));
                rest = later;
                let began = clock::now().0;
                let calls = part.iter().map(|r| self.reconsider(&r.id, &r.twin, true));
                for result in futures_util::future::join_all(calls).await {
                    result?;
                }
                // This chunk's share of a second at the configured rate, less what it took.
                if let Some(rate) = per_shard {
                    let due = began + (part.len() as u64 * 1000) / rate;
                    let wait = due.saturating_sub(clock::now().0);
                    if wait > 0 {
                        worker::Delay::from(std::time::Duration::from_millis(wait)).await;
                    }
                }
            }
        }
    }

    async fn handle(&self, op: IndexOp) -> ApiResult {
        let sql = self.state.storage().sql();
        match op {
            IndexOp::Upsert { entry } => self.upsert_grouped(entry).await,
            IndexOp::Load { entries } => {
                for entry in &entries {
                    upsert(&sql, &self.lags, entry)?;
                }
                // Rows handed over (or loaded) change the count: this minute's closing sample.
                if let Err(e) = self.sample_at_minute_end().await {
                    worker::console_warn!("fleet index: scheduling the connected sample failed: {e}");
                }
                Ok(http::no_content()?)
            }
            IndexOp::ListIdentities { top } => {
                let rows: Vec<IdentityRow> = sql
                    .exec(
                        &format!("SELECT identity FROM device WHERE identity IS NOT NULL AND {DEVICES_ONLY} ORDER BY device_id LIMIT ?"),
                        vec![SqlStorageValue::try_from_i64(i64::try_from(top).unwrap_or(1000))?],
                    )?
                    .to_array()?;
                let list: Vec<serde_json::Value> =
                    rows.into_iter().filter_map(|r| serde_json::from_str(&r.identity).ok()).collect();
                Ok(http::json(200, &serde_json::Value::Array(list), None)?)
            }
            IndexOp::Statistics => Ok(http::json(200, &self.statistics()?, None)?),
            IndexOp::Overview { since } => {
                let statistics = self.statistics()?;
                let overview = ShardOverview { statistics, samples: samples_since(&sql, since)?, lag: self.lag() };
                Ok(http::json(200, &overview, None)?)
            }
            IndexOp::Rows { sql: text, params } => {
                let rows: Vec<TwinRow> = sql.exec(&text, bind(params))?.to_array()?;
                // {"ids":[...],"rows":[<twin JSON as stored>...],"lag":{...}}: the twins go
                // out as the raw text SQLite produced.
                let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
                let twins: Vec<&str> = rows.iter().map(|r| r.twin.as_str()).collect();
                let body = format!(
                    "{{\"ids\":{},\"rows\":[{}],\"lag\":{}}}",
                    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()),
                    twins.join(","),
                    serde_json::to_string(&self.lag()).unwrap_or_else(|_| "{}".into()),
                );
                Ok(Response::builder().with_header("content-type", "application/json")?.fixed(body.into_bytes()))
            }
            IndexOp::Aggregate { sql: text, params } => {
                let rows: Vec<serde_json::Value> = sql.exec(&text, bind(params))?.to_array()?;
                let body = serde_json::json!({ "rows": rows, "lag": self.lag() });
                Ok(http::json(200, &body, None)?)
            }
            IndexOp::AggregateMany { statements } => {
                let mut results = Vec::with_capacity(statements.len());
                for (text, params) in statements {
                    let rows: Vec<serde_json::Value> = sql.exec(&text, bind(params))?.to_array()?;
                    results.push(rows);
                }
                Ok(http::json(200, &serde_json::json!({ "results": results }), None)?)
            }
            IndexOp::SetConfigurations { configurations, sweep } => {
                store_copy(&sql, &configurations)?;
                *self.configurations.borrow_mut() = Some(Rc::new(targets_of(configurations)));
                if sweep {
                    self.sweep().await?;
                }
                Ok(http::no_content()?)
            }
            IndexOp::Exists { device_id } => {
                let rows: Vec<IdRow> = sql
                    .exec(
                        "SELECT device_id AS id FROM device WHERE device_id = ? AND identity IS NOT NULL",
                        vec![device_id.as_str().into()],
                    )?
                    .to_array()?;
                let mut exists = !rows.is_empty();
                if !exists {
                    if let Some(home) = self.previous_home(&device_id)? {
                        let old = crate::objects::IndexShard::at(&self.env, home)?;
                        let op = IndexOp::Exists { device_id: device_id.clone() };
                        exists = old.call::<crate::rpc::Existence>(&op).await.map_err(crate::rpc::fault)?.exists;
                    }
                }
                let answer = crate::rpc::Existence { exists };
                Ok(http::json(200, &serde_json::to_value(answer).unwrap_or_default(), None)?)
            }
            IndexOp::Ids { sql: text, params } => {
                let rows: Vec<IdRow> = sql.exec(&text, bind(params))?.to_array()?;
                let ids: Vec<String> = rows.into_iter().map(|r| r.id).collect();
                Ok(http::json(200, &serde_json::json!({ "ids": ids }), None)?)
            }
            // The placement it names was taken in `fetch`.
            IndexOp::Rebalance => Ok(http::no_content()?),
            IndexOp::Previous => Ok(http::json(200, &self.stored()?.and_then(|(_, previous)| previous), None)?),
            IndexOp::Lag => Ok(http::json(200, &serde_json::to_value(self.lag()).unwrap_or_default(), None)?),
        }
    }

    fn lag(&self) -> IndexLag {
        let lags = self.lags.borrow();
        let mut sorted: Vec<u64> = lags.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| -> u64 {
            let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
            sorted.get(i).copied().unwrap_or(0)
        };
        IndexLag {
            samples: sorted.len(),
            last_ms: lags.back().copied().unwrap_or(0),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// The connected samples from `since` on, preceded by the last one before it (the count the
/// window starts with).
fn samples_since(sql: &SqlStorage, since: u64) -> Result<Vec<(u64, u64)>> {
    #[derive(Deserialize)]
    struct Sample {
        minute: u64,
        connected: u64,
    }
    let rows: Vec<Sample> = sql
        .exec(
            "SELECT minute, connected FROM connected_sample
             WHERE minute >= (SELECT coalesce(MAX(minute), 0) FROM connected_sample WHERE minute < ?1)
             ORDER BY minute",
            vec![sql_int(since)?],
        )?
        .to_array()?;
    Ok(rows.into_iter().map(|r| (r.minute, r.connected)).collect())
}

/// Twins indexed before the drift columns, given theirs from the twin (`DriftCounts`), a page
/// per call; whether there may be more.
fn backfill_drift(sql: &SqlStorage) -> Result<bool> {
    #[derive(Deserialize)]
    struct Unfilled {
        device_id: String,
        /// `None`: not JSON (none should be).
        twin: Option<String>,
    }
    let rows: Vec<Unfilled> = sql
        .exec(
            &format!(
                "SELECT device_id, CASE WHEN json_valid(twin, 5) THEN json(twin) END AS twin FROM device
                 WHERE drifting IS NULL AND twin IS NOT NULL LIMIT {BACKFILL_PAGE}"
            ),
            None,
        )?
        .to_array()?;
    for row in &rows {
        let drift = drift_of(row.twin.as_deref());
        sql.exec(
            "UPDATE device SET drifting = ?, refused = ? WHERE device_id = ?",
            vec![
                SqlStorageValue::try_from_i64(i64::from(drift.drifting))?,
                SqlStorageValue::try_from_i64(i64::from(drift.refused))?,
                row.device_id.as_str().into(),
            ],
        )?;
    }
    Ok(rows.len() == BACKFILL_PAGE)
}

/// The drift of a twin as stored (JSON text), for a row written before the drift columns. A
/// twin that does not read (none should) is not drifting: its row is never read for it again.
fn drift_of(twin: Option<&str>) -> DriftCounts {
    twin.and_then(|t| serde_json::from_str(t).ok()).map(|t| drift_counts(&t)).unwrap_or_default()
}

/// Stores `entry` unless the shard holds a newer `seq` for its device, and records its lag.
fn upsert(sql: &SqlStorage, lags: &Lags, entry: &IndexEntry) -> Result<()> {
    let IndexEntry { device_id, seq, identity, twin, committed_at, drift } = entry;
    let text = |v: &Option<Box<serde_json::value::RawValue>>| -> SqlStorageValue {
        v.as_ref().map_or(SqlStorageValue::Null, |v| v.get().into())
    };
    // jsonb(): the binary form SQLite's JSON functions read without parsing text again,
    // which is what makes full-scan queries affordable.
    sql.exec(
        "INSERT INTO device (device_id, seq, identity, twin, drifting, refused) VALUES (?, ?, ?, jsonb(?), ?, ?)
         ON CONFLICT (device_id) DO UPDATE
         SET seq = excluded.seq, identity = excluded.identity, twin = excluded.twin,
             drifting = excluded.drifting, refused = excluded.refused
         WHERE excluded.seq > device.seq",
        vec![
            device_id.as_str().into(),
            SqlStorageValue::try_from_i64(seq_i64(*seq))?,
            text(identity),
            text(twin),
            SqlStorageValue::try_from_i64(i64::from(drift.drifting))?,
            SqlStorageValue::try_from_i64(i64::from(drift.refused))?,
        ],
    )?;
    if let Some(committed) = committed_at {
        let mut lags = lags.borrow_mut();
        if lags.len() == LAG_SAMPLES {
            lags.pop_front();
        }
        lags.push_back(clock::now().0.saturating_sub(*committed));
    }
    Ok(())
}

/// Parameters as the compiler made them: strings and numbers (numbers as doubles).
fn bind(params: Vec<serde_json::Value>) -> Vec<SqlStorageValue> {
    params
        .into_iter()
        .map(|p| match p {
            serde_json::Value::String(s) => s.into(),
            serde_json::Value::Number(n) => n.as_f64().unwrap_or(0.0).into(),
            _ => SqlStorageValue::Null,
        })
        .collect()
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
