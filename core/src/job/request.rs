//! `PUT /jobs/v2/{jobId}` (spec §3.6): the JobRequest body, parsed and checked in full before a
//! job exists, so a bad request never leaves a half-made job behind.

use super::rollout::RolloutPlan;
use crate::method::MethodCall;
use crate::query::{self, Query};
use crate::twin::ServicePatch;
use crate::{ErrorCode, HubError, UnixMillis};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `maxExecutionTimeInSeconds` when the request has none (IoT Hub's SDK samples use an hour).
pub const DEFAULT_MAX_EXECUTION_SECS: u64 = 3600;
/// The longest a job may run: a week.
pub const MAX_EXECUTION_SECS: u64 = 7 * 24 * 3600;
/// Longest job id.
pub const MAX_JOB_ID_LEN: usize = 128;
/// What a `queryCondition` is put behind to parse it as a query.
const WHERE_PREFIX: &str = "SELECT * FROM devices WHERE ";

/// The kinds of job twinhub runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobType {
    ScheduleUpdateTwin,
    ScheduleDeviceMethod,
}

impl JobType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScheduleUpdateTwin => "scheduleUpdateTwin",
            Self::ScheduleDeviceMethod => "scheduleDeviceMethod",
        }
    }

    /// Reads a `jobType` filter: the wire name or the C# SDK's enum name, in any case.
    pub fn from_filter(s: &str) -> Option<Self> {
        [Self::ScheduleUpdateTwin, Self::ScheduleDeviceMethod].into_iter().find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

/// What a job does to each device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Work {
    /// A service patch (`{"tags": ..., "properties": {"desired": ...}}`), applied with etag `*`.
    UpdateTwin { patch: Value },
    /// A direct method.
    DeviceMethod { name: String, payload: Value, response_timeout_secs: u64, connect_timeout_secs: u64 },
}

impl Work {
    /// The job type that carries this work.
    pub fn job_type(&self) -> JobType {
        match self {
            Self::UpdateTwin { .. } => JobType::ScheduleUpdateTwin,
            Self::DeviceMethod { .. } => JobType::ScheduleDeviceMethod,
        }
    }

    /// The desired properties a twin update sets (top-level names), which a rollout watches.
    pub fn desired_names(&self) -> Vec<String> {
        match self {
            Self::UpdateTwin { patch } => {
                patch["properties"]["desired"].as_object().map(|d| d.keys().cloned().collect()).unwrap_or_default()
            }
            Self::DeviceMethod { .. } => Vec::new(),
        }
    }
}

/// A checked job request.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    pub job_id: String,
    pub work: Work,
    /// The condition as the client wrote it (`*` for every device).
    pub query_condition: String,
    /// When to start (the request's `startTime`, or now).
    pub start: UnixMillis,
    pub max_execution_secs: u64,
    /// twinhub's extension: run a twin update in waves.
    pub rollout: Option<RolloutPlan>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    job_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    query_condition: Option<String>,
    start_time: Option<Value>,
    max_execution_time_in_seconds: Option<Value>,
    update_twin: Option<Value>,
    cloud_to_device_method: Option<Value>,
    rollout: Option<Value>,
}

fn invalid(message: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::ArgumentInvalid, message)
}

impl JobRequest {
    /// Parses the body of `PUT /jobs/v2/{job_id}` received at `now`.
    pub fn parse(job_id: &str, body: &str, now: UnixMillis) -> Result<Self, HubError> {
        check_job_id(job_id)?;
        let b: Body = serde_json::from_str(body).map_err(|e| HubError::unreadable("invalid job request", &e))?;
        if let Some(id) = b.job_id.as_deref().filter(|id| *id != job_id) {
            return Err(invalid(format!("the body's jobId '{}' differs from the path's", truncate(id))));
        }
        let kind = b.kind.ok_or_else(|| HubError::new(ErrorCode::ArgumentNull, "type is required"))?;
        let work = match kind.as_str() {
            "scheduleUpdateTwin" => {
                let twin = b.update_twin.ok_or_else(|| {
                    HubError::new(ErrorCode::ArgumentNull, "a scheduleUpdateTwin job needs updateTwin")
                })?;
                update_twin(&twin)?
            }
            "scheduleDeviceMethod" => {
                let method = b.cloud_to_device_method.ok_or_else(|| {
                    HubError::new(ErrorCode::ArgumentNull, "a scheduleDeviceMethod job needs cloudToDeviceMethod")
                })?;
                let call = MethodCall::parse(&method.to_string())?;
                Work::DeviceMethod {
                    name: call.name,
                    payload: call.payload,
                    response_timeout_secs: call.response_timeout_secs,
                    connect_timeout_secs: call.connect_timeout_secs,
                }
            }
            other => {
                return Err(invalid(format!(
                    "unknown job type '{}': twinhub runs scheduleUpdateTwin and scheduleDeviceMethod",
                    truncate(other)
                )))
            }
        };
        let query_condition = b.query_condition.filter(|c| !c.trim().is_empty()).ok_or_else(|| {
            HubError::new(ErrorCode::ArgumentNull, "queryCondition is required ('*' for every device)")
        })?;
        condition_query(&query_condition)?;
        let start = match b.start_time {
            None | Some(Value::Null) => now,
            Some(Value::String(s)) => UnixMillis::parse_iso(&s)
                .ok_or_else(|| invalid(format!("startTime '{}' is not an ISO 8601 UTC time", truncate(&s))))?,
            Some(other) => return Err(invalid(format!("startTime must be an ISO 8601 string, not {other}"))),
        };
        let max_execution_secs = match b.max_execution_time_in_seconds {
            None | Some(Value::Null) => DEFAULT_MAX_EXECUTION_SECS,
            Some(v) => v.as_u64().filter(|n| (1..=MAX_EXECUTION_SECS).contains(n)).ok_or_else(|| {
                invalid(format!(
                    "maxExecutionTimeInSeconds must be a whole number of seconds from 1 to {MAX_EXECUTION_SECS}, not {v}"
                ))
            })?,
        };
        let rollout = match b.rollout {
            None | Some(Value::Null) => None,
            Some(v) => {
                if work.desired_names().is_empty() {
                    return Err(invalid("a rollout is a twin update that sets desired properties"));
                }
                Some(RolloutPlan::parse(&v)?)
            }
        };
        Ok(Self { job_id: job_id.to_owned(), work, query_condition, start, max_execution_secs, rollout })
    }
}

/// The `updateTwin` of a request: tags and desired, checked as a `PATCH /twins` body is. The
/// etag must be `*` (or absent): one etag cannot match a fleet of twins.
fn update_twin(twin: &Value) -> Result<Work, HubError> {
    match twin.get("etag") {
        None | Some(Value::Null) => {}
        Some(Value::String(e)) if e.trim_matches('"') == "*" => {}
        Some(other) => return Err(invalid(format!("updateTwin.etag must be \"*\", not {other}"))),
    }
    let patch = ServicePatch::parse(&twin.to_string()).map_err(|e| HubError::from(&e))?;
    if patch.tags.as_ref().is_none_or(|t| t.is_empty()) && patch.desired.as_ref().is_none_or(|d| d.is_empty()) {
        return Err(invalid("updateTwin changes nothing: give tags or properties.desired"));
    }
    let mut out = json!({});
    if let Some(tags) = patch.tags {
        out["tags"] = Value::Object(tags);
    }
    if let Some(desired) = patch.desired {
        out["properties"] = json!({ "desired": desired });
    }
    Ok(Work::UpdateTwin { patch: out })
}

/// Checks a job id: 1 to 128 characters of the set IoT Hub allows in ids.
pub fn check_job_id(id: &str) -> Result<(), HubError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-:.+%_#*?!(),=@;$'".contains(c);
    if id.is_empty() || id.len() > MAX_JOB_ID_LEN || !id.chars().all(allowed) {
        return Err(invalid(format!(
            "invalid job id '{}': 1 to {MAX_JOB_ID_LEN} letters, digits or -:.+%_#*?!(),=@;$'",
            truncate(id)
        )));
    }
    Ok(())
}

/// The query a `queryCondition` stands for: `*` is every device, anything else is the `WHERE`
/// of a device query. Errors point into the condition as the client wrote it.
pub fn condition_query(condition: &str) -> Result<Query, HubError> {
    named_condition_query("queryCondition", condition)
}

/// [`condition_query`] for a condition the client sent under another name (a configuration's
/// `targetCondition`), which its errors name.
pub fn named_condition_query(field: &str, condition: &str) -> Result<Query, HubError> {
    let condition = condition.trim();
    let text = if condition == "*" { "SELECT * FROM devices".to_owned() } else { format!("{WHERE_PREFIX}{condition}") };
    query::parse(&text).map_err(|mut e| {
        if e.at.line == 1 {
            let prefix = u32::try_from(WHERE_PREFIX.chars().count()).unwrap_or(0);
            e.at.col = e.at.col.saturating_sub(prefix).max(1);
        }
        invalid(format!("The {field} is invalid: {e}"))
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
