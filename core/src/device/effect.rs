//! What one step of a device's machine asks of its adapter: the reply, what to write, and what
//! to do once the write is in.

use super::{ConnectVerdict, SessionRecord};
use crate::c2d::CloudToDeviceMessage;
use crate::twin::Change;
use crate::UnixMillis;
use serde::Serialize;
use serde_json::Value;

/// The outcome of one accepted command. A command that fails returns its error instead and has
/// changed nothing.
#[derive(Debug)]
pub struct Step {
    /// What the caller is answered, rendered by the adapter from the state after the step.
    pub reply: Reply,
    /// What changed, to be written in one synchronous stretch before any effect runs.
    pub persist: Persist,
    /// What to do once the write is in, in order.
    pub effects: Vec<Effect>,
}

impl Step {
    pub(super) fn reply(reply: Reply) -> Self {
        Self { reply, persist: Persist::default(), effects: Vec::new() }
    }
}

/// The answer to a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// The identity as `GET /devices/{id}` renders it, with its etag.
    Identity,
    /// The twin as `GET /twins/{id}` renders it, with its etag.
    Twin,
    /// The twin as a device's twin GET sees it.
    DeviceTwin,
    /// Done, nothing to say.
    NoContent,
    /// The session that asked is no longer the device's: its gateway ends it.
    SessionEnded,
    /// The answer to a CONNECT.
    Connect(ConnectVerdict),
    /// A reported patch was applied: reported `$version` is now this.
    ReportedVersion(u64),
    /// A cloud-to-device message was queued; `queued` are waiting now.
    Queued { message_id: String, queued: u64 },
    /// A job's update had already reached this twin, at twin `version`; nothing changed.
    JobRepeated { version: u64 },
    /// A job's rollback had nothing to give back: the job never reached this twin
    /// (`reached: false`) or was already rolled back.
    RollbackSkipped { reached: bool },
}

/// What a step changed. The adapter writes exactly these, then drives [`Step::effects`].
#[derive(Debug, Default, PartialEq)]
pub struct Persist {
    /// The identity and twin changed (or, when the device is gone, everything it had is to be
    /// freed). A device commit moves the object's commit counter, which orders the fleet
    /// index's projections.
    pub device: bool,
    /// The live session record changed (set, or gone).
    pub session: bool,
    /// The subscriptions kept for a CleanSession=0 reconnect changed.
    pub kept_subscriptions: bool,
    /// The catch-up baseline changed.
    pub desired_seen: bool,
    /// A twin change for the history.
    pub history: Option<HistoryEntry>,
    /// A job's mark, so its update is applied once and can be given back.
    pub job: Option<JobMark>,
    /// A cloud-to-device message to append to the queue.
    pub enqueue: Option<CloudToDeviceMessage>,
}

impl Persist {
    /// Whether nothing is to be written.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Work for the adapter after a commit.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Tell the operators watching the device live.
    Broadcast(LiveEvent),
    /// Send a desired patch (`patch` holds `$version`) to the device's session.
    NotifyDesired { session: SessionAddress, version: u64, patch: Value },
    /// Close a session that is no longer the device's.
    CloseSession { session: SessionAddress, reason: &'static str },
    /// Close every live view (the device is gone).
    CloseLiveViews { reason: &'static str },
    /// Send every queued cloud-to-device message to the device's session.
    DeliverCloudToDevice { session: SessionAddress },
    /// Push the committed state to the device's fleet index shard.
    Project,
    /// Delete these modules (by key): their device was deleted.
    DeleteModules(Vec<String>),
}

/// An event for live views.
#[derive(Debug, PartialEq, Eq)]
pub enum LiveEvent {
    /// The twin as it is now.
    Twin,
    /// The device was deleted.
    Deleted,
}

/// Where a session lives: its gateway shard and its connection id there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionAddress {
    /// Gateway shard name.
    pub gateway: String,
    /// Connection id within the shard.
    pub conn: String,
}

impl From<&SessionRecord> for SessionAddress {
    fn from(s: &SessionRecord) -> Self {
        Self { gateway: s.gateway.clone(), conn: s.conn.clone() }
    }
}

/// One accepted twin change, as the history keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// Twin `version` after the change.
    pub version: u64,
    /// When it was made.
    pub time: UnixMillis,
    /// Who made it: a policy name, `device`, `job:{id}`, `job:{id}:rollback`.
    pub actor: String,
    /// What changed.
    pub changes: Vec<Change>,
}

impl Serialize for HistoryEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The time as ISO 8601, as every other time the API shows.
        #[derive(Serialize)]
        struct Wire<'a> {
            version: u64,
            time: String,
            actor: &'a str,
            changes: &'a [Change],
        }
        Wire { version: self.version, time: self.time.to_iso(), actor: &self.actor, changes: &self.changes }
            .serialize(s)
    }
}

/// A job's twin change, recorded in the same commit as the change itself.
#[derive(Clone, Debug, PartialEq)]
pub enum JobMark {
    /// The job's update: remembered with its undo (a service patch, `None` when it changed
    /// nothing a rollback could give back), so it is never applied twice.
    Applied { job_id: String, revert: Option<Value> },
    /// The job's rollback: the update is given back.
    RolledBack { job_id: String },
}

/// What a job did to this twin, as recorded by [`JobMark`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    /// Twin `version` after the job's update.
    pub version: u64,
    /// The undo, as service patch JSON text.
    pub revert: Option<String>,
    /// Whether it was given back.
    pub rolled_back: bool,
}
