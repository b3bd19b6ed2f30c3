//! Device and module identities: the registry entries behind `/devices/{id}` and
//! `/devices/{id}/modules/{mid}` (spec §1.5, §3.3).
//!
//! A module is an identity of its own (keys, twin, sessions) that belongs to a device. Inside
//! twinhub each identity goes by its *key*: the device id, or `{deviceId}/{moduleId}` for a
//! module, which is also a module's MQTT client id (spec §5.2). Device ids cannot contain `/`,
//! so the key says which it is. The key names the identity's object, its fleet index row and
//! its sessions; a module is held exactly as a device is, so every twin, session and method
//! rule applies to both.

pub mod bulk;

use crate::{ErrorCode, HubError, UnixMillis};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Longest device id IoT Hub accepts.
pub const MAX_DEVICE_ID_LEN: usize = 128;

/// Checks a device id against IoT Hub's rules: 1 to 128 ASCII letters, digits and
/// `- : . + % _ # * ? ! ( ) , = @ ; $ '`.
pub fn check_device_id(id: &str) -> Result<(), HubError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-:.+%_#*?!(),=@;$'".contains(c);
    if id.is_empty() || id.len() > MAX_DEVICE_ID_LEN || !id.chars().all(ok_char) {
        return Err(HubError::new(
            ErrorCode::ArgumentInvalid,
            format!(
                "device id must be 1 to {MAX_DEVICE_ID_LEN} characters of ASCII letters, digits and -:.+%_#*?!(),=@;$' (got {} characters)",
                id.chars().count()
            ),
        ));
    }
    Ok(())
}

/// Checks a module id: the same characters and length as a device id (IoT Hub's rule).
pub fn check_module_id(id: &str) -> Result<(), HubError> {
    check_device_id(id).map_err(|e| HubError::new(e.code, e.message.replacen("device id", "module id", 1)))
}

/// The key of module `module_id` on `device_id`.
pub fn module_key(device_id: &str, module_id: &str) -> String {
    format!("{device_id}/{module_id}")
}

/// A key's device id and, for a module, its module id.
pub fn split_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once('/') {
        Some((device, module)) => (device, Some(module)),
        None => (key, None),
    }
}

/// Whether `key` is a module's (`{deviceId}/{moduleId}`): a device id never holds `/`.
pub fn is_module_key(key: &str) -> bool {
    key.contains('/')
}

/// Checks a key: a valid device id, or a valid device id and module id.
pub fn check_key(key: &str) -> Result<(), HubError> {
    let (device, module) = split_key(key);
    check_device_id(device)?;
    module.map_or(Ok(()), check_module_id)
}

/// The path below the hub that names the identity, as SAS token resources and topics spell it:
/// `devices/{id}` or `devices/{id}/modules/{mid}`.
pub fn resource_path(key: &str) -> String {
    match split_key(key) {
        (device, None) => format!("devices/{device}"),
        (device, Some(module)) => format!("devices/{device}/modules/{module}"),
    }
}

/// The segment under an identity's resource that names its live view: a token for
/// `{host}/devices/{id}/$live` opens the console's live view of that device and nothing else (no
/// REST route, device session or AMQP node is under it).
pub const LIVE_VIEW: &str = "$live";

/// The resource path of an identity's live view: `devices/{id}/$live`.
pub fn live_view_path(key: &str) -> String {
    format!("{}/{LIVE_VIEW}", resource_path(key))
}

/// Whether a device may connect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// May connect.
    #[default]
    Enabled,
    /// Refused at CONNECT.
    Disabled,
}

/// A device's registry entry, as stored. Rendered to Azure's JSON by [`DeviceIdentity::to_wire`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// Case-sensitive id.
    pub device_id: String,
    /// Distinguishes a re-created id from the one deleted before it.
    pub generation_id: String,
    /// Identity etag counter; moves on every identity update.
    pub etag: u64,
    /// Enabled or disabled.
    pub status: Status,
    /// Free text for why the status is what it is.
    pub status_reason: Option<String>,
    /// When `status` last changed (zero: never).
    pub status_updated: UnixMillis,
    /// Base64 primary key.
    pub primary_key: String,
    /// Base64 secondary key.
    pub secondary_key: String,
    /// Whether a device session is live.
    pub connected: bool,
    /// When `connected` last changed.
    pub connection_state_updated: UnixMillis,
    /// Last time the device was heard from.
    pub last_activity: UnixMillis,
    /// Whether the device is an IoT Edge device.
    pub iot_edge: bool,
    /// Cloud-to-device messages waiting for the device.
    #[serde(default)]
    pub cloud_to_device_count: u64,
    /// Set on a module's identity: its id on the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// A module's `managedBy` (free text: who deploys it, e.g. `iotEdge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// The IoT Plug and Play model the device (or module) last announced at CONNECT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// A device's modules, by id, in order: what deleting the device deletes and what the
    /// module limit counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
}

/// The most modules one device may hold (Azure's limit).
pub const MAX_MODULES_PER_DEVICE: usize = 50;

/// The longest `statusReason` IoT Hub stores.
pub const MAX_STATUS_REASON_CHARS: usize = 128;

/// The body of `PUT /devices/{id}`: every field optional, as the SDKs send different subsets.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRequest {
    /// Must match the path when present.
    pub device_id: Option<String>,
    /// Defaults to enabled.
    pub status: Option<Status>,
    /// Free text.
    pub status_reason: Option<String>,
    /// Keys; generated when absent.
    pub authentication: Option<AuthenticationRequest>,
    /// Edge flag.
    pub capabilities: Option<CapabilitiesRequest>,
    /// A module's id: must match the path when present.
    pub module_id: Option<String>,
    /// A module's `managedBy`.
    pub managed_by: Option<String>,
}

/// The longest `managedBy` twinhub stores (IoT Hub does not publish one; this bounds what a
/// client can make the hub hold).
pub const MAX_MANAGED_BY_CHARS: usize = 128;

/// `authentication` in a device request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationRequest {
    /// `sas` (the default) is the only type twinhub supports so far.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Keys; each generated when null.
    pub symmetric_key: Option<SymmetricKeyRequest>,
}

/// `authentication.symmetricKey` in a device request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKeyRequest {
    /// Base64, 16 to 64 bytes.
    pub primary_key: Option<String>,
    /// Base64, 16 to 64 bytes.
    pub secondary_key: Option<String>,
}

/// `capabilities` in a device request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilitiesRequest {
    /// IoT Edge device.
    pub iot_edge: Option<bool>,
}

impl DeviceRequest {
    /// Checks what create and update share: a body `deviceId` equal to the path's, and `sas`
    /// authentication. Returns the requested keys, if any.
    fn checked_keys(&self, key: &str) -> Result<Option<&SymmetricKeyRequest>, HubError> {
        let (id, module) = split_key(key);
        if self.device_id.as_deref().is_some_and(|body_id| body_id != id) {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                "deviceId in the body does not match the id in the path",
            ));
        }
        if self.module_id.as_deref().is_some_and(|body_id| Some(body_id) != module) {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                "moduleId in the body does not match the id in the path",
            ));
        }
        if self.managed_by.as_ref().is_some_and(|m| m.chars().count() > MAX_MANAGED_BY_CHARS) {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                format!("managedBy is longer than {MAX_MANAGED_BY_CHARS} characters"),
            ));
        }
        // IoT Hub's identity registry: "a 128 character-long string that stores the reason
        // for the device identity status".
        if let Some(reason) = &self.status_reason {
            if reason.chars().count() > MAX_STATUS_REASON_CHARS {
                return Err(HubError::new(
                    ErrorCode::ArgumentInvalid,
                    format!("statusReason is longer than {MAX_STATUS_REASON_CHARS} characters"),
                ));
            }
        }
        let auth = self.authentication.as_ref();
        if let Some(kind) = auth.and_then(|a| a.kind.as_deref()) {
            if !kind.eq_ignore_ascii_case("sas") {
                return Err(HubError::new(
                    ErrorCode::ArgumentInvalid,
                    format!("authentication type '{kind}' is not supported; use 'sas'"),
                ));
            }
        }
        Ok(auth.and_then(|a| a.symmetric_key.as_ref()))
    }

    /// Parses a request body; any JSON shape error is a 400.
    pub fn parse(body: &str) -> Result<Self, HubError> {
        serde_json::from_str(body).map_err(|e| HubError::unreadable("invalid device body", &e))
    }
}

impl DeviceIdentity {
    /// A new identity for `key` (a device id, or `{deviceId}/{moduleId}` for a module).
    /// `random` supplies key material for any key the request leaves out.
    pub fn create(key: &str, req: &DeviceRequest, now: UnixMillis, random: &[u8; 64]) -> Result<Self, HubError> {
        check_key(key)?;
        let keys = req.checked_keys(key)?;
        let (id, module_id) = split_key(key);
        let (left, right) = random.split_at(32);
        let primary = chosen_key(keys.and_then(|k| k.primary_key.as_deref()), left)?;
        let secondary = chosen_key(keys.and_then(|k| k.secondary_key.as_deref()), right)?;
        let status = req.status.unwrap_or_default();
        Ok(Self {
            device_id: id.to_owned(),
            generation_id: now.to_dotnet_ticks().to_string(),
            etag: 1,
            status,
            status_reason: req.status_reason.clone(),
            status_updated: if status == Status::Enabled { UnixMillis(0) } else { now },
            primary_key: primary,
            secondary_key: secondary,
            connected: false,
            connection_state_updated: UnixMillis(0),
            last_activity: UnixMillis(0),
            iot_edge: req.capabilities.as_ref().and_then(|c| c.iot_edge).unwrap_or(false),
            cloud_to_device_count: 0,
            module_id: module_id.map(str::to_owned),
            managed_by: req.managed_by.clone().filter(|_| module_id.is_some()),
            model_id: None,
            modules: Vec::new(),
        })
    }

    /// Applies an update (`PUT /devices/{id}` over an existing device): status, reason and any
    /// keys given. New keys take effect at once, so tokens signed with the old ones stop
    /// verifying; a disabled device is no longer connected. The identity etag moves. Checks the
    /// request fully before changing anything.
    pub fn update(&mut self, req: &DeviceRequest, now: UnixMillis) -> Result<(), HubError> {
        let keys = req.checked_keys(&self.key())?;
        // A null or empty key in an update means "keep the current one".
        let given = |k: &Option<String>| -> Result<Option<String>, HubError> {
            match k.as_deref() {
                None | Some("") => Ok(None),
                Some(k) => chosen_key(Some(k), &[]).map(Some),
            }
        };
        let (primary, secondary) = match keys {
            Some(k) => (given(&k.primary_key)?, given(&k.secondary_key)?),
            None => (None, None),
        };
        if let Some(status) = req.status {
            if status != self.status {
                self.status_updated = now;
            }
            self.status = status;
        }
        if req.status_reason.is_some() {
            self.status_reason = req.status_reason.clone();
        }
        if let Some(k) = primary {
            self.primary_key = k;
        }
        if let Some(k) = secondary {
            self.secondary_key = k;
        }
        if self.status == Status::Disabled {
            self.connected = false;
        }
        if self.module_id.is_some() && req.managed_by.is_some() {
            self.managed_by = req.managed_by.clone();
        }
        self.etag += 1;
        Ok(())
    }

    /// The identity's key: the device id, or `{deviceId}/{moduleId}`.
    pub fn key(&self) -> String {
        match &self.module_id {
            Some(module) => module_key(&self.device_id, module),
            None => self.device_id.clone(),
        }
    }

    /// The identity etag as IoT Hub prints it: base64 of the counter's decimal digits.
    pub fn etag_string(&self) -> String {
        STANDARD.encode(self.etag.to_string())
    }

    /// `"Connected"` or `"Disconnected"`.
    pub fn connection_state(&self) -> &'static str {
        if self.connected {
            "Connected"
        } else {
            "Disconnected"
        }
    }

    /// The JSON of `GET /devices/{id}` (spec §3.3), or of `GET /devices/{id}/modules/{mid}`
    /// for a module (no status or capabilities: spec §1.5), keys included: for RegistryRead
    /// callers.
    pub fn to_wire(&self) -> Value {
        if let Some(module_id) = &self.module_id {
            return json!({
                "moduleId": module_id,
                "deviceId": self.device_id,
                "managedBy": self.managed_by,
                "generationId": self.generation_id,
                "etag": self.etag_string(),
                "connectionState": self.connection_state(),
                "connectionStateUpdatedTime": self.connection_state_updated.to_iso(),
                "lastActivityTime": self.last_activity.to_iso(),
                "cloudToDeviceMessageCount": self.cloud_to_device_count,
                "authentication": {
                    "symmetricKey": { "primaryKey": self.primary_key, "secondaryKey": self.secondary_key },
                    "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null },
                    "type": "sas",
                },
            });
        }
        json!({
            "deviceId": self.device_id,
            "generationId": self.generation_id,
            "etag": self.etag_string(),
            "connectionState": self.connection_state(),
            "status": self.status,
            "statusReason": self.status_reason,
            "connectionStateUpdatedTime": self.connection_state_updated.to_iso(),
            "statusUpdatedTime": self.status_updated.to_iso(),
            "lastActivityTime": self.last_activity.to_iso(),
            "cloudToDeviceMessageCount": self.cloud_to_device_count,
            "capabilities": { "iotEdge": self.iot_edge },
            "authentication": {
                "symmetricKey": { "primaryKey": self.primary_key, "secondaryKey": self.secondary_key },
                "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null },
                "type": "sas",
            },
        })
    }
}

/// A supplied key if valid, else a fresh one from `random`.
fn chosen_key(given: Option<&str>, random: &[u8]) -> Result<String, HubError> {
    match given {
        None | Some("") => Ok(STANDARD.encode(random)),
        Some(k) => match STANDARD.decode(k) {
            Ok(bytes) if (16..=64).contains(&bytes.len()) => Ok(k.to_owned()),
            _ => Err(HubError::new(ErrorCode::ArgumentInvalid, "symmetric keys must be base64 of 16 to 64 bytes")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_generates_both_keys() {
        let d =
            DeviceIdentity::create("dev1", &DeviceRequest::default(), UnixMillis(1_700_000_000_000), &[7; 64]).unwrap();
        assert_eq!(STANDARD.decode(&d.primary_key).unwrap().len(), 32);
        assert_eq!(d.generation_id.len(), 18);
        let w = d.to_wire();
        assert_eq!(w["status"], "enabled");
        assert_eq!(w["etag"], "MQ==");
        assert_eq!(w["authentication"]["type"], "sas");
    }

    #[test]
    fn create_keeps_given_keys_and_checks_them() {
        let req = DeviceRequest::parse(
            r#"{"deviceId":"d","authentication":{"symmetricKey":{"primaryKey":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","secondaryKey":null}}}"#,
        )
        .unwrap();
        let d = DeviceIdentity::create("d", &req, UnixMillis(1), &[0; 64]).unwrap();
        assert_eq!(d.primary_key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
        let bad = DeviceRequest::parse(r#"{"authentication":{"symmetricKey":{"primaryKey":"short"}}}"#).unwrap();
        assert!(DeviceIdentity::create("d", &bad, UnixMillis(1), &[0; 64]).is_err());
    }

    #[test]
    fn status_reason_is_bounded_as_in_iot_hub() {
        let ok = DeviceRequest::parse(&format!(r#"{{"statusReason":"{}"}}"#, "é".repeat(128))).unwrap();
        assert!(DeviceIdentity::create("d", &ok, UnixMillis(1), &[1; 64]).is_ok());
        let long = DeviceRequest::parse(&format!(r#"{{"statusReason":"{}"}}"#, "a".repeat(129))).unwrap();
        let err = DeviceIdentity::create("d", &long, UnixMillis(1), &[1; 64]).unwrap_err();
        assert_eq!(err.code, ErrorCode::ArgumentInvalid);
        let mut d = DeviceIdentity::create("d", &DeviceRequest::default(), UnixMillis(1), &[1; 64]).unwrap();
        assert!(d.update(&long, UnixMillis(2)).is_err());
    }

    #[test]
    fn update_rotates_keys_and_disables() {
        let mut d = DeviceIdentity::create("d", &DeviceRequest::default(), UnixMillis(1), &[1; 64]).unwrap();
        d.connected = true;
        let old_secondary = d.secondary_key.clone();
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let req = DeviceRequest::parse(&format!(
            r#"{{"deviceId":"d","status":"disabled","authentication":{{"symmetricKey":{{"primaryKey":"{key}","secondaryKey":null}}}}}}"#
        ))
        .unwrap();
        d.update(&req, UnixMillis(9)).unwrap();
        assert_eq!((d.primary_key.as_str(), d.secondary_key.as_str()), (key, old_secondary.as_str()));
        assert_eq!((d.status, d.status_updated, d.connected, d.etag), (Status::Disabled, UnixMillis(9), false, 2));
        // A bad key or a mismatched id changes nothing.
        let before = d.clone();
        let bad =
            DeviceRequest::parse(r#"{"status":"enabled","authentication":{"symmetricKey":{"primaryKey":"short"}}}"#)
                .unwrap();
        assert!(d.update(&bad, UnixMillis(10)).is_err());
        assert!(d.update(&DeviceRequest::parse(r#"{"deviceId":"other"}"#).unwrap(), UnixMillis(10)).is_err());
        assert_eq!(d, before);
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_device_id("dev-1:a.b+c%d_e#f*g?h!i(j)k,l=m@n;o$p'q").is_ok());
        for bad in ["", "has space", "slash/", "ü", &"x".repeat(129)] {
            assert!(check_device_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn body_errors_are_400() {
        assert_eq!(DeviceRequest::parse("{not json").unwrap_err().code, ErrorCode::IotHubFormatError);
        assert_eq!(DeviceRequest::parse(r#"{"status":"sleepy"}"#).unwrap_err().code, ErrorCode::ArgumentInvalid);
    }
}
