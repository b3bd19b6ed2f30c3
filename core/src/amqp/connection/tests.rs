use super::*;
use crate::amqp::message::Body as MessageBody;

use crate::amqp::test_peer::T0;

pub(crate) use crate::amqp::test_peer::{credit, Peer};

fn message(body: &[u8]) -> Message {
    Message { body: MessageBody::Data(vec![body.to_vec()]), ..Message::default() }
}

#[test]
fn a_receiver_gets_messages_as_its_credit_allows_and_settles_them() {
    let mut p = Peer::opened(None);
    let link = p.attach(3, Role::Receiver, "/messages/servicebound/feedback");
    p.hub.accept_link(link, "link-3", None, None, vec![], p.now);
    assert!(matches!(p.performative(), Performative::Attach(a) if a.role == Role::Sender && a.handle == 3));
    assert_eq!(p.hub.send(link, &message(b"x"), false, p.now), Err(SendError::NoCredit));
    p.amqp(0, credit(3, 2));
    assert!(matches!(p.events().as_slice(), [Event::Credit { drain: false, .. }]));
    assert_eq!(p.hub.credit(link), 2);
    let first = p.hub.send(link, &message(b"one"), false, p.now).unwrap();
    let second = p.hub.send(link, &message(b"two"), false, p.now).unwrap();
    assert_eq!(p.hub.send(link, &message(b"three"), false, p.now), Err(SendError::NoCredit));
    for (id, body) in [(first, b"one"), (second, b"two")] {
        let Body::Amqp { performative: Performative::Transfer(t), payload } = p.frame().body else { panic!() };
        assert_eq!((t.handle, t.delivery_id, t.more), (3, Some(id), false));
        assert_eq!(Message::decode(&payload).unwrap().data().unwrap(), body.to_vec());
    }
    let d = Disposition {
        role: Role::Receiver,
        first,
        last: Some(second),
        settled: true,
        state: Some(DeliveryState::Accepted),
        batchable: false,
    };
    p.amqp(0, Performative::Disposition(d));
    let events = p.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        matches!(&events[0], Event::Disposition { delivery_id, state: Some(DeliveryState::Accepted), .. } if *delivery_id == first)
    );
    // Detach from the peer: answered, reported.
    p.amqp(0, Performative::Detach(Detach { handle: 3, closed: true, error: None }));
    assert!(matches!(p.performative(), Performative::Detach(d) if d.handle == 3 && d.closed));
    assert!(matches!(p.events().as_slice(), [Event::Detached { .. }]));
    assert_eq!(p.hub.send(link, &message(b"x"), false, p.now), Err(SendError::NoLink));
    p.amqp(0, Performative::Close(None));
    assert!(matches!(p.performative(), Performative::Close(None)));
    assert!(matches!(p.events().as_slice(), [Event::Closed { error: None }]));
    assert!(p.hub.is_closed());
}

#[test]
fn a_sender_gets_credit_and_its_messages_arrive_whole() {
    let mut p = Peer::opened(None);
    let link = p.attach(0, Role::Sender, "/messages/devicebound");
    p.hub.accept_link(link, "link-0", None, None, vec![], p.now);
    assert!(matches!(p.performative(), Performative::Attach(a) if a.role == Role::Receiver));
    let Performative::Flow(flow) = p.performative() else { panic!() };
    assert_eq!((flow.handle, flow.link_credit), (Some(0), Some(Limits::default().link_credit)));
    // One message in three transfers.
    let bytes = message(&[7u8; 3000]).encode().unwrap();
    let parts: Vec<&[u8]> = bytes.chunks(1200).collect();
    for (i, part) in parts.iter().enumerate() {
        let transfer = Transfer {
            handle: 0,
            delivery_id: (i == 0).then_some(5),
            delivery_tag: (i == 0).then(|| vec![5]),
            more: i + 1 < parts.len(),
            ..Transfer::default()
        };
        p.send(Frame {
            channel: 0,
            body: Body::Amqp { performative: Performative::Transfer(transfer), payload: part.to_vec() },
        });
    }
    let events = p.events();
    let [Event::Message { delivery_id: 5, settled: false, message, .. }] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(message.data().unwrap(), vec![7u8; 3000]);
    p.hub.settle(link, 5, DeliveryState::Accepted, p.now);
    assert!(
        matches!(p.performative(), Performative::Disposition(d) if d.first == 5 && d.settled && d.role == Role::Receiver)
    );
    // A payload that is not a message is rejected, the link stays.
    let transfer = Transfer { handle: 0, delivery_id: Some(6), delivery_tag: Some(vec![6]), ..Transfer::default() };
    p.send(Frame {
        channel: 0,
        body: Body::Amqp { performative: Performative::Transfer(transfer), payload: vec![0x00, 0x53, 0x75, 0x41] },
    });
    assert!(p.events().is_empty());
    assert!(
        matches!(p.performative(), Performative::Disposition(Disposition { first: 6, state: Some(DeliveryState::Rejected(Some(e))), .. }) if e.condition == condition::DECODE_ERROR)
    );
}

#[test]
fn a_message_over_the_limit_or_past_the_credit_ends_the_link() {
    let limits = Limits { link_credit: 1, max_message_size: 1000, ..Limits::default() };
    let mut p = Peer::opened_with(limits, None);
    let link = p.attach(1, Role::Sender, "/messages/devicebound");
    p.hub.accept_link(link, "l", None, None, vec![], p.now);
    p.performative();
    p.performative();
    let big = Transfer { handle: 1, delivery_id: Some(1), delivery_tag: Some(vec![1]), ..Transfer::default() };
    p.send(Frame {
        channel: 0,
        body: Body::Amqp { performative: Performative::Transfer(big), payload: vec![0; 1001] },
    });
    assert!(
        matches!(p.performative(), Performative::Detach(Detach { handle: 1, error: Some(e), .. }) if e.condition == condition::MESSAGE_SIZE_EXCEEDED)
    );
    assert!(matches!(p.events().as_slice(), [Event::Detached { error: Some(_), .. }]));
    // No credit left on a fresh link after its one delivery.
    let link = p.attach(2, Role::Sender, "/messages/devicebound");
    p.hub.accept_link(link, "l2", None, None, vec![], p.now);
    p.performative();
    p.performative();
    for id in [2, 3] {
        let t = Transfer {
            handle: 2,
            delivery_id: Some(id),
            delivery_tag: Some(vec![id as u8]),
            settled: Some(true),
            ..Transfer::default()
        };
        p.send(Frame {
            channel: 0,
            body: Body::Amqp { performative: Performative::Transfer(t), payload: message(b"m").encode().unwrap() },
        });
    }
    let events = p.events();
    assert!(
        matches!(events.as_slice(), [Event::Message { .. }, Event::Detached { error: Some(e), .. }] if e.condition == condition::TRANSFER_LIMIT_EXCEEDED),
        "{events:?}"
    );
}

#[test]
fn a_message_bigger_than_the_peers_frames_goes_in_several_transfers() {
    let mut p = Peer::opened(Some(512));
    let link = p.attach(0, Role::Receiver, "$cbs");
    p.hub.accept_link(link, "l", None, None, vec![], p.now);
    p.performative();
    p.amqp(0, credit(0, 1));
    let m = message(&[1u8; 2000]);
    p.hub.send(link, &m, true, p.now).unwrap();
    let mut payload = Vec::new();
    loop {
        p.pump();
        let size = u32::from_be_bytes([p.received[0], p.received[1], p.received[2], p.received[3]]);
        assert!(size <= 512, "a frame of {size} bytes to a peer that takes 512");
        let Body::Amqp { performative: Performative::Transfer(t), payload: part } = p.frame().body else { panic!() };
        payload.extend(part);
        if !t.more {
            break;
        }
    }
    assert_eq!(Message::decode(&payload).unwrap(), m);
}

#[test]
fn violations_close_the_connection_with_the_spec_condition() {
    // AMQP without SASL (rhea connects so): taken, the peer anonymous; a SASL header after
    // the SASL exchange is refused.
    let mut p = Peer::new();
    p.send_bytes(&ProtocolHeader::Amqp.bytes());
    assert_eq!(p.header(), ProtocolHeader::Amqp);
    p.amqp(0, Performative::Open(Open { container_id: "rhea".into(), ..Open::default() }));
    assert!(matches!(p.performative(), Performative::Open(_)));
    assert!(!p.hub.is_closed());
    let mut p = Peer::new();
    p.send_bytes(&ProtocolHeader::Sasl.bytes());
    p.send(Frame::sasl(Sasl::Init { mechanism: "ANONYMOUS".into(), initial_response: None, hostname: None }));
    p.hub.sasl_outcome(true, p.now);
    p.send_bytes(&ProtocolHeader::Sasl.bytes());
    assert!(p.hub.is_closed());
    // AMQP in a version the hub does not speak: the header it does speak, then closed (2.2).
    for (unsupported, answer) in
        [(b"AMQP\x09\x01\x00\x00", ProtocolHeader::Amqp), (b"AMQP\x03\x02\x00\x00", ProtocolHeader::Sasl)]
    {
        let mut p = Peer::new();
        p.send_bytes(unsupported);
        assert_eq!(p.header(), answer);
        assert!(p.hub.is_closed() && p.nothing_sent());
    }
    // Garbage instead of a header: closed, nothing sent.
    let mut p = Peer::new();
    p.send_bytes(b"GET / HTTP/1.1\r\n");
    assert!(p.hub.is_closed() && p.nothing_sent());
    // SASL refused.
    let mut p = Peer::new();
    p.send_bytes(&ProtocolHeader::Sasl.bytes());
    p.send(Frame::sasl(Sasl::Init {
        mechanism: "PLAIN".into(),
        initial_response: Some(b"\0u\0bad".to_vec()),
        hostname: None,
    }));
    p.hub.sasl_outcome(false, p.now);
    p.header();
    p.frame();
    assert!(matches!(p.frame().body, Body::Sasl(Sasl::Outcome { code: 1, .. })));
    assert!(
        matches!(p.events().last(), Some(Event::Closed { error: Some(e) }) if e.condition == condition::UNAUTHORIZED_ACCESS)
    );
    // After open: a frame over the limit, a malformed performative, a begin past channel-max,
    // a frame on a channel with no session.
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x00, 0x10, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00], condition::FRAMING_ERROR),
        (
            Frame::amqp(0, Performative::End(None)).to_bytes().unwrap()[..8]
                .iter()
                .copied()
                .chain([0x00, 0x53, 0x99, 0x45])
                .collect::<Vec<u8>>(),
            condition::DECODE_ERROR,
        ),
        (
            Frame::amqp(
                200,
                Performative::Begin(Begin {
                    next_outgoing_id: 1,
                    incoming_window: 1,
                    outgoing_window: 1,
                    ..Begin::default()
                }),
            )
            .to_bytes()
            .unwrap(),
            condition::FRAMING_ERROR,
        ),
        (Frame::amqp(9, Performative::Flow(Flow::default())).to_bytes().unwrap(), condition::NOT_ALLOWED),
    ];
    for (bytes, expected) in cases {
        let mut p = Peer::opened(None);
        let mut bytes = bytes;
        if expected == condition::DECODE_ERROR {
            let len = bytes.len() as u32;
            bytes[..4].copy_from_slice(&len.to_be_bytes());
        }
        p.send_bytes(&bytes);
        assert!(matches!(p.performative(), Performative::Close(Some(e)) if e.condition == expected), "{expected}");
        assert!(p.hub.is_closed());
        // Sticky: more input does nothing.
        p.send_bytes(&ProtocolHeader::Amqp.bytes());
        assert!(p.nothing_sent());
    }
}

#[test]
fn a_refused_link_gets_an_empty_attach_and_a_detach_with_the_reason() {
    let mut p = Peer::opened(None);
    let link = p.attach(4, Role::Receiver, "/nowhere");
    p.hub.refuse_link(link, "link-4", AmqpError::new(condition::NOT_FOUND, "no such node"), p.now);
    assert!(matches!(p.performative(), Performative::Attach(a) if a.source.is_none() && a.target.is_none()));
    assert!(
        matches!(p.performative(), Performative::Detach(Detach { handle: 4, closed: true, error: Some(e) }) if e.condition == condition::NOT_FOUND)
    );
    // A flow that crossed the detach is ignored, the peer's answering detach ends the matter,
    // and the handle is free again.
    p.amqp(
        0,
        Performative::Flow(Flow {
            handle: Some(4),
            link_credit: Some(1),
            incoming_window: 10,
            next_outgoing_id: 1,
            outgoing_window: 10,
            ..Flow::default()
        }),
    );
    p.amqp(0, Performative::Detach(Detach { handle: 4, closed: true, error: None }));
    assert!(p.nothing_sent() && !p.hub.is_closed());
    p.attach(4, Role::Receiver, "/elsewhere");
}

#[test]
fn heartbeats_the_idle_timeout_and_the_open_timeout() {
    let mut p = Peer::opened(None);
    p.hub.authenticated();
    // The peer asked for 60 s: the hub sends an empty frame every 30 s of its own silence.
    let beat = p.hub.poll_timeout().unwrap();
    assert_eq!(beat, UnixMillis(T0.0 + 30_000));
    p.hub.handle_timeout(beat);
    assert_eq!(p.frame().body, Body::Empty);
    // Silent for twice the hub's 240 s: closed.
    p.hub.handle_timeout(UnixMillis(T0.0 + 480_000));
    assert!(matches!(p.performative(), Performative::Close(Some(e)) if e.condition == condition::CONNECTION_FORCED));
    // No open within 30 s of the connection.
    let mut p = Peer::new();
    p.send_bytes(&ProtocolHeader::Sasl.bytes());
    assert_eq!(p.hub.poll_timeout(), Some(UnixMillis(T0.0 + 30_000)));
    p.hub.handle_timeout(UnixMillis(T0.0 + 30_000));
    assert!(p.hub.is_closed());
}

#[test]
fn a_connection_that_never_authenticates_is_closed_at_its_deadline() {
    let limits = Limits { auth_timeout_ms: 5_000, ..Limits::default() };
    let mut p = Peer::opened_with(limits, None);
    assert_eq!(p.hub.poll_timeout(), Some(UnixMillis(T0.0 + 5_000)));
    // Empty frames (heartbeats) keep a connection alive, but do not stand for a credential.
    p.now = UnixMillis(T0.0 + 4_000);
    p.send(Frame { channel: 0, body: Body::Empty });
    p.hub.handle_timeout(UnixMillis(T0.0 + 4_999));
    assert!(!p.hub.is_closed());
    p.hub.handle_timeout(UnixMillis(T0.0 + 5_000));
    assert!(matches!(p.performative(), Performative::Close(Some(e)) if e.condition == condition::UNAUTHORIZED_ACCESS));
    assert!(p.hub.is_closed());
    // One that authenticated in time is not.
    let mut p = Peer::opened_with(limits, None);
    p.hub.authenticated();
    assert!(p.hub.is_authenticated());
    p.hub.handle_timeout(UnixMillis(T0.0 + 5_000));
    assert!(!p.hub.is_closed());
    assert!(p.hub.poll_timeout().unwrap() > UnixMillis(T0.0 + 5_000));
}

#[test]
fn a_session_the_hub_ends_waits_for_the_peers_end() {
    let mut p = Peer::opened(None);
    // A flow for a handle never attached ends the session, not the connection.
    p.amqp(
        0,
        Performative::Flow(Flow {
            handle: Some(9),
            incoming_window: 10,
            next_outgoing_id: 1,
            outgoing_window: 10,
            ..Flow::default()
        }),
    );
    assert!(matches!(p.performative(), Performative::End(Some(e)) if e.condition == condition::UNATTACHED_HANDLE));
    // Frames that crossed it are ignored; the peer's end closes the matter; the channel is free.
    p.amqp(0, Performative::Flow(Flow { handle: Some(9), ..Flow::default() }));
    p.amqp(0, Performative::End(None));
    assert!(p.nothing_sent() && !p.hub.is_closed());
    p.amqp(
        0,
        Performative::Begin(Begin {
            next_outgoing_id: 1,
            incoming_window: 10,
            outgoing_window: 10,
            ..Begin::default()
        }),
    );
    assert!(matches!(p.performative(), Performative::Begin(_)));
}
