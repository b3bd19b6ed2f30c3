//! An IoT Hub device session over MQTT, server role, as a sans-I/O state machine. The device's
//! role is [`client::DeviceClient`].
//!
//! The adapter (a Durable Object holding the WebSocket) feeds it bytes and the clock, and acts
//! on what it asks for. Call order, after any input (`handle_bytes`, `handle_timeout`,
//! `authenticated`, or a command such as `push_desired`): drain [`Session::poll_transmit`]
//! (bytes for the socket), then [`Session::poll_event`] (work for the adapter), then re-arm the
//! timer from [`Session::poll_timeout`]. When an event is `Closed`, send what is left to
//! transmit and close the socket.
//!
//! Authentication is an event, not a callback: CONNECT yields [`SessionEvent::Authenticate`],
//! the adapter checks the token against the device's keys and answers with
//! [`Session::authenticated`]. That keeps storage out of core.
//!
//! A protocol violation is fatal and sticky: the session queues what the standard allows (a
//! refusing CONNACK), reports `Closed` once, and ignores further input.

pub mod client;
pub mod topic;

use crate::mqtt::{self, ConnAck, ConnectReturnCode, DecodeError, Packet, PacketId, Publish, QoS, SubscribeReturnCode};
use crate::UnixMillis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroU16;
use topic::{DeviceTopic, Subscription};

/// How long a new connection may take to send CONNECT.
pub const CONNECT_TIMEOUT_MS: u64 = 30_000;
/// IoT Hub's cap on the server-side keep-alive timeout (spec §5.1).
pub const MAX_KEEP_ALIVE_TIMEOUT_MS: u64 = 1_767_000;
/// Subscriptions a device may hold at once.
pub const MAX_SUBSCRIPTIONS: usize = 5;
/// The latest token expiry a session keeps: the largest integer a JavaScript number holds
/// exactly (the year 287,396), so the session survives serialization to a WebSocket attachment.
pub const MAX_EXPIRY: UnixMillis = UnixMillis((1 << 53) - 1);
/// What a [`Session::snapshot`] serializes to at most, as JSON, whatever the device sent: the
/// gateway keeps it in the socket's attachment beside a few fields of its own, and Cloudflare
/// caps an attachment at 16,384 bytes. Every field it holds is bounded by construction: the
/// device id by IoT Hub's id rules (checked at CONNECT), the subscriptions by their enum, the
/// rest are numbers; the unfinished packet is never in it.
pub const MAX_SNAPSHOT_BYTES: usize = 1_024;
/// The longest hub name a CONNECT user name may carry (a DNS name of 253 characters and a
/// `:port`); a longer one names no hub.
pub const MAX_HUB_NAME_LEN: usize = 253 + 6;

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CloseReason {
    /// The device sent DISCONNECT.
    ClientDisconnect,
    /// No CONNECT in time.
    ConnectTimeout,
    /// Nothing heard for 1.5 x keep-alive.
    KeepAliveTimeout,
    /// CONNACK refused the connection.
    Refused(u8),
    /// The SAS token expired while connected.
    TokenExpired,
    /// Bytes that are not valid MQTT 3.1.1, or a packet out of order.
    ProtocolViolation(String),
    /// A topic or filter the device may not use.
    TopicRefused(String),
    /// QoS 2, which IoT Hub does not support.
    QoS2,
    /// Closed by the hub (a newer connection, a disabled device, shutdown).
    Hub(String),
}

/// The hub host named by an IoT Hub CONNECT user name, `{host}/{deviceId}/?api-version=...`
/// (spec §5.2): over raw TCP, with no Host header, the host the device believes it dialled.
pub fn username_host(username: &str) -> &str {
    let host = username.split('/').next().unwrap_or_default();
    if host.len() > MAX_HUB_NAME_LEN {
        return "";
    }
    host
}

/// Work for the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// CONNECT arrived: check the token and answer with [`Session::authenticated`].
    Authenticate {
        /// The device id (MQTT client id).
        device_id: String,
        /// The user name (`{host}/{device}/?api-version=...`).
        username: Option<String>,
        /// The password: the SAS token, if any.
        token: Option<String>,
        /// CleanSession flag.
        clean_session: bool,
        /// The IoT Plug and Play model the user name announces (`model-id=`), checked.
        model_id: Option<String>,
    },
    /// Twin GET: answer with [`Session::reply_twin`].
    TwinGet {
        /// Request id.
        rid: String,
    },
    /// Reported properties patch: answer with [`Session::reply_twin`].
    ReportedPatch {
        /// Request id.
        rid: String,
        /// The JSON patch, as sent.
        body: Vec<u8>,
    },
    /// A device's answer to a direct method.
    MethodResponse {
        /// The method call's request id.
        rid: String,
        /// The device's status.
        status: i32,
        /// The device's JSON (or empty).
        body: Vec<u8>,
    },
    /// Device-to-cloud telemetry. When `ack` is set, call [`Session::ack`] once it is stored.
    Telemetry {
        /// Decoded property bag.
        properties: Vec<(String, Option<String>)>,
        /// The message body.
        body: Vec<u8>,
        /// QoS 1 packet id to acknowledge after storing.
        ack: Option<PacketId>,
    },
    /// The device acknowledged a cloud-to-device message.
    CloudToDeviceAck(PacketId),
    /// The device rejected a cloud-to-device message
    /// ([`DeviceTopic::CloudToDeviceRejected`]): it is done, with a `Rejected` outcome.
    CloudToDeviceRejected(PacketId),
    /// The device changed its subscriptions (queued cloud-to-device messages may now be sent).
    /// When `keep` is set (CleanSession=0), keep them for its next connection (MQTT
    /// [MQTT-3.1.2-4]; the Azure SDKs do not subscribe again after reconnecting).
    SubscriptionsChanged {
        /// All subscriptions now held.
        subscriptions: Vec<Subscription>,
        /// Whether they outlive this connection.
        keep: bool,
    },
    /// The session is over; close the socket after draining `poll_transmit`.
    Closed(CloseReason),
}

/// What the adapter grants a verified CONNECT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// When the device's SAS token expires; the session ends then.
    pub token_expiry: Option<UnixMillis>,
    /// Subscriptions kept from the device's previous CleanSession=0 session.
    pub subscriptions: Vec<Subscription>,
}

/// A command that needs a subscription the device does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the device is not connected or not subscribed to {0:?}")]
pub struct NotSubscribed(pub Subscription);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    AwaitingConnect { deadline: UnixMillis },
    Authenticating,
    Connected,
    Closed,
}

/// The session. [`Session::snapshot`] and [`Session::restore`] carry it across Durable Object
/// hibernation (as a WebSocket attachment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    phase: Phase,
    device_id: String,
    /// Bytes received but not yet a whole packet. Not serialized: a WebSocket attachment is
    /// capped at 16 KiB on Cloudflare and a packet may be 256 KiB, so the adapter keeps these
    /// bytes itself between events ([`Session::take_partial_input`]).
    #[serde(skip)]
    pending: Vec<u8>,
    /// How many bytes the adapter took with [`Session::take_partial_input`] and must give back.
    #[serde(default)]
    pending_len: usize,
    subscriptions: BTreeSet<Subscription>,
    clean_session: bool,
    keep_alive_ms: u64,
    last_heard: UnixMillis,
    token_expiry: Option<UnixMillis>,
    next_packet_id: u16,
    max_packet_bytes: usize,
    #[serde(skip)]
    transmit: VecDeque<Vec<u8>>,
    #[serde(skip)]
    events: VecDeque<SessionEvent>,
}

impl Session {
    /// A session for a connection accepted at `now`.
    pub fn new(now: UnixMillis) -> Self {
        Self::with_connect_timeout(now, CONNECT_TIMEOUT_MS)
    }

    /// A session whose CONNECT must arrive within `connect_timeout_ms`.
    pub fn with_connect_timeout(now: UnixMillis, connect_timeout_ms: u64) -> Self {
        Self {
            phase: Phase::AwaitingConnect { deadline: UnixMillis(now.0.saturating_add(connect_timeout_ms)) },
            device_id: String::new(),
            pending: Vec::new(),
            pending_len: 0,
            subscriptions: BTreeSet::new(),
            clean_session: true,
            keep_alive_ms: 0,
            last_heard: now,
            token_expiry: None,
            next_packet_id: 1,
            max_packet_bytes: mqtt::MAX_PACKET_BYTES,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The authenticated device id (empty before CONNECT).
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Whether the device is authenticated and the session open.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// Whether the device holds `subscription`.
    pub fn is_subscribed(&self, subscription: Subscription) -> bool {
        self.is_connected() && self.subscriptions.contains(&subscription)
    }

    /// The state to keep while the object sleeps. Take it after draining the outputs.
    pub fn snapshot(&self) -> Self {
        let mut s = self.clone();
        s.transmit.clear();
        s.events.clear();
        s
    }

    /// Hands the bytes of an unfinished packet to the adapter, to keep outside the snapshot;
    /// the session remembers how many it is owed. Call after draining the outputs, before
    /// taking the snapshot.
    pub fn take_partial_input(&mut self) -> Vec<u8> {
        let bytes = std::mem::take(&mut self.pending);
        self.pending_len = bytes.len();
        bytes
    }

    /// Gives back what [`Session::take_partial_input`] took (empty if the adapter lost it, say
    /// because the object was evicted mid-packet). Bytes of the wrong length cannot be trusted
    /// to continue the stream, so the session ends (the device reconnects and resends what
    /// was not acknowledged). Call before any other input.
    pub fn restore_partial_input(&mut self, bytes: Vec<u8>) {
        if !self.pending.is_empty() || self.phase == Phase::Closed {
            return;
        }
        let owed = std::mem::take(&mut self.pending_len);
        if bytes.len() != owed {
            return self.close(CloseReason::ProtocolViolation(format!(
                "{owed} bytes of a packet split across frames were lost by the hub; reconnect and resend"
            )));
        }
        self.pending = bytes;
    }

    /// Bytes arrived from the socket.
    pub fn handle_bytes(&mut self, now: UnixMillis, bytes: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        self.last_heard = now;
        self.pending.extend_from_slice(bytes);
        loop {
            match mqtt::decode(&self.pending, self.max_packet_bytes) {
                Ok(Some((packet, used))) => {
                    self.pending.drain(..used);
                    self.handle_packet(now, packet);
                    if self.phase == Phase::Closed {
                        self.pending.clear();
                        return;
                    }
                }
                Ok(None) => return,
                Err(DecodeError::ProtocolLevel(_)) if matches!(self.phase, Phase::AwaitingConnect { .. }) => {
                    // The one decode error MQTT answers: CONNACK 1 [MQTT-3.1.2-2].
                    return self.refuse(ConnectReturnCode::UnacceptableProtocolVersion);
                }
                Err(e) => return self.close(CloseReason::ProtocolViolation(e.to_string())),
            }
        }
    }

    /// The timer set from [`Session::poll_timeout`] fired (spurious calls do nothing).
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        match self.phase {
            Phase::AwaitingConnect { deadline } if now >= deadline => self.close(CloseReason::ConnectTimeout),
            Phase::Connected => {
                if self.keep_alive_ms > 0 && now.0 >= self.last_heard.0 + self.keep_alive_ms {
                    self.close(CloseReason::KeepAliveTimeout);
                } else if self.token_expiry.is_some_and(|t| now >= t) {
                    self.close(CloseReason::TokenExpired);
                }
            }
            _ => {}
        }
    }

    /// The adapter's verdict on [`SessionEvent::Authenticate`]: `Ok` accepts (restoring the
    /// kept subscriptions of a CleanSession=0 device), `Err(code)` refuses with that CONNACK
    /// code (5 for a bad token, unknown or disabled device).
    pub fn authenticated(&mut self, verdict: Result<Accepted, ConnectReturnCode>) {
        if self.phase != Phase::Authenticating {
            return;
        }
        match verdict {
            Ok(accepted) => {
                // A token's `se` may be any u64; past 2^53 ms the expiry could not be kept in
                // a JavaScript number (the attachment), so it is held at that far future.
                self.token_expiry = accepted.token_expiry.map(|t| t.min(MAX_EXPIRY));
                self.phase = Phase::Connected;
                let session_present = !self.clean_session && !accepted.subscriptions.is_empty();
                if !self.clean_session {
                    self.subscriptions.extend(accepted.subscriptions);
                }
                self.send(&Packet::ConnAck(ConnAck { session_present, code: ConnectReturnCode::Accepted }));
            }
            Err(code) => self.refuse(code),
        }
    }

    /// Answers a twin GET (`body` = device view) or reported patch (`version` = new reported
    /// `$version`, empty body). Errors use their IoT Hub status with a JSON body.
    pub fn reply_twin(&mut self, rid: &str, status: u16, version: Option<u64>, body: Vec<u8>) {
        if self.is_subscribed(Subscription::TwinResponses) {
            self.publish(topic::twin_response(status, rid, version), body, QoS::AtMostOnce);
        }
    }

    /// Sends a desired-properties patch (`body` includes `$version`), if the device listens.
    pub fn push_desired(&mut self, version: u64, body: Vec<u8>) -> Result<(), NotSubscribed> {
        self.require(Subscription::DesiredPatches)?;
        self.publish(topic::desired_patch(version), body, QoS::AtMostOnce);
        Ok(())
    }

    /// Invokes a direct method, if the device listens (else 404103 for the caller).
    pub fn call_method(&mut self, name: &str, rid: &str, payload: Vec<u8>) -> Result<(), NotSubscribed> {
        self.require(Subscription::Methods)?;
        self.publish(topic::method_request(name, rid), payload, QoS::AtMostOnce);
        Ok(())
    }

    /// Delivers a cloud-to-device message at QoS 1; the returned id comes back as
    /// [`SessionEvent::CloudToDeviceAck`].
    pub fn send_cloud_to_device(
        &mut self,
        properties: &[(String, Option<String>)],
        body: Vec<u8>,
    ) -> Result<PacketId, NotSubscribed> {
        self.require(Subscription::CloudToDevice)?;
        let id = self.packet_id();
        let topic = topic::cloud_to_device(&self.device_id, properties);
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic,
            packet_id: Some(id),
            payload: body,
        }));
        Ok(id)
    }

    /// Acknowledges a QoS 1 telemetry message once stored.
    pub fn ack(&mut self, packet_id: PacketId) {
        if self.is_connected() {
            self.send(&Packet::PubAck(packet_id));
        }
    }

    /// Ends the session from the hub's side.
    pub fn close_by_hub(&mut self, why: &str) {
        self.close(CloseReason::Hub(why.to_owned()));
    }

    /// Next bytes for the socket.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// Next event for the adapter.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        match self.phase {
            Phase::AwaitingConnect { deadline } => Some(deadline),
            Phase::Connected => {
                let keep_alive = (self.keep_alive_ms > 0).then(|| UnixMillis(self.last_heard.0 + self.keep_alive_ms));
                match (keep_alive, self.token_expiry) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Phase::Authenticating | Phase::Closed => None,
        }
    }

    fn handle_packet(&mut self, now: UnixMillis, packet: Packet) {
        match (&self.phase, packet) {
            (Phase::AwaitingConnect { .. }, Packet::Connect(c)) => {
                // The client id is a device id or `{deviceId}/{moduleId}` (spec §5.2); an id
                // IoT Hub would never have issued is refused before it is kept (the
                // snapshot's bound).
                if crate::identity::check_key(&c.client_id).is_err() {
                    return self.refuse(ConnectReturnCode::IdentifierRejected);
                }
                // IoT Hub's user name is `{host}/{clientId}/?api-version=...` (spec §5.2): one
                // that names another device or module is refused rather than ignored.
                if let Some(mut named) = c.username.as_deref().map(|u| u.split('/').skip(1)) {
                    let (device, module) = crate::identity::split_key(&c.client_id);
                    let matches =
                        named.next().is_none_or(|d| d == device) && module.is_none_or(|m| named.next() == Some(m));
                    if !matches {
                        return self.refuse(ConnectReturnCode::BadUserNameOrPassword);
                    }
                }
                // A model id that is no DTMI is refused, not dropped: the device would believe
                // its model announced.
                let Ok(model_id) = c.username.as_deref().map_or(Ok(None), crate::pnp::announced_model_id) else {
                    return self.refuse(ConnectReturnCode::BadUserNameOrPassword);
                };
                self.device_id = c.client_id;
                self.clean_session = c.clean_session;
                // Server timeout = 1.5 x keep-alive, capped as IoT Hub caps it.
                self.keep_alive_ms = (u64::from(c.keep_alive) * 1500).min(MAX_KEEP_ALIVE_TIMEOUT_MS);
                self.last_heard = now;
                self.phase = Phase::Authenticating;
                self.events.push_back(SessionEvent::Authenticate {
                    device_id: self.device_id.clone(),
                    username: c.username,
                    token: c.password.map(|p| String::from_utf8_lossy(&p).into_owned()),
                    clean_session: c.clean_session,
                    model_id,
                });
                if c.clean_session {
                    self.subscriptions.clear();
                }
            }
            (Phase::AwaitingConnect { .. }, _) => {
                self.close(CloseReason::ProtocolViolation("the first packet must be CONNECT [MQTT-3.1.0-1]".into()))
            }
            (Phase::Authenticating, _) => {
                // Nothing may run before CONNACK; IoT Hub SDKs wait for it.
                self.close(CloseReason::ProtocolViolation("packet before CONNACK".into()))
            }
            (Phase::Connected, Packet::Connect(_)) => {
                self.close(CloseReason::ProtocolViolation("second CONNECT [MQTT-3.1.0-2]".into()))
            }
            (Phase::Connected, Packet::Publish(p)) => self.handle_publish(p),
            (Phase::Connected, Packet::PubAck(id)) => self.events.push_back(SessionEvent::CloudToDeviceAck(id)),
            (Phase::Connected, Packet::Subscribe(s)) => {
                let mut codes = Vec::with_capacity(s.filters.len());
                for (filter, qos) in &s.filters {
                    match Subscription::parse(filter, &self.device_id) {
                        Ok(sub) => {
                            self.subscriptions.insert(sub);
                            // IoT Hub grants at most QoS 1.
                            codes.push(SubscribeReturnCode::Granted((*qos).min(QoS::AtLeastOnce)));
                        }
                        // IoT Hub closes the connection on a filter it cannot serve.
                        Err(e) => return self.close(CloseReason::TopicRefused(e.to_string())),
                    }
                }
                if self.subscriptions.len() > MAX_SUBSCRIPTIONS {
                    return self.close(CloseReason::TopicRefused("more than 5 subscriptions".into()));
                }
                self.send(&Packet::SubAck { packet_id: s.packet_id, codes });
                self.subscriptions_changed();
            }
            (Phase::Connected, Packet::Unsubscribe { packet_id, filters }) => {
                for filter in &filters {
                    if let Ok(sub) = Subscription::parse(filter, &self.device_id) {
                        self.subscriptions.remove(&sub);
                    }
                }
                self.send(&Packet::UnsubAck(packet_id));
                self.subscriptions_changed();
            }
            (Phase::Connected, Packet::PingReq) => self.send(&Packet::PingResp),
            (Phase::Connected, Packet::Disconnect) => self.close(CloseReason::ClientDisconnect),
            (Phase::Connected, other) => {
                self.close(CloseReason::ProtocolViolation(format!("unexpected packet from a device: {other:?}")))
            }
            (Phase::Closed, _) => {}
        }
    }

    fn handle_publish(&mut self, p: Publish) {
        if p.qos == QoS::ExactlyOnce {
            return self.close(CloseReason::QoS2);
        }
        let parsed = match DeviceTopic::parse(&p.topic, &self.device_id) {
            Ok(t) => t,
            Err(e) => return self.close(CloseReason::TopicRefused(e.to_string())),
        };
        let event = match parsed {
            DeviceTopic::Telemetry { properties } => {
                // Acknowledged by the adapter once stored, so an ack means durable.
                return self.events.push_back(SessionEvent::Telemetry {
                    properties,
                    body: p.payload,
                    ack: p.packet_id,
                });
            }
            DeviceTopic::TwinGet { rid } => SessionEvent::TwinGet { rid },
            DeviceTopic::ReportedPatch { rid } => SessionEvent::ReportedPatch { rid, body: p.payload },
            DeviceTopic::MethodResponse { status, rid } => {
                SessionEvent::MethodResponse { rid, status, body: p.payload }
            }
            DeviceTopic::CloudToDeviceRejected { packet_id } => SessionEvent::CloudToDeviceRejected(packet_id),
        };
        // Requests are answered on their response topic; PUBACK only says "received".
        if let Some(id) = p.packet_id {
            self.send(&Packet::PubAck(id));
        }
        self.events.push_back(event);
    }

    fn subscriptions_changed(&mut self) {
        self.events.push_back(SessionEvent::SubscriptionsChanged {
            subscriptions: self.subscriptions.iter().copied().collect(),
            keep: !self.clean_session,
        });
    }

    fn require(&self, subscription: Subscription) -> Result<(), NotSubscribed> {
        if self.is_subscribed(subscription) {
            Ok(())
        } else {
            Err(NotSubscribed(subscription))
        }
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>, qos: QoS) {
        let packet_id = (qos != QoS::AtMostOnce).then(|| self.packet_id());
        self.send(&Packet::Publish(Publish { dup: false, qos, retain: false, topic, packet_id, payload }));
    }

    fn packet_id(&mut self) -> PacketId {
        let id = NonZeroU16::new(self.next_packet_id).unwrap_or(NonZeroU16::MIN);
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }

    fn send(&mut self, packet: &Packet) {
        match packet.to_bytes() {
            Ok(bytes) => self.transmit.push_back(bytes),
            // Only a topic built from what a peer chose can overflow (a request id the device
            // sent near the field limit, echoed with a longer prefix); nothing the device
            // could misread is sent, and the session ends.
            Err(e) => self.close(CloseReason::Hub(format!("a packet that cannot be encoded: {e}"))),
        }
    }

    fn refuse(&mut self, code: ConnectReturnCode) {
        self.send(&Packet::ConnAck(ConnAck { session_present: false, code }));
        self.close(CloseReason::Refused(code as u8));
    }

    fn close(&mut self, reason: CloseReason) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            // Nothing more is read, so an unfinished packet is not kept either.
            self.pending.clear();
            self.events.push_back(SessionEvent::Closed(reason));
        }
    }
}

#[cfg(test)]
mod tests;
