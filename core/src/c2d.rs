//! Cloud-to-device messages: what the service sends, and how it is addressed (spec §5.6).

use crate::amqp::{Message as AmqpMessage, MessageBody, Value as AmqpValue};
use crate::{ErrorCode, HubError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest message body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most messages waiting for one device.
pub const MAX_QUEUE_DEPTH: u64 = 50;
/// The longest topic a message's properties may make: MQTT's field limit.
pub const MAX_TOPIC_BYTES: usize = u16::MAX as usize;

/// A message to send, as `POST /api/devices/{id}/messages` takes it, or as a service sends it
/// over AMQP to `/messages/devicebound`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
        let r: Request = serde_json::from_str(body).map_err(|e| HubError::unreadable("invalid message", &e))?;
        let body = match r.payload {
            Value::String(s) => s.into_bytes(),
            other => other.to_string().into_bytes(),
        };
        let message_id = r.message_id.filter(|m| !m.is_empty()).unwrap_or(generated_id);
        let mut user = Vec::new();
        for (k, v) in r.properties {
            let value = match v {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            };
            user.push((k, value));
        }
        Self::build(device_id, body, message_id, Vec::new(), user)
    }

    /// The message a service sent over AMQP to `/messages/devicebound`: addressed by its `to`
    /// (`/devices/{id}/messages/devicebound`, checked against `device_id`), the body its data
    /// sections (or a string value), `message-id`, `correlation-id`, `content-type`,
    /// `content-encoding`, `absolute-expiry-time` and the `iothub-ack` request as system
    /// properties, the application properties as the device sees them.
    pub fn from_amqp(message: &AmqpMessage, generated_id: String) -> Result<(String, Self), HubError> {
        let invalid = |m: String| HubError::new(ErrorCode::ArgumentInvalid, m);
        let props = message.properties.clone().unwrap_or_default();
        let to = props.to.as_deref().ok_or_else(|| {
            invalid("a cloud-to-device message needs 'to' (/devices/{id}/messages/devicebound)".into())
        })?;
        let device_id = to
            .strip_prefix("/devices/")
            .and_then(|rest| {
                rest.strip_suffix("/messages/devicebound").or_else(|| rest.strip_suffix("/messages/deviceBound"))
            })
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .ok_or_else(|| invalid(format!("'to' is '{to}'; it must be /devices/{{id}}/messages/devicebound")))?;
        let device_id = percent_encoding::percent_decode_str(device_id).decode_utf8_lossy().into_owned();
        let body = match &message.body {
            MessageBody::Data(_) => message.data().unwrap_or_default(),
            MessageBody::Value(AmqpValue::String(s)) => s.clone().into_bytes(),
            MessageBody::Value(AmqpValue::Binary(b)) => b.clone(),
            MessageBody::Empty => Vec::new(),
            _ => return Err(invalid("a cloud-to-device body is data or a string".into())),
        };
        let text = |v: &AmqpValue| match v {
            AmqpValue::String(s) | AmqpValue::Symbol(s) => Some(s.clone()),
            AmqpValue::Uuid(u) => Some(uuid_text(u)),
            AmqpValue::Ulong(n) => Some(n.to_string()),
            AmqpValue::Binary(b) => Some(String::from_utf8_lossy(b).into_owned()),
            AmqpValue::Null => None,
            other => Some(format!("{other:?}")),
        };
        let message_id = props.message_id.as_ref().and_then(text).filter(|m| !m.is_empty()).unwrap_or(generated_id);
        let mut system = Vec::new();
        if let Some(cid) = props.correlation_id.as_ref().and_then(text) {
            system.push(("$.cid".to_owned(), Some(cid)));
        }
        if let Some(ct) = props.content_type {
            system.push(("$.ct".to_owned(), Some(ct)));
        }
        if let Some(ce) = props.content_encoding {
            system.push(("$.ce".to_owned(), Some(ce)));
        }
        if let Some(expiry) = props.absolute_expiry_time {
            system.push(("$.exp".to_owned(), Some(crate::UnixMillis(u64::try_from(expiry).unwrap_or(0)).to_iso())));
        }
        let mut user = Vec::new();
        for (k, v) in &message.application_properties {
            // `iothub-ack` asks for delivery feedback; it is kept as IoT Hub keeps it.
            if k == "iothub-ack" {
                system.push(("iothub-ack".to_owned(), text(v)));
                continue;
            }
            user.push((k.clone(), text(v)));
        }
        Ok((device_id.clone(), Self::build(&device_id, body, message_id, system, user)?))
    }

    /// Checks the size, the message id and the properties, and puts the bag together: `$.mid`,
    /// `$.to`, the other system properties, then the user's.
    fn build(
        device_id: &str,
        body: Vec<u8>,
        message_id: String,
        system: Vec<(String, Option<String>)>,
        user: Vec<(String, Option<String>)>,
    ) -> Result<Self, HubError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(HubError::new(
                ErrorCode::MessageTooLarge,
                format!("message body is {} bytes; at most {MAX_BODY_BYTES}", body.len()),
            ));
        }
        if message_id.len() > 128 {
            return Err(HubError::new(ErrorCode::ArgumentInvalid, "messageId is longer than 128 characters"));
        }
        let mut properties = vec![
            ("$.mid".to_owned(), Some(message_id.clone())),
            ("$.to".to_owned(), Some(format!("/devices/{device_id}/messages/deviceBound"))),
        ];
        properties.extend(system);
        for (k, v) in user {
            if k.starts_with('$') || k.starts_with("iothub-") {
                return Err(HubError::new(ErrorCode::ArgumentInvalid, format!("property '{k}' is reserved")));
            }
            properties.push((k, v));
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

/// The content type of delivery feedback messages.
pub const FEEDBACK_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.feedback.json";

/// One delivery feedback record, as IoT Hub delivers them on
/// `/messages/servicebound/feedback` (a JSON array of these per message).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Feedback {
    pub original_message_id: String,
    pub device_id: String,
    pub device_generation_id: String,
    /// `Success` (the device completed it); `Expired`, `DeliveryCountExceeded`, `Rejected`,
    /// `Purged` are IoT Hub's others.
    pub status_code: String,
    pub description: String,
    pub enqueued_time_utc: String,
}

/// How a queued message ended, for its feedback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The device completed it.
    Completed,
    /// Its expiry passed first.
    Expired,
    /// The device rejected it.
    Rejected,
}

/// The feedback a message's end asks for, by its `iothub-ack`: `full` asks for every outcome,
/// `positive` for completions, `negative` for failures (expiry, rejection), `none` or absent
/// for nothing.
pub fn feedback(
    properties: &[(String, Option<String>)],
    outcome: Outcome,
    device_id: &str,
    generation_id: &str,
    now: crate::UnixMillis,
) -> Option<Feedback> {
    let prop = |name: &str| properties.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref());
    let (wanted, status, description) = match outcome {
        Outcome::Completed => ("positive", "Success", "Success"),
        Outcome::Expired => ("negative", "Expired", "Message Expired"),
        Outcome::Rejected => ("negative", "Rejected", "Message Rejected"),
    };
    let ack = prop("iothub-ack")?;
    if ack != "full" && ack != wanted {
        return None;
    }
    Some(Feedback {
        original_message_id: prop("$.mid").unwrap_or_default().to_owned(),
        device_id: device_id.to_owned(),
        device_generation_id: generation_id.to_owned(),
        status_code: status.into(),
        description: description.into(),
        enqueued_time_utc: now.to_iso(),
    })
}

/// Whether a queued message's `$.exp` (its sender's absolute expiry time) has passed.
pub fn is_expired(properties: &[(String, Option<String>)], now: crate::UnixMillis) -> bool {
    properties
        .iter()
        .find(|(k, _)| k == "$.exp")
        .and_then(|(_, v)| v.as_deref())
        .and_then(crate::UnixMillis::parse_iso)
        .is_some_and(|expiry| expiry <= now)
}

/// Feedback records as the message a feedback receiver gets: a JSON array, with IoT Hub's
/// content type.
pub fn feedback_message(records: &[Feedback], message_id: String) -> AmqpMessage {
    let body = serde_json::to_vec(records).unwrap_or_default();
    AmqpMessage {
        properties: Some(crate::amqp::Properties {
            message_id: Some(AmqpValue::String(message_id)),
            content_type: Some(FEEDBACK_CONTENT_TYPE.into()),
            content_encoding: Some("utf-8".into()),
            ..Default::default()
        }),
        body: MessageBody::Data(vec![body]),
        ..AmqpMessage::default()
    }
}

/// The cloud-to-device messages one session has in hand: sent and not yet acknowledged (by
/// packet id), and the highest queue seq it completed.
///
/// The device object sends its whole queue, in seq order, whenever a message is added; such a
/// list can be made just before a completion is written and reach the session just after it.
/// A message at or below the highest seq completed that is not in flight was completed by
/// this session (every earlier list held it, and it was sent and acknowledged), so it is not
/// sent again. Without this a device that completes each message as it arrives got it twice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    sent: std::collections::BTreeMap<u16, u64>,
    completed_max: u64,
}

impl InFlight {
    /// Whether the queue's message `seq` should go to the device now.
    pub fn is_new(&self, seq: u64) -> bool {
        seq > self.completed_max && !self.sent.values().any(|s| *s == seq)
    }

    /// Message `seq` went out as PUBLISH `packet_id`.
    pub fn sent(&mut self, packet_id: u16, seq: u64) {
        self.sent.insert(packet_id, seq);
    }

    /// The device acknowledged PUBLISH `packet_id`: the seq it completes, if it was one.
    pub fn acknowledged(&mut self, packet_id: u16) -> Option<u64> {
        let seq = self.sent.remove(&packet_id)?;
        self.completed_max = self.completed_max.max(seq);
        Some(seq)
    }
}

/// A UUID in its usual text form.
pub(crate) fn uuid_text(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_is_negative_feedback() {
        let props = |ack: &str| {
            vec![("$.mid".to_owned(), Some("m1".to_owned())), ("iothub-ack".to_owned(), Some(ack.to_owned()))]
        };
        let now = crate::UnixMillis(0);
        for ack in ["full", "negative"] {
            let f = feedback(&props(ack), Outcome::Rejected, "d1", "g", now).unwrap();
            assert_eq!((f.status_code.as_str(), f.original_message_id.as_str()), ("Rejected", "m1"));
        }
        assert!(feedback(&props("positive"), Outcome::Rejected, "d1", "g", now).is_none());
    }

    #[test]
    fn a_list_made_before_a_completion_sends_nothing_twice() {
        let mut session = InFlight::default();
        assert!(session.is_new(1));
        session.sent(7, 1);
        // A list [1, 2] made while 1 was in flight: only 2 is new.
        assert!(!session.is_new(1) && session.is_new(2));
        session.sent(8, 2);
        assert_eq!(session.acknowledged(7), Some(1));
        // A list [1, 2, 3] made before 1's completion was written arrives now: 1 is done,
        // 2 is in flight, 3 is new.
        assert!(!session.is_new(1) && !session.is_new(2) && session.is_new(3));
        // Completed out of order: 2 before an earlier one would still be in flight.
        assert_eq!(session.acknowledged(8), Some(2));
        assert_eq!(session.acknowledged(8), None, "a PUBACK twice completes once");
        assert!(session.is_new(3));
    }

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

    #[test]
    fn completion_feedback_follows_the_ack_asked_for() {
        let props = |ack: &str| {
            vec![("$.mid".to_owned(), Some("m1".to_owned())), ("iothub-ack".to_owned(), Some(ack.to_owned()))]
        };
        let now = crate::UnixMillis(1_764_892_800_000);
        let done = |ack: &str| feedback(&props(ack), Outcome::Completed, "d1", "g1", now);
        let expired = |ack: &str| feedback(&props(ack), Outcome::Expired, "d1", "g1", now);
        let f = done("full").unwrap();
        assert_eq!((f.original_message_id.as_str(), f.status_code.as_str()), ("m1", "Success"));
        assert!(done("positive").is_some() && done("negative").is_none() && done("none").is_none());
        assert_eq!(expired("negative").unwrap().status_code, "Expired");
        assert!(expired("full").is_some() && expired("positive").is_none());
        let mut timed = props("full");
        timed.push(("$.exp".into(), Some(crate::UnixMillis(1_000).to_iso())));
        assert!(is_expired(&timed, crate::UnixMillis(1_000)) && !is_expired(&timed, crate::UnixMillis(999)));
        assert!(!is_expired(&props("full"), now));
        let m = feedback_message(std::slice::from_ref(&f), "x".into());
        let body: Vec<Feedback> = serde_json::from_slice(&m.data().unwrap()).unwrap();
        assert_eq!(body, vec![f]);
        let json: serde_json::Value = serde_json::from_slice(&m.data().unwrap()).unwrap();
        assert_eq!(json[0]["originalMessageId"], "m1");
    }

    #[test]
    fn a_message_sent_over_amqp() {
        use crate::amqp::Properties;
        let message = AmqpMessage {
            properties: Some(Properties {
                message_id: Some(AmqpValue::Uuid([0xab; 16])),
                to: Some("/devices/d%201/messages/devicebound".into()),
                content_type: Some("application/json".into()),
                absolute_expiry_time: Some(1_764_892_800_000),
                ..Properties::default()
            }),
            application_properties: vec![
                ("iothub-ack".into(), AmqpValue::String("full".into())),
                ("urgency".into(), AmqpValue::String("high".into())),
            ],
            body: MessageBody::Data(vec![b"{\"cmd\":".to_vec(), b"\"blink\"}".to_vec()]),
            ..AmqpMessage::default()
        };
        let (device, m) = CloudToDeviceMessage::from_amqp(&message, "gen".into()).unwrap();
        assert_eq!(device, "d 1");
        assert_eq!(m.body, br#"{"cmd":"blink"}"#);
        assert_eq!(m.message_id, "abababab-abab-abab-abab-abababababab");
        let has = |k: &str, v: &str| m.properties.contains(&(k.to_owned(), Some(v.to_owned())));
        assert!(
            has("$.ct", "application/json") && has("iothub-ack", "full") && has("urgency", "high"),
            "{:?}",
            m.properties
        );
        assert!(has("$.exp", "2025-12-05T00:00:00.000Z") || m.properties.iter().any(|(k, _)| k == "$.exp"));
        for bad_to in [
            None,
            Some("/devices/d1/messages/events"),
            Some("/devices//messages/devicebound"),
            Some("/devices/a/b/messages/devicebound"),
        ] {
            let mut bad = message.clone();
            bad.properties.as_mut().unwrap().to = bad_to.map(str::to_owned);
            assert_eq!(
                CloudToDeviceMessage::from_amqp(&bad, "g".into()).unwrap_err().code,
                ErrorCode::ArgumentInvalid,
                "{bad_to:?}"
            );
        }
        let mut reserved = message.clone();
        reserved.application_properties.push(("$.mid".into(), AmqpValue::String("x".into())));
        assert!(CloudToDeviceMessage::from_amqp(&reserved, "g".into()).is_err());
        let mut big = message;
        big.body = MessageBody::Data(vec![vec![0; MAX_BODY_BYTES + 1]]);
        assert_eq!(CloudToDeviceMessage::from_amqp(&big, "g".into()).unwrap_err().code, ErrorCode::MessageTooLarge);
    }
}
