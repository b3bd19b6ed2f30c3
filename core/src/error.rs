//! IoT Hub error codes and the error envelope the service SDKs parse (spec §3.7).
//!
//! Every failure twinhub reports to a client, over REST or MQTT, is a [`HubError`]: a six-digit
//! [`ErrorCode`] plus a human message. The HTTP status is derived from the code (`code / 1000`),
//! so the two can never disagree.

use serde::Serialize;

/// IoT Hub's six-digit error codes, in the order of the spec's table (§3.7).
/// The wire name (for the `iothub-errorcode` header) and the HTTP status are derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400004: a bad argument (twin key, value, size, body shape).
    ArgumentInvalid,
    /// 400005: a required argument is missing.
    ArgumentNull,
    /// 400006: the body is not parsable JSON.
    IotHubFormatError,
    /// 401002: bad, expired or wrongly scoped SAS token.
    IotHubUnauthorizedAccess,
    /// 403002: the hub's daily message quota is used up.
    IotHubQuotaExceeded,
    /// 403004: more than 50 cloud-to-device messages waiting for one device.
    DeviceMaximumQueueDepthExceeded,
    /// 403010: a device holds as many modules as it may (the code as the C# service SDK's
    /// `ErrorCode` lists it).
    TooManyModulesOnDevice,
    /// 404001: no device with that id.
    DeviceNotFound,
    /// 404010: no module with that id on the device.
    ModuleNotFound,
    /// 404103: a direct method to a device that is offline or not listening for methods.
    DeviceNotOnline,
    /// 404: no configuration with that id (IoT Hub's code for it is not published; twinhub
    /// uses 404020).
    ConfigurationNotFound,
    /// 404002: no job with that id.
    JobNotFound,
    /// 404000 (twinhub): no such route.
    NotFound,
    /// 405000 (twinhub): the route exists but not with that method.
    MethodNotAllowed,
    /// 409001: create over an existing device id.
    DeviceAlreadyExists,
    /// 409301: create over an existing module id.
    ModuleAlreadyExistsOnDevice,
    /// 409: a configuration with that id exists (twinhub's 409020; Azure's is not published).
    ConfigurationAlreadyExists,
    /// 409104: a job with that id exists already (code as spec §3.6 gives it, marked unsure there).
    JobAlreadyExists,
    /// 410000 (twinhub, between its own objects only): the op came from a device session that
    /// is no longer the device's (deleted, disabled, re-keyed, connected again elsewhere); the
    /// gateway ends that session. Never sent to a client.
    SessionEnded,
    /// 412001: `If-Match` did not match the current etag.
    PreconditionFailed,
    /// 413001: a body over the size limit.
    MessageTooLarge,
    /// 413002: a bulk registry request with more than 100 devices.
    TooManyDevices,
    /// 429001: over a rate limit; back off and retry.
    ThrottlingException,
    /// 500001: a fault of ours.
    ServerError,
    /// 501001 (twinhub): a twinhub feature that upstream mode cannot offer.
    FeatureUnavailable,
    /// 503001: a dependency (storage, upstream) is unavailable.
    ServiceUnavailable,
    /// 504101: the device did not answer a direct method in time.
    GatewayTimeout,
}

impl ErrorCode {
    /// The six-digit code.
    pub fn code(self) -> u32 {
        match self {
            Self::ArgumentInvalid => 400_004,
            Self::ArgumentNull => 400_005,
            Self::IotHubFormatError => 400_006,
            Self::IotHubUnauthorizedAccess => 401_002,
            Self::IotHubQuotaExceeded => 403_002,
            Self::DeviceMaximumQueueDepthExceeded => 403_004,
            Self::TooManyModulesOnDevice => 403_010,
            Self::DeviceNotFound => 404_001,
            Self::ModuleNotFound => 404_010,
            Self::DeviceNotOnline => 404_103,
            Self::JobNotFound => 404_002,
            Self::ConfigurationNotFound => 404_020,
            Self::NotFound => 404_000,
            Self::MethodNotAllowed => 405_000,
            Self::DeviceAlreadyExists => 409_001,
            Self::ModuleAlreadyExistsOnDevice => 409_301,
            Self::JobAlreadyExists => 409_104,
            Self::ConfigurationAlreadyExists => 409_020,
            Self::SessionEnded => 410_000,
            Self::PreconditionFailed => 412_001,
            Self::MessageTooLarge => 413_001,
            Self::TooManyDevices => 413_002,
            Self::ThrottlingException => 429_001,
            Self::ServerError => 500_001,
            Self::FeatureUnavailable => 501_001,
            Self::ServiceUnavailable => 503_001,
            Self::GatewayTimeout => 504_101,
        }
    }

    /// Every code, for reading one back ([`ErrorCode::from_code`]).
    const ALL: [Self; 27] = [
        Self::ArgumentInvalid,
        Self::ArgumentNull,
        Self::IotHubFormatError,
        Self::IotHubUnauthorizedAccess,
        Self::IotHubQuotaExceeded,
        Self::DeviceMaximumQueueDepthExceeded,
        Self::TooManyModulesOnDevice,
        Self::DeviceNotFound,
        Self::ModuleNotFound,
        Self::DeviceNotOnline,
        Self::JobNotFound,
        Self::ConfigurationNotFound,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::DeviceAlreadyExists,
        Self::ModuleAlreadyExistsOnDevice,
        Self::JobAlreadyExists,
        Self::ConfigurationAlreadyExists,
        Self::SessionEnded,
        Self::PreconditionFailed,
        Self::MessageTooLarge,
        Self::TooManyDevices,
        Self::ThrottlingException,
        Self::ServerError,
        Self::FeatureUnavailable,
        Self::ServiceUnavailable,
        Self::GatewayTimeout,
    ];

    /// The code with this six-digit number, if twinhub has it.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The HTTP status: IoT Hub codes are `status * 1000 + n`.
    pub fn http_status(self) -> u16 {
        // Every code above is in 100_000..=599_999, so the quotient fits.
        u16::try_from(self.code() / 1000).unwrap_or(500)
    }

    /// The name sent in the `iothub-errorcode` header and the classic `ErrorCode:<Name>;` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Self::ArgumentInvalid => "ArgumentInvalid",
            Self::ArgumentNull => "ArgumentNull",
            Self::IotHubFormatError => "IotHubFormatError",
            Self::IotHubUnauthorizedAccess => "IotHubUnauthorizedAccess",
            Self::IotHubQuotaExceeded => "IotHubQuotaExceeded",
            Self::DeviceMaximumQueueDepthExceeded => "DeviceMaximumQueueDepthExceeded",
            Self::TooManyModulesOnDevice => "TooManyModulesOnDevice",
            Self::DeviceNotFound => "DeviceNotFound",
            Self::ModuleNotFound => "ModuleNotFound",
            Self::DeviceNotOnline => "DeviceNotOnline",
            Self::JobNotFound => "JobNotFound",
            Self::ConfigurationNotFound => "ConfigurationNotFound",
            Self::NotFound => "NotFound",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::DeviceAlreadyExists => "DeviceAlreadyExists",
            Self::ModuleAlreadyExistsOnDevice => "ModuleAlreadyExistsOnDevice",
            Self::JobAlreadyExists => "JobAlreadyExists",
            Self::ConfigurationAlreadyExists => "ConfigurationAlreadyExists",
            Self::SessionEnded => "SessionEnded",
            Self::PreconditionFailed => "PreconditionFailed",
            Self::MessageTooLarge => "MessageTooLarge",
            Self::TooManyDevices => "TooManyDevices",
            Self::ThrottlingException => "ThrottlingException",
            Self::ServerError => "ServerError",
            Self::FeatureUnavailable => "FeatureUnavailable",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::GatewayTimeout => "GatewayTimeout",
        }
    }
}

/// A failure to report to a client: what went wrong (the code) and a message for a person.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {message}", code.name(), code.code())]
pub struct HubError {
    /// The IoT Hub code, which fixes the HTTP status.
    pub code: ErrorCode,
    /// Human text; never contains a key or token.
    pub message: String,
}

impl HubError {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// A request body that did not read as `what` (the message's start): 400006
    /// IotHubFormatError when it is not JSON at all, 400004 ArgumentInvalid when its shape or
    /// values are wrong.
    pub fn unreadable(what: &str, e: &serde_json::Error) -> Self {
        let code = if e.is_syntax() || e.is_eof() { ErrorCode::IotHubFormatError } else { ErrorCode::ArgumentInvalid };
        Self::new(code, format!("{what}: {e}"))
    }

    /// The REST body, envelope 2 of spec §3.7: a `Message` string holding the flat JSON error.
    /// Satisfies the C# v1 parser (numeric `errorCode` inside `Message`), C# v2, Node, Java and
    /// Python (which reads only the status).
    pub fn envelope(&self, tracking_id: &str, now: crate::UnixMillis) -> String {
        let inner = FlatError {
            error_code: self.code.code(),
            tracking_id,
            message: &self.message,
            info: serde_json::Map::new(),
            timestamp_utc: now.to_iso(),
        };
        let outer = Envelope { message: serde_json::to_string(&inner).unwrap_or_default(), exception_message: "" };
        serde_json::to_string(&outer).unwrap_or_default()
    }

    /// Reads back what [`HubError::envelope`] wrote (an object's answer to another part of the
    /// hub); `None` when the body is not an envelope with a code twinhub has.
    pub fn from_envelope(body: &str) -> Option<Self> {
        let outer: serde_json::Value = serde_json::from_str(body).ok()?;
        let inner: serde_json::Value = serde_json::from_str(outer["Message"].as_str()?).ok()?;
        let code = ErrorCode::from_code(u32::try_from(inner["errorCode"].as_u64()?).ok()?)?;
        Some(Self::new(code, inner["message"].as_str().unwrap_or_default()))
    }

    /// The flat body (envelope 3) used on MQTT twin error responses.
    pub fn flat(&self, tracking_id: &str, now: crate::UnixMillis) -> String {
        let inner = FlatError {
            error_code: self.code.code(),
            tracking_id,
            message: &self.message,
            info: serde_json::Map::new(),
            timestamp_utc: now.to_iso(),
        };
        serde_json::to_string(&inner).unwrap_or_default()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FlatError<'a> {
    error_code: u32,
    tracking_id: &'a str,
    message: &'a str,
    info: serde_json::Map<String, serde_json::Value>,
    timestamp_utc: String,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "ExceptionMessage")]
    exception_message: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UnixMillis;

    #[test]
    fn status_follows_code() {
        assert_eq!(ErrorCode::PreconditionFailed.http_status(), 412);
        assert_eq!(ErrorCode::IotHubUnauthorizedAccess.http_status(), 401);
        assert_eq!(ErrorCode::DeviceNotFound.http_status(), 404);
    }

    #[test]
    fn envelope_nests_flat_error_in_message() {
        let e = HubError::new(ErrorCode::DeviceNotFound, "Device dev1 not found");
        let body: serde_json::Value = serde_json::from_str(&e.envelope("abc", UnixMillis(1_700_000_000_000))).unwrap();
        let inner: serde_json::Value = serde_json::from_str(body["Message"].as_str().unwrap()).unwrap();
        assert_eq!(inner["errorCode"], 404_001);
        assert_eq!(inner["trackingId"], "abc");
        assert_eq!(inner["message"], "Device dev1 not found");
        assert_eq!(body["ExceptionMessage"], "");
        assert_eq!(HubError::from_envelope(&e.envelope("abc", UnixMillis(1))), Some(e));
        assert_eq!(HubError::from_envelope("{}"), None);
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
    }
}
