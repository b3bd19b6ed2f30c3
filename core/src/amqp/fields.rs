//! Reading and writing composite types (spec 1.4: a described list whose items are the fields
//! in order, trailing fields that are null or absent left off).

use super::types::{Descriptor, Value};
use super::DecodeError;

/// A composite's fields, read in order with their types checked.
pub(crate) struct Fields {
    name: &'static str,
    items: std::vec::IntoIter<Value>,
    field: &'static str,
}

/// The fields of a composite's list (its descriptor already read), or the error that it is
/// not a list.
pub(crate) fn composite(name: &'static str, value: Value) -> Result<Fields, DecodeError> {
    match value {
        Value::List(items) => Ok(Fields { name, items: items.into_iter(), field: "" }),
        _ => Err(DecodeError::Field { performative: name, field: "(body)", problem: "is not a list" }),
    }
}

impl Fields {
    fn next(&mut self, field: &'static str) -> Value {
        self.field = field;
        self.items.next().unwrap_or(Value::Null)
    }

    fn wrong(&self, problem: &'static str) -> DecodeError {
        DecodeError::Field { performative: self.name, field: self.field, problem }
    }

    /// A field that must be present.
    fn required<T>(&self, v: Option<T>) -> Result<T, DecodeError> {
        v.ok_or_else(|| self.wrong("is mandatory"))
    }

    pub(crate) fn opt_uint(&mut self, field: &'static str) -> Result<Option<u32>, DecodeError> {
        match self.next(field) {
            Value::Null => Ok(None),
            Value::Uint(v) => Ok(Some(v)),
            _ => Err(self.wrong("must be a uint")),
        }
    }

    pub(crate) fn uint(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let v = self.opt_uint(field)?;
        self.required(v)
    }

    pub(crate) fn opt_ushort(&mut self, field: &'static str) -> Result<Option<u16>, DecodeError> {
        match self.next(field) {
            Value::Null => Ok(None),
            Value::Ushort(v) => Ok(Some(v)),
            _ => Err(self.wrong("must be a ushort")),
        }
    }

    pub(crate) fn opt_ubyte(&mut self, field: &'static str) -> Result<Option<u8>, DecodeError> {
        match self.next(field) {
            Value::Null => Ok(None),
            Value::Ubyte(v) => Ok(Some(v)),
            _ => Err(self.wrong("must be a ubyte")),
        }
    }

    pub(crate) fn opt_ulong(&mut self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        match self.next(field) {
            Value::Null => Ok(None),
            Value::Ulong(v) => Ok(Some(v)),
            _ => Err(self.wrong("must be a ulong")),
        }
    }

    pub(crate) fn opt_bool(&mut self, field: &'static str) -> Result<Option<bool>, DecodeError> {
        match self.next(field) {
            Value::Null => Ok(None),
            Value::Bool(v) => Ok(Some(v)),
            _ => Err(self.wrong("must be a boolean")),
        }
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        let v = self.opt_bool(field)?;
        self.required(v)
    }

    pub(crate) fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.next(field) {
            Value::Null => Ok(None),
            Value::String(v) => Ok(Some(v)),
            _ => Err(self.wrong("must be a string")),
        }
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let v = self.opt_string(field)?;
        self.required(v)
    }

    pub(crate) fn opt_symbol(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.next(field) {
            Value::Null => Ok(None),
            Value::Symbol(v) => Ok(Some(v)),
            _ => Err(self.wrong("must be a symbol")),
        }
    }

    pub(crate) fn symbol(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let v = self.opt_symbol(field)?;
        self.required(v)
    }

    pub(crate) fn opt_binary(&mut self, field: &'static str) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.next(field) {
            Value::Null => Ok(None),
            Value::Binary(v) => Ok(Some(v)),
            _ => Err(self.wrong("must be binary")),
        }
    }

    /// A `multiple` symbol field (spec 1.4: one value, or an array of them).
    pub(crate) fn symbols(&mut self, field: &'static str) -> Result<Vec<String>, DecodeError> {
        match self.next(field) {
            Value::Null => Ok(Vec::new()),
            Value::Symbol(v) => Ok(vec![v]),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::Symbol(s) => Ok(s),
                    _ => Err(self.wrong("must be symbols")),
                })
                .collect(),
            _ => Err(self.wrong("must be symbols")),
        }
    }

    /// A `map` or `fields` field, kept as its pairs.
    pub(crate) fn map(&mut self, field: &'static str) -> Result<Vec<(Value, Value)>, DecodeError> {
        match self.next(field) {
            Value::Null => Ok(Vec::new()),
            Value::Map(pairs) => Ok(pairs),
            _ => Err(self.wrong("must be a map")),
        }
    }

    /// A field of any type (a `*` field, read by its own type's reader).
    pub(crate) fn any(&mut self, field: &'static str) -> Value {
        self.next(field)
    }
}

/// Writes a composite: its descriptor code and every field, nulls included. The spec lets
/// trailing nulls be left off (1.4), but clients build their frames from the whole list
/// (azure-eventhub's pyamqp fails on an `open` of fewer than its ten fields), so the hub
/// writes them all, as Azure does.
pub(crate) fn write(code: u64, fields: Vec<Value>) -> Value {
    Value::described(Descriptor::Code(code), Value::List(fields))
}

/// An optional value, or null.
pub(crate) fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    v.map(f).unwrap_or(Value::Null)
}

/// A `multiple` symbol field: null when empty, one symbol, or an array.
pub(crate) fn symbols(v: &[String]) -> Value {
    match v {
        [] => Value::Null,
        [one] => Value::Symbol(one.clone()),
        many => Value::Array(many.iter().map(|s| Value::Symbol(s.clone())).collect()),
    }
}

/// A map field: null when empty.
pub(crate) fn map(pairs: &[(Value, Value)]) -> Value {
    if pairs.is_empty() {
        Value::Null
    } else {
        Value::Map(pairs.to_vec())
    }
}
