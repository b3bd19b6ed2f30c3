//! A device on AMQP: its links under `/devices/{id}/...`, served by an MQTT device session.
//!
//! To the hub, a device on AMQP (the Node SDK's `Amqp` and `AmqpWs`, the C SDK) *is* an MQTT
//! device: the adapter connects a [`DeviceClient`] for it to a gateway shard, exactly as a
//! device on 8883 arrives. So everything an MQTT device gets, it gets by the same code: the
//! device object's rules (one session per device whatever the transport, a disabled, deleted
//! or re-keyed device dropped at once, the 50-message cloud-to-device queue, desired catch-up),
//! the gateway's throttles and quota, and the Event Hub stream. This module is the mapping,
//! sans-I/O: messages on the device's AMQP links in, MQTT requests out; MQTT events in, AMQP
//! messages out. The adapter owns the sockets and feeds both sides.
//!
//! The mapping, link by link (the peer's role first; addresses as the Azure SDKs write them):
//! - sender `/devices/{id}/messages/events`: telemetry, one QoS 1 PUBLISH per message, the
//!   delivery accepted when the hub's PUBACK says it was stored (released if the session ends
//!   first: at least once, as MQTT).
//! - receiver `/devices/{id}/messages/devicebound`: cloud-to-device, subscribed on attach;
//!   each message is sent unsettled and completed (PUBACK) only when the device accepts or
//!   rejects it (a rejection travels as twinhub's `$twinhub/messages/devicebound/rejected/`
//!   topic, since IoT Hub's MQTT has no reject, and its feedback says `Rejected`); one the
//!   device releases or never settles stays queued and is delivered again with the next
//!   session (IoT Hub's abandon).
//! - sender and receiver `/devices/{id}/methods/devicebound`: method calls go out with
//!   `IoThub-methodname` and the call's `$rid` as their correlation id; the answer's
//!   `IoThub-status` and body go back as the MQTT method response.
//! - sender and receiver `/devices/{id}/twin`: requests carry the annotations `operation`
//!   (`GET`, `PATCH`, `PUT`, `DELETE`) and `resource`; GET and the reported PATCH become the
//!   MQTT twin requests, a PUT on `/notifications/twin/properties/desired` subscribes to
//!   desired patches (answered once the SUBACK arrives) and DELETE stops passing them on;
//!   answers echo the request's correlation id with the `status` (and `version`) annotations;
//!   desired patches go out with no correlation id.
//!
//! Modules on AMQP are refused (their MQTT topics differ; no client in the suite uses them).

use super::connection::condition;
use super::{Connection, DeliveryState, LinkId, Message, MessageBody, Properties, Role, Value};
use crate::mqtt::{PacketId, QoS};
use crate::session::client::{ClientEvent, ClientOptions, DeviceClient};
use crate::session::topic::Subscription;
use crate::UnixMillis;
use std::collections::{BTreeMap, VecDeque};

/// Messages held for a link without credit, at most (the cloud-to-device queue is 50; twin
/// answers and method calls are bounded by the requests behind them).
pub const MAX_HELD: usize = 128;
/// Messages taken on the device's links before its session is up, at most.
pub const MAX_EARLY: usize = 64;
/// Keep-alive of the MQTT session behind the links.
const KEEP_ALIVE_SECS: u16 = 60;

/// What a device link is for, from the hub's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceNode {
    /// The device sends telemetry.
    Telemetry,
    /// The hub sends cloud-to-device messages.
    CloudToDevice,
    /// The hub sends method calls.
    MethodCalls,
    /// The device sends method answers.
    MethodAnswers,
    /// The device sends twin requests.
    TwinRequests,
    /// The hub sends twin answers and desired patches.
    TwinAnswers,
}

impl DeviceNode {
    /// The device and node a link address names, for the peer's `role`: `None` when the path
    /// is not a device's, `Some(Err(why))` when it is one the hub does not serve.
    pub fn parse(path: &str, role: Role) -> Option<Result<(String, DeviceNode), String>> {
        let rest = path.strip_prefix("/devices/").or_else(|| path.strip_prefix("devices/"))?;
        let (id, node) = rest.split_once('/')?;
        let device_id = percent_encoding::percent_decode_str(id).decode_utf8().ok()?.into_owned();
        if device_id.is_empty() {
            return None;
        }
        let node = match (node.to_ascii_lowercase().as_str(), role) {
            ("messages/events", Role::Sender) => DeviceNode::Telemetry,
            ("messages/devicebound", Role::Receiver) => DeviceNode::CloudToDevice,
            ("methods/devicebound", Role::Receiver) => DeviceNode::MethodCalls,
            ("methods/devicebound", Role::Sender) => DeviceNode::MethodAnswers,
            ("twin", Role::Sender) => DeviceNode::TwinRequests,
            ("twin", Role::Receiver) => DeviceNode::TwinAnswers,
            (n, _) if n.starts_with("modules/") => {
                return Some(Err("modules are served over MQTT only (8883 or /$iothub/websocket)".into()))
            }
            (n, role) => return Some(Err(format!("no device node '{n}' for a {role:?}"))),
        };
        Some(Ok((device_id, node)))
    }

    /// The MQTT subscription that feeds the link, if any.
    fn subscription(self) -> Option<Subscription> {
        match self {
            DeviceNode::CloudToDevice => Some(Subscription::CloudToDevice),
            DeviceNode::MethodCalls => Some(Subscription::Methods),
            DeviceNode::TwinAnswers => Some(Subscription::TwinResponses),
            _ => None,
        }
    }
}

/// Why the links' session ended, for the adapter: reconnect with a newer token, or detach
/// the device's links with this error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionEnded(pub String);

/// One device's links on a connection, and the MQTT session behind them.
#[derive(Debug)]
pub struct DeviceLinks {
    client: DeviceClient,
    links: BTreeMap<LinkId, DeviceNode>,
    /// Telemetry the hub has not stored yet: its PUBLISH id -> the delivery to accept.
    telemetry: BTreeMap<u16, (LinkId, u32)>,
    /// Twin requests waiting for the hub: `$rid` -> the request's correlation id.
    twin_requests: BTreeMap<String, Value>,
    /// Desired-notification subscriptions waiting for their SUBACK: packet id -> the PUTs'
    /// correlation ids.
    subscribing: BTreeMap<u16, Vec<Value>>,
    /// MQTT subscriptions made (or asked for) in this session.
    subscribed: Vec<Subscription>,
    /// Whether the device asked for desired patches.
    desired_wanted: bool,
    /// Cloud-to-device deliveries the device has not settled: delivery id -> PUBLISH id.
    unsettled: BTreeMap<u32, PacketId>,
    /// Messages for links without credit, in order.
    held: VecDeque<(LinkId, Message, Option<PacketId>)>,
    /// Messages that arrived before the session was up.
    early: VecDeque<(LinkId, u32, bool, Message)>,
    ended: Option<SessionEnded>,
}

impl DeviceLinks {
    /// Links for `device_id`, whose MQTT session starts now: send
    /// [`DeviceLinks::poll_transmit`]'s bytes on a fresh gateway socket.
    pub fn new(device_id: &str, host: &str, token: String, now: UnixMillis) -> Self {
        let options = ClientOptions {
            device_id: device_id.to_owned(),
            host: host.to_owned(),
            token,
            keep_alive_secs: KEEP_ALIVE_SECS,
            clean_session: true,
        };
        let mut client = DeviceClient::new(options);
        client.acknowledge_manually();
        client.connect(now, None);
        Self {
            client,
            links: BTreeMap::new(),
            telemetry: BTreeMap::new(),
            twin_requests: BTreeMap::new(),
            subscribing: BTreeMap::new(),
            subscribed: Vec::new(),
            desired_wanted: false,
            unsettled: BTreeMap::new(),
            held: VecDeque::new(),
            early: VecDeque::new(),
            ended: None,
        }
    }

    /// The device.
    pub fn device_id(&self) -> &str {
        self.client.device_id()
    }

    /// Whether `link` is one of this device's.
    pub fn has_link(&self, link: LinkId) -> bool {
        self.links.contains_key(&link)
    }

    /// The device's links.
    pub fn links(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.links.keys().copied()
    }

    /// Starts a new MQTT session with `token` (a renewed one) after the last one ended: send
    /// [`DeviceLinks::poll_transmit`]'s bytes on a fresh gateway socket. Links stay attached.
    pub fn reconnect(&mut self, token: String, now: UnixMillis) {
        self.subscribed.clear();
        self.subscribing.clear();
        self.ended = None;
        self.client.connect(now, Some(token));
    }

    /// A link the adapter accepted for this device.
    pub fn attach(&mut self, link: LinkId, node: DeviceNode, now: UnixMillis) {
        self.links.insert(link, node);
        if self.client.is_connected() {
            self.subscribe_wanted(now);
        }
    }

    /// The peer detached `link`; whether the device has links left.
    pub fn detached(&mut self, link: LinkId) -> bool {
        self.links.remove(&link);
        self.held.retain(|(l, _, _)| *l != link);
        self.early.retain(|(l, _, _, _)| *l != link);
        self.telemetry.retain(|_, (l, _)| *l != link);
        !self.links.is_empty()
    }

    /// Ends the MQTT session (the links are gone, or the connection is).
    pub fn disconnect(&mut self, now: UnixMillis) {
        self.client.disconnect(now);
    }

    /// A message on one of the device's links.
    pub fn message(
        &mut self,
        conn: &mut Connection,
        link: LinkId,
        delivery_id: u32,
        settled: bool,
        message: Message,
        now: UnixMillis,
    ) {
        if !self.client.is_connected() {
            if self.early.len() >= MAX_EARLY {
                if !settled {
                    let why = "the device's session is not up yet";
                    conn.settle(
                        link,
                        delivery_id,
                        DeliveryState::rejected(condition::RESOURCE_LIMIT_EXCEEDED, why),
                        now,
                    );
                }
                return;
            }
            self.early.push_back((link, delivery_id, settled, message));
            return;
        }
        let settle = |conn: &mut Connection, state: DeliveryState| {
            if !settled {
                conn.settle(link, delivery_id, state, now);
            }
        };
        match self.links.get(&link).copied() {
            Some(DeviceNode::Telemetry) => {
                let properties = property_bag(&message);
                let sent = self.client.send_telemetry(now, &properties, body(&message), QoS::AtLeastOnce);
                match sent {
                    Some(id) if !settled => {
                        self.telemetry.insert(id.get(), (link, delivery_id));
                    }
                    Some(_) => {}
                    None => settle(
                        conn,
                        DeliveryState::rejected(
                            condition::INVALID_FIELD,
                            "the message's properties do not fit a topic",
                        ),
                    ),
                }
            }
            Some(DeviceNode::TwinRequests) => {
                settle(conn, DeliveryState::Accepted);
                self.twin_request(conn, &message, now);
            }
            Some(DeviceNode::MethodAnswers) => {
                let rid = message.properties.as_ref().and_then(|p| p.correlation_id.as_ref()).and_then(id_text);
                let status = message.application_properties.iter().find(|(k, _)| k == "IoThub-status").map(|(_, v)| v);
                match (rid, status.and_then(int)) {
                    (Some(rid), Some(status)) => {
                        settle(conn, DeliveryState::Accepted);
                        self.client.respond_method(now, &rid, status, body(&message));
                    }
                    _ => settle(
                        conn,
                        DeliveryState::rejected(
                            condition::INVALID_FIELD,
                            "a method answer needs a correlation-id and an int IoThub-status",
                        ),
                    ),
                }
            }
            _ => settle(conn, DeliveryState::rejected(condition::NOT_ALLOWED, "this link takes no messages")),
        }
    }

    /// The device settled a delivery the hub sent.
    pub fn disposition(&mut self, link: LinkId, delivery_id: u32, state: Option<DeliveryState>, now: UnixMillis) {
        if self.links.get(&link) != Some(&DeviceNode::CloudToDevice) {
            return;
        }
        match state {
            Some(DeliveryState::Accepted) => {
                if let Some(id) = self.unsettled.remove(&delivery_id) {
                    self.client.acknowledge(now, id);
                }
            }
            Some(DeliveryState::Rejected(_)) => {
                if let Some(id) = self.unsettled.remove(&delivery_id) {
                    self.client.reject(now, id);
                }
            }
            // Released or modified (abandoned): left unacknowledged, so the hub keeps it and
            // delivers it again with the next session.
            Some(_) => {
                self.unsettled.remove(&delivery_id);
            }
            None => {}
        }
    }

    /// The peer gave credit on `link`: sends what was held for it.
    pub fn credit(&mut self, conn: &mut Connection, link: LinkId, now: UnixMillis) {
        let held = std::mem::take(&mut self.held);
        for (l, message, packet_id) in held {
            if l == link {
                self.send(conn, l, message, packet_id, now);
            } else {
                self.held.push_back((l, message, packet_id));
            }
        }
    }

    /// Bytes from the gateway socket.
    pub fn handle_bytes(&mut self, conn: &mut Connection, bytes: &[u8], now: UnixMillis) {
        self.client.handle_bytes(now, bytes);
        self.drain_events(conn, now);
    }

    /// The gateway socket closed.
    pub fn connection_lost(&mut self, conn: &mut Connection, now: UnixMillis) {
        self.client.connection_lost("the gateway closed the session");
        self.drain_events(conn, now);
    }

    /// The session's timer.
    pub fn handle_timeout(&mut self, conn: &mut Connection, now: UnixMillis) {
        self.client.handle_timeout(now);
        self.drain_events(conn, now);
    }

    /// When [`DeviceLinks::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        self.client.poll_timeout()
    }

    /// Bytes for the gateway socket.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.client.poll_transmit()
    }

    /// Once the MQTT session has ended: why. The adapter reconnects (a renewed token) or
    /// detaches the device's links.
    pub fn ended(&self) -> Option<&SessionEnded> {
        self.ended.as_ref()
    }

    fn drain_events(&mut self, conn: &mut Connection, now: UnixMillis) {
        while let Some(event) = self.client.poll_event() {
            self.client_event(conn, event, now);
        }
    }

    fn client_event(&mut self, conn: &mut Connection, event: ClientEvent, now: UnixMillis) {
        match event {
            ClientEvent::Connected { .. } => {
                self.subscribe_wanted(now);
                for (link, delivery_id, settled, message) in std::mem::take(&mut self.early) {
                    self.message(conn, link, delivery_id, settled, message, now);
                }
            }
            ClientEvent::Subscribed(id) => {
                for correlation_id in self.subscribing.remove(&id.get()).unwrap_or_default() {
                    self.twin_answer(conn, correlation_id, 200, None, Vec::new(), now);
                }
            }
            ClientEvent::TwinResponse { rid, status, version, body } => {
                if let Some(correlation_id) = self.twin_requests.remove(&rid) {
                    self.twin_answer(conn, correlation_id, status, version, body, now);
                }
            }
            ClientEvent::DesiredPatch { version, body } => {
                if self.desired_wanted {
                    let mut message = data_message(body);
                    if let Some(v) = version {
                        message.message_annotations.push((Value::symbol("version"), Value::Long(v as i64)));
                    }
                    self.send_on(conn, DeviceNode::TwinAnswers, message, None, now);
                }
            }
            ClientEvent::MethodRequest { name, rid, body } => {
                let mut message = data_message(body);
                message.properties =
                    Some(Properties { correlation_id: Some(Value::String(rid)), ..Properties::default() });
                message.application_properties.push(("IoThub-methodname".into(), Value::String(name)));
                self.send_on(conn, DeviceNode::MethodCalls, message, None, now);
            }
            ClientEvent::CloudToDevice { properties, body, packet_id } => {
                let message = cloud_to_device(&properties, body);
                self.send_on(conn, DeviceNode::CloudToDevice, message, packet_id, now);
            }
            ClientEvent::TelemetryAcked(id) => {
                if let Some((link, delivery_id)) = self.telemetry.remove(&id.get()) {
                    conn.settle(link, delivery_id, DeliveryState::Accepted, now);
                }
            }
            ClientEvent::Closed(reason) => {
                // What the hub has not confirmed is given back: the device sends it again.
                for (_, (link, delivery_id)) in std::mem::take(&mut self.telemetry) {
                    conn.settle(link, delivery_id, DeliveryState::Released, now);
                }
                for (_, correlation_id) in std::mem::take(&mut self.twin_requests) {
                    self.twin_answer(conn, correlation_id, 503, None, Vec::new(), now);
                }
                self.unsettled.clear();
                self.held.retain(|(_, _, packet_id)| packet_id.is_none());
                self.ended = Some(SessionEnded(format!("{reason:?}")));
            }
        }
    }

    fn twin_request(&mut self, conn: &mut Connection, message: &Message, now: UnixMillis) {
        let annotation = |name: &str| {
            message.message_annotations.iter().find(|(k, _)| k.as_str() == Some(name)).and_then(|(_, v)| v.as_str())
        };
        let Some(correlation_id) = message.properties.as_ref().and_then(|p| p.correlation_id.clone()) else {
            // Nothing to answer to; the request cannot be matched, so it is not run.
            return;
        };
        match (annotation("operation"), annotation("resource")) {
            (Some("GET"), _) => {
                let rid = self.client.get_twin(now);
                self.twin_requests.insert(rid, correlation_id);
            }
            (Some("PATCH"), Some("/properties/reported")) => {
                let rid = self.client.report(now, body(message));
                self.twin_requests.insert(rid, correlation_id);
            }
            (Some("PUT"), Some("/notifications/twin/properties/desired")) => {
                self.desired_wanted = true;
                if self.subscribed.contains(&Subscription::DesiredPatches) && self.subscribing.is_empty() {
                    self.twin_answer(conn, correlation_id, 200, None, Vec::new(), now);
                } else if let Some(ids) = self.subscribing.values_mut().next() {
                    ids.push(correlation_id);
                } else {
                    self.subscribed.push(Subscription::DesiredPatches);
                    let id = self.client.subscribe(now, &[Subscription::DesiredPatches]);
                    self.subscribing.insert(id.get(), vec![correlation_id]);
                }
            }
            (Some("DELETE"), Some("/notifications/twin/properties/desired")) => {
                self.desired_wanted = false;
                self.twin_answer(conn, correlation_id, 200, None, Vec::new(), now);
            }
            (operation, resource) => {
                let why = format!(
                    r#"{{"message":"unsupported twin request: operation {operation:?}, resource {resource:?}"}}"#
                );
                self.twin_answer(conn, correlation_id, 400, None, why.into_bytes(), now);
            }
        }
    }

    fn twin_answer(
        &mut self,
        conn: &mut Connection,
        correlation_id: Value,
        status: u16,
        version: Option<u64>,
        body: Vec<u8>,
        now: UnixMillis,
    ) {
        let mut message = data_message(body);
        message.properties = Some(Properties { correlation_id: Some(correlation_id), ..Properties::default() });
        message.message_annotations.push((Value::symbol("status"), Value::Int(i32::from(status))));
        if let Some(v) = version {
            message.message_annotations.push((Value::symbol("version"), Value::Long(v as i64)));
        }
        self.send_on(conn, DeviceNode::TwinAnswers, message, None, now);
    }

    /// Subscribes to what the attached links need and the session does not have yet.
    fn subscribe_wanted(&mut self, now: UnixMillis) {
        let mut wanted: Vec<Subscription> = self.links.values().filter_map(|n| n.subscription()).collect();
        if self.desired_wanted {
            wanted.push(Subscription::DesiredPatches);
        }
        wanted.retain(|s| !self.subscribed.contains(s));
        wanted.dedup();
        if wanted.is_empty() {
            return;
        }
        self.subscribed.extend(wanted.iter().copied());
        self.client.subscribe(now, &wanted);
    }

    /// Sends on the device's link for `node`; a message with no such link is dropped (the
    /// device is not listening: a method call then times out, as over MQTT).
    fn send_on(
        &mut self,
        conn: &mut Connection,
        node: DeviceNode,
        message: Message,
        packet_id: Option<PacketId>,
        now: UnixMillis,
    ) {
        if let Some(link) = self.links.iter().find(|(_, n)| **n == node).map(|(l, _)| *l) {
            self.send(conn, link, message, packet_id, now);
        }
    }

    fn send(
        &mut self,
        conn: &mut Connection,
        link: LinkId,
        message: Message,
        packet_id: Option<PacketId>,
        now: UnixMillis,
    ) {
        if conn.credit(link) == 0 {
            if self.held.len() < MAX_HELD {
                self.held.push_back((link, message, packet_id));
            }
            return;
        }
        // Cloud-to-device messages go unsettled: the device's outcome completes them.
        let settled = packet_id.is_none();
        if let Ok(delivery_id) = conn.send(link, &message, settled, now) {
            if let Some(id) = packet_id {
                self.unsettled.insert(delivery_id, id);
            }
        }
    }
}

/// A message whose body is one data section.
fn data_message(body: Vec<u8>) -> Message {
    Message { body: MessageBody::Data(vec![body]), ..Message::default() }
}

/// A message's body bytes: its data sections, or a string or binary value.
fn body(message: &Message) -> Vec<u8> {
    match &message.body {
        MessageBody::Data(parts) => parts.concat(),
        MessageBody::Value(Value::String(s)) => s.clone().into_bytes(),
        MessageBody::Value(Value::Binary(b)) => b.clone(),
        _ => Vec::new(),
    }
}

/// A message id or correlation id as text (the Azure SDKs send strings, or uuids when the
/// text looks like one).
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) | Value::Symbol(s) => Some(s.clone()),
        Value::Uuid(u) => Some(crate::c2d::uuid_text(u)),
        Value::Ulong(n) => Some(n.to_string()),
        Value::Binary(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i32> {
    match v {
        Value::Int(n) => Some(*n),
        Value::Long(n) => i32::try_from(*n).ok(),
        Value::Short(n) => Some(i32::from(*n)),
        Value::Uint(n) => i32::try_from(*n).ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A telemetry message's MQTT property bag: the system properties IoT Hub's MQTT topics
/// carry (`$.mid`, `$.cid`, `$.ct`, `$.ce`), then the application properties as text.
fn property_bag(message: &Message) -> Vec<(String, Option<String>)> {
    let mut bag = Vec::new();
    if let Some(p) = &message.properties {
        if let Some(id) = p.message_id.as_ref().and_then(id_text) {
            bag.push(("$.mid".to_owned(), Some(id)));
        }
        if let Some(id) = p.correlation_id.as_ref().and_then(id_text) {
            bag.push(("$.cid".to_owned(), Some(id)));
        }
        if let Some(ct) = &p.content_type {
            bag.push(("$.ct".to_owned(), Some(ct.clone())));
        }
        if let Some(ce) = &p.content_encoding {
            bag.push(("$.ce".to_owned(), Some(ce.clone())));
        }
    }
    for (key, value) in &message.application_properties {
        let text = match value {
            Value::Null => None,
            Value::String(s) | Value::Symbol(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                int(other).map(|n| n.to_string()).or_else(|| id_text(other)).or_else(|| Some(format!("{other:?}")))
            }
        };
        bag.push((key.clone(), text));
    }
    bag
}

/// A cloud-to-device message from its MQTT property bag: the system properties back in the
/// AMQP properties section, the rest (with `iothub-ack`) as application properties.
fn cloud_to_device(properties: &[(String, Option<String>)], body: Vec<u8>) -> Message {
    let mut message = data_message(body);
    let mut p = Properties::default();
    for (key, value) in properties {
        let text = value.clone().unwrap_or_default();
        match key.as_str() {
            "$.mid" => p.message_id = Some(Value::String(text)),
            "$.cid" => p.correlation_id = Some(Value::String(text)),
            "$.to" => p.to = Some(text),
            "$.ct" => p.content_type = Some(text),
            "$.ce" => p.content_encoding = Some(text),
            "$.uid" => p.user_id = Some(text.into_bytes()),
            "$.exp" => p.absolute_expiry_time = crate::UnixMillis::parse_iso(&text).map(|t| t.0 as i64),
            k if k.starts_with("$.") => {}
            _ => message.application_properties.push((key.clone(), value.clone().map_or(Value::Null, Value::String))),
        }
    }
    message.properties = Some(p);
    message
}

#[cfg(test)]
mod tests;
