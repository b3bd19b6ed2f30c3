//! Twin PATCH throughput and latency through `wrangler dev`, against the platform floor.
//!
//! `cargo run --release -p twinhub-e2e --bin bench-patch [requests-per-phase]`
//!
//! Starts a hub (release build of the Worker, as `make build` leaves it), creates 1,000 devices
//! with bulk requests, then runs each of two routes with 1 client (latency without queueing) and
//! with 100 concurrent clients (throughput), on keep-alive connections, same JSON body:
//! - floor: `POST /api/bench/echo/{device}`, the same Worker forwarding to a Durable Object
//!   that only echoes (the token check, no storage);
//! - patch: `PATCH /twins/{device}` with a fresh SAS token per request (signature checked),
//!   a desired-property merge, a SQLite commit and the fleet index push.
//!
//! Prints a table of ops/s and p50/p99 latency for each, and PATCH/floor ratios.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use twinhub_e2e::{Hub, Storage};

const DEVICES: usize = 1_000;
const CLIENTS: usize = 100;
/// Requests of the one-client phases: enough for a stable p99.
const SOLO_REQUESTS: usize = 1_000;

struct Phase {
    name: &'static str,
    clients: usize,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    requests: usize,
}

fn main() {
    let requests: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let storage = Storage::new("bench-patch");
    let hub = Arc::new(Hub::start_with_vars(&storage, &[("TWINHUB_BENCH_ECHO", "1")]));
    for batch in 0..DEVICES / 100 {
        let devices: Vec<_> = (0..100)
            .map(|i| serde_json::json!({ "id": format!("bench-{}", batch * 100 + i), "importMode": "create" }))
            .collect();
        let reply = hub.call("POST", "/devices", Some(&serde_json::Value::Array(devices).to_string()));
        assert_eq!(reply.status, 200, "bulk create: {}", reply.body);
    }

    let echo = |i: usize| ("POST", format!("/api/bench/echo/bench-{}", i % DEVICES));
    let twin = |i: usize| ("PATCH", format!("/twins/bench-{}", i % DEVICES));
    // Warm both paths (isolates, every object, connections) before measuring.
    run(&hub, "warm-up", CLIENTS, DEVICES, echo);
    run(&hub, "warm-up", CLIENTS, DEVICES, twin);

    let floor_solo = run(&hub, "floor: Worker -> DO echo", 1, SOLO_REQUESTS, echo);
    let patch_solo = run(&hub, "twin PATCH", 1, SOLO_REQUESTS, twin);
    let floor = run(&hub, "floor: Worker -> DO echo", CLIENTS, requests, echo);
    let patch = run(&hub, "twin PATCH", CLIENTS, requests, twin);

    println!("\n{DEVICES} devices; {SOLO_REQUESTS} requests with 1 client, {requests} with {CLIENTS} clients\n");
    println!("| phase | clients | requests | errors | ops/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    for (p, base) in [(&floor_solo, None), (&patch_solo, Some(&floor_solo)), (&floor, None), (&patch, Some(&floor))] {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} |",
            p.name, p.clients, p.requests, p.errors, p.ops_per_sec, p.p50_ms, p.p99_ms
        );
        if let Some(f) = base {
            println!(
                "| PATCH / floor | {} | - | - | {:.2}x | {:.2}x | {:.2}x |",
                p.clients,
                p.ops_per_sec / f.ops_per_sec,
                p.p50_ms / f.p50_ms,
                p.p99_ms / f.p99_ms
            );
        }
    }
    println!(
        "\ngoals: PATCH >= 1000 ops/s: {}; p99 <= 20 ms: {}; within 2x of the floor (p50): {}",
        yes(patch.ops_per_sec >= 1000.0),
        yes(patch.p99_ms <= 20.0),
        yes(patch.p50_ms <= 2.0 * floor.p50_ms)
    );
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn run(
    hub: &Arc<Hub>,
    name: &'static str,
    clients: usize,
    requests: usize,
    target: impl Fn(usize) -> (&'static str, String) + Sync,
) -> Phase {
    let next = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let body = r#"{"properties":{"desired":{"telemetryInterval":30,"firmwareVersion":"2.1.0"}}}"#;
    let started = Instant::now();
    let mut latencies: Vec<Duration> = thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (next, errors, target, hub) = (&next, &errors, &target, hub.clone());
                scope.spawn(move || {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= requests {
                            break mine;
                        }
                        let (method, path) = target(i);
                        let t0 = Instant::now();
                        let result = agent
                            .request(method, &format!("{}{path}", hub.base_url()))
                            .set("Authorization", &hub.owner_token())
                            .set("Content-Type", "application/json")
                            .send_string(body);
                        mine.push(t0.elapsed());
                        if result.map(|r| r.status() != 200).unwrap_or(true) {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    let wall = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        let idx =
            ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1).min(latencies.len().saturating_sub(1));
        latencies.get(idx).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN)
    };
    Phase {
        name,
        clients,
        ops_per_sec: requests as f64 / wall.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
        requests,
    }
}
