//! An identity as `GET /devices/{id}` renders it, and twinhub's small answers about a device.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A device or module identity: what the dashboard reads and what `PUT /devices/{id}` takes
/// back (changed) without losing anything the hub keeps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Identity {
    pub device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    pub etag: String,
    /// `enabled` or `disabled` (a module has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub status_reason: Option<String>,
    pub connection_state: String,
    pub last_activity_time: String,
    pub authentication: Authentication,
    /// The rest, as sent (`capabilities`, `managedBy`, an Azure hub's scopes, ...), sent back
    /// as read so an edit keeps it.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// How an identity authenticates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Authentication {
    /// `sas` for keys.
    #[serde(rename = "type")]
    pub kind: String,
    pub symmetric_key: SymmetricKey,
    /// The rest (`x509Thumbprint`), sent back as read.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// An identity's two keys (base64; `null` for one that uses no keys, as an Azure hub sends
/// for an X.509 device).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SymmetricKey {
    pub primary_key: Option<String>,
    pub secondary_key: Option<String>,
}

impl Identity {
    pub fn enabled(&self) -> bool {
        self.status.as_deref() == Some("enabled")
    }

    /// The primary key ("" when it has none).
    pub fn primary_key(&self) -> &str {
        self.authentication.symmetric_key.primary_key.as_deref().unwrap_or_default()
    }
}

/// `POST /twins/{id}/methods`: the device's answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MethodResult {
    pub status: i64,
    /// JSON null for no payload; a string when the device's answer was not JSON.
    pub payload: Value,
}

/// `POST /api/devices/{id}/messages`: the message queued.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MessageQueued {
    pub message_id: String,
    /// Messages waiting for the device, this one included.
    pub queued: u64,
}

/// `GET /api/session`: who a token speaks for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionInfo {
    pub policy: String,
    /// `RegistryRead`, `RegistryWrite`, `ServiceConnect`, `DeviceConnect`: those it has.
    pub permissions: Vec<String>,
    /// Upstream mode: the hub behind.
    pub upstream: Option<String>,
    /// Upstream mode: twinhub features it cannot offer, and why.
    pub unavailable: Vec<Unavailable>,
}

/// A feature upstream mode cannot offer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Unavailable {
    /// `history`, `telemetry`, `live`, `messages`, `rollouts`.
    pub feature: String,
    pub reason: String,
}

impl SessionInfo {
    pub fn may(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }

    /// Why `feature` is unavailable, if it is.
    pub fn unavailable(&self, feature: &str) -> Option<&str> {
        self.unavailable.iter().find(|u| u.feature == feature).map(|u| u.reason.as_str())
    }
}
