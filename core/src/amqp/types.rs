//! The AMQP 1.0 type system (spec part 1): every primitive type, described types, and the
//! compound list, map and array, read strictly and written in their smallest encoding.
//!
//! Reading never trusts a declared size or count: a compound value's items must fit in the
//! bytes it declares (each item takes at least one byte, except in arrays of a zero-width
//! element type, capped at [`MAX_ZERO_WIDTH_ITEMS`]), so what a peer can make the hub allocate
//! is bounded by the frame it sent; nesting is bounded by [`MAX_DEPTH`].

use super::{DecodeError, EncodeError};

/// How deep values may nest (a described list of maps of lists ...): deeper input is refused
/// rather than recursed into.
pub const MAX_DEPTH: usize = 32;

/// The most items an array of a zero-width type (`null`, `true`, `uint0` ...) may hold: such
/// items take no bytes, so the bytes sent do not bound them. Written and read alike.
pub const MAX_ZERO_WIDTH_ITEMS: usize = 65_536;

/// An AMQP 1.0 value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null` (1.6.1).
    Null,
    /// `boolean` (1.6.2).
    Bool(bool),
    /// `ubyte` (1.6.3).
    Ubyte(u8),
    /// `ushort` (1.6.4).
    Ushort(u16),
    /// `uint` (1.6.5).
    Uint(u32),
    /// `ulong` (1.6.6).
    Ulong(u64),
    /// `byte` (1.6.7).
    Byte(i8),
    /// `short` (1.6.8).
    Short(i16),
    /// `int` (1.6.9).
    Int(i32),
    /// `long` (1.6.10).
    Long(i64),
    /// `float` (1.6.11).
    Float(f32),
    /// `double` (1.6.12).
    Double(f64),
    /// `decimal32` (1.6.13), kept as its IEEE 754 bytes: the hub never computes with it.
    Decimal32([u8; 4]),
    /// `decimal64` (1.6.14).
    Decimal64([u8; 8]),
    /// `decimal128` (1.6.15).
    Decimal128([u8; 16]),
    /// `char` (1.6.16).
    Char(char),
    /// `timestamp` (1.6.17): milliseconds since the Unix epoch.
    Timestamp(i64),
    /// `uuid` (1.6.18).
    Uuid([u8; 16]),
    /// `binary` (1.6.19).
    Binary(Vec<u8>),
    /// `string` (1.6.20).
    String(String),
    /// `symbol` (1.6.21): ASCII.
    Symbol(String),
    /// `list` (1.6.22).
    List(Vec<Value>),
    /// `map` (1.6.23), in wire order (keys are not required to be unique by the type system).
    Map(Vec<(Value, Value)>),
    /// `array` (1.6.24): items of one type.
    Array(Vec<Value>),
    /// A described type (1.5).
    Described(Box<Described>),
}

/// A descriptor (1.5): a symbolic name or a numeric code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Descriptor {
    /// `amqp:open:list` and the like.
    Symbol(String),
    /// `0x0000_0000_0000_0010` and the like: domain id in the high 32 bits, descriptor id low.
    Code(u64),
}

/// A value with its descriptor.
#[derive(Clone, Debug, PartialEq)]
pub struct Described {
    pub descriptor: Descriptor,
    pub value: Value,
}

impl Value {
    /// A described value.
    pub fn described(descriptor: Descriptor, value: Value) -> Self {
        Value::Described(Box::new(Described { descriptor, value }))
    }

    /// A symbol.
    pub fn symbol(s: &str) -> Self {
        Value::Symbol(s.to_owned())
    }

    /// The descriptor code when this is a value described by a code.
    pub fn descriptor_code(&self) -> Option<u64> {
        match self {
            Value::Described(d) => match d.descriptor {
                Descriptor::Code(c) => Some(c),
                Descriptor::Symbol(_) => None,
            },
            _ => None,
        }
    }

    /// The text of a string or symbol.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::Symbol(s) => Some(s),
            _ => None,
        }
    }
}

/// Format codes (1.6), named as the spec names the encodings.
mod code {
    pub const DESCRIBED: u8 = 0x00;
    pub const NULL: u8 = 0x40;
    pub const TRUE: u8 = 0x41;
    pub const FALSE: u8 = 0x42;
    pub const UINT0: u8 = 0x43;
    pub const ULONG0: u8 = 0x44;
    pub const LIST0: u8 = 0x45;
    pub const UBYTE: u8 = 0x50;
    pub const BYTE: u8 = 0x51;
    pub const SMALLUINT: u8 = 0x52;
    pub const SMALLULONG: u8 = 0x53;
    pub const SMALLINT: u8 = 0x54;
    pub const SMALLLONG: u8 = 0x55;
    pub const BOOLEAN: u8 = 0x56;
    pub const USHORT: u8 = 0x60;
    pub const SHORT: u8 = 0x61;
    pub const UINT: u8 = 0x70;
    pub const INT: u8 = 0x71;
    pub const FLOAT: u8 = 0x72;
    pub const CHAR: u8 = 0x73;
    pub const DECIMAL32: u8 = 0x74;
    pub const ULONG: u8 = 0x80;
    pub const LONG: u8 = 0x81;
    pub const DOUBLE: u8 = 0x82;
    pub const TIMESTAMP: u8 = 0x83;
    pub const DECIMAL64: u8 = 0x84;
    pub const DECIMAL128: u8 = 0x94;
    pub const UUID: u8 = 0x98;
    pub const VBIN8: u8 = 0xa0;
    pub const STR8: u8 = 0xa1;
    pub const SYM8: u8 = 0xa3;
    pub const VBIN32: u8 = 0xb0;
    pub const STR32: u8 = 0xb1;
    pub const SYM32: u8 = 0xb3;
    pub const LIST8: u8 = 0xc0;
    pub const MAP8: u8 = 0xc1;
    pub const LIST32: u8 = 0xd0;
    pub const MAP32: u8 = 0xd1;
    pub const ARRAY8: u8 = 0xe0;
    pub const ARRAY32: u8 = 0xf0;
}

/// A cursor over bytes; every read checks the bounds.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated(what))?;
        let bytes = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated(what))?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// One value, at any depth below [`MAX_DEPTH`].
    pub(crate) fn value(&mut self) -> Result<Value, DecodeError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let format = self.u8("format code")?;
        if format == code::DESCRIBED {
            let descriptor = self.descriptor(depth)?;
            let value = self.value_at(depth + 1)?;
            return Ok(Value::described(descriptor, value));
        }
        self.body(format, depth)
    }

    fn descriptor(&mut self, depth: usize) -> Result<Descriptor, DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(DecodeError::TooDeep(MAX_DEPTH));
        }
        match self.value_at(depth + 1)? {
            Value::Ulong(c) => Ok(Descriptor::Code(c)),
            Value::Symbol(s) => Ok(Descriptor::Symbol(s)),
            _ => Err(DecodeError::InvalidDescriptor),
        }
    }

    /// The value a format code announces, the code already read.
    fn body(&mut self, format: u8, depth: usize) -> Result<Value, DecodeError> {
        use code::*;
        Ok(match format {
            NULL => Value::Null,
            TRUE => Value::Bool(true),
            FALSE => Value::Bool(false),
            BOOLEAN => match self.u8("boolean")? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                _ => return Err(DecodeError::InvalidBoolean),
            },
            UINT0 => Value::Uint(0),
            ULONG0 => Value::Ulong(0),
            LIST0 => Value::List(Vec::new()),
            UBYTE => Value::Ubyte(self.u8("ubyte")?),
            BYTE => Value::Byte(i8::from_be_bytes(self.array("byte")?)),
            SMALLUINT => Value::Uint(u32::from(self.u8("smalluint")?)),
            SMALLULONG => Value::Ulong(u64::from(self.u8("smallulong")?)),
            SMALLINT => Value::Int(i32::from(i8::from_be_bytes(self.array("smallint")?))),
            SMALLLONG => Value::Long(i64::from(i8::from_be_bytes(self.array("smalllong")?))),
            USHORT => Value::Ushort(u16::from_be_bytes(self.array("ushort")?)),
            SHORT => Value::Short(i16::from_be_bytes(self.array("short")?)),
            UINT => Value::Uint(self.u32("uint")?),
            INT => Value::Int(i32::from_be_bytes(self.array("int")?)),
            FLOAT => Value::Float(f32::from_be_bytes(self.array("float")?)),
            CHAR => Value::Char(char::from_u32(self.u32("char")?).ok_or(DecodeError::InvalidChar)?),
            DECIMAL32 => Value::Decimal32(self.array("decimal32")?),
            ULONG => Value::Ulong(u64::from_be_bytes(self.array("ulong")?)),
            LONG => Value::Long(i64::from_be_bytes(self.array("long")?)),
            DOUBLE => Value::Double(f64::from_be_bytes(self.array("double")?)),
            TIMESTAMP => Value::Timestamp(i64::from_be_bytes(self.array("timestamp")?)),
            DECIMAL64 => Value::Decimal64(self.array("decimal64")?),
            DECIMAL128 => Value::Decimal128(self.array("decimal128")?),
            UUID => Value::Uuid(self.array("uuid")?),
            VBIN8 | VBIN32 => {
                let n = self.width(format == VBIN32, "binary")?;
                Value::Binary(self.take(n, "binary")?.to_vec())
            }
            STR8 | STR32 => {
                let n = self.width(format == STR32, "string")?;
                let raw = self.take(n, "string")?;
                Value::String(std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidText("a string"))?.to_owned())
            }
            SYM8 | SYM32 => {
                let n = self.width(format == SYM32, "symbol")?;
                let raw = self.take(n, "symbol")?;
                if !raw.is_ascii() {
                    return Err(DecodeError::InvalidText("a symbol"));
                }
                Value::Symbol(String::from_utf8_lossy(raw).into_owned())
            }
            LIST8 | LIST32 => {
                let mut body = self.compound(format == LIST32, "list")?;
                body.at_least_a_byte_each("list")?;
                let count = body.count;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(body.reader.nested(depth)?);
                }
                body.finish("list")?;
                Value::List(items)
            }
            MAP8 | MAP32 => {
                let mut body = self.compound(format == MAP32, "map")?;
                body.at_least_a_byte_each("map")?;
                if body.count % 2 != 0 {
                    return Err(DecodeError::OddMap);
                }
                let mut pairs = Vec::with_capacity(body.count / 2);
                for _ in 0..body.count / 2 {
                    let key = body.reader.nested(depth)?;
                    let value = body.reader.nested(depth)?;
                    pairs.push((key, value));
                }
                body.finish("map")?;
                Value::Map(pairs)
            }
            ARRAY8 | ARRAY32 => {
                let mut body = self.compound(format == ARRAY32, "array")?;
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep(MAX_DEPTH));
                }
                // One constructor for every item (1.6.24): a format code, or a descriptor and one.
                let mut element = body.reader.u8("array constructor")?;
                let descriptor = if element == DESCRIBED {
                    let d = body.reader.descriptor(depth + 1)?;
                    element = body.reader.u8("array constructor")?;
                    Some(d)
                } else {
                    None
                };
                if element == DESCRIBED {
                    return Err(DecodeError::InvalidDescriptor);
                }
                if matches!(element, NULL | TRUE | FALSE | UINT0 | ULONG0 | LIST0) {
                    if body.count > MAX_ZERO_WIDTH_ITEMS {
                        return Err(DecodeError::SizeMismatch("array"));
                    }
                } else {
                    body.at_least_a_byte_each("array")?;
                }
                let mut items = Vec::with_capacity(body.count);
                for _ in 0..body.count {
                    let item = body.reader.body(element, depth + 1)?;
                    items.push(match &descriptor {
                        Some(d) => Value::described(d.clone(), item),
                        None => item,
                    });
                }
                body.finish("array")?;
                Value::Array(items)
            }
            other => return Err(DecodeError::UnknownFormatCode(other)),
        })
    }

    fn nested(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(DecodeError::TooDeep(MAX_DEPTH));
        }
        self.value_at(depth + 1)
    }

    /// A variable-width value's size: one byte, or four.
    fn width(&mut self, wide: bool, what: &'static str) -> Result<usize, DecodeError> {
        let n = if wide { self.u32(what)? } else { u32::from(self.u8(what)?) };
        usize::try_from(n).map_err(|_| DecodeError::Truncated(what))
    }

    /// A compound value's size and count, and a reader over exactly its size (the count is
    /// checked by the caller, who knows how wide the items are).
    fn compound(&mut self, wide: bool, what: &'static str) -> Result<Compound<'a>, DecodeError> {
        let size = self.width(wide, what)?;
        let bytes = self.take(size, what)?;
        let mut reader = Reader::new(bytes);
        let count = if wide { reader.u32(what)? } else { u32::from(reader.u8(what)?) };
        let count = usize::try_from(count).map_err(|_| DecodeError::SizeMismatch(what))?;
        Ok(Compound { reader, count })
    }
}

struct Compound<'a> {
    reader: Reader<'a>,
    count: usize,
}

impl Compound<'_> {
    /// Items of at least one byte each: no more of them than bytes left (a peer cannot make
    /// the hub allocate for items it did not send).
    fn at_least_a_byte_each(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.count > self.reader.remaining() {
            return Err(DecodeError::SizeMismatch(what));
        }
        Ok(())
    }

    fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.reader.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::SizeMismatch(what))
        }
    }
}

/// Decodes exactly one value filling `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut reader = Reader::new(bytes);
    let value = reader.value()?;
    if !reader.is_empty() {
        return Err(DecodeError::SizeMismatch("value"));
    }
    Ok(value)
}

impl Value {
    /// Appends the value in its smallest encoding.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        use code::*;
        match self {
            Value::Null => out.push(NULL),
            Value::Bool(b) => out.push(if *b { TRUE } else { FALSE }),
            Value::Ubyte(v) => out.extend([UBYTE, *v]),
            Value::Ushort(v) => push(out, USHORT, &v.to_be_bytes()),
            Value::Uint(0) => out.push(UINT0),
            Value::Uint(v @ 1..=255) => out.extend([SMALLUINT, *v as u8]),
            Value::Uint(v) => push(out, UINT, &v.to_be_bytes()),
            Value::Ulong(0) => out.push(ULONG0),
            Value::Ulong(v @ 1..=255) => out.extend([SMALLULONG, *v as u8]),
            Value::Ulong(v) => push(out, ULONG, &v.to_be_bytes()),
            Value::Byte(v) => push(out, BYTE, &v.to_be_bytes()),
            Value::Short(v) => push(out, SHORT, &v.to_be_bytes()),
            Value::Int(v) => match i8::try_from(*v) {
                Ok(small) => push(out, SMALLINT, &small.to_be_bytes()),
                Err(_) => push(out, INT, &v.to_be_bytes()),
            },
            Value::Long(v) => match i8::try_from(*v) {
                Ok(small) => push(out, SMALLLONG, &small.to_be_bytes()),
                Err(_) => push(out, LONG, &v.to_be_bytes()),
            },
            Value::Float(v) => push(out, FLOAT, &v.to_be_bytes()),
            Value::Double(v) => push(out, DOUBLE, &v.to_be_bytes()),
            Value::Decimal32(b) => push(out, DECIMAL32, b),
            Value::Decimal64(b) => push(out, DECIMAL64, b),
            Value::Decimal128(b) => push(out, DECIMAL128, b),
            Value::Char(c) => push(out, CHAR, &u32::from(*c).to_be_bytes()),
            Value::Timestamp(v) => push(out, TIMESTAMP, &v.to_be_bytes()),
            Value::Uuid(b) => push(out, UUID, b),
            Value::Binary(b) => variable(out, VBIN8, VBIN32, b, "binary")?,
            Value::String(s) => variable(out, STR8, STR32, s.as_bytes(), "string")?,
            Value::Symbol(s) => {
                if !s.is_ascii() {
                    return Err(EncodeError::NonAsciiSymbol);
                }
                variable(out, SYM8, SYM32, s.as_bytes(), "symbol")?
            }
            Value::List(items) if items.is_empty() => out.push(LIST0),
            Value::List(items) => {
                let mut body = Vec::new();
                for item in items {
                    item.encode(&mut body)?;
                }
                compound(out, LIST8, LIST32, items.len(), &body, "list")?;
            }
            Value::Map(pairs) => {
                let mut body = Vec::new();
                for (k, v) in pairs {
                    k.encode(&mut body)?;
                    v.encode(&mut body)?;
                }
                compound(out, MAP8, MAP32, pairs.len() * 2, &body, "map")?;
            }
            Value::Array(items) => {
                let body = array_body(items)?;
                compound(out, ARRAY8, ARRAY32, items.len(), &body, "array")?;
            }
            Value::Described(d) => {
                out.push(DESCRIBED);
                match &d.descriptor {
                    Descriptor::Code(c) => Value::Ulong(*c).encode(out)?,
                    Descriptor::Symbol(s) => Value::Symbol(s.clone()).encode(out)?,
                }
                d.value.encode(out)?;
            }
        }
        Ok(())
    }

    /// The value's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

fn push(out: &mut Vec<u8>, format: u8, bytes: &[u8]) {
    out.push(format);
    out.extend_from_slice(bytes);
}

fn variable(out: &mut Vec<u8>, short: u8, long: u8, bytes: &[u8], what: &'static str) -> Result<(), EncodeError> {
    match u8::try_from(bytes.len()) {
        Ok(n) => out.extend([short, n]),
        Err(_) => {
            let n = u32::try_from(bytes.len()).map_err(|_| EncodeError::TooLarge(what))?;
            push(out, long, &n.to_be_bytes());
        }
    }
    out.extend_from_slice(bytes);
    Ok(())
}

/// A list, map or array: the 8-bit form when size (count included) and count fit a byte.
fn compound(
    out: &mut Vec<u8>,
    short: u8,
    long: u8,
    count: usize,
    body: &[u8],
    what: &'static str,
) -> Result<(), EncodeError> {
    if let (Ok(size), Ok(count)) = (u8::try_from(body.len() + 1), u8::try_from(count)) {
        out.extend([short, size, count]);
    } else {
        let size = u32::try_from(body.len() + 4).map_err(|_| EncodeError::TooLarge(what))?;
        let count = u32::try_from(count).map_err(|_| EncodeError::TooLarge(what))?;
        push(out, long, &size.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
    }
    out.extend_from_slice(body);
    Ok(())
}

/// An array's constructor and items: every item must take the same constructor, which is the
/// fixed-width form of its type (variable-width items use the 8-bit form when all fit).
fn array_body(items: &[Value]) -> Result<Vec<u8>, EncodeError> {
    use code::*;
    let mut body = Vec::new();
    let Some(first) = items.first() else {
        // An empty array still names a type (1.6.24); null is the neutral one.
        body.push(NULL);
        return Ok(body);
    };
    let (descriptor, inner): (Option<&Descriptor>, Vec<&Value>) = match first {
        Value::Described(d) => {
            let mut inner = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Described(i) if i.descriptor == d.descriptor => inner.push(&i.value),
                    _ => return Err(EncodeError::MixedArray),
                }
            }
            (Some(&d.descriptor), inner)
        }
        _ => (None, items.iter().collect()),
    };
    if let Some(d) = descriptor {
        body.push(DESCRIBED);
        match d {
            Descriptor::Code(c) => Value::Ulong(*c).encode(&mut body)?,
            Descriptor::Symbol(s) => Value::Symbol(s.clone()).encode(&mut body)?,
        }
    }
    let kind = std::mem::discriminant(inner[0]);
    if inner.iter().any(|v| std::mem::discriminant(*v) != kind) {
        return Err(EncodeError::MixedArray);
    }
    let fits_short = |v: &&Value| match v {
        Value::Binary(b) => b.len() <= 255,
        Value::String(s) | Value::Symbol(s) => s.len() <= 255,
        _ => true,
    };
    let short = inner.iter().all(fits_short);
    let element = match inner[0] {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Ubyte(_) => UBYTE,
        Value::Ushort(_) => USHORT,
        Value::Uint(_) => UINT,
        Value::Ulong(_) => ULONG,
        Value::Byte(_) => BYTE,
        Value::Short(_) => SHORT,
        Value::Int(_) => INT,
        Value::Long(_) => LONG,
        Value::Float(_) => FLOAT,
        Value::Double(_) => DOUBLE,
        Value::Decimal32(_) => DECIMAL32,
        Value::Decimal64(_) => DECIMAL64,
        Value::Decimal128(_) => DECIMAL128,
        Value::Char(_) => CHAR,
        Value::Timestamp(_) => TIMESTAMP,
        Value::Uuid(_) => UUID,
        Value::Binary(_) => {
            if short {
                VBIN8
            } else {
                VBIN32
            }
        }
        Value::String(_) => {
            if short {
                STR8
            } else {
                STR32
            }
        }
        Value::Symbol(_) => {
            if short {
                SYM8
            } else {
                SYM32
            }
        }
        Value::List(_) => LIST32,
        Value::Map(_) => MAP32,
        Value::Array(_) => ARRAY32,
        // Nested described items inside a described array have no single constructor here.
        Value::Described(_) => return Err(EncodeError::MixedArray),
    };
    // Null is the one zero-width element type written here; as many as a reader accepts.
    if element == NULL && inner.len() > MAX_ZERO_WIDTH_ITEMS {
        return Err(EncodeError::TooLarge("array of nulls"));
    }
    body.push(element);
    for item in inner {
        element_body(item, element, &mut body)?;
    }
    Ok(body)
}

/// One array item without its constructor, in the element encoding chosen.
fn element_body(item: &Value, element: u8, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    use code::*;
    let mut whole = Vec::new();
    match (item, element) {
        (Value::Bool(b), BOOLEAN) => out.push(u8::from(*b)),
        (Value::Uint(v), UINT) => out.extend_from_slice(&v.to_be_bytes()),
        (Value::Ulong(v), ULONG) => out.extend_from_slice(&v.to_be_bytes()),
        (Value::Int(v), INT) => out.extend_from_slice(&v.to_be_bytes()),
        (Value::Long(v), LONG) => out.extend_from_slice(&v.to_be_bytes()),
        (Value::Binary(b), VBIN8 | VBIN32) => sized(out, element == VBIN32, b),
        (Value::String(s), STR8 | STR32) => sized(out, element == STR32, s.as_bytes()),
        (Value::Symbol(s), SYM8 | SYM32) => {
            if !s.is_ascii() {
                return Err(EncodeError::NonAsciiSymbol);
            }
            sized(out, element == SYM32, s.as_bytes())
        }
        (Value::List(items), LIST32) => {
            let mut body = Vec::new();
            for i in items {
                i.encode(&mut body)?;
            }
            wide_compound(out, items.len(), &body, "list")?;
        }
        (Value::Map(pairs), MAP32) => {
            let mut body = Vec::new();
            for (k, v) in pairs {
                k.encode(&mut body)?;
                v.encode(&mut body)?;
            }
            wide_compound(out, pairs.len() * 2, &body, "map")?;
        }
        (Value::Array(items), ARRAY32) => {
            let body = array_body(items)?;
            wide_compound(out, items.len(), &body, "array")?;
        }
        (Value::Null, NULL) => {}
        // The fixed-width types whose smallest encoding is their only one: drop the code.
        _ => {
            item.encode(&mut whole)?;
            if whole.first() != Some(&element) {
                return Err(EncodeError::MixedArray);
            }
            out.extend_from_slice(&whole[1..]);
        }
    }
    Ok(())
}

fn sized(out: &mut Vec<u8>, wide: bool, bytes: &[u8]) {
    if wide {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    } else {
        out.push(bytes.len() as u8);
    }
    out.extend_from_slice(bytes);
}

fn wide_compound(out: &mut Vec<u8>, count: usize, body: &[u8], what: &'static str) -> Result<(), EncodeError> {
    let size = u32::try_from(body.len() + 4).map_err(|_| EncodeError::TooLarge(what))?;
    let count = u32::try_from(count).map_err(|_| EncodeError::TooLarge(what))?;
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}
