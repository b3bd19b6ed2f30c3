//! A device's sessions: CONNECT, subscriptions, disconnect, and the desired catch-up that
//! follows a resubscription.

use super::{DeviceConfig, DeviceState, Effect, LiveEvent, Persist, Reply, SessionAddress, SessionRecord, Step};
use crate::auth::{authorize_device, AuthError, Policy};
use crate::identity::Status;
use crate::session::topic::Subscription;
use crate::UnixMillis;
use serde::{Deserialize, Serialize};

/// The device object's answer to a CONNECT, as the gateway reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "camelCase")]
pub enum ConnectVerdict {
    /// The session is the device's: CONNACK 0.
    #[serde(rename_all = "camelCase")]
    Accepted {
        /// Token expiry (Unix ms); the session ends then.
        expiry_ms: u64,
        /// Subscriptions kept from a previous CleanSession=0 session.
        subscriptions: Vec<Subscription>,
    },
    /// An unknown or disabled device, or a token that does not verify: CONNACK 5.
    NotAuthorized,
}

/// A CONNECT, as the gateway forwards it.
#[derive(Clone, Copy, Debug)]
pub struct ConnectRequest<'a> {
    /// The device id (MQTT client id).
    pub device_id: &'a str,
    /// The SAS token (MQTT password), if any.
    pub token: Option<&'a str>,
    /// The hub host the device addressed.
    pub host: &'a str,
    /// The gateway shard holding the connection.
    pub gateway: &'a str,
    /// The connection's id there.
    pub conn: &'a str,
    /// CleanSession flag.
    pub clean_session: bool,
    /// The IoT Plug and Play model the CONNECT announced, checked by the session.
    pub model_id: Option<&'a str>,
}

/// Why a CONNECT was refused (CONNACK 5 to the device; this detail only goes to the log).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    #[error("no such device")]
    UnknownDevice,
    #[error("the device is disabled")]
    Disabled,
    #[error("{0}")]
    Token(#[from] AuthError),
}

impl DeviceState {
    /// Whether `token` lets the device connect now (it exists, is enabled, and the token is
    /// its own, or a policy's with DeviceConnect, for `host`): the token's expiry (Unix
    /// seconds). A CONNECT checks this; an AMQP put-token for the device asks it alone.
    pub fn check_token(
        &self,
        device_id: &str,
        token: Option<&str>,
        host: &str,
        policies: &[Policy],
        now: UnixMillis,
    ) -> Result<u64, ConnectRefusal> {
        let device = self.device.as_ref().ok_or(ConnectRefusal::UnknownDevice)?;
        if device.identity.status != Status::Enabled {
            return Err(ConnectRefusal::Disabled);
        }
        let keys = [device.identity.primary_key.as_str(), device.identity.secondary_key.as_str()];
        let token = token.ok_or(AuthError::MissingToken)?;
        Ok(authorize_device(token, host, device_id, &keys, policies, now.as_secs())?)
    }

    /// A CONNECT: verify the token, then make this the device's one session. An older session
    /// is dropped (IoT Hub logs 400027); it is replaced in this step, so its later ops are
    /// refused, and its gateway is told after the commit.
    pub fn connect(
        &mut self,
        request: ConnectRequest<'_>,
        policies: &[Policy],
        config: DeviceConfig,
        now: UnixMillis,
    ) -> Result<Step, ConnectRefusal> {
        let expiry = self.check_token(request.device_id, request.token, request.host, policies, now)?;
        let device = self.device.as_mut().ok_or(ConnectRefusal::UnknownDevice)?;
        device.identity.connected = true;
        device.identity.connection_state_updated = now;
        // The twin's `modelId` is what the device last announced; a connection that announces
        // none leaves it (a device's model does not change by omission).
        if let Some(model_id) = request.model_id {
            device.identity.model_id = Some(model_id.to_owned());
        }
        device.identity.last_activity = now;
        let mut persist = Persist { device: true, session: true, ..Persist::default() };
        // A CleanSession=0 device gets its subscriptions back; CleanSession=1 starts afresh.
        let subscriptions = if request.clean_session {
            persist.kept_subscriptions = self.kept_subscriptions.take().is_some();
            Vec::new()
        } else {
            self.kept_subscriptions.clone().unwrap_or_default()
        };
        let record = SessionRecord {
            gateway: request.gateway.to_owned(),
            conn: request.conn.to_owned(),
            subscriptions: subscriptions.clone(),
        };
        let session = SessionAddress::from(&record);
        let older = self.session.replace(record);
        let mut effects = vec![Effect::Broadcast(LiveEvent::Twin)];
        if let Some(old) = older {
            effects.push(Effect::CloseSession { session: (&old).into(), reason: "a newer connection for this device" });
        }
        // Messages queued while it was away go out right after its CONNACK (the gateway
        // handles them behind the CONNECT it is answering).
        if subscriptions.contains(&Subscription::CloudToDevice) {
            effects.push(Effect::DeliverCloudToDevice { session: session.clone() });
        }
        // A kept desired subscription is a resubscription: catch up. Otherwise a device seen
        // for the first time gets its baseline now, and catches up when it subscribes.
        if subscriptions.contains(&Subscription::DesiredPatches) {
            persist.desired_seen = self.catch_up(&session, config, &mut effects);
        } else if self.desired_seen.is_none() {
            persist.desired_seen = self.mark_desired_seen();
        }
        effects.push(Effect::Project);
        let verdict = ConnectVerdict::Accepted { expiry_ms: expiry.saturating_mul(1000), subscriptions };
        Ok(Step { reply: Reply::Connect(verdict), persist, effects })
    }

    /// The session's subscriptions are now `subscriptions`; `keep` (CleanSession=0) keeps them
    /// for its next connection. Queued messages go out once it holds cloud-to-device, and a
    /// new desired subscription catches up.
    pub fn subscriptions_changed(
        &mut self,
        conn: &str,
        subscriptions: Vec<Subscription>,
        keep: bool,
        config: DeviceConfig,
    ) -> Step {
        let mut step = Step::reply(Reply::NoContent);
        let Some(record) = self.session.as_mut().filter(|s| s.conn == conn) else { return step };
        if keep {
            self.kept_subscriptions = Some(subscriptions.clone());
            step.persist.kept_subscriptions = true;
        }
        let desired_now = !record.subscriptions.contains(&Subscription::DesiredPatches)
            && subscriptions.contains(&Subscription::DesiredPatches);
        record.subscriptions = subscriptions;
        step.persist.session = true;
        let session = SessionAddress::from(&*record);
        if record.subscriptions.contains(&Subscription::CloudToDevice) {
            step.effects.push(Effect::DeliverCloudToDevice { session: session.clone() });
        }
        if desired_now && self.device.is_some() {
            step.persist.desired_seen = self.catch_up(&session, config, &mut step.effects);
        }
        step
    }

    /// Session `conn` ended. Anything else (an older session, already replaced) changes nothing.
    pub fn disconnected(&mut self, conn: &str, now: UnixMillis) -> Step {
        let mut step = Step::reply(Reply::NoContent);
        let (Some(device), Some(_)) = (self.device.as_mut(), self.session.as_ref().filter(|s| s.conn == conn)) else {
            return step;
        };
        device.identity.connected = false;
        device.identity.connection_state_updated = now;
        device.identity.last_activity = now;
        self.session = None;
        step.persist.device = true;
        step.persist.session = true;
        step.effects = vec![Effect::Broadcast(LiveEvent::Twin), Effect::Project];
        step
    }

    /// Sends `session` the desired changes the device has not seen, as one patch
    /// ([`crate::twin::catch_up::DesiredSeen::catch_up`]), when catch-up is on. With no baseline yet, the current
    /// desired becomes it and nothing is sent. Whether the baseline moved.
    fn catch_up(&mut self, session: &SessionAddress, config: DeviceConfig, effects: &mut Vec<Effect>) -> bool {
        let Some(device) = &self.device else { return false };
        if !config.catch_up {
            return false;
        }
        let Some(seen) = &self.desired_seen else { return self.mark_desired_seen() };
        let Some(patch) = seen.catch_up(&device.twin) else { return false };
        let version = device.twin.desired.version;
        effects.push(Effect::NotifyDesired { session: session.clone(), version, patch });
        self.mark_desired_seen()
    }
}
