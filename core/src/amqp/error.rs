//! Why bytes are not valid AMQP 1.0, and why a value cannot be put into bytes.

/// A violation of the AMQP 1.0 encoding or framing rules. After one, the hub closes the
/// connection with `amqp:decode-error` (or `amqp:frame-size-too-small` / `amqp:connection:framing-error`),
/// as the spec asks of a peer that cannot read what it was sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes ended inside a value whose size says there is more (spec 1.2).
    #[error("{0}: the value ends before its declared size (AMQP 1.0 section 1.2)")]
    Truncated(&'static str),
    /// A format code the type system does not define (spec 1.6).
    #[error("unknown format code {0:#04x} (AMQP 1.0 section 1.6)")]
    UnknownFormatCode(u8),
    /// A compound value whose declared size does not hold its declared count of items, or
    /// holds bytes after them (spec 1.4).
    #[error("{0}: the size and count do not agree (AMQP 1.0 section 1.4)")]
    SizeMismatch(&'static str),
    /// A map with an odd number of items (spec 1.6.23: key-value pairs).
    #[error("a map holds an odd number of items (AMQP 1.0 section 1.6.23)")]
    OddMap,
    /// A string that is not UTF-8 (spec 1.6.20), or a symbol that is not ASCII (spec 1.6.21).
    #[error("{0} is not valid (AMQP 1.0 sections 1.6.20-21: UTF-8 strings, ASCII symbols)")]
    InvalidText(&'static str),
    /// A char that is not a Unicode scalar value (spec 1.6.16).
    #[error("a char that is not a Unicode scalar value (AMQP 1.0 section 1.6.16)")]
    InvalidChar,
    /// A boolean byte other than 0 or 1 (spec 1.6.2).
    #[error("a boolean byte other than 0x00 or 0x01 (AMQP 1.0 section 1.6.2)")]
    InvalidBoolean,
    /// A descriptor that is neither a symbol nor a ulong, or a described descriptor (spec 1.5).
    #[error("a descriptor must be a symbol or a ulong (AMQP 1.0 section 1.5)")]
    InvalidDescriptor,
    /// Values nested deeper than the hub reads.
    #[error("values nested more than {0} deep")]
    TooDeep(usize),
    /// A frame whose size field is under the 8-byte header, or whose data offset points
    /// outside it (spec 2.3.1).
    #[error("invalid frame header: {0} (AMQP 1.0 section 2.3.1)")]
    FrameHeader(&'static str),
    /// A frame over the maximum frame size agreed at open (spec 2.7.1).
    #[error("a frame of {size} bytes exceeds the agreed maximum of {max} (AMQP 1.0 section 2.7.1)")]
    FrameTooLarge {
        /// The size the frame declares.
        size: usize,
        /// The agreed maximum.
        max: usize,
    },
    /// A frame type other than AMQP (0) or SASL (1) (spec 2.3.1, 5.3.1).
    #[error("unknown frame type {0} (AMQP 1.0 sections 2.3.1, 5.3.1)")]
    FrameType(u8),
    /// A frame body that is not one of the performatives of its frame type (spec 2.7, 5.3.3).
    #[error("{0}")]
    NotAPerformative(String),
    /// A performative or section whose fields have the wrong types, or a mandatory field
    /// missing (spec 2.7, 3.2, 5.3.3).
    #[error("{performative}: field {field} {problem}")]
    Field {
        /// The composite type read.
        performative: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A protocol header that is not `AMQP` 0 1.0.0 or `AMQP` 3 1.0.0 (spec 2.2, 5.2).
    #[error("protocol header is not AMQP 1.0.0 or its SASL layer (AMQP 1.0 section 2.2)")]
    ProtocolHeader,
}

/// A value with no AMQP 1.0 encoding. The encoder refuses it whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A compound or variable-width value over 4 GiB (spec 1.6: sizes are 32 bits at most).
    #[error("{0} exceeds the 32-bit size limit (AMQP 1.0 section 1.6)")]
    TooLarge(&'static str),
    /// An array whose items are not all of one type (spec 1.6.24: one constructor).
    #[error("an array's items must share one type (AMQP 1.0 section 1.6.24)")]
    MixedArray,
    /// A symbol that is not ASCII (spec 1.6.21).
    #[error("a symbol must be ASCII (AMQP 1.0 section 1.6.21)")]
    NonAsciiSymbol,
}
