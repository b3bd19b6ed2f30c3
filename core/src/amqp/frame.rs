//! Frames (spec 2.3) and the protocol header (2.2, 5.2): the layer between bytes and
//! performatives.

use super::performative::{Performative, Sasl};
use super::types::Reader;
use super::{DecodeError, EncodeError};

/// The smallest maximum frame size a peer may ask for (2.7.1: `MIN-MAX-FRAME-SIZE`).
pub const MIN_MAX_FRAME_SIZE: u32 = 512;

/// What opens a connection (2.2, 5.2): `AMQP` followed by a protocol id and version 1.0.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolHeader {
    /// `AMQP 0 1 0 0`: the AMQP protocol itself.
    Amqp,
    /// `AMQP 3 1 0 0`: the SASL security layer (5.3).
    Sasl,
}

impl ProtocolHeader {
    /// Its 8 bytes.
    pub fn bytes(self) -> [u8; 8] {
        let id = match self {
            ProtocolHeader::Amqp => 0,
            ProtocolHeader::Sasl => 3,
        };
        [b'A', b'M', b'Q', b'P', id, 1, 0, 0]
    }

    /// Reads a header from the start of `buf`: `None` until 8 bytes are there. A TLS header
    /// (id 2: TLS is the transport's, not negotiated in-band here) or another version is an
    /// error; the spec asks the server to answer with the header it does support and close.
    pub fn read(buf: &[u8]) -> Result<Option<Self>, DecodeError> {
        // Judge the bytes that arrived: garbage is refused before 8 bytes are waited for.
        let expected = b"AMQP";
        let seen = buf.len().min(4);
        if buf[..seen] != expected[..seen] {
            return Err(DecodeError::ProtocolHeader);
        }
        let Some(header) = buf.get(..8) else { return Ok(None) };
        match header[4..] {
            [0, 1, 0, 0] => Ok(Some(ProtocolHeader::Amqp)),
            [3, 1, 0, 0] => Ok(Some(ProtocolHeader::Sasl)),
            _ => Err(DecodeError::ProtocolHeader),
        }
    }
}

/// What a frame carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// An AMQP frame with no body: a heartbeat (2.4.5).
    Empty,
    /// An AMQP frame (type 0): a performative, and for a transfer its payload.
    Amqp { performative: Performative, payload: Vec<u8> },
    /// A SASL frame (type 1, 5.3.1).
    Sasl(Sasl),
}

/// A frame (2.3.1).
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub channel: u16,
    pub body: Body,
}

const AMQP_FRAME: u8 = 0;
const SASL_FRAME: u8 = 1;

impl Frame {
    /// An AMQP frame on `channel`.
    pub fn amqp(channel: u16, performative: Performative) -> Self {
        Frame { channel, body: Body::Amqp { performative, payload: Vec::new() } }
    }

    /// A SASL frame.
    pub fn sasl(sasl: Sasl) -> Self {
        Frame { channel: 0, body: Body::Sasl(sasl) }
    }

    /// Decodes the first whole frame at the start of `buf`: `Ok(Some((frame, bytes used)))`,
    /// `Ok(None)` when more bytes are needed, or the violation. A frame over `max_frame_size`
    /// is refused as soon as its size is read.
    pub fn decode(buf: &[u8], max_frame_size: u32) -> Result<Option<(Frame, usize)>, DecodeError> {
        let Some(size) = buf.get(..4) else { return Ok(None) };
        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]);
        if size < 8 {
            return Err(DecodeError::FrameHeader("SIZE is under the 8-byte header"));
        }
        if size > max_frame_size {
            return Err(DecodeError::FrameTooLarge { size: size as usize, max: max_frame_size as usize });
        }
        let size = size as usize;
        let Some(frame) = buf.get(..size) else { return Ok(None) };
        let doff = usize::from(frame[4]) * 4;
        if doff < 8 || doff > size {
            return Err(DecodeError::FrameHeader("DOFF is under 2 or past the frame"));
        }
        let channel = u16::from_be_bytes([frame[6], frame[7]]);
        let body = &frame[doff..];
        let body = match frame[5] {
            AMQP_FRAME if body.is_empty() => Body::Empty,
            AMQP_FRAME => {
                let mut reader = Reader::new(body);
                let performative = Performative::read(reader.value()?)?;
                let payload = body[reader.position()..].to_vec();
                if !payload.is_empty() && !matches!(performative, Performative::Transfer(_)) {
                    return Err(DecodeError::FrameHeader("bytes after a performative other than transfer"));
                }
                Body::Amqp { performative, payload }
            }
            SASL_FRAME => {
                let mut reader = Reader::new(body);
                let sasl = Sasl::read(reader.value()?)?;
                if !reader.is_empty() {
                    return Err(DecodeError::FrameHeader("bytes after a SASL frame body"));
                }
                Body::Sasl(sasl)
            }
            other => return Err(DecodeError::FrameType(other)),
        };
        Ok(Some((Frame { channel, body }, size)))
    }

    /// Appends the frame's bytes.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0, 2, 0]);
        out.extend_from_slice(&self.channel.to_be_bytes());
        match &self.body {
            Body::Empty => {}
            Body::Amqp { performative, payload } => {
                performative.write().encode(out)?;
                out.extend_from_slice(payload);
            }
            Body::Sasl(sasl) => {
                out[start + 5] = SASL_FRAME;
                sasl.write().encode(out)?;
            }
        }
        let size = u32::try_from(out.len() - start).map_err(|_| EncodeError::TooLarge("frame"))?;
        out[start..start + 4].copy_from_slice(&size.to_be_bytes());
        Ok(())
    }

    /// The frame's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}
