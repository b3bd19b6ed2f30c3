//! AMQP 1.0 (OASIS standard, 2012) as IoT Hub's service and Event Hub-compatible endpoints
//! speak it: the type system, frames, performatives, the SASL layer and the message format.
//! No I/O: bytes in, frames out, and back.
//!
//! Hand-written, as the MQTT codec is: the one crate with the AMQP type system for Rust
//! (`serde_amqp` 0.18, under `fe2o3-amqp-types`) panics on the four bytes `c0 00 00 00` (a list8
//! whose size is smaller than its header: an unchecked subtraction), found within seconds of
//! fuzzing it; a panic in the Worker kills the isolate and every device on it.
//!
//! The layers, each strict and each citing the section it enforces in its errors:
//! [`types`] (spec part 1: every primitive, described types, list / map / array, read with
//! sizes and counts checked against the bytes actually sent, nesting bounded), [`Frame`]
//! (2.3: size, data offset, type; a frame over the agreed maximum is refused from its first
//! four bytes), [`Performative`] and [`Sasl`] (2.7, 5.3.3: typed, mandatory fields required),
//! [`Message`] (3.2: sections in order, body kinds not mixed, application properties simple).

pub mod cbs;
pub mod connection;
pub mod device;
mod error;
mod fields;
mod frame;
mod message;
mod performative;
pub mod types;

pub use connection::{Connection, Event, Limits, LinkId, SendError};
pub use error::{DecodeError, EncodeError};
pub use frame::{Body, Frame, ProtocolHeader, MIN_MAX_FRAME_SIZE};
pub use message::{Body as MessageBody, Header, Message, Properties};
pub use performative::{
    AmqpError, Attach, Begin, DeliveryState, Detach, Disposition, Flow, Open, Performative, Role, Sasl, Source, Target,
    Transfer,
};
pub use types::{Descriptor, Value};

#[cfg(test)]
mod test_peer;
#[cfg(test)]
mod tests;
