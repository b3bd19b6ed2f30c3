//! One device's rules as a sans-I/O machine: what its Durable Object does with each request,
//! stated without storage, sockets or a clock.
//!
//! The adapter keeps a [`DeviceState`] in memory (read from storage once per object), calls one
//! method per request, and gets back a [`Step`]: the [`Reply`], what to write ([`Persist`]),
//! and the [`Effect`]s to drive after the write (tell the device's gateway, push to the fleet
//! index, tell live views). Call order: write what `persist` names in one synchronous stretch,
//! then drive the effects, then render the reply from the state.
//!
//! All or nothing: a method that returns an error has changed nothing in the state, so the
//! adapter never has to undo. The twin rules themselves live in [`crate::twin`], the identity
//! rules in [`crate::identity`]; this module decides which of them a request runs, and what
//! else follows (a session dropped, a device told, a job remembered).

mod connect;
mod effect;
#[cfg(test)]
mod tests;

pub use connect::{ConnectRefusal, ConnectRequest, ConnectVerdict};
pub use effect::{Effect, HistoryEntry, JobMark, JobRecord, LiveEvent, Persist, Reply, SessionAddress, Step};

use crate::c2d::{CloudToDeviceMessage, MAX_QUEUE_DEPTH};
use crate::identity::{DeviceIdentity, DeviceRequest, MAX_MODULES_PER_DEVICE};
use crate::session::topic::Subscription;
use crate::twin::catch_up::DesiredSeen;
use crate::twin::{
    revert_patch, AppliedConfiguration, Change, ReportedPatch, ServicePatch, Twin, TwinError, TwinReplacement,
};
use crate::{ErrorCode, HubError, UnixMillis};
use serde::{Deserialize, Serialize};

/// A device that exists: its registry entry and its twin.
#[derive(Clone, Debug, PartialEq)]
pub struct Device {
    pub identity: DeviceIdentity,
    pub twin: Twin,
}

/// The device's live MQTT session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Gateway shard name.
    pub gateway: String,
    /// Connection id within the shard.
    pub conn: String,
    /// What the session is subscribed to now.
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
}

/// Settings that change what the rules do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Whether a device that resubscribes to desired patches is sent what it missed
    /// ([`crate::twin::catch_up`]).
    pub catch_up: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self { catch_up: true }
    }
}

/// Everything a device object knows about its device, as kept in memory between requests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceState {
    /// `None` until created, and again once deleted.
    pub device: Option<Device>,
    /// The one live session, if any.
    pub session: Option<SessionRecord>,
    /// Subscriptions a CleanSession=0 session kept for the next connection.
    pub kept_subscriptions: Option<Vec<Subscription>>,
    /// What the device was last told of desired: the catch-up baseline.
    pub desired_seen: Option<DesiredSeen>,
}

/// A service write to the twin.
#[derive(Debug)]
pub enum TwinWrite {
    /// `PATCH /twins/{id}`: tags and desired merge.
    Patch(ServicePatch),
    /// `PUT /twins/{id}`: tags and desired replaced.
    Replace(TwinReplacement),
}

/// Who asked for a service write, and on what condition.
#[derive(Clone, Copy, Debug)]
pub struct WriteBy<'a> {
    /// The `If-Match` header, if any.
    pub if_match: Option<&'a str>,
    /// The history's actor: the policy's name, `job:{id}`, ...
    pub actor: &'a str,
}

impl DeviceState {
    /// The device, or 404 DeviceNotFound.
    pub fn require(&self, device_id: &str) -> Result<&Device, HubError> {
        self.device.as_ref().ok_or_else(|| not_found(device_id))
    }

    /// `PUT /devices/{id}`: create, or update when `if_match` is given or `upsert` is set (a
    /// bulk `createOrUpdate`). Disabling a device or changing its keys ends its live session.
    /// `random` is key material for keys a new device's request leaves out.
    pub fn put_identity(
        &mut self,
        device_id: &str,
        request: &DeviceRequest,
        if_match: Option<&str>,
        upsert: bool,
        now: UnixMillis,
        random: &[u8; 64],
    ) -> Result<Step, HubError> {
        let mut next = match &self.device {
            Some(existing) if if_match.is_some() || upsert => {
                check_etag(&existing.identity.etag_string(), if_match)?;
                let mut identity = existing.identity.clone();
                identity.update(request, now)?;
                Device { identity, twin: existing.twin.clone() }
            }
            Some(_) => return Err(already_exists(device_id)),
            None => Device { identity: DeviceIdentity::create(device_id, request, now, random)?, twin: Twin::new(now) },
        };
        let mut step = Step::reply(Reply::Identity);
        let drop_session = self.device.as_ref().is_some_and(|old| {
            old.identity.status != next.identity.status
                || old.identity.primary_key != next.identity.primary_key
                || old.identity.secondary_key != next.identity.secondary_key
        });
        if let Some(ended) = self.session.take_if(|_| drop_session) {
            next.identity.connected = false;
            next.identity.connection_state_updated = now;
            step.persist.session = true;
            step.effects.push(Effect::CloseSession {
                session: SessionAddress::from(&ended),
                reason: "device disabled or keys changed",
            });
        }
        self.device = Some(next);
        step.persist.device = true;
        step.effects.insert(0, Effect::Broadcast(LiveEvent::Twin));
        step.effects.push(Effect::Project);
        Ok(step)
    }

    /// `DELETE /devices/{id}`: the device and everything it had are gone at once; its session
    /// and live views end (IoT Hub ends a deleted device's connections immediately).
    pub fn delete(&mut self, device_id: &str, if_match: Option<&str>) -> Result<Step, HubError> {
        let current = self.require(device_id)?.identity.etag_string();
        check_etag(&current, if_match)?;
        let mut step = Step::reply(Reply::NoContent);
        step.persist.device = true;
        step.effects.push(Effect::Broadcast(LiveEvent::Deleted));
        if let Some(session) = self.session.take() {
            step.effects.push(Effect::CloseSession { session: (&session).into(), reason: "the device was deleted" });
        }
        step.effects.push(Effect::CloseLiveViews { reason: "the device was deleted" });
        step.effects.push(Effect::Project);
        let modules = self.device.as_ref().map(|d| d.identity.modules.clone()).unwrap_or_default();
        if !modules.is_empty() {
            // A device's modules go with it (IoT Hub deletes them with the device).
            let keys = modules.iter().map(|m| crate::identity::module_key(device_id, m)).collect();
            step.effects.push(Effect::DeleteModules(keys));
        }
        *self = Self::default();
        Ok(step)
    }

    /// Makes room for module `module_id` on this device before the module is created: 404
    /// when the device does not exist, [`crate::identity::MAX_MODULES_PER_DEVICE`] at most. A
    /// module already listed is no change (its own create then answers whether it exists).
    pub fn add_module(&mut self, device_id: &str, module_id: &str) -> Result<Step, HubError> {
        let device = self.device.as_mut().ok_or_else(|| not_found(device_id))?;
        let modules = &mut device.identity.modules;
        let at = match modules.binary_search_by(|m| m.as_str().cmp(module_id)) {
            Ok(_) => return Ok(Step::reply(Reply::NoContent)),
            Err(at) => at,
        };
        if modules.len() >= MAX_MODULES_PER_DEVICE {
            return Err(HubError::new(
                ErrorCode::TooManyModulesOnDevice,
                format!("device {device_id} holds {MAX_MODULES_PER_DEVICE} modules, the most a device may hold"),
            ));
        }
        modules.insert(at, module_id.to_owned());
        let mut step = Step::reply(Reply::NoContent);
        step.persist.device = true;
        Ok(step)
    }

    /// Forgets module `module_id` (deleted, or never created after [`Self::add_module`]).
    pub fn remove_module(&mut self, module_id: &str) -> Step {
        let Some(device) = self.device.as_mut() else { return Step::reply(Reply::NoContent) };
        let before = device.identity.modules.len();
        device.identity.modules.retain(|m| m != module_id);
        let mut step = Step::reply(Reply::NoContent);
        step.persist.device = device.identity.modules.len() != before;
        step
    }

    /// A service write (`PATCH` or `PUT /twins/{id}`): `If-Match`, then the twin's rules (all or
    /// nothing), a history entry, and the device told of desired changes.
    pub fn write_twin(
        &mut self,
        device_id: &str,
        write: &TwinWrite,
        by: WriteBy<'_>,
        now: UnixMillis,
    ) -> Result<Step, HubError> {
        self.service_write(device_id, write, by, now, |_| None)
    }

    /// A job's twin update, applied at most once per job: `done` is what this job already did
    /// here, if anything (a retry after a restart answers as the first call did).
    pub fn job_update(
        &mut self,
        device_id: &str,
        job_id: &str,
        patch: &str,
        done: Option<&JobRecord>,
        now: UnixMillis,
    ) -> Result<Step, HubError> {
        if let Some(done) = done {
            return Ok(Step::reply(Reply::JobRepeated { version: done.version }));
        }
        let write = TwinWrite::Patch(ServicePatch::parse(patch).map_err(|e| HubError::from(&e))?);
        let actor = format!("job:{job_id}");
        self.service_write(device_id, &write, WriteBy { if_match: None, actor: &actor }, now, |changes| {
            Some(JobMark::Applied { job_id: job_id.to_owned(), revert: revert_patch(changes) })
        })
    }

    /// Gives back what job `job_id` changed here (`done`), once.
    pub fn job_rollback(
        &mut self,
        device_id: &str,
        job_id: &str,
        done: Option<&JobRecord>,
        now: UnixMillis,
    ) -> Result<Step, HubError> {
        let done = match done {
            Some(done) if !done.rolled_back => done,
            // Never reached, or already given back: nothing to do.
            other => return Ok(Step::reply(Reply::RollbackSkipped { reached: other.is_some() })),
        };
        let patch = match done.revert.as_deref() {
            Some(text) => ServicePatch::parse(text).map_err(|e| HubError::from(&e))?,
            None => ServicePatch::default(),
        };
        let actor = format!("job:{job_id}:rollback");
        let by = WriteBy { if_match: None, actor: &actor };
        self.service_write(device_id, &TwinWrite::Patch(patch), by, now, |_| {
            Some(JobMark::RolledBack { job_id: job_id.to_owned() })
        })
    }

    /// An automatic device configuration's verdict for this twin: `Some` applies that
    /// configuration's content (once per revision: a twin that has it already is no change),
    /// recorded in the history as `configuration:{id}`; `None` (no configuration targets the
    /// twin any more) forgets the applied one and leaves the values it set.
    pub fn apply_configuration(
        &mut self,
        device_id: &str,
        verdict: Option<(AppliedConfiguration, &str)>,
        now: UnixMillis,
    ) -> Result<Step, HubError> {
        let device = self.device.as_mut().ok_or_else(|| not_found(device_id))?;
        let Some((applied, patch)) = verdict else {
            if device.twin.configuration.take().is_none() {
                return Ok(Step::reply(Reply::NoContent));
            }
            let mut step = Step::reply(Reply::NoContent);
            step.persist.device = true;
            step.effects = vec![Effect::Broadcast(LiveEvent::Twin), Effect::Project];
            return Ok(step);
        };
        if device.twin.configuration.as_ref() == Some(&applied) {
            return Ok(Step::reply(Reply::NoContent));
        }
        let write = TwinWrite::Patch(ServicePatch::parse(patch).map_err(|e| HubError::from(&e))?);
        let actor = format!("configuration:{}", applied.id);
        let mut step =
            self.service_write(device_id, &write, WriteBy { if_match: None, actor: &actor }, now, |_| None)?;
        if let Some(device) = self.device.as_mut() {
            device.twin.configuration = Some(applied);
        }
        step.reply = Reply::NoContent;
        Ok(step)
    }

    fn service_write(
        &mut self,
        device_id: &str,
        write: &TwinWrite,
        by: WriteBy<'_>,
        now: UnixMillis,
        mark: impl FnOnce(&[Change]) -> Option<JobMark>,
    ) -> Result<Step, HubError> {
        let device = self.device.as_mut().ok_or_else(|| not_found(device_id))?;
        check_etag(&device.twin.etag_string(), by.if_match)?;
        let applied = match write {
            TwinWrite::Patch(patch) => device.twin.apply_service_patch(patch, now),
            TwinWrite::Replace(replacement) => device.twin.replace(replacement, now),
        };
        let changes = applied.map_err(|e: TwinError| HubError::from(&e))?;
        let desired_changed = changes.iter().any(|c| c.path.starts_with("properties.desired."));
        let mut step = Step::reply(Reply::Twin);
        step.persist.device = true;
        step.persist.job = mark(&changes);
        step.persist.history =
            Some(HistoryEntry { version: device.twin.version, time: now, actor: by.actor.to_owned(), changes });
        step.effects.push(Effect::Broadcast(LiveEvent::Twin));
        if let (true, Some(session)) = (desired_changed, &self.session) {
            // A patch is sent as applied; a replacement as the whole new desired.
            let patch = match write {
                TwinWrite::Patch(patch) => device.twin.desired_notification(patch.desired.as_ref()),
                TwinWrite::Replace(_) => device.twin.desired_notification(None),
            };
            // A session subscribed to desired is told now, so this is what the device has seen.
            if session.subscriptions.contains(&Subscription::DesiredPatches) {
                self.desired_seen = Some(DesiredSeen::of(&device.twin));
                step.persist.desired_seen = true;
            }
            let version = device.twin.desired.version;
            step.effects.push(Effect::NotifyDesired { session: session.into(), version, patch });
        }
        step.effects.push(Effect::Project);
        Ok(step)
    }

    /// Queues a cloud-to-device message: at most [`MAX_QUEUE_DEPTH`] wait for one device.
    pub fn enqueue_cloud_to_device(
        &mut self,
        device_id: &str,
        message: CloudToDeviceMessage,
    ) -> Result<Step, HubError> {
        let device = self.device.as_mut().ok_or_else(|| not_found(device_id))?;
        let waiting = device.identity.cloud_to_device_count;
        if waiting >= MAX_QUEUE_DEPTH {
            return Err(HubError::new(
                ErrorCode::DeviceMaximumQueueDepthExceeded,
                format!(
                    "{waiting} messages are already waiting for device {device_id}; the limit is {MAX_QUEUE_DEPTH}"
                ),
            ));
        }
        device.identity.cloud_to_device_count += 1;
        let reply = Reply::Queued { message_id: message.message_id.clone(), queued: waiting + 1 };
        let mut step = Step::reply(reply);
        step.persist.device = true;
        step.persist.enqueue = Some(message);
        step.effects.push(Effect::Broadcast(LiveEvent::Twin));
        if let Some(session) = self.session.as_ref().filter(|s| s.subscriptions.contains(&Subscription::CloudToDevice))
        {
            step.effects.push(Effect::DeliverCloudToDevice { session: session.into() });
        }
        step.effects.push(Effect::Project);
        Ok(step)
    }

    /// A queued message was completed by the device's PUBACK and removed from the queue.
    pub fn cloud_to_device_completed(&mut self) -> Step {
        let Some(device) = self.device.as_mut() else { return Step::reply(Reply::NoContent) };
        device.identity.cloud_to_device_count = device.identity.cloud_to_device_count.saturating_sub(1);
        let mut step = Step::reply(Reply::NoContent);
        step.persist.device = true;
        step.effects = vec![Effect::Broadcast(LiveEvent::Twin), Effect::Project];
        step
    }

    /// Whether `conn` is the device's session now (404 when the device does not exist). Every
    /// op a session sends names its `conn`, so a socket left over from a deleted, disabled or
    /// re-keyed device, or replaced by a newer connection, can never act on the device.
    pub fn is_session(&self, device_id: &str, conn: &str) -> Result<bool, HubError> {
        self.require(device_id)?;
        Ok(self.session.as_ref().is_some_and(|s| s.conn == conn))
    }

    /// A device's twin GET on session `conn`. The device now has the current desired: the
    /// catch-up baseline moves (written only when its version moved: a GET is a read).
    pub fn twin_get(&mut self, device_id: &str, conn: &str) -> Result<Step, HubError> {
        if !self.is_session(device_id, conn)? {
            return Ok(Step::reply(Reply::SessionEnded));
        }
        let mut step = Step::reply(Reply::DeviceTwin);
        step.persist.desired_seen = self.mark_desired_seen();
        Ok(step)
    }

    /// A device's reported patch (`body` as sent) on session `conn`.
    pub fn report(&mut self, device_id: &str, conn: &str, body: &[u8], now: UnixMillis) -> Result<Step, HubError> {
        if !self.is_session(device_id, conn)? {
            return Ok(Step::reply(Reply::SessionEnded));
        }
        let patch = ReportedPatch::parse(body).map_err(|e| HubError::from(&e))?;
        let device = self.device.as_mut().ok_or_else(|| not_found(device_id))?;
        let changes = device.twin.apply_reported_patch(&patch, now).map_err(|e| HubError::from(&e))?;
        device.identity.last_activity = now;
        let mut step = Step::reply(Reply::ReportedVersion(device.twin.reported.version));
        step.persist.device = true;
        step.persist.history =
            Some(HistoryEntry { version: device.twin.version, time: now, actor: "device".to_owned(), changes });
        step.effects = vec![Effect::Broadcast(LiveEvent::Twin), Effect::Project];
        Ok(step)
    }

    /// Sets the catch-up baseline to the current desired; whether it moved.
    fn mark_desired_seen(&mut self) -> bool {
        let Some(device) = &self.device else { return false };
        if self.desired_seen.as_ref().is_some_and(|s| s.version == device.twin.desired.version) {
            return false;
        }
        self.desired_seen = Some(DesiredSeen::of(&device.twin));
        true
    }
}

/// 404 for the identity `key`: DeviceNotFound, or ModuleNotFound for a module.
fn not_found(key: &str) -> HubError {
    match crate::identity::split_key(key) {
        (device, None) => HubError::new(ErrorCode::DeviceNotFound, format!("Device {device} not found")),
        (device, Some(module)) => {
            HubError::new(ErrorCode::ModuleNotFound, format!("Module {module} on device {device} not found"))
        }
    }
}

/// 409 for creating `key` again.
fn already_exists(key: &str) -> HubError {
    match crate::identity::split_key(key) {
        (device, None) => {
            HubError::new(ErrorCode::DeviceAlreadyExists, format!("A device with ID '{device}' is already registered."))
        }
        (device, Some(module)) => HubError::new(
            ErrorCode::ModuleAlreadyExistsOnDevice,
            format!("A module with ID '{module}' is already registered on device '{device}'."),
        ),
    }
}

/// `If-Match` against the current etag (see [`crate::etag`]): 412 with the current etag named.
fn check_etag(current: &str, if_match: Option<&str>) -> Result<(), HubError> {
    if crate::etag::if_match_allows(current, if_match) {
        return Ok(());
    }
    Err(HubError::new(
        ErrorCode::PreconditionFailed,
        format!("Precondition failed: If-Match does not match the current etag \"{current}\"; read the twin again and retry."),
    ))
}
