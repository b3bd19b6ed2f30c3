//! `GET /api/fleet/overview`: the console's first page in one answer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The fleet at a glance: device counts now, the last hour per minute, alerts by a twin path,
/// the index's lag and the jobs under way.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Overview {
    pub devices: DeviceCounts,
    /// The window of the series (Unix ms, whole minutes).
    pub from: u64,
    pub to: u64,
    /// Connected devices per minute.
    pub connected: Vec<ConnectedPoint>,
    /// Device-to-cloud messages and alerts per minute (`None` with the event stream off).
    pub activity: Option<Vec<ActivityBucket>>,
    /// Alerts in the window.
    pub alerts: u64,
    /// The twin path the alerts are broken down by, and the groups.
    pub alerts_by: String,
    pub alert_groups: Vec<AlertGroup>,
    /// Milliseconds from a device's commit to its index shard: the worst shard's recent p99.
    pub index_lag_ms: u64,
    pub jobs: RunningJobs,
}

/// Devices (not modules) by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceCounts {
    pub total: u64,
    pub enabled: u64,
    pub disabled: u64,
    pub connected: u64,
    pub disconnected: u64,
    /// With a desired property not caught up.
    pub drifting: u64,
    /// With a desired property refused.
    pub refused: u64,
}

/// Connected devices in one minute (`None`: before any sample).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectedPoint {
    pub start: u64,
    pub connected: Option<u64>,
}

/// Messages and alerts in one minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActivityBucket {
    pub start: u64,
    pub messages: u64,
    pub alerts: u64,
}

/// Alerts from devices with one value at the breakdown's path (`None`: not set).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertGroup {
    pub value: Option<Value>,
    pub alerts: u64,
}

/// Jobs queued, scheduled or running, and of those the rollouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunningJobs {
    pub jobs: u64,
    pub rollouts: u64,
}
