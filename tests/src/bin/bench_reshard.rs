//! The fleet index following a new shard count (issue 17): a hub holding `twins` twins (the
//! seeded fixture fleet, written into the index) restarted with another `FLEET_INDEX_SHARDS`,
//! and the time until every twin is counted once again, beside the time the same hub took to
//! write those rows in the first place (the baseline: a rebalance writes each moved row once
//! more and deletes it once).
//!
//! `TWINHUB_FEATURES=bench scripts/build.sh && cargo build --release -p twinhub-e2e --bin bench-reshard &&
//! target/release/bench-reshard [twins]`

use serde_json::json;
use std::time::{Duration, Instant};
use twinhub_e2e::{Hub, Storage};

const SLICE: usize = 5_000;

fn start(storage: &Storage, shards: u32) -> Hub {
    Hub::start_with_vars(storage, &[("TWINHUB_BENCH_ECHO", "1"), ("FLEET_INDEX_SHARDS", &shards.to_string())])
}

/// `SELECT COUNT()` over every shard and the statistics' total, once each.
fn counts(hub: &Hub) -> (u64, u64) {
    let body = json!({ "query": "SELECT COUNT() AS n FROM devices" }).to_string();
    let counted = hub.call("POST", "/devices/query", Some(&body)).json()[0]["n"].as_u64().unwrap_or(0);
    let total = hub.call("GET", "/statistics/devices", None).json()["totalDeviceCount"].as_u64().unwrap_or(0);
    (counted, total)
}

/// Seconds from the first call under the new count until every shard that started handing
/// rows over has finished (the hub's log says so, shard by shard) and both counts are `twins`.
/// (Counts alone do not tell: while a grown index rebalances, every row is still counted once,
/// in its old shard.)
fn settle(hub: &Hub, twins: u64, to: u32) -> f64 {
    let started = Instant::now();
    let begun = format!("the count is now {to}; handing over");
    loop {
        let counted = counts(hub);
        let log = hub.log();
        let (began, done) = (log.matches(&begun).count(), log.matches("rebalance done").count());
        if counted == (twins, twins) && began > 0 && began == done {
            return started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not settled after 10 minutes: {counted:?}, {done} of {began}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    let twins: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let storage = Storage::new("bench-reshard");
    let hub = start(&storage, 4);
    let loading = Instant::now();
    for first in (0..twins).step_by(SLICE) {
        let body = json!({ "seed": 42, "start": first, "count": SLICE.min(twins - first) }).to_string();
        let reply = hub.call("POST", "/api/bench/fleet", Some(&body));
        assert_eq!(reply.status, 204, "load: {}", reply.body);
    }
    let load = loading.elapsed().as_secs_f64();
    assert_eq!(counts(&hub), (twins as u64, twins as u64), "loaded");
    hub.stop();
    println!(
        "\n{twins} twins (fixture seed 42), written into 4 shards in {load:.1} s ({:.0} rows/s)\n",
        twins as f64 / load
    );
    println!("| count change | rows that move (expected) | settled in s | rows/s (all rows) | / writing them |");
    println!("|---|---|---|---|---|");
    for (from, to) in [(4u32, 8u32), (8, 3), (3, 4)] {
        let hub = start(&storage, to);
        let secs = settle(&hub, twins as u64, to);
        hub.stop();
        // A row moves when its shard under the new count differs.
        let moving = (0..twins)
            .filter(|i| {
                let id = format!("sensor-{i:06}");
                twinhub_core::fleet::shard_of(&id, from) != twinhub_core::fleet::shard_of(&id, to)
            })
            .count();
        println!("| {from} -> {to} | {moving} | {secs:.1} | {:.0} | {:.2}x |", twins as f64 / secs, secs / load);
    }
}
