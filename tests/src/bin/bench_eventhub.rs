//! Event Hub-compatible endpoint and AMQP cloud-to-device figures (issue 20), in one run:
//!
//! 1. events/s delivered to one consumer (every partition) while `devices` devices send QoS 1
//!    telemetry (8 in flight each) over MQTT for `seconds`, beside the rate the hub stored
//!    and acknowledged them in the same run: the consumer keeps up when the two are equal;
//! 2. device publish -> consumer receive latency (p50, p99) of those events (the publish time
//!    is in each body);
//! 3. cloud-to-device send -> device receive latency, over AMQP (`/messages/devicebound`, as
//!    the service SDKs send) beside the REST route (`POST /api/devices/{id}/messages`), one
//!    message at a time to one device.
//!
//! `cargo run --release -p twinhub-e2e --bin bench-eventhub [devices] [seconds]`
//!
//! The consumer and the AMQP sender are a minimal AMQP client written here over core's frame
//! and message codec (the hub's side is `core::amqp::Connection`; this is the other role,
//! plain TCP on the hub's AMQP listener). Devices are plain MQTT over WebSocket clients
//! ([`MqttDevice`]), one thread each.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use twinhub_core::amqp::{
    Attach, Begin, Body, DeliveryState, Flow, Frame, Message, MessageBody, Open, Performative, Properties,
    ProtocolHeader, Role, Source, Target, Transfer, Value,
};
use twinhub_core::mqtt::{Packet, Publish, QoS, Subscribe};
use twinhub_e2e::{bulk_create, now_secs, Hub, MqttDevice, Storage};

const WINDOW: usize = 8;
const C2D_SAMPLES: usize = 200;
const CREDIT: u32 = 1_000;
const PARTITIONS: u32 = 4;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let devices = args.next().unwrap_or(100);
    let seconds = args.next().unwrap_or(10) as u64;
    let storage = Storage::new("bench-eventhub");
    let hub = Hub::launch_workerd_with(&storage, false, None, &[]);
    let port = hub.amqp_port().expect("the hub's AMQP listener");
    eprintln!("creating {devices} devices");
    bulk_create(&hub, "eh", devices);

    // Saturating: 8 in flight per device. Then paced (one message per device every 200 ms,
    // about a fifth of what the hub stores) for latency without the ingest queue in it.
    let full = phase(&hub, port, devices, seconds, None);
    let paced = phase(&hub, port, devices, seconds, Some(Duration::from_millis(200)));
    // A consumer from the start reads back everything both phases stored: what the endpoint
    // delivers when the events are there already (the read side alone).
    let total = full.stored + paced.stored;
    let mut replay = AmqpClient::connect(port, &hub);
    // Credit only once every link is attached: the attach loop reads past other frames.
    for p in 0..PARTITIONS {
        replay.attach_partition(10 + p, p, "-1");
    }
    for p in 0..PARTITIONS {
        replay.credit(10 + p);
    }
    let replayed = replay.drain(total);
    let replay_secs = match (replayed.first(), replayed.last()) {
        (Some(first), Some(last)) => (last.0 - first.0).as_secs_f64().max(1e-3),
        _ => 1.0,
    };

    // Cloud-to-device, AMQP beside REST.
    eprintln!("cloud-to-device latency, {C2D_SAMPLES} messages each way");
    let (amqp_c2d, rest_c2d) = c2d_latency(&hub, port);

    println!();
    println!("Event Hub-compatible endpoint, workerd, {devices} devices over MQTT/WebSocket, {seconds} s a phase");
    println!("| load | stored and acknowledged (baseline) | delivered to one live consumer | ratio | publish -> consumer p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    for (name, r) in [(format!("{WINDOW} in flight per device"), &full), ("1 per device every 200 ms".to_owned(), &paced)] {
        println!(
            "| {name} | {:.0} msg/s | {:.0} events/s ({} of {}) | {:.2} | {} ms | {} ms |",
            r.stored as f64 / r.send_secs,
            r.delivered as f64 / r.delivered_secs,
            r.delivered,
            r.stored,
            (r.delivered as f64 / r.delivered_secs) / (r.stored as f64 / r.send_secs),
            pct(&r.latencies, 0.50) / 1000,
            pct(&r.latencies, 0.99) / 1000,
        );
    }
    println!(
        "| replay: a new consumer from the start | | {:.0} events/s ({} of {total}) | | | |",
        replayed.len() as f64 / replay_secs,
        replayed.len()
    );
    println!();
    println!("| cloud-to-device, send -> device receive, one at a time | p50 | p99 |");
    println!("|---|---|---|");
    for (name, samples) in [("AMQP `/messages/devicebound`", &amqp_c2d), ("REST `POST /api/devices/{id}/messages` (baseline)", &rest_c2d)] {
        println!("| {name} | {:.1} ms | {:.1} ms |", pct(samples, 0.5) as f64 / 1000.0, pct(samples, 0.99) as f64 / 1000.0);
    }
    hub.stop();
}

/// What one load phase measured.
struct Phase {
    stored: u64,
    send_secs: f64,
    delivered: usize,
    delivered_secs: f64,
    /// Publish -> consumer receive, µs, sorted.
    latencies: Vec<u64>,
}

/// `devices` devices send for `seconds` (at most [`WINDOW`] in flight each, or one at a time
/// every `pace`) while a consumer reads every partition from the end.
fn phase(hub: &Hub, port: u16, devices: usize, seconds: u64, pace: Option<Duration>) -> Phase {
    let mut consumer = AmqpClient::connect(port, hub);
    for p in 0..PARTITIONS {
        consumer.attach_partition(10 + p, p, "@latest");
    }
    for p in 0..PARTITIONS {
        consumer.credit(10 + p);
    }
    let received = Arc::new(Mutex::new(Vec::<(Instant, u64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || consumer.consume(&received, &stop))
    };
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("{devices} devices sending for {seconds} s ({})", if pace.is_some() { "paced" } else { "saturating" });
    let acked = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let window = if pace.is_some() { 1 } else { WINDOW };
    std::thread::scope(|scope| {
        for i in 0..devices {
            let acked = &acked;
            scope.spawn(move || {
                let id = format!("eh-{i:05}");
                let mut device = MqttDevice::connect(hub, &id);
                let topic = format!("devices/{id}/messages/events/alert=high_temperature");
                let (mut in_flight, mut next_id) = (0usize, 1u16);
                let mut next_send = Instant::now();
                loop {
                    while in_flight < window && Instant::now() < deadline {
                        if let Some(pace) = pace {
                            std::thread::sleep(next_send.saturating_duration_since(Instant::now()));
                            next_send += pace;
                        }
                        let body = format!(r#"{{"sentUs":{},"temperature":31}}"#, unix_micros());
                        device.send(&Packet::Publish(Publish {
                            dup: false,
                            qos: QoS::AtLeastOnce,
                            retain: false,
                            topic: topic.clone(),
                            packet_id: std::num::NonZeroU16::new(next_id),
                            payload: body.into_bytes(),
                        }));
                        next_id = next_id.checked_add(1).unwrap_or(1);
                        in_flight += 1;
                    }
                    if in_flight == 0 {
                        return;
                    }
                    match device.recv() {
                        Some(Packet::PubAck(_)) => {
                            in_flight -= 1;
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(_) => {}
                        None => return,
                    }
                }
            });
        }
    });
    let send_secs = started.elapsed().as_secs_f64();
    let stored = acked.load(Ordering::Relaxed);
    // Until the consumer has everything (or stops getting more).
    let mut last = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let n = received.lock().unwrap().len();
        if n as u64 >= stored || n == last {
            break;
        }
        last = n;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let events = received.lock().unwrap().clone();
    let delivered_secs = match (events.first(), events.last()) {
        (Some(first), Some(last)) => (last.0 - first.0).as_secs_f64().max(1e-3),
        _ => 1.0,
    };
    let mut latencies: Vec<u64> = events.iter().map(|(_, l)| *l).collect();
    latencies.sort_unstable();
    Phase { stored, send_secs, delivered: events.len(), delivered_secs, latencies }
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Send -> receive latencies (µs, sorted) of cloud-to-device messages to one device over
/// AMQP, then over REST.
fn c2d_latency(hub: &Hub, port: u16) -> (Vec<u64>, Vec<u64>) {
    let id = "eh-00000";
    let mut device = MqttDevice::connect(hub, id);
    device.send(&Packet::Subscribe(Subscribe {
        packet_id: std::num::NonZeroU16::MIN,
        filters: vec![(format!("devices/{id}/messages/devicebound/#"), QoS::AtLeastOnce)],
    }));
    let mut sender = AmqpClient::connect(port, hub);
    sender.attach_sender(20, "/messages/devicebound");
    let receive = |device: &mut MqttDevice| loop {
        match device.recv() {
            Some(Packet::Publish(p)) => {
                if let Some(id) = p.packet_id {
                    device.send(&Packet::PubAck(id));
                }
                return;
            }
            Some(_) => continue,
            None => panic!("the device's session ended"),
        }
    };
    let mut amqp = Vec::new();
    for n in 0..C2D_SAMPLES {
        let started = Instant::now();
        sender.send_c2d(20, n as u32, id);
        receive(&mut device);
        amqp.push(started.elapsed().as_micros() as u64);
    }
    let mut rest = Vec::new();
    for _ in 0..C2D_SAMPLES {
        let started = Instant::now();
        let reply = hub.call("POST", &format!("/api/devices/{id}/messages"), Some(r#"{"payload":"blink"}"#));
        assert_eq!(reply.status, 202, "{}", reply.body);
        receive(&mut device);
        rest.push(started.elapsed().as_micros() as u64);
    }
    amqp.sort_unstable();
    rest.sort_unstable();
    (amqp, rest)
}

/// The client role of AMQP, as much as the bench needs: no SASL (as the Node SDKs connect),
/// one session, a CBS put-token, receivers with credit, a sender.
struct AmqpClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The hub's next transfer id (its `begin` starts at its next-outgoing-id).
    next_incoming_id: u32,
    /// Per receiving handle: transfers received.
    received: std::collections::HashMap<u32, u32>,
}

impl AmqpClient {
    fn connect(port: u16, hub: &Hub) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the AMQP listener");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = AmqpClient { stream, buf: Vec::new(), next_incoming_id: 0, received: Default::default() };
        c.stream.write_all(&ProtocolHeader::Amqp.bytes()).unwrap();
        c.send(Performative::Open(Open {
            container_id: "bench".into(),
            hostname: Some(hub.host()),
            ..Open::default()
        }));
        c.send(Performative::Begin(Begin {
            next_outgoing_id: 1,
            incoming_window: 1 << 30,
            outgoing_window: 1 << 30,
            ..Begin::default()
        }));
        let mut header = [0u8; 8];
        c.stream.read_exact(&mut header).unwrap();
        loop {
            if let Performative::Begin(b) = c.performative() {
                c.next_incoming_id = b.next_outgoing_id;
                break;
            }
        }
        // The owner's token on $cbs.
        c.attach(0, Role::Sender, "$cbs", None);
        c.attach(1, Role::Receiver, "$cbs", None);
        c.credit(1);
        let token =
            twinhub_core::auth::sign(&hub.host(), hub.owner_key(), Some("iothubowner"), now_secs() + 3600).unwrap();
        let put = Message {
            properties: Some(Properties {
                message_id: Some(Value::String("put-1".into())),
                to: Some("$cbs".into()),
                reply_to: Some("cbs".into()),
                ..Properties::default()
            }),
            application_properties: vec![
                ("operation".into(), Value::String("put-token".into())),
                ("type".into(), Value::String("servicebus.windows.net:sastoken".into())),
                ("name".into(), Value::String(hub.host())),
            ],
            body: MessageBody::Value(Value::String(token)),
            ..Message::default()
        };
        c.transfer(0, 0, &put, true);
        loop {
            if let Some((1, m)) = c.next_message() {
                let status = m.application_properties.iter().find(|(k, _)| k == "status-code").map(|(_, v)| v.clone());
                assert_eq!(status, Some(Value::Int(200)), "put-token refused: {m:?}");
                break;
            }
        }
        c
    }

    fn send(&mut self, p: Performative) {
        self.stream.write_all(&Frame::amqp(0, p).to_bytes().unwrap()).unwrap();
    }

    fn frame(&mut self) -> Frame {
        loop {
            if let Some((frame, used)) = Frame::decode(&self.buf, u32::MAX).expect("a well-formed frame") {
                self.buf.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("read from the hub");
            assert!(n > 0, "the hub closed the AMQP connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn performative(&mut self) -> Performative {
        match self.frame().body {
            Body::Amqp { performative, .. } => performative,
            other => panic!("expected a performative, got {other:?}"),
        }
    }

    fn attach(&mut self, handle: u32, role: Role, address: &str, filter: Option<(Value, Value)>) {
        self.send(Performative::Attach(Attach {
            name: format!("bench-{handle}"),
            handle,
            role,
            snd_settle_mode: None,
            rcv_settle_mode: None,
            source: Some(Source { address: Some(address.into()), filter: filter.into_iter().collect() }),
            target: Some(Target { address: Some(address.into()) }),
            initial_delivery_count: (role == Role::Sender).then_some(0),
            max_message_size: None,
            offered_capabilities: vec![],
            desired_capabilities: vec![],
            properties: vec![],
        }));
        loop {
            match self.performative() {
                Performative::Attach(a) if a.handle == handle || a.name == format!("bench-{handle}") => break,
                Performative::Detach(d) => panic!("link {address} refused: {d:?}"),
                _ => {}
            }
        }
        if role == Role::Receiver {
            self.received.insert(handle, 0);
        }
    }

    fn attach_partition(&mut self, handle: u32, partition: u32, after_offset: &str) {
        let filter = (
            Value::symbol("apache.org:selector-filter:string"),
            Value::described(
                twinhub_core::amqp::Descriptor::Symbol("apache.org:selector-filter:string".into()),
                Value::String(format!("amqp.annotation.x-opt-offset > '{after_offset}'")),
            ),
        );
        self.attach(
            handle,
            Role::Receiver,
            &format!("twinhub/ConsumerGroups/$Default/Partitions/{partition}"),
            Some(filter),
        );
    }

    fn attach_sender(&mut self, handle: u32, address: &str) {
        self.attach(handle, Role::Sender, address, None);
    }

    fn credit(&mut self, handle: u32) {
        let delivery_count = self.received.get(&handle).copied().unwrap_or(0);
        self.send(Performative::Flow(Flow {
            next_incoming_id: Some(self.next_incoming_id),
            incoming_window: 1 << 30,
            next_outgoing_id: 1,
            outgoing_window: 1 << 30,
            handle: Some(handle),
            delivery_count: Some(delivery_count),
            link_credit: Some(CREDIT),
            ..Flow::default()
        }));
    }

    fn transfer(&mut self, handle: u32, delivery_id: u32, message: &Message, settled: bool) {
        let transfer = Transfer {
            handle,
            delivery_id: Some(delivery_id),
            delivery_tag: Some(delivery_id.to_be_bytes().to_vec()),
            settled: Some(settled),
            ..Transfer::default()
        };
        let frame = Frame {
            channel: 0,
            body: Body::Amqp { performative: Performative::Transfer(transfer), payload: message.encode().unwrap() },
        };
        self.stream.write_all(&frame.to_bytes().unwrap()).unwrap();
    }

    /// The next whole message the hub sent (single-transfer), with its handle; `None` for
    /// any other frame. Tops credit up as it goes.
    fn next_message(&mut self) -> Option<(u32, Message)> {
        let Body::Amqp { performative: Performative::Transfer(t), payload } = self.frame().body else { return None };
        self.next_incoming_id = self.next_incoming_id.wrapping_add(1);
        let n = self.received.entry(t.handle).or_insert(0);
        *n += 1;
        if n.is_multiple_of(CREDIT / 2) {
            self.credit(t.handle);
        }
        Some((t.handle, Message::decode(&payload).expect("a message")))
    }

    /// Reads events until `stop`, recording when each arrived and its publish -> receive
    /// latency (µs).
    fn consume(mut self, received: &Mutex<Vec<(Instant, u64)>>, stop: &AtomicBool) {
        self.stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => continue,
            }
            while let Ok(Some(_)) = Frame::decode(&self.buf, u32::MAX) {
                if let Some((_, m)) = self.next_message() {
                    let now = unix_micros();
                    let sent = m
                        .data()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                        .and_then(|v| v["sentUs"].as_u64());
                    if let Some(sent) = sent {
                        received.lock().unwrap().push((Instant::now(), now.saturating_sub(sent)));
                    }
                }
            }
        }
    }

    /// Reads until `expected` events arrived or none came for 2 s: when each arrived.
    fn drain(self, expected: u64) -> Vec<(Instant, u64)> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || self.consume(&received, &stop))
        };
        let mut last = usize::MAX;
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let n = received.lock().unwrap().len();
            if n as u64 >= expected || n == last {
                break;
            }
            last = n;
        }
        stop.store(true, Ordering::Relaxed);
        let _ = reader.join();
        let events = received.lock().unwrap().clone();
        events
    }

    /// Sends one cloud-to-device message and waits for its disposition.
    fn send_c2d(&mut self, handle: u32, delivery_id: u32, device_id: &str) {
        let message = Message {
            properties: Some(Properties {
                message_id: Some(Value::String(format!("bench-{delivery_id}"))),
                to: Some(format!("/devices/{device_id}/messages/devicebound")),
                ..Properties::default()
            }),
            body: MessageBody::Data(vec![b"blink".to_vec()]),
            ..Message::default()
        };
        self.transfer(handle, delivery_id, &message, false);
        loop {
            if let Performative::Disposition(d) = self.performative() {
                assert_eq!(d.state, Some(DeliveryState::Accepted), "C2D refused");
                return;
            }
        }
    }
}
