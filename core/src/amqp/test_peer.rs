//! An AMQP peer for tests: writes frames as a client would and reads what the hub sent.

use super::connection::{Connection, Event, Limits, LinkId};
use super::frame::{Body, Frame, ProtocolHeader};
use super::performative::{Attach, Begin, Flow, Open, Performative, Role, Sasl};
use crate::UnixMillis;

pub(crate) const T0: UnixMillis = UnixMillis(1_000_000);

/// The client side of a test: writes frames as a peer would and reads what the hub sent.
pub(crate) struct Peer {
    pub hub: Connection,
    /// Hub output not yet read as frames.
    pub received: Vec<u8>,
    pub now: UnixMillis,
}

impl Peer {
    pub(crate) fn new() -> Self {
        Self::with(Limits::default())
    }

    pub(crate) fn with(limits: Limits) -> Self {
        Peer { hub: Connection::new(limits, "twinhub", T0), received: Vec::new(), now: T0 }
    }

    pub(crate) fn send_bytes(&mut self, bytes: &[u8]) {
        self.hub.handle_bytes(bytes, self.now);
        while let Some(out) = self.hub.poll_transmit() {
            self.received.extend(out);
        }
    }

    pub(crate) fn send(&mut self, frame: Frame) {
        self.send_bytes(&frame.to_bytes().unwrap());
    }

    pub(crate) fn amqp(&mut self, channel: u16, p: Performative) {
        self.send(Frame::amqp(channel, p));
    }

    pub(crate) fn pump(&mut self) {
        while let Some(out) = self.hub.poll_transmit() {
            self.received.extend(out);
        }
    }

    pub(crate) fn header(&mut self) -> ProtocolHeader {
        self.pump();
        let h = ProtocolHeader::read(&self.received).unwrap().expect("a header");
        self.received.drain(..8);
        h
    }

    pub(crate) fn frame(&mut self) -> Frame {
        self.pump();
        let (frame, used) = Frame::decode(&self.received, u32::MAX).unwrap().expect("a frame");
        self.received.drain(..used);
        frame
    }

    pub(crate) fn performative(&mut self) -> Performative {
        match self.frame().body {
            Body::Amqp { performative, .. } => performative,
            other => panic!("expected a performative, got {other:?}"),
        }
    }

    pub(crate) fn nothing_sent(&mut self) -> bool {
        self.pump();
        self.received.is_empty()
    }

    pub(crate) fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.hub.poll_event()).collect()
    }

    /// Through SASL ANONYMOUS, open and begin on channel 0.
    pub(crate) fn opened(max_frame_size: Option<u32>) -> Self {
        Self::opened_with(Limits::default(), max_frame_size)
    }

    pub(crate) fn opened_with(limits: Limits, max_frame_size: Option<u32>) -> Self {
        let mut p = Peer::with(limits);
        p.send_bytes(&ProtocolHeader::Sasl.bytes());
        assert_eq!(p.header(), ProtocolHeader::Sasl);
        assert!(matches!(p.frame().body, Body::Sasl(Sasl::Mechanisms(m)) if m.contains(&"ANONYMOUS".to_owned())));
        p.send(Frame::sasl(Sasl::Init {
            mechanism: "ANONYMOUS".into(),
            initial_response: None,
            hostname: Some("hub".into()),
        }));
        assert!(matches!(p.events().as_slice(), [Event::SaslInit { mechanism, .. }] if mechanism == "ANONYMOUS"));
        p.hub.sasl_outcome(true, p.now);
        assert!(matches!(p.frame().body, Body::Sasl(Sasl::Outcome { code: 0, .. })));
        p.send_bytes(&ProtocolHeader::Amqp.bytes());
        assert_eq!(p.header(), ProtocolHeader::Amqp);
        let open =
            Open { container_id: "client".into(), max_frame_size, idle_time_out: Some(60_000), ..Open::default() };
        p.amqp(0, Performative::Open(open));
        assert!(
            matches!(p.performative(), Performative::Open(o) if o.container_id == "twinhub" && o.max_frame_size == Some(limits.max_frame_size))
        );
        assert!(matches!(p.events().as_slice(), [Event::Opened { container_id, .. }] if container_id == "client"));
        let begin = Begin { next_outgoing_id: 1, incoming_window: 100, outgoing_window: 100, ..Begin::default() };
        p.amqp(0, Performative::Begin(begin));
        assert!(matches!(p.performative(), Performative::Begin(b) if b.remote_channel == Some(0)));
        p
    }

    pub(crate) fn attach(&mut self, handle: u32, role: Role, address: &str) -> LinkId {
        let attach = Attach::to_node(format!("link-{handle}"), handle, role, address);
        self.amqp(0, Performative::Attach(attach));
        let events = self.events();
        let [Event::Attach { link, .. }] = events.as_slice() else { panic!("{events:?}") };
        *link
    }
}

/// The flow a receiver sends to give `credit` on `handle`.
pub(crate) fn credit(handle: u32, credit: u32) -> Performative {
    Performative::Flow(Flow {
        next_incoming_id: Some(1),
        incoming_window: 100,
        next_outgoing_id: 1,
        outgoing_window: 100,
        handle: Some(handle),
        delivery_count: Some(0),
        link_credit: Some(credit),
        ..Flow::default()
    })
}
