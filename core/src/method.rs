//! Direct methods: the `POST /twins/{id}/methods` request (spec §3.5).

use crate::{ErrorCode, HubError};
use serde::Deserialize;
use serde_json::Value;

/// Shortest and longest response timeout, seconds.
pub const RESPONSE_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 5..=300;
/// Default response timeout, seconds.
pub const DEFAULT_RESPONSE_TIMEOUT: u64 = 30;
/// Largest payload, request or response.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// A validated method invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodCall {
    /// The method's name.
    pub name: String,
    /// The JSON payload sent to the device.
    pub payload: Value,
    /// How long to wait for the device's answer, seconds.
    pub response_timeout_secs: u64,
    /// How long to wait for an offline device to connect, seconds (0: it must be online).
    pub connect_timeout_secs: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    method_name: Option<String>,
    #[serde(default)]
    payload: Value,
    response_timeout_in_seconds: Option<u64>,
    connect_timeout_in_seconds: Option<u64>,
}

impl MethodCall {
    /// Parses a CloudToDeviceMethod body.
    pub fn parse(body: &str) -> Result<Self, HubError> {
        let b: Body = serde_json::from_str(body).map_err(|e| HubError::unreadable("invalid method request", &e))?;
        let name = b
            .method_name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| HubError::new(ErrorCode::ArgumentNull, "methodName is required"))?;
        // US-ASCII printable, excluding the separators the docs list.
        let bad = |c: char| !c.is_ascii_graphic() || "$()<>@,;:\\\"/[]?={}".contains(c);
        if name.len() > 128 || name.chars().any(bad) {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                format!(
                    "invalid methodName '{}': printable ASCII without $()<>@,;:\\\"/[]?={{}} or spaces",
                    name.chars().take(64).collect::<String>()
                ),
            ));
        }
        let response_timeout_secs = b.response_timeout_in_seconds.unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
        if !RESPONSE_TIMEOUT_RANGE.contains(&response_timeout_secs) {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                format!("responseTimeoutInSeconds must be 5 to 300, not {response_timeout_secs}"),
            ));
        }
        let connect_timeout_secs = b.connect_timeout_in_seconds.unwrap_or(0);
        if connect_timeout_secs > 300 {
            return Err(HubError::new(ErrorCode::ArgumentInvalid, "connectTimeoutInSeconds must be 0 to 300"));
        }
        if b.payload.to_string().len() > MAX_PAYLOAD_BYTES {
            return Err(HubError::new(ErrorCode::MessageTooLarge, "method payload exceeds 128 KB"));
        }
        Ok(Self { name, payload: b.payload, response_timeout_secs, connect_timeout_secs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let m = MethodCall::parse(r#"{"methodName":"reboot","payload":{"delay":1},"responseTimeoutInSeconds":10}"#)
            .unwrap();
        assert_eq!((m.name.as_str(), m.response_timeout_secs, m.connect_timeout_secs), ("reboot", 10, 0));
        assert_eq!(MethodCall::parse(r#"{"methodName":"getConfig"}"#).unwrap().payload, Value::Null);
        for (bad, code) in [
            ("{", ErrorCode::IotHubFormatError),
            ("{}", ErrorCode::ArgumentNull),
            (r#"{"methodName":"a b"}"#, ErrorCode::ArgumentInvalid),
            (r#"{"methodName":"a/b"}"#, ErrorCode::ArgumentInvalid),
            (r#"{"methodName":"x","responseTimeoutInSeconds":4}"#, ErrorCode::ArgumentInvalid),
            (r#"{"methodName":"x","responseTimeoutInSeconds":301}"#, ErrorCode::ArgumentInvalid),
        ] {
            assert_eq!(MethodCall::parse(bad).unwrap_err().code, code, "{bad}");
        }
    }
}
