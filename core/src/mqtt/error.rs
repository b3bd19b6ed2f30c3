//! Why bytes are not a valid MQTT 3.1.1 packet, and why a packet cannot be put into bytes.

/// A protocol violation. After one, the connection is closed (MQTT has no error replies, except
/// CONNACK refusal codes, which the session decides).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Packet type 0 or 15 [MQTT-2.2.1].
    #[error("reserved packet type {0} [MQTT-2.2.1]")]
    ReservedType(u8),
    /// Flags in the fixed header that the packet type does not allow [MQTT-2.2.2-1].
    #[error("invalid fixed header flags {flags:#06b} for packet type {kind} [MQTT-2.2.2-1]")]
    InvalidFlags {
        /// Packet type.
        kind: u8,
        /// The low nibble received.
        flags: u8,
    },
    /// Remaining length encoded in more than 4 bytes [MQTT-2.2.3].
    #[error("remaining length longer than 4 bytes [MQTT-2.2.3]")]
    BadRemainingLength,
    /// A packet bigger than the hub accepts.
    #[error("packet of {size} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Remaining length declared.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The body ended before a field did, or had bytes left over.
    #[error("malformed {0} packet: length does not match its fields")]
    Malformed(&'static str),
    /// A string that is not UTF-8, or contains U+0000 [MQTT-1.5.3-1], [MQTT-1.5.3-2].
    #[error("string is not valid MQTT UTF-8 [MQTT-1.5.3-1]")]
    InvalidString,
    /// CONNECT with a protocol name other than `MQTT` [MQTT-3.1.2-1].
    #[error("protocol name is not MQTT [MQTT-3.1.2-1]")]
    ProtocolName,
    /// CONNECT with a protocol level other than 4; answered with CONNACK 1 [MQTT-3.1.2-2].
    #[error("unsupported protocol level {0} (MQTT 3.1.1 is level 4) [MQTT-3.1.2-2]")]
    ProtocolLevel(u8),
    /// CONNECT flags that contradict each other or set the reserved bit.
    #[error("invalid CONNECT flags {0:#010b} [MQTT-3.1.2-3]")]
    ConnectFlags(u8),
    /// QoS 3, which does not exist [MQTT-3.3.1-4].
    #[error("QoS 3 is not a QoS level [MQTT-3.3.1-4]")]
    InvalidQoS,
    /// A packet identifier of 0 where one is required [MQTT-2.3.1-1].
    #[error("packet identifier 0 [MQTT-2.3.1-1]")]
    ZeroPacketId,
    /// A PUBLISH topic with a wildcard [MQTT-3.3.2-2], or an empty topic [MQTT-4.7.3-1].
    #[error("invalid topic name [MQTT-3.3.2-2]")]
    InvalidTopic,
    /// SUBSCRIBE or UNSUBSCRIBE with no topic filter [MQTT-3.8.3-3], [MQTT-3.10.3-2].
    #[error("no topic filters [MQTT-3.8.3-3]")]
    NoFilters,
    /// Reserved bits set in a SUBSCRIBE requested-QoS byte [MQTT-3.8.3-4].
    #[error("reserved bits in SUBSCRIBE options [MQTT-3.8.3-4]")]
    SubscribeOptions,
}

/// A packet that has no MQTT 3.1.1 wire form. The encoder refuses it whole rather than write
/// a truncated field or a length the peer would read differently.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A length-prefixed string or binary field over 65,535 bytes [MQTT-1.5.3].
    #[error("{field} of {len} bytes exceeds MQTT's 65,535 byte field limit [MQTT-1.5.3]")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// A remaining length over 268,435,455 bytes [MQTT-2.2.3].
    #[error("packet body of {0} bytes exceeds MQTT's 268,435,455 byte limit [MQTT-2.2.3]")]
    TooLarge(usize),
    /// A PUBLISH whose packet identifier does not match its QoS: QoS 0 carries none, QoS 1 and 2
    /// carry one [MQTT-2.3.1-5].
    #[error("a QoS {qos} PUBLISH {} a packet identifier [MQTT-2.3.1-5]", if *.has_id { "with" } else { "without" })]
    PacketIdMismatch {
        /// The QoS.
        qos: u8,
        /// Whether it carried an identifier.
        has_id: bool,
    },
}
