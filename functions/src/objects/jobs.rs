//! The jobs object: one Durable Object (named `jobs`) holding every job and every per-device
//! record, and running them from its alarm.
//!
//! A job's life: created (`queued`, or `scheduled` until its start time); the alarm selects its
//! devices once (the query runs on the fleet index, ids only) and writes one `device_job` row
//! each; then it calls the device objects in batches, many at once, recording each outcome with
//! the job's statistics in one synchronous stretch after every batch. Everything the executor
//! needs to go on is in SQLite, so a restart resumes where the last batch ended. A twin update
//! reaches each twin at most once however often it is retried (the device object remembers the
//! job id), so "exactly once" holds across restarts; a direct method is not retried after a
//! restart interrupted it (the device may have run it), its record says so instead.
//!
//! Rollouts ([`twinhub_core::job::rollout`]) add waves: a wave's devices are patched, then
//! watched through their twins as the fleet index holds them (one statement per shard a
//! second, not a twin read per device) until the wave is judged done, over its failure
//! threshold, or past its deadline. Every decision is core's; this file stores, calls and
//! schedules.

use crate::clock;
use crate::config::Config;
use crate::http::{self, ApiResult};
use crate::objects::{index_ids, sql_int, to_json};
use crate::rpc::{self, DeviceOp, JobOp, JobPage, RollbackAnswer};
use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::Value;
use twinhub_core::job::executor::{self, Batch, DeviceCall, Next, Pick, Restore, Task, WhenNone};
use twinhub_core::job::request::condition_query;
use twinhub_core::job::{DeviceJob, DeviceJobStatus, Job, JobStatus, Statistics};
use twinhub_core::query::eval;
use twinhub_core::wire::overview::RunningJobs;
use twinhub_core::{ErrorCode, HubError, UnixMillis};
use worker::{durable_object, Delay, DurableObject, Env, Request, Response, Result, SqlStorageValue, State};

/// The jobs object's binding, as in wrangler.toml.
pub const JOBS_BINDING: &str = "JOBS";
/// Devices of a wave judged per look at the index (one statement per shard each).
const WATCH_CHUNK: usize = 1_000;

/// The stub of the jobs object.
pub fn jobs_stub(env: &Env) -> worker::Result<worker::Stub> {
    env.durable_object(JOBS_BINDING)?.get_by_name("jobs")
}

#[durable_object]
pub struct Jobs {
    state: State,
    env: Env,
    /// The alarm handler is running: it re-arms the alarm itself as it ends, so a request
    /// leaves the alarm alone meanwhile.
    running: std::cell::Cell<bool>,
}

#[derive(Deserialize)]
struct BodyRow {
    body: String,
}

/// A device record as stored: its typed columns, which the executor's queries use and which
/// are what is true (a cancellation updates only them), and the record itself as `body`.
#[derive(Deserialize)]
struct RecordRow {
    status: String,
    retries: u64,
    started: Option<u64>,
    ended: Option<u64>,
    updated: u64,
    body: String,
}

/// The columns a [`RecordRow`] reads.
const RECORD_COLUMNS: &str = "status, retries, started, ended, updated, body";

impl RecordRow {
    fn into_record(self) -> Option<DeviceJob> {
        let mut record: DeviceJob = serde_json::from_str(&self.body).ok()?;
        record.status = DeviceJobStatus::parse(&self.status)?;
        record.retries = u32::try_from(self.retries).unwrap_or(u32::MAX);
        record.started = self.started.map(UnixMillis);
        record.ended = self.ended.map(UnixMillis);
        record.updated = UnixMillis(self.updated);
        Some(record)
    }
}

/// The typed columns of `record`, in [`RECORD_COLUMNS`] order.
fn record_columns(record: &DeviceJob) -> Result<Vec<SqlStorageValue>> {
    let time = |t: Option<UnixMillis>| t.map_or(Ok(SqlStorageValue::Null), |t| sql_int(t.0));
    Ok(vec![
        record.status.as_str().into(),
        sql_int(u64::from(record.retries))?,
        time(record.started)?,
        time(record.ended)?,
        sql_int(record.updated.0)?,
        to_json(record)?.into(),
    ])
}

#[derive(Deserialize)]
struct CountRow {
    status: String,
    n: u64,
}

/// The device record's typed columns added after stores were first written: each, when added
/// to an older store, is filled from the records once. This is the one place SQL reads a
/// record's fields; everything else reads the columns.
const ADDED_COLUMNS: [(&str, &str); 4] = [
    ("retries", "INTEGER NOT NULL DEFAULT 0"),
    ("started", "INTEGER"),
    ("ended", "INTEGER"),
    ("updated", "INTEGER NOT NULL DEFAULT 0"),
];

impl DurableObject for Jobs {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        for schema in [
            "CREATE TABLE IF NOT EXISTS job (job_id TEXT PRIMARY KEY, body TEXT NOT NULL)",
            // `ord` is the order devices are reached in (a rollout's spread order).
            "CREATE TABLE IF NOT EXISTS device_job (job_id TEXT NOT NULL, device_id TEXT NOT NULL, ord INTEGER NOT NULL,
                wave INTEGER NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL, rolled_back INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (job_id, device_id))",
            "CREATE INDEX IF NOT EXISTS device_job_work ON device_job (job_id, status, wave, ord)",
        ] {
            if let Err(e) = sql.exec(schema, None) {
                worker::console_error!("jobs schema: {e}");
            }
        }
        let mut added = false;
        for (column, declaration) in ADDED_COLUMNS {
            // Refused when the column is there already (every start but the first).
            if sql.exec(&format!("ALTER TABLE device_job ADD COLUMN {column} {declaration}"), None).is_ok() {
                added = true;
                let fill =
                    format!("UPDATE device_job SET {column} = coalesce(json_extract(body, '$.{column}'), {column})");
                if let Err(e) = sql.exec(&fill, None) {
                    worker::console_error!("jobs schema: filling {column}: {e}");
                }
            }
        }
        if added {
            // The previous version's cancellations wrote times into the records as JavaScript
            // numbers (`1.7e12`, which a record does not read as an integer); the columns hold
            // them as integers, so the records get them back from there, once.
            let mend = "UPDATE device_job SET body = json_set(body, '$.ended', ended, '$.updated', updated)";
            if let Err(e) = sql.exec(mend, None) {
                worker::console_error!("jobs schema: mending records: {e}");
            }
        }
        Self { state, env, running: std::cell::Cell::new(false) }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op: JobOp = match crate::rpc::read(req.text().await).await {
            Ok(op) => op,
            Err(e) => return http::finish(Err(HubError::new(ErrorCode::ServerError, format!("bad rpc: {e}")).into())),
        };
        let answer = self.handle(op);
        // A job left running by a restart has no alarm in flight: any request wakes it.
        self.wake().await?;
        http::finish(answer)
    }

    async fn alarm(&self) -> Result<Response> {
        self.running.set(true);
        let result = self.run().await;
        self.running.set(false);
        result
    }
}

impl Jobs {
    /// The alarm's work: one step of every job that wants one, then the alarm armed for what
    /// comes next (at once if a job has more). One step per invocation, not a loop: requests
    /// (progress polls, cancel) were held until a long-running alarm handler returned, so each
    /// invocation is kept to one batch.
    async fn run(&self) -> Result<Response> {
        let now = clock::now();
        self.purge_expired(now)?;
        let mut again = false;
        let mut wait: Option<u64> = None;
        let ids: Vec<String> = self.all_jobs()?.into_iter().filter(|j| j.wants_work(now)).map(|j| j.job_id).collect();
        let stepped: std::collections::HashSet<String> = ids.iter().cloned().collect();
        for id in ids {
            // Loaded right before its step: an earlier step's awaits let requests change it.
            let Some(job) = self.load(&id)?.filter(|j| j.wants_work(clock::now())) else { continue };
            match self.step(job).await {
                Ok(Next::Again) => again = true,
                Ok(Next::Wait(ms)) => wait = Some(wait.map_or(ms, |w| w.min(ms))),
                Ok(Next::Idle) => {}
                Err(e) => {
                    // A fault of ours or of the platform: retried by the next alarm.
                    worker::console_error!("job {id}: {e}");
                    wait = Some(wait.map_or(1_000, |w| w.min(1_000)));
                }
            }
        }
        // A job created or resumed while this ran (its request left the alarm to us) is due too.
        let jobs = self.all_jobs()?;
        let now = clock::now();
        let due = again || jobs.iter().any(|j| j.wants_work(now) && !stepped.contains(&j.job_id));
        let next = if due { Some(0) } else { wait.or_else(|| executor::next_start(&jobs, now)) };
        if let Some(ms) = next {
            self.state.storage().set_alarm(i64::try_from(ms).unwrap_or(i64::MAX)).await?;
        }
        Response::ok("")
    }

    fn handle(&self, op: JobOp) -> ApiResult {
        let now = clock::now();
        self.purge_expired(now)?;
        match op {
            JobOp::Create { job } => {
                let job = *job;
                if self.load(&job.job_id)?.is_some() {
                    return Err(HubError::new(
                        ErrorCode::JobAlreadyExists,
                        format!("a job with id '{}' exists already; job ids are not reused", job.job_id),
                    )
                    .into());
                }
                self.save(&job)?;
                Ok(http::json(200, &job.to_wire(), None)?)
            }
            JobOp::Get { job_id } => Ok(http::json(200, &self.require(&job_id)?.to_wire(), None)?),
            JobOp::Cancel { job_id } => {
                let mut job = self.require(&job_id)?;
                job.cancel(now)?;
                self.cancel_records(&job, executor::cancelled_statuses(false), now)?;
                self.save_with_statistics(&mut job)?;
                Ok(http::json(200, &job.to_wire(), None)?)
            }
            JobOp::Pause { job_id } => {
                let mut job = self.require(&job_id)?;
                job.pause("paused by the operator".into(), now)?;
                self.save(&job)?;
                Ok(http::json(200, &job.to_wire(), None)?)
            }
            JobOp::Resume { job_id } => {
                let mut job = self.require(&job_id)?;
                job.resume(now)?;
                self.save(&job)?;
                Ok(http::json(200, &job.to_wire(), None)?)
            }
            JobOp::Rollback { job_id } => {
                let mut job = self.require(&job_id)?;
                job.start_rollback(now)?;
                self.cancel_records(&job, executor::cancelled_statuses(true), now)?;
                self.save_with_statistics(&mut job)?;
                Ok(http::json(200, &job.to_wire(), None)?)
            }
            JobOp::List { job_type, status, after, limit } => {
                let mut items = Vec::new();
                let mut next = None;
                for job in self.all_jobs()? {
                    if after.as_deref().is_some_and(|a| job.job_id.as_str() <= a)
                        || job_type.is_some_and(|t| t != job.job_type())
                        || status.is_some_and(|s| s != job.status)
                    {
                        continue;
                    }
                    if items.len() == limit {
                        next = items.last().and_then(|j: &Value| j["jobId"].as_str().map(str::to_owned));
                        break;
                    }
                    items.push(job.to_wire());
                }
                Ok(http::json(200, &JobPage { items, next }, None)?)
            }
            JobOp::Running => {
                let under_way = self.all_jobs()?.into_iter().filter(|j| {
                    matches!(
                        j.status,
                        JobStatus::Queued | JobStatus::Scheduled | JobStatus::Running | JobStatus::Paused
                    )
                });
                let running = under_way.fold(RunningJobs::default(), |mut r, job| {
                    r.jobs += 1;
                    r.rollouts += u64::from(job.rollout.is_some());
                    r
                });
                Ok(http::json(200, &running, None)?)
            }
            JobOp::DeviceJobs { query, after, limit } => {
                let query = twinhub_core::query::parse(&query).map_err(HubError::from)?;
                let (job_after, device_after) = after.unwrap_or_default();
                let rows: Vec<RecordRow> = self
                    .state
                    .storage()
                    .sql()
                    .exec(
                        &format!(
                            "SELECT {RECORD_COLUMNS} FROM device_job WHERE (job_id, device_id) > (?, ?)
                             ORDER BY job_id, device_id"
                        ),
                        vec![job_after.into(), device_after.into()],
                    )?
                    .to_array()?;
                let mut items = Vec::new();
                let mut next = None;
                let mut last = None;
                for row in rows {
                    let Some(record) = row.into_record() else { continue };
                    let keys = (record.job_id.clone(), record.device_id.clone());
                    let doc = record.to_wire();
                    if !eval::matches(query.filter.as_ref(), &doc) {
                        continue;
                    }
                    if items.len() == limit {
                        next = last;
                        break;
                    }
                    items.push(match &query.select {
                        twinhub_core::query::Select::Star => doc,
                        twinhub_core::query::Select::Items(projection) => eval::project(projection, &doc),
                    });
                    last = Some(keys);
                }
                Ok(http::json(200, &JobPage { items, next }, None)?)
            }
        }
    }

    /// Arms the alarm if a job has work and none is armed.
    async fn wake(&self) -> Result<()> {
        if self.running.get() {
            return Ok(());
        }
        let now = clock::now();
        let Some(ms) = executor::alarm_in(&self.all_jobs()?, now) else { return Ok(()) };
        let wanted = i64::try_from(now.0.saturating_add(ms)).unwrap_or(i64::MAX);
        // Armed for later than needed (a job scheduled tomorrow, then one queued now): earlier.
        if self.state.storage().get_alarm().await?.is_none_or(|armed| armed > wanted) {
            self.state.storage().set_alarm(i64::try_from(ms).unwrap_or(i64::MAX)).await?;
        }
        Ok(())
    }

    /// One step of `job`, the task core's executor names: a batch of devices, a look at a
    /// rollout's wave, a rollback's batch, or a transition.
    async fn step(&self, mut job: Job) -> Result<Next> {
        let now = clock::now();
        let mut task = executor::next_task(&job, now);
        if task == Task::Begin {
            job.begin(now);
            self.save(&job)?;
            task = executor::next_task(&job, now);
        }
        match task {
            Task::Idle | Task::Begin => Ok(Next::Idle),
            Task::RollBack => self.rollback_step(job).await,
            Task::Expire => {
                self.cancel_records(&job, executor::cancelled_statuses(false), now)?;
                let left = self.count(&job.job_id, &[DeviceJobStatus::Canceled])?;
                executor::expire(&mut job, left, now);
                self.save_with_statistics(&mut job)?;
                Ok(Next::Again)
            }
            Task::SelectTargets => {
                self.select_targets(&mut job).await?;
                Ok(Next::Again)
            }
            Task::Complete => {
                job.complete(now);
                self.save_with_statistics(&mut job)?;
                Ok(Next::Again)
            }
            Task::Call { pick, staged, when_none } => {
                // As many devices as the open-file headroom lets it wake now (all of the batch
                // where nothing is measured); none: look again shortly.
                let wanted = self.batch();
                let granted = crate::headroom::claim_wakes(&self.env, wanted as u64).await;
                if granted == 0 && wanted > 0 {
                    return Ok(Next::Wait(crate::headroom::WAIT_MS));
                }
                let rows = self.records(&job.job_id, &pick, usize::try_from(granted).unwrap_or(wanted))?;
                if !rows.is_empty() {
                    self.run_batch(&mut job, rows, staged).await?;
                    return Ok(Next::Again);
                }
                match when_none {
                    WhenNone::Complete => {
                        job.complete(now);
                        self.save_with_statistics(&mut job)?;
                        Ok(Next::Again)
                    }
                    WhenNone::Watch(wave) => self.watch_wave(job, wave).await,
                }
            }
        }
    }

    /// Runs the job's query on the fleet index and writes a pending record per device.
    async fn select_targets(&self, job: &mut Job) -> Result<()> {
        let query = match condition_query(&job.query_condition) {
            Ok(q) => q,
            Err(e) => {
                job.fail(e.message, clock::now());
                return self.save(job);
            }
        };
        let ids = match index_ids(&self.env, &query).await {
            Ok(ids) => ids,
            Err(e) => {
                // Retried by the next alarm a few times, then the job fails with the reason
                // (unless it was cancelled, paused or rolled back meanwhile).
                self.refresh(job)?;
                if executor::may_write_targets(job) {
                    job.selection_failed("the fleet index could not run it (see the hub's log)", clock::now());
                    self.save(job)?;
                }
                return Err(e);
            }
        };
        self.refresh(job)?;
        if !executor::may_write_targets(job) {
            return Ok(());
        }
        let now = clock::now();
        let sql = self.state.storage().sql();
        for target in executor::targets(job, ids, now) {
            let record = &target.record;
            let mut values = vec![
                job.job_id.clone().into(),
                record.device_id.clone().into(),
                sql_int(target.ord as u64)?,
                sql_int(record.wave as u64)?,
            ];
            values.extend(record_columns(record)?);
            sql.exec(
                &format!(
                    "INSERT OR IGNORE INTO device_job (job_id, device_id, ord, wave, {RECORD_COLUMNS})
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                values,
            )?;
        }
        executor::targets_written(job, now);
        self.save_with_statistics(job)
    }

    /// Calls every device of `rows` at once (at the configured rate) and records the outcomes.
    /// `staged`: a rollout's patch, after which the device is watched rather than done.
    async fn run_batch(&self, job: &mut Job, rows: Vec<DeviceJob>, staged: bool) -> Result<()> {
        let started = clock::now();
        let Batch { settled, calls, store_first } = Batch::new(job, rows, started);
        if store_first {
            for record in &calls {
                self.write_record(record)?;
            }
        }
        let answers = join_all(calls.iter().map(|r| self.call_device(job, &r.device_id))).await;
        // A request may have cancelled, paused or rolled back the job during the calls: keep
        // what it said.
        self.refresh(job)?;
        let stopped = executor::stopped(job);
        let now = clock::now();
        let n = settled.len() + calls.len();
        for record in &settled {
            self.write_record(record)?;
        }
        for (mut record, answer) in calls.into_iter().zip(answers) {
            executor::settle(job, &mut record, answer, staged, stopped, now);
            self.write_record(&record)?;
        }
        self.save_with_statistics(job)?;
        let spent = clock::now().0.saturating_sub(started.0);
        if let Some(ms) = executor::pace(n, self.device_rate(), spent) {
            Delay::from(std::time::Duration::from_millis(ms)).await;
        }
        Ok(())
    }

    /// The job's call to one device: the device object's answer (a method's `{status,
    /// payload}`), or its error.
    async fn call_device(&self, job: &Job, device_id: &str) -> std::result::Result<Value, HubError> {
        let op = match executor::device_call(job) {
            DeviceCall::UpdateTwin { job_id, patch } => DeviceOp::JobUpdateTwin {
                device_id: device_id.to_owned(),
                job_id: job_id.to_owned(),
                body: rpc::to_json(patch),
            },
            DeviceCall::Method { name, payload, timeout_ms, connect_timeout_ms } => DeviceOp::InvokeMethod {
                device_id: device_id.to_owned(),
                name: name.to_owned(),
                payload: rpc::to_json(payload),
                timeout_ms,
                connect_timeout_ms,
            },
        };
        rpc::call(&crate::objects::device_stub(&self.env, device_id).map_err(rpc::unreachable)?, &op).await
    }

    /// A patched wave: every device that has not settled, its twin as the fleet index holds it
    /// (one statement per shard, not a twin read per device); then core judges the wave.
    async fn watch_wave(&self, mut job: Job, wave: usize) -> Result<Next> {
        let names = job.work.desired_names();
        let pick = Pick { statuses: &[DeviceJobStatus::Running], wave: Some(wave) };
        let watching = self.records(&job.job_id, &pick, usize::MAX)?;
        for chunk in watching.chunks(WATCH_CHUNK) {
            // A shard that does not answer is the hub's own fault, which says nothing about its
            // devices: they are looked at again next time.
            let twins = match crate::objects::index_twins(&self.env, chunk.iter().map(|r| r.device_id.as_str())).await {
                Ok(twins) => twins,
                Err(e) => {
                    worker::console_warn!("rollout {}: the fleet index did not answer: {e}", job.job_id);
                    continue;
                }
            };
            let now = clock::now();
            for record in chunk {
                if let Some(settled) = executor::watch(record, twins.get(&record.device_id), &names, now) {
                    self.write_record(&settled)?;
                }
            }
        }
        self.refresh(&mut job)?;
        let tally = executor::tally(Statistics::from_counts(self.counts(&job.job_id, Some(wave))?));
        let next = executor::advance(&mut job, tally, clock::now());
        self.save_with_statistics(&mut job)?;
        Ok(next)
    }

    /// A rollback's step: give a batch of reached devices their previous values.
    async fn rollback_step(&self, mut job: Job) -> Result<Next> {
        let rows: Vec<DeviceJob> = self
            .state
            .storage()
            .sql()
            .exec(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM device_job WHERE job_id = ? AND rolled_back = 0
                       AND started IS NOT NULL ORDER BY ord LIMIT ?"
                ),
                vec![job.job_id.clone().into(), sql_int(executor::ROLLBACK_BATCH as u64)?],
            )?
            .to_array::<RecordRow>()?
            .into_iter()
            .filter_map(RecordRow::into_record)
            .collect();
        if rows.is_empty() {
            let restored = self.count_rolled_back(&job.job_id)?;
            job.rolled_back(restored, clock::now());
            self.save_with_statistics(&mut job)?;
            return Ok(Next::Again);
        }
        let answers = join_all(rows.iter().map(|r| async {
            let op = DeviceOp::JobRollback { device_id: r.device_id.clone(), job_id: job.job_id.clone() };
            let stub = crate::objects::device_stub(&self.env, &r.device_id).map_err(rpc::unreachable)?;
            rpc::call::<_, RollbackAnswer>(&stub, &op).await.map(|a| a.restored)
        }))
        .await;
        let sql = self.state.storage().sql();
        for (record, answer) in rows.iter().zip(answers) {
            let (mark, failed) = executor::rolled_back(record, answer);
            if let Some(record) = failed {
                worker::console_warn!("rollback of job {} on a device failed", job.job_id);
                self.write_record(&record)?;
            }
            let mark: u64 = match mark {
                Restore::Restored => 1,
                Restore::Nothing => 2,
            };
            sql.exec(
                "UPDATE device_job SET rolled_back = ? WHERE job_id = ? AND device_id = ?",
                vec![sql_int(mark)?, job.job_id.clone().into(), record.device_id.clone().into()],
            )?;
        }
        Ok(Next::Again)
    }

    /// Devices per batch ([`executor::batch_size`]).
    fn batch(&self) -> usize {
        executor::batch_size(Config::of(&self.env).job_concurrency, self.device_rate())
    }

    /// Devices per second a job reaches: `JOB_DEVICES_PER_SECOND` within the tier's rate
    /// ([`executor::device_rate`]).
    fn device_rate(&self) -> u64 {
        let config = Config::of(&self.env);
        let tier = config.tier.rate(twinhub_core::tier::Operation::JobDeviceOp).map(|r| r.per_second);
        executor::device_rate(config.job_devices_per_second, tier)
    }

    /// Replaces `job` with its stored version (requests change jobs while the executor awaits).
    fn refresh(&self, job: &mut Job) -> Result<()> {
        if let Some(stored) = self.load(&job.job_id)? {
            *job = stored;
        }
        Ok(())
    }

    /// Up to `limit` records of `job_id` that `pick` names, in reach order, a device being
    /// retried after those not yet tried (so the hub has had time to recover).
    fn records(&self, job_id: &str, pick: &Pick, limit: usize) -> Result<Vec<DeviceJob>> {
        let marks = vec!["?"; pick.statuses.len()].join(", ");
        let mut params: Vec<SqlStorageValue> = vec![job_id.into()];
        params.extend(pick.statuses.iter().map(|s| SqlStorageValue::from(s.as_str())));
        let wave_sql = match pick.wave {
            Some(w) => {
                params.push(sql_int(w as u64)?);
                " AND wave = ?"
            }
            None => "",
        };
        params.push(sql_int(u64::try_from(limit).unwrap_or(u64::MAX))?);
        let rows: Vec<RecordRow> = self
            .state
            .storage()
            .sql()
            .exec(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM device_job WHERE job_id = ? AND status IN ({marks}){wave_sql}
                     ORDER BY retries, ord LIMIT ?"
                ),
                params,
            )?
            .to_array()?;
        Ok(rows.into_iter().filter_map(RecordRow::into_record).collect())
    }

    /// Cancels the records of `job` still in one of `statuses`: their columns only, which a
    /// read lays over the record.
    fn cancel_records(&self, job: &Job, statuses: &[DeviceJobStatus], now: UnixMillis) -> Result<()> {
        for status in statuses {
            self.state.storage().sql().exec(
                "UPDATE device_job SET status = ?, ended = ?, updated = ? WHERE job_id = ? AND status = ?",
                vec![
                    DeviceJobStatus::Canceled.as_str().into(),
                    sql_int(now.0)?,
                    sql_int(now.0)?,
                    job.job_id.clone().into(),
                    status.as_str().into(),
                ],
            )?;
        }
        Ok(())
    }

    fn count(&self, job_id: &str, statuses: &[DeviceJobStatus]) -> Result<u64> {
        let counts = self.counts(job_id, None)?;
        Ok(counts.iter().filter(|(s, _)| statuses.contains(s)).map(|(_, n)| n).sum())
    }

    fn count_rolled_back(&self, job_id: &str) -> Result<u64> {
        #[derive(Deserialize)]
        struct N {
            n: u64,
        }
        let row: N = self
            .state
            .storage()
            .sql()
            .exec("SELECT COUNT(*) AS n FROM device_job WHERE job_id = ? AND rolled_back = 1", vec![job_id.into()])?
            .one()?;
        Ok(row.n)
    }

    /// The job's records (of one `wave`, or all) counted by status.
    fn counts(&self, job_id: &str, wave: Option<usize>) -> Result<Vec<(DeviceJobStatus, u64)>> {
        let sql = self.state.storage().sql();
        let rows: Vec<CountRow> = match wave {
            Some(w) => sql.exec(
                "SELECT status, COUNT(*) AS n FROM device_job WHERE job_id = ? AND wave = ? GROUP BY status",
                vec![job_id.into(), sql_int(w as u64)?],
            )?,
            None => sql.exec(
                "SELECT status, COUNT(*) AS n FROM device_job WHERE job_id = ? GROUP BY status",
                vec![job_id.into()],
            )?,
        }
        .to_array()?;
        Ok(rows.into_iter().filter_map(|r| Some((DeviceJobStatus::parse(&r.status)?, r.n))).collect())
    }

    fn write_record(&self, record: &DeviceJob) -> Result<()> {
        let mut values = record_columns(record)?;
        values.extend([record.job_id.clone().into(), record.device_id.clone().into()]);
        self.state.storage().sql().exec(
            "UPDATE device_job SET status = ?, retries = ?, started = ?, ended = ?, updated = ?, body = ?
             WHERE job_id = ? AND device_id = ?",
            values,
        )?;
        Ok(())
    }

    /// Recounts the job's devices and stores it.
    fn save_with_statistics(&self, job: &mut Job) -> Result<()> {
        let counts = self.counts(&job.job_id, None)?;
        job.statistics = Statistics::from_counts(counts);
        self.save(job)
    }

    /// Forgets jobs (and their device records) that ended longer ago than the retention.
    fn purge_expired(&self, now: UnixMillis) -> Result<()> {
        let retention_ms = Config::of(&self.env).job_retention_secs.saturating_mul(1000);
        let sql = self.state.storage().sql();
        for job in self.all_jobs()?.into_iter().filter(|j| j.past_retention(now, retention_ms)) {
            sql.exec("DELETE FROM device_job WHERE job_id = ?", vec![job.job_id.clone().into()])?;
            sql.exec("DELETE FROM job WHERE job_id = ?", vec![job.job_id.into()])?;
        }
        Ok(())
    }

    fn save(&self, job: &Job) -> Result<()> {
        self.state.storage().sql().exec(
            "INSERT OR REPLACE INTO job (job_id, body) VALUES (?, ?)",
            vec![job.job_id.clone().into(), to_json(job)?.into()],
        )?;
        Ok(())
    }

    fn load(&self, job_id: &str) -> Result<Option<Job>> {
        let rows: Vec<BodyRow> = self
            .state
            .storage()
            .sql()
            .exec("SELECT body FROM job WHERE job_id = ?", vec![job_id.into()])?
            .to_array()?;
        match rows.into_iter().next() {
            Some(r) => serde_json::from_str(&r.body).map(Some).map_err(|e| worker::Error::RustError(e.to_string())),
            None => Ok(None),
        }
    }

    fn require(&self, job_id: &str) -> std::result::Result<Job, crate::http::ApiError> {
        self.load(job_id)?
            .ok_or_else(|| HubError::new(ErrorCode::JobNotFound, format!("no job with id '{job_id}'")).into())
    }

    /// Every job, in id order (jobs are few; their device records are not loaded).
    fn all_jobs(&self) -> Result<Vec<Job>> {
        let rows: Vec<BodyRow> =
            self.state.storage().sql().exec("SELECT body FROM job ORDER BY job_id", None)?.to_array()?;
        Ok(rows.into_iter().filter_map(|r| serde_json::from_str(&r.body).ok()).collect())
    }
}
