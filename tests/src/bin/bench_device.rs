//! Device endpoint figures, with plain MQTT brokers as baselines in the same run.
//!
//! `cargo run --release -p twinhub-e2e --bin bench-device [devices] [sessions]`
//! (`scripts/bench-device.sh` installs rumqttd and mosquitto first; `BENCH_RUNTIMES=workerd`
//! or `=wrangler` measures one runtime.)
//!
//! A native load generator: tokio-tungstenite sockets (or MQTT over TLS, tokio-rustls), each
//! driven by core's [`DeviceClient`], the device role of the same session the hub serves.
//! Against twinhub (release build) on each runtime and transport in one run (workerd directly
//! over WebSocket and over MQTT/TLS on its 8883 listener; `wrangler dev` over WebSocket, as it
//! takes no TCP) it measures:
//! 1. desired patch latency: `PATCH /twins/{id}` (REST) until the device holds the patch, one at
//!    a time over `devices` connected devices (latency without queueing);
//! 2. reported patch round trip (publish to `204`) from 100 devices in closed loops, and
//!    telemetry ingest: QoS 1 messages acknowledged (PUBACK is sent only once the message is
//!    stored) per second, 100 devices with 8 in flight each;
//! 3. concurrent sessions: `sessions` devices connected and subscribed, resident memory of the
//!    hub's processes before and after, and a sample of them still answering.
//!
//! The same loads run against rumqttd (MQTT over WebSocket) and mosquitto (TCP, Debian's build
//! has no WebSocket): publish -> subscriber latency with the same subscriber count and payload,
//! publish -> own subscription round trip, QoS 1 publish -> PUBACK rate, and sessions held.
//! The brokers persist nothing; twinhub commits every change to SQLite before acknowledging.
//!
//! `BENCH_FAIRNESS=1` measures instead what one noisy device does to its neighbours: the
//! reported-patch round trips of 100 devices, quiet and then while one more device floods
//! telemetry (64 QoS 1 messages in flight, resent as each is acknowledged), on a hub with the
//! default per-device rate and on one without it (`DEVICE_MESSAGES_PER_SECOND=1000000`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
use twinhub_core::mqtt::{self, Connect, Packet, PacketId, Publish, QoS, Subscribe};
use twinhub_core::session::client::{ClientEvent, ClientOptions, DeviceClient};
use twinhub_core::session::topic::Subscription;
use twinhub_core::UnixMillis;
use twinhub_e2e::{free_port, now_secs, tls_client_config, Hub, Storage};

/// Every bench device shares this key, so tokens need no registry read.
const DEVICE_KEY: &str = "YmVuY2gtZGV2aWNlLWtleS1mb3ItdHdpbmh1Yi0wMDA=";
const LATENCY_SAMPLES: usize = 500;
const LOOP_CLIENTS: usize = 100;
const TELEMETRY_WINDOW: usize = 8;
const LOAD_SECONDS: u64 = 10;
/// The next desired patch's `seq`: unique in the run, since a patch equal to what a twin holds
/// already changes nothing and is pushed to no one (each target reuses the same devices).
static SAMPLE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1_000_000);

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let devices = args.next().unwrap_or(1_000);
    let sessions = args.next().unwrap_or(10_000).max(devices);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut rows: Vec<Row> = Vec::new();
    // BENCH_FAIRNESS=1: only the per-device fairness figure (issue 16).
    if std::env::var_os("BENCH_FAIRNESS").is_some() {
        return fairness(&runtime);
    }
    let runtimes = std::env::var("BENCH_RUNTIMES").unwrap_or_else(|_| "workerd,wrangler".into());
    // BENCH_SESSIONS_ONLY=1 skips to the sessions phase.
    let sessions_only = std::env::var_os("BENCH_SESSIONS_ONLY").is_some();
    // GATEWAY_SHARDS passes through, to see how sessions spread over gateway objects.
    let shards = std::env::var("GATEWAY_SHARDS").unwrap_or_else(|_| "2".into());
    // BENCH_VARIANTS="EVENTHUB_PARTITIONS=0;EVENTHUB_PARTITIONS=4": each runtime once per
    // setting, in the same run (the baseline first), each on a fresh state.
    let variants = std::env::var("BENCH_VARIANTS").unwrap_or_default();
    let variants: Vec<&str> = if variants.is_empty() { vec![""] } else { variants.split(';').collect() };
    let runs = runtimes.split(',').flat_map(|r| variants.iter().map(move |v| (r, *v)));

    for (runtime_name, variant) in runs {
        let mut vars = vec![("GATEWAY_SHARDS", shards.as_str())];
        if let Some((name, value)) = variant.split_once('=') {
            vars.push((name, value));
        }
        let storage = Storage::new(&format!("bench-device-{runtime_name}"));
        // workerd: WebSocket over http, then MQTT over TLS on a second start over the same
        // state (the 8883 listener needs https). wrangler dev takes WebSockets only.
        // BENCH_TRANSPORTS=websocket or =tcp measures one of workerd's.
        let wanted = std::env::var("BENCH_TRANSPORTS").unwrap_or_else(|_| "websocket,tcp".into());
        let transports: Vec<bool> = [false, true]
            .into_iter()
            .filter(|&tcp| runtime_name != "wrangler" || !tcp)
            .filter(|&tcp| wanted.split(',').any(|w| w == if tcp { "tcp" } else { "websocket" }))
            .collect();
        for (round, &mqtts) in transports.iter().enumerate() {
            let hub = match (runtime_name, mqtts) {
                ("wrangler", _) => Hub::launch_wrangler(&storage, false, None, &vars),
                (_, https) => Hub::launch_workerd_with(&storage, https, None, &vars),
            };
            if round == 0 {
                eprintln!("creating {sessions} devices");
                create_devices(&hub, sessions);
            }
            let target = Target::twinhub(&hub, runtime_name, variant);
            if !sessions_only {
                rows.extend(desired_latency(&hub, &target, &Fleet::connect(&runtime, &target, devices, "patch")));
                rows.extend(loops(&runtime, &target));
            }
            let group = hub.process_group();
            rows.push(sessions_held(&runtime, &target, sessions, || group_usage(group), Some(&hub)));
            hub.stop();
        }
    }

    // rumqttd over WebSocket, then mosquitto over TCP.
    // Started one at a time, and only when measured (each is stopped when dropped).
    let brokers: [fn() -> Option<Broker>; 2] = [Broker::rumqttd, Broker::mosquitto];
    for start in brokers.into_iter().filter(|_| !sessions_only) {
        let Some(broker) = start() else { continue };
        let target = broker.target();
        rows.push(broker_latency(&runtime, &target, &Fleet::connect(&runtime, &target, devices, "sub")));
        rows.extend(loops(&runtime, &target));
        let pid = broker.child.id();
        rows.push(sessions_held(&runtime, &target, sessions, || process_usage(pid), None));
    }

    print_table(&rows, devices, sessions);
}

/// One line of the results table.
struct Row {
    target: String,
    load: &'static str,
    count: usize,
    errors: usize,
    per_sec: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    note: String,
    /// Sessions rows: resident memory added per session.
    kib_per_session: f64,
}

// ---------------------------------------------------------------------------------------------
// Targets and their sockets

#[derive(Clone)]
enum Target {
    /// twinhub on `runtime` ("workerd" or "wrangler dev"): MQTT over WebSocket on `port`, or,
    /// with `mqtts`, MQTT over TLS on that port, trusting the test CA.
    Twinhub {
        port: u16,
        host: String,
        runtime: String,
        mqtts: Option<(u16, TlsConnector)>,
    },
    Rumqttd {
        port: u16,
    },
    Mosquitto {
        port: u16,
    },
}

impl Target {
    /// The hub under `runtime`; `variant` names the settings it runs with, if any.
    fn twinhub(hub: &Hub, runtime: &str, variant: &str) -> Self {
        let name = if runtime == "wrangler" { "wrangler dev" } else { "workerd" };
        let runtime = if variant.is_empty() { name.to_owned() } else { format!("{name}, {variant}") };
        let mqtts = hub.mqtt_port().map(|port| (port, TlsConnector::from(tls_client_config())));
        Self::Twinhub { port: hub.port(), host: hub.host(), runtime, mqtts }
    }

    fn name(&self) -> String {
        match self {
            Self::Twinhub { runtime, mqtts: None, .. } => format!("twinhub ({runtime}, WebSocket)"),
            Self::Twinhub { runtime, mqtts: Some(_), .. } => format!("twinhub ({runtime}, MQTT over TLS)"),
            Self::Rumqttd { .. } => "rumqttd (WebSocket)".into(),
            Self::Mosquitto { .. } => "mosquitto (TCP)".into(),
        }
    }
}

/// A byte stream: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A socket carrying MQTT bytes: WebSocket binary frames, or a TCP (or TLS) stream.
enum Wire {
    Ws(Box<tokio_tungstenite::WebSocketStream<Box<dyn Io>>>),
    Tcp(Box<dyn Io>, Vec<u8>),
}

async fn tcp(port: u16) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

impl Wire {
    async fn open(target: &Target) -> Result<Self, String> {
        let (port, path) = match target {
            Target::Twinhub { mqtts: Some((port, connector)), .. } => {
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name");
                let stream = connector.connect(name, tcp(*port).await?).await.map_err(|e| e.to_string())?;
                return Ok(Self::Tcp(Box::new(stream), vec![0; 4096]));
            }
            Target::Twinhub { port, .. } => (*port, "/$iothub/websocket"),
            Target::Rumqttd { port } => (*port, "/mqtt"),
            Target::Mosquitto { port } => return Ok(Self::Tcp(Box::new(tcp(*port).await?), vec![0; 4096])),
        };
        let mut request = format!("ws://127.0.0.1:{port}{path}").into_client_request().map_err(|e| e.to_string())?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
        let stream: Box<dyn Io> = Box::new(tcp(port).await?);
        let (socket, _) = tokio_tungstenite::client_async(request, stream).await.map_err(|e| e.to_string())?;
        Ok(Self::Ws(Box::new(socket)))
    }

    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        match self {
            Self::Ws(ws) => ws.send(Message::Binary(bytes.into())).await.map_err(|e| e.to_string()),
            Self::Tcp(tcp, _) => tcp.write_all(&bytes).await.map_err(|e| e.to_string()),
        }
    }

    /// The next bytes; `None` once the peer closed. Cancel-safe, for `select!`.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        match self {
            Self::Ws(ws) => loop {
                match ws.next().await? {
                    Ok(Message::Binary(b)) => return Some(b.to_vec()),
                    Ok(Message::Close(_)) | Err(_) => return None,
                    Ok(_) => continue,
                }
            },
            Self::Tcp(tcp, buf) => match tcp.read(buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(buf[..n].to_vec()),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One connection: a device (twinhub) or a plain MQTT client (brokers), in its own task

/// What the coordinator asks a connection to do.
enum Order {
    /// twinhub: a reported patch. Brokers: a QoS 0 publish to the connection's own topic.
    Echo(Vec<u8>),
    /// Telemetry at QoS 1 (brokers: a QoS 1 publish to `bench/telemetry`).
    Telemetry(Vec<u8>),
    /// Brokers: publish `body` to `topic` at QoS 0 (the latency publisher).
    Publish { topic: String, body: Vec<u8> },
}

/// What a connection tells the coordinator.
#[derive(Debug)]
enum Note {
    Connected,
    /// A desired patch (twinhub) or a message on the connection's topic (brokers).
    Received(Vec<u8>),
    /// A reported patch answered (twinhub) or own publish received back (brokers).
    Echoed {
        ok: bool,
    },
    /// A QoS 1 telemetry message acknowledged.
    Acked,
    Closed(String),
}

type Notes = std_mpsc::Sender<(usize, Instant, Note)>;

/// The protocol state of one connection.
enum Peer {
    Device(DeviceClient, HashSet<String>),
    Plain { index: usize, pending: Vec<u8>, out: Vec<Vec<u8>>, next_id: u16, connected: bool },
}

fn unix_now() -> UnixMillis {
    UnixMillis(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
}

impl Peer {
    fn new(target: &Target, index: usize, prefix: &str) -> Self {
        match target {
            Target::Twinhub { host, .. } => {
                let device_id = format!("{prefix}-{index}");
                let token = twinhub_core::auth::sign(
                    &format!("{host}/devices/{device_id}"),
                    DEVICE_KEY,
                    None,
                    now_secs() + 7200,
                )
                .unwrap();
                let options =
                    ClientOptions { device_id, host: host.clone(), token, keep_alive_secs: 60, clean_session: true };
                let mut client = DeviceClient::new(options);
                client.connect(unix_now(), None);
                Self::Device(client, HashSet::new())
            }
            _ => {
                let connect = Packet::Connect(Connect {
                    client_id: format!("{prefix}-{index}"),
                    clean_session: true,
                    keep_alive: 60,
                    username: None,
                    password: None,
                    will: None,
                });
                Self::Plain {
                    index,
                    pending: Vec::new(),
                    out: vec![connect.to_bytes().unwrap()],
                    next_id: 1,
                    connected: false,
                }
            }
        }
    }

    fn command(&mut self, command: Order) {
        let now = unix_now();
        match (self, command) {
            (Self::Device(client, outstanding), Order::Echo(body)) => {
                outstanding.insert(client.report(now, body));
            }
            (Self::Device(client, _), Order::Telemetry(body)) => {
                client.send_telemetry(now, &[], body, QoS::AtLeastOnce);
            }
            (Self::Device(..), Order::Publish { .. }) => {}
            (Self::Plain { index, out, .. }, Order::Echo(body)) => {
                out.push(publish(format!("bench/echo/{index}"), body, None));
            }
            (Self::Plain { out, next_id, .. }, Order::Telemetry(body)) => {
                let id = PacketId::new(*next_id).unwrap_or(PacketId::MIN);
                *next_id = next_id.checked_add(1).unwrap_or(1);
                out.push(publish("bench/telemetry".into(), body, Some(id)));
            }
            (Self::Plain { out, .. }, Order::Publish { topic, body }) => out.push(publish(topic, body, None)),
        }
    }

    /// Feeds bytes from the socket; returns what to tell the coordinator.
    fn bytes(&mut self, bytes: &[u8], notes: &mut Vec<Note>) {
        match self {
            Self::Device(client, outstanding) => {
                let now = unix_now();
                client.handle_bytes(now, bytes);
                while let Some(event) = client.poll_event() {
                    match event {
                        ClientEvent::Connected { .. } => {
                            client.subscribe(now, &[Subscription::TwinResponses, Subscription::DesiredPatches]);
                        }
                        ClientEvent::Subscribed(_) => notes.push(Note::Connected),
                        ClientEvent::DesiredPatch { body, .. } => notes.push(Note::Received(body)),
                        ClientEvent::TwinResponse { rid, status, .. } if outstanding.remove(&rid) => {
                            notes.push(Note::Echoed { ok: status == 204 })
                        }
                        ClientEvent::TelemetryAcked(_) => notes.push(Note::Acked),
                        ClientEvent::Closed(why) => notes.push(Note::Closed(format!("{why:?}"))),
                        _ => {}
                    }
                }
            }
            Self::Plain { index, pending, out, connected, .. } => {
                pending.extend_from_slice(bytes);
                while let Ok(Some((packet, used))) = mqtt::decode(pending, usize::MAX) {
                    pending.drain(..used);
                    match packet {
                        Packet::ConnAck(_) if !*connected => {
                            *connected = true;
                            let filters = vec![
                                (format!("bench/sub/{index}"), QoS::AtMostOnce),
                                (format!("bench/echo/{index}"), QoS::AtMostOnce),
                            ];
                            out.push(
                                Packet::Subscribe(Subscribe { packet_id: PacketId::MIN, filters }).to_bytes().unwrap(),
                            );
                        }
                        Packet::SubAck { .. } => notes.push(Note::Connected),
                        Packet::Publish(p) if p.topic.starts_with("bench/echo/") => {
                            notes.push(Note::Echoed { ok: true })
                        }
                        Packet::Publish(p) => notes.push(Note::Received(p.payload)),
                        Packet::PubAck(_) => notes.push(Note::Acked),
                        _ => {}
                    }
                }
            }
        }
    }

    fn transmit(&mut self) -> Vec<Vec<u8>> {
        match self {
            Self::Device(client, _) => std::iter::from_fn(|| client.poll_transmit()).collect(),
            Self::Plain { out, .. } => std::mem::take(out),
        }
    }

    fn timeout(&mut self) -> Option<Duration> {
        match self {
            Self::Device(client, _) => {
                let now = unix_now();
                client.handle_timeout(now);
                client.poll_timeout().map(|t| Duration::from_millis(t.0.saturating_sub(now.0)))
            }
            Self::Plain { .. } => None,
        }
    }
}

fn publish(topic: String, payload: Vec<u8>, packet_id: Option<PacketId>) -> Vec<u8> {
    let qos = if packet_id.is_some() { QoS::AtLeastOnce } else { QoS::AtMostOnce };
    Packet::Publish(Publish { dup: false, qos, retain: false, topic, packet_id, payload }).to_bytes().unwrap()
}

async fn run_connection(
    target: Target,
    index: usize,
    prefix: String,
    mut commands: mpsc::UnboundedReceiver<Order>,
    notes: Notes,
) {
    let mut wire = match Wire::open(&target).await {
        Ok(w) => w,
        Err(e) => {
            let _ = notes.send((index, Instant::now(), Note::Closed(e)));
            return;
        }
    };
    let mut peer = Peer::new(&target, index, &prefix);
    let mut found = Vec::new();
    loop {
        // Timers first: what a timeout queues (a PINGREQ) goes out before the next wait.
        let wait = peer.timeout().unwrap_or(Duration::from_secs(3600));
        for bytes in peer.transmit() {
            if wire.send(bytes).await.is_err() {
                let _ = notes.send((index, Instant::now(), Note::Closed("send failed".into())));
                return;
            }
        }
        let at = Instant::now();
        for note in found.drain(..) {
            let closed = matches!(note, Note::Closed(_));
            let _ = notes.send((index, at, note));
            if closed {
                return;
            }
        }
        tokio::select! {
            bytes = wire.recv() => match bytes {
                Some(b) => peer.bytes(&b, &mut found),
                None => {
                    let _ = notes.send((index, Instant::now(), Note::Closed("closed by the server".into())));
                    return;
                }
            },
            command = commands.recv() => match command {
                Some(c) => peer.command(c),
                None => return,
            },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A set of connections, each ready (connected and subscribed).
struct Fleet {
    commands: Vec<mpsc::UnboundedSender<Order>>,
    notes: std_mpsc::Receiver<(usize, Instant, Note)>,
    failed: usize,
    connect_secs: f64,
}

impl Fleet {
    fn connect(runtime: &tokio::runtime::Runtime, target: &Target, count: usize, prefix: &str) -> Self {
        let (notes_tx, notes) = std_mpsc::channel();
        let mut commands = Vec::with_capacity(count);
        let started = Instant::now();
        let mut ready = 0;
        let mut failed = 0;
        // At most 200 handshakes in flight, as a fleet reconnecting after an outage would pace itself.
        for index in 0..count {
            let (tx, rx) = mpsc::unbounded_channel();
            commands.push(tx);
            runtime.spawn(run_connection(target.clone(), index, prefix.to_owned(), rx, notes_tx.clone()));
            while index + 1 - ready - failed > 200 {
                match notes.recv_timeout(Duration::from_secs(30)) {
                    Ok((_, _, Note::Connected)) => ready += 1,
                    Ok((i, _, Note::Closed(why))) => {
                        if failed == 0 {
                            eprintln!("first connection failure (#{i}): {why}");
                        }
                        failed += 1
                    }
                    Err(_) => failed += 1,
                    Ok(_) => {}
                }
            }
        }
        while ready + failed < count {
            match notes.recv_timeout(Duration::from_secs(30)) {
                Ok((_, _, Note::Connected)) => ready += 1,
                Ok((_, _, Note::Closed(why))) => {
                    if failed == 0 {
                        eprintln!("first connection failure: {why}");
                    }
                    failed += 1
                }
                Err(_) => failed += count - ready - failed,
                Ok(_) => {}
            }
        }
        let connect_secs = started.elapsed().as_secs_f64();
        eprintln!("{}: {ready} connected, {failed} failed in {connect_secs:.1} s", target.name());
        Self { commands, notes, failed, connect_secs }
    }

    fn send(&self, index: usize, command: Order) {
        let _ = self.commands[index].send(command);
    }
}

// ---------------------------------------------------------------------------------------------
// Loads

fn seq_of(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["seq"].as_u64()
}

fn wait_for_seq(fleet: &Fleet, seq: u64) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match fleet.notes.recv_timeout(left) {
            Ok((_, at, Note::Received(body))) if seq_of(&body) == Some(seq) => return Some(at),
            Ok((i, _, Note::Closed(why))) => eprintln!("connection {i} closed: {why}"),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// The desired-patch latency, and beside it how long the same PATCHes took to be answered:
/// the share of the device's wait that is the REST write (token check, merge, commit) before
/// the push, which a relaying broker does not have.
fn desired_latency(hub: &Hub, target: &Target, fleet: &Fleet) -> [Row; 2] {
    let devices = fleet.commands.len();
    let mut samples = Vec::new();
    let mut answered = Vec::new();
    let mut errors = 0;
    for sample in 0..LATENCY_SAMPLES {
        let device = (sample * 7919) % devices;
        let seq = SAMPLE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = format!(r#"{{"properties":{{"desired":{{"telemetryInterval":5,"seq":{seq}}}}}}}"#);
        let token = hub.owner_token();
        let started = Instant::now();
        let reply = hub.call_with(
            "PATCH",
            &format!("/twins/patch-{device}"),
            Some(&body),
            &[("Authorization", &token), ("If-Match", "*")],
        );
        if reply.status != 200 {
            errors += 1;
            continue;
        }
        answered.push(started.elapsed());
        match wait_for_seq(fleet, seq) {
            Some(at) => samples.push(at.duration_since(started)),
            None => errors += 1,
        }
    }
    [
        latency_row(target.name(), "desired PATCH (REST) -> device", samples, errors, fleet),
        latency_row(target.name(), "desired PATCH (REST) -> 200", answered, errors, fleet),
    ]
}

fn broker_latency(runtime: &tokio::runtime::Runtime, target: &Target, fleet: &Fleet) -> Row {
    let publisher = Fleet::connect(runtime, target, 1, "pub");
    let devices = fleet.commands.len();
    let mut samples = Vec::new();
    let mut errors = 0;
    for seq in 0..LATENCY_SAMPLES as u64 {
        let device = (seq as usize * 7919) % devices;
        // The bytes a twinhub device receives for the same patch.
        let body = format!(r#"{{"telemetryInterval":5,"seq":{seq},"$version":{}}}"#, seq + 2).into_bytes();
        let started = Instant::now();
        publisher.send(0, Order::Publish { topic: format!("bench/sub/{device}"), body });
        match wait_for_seq(fleet, seq) {
            Some(at) => samples.push(at.duration_since(started)),
            None => errors += 1,
        }
    }
    latency_row(target.name(), "publish -> subscriber", samples, errors, fleet)
}

fn latency_row(target: String, load: &'static str, mut samples: Vec<Duration>, errors: usize, fleet: &Fleet) -> Row {
    samples.sort();
    Row {
        kib_per_session: 0.0,
        target,
        load,
        count: samples.len(),
        errors,
        per_sec: None,
        p50_ms: percentile(&samples, 0.50),
        p99_ms: percentile(&samples, 0.99),
        note: format!(
            "{} subscribers ({} failed to connect, {:.1} s to connect)",
            fleet.commands.len(),
            fleet.failed,
            fleet.connect_secs
        ),
    }
}

/// The closed-loop loads: reported patch round trips, then telemetry ingest.
fn loops(runtime: &tokio::runtime::Runtime, target: &Target) -> Vec<Row> {
    let fleet = Fleet::connect(runtime, target, LOOP_CLIENTS, "patch");

    // Round trips: each client keeps one reported patch outstanding.
    let began = Instant::now();
    let (samples, errors, _) = echo_loop(&fleet, None);
    let elapsed = began.elapsed().as_secs_f64();
    let (load, note) = match target {
        Target::Twinhub { .. } => ("reported patch -> 204", "committed to SQLite before the answer"),
        _ => ("publish -> own subscription", "relayed, not stored"),
    };
    let round_trips = Row {
        kib_per_session: 0.0,
        target: target.name(),
        load,
        count: samples.len(),
        errors,
        per_sec: Some(samples.len() as f64 / elapsed),
        p50_ms: percentile(&samples, 0.50),
        p99_ms: percentile(&samples, 0.99),
        note: format!("{LOOP_CLIENTS} clients, closed loop, {LOAD_SECONDS} s; {note}"),
    };

    // Telemetry: each client keeps a window of QoS 1 messages in flight.
    let body =
        |i: usize| format!(r#"{{"temperature":{},"humidity":41.2,"timestamp":"2026-11-26T10:00:00Z"}}"#, 20 + i % 10);
    for i in 0..LOOP_CLIENTS {
        for _ in 0..TELEMETRY_WINDOW {
            fleet.send(i, Order::Telemetry(body(i).into_bytes()));
        }
    }
    let began = Instant::now();
    let end = began + Duration::from_secs(LOAD_SECONDS);
    let (mut acked, mut errors) = (0usize, 0usize);
    let mut outstanding = LOOP_CLIENTS * TELEMETRY_WINDOW;
    while outstanding > 0 {
        match fleet.notes.recv_timeout(Duration::from_secs(10)) {
            Ok((i, at, Note::Acked)) => {
                acked += 1;
                if at < end {
                    fleet.send(i, Order::Telemetry(body(i).into_bytes()));
                } else {
                    outstanding -= 1;
                }
            }
            Ok((_, _, Note::Closed(_))) => {
                errors += TELEMETRY_WINDOW;
                outstanding = outstanding.saturating_sub(TELEMETRY_WINDOW);
            }
            Ok(_) => {}
            Err(_) => {
                errors += outstanding;
                break;
            }
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    let note = match target {
        Target::Twinhub { .. } => "PUBACK after the message is stored",
        _ => "PUBACK on receipt, no subscriber",
    };
    let ingest = Row {
        kib_per_session: 0.0,
        target: target.name(),
        load: "telemetry QoS 1 -> PUBACK",
        count: acked,
        errors,
        per_sec: Some(acked as f64 / elapsed),
        p50_ms: None,
        p99_ms: None,
        note: format!("{LOOP_CLIENTS} clients x {TELEMETRY_WINDOW} in flight, {LOAD_SECONDS} s; {note}"),
    };
    vec![round_trips, ingest]
}

/// 100 devices' reported-patch round trips for `LOAD_SECONDS`, while device `flood` (if any)
/// keeps `FLOOD_WINDOW` telemetry messages in flight. Returns the sorted samples, the errors
/// and the flooder's acknowledged messages.
fn echo_loop(fleet: &Fleet, flood: Option<usize>) -> (Vec<Duration>, usize, usize) {
    const FLOOD_WINDOW: usize = 64;
    let report = br#"{"temperature":21.5,"humidity":40,"firmwareVersion":"1.0.0"}"#;
    let flood_body = br#"{"temperature":99,"humidity":1,"timestamp":"2026-12-01T10:00:00Z"}"#;
    let mut started = vec![Instant::now(); LOOP_CLIENTS];
    for (i, s) in started.iter_mut().enumerate() {
        *s = Instant::now();
        fleet.send(i, Order::Echo(report.to_vec()));
    }
    if let Some(f) = flood {
        for _ in 0..FLOOD_WINDOW {
            fleet.send(f, Order::Telemetry(flood_body.to_vec()));
        }
    }
    let (mut samples, mut errors, mut flooded) = (Vec::new(), 0, 0);
    let end = Instant::now() + Duration::from_secs(LOAD_SECONDS);
    let mut outstanding = LOOP_CLIENTS;
    while outstanding > 0 {
        match fleet.notes.recv_timeout(Duration::from_secs(10)) {
            Ok((i, at, Note::Echoed { ok })) if i < LOOP_CLIENTS => {
                if ok {
                    samples.push(at.duration_since(started[i]));
                } else {
                    errors += 1;
                }
                if at < end {
                    started[i] = Instant::now();
                    fleet.send(i, Order::Echo(report.to_vec()));
                } else {
                    outstanding -= 1;
                }
            }
            Ok((i, at, Note::Acked)) if Some(i) == flood => {
                flooded += 1;
                if at < end {
                    fleet.send(i, Order::Telemetry(flood_body.to_vec()));
                }
            }
            Ok((i, _, Note::Closed(_))) if i < LOOP_CLIENTS => {
                errors += 1;
                outstanding -= 1;
            }
            Ok(_) => {}
            Err(_) => {
                errors += outstanding;
                break;
            }
        }
    }
    samples.sort();
    (samples, errors, flooded)
}

/// The fairness figure: neighbours' p99 with one device flooding, against the quiet run.
fn fairness(runtime: &tokio::runtime::Runtime) {
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for (label, rate) in [("default per-device rate", None), ("no per-device rate", Some("1000000"))] {
        let storage = Storage::new("bench-fairness");
        let mut vars = vec![("GATEWAY_SHARDS", "2")];
        if let Some(r) = rate {
            vars.push(("DEVICE_MESSAGES_PER_SECOND", r));
        }
        let hub = Hub::start_with_vars(&storage, &vars);
        create_devices(&hub, LOOP_CLIENTS + 1);
        let target = Target::twinhub(&hub, "workerd", "");
        let fleet = Fleet::connect(runtime, &target, LOOP_CLIENTS + 1, "patch");
        let elapsed = LOAD_SECONDS as f64;
        let (quiet, quiet_errors, _) = echo_loop(&fleet, None);
        let (noisy, noisy_errors, flooded) = echo_loop(&fleet, Some(LOOP_CLIENTS));
        let row = |load: &'static str, samples: &[Duration], errors: usize, note: String| Row {
            kib_per_session: 0.0,
            target: format!("twinhub, {label}"),
            load,
            count: samples.len(),
            errors,
            per_sec: Some(samples.len() as f64 / elapsed),
            p50_ms: percentile(samples, 0.50),
            p99_ms: percentile(samples, 0.99),
            note,
        };
        rows.push(row("reported patch -> 204, quiet", &quiet, quiet_errors, format!("{LOOP_CLIENTS} devices")));
        rows.push(row(
            "reported patch -> 204, one device flooding",
            &noisy,
            noisy_errors,
            format!("the flooder's telemetry stored: {:.0}/s", flooded as f64 / elapsed),
        ));
        if let (Some(q), Some(n)) = (percentile(&quiet, 0.99), percentile(&noisy, 0.99)) {
            ratios.push((label, n / q));
        }
        hub.stop();
    }
    print_table(&rows, LOOP_CLIENTS, LOOP_CLIENTS + 1);
    for (label, ratio) in ratios {
        let verdict = if ratio <= 2.0 { "met" } else { "not met" };
        println!(
            "{label}: neighbours' p99 while one device floods = {ratio:.2}x the quiet run (goal: within 2x: {verdict})"
        );
    }
}

/// Connects `count` sessions and holds them; memory per session from the server's resident set.
fn sessions_held(
    runtime: &tokio::runtime::Runtime,
    target: &Target,
    count: usize,
    usage: impl Fn() -> Usage,
    hub: Option<&Hub>,
) -> Row {
    // Measured here, after the earlier loads' connections closed, so only sessions count.
    std::thread::sleep(Duration::from_secs(2));
    let idle = usage();
    let fleet = Fleet::connect(runtime, target, count, if hub.is_some() { "patch" } else { "held" });
    let connected = count - fleet.failed;
    if let (Some(hub), true) = (hub, fleet.failed > 0) {
        eprintln!("the hub's log after {} failed connections:\n{}", fleet.failed, hub.log_tail());
    }
    std::thread::sleep(Duration::from_secs(5));
    let held = usage();
    // Still alive? A desired patch (twinhub) or a publish (brokers) to a sample of them.
    let mut alive = 0;
    let sample: Vec<usize> = (0..20).map(|k| (k * 4999 + 13) % count).collect();
    let publisher = hub.is_none().then(|| Fleet::connect(runtime, target, 1, "pub2"));
    for device in &sample {
        let seq = SAMPLE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = format!(r#"{{"telemetryInterval":7,"seq":{seq}}}"#);
        match (hub, &publisher) {
            (Some(hub), _) => {
                let patch = format!(r#"{{"properties":{{"desired":{body}}}}}"#);
                let reply = hub.call("PATCH", &format!("/twins/patch-{device}"), Some(&patch));
                if reply.status != 200 {
                    eprintln!("sample PATCH of patch-{device}: {} {}", reply.status, reply.body);
                }
            }
            (None, Some(p)) => {
                p.send(0, Order::Publish { topic: format!("bench/sub/{device}"), body: body.into_bytes() })
            }
            (None, None) => {}
        }
        if wait_for_seq(&fleet, seq).is_some() {
            alive += 1;
        } else {
            eprintln!("{}: sampled session {device} received nothing", target.name());
        }
    }
    if let (Some(hub), true) = (hub, alive < sample.len()) {
        eprintln!("the hub's log after {} silent sessions:\n{}", sample.len() - alive, hub.log_tail());
    }
    // twinhub: again once the device objects the connects woke have gone idle (workerd evicts
    // an idle object after some seconds and closes its SQLite files; the gateway keeps the
    // hibernated WebSockets).
    let settled = hub.map(|_| {
        std::thread::sleep(Duration::from_secs(30));
        usage()
    });
    let at_rest = settled.unwrap_or(held);
    let per_session = at_rest.rss_kib.saturating_sub(idle.rss_kib) as f64 / connected.max(1) as f64;
    let settled_note = settled
        .map_or(String::new(), |u| format!("; 30 s later RSS {} MiB, {} descriptors", u.rss_kib / 1024, u.descriptors));
    let row = Row {
        kib_per_session: per_session,
        target: target.name(),
        load: "sessions held",
        count: connected,
        errors: fleet.failed,
        per_sec: Some(connected as f64 / fleet.connect_secs),
        p50_ms: None,
        p99_ms: None,
        note: format!(
            "{per_session:.1} KiB per session (RSS {} -> {} MiB, descriptors {} -> {}{settled_note}); \
             {alive}/{} sampled sessions received a message",
            idle.rss_kib / 1024,
            held.rss_kib / 1024,
            idle.descriptors,
            held.descriptors,
            sample.len()
        ),
    };
    drop(fleet);
    std::thread::sleep(Duration::from_secs(2));
    row
}

fn percentile(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i].as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------------
// Set-up: devices, brokers, memory

fn create_devices(hub: &Hub, count: usize) {
    for start in (0..count).step_by(100) {
        let batch: Vec<_> = (start..(start + 100).min(count))
            .map(|i| {
                serde_json::json!({
                    "id": format!("patch-{i}"),
                    "importMode": "create",
                    "authentication": { "symmetricKey": { "primaryKey": DEVICE_KEY, "secondaryKey": DEVICE_KEY } },
                })
            })
            .collect();
        let reply = hub.call("POST", "/devices", Some(&serde_json::Value::Array(batch).to_string()));
        assert_eq!(reply.status, 200, "bulk create: {}", reply.body);
    }
}

struct Broker {
    child: Child,
    target: Target,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    fn rumqttd() -> Option<Self> {
        let bin = which("rumqttd")?;
        let (tcp, ws) = (free_port(), free_port());
        let dir = scratch("rumqttd");
        let config = dir.0.join("rumqttd.toml");
        fs::write(
            &config,
            format!(
                r#"id = 0
[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{tcp}"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true

[ws.1]
name = "ws-1"
listen = "127.0.0.1:{ws}"
next_connection_delay_ms = 0
    [ws.1.connections]
    connection_timeout_ms = 60000
    max_client_id_len = 256
    throttle_delay_ms = 0
    max_payload_size = 20480
    max_inflight_count = 500
    max_inflight_size = 1024
"#
            ),
        )
        .ok()?;
        let child =
            Command::new(bin).arg("-c").arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
        wait_for_port(ws);
        Some(Self { child, target: Target::Rumqttd { port: ws }, _dir: dir })
    }

    fn mosquitto() -> Option<Self> {
        let bin = which("mosquitto").or_else(|| Some(PathBuf::from("/usr/sbin/mosquitto")).filter(|p| p.exists()))?;
        let port = free_port();
        let dir = scratch("mosquitto");
        let config = dir.0.join("mosquitto.conf");
        let mut f = fs::File::create(&config).ok()?;
        writeln!(f, "listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false").ok()?;
        let child =
            Command::new(bin).arg("-c").arg(&config).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
        wait_for_port(port);
        Some(Self { child, target: Target::Mosquitto { port }, _dir: dir })
    }

    fn target(&self) -> Target {
        self.target.clone()
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let home_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin").join(name));
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(name)).chain(home_bin).find(|p| p.is_file()).or_else(|| {
        eprintln!("{name} is not installed: run scripts/bench-device.sh, which installs it; skipping its baseline");
        None
    })
}

fn scratch(name: &str) -> tempdir::Dir {
    let dir = std::env::temp_dir().join(format!("twinhub-bench-{name}-{}", std::process::id()));
    let _ = fs::create_dir_all(&dir);
    tempdir::Dir(dir)
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a server holds: resident memory and open descriptors.
#[derive(Clone, Copy)]
struct Usage {
    rss_kib: u64,
    descriptors: usize,
}

fn process_usage(pid: u32) -> Usage {
    let descriptors = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    Usage { rss_kib: process_rss_kib(pid), descriptors }
}

/// Resident memory of one process, in KiB.
fn process_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().to_owned()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What every process in a process group holds (serve.sh and its workerd; wrangler's node and
/// its workerd processes).
fn group_usage(group: u32) -> Usage {
    let Ok(entries) = fs::read_dir("/proc") else { return Usage { rss_kib: 0, descriptors: 0 } };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // Field 5 of /proc/pid/stat (after the parenthesised command) is the process group.
            fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
                s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok())
            }) == Some(group)
        })
        .map(process_usage)
        .fold(Usage { rss_kib: 0, descriptors: 0 }, |a, b| Usage {
            rss_kib: a.rss_kib + b.rss_kib,
            descriptors: a.descriptors + b.descriptors,
        })
}

fn print_table(rows: &[Row], devices: usize, sessions: usize) {
    let fmt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    println!("\n{devices} connected devices for latency, {LOOP_CLIENTS} for the loops, {sessions} sessions held\n");
    println!("| target | load | count | errors | per s | p50 ms | p99 ms | note |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.target,
            r.load,
            r.count,
            r.errors,
            fmt(r.per_sec, 0),
            fmt(r.p50_ms, 2),
            fmt(r.p99_ms, 2),
            r.note
        );
    }
    let find = |target: &str, load: &str| rows.iter().find(|r| r.target == target && r.load.starts_with(load));
    let base = |load: &str| rows.iter().find(|r| r.target.starts_with("rumqttd") && r.load.starts_with(load));
    let verdict = |met: bool| if met { "met" } else { "not met" };
    let mut targets: Vec<&str> = rows.iter().map(|r| r.target.as_str()).filter(|t| t.starts_with("twinhub")).collect();
    targets.dedup();
    for target in targets {
        println!("\n{target}:");
        if let (Some(ours), Some(base)) = (find(target, "desired"), base("publish -> subscriber")) {
            if let (Some(a), Some(b), Some(c), Some(d)) = (ours.p50_ms, base.p50_ms, ours.p99_ms, base.p99_ms) {
                println!(
                    "- desired patch -> device vs rumqttd publish -> subscriber: p50 {:.2}x, p99 {:.2}x (goal: p99 within 5x: {})",
                    a / b,
                    c / d,
                    verdict(c <= 5.0 * d)
                );
            }
        }
        if let (Some(ours), Some(base)) = (find(target, "reported"), base("publish -> own")) {
            if let (Some(a), Some(b)) = (ours.p50_ms, base.p50_ms) {
                println!("- reported patch round trip vs rumqttd echo: p50 {:.2}x", a / b);
            }
        }
        if let Some(t) = find(target, "telemetry") {
            let rate = t.per_sec.unwrap_or(0.0);
            let base = base("telemetry").and_then(|r| r.per_sec).unwrap_or(f64::NAN);
            println!(
                "- telemetry stored: {rate:.0}/s, {:.2}x rumqttd's PUBACK rate (goal: 5,000/s: {})",
                rate / base,
                verdict(rate >= 5000.0)
            );
        }
        if let Some(t) = find(target, "sessions") {
            println!(
                "- sessions held: {} of {sessions} (goal: 10,000, at most 100 KiB each: {}; {})",
                t.count,
                verdict(t.count >= 10_000 && t.kib_per_session <= 100.0),
                t.note
            );
        }
    }
}
