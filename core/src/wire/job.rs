//! Jobs, per-device job records and configurations as the REST API renders them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A job (`JobResponse`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobView {
    pub job_id: String,
    pub query_condition: String,
    /// `scheduleUpdateTwin` or `scheduleDeviceMethod`.
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub device_job_statistics: JobStatistics,
    pub status_message: Option<String>,
    pub failure_reason: Option<String>,
    /// twinhub's staged rollouts.
    pub rollout: Option<RolloutView>,
}

/// `deviceJobStatistics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobStatistics {
    pub device_count: u64,
    pub failed_count: u64,
    pub succeeded_count: u64,
    pub running_count: u64,
    pub pending_count: u64,
}

/// Where a rollout is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutView {
    /// Cumulative percentages.
    pub waves: Vec<u64>,
    /// 1-based.
    pub current_wave: u64,
}

impl JobView {
    pub fn is_twin_update(&self) -> bool {
        self.kind == "scheduleUpdateTwin"
    }

    /// What to say about where it is: its status message, else its failure.
    pub fn note(&self) -> Option<&str> {
        self.status_message.as_deref().or(self.failure_reason.as_deref())
    }
}

/// One device's record in a job (`SELECT * FROM devices.jobs`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceJobView {
    pub device_id: String,
    pub job_id: String,
    pub status: String,
    /// A method's answer: `{"deviceMethodResponse": {"status", "payload"}}`.
    pub outcome: Option<Value>,
    pub error: Option<DeviceJobError>,
}

/// Why a device's job failed (or is being retried).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceJobError {
    pub code: String,
    pub description: String,
}

/// An automatic device (or module) configuration with its metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigurationView {
    pub id: String,
    pub target_condition: String,
    pub priority: i64,
    pub etag: String,
    pub content: ConfigurationContent,
    pub system_metrics: Metrics,
    pub metrics: Metrics,
}

/// What a configuration sets: `properties.desired...` paths and values, for devices or for
/// modules (one of the two is set).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigurationContent {
    pub device_content: Map<String, Value>,
    pub module_content: Map<String, Value>,
}

/// Metric counts (`results`) and their queries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    pub results: Map<String, Value>,
    pub queries: Map<String, Value>,
}

impl ConfigurationView {
    /// The content that applies: the modules' when set, else the devices'.
    pub fn content(&self) -> &Map<String, Value> {
        if self.content.module_content.is_empty() {
            &self.content.device_content
        } else {
            &self.content.module_content
        }
    }

    /// A system metric's count (`targetedCount`, `appliedCount`).
    pub fn system_count(&self, name: &str) -> u64 {
        self.system_metrics.results.get(name).and_then(Value::as_u64).unwrap_or(0)
    }
}
