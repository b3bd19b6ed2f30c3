//! The device links between a test AMQP peer (the device) and the hub's MQTT session in
//! memory; the test plays both adapters.

use super::*;
use crate::amqp::frame::{Body, Frame};
use crate::amqp::performative::{Performative, Transfer};
use crate::amqp::test_peer::{credit, Peer};
use crate::amqp::{AmqpError, Event};
use crate::session::{Accepted, Session, SessionEvent};

struct Rig {
    peer: Peer,
    links: DeviceLinks,
    hub: Session,
    hub_events: Vec<SessionEvent>,
    next_delivery: u32,
}

impl Rig {
    fn new() -> Self {
        let peer = Peer::opened(None);
        let now = peer.now;
        let token = "SharedAccessSignature sr=hub.example%2Fdevices%2Fd1&sig=x&se=9".to_owned();
        let mut rig = Rig {
            links: DeviceLinks::new("d1", "hub.example", token, now),
            hub: Session::new(now),
            peer,
            hub_events: Vec::new(),
            next_delivery: 0,
        };
        rig.pump();
        assert!(
            matches!(rig.hub_events.pop(), Some(SessionEvent::Authenticate { device_id, .. }) if device_id == "d1")
        );
        rig.hub.authenticated(Ok(Accepted::default()));
        rig.pump();
        rig
    }

    /// Moves bytes between the links and the MQTT session, and AMQP events into the links,
    /// until all are quiet.
    fn pump(&mut self) {
        let now = self.peer.now;
        loop {
            let mut moved = false;
            while let Some(bytes) = self.links.poll_transmit() {
                self.hub.handle_bytes(now, &bytes);
                moved = true;
            }
            while let Some(bytes) = self.hub.poll_transmit() {
                self.links.handle_bytes(&mut self.peer.hub, &bytes, now);
                moved = true;
            }
            while let Some(e) = self.hub.poll_event() {
                self.hub_events.push(e);
                moved = true;
            }
            for event in self.peer.events() {
                moved = true;
                match event {
                    Event::Attach { link, name, role, source, target, .. } => {
                        let address = match role {
                            Role::Sender => target.as_ref().and_then(|t| t.address.clone()),
                            Role::Receiver => source.as_ref().and_then(|s| s.address.clone()),
                        }
                        .unwrap();
                        match DeviceNode::parse(&address, role) {
                            Some(Ok((device, node))) => {
                                assert_eq!(device, "d1");
                                self.peer.hub.accept_link(link, &name, source, target, Vec::new(), now);
                                self.links.attach(link, node, now);
                            }
                            other => {
                                let why = format!("{other:?}");
                                self.peer.hub.refuse_link(link, &name, AmqpError::new(condition::NOT_FOUND, why), now);
                            }
                        }
                    }
                    Event::Message { link, delivery_id, settled, message } => {
                        self.links.message(&mut self.peer.hub, link, delivery_id, settled, *message, now)
                    }
                    Event::Disposition { link, delivery_id, state } => {
                        self.links.disposition(link, delivery_id, state, now)
                    }
                    Event::Credit { link, .. } => self.links.credit(&mut self.peer.hub, link, now),
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Attaches `address` as the peer's `role` on `handle`; the hub's answer is read.
    fn attach(&mut self, handle: u32, role: Role, address: &str) {
        let attach = super::super::Attach::to_node(format!("link-{handle}"), handle, role, address);
        self.peer.amqp(0, Performative::Attach(attach));
        self.pump();
        assert!(
            matches!(self.peer.performative(), Performative::Attach(a) if a.handle == handle || a.source.is_some())
        );
        if role == Role::Sender {
            assert!(matches!(self.peer.performative(), Performative::Flow(_)), "no credit for the device");
        } else {
            self.peer.amqp(0, credit(handle, 100));
            self.pump();
        }
    }

    /// The peer sends `message` unsettled on `handle`.
    fn send(&mut self, handle: u32, message: &Message) -> u32 {
        let delivery_id = self.next_delivery;
        self.next_delivery += 1;
        let transfer = Transfer {
            handle,
            delivery_id: Some(delivery_id),
            delivery_tag: Some(delivery_id.to_be_bytes().to_vec()),
            ..Transfer::default()
        };
        self.peer.send(Frame {
            channel: 0,
            body: Body::Amqp { performative: Performative::Transfer(transfer), payload: message.encode().unwrap() },
        });
        self.pump();
        delivery_id
    }

    /// The next transfer the hub sent the peer: its delivery id, whether settled, the message.
    fn received(&mut self) -> (u32, bool, Message) {
        loop {
            match self.peer.frame().body {
                Body::Amqp { performative: Performative::Transfer(t), payload } => {
                    return (t.delivery_id.unwrap(), t.settled == Some(true), Message::decode(&payload).unwrap())
                }
                Body::Amqp { performative: Performative::Flow(_) | Performative::Disposition(_), .. } => continue,
                other => panic!("expected a transfer, got {other:?}"),
            }
        }
    }

    /// The peer settles a delivery the hub sent.
    fn settle(&mut self, delivery_id: u32, state: DeliveryState) {
        let disposition = crate::amqp::performative::Disposition::settle(delivery_id, state);
        self.peer.amqp(0, Performative::Disposition(disposition));
        self.pump();
    }

    fn disposition(&mut self) -> Option<DeliveryState> {
        match self.peer.performative() {
            Performative::Disposition(d) => d.state,
            other => panic!("expected a disposition, got {other:?}"),
        }
    }
}

fn twin_request(operation: &str, resource: Option<&str>, correlation: &str, body: &[u8]) -> Message {
    let mut m = data_message(body.to_vec());
    m.message_annotations.push((Value::symbol("operation"), Value::String(operation.into())));
    if let Some(r) = resource {
        m.message_annotations.push((Value::symbol("resource"), Value::String(r.into())));
    }
    m.properties =
        Some(Properties { correlation_id: Some(Value::String(correlation.into())), ..Properties::default() });
    m
}

fn annotation(m: &Message, name: &str) -> Option<Value> {
    m.message_annotations.iter().find(|(k, _)| k.as_str() == Some(name)).map(|(_, v)| v.clone())
}

fn correlation(m: &Message) -> Option<Value> {
    m.properties.as_ref().and_then(|p| p.correlation_id.clone())
}

#[test]
fn addresses_as_the_sdks_write_them() {
    let ok = |path: &str, role| DeviceNode::parse(path, role).unwrap().unwrap();
    assert_eq!(ok("/devices/d1/messages/events", Role::Sender), ("d1".into(), DeviceNode::Telemetry));
    assert_eq!(ok("/devices/d%201/messages/deviceBound", Role::Receiver), ("d 1".into(), DeviceNode::CloudToDevice));
    assert_eq!(ok("/devices/d1/methods/devicebound", Role::Receiver).1, DeviceNode::MethodCalls);
    assert_eq!(ok("/devices/d1/methods/devicebound", Role::Sender).1, DeviceNode::MethodAnswers);
    assert_eq!(ok("/devices/d1/twin", Role::Sender).1, DeviceNode::TwinRequests);
    assert_eq!(ok("/devices/d1/twin", Role::Receiver).1, DeviceNode::TwinAnswers);
    assert!(DeviceNode::parse("/devices/d1/messages/events", Role::Receiver).unwrap().is_err());
    assert!(DeviceNode::parse("/devices/d1/modules/m1/messages/events", Role::Sender).unwrap().is_err());
    assert!(DeviceNode::parse("/messages/devicebound", Role::Sender).is_none());
    assert!(DeviceNode::parse("$cbs", Role::Sender).is_none());
}

#[test]
fn telemetry_is_accepted_once_the_hub_stored_it() {
    let mut rig = Rig::new();
    rig.attach(0, Role::Sender, "/devices/d1/messages/events");
    let mut m = data_message(br#"{"temperature":31}"#.to_vec());
    m.properties = Some(Properties {
        message_id: Some(Value::Uuid([0x11; 16])),
        content_type: Some("application/json".into()),
        ..Properties::default()
    });
    m.application_properties.push(("alert".into(), Value::String("high_temperature".into())));
    rig.send(0, &m);
    let Some(SessionEvent::Telemetry { properties, body, ack: Some(id) }) = rig.hub_events.pop() else {
        panic!("no telemetry: {:?}", rig.hub_events);
    };
    assert_eq!(body, br#"{"temperature":31}"#);
    assert!(properties.contains(&("alert".into(), Some("high_temperature".into()))));
    assert!(properties.contains(&("$.ct".into(), Some("application/json".into()))));
    assert!(properties
        .iter()
        .any(|(k, v)| k == "$.mid" && v.as_deref() == Some("11111111-1111-1111-1111-111111111111")));
    assert!(rig.peer.nothing_sent(), "settled before the hub stored it");
    rig.hub.ack(id);
    rig.pump();
    assert_eq!(rig.disposition(), Some(DeliveryState::Accepted));

    // A message the hub never stores is released when the session ends.
    rig.send(0, &data_message(b"{}".to_vec()));
    rig.hub.close_by_hub("device disabled");
    rig.pump();
    while let Some(bytes) = rig.hub.poll_transmit() {
        rig.links.handle_bytes(&mut rig.peer.hub, &bytes, rig.peer.now);
    }
    rig.links.connection_lost(&mut rig.peer.hub, rig.peer.now);
    assert_eq!(rig.disposition(), Some(DeliveryState::Released));
    assert!(rig.links.ended().is_some());
}

#[test]
fn twin_get_reported_patch_and_desired_notifications() {
    let mut rig = Rig::new();
    rig.attach(0, Role::Sender, "/devices/d1/twin");
    rig.attach(1, Role::Receiver, "/devices/d1/twin");
    assert!(rig.hub.is_subscribed(Subscription::TwinResponses));

    rig.send(0, &twin_request("GET", None, "c-get", b" "));
    let Some(SessionEvent::TwinGet { rid }) = rig.hub_events.pop() else { panic!("{:?}", rig.hub_events) };
    let twin = br#"{"desired":{"$version":1},"reported":{"$version":1}}"#.to_vec();
    rig.hub.reply_twin(&rid, 200, None, twin.clone());
    rig.pump();
    let (_, _, answer) = rig.received();
    assert_eq!(correlation(&answer), Some(Value::String("c-get".into())));
    assert_eq!(annotation(&answer, "status"), Some(Value::Int(200)));
    assert_eq!(answer.data(), Some(twin));

    rig.send(0, &twin_request("PATCH", Some("/properties/reported"), "c-patch", br#"{"fw":"2.0"}"#));
    let Some(SessionEvent::ReportedPatch { rid, body }) = rig.hub_events.pop() else { panic!() };
    assert_eq!(body, br#"{"fw":"2.0"}"#);
    rig.hub.reply_twin(&rid, 204, Some(5), Vec::new());
    rig.pump();
    let (_, _, answer) = rig.received();
    assert_eq!(annotation(&answer, "status"), Some(Value::Int(204)));
    assert_eq!(annotation(&answer, "version"), Some(Value::Long(5)));

    // No desired patches before the device asks for them.
    assert!(rig.hub.push_desired(2, b"{}".to_vec()).is_err());
    rig.send(0, &twin_request("PUT", Some("/notifications/twin/properties/desired"), "c-put", b" "));
    let (_, _, answer) = rig.received();
    assert_eq!(
        (correlation(&answer), annotation(&answer, "status")),
        (Some(Value::String("c-put".into())), Some(Value::Int(200)))
    );
    rig.hub.push_desired(3, br#"{"interval":5,"$version":3}"#.to_vec()).unwrap();
    rig.pump();
    let (_, _, patch) = rig.received();
    assert_eq!(correlation(&patch), None);
    assert_eq!(patch.data(), Some(br#"{"interval":5,"$version":3}"#.to_vec()));

    // An operation the hub does not know: 400, and the session goes on.
    rig.send(0, &twin_request("POST", Some("/x"), "c-bad", b" "));
    let (_, _, answer) = rig.received();
    assert_eq!(annotation(&answer, "status"), Some(Value::Int(400)));
}

#[test]
fn methods_and_cloud_to_device() {
    let mut rig = Rig::new();
    rig.attach(0, Role::Sender, "/devices/d1/methods/devicebound");
    rig.attach(1, Role::Receiver, "/devices/d1/methods/devicebound");
    rig.hub.call_method("reboot", "r7", br#"{"delay":1}"#.to_vec()).unwrap();
    rig.pump();
    let (_, settled, call) = rig.received();
    assert!(settled);
    assert_eq!(correlation(&call), Some(Value::String("r7".into())));
    assert!(call.application_properties.contains(&("IoThub-methodname".into(), Value::String("reboot".into()))));
    let mut answer = data_message(br#"{"ok":true}"#.to_vec());
    answer.properties = Some(Properties { correlation_id: Some(Value::String("r7".into())), ..Properties::default() });
    answer.application_properties.push(("IoThub-status".into(), Value::Int(200)));
    rig.send(0, &answer);
    assert_eq!(rig.disposition(), Some(DeliveryState::Accepted));
    assert_eq!(
        rig.hub_events.pop(),
        Some(SessionEvent::MethodResponse { rid: "r7".into(), status: 200, body: br#"{"ok":true}"#.to_vec() })
    );

    rig.attach(2, Role::Receiver, "/devices/d1/messages/devicebound");
    assert!(rig.hub.is_subscribed(Subscription::CloudToDevice));
    let props = vec![("$.mid".to_owned(), Some("m1".to_owned())), ("urgency".to_owned(), Some("high".to_owned()))];
    let first = rig.hub.send_cloud_to_device(&props, b"blink".to_vec()).unwrap();
    rig.pump();
    let (delivery, settled, message) = rig.received();
    assert!(!settled, "a cloud-to-device message waits for the device's outcome");
    assert_eq!(message.properties.as_ref().and_then(|p| p.message_id.clone()), Some(Value::String("m1".into())));
    assert!(message.application_properties.contains(&("urgency".into(), Value::String("high".into()))));
    assert!(!rig.hub_events.iter().any(|e| matches!(e, SessionEvent::CloudToDeviceAck(_))), "completed unread");
    // Abandoned: not completed.
    rig.settle(delivery, DeliveryState::Released);
    assert!(!rig.hub_events.iter().any(|e| matches!(e, SessionEvent::CloudToDeviceAck(_))));
    // Completed.
    let second = rig.hub.send_cloud_to_device(&props, b"again".to_vec()).unwrap();
    rig.pump();
    let (delivery, _, _) = rig.received();
    rig.settle(delivery, DeliveryState::Accepted);
    assert_eq!(rig.hub_events.pop(), Some(SessionEvent::CloudToDeviceAck(second)));
    assert_ne!(first, second);
    // Rejected: done, and the hub hears it was a rejection.
    let third = rig.hub.send_cloud_to_device(&props, b"no".to_vec()).unwrap();
    rig.pump();
    let (delivery, _, _) = rig.received();
    rig.settle(delivery, DeliveryState::Rejected(None));
    assert_eq!(rig.hub_events.pop(), Some(SessionEvent::CloudToDeviceRejected(third)));
}
