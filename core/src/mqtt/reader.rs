//! Reading the primitives of MQTT: the fixed header, integers, strings, binary data.

use super::{DecodeError, EncodeError};

/// Reads the fixed header: `(first byte, remaining length, header length)`, or `None` while
/// the remaining-length bytes are incomplete.
pub(crate) fn fixed_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, DecodeError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else { return Ok(None) };
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((first, value, 2 + i)));
        }
    }
    Err(DecodeError::BadRemainingLength)
}

/// The largest remaining length four bytes can carry [MQTT-2.2.3].
const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Appends a remaining length; refuses one over 268,435,455.
pub(crate) fn write_remaining_length(out: &mut Vec<u8>, mut len: usize) -> Result<(), EncodeError> {
    if len > MAX_REMAINING_LENGTH {
        return Err(EncodeError::TooLarge(len));
    }
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return Ok(());
        }
    }
}

/// A cursor over one packet's body; every read checks the bounds.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Malformed(self.what))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Malformed(self.what))?;
        let slice = self.buf.get(self.pos..end).ok_or(DecodeError::Malformed(self.what))?;
        self.pos = end;
        Ok(slice)
    }

    /// Length-prefixed binary data.
    pub(crate) fn binary(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = usize::from(self.u16()?);
        Ok(self.bytes(n)?.to_vec())
    }

    /// Length-prefixed UTF-8 string, without U+0000.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let n = usize::from(self.u16()?);
        let raw = self.bytes(n)?;
        let s = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidString)?;
        if s.contains('\0') {
            return Err(DecodeError::InvalidString);
        }
        Ok(s.to_owned())
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(self.what))
        }
    }
}

/// Appends a length-prefixed string or binary field; refuses one over 65,535 bytes.
pub(crate) fn write_field(out: &mut Vec<u8>, field: &'static str, data: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong { field, len: data.len() })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    Ok(())
}
