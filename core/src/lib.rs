//! twinhub-core: the rules of an IoT Hub device twin hub, with no I/O.
//!
//! Everything here can be stated without a network, a clock or storage: the twin document and its
//! patch rules ([`twin`]), device identities ([`identity`]), SAS tokens, connection strings and
//! policies ([`auth`]), and IoT Hub's error codes and envelope ([`error`]).
//!
//! The contract that keeps this crate usable from the Worker, the browser and native tests alike:
//! no function reads the clock or the random number generator. Time arrives as [`UnixMillis`]
//! and randomness as bytes, both passed in by the caller.

pub mod admission;
pub mod amqp;
pub mod auth;
pub mod c2d;
pub mod configuration;
pub mod console;
pub mod device;
pub mod error;
pub mod etag;
pub mod eventhub;
pub mod fixture;
pub mod fleet;
pub mod headroom;
pub mod identity;
pub mod job;
pub mod listener;
pub mod method;
pub mod mqtt;
pub mod overview;
pub mod pnp;
pub mod query;
pub mod route;
pub mod session;
pub mod telemetry;
pub mod throttle;
pub mod tier;
pub mod time;
pub mod twin;
pub mod upstream;
pub mod virtual_device;
pub mod wire;

pub use error::{ErrorCode, HubError};
pub use time::UnixMillis;
