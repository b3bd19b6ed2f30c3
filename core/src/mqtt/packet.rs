//! The MQTT 3.1.1 packets, decoded strictly and encoded canonically.

use super::reader::{write_field, write_remaining_length, Reader};
use super::{DecodeError, EncodeError};
use std::num::NonZeroU16;

/// A packet identifier: never zero [MQTT-2.3.1-1].
pub type PacketId = NonZeroU16;

/// Quality of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once (IoT Hub does not support it; the session disconnects).
    ExactlyOnce = 2,
}

impl QoS {
    fn from_bits(bits: u8) -> Result<Self, DecodeError> {
        match bits {
            0 => Ok(Self::AtMostOnce),
            1 => Ok(Self::AtLeastOnce),
            2 => Ok(Self::ExactlyOnce),
            _ => Err(DecodeError::InvalidQoS),
        }
    }
}

/// CONNECT's last will.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    /// Topic to publish on an unexpected disconnect.
    pub topic: String,
    /// The message.
    pub payload: Vec<u8>,
    /// Its QoS.
    pub qos: QoS,
    /// Its retain flag.
    pub retain: bool,
}

/// CONNECT.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// Client identifier (IoT Hub: the device id).
    pub client_id: String,
    /// Clean session flag.
    pub clean_session: bool,
    /// Keep-alive in seconds (0: none).
    pub keep_alive: u16,
    /// User name (IoT Hub: `{host}/{device}/?api-version=...`).
    pub username: Option<String>,
    /// Password (IoT Hub: the SAS token); kept as bytes, as the standard allows.
    pub password: Option<Vec<u8>>,
    /// Last will.
    pub will: Option<Will>,
}

impl std::fmt::Debug for Connect {
    /// Hides the password: it is a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("client_id", &self.client_id)
            .field("clean_session", &self.clean_session)
            .field("keep_alive", &self.keep_alive)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("will", &self.will)
            .finish()
    }
}

/// CONNACK return codes [MQTT-3.2.2.3], in the standard's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectReturnCode {
    /// 0: accepted.
    Accepted = 0,
    /// 1: unacceptable protocol version.
    UnacceptableProtocolVersion = 1,
    /// 2: identifier rejected.
    IdentifierRejected = 2,
    /// 3: server unavailable.
    ServerUnavailable = 3,
    /// 4: bad user name or password.
    BadUserNameOrPassword = 4,
    /// 5: not authorized.
    NotAuthorized = 5,
}

/// CONNACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server had a session for this client.
    pub session_present: bool,
    /// The verdict.
    pub code: ConnectReturnCode,
}

/// PUBLISH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// Duplicate delivery flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name (no wildcards).
    pub topic: String,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// Application message.
    pub payload: Vec<u8>,
}

/// SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Topic filters with requested QoS; at least one.
    pub filters: Vec<(String, QoS)>,
}

/// A SUBACK entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscribeReturnCode {
    /// Granted at this QoS.
    Granted(QoS),
    /// 0x80: refused.
    Failure,
}

/// Every MQTT 3.1.1 packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// 1.
    Connect(Connect),
    /// 2.
    ConnAck(ConnAck),
    /// 3.
    Publish(Publish),
    /// 4.
    PubAck(PacketId),
    /// 5.
    PubRec(PacketId),
    /// 6.
    PubRel(PacketId),
    /// 7.
    PubComp(PacketId),
    /// 8.
    Subscribe(Subscribe),
    /// 9.
    SubAck {
        /// Packet identifier of the SUBSCRIBE.
        packet_id: PacketId,
        /// One per filter, in order.
        codes: Vec<SubscribeReturnCode>,
    },
    /// 10.
    Unsubscribe {
        /// Packet identifier.
        packet_id: PacketId,
        /// Filters to remove; at least one.
        filters: Vec<String>,
    },
    /// 11.
    UnsubAck(PacketId),
    /// 12.
    PingReq,
    /// 13.
    PingResp,
    /// 14.
    Disconnect,
}

fn packet_id(r: &mut Reader<'_>) -> Result<PacketId, DecodeError> {
    NonZeroU16::new(r.u16()?).ok_or(DecodeError::ZeroPacketId)
}

fn require_flags(kind: u8, flags: u8, expected: u8) -> Result<(), DecodeError> {
    if flags == expected {
        Ok(())
    } else {
        Err(DecodeError::InvalidFlags { kind, flags })
    }
}

/// Decodes a packet's body given its fixed header's first byte.
pub(crate) fn decode_body(first: u8, body: &[u8]) -> Result<Packet, DecodeError> {
    let kind = first >> 4;
    let flags = first & 0x0f;
    let only_id = |name, make: fn(PacketId) -> Packet, expected_flags| {
        require_flags(kind, flags, expected_flags)?;
        let mut r = Reader::new(body, name);
        let id = packet_id(&mut r)?;
        r.finish()?;
        Ok(make(id))
    };
    let empty = |name, packet: Packet| {
        require_flags(kind, flags, 0)?;
        Reader::new(body, name).finish()?;
        Ok(packet)
    };
    match kind {
        1 => {
            require_flags(kind, flags, 0)?;
            decode_connect(body)
        }
        2 => {
            require_flags(kind, flags, 0)?;
            let mut r = Reader::new(body, "CONNACK");
            let ack_flags = r.u8()?;
            let code = match r.u8()? {
                0 => ConnectReturnCode::Accepted,
                1 => ConnectReturnCode::UnacceptableProtocolVersion,
                2 => ConnectReturnCode::IdentifierRejected,
                3 => ConnectReturnCode::ServerUnavailable,
                4 => ConnectReturnCode::BadUserNameOrPassword,
                5 => ConnectReturnCode::NotAuthorized,
                _ => return Err(DecodeError::Malformed("CONNACK")),
            };
            if ack_flags & 0xfe != 0 {
                return Err(DecodeError::Malformed("CONNACK"));
            }
            r.finish()?;
            Ok(Packet::ConnAck(ConnAck { session_present: ack_flags & 1 == 1, code }))
        }
        3 => decode_publish(flags, body),
        4 => only_id("PUBACK", Packet::PubAck, 0),
        5 => only_id("PUBREC", Packet::PubRec, 0),
        6 => only_id("PUBREL", Packet::PubRel, 0b0010),
        7 => only_id("PUBCOMP", Packet::PubComp, 0),
        8 => {
            require_flags(kind, flags, 0b0010)?;
            let mut r = Reader::new(body, "SUBSCRIBE");
            let packet_id = packet_id(&mut r)?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                let filter = r.string()?;
                let options = r.u8()?;
                if options & 0xfc != 0 {
                    return Err(DecodeError::SubscribeOptions);
                }
                filters.push((filter, QoS::from_bits(options)?));
            }
            if filters.is_empty() {
                return Err(DecodeError::NoFilters);
            }
            Ok(Packet::Subscribe(Subscribe { packet_id, filters }))
        }
        9 => {
            require_flags(kind, flags, 0)?;
            let mut r = Reader::new(body, "SUBACK");
            let packet_id = packet_id(&mut r)?;
            let codes = r
                .rest()
                .iter()
                .map(|b| match b {
                    0x80 => Ok(SubscribeReturnCode::Failure),
                    q @ 0..=2 => QoS::from_bits(*q).map(SubscribeReturnCode::Granted),
                    _ => Err(DecodeError::Malformed("SUBACK")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Packet::SubAck { packet_id, codes })
        }
        10 => {
            require_flags(kind, flags, 0b0010)?;
            let mut r = Reader::new(body, "UNSUBSCRIBE");
            let packet_id = packet_id(&mut r)?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(DecodeError::NoFilters);
            }
            Ok(Packet::Unsubscribe { packet_id, filters })
        }
        11 => only_id("UNSUBACK", Packet::UnsubAck, 0),
        12 => empty("PINGREQ", Packet::PingReq),
        13 => empty("PINGRESP", Packet::PingResp),
        14 => empty("DISCONNECT", Packet::Disconnect),
        other => Err(DecodeError::ReservedType(other)),
    }
}

fn decode_connect(body: &[u8]) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(body, "CONNECT");
    if r.string()? != "MQTT" {
        return Err(DecodeError::ProtocolName);
    }
    let level = r.u8()?;
    if level != 4 {
        return Err(DecodeError::ProtocolLevel(level));
    }
    let flags = r.u8()?;
    let has_user = flags & 0x80 != 0;
    let has_password = flags & 0x40 != 0;
    let will_retain = flags & 0x20 != 0;
    let will_qos_bits = (flags >> 3) & 0b11;
    let has_will = flags & 0x04 != 0;
    let clean_session = flags & 0x02 != 0;
    let reserved = flags & 0x01 != 0;
    // [MQTT-3.1.2-3] reserved bit; [MQTT-3.1.2-13,15] no will QoS/retain without a will;
    // [MQTT-3.1.2-14] will QoS 3; [MQTT-3.1.2-22] password without user name.
    let will_inconsistent = !has_will && (will_qos_bits != 0 || will_retain);
    if reserved || will_inconsistent || will_qos_bits == 3 || (has_password && !has_user) {
        return Err(DecodeError::ConnectFlags(flags));
    }
    let keep_alive = r.u16()?;
    let client_id = r.string()?;
    let will = if has_will {
        let topic = r.string()?;
        let payload = r.binary()?;
        Some(Will { topic, payload, qos: QoS::from_bits(will_qos_bits)?, retain: will_retain })
    } else {
        None
    };
    let username = if has_user { Some(r.string()?) } else { None };
    let password = if has_password { Some(r.binary()?) } else { None };
    r.finish()?;
    Ok(Packet::Connect(Connect { client_id, clean_session, keep_alive, username, password, will }))
}

fn decode_publish(flags: u8, body: &[u8]) -> Result<Packet, DecodeError> {
    let dup = flags & 0b1000 != 0;
    let qos = QoS::from_bits((flags >> 1) & 0b11)?;
    let retain = flags & 1 != 0;
    if qos == QoS::AtMostOnce && dup {
        // [MQTT-3.3.1-2]: DUP must be 0 for QoS 0.
        return Err(DecodeError::InvalidFlags { kind: 3, flags });
    }
    let mut r = Reader::new(body, "PUBLISH");
    let topic = r.string()?;
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err(DecodeError::InvalidTopic);
    }
    let packet_id = if qos == QoS::AtMostOnce { None } else { Some(packet_id(&mut r)?) };
    let payload = r.rest().to_vec();
    Ok(Packet::Publish(Publish { dup, qos, retain, topic, packet_id, payload }))
}

impl Packet {
    /// Appends the packet's wire form to `out`; on an error `out` is unchanged.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut body = Vec::new();
        let first: u8 = match self {
            Packet::Connect(c) => {
                write_field(&mut body, "protocol name", b"MQTT")?;
                body.push(4);
                let mut flags = 0u8;
                if c.username.is_some() {
                    flags |= 0x80;
                }
                if c.password.is_some() {
                    flags |= 0x40;
                }
                if let Some(w) = &c.will {
                    flags |= 0x04 | ((w.qos as u8) << 3);
                    if w.retain {
                        flags |= 0x20;
                    }
                }
                if c.clean_session {
                    flags |= 0x02;
                }
                body.push(flags);
                body.extend_from_slice(&c.keep_alive.to_be_bytes());
                write_field(&mut body, "client id", c.client_id.as_bytes())?;
                if let Some(w) = &c.will {
                    write_field(&mut body, "will topic", w.topic.as_bytes())?;
                    write_field(&mut body, "will payload", &w.payload)?;
                }
                if let Some(u) = &c.username {
                    write_field(&mut body, "user name", u.as_bytes())?;
                }
                if let Some(p) = &c.password {
                    write_field(&mut body, "password", p)?;
                }
                0x10
            }
            Packet::ConnAck(a) => {
                body.push(u8::from(a.session_present));
                body.push(a.code as u8);
                0x20
            }
            Packet::Publish(p) => {
                if (p.qos == QoS::AtMostOnce) == p.packet_id.is_some() {
                    return Err(EncodeError::PacketIdMismatch { qos: p.qos as u8, has_id: p.packet_id.is_some() });
                }
                write_field(&mut body, "topic", p.topic.as_bytes())?;
                if let Some(id) = p.packet_id {
                    body.extend_from_slice(&id.get().to_be_bytes());
                }
                body.extend_from_slice(&p.payload);
                0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
            }
            Packet::PubAck(id) => id_only(&mut body, *id, 0x40),
            Packet::PubRec(id) => id_only(&mut body, *id, 0x50),
            Packet::PubRel(id) => id_only(&mut body, *id, 0x62),
            Packet::PubComp(id) => id_only(&mut body, *id, 0x70),
            Packet::Subscribe(s) => {
                body.extend_from_slice(&s.packet_id.get().to_be_bytes());
                for (filter, qos) in &s.filters {
                    write_field(&mut body, "topic filter", filter.as_bytes())?;
                    body.push(*qos as u8);
                }
                0x82
            }
            Packet::SubAck { packet_id, codes } => {
                body.extend_from_slice(&packet_id.get().to_be_bytes());
                for code in codes {
                    body.push(match code {
                        SubscribeReturnCode::Granted(q) => *q as u8,
                        SubscribeReturnCode::Failure => 0x80,
                    });
                }
                0x90
            }
            Packet::Unsubscribe { packet_id, filters } => {
                body.extend_from_slice(&packet_id.get().to_be_bytes());
                for f in filters {
                    write_field(&mut body, "topic filter", f.as_bytes())?;
                }
                0xa2
            }
            Packet::UnsubAck(id) => id_only(&mut body, *id, 0xb0),
            Packet::PingReq => 0xc0,
            Packet::PingResp => 0xd0,
            Packet::Disconnect => 0xe0,
        };
        let mut header = vec![first];
        write_remaining_length(&mut header, body.len())?;
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
        Ok(())
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

fn id_only(body: &mut Vec<u8>, id: PacketId, first: u8) -> u8 {
    body.extend_from_slice(&id.get().to_be_bytes());
    first
}
