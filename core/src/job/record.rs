//! What is kept about a job and about each device in it, how their statuses move, and their
//! wire shapes (JobResponse and DeviceJob, spec §3.6).
//!
//! Job statuses are IoT Hub's (`queued`, `scheduled`, `running`, `completed`, `failed`,
//! `cancelled`) plus twinhub's `paused` (a rollout waiting for its operator) and `rolledBack`.
//! Device job statuses spell `canceled` with one `l`, as IoT Hub does.

use super::request::{JobRequest, JobType, Work};
use super::rollout::RolloutState;
use crate::{ErrorCode, HubError, UnixMillis};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobStatus {
    /// Accepted, to start now.
    Queued,
    /// Accepted, to start at its `startTime`.
    Scheduled,
    Running,
    /// A rollout stopped itself, or its operator paused it.
    Paused,
    Completed,
    /// Ran out of `maxExecutionTimeInSeconds`, or could not select its devices.
    Failed,
    Cancelled,
    /// Every device the job changed was given back its previous values.
    RolledBack,
}

impl JobStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::RolledBack => "rolledBack",
        }
    }

    /// Reads a `jobStatus` filter in any case (the C# SDK sends enum names).
    pub fn from_filter(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Scheduled,
            Self::Running,
            Self::Paused,
            Self::Completed,
            Self::Failed,
            Self::Cancelled,
            Self::RolledBack,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// Finished: nothing more happens to it (except a rollback of a twin update).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled | Self::RolledBack)
    }
}

/// Device counts of a job (`deviceJobStatistics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    pub device_count: u64,
    pub failed_count: u64,
    pub succeeded_count: u64,
    pub running_count: u64,
    pub pending_count: u64,
}

impl Statistics {
    /// Counts from (status, how many) pairs.
    pub fn from_counts(counts: impl IntoIterator<Item = (DeviceJobStatus, u64)>) -> Self {
        let mut s = Self::default();
        for (status, n) in counts {
            s.device_count += n;
            match status {
                DeviceJobStatus::Pending => s.pending_count += n,
                DeviceJobStatus::Running => s.running_count += n,
                DeviceJobStatus::Completed => s.succeeded_count += n,
                DeviceJobStatus::Failed | DeviceJobStatus::Canceled => s.failed_count += n,
            }
        }
        s
    }

    /// Devices with nothing left to do.
    pub fn settled(&self) -> u64 {
        self.succeeded_count + self.failed_count
    }
}

/// A job as stored (times in Unix ms; [`Job::to_wire`] is what clients see).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub job_id: String,
    pub work: Work,
    pub query_condition: String,
    pub created: UnixMillis,
    pub start: UnixMillis,
    /// When it began running (for `maxExecutionTimeInSeconds`).
    pub started: Option<UnixMillis>,
    pub end: Option<UnixMillis>,
    pub max_execution_secs: u64,
    pub status: JobStatus,
    pub failure_reason: Option<String>,
    pub status_message: Option<String>,
    pub statistics: Statistics,
    /// Who created it (the policy), for the record.
    pub created_by: String,
    /// The devices were selected (the query ran) and their records written.
    pub targets_selected: bool,
    pub rollout: Option<RolloutState>,
    /// A rollback was asked for and is under way.
    #[serde(default)]
    pub rolling_back: bool,
    /// When it was paused (time paused does not count towards `maxExecutionTimeInSeconds`).
    #[serde(default)]
    pub paused_at: Option<UnixMillis>,
    /// Target selections that failed in a row (the fleet index refused or lost the query).
    #[serde(default)]
    pub selection_failures: u32,
}

/// Tries at selecting a job's devices before the job fails with the reason, instead of
/// retrying every second until its maximum run time (up to a week).
pub const MAX_SELECTION_TRIES: u32 = 5;

impl Job {
    /// A new job from a checked request.
    pub fn new(request: JobRequest, created_by: &str, now: UnixMillis) -> Self {
        let status = if request.start.0 > now.0 { JobStatus::Scheduled } else { JobStatus::Queued };
        Self {
            job_id: request.job_id,
            work: request.work,
            query_condition: request.query_condition,
            created: now,
            start: request.start,
            started: None,
            end: None,
            max_execution_secs: request.max_execution_secs,
            status,
            failure_reason: None,
            status_message: None,
            statistics: Statistics::default(),
            created_by: created_by.to_owned(),
            targets_selected: false,
            rollout: request.rollout.map(RolloutState::new),
            rolling_back: false,
            paused_at: None,
            selection_failures: 0,
        }
    }

    pub fn job_type(&self) -> JobType {
        self.work.job_type()
    }

    /// The history's actor for the changes this job makes.
    pub fn actor(&self) -> String {
        format!("job:{}", self.job_id)
    }

    /// Whether the executor has something to do for it at `now`.
    pub fn wants_work(&self, now: UnixMillis) -> bool {
        match self.status {
            JobStatus::Queued | JobStatus::Running => true,
            JobStatus::Scheduled => self.start.0 <= now.0,
            JobStatus::Paused => self.rolling_back,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled | JobStatus::RolledBack => {
                self.rolling_back
            }
        }
    }

    /// It starts running (its devices are about to be selected).
    pub fn begin(&mut self, now: UnixMillis) {
        self.status = JobStatus::Running;
        self.started.get_or_insert(now);
    }

    /// Whether it has run out of time at `now`.
    pub fn expired(&self, now: UnixMillis) -> bool {
        self.status == JobStatus::Running
            && self.started.is_some_and(|s| now.0 >= s.0.saturating_add(self.max_execution_secs.saturating_mul(1000)))
    }

    /// Every device is done.
    pub fn complete(&mut self, now: UnixMillis) {
        self.status = JobStatus::Completed;
        self.end = Some(now);
        self.status_message = None;
    }

    /// It stops for good with `reason` (the remaining devices are canceled by the caller).
    pub fn fail(&mut self, reason: String, now: UnixMillis) {
        self.status = JobStatus::Failed;
        self.failure_reason = Some(reason);
        self.end = Some(now);
    }

    /// Whether the job ended at least `retention_ms` ago: IoT Hub keeps a finished job's
    /// record for 30 days, then it is gone.
    pub fn past_retention(&self, now: UnixMillis, retention_ms: u64) -> bool {
        self.status.is_final() && self.end.is_some_and(|end| now.0.saturating_sub(end.0) >= retention_ms)
    }

    /// Selecting the devices failed with `reason`: the job fails once this has happened
    /// [`MAX_SELECTION_TRIES`] times in a row. Whether it failed now.
    pub fn selection_failed(&mut self, reason: &str, now: UnixMillis) -> bool {
        self.selection_failures += 1;
        if self.selection_failures < MAX_SELECTION_TRIES {
            return false;
        }
        self.fail(format!("the device query could not run ({} tries): {reason}", self.selection_failures), now);
        true
    }

    /// `POST /jobs/v2/{id}/cancel`.
    pub fn cancel(&mut self, now: UnixMillis) -> Result<(), HubError> {
        if self.status.is_final() {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                format!(
                    "job '{}' has already ended ({}); only a job that has not ended can be cancelled",
                    self.job_id,
                    self.status.as_str()
                ),
            ));
        }
        self.status = JobStatus::Cancelled;
        self.end = Some(now);
        Ok(())
    }

    /// Pauses a running rollout (the operator, or the rollout itself with its reason).
    pub fn pause(&mut self, reason: String, now: UnixMillis) -> Result<(), HubError> {
        if !matches!(self.status, JobStatus::Running | JobStatus::Queued | JobStatus::Scheduled) {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                format!(
                    "job '{}' is {}; only a job that has not ended can be paused",
                    self.job_id,
                    self.status.as_str()
                ),
            ));
        }
        self.status = JobStatus::Paused;
        self.status_message = Some(reason);
        self.paused_at = Some(now);
        Ok(())
    }

    /// Resumes a paused job. A rollout's current wave gets a fresh deadline and, if it paused
    /// on failures, its failures are accepted: resuming is the operator's "go on anyway".
    pub fn resume(&mut self, now: UnixMillis) -> Result<(), HubError> {
        if self.status != JobStatus::Paused || self.rolling_back {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                format!("job '{}' is {}; only a paused job can be resumed", self.job_id, self.status.as_str()),
            ));
        }
        // A job paused before it began goes back to waiting for its start; one that was
        // running gets its paused time back.
        self.status = match self.started {
            None if self.start.0 > now.0 => JobStatus::Scheduled,
            None => JobStatus::Queued,
            Some(_) => JobStatus::Running,
        };
        if let (Some(started), Some(paused)) = (self.started, self.paused_at.take()) {
            self.started = Some(UnixMillis(started.0.saturating_add(now.0.saturating_sub(paused.0))));
        }
        self.status_message = None;
        if let Some(r) = &mut self.rollout {
            r.wave_started = Some(now);
            r.failures_accepted = true;
        }
        Ok(())
    }

    /// Starts a rollback: every device this twin update changed gets its previous values back.
    /// Devices not yet reached are canceled by the caller.
    pub fn start_rollback(&mut self, now: UnixMillis) -> Result<(), HubError> {
        if !matches!(self.work, Work::UpdateTwin { .. }) {
            return Err(HubError::new(ErrorCode::ArgumentInvalid, "only a twin update can be rolled back"));
        }
        if self.rolling_back || self.status == JobStatus::RolledBack {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                format!("job '{}' is already rolled back or rolling back", self.job_id),
            ));
        }
        self.rolling_back = true;
        self.end.get_or_insert(now);
        self.status_message = Some("rolling back: restoring each device's previous values".into());
        Ok(())
    }

    /// The rollback reached every device.
    pub fn rolled_back(&mut self, restored: u64, now: UnixMillis) {
        self.rolling_back = false;
        self.status = JobStatus::RolledBack;
        self.end = Some(now);
        self.status_message = Some(format!("rolled back: {restored} device(s) given their previous values"));
    }

    /// The JobResponse JSON.
    pub fn to_wire(&self) -> Value {
        let mut v = json!({
            "jobId": self.job_id,
            "queryCondition": self.query_condition,
            "createdTime": self.created.to_iso(),
            "startTime": self.start.to_iso(),
            "maxExecutionTimeInSeconds": self.max_execution_secs,
            "type": self.job_type().as_str(),
            "status": self.status.as_str(),
            "deviceJobStatistics": self.statistics,
        });
        if let Some(end) = self.end {
            v["endTime"] = json!(end.to_iso());
        }
        match &self.work {
            Work::UpdateTwin { patch } => {
                let mut twin = patch.clone();
                twin["etag"] = json!("*");
                v["updateTwin"] = twin;
            }
            Work::DeviceMethod { name, payload, response_timeout_secs, connect_timeout_secs } => {
                v["cloudToDeviceMethod"] = json!({
                    "methodName": name,
                    "payload": payload,
                    "responseTimeoutInSeconds": response_timeout_secs,
                    "connectTimeoutInSeconds": connect_timeout_secs,
                });
            }
        }
        if let Some(r) = &self.failure_reason {
            v["failureReason"] = json!(r);
        }
        if let Some(m) = &self.status_message {
            v["statusMessage"] = json!(m);
        }
        if let Some(r) = &self.rollout {
            v["rollout"] = json!({
                "waves": r.plan.waves,
                "failureThresholdPercent": r.plan.failure_threshold_percent,
                "waveDeadlineSeconds": r.plan.wave_deadline_seconds,
                "currentWave": r.wave + 1,
                "waveStartedTime": r.wave_started.map(UnixMillis::to_iso),
            });
        }
        v
    }
}

/// Where one device is in a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceJobStatus {
    Pending,
    /// Being called; for a rollout, patched and not yet caught up.
    Running,
    Completed,
    Failed,
    Canceled,
}

impl DeviceJobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Running, Self::Completed, Self::Failed, Self::Canceled]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// One device's record in a job (`FROM devices.jobs`, item type DeviceJob).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceJob {
    pub device_id: String,
    pub job_id: String,
    pub job_type: JobType,
    pub status: DeviceJobStatus,
    pub created: UnixMillis,
    pub started: Option<UnixMillis>,
    pub ended: Option<UnixMillis>,
    pub updated: UnixMillis,
    /// A method's answer: `{"deviceMethodResponse": {"status", "payload"}}`.
    pub outcome: Option<Value>,
    /// Why it failed: `{"code", "description"}`.
    pub error: Option<Value>,
    /// Its rollout wave (0 for plain jobs).
    #[serde(default)]
    pub wave: usize,
    /// Calls that failed on the hub's side and were tried again.
    #[serde(default)]
    pub retries: u32,
}

/// Tries a device gets when the hub itself failed (a fault or an overload of ours, not the
/// device's answer or the request's).
pub const MAX_TRIES: u32 = 5;

impl DeviceJob {
    pub fn new(job: &Job, device_id: &str, wave: usize, now: UnixMillis) -> Self {
        Self {
            device_id: device_id.to_owned(),
            job_id: job.job_id.clone(),
            job_type: job.job_type(),
            status: DeviceJobStatus::Pending,
            created: now,
            started: None,
            ended: None,
            updated: now,
            outcome: None,
            error: None,
            wave,
            retries: 0,
        }
    }

    /// The job reached the device (a rollout then waits for it to catch up).
    pub fn reached(&mut self, now: UnixMillis) {
        self.status = DeviceJobStatus::Running;
        self.started.get_or_insert(now);
        self.updated = now;
    }

    pub fn succeed(&mut self, outcome: Option<Value>, now: UnixMillis) {
        self.status = DeviceJobStatus::Completed;
        self.started.get_or_insert(now);
        self.ended = Some(now);
        self.updated = now;
        self.outcome = outcome;
        self.error = None;
    }

    pub fn fail(&mut self, code: &str, description: impl Into<String>, now: UnixMillis) {
        self.status = DeviceJobStatus::Failed;
        self.ended = Some(now);
        self.updated = now;
        self.error = Some(json!({ "code": code, "description": description.into() }));
    }

    /// A call failed with `code`: a fault of the hub's own (`ServerError`, `ServiceUnavailable`)
    /// puts the device back in line while it has tries left and `may_retry` (a twin update,
    /// which the device object applies at most once); anything else fails it.
    pub fn call_failed(&mut self, code: &str, description: impl Into<String>, may_retry: bool, now: UnixMillis) {
        let ours = matches!(code, "ServerError" | "ServiceUnavailable");
        if ours && may_retry && self.retries + 1 < MAX_TRIES {
            self.retries += 1;
            self.status = DeviceJobStatus::Pending;
            self.updated = now;
            self.error = Some(json!({ "code": code, "description": description.into() }));
        } else {
            self.fail(code, description, now);
        }
    }

    pub fn cancel(&mut self, now: UnixMillis) {
        self.status = DeviceJobStatus::Canceled;
        self.ended = Some(now);
        self.updated = now;
    }

    /// The DeviceJob JSON.
    pub fn to_wire(&self) -> Value {
        let mut v = json!({
            "deviceId": self.device_id,
            "jobId": self.job_id,
            "jobType": self.job_type.as_str(),
            "status": self.status.as_str(),
            "createdDateTimeUtc": self.created.to_iso(),
            "lastUpdatedDateTimeUtc": self.updated.to_iso(),
        });
        if let Some(t) = self.started {
            v["startTimeUtc"] = json!(t.to_iso());
        }
        if let Some(t) = self.ended {
            v["endTimeUtc"] = json!(t.to_iso());
        }
        if let Some(o) = &self.outcome {
            v["outcome"] = o.clone();
        }
        if let Some(e) = &self.error {
            v["error"] = e.clone();
        }
        v
    }
}
