//! Cloud-to-device messages: what the service sends, and how it is addressed (spec §5.6).

use crate::{ErrorCode, HubError};
use serde::Deserialize;
use serde_json::Value;

/// Largest message body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most messages waiting for one device.
pub const MAX_QUEUE_DEPTH: u64 = 50;
/// The longest topic a message's properties may make: MQTT's field limit.
pub const MAX_TOPIC_BYTES: usize = u16::MAX as usize;

/// A message to send, as `POST /api/devices/{id}/messages` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudToDeviceMessage {
    /// The body, sent as is (a JSON string payload is sent as its text; anything else as JSON).
    pub body: Vec<u8>,
    /// The property bag, system properties first.
    pub properties: Vec<(String, Option<String>)>,
    /// `$.mid`.
    pub message_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    properties: serde_json::Map<String, Value>,
    message_id: Option<String>,
}

impl CloudToDeviceMessage {
    /// Parses `{"payload": .., "properties": {"k": "v"}, "messageId": ".."}` for `device_id`;
    /// `generated_id` is used when no `messageId` is given.
    pub fn parse(body: &str, device_id: &str, generated_id: String) -> Result<Self, HubError> {
        let r: Request = serde_json::from_str(body).map_err(|e| {
            let code =
                if e.is_syntax() || e.is_eof() { ErrorCode::IotHubFormatError } else { ErrorCode::ArgumentInvalid };
            HubError::new(code, format!("invalid message: {e}"))
        })?;
        let body = match r.payload {
            Value::String(s) => s.into_bytes(),
            other => other.to_string().into_bytes(),
        };
        if body.len() > MAX_BODY_BYTES {
            return Err(HubError::new(
                ErrorCode::MessageTooLarge,
                format!("message body is {} bytes; at most {MAX_BODY_BYTES}", body.len()),
            ));
        }
        let message_id = r.message_id.filter(|m| !m.is_empty()).unwrap_or(generated_id);
        if message_id.len() > 128 {
            return Err(HubError::new(ErrorCode::ArgumentInvalid, "messageId is longer than 128 characters"));
        }
        let mut properties = vec![
            ("$.mid".to_owned(), Some(message_id.clone())),
            ("$.to".to_owned(), Some(format!("/devices/{device_id}/messages/deviceBound"))),
        ];
        for (k, v) in r.properties {
            if k.starts_with('$') || k.starts_with("iothub-") {
                return Err(HubError::new(ErrorCode::ArgumentInvalid, format!("property '{k}' is reserved")));
            }
            let value = match v {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            };
            properties.push((k, value));
        }
        // The properties travel in the MQTT topic, a field of at most 65,535 bytes: refused
        // here, once, rather than failing every delivery of a message that can never be sent.
        let topic = crate::session::topic::cloud_to_device(device_id, &properties).len();
        if topic > MAX_TOPIC_BYTES {
            return Err(HubError::new(
                ErrorCode::MessageTooLarge,
                format!("message properties encode to a {topic} byte topic; at most {MAX_TOPIC_BYTES}"),
            ));
        }
        Ok(Self { body, properties, message_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_that_cannot_fit_a_topic_are_refused() {
        let big = format!(r#"{{"payload":"x","properties":{{"k":"{}"}}}}"#, "v".repeat(MAX_TOPIC_BYTES));
        let e = CloudToDeviceMessage::parse(&big, "d1", "gen".into()).unwrap_err();
        assert_eq!(e.code, ErrorCode::MessageTooLarge);
    }

    #[test]
    fn parse() {
        let m = CloudToDeviceMessage::parse(
            r#"{"payload":{"cmd":"blink"},"properties":{"urgency":"high"}}"#,
            "d1",
            "gen".into(),
        )
        .unwrap();
        assert_eq!(m.body, br#"{"cmd":"blink"}"#);
        assert_eq!(m.message_id, "gen");
        assert_eq!(m.properties[1], ("$.to".to_owned(), Some("/devices/d1/messages/deviceBound".to_owned())));
        assert_eq!(m.properties[2], ("urgency".to_owned(), Some("high".to_owned())));
        assert_eq!(
            CloudToDeviceMessage::parse(r#"{"payload":"hi","messageId":"m1"}"#, "d1", "g".into()).unwrap().body,
            b"hi"
        );
        let big = format!(r#"{{"payload":"{}"}}"#, "x".repeat(MAX_BODY_BYTES + 1));
        assert_eq!(CloudToDeviceMessage::parse(&big, "d1", "g".into()).unwrap_err().code, ErrorCode::MessageTooLarge);
        assert_eq!(CloudToDeviceMessage::parse("{", "d1", "g".into()).unwrap_err().code, ErrorCode::IotHubFormatError);
        assert!(CloudToDeviceMessage::parse(r#"{"properties":{"$.mid":"x"}}"#, "d1", "g".into()).is_err());
    }
}
