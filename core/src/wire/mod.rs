//! The REST API's answers as typed values, for the hub's clients in this workspace: the
//! dashboard (`app/src/api.rs`) and the test harness read answers into these instead of
//! indexing JSON. The hub renders them in its own modules (`twin::Twin::to_service_json`,
//! `identity::DeviceIdentity::to_wire`, `job::record`, `configuration`); `wire/tests.rs`
//! renders with those and reads back, so the two cannot drift apart.
//!
//! Every type reads what an Azure IoT Hub sends too (upstream mode passes its answers through):
//! fields a hub may leave out default; fields no client here reads are skipped, except where a
//! client shows the value whole or sends it back (a twin, an identity: `rest`). Flattening is
//! kept to those: it costs the dashboard's wasm a buffered second deserializer per type.

pub mod device;
pub mod job;
pub mod overview;
pub mod telemetry;
pub mod twin;

pub use device::{Identity, MessageQueued, MethodResult, SessionInfo};
pub use job::{ConfigurationView, DeviceJobView, JobView};
pub use overview::Overview;
pub use telemetry::{
    FleetAlert, FleetAlerts, FleetSeries, History, HistoryEntry, Series, StoredMessage, TelemetryPage,
};
pub use twin::{LiveEvent, Twin};

#[cfg(test)]
mod tests;
