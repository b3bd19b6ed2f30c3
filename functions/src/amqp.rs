//! AMQP 1.0 connections: over WebSocket at `/$servicebus/websocket` (subprotocol `AMQPWSB10`)
//! under both runtimes, and self-hosted over TCP (plain on 5672 as the Event Hubs emulator
//! takes them, TLS on 5671): runs core's [`Connection`] over the bytes and does what its events
//! ask. What the
//! hub offers on it is the Event Hub-compatible endpoint: the `$cbs` node (put-token), the
//! `$management` node (the hub's and partitions' figures) and a receiver per partition
//! (`{entity}/ConsumerGroups/{group}/Partitions/{n}`), fed from the partition objects.
//!
//! The connection lives in this handler for as long as the socket is open (the consumers are
//! a few backends, not a fleet; nothing here hibernates). Partitions are read when their links
//! have credit, every [`POLL_MS`] while there is nothing new.
//!
//! Authorization: SASL PLAIN with a service policy's token, or ANONYMOUS followed by a CBS
//! put-token; either way the token is checked by `core::amqp::cbs::authorize` and its policy
//! must have ServiceConnect. The connection keeps a grant per token resource
//! (`core::amqp::cbs::Grants`), and each service node needs one whose resource covers it, as
//! IoT Hub requires: a partition, the cloud-to-device sender, feedback and `$management` are
//! refused (`amqp:unauthorized-access`) to a token scoped to one device. When the grant a link
//! stands on expires, the link is detached until a new put-token arrives.

use crate::clock;
use crate::config::Config;
use crate::http::ApiResult;
use crate::objects::feedback::feedback_stub;
use crate::objects::partition::partition_stub;
use crate::rpc::{FeedbackOp, PartitionOp};
use futures_channel::mpsc;
use futures_util::future::{select, Either};
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twinhub_core::admission::PreAuth;
use twinhub_core::amqp::cbs::{self, Grant, Grants, PlainUser, PutToken, DEVICE_BOUND, FEEDBACK};
use twinhub_core::amqp::connection::condition;
use twinhub_core::amqp::device::{DeviceLinks, DeviceNode};
use twinhub_core::amqp::{AmqpError, Connection, DeliveryState, Event, Limits, LinkId, Message, Role, Source, Target};
use twinhub_core::auth::Permissions;
use twinhub_core::eventhub::{self, ManagementRequest, PartitionAddress, PartitionInfo, StartPosition};
use twinhub_core::UnixMillis;
use twinhub_core::{ErrorCode, HubError};
use worker::{Delay, Env, Request, Response, Socket, WebSocket, WebSocketPair, WebsocketEvent};

/// How soon a partition link with credit looks again after a read found nothing; doubled
/// after each empty read up to [`MAX_POLL_MS`], and back to none as soon as events flow. An
/// idle consumer of 4 partitions so makes 4 calls a second, not 40 (each is a subrequest of
/// the connection's request on Cloudflare, see [`crate::config::AMQP_SUBREQUESTS_VAR`]).
const POLL_MS: u64 = 100;
const MAX_POLL_MS: u64 = 1_000;
/// How soon a link looks again after a read found some events but not a full batch: soon,
/// but not at once, so a consumer that keeps up reads in batches instead of making a call
/// per event (each call is work on the thread that also stores the telemetry).
const TRICKLE_MS: u64 = 20;
/// Replies waiting for credit on a node's reply link, at most.
const MAX_PENDING_REPLIES: usize = 16;
/// Events read from a partition at once, at most.
const READ_BATCH: u32 = 100;
/// Devices one connection may carry (the C SDK multiplexes; the Node SDK opens one each).
const MAX_DEVICES: usize = 64;
/// Gateway messages waiting for the connection's loop, at most; a gateway socket's reader
/// waits while it is full.
const INBOX: usize = 32;

/// What a link is for.
enum Node {
    /// `$cbs` or `$management`, the link the client sends requests on.
    Requests(&'static str),
    /// The link replies go back on, with replies waiting for credit.
    Replies(Vec<Message>),
    /// `/messages/devicebound`: a service's cloud-to-device messages.
    DeviceBound,
    /// `/messages/servicebound/feedback`: delivery feedback, with the records each unsettled
    /// delivery carries (completed when the receiver accepts it).
    Feedback { lent: BTreeMap<u32, Vec<i64>>, next_look: u64 },
    /// A consumer's partition receiver: its node path (what a grant must cover), the next
    /// sequence number to send, once known; when to look for events next and how many looks
    /// in a row found none.
    Partition { path: String, partition: u32, next: Option<u64>, start: StartPosition, next_look: u64, empty: u32 },
}

impl Node {
    /// The node a grant must cover for the link to stay attached; `None` for the request and
    /// reply links of `$cbs` and `$management` (whose requests are checked one by one).
    fn guarded_path(&self) -> Option<&str> {
        match self {
            Node::DeviceBound => Some(DEVICE_BOUND),
            Node::Feedback { .. } => Some(FEEDBACK),
            Node::Partition { path, .. } => Some(path),
            Node::Requests(_) | Node::Replies(_) => None,
        }
    }
}

/// A device on this connection: its links, and the gateway socket its MQTT session runs on
/// (`core::amqp::device`: to the hub it is an MQTT device).
struct DeviceSession {
    links: DeviceLinks,
    socket: WebSocket,
    /// Which socket this is: a reconnect opens another, and what an older one still says is
    /// dropped.
    generation: u64,
    /// When the token the session connected with expires (Unix seconds).
    expiry_secs: u64,
}

/// A device's token, put on `$cbs` and checked by its device object.
struct DeviceGrant {
    token: String,
    host: String,
    expiry_secs: u64,
}

/// What reaches a connection's loop besides its own bytes.
enum Inbox {
    /// A device's gateway socket said something.
    Gateway(FromGateway),
    /// The connection had not authenticated and newer ones needed its place
    /// ([`MAX_WAITING`]).
    Evicted,
}

/// Connections of this isolate that may wait to authenticate at once; a newcomer past it
/// evicts the oldest (`core::admission`), so silent connections cannot lock real clients out.
/// Each also has a deadline ([`Limits::auth_timeout_ms`], the MQTT connect timeout).
const MAX_WAITING: usize = 1_000;
/// Of those, from one client address (where the platform tells it).
const MAX_WAITING_PER_SOURCE: usize = 100;

/// The isolate's unauthenticated AMQP connections, and how to tell each it was evicted.
struct Waiting {
    admission: PreAuth<u64>,
    inboxes: BTreeMap<u64, mpsc::Sender<Inbox>>,
    next: u64,
}

thread_local! {
    static WAITING: std::cell::RefCell<Waiting> = std::cell::RefCell::new(Waiting {
        admission: PreAuth::new(MAX_WAITING, MAX_WAITING_PER_SOURCE),
        inboxes: BTreeMap::new(),
        next: 0,
    });
}

/// Counts a new connection among those waiting to authenticate; returns its number there.
fn wait_for_credential(source: &str, inbox: mpsc::Sender<Inbox>) -> u64 {
    WAITING.with(|w| {
        let w = &mut *w.borrow_mut();
        w.next += 1;
        let id = w.next;
        if let Some(evicted) = w.admission.admit(id, source).evict {
            if let Some(mut sender) = w.inboxes.remove(&evicted) {
                let _ = sender.try_send(Inbox::Evicted);
            }
        }
        w.inboxes.insert(id, inbox);
        id
    })
}

/// The connection authenticated or ended: it no longer waits.
fn stop_waiting(id: u64) {
    WAITING.with(|w| {
        let w = &mut *w.borrow_mut();
        w.admission.done(&id);
        w.inboxes.remove(&id);
    })
}

/// What a gateway socket said: bytes, or `None` once it closed.
struct FromGateway {
    device_id: String,
    generation: u64,
    bytes: Option<Vec<u8>>,
}

struct Driver {
    env: Env,
    conn: Connection,
    devices: BTreeMap<String, DeviceSession>,
    device_grants: BTreeMap<String, DeviceGrant>,
    inbox: mpsc::Sender<Inbox>,
    /// The connection's place among those waiting to authenticate, until it does.
    waiting: Option<u64>,
    next_generation: u64,
    /// Calls to objects made so far, and how many the connection may make.
    subrequests: u64,
    subrequest_budget: u64,
    nodes: BTreeMap<LinkId, Node>,
    /// The reply link of `$cbs` and of `$management`.
    reply_links: BTreeMap<&'static str, LinkId>,
    /// The service tokens put on the connection, one per resource.
    grants: Grants,
    /// When the connection opened: the `created_at` its `$management` answers give.
    created: UnixMillis,
}

/// The bytes of one connection, whichever carries them.
trait Transport {
    /// The next bytes from the peer; `None` once it has gone. Cancel-safe: dropped before it
    /// completes, it loses nothing.
    async fn read(&mut self) -> Option<Vec<u8>>;
    /// Sends bytes; `false` once the peer has gone.
    async fn write(&mut self, bytes: Vec<u8>) -> bool;
}

/// Raw TCP, as workerd's `tcp` sockets hand it over.
struct Tcp {
    socket: Socket,
    buf: Vec<u8>,
}

impl Transport for Tcp {
    async fn read(&mut self) -> Option<Vec<u8>> {
        // A pending read stays inside the socket and is picked up by the next one.
        match self.socket.read(&mut self.buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(self.buf[..n].to_vec()),
        }
    }

    async fn write(&mut self, bytes: Vec<u8>) -> bool {
        self.socket.write_all(&bytes).await.is_ok() && self.socket.flush().await.is_ok()
    }
}

/// AMQP over WebSocket (`AMQPWSB10`): binary messages carry the bytes, cut anywhere.
struct Ws<'a> {
    socket: &'a WebSocket,
    events: worker::EventStream<'a>,
}

impl Transport for Ws<'_> {
    async fn read(&mut self) -> Option<Vec<u8>> {
        // The stream keeps what arrived until it is polled again. Text is not AMQP: a peer
        // that sends it is not speaking the subprotocol, and is closed like one that leaves.
        match self.events.next().await? {
            Ok(WebsocketEvent::Message(m)) => m.bytes(),
            Ok(WebsocketEvent::Close(_)) | Err(_) => None,
        }
    }

    async fn write(&mut self, bytes: Vec<u8>) -> bool {
        self.socket.send_with_bytes(bytes).is_ok()
    }
}

/// Serves one AMQP connection on a TCP socket until either side closes. `first` holds the
/// bytes already read to tell AMQP from MQTT.
pub async fn serve(socket: Socket, env: &Env, first: Vec<u8>) -> worker::Result<()> {
    // Raw TCP is self-hosted only: no platform cap on the calls a connection makes.
    run(Tcp { socket, buf: vec![0u8; 16 * 1024] }, env, first, u64::MAX, "").await;
    Ok(())
}

/// The WebSocket subprotocol of AMQP over WebSocket.
const SUBPROTOCOL: &str = "AMQPWSB10";

/// `GET /$servicebus/websocket`: AMQP over WebSocket, under both runtimes. The connection runs
/// in this request's context for as long as the socket is open.
pub async fn accept_websocket(req: Request, env: &Env) -> ApiResult {
    let upgrade = req.headers().get("upgrade")?.unwrap_or_default();
    let protocols = req.headers().get("sec-websocket-protocol")?.unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket") || !protocols.split(',').any(|p| p.trim() == SUBPROTOCOL) {
        let why = format!("/$servicebus/websocket takes a WebSocket upgrade with subprotocol {SUBPROTOCOL}");
        return Err(HubError::new(ErrorCode::ArgumentInvalid, why).into());
    }
    let pair = WebSocketPair::new()?;
    let server = pair.server;
    server.accept()?;
    AsRef::<web_sys::WebSocket>::as_ref(&server).set_binary_type(web_sys::BinaryType::Arraybuffer);
    let env = env.clone();
    let source = crate::auth::client_address(&req);
    worker::wasm_bindgen_futures::spawn_local(async move {
        let Ok(events) = server.events() else { return };
        let budget = Config::of(&env).amqp_subrequests;
        run(Ws { socket: &server, events }, &env, Vec::new(), budget, &source).await;
        let _ = server.close(Some(1000), Some("AMQP connection closed"));
    });
    let mut response = Response::from_websocket(pair.client)?;
    response.headers_mut().set("sec-websocket-protocol", SUBPROTOCOL)?;
    Ok(response)
}

/// Runs a connection until either side closes.
async fn run(mut transport: impl Transport, env: &Env, first: Vec<u8>, subrequest_budget: u64, source: &str) {
    let now = clock::now();
    let (inbox, mut from_gateways) = mpsc::channel(INBOX);
    // The deadlines a device gets for its CONNECT: to open, and to show a credential.
    let deadline = Config::of(env).connect_timeout_ms;
    let limits = Limits { open_timeout_ms: deadline, auth_timeout_ms: deadline, ..Limits::default() };
    let waiting = Some(wait_for_credential(source, inbox.clone()));
    let mut driver = Driver {
        env: env.clone(),
        conn: Connection::new(limits, "twinhub", now),
        devices: BTreeMap::new(),
        device_grants: BTreeMap::new(),
        inbox,
        waiting,
        next_generation: 0,
        subrequests: 0,
        subrequest_budget,
        nodes: BTreeMap::new(),
        reply_links: BTreeMap::new(),
        grants: Grants::default(),
        created: UnixMillis(0),
    };
    driver.conn.handle_bytes(&first, now);
    loop {
        driver.work().await;
        if driver.subrequests >= driver.subrequest_budget && !driver.conn.is_closed() {
            let why = format!(
                "the connection made {} calls to the hub's objects, its share on this platform; reconnect",
                driver.subrequests
            );
            worker::console_log!("AMQP connection closed: {} {why}", condition::CONNECTION_FORCED);
            driver.conn.close(Some(AmqpError::new(condition::CONNECTION_FORCED, why)), clock::now());
        }
        if let Some(bytes) = driver.conn.poll_transmit() {
            if !transport.write(bytes).await {
                break;
            }
        }
        if driver.conn.is_closed() {
            break;
        }
        // Wake for the connection's timer, or sooner while a partition link waits for events.
        let now = clock::now();
        let mut due = driver.conn.poll_timeout().map_or(u64::MAX, |t| t.0);
        if let Some(look) = driver.next_look() {
            due = due.min(look.max(now.0));
        }
        if let Some(expiry) = driver.grants.next_expiry().map(|secs| secs * 1000) {
            due = due.min(expiry.max(now.0));
        }
        for device in driver.devices.values() {
            due = due.min(device.links.poll_timeout().map_or(u64::MAX, |t| t.0));
        }
        let wait = Duration::from_millis(due.saturating_sub(now.0).min(60_000));
        let input = select(Box::pin(transport.read()), from_gateways.next());
        match select(input, Box::pin(Delay::from(wait))).await {
            Either::Left((Either::Left((None, _)), _)) => break,
            Either::Left((Either::Left((Some(bytes), _)), _)) => driver.conn.handle_bytes(&bytes, clock::now()),
            Either::Left((Either::Right((Some(Inbox::Gateway(said)), _)), _)) => driver.gateway_said(said),
            // An eviction that crossed the connection's authentication in the inbox is moot.
            Either::Left((Either::Right((Some(Inbox::Evicted), _)), _)) if !driver.conn.is_authenticated() => {
                let why = "too many connections are waiting to authenticate; this, the oldest, makes room";
                driver.conn.close(Some(AmqpError::new(condition::RESOURCE_LIMIT_EXCEEDED, why)), clock::now());
            }
            // The driver holds a sender: the inbox never ends while it runs.
            Either::Left((Either::Right((None | Some(Inbox::Evicted), _)), _)) => {}
            Either::Right(_) => {
                let now = clock::now();
                driver.conn.handle_timeout(now);
                for device in driver.devices.values_mut() {
                    device.links.handle_timeout(&mut driver.conn, now);
                }
            }
        }
    }
    if let Some(id) = driver.waiting.take() {
        stop_waiting(id);
    }
    // The connection is over: so are its devices' sessions.
    let ids: Vec<String> = driver.devices.keys().cloned().collect();
    for id in ids {
        driver.end_device_session(&id);
    }
}

impl DeviceSession {
    /// Sends what the device's MQTT session has for its gateway.
    fn flush(&mut self) {
        while let Some(bytes) = self.links.poll_transmit() {
            let _ = self.socket.send_with_bytes(bytes);
        }
    }
}

impl Driver {
    /// Handles the connection's events, then feeds the partition links that have credit.
    async fn work(&mut self) {
        while let Some(event) = self.conn.poll_event() {
            self.event(event).await;
        }
        self.check_expiry();
        self.feed_partitions().await;
        self.feed_feedback().await;
        self.serve_devices().await;
    }

    /// Bytes or a close from a device's gateway socket.
    fn gateway_said(&mut self, said: FromGateway) {
        let now = clock::now();
        let Some(device) = self.devices.get_mut(&said.device_id) else { return };
        if device.generation != said.generation {
            return;
        }
        match said.bytes {
            Some(bytes) => device.links.handle_bytes(&mut self.conn, &bytes, now),
            None => device.links.connection_lost(&mut self.conn, now),
        }
    }

    /// Sends each device session's bytes to its gateway; a session that ended is started
    /// again with a renewed token, or its device's links are detached.
    async fn serve_devices(&mut self) {
        let mut ended = Vec::new();
        for (id, device) in &mut self.devices {
            device.flush();
            if device.links.ended().is_some() {
                ended.push(id.clone());
            }
        }
        let now = clock::now();
        for id in ended {
            let renewed = self
                .device_grants
                .get(&id)
                .filter(|g| {
                    g.expiry_secs > now.as_secs() && Some(g.expiry_secs) > self.devices.get(&id).map(|d| d.expiry_secs)
                })
                .map(|g| (g.token.clone(), g.expiry_secs));
            if let Some((token, expiry_secs)) = renewed {
                match self.open_gateway_socket(&id).await {
                    Ok((socket, generation)) => {
                        if let Some(device) = self.devices.get_mut(&id) {
                            let _ = device.socket.close(Some(1000), Some("renewed"));
                            device.socket = socket;
                            device.generation = generation;
                            device.expiry_secs = expiry_secs;
                            device.links.reconnect(token, now);
                            device.flush();
                        }
                        continue;
                    }
                    Err(e) => worker::console_warn!("AMQP device {id}: no gateway socket: {e}"),
                }
            }
            let expired = self.devices.get(&id).is_some_and(|d| d.expiry_secs <= now.as_secs());
            let error = if expired {
                AmqpError::new(condition::UNAUTHORIZED_ACCESS, "the device's token expired; put a new one on $cbs")
            } else {
                AmqpError::new(
                    condition::DETACH_FORCED,
                    "the device's session ended (disabled, deleted, re-keyed, or connected again elsewhere)",
                )
            };
            if let Some(device) = self.devices.get(&id) {
                let links: Vec<LinkId> = device.links.links().collect();
                for link in links {
                    self.conn.detach(link, Some(error.clone()), now);
                }
            }
            self.end_device_session(&id);
        }
    }

    /// Ends a device's MQTT session and closes its gateway socket.
    fn end_device_session(&mut self, device_id: &str) {
        if let Some(mut device) = self.devices.remove(device_id) {
            device.links.disconnect(clock::now());
            device.flush();
            let _ = device.socket.close(Some(1000), Some("AMQP links closed"));
        }
    }

    /// A new gateway socket for a device's MQTT session, with a task passing what the
    /// gateway says to the connection's loop.
    async fn open_gateway_socket(&mut self, device_id: &str) -> worker::Result<(WebSocket, u64)> {
        self.subrequests += 1;
        let socket = crate::device_tcp::open_gateway_socket(&self.env).await?;
        socket.accept()?;
        AsRef::<web_sys::WebSocket>::as_ref(&socket).set_binary_type(web_sys::BinaryType::Arraybuffer);
        self.next_generation += 1;
        let generation = self.next_generation;
        let mut inbox = self.inbox.clone();
        let reader = socket.clone();
        let device_id = device_id.to_owned();
        worker::wasm_bindgen_futures::spawn_local(async move {
            if let Ok(mut events) = reader.events() {
                while let Some(Ok(WebsocketEvent::Message(m))) = events.next().await {
                    let said = FromGateway { device_id: device_id.clone(), generation, bytes: m.bytes() };
                    if inbox.send(Inbox::Gateway(said)).await.is_err() {
                        return;
                    }
                }
            }
            let _ = inbox.send(Inbox::Gateway(FromGateway { device_id, generation, bytes: None })).await;
        });
        Ok((socket, generation))
    }

    /// Hands an event on one of a device's links to that device's links; any other event is
    /// given back.
    fn device_event(&mut self, event: Event) -> Option<Event> {
        let link = match &event {
            Event::Credit { link, .. }
            | Event::Message { link, .. }
            | Event::Disposition { link, .. }
            | Event::Detached { link, .. } => *link,
            _ => return Some(event),
        };
        let Some(id) = self.devices.iter().find(|(_, d)| d.links.has_link(link)).map(|(id, _)| id.clone()) else {
            return Some(event);
        };
        let now = clock::now();
        let (conn, device) = (&mut self.conn, self.devices.get_mut(&id)?);
        match event {
            Event::Credit { .. } => device.links.credit(conn, link, now),
            Event::Message { delivery_id, settled, message, .. } => {
                device.links.message(conn, link, delivery_id, settled, *message, now)
            }
            Event::Disposition { delivery_id, state, .. } => device.links.disposition(link, delivery_id, state, now),
            _ => {
                if !device.links.detached(link) {
                    self.end_device_session(&id);
                }
            }
        }
        None
    }

    /// A link under `/devices/{id}/...`: accepted once the device's token is on `$cbs`, and
    /// served by its MQTT session (opened with its first link).
    async fn attach_device_link(
        &mut self,
        link: LinkId,
        name: &str,
        parsed: Result<(String, DeviceNode), String>,
        source: Option<Source>,
        target: Option<Target>,
    ) {
        let now = clock::now();
        let (device_id, node) = match parsed {
            Ok(parsed) => parsed,
            Err(why) => return self.conn.refuse_link(link, name, AmqpError::new(condition::NOT_FOUND, why), now),
        };
        let Some(grant) = self.device_grants.get(&device_id).filter(|g| g.expiry_secs > now.as_secs()) else {
            let why = format!("put a token for device '{device_id}' on $cbs first");
            return self.conn.refuse_link(link, name, AmqpError::new(condition::UNAUTHORIZED_ACCESS, why), now);
        };
        let (token, host, expiry_secs) = (grant.token.clone(), grant.host.clone(), grant.expiry_secs);
        if !self.devices.contains_key(&device_id) {
            if let Some((refused, _)) = crate::headroom::shed(&self.env).await {
                let error = AmqpError::new(condition::RESOURCE_LIMIT_EXCEEDED, refused.message);
                return self.conn.refuse_link(link, name, error, now);
            }
            if self.devices.len() >= MAX_DEVICES {
                let why = format!("a connection carries at most {MAX_DEVICES} devices");
                return self.conn.refuse_link(link, name, AmqpError::new(condition::RESOURCE_LIMIT_EXCEEDED, why), now);
            }
            let (socket, generation) = match self.open_gateway_socket(&device_id).await {
                Ok(opened) => opened,
                Err(e) => {
                    worker::console_warn!("AMQP device {device_id}: no gateway socket: {e}");
                    let error =
                        AmqpError::new(condition::INTERNAL_ERROR, "the hub could not start the device's session");
                    return self.conn.refuse_link(link, name, error, now);
                }
            };
            let links = DeviceLinks::new(&device_id, &host, token, now);
            self.devices.insert(device_id.clone(), DeviceSession { links, socket, generation, expiry_secs });
        }
        self.conn.accept_link(link, name, source, target, Vec::new(), now);
        if let Some(device) = self.devices.get_mut(&device_id) {
            device.links.attach(link, node, now);
        }
    }

    /// Sends waiting delivery feedback to the receivers that have credit, at most once a
    /// second each while there is none.
    async fn feed_feedback(&mut self) {
        let now = clock::now();
        let links: Vec<LinkId> = self
            .nodes
            .iter()
            .filter(|(link, node)| {
                matches!(node, Node::Feedback { next_look, .. } if *next_look <= now.0) && self.conn.credit(**link) > 0
            })
            .map(|(l, _)| *l)
            .collect();
        for link in links {
            self.subrequests += 1;
            let taken: worker::Result<(Vec<i64>, Vec<twinhub_core::c2d::Feedback>)> = match feedback_stub(&self.env) {
                Ok(stub) => crate::rpc::ask(&stub, &FeedbackOp::Take { max: 100 }).await,
                Err(e) => Err(e),
            };
            let taken = match taken {
                Ok(taken) => taken,
                Err(e) => {
                    worker::console_warn!("AMQP: feedback: {e}");
                    continue;
                }
            };
            let (ids, records) = taken;
            if records.is_empty() {
                if let Some(Node::Feedback { next_look, .. }) = self.nodes.get_mut(&link) {
                    *next_look = now.0 + 1_000;
                }
                continue;
            }
            let message_id = clock::random_hex::<16>().unwrap_or_default();
            let message = twinhub_core::c2d::feedback_message(&records, message_id);
            if let Ok(delivery_id) = self.conn.send(link, &message, false, now) {
                if let Some(Node::Feedback { lent, .. }) = self.nodes.get_mut(&link) {
                    lent.insert(delivery_id, ids);
                }
            }
        }
    }

    /// When a link with credit should next look for events or feedback, if one waits.
    fn next_look(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|(link, _)| self.conn.credit(**link) > 0)
            .filter_map(|(_, node)| match node {
                Node::Partition { next_look, .. } | Node::Feedback { next_look, .. } => Some(*next_look),
                _ => None,
            })
            .min()
    }

    async fn event(&mut self, event: Event) {
        let Some(event) = self.device_event(event) else { return };
        let now = clock::now();
        match event {
            Event::SaslInit { mechanism, response, .. } => {
                let ok = match mechanism.as_str() {
                    // The token comes later, by put-token.
                    "ANONYMOUS" | "MSSBCBS" => true,
                    // The token is the password; its grant serves the connection as a put-token's
                    // would. A device signs in as `{deviceId}@sas.{hub}` with its own token, a
                    // service as `{policy}@sas.root.{hub}`.
                    "PLAIN" => match response.as_deref().and_then(cbs::plain_credentials) {
                        Some((user, token)) => match PlainUser::parse(&user) {
                            Some(PlainUser::Device(device)) => {
                                let audience =
                                    twinhub_core::auth::SasToken::parse(&token).map(|t| t.resource().to_owned());
                                match audience.ok().as_deref().and_then(device_audience) {
                                    Some((host, id)) if id == device => {
                                        self.device_token(&host, &id, &token).await.is_ok()
                                    }
                                    _ => false,
                                }
                            }
                            Some(PlainUser::Policy(policy)) => {
                                self.authorize(&token, Authority::Plain { policy }).and_then(|g| self.keep(g)).is_ok()
                            }
                            None => false,
                        },
                        None => false,
                    },
                    _ => false,
                };
                self.conn.sasl_outcome(ok, now);
            }
            Event::Opened { .. } => self.created = now,
            Event::Attach { link, name, role, source, target, properties: _ } => {
                self.attach(link, &name, role, source, target).await
            }
            Event::Credit { link, drain } => {
                if let Some(Node::Replies(pending)) = self.nodes.get_mut(&link) {
                    let waiting = std::mem::take(pending);
                    for reply in waiting {
                        self.reply_on(link, reply);
                    }
                }
                // New credit is a consumer asking: look at its partition now.
                if let Some(Node::Partition { next_look, .. }) = self.nodes.get_mut(&link) {
                    *next_look = 0;
                }
                if drain {
                    self.feed_partitions().await;
                    self.conn.drained(link, clock::now());
                }
            }
            Event::Message { link, delivery_id, message, settled } => {
                let node = match self.nodes.get(&link) {
                    Some(Node::DeviceBound) => {
                        let outcome = self.cloud_to_device(&message).await;
                        if !settled {
                            self.conn.settle(link, delivery_id, outcome, clock::now());
                        }
                        return;
                    }
                    Some(Node::Requests(node)) => *node,
                    _ => {
                        if !settled {
                            let rejected =
                                DeliveryState::rejected(condition::NOT_ALLOWED, "this link takes no messages");
                            self.conn.settle(link, delivery_id, rejected, now);
                        }
                        return;
                    }
                };
                if !settled {
                    self.conn.settle(link, delivery_id, DeliveryState::Accepted, now);
                }
                let reply = match node {
                    "$cbs" => self.put_token(&message).await,
                    _ => self.management(&message).await,
                };
                if let Some(reply_link) = self.reply_links.get(node).copied() {
                    self.reply_on(reply_link, reply);
                }
            }
            Event::Disposition { link, delivery_id, state } => {
                // A feedback message the receiver accepted: its records are done. Otherwise
                // they are given out again when their lease ends.
                if let Some(Node::Feedback { lent, .. }) = self.nodes.get_mut(&link) {
                    if let Some(ids) = lent.remove(&delivery_id) {
                        if matches!(state, Some(DeliveryState::Accepted)) {
                            self.subrequests += 1;
                            let done = match feedback_stub(&self.env) {
                                Ok(stub) => crate::rpc::tell(&stub, &FeedbackOp::Complete { ids }).await,
                                Err(e) => Err(e),
                            };
                            if let Err(e) = done {
                                worker::console_warn!("AMQP: feedback not completed: {e}");
                            }
                        }
                    }
                }
            }
            Event::Detached { link, .. } => {
                self.nodes.remove(&link);
                self.reply_links.retain(|_, l| *l != link);
            }
            Event::Closed { error } => {
                if let Some(e) = error {
                    worker::console_log!(
                        "AMQP connection closed: {} {}",
                        e.condition,
                        e.description.unwrap_or_default()
                    );
                }
            }
        }
    }

    async fn attach(&mut self, link: LinkId, name: &str, role: Role, source: Option<Source>, target: Option<Target>) {
        let now = clock::now();
        // The node a link is for: its target when the client sends, its source when it receives.
        let address = match role {
            Role::Sender => target.as_ref().and_then(|t| t.address.clone()),
            Role::Receiver => source.as_ref().and_then(|s| s.address.clone()),
        }
        .unwrap_or_default();
        let partitions = Config::of(&self.env).eventhub_partitions;
        let raw_path = match address.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
            None => address.as_str(),
        };
        if let Some(parsed) = DeviceNode::parse(raw_path, role) {
            return self.attach_device_link(link, name, parsed, source, target).await;
        }
        // `amqps://{host}/messages/devicebound` names the node by its path, in any case (the
        // Node SDK writes `/messages/serviceBound/feedback`).
        let path = raw_path.to_ascii_lowercase();
        let node = match (path.as_str(), role) {
            ("/messages/devicebound", Role::Sender) => {
                if self.refused_without_grant(link, name, DEVICE_BOUND) {
                    return;
                }
                Node::DeviceBound
            }
            ("/messages/servicebound/feedback", Role::Receiver) => {
                if self.refused_without_grant(link, name, FEEDBACK) {
                    return;
                }
                Node::Feedback { lent: BTreeMap::new(), next_look: 0 }
            }
            ("$cbs", Role::Sender) => Node::Requests("$cbs"),
            ("$management", Role::Sender) => Node::Requests("$management"),
            ("$cbs" | "$management", Role::Receiver) => {
                let name = if address == "$cbs" { "$cbs" } else { "$management" };
                self.reply_links.insert(name, link);
                Node::Replies(Vec::new())
            }
            (_, Role::Receiver) => match PartitionAddress::parse(&address, partitions) {
                Some(parsed) if !parsed.entity.eq_ignore_ascii_case(eventhub::ENTITY_PATH) => {
                    let why = format!("no event hub '{}' (this hub's is '{}')", parsed.entity, eventhub::ENTITY_PATH);
                    return self.conn.refuse_link(link, name, AmqpError::new(condition::NOT_FOUND, why), now);
                }
                Some(parsed) => {
                    let path = cbs::node_path(&address).to_owned();
                    if self.refused_without_grant(link, name, &path) {
                        return;
                    }
                    match eventhub::start_position(source.as_ref()) {
                        Ok(start) => Node::Partition {
                            path,
                            partition: parsed.partition,
                            next: None,
                            start,
                            next_look: 0,
                            empty: 0,
                        },
                        Err(why) => {
                            return self.conn.refuse_link(link, name, AmqpError::new(condition::NOT_ALLOWED, why), now)
                        }
                    }
                }
                None => {
                    let why = match partitions {
                        0 => "the Event Hub-compatible endpoint is off (EVENTHUB_PARTITIONS=0)".to_owned(),
                        n => format!("no node '{address}' (partitions are 0 to {})", n - 1),
                    };
                    return self.conn.refuse_link(link, name, AmqpError::new(condition::NOT_FOUND, why), now);
                }
            },
            (_, Role::Sender) => {
                let error = AmqpError::new(condition::NOT_FOUND, format!("no node '{address}' takes messages"));
                return self.conn.refuse_link(link, name, error, now);
            }
        };
        self.nodes.insert(link, node);
        self.conn.accept_link(link, name, source, target, Vec::new(), now);
    }

    /// Refuses a link to the service node at `path` unless a token put on the connection
    /// covers it (unexpired, ServiceConnect); whether it did.
    fn refused_without_grant(&mut self, link: LinkId, name: &str, path: &str) -> bool {
        if self.grant_for(path).is_some() {
            return false;
        }
        self.conn.refuse_link(link, name, not_granted(path), clock::now());
        true
    }

    /// An unexpired ServiceConnect grant covering the node at `path`.
    fn grant_for(&self, path: &str) -> Option<&Grant> {
        self.grants.covering(path, Permissions::SERVICE_CONNECT, clock::now().as_secs())
    }

    /// Keeps a checked grant for the rest of the connection (or until it expires).
    fn keep(&mut self, grant: Grant) -> Result<(), String> {
        self.grants
            .put(grant, clock::now().as_secs())
            .map_err(|_| format!("a connection keeps at most {} service tokens", cbs::MAX_GRANTS))?;
        self.credential_accepted();
        Ok(())
    }

    /// A credential was accepted: the connection no longer waits to authenticate.
    fn credential_accepted(&mut self) {
        self.conn.authenticated();
        if let Some(id) = self.waiting.take() {
            stop_waiting(id);
        }
    }

    fn reply_on(&mut self, link: LinkId, reply: Message) {
        if self.conn.credit(link) == 0 {
            if let Some(Node::Replies(pending)) = self.nodes.get_mut(&link) {
                if pending.len() < MAX_PENDING_REPLIES {
                    pending.push(reply);
                }
            }
            return;
        }
        let _ = self.conn.send(link, &reply, true, clock::now());
    }

    /// A valid token's grant, if its policy has ServiceConnect.
    fn authorize(&self, token: &str, authority: Authority<'_>) -> Result<Grant, String> {
        let config = Config::of(&self.env);
        let env = &self.env;
        let own = |host: &str| !crate::auth::own_name(host.to_owned(), env).is_empty();
        let now = clock::now().as_secs();
        let grant = match authority {
            Authority::PutToken { audience } => cbs::authorize(token, audience, &config.policies, own, now),
            // SASL PLAIN names no audience: the token's own resource is what it is for.
            Authority::Plain { policy } => cbs::authorize_plain(policy, token, &config.policies, own, now),
        }
        .map_err(|e| e.to_string())?;
        if !grant.permissions.contains(Permissions::SERVICE_CONNECT) {
            return Err(format!("policy '{}' lacks the ServiceConnect permission", grant.policy));
        }
        Ok(grant)
    }

    async fn put_token(&mut self, request: &Message) -> Message {
        let put = match PutToken::parse(request) {
            Ok(put) => put,
            Err((status, why)) => return cbs::reply(request, status, &why, None),
        };
        if let Some((host, device_id)) = device_audience(&put.audience) {
            return match self.device_token(&host, &device_id, &put.token).await {
                Ok(()) => cbs::reply(request, 200, "OK", None),
                Err((status, why)) => cbs::reply(request, status, &why, None),
            };
        }
        match self.authorize(&put.token, Authority::PutToken { audience: &put.audience }) {
            Ok(grant) => match self.keep(grant) {
                Ok(()) => cbs::reply(request, 200, "OK", None),
                Err(why) => cbs::reply(request, 403, &why, None),
            },
            Err(why) => cbs::reply(request, 401, &why, None),
        }
    }

    /// A device's token, checked by its device object (which opens no session for it) and
    /// kept for the device's links; a renewal replaces it. Refused with the put-token status
    /// and why: 401 for a token that does not verify, 403 past [`MAX_DEVICES`] devices (the
    /// tokens a connection keeps are bounded as its sessions are).
    async fn device_token(&mut self, host: &str, device_id: &str, token: &str) -> Result<(), (i32, String)> {
        if crate::auth::own_name(host.to_owned(), &self.env).is_empty() {
            return Err((401, format!("'{host}' is not this hub")));
        }
        let now = clock::now().as_secs();
        self.device_grants.retain(|_, g| g.expiry_secs > now);
        if self.device_grants.len() >= MAX_DEVICES && !self.device_grants.contains_key(device_id) {
            return Err((403, format!("a connection carries at most {MAX_DEVICES} devices")));
        }
        let op = crate::rpc::DeviceOp::DeviceToken {
            device_id: device_id.to_owned(),
            token: token.to_owned(),
            host: host.to_owned(),
        };
        self.subrequests += 1;
        let stub = crate::objects::device_stub(&self.env, device_id).map_err(|e| (500, e.to_string()))?;
        let checked: crate::rpc::DeviceToken = crate::rpc::ask(&stub, &op).await.map_err(|e| (401, e.to_string()))?;
        let grant = DeviceGrant { token: token.to_owned(), host: host.to_owned(), expiry_secs: checked.expiry_secs };
        self.device_grants.insert(device_id.to_owned(), grant);
        self.credential_accepted();
        Ok(())
    }

    /// Detaches the service links no unexpired grant covers any more. Every pass looks at
    /// every guarded link (a few at most): a grant may also leave by a put-token's tidying
    /// ([`Grants::put`] drops the expired), not only by [`Grants::expire`].
    fn check_expiry(&mut self) {
        let now = clock::now();
        self.grants.expire(now.as_secs());
        let uncovered: Vec<LinkId> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.guarded_path().is_some_and(|path| self.grant_for(path).is_none()))
            .map(|(l, _)| *l)
            .collect();
        for link in uncovered {
            self.nodes.remove(&link);
            let error = AmqpError::new(condition::UNAUTHORIZED_ACCESS, "the token expired; put a new one on $cbs");
            self.conn.detach(link, Some(error), now);
        }
    }

    /// Queues a service's message for its device, as `POST /api/devices/{id}/messages` does;
    /// the outcome settles the delivery (rejected with the reason, IoT Hub's code in it).
    async fn cloud_to_device(&mut self, message: &Message) -> DeliveryState {
        if self.grant_for(DEVICE_BOUND).is_none() {
            return DeliveryState::rejected(condition::UNAUTHORIZED_ACCESS, "the token expired; put a new one on $cbs");
        }
        let generated = clock::random_hex::<16>().unwrap_or_default();
        let (device_id, message) = match twinhub_core::c2d::CloudToDeviceMessage::from_amqp(message, generated) {
            Ok(m) => m,
            Err(e) => return rejected_for(&e),
        };
        self.subrequests += 1;
        let op = crate::rpc::DeviceOp::EnqueueCloudToDevice { device_id: device_id.clone(), message };
        let stub = match crate::objects::device_stub(&self.env, &device_id) {
            Ok(stub) => stub,
            Err(e) => return DeliveryState::rejected(condition::INTERNAL_ERROR, e.to_string()),
        };
        match crate::rpc::call::<_, serde::de::IgnoredAny>(&stub, &op).await {
            Ok(_) => DeliveryState::Accepted,
            Err(e) => rejected_for(&e),
        }
    }

    async fn management(&mut self, request: &Message) -> Message {
        let partitions = Config::of(&self.env).eventhub_partitions;
        let parsed = eventhub::management_request(request, partitions);
        let entity = match &parsed {
            Ok(ManagementRequest::EventHub { name } | ManagementRequest::Partition { name, .. }) => Some(name.as_str()),
            Err(_) => None,
        };
        // Only this hub's event hub has figures; any other name is no entity at all.
        if let Some(name) = entity.filter(|n| !n.eq_ignore_ascii_case(eventhub::ENTITY_PATH)) {
            return cbs::reply(request, 404, &format!("no event hub '{name}'"), None);
        }
        // The node a request's token must cover is the named entity's management node,
        // `{entity}/$management`: a token for the entity (`sb://{host}/twinhub`, as
        // azure-eventhub puts it) covers it, and so does @azure/event-hubs' own audience for
        // it (`sb://{host}/twinhub/$management`).
        let covered = match entity {
            Some(entity) => self.grant_for(&format!("{entity}/$management")).is_some(),
            None => self.grants.any(clock::now().as_secs()),
        };
        if !covered {
            let why =
                format!("put a token on $cbs first whose resource covers '{}' (ServiceConnect)", entity.unwrap_or(""));
            return cbs::reply(request, 401, &why, None);
        }
        match parsed {
            Ok(ManagementRequest::EventHub { name }) => {
                let body = eventhub::eventhub_properties(&name, self.created, partitions);
                cbs::reply(request, 200, "OK", Some(body))
            }
            Ok(ManagementRequest::Partition { name, partition }) => match self.partition_info(partition).await {
                Ok(info) => {
                    cbs::reply(request, 200, "OK", Some(eventhub::partition_properties(&name, partition, &info)))
                }
                Err(e) => cbs::reply(request, 500, &e.to_string(), None),
            },
            Err((status, why)) => cbs::reply(request, status, &why, None),
        }
    }

    async fn partition_info(&mut self, partition: u32) -> worker::Result<PartitionInfo> {
        self.subrequests += 1;
        ask(&self.env, partition, &PartitionOp::Info).await
    }

    /// Sends what each partition link has credit for.
    async fn feed_partitions(&mut self) {
        let now = clock::now().0;
        let links: Vec<LinkId> = self
            .nodes
            .iter()
            .filter(|(link, node)| {
                matches!(node, Node::Partition { next_look, .. } if *next_look <= now) && self.conn.credit(**link) > 0
            })
            .map(|(l, _)| *l)
            .collect();
        for link in links {
            let Some(Node::Partition { partition, next, start, .. }) = self.nodes.get(&link) else { continue };
            let (partition, start, next) = (*partition, *start, *next);
            let from = match next {
                Some(n) => Ok(n),
                None => match start {
                    StartPosition::Sequence(n) => Ok(n),
                    position => {
                        self.subrequests += 1;
                        ask(&self.env, partition, &PartitionOp::Start { position }).await
                    }
                },
            };
            let read = match from {
                Ok(from) => {
                    let max = self.conn.credit(link).min(READ_BATCH) as usize;
                    self.subrequests += 1;
                    ask::<Vec<twinhub_core::eventhub::Event>>(&self.env, partition, &PartitionOp::Read { from, max })
                        .await
                        .map(|events| (from, events))
                }
                Err(e) => Err(e),
            };
            let (from, events) = match read {
                Ok(read) => read,
                Err(e) => {
                    worker::console_warn!("AMQP: partition {partition}: {e}");
                    self.looked(link, None, 0);
                    continue;
                }
            };
            let mut next_seq = from;
            for event in &events {
                // Events removed by retention since `from` are skipped, as Event Hubs does.
                if self.conn.send(link, &event.to_message(), true, clock::now()).is_err() {
                    break;
                }
                next_seq = event.sequence_number + 1;
            }
            self.looked(link, Some(next_seq), events.len());
        }
    }

    /// After a look at a partition that found `found` events: where the link goes on from,
    /// and when it looks again (at once after a full batch, after [`TRICKLE_MS`] after a
    /// partial one, later after each look that found none or failed).
    fn looked(&mut self, link: LinkId, from: Option<u64>, found: usize) {
        let now = clock::now().0;
        if let Some(Node::Partition { next, next_look, empty, .. }) = self.nodes.get_mut(&link) {
            if from.is_some() {
                *next = from;
            }
            match found {
                0 => {
                    *next_look = now + (POLL_MS << (*empty).min(4)).min(MAX_POLL_MS);
                    *empty = empty.saturating_add(1);
                }
                n if n >= READ_BATCH as usize / 2 => (*empty, *next_look) = (0, 0),
                _ => (*empty, *next_look) = (0, now + TRICKLE_MS),
            }
        }
    }
}

/// Sends `op` to partition `partition` and reads its answer.
async fn ask<T: serde::de::DeserializeOwned>(env: &Env, partition: u32, op: &PartitionOp) -> worker::Result<T> {
    crate::rpc::ask(&partition_stub(env, partition)?, op)
        .await
        .map_err(|e| worker::Error::RustError(format!("partition {partition}: {e}")))
}

/// How a service token reached the connection, which says what it must cover.
enum Authority<'a> {
    /// A CBS put-token for `audience`, which the token's resource must cover.
    PutToken { audience: &'a str },
    /// SASL PLAIN as `{policy}@sas.root.{hub}`: the token must be that policy's.
    Plain { policy: &'a str },
}

/// The refusal of a service node no grant covers.
fn not_granted(path: &str) -> AmqpError {
    AmqpError::new(
        condition::UNAUTHORIZED_ACCESS,
        format!("put a token on $cbs whose resource covers '{path}' first (ServiceConnect)"),
    )
}

/// The device a put-token's audience names (`{host}/devices/{id}`, URL-encoded as the SDKs
/// send it), with the host.
fn device_audience(audience: &str) -> Option<(String, String)> {
    let decoded = percent_encoding::percent_decode_str(audience).decode_utf8().ok()?;
    let rest = decoded.split_once("://").map_or(&*decoded, |(_, r)| r);
    let (host, device) = rest.split_once("/devices/")?;
    (!host.is_empty() && !device.is_empty() && !device.contains('/')).then(|| (host.to_owned(), device.to_owned()))
}

/// A hub error as a rejection: the AMQP condition nearest its status, IoT Hub's code and
/// message in the description.
fn rejected_for(e: &HubError) -> DeliveryState {
    let condition = match e.code.http_status() {
        404 => condition::NOT_FOUND,
        403 | 429 => condition::RESOURCE_LIMIT_EXCEEDED,
        413 => condition::MESSAGE_SIZE_EXCEEDED,
        401 => condition::UNAUTHORIZED_ACCESS,
        400 => condition::INVALID_FIELD,
        _ => condition::INTERNAL_ERROR,
    };
    DeliveryState::rejected(condition, e.to_string())
}
