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
//! The consumer and the AMQP sender are the harness's minimal AMQP client
//! ([`twinhub_e2e::amqp_client`], over core's codec; plain TCP on the hub's AMQP listener).
//! Devices are plain MQTT over WebSocket clients ([`MqttDevice`]), one thread each.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twinhub_core::amqp::{DeliveryState, Message, Role};
use twinhub_core::mqtt::{Packet, Publish, QoS, Subscribe};
use twinhub_e2e::amqp_client::{unix_micros, AmqpClient};
use twinhub_e2e::{bulk_create, Hub, MqttDevice, Storage};

const WINDOW: usize = 8;
const C2D_SAMPLES: usize = 200;
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
    // The baseline first: the same saturating load with no consumer reading.
    let alone = phase(&hub, port, devices, seconds, None, false);
    let full = phase(&hub, port, devices, seconds, None, true);
    let paced = phase(&hub, port, devices, seconds, Some(Duration::from_millis(200)), true);
    // A consumer from the start reads back everything both phases stored: what the endpoint
    // delivers when the events are there already (the read side alone).
    let total = alone.stored + full.stored + paced.stored;
    // Timed from before the links are attached: events queue in the socket until the reader
    // runs, so the first event's arrival would start the clock late.
    let asked = Instant::now();
    let replayed = consumer(&hub, port, "-1").drain(total as usize);
    let replay_secs = replayed.last().map_or(1.0, |last| (last.0 - asked).as_secs_f64().max(1e-3));

    // Cloud-to-device, AMQP beside REST.
    eprintln!("cloud-to-device latency, {C2D_SAMPLES} messages each way");
    let (amqp_c2d, rest_c2d) = c2d_latency(&hub, port);

    println!();
    println!("Event Hub-compatible endpoint, workerd, {devices} devices over MQTT/WebSocket, {seconds} s a phase");
    println!("| load | stored and acknowledged | delivered to one live consumer | delivered / stored | publish -> consumer p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {WINDOW} in flight per device, no consumer (baseline) | {:.0} msg/s | | | | |",
        alone.stored as f64 / alone.send_secs
    );
    for (name, r) in
        [(format!("{WINDOW} in flight per device"), &full), ("1 per device every 200 ms".to_owned(), &paced)]
    {
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
    for (name, samples) in
        [("AMQP `/messages/devicebound`", &amqp_c2d), ("REST `POST /api/devices/{id}/messages` (baseline)", &rest_c2d)]
    {
        println!(
            "| {name} | {:.1} ms | {:.1} ms |",
            pct(samples, 0.5) as f64 / 1000.0,
            pct(samples, 0.99) as f64 / 1000.0
        );
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
fn phase(hub: &Hub, port: u16, devices: usize, seconds: u64, pace: Option<Duration>, read: bool) -> Phase {
    let received = Arc::new(Mutex::new(Vec::<(Instant, Message)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = read.then(|| {
        let consumer = consumer(hub, port, "@latest");
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || consumer.consume(&received, &stop))
    });
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
    while reader.is_some() {
        std::thread::sleep(Duration::from_secs(2));
        let n = received.lock().unwrap().len();
        if n as u64 >= stored || n == last {
            break;
        }
        last = n;
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    let events = received.lock().unwrap().clone();
    let delivered_secs = match (events.first(), events.last()) {
        (Some(first), Some(last)) => (last.0 - first.0).as_secs_f64().max(1e-3),
        _ => 1.0,
    };
    let mut latencies: Vec<u64> = events.iter().filter_map(|(at, m)| latency(*at, m)).collect();
    latencies.sort_unstable();
    Phase { stored, send_secs, delivered: events.len(), delivered_secs, latencies }
}

/// A consumer with the owner's token, every partition attached from after `offset` and
/// credited.
fn consumer(hub: &Hub, port: u16, offset: &str) -> AmqpClient {
    let mut c = AmqpClient::with_token(port, &hub.host(), &hub.host(), &hub.policy_token("iothubowner"));
    c.read_partitions(10, PARTITIONS, offset);
    c
}

/// Publish -> receive latency of an event, from the publish time in its body (µs).
fn latency(arrived: Instant, message: &Message) -> Option<u64> {
    let sent = message
        .data()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["sentUs"].as_u64())?;
    let age = Instant::now().saturating_duration_since(arrived).as_micros() as u64;
    Some(unix_micros().saturating_sub(age).saturating_sub(sent))
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
    let mut sender = AmqpClient::with_token(port, &hub.host(), &hub.host(), &hub.policy_token("iothubowner"));
    sender.attach(20, Role::Sender, "/messages/devicebound", None).expect("the C2D sender");
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
        let outcome = sender.send_c2d(20, n as u32, id, &format!("bench-{n}"));
        assert_eq!(outcome, Some(DeliveryState::Accepted), "C2D refused");
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
