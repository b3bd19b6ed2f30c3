//! IoT Hub's built-in Event Hub-compatible endpoint: where device telemetry is read by the
//! backends (`azure-eventhub` consumers, Functions and Stream Analytics triggers, `az iot hub
//! monitor-events`). The rules, with no I/O: which partition a device's messages go to, what a
//! consumer's link address and start filter mean, how a stored event looks as an AMQP message,
//! and the `$management` node's answers.
//!
//! Choices where Azure is silent (README): a device's messages (and its modules') go to
//! partition `fnv1a(deviceId) % partitions`, so one device's events stay in order; sequence
//! numbers start at 0 in each partition and the offset is the sequence number as text (clients
//! treat offsets as opaque strings); any consumer group name is accepted and each reads the
//! whole partition (a group holds no state on the hub, as in Event Hubs); the entity path is
//! not checked against a name: the hub has one event stream.

use crate::amqp::{Descriptor, Message, MessageBody, Properties, Source, Value};
use crate::UnixMillis;
use serde::{Deserialize, Serialize};

/// Partitions when the setting is absent (IoT Hub's default for the built-in endpoint).
pub const DEFAULT_PARTITIONS: u32 = 4;
/// The most partitions (IoT Hub's maximum for the built-in endpoint).
pub const MAX_PARTITIONS: u32 = 32;
/// The entity path printed in the endpoint's connection string.
pub const ENTITY_PATH: &str = "twinhub";
/// The start filter Event Hubs consumers send (`apache.org:selector-filter:string`), described
/// by that symbol or by its code (domain 0x468C, id 4), as rhea (`@azure/event-hubs`) writes it.
const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
const SELECTOR_FILTER_CODE: u64 = 0x0000_468c_0000_0004;

/// The endpoint's connection string for a policy, as backends paste it into their Event Hubs
/// clients: the hub's `host` (with its port, if any) and the policy's own key.
pub fn connection_string(host: &str, policy: &str, key: &str) -> String {
    format!("Endpoint=sb://{host}/;SharedAccessKeyName={policy};SharedAccessKey={key};EntityPath={ENTITY_PATH}")
}

/// The partition a device's (and its modules') messages go to: FNV-1a of the device id, as
/// the fleet index places devices (`fleet::shard_of`).
pub fn partition_of(device_id: &str, partitions: u32) -> u32 {
    crate::fleet::shard_of(device_id, partitions.clamp(1, MAX_PARTITIONS))
}

/// The partition of a device's or module's key (`{deviceId}/{moduleId}`): a module's messages
/// go where its device's do.
pub fn partition_of_key(key: &str, partitions: u32) -> u32 {
    partition_of(crate::identity::split_key(key).0, partitions)
}

/// One device-to-cloud message as a partition holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub sequence_number: u64,
    pub enqueued: UnixMillis,
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
    /// The MQTT property bag as decoded: system properties (`$.mid`, `$.ct` ...) and the
    /// application's own.
    pub properties: Vec<(String, Option<String>)>,
    /// The body, as sent (base64 on the wire).
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
}

mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

impl Event {
    /// The event's offset: its sequence number as text.
    pub fn offset(&self) -> String {
        self.sequence_number.to_string()
    }

    /// The event as IoT Hub's endpoint delivers it: the body as one data section, the device's
    /// properties as application properties, its `$.mid` / `$.cid` / `$.ct` / `$.ce` as the
    /// message's properties, and the annotations consumers read (`x-opt-*`, `iothub-*`).
    pub fn to_message(&self) -> Message {
        let mut properties = Properties::default();
        let mut application = Vec::new();
        for (name, value) in &self.properties {
            let text = value.clone().unwrap_or_default();
            match name.as_str() {
                "$.mid" => properties.message_id = Some(Value::String(text)),
                "$.cid" => properties.correlation_id = Some(Value::String(text)),
                "$.ct" => properties.content_type = Some(text).filter(|t| t.is_ascii()),
                "$.ce" => properties.content_encoding = Some(text).filter(|t| t.is_ascii()),
                system if system.starts_with("$.") => {}
                user => application.push((user.to_owned(), value.clone().map(Value::String).unwrap_or(Value::Null))),
            }
        }
        let sym = Value::symbol;
        let mut annotations = vec![
            (sym("iothub-connection-device-id"), Value::String(self.device_id.clone())),
            (
                sym("iothub-connection-auth-method"),
                Value::String(
                    r#"{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#.into(),
                ),
            ),
            (sym("iothub-enqueuedtime"), Value::Timestamp(self.enqueued.0 as i64)),
            (sym("iothub-message-source"), Value::String("Telemetry".into())),
            (sym("x-opt-sequence-number"), Value::Long(self.sequence_number as i64)),
            (sym("x-opt-offset"), Value::String(self.offset())),
            (sym("x-opt-enqueued-time"), Value::Timestamp(self.enqueued.0 as i64)),
        ];
        if let Some(module) = &self.module_id {
            annotations.insert(1, (sym("iothub-connection-module-id"), Value::String(module.clone())));
        }
        let has_properties = properties != Properties::default();
        Message {
            message_annotations: annotations,
            properties: has_properties.then_some(properties),
            application_properties: application,
            body: MessageBody::Data(vec![self.body.clone()]),
            ..Message::default()
        }
    }
}

/// Where a consumer starts reading a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartPosition {
    /// The first event whose sequence number is at least this.
    Sequence(u64),
    /// The first event enqueued at or after this time (inclusive) or after it.
    Enqueued { at: UnixMillis, inclusive: bool },
    /// Only events enqueued after the link is attached (`@latest`).
    Latest,
}

/// A consumer's link address: `[amqps://host]/{entity}/ConsumerGroups/{group}/Partitions/{id}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionAddress {
    pub entity: String,
    pub consumer_group: String,
    pub partition: u32,
}

impl PartitionAddress {
    /// Reads an address; `None` when it is not a partition of a hub with `partitions`.
    pub fn parse(address: &str, partitions: u32) -> Option<Self> {
        let path = match address.split_once("://") {
            Some((_, rest)) => rest.split_once('/').map(|(_, p)| p).unwrap_or(""),
            None => address.trim_start_matches('/'),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let [entity, groups, group, partitions_word, id] = parts.as_slice() else { return None };
        if !groups.eq_ignore_ascii_case("ConsumerGroups") || !partitions_word.eq_ignore_ascii_case("Partitions") {
            return None;
        }
        let partition: u32 = id.parse().ok()?;
        if partition >= partitions.min(MAX_PARTITIONS) || entity.is_empty() || group.is_empty() {
            return None;
        }
        Some(Self { entity: (*entity).to_owned(), consumer_group: (*group).to_owned(), partition })
    }
}

/// The start position a consumer's source asks for: its selector filter, or the start of the
/// partition when it has none.
pub fn start_position(source: Option<&Source>) -> Result<StartPosition, String> {
    let Some(filter) =
        source.and_then(|s| s.filter.iter().find(|(k, _)| k.as_str() == Some(SELECTOR_FILTER)).map(|(_, v)| v))
    else {
        return Ok(StartPosition::Sequence(0));
    };
    let expression = match filter {
        Value::Described(d)
            if matches!(&d.descriptor, Descriptor::Code(SELECTOR_FILTER_CODE))
                || matches!(&d.descriptor, Descriptor::Symbol(s) if s == SELECTOR_FILTER) =>
        {
            match &d.value {
                Value::String(s) => s.clone(),
                Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
                _ => return Err("the selector filter must be a string".into()),
            }
        }
        _ => return Err("the selector filter must be described as apache.org:selector-filter:string".into()),
    };
    parse_selector(&expression)
}

/// `amqp.annotation.x-opt-offset > '-1'`, `... x-opt-sequence-number >= '5'`,
/// `... x-opt-enqueued-time > '1700000000000'`, or an offset of `@latest`.
pub fn parse_selector(expression: &str) -> Result<StartPosition, String> {
    let bad = || format!("unsupported start filter '{expression}'");
    let mut words = expression.split_whitespace();
    let (Some(field), Some(operator), Some(quoted), None) = (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(bad());
    };
    let inclusive = match operator {
        ">" => false,
        ">=" => true,
        _ => return Err(bad()),
    };
    let value = quoted.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).ok_or_else(bad)?;
    let field = field.strip_prefix("amqp.annotation.").ok_or_else(bad)?;
    let number = |v: &str| v.parse::<i64>().map_err(|_| bad());
    let after = |n: i64| {
        // `> n` starts at n + 1, `>= n` at n; below 0 is the start.
        let first = if inclusive { n } else { n.saturating_add(1) };
        StartPosition::Sequence(u64::try_from(first).unwrap_or(0))
    };
    match field {
        "x-opt-offset" if value == "@latest" => Ok(StartPosition::Latest),
        "x-opt-offset" | "x-opt-sequence-number" => Ok(after(number(value)?)),
        "x-opt-enqueued-time" => {
            Ok(StartPosition::Enqueued { at: UnixMillis(u64::try_from(number(value)?).unwrap_or(0)), inclusive })
        }
        _ => Err(bad()),
    }
}

/// A partition's figures, for `$management` and the dashboard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionInfo {
    /// The oldest sequence number held (the next one when empty).
    pub begin_sequence_number: u64,
    /// The newest sequence number, if any event was ever enqueued.
    pub last_sequence_number: Option<u64>,
    pub last_enqueued: Option<UnixMillis>,
    /// Whether the partition holds no event now.
    pub empty: bool,
}

/// What a `$management` request asks (`operation` READ).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagementRequest {
    /// `type` `com.microsoft:eventhub`: the hub's name and partitions.
    EventHub { name: String },
    /// `type` `com.microsoft:partition`: one partition's figures.
    Partition { name: String, partition: u32 },
}

/// A management request's answer, or its status and description.
pub type ManagementError = (i32, String);

/// Reads a `$management` request.
pub fn management_request(message: &Message, partitions: u32) -> Result<ManagementRequest, ManagementError> {
    let prop =
        |name: &str| message.application_properties.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_str());
    if prop("operation") != Some("READ") {
        return Err((400, format!("unsupported operation {:?}", prop("operation").unwrap_or(""))));
    }
    let name = prop("name").unwrap_or(ENTITY_PATH).to_owned();
    match prop("type") {
        Some("com.microsoft:eventhub") => Ok(ManagementRequest::EventHub { name }),
        Some("com.microsoft:partition") => {
            let partition = prop("partition").and_then(|p| p.parse::<u32>().ok());
            match partition {
                Some(p) if p < partitions => Ok(ManagementRequest::Partition { name, partition: p }),
                _ => Err((404, format!("no partition {:?}", prop("partition").unwrap_or("")))),
            }
        }
        other => Err((400, format!("unsupported type {:?}", other.unwrap_or("")))),
    }
}

/// The answer to [`ManagementRequest::EventHub`].
pub fn eventhub_properties(name: &str, created: UnixMillis, partitions: u32) -> Value {
    let ids = (0..partitions).map(|p| Value::String(p.to_string())).collect();
    Value::Map(vec![
        (Value::String("name".into()), Value::String(name.to_owned())),
        (Value::String("type".into()), Value::String("com.microsoft:eventhub".into())),
        (Value::String("created_at".into()), Value::Timestamp(created.0 as i64)),
        (Value::String("partition_count".into()), Value::Int(partitions as i32)),
        (Value::String("partition_ids".into()), Value::Array(ids)),
    ])
}

/// The answer to [`ManagementRequest::Partition`].
pub fn partition_properties(name: &str, partition: u32, info: &PartitionInfo) -> Value {
    let last = info.last_sequence_number.map(|n| n as i64).unwrap_or(-1);
    let s = |k: &str| Value::String(k.to_owned());
    Value::Map(vec![
        (s("name"), s(name)),
        (s("type"), s("com.microsoft:partition")),
        (s("partition"), Value::String(partition.to_string())),
        (s("begin_sequence_number"), Value::Long(info.begin_sequence_number as i64)),
        (s("last_enqueued_sequence_number"), Value::Long(last)),
        (s("last_enqueued_offset"), Value::String(last.to_string())),
        (s("last_enqueued_time_utc"), Value::Timestamp(info.last_enqueued.map(|t| t.0 as i64).unwrap_or(0))),
        (s("is_partition_empty"), Value::Bool(info.empty)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_spread_over_partitions_and_keep_theirs() {
        let mut seen = [0; 4];
        for i in 0..1000 {
            seen[partition_of(&format!("device-{i}"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 150), "{seen:?}");
        assert_eq!(partition_of("thermostat-1", 4), partition_of("thermostat-1", 4));
        assert_eq!(partition_of("x", 0), 0);
    }

    #[test]
    fn start_filters_as_the_event_hubs_clients_write_them() {
        let cases = [
            ("amqp.annotation.x-opt-offset > '-1'", StartPosition::Sequence(0)),
            ("amqp.annotation.x-opt-offset > '41'", StartPosition::Sequence(42)),
            ("amqp.annotation.x-opt-offset >= '41'", StartPosition::Sequence(41)),
            ("amqp.annotation.x-opt-sequence-number > '7'", StartPosition::Sequence(8)),
            ("amqp.annotation.x-opt-offset > '@latest'", StartPosition::Latest),
            (
                "amqp.annotation.x-opt-enqueued-time > '1700000000000'",
                StartPosition::Enqueued { at: UnixMillis(1_700_000_000_000), inclusive: false },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_selector(text), Ok(expected), "{text}");
        }
        for bad in [
            "",
            "amqp.annotation.x-opt-offset = '1'",
            "x-opt-offset > '1'",
            "amqp.annotation.x-opt-offset > 1",
            "amqp.annotation.x-opt-offset > 'a'",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
        // The filter value as @azure/event-hubs 6 (rhea 3) encodes it: described by the ulong
        // 0x468C00000004, the expression a str8.
        let expression = b"amqp.annotation.x-opt-offset > '3'";
        let mut bytes = vec![0x00, 0x80, 0x00, 0x00, 0x46, 0x8c, 0x00, 0x00, 0x00, 0x04, 0xa1, expression.len() as u8];
        bytes.extend_from_slice(expression);
        let by_code = crate::amqp::types::decode(&bytes).unwrap();
        let by_symbol = Value::described(
            Descriptor::Symbol(SELECTOR_FILTER.into()),
            Value::String("amqp.annotation.x-opt-offset > '3'".into()),
        );
        for filter in [by_code, by_symbol] {
            let source = Source { address: None, filter: vec![(Value::symbol(SELECTOR_FILTER), filter)] };
            assert_eq!(start_position(Some(&source)), Ok(StartPosition::Sequence(4)));
        }
        assert_eq!(start_position(None), Ok(StartPosition::Sequence(0)));
    }

    #[test]
    fn partition_addresses() {
        let a =
            PartitionAddress::parse("amqps://hub.local:5671/twinhub/ConsumerGroups/$Default/Partitions/3", 4).unwrap();
        assert_eq!((a.entity.as_str(), a.consumer_group.as_str(), a.partition), ("twinhub", "$Default", 3));
        assert!(PartitionAddress::parse("twinhub/consumergroups/ops/partitions/0", 4).is_some());
        for bad in
            ["twinhub/ConsumerGroups/$Default/Partitions/4", "twinhub/ConsumerGroups/$Default", "$cbs", "/a/b/c/d/e"]
        {
            assert!(PartitionAddress::parse(bad, 4).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_event_carries_what_consumers_read() {
        let event = Event {
            sequence_number: 9,
            enqueued: UnixMillis(1_764_892_800_000),
            device_id: "thermostat-1".into(),
            module_id: None,
            properties: vec![
                ("alert".into(), Some("high_temperature".into())),
                ("$.ct".into(), Some("application/json".into())),
            ],
            body: br#"{"temperature":31}"#.to_vec(),
        };
        let m = event.to_message();
        assert_eq!(m.application_properties, vec![("alert".to_owned(), Value::String("high_temperature".into()))]);
        assert_eq!(m.properties.as_ref().and_then(|p| p.content_type.as_deref()), Some("application/json"));
        let annotation =
            |k: &str| m.message_annotations.iter().find(|(n, _)| n.as_str() == Some(k)).map(|(_, v)| v.clone());
        assert_eq!(annotation("x-opt-sequence-number"), Some(Value::Long(9)));
        assert_eq!(annotation("x-opt-offset"), Some(Value::String("9".into())));
        assert_eq!(annotation("iothub-connection-device-id"), Some(Value::String("thermostat-1".into())));
        assert_eq!(Message::decode(&m.encode().unwrap()).unwrap(), m);
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
    }

    #[test]
    fn management_requests() {
        let request = |props: &[(&str, &str)]| Message {
            application_properties: props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect(),
            ..Message::default()
        };
        let hub = request(&[("operation", "READ"), ("type", "com.microsoft:eventhub"), ("name", "twinhub")]);
        assert_eq!(management_request(&hub, 4), Ok(ManagementRequest::EventHub { name: "twinhub".into() }));
        let p = request(&[
            ("operation", "READ"),
            ("type", "com.microsoft:partition"),
            ("name", "twinhub"),
            ("partition", "2"),
        ]);
        assert_eq!(
            management_request(&p, 4),
            Ok(ManagementRequest::Partition { name: "twinhub".into(), partition: 2 })
        );
        let missing = request(&[("operation", "READ"), ("type", "com.microsoft:partition"), ("partition", "9")]);
        assert_eq!(management_request(&missing, 4).unwrap_err().0, 404);
        assert_eq!(management_request(&request(&[("operation", "DELETE")]), 4).unwrap_err().0, 400);
        let Value::Map(props) = eventhub_properties("twinhub", UnixMillis(1), 2) else { panic!() };
        assert!(props.contains(&(
            Value::String("partition_ids".into()),
            Value::Array(vec![Value::String("0".into()), Value::String("1".into())])
        )));
    }
}
