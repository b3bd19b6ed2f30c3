//! MQTT 3.1.1 (OASIS standard) as IoT Hub's device endpoint speaks it: the packets, a strict
//! incremental decoder and an encoder. No I/O: bytes in, packets out, and back.
//!
//! [`decode`] takes whatever bytes have arrived (a packet may be split across WebSocket
//! messages, or several may share one) and returns the first whole packet with its length, or
//! `None` until enough bytes are there. It never panics on any input, and refuses anything the
//! standard forbids, citing the rule (`[MQTT-x.y.z-n]`) in the error. [`Packet::encode`] is as
//! strict the other way: a packet with no wire form (a field over 65,535 bytes, a QoS 0 PUBLISH
//! with an identifier) is an [`EncodeError`], never truncated bytes.

mod error;
mod packet;
mod reader;

pub use error::{DecodeError, EncodeError};
pub use packet::{
    ConnAck, Connect, ConnectReturnCode, Packet, PacketId, Publish, QoS, Subscribe, SubscribeReturnCode, Will,
};

/// The largest packet the hub accepts: IoT Hub's 256 KB device-to-cloud message limit plus room
/// for a long topic and the fixed header.
pub const MAX_PACKET_BYTES: usize = 256 * 1024 + 4 * 1024;

/// Decodes the first whole packet at the start of `buf`: `Ok(Some((packet, bytes used)))`,
/// `Ok(None)` when more bytes are needed, or the protocol violation. A packet whose remaining
/// length exceeds `max_bytes` is refused as soon as its header is read.
pub fn decode(buf: &[u8], max_bytes: usize) -> Result<Option<(Packet, usize)>, DecodeError> {
    // Judge the packet type from its first byte, without waiting for the rest: garbage is
    // refused at once instead of being buffered as a packet that never completes.
    if let Some(kind @ (0 | 15)) = buf.first().map(|b| b >> 4) {
        return Err(DecodeError::ReservedType(kind));
    }
    let Some((first, remaining, header_len)) = reader::fixed_header(buf)? else { return Ok(None) };
    if remaining > max_bytes {
        return Err(DecodeError::TooLarge { size: remaining, max: max_bytes });
    }
    let total = header_len + remaining;
    let Some(body) = buf.get(header_len..total) else { return Ok(None) };
    let packet = packet::decode_body(first, body)?;
    Ok(Some((packet, total)))
}

#[cfg(test)]
mod tests;
