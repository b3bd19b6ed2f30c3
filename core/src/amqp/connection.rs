//! An AMQP 1.0 connection, server role, as a sans-I/O state machine in the shape of
//! [`crate::session::Session`]: the adapter feeds it bytes and the clock and acts on what it
//! asks for. After any input (`handle_bytes`, `handle_timeout`, or a command such as
//! [`Connection::send`]): drain [`Connection::poll_transmit`] (bytes for the socket), then
//! [`Connection::poll_event`] (work for the adapter), then re-arm the timer from
//! [`Connection::poll_timeout`]. When an event is [`Event::Closed`], send what is left and
//! close the socket.
//!
//! What it does itself: the protocol headers and the SASL exchange (2.2, 5.3; whether a SASL
//! response is good is the adapter's [`Event::SaslInit`] to answer; a peer may also skip SASL
//! and is then anonymous, as with SASL ANONYMOUS), `open` / `begin` /
//! `attach` / `detach` / `end` / `close` (2.4-2.6), session and link flow control (2.5.6,
//! 2.6.7), multi-frame deliveries (2.6.14), heartbeats and the idle timeout (2.4.5). What a
//! link is for (CBS, `$management`, a partition) is the adapter's: each attach is an
//! [`Event::Attach`] answered with [`Connection::accept_link`] or [`Connection::refuse_link`].
//!
//! Every resource a peer can make it hold is bounded ([`Limits`]): the frame size, the
//! sessions, the links per session, the bytes of one delivery, the unsettled deliveries (by the
//! credit granted). A protocol violation closes the connection with the spec's error condition
//! and is sticky.
//!
//! Channels and handles: the hub answers each `begin` on the channel the peer used and each
//! `attach` with the handle the peer used. Both are unique on the peer's side, so mirroring them
//! keeps ours unique, and a [`LinkId`] names a link in both directions.

use super::frame::{Body, Frame, ProtocolHeader, MIN_MAX_FRAME_SIZE};
use super::message::Message;
use super::performative::{
    AmqpError, Attach, Begin, DeliveryState, Detach, Disposition, Flow, Open, Performative, Role, Sasl, Source, Target,
    Transfer,
};
use super::types::Value;
use super::DecodeError;
use crate::UnixMillis;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Error conditions (2.8.15-17) the connection uses.
pub mod condition {
    pub const DECODE_ERROR: &str = "amqp:decode-error";
    pub const FRAMING_ERROR: &str = "amqp:connection:framing-error";
    pub const NOT_ALLOWED: &str = "amqp:not-allowed";
    pub const RESOURCE_LIMIT_EXCEEDED: &str = "amqp:resource-limit-exceeded";
    pub const UNAUTHORIZED_ACCESS: &str = "amqp:unauthorized-access";
    pub const NOT_FOUND: &str = "amqp:not-found";
    pub const INVALID_FIELD: &str = "amqp:invalid-field";
    pub const INTERNAL_ERROR: &str = "amqp:internal-error";
    pub const WINDOW_VIOLATION: &str = "amqp:session:window-violation";
    pub const UNATTACHED_HANDLE: &str = "amqp:session:unattached-handle";
    pub const TRANSFER_LIMIT_EXCEEDED: &str = "amqp:link:transfer-limit-exceeded";
    pub const MESSAGE_SIZE_EXCEEDED: &str = "amqp:link:message-size-exceeded";
    pub const DETACH_FORCED: &str = "amqp:link:detach-forced";
    pub const CONNECTION_FORCED: &str = "amqp:connection:forced";
}

/// What one connection may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame the hub takes, advertised in its `open`.
    pub max_frame_size: u32,
    /// The highest channel: sessions at once, less one.
    pub channel_max: u16,
    /// The highest link handle in a session: links per session, less one.
    pub handle_max: u32,
    /// The most bytes of one incoming message (all its transfers).
    pub max_message_size: u64,
    /// Credit granted to each link the peer sends on: deliveries it may have in flight.
    pub link_credit: u32,
    /// The idle timeout the hub advertises, in milliseconds: a peer silent for longer is closed.
    pub idle_timeout_ms: u32,
    /// How long the SASL exchange and `open` may take.
    pub open_timeout_ms: u64,
    /// How long, from the connection's start, it may go without a credential: a SASL PLAIN
    /// sign-in or a token accepted on `$cbs`, which the adapter reports with
    /// [`Connection::authenticated`]. A peer that opens and never authenticates is closed
    /// (`amqp:unauthorized-access`); heartbeats do not extend it.
    pub auth_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: 64 * 1024,
            channel_max: 15,
            handle_max: 63,
            // IoT Hub's 256 KB message limit, and room for its annotations and properties.
            max_message_size: 256 * 1024 + 16 * 1024,
            link_credit: 100,
            idle_timeout_ms: 240_000,
            open_timeout_ms: 30_000,
            auth_timeout_ms: 30_000,
        }
    }
}

/// A link: the session's channel and the link's handle (the same numbers both ways).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId {
    pub channel: u16,
    pub handle: u32,
}

/// Work for the adapter.
#[derive(Clone, PartialEq)]
pub enum Event {
    /// The peer chose a SASL mechanism: check it and answer with [`Connection::sasl_outcome`].
    SaslInit { mechanism: String, response: Option<Vec<u8>>, hostname: Option<String> },
    /// The peer's `open` arrived and was answered.
    Opened { container_id: String, hostname: Option<String> },
    /// The peer attached a link: answer with [`Connection::accept_link`] or
    /// [`Connection::refuse_link`]. `role` is the peer's: a `Sender` sends to the hub.
    Attach {
        link: LinkId,
        name: String,
        role: Role,
        source: Option<Source>,
        target: Option<Target>,
        properties: Vec<(Value, Value)>,
    },
    /// The peer gave credit to a link the hub sends on: [`Connection::credit`] says how much.
    Credit { link: LinkId, drain: bool },
    /// A whole message on a link the peer sends on. Unless `settled`, answer with
    /// [`Connection::settle`].
    Message { link: LinkId, delivery_id: u32, settled: bool, message: Box<Message> },
    /// The peer settled or changed the state of deliveries the hub sent.
    Disposition { link: LinkId, delivery_id: u32, state: Option<DeliveryState> },
    /// The peer detached a link (the hub answered).
    Detached { link: LinkId, error: Option<AmqpError> },
    /// The connection is over; `error` is why (the peer's or the hub's).
    Closed { error: Option<AmqpError> },
}

impl std::fmt::Debug for Event {
    /// Hides SASL responses (a PLAIN response carries a SAS token).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::SaslInit { mechanism, hostname, .. } => {
                f.debug_struct("SaslInit").field("mechanism", mechanism).field("hostname", hostname).finish()
            }
            Event::Opened { container_id, hostname } => {
                f.debug_struct("Opened").field("container_id", container_id).field("hostname", hostname).finish()
            }
            Event::Attach { link, name, role, source, target, .. } => f
                .debug_struct("Attach")
                .field("link", link)
                .field("name", name)
                .field("role", role)
                .field("source", source)
                .field("target", target)
                .finish(),
            Event::Credit { link, drain } => {
                f.debug_struct("Credit").field("link", link).field("drain", drain).finish()
            }
            Event::Message { link, delivery_id, settled, .. } => f
                .debug_struct("Message")
                .field("link", link)
                .field("delivery_id", delivery_id)
                .field("settled", settled)
                .finish(),
            Event::Disposition { link, delivery_id, state } => f
                .debug_struct("Disposition")
                .field("link", link)
                .field("delivery_id", delivery_id)
                .field("state", state)
                .finish(),
            Event::Detached { link, error } => {
                f.debug_struct("Detached").field("link", link).field("error", error).finish()
            }
            Event::Closed { error } => f.debug_struct("Closed").field("error", error).finish(),
        }
    }
}

/// Why a [`Connection::send`] could not send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no such link, or it is not one the hub sends on")]
    NoLink,
    #[error("the peer has given no credit on this link")]
    NoCredit,
    #[error("the peer's session window is full")]
    WindowFull,
    #[error("the message has no AMQP encoding: {0}")]
    Encode(String),
    #[error("the connection is closed")]
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for `AMQP 3 1 0 0`.
    SaslHeader,
    /// Mechanisms sent; waiting for `sasl-init`.
    SaslInit,
    /// `sasl-init` handed to the adapter; waiting for its verdict.
    SaslVerdict,
    /// SASL done; waiting for `AMQP 0 1 0 0`.
    AmqpHeader,
    /// Waiting for `open`.
    Open,
    Opened,
    Closed,
}

/// A link as the hub holds it.
#[derive(Debug, Default)]
struct Link {
    /// Whether the hub sends on it (the peer is the receiver).
    hub_sends: bool,
    /// Set by accept_link: attach answered.
    accepted: bool,
    /// Hub sends: the delivery count and the peer's credit (2.6.7).
    delivery_count: u32,
    credit: u32,
    /// Hub receives: credit left before more is granted.
    credit_left: u32,
    /// A delivery arriving in several transfers: its id, settled flag and bytes so far.
    partial: Option<(u32, bool, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct SessionState {
    /// Our next outgoing transfer id, and the peer's (2.5.6).
    next_outgoing_id: u32,
    next_incoming_id: u32,
    /// The peer's incoming window: transfers we may still send.
    remote_incoming_window: u32,
    /// Transfers the peer may still send us before we widen the window again.
    incoming_window: u32,
    links: BTreeMap<u32, Link>,
    /// Deliveries we sent and the peer has not settled: delivery id -> handle.
    unsettled: BTreeMap<u32, u32>,
    /// Handles the hub detached whose `detach` the peer has not answered yet: frames for them
    /// that crossed the hub's detach are ignored, and the answer is not answered again (2.6.5).
    detaching: BTreeSet<u32>,
}

/// What one incoming transfer came to.
enum Taken {
    /// A violation that ends the session.
    EndSession(&'static str, &'static str),
    /// A violation that ends the link.
    Detach(&'static str, &'static str),
    /// Part of a delivery (or an aborted one, or nothing to do).
    Partial,
    /// A whole delivery; whether the link's credit and the session's window want topping up.
    Whole { delivery_id: u32, settled: bool, bytes: Vec<u8>, credit_low: bool, widen: bool },
}

/// The window each session gives the peer: transfers in flight before it must wait.
const INCOMING_WINDOW: u32 = 2048;

/// An AMQP connection, server role.
pub struct Connection {
    limits: Limits,
    phase: Phase,
    inbuf: Vec<u8>,
    transmit: Vec<u8>,
    events: VecDeque<Event>,
    sessions: BTreeMap<u16, SessionState>,
    /// Channels of sessions the hub ended whose `end` the peer has not answered: their frames
    /// are ignored until it does (2.5.5).
    ending: BTreeSet<u16>,
    /// What the peer's `open` allows us: its largest frame, and half its idle timeout.
    remote_max_frame: u32,
    heartbeat_every: Option<u64>,
    opened_at: UnixMillis,
    last_heard: UnixMillis,
    last_sent: UnixMillis,
    container_id: String,
    /// Whether a credential was accepted (see [`Limits::auth_timeout_ms`]).
    authenticated: bool,
}

impl Connection {
    /// A connection that has just been accepted, at `now`. `container_id` names the hub in
    /// its `open`.
    pub fn new(limits: Limits, container_id: &str, now: UnixMillis) -> Self {
        let limits = Limits { max_frame_size: limits.max_frame_size.max(MIN_MAX_FRAME_SIZE), ..limits };
        Connection {
            limits,
            phase: Phase::SaslHeader,
            inbuf: Vec::new(),
            transmit: Vec::new(),
            events: VecDeque::new(),
            sessions: BTreeMap::new(),
            ending: BTreeSet::new(),
            remote_max_frame: MIN_MAX_FRAME_SIZE,
            heartbeat_every: None,
            opened_at: now,
            last_heard: now,
            last_sent: now,
            container_id: container_id.to_owned(),
            authenticated: false,
        }
    }

    /// The adapter accepted a credential on this connection: the authentication deadline no
    /// longer applies.
    pub fn authenticated(&mut self) {
        self.authenticated = true;
    }

    /// Whether a credential was accepted.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Bytes from the peer.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: UnixMillis) {
        if self.is_closed() {
            return;
        }
        self.last_heard = now;
        self.inbuf.extend_from_slice(bytes);
        while !self.is_closed() {
            match self.step(now) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let condition = match e {
                        DecodeError::FrameTooLarge { .. } | DecodeError::FrameHeader(_) | DecodeError::FrameType(_) => {
                            condition::FRAMING_ERROR
                        }
                        _ => condition::DECODE_ERROR,
                    };
                    self.fail(condition, &e.to_string());
                }
            }
        }
        // What is buffered is at most one unfinished frame (its size was checked) or header.
        if self.is_closed() {
            self.inbuf.clear();
        }
    }

    /// One header or frame from the input: `Ok(false)` when more bytes are needed.
    fn step(&mut self, now: UnixMillis) -> Result<bool, DecodeError> {
        match self.phase {
            Phase::SaslHeader | Phase::AmqpHeader => {
                let header = match ProtocolHeader::read(&self.inbuf) {
                    Ok(Some(header)) => header,
                    Ok(None) => return Ok(false),
                    // `AMQP` with a protocol or version the hub does not speak: answer with
                    // one it does, then close (2.2). Bytes that are not AMQP at all get
                    // nothing.
                    Err(e) if self.inbuf.len() >= 8 && self.inbuf.starts_with(b"AMQP") => {
                        let supported = if self.inbuf[4] == 3 { ProtocolHeader::Sasl } else { ProtocolHeader::Amqp };
                        self.write_bytes(&supported.bytes(), now);
                        self.closed(Some(AmqpError::new(condition::NOT_ALLOWED, e.to_string())));
                        return Ok(false);
                    }
                    Err(e) => return Err(e),
                };
                self.inbuf.drain(..8);
                match (self.phase, header) {
                    (Phase::SaslHeader, ProtocolHeader::Sasl) => {
                        self.write_bytes(&ProtocolHeader::Sasl.bytes(), now);
                        let mechanisms = ["MSSBCBS", "PLAIN", "ANONYMOUS"].map(str::to_owned).to_vec();
                        self.write(Frame::sasl(Sasl::Mechanisms(mechanisms)), now);
                        self.phase = Phase::SaslInit;
                    }
                    // Straight to AMQP without SASL, as IoT Hub allows (the Node SDKs' rhea
                    // connects so): the peer is anonymous until it puts a token on `$cbs`.
                    (Phase::AmqpHeader | Phase::SaslHeader, ProtocolHeader::Amqp) => {
                        self.write_bytes(&ProtocolHeader::Amqp.bytes(), now);
                        self.phase = Phase::Open;
                    }
                    _ => {
                        self.write_bytes(&ProtocolHeader::Amqp.bytes(), now);
                        self.closed(Some(AmqpError::new(condition::NOT_ALLOWED, "AMQP header expected after SASL")));
                    }
                }
                Ok(true)
            }
            Phase::SaslVerdict => Ok(false),
            _ => {
                let Some((frame, used)) = Frame::decode(&self.inbuf, self.limits.max_frame_size)? else {
                    return Ok(false);
                };
                self.inbuf.drain(..used);
                self.frame(frame, now);
                Ok(true)
            }
        }
    }

    fn frame(&mut self, frame: Frame, now: UnixMillis) {
        match (self.phase, frame.body) {
            (Phase::SaslInit, Body::Sasl(Sasl::Init { mechanism, initial_response, hostname })) => {
                self.phase = Phase::SaslVerdict;
                self.events.push_back(Event::SaslInit { mechanism, response: initial_response, hostname });
            }
            (Phase::SaslInit, _) => self.fail(condition::NOT_ALLOWED, "sasl-init expected"),
            (Phase::Open, Body::Amqp { performative: Performative::Open(open), .. }) => self.open(open, now),
            (Phase::Open, _) => self.fail(condition::NOT_ALLOWED, "open expected (2.4.1)"),
            (Phase::Opened, Body::Empty) => {}
            (Phase::Opened, Body::Amqp { performative, payload }) => {
                self.performative(frame.channel, performative, payload, now)
            }
            (Phase::Opened, Body::Sasl(_)) => self.fail(condition::NOT_ALLOWED, "a SASL frame after open"),
            _ => self.fail(condition::NOT_ALLOWED, "unexpected frame"),
        }
    }

    /// The adapter's verdict on the SASL response.
    pub fn sasl_outcome(&mut self, ok: bool, now: UnixMillis) {
        if self.phase != Phase::SaslVerdict {
            return;
        }
        // 0 ok; 1 auth: the credentials were refused (5.3.3.6).
        self.write(Frame::sasl(Sasl::Outcome { code: if ok { 0 } else { 1 }, additional_data: None }), now);
        if ok {
            self.phase = Phase::AmqpHeader;
            // Bytes that came with the sasl-init (a pipelining client) are read now.
            self.handle_bytes(&[], now);
        } else {
            self.closed(Some(AmqpError::new(condition::UNAUTHORIZED_ACCESS, "SASL authentication failed")));
        }
    }

    fn open(&mut self, open: Open, now: UnixMillis) {
        self.remote_max_frame = open.max_frame_size.unwrap_or(u32::MAX).max(MIN_MAX_FRAME_SIZE);
        // Heartbeats at half the peer's idle timeout (2.4.5).
        self.heartbeat_every = open.idle_time_out.filter(|t| *t > 0).map(|t| u64::from(t) / 2);
        self.phase = Phase::Opened;
        let reply = Open {
            container_id: self.container_id.clone(),
            hostname: None,
            max_frame_size: Some(self.limits.max_frame_size),
            channel_max: Some(self.limits.channel_max),
            idle_time_out: Some(self.limits.idle_timeout_ms),
            ..Open::default()
        };
        self.write(Frame::amqp(0, Performative::Open(reply)), now);
        self.events.push_back(Event::Opened { container_id: open.container_id, hostname: open.hostname });
    }

    fn performative(&mut self, channel: u16, performative: Performative, payload: Vec<u8>, now: UnixMillis) {
        match performative {
            Performative::Open(_) => self.fail(condition::NOT_ALLOWED, "open sent twice"),
            Performative::Begin(begin) => self.begin(channel, begin, now),
            Performative::Close(error) => {
                self.write(Frame::amqp(0, Performative::Close(None)), now);
                self.closed(error);
            }
            other => {
                if !self.sessions.contains_key(&channel) {
                    if self.ending.contains(&channel) {
                        // Crossed the hub's `end`; the peer's own `end` closes the matter.
                        if matches!(other, Performative::End(_)) {
                            self.ending.remove(&channel);
                        }
                        return;
                    }
                    return self.fail(condition::NOT_ALLOWED, "a frame on a channel with no session (2.5.1)");
                }
                match other {
                    Performative::Attach(attach) => self.attach(channel, attach, now),
                    Performative::Flow(flow) => self.flow(channel, flow, now),
                    Performative::Transfer(transfer) => self.transfer(channel, transfer, payload, now),
                    Performative::Disposition(d) => self.disposition(channel, d),
                    Performative::Detach(detach) => self.detach_from_peer(channel, detach, now),
                    Performative::End(_) => {
                        if let Some(session) = self.sessions.remove(&channel) {
                            for handle in session.links.keys() {
                                self.events.push_back(Event::Detached {
                                    link: LinkId { channel, handle: *handle },
                                    error: None,
                                });
                            }
                        }
                        self.write(Frame::amqp(channel, Performative::End(None)), now);
                    }
                    _ => {}
                }
            }
        }
    }

    fn begin(&mut self, channel: u16, begin: Begin, now: UnixMillis) {
        if begin.remote_channel.is_some() {
            return self.fail(condition::NOT_ALLOWED, "the hub does not begin sessions (remote-channel set)");
        }
        if channel > self.limits.channel_max {
            return self.fail(condition::FRAMING_ERROR, "channel over the channel-max the hub announced (2.7.1)");
        }
        if self.sessions.contains_key(&channel) || self.ending.contains(&channel) {
            return self.fail(condition::NOT_ALLOWED, "begin on a channel already in use");
        }
        let session = SessionState {
            next_outgoing_id: 1,
            next_incoming_id: begin.next_outgoing_id,
            remote_incoming_window: begin.incoming_window,
            incoming_window: INCOMING_WINDOW,
            ..SessionState::default()
        };
        self.sessions.insert(channel, session);
        let reply = Begin {
            remote_channel: Some(channel),
            next_outgoing_id: 1,
            incoming_window: INCOMING_WINDOW,
            outgoing_window: INCOMING_WINDOW,
            handle_max: Some(self.limits.handle_max),
            properties: Vec::new(),
        };
        self.write(Frame::amqp(channel, Performative::Begin(reply)), now);
    }

    fn attach(&mut self, channel: u16, attach: Attach, now: UnixMillis) {
        let link = LinkId { channel, handle: attach.handle };
        let in_use = self.sessions.get(&channel).is_some_and(|s| s.links.contains_key(&attach.handle));
        if attach.handle > self.limits.handle_max {
            return self.end_session(channel, condition::RESOURCE_LIMIT_EXCEEDED, "handle over handle-max", now);
        }
        if in_use {
            return self.end_session(channel, "amqp:session:handle-in-use", "attach on a handle in use", now);
        }
        let Some(session) = self.sessions.get_mut(&channel) else { return };
        let hub_sends = attach.role == Role::Receiver;
        session.links.insert(attach.handle, Link { hub_sends, ..Link::default() });
        self.events.push_back(Event::Attach {
            link,
            name: attach.name,
            role: attach.role,
            source: attach.source,
            target: attach.target,
            properties: attach.properties,
        });
    }

    /// Accepts a link the peer attached: the hub's `attach` answers with its own role,
    /// `source` and `target` as given, and `properties` (for example `com.microsoft:...`). A
    /// link the peer sends on gets its credit at once.
    pub fn accept_link(
        &mut self,
        link: LinkId,
        name: &str,
        source: Option<Source>,
        target: Option<Target>,
        properties: Vec<(Value, Value)>,
        now: UnixMillis,
    ) {
        let credit = self.limits.link_credit;
        let max_message_size = self.limits.max_message_size;
        let Some(session) = self.sessions.get_mut(&link.channel) else { return };
        let Some(l) = session.links.get_mut(&link.handle) else { return };
        if l.accepted {
            return;
        }
        l.accepted = true;
        let hub_sends = l.hub_sends;
        let reply = Attach {
            name: name.to_owned(),
            handle: link.handle,
            role: if hub_sends { Role::Sender } else { Role::Receiver },
            snd_settle_mode: None,
            rcv_settle_mode: None,
            source,
            target,
            initial_delivery_count: hub_sends.then_some(0),
            max_message_size: (!hub_sends).then_some(max_message_size),
            offered_capabilities: Vec::new(),
            desired_capabilities: Vec::new(),
            properties,
        };
        self.write(Frame::amqp(link.channel, Performative::Attach(reply)), now);
        if !hub_sends {
            self.grant(link, credit, now);
        }
    }

    /// Refuses a link: the `attach` answer has no terminus and a `detach` with the error
    /// follows (2.6.3).
    pub fn refuse_link(&mut self, link: LinkId, name: &str, error: AmqpError, now: UnixMillis) {
        let Some(session) = self.sessions.get_mut(&link.channel) else { return };
        let Some(l) = session.links.remove(&link.handle) else { return };
        session.detaching.insert(link.handle);
        let reply = Attach {
            name: name.to_owned(),
            handle: link.handle,
            role: if l.hub_sends { Role::Sender } else { Role::Receiver },
            snd_settle_mode: None,
            rcv_settle_mode: None,
            source: None,
            target: None,
            initial_delivery_count: l.hub_sends.then_some(0),
            max_message_size: None,
            offered_capabilities: Vec::new(),
            desired_capabilities: Vec::new(),
            properties: Vec::new(),
        };
        self.write(Frame::amqp(link.channel, Performative::Attach(reply)), now);
        let detach = Detach { handle: link.handle, closed: true, error: Some(error) };
        self.write(Frame::amqp(link.channel, Performative::Detach(detach)), now);
    }

    /// Detaches a link from the hub's side (its source went away, its token expired).
    pub fn detach(&mut self, link: LinkId, error: Option<AmqpError>, now: UnixMillis) {
        let Some(session) = self.sessions.get_mut(&link.channel) else { return };
        if session.links.remove(&link.handle).is_none() {
            return;
        }
        session.unsettled.retain(|_, h| *h != link.handle);
        session.detaching.insert(link.handle);
        let detach = Detach { handle: link.handle, closed: true, error };
        self.write(Frame::amqp(link.channel, Performative::Detach(detach)), now);
    }

    /// Credit the peer gave on a link the hub sends on.
    pub fn credit(&self, link: LinkId) -> u32 {
        let session = self.sessions.get(&link.channel);
        let link = session.and_then(|s| s.links.get(&link.handle));
        match (session, link) {
            (Some(s), Some(l)) if l.hub_sends && l.accepted => l.credit.min(s.remote_incoming_window),
            _ => 0,
        }
    }

    fn grant(&mut self, link: LinkId, credit: u32, now: UnixMillis) {
        let Some(session) = self.sessions.get_mut(&link.channel) else { return };
        let Some(l) = session.links.get_mut(&link.handle) else { return };
        l.credit_left = credit;
        let delivery_count = l.delivery_count;
        let flow = Flow {
            next_incoming_id: Some(session.next_incoming_id),
            incoming_window: session.incoming_window,
            next_outgoing_id: session.next_outgoing_id,
            outgoing_window: INCOMING_WINDOW,
            handle: Some(link.handle),
            delivery_count: Some(delivery_count),
            link_credit: Some(credit),
            available: None,
            drain: None,
            echo: None,
        };
        self.write(Frame::amqp(link.channel, Performative::Flow(flow)), now);
    }

    fn flow(&mut self, channel: u16, flow: Flow, now: UnixMillis) {
        let Some(session) = self.sessions.get_mut(&channel) else { return };
        // The peer's window (2.5.6): next-incoming-id + incoming-window - our next-outgoing-id.
        let base = flow.next_incoming_id.unwrap_or(1);
        session.remote_incoming_window =
            base.wrapping_add(flow.incoming_window).wrapping_sub(session.next_outgoing_id).min(flow.incoming_window);
        if let Some(handle) = flow.handle {
            if session.detaching.contains(&handle) {
                return;
            }
            let Some(l) = session.links.get_mut(&handle) else {
                return self.end_session(channel, condition::UNATTACHED_HANDLE, "flow on a handle not attached", now);
            };
            if l.hub_sends {
                // Credit as the receiver counts it (2.6.7): its delivery-count + credit - ours;
                // a count from before ours (a stale flow) leaves none.
                let theirs = flow.delivery_count.unwrap_or(0);
                let granted = flow.link_credit.unwrap_or(0);
                let credit = theirs.wrapping_add(granted).wrapping_sub(l.delivery_count);
                l.credit = if credit > granted { 0 } else { credit };
                let link = LinkId { channel, handle };
                self.events.push_back(Event::Credit { link, drain: flow.drain.unwrap_or(false) });
            }
        }
        if flow.echo == Some(true) {
            self.echo(channel, now);
        }
    }

    fn echo(&mut self, channel: u16, now: UnixMillis) {
        let Some(session) = self.sessions.get(&channel) else { return };
        let flow = Flow {
            next_incoming_id: Some(session.next_incoming_id),
            incoming_window: session.incoming_window,
            next_outgoing_id: session.next_outgoing_id,
            outgoing_window: INCOMING_WINDOW,
            ..Flow::default()
        };
        self.write(Frame::amqp(channel, Performative::Flow(flow)), now);
    }

    /// After a drain request, the link's remaining credit is used up (2.6.7): tell the peer.
    pub fn drained(&mut self, link: LinkId, now: UnixMillis) {
        let Some(session) = self.sessions.get_mut(&link.channel) else { return };
        let Some(l) = session.links.get_mut(&link.handle) else { return };
        l.delivery_count = l.delivery_count.wrapping_add(l.credit);
        l.credit = 0;
        let flow = Flow {
            next_incoming_id: Some(session.next_incoming_id),
            incoming_window: session.incoming_window,
            next_outgoing_id: session.next_outgoing_id,
            outgoing_window: INCOMING_WINDOW,
            handle: Some(link.handle),
            delivery_count: Some(l.delivery_count),
            link_credit: Some(0),
            available: Some(0),
            drain: Some(true),
            echo: None,
        };
        self.write(Frame::amqp(link.channel, Performative::Flow(flow)), now);
    }

    fn transfer(&mut self, channel: u16, transfer: Transfer, payload: Vec<u8>, now: UnixMillis) {
        let link = LinkId { channel, handle: transfer.handle };
        match self.take_transfer(link, &transfer, payload) {
            Taken::EndSession(condition, description) => self.end_session(channel, condition, description, now),
            Taken::Detach(condition, description) => self.detach_with(link, condition, description, now),
            Taken::Partial => {}
            Taken::Whole { delivery_id, settled, bytes, credit_low, widen } => {
                match Message::decode(&bytes) {
                    Ok(message) => {
                        self.events.push_back(Event::Message { link, delivery_id, settled, message: Box::new(message) })
                    }
                    Err(e) if !settled => {
                        let error = AmqpError::new(condition::DECODE_ERROR, e.to_string());
                        self.settle(link, delivery_id, DeliveryState::Rejected(Some(error)), now);
                    }
                    Err(_) => {}
                }
                if credit_low {
                    self.grant(link, self.limits.link_credit, now);
                } else if widen {
                    self.echo(channel, now);
                }
            }
        }
    }

    /// The bookkeeping of one incoming transfer (2.5.6 window, 2.6.7 credit, 2.6.14 parts).
    fn take_transfer(&mut self, link: LinkId, transfer: &Transfer, payload: Vec<u8>) -> Taken {
        let (max_message, credit) = (self.limits.max_message_size, self.limits.link_credit);
        let Some(session) = self.sessions.get_mut(&link.channel) else { return Taken::Partial };
        if session.incoming_window == 0 {
            return Taken::EndSession(condition::WINDOW_VIOLATION, "transfer past the incoming window");
        }
        session.incoming_window -= 1;
        session.next_incoming_id = session.next_incoming_id.wrapping_add(1);
        let widen = session.incoming_window < INCOMING_WINDOW / 2;
        if widen {
            session.incoming_window = INCOMING_WINDOW;
        }
        if session.detaching.contains(&link.handle) {
            return Taken::Partial;
        }
        let Some(l) = session.links.get_mut(&link.handle).filter(|l| !l.hub_sends && l.accepted) else {
            return Taken::EndSession(condition::UNATTACHED_HANDLE, "transfer on a handle the hub does not receive on");
        };
        // The first transfer of a delivery opens it; the others continue it (2.6.14).
        let (delivery_id, settled, mut bytes) = match l.partial.take() {
            Some(partial) => partial,
            None => {
                let Some(id) = transfer.delivery_id else {
                    return Taken::EndSession(condition::NOT_ALLOWED, "first transfer without a delivery-id");
                };
                if l.credit_left == 0 {
                    return Taken::Detach(condition::TRANSFER_LIMIT_EXCEEDED, "transfer without credit");
                }
                l.credit_left -= 1;
                l.delivery_count = l.delivery_count.wrapping_add(1);
                (id, transfer.settled.unwrap_or(false), Vec::new())
            }
        };
        if transfer.aborted {
            return Taken::Partial;
        }
        if bytes.len() as u64 + payload.len() as u64 > max_message {
            return Taken::Detach(condition::MESSAGE_SIZE_EXCEEDED, "message over the hub's size limit");
        }
        bytes.extend_from_slice(&payload);
        if transfer.more {
            l.partial = Some((delivery_id, settled, bytes));
            return Taken::Partial;
        }
        Taken::Whole { delivery_id, settled, bytes, credit_low: l.credit_left < credit / 2, widen }
    }

    /// Settles a delivery the peer sent, with its outcome.
    pub fn settle(&mut self, link: LinkId, delivery_id: u32, state: DeliveryState, now: UnixMillis) {
        if !self.sessions.contains_key(&link.channel) {
            return;
        }
        let d = Disposition::settle(delivery_id, state);
        self.write(Frame::amqp(link.channel, Performative::Disposition(d)), now);
    }

    fn disposition(&mut self, channel: u16, d: Disposition) {
        if d.role != Role::Receiver {
            // The peer settling what it sent us: the hub settles on receipt, nothing to do.
            return;
        }
        let Some(session) = self.sessions.get_mut(&channel) else { return };
        let last = d.last.unwrap_or(d.first);
        // Bounded by what is unsettled, not by the range the peer names.
        let ids: Vec<(u32, u32)> =
            session.unsettled.range(d.first..=last.max(d.first)).map(|(id, h)| (*id, *h)).collect();
        for (id, handle) in ids {
            if d.settled {
                session.unsettled.remove(&id);
            }
            self.events.push_back(Event::Disposition {
                link: LinkId { channel, handle },
                delivery_id: id,
                state: d.state.clone(),
            });
        }
    }

    /// Sends a message on a link the hub sends on, using one unit of the peer's credit; split
    /// into transfers of the peer's frame size. `settled`: sent pre-settled (no disposition
    /// expected). Returns the delivery id.
    pub fn send(&mut self, link: LinkId, message: &Message, settled: bool, now: UnixMillis) -> Result<u32, SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let payload = message.encode().map_err(|e| SendError::Encode(e.to_string()))?;
        let max_frame = self.remote_max_frame.min(self.limits.max_frame_size.max(MIN_MAX_FRAME_SIZE)) as usize;
        let session = self.sessions.get_mut(&link.channel).ok_or(SendError::NoLink)?;
        let l = session.links.get_mut(&link.handle).filter(|l| l.hub_sends && l.accepted).ok_or(SendError::NoLink)?;
        if l.credit == 0 {
            return Err(SendError::NoCredit);
        }
        // Room for the frame header and the transfer performative.
        let chunk = max_frame.saturating_sub(64).max(64);
        let frames = payload.len().div_ceil(chunk).max(1);
        if (session.remote_incoming_window as usize) < frames {
            return Err(SendError::WindowFull);
        }
        l.credit -= 1;
        l.delivery_count = l.delivery_count.wrapping_add(1);
        let delivery_id = session.next_outgoing_id;
        if !settled {
            session.unsettled.insert(delivery_id, link.handle);
        }
        let mut out = Vec::new();
        for (i, part) in payload.chunks(chunk).enumerate() {
            let first = i == 0;
            let transfer = Transfer {
                handle: link.handle,
                delivery_id: first.then_some(delivery_id),
                delivery_tag: first.then(|| delivery_id.to_be_bytes().to_vec()),
                message_format: first.then_some(0),
                settled: first.then_some(settled),
                more: i + 1 < frames,
                ..Transfer::default()
            };
            out.push(Frame {
                channel: link.channel,
                body: Body::Amqp { performative: Performative::Transfer(transfer), payload: part.to_vec() },
            });
            session.next_outgoing_id = session.next_outgoing_id.wrapping_add(1);
            session.remote_incoming_window -= 1;
        }
        if payload.is_empty() {
            let transfer = Transfer {
                handle: link.handle,
                delivery_id: Some(delivery_id),
                delivery_tag: Some(delivery_id.to_be_bytes().to_vec()),
                message_format: Some(0),
                settled: Some(settled),
                ..Transfer::default()
            };
            out.push(Frame {
                channel: link.channel,
                body: Body::Amqp { performative: Performative::Transfer(transfer), payload: Vec::new() },
            });
            session.next_outgoing_id = session.next_outgoing_id.wrapping_add(1);
            session.remote_incoming_window = session.remote_incoming_window.saturating_sub(1);
        }
        for frame in out {
            self.write(frame, now);
        }
        Ok(delivery_id)
    }

    fn detach_from_peer(&mut self, channel: u16, detach: Detach, now: UnixMillis) {
        let Some(session) = self.sessions.get_mut(&channel) else { return };
        // The answer to the hub's own detach: the handle is free again.
        if session.detaching.remove(&detach.handle) {
            return;
        }
        if session.links.remove(&detach.handle).is_none() {
            return self.end_session(channel, condition::UNATTACHED_HANDLE, "detach of a handle not attached", now);
        }
        session.unsettled.retain(|_, h| *h != detach.handle);
        let reply = Detach { handle: detach.handle, closed: detach.closed, error: None };
        self.write(Frame::amqp(channel, Performative::Detach(reply)), now);
        self.events.push_back(Event::Detached { link: LinkId { channel, handle: detach.handle }, error: detach.error });
    }

    fn detach_with(&mut self, link: LinkId, condition: &str, description: &str, now: UnixMillis) {
        self.detach(link, Some(AmqpError::new(condition, description)), now);
        self.events.push_back(Event::Detached { link, error: Some(AmqpError::new(condition, description)) });
    }

    /// Ends a session for a violation within it (2.5.5): its links are gone.
    fn end_session(&mut self, channel: u16, condition: &str, description: &str, now: UnixMillis) {
        if let Some(session) = self.sessions.remove(&channel) {
            for handle in session.links.keys() {
                let error = Some(AmqpError::new(condition, description));
                self.events.push_back(Event::Detached { link: LinkId { channel, handle: *handle }, error });
            }
        }
        self.ending.insert(channel);
        let end = Performative::End(Some(AmqpError::new(condition, description)));
        self.write(Frame::amqp(channel, end), now);
    }

    /// Closes the connection from the hub's side.
    pub fn close(&mut self, error: Option<AmqpError>, now: UnixMillis) {
        if self.is_closed() {
            return;
        }
        if self.phase == Phase::Opened {
            self.write(Frame::amqp(0, Performative::Close(error.clone())), now);
        }
        self.closed(error);
    }

    /// A violation: `close` with the condition (once open; before, the socket just closes).
    fn fail(&mut self, condition: &str, description: &str) {
        let error = AmqpError::new(condition, description);
        if self.phase == Phase::Opened {
            let frame = Frame::amqp(0, Performative::Close(Some(error.clone())));
            if let Ok(bytes) = frame.to_bytes() {
                self.transmit.extend(bytes);
            }
        }
        self.closed(Some(error));
    }

    fn closed(&mut self, error: Option<AmqpError>) {
        self.phase = Phase::Closed;
        for (channel, session) in std::mem::take(&mut self.sessions) {
            for handle in session.links.keys() {
                self.events.push_back(Event::Detached { link: LinkId { channel, handle: *handle }, error: None });
            }
        }
        self.events.push_back(Event::Closed { error });
    }

    /// The clock moved: heartbeats, the idle timeout, the open timeout.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        if self.is_closed() {
            return;
        }
        if self.phase != Phase::Opened && now.0 >= self.opened_at.0 + self.limits.open_timeout_ms {
            return self.closed(Some(AmqpError::new(condition::CONNECTION_FORCED, "no open in time")));
        }
        if self.phase == Phase::Opened && !self.authenticated && now.0 >= self.auth_deadline() {
            return self.fail(
                condition::UNAUTHORIZED_ACCESS,
                "no credential in time: sign in with SASL or put a token on $cbs",
            );
        }
        // A peer silent for twice the idle timeout we announced is gone (2.4.5 lets us wait 1x;
        // twice forgives a peer that heartbeats at exactly the timeout).
        if self.phase == Phase::Opened && now.0 >= self.last_heard.0 + 2 * u64::from(self.limits.idle_timeout_ms) {
            return self.fail(condition::CONNECTION_FORCED, "idle timeout");
        }
        if let Some(every) = self.heartbeat_every {
            if self.phase == Phase::Opened && now.0 >= self.last_sent.0 + every {
                self.write(Frame { channel: 0, body: Body::Empty }, now);
            }
        }
    }

    /// When [`Connection::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        if self.is_closed() {
            return None;
        }
        if self.phase != Phase::Opened {
            return Some(UnixMillis(self.opened_at.0 + self.limits.open_timeout_ms));
        }
        let idle = self.last_heard.0 + 2 * u64::from(self.limits.idle_timeout_ms);
        let beat = self.heartbeat_every.map(|every| self.last_sent.0 + every).unwrap_or(u64::MAX);
        let auth = if self.authenticated { u64::MAX } else { self.auth_deadline() };
        Some(UnixMillis(idle.min(beat).min(auth)))
    }

    fn auth_deadline(&self) -> u64 {
        self.opened_at.0.saturating_add(self.limits.auth_timeout_ms)
    }

    /// Bytes for the socket.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.transmit.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.transmit))
        }
    }

    /// Work for the adapter.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn write_bytes(&mut self, bytes: &[u8], now: UnixMillis) {
        self.transmit.extend_from_slice(bytes);
        self.last_sent = now;
    }

    fn write(&mut self, frame: Frame, now: UnixMillis) {
        match frame.to_bytes() {
            Ok(bytes) => self.write_bytes(&bytes, now),
            // The hub's own frames always encode; if one ever does not, that is the hub's fault.
            Err(e) => self.closed(Some(AmqpError::new(condition::INTERNAL_ERROR, e.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests;
