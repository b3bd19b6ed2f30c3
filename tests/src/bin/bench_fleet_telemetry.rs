//! Fleet-wide telemetry (issue 21): a field's series over 1,000 devices and one hour, and the
//! newest alerts, through `POST /api/fleet/telemetry` and `/api/fleet/alerts` (goal: a series
//! over 1,000 devices x 1 hour in at most 200 ms).
//!
//! `TWINHUB_FEATURES=bench scripts/build.sh && cargo build --release -p twinhub-e2e --bin
//! bench-fleet-telemetry && target/release/bench-fleet-telemetry [devices] [messages per device]`
//!
//! The fixture fleet's twins go into the index (`/api/bench/fleet`) and `messages` readings of
//! each device (default 60: one a minute for an hour; every 20th an alert) into the event
//! stream's partitions (`/api/bench/telemetry`), as their gateway would append them. Each
//! request is timed 20 times, one client. The baseline in the same run: the same series with no
//! condition, which reads every event and sends the partitions no device list.

use serde_json::{json, Value};
use std::time::Instant;
use twinhub_e2e::{Hub, Storage};

const RUNS: usize = 20;

fn time(hub: &Hub, path: &str, body: &Value) -> (f64, f64, Value) {
    let text = body.to_string();
    let mut ms = Vec::with_capacity(RUNS);
    let mut last = Value::Null;
    for _ in 0..RUNS {
        let started = Instant::now();
        let reply = hub.call("POST", path, Some(&text));
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        last = reply.json();
    }
    ms.sort_by(f64::total_cmp);
    (ms[RUNS / 2], ms[RUNS * 99 / 100], last)
}

fn main() {
    let devices: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let messages: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(60);
    let storage = Storage::new("bench-fleet-telemetry");
    let hub = Hub::start_with_vars(&storage, &[("TWINHUB_BENCH_ECHO", "1")]);
    for start in (0..devices).step_by(5_000) {
        let body = json!({ "seed": 42, "start": start, "count": 5_000.min(devices - start) }).to_string();
        let reply = hub.call("POST", "/api/bench/fleet", Some(&body));
        assert_eq!(reply.status, 204, "index: {}", reply.body);
    }
    let loading = Instant::now();
    let per_call = (100_000 / messages.max(1)).max(1);
    for start in (0..devices).step_by(per_call) {
        let body =
            json!({ "start": start, "count": per_call.min(devices - start), "messages": messages, "alert_every": 20 });
        let reply = hub.call("POST", "/api/bench/telemetry", Some(&body.to_string()));
        assert_eq!(reply.status, 204, "telemetry: {}", reply.body);
    }
    let events = devices * messages;
    eprintln!("appended {events} events in {:.1} s", loading.elapsed().as_secs_f64());

    let series = |condition: Option<&str>| {
        let mut body = json!({ "field": "temperature", "buckets": 60 });
        if let Some(c) = condition {
            body["condition"] = json!(c);
        }
        body
    };
    let rows: Vec<(&str, &str, Value)> = vec![
        ("series, no condition (baseline)", "/api/fleet/telemetry", series(None)),
        ("series, every device by condition", "/api/fleet/telemetry", series(Some("STARTSWITH(deviceId, 'sensor-')"))),
        ("series, one building", "/api/fleet/telemetry", series(Some("tags.location.building = 'Building-A'"))),
        (
            "alerts, newest 50, every device by condition",
            "/api/fleet/alerts",
            json!({ "condition": "STARTSWITH(deviceId, 'sensor-')" }),
        ),
    ];
    println!("\n{devices} devices x {messages} messages ({events} events, 4 partitions, 4 index shards); {RUNS} runs, one client; ms\n");
    println!("| request | p50 | p99 | devices | readings | / baseline p50 |");
    println!("|---|---|---|---|---|---|");
    let mut baseline = 0.0;
    let mut goal = 0.0;
    for (name, path, body) in rows {
        let (p50, p99, answer) = time(&hub, path, &body);
        if baseline == 0.0 {
            baseline = p50;
        }
        let readings: u64 =
            answer["buckets"].as_array().map_or(0, |b| b.iter().filter_map(|b| b["count"].as_u64()).sum());
        let counted = match answer["alerts"].as_array() {
            Some(alerts) => format!("{} alerts", alerts.len()),
            None => readings.to_string(),
        };
        let selected = match (answer["devices"].as_u64(), path.ends_with("alerts")) {
            (Some(d), _) => d.to_string(),
            (None, true) => "-".to_owned(),
            (None, false) => "all".to_owned(),
        };
        if name.starts_with("series, every device") {
            goal = p50;
        }
        println!("| {name} | {p50:.1} | {p99:.1} | {selected} | {counted} | {:.2}x |", p50 / baseline);
    }
    println!(
        "\ngoal: a fleet series over {devices} devices x 1 hour in at most 200 ms: p50 {goal:.1} ms, {}",
        if goal <= 200.0 { "met" } else { "NOT met" }
    );
}
