//! Jobs (spec §3.6): one twin update or one direct method, run server-side over every device a
//! query condition selects, with a record per device; and rollouts, twinhub's twin-update jobs
//! in waves that stop themselves when devices refuse or do not catch up.
//!
//! - [`request`]: `PUT /jobs/v2/{id}` bodies, checked before anything runs.
//! - [`record`]: the job and per-device records, their statuses and wire shapes.
//! - [`rollout`]: waves, the per-device verdict read from the twin, and when a wave is done.
//! - [`executor`]: how a job runs: its next task, each device's call and what the answer does,
//!   a wave's judgement, a rollback, the pace.
//!
//! The Worker's jobs object stores these records and does the calls; every decision about what
//! a job does next is made here.

pub mod executor;
pub mod record;
pub mod request;
pub mod rollout;

pub use record::{DeviceJob, DeviceJobStatus, Job, JobStatus, Statistics};
pub use request::{JobRequest, JobType, Work};
pub use rollout::{RolloutPlan, RolloutState};

#[cfg(test)]
mod tests;
