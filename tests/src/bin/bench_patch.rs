//! Twin GET and PATCH throughput and latency, against the platform floors, on both runtimes
//! in one run: workerd directly (the run command) and `wrangler dev` (the code-reload loop).
//!
//! `cargo run --release -p twinhub-e2e --bin bench-patch [requests-per-phase]`
//! (`BENCH_RUNTIMES=workerd` or `=wrangler` runs one.)
//!
//! For each runtime: starts a hub (release build of the Worker, as `make build` leaves it),
//! creates 1,000 devices with bulk requests, then runs each route with 1 client (latency without
//! queueing) and with many concurrent clients (throughput), on keep-alive connections, same
//! JSON body:
//! - floor, echo: `POST /api/bench/echo/{device}`, the same Worker forwarding to a Durable
//!   Object that only echoes (the token check, no storage);
//! - floor, write: `POST /api/bench/write/{device}`, the same with one SQLite INSERT OR REPLACE
//!   in the object (a bare durable write);
//! - twin GET: `GET /twins/{device}`, token checked, the twin read from the device object;
//! - twin PATCH: `PATCH /twins/{device}` with a fresh SAS token per request (signature
//!   checked), a desired-property merge, a SQLite commit and the fleet index push;
//! - module twin PATCH: the same on each device's module `agent`
//!   (`PATCH /twins/{device}/modules/agent`), which the goal wants within 1.1x of the device's.
//!
//! Prints one table (ops/s, p50/p99 per runtime, and workerd / wrangler ratios) and the goals.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use twinhub_e2e::{Hub, Storage};

const DEVICES: usize = 1_000;
const CLIENTS: usize = 100;
/// Clients of the concurrent GET phase (as in issue 15's first measurement).
const GET_CLIENTS: usize = 50;
/// Requests of the one-client phases: enough for a stable p99.
const SOLO_REQUESTS: usize = 1_000;

#[derive(Clone)]
struct Phase {
    name: &'static str,
    clients: usize,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

type Target = fn(usize) -> (&'static str, String);

/// The reads, then the writes (see `bench`).
const PHASES: [(&str, Target); 5] = [
    ("floor: Worker -> DO echo", |i| ("POST", format!("/api/bench/echo/bench-{}", i % DEVICES))),
    ("twin GET", |i| ("GET", format!("/twins/bench-{}", i % DEVICES))),
    ("floor: Worker -> DO SQLite write", |i| ("POST", format!("/api/bench/write/bench-{}", i % DEVICES))),
    ("twin PATCH", |i| ("PATCH", format!("/twins/bench-{}", i % DEVICES))),
    ("module twin PATCH", |i| ("PATCH", format!("/twins/bench-{}/modules/agent", i % DEVICES))),
];

fn main() {
    let requests: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let runtimes: Vec<String> = std::env::var("BENCH_RUNTIMES")
        .unwrap_or_else(|_| "workerd,wrangler".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let results: Vec<(String, Vec<Phase>)> = runtimes.iter().map(|r| (r.clone(), bench(r, requests))).collect();

    println!("\n{DEVICES} devices; {SOLO_REQUESTS} requests with 1 client, {requests} with more\n");
    let mut header = "| phase | clients |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for (runtime, _) in &results {
        header += &format!(" {runtime} ops/s | p50 ms | p99 ms | errors |");
        rule += "---|---|---|---|";
    }
    if results.len() == 2 {
        header += &format!(" {} / {} ops/s | p50 |", results[0].0, results[1].0);
        rule += "---|---|";
    }
    println!("{header}\n{rule}");
    for i in 0..results[0].1.len() {
        let p = &results[0].1[i];
        let mut row = format!("| {} | {} |", p.name, p.clients);
        for (_, phases) in &results {
            let q = &phases[i];
            row += &format!(" {:.0} | {:.2} | {:.2} | {} |", q.ops_per_sec, q.p50_ms, q.p99_ms, q.errors);
        }
        if results.len() == 2 {
            let (a, b) = (&results[0].1[i], &results[1].1[i]);
            row += &format!(" {:.2}x | {:.2}x |", a.ops_per_sec / b.ops_per_sec, a.p50_ms / b.p50_ms);
        }
        println!("{row}");
    }
    let find = |phases: &[Phase], name: &str, clients: usize| {
        phases.iter().find(|p| p.name == name && p.clients == clients).cloned().expect("phase")
    };
    let (first, phases) = &results[0];
    let get_solo = find(phases, "twin GET", 1);
    let get_many = find(phases, "twin GET", GET_CLIENTS);
    let patch = find(phases, "twin PATCH", CLIENTS);
    let write = find(phases, "floor: Worker -> DO SQLite write", CLIENTS);
    println!("\ngoals ({first}):");
    println!("- twin GET p50 <= 1 ms with 1 client: {:.2} ms, {}", get_solo.p50_ms, yes(get_solo.p50_ms <= 1.0));
    if let Some((second, other)) = results.get(1) {
        let base = find(other, "twin GET", GET_CLIENTS);
        let ratio = get_many.ops_per_sec / base.ops_per_sec;
        println!("- twin GET >= 5x {second}'s throughput ({GET_CLIENTS} clients): {ratio:.2}x, {}", yes(ratio >= 5.0));
    }
    println!(
        "- twin PATCH >= 1,000/s with {CLIENTS} clients ({:.0}/s: {}) or >= 0.8x the SQLite-write floor ({:.2}x: {})",
        patch.ops_per_sec,
        yes(patch.ops_per_sec >= 1000.0),
        patch.ops_per_sec / write.ops_per_sec,
        yes(patch.ops_per_sec >= 0.8 * write.ops_per_sec)
    );
    let module = find(phases, "module twin PATCH", CLIENTS);
    let ratio = patch.ops_per_sec / module.ops_per_sec;
    println!(
        "- module twin PATCH within 1.1x of the device's ({CLIENTS} clients): device / module {ratio:.2}x, p50 {:.2} / {:.2} ms, {}",
        patch.p50_ms,
        module.p50_ms,
        yes(ratio <= 1.1)
    );
}

/// Every phase on one runtime (`workerd` or `wrangler`), on a fresh hub.
fn bench(runtime: &str, requests: usize) -> Vec<Phase> {
    let storage = Storage::new(&format!("bench-patch-{runtime}"));
    let vars = [("TWINHUB_BENCH_ECHO", "1")];
    let hub = Arc::new(match runtime {
        "wrangler" => Hub::launch_wrangler(&storage, false, None, &vars),
        _ => Hub::launch_workerd(&storage, &vars),
    });
    for batch in 0..DEVICES / 100 {
        let devices: Vec<_> = (0..100)
            .map(|i| serde_json::json!({ "id": format!("bench-{}", batch * 100 + i), "importMode": "create" }))
            .collect();
        let reply = hub.call("POST", "/devices", Some(&serde_json::Value::Array(devices).to_string()));
        assert_eq!(reply.status, 200, "bulk create: {}", reply.body);
    }
    // One module per device, for the module phase.
    thread::scope(|scope| {
        for client in 0..10 {
            let hub = &hub;
            scope.spawn(move || {
                for i in (client..DEVICES).step_by(10) {
                    let reply = hub.call("PUT", &format!("/devices/bench-{i}/modules/agent"), Some("{}"));
                    assert_eq!(reply.status, 200, "module create: {}", reply.body);
                }
            });
        }
    });
    // Reads first, then writes: objects a write phase dirtied are checkpointed when workerd
    // evicts them (fsyncs on the one event-loop thread), which would land in a later read
    // phase. Each group is warmed (isolates, every object, connections) before it is measured.
    let mut out = Vec::new();
    for group in [&PHASES[..2], &PHASES[2..]] {
        for (_, target) in group {
            run(&hub, "warm-up", CLIENTS, DEVICES, *target);
        }
        for (name, target) in group {
            out.push(run(&hub, name, 1, SOLO_REQUESTS, *target));
        }
        for (name, target) in group {
            let clients = if *name == "twin GET" { GET_CLIENTS } else { CLIENTS };
            out.push(run(&hub, name, clients, requests, *target));
        }
    }
    eprintln!("[bench-patch] {runtime} done");
    out
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn run(hub: &Arc<Hub>, name: &'static str, clients: usize, requests: usize, target: Target) -> Phase {
    eprintln!("[bench-patch] {name}, {clients} clients, {requests} requests");
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
                        let request = agent
                            .request(method, &format!("{}{path}", hub.base_url()))
                            .set("Authorization", &hub.owner_token());
                        let result = if method == "GET" {
                            request.call()
                        } else {
                            request.set("Content-Type", "application/json").send_string(body)
                        };
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
    }
}
