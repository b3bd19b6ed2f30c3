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
use crate::objects::{ask_every_index_shard, ask_index_shard, sql_int, to_json};
use crate::rpc::{self, DeviceOp, IndexOp, JobOp, JobPage};
use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use twinhub_core::job::request::condition_query;
use twinhub_core::job::rollout::{device_outcome, judge, order_key, Verdict, WaveTally};
use twinhub_core::job::{DeviceJob, DeviceJobStatus, Job, JobStatus, Statistics, Work};
use twinhub_core::query::{eval, sql};
use twinhub_core::twin::drift::DriftState;
use twinhub_core::{ErrorCode, HubError, UnixMillis};
use worker::{durable_object, Delay, DurableObject, Env, Request, Response, Result, SqlStorageValue, State};

/// The jobs object's binding, as in wrangler.toml.
pub const JOBS_BINDING: &str = "JOBS";
/// Device calls in flight at once when a rollout rolls back (a job's own batch is
/// `JOB_CONCURRENCY`).
const BATCH: usize = 100;
/// Devices of a wave judged per look at the index (one statement per shard each).
const WATCH_CHUNK: usize = 1_000;
/// How often a rollout looks at its wave's twins again.
const WATCH_MS: u64 = 1_000;

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

#[derive(Deserialize)]
struct KeyedRow {
    job_id: String,
    device_id: String,
    body: String,
}

#[derive(Deserialize)]
struct CountRow {
    status: String,
    n: u64,
}

#[derive(Deserialize)]
struct Ids {
    ids: Vec<String>,
}

/// What one step of a job asks of the executor.
enum Next {
    /// It did work and has more: step again.
    Again,
    /// Nothing to do until this many ms from now.
    Wait(u64),
    /// Nothing more to do.
    Idle,
}

impl DurableObject for Jobs {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        for schema in [
            "CREATE TABLE IF NOT EXISTS job (job_id TEXT PRIMARY KEY, body TEXT NOT NULL)",
            // `ord` is the order devices are reached in (a rollout's spread order); `status`
            // mirrors the body's, for the executor's and the statistics' queries.
            "CREATE TABLE IF NOT EXISTS device_job (job_id TEXT NOT NULL, device_id TEXT NOT NULL, ord INTEGER NOT NULL,
                wave INTEGER NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL, rolled_back INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (job_id, device_id))",
            "CREATE INDEX IF NOT EXISTS device_job_work ON device_job (job_id, status, wave, ord)",
        ] {
            if let Err(e) = sql.exec(schema, None) {
                worker::console_error!("jobs schema: {e}");
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
        let next = if due { Some(0) } else { wait.or_else(|| next_start(&jobs, now)) };
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
                self.cancel_pending(&job, &["pending", "running"], now)?;
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
                self.cancel_pending(&job, &["pending"], now)?;
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
                Ok(http::json(200, &serde_json::to_value(JobPage { items, next }).unwrap_or_default(), None)?)
            }
            JobOp::DeviceJobs { query, after, limit } => {
                let query = twinhub_core::query::parse(&query).map_err(HubError::from)?;
                let (job_after, device_after) = after.unwrap_or_default();
                let rows: Vec<KeyedRow> = self
                    .state
                    .storage()
                    .sql()
                    .exec(
                        "SELECT job_id, device_id, body FROM device_job WHERE (job_id, device_id) > (?, ?)
                         ORDER BY job_id, device_id",
                        vec![job_after.into(), device_after.into()],
                    )?
                    .to_array()?;
                let mut items = Vec::new();
                let mut next = None;
                let mut last = None;
                for row in rows {
                    let Ok(record) = serde_json::from_str::<DeviceJob>(&row.body) else { continue };
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
                    last = Some((row.job_id, row.device_id));
                }
                Ok(http::json(200, &serde_json::to_value(JobPage { items, next }).unwrap_or_default(), None)?)
            }
        }
    }

    /// Arms the alarm if a job has work and none is armed.
    async fn wake(&self) -> Result<()> {
        if self.running.get() {
            return Ok(());
        }
        let now = clock::now();
        let jobs = self.all_jobs()?;
        let due = jobs.iter().any(|j| j.wants_work(now));
        let Some(ms) = (if due { Some(0) } else { next_start(&jobs, now) }) else { return Ok(()) };
        let wanted = i64::try_from(now.0.saturating_add(ms)).unwrap_or(i64::MAX);
        // Armed for later than needed (a job scheduled tomorrow, then one queued now): earlier.
        if self.state.storage().get_alarm().await?.is_none_or(|armed| armed > wanted) {
            self.state.storage().set_alarm(i64::try_from(ms).unwrap_or(i64::MAX)).await?;
        }
        Ok(())
    }

    /// One step of `job`: a batch of devices, a look at a rollout's wave, or a transition.
    async fn step(&self, mut job: Job) -> Result<Next> {
        let now = clock::now();
        if job.rolling_back {
            return self.rollback_step(job).await;
        }
        if matches!(job.status, JobStatus::Queued | JobStatus::Scheduled) {
            job.begin(now);
            self.save(&job)?;
        }
        if job.status != JobStatus::Running {
            return Ok(Next::Idle);
        }
        if job.expired(now) {
            self.cancel_pending(&job, &["pending", "running"], now)?;
            let left = self.count(&job.job_id, &["canceled"])?;
            job.fail(
                format!(
                    "maxExecutionTimeInSeconds ({}) elapsed; {left} device(s) not reached were canceled",
                    job.max_execution_secs
                ),
                now,
            );
            self.save_with_statistics(&mut job)?;
            return Ok(Next::Again);
        }
        if !job.targets_selected {
            self.select_targets(&mut job).await?;
            return Ok(Next::Again);
        }
        if job.rollout.is_some() {
            return self.rollout_step(job).await;
        }
        let rows = self.rows(&job.job_id, &["pending", "running"], None, self.batch())?;
        if rows.is_empty() {
            job.complete(now);
            self.save_with_statistics(&mut job)?;
            return Ok(Next::Again);
        }
        self.run_batch(&mut job, rows, false).await?;
        Ok(Next::Again)
    }

    /// Runs the job's query on the fleet index and writes a pending record per device.
    async fn select_targets(&self, job: &mut Job) -> Result<()> {
        let now = clock::now();
        let query = match condition_query(&job.query_condition) {
            Ok(q) => q,
            Err(e) => {
                job.fail(e.message, now);
                return self.save(job);
            }
        };
        let statement = sql::ids_statement(&query);
        let answers: Vec<Ids> = match ask_every_index_shard(
            &self.env,
            &IndexOp::Ids { sql: statement.sql, params: statement.params },
        )
        .await
        {
            Ok(answers) => answers,
            Err(e) => {
                // Retried by the next alarm a few times, then the job fails with the reason
                // (unless it was cancelled, paused or rolled back meanwhile).
                self.refresh(job)?;
                if job.status == JobStatus::Running && !job.targets_selected && !job.rolling_back {
                    job.selection_failed("the fleet index could not run it (see the hub's log)", clock::now());
                    self.save(job)?;
                }
                return Err(e);
            }
        };
        // Cancelled, paused or rolled back while the index answered: its devices are not written.
        self.refresh(job)?;
        if job.status != JobStatus::Running || job.rolling_back || job.targets_selected {
            return Ok(());
        }
        let mut ids: Vec<String> = answers.into_iter().flat_map(|a| a.ids).collect();
        if job.rollout.is_some() {
            ids.sort_by_key(|id| order_key(&job.job_id, id));
        } else {
            ids.sort();
        }
        let n = ids.len();
        let sql = self.state.storage().sql();
        for (position, id) in ids.iter().enumerate() {
            let wave = job.rollout.as_ref().map_or(0, |r| r.plan.wave_of(position, n));
            let record = DeviceJob::new(job, id, wave, now);
            sql.exec(
                "INSERT OR IGNORE INTO device_job (job_id, device_id, ord, wave, status, body) VALUES (?, ?, ?, ?, 'pending', ?)",
                vec![
                    job.job_id.clone().into(),
                    id.clone().into(),
                    sql_int(position as u64)?,
                    sql_int(wave as u64)?,
                    to_json(&record)?.into(),
                ],
            )?;
        }
        job.targets_selected = true;
        if let Some(r) = &mut job.rollout {
            r.wave_started = Some(now);
        }
        self.save_with_statistics(job)
    }

    /// Calls every device of `rows` at once (at the configured rate) and records the outcomes.
    /// `staged`: a rollout's patch, after which the device is watched rather than done.
    async fn run_batch(&self, job: &mut Job, rows: Vec<DeviceJob>, staged: bool) -> Result<()> {
        let started = clock::now();
        let is_method = matches!(job.work, Work::DeviceMethod { .. });
        let mut records = Vec::with_capacity(rows.len());
        let mut calls = Vec::new();
        for mut record in rows {
            if is_method && record.status == DeviceJobStatus::Running {
                // Marked running before a restart cut the call short: the device may have run
                // it, so it is not run again.
                record.fail("JobInterrupted", "interrupted by a restart; a direct method is not retried", started);
                records.push(record);
                continue;
            }
            record.reached(started);
            calls.push(record);
        }
        if is_method {
            // Persisted before the calls go out, so a restart can tell which were in flight.
            for record in &calls {
                self.write_record(record)?;
            }
        }
        let outcomes = join_all(calls.iter().map(|r| self.call_device(job, &r.device_id))).await;
        // A request may have cancelled, paused or rolled back the job during the calls: keep
        // what it said, and do not put devices back in line for a job that stopped.
        self.refresh(job)?;
        let stopped = !matches!(job.status, JobStatus::Running | JobStatus::Paused) || job.rolling_back;
        let now = clock::now();
        for (mut record, outcome) in calls.into_iter().zip(outcomes) {
            match outcome {
                Ok(_) if staged => {}
                Ok(answer) => record.succeed(answer, now),
                Err((code, description)) => record.call_failed(&code, description, !is_method, now),
            }
            if stopped && record.status == DeviceJobStatus::Pending {
                record.cancel(now);
            }
            records.push(record);
        }
        for record in &records {
            self.write_record(record)?;
        }
        self.save_with_statistics(job)?;
        // The configured rate: a batch of n devices takes at least n / rate seconds.
        let rate = self.device_rate();
        if let Some(min_ms) = (records.len() as u64).saturating_mul(1000).checked_div(rate) {
            let spent = clock::now().0.saturating_sub(started.0);
            if spent < min_ms {
                Delay::from(std::time::Duration::from_millis(min_ms - spent)).await;
            }
        }
        Ok(())
    }

    /// One device call for `job`: `Ok(outcome)` (a method's answer) or `Err((code, why))`.
    async fn call_device(&self, job: &Job, device_id: &str) -> std::result::Result<Option<Value>, (String, String)> {
        let op = match &job.work {
            Work::UpdateTwin { patch } => DeviceOp::JobUpdateTwin {
                device_id: device_id.to_owned(),
                job_id: job.job_id.clone(),
                body: patch.to_string(),
            },
            Work::DeviceMethod { name, payload, response_timeout_secs, connect_timeout_secs } => {
                DeviceOp::InvokeMethod {
                    device_id: device_id.to_owned(),
                    name: name.clone(),
                    payload: payload.to_string(),
                    timeout_ms: response_timeout_secs * 1000,
                    connect_timeout_ms: connect_timeout_secs * 1000,
                }
            }
        };
        let is_method = matches!(job.work, Work::DeviceMethod { .. });
        let answer = self.device_call(device_id, op).await?;
        Ok(is_method.then(|| json!({ "deviceMethodResponse": answer })))
    }

    /// Sends `op` to a device object: its 200 body as JSON, or the error's code and message.
    async fn device_call(&self, device_id: &str, op: DeviceOp) -> std::result::Result<Value, (String, String)> {
        let fault = |e: worker::Error| ("ServerError".to_owned(), e.to_string());
        let stub = crate::objects::device_stub(&self.env, device_id).map_err(fault)?;
        let mut resp = rpc::call(&stub, &op).await.map_err(fault)?;
        let status = resp.status_code();
        let code = resp.headers().get("iothub-errorcode").ok().flatten();
        let text = resp.text().await.unwrap_or_default();
        if status == 200 {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        // The device object's error, read back as the typed error it wrote.
        match HubError::from_envelope(&text) {
            Some(e) => Err((e.code.name().to_owned(), e.message)),
            None => Err((code.unwrap_or_else(|| format!("Status{status}")), text)),
        }
    }

    /// The twins of `ids` as the fleet index holds them, asking only the shards they live on,
    /// all at once. A device missing from the answer does not exist (or is deleted).
    async fn indexed_twins<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Result<HashMap<String, Value>> {
        let shards = Config::of(&self.env).index_shards;
        let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for id in ids {
            by_shard.entry(twinhub_core::fleet::shard_of(id, shards)).or_default().push(id.to_owned());
        }
        #[derive(Deserialize)]
        struct Page {
            ids: Vec<String>,
            rows: Vec<Value>,
        }
        let calls = by_shard.into_iter().map(|(shard, ids)| async move {
            let sql::Statement { sql, params } = sql::twins_statement(&ids);
            ask_index_shard::<Page>(&self.env, shard, &IndexOp::Rows { sql, params }).await
        });
        let mut twins = HashMap::new();
        for page in futures_util::future::try_join_all(calls).await? {
            twins.extend(page.ids.into_iter().zip(page.rows));
        }
        Ok(twins)
    }

    /// A rollout's step: patch the current wave's devices, then watch them until core's judge
    /// says the wave is done, over its threshold, or late.
    async fn rollout_step(&self, mut job: Job) -> Result<Next> {
        let now = clock::now();
        let Some(state) = job.rollout.clone() else { return Ok(Next::Idle) };
        if state.wave >= state.plan.waves.len() {
            job.complete(now);
            self.save_with_statistics(&mut job)?;
            return Ok(Next::Again);
        }
        let pending = self.rows(&job.job_id, &["pending"], Some(state.wave), self.batch())?;
        if !pending.is_empty() {
            self.run_batch(&mut job, pending, true).await?;
            return Ok(Next::Again);
        }
        // Watch: every patched device of the wave that has not settled, its twin as the fleet
        // index holds it (one statement per shard, not a twin read per device).
        let names = job.work.desired_names();
        let watching = self.rows(&job.job_id, &["running"], Some(state.wave), usize::MAX)?;
        for chunk in watching.chunks(WATCH_CHUNK) {
            // A shard that does not answer is the hub's own fault, which says nothing about its
            // devices: they are looked at again next time.
            let twins = match self.indexed_twins(chunk.iter().map(|r| r.device_id.as_str())).await {
                Ok(twins) => twins,
                Err(e) => {
                    worker::console_warn!("rollout {}: the fleet index did not answer: {e}", job.job_id);
                    continue;
                }
            };
            let now = clock::now();
            for record in chunk {
                let mut record = record.clone();
                match twins.get(&record.device_id) {
                    Some(twin) => match device_outcome(twin, &names) {
                        (DriftState::CaughtUp, _) => record.succeed(None, now),
                        (DriftState::Refused, why) => record.fail("DeviceRefused", why.unwrap_or_default(), now),
                        (DriftState::Pending, _) => continue,
                    },
                    None => record.fail("DeviceNotFound", "the device was deleted during the rollout", now),
                }
                self.write_record(&record)?;
            }
        }
        self.refresh(&mut job)?;
        let Some(state) = job.rollout.clone().filter(|_| job.status == JobStatus::Running && !job.rolling_back) else {
            self.save_with_statistics(&mut job)?;
            return Ok(Next::Again);
        };
        let tally = self.wave_tally(&job.job_id, state.wave)?;
        let now = clock::now();
        let next = match judge(&state, tally, now) {
            Verdict::Wait => Next::Wait(WATCH_MS),
            Verdict::NextWave => {
                if let Some(r) = &mut job.rollout {
                    r.wave += 1;
                    r.wave_started = Some(now);
                    r.failures_accepted = false;
                }
                Next::Again
            }
            Verdict::Pause(why) => {
                let _ = job.pause(why, now);
                Next::Again
            }
        };
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
                "SELECT body FROM device_job WHERE job_id = ? AND rolled_back = 0
                   AND json_extract(body, '$.started') IS NOT NULL ORDER BY ord LIMIT ?",
                vec![job.job_id.clone().into(), sql_int(BATCH as u64)?],
            )?
            .to_array::<BodyRow>()?
            .into_iter()
            .filter_map(|r| serde_json::from_str(&r.body).ok())
            .collect();
        if rows.is_empty() {
            let restored = self.count_rolled_back(&job.job_id)?;
            job.rolled_back(restored, clock::now());
            self.save_with_statistics(&mut job)?;
            return Ok(Next::Again);
        }
        let answers = join_all(rows.iter().map(|r| {
            self.device_call(
                &r.device_id,
                DeviceOp::JobRollback { device_id: r.device_id.clone(), job_id: job.job_id.clone() },
            )
        }))
        .await;
        let sql = self.state.storage().sql();
        for (record, answer) in rows.iter().zip(answers) {
            // 1: given back; 2: nothing to give back (never applied there) or it failed.
            let mark = match &answer {
                Ok(v) if v.get("restored").is_some_and(|r| r == false) => 2,
                Ok(_) => 1,
                Err(_) => 2,
            };
            if let Err((code, why)) = answer {
                // A device deleted since cannot be given anything back; the record says so.
                worker::console_warn!("rollback of job {} on a device failed: {code}", job.job_id);
                let mut record = record.clone();
                record.error = Some(json!({ "code": code, "description": format!("rollback: {why}") }));
                self.write_record(&record)?;
            }
            sql.exec(
                "UPDATE device_job SET rolled_back = ? WHERE job_id = ? AND device_id = ?",
                vec![sql_int(mark)?, job.job_id.clone().into(), record.device_id.clone().into()],
            )?;
        }
        Ok(Next::Again)
    }

    /// Devices per batch: the configured concurrency, or a second's worth at the configured
    /// rate if smaller.
    fn batch(&self) -> usize {
        let concurrency = usize::try_from(Config::of(&self.env).job_concurrency).map_or(1_000, |n| n.min(1_000));
        match usize::try_from(self.device_rate()) {
            Ok(rate) if rate > 0 => rate.min(concurrency),
            _ => concurrency,
        }
    }

    /// Devices per second a job reaches (0: as fast as it goes): `JOB_DEVICES_PER_SECOND`, and
    /// no more than the hub tier's jobs device operations (S1: 10 a second), as IoT Hub paces
    /// its jobs.
    fn device_rate(&self) -> u64 {
        let config = Config::of(&self.env);
        let configured = config.job_devices_per_second;
        let tier =
            config.tier.rate(twinhub_core::tier::Operation::JobDeviceOp).map(|r| (r.per_second.floor() as u64).max(1));
        match (configured, tier) {
            (0, Some(t)) => t,
            (c, Some(t)) => c.min(t),
            (c, None) => c,
        }
    }

    /// Replaces `job` with its stored version (requests change jobs while the executor awaits).
    fn refresh(&self, job: &mut Job) -> Result<()> {
        if let Some(stored) = self.load(&job.job_id)? {
            *job = stored;
        }
        Ok(())
    }

    fn wave_tally(&self, job_id: &str, wave: usize) -> Result<WaveTally> {
        let counts: Vec<CountRow> = self
            .state
            .storage()
            .sql()
            .exec(
                "SELECT status, COUNT(*) AS n FROM device_job WHERE job_id = ? AND wave = ? GROUP BY status",
                vec![job_id.into(), sql_int(wave as u64)?],
            )?
            .to_array()?;
        let mut t = WaveTally::default();
        for c in counts {
            let n = usize::try_from(c.n).unwrap_or(usize::MAX);
            t.size += n;
            match DeviceJobStatus::parse(&c.status) {
                Some(DeviceJobStatus::Completed) => t.succeeded += n,
                Some(DeviceJobStatus::Failed | DeviceJobStatus::Canceled) => t.failed += n,
                _ => t.pending += n,
            }
        }
        Ok(t)
    }

    /// Up to `limit` records of `job_id` in one of `statuses` (and `wave`), in reach order, a
    /// device being retried after those not yet tried (so the hub has had time to recover).
    fn rows(&self, job_id: &str, statuses: &[&str], wave: Option<usize>, limit: usize) -> Result<Vec<DeviceJob>> {
        let marks = vec!["?"; statuses.len()].join(", ");
        let mut params: Vec<SqlStorageValue> = vec![job_id.into()];
        params.extend(statuses.iter().map(|s| SqlStorageValue::from(*s)));
        let wave_sql = match wave {
            Some(w) => {
                params.push(sql_int(w as u64)?);
                " AND wave = ?"
            }
            None => "",
        };
        params.push(sql_int(u64::try_from(limit).unwrap_or(u64::MAX).min(i64::MAX as u64))?);
        let rows: Vec<BodyRow> = self
            .state
            .storage()
            .sql()
            .exec(
                &format!(
                    "SELECT body FROM device_job WHERE job_id = ? AND status IN ({marks}){wave_sql}
                     ORDER BY json_extract(body, '$.retries'), ord LIMIT ?"
                ),
                params,
            )?
            .to_array()?;
        Ok(rows.into_iter().filter_map(|r| serde_json::from_str(&r.body).ok()).collect())
    }

    /// Cancels the records of `job` still in one of `statuses`.
    fn cancel_pending(&self, job: &Job, statuses: &[&str], now: UnixMillis) -> Result<()> {
        for status in statuses {
            self.state.storage().sql().exec(
                "UPDATE device_job SET status = 'canceled',
                    body = json_set(body, '$.status', 'canceled', '$.ended', ?, '$.updated', ?)
                 WHERE job_id = ? AND status = ?",
                vec![sql_int(now.0)?, sql_int(now.0)?, job.job_id.clone().into(), (*status).into()],
            )?;
        }
        Ok(())
    }

    fn count(&self, job_id: &str, statuses: &[&str]) -> Result<u64> {
        let counts = self.counts(job_id)?;
        Ok(counts.iter().filter(|(s, _)| statuses.contains(&s.as_str())).map(|(_, n)| n).sum())
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

    fn counts(&self, job_id: &str) -> Result<Vec<(String, u64)>> {
        let rows: Vec<CountRow> = self
            .state
            .storage()
            .sql()
            .exec("SELECT status, COUNT(*) AS n FROM device_job WHERE job_id = ? GROUP BY status", vec![job_id.into()])?
            .to_array()?;
        Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
    }

    fn write_record(&self, record: &DeviceJob) -> Result<()> {
        self.state.storage().sql().exec(
            "UPDATE device_job SET status = ?, body = ? WHERE job_id = ? AND device_id = ?",
            vec![
                record.status.as_str().into(),
                to_json(record)?.into(),
                record.job_id.clone().into(),
                record.device_id.clone().into(),
            ],
        )?;
        Ok(())
    }

    /// Recounts the job's devices and stores it.
    fn save_with_statistics(&self, job: &mut Job) -> Result<()> {
        let counts = self.counts(&job.job_id)?;
        job.statistics =
            Statistics::from_counts(counts.into_iter().filter_map(|(s, n)| DeviceJobStatus::parse(&s).map(|s| (s, n))));
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

/// Milliseconds from `now` until the earliest scheduled job of `jobs` starts.
fn next_start(jobs: &[Job], now: UnixMillis) -> Option<u64> {
    jobs.iter().filter(|j| j.status == JobStatus::Scheduled).map(|j| j.start.0.saturating_sub(now.0)).min()
}
