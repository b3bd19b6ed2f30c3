//! The AMQP 1.0 message format (spec 3.2): the sections of a transfer's payload, read in the
//! order the spec fixes and written back the same way.

use super::fields::{self, composite, opt};
use super::performative::described;
use super::types::{Reader, Value};
use super::{DecodeError, EncodeError};

/// Section descriptor codes (3.2).
mod code {
    pub const HEADER: u64 = 0x70;
    pub const DELIVERY_ANNOTATIONS: u64 = 0x71;
    pub const MESSAGE_ANNOTATIONS: u64 = 0x72;
    pub const PROPERTIES: u64 = 0x73;
    pub const APPLICATION_PROPERTIES: u64 = 0x74;
    pub const DATA: u64 = 0x75;
    pub const AMQP_SEQUENCE: u64 = 0x76;
    pub const AMQP_VALUE: u64 = 0x77;
    pub const FOOTER: u64 = 0x78;
}

/// `header` (3.2.1).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Header {
    pub durable: bool,
    pub priority: Option<u8>,
    /// Milliseconds.
    pub ttl: Option<u32>,
    pub first_acquirer: bool,
    pub delivery_count: u32,
}

/// `properties` (3.2.4).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Properties {
    /// `message-id-ulong`, `-uuid`, `-binary` or `-string` (3.2.11-14).
    pub message_id: Option<Value>,
    pub user_id: Option<Vec<u8>>,
    pub to: Option<String>,
    pub subject: Option<String>,
    pub reply_to: Option<String>,
    pub correlation_id: Option<Value>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// Milliseconds since the epoch.
    pub absolute_expiry_time: Option<i64>,
    pub creation_time: Option<i64>,
    pub group_id: Option<String>,
    pub group_sequence: Option<u32>,
    pub reply_to_group_id: Option<String>,
}

/// The body (3.2): data sections, sequence sections, or one value.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Body {
    /// No body section.
    #[default]
    Empty,
    /// One or more `data` sections (3.2.6): the usual body of IoT Hub messages.
    Data(Vec<Vec<u8>>),
    /// One or more `amqp-sequence` sections (3.2.7).
    Sequence(Vec<Vec<Value>>),
    /// One `amqp-value` section (3.2.8).
    Value(Value),
}

/// A message.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Message {
    pub header: Option<Header>,
    pub delivery_annotations: Vec<(Value, Value)>,
    /// `x-opt-*` annotations (3.2.3): symbol keys.
    pub message_annotations: Vec<(Value, Value)>,
    pub properties: Option<Properties>,
    /// `application-properties` (3.2.5): string keys, simple values.
    pub application_properties: Vec<(String, Value)>,
    pub body: Body,
    pub footer: Vec<(Value, Value)>,
}

impl Message {
    /// The body's bytes when it is data sections (joined), as IoT Hub messages carry it.
    pub fn data(&self) -> Option<Vec<u8>> {
        match &self.body {
            Body::Data(parts) => Some(parts.concat()),
            _ => None,
        }
    }

    /// Reads a message from a transfer's payload (all its transfers joined).
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(payload);
        let mut message = Message::default();
        // Each section's rank; sections must come in rank order, each at most once except the
        // repeatable body sections.
        let mut last_rank = 0u8;
        while !reader.is_empty() {
            let (c, value) = described(reader.value()?, "message section")?;
            let rank = match c {
                code::HEADER => 1,
                code::DELIVERY_ANNOTATIONS => 2,
                code::MESSAGE_ANNOTATIONS => 3,
                code::PROPERTIES => 4,
                code::APPLICATION_PROPERTIES => 5,
                code::DATA | code::AMQP_SEQUENCE | code::AMQP_VALUE => 6,
                code::FOOTER => 7,
                _ => return Err(section_error("(descriptor)", "is not a message section")),
            };
            let repeated_body = rank == 6 && last_rank == 6;
            if rank < last_rank || (rank == last_rank && !repeated_body) {
                return Err(section_error("(order)", "sections out of the order of section 3.2"));
            }
            last_rank = rank;
            match c {
                code::HEADER => {
                    let mut f = composite("header", value)?;
                    message.header = Some(Header {
                        durable: f.opt_bool("durable")?.unwrap_or(false),
                        priority: f.opt_ubyte("priority")?,
                        ttl: f.opt_uint("ttl")?,
                        first_acquirer: f.opt_bool("first-acquirer")?.unwrap_or(false),
                        delivery_count: f.opt_uint("delivery-count")?.unwrap_or(0),
                    });
                }
                code::DELIVERY_ANNOTATIONS => message.delivery_annotations = annotations(value)?,
                code::MESSAGE_ANNOTATIONS => message.message_annotations = annotations(value)?,
                code::PROPERTIES => message.properties = Some(read_properties(value)?),
                code::APPLICATION_PROPERTIES => message.application_properties = application_properties(value)?,
                code::DATA => match (&mut message.body, value) {
                    (Body::Empty, Value::Binary(b)) => message.body = Body::Data(vec![b]),
                    (Body::Data(parts), Value::Binary(b)) => parts.push(b),
                    (_, Value::Binary(_)) => return Err(section_error("data", "mixed with other body sections")),
                    _ => return Err(section_error("data", "must be binary")),
                },
                code::AMQP_SEQUENCE => match (&mut message.body, value) {
                    (Body::Empty, Value::List(items)) => message.body = Body::Sequence(vec![items]),
                    (Body::Sequence(parts), Value::List(items)) => parts.push(items),
                    (_, Value::List(_)) => {
                        return Err(section_error("amqp-sequence", "mixed with other body sections"))
                    }
                    _ => return Err(section_error("amqp-sequence", "must be a list")),
                },
                code::AMQP_VALUE => match message.body {
                    Body::Empty => message.body = Body::Value(value),
                    _ => return Err(section_error("amqp-value", "appears with other body sections")),
                },
                _ => message.footer = annotations(value)?,
            }
        }
        Ok(message)
    }

    /// The message as a transfer's payload.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        let section =
            |c: u64, v: Value, out: &mut Vec<u8>| Value::described(super::types::Descriptor::Code(c), v).encode(out);
        if let Some(h) = &self.header {
            fields::write(
                code::HEADER,
                vec![
                    flag(h.durable),
                    opt(h.priority, Value::Ubyte),
                    opt(h.ttl, Value::Uint),
                    flag(h.first_acquirer),
                    if h.delivery_count == 0 { Value::Null } else { Value::Uint(h.delivery_count) },
                ],
            )
            .encode(&mut out)?;
        }
        if !self.delivery_annotations.is_empty() {
            section(code::DELIVERY_ANNOTATIONS, Value::Map(self.delivery_annotations.clone()), &mut out)?;
        }
        if !self.message_annotations.is_empty() {
            section(code::MESSAGE_ANNOTATIONS, Value::Map(self.message_annotations.clone()), &mut out)?;
        }
        if let Some(p) = &self.properties {
            write_properties(p).encode(&mut out)?;
        }
        if !self.application_properties.is_empty() {
            let pairs =
                self.application_properties.iter().map(|(k, v)| (Value::String(k.clone()), v.clone())).collect();
            section(code::APPLICATION_PROPERTIES, Value::Map(pairs), &mut out)?;
        }
        match &self.body {
            Body::Empty => {}
            Body::Data(parts) => {
                for p in parts {
                    section(code::DATA, Value::Binary(p.clone()), &mut out)?;
                }
            }
            Body::Sequence(parts) => {
                for p in parts {
                    section(code::AMQP_SEQUENCE, Value::List(p.clone()), &mut out)?;
                }
            }
            Body::Value(v) => section(code::AMQP_VALUE, v.clone(), &mut out)?,
        }
        if !self.footer.is_empty() {
            section(code::FOOTER, Value::Map(self.footer.clone()), &mut out)?;
        }
        Ok(out)
    }
}

fn section_error(field: &'static str, problem: &'static str) -> DecodeError {
    DecodeError::Field { performative: "message", field, problem }
}

fn flag(b: bool) -> Value {
    if b {
        Value::Bool(true)
    } else {
        Value::Null
    }
}

/// Annotations (3.2.10): a map whose keys are symbols or ulongs.
fn annotations(value: Value) -> Result<Vec<(Value, Value)>, DecodeError> {
    match value {
        Value::Map(pairs) => {
            if pairs.iter().any(|(k, _)| !matches!(k, Value::Symbol(_) | Value::Ulong(_))) {
                return Err(section_error("annotations", "keys must be symbols or ulongs"));
            }
            Ok(pairs)
        }
        _ => Err(section_error("annotations", "must be a map")),
    }
}

/// Application properties (3.2.5): string keys, values of simple types (no map, list, array
/// or described value).
fn application_properties(value: Value) -> Result<Vec<(String, Value)>, DecodeError> {
    let Value::Map(pairs) = value else { return Err(section_error("application-properties", "must be a map")) };
    pairs
        .into_iter()
        .map(|(k, v)| match (k, &v) {
            (_, Value::Map(_) | Value::List(_) | Value::Array(_) | Value::Described(_)) => {
                Err(section_error("application-properties", "values must be of simple types"))
            }
            (Value::String(k), _) => Ok((k, v)),
            _ => Err(section_error("application-properties", "keys must be strings")),
        })
        .collect()
}

/// A `message-id-*` (3.2.11-14).
fn message_id(v: Value, field: &'static str) -> Result<Option<Value>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::Ulong(_) | Value::Uuid(_) | Value::Binary(_) | Value::String(_) => Ok(Some(v)),
        _ => Err(DecodeError::Field {
            performative: "properties",
            field,
            problem: "must be a ulong, uuid, binary or string",
        }),
    }
}

fn timestamp(v: Value, field: &'static str) -> Result<Option<i64>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::Timestamp(t) => Ok(Some(t)),
        _ => Err(DecodeError::Field { performative: "properties", field, problem: "must be a timestamp" }),
    }
}

fn read_properties(value: Value) -> Result<Properties, DecodeError> {
    let mut f = composite("properties", value)?;
    Ok(Properties {
        message_id: message_id(f.any("message-id"), "message-id")?,
        user_id: f.opt_binary("user-id")?,
        to: address(f.any("to"), "to")?,
        subject: f.opt_string("subject")?,
        reply_to: address(f.any("reply-to"), "reply-to")?,
        correlation_id: message_id(f.any("correlation-id"), "correlation-id")?,
        content_type: f.opt_symbol("content-type")?,
        content_encoding: f.opt_symbol("content-encoding")?,
        absolute_expiry_time: timestamp(f.any("absolute-expiry-time"), "absolute-expiry-time")?,
        creation_time: timestamp(f.any("creation-time"), "creation-time")?,
        group_id: f.opt_string("group-id")?,
        group_sequence: f.opt_uint("group-sequence")?,
        reply_to_group_id: f.opt_string("reply-to-group-id")?,
    })
}

/// An address (3.2.4 `to`, `reply-to`: `*`, a string in practice).
fn address(v: Value, field: &'static str) -> Result<Option<String>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) | Value::Symbol(s) => Ok(Some(s)),
        _ => Err(DecodeError::Field { performative: "properties", field, problem: "must be a string" }),
    }
}

fn write_properties(p: &Properties) -> Value {
    fields::write(
        code::PROPERTIES,
        vec![
            p.message_id.clone().unwrap_or(Value::Null),
            opt(p.user_id.clone(), Value::Binary),
            opt(p.to.clone(), Value::String),
            opt(p.subject.clone(), Value::String),
            opt(p.reply_to.clone(), Value::String),
            p.correlation_id.clone().unwrap_or(Value::Null),
            opt(p.content_type.clone(), Value::Symbol),
            opt(p.content_encoding.clone(), Value::Symbol),
            opt(p.absolute_expiry_time, Value::Timestamp),
            opt(p.creation_time, Value::Timestamp),
            opt(p.group_id.clone(), Value::String),
            opt(p.group_sequence, Value::Uint),
            opt(p.reply_to_group_id.clone(), Value::String),
        ],
    )
}
