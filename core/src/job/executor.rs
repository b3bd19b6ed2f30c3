//! How a job runs, decided without I/O: which task comes next, which devices a batch calls
//! and with what, what each answer does to a device's record, how a rollout's wave is judged
//! and how fast devices are reached.
//!
//! The jobs object (`functions/src/objects/jobs.rs`) is the loop around this: it asks
//! [`next_task`], does the task's I/O (reads records, runs the query on the fleet index, calls
//! device objects), hands what came back to the functions here, and stores what they return.
//! Statuses are [`DeviceJobStatus`] values, never their spellings, so the store's queries
//! cannot drift from the records.

use super::record::{DeviceJob, DeviceJobStatus, Job, JobStatus, Statistics};
use super::request::Work;
use super::rollout::{device_outcome, judge, order_key, Verdict, WaveTally};
use crate::twin::drift::DriftState;
use crate::{HubError, UnixMillis};
use serde_json::{json, Value};

/// How soon the executor steps a job again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// It did work and has more: at once.
    Again,
    /// Nothing to do for this many ms.
    Wait(u64),
    /// Nothing more to do until a request changes it.
    Idle,
}

/// How often a rollout looks at its wave's twins again.
pub const WATCH_MS: u64 = 1_000;

/// Device calls in flight at once when a rollout rolls back (a job's own batch is
/// [`batch_size`]).
pub const ROLLBACK_BATCH: usize = 100;

/// The records a step works on: those of the job in one of `statuses` (and in `wave`), in
/// reach order, a device being retried after those not tried yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pick {
    pub statuses: &'static [DeviceJobStatus],
    pub wave: Option<usize>,
}

/// What to do when a [`Pick`] finds no record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenNone {
    /// Every device is done: the job completes.
    Complete,
    /// The wave is patched: watch it.
    Watch(usize),
}

/// What a job needs from the executor now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task {
    /// Paused, ended, or not due: nothing.
    Idle,
    /// Queued or scheduled and due: it begins ([`Job::begin`]), then is asked again.
    Begin,
    /// Its rollback is under way: give a batch of reached devices their previous values
    /// ([`ROLLBACK_BATCH`] records not yet rolled back whose device was reached).
    RollBack,
    /// Out of time: cancel the devices not reached (pending and running), then [`expire`].
    Expire,
    /// Run its query on the fleet index, then write [`targets`].
    SelectTargets,
    /// Every wave of its rollout is done.
    Complete,
    /// Call the devices of `pick` ([`Batch`]); `staged` (a rollout's wave): a device that
    /// took the patch is watched until it catches up rather than done.
    Call { pick: Pick, staged: bool, when_none: WhenNone },
}

const NOT_DONE: &[DeviceJobStatus] = &[DeviceJobStatus::Pending, DeviceJobStatus::Running];
const NOT_REACHED: &[DeviceJobStatus] = &[DeviceJobStatus::Pending];

/// The statuses a cancellation ends: everything not done, and for a rollback only the devices
/// not reached (a reached one is given its values back instead).
pub fn cancelled_statuses(rollback: bool) -> &'static [DeviceJobStatus] {
    if rollback {
        NOT_REACHED
    } else {
        NOT_DONE
    }
}

/// The task `job` needs at `now`.
pub fn next_task(job: &Job, now: UnixMillis) -> Task {
    if job.rolling_back {
        return Task::RollBack;
    }
    if matches!(job.status, JobStatus::Queued | JobStatus::Scheduled) {
        return if job.wants_work(now) { Task::Begin } else { Task::Idle };
    }
    if job.status != JobStatus::Running {
        return Task::Idle;
    }
    if job.expired(now) {
        return Task::Expire;
    }
    if !job.targets_selected {
        return Task::SelectTargets;
    }
    match &job.rollout {
        Some(r) if r.wave >= r.plan.waves.len() => Task::Complete,
        Some(r) => Task::Call {
            pick: Pick { statuses: NOT_REACHED, wave: Some(r.wave) },
            staged: true,
            when_none: WhenNone::Watch(r.wave),
        },
        None => {
            Task::Call { pick: Pick { statuses: NOT_DONE, wave: None }, staged: false, when_none: WhenNone::Complete }
        }
    }
}

/// The job ran out of time with `left` devices canceled.
pub fn expire(job: &mut Job, left: u64, now: UnixMillis) {
    let reason = format!(
        "maxExecutionTimeInSeconds ({}) elapsed; {left} device(s) not reached were canceled",
        job.max_execution_secs
    );
    job.fail(reason, now);
}

/// One device's place in a job, written when its devices are selected.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Its place in the order devices are reached.
    pub ord: usize,
    pub record: DeviceJob,
}

/// The records of the devices the job's query selected (`ids`, in any order): a rollout
/// reaches them in a well-spread order ([`order_key`]) cut into its waves, a plain job in id
/// order. The caller marks the job's targets selected ([`targets_written`]).
pub fn targets(job: &Job, mut ids: Vec<String>, now: UnixMillis) -> Vec<Target> {
    match &job.rollout {
        Some(_) => ids.sort_by_key(|id| order_key(&job.job_id, id)),
        None => ids.sort(),
    }
    let n = ids.len();
    ids.iter()
        .enumerate()
        .map(|(ord, id)| {
            let wave = job.rollout.as_ref().map_or(0, |r| r.plan.wave_of(ord, n));
            Target { ord, record: DeviceJob::new(job, id, wave, now) }
        })
        .collect()
}

/// The job's records are written: it goes on to calling devices (a rollout's first wave
/// starts now).
pub fn targets_written(job: &mut Job, now: UnixMillis) {
    job.targets_selected = true;
    if let Some(r) = &mut job.rollout {
        r.wave_started = Some(now);
    }
}

/// Whether the targets the index returned may still be written: a request may have cancelled,
/// paused or rolled back the job (or another step selected them) while the index answered.
pub fn may_write_targets(job: &Job) -> bool {
    job.status == JobStatus::Running && !job.rolling_back && !job.targets_selected
}

/// What the job asks of each device object.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceCall<'a> {
    /// Apply the job's patch, at most once per job.
    UpdateTwin { job_id: &'a str, patch: &'a Value },
    /// Invoke the method, waiting for an offline device up to `connect_timeout_ms`.
    Method { name: &'a str, payload: &'a Value, timeout_ms: u64, connect_timeout_ms: u64 },
}

/// The call `job` makes to every device.
pub fn device_call(job: &Job) -> DeviceCall<'_> {
    match &job.work {
        Work::UpdateTwin { patch } => DeviceCall::UpdateTwin { job_id: &job.job_id, patch },
        Work::DeviceMethod { name, payload, response_timeout_secs, connect_timeout_secs } => DeviceCall::Method {
            name,
            payload,
            timeout_ms: response_timeout_secs.saturating_mul(1000),
            connect_timeout_ms: connect_timeout_secs.saturating_mul(1000),
        },
    }
}

/// One batch of device calls.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// Settled without a call: to store as they are.
    pub settled: Vec<DeviceJob>,
    /// Marked reached, to call.
    pub calls: Vec<DeviceJob>,
    /// Store `calls` before calling (a method: a restart must know which were in flight).
    pub store_first: bool,
}

impl Batch {
    /// The batch for `rows`, picked by a [`Task::Call`].
    pub fn new(job: &Job, rows: Vec<DeviceJob>, now: UnixMillis) -> Self {
        let is_method = matches!(job.work, Work::DeviceMethod { .. });
        let mut batch = Self { store_first: is_method, ..Self::default() };
        for mut record in rows {
            if is_method && record.status == DeviceJobStatus::Running {
                // Marked running before a restart cut the call short: the device may have run
                // it, so it is not run again.
                record.fail("JobInterrupted", "interrupted by a restart; a direct method is not retried", now);
                batch.settled.push(record);
                continue;
            }
            record.reached(now);
            batch.calls.push(record);
        }
        batch
    }
}

/// Whether `job` stopped while its calls were out (cancelled, failed, rolled back): devices put
/// back in line are canceled instead.
pub fn stopped(job: &Job) -> bool {
    !matches!(job.status, JobStatus::Running | JobStatus::Paused) || job.rolling_back
}

/// A device's answer to its call: `Ok` with the device object's answer (a method's
/// `{status, payload}`), or the error it gave. `staged`: a rollout's patch, watched from now
/// on. `stopped`: see [`stopped`].
pub fn settle(
    job: &Job,
    record: &mut DeviceJob,
    answer: Result<Value, HubError>,
    staged: bool,
    stopped: bool,
    now: UnixMillis,
) {
    let is_method = matches!(job.work, Work::DeviceMethod { .. });
    match answer {
        Ok(_) if staged => {}
        Ok(answer) => record.succeed(is_method.then(|| json!({ "deviceMethodResponse": answer })), now),
        // A twin update may be tried again (the device object applies it once per job); a
        // method may not.
        Err(e) => record.call_failed(e.code.name(), e.message, !is_method, now),
    }
    if stopped && record.status == DeviceJobStatus::Pending {
        record.cancel(now);
    }
}

/// A watched device of a rollout's wave, its twin as the fleet index holds it (`None`: the
/// device is gone): the record settled, or `None` while it has not caught up.
pub fn watch(record: &DeviceJob, twin: Option<&Value>, desired_names: &[String], now: UnixMillis) -> Option<DeviceJob> {
    let mut record = record.clone();
    match twin.map(|t| device_outcome(t, desired_names)) {
        Some((DriftState::CaughtUp, _)) => record.succeed(None, now),
        Some((DriftState::Refused, why)) => record.fail("DeviceRefused", why.unwrap_or_default(), now),
        Some((DriftState::Pending, _)) => return None,
        None => record.fail("DeviceNotFound", "the device was deleted during the rollout", now),
    }
    Some(record)
}

/// A wave's records counted (its [`Statistics`]) as its judge reads them: a canceled device
/// failed, a running one (patched, watched) is still pending.
pub fn tally(counted: Statistics) -> WaveTally {
    let n = |count: u64| usize::try_from(count).unwrap_or(usize::MAX);
    WaveTally {
        size: n(counted.device_count),
        succeeded: n(counted.succeeded_count),
        failed: n(counted.failed_count),
        pending: n(counted.pending_count + counted.running_count),
    }
}

/// After a look at the wave: judges it and moves the rollout on (the next wave, or paused
/// with the reason). A job no longer running, or rolling back, is left as it is.
pub fn advance(job: &mut Job, tally: WaveTally, now: UnixMillis) -> Next {
    let Some(state) = job.rollout.as_mut().filter(|_| job.status == JobStatus::Running && !job.rolling_back) else {
        return Next::Again;
    };
    match judge(state, tally, now) {
        Verdict::Wait => Next::Wait(WATCH_MS),
        Verdict::NextWave => {
            state.wave += 1;
            state.wave_started = Some(now);
            state.failures_accepted = false;
            Next::Again
        }
        Verdict::Pause(why) => {
            // Running, so pausing cannot be refused.
            let _ = job.pause(why, now);
            Next::Again
        }
    }
}

/// What a rollback did to one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restore {
    /// Given its previous values.
    Restored,
    /// Nothing to give back (the update never applied there), or the call failed.
    Nothing,
}

/// A device's answer to its rollback call (`Ok(restored)`, or the error): what the store marks,
/// and the record to store when the rollback failed (its error says why).
pub fn rolled_back(record: &DeviceJob, answer: Result<bool, HubError>) -> (Restore, Option<DeviceJob>) {
    match answer {
        Ok(true) => (Restore::Restored, None),
        Ok(false) => (Restore::Nothing, None),
        Err(e) => {
            // A device deleted since cannot be given anything back; its record says so.
            let mut record = record.clone();
            record.error = Some(json!({ "code": e.code.name(), "description": format!("rollback: {}", e.message) }));
            (Restore::Nothing, Some(record))
        }
    }
}

/// Devices per second a job reaches (0: as fast as it goes): the configured rate, and no more
/// than the hub tier's job device operations (`tier_per_second`; S1: 10 a second), as IoT Hub
/// paces its jobs.
pub fn device_rate(configured: u64, tier_per_second: Option<f64>) -> u64 {
    let tier = tier_per_second.map(|r| (r.floor() as u64).max(1));
    match (configured, tier) {
        (0, Some(t)) => t,
        (c, Some(t)) => c.min(t),
        (c, None) => c,
    }
}

/// Devices per batch: the configured concurrency (at most 1,000, the subrequests one
/// invocation may make), or a second's worth at `rate` if smaller.
pub fn batch_size(concurrency: u64, rate: u64) -> usize {
    let concurrency = usize::try_from(concurrency).map_or(1_000, |n| n.min(1_000));
    match usize::try_from(rate) {
        Ok(rate) if rate > 0 => rate.min(concurrency),
        _ => concurrency,
    }
}

/// How much longer a batch of `n` devices that took `spent_ms` waits so the job keeps to
/// `rate` devices a second (`None`: no wait).
pub fn pace(n: usize, rate: u64, spent_ms: u64) -> Option<u64> {
    let min_ms = (n as u64).saturating_mul(1000).checked_div(rate)?;
    (spent_ms < min_ms).then(|| min_ms - spent_ms)
}

/// Milliseconds from `now` until the earliest scheduled job of `jobs` starts.
pub fn next_start(jobs: &[Job], now: UnixMillis) -> Option<u64> {
    jobs.iter().filter(|j| j.status == JobStatus::Scheduled).map(|j| j.start.0.saturating_sub(now.0)).min()
}

/// When the alarm should fire next: at once if a job wants work, else when the first
/// scheduled one starts.
pub fn alarm_in(jobs: &[Job], now: UnixMillis) -> Option<u64> {
    if jobs.iter().any(|j| j.wants_work(now)) {
        Some(0)
    } else {
        next_start(jobs, now)
    }
}

#[cfg(test)]
mod tests;
