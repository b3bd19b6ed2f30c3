//! An AMQP device's links (`amqp::device::DeviceLinks`) between the AMQP connection and the
//! hub's MQTT session, on arbitrary input: messages of any shape on any of the device's links,
//! settlements, raw frames, and the hub's side pushing desired patches, method calls and
//! cloud-to-device messages with arbitrary bodies. Never panics; the session behind it answers
//! twin requests and stores telemetry as the gateway would.
#![no_main]
use libfuzzer_sys::fuzz_target;
use twinhub_core::amqp::connection::{Connection, Event, Limits};
use twinhub_core::amqp::device::{DeviceLinks, DeviceNode};
use twinhub_core::amqp::{
    Attach, Begin, Body, DeliveryState, Disposition, Flow, Frame, Message, MessageBody, Open, Performative, Properties,
    ProtocolHeader, Role, Transfer, Value,
};
use twinhub_core::session::{Accepted, Session, SessionEvent};
use twinhub_core::UnixMillis;

/// The device's links as the Node SDK attaches them: (handle, the peer's role, address).
const LINKS: [(u32, Role, &str); 6] = [
    (0, Role::Sender, "/devices/d1/messages/events"),
    (1, Role::Receiver, "/devices/d1/messages/devicebound"),
    (2, Role::Sender, "/devices/d1/methods/devicebound"),
    (3, Role::Receiver, "/devices/d1/methods/devicebound"),
    (4, Role::Sender, "/devices/d1/twin"),
    (5, Role::Receiver, "/devices/d1/twin"),
];

fn frame(p: Performative) -> Vec<u8> {
    Frame::amqp(0, p).to_bytes().unwrap()
}

fn setup() -> Vec<u8> {
    let mut out = ProtocolHeader::Amqp.bytes().to_vec();
    out.extend(frame(Performative::Open(Open { container_id: "fuzz".into(), ..Open::default() })));
    out.extend(frame(Performative::Begin(Begin {
        next_outgoing_id: 0,
        incoming_window: 1 << 20,
        outgoing_window: 1 << 20,
        ..Begin::default()
    })));
    for (handle, role, address) in LINKS {
        out.extend(frame(Performative::Attach(Attach::to_node(format!("l{handle}"), handle, role, address))));
        if role == Role::Receiver {
            out.extend(frame(Performative::Flow(Flow {
                next_incoming_id: Some(1),
                incoming_window: 1 << 20,
                next_outgoing_id: 0,
                outgoing_window: 1 << 20,
                handle: Some(handle),
                delivery_count: Some(0),
                link_credit: Some(8),
                ..Flow::default()
            })));
        }
    }
    out
}

struct Rig {
    conn: Connection,
    links: DeviceLinks,
    hub: Session,
    now: UnixMillis,
}

impl Rig {
    fn pump(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            while let Some(bytes) = self.links.poll_transmit() {
                self.hub.handle_bytes(self.now, &bytes);
                moved = true;
            }
            while let Some(bytes) = self.hub.poll_transmit() {
                self.links.handle_bytes(&mut self.conn, &bytes, self.now);
                moved = true;
            }
            while let Some(event) = self.hub.poll_event() {
                moved = true;
                match event {
                    SessionEvent::Authenticate { .. } => self.hub.authenticated(Ok(Accepted::default())),
                    SessionEvent::TwinGet { rid } => self.hub.reply_twin(&rid, 200, None, b"{}".to_vec()),
                    SessionEvent::ReportedPatch { rid, body } => {
                        let status = if body.len() % 2 == 0 { 204 } else { 400 };
                        self.hub.reply_twin(&rid, status, Some(body.len() as u64), Vec::new());
                    }
                    SessionEvent::Telemetry { ack: Some(id), .. } => self.hub.ack(id),
                    _ => {}
                }
            }
            while let Some(_bytes) = self.conn.poll_transmit() {}
            while let Some(event) = self.conn.poll_event() {
                moved = true;
                match event {
                    Event::Attach { link, name, role, source, target, .. } => {
                        let address = match role {
                            Role::Sender => target.as_ref().and_then(|t| t.address.clone()),
                            Role::Receiver => source.as_ref().and_then(|s| s.address.clone()),
                        }
                        .unwrap_or_default();
                        match DeviceNode::parse(&address, role) {
                            Some(Ok((_, node))) => {
                                self.conn.accept_link(link, &name, source, target, vec![], self.now);
                                self.links.attach(link, node, self.now);
                            }
                            _ => {
                                let error = twinhub_core::amqp::AmqpError::new("amqp:not-found", "no");
                                self.conn.refuse_link(link, &name, error, self.now);
                            }
                        }
                    }
                    Event::Message { link, delivery_id, settled, message } => {
                        self.links.message(&mut self.conn, link, delivery_id, settled, *message, self.now)
                    }
                    Event::Disposition { link, delivery_id, state } => {
                        self.links.disposition(link, delivery_id, state, self.now)
                    }
                    Event::Credit { link, .. } => self.links.credit(&mut self.conn, link, self.now),
                    Event::Detached { link, .. } => {
                        self.links.detached(link);
                    }
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
    }
}

/// A message whose annotations, ids and properties are picked by the bytes.
fn shaped(bytes: &[u8]) -> Message {
    let pick = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let text = String::from_utf8_lossy(bytes.get(4..).unwrap_or_default()).into_owned();
    let operation = ["GET", "PATCH", "PUT", "DELETE", "POST"][usize::from(pick(0) % 5)];
    let resource =
        ["/properties/reported", "/notifications/twin/properties/desired", "", "/x"][usize::from(pick(1) % 4)];
    let id = match pick(2) % 4 {
        0 => None,
        1 => Some(Value::String(text.clone())),
        2 => Some(Value::Uuid([pick(3); 16])),
        _ => Some(Value::Ulong(u64::from(pick(3)))),
    };
    let status = match pick(3) % 3 {
        0 => Value::Int(i32::from(pick(2)) * 3),
        1 => Value::String(text.clone()),
        _ => Value::Null,
    };
    Message {
        message_annotations: vec![
            (Value::symbol("operation"), Value::String(operation.into())),
            (Value::symbol("resource"), Value::String(resource.into())),
        ],
        properties: Some(Properties {
            message_id: id.clone(),
            correlation_id: id,
            content_type: Some(text.clone()),
            ..Properties::default()
        }),
        application_properties: vec![("IoThub-status".into(), status), (text.clone(), Value::String(text))],
        body: MessageBody::Data(vec![bytes.to_vec()]),
        ..Message::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let now = UnixMillis(1_000);
    let mut rig = Rig {
        conn: Connection::new(Limits::default(), "hub", now),
        links: DeviceLinks::new("d1", "hub", "SharedAccessSignature sr=hub%2Fdevices%2Fd1&sig=x&se=9".into(), now),
        hub: Session::new(now),
        now,
    };
    rig.conn.handle_bytes(&setup(), now);
    rig.pump();
    let mut delivery = 0u32;
    let mut rest = data;
    while rest.len() >= 2 {
        let (op, len) = (rest[0], usize::from(rest[1]).min(rest.len() - 2));
        let chunk = &rest[2..2 + len];
        rest = &rest[2 + len..];
        match op % 6 {
            // A message of arbitrary bytes on one of the device's links.
            0 => {
                let transfer = Transfer {
                    handle: u32::from(op / 6 % 6),
                    delivery_id: Some(delivery),
                    delivery_tag: Some(delivery.to_be_bytes().to_vec()),
                    settled: Some(op & 0x80 != 0),
                    ..Transfer::default()
                };
                delivery += 1;
                // Half the time a well-formed message built from the bytes (so twin requests,
                // method answers and telemetry properties are reached), else the bytes raw.
                let payload = if op & 0x40 != 0 { shaped(chunk).encode().unwrap_or_default() } else { chunk.to_vec() };
                let f =
                    Frame { channel: 0, body: Body::Amqp { performative: Performative::Transfer(transfer), payload } };
                if let Ok(bytes) = f.to_bytes() {
                    rig.conn.handle_bytes(&bytes, rig.now);
                }
            }
            // The device settles something the hub sent.
            1 => {
                let state = match op / 6 % 4 {
                    0 => DeliveryState::Accepted,
                    1 => DeliveryState::Rejected(None),
                    2 => DeliveryState::Released,
                    _ => DeliveryState::Modified { delivery_failed: Some(true), undeliverable_here: None },
                };
                let first = chunk.first().copied().map_or(0, u32::from);
                let d = Disposition {
                    role: Role::Receiver,
                    first,
                    last: None,
                    settled: true,
                    state: Some(state),
                    batchable: false,
                };
                rig.conn.handle_bytes(&frame(Performative::Disposition(d)), rig.now);
            }
            // Raw bytes: frames of any kind.
            2 => rig.conn.handle_bytes(chunk, rig.now),
            // The hub pushes something with an arbitrary body.
            3 => match op / 6 % 3 {
                0 => {
                    let _ = rig.hub.push_desired(u64::from(op), chunk.to_vec());
                }
                1 => {
                    let _ = rig.hub.call_method("m", &format!("r{delivery}"), chunk.to_vec());
                }
                _ => {
                    let props = vec![("$.mid".to_owned(), Some(String::from_utf8_lossy(chunk).into_owned()))];
                    let _ = rig.hub.send_cloud_to_device(&props, chunk.to_vec());
                }
            },
            // Time passes.
            4 => {
                rig.now = UnixMillis(rig.now.0 + u64::from(op) * 1_000);
                rig.conn.handle_timeout(rig.now);
                rig.links.handle_timeout(&mut rig.conn, rig.now);
                rig.hub.handle_timeout(rig.now);
            }
            // The gateway socket drops, and a renewed token reconnects.
            _ => {
                rig.links.connection_lost(&mut rig.conn, rig.now);
                if rig.links.ended().is_some() {
                    rig.hub = Session::new(rig.now);
                    rig.links.reconnect("SharedAccessSignature sr=hub%2Fdevices%2Fd1&sig=y&se=99".into(), rig.now);
                }
            }
        }
        rig.pump();
    }
});
