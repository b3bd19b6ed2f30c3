//! The proxy hop of upstream mode (issue 9): twin GET and PATCH against hub A directly and
//! through hub B (upstream mode, fronting A), in one run, one client, keep-alive connections.
//!
//! `cargo run --release -p twinhub-e2e --bin bench-upstream [requests=1000]` (after `make build`)
//!
//! Prints p50/p99 per route and the added latency through B (goal: at most 2 ms added at p50).

use serde_json::json;
use std::time::Instant;
use twinhub_e2e::{Hub, Storage};

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

/// Latencies (ms, sorted) of `n` calls, after 50 warm-up calls.
fn measure(hub: &Hub, method: &str, n: usize) -> Vec<f64> {
    let body = json!({ "properties": { "desired": { "setting": 1 } } }).to_string();
    let call = |i: usize| {
        let body = (method == "PATCH").then(|| body.replace('1', &(i % 10).to_string()));
        let reply = hub.call(method, "/twins/bench-1", body.as_deref());
        assert_eq!(reply.status, 200, "{}", reply.body);
    };
    (0..50).for_each(call);
    let mut times: Vec<f64> = (0..n)
        .map(|i| {
            let t = Instant::now();
            call(i);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let storage_a = Storage::new("bench-upstream-a");
    let a = Hub::start(&storage_a);
    let storage_b = Storage::new("bench-upstream-b");
    let upstream = a.owner_connection_string();
    let vars = [
        ("TWINHUB_OWNER_KEY", "dHdpbmh1Yi1iZW5jaC11cHN0cmVhbS1rZXktMDEyMzQ="),
        ("UPSTREAM_CONNECTION_STRING", upstream.as_str()),
        ("UPSTREAM_SCHEME", "http"),
    ];
    let b = Hub::launch(&storage_b, false, None, &vars);
    assert_eq!(a.call("PUT", "/devices/bench-1", Some("{}")).status, 200);

    println!("\n| route | requests | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    let mut added = Vec::new();
    for method in ["GET", "PATCH"] {
        let direct = measure(&a, method, n);
        let through = measure(&b, method, n);
        for (name, t) in [("A directly", &direct), ("through B", &through)] {
            println!("| twin {method}, {name} | {n} | {:.2} | {:.2} |", percentile(t, 0.5), percentile(t, 0.99));
        }
        added.push((
            method,
            percentile(&through, 0.5) - percentile(&direct, 0.5),
            percentile(&through, 0.99) - percentile(&direct, 0.99),
        ));
    }
    for (method, p50, p99) in added {
        println!("| added by B, twin {method} | - | {p50:+.2} | {p99:+.2} |");
    }
    println!("| goal | - | at most +2 ms added at p50 | - |");
}
