//! A device's stored telemetry, its downsampled series, and its twin history, as twinhub's own
//! `/api/` routes answer them.

use crate::twin::Change;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /api/devices/{id}/telemetry`: the newest messages, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TelemetryPage {
    pub device_id: String,
    pub messages: Vec<StoredMessage>,
}

/// One stored device-to-cloud message (also what the live view sends).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StoredMessage {
    pub enqueued_time: String,
    /// The application properties (`None`: unreadable).
    pub properties: Option<Vec<(String, Option<String>)>>,
    /// The body: its JSON, or its text as a JSON string.
    pub body: Value,
}

impl StoredMessage {
    /// The value of property `name`, if the message has it.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.as_ref()?.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref())
    }
}

/// `GET /api/devices/{id}/telemetry/series`: one numeric field per time bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Series {
    #[serde(rename = "deviceId")]
    pub device_id: String,
    pub field: String,
    /// Unix ms, `[from, to)`.
    pub from: u64,
    pub to: u64,
    /// Buckets with readings, in time order.
    pub buckets: Vec<SeriesBucket>,
}

/// The readings of one bucket (`telemetry::Bucket` as sent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeriesBucket {
    /// Unix ms.
    pub start: u64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
}

/// `GET /api/twins/{id}/history`: accepted twin changes, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct History {
    pub device_id: String,
    pub entries: Vec<HistoryEntry>,
}

/// One accepted change of the twin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryEntry {
    pub version: u64,
    /// ISO 8601.
    pub time: String,
    /// Who: a policy, `device`, `job:{id}`, ...
    pub actor: String,
    pub changes: Vec<Change>,
}

/// `POST /api/fleet/telemetry`: one field over the devices a condition selects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetSeries {
    pub field: String,
    /// Unix ms, `[from, to)`.
    pub from: u64,
    pub to: u64,
    /// Devices the condition selected (`None`: every device, no condition).
    pub devices: Option<u64>,
    /// Buckets with readings, in time order.
    pub buckets: Vec<SeriesBucket>,
}

/// `POST /api/fleet/alerts`: the newest messages that carry an `alert` property.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetAlerts {
    /// Newest first.
    pub alerts: Vec<FleetAlert>,
}

/// One message with an `alert` property.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FleetAlert {
    pub device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// ISO 8601.
    pub enqueued_time: String,
    /// The `alert` property's value (`high_temperature`).
    pub alert: String,
    /// The application properties.
    pub properties: Vec<(String, Option<String>)>,
    /// The body: its JSON, or its text as a JSON string.
    pub body: Value,
}
