//! A twin as `GET /twins/{id}` (and `PATCH`, a query's `SELECT *`, the live view) renders it.

use crate::twin::drift::{drift, drift_count, DriftRow};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A device or module twin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Twin {
    pub device_id: String,
    /// Set for a module twin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    pub etag: String,
    pub version: u64,
    /// `enabled` or `disabled`.
    pub status: String,
    /// `Connected` or `Disconnected`.
    pub connection_state: String,
    /// ISO 8601; year 1 for never.
    pub last_activity_time: String,
    /// Empty when the device announced no Plug and Play model.
    pub model_id: String,
    /// Absent from the JSON when empty.
    pub tags: Map<String, Value>,
    pub properties: Properties,
    /// The configuration applied, by id (at most one in twinhub).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub configurations: Map<String, Value>,
    /// The rest, as sent (`deviceEtag`, `statusUpdateTime`, `capabilities`, ...).
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The twin's two property sections, each with its `$metadata` and `$version`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Properties {
    pub desired: Map<String, Value>,
    pub reported: Map<String, Value>,
}

impl Twin {
    /// The device or module key (`{deviceId}/{moduleId}` for a module), as the dashboard names
    /// an identity.
    pub fn key(&self) -> String {
        match &self.module_id {
            Some(module) => crate::identity::module_key(&self.device_id, module),
            None => self.device_id.clone(),
        }
    }

    /// The desired properties' version (`$version`).
    pub fn desired_version(&self) -> Option<u64> {
        self.properties.desired.get("$version").and_then(Value::as_u64)
    }

    /// The id of the configuration applied, if one is.
    pub fn configuration(&self) -> Option<&str> {
        self.configurations.keys().next().map(String::as_str)
    }

    /// The twin as JSON (for the drift rules, which read JSON, and for showing it whole).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Desired against reported, property by property (`twin::drift`).
    pub fn drift(&self) -> Vec<DriftRow> {
        drift(&self.sections())
    }

    /// How many desired properties the device has not caught up with.
    pub fn drift_count(&self) -> usize {
        drift_count(&self.sections())
    }

    fn sections(&self) -> Value {
        serde_json::json!({ "properties": { "desired": self.properties.desired, "reported": self.properties.reported } })
    }
}

/// What a device's live view (`/api/devices/{id}/live`) sends, one JSON text message each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum LiveEvent {
    /// The twin after a commit.
    Twin { twin: Box<Twin> },
    /// The device was deleted.
    Deleted,
    /// A stored telemetry message.
    Telemetry { message: crate::wire::StoredMessage },
}
