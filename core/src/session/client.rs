//! The same IoT Hub session seen from the other end: a device, as a sans-I/O state machine.
//!
//! One device client for every runtime that plays a device: the native load generator (tokio)
//! and the virtual device in a browser tab (WASM). It speaks exactly what [`super::Session`]
//! serves, so each side is tested against the other.
//!
//! Call order mirrors the server role: after any input (`connect`, `handle_bytes`,
//! `handle_timeout` or a command such as `report`), drain [`DeviceClient::poll_transmit`] to the
//! socket, then [`DeviceClient::poll_event`], then re-arm the timer from
//! [`DeviceClient::poll_timeout`]. Requests return their `$rid` (or packet id); answers come back
//! as events carrying it.

use super::topic::{self, HubTopic, Subscription};
use super::CloseReason;
use crate::mqtt::{self, ConnectReturnCode, Packet, PacketId, Publish, QoS, Subscribe};
use crate::UnixMillis;
use std::collections::VecDeque;
use std::num::NonZeroU16;

/// What a device presents in CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The device id (MQTT client id).
    pub device_id: String,
    /// The hub's host name, as in the connection string (user name `{host}/{device}/...`).
    pub host: String,
    /// A device SAS token (MQTT password).
    pub token: String,
    /// Keep-alive in seconds; the client pings when it has sent nothing for this long.
    pub keep_alive_secs: u16,
    /// CleanSession. The Azure SDKs connect with 0 so subscriptions survive a reconnect.
    pub clean_session: bool,
}

/// What the hub sent, for the application playing the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// CONNACK 0.
    Connected {
        /// The hub kept subscriptions from a previous CleanSession=0 session.
        session_present: bool,
    },
    /// SUBACK for [`DeviceClient::subscribe`].
    Subscribed(PacketId),
    /// The answer to [`DeviceClient::get_twin`] or [`DeviceClient::report`].
    TwinResponse {
        /// The request's `$rid`.
        rid: String,
        /// 200 (GET), 204 (reported patch) or an error status.
        status: u16,
        /// The new reported `$version` after a reported patch.
        version: Option<u64>,
        /// The twin's device view (GET) or an error body; empty after a reported patch.
        body: Vec<u8>,
    },
    /// A desired-properties patch (its JSON includes `$version`).
    DesiredPatch {
        /// The `$version` from the topic.
        version: Option<u64>,
        /// The patch.
        body: Vec<u8>,
    },
    /// A direct method call: answer with [`DeviceClient::respond_method`].
    MethodRequest {
        /// The method name.
        name: String,
        /// The call's id.
        rid: String,
        /// The JSON payload.
        body: Vec<u8>,
    },
    /// A cloud-to-device message: acknowledged to the hub on receipt, or, after
    /// [`DeviceClient::acknowledge_manually`], when [`DeviceClient::acknowledge`] is called with
    /// `packet_id`.
    CloudToDevice {
        /// System and application properties.
        properties: Vec<(String, Option<String>)>,
        /// The message body.
        body: Vec<u8>,
        /// The PUBLISH's id (QoS 1), which completes the message when acknowledged.
        packet_id: Option<PacketId>,
    },
    /// The hub stored a QoS 1 telemetry message ([`DeviceClient::send_telemetry`]).
    TelemetryAcked(PacketId),
    /// The connection is over; close the socket after draining `poll_transmit`.
    Closed(CloseReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    AwaitingConnAck,
    Connected,
    Closed,
}

/// A device's side of the session.
#[derive(Clone, Debug)]
pub struct DeviceClient {
    options: ClientOptions,
    phase: Phase,
    pending: Vec<u8>,
    next_packet_id: u16,
    next_rid: u64,
    last_sent: UnixMillis,
    /// When a PINGREQ went out unanswered.
    ping_sent: Option<UnixMillis>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
    /// Whether cloud-to-device messages wait for [`DeviceClient::acknowledge`].
    manual_acks: bool,
}

impl DeviceClient {
    /// A client that has not connected yet.
    pub fn new(options: ClientOptions) -> Self {
        Self {
            options,
            phase: Phase::Idle,
            pending: Vec::new(),
            next_packet_id: 1,
            next_rid: 1,
            last_sent: UnixMillis(0),
            ping_sent: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            manual_acks: false,
        }
    }

    /// Leaves cloud-to-device PUBACKs to [`DeviceClient::acknowledge`]: for a client that
    /// passes messages on (an AMQP device's links) and completes them only when its own
    /// receiver does, so the hub redelivers what was never completed.
    pub fn acknowledge_manually(&mut self) {
        self.manual_acks = true;
    }

    /// Rejects the cloud-to-device message `packet_id` (twinhub's
    /// [`topic::cloud_to_device_rejected`]; IoT Hub's MQTT has no reject).
    pub fn reject(&mut self, now: UnixMillis, packet_id: PacketId) {
        if self.phase == Phase::Connected {
            self.publish(now, topic::cloud_to_device_rejected(packet_id), Vec::new(), QoS::AtMostOnce);
        }
    }

    /// Completes the cloud-to-device message `packet_id` (PUBACK).
    pub fn acknowledge(&mut self, now: UnixMillis, packet_id: PacketId) {
        if self.phase == Phase::Connected {
            self.send(now, &Packet::PubAck(packet_id));
        }
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.options.device_id
    }

    /// Whether CONNACK accepted the connection and it is still open.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// Sends CONNECT on a freshly opened socket. A closed client connects again (a reconnect)
    /// with the same options; `token` replaces the password when given.
    pub fn connect(&mut self, now: UnixMillis, token: Option<String>) {
        if let Some(token) = token {
            self.options.token = token;
        }
        self.pending.clear();
        self.ping_sent = None;
        self.phase = Phase::AwaitingConnAck;
        let o = &self.options;
        let connect = Packet::Connect(mqtt::Connect {
            client_id: o.device_id.clone(),
            clean_session: o.clean_session,
            keep_alive: o.keep_alive_secs,
            // The api-version the Azure device SDKs send; the hub ignores it.
            username: Some(format!("{}/{}/?api-version=2021-04-12", o.host, o.device_id)),
            password: Some(o.token.as_bytes().to_vec()),
            will: None,
        });
        self.send(now, &connect);
    }

    /// Subscribes to `subscriptions` in one SUBSCRIBE; [`ClientEvent::Subscribed`] follows.
    pub fn subscribe(&mut self, now: UnixMillis, subscriptions: &[Subscription]) -> PacketId {
        let packet_id = self.packet_id();
        let filters = subscriptions.iter().map(|s| (s.filter(&self.options.device_id), QoS::AtLeastOnce)).collect();
        self.send(now, &Packet::Subscribe(Subscribe { packet_id, filters }));
        packet_id
    }

    /// Asks for the twin; returns the `$rid` its [`ClientEvent::TwinResponse`] will carry.
    pub fn get_twin(&mut self, now: UnixMillis) -> String {
        let rid = self.rid();
        self.publish(now, topic::twin_get(&rid), Vec::new(), QoS::AtMostOnce);
        rid
    }

    /// Sends a reported-properties patch (JSON); returns its `$rid`.
    pub fn report(&mut self, now: UnixMillis, patch: Vec<u8>) -> String {
        let rid = self.rid();
        self.publish(now, topic::reported_patch(&rid), patch, QoS::AtMostOnce);
        rid
    }

    /// Sends telemetry. At QoS 1 the returned id comes back as [`ClientEvent::TelemetryAcked`]
    /// once the hub has stored the message.
    pub fn send_telemetry(
        &mut self,
        now: UnixMillis,
        properties: &[(String, Option<String>)],
        body: Vec<u8>,
        qos: QoS,
    ) -> Option<PacketId> {
        let topic = topic::telemetry(&self.options.device_id, properties);
        self.publish(now, topic, body, qos)
    }

    /// Answers a direct method call.
    pub fn respond_method(&mut self, now: UnixMillis, rid: &str, status: i32, body: Vec<u8>) {
        self.publish(now, topic::method_response(status, rid), body, QoS::AtMostOnce);
    }

    /// Sends DISCONNECT and ends the session.
    pub fn disconnect(&mut self, now: UnixMillis) {
        if self.phase == Phase::Connected {
            self.send(now, &Packet::Disconnect);
        }
        self.close(CloseReason::ClientDisconnect);
    }

    /// The socket closed under the client (the hub dropped it, or the network did).
    pub fn connection_lost(&mut self, why: &str) {
        self.close(CloseReason::Hub(why.to_owned()));
    }

    /// Bytes arrived from the hub.
    pub fn handle_bytes(&mut self, now: UnixMillis, bytes: &[u8]) {
        if matches!(self.phase, Phase::Idle | Phase::Closed) {
            return;
        }
        self.pending.extend_from_slice(bytes);
        loop {
            match mqtt::decode(&self.pending, mqtt::MAX_PACKET_BYTES) {
                Ok(Some((packet, used))) => {
                    self.pending.drain(..used);
                    self.handle_packet(now, packet);
                    if self.phase == Phase::Closed {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => return self.close(CloseReason::ProtocolViolation(e.to_string())),
            }
        }
    }

    /// The timer from [`DeviceClient::poll_timeout`] fired: ping when idle, give up when a
    /// ping went unanswered for a whole keep-alive period.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        if self.phase != Phase::Connected || self.options.keep_alive_secs == 0 {
            return;
        }
        let period = u64::from(self.options.keep_alive_secs) * 1000;
        match self.ping_sent {
            Some(sent) if now.0 >= sent.0 + period => self.close(CloseReason::KeepAliveTimeout),
            Some(_) => {}
            None if now.0 >= self.last_sent.0 + period => {
                self.send(now, &Packet::PingReq);
                self.ping_sent = Some(now);
            }
            None => {}
        }
    }

    /// When [`DeviceClient::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        if self.phase != Phase::Connected || self.options.keep_alive_secs == 0 {
            return None;
        }
        let period = u64::from(self.options.keep_alive_secs) * 1000;
        Some(UnixMillis(self.ping_sent.unwrap_or(self.last_sent).0 + period))
    }

    /// Next bytes for the socket.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn handle_packet(&mut self, now: UnixMillis, packet: Packet) {
        match (self.phase, packet) {
            (Phase::AwaitingConnAck, Packet::ConnAck(ack)) => {
                if ack.code == ConnectReturnCode::Accepted {
                    self.phase = Phase::Connected;
                    self.events.push_back(ClientEvent::Connected { session_present: ack.session_present });
                } else {
                    self.close(CloseReason::Refused(ack.code as u8));
                }
            }
            (Phase::AwaitingConnAck, other) => {
                self.close(CloseReason::ProtocolViolation(format!("expected CONNACK, got {other:?}")))
            }
            (Phase::Connected, Packet::SubAck { packet_id, .. }) => {
                self.events.push_back(ClientEvent::Subscribed(packet_id))
            }
            (Phase::Connected, Packet::PubAck(id)) => self.events.push_back(ClientEvent::TelemetryAcked(id)),
            (Phase::Connected, Packet::PingResp) => self.ping_sent = None,
            (Phase::Connected, Packet::UnsubAck(_)) => {}
            (Phase::Connected, Packet::Publish(p)) => self.handle_publish(now, p),
            (Phase::Connected, other) => {
                self.close(CloseReason::ProtocolViolation(format!("unexpected packet from the hub: {other:?}")))
            }
            (Phase::Idle | Phase::Closed, _) => {}
        }
    }

    fn handle_publish(&mut self, now: UnixMillis, p: Publish) {
        if p.qos == QoS::ExactlyOnce {
            return self.close(CloseReason::QoS2);
        }
        let event = match HubTopic::parse(&p.topic, &self.options.device_id) {
            Ok(HubTopic::TwinResponse { status, rid, version }) => {
                ClientEvent::TwinResponse { rid, status, version, body: p.payload }
            }
            Ok(HubTopic::DesiredPatch { version }) => ClientEvent::DesiredPatch { version, body: p.payload },
            Ok(HubTopic::MethodRequest { name, rid }) => ClientEvent::MethodRequest { name, rid, body: p.payload },
            Ok(HubTopic::CloudToDevice { properties }) => {
                ClientEvent::CloudToDevice { properties, body: p.payload, packet_id: p.packet_id }
            }
            Err(e) => return self.close(CloseReason::TopicRefused(e.to_string())),
        };
        // The hub sends cloud-to-device messages at QoS 1 and completes them on this PUBACK,
        // unless the application acknowledges them itself.
        let manual = self.manual_acks && matches!(event, ClientEvent::CloudToDevice { .. });
        if let (Some(id), false) = (p.packet_id, manual) {
            self.send(now, &Packet::PubAck(id));
        }
        self.events.push_back(event);
    }

    fn publish(&mut self, now: UnixMillis, topic: String, payload: Vec<u8>, qos: QoS) -> Option<PacketId> {
        // A topic name may not hold wildcards or NUL and fits a u16 length [MQTT-3.3.2-2],
        // [MQTT-1.5.3-2]; a `$rid` or device id that would break that is not sent at all.
        if topic.contains(['#', '+', '\0']) || topic.len() > usize::from(u16::MAX) {
            return None;
        }
        let packet_id = (qos != QoS::AtMostOnce).then(|| self.packet_id());
        self.send(now, &Packet::Publish(Publish { dup: false, qos, retain: false, topic, packet_id, payload }));
        packet_id
    }

    fn rid(&mut self) -> String {
        let rid = self.next_rid;
        self.next_rid += 1;
        rid.to_string()
    }

    fn packet_id(&mut self) -> PacketId {
        let id = NonZeroU16::new(self.next_packet_id).unwrap_or(NonZeroU16::MIN);
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }

    fn send(&mut self, now: UnixMillis, packet: &Packet) {
        if self.phase == Phase::Closed {
            return;
        }
        match packet.to_bytes() {
            Ok(bytes) => {
                self.last_sent = now;
                self.transmit.push_back(bytes);
            }
            // What the device's caller gave (a report, a property bag) has no wire form.
            Err(e) => self.close(CloseReason::ProtocolViolation(format!("a packet that cannot be encoded: {e}"))),
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.pending.clear();
            self.events.push_back(ClientEvent::Closed(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Accepted, Session, SessionEvent};

    /// A device client wired to the hub's session in memory; the test plays both applications.
    struct Pair {
        client: DeviceClient,
        hub: Session,
        now: UnixMillis,
        client_events: Vec<ClientEvent>,
        hub_events: Vec<SessionEvent>,
    }

    impl Pair {
        fn new(keep_alive_secs: u16) -> Self {
            let now = UnixMillis(1_000);
            let client = DeviceClient::new(ClientOptions {
                device_id: "d1".into(),
                host: "hub.example".into(),
                token: "SharedAccessSignature sr=hub.example%2Fdevices%2Fd1&sig=x&se=9".into(),
                keep_alive_secs,
                clean_session: false,
            });
            Self { client, hub: Session::new(now), now, client_events: Vec::new(), hub_events: Vec::new() }
        }

        /// Moves bytes both ways until both sides are quiet.
        fn pump(&mut self) {
            loop {
                let mut moved = false;
                while let Some(bytes) = self.client.poll_transmit() {
                    self.hub.handle_bytes(self.now, &bytes);
                    moved = true;
                }
                while let Some(bytes) = self.hub.poll_transmit() {
                    self.client.handle_bytes(self.now, &bytes);
                    moved = true;
                }
                while let Some(e) = self.hub.poll_event() {
                    self.hub_events.push(e);
                }
                while let Some(e) = self.client.poll_event() {
                    self.client_events.push(e);
                }
                if !moved {
                    return;
                }
            }
        }

        fn connected() -> Self {
            let mut pair = Self::new(60);
            pair.client.connect(pair.now, None);
            pair.pump();
            match pair.hub_events.pop() {
                Some(SessionEvent::Authenticate { device_id, username, token, clean_session, .. }) => {
                    assert_eq!(device_id, "d1");
                    assert_eq!(username.as_deref(), Some("hub.example/d1/?api-version=2021-04-12"));
                    assert!(token.is_some_and(|t| t.starts_with("SharedAccessSignature ")));
                    assert!(!clean_session);
                }
                other => panic!("expected Authenticate, got {other:?}"),
            }
            pair.hub.authenticated(Ok(Accepted::default()));
            pair.pump();
            assert_eq!(pair.client_events, vec![ClientEvent::Connected { session_present: false }]);
            let sub = pair.client.subscribe(
                pair.now,
                &[Subscription::TwinResponses, Subscription::DesiredPatches, Subscription::Methods],
            );
            pair.client.subscribe(pair.now, &[Subscription::CloudToDevice]);
            pair.pump();
            assert!(pair.client_events.contains(&ClientEvent::Subscribed(sub)));
            assert!(pair.hub.is_subscribed(Subscription::CloudToDevice));
            pair.client_events.clear();
            pair.hub_events.clear();
            pair
        }
    }

    #[test]
    fn twin_get_report_and_desired_patches_cross_between_both_roles() {
        let mut pair = Pair::connected();
        let rid = pair.client.get_twin(pair.now);
        pair.pump();
        assert_eq!(pair.hub_events, vec![SessionEvent::TwinGet { rid: rid.clone() }]);
        pair.hub.reply_twin(&rid, 200, None, br#"{"desired":{},"reported":{}}"#.to_vec());
        pair.pump();
        assert_eq!(
            pair.client_events,
            vec![ClientEvent::TwinResponse {
                rid,
                status: 200,
                version: None,
                body: br#"{"desired":{},"reported":{}}"#.to_vec()
            }]
        );

        pair.client_events.clear();
        pair.hub_events.clear();
        let rid = pair.client.report(pair.now, br#"{"temperature":21}"#.to_vec());
        pair.pump();
        assert_eq!(
            pair.hub_events,
            vec![SessionEvent::ReportedPatch { rid: rid.clone(), body: br#"{"temperature":21}"#.to_vec() }]
        );
        pair.hub.reply_twin(&rid, 204, Some(7), Vec::new());
        pair.hub.push_desired(3, br#"{"telemetryInterval":5,"$version":3}"#.to_vec()).unwrap();
        pair.pump();
        assert_eq!(
            pair.client_events,
            vec![
                ClientEvent::TwinResponse { rid, status: 204, version: Some(7), body: Vec::new() },
                ClientEvent::DesiredPatch {
                    version: Some(3),
                    body: br#"{"telemetryInterval":5,"$version":3}"#.to_vec()
                },
            ]
        );
    }

    #[test]
    fn telemetry_methods_and_cloud_to_device_messages() {
        let mut pair = Pair::connected();
        let props = vec![("alert".to_owned(), Some("high_temperature".to_owned()))];
        let id = pair.client.send_telemetry(pair.now, &props, b"{}".to_vec(), QoS::AtLeastOnce).unwrap();
        pair.pump();
        assert_eq!(
            pair.hub_events,
            vec![SessionEvent::Telemetry { properties: props, body: b"{}".to_vec(), ack: Some(id) }]
        );
        assert!(pair.client_events.is_empty(), "no ack before the hub stored it");
        pair.hub.ack(id);
        pair.pump();
        assert_eq!(pair.client_events, vec![ClientEvent::TelemetryAcked(id)]);

        pair.client_events.clear();
        pair.hub_events.clear();
        pair.hub.call_method("reboot", "r9", b"{}".to_vec()).unwrap();
        pair.pump();
        assert_eq!(
            pair.client_events,
            vec![ClientEvent::MethodRequest { name: "reboot".into(), rid: "r9".into(), body: b"{}".to_vec() }]
        );
        pair.client.respond_method(pair.now, "r9", 200, br#"{"ok":true}"#.to_vec());
        let c2d_props = vec![("$.mid".to_owned(), Some("m1".to_owned()))];
        let c2d = pair.hub.send_cloud_to_device(&c2d_props, b"hello".to_vec()).unwrap();
        pair.pump();
        assert_eq!(
            pair.hub_events[pair.hub_events.len() - 2..],
            [
                SessionEvent::MethodResponse { rid: "r9".into(), status: 200, body: br#"{"ok":true}"#.to_vec() },
                SessionEvent::CloudToDeviceAck(c2d),
            ]
        );
        assert!(matches!(
            pair.client_events.last(),
            Some(ClientEvent::CloudToDevice { properties, body, packet_id: Some(_) })
                if *properties == c2d_props && body == b"hello"
        ));
    }

    #[test]
    fn cloud_to_device_acknowledged_by_the_application() {
        let mut pair = Pair::connected();
        pair.client.acknowledge_manually();
        let c2d = pair.hub.send_cloud_to_device(&[], b"x".to_vec()).unwrap();
        pair.pump();
        assert!(!pair.hub_events.contains(&SessionEvent::CloudToDeviceAck(c2d)), "acknowledged on receipt");
        let Some(ClientEvent::CloudToDevice { packet_id: Some(id), .. }) = pair.client_events.last().cloned() else {
            panic!("no message: {:?}", pair.client_events);
        };
        pair.client.acknowledge(pair.now, id);
        pair.pump();
        assert_eq!(pair.hub_events.last(), Some(&SessionEvent::CloudToDeviceAck(c2d)));
    }

    #[test]
    fn refused_connect_and_keep_alive() {
        let mut pair = Pair::new(10);
        pair.client.connect(pair.now, None);
        pair.pump();
        pair.hub.authenticated(Err(ConnectReturnCode::NotAuthorized));
        pair.pump();
        assert_eq!(pair.client_events, vec![ClientEvent::Closed(CloseReason::Refused(5))]);
        assert!(!pair.client.is_connected());

        let mut pair = Pair::connected();
        let due = pair.client.poll_timeout().unwrap();
        assert_eq!(due.0, pair.now.0 + 60_000, "ping after a keep-alive period of silence");
        pair.now = due;
        pair.client.handle_timeout(pair.now);
        pair.pump();
        assert!(pair.client.is_connected(), "the hub answered the ping");
        assert!(pair.hub.is_connected());
        // A ping that goes unanswered for a whole period ends the session.
        pair.now = UnixMillis(pair.now.0 + 60_000);
        pair.client.handle_timeout(pair.now);
        let _ = pair.client.poll_transmit();
        pair.now = UnixMillis(pair.now.0 + 60_000);
        pair.client.handle_timeout(pair.now);
        assert_eq!(pair.client.poll_event(), Some(ClientEvent::Closed(CloseReason::KeepAliveTimeout)));
    }

    #[test]
    fn hostile_hub_input_closes_without_panicking() {
        let mut pair = Pair::connected();
        pair.client.handle_bytes(pair.now, &[0x00, 0x00]);
        assert!(matches!(pair.client.poll_event(), Some(ClientEvent::Closed(CloseReason::ProtocolViolation(_)))));
        let mut pair = Pair::connected();
        let foreign = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "devices/d2/messages/devicebound/".into(),
            packet_id: None,
            payload: Vec::new(),
        });
        pair.client.handle_bytes(pair.now, &foreign.to_bytes().unwrap());
        assert!(matches!(pair.client.poll_event(), Some(ClientEvent::Closed(CloseReason::TopicRefused(_)))));
        // After the close, a reconnect starts over.
        pair.client.connect(pair.now, Some("new-token".into()));
        assert!(matches!(
            mqtt::decode(&pair.client.poll_transmit().unwrap(), usize::MAX),
            Ok(Some((Packet::Connect(c), _))) if c.password.as_deref() == Some(&b"new-token"[..])
        ));
        // A request id no topic name may carry is not sent (found by the device_client fuzzer).
        let mut pair = Pair::connected();
        pair.client.respond_method(pair.now, "#\u{fffd}", 200, Vec::new());
        assert_eq!(pair.client.poll_transmit(), None);
    }
}
