//! The client role of AMQP 1.0, as much as the tests and the event-stream bench need, written
//! over core's frame and message codec (the hub's side is `core::amqp::Connection`): no SASL
//! (as the Node SDKs connect), one session, CBS put-token, receivers with credit, a sender,
//! and raw bytes for the fault tests. Blocking, over plain TCP, TLS (5671) or a WebSocket
//! (`/$servicebus/websocket`, subprotocol `AMQPWSB10`): [`Via`].

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use twinhub_core::amqp::{
    AmqpError, Attach, Begin, Body, DeliveryState, Descriptor, Flow, Frame, Message, MessageBody, Open, Performative,
    Properties, ProtocolHeader, Role, Sasl, Transfer, Value,
};

/// Credit a receiver grants, topped up at half.
pub const CREDIT: u32 = 1_000;

/// How a client reaches the hub's AMQP: the three ways IoT Hub takes it.
#[derive(Clone, Copy, Debug)]
pub enum Via {
    /// Plain TCP on this port (the Event Hubs emulator's 5672).
    Tcp(u16),
    /// TLS on this port (IoT Hub's 5671), trusting the test CA.
    Tls(u16),
    /// A WebSocket to `/$servicebus/websocket` on the hub's HTTP port (Cloudflare's only way).
    WebSocket(u16),
    /// The same over https (`wss:`), trusting the test CA.
    SecureWebSocket(u16),
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_over(stream: TcpStream) -> TlsStream {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a server name");
    let conn = rustls::ClientConnection::new(crate::tls_client_config(), name).expect("a TLS client");
    rustls::StreamOwned::new(conn, stream)
}

fn servicebus_request(scheme: &str, port: u16) -> tungstenite::handshake::client::Request {
    use tungstenite::client::IntoClientRequest;
    let mut request =
        format!("{scheme}://localhost:{port}/$servicebus/websocket").into_client_request().expect("a request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", "AMQPWSB10".parse().expect("a header"));
    request
}

/// The bytes of a connection, whichever carries them.
pub enum Wire {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// The socket and the bytes of a message not yet read.
    WebSocket(Box<tungstenite::WebSocket<TcpStream>>, Vec<u8>),
    SecureWebSocket(Box<tungstenite::WebSocket<TlsStream>>, Vec<u8>),
}

impl Wire {
    /// Connects as `via` says, with a 30 s read timeout.
    pub fn connect(via: Via) -> Self {
        let port = match via {
            Via::Tcp(p) | Via::Tls(p) | Via::WebSocket(p) | Via::SecureWebSocket(p) => p,
        };
        let stream = AmqpClient::tcp(port);
        match via {
            Via::Tcp(_) => Wire::Tcp(stream),
            Via::Tls(_) => Wire::Tls(Box::new(tls_over(stream))),
            Via::WebSocket(port) => {
                let (socket, _) =
                    tungstenite::client(servicebus_request("ws", port), stream).expect("the WebSocket handshake");
                Wire::WebSocket(Box::new(socket), Vec::new())
            }
            Via::SecureWebSocket(port) => {
                let (socket, _) = tungstenite::client(servicebus_request("wss", port), tls_over(stream))
                    .expect("the WebSocket handshake");
                Wire::SecureWebSocket(Box::new(socket), Vec::new())
            }
        }
    }

    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream {
        match self {
            Wire::Tcp(s) => s,
            Wire::Tls(s) => s.get_ref(),
            Wire::WebSocket(s, _) => s.get_ref(),
            Wire::SecureWebSocket(s, _) => s.get_ref().get_ref(),
        }
    }

    /// Sets the read timeout of the socket underneath.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.tcp().set_read_timeout(timeout).expect("a read timeout");
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Wire::Tcp(s) => s.read(buf),
            Wire::Tls(s) => s.read(buf),
            Wire::WebSocket(socket, pending) => read_messages(socket, pending, buf),
            Wire::SecureWebSocket(socket, pending) => read_messages(socket, pending, buf),
        }
    }
}

/// Reads a WebSocket's binary messages as a byte stream.
fn read_messages<S: Read + Write>(
    socket: &mut tungstenite::WebSocket<S>,
    pending: &mut Vec<u8>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    while pending.is_empty() {
        match socket.read() {
            Ok(tungstenite::Message::Binary(b)) => pending.extend_from_slice(&b),
            Ok(tungstenite::Message::Close(_)) => return Ok(0),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) => return Err(e),
            Err(_) => return Ok(0),
        }
    }
    let n = buf.len().min(pending.len());
    buf[..n].copy_from_slice(&pending[..n]);
    pending.drain(..n);
    Ok(n)
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Wire::Tcp(s) => s.write(buf),
            Wire::Tls(s) => s.write(buf),
            Wire::WebSocket(socket, _) => {
                socket.send(tungstenite::Message::binary(buf.to_vec())).map_err(std::io::Error::other)?;
                Ok(buf.len())
            }
            Wire::SecureWebSocket(socket, _) => {
                socket.send(tungstenite::Message::binary(buf.to_vec())).map_err(std::io::Error::other)?;
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Wire::Tcp(s) => s.flush(),
            Wire::Tls(s) => s.flush(),
            Wire::WebSocket(socket, _) => socket.flush().map_err(std::io::Error::other),
            Wire::SecureWebSocket(socket, _) => socket.flush().map_err(std::io::Error::other),
        }
    }
}

/// One AMQP connection to the hub.
pub struct AmqpClient {
    stream: Wire,
    buf: Vec<u8>,
    /// The hub's next transfer id (its `begin` starts at its next-outgoing-id).
    next_incoming_id: u32,
    /// Per receiving handle: transfers received.
    received: HashMap<u32, u32>,
    next_message_id: u32,
}

/// What the hub said when it refused a link or ended the connection.
pub type Refusal = Option<AmqpError>;

impl AmqpClient {
    /// A TCP connection to `port`, nothing sent.
    pub fn tcp(port: u16) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the AMQP listener");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        stream
    }

    /// Header, open and begin, answered; no token yet.
    pub fn open(port: u16, hostname: &str) -> Self {
        Self::open_via(Via::Tcp(port), hostname)
    }

    /// [`AmqpClient::open`] over any of the hub's AMQP transports.
    pub fn open_via(via: Via, hostname: &str) -> Self {
        let mut c = Self::new(Wire::connect(via));
        c.begin(hostname);
        c
    }

    /// SASL PLAIN as `user` with `password` (a SAS token), then open and begin: `Err` with the
    /// SASL outcome's code when the hub refuses.
    pub fn open_plain(port: u16, hostname: &str, user: &str, password: &str) -> Result<Self, u8> {
        Self::open_plain_via(Via::Tcp(port), hostname, user, password)
    }

    /// [`AmqpClient::open_plain`] over any of the hub's AMQP transports.
    pub fn open_plain_via(via: Via, hostname: &str, user: &str, password: &str) -> Result<Self, u8> {
        let mut c = Self::new(Wire::connect(via));
        c.write(&ProtocolHeader::Sasl.bytes());
        let mut header = [0u8; 8];
        c.stream.read_exact(&mut header).expect("the hub's SASL header");
        assert_eq!(header, ProtocolHeader::Sasl.bytes());
        assert!(matches!(c.frame().body, Body::Sasl(Sasl::Mechanisms(m)) if m.iter().any(|m| m == "PLAIN")));
        let response = format!("\0{user}\0{password}").into_bytes();
        let init =
            Sasl::Init { mechanism: "PLAIN".into(), initial_response: Some(response), hostname: Some(hostname.into()) };
        c.write(&Frame::sasl(init).to_bytes().expect("an encodable frame"));
        match c.frame().body {
            Body::Sasl(Sasl::Outcome { code: 0, .. }) => {}
            Body::Sasl(Sasl::Outcome { code, .. }) => return Err(code),
            other => panic!("expected a SASL outcome, got {other:?}"),
        }
        c.begin(hostname);
        Ok(c)
    }

    fn new(stream: Wire) -> Self {
        AmqpClient { stream, buf: Vec::new(), next_incoming_id: 0, received: HashMap::new(), next_message_id: 0 }
    }

    /// The AMQP header, open and begin, until the hub's begin.
    fn begin(&mut self, hostname: &str) {
        let c = self;
        c.stream.write_all(&ProtocolHeader::Amqp.bytes()).expect("write");
        c.send(Performative::Open(Open {
            container_id: "e2e".into(),
            hostname: Some(hostname.into()),
            ..Open::default()
        }));
        c.send(Performative::Begin(Begin {
            next_outgoing_id: 1,
            incoming_window: 1 << 30,
            outgoing_window: 1 << 30,
            ..Begin::default()
        }));
        let mut header = [0u8; 8];
        c.stream.read_exact(&mut header).expect("the hub's protocol header");
        assert_eq!(header, ProtocolHeader::Amqp.bytes(), "the hub answered another protocol");
        loop {
            if let Performative::Begin(b) = c.performative() {
                c.next_incoming_id = b.next_outgoing_id;
                return;
            }
        }
    }

    /// [`AmqpClient::open`], then `token` put on `$cbs` for `audience`; panics unless 200.
    pub fn with_token(port: u16, hostname: &str, audience: &str, token: &str) -> Self {
        Self::with_token_via(Via::Tcp(port), hostname, audience, token)
    }

    /// [`AmqpClient::with_token`] over any of the hub's AMQP transports.
    pub fn with_token_via(via: Via, hostname: &str, audience: &str, token: &str) -> Self {
        let mut c = Self::open_via(via, hostname);
        let (status, why) = c.put_token(audience, token);
        assert_eq!(status, 200, "put-token refused: {why}");
        c
    }

    /// Puts `token` on `$cbs` (attaching its links on handles 0 and 1 the first time): the
    /// reply's status and description.
    pub fn put_token(&mut self, audience: &str, token: &str) -> (i32, String) {
        let properties = [("operation", "put-token"), ("type", "servicebus.windows.net:sastoken"), ("name", audience)];
        self.request("$cbs", (0, 1), &properties, Value::String(token.into()))
    }

    /// Asks `$management` for the event hub `entity`'s properties (attaching its links on
    /// handles 2 and 3 the first time): the reply's status and description.
    pub fn management(&mut self, entity: &str) -> (i32, String) {
        let properties = [("operation", "READ"), ("type", "com.microsoft:eventhub"), ("name", entity)];
        self.request("$management", (2, 3), &properties, Value::Null)
    }

    /// One request to a request/response node (`$cbs`, `$management`) on the `(sender,
    /// receiver)` handles, attached the first time: the reply's status and description.
    fn request(
        &mut self,
        node: &str,
        (sender, receiver): (u32, u32),
        properties: &[(&str, &str)],
        body: Value,
    ) -> (i32, String) {
        if !self.received.contains_key(&receiver) {
            self.attach(sender, Role::Sender, node, None).unwrap_or_else(|e| panic!("the {node} sender: {e:?}"));
            self.attach(receiver, Role::Receiver, node, None).unwrap_or_else(|e| panic!("the {node} receiver: {e:?}"));
            self.credit(receiver);
        }
        self.next_message_id += 1;
        let request = Message {
            properties: Some(Properties {
                message_id: Some(Value::String(format!("{node}-{}", self.next_message_id))),
                to: Some(node.into()),
                reply_to: Some(format!("{node}-replies")),
                ..Properties::default()
            }),
            application_properties: properties.iter().map(|(k, v)| ((*k).into(), Value::String((*v).into()))).collect(),
            body: MessageBody::Value(body),
            ..Message::default()
        };
        self.transfer(sender, self.next_message_id, &request, true);
        loop {
            if let Some((handle, m)) = self.next_message() {
                if handle == receiver {
                    return reply_status(&m);
                }
            }
        }
    }

    /// Sends one performative on channel 0.
    pub fn send(&mut self, p: Performative) {
        self.write(&Frame::amqp(0, p).to_bytes().expect("an encodable frame"));
    }

    /// Sends raw bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the hub");
    }

    /// The next frame; panics if the hub closes first.
    pub fn frame(&mut self) -> Frame {
        self.try_frame().expect("the hub closed the AMQP connection")
    }

    /// The next frame, or `None` once the hub closed the socket.
    pub fn try_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = Frame::decode(&self.buf, u32::MAX).expect("a well-formed frame") {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next performative (skipping empty frames).
    pub fn performative(&mut self) -> Performative {
        loop {
            match self.frame().body {
                Body::Amqp { performative, .. } => return performative,
                Body::Empty => continue,
                other => panic!("expected a performative, got {other:?}"),
            }
        }
    }

    /// Reads until the hub's `close`: its error; `None` when the socket ends without one.
    pub fn closed_with(&mut self) -> Option<Refusal> {
        while let Some(frame) = self.try_frame() {
            if let Body::Amqp { performative: Performative::Close(error), .. } = frame.body {
                return Some(error);
            }
        }
        None
    }

    /// Attaches `address` as `role` on `handle` (no credit yet): `Err` with the hub's error
    /// when it refuses the link. Frames of other links read meanwhile are dropped, so grant
    /// credit only once every link is attached.
    pub fn attach(
        &mut self,
        handle: u32,
        role: Role,
        address: &str,
        filter: Option<(Value, Value)>,
    ) -> Result<(), Refusal> {
        let mut attach = Attach::to_node(format!("e2e-{handle}"), handle, role, address);
        if let Some(source) = attach.source.as_mut() {
            source.filter = filter.into_iter().collect();
        }
        self.send(Performative::Attach(attach));
        loop {
            match self.performative() {
                Performative::Attach(a) if a.name == format!("e2e-{handle}") => {
                    // A refused link is answered by an attach with no terminus, then a detach.
                    let refused = match role {
                        Role::Receiver => a.source.is_none(),
                        Role::Sender => a.target.is_none(),
                    };
                    if !refused {
                        break;
                    }
                }
                Performative::Detach(d) if d.handle == handle => return Err(d.error),
                _ => {}
            }
        }
        if role == Role::Receiver {
            self.received.insert(handle, 0);
        }
        Ok(())
    }

    /// A receiver on partition `partition` of the hub's event stream, starting after offset
    /// `after_offset` (`-1` for the start, `@latest` for the end).
    pub fn attach_partition(&mut self, handle: u32, partition: u32, after_offset: &str) -> Result<(), Refusal> {
        let filter = (
            Value::symbol("apache.org:selector-filter:string"),
            Value::described(
                Descriptor::Symbol("apache.org:selector-filter:string".into()),
                Value::String(format!("amqp.annotation.x-opt-offset > '{after_offset}'")),
            ),
        );
        let address = format!("{}/ConsumerGroups/$Default/Partitions/{partition}", twinhub_core::eventhub::ENTITY_PATH);
        self.attach(handle, Role::Receiver, &address, Some(filter))
    }

    /// Receivers on partitions `0..count` of the event stream (handles from `first_handle`),
    /// each starting after `after_offset`, then credit on each. Credit comes only once every
    /// link is attached: [`AmqpClient::attach`] reads past other links' frames, and events
    /// sent to an early link meanwhile would be lost to the reader.
    pub fn read_partitions(&mut self, first_handle: u32, count: u32, after_offset: &str) {
        for p in 0..count {
            self.attach_partition(first_handle + p, p, after_offset).expect("a partition receiver");
        }
        for p in 0..count {
            self.credit(first_handle + p);
        }
    }

    /// Grants `handle` [`CREDIT`].
    pub fn credit(&mut self, handle: u32) {
        self.credit_of(handle, CREDIT);
    }

    /// Grants `handle` `credit`.
    pub fn credit_of(&mut self, handle: u32, credit: u32) {
        let delivery_count = self.received.get(&handle).copied().unwrap_or(0);
        self.send(Performative::Flow(Flow {
            next_incoming_id: Some(self.next_incoming_id),
            incoming_window: 1 << 30,
            next_outgoing_id: 1,
            outgoing_window: 1 << 30,
            handle: Some(handle),
            delivery_count: Some(delivery_count),
            link_credit: Some(credit),
            ..Flow::default()
        }));
    }

    /// Sends `message` as one transfer.
    pub fn transfer(&mut self, handle: u32, delivery_id: u32, message: &Message, settled: bool) {
        let transfer = Transfer {
            handle,
            delivery_id: Some(delivery_id),
            delivery_tag: Some(delivery_id.to_be_bytes().to_vec()),
            settled: Some(settled),
            ..Transfer::default()
        };
        let frame = Frame {
            channel: 0,
            body: Body::Amqp {
                performative: Performative::Transfer(transfer),
                payload: message.encode().expect("an encodable message"),
            },
        };
        self.write(&frame.to_bytes().expect("an encodable frame"));
    }

    /// The next whole message the hub sent (single-transfer), with its handle; `None` for
    /// any other frame. Tops credit up at half.
    pub fn next_message(&mut self) -> Option<(u32, Message)> {
        let Body::Amqp { performative: Performative::Transfer(t), payload } = self.frame().body else { return None };
        self.next_incoming_id = self.next_incoming_id.wrapping_add(1);
        let n = self.received.entry(t.handle).or_insert(0);
        *n += 1;
        if n.is_multiple_of(CREDIT / 2) {
            self.credit(t.handle);
        }
        Some((t.handle, Message::decode(&payload).expect("a message")))
    }

    /// Reads messages until `stop`, recording when each arrived (with the message).
    pub fn consume(mut self, received: &Mutex<Vec<(Instant, Message)>>, stop: &AtomicBool) {
        self.stream.set_read_timeout(Some(Duration::from_millis(500)));
        while !stop.load(Ordering::Relaxed) {
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => continue,
            }
            while let Ok(Some(_)) = Frame::decode(&self.buf, u32::MAX) {
                if let Some((_, m)) = self.next_message() {
                    received.lock().expect("lock").push((Instant::now(), m));
                }
            }
        }
    }

    /// Reads until `expected` messages arrived or none came for 2 s.
    pub fn drain(self, expected: usize) -> Vec<(Instant, Message)> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || self.consume(&received, &stop))
        };
        let mut last = usize::MAX;
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let n = received.lock().expect("lock").len();
            if n >= expected || n == last {
                break;
            }
            last = n;
        }
        stop.store(true, Ordering::Relaxed);
        let _ = reader.join();
        let events = received.lock().expect("lock").clone();
        events
    }

    /// Sends one cloud-to-device message to `device_id` on the sender `handle` and waits for
    /// its outcome.
    pub fn send_c2d(
        &mut self,
        handle: u32,
        delivery_id: u32,
        device_id: &str,
        message_id: &str,
    ) -> Option<DeliveryState> {
        let message = Message {
            properties: Some(Properties {
                message_id: Some(Value::String(message_id.into())),
                to: Some(format!("/devices/{device_id}/messages/devicebound")),
                ..Properties::default()
            }),
            body: MessageBody::Data(vec![message_id.as_bytes().to_vec()]),
            ..Message::default()
        };
        self.transfer(handle, delivery_id, &message, false);
        loop {
            if let Performative::Disposition(d) = self.performative() {
                return d.state;
            }
        }
    }
}

/// The status and description of a `$cbs` or `$management` reply.
fn reply_status(m: &Message) -> (i32, String) {
    let property = |name: &str| m.application_properties.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let status = match property("status-code") {
        Some(Value::Int(n)) => n,
        other => panic!("a reply without an int status: {other:?}"),
    };
    let why = match property("status-description") {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    (status, why)
}

/// Microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
