//! Gateway shards: where device WebSockets (`/$iothub/websocket`) live.
//!
//! The Azure SDKs open the socket with no device id in the URL; the id arrives in MQTT CONNECT.
//! So sockets land on a gateway shard, which runs the core [`Session`] for each and binds it to
//! the device's object once CONNECT is verified there. Sockets use the hibernation API: the
//! session lives in the socket's attachment, so the shard holds no state that matters between
//! events and may sleep at any time.
//!
//! Inputs for one connection (bytes, a desired patch to push, a close, a timer) are processed
//! one at a time through a small in-memory mailbox, because the object may run another event
//! while one awaits the device object, and a session must see its inputs in order.
//!
//! Bounds (each a resource a client could otherwise make the shard hold): a packet is at most
//! `mqtt::MAX_PACKET_BYTES`; the bytes of an unfinished packet live in memory
//! (`partial_input`), not in the attachment (16 KiB on Cloudflare); a connection's mailbox
//! holds at most [`MAX_QUEUED_INPUT_BYTES`]; a shard holds at most [`MAX_SOCKETS`] sockets and
//! [`MAX_HALF_OPEN`] that have not finished CONNECT ([`MAX_HALF_OPEN_PER_SOURCE`] from one
//! client address), kept by evicting the oldest waiting socket rather than refusing the
//! newcomer (`core::admission`: a flood of silent sockets cannot lock real devices out), and
//! verifies at most [`CONNECTS_PER_SECOND`] CONNECTs a second. A CONNECT whose token cannot be right (malformed,
//! expired, for another device or hub) is refused here and never wakes a device object.

use crate::clock;
use crate::config::Config;
use crate::http::{self, ApiResult};
use crate::objects::ask_index_shard;
use crate::rpc::{
    self, ConnectVerdict, DeviceBatch, DeviceOp, Existence, GatewayOp, IndexOp, QueuedMessage, TelemetryMessage,
};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use twinhub_core::admission::PreAuth;
use twinhub_core::auth::precheck_device_token;
use twinhub_core::mqtt::ConnectReturnCode;
use twinhub_core::session::{Accepted, CloseReason, Session, SessionEvent};
use twinhub_core::throttle::TokenBucket;
use twinhub_core::tier::{Operation, Throttles};
use twinhub_core::UnixMillis;
use twinhub_core::{ErrorCode, HubError};
use worker::Delay;
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, State, WebSocket, WebSocketIncomingMessage,
    WebSocketPair,
};

/// Header the Worker sets: this shard's name, which the device object uses to reach it.
pub const GATEWAY_HEADER: &str = "x-twinhub-gateway";
/// Header the Worker sets: the host the device dialled, which its SAS token must name.
pub const HOST_HEADER: &str = "x-twinhub-host";
/// Header the Worker sets: the client's address where the platform vouches for it
/// (`CF-Connecting-IP` on Cloudflare); empty where it does not (local workerd), and then only
/// the shard's total bound applies.
pub const SOURCE_HEADER: &str = "x-twinhub-source";
/// Header the Worker sets: how the device reached the hub, [`TRANSPORT_WEBSOCKET`] or
/// [`TRANSPORT_TCP`] (MQTT over TLS on 8883, `crate::device_tcp`).
pub const TRANSPORT_HEADER: &str = "x-twinhub-transport";
/// MQTT over WebSocket (`/$iothub/websocket`).
pub const TRANSPORT_WEBSOCKET: &str = "websocket";
/// MQTT over TLS-terminated TCP: no Host header, so the hub's name comes from the CONNECT user
/// name, checked against the hub's own names.
pub const TRANSPORT_TCP: &str = "tcp";

/// Hands a device connection, a WebSocket upgrade with `headers`, to a random gateway shard:
/// the device id is unknown until CONNECT, so any shard will do, and the device object learns
/// which one holds the session when CONNECT is verified. The routing headers are set here, over
/// any the client sent: `host` is the hub name the device dialled (empty over TCP, where the
/// CONNECT user name gives it) and `transport` is [`TRANSPORT_WEBSOCKET`] or [`TRANSPORT_TCP`].
pub async fn connect_to_shard(
    env: &Env,
    url: &str,
    headers: worker::Headers,
    host: &str,
    transport: &str,
    source: &str,
) -> Result<Response> {
    let shard = u32::from_le_bytes(clock::random::<4>()?) % Config::of(env).gateway_shards;
    let name = format!("gw-{shard}");
    headers.set(GATEWAY_HEADER, &name)?;
    headers.set(HOST_HEADER, host)?;
    headers.set(TRANSPORT_HEADER, transport)?;
    headers.set(SOURCE_HEADER, source)?;
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Get).with_headers(headers);
    let request = Request::new_with_init(url, &init)?;
    let stub = env.durable_object(crate::objects::GATEWAY_BINDING)?.get_by_name(&name)?;
    stub.fetch_with_request(request).await
}

#[durable_object]
pub struct Gateway {
    state: State,
    env: Env,
    /// Per-connection inputs waiting while an earlier one is processed.
    mailboxes: RefCell<HashMap<String, VecDeque<Input>>>,
    /// Direct method calls waiting for the device's answer, by `$rid`. `None` means the device
    /// does not listen for methods.
    waiters: RefCell<HashMap<String, oneshot::Sender<Option<MethodAnswer>>>>,
    /// Bytes of an unfinished packet per connection ([`Session::take_partial_input`]). Lost if
    /// the object is evicted mid-packet; the session then ends and the device resends.
    partial_input: RefCell<HashMap<String, Vec<u8>>>,
    /// Connections accepted that have not finished CONNECT, oldest first.
    half_open: RefCell<PreAuth<String>>,
    /// CONNECTs this shard may verify now.
    connects: RefCell<TokenBucket>,
    /// This shard's share of the hub tier's device-side throttles and daily quota.
    throttles: RefCell<Option<Throttles>>,
    /// Each connection's telemetry rate ([`crate::config::DEVICE_RATE_VAR`]): one device
    /// sending too fast waits, and its neighbours do not.
    device_rates: RefCell<HashMap<String, TokenBucket>>,
    /// Stored telemetry on its way to the Event Hub partitions, batched per partition.
    appender: crate::objects::partition::Appender,
}

/// Sockets one shard holds (Cloudflare allows 32,768 hibernated sockets per object).
pub const MAX_SOCKETS: usize = 30_000;
/// Sockets per shard that may wait for their CONNECT at once; a newcomer past it evicts the
/// oldest waiting one.
pub const MAX_HALF_OPEN: usize = 2_000;
/// Of those, from one client address (where the platform tells it): a source past it evicts
/// its own oldest, so one address cannot fill the shard.
pub const MAX_HALF_OPEN_PER_SOURCE: usize = 200;
/// CONNECTs a shard verifies per second (a burst of as many), the rest refused with CONNACK 3
/// (server unavailable, retry): IoT Hub's S3 tier allows 5,000 new connections a second per
/// unit, and a shard's device objects are the work behind each.
pub const CONNECTS_PER_SECOND: f64 = 500.0;
/// The longest a burst of telemetry waits for the tier's rate before the session is ended.
pub const MAX_SHAPING_MS: u64 = 2_000;
/// Bytes queued for one connection while an earlier input is handled: a device that sends
/// faster than its messages are stored is closed (it resends what was not acknowledged).
pub const MAX_QUEUED_INPUT_BYTES: usize = 2 * twinhub_core::mqtt::MAX_PACKET_BYTES;

/// A device's answer to a direct method: its status and JSON body.
type MethodAnswer = (i32, Vec<u8>);

/// Cloudflare's cap on a WebSocket attachment, which local workerd does not enforce.
pub const MAX_ATTACHMENT_BYTES: usize = 16_384;

/// What a socket's attachment holds. Bounded by construction, far below
/// [`MAX_ATTACHMENT_BYTES`]: the session by `twinhub_core::session::MAX_SNAPSHOT_BYTES`, the
/// host by `MAX_HUB_NAME_LEN`, the in-flight messages by the 50-message queue, the rest ours.
#[derive(Serialize, Deserialize)]
struct Attachment {
    conn: String,
    gateway: String,
    host: String,
    session: Session,
    /// MQTT over TCP: `host` is taken from the CONNECT user name.
    #[serde(default)]
    tcp: bool,
    /// Cloud-to-device messages sent and not yet acknowledged, and how far the session
    /// completed.
    #[serde(default)]
    c2d: twinhub_core::c2d::InFlight,
}

enum Input {
    Bytes(Vec<u8>),
    Method { name: String, rid: String, payload: String },
    CloudToDevice(Vec<QueuedMessage>),
    Desired { version: u64, patch: Value },
    Close(String),
    Timeout,
    SocketClosed,
}

impl DurableObject for Gateway {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            mailboxes: RefCell::new(HashMap::new()),
            waiters: RefCell::new(HashMap::new()),
            partial_input: RefCell::new(HashMap::new()),
            half_open: RefCell::new(PreAuth::new(MAX_HALF_OPEN, MAX_HALF_OPEN_PER_SOURCE)),
            connects: RefCell::new(TokenBucket::new(CONNECTS_PER_SECOND, CONNECTS_PER_SECOND, clock::now())),
            throttles: RefCell::new(None),
            device_rates: RefCell::new(HashMap::new()),
            appender: crate::objects::partition::Appender::new(),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if req.headers().get("upgrade")?.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return self.accept(&req).await;
        }
        let op: GatewayOp = match rpc::read(req.text().await).await {
            Ok(op) => op,
            Err(e) => return Response::error(format!("bad rpc: {e}"), 400),
        };
        let (conn, input) = match op {
            GatewayOp::Desired { conn, version, patch } => (conn, Input::Desired { version, patch }),
            GatewayOp::Close { conn, reason } => (conn, Input::Close(reason)),
            GatewayOp::CloudToDevice { conn, messages } => (conn, Input::CloudToDevice(messages)),
            GatewayOp::Method { conn, name, payload, timeout_ms } => {
                return http::finish(self.invoke(&conn, name, payload.get().to_owned(), timeout_ms).await);
            }
        };
        if let Some(ws) = self.state.get_websockets_with_tag(&conn).into_iter().next() {
            self.deliver(&ws, &conn, input).await;
        }
        Ok(Response::builder().with_status(204).empty())
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        let bytes = match message {
            WebSocketIncomingMessage::Binary(b) => b,
            // MQTT is binary; a text frame is still bytes to the codec, which will judge them.
            WebSocketIncomingMessage::String(s) => s.into_bytes(),
        };
        if let Some(conn) = conn_of(&ws) {
            self.deliver(&ws, &conn, Input::Bytes(bytes)).await;
        }
        Ok(())
    }

    async fn websocket_close(&self, ws: WebSocket, _code: usize, _reason: String, _was_clean: bool) -> Result<()> {
        if let Some(conn) = conn_of(&ws) {
            self.deliver(&ws, &conn, Input::SocketClosed).await;
        }
        // Complete the close handshake (the compatibility date predates workerd's automatic
        // reply); the 8883 pipe waits for it. Closing a socket already closed only errs.
        let _ = ws.close(Some(1000), Some("closed"));
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        if let Some(conn) = conn_of(&ws) {
            self.deliver(&ws, &conn, Input::SocketClosed).await;
        }
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        // One alarm per shard: run every session's timer, then re-arm for the earliest.
        for ws in self.state.get_websockets() {
            if let Some(conn) = conn_of(&ws) {
                self.deliver(&ws, &conn, Input::Timeout).await;
            }
        }
        self.rearm().await?;
        Response::ok("")
    }
}

impl Gateway {
    async fn accept(&self, req: &Request) -> Result<Response> {
        if self.state.get_websockets().len() >= MAX_SOCKETS {
            return http::error(&HubError::new(
                ErrorCode::ServiceUnavailable,
                "this gateway shard holds as many device connections as it may; retry shortly",
            ));
        }
        let pair = WebSocketPair::new()?;
        let conn: String = clock::random_hex::<12>()?;
        let header = |name: &str| req.headers().get(name).ok().flatten().unwrap_or_default();
        let attachment = Attachment {
            conn: conn.clone(),
            gateway: header(GATEWAY_HEADER),
            host: header(HOST_HEADER),
            session: Session::with_connect_timeout(clock::now(), Config::of(&self.env).connect_timeout_ms),
            tcp: header(TRANSPORT_HEADER) == TRANSPORT_TCP,
            c2d: Default::default(),
        };
        self.state.accept_websocket_with_tags(&pair.server, &[&conn]);
        store_attachment(&pair.server, &attachment)?;
        let admitted = self.half_open.borrow_mut().admit(conn.clone(), &header(SOURCE_HEADER));
        if let Some(evicted) = admitted.evict {
            // The oldest socket still waiting for its CONNECT makes room: a real device has
            // long since sent one.
            if let Some(ws) = self.state.get_websockets_with_tag(&evicted).into_iter().next() {
                let _ = ws.close(Some(1013), Some("too many connections waiting for CONNECT; retry"));
                self.deliver(&ws, &evicted, Input::SocketClosed).await;
            }
        }
        // Connections that never send CONNECT are closed by the timer.
        self.arm(attachment.session.poll_timeout()).await?;
        let mut response = Response::builder().with_status(101).with_websocket(pair.client);
        // paho checks for the subprotocol and for "Connection: Upgrade"; workerd adds the rest.
        response = response.with_header("sec-websocket-protocol", "mqtt")?;
        Ok(response.empty())
    }

    /// Queues `input` for the connection; if nothing is processing it, processes the queue.
    async fn deliver(&self, ws: &WebSocket, conn: &str, input: Input) {
        {
            let mut boxes = self.mailboxes.borrow_mut();
            if let Some(queue) = boxes.get_mut(conn) {
                let queued: usize = queue.iter().map(|i| if let Input::Bytes(b) = i { b.len() } else { 0 }).sum();
                let incoming = if let Input::Bytes(b) = &input { b.len() } else { 0 };
                if queued + incoming > MAX_QUEUED_INPUT_BYTES {
                    // What is queued is dropped unread; the close goes first.
                    queue.clear();
                    queue.push_back(Input::Close("the device sends faster than its messages are stored".into()));
                    return;
                }
                // Bytes join the bytes queued last, so the queue stays a few entries long and
                // the sum above stays cheap however small the frames.
                match (queue.back_mut(), input) {
                    (Some(Input::Bytes(last)), Input::Bytes(more)) => last.extend_from_slice(&more),
                    (_, input) => queue.push_back(input),
                }
                return;
            }
            boxes.insert(conn.to_owned(), VecDeque::from([input]));
        }
        loop {
            let next = {
                let mut boxes = self.mailboxes.borrow_mut();
                let Some(queue) = boxes.get_mut(conn) else { break };
                match queue.pop_front() {
                    // Bytes that queued up while the last input waited on the device object
                    // are one input: their telemetry is then stored in one call.
                    Some(Input::Bytes(mut bytes)) => {
                        while let Some(Input::Bytes(more)) = queue.front() {
                            bytes.extend_from_slice(more);
                            queue.pop_front();
                        }
                        Input::Bytes(bytes)
                    }
                    Some(input) => input,
                    None => {
                        boxes.remove(conn);
                        break;
                    }
                }
            };
            if let Err(e) = self.process(ws, next).await {
                worker::console_error!("gateway: {e}");
            }
        }
    }

    async fn process(&self, ws: &WebSocket, input: Input) -> Result<()> {
        let Some(mut att) = ws.deserialize_attachment::<Attachment>()? else { return Ok(()) };
        let kept = self.partial_input.borrow_mut().remove(&att.conn).unwrap_or_default();
        att.session.restore_partial_input(kept);
        let now = clock::now();
        let was_connected = att.session.is_connected();
        match input {
            Input::Bytes(bytes) => att.session.handle_bytes(now, &bytes),
            Input::Desired { version, patch } => {
                let _ = att.session.push_desired(version, patch.to_string().into_bytes());
            }
            Input::Close(reason) => att.session.close_by_hub(&reason),
            Input::CloudToDevice(messages) => {
                for m in messages {
                    // Already on its way (a redelivery trigger while unacknowledged): skip.
                    // In flight already, or completed (a list made before the completion): skip.
                    if !att.c2d.is_new(m.seq) {
                        continue;
                    }
                    let body = BASE64.decode(&m.body).unwrap_or_default();
                    if let Ok(packet_id) = att.session.send_cloud_to_device(&m.properties, body) {
                        att.c2d.sent(packet_id.get(), m.seq);
                    }
                }
            }
            Input::Method { name, rid, payload } => {
                if att.session.call_method(&name, &rid, payload.into_bytes()).is_err() {
                    self.answer(&rid, None);
                }
            }
            Input::Timeout => att.session.handle_timeout(now),
            Input::SocketClosed => {
                self.half_open.borrow_mut().done(&att.conn);
                self.device_rates.borrow_mut().remove(&att.conn);
                if was_connected {
                    let op = DeviceOp::DeviceDisconnected {
                        device_id: att.session.device_id().to_owned(),
                        conn: att.conn.clone(),
                    };
                    if let Err(e) = self.device::<IgnoredAny>(&att, op).await {
                        worker::console_warn!("gateway: a disconnect was not recorded: {e}");
                    }
                }
                return Ok(());
            }
        }
        if let Err(e) = self.drive(ws, &mut att).await {
            // A device object call failed mid-event. The session cannot know what the device
            // was told, so end it cleanly (the device reconnects) rather than drift out of step.
            worker::console_error!("gateway: {e}; closing the session");
            att.session.close_by_hub("internal error");
            let _ = self.drive(ws, &mut att).await;
        }
        let rest = att.session.take_partial_input();
        if !rest.is_empty() {
            self.partial_input.borrow_mut().insert(att.conn.clone(), rest);
        }
        // A session that ended before any CONNECT (its timer, a bad packet) no longer waits;
        // one that sent CONNECT left the set then.
        if !was_connected && att.session.poll_timeout().is_none() {
            self.half_open.borrow_mut().done(&att.conn);
        }
        store_attachment(ws, &att)?;
        self.arm(att.session.poll_timeout()).await
    }

    /// Sends what the session wants sent and handles its events, until it wants nothing.
    async fn drive(&self, ws: &WebSocket, att: &mut Attachment) -> Result<()> {
        // An event read past the end of a telemetry batch, handled next.
        let mut deferred = None;
        loop {
            while let Some(bytes) = att.session.poll_transmit() {
                ws.send_with_bytes(bytes)?;
            }
            let Some(event) = deferred.take().or_else(|| att.session.poll_event()) else { return Ok(()) };
            let device_id = att.session.device_id().to_owned();
            match event {
                SessionEvent::Authenticate { device_id, username, token, clean_session, model_id } => {
                    // A whole CONNECT arrived: the socket no longer waits unauthenticated (the
                    // verification's own bound is `connects`), so no flood evicts it mid-check.
                    self.half_open.borrow_mut().done(&att.conn);
                    if att.tcp {
                        att.host = crate::auth::own_name_in_username(username.as_deref(), &self.env);
                    }
                    // Refused here, without waking the device's object: a token that cannot be
                    // right, or a CONNECT past the shard's rate.
                    let precheck = match token.as_deref() {
                        Some(t) => precheck_device_token(t, &att.host, &device_id, clock::now().as_secs()),
                        None => Err(twinhub_core::auth::AuthError::MissingToken),
                    };
                    if let Err(e) = precheck {
                        worker::console_log!("device CONNECT refused before verification: {e}");
                        att.session.authenticated(Err(ConnectReturnCode::NotAuthorized));
                        continue;
                    }
                    // Charged now, given back below if the CONNECT is refused: a forged token
                    // must not spend the hub's allowance of new connections.
                    if !self.connects.borrow_mut().try_take(clock::now())
                        || self.admit(Operation::NewConnection).is_err()
                    {
                        att.session.authenticated(Err(ConnectReturnCode::ServerUnavailable));
                        continue;
                    }
                    // Near the open-file limit a session would wake an object it has no file
                    // for: CONNACK 3, and the device retries later.
                    if let Some((refused, _)) = crate::headroom::shed(&self.env).await {
                        worker::console_warn!("device CONNECT refused: {}", refused.message);
                        self.refund(Operation::NewConnection);
                        att.session.authenticated(Err(ConnectReturnCode::ServerUnavailable));
                        continue;
                    }
                    // A device object holds storage once woken (workerd makes its database), so
                    // an id the fleet index does not hold is refused without waking it.
                    match self.device_exists(&device_id).await {
                        Ok(true) => {}
                        Ok(false) => {
                            self.refund(Operation::NewConnection);
                            att.session.authenticated(Err(ConnectReturnCode::NotAuthorized));
                            continue;
                        }
                        Err(e) => {
                            self.refund(Operation::NewConnection);
                            worker::console_warn!("gateway: fleet index unavailable for a CONNECT: {e}");
                            att.session.authenticated(Err(ConnectReturnCode::ServerUnavailable));
                            continue;
                        }
                    }
                    let op = DeviceOp::DeviceConnect {
                        device_id,
                        token,
                        host: att.host.clone(),
                        gateway: att.gateway.clone(),
                        conn: att.conn.clone(),
                        clean_session,
                        model_id,
                    };
                    // No verdict (the object failed or answered something else): unavailable, so
                    // the device retries rather than believing its credentials wrong.
                    let verdict = self.device::<ConnectVerdict>(att, op).await.ok();
                    let result = match verdict {
                        Some(ConnectVerdict::Accepted { expiry_ms, subscriptions }) => {
                            Ok(Accepted { token_expiry: Some(UnixMillis(expiry_ms)), subscriptions })
                        }
                        Some(ConnectVerdict::NotAuthorized) => Err(ConnectReturnCode::NotAuthorized),
                        None => Err(ConnectReturnCode::ServerUnavailable),
                    };
                    if result.is_err() {
                        self.refund(Operation::NewConnection);
                    }
                    att.session.authenticated(result);
                }
                SessionEvent::TwinGet { rid } => {
                    if let Err(body) = self.admit(Operation::TwinRead) {
                        att.session.reply_twin(&rid, 429, None, body.into_bytes());
                        continue;
                    }
                    let op = DeviceOp::DeviceTwinGet { device_id, conn: att.conn.clone() };
                    let Some(answer) = self.session_op::<Box<RawValue>>(att, op).await else { continue };
                    match answer {
                        Ok(twin) => att.session.reply_twin(&rid, 200, None, twin.get().as_bytes().to_vec()),
                        Err(e) => att.session.reply_twin(&rid, e.code.http_status(), None, flat(&e)),
                    }
                }
                SessionEvent::ReportedPatch { rid, body } => {
                    if let Err(body) = self.admit(Operation::TwinUpdate) {
                        att.session.reply_twin(&rid, 429, None, body.into_bytes());
                        continue;
                    }
                    let op = DeviceOp::DeviceReport { device_id, conn: att.conn.clone(), body };
                    let Some(answer) = self.session_op::<rpc::ReportAccepted>(att, op).await else { continue };
                    match answer {
                        Ok(accepted) => att.session.reply_twin(&rid, 204, Some(accepted.version), Vec::new()),
                        Err(e) => att.session.reply_twin(&rid, e.code.http_status(), None, flat(&e)),
                    }
                }
                SessionEvent::Telemetry { properties, body, ack } => {
                    // Consecutive messages go to the device object together.
                    let mut messages = vec![TelemetryMessage { properties, body }];
                    let mut acks: Vec<_> = ack.into_iter().collect();
                    loop {
                        match att.session.poll_event() {
                            Some(SessionEvent::Telemetry { properties, body, ack }) => {
                                messages.push(TelemetryMessage { properties, body });
                                acks.extend(ack);
                            }
                            other => {
                                deferred = other;
                                break;
                            }
                        }
                    }
                    if let Some(why) = self.shape_telemetry(&att.conn, &messages).await {
                        // Not stored, not acknowledged: the device resends after reconnecting.
                        att.session.close_by_hub(&why);
                        continue;
                    }
                    let batch = DeviceBatch { key: device_id.clone(), messages: messages.clone() };
                    let op = DeviceOp::DeviceTelemetry { device_id, conn: att.conn.clone(), messages };
                    let Some(stored) = self.session_op::<()>(att, op).await else { continue };
                    // Into the event stream once stored and before the device hears its message
                    // was taken: an acknowledged message is readable by the endpoint's consumers.
                    // A failed append is not acknowledged; the device resends, and the stream
                    // may then hold the message twice (Event Hubs is at least once too).
                    let streamed = stored.is_ok() && {
                        match self.appender.append(&self.env, batch).await {
                            Ok(()) => true,
                            Err(e) => {
                                worker::console_warn!("telemetry not in the event stream: {e}");
                                false
                            }
                        }
                    };
                    // Acknowledge only what was stored; otherwise the device retries.
                    if streamed {
                        for id in acks {
                            att.session.ack(id);
                        }
                    }
                }
                SessionEvent::MethodResponse { rid, status, body } => self.answer(&rid, Some((status, body))),
                SessionEvent::CloudToDeviceAck(packet_id) | SessionEvent::CloudToDeviceRejected(packet_id) => {
                    let rejected = matches!(event, SessionEvent::CloudToDeviceRejected(_));
                    if let Some(seq) = att.c2d.acknowledged(packet_id.get()) {
                        let op = DeviceOp::CloudToDeviceDelivered { device_id, conn: att.conn.clone(), seq, rejected };
                        if let Some(Err(e)) = self.session_op::<IgnoredAny>(att, op).await {
                            worker::console_warn!("gateway: a delivery was not recorded: {e}");
                        }
                    }
                }
                SessionEvent::SubscriptionsChanged { subscriptions, keep } => {
                    let op = DeviceOp::DeviceSubscriptions { device_id, conn: att.conn.clone(), subscriptions, keep };
                    if let Err(e) = self.device::<IgnoredAny>(att, op).await {
                        worker::console_warn!("gateway: subscriptions not recorded: {e}");
                    }
                }
                SessionEvent::Closed(reason) => {
                    self.device_rates.borrow_mut().remove(&att.conn);
                    while let Some(bytes) = att.session.poll_transmit() {
                        ws.send_with_bytes(bytes)?;
                    }
                    let _ = ws.close(Some(close_code(&reason)), Some(format!("{reason:?}")));
                    if !device_id.is_empty() && !matches!(reason, CloseReason::Refused(_)) {
                        let op = DeviceOp::DeviceDisconnected { device_id, conn: att.conn.clone() };
                        if let Err(e) = self.device::<IgnoredAny>(att, op).await {
                            worker::console_warn!("gateway: a disconnect was not recorded: {e}");
                        }
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Invokes a direct method on connection `conn` and waits for the answer (spec §3.5):
    /// 200 `{"status", "payload"}`, 404103 when the device does not listen for methods, 504101
    /// when it does not answer within `timeout_ms`.
    async fn invoke(&self, conn: &str, name: String, payload: String, timeout_ms: u64) -> ApiResult {
        let offline = || {
            HubError::new(
                ErrorCode::DeviceNotOnline,
                "The operation failed because the requested device isn't online or hasn't registered the direct method callback.",
            )
        };
        let Some(ws) = self.state.get_websockets_with_tag(conn).into_iter().next() else {
            return Err(offline().into());
        };
        let rid: String = clock::random_hex::<8>()?;
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(rid.clone(), tx);
        self.deliver(&ws, conn, Input::Method { name, rid: rid.clone(), payload }).await;
        let timeout = Delay::from(std::time::Duration::from_millis(timeout_ms));
        let answer = match select(rx, timeout).await {
            Either::Left((Ok(answer), _)) => answer,
            Either::Left((Err(_), _)) | Either::Right(_) => {
                self.waiters.borrow_mut().remove(&rid);
                return Err(HubError::new(
                    ErrorCode::GatewayTimeout,
                    format!("the device did not answer within {timeout_ms} ms"),
                )
                .into());
            }
        };
        let Some((status, body)) = answer else { return Err(offline().into()) };
        // The device's payload is JSON (or nothing); anything else is passed on as a string.
        let text = String::from_utf8_lossy(&body).into_owned();
        let payload = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(http::json(200, &serde_json::json!({ "status": status, "payload": payload }), None)?)
    }

    /// Completes a waiting method call.
    fn answer(&self, rid: &str, answer: Option<MethodAnswer>) {
        if let Some(tx) = self.waiters.borrow_mut().remove(rid) {
            let _ = tx.send(answer);
        }
    }

    /// This shard's throttles (made on first use: the tier and shard count are settings).
    fn with_throttles<R>(&self, f: impl FnOnce(&mut Throttles) -> R) -> R {
        let now = clock::now();
        let mut slot = self.throttles.borrow_mut();
        let throttles = slot.get_or_insert_with(|| {
            let config = Config::of(&self.env);
            let shards = f64::from(config.gateway_shards);
            // What the REST API does not hold, split over the shards.
            let share = move |op: Operation| match op {
                Operation::TwinRead | Operation::TwinUpdate => (1.0 - crate::limits::rest_share(op)) / shards,
                _ => 1.0 / shards,
            };
            Throttles::with_shares(config.tier, share, now)
        });
        f(throttles)
    }

    /// One `op` under this shard's share of the hub's tier, or the flat error body of the 429
    /// (what an MQTT twin response carries).
    fn admit(&self, op: Operation) -> std::result::Result<(), String> {
        let now = clock::now();
        self.with_throttles(|t| {
            t.admit(op, now).map_err(|refused| {
                HubError::new(ErrorCode::ThrottlingException, refused.message(t.tier()))
                    .flat(&clock::tracking_id(), now)
            })
        })
    }

    /// Gives back one `op` admitted for work that did not happen.
    fn refund(&self, op: Operation) {
        self.with_throttles(|t| t.refund(op));
    }

    /// Telemetry from one connection, before it is stored: waits while the device sends
    /// faster than its own rate (so a noisy device slows itself, not its neighbours), then
    /// counts the messages against the tier's rate and daily quota. `Some(reason)` when the
    /// tier refuses them (the session then ends, as IoT Hub ends a throttled one).
    async fn shape_telemetry(&self, conn: &str, messages: &[TelemetryMessage]) -> Option<String> {
        let now = clock::now();
        let wait = {
            let rate = Config::of(&self.env).device_messages_per_second as f64;
            let mut rates = self.device_rates.borrow_mut();
            let bucket = rates.entry(conn.to_owned()).or_insert_with(|| TokenBucket::new(rate, rate, now));
            bucket.reserve(messages.len() as f64, now)
        };
        // The tier's rate: a burst is queued up to MAX_SHAPING_MS, as IoT Hub traffic-shapes
        // before it refuses; past that the session ends.
        let n = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        let shaped = self.with_throttles(|t| {
            t.shape(Operation::DeviceToCloud, n, now, MAX_SHAPING_MS).map_err(|refused| refused.message(t.tier()))
        });
        let tier_wait = match shaped {
            Ok(wait) => wait,
            Err(why) => {
                worker::console_log!("telemetry throttled: {why}");
                return Some("throttled: the hub's tier allows no more device-to-cloud sends now (429001)".into());
            }
        };
        let wait = wait.max(tier_wait);
        if wait > 0 {
            Delay::from(std::time::Duration::from_millis(wait)).await;
        }
        let within_quota = self.with_throttles(|t| t.count_messages(messages.iter().map(|m| m.body.len()), now));
        (!within_quota).then(|| "the hub's daily message quota is used up (403002 IotHubQuotaExceeded)".to_owned())
    }

    /// Whether the fleet index holds `device_id` as an existing device. The index is pushed
    /// every commit before the client hears of it, so a device just created is there; one
    /// whose push failed is refused until the device object's retry (1 s) lands.
    async fn device_exists(&self, device_id: &str) -> Result<bool> {
        let shard = twinhub_core::fleet::shard_of(device_id, Config::of(&self.env).index_shards);
        let op = IndexOp::Exists { device_id: device_id.to_owned() };
        Ok(ask_index_shard::<Existence>(&self.env, shard, &op).await?.exists)
    }

    /// Calls the session's device object with an op of a connected session: its reply, or its
    /// error; `None` (and the session closed) when the device object says this session is no
    /// longer the device's.
    async fn session_op<R: serde::de::DeserializeOwned>(
        &self,
        att: &mut Attachment,
        op: DeviceOp,
    ) -> Option<std::result::Result<R, HubError>> {
        match self.device(att, op).await {
            Err(e) if e.code == ErrorCode::SessionEnded => {
                att.session.close_by_hub("the device was deleted, disabled, re-keyed or connected elsewhere");
                None
            }
            answer => Some(answer),
        }
    }

    /// Calls the session's device object.
    async fn device<R: serde::de::DeserializeOwned>(
        &self,
        att: &Attachment,
        op: DeviceOp,
    ) -> std::result::Result<R, HubError> {
        let stub = crate::objects::device_stub(&self.env, att.session.device_id()).map_err(rpc::unreachable)?;
        rpc::call(&stub, &op).await
    }

    /// Makes sure the shard's alarm fires no later than `deadline`. Only moves the alarm
    /// earlier, so handling one message costs one alarm read, not a scan of every socket; an
    /// alarm that fires early is harmless (sessions ignore spurious timeouts) and re-arms from every session.
    async fn arm(&self, deadline: Option<UnixMillis>) -> Result<()> {
        let Some(t) = deadline else { return Ok(()) };
        let storage = self.state.storage();
        let at = i64::try_from(t.0).unwrap_or(i64::MAX);
        match storage.get_alarm().await? {
            Some(current) if current <= at => Ok(()),
            _ => storage.set_alarm(delay_until(t)).await,
        }
    }

    /// Sets the shard's alarm to the earliest timer of its sessions (after an alarm fired).
    async fn rearm(&self) -> Result<()> {
        let earliest = self
            .state
            .get_websockets()
            .iter()
            .filter_map(|ws| ws.deserialize_attachment::<Attachment>().ok().flatten())
            .filter_map(|a| a.session.poll_timeout())
            .min();
        if let Some(t) = earliest {
            self.state.storage().set_alarm(delay_until(t)).await?;
        }
        Ok(())
    }
}

/// Milliseconds from now until `t`, at least 1 (alarms take a delay).
fn delay_until(t: UnixMillis) -> i64 {
    i64::try_from(t.0.saturating_sub(clock::now().0)).unwrap_or(i64::MAX).max(1)
}

fn conn_of(ws: &WebSocket) -> Option<String> {
    ws.deserialize_attachment::<Attachment>().ok().flatten().map(|a| a.conn)
}

/// The MQTT twin error body: IoT Hub's flat error (envelope 3).
fn flat(e: &HubError) -> Vec<u8> {
    e.flat(&clock::tracking_id(), clock::now()).into_bytes()
}

/// WebSocket close codes: 1000 for a clean end, 1008 (policy) for refusals and violations.
fn close_code(reason: &CloseReason) -> u16 {
    match reason {
        CloseReason::ClientDisconnect => 1000,
        _ => 1008,
    }
}

/// Stores a session in its socket's attachment. Should it ever be larger than Cloudflare keeps
/// (its fields are bounded, see [`Attachment`]; this is the check that the bounds hold), the
/// session is ended here rather than lost at the next hibernation.
fn store_attachment(ws: &WebSocket, att: &Attachment) -> Result<()> {
    let size = serde_json::to_vec(att).map_or(usize::MAX, |json| json.len());
    if size > MAX_ATTACHMENT_BYTES {
        worker::console_error!("gateway: a session's attachment would be {size} bytes; closing it");
        let _ = ws.close(Some(1011), Some("session state too large"));
        return Ok(());
    }
    ws.serialize_attachment(att)
}
