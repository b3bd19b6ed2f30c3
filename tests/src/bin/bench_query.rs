//! Fleet queries end to end through `wrangler dev` at 100,000 twins, with 1 and 4 index
//! shards, and the index lag while twin writes run at 500 per second.
//!
//! `make build && cargo run --release -p twinhub-e2e --bin bench-query [twins]`
//!
//! For each shard count it starts a hub (release Worker), writes the seeded fixture fleet
//! (`twinhub_core::fixture`) into the index with `POST /api/bench/fleet` (only enabled with
//! `TWINHUB_BENCH_ECHO=1`), then times each query 20 times, one client: the first page as the
//! SDK asks for it (100 items), and `SELECT COUNT()` with the same `WHERE`, which must scan
//! every twin. Then, on a fresh hub with 4 shards, 500 real devices take paced twin PATCHes at
//! 500/s for 10 s, and `/api/index` reports how far behind the index ran. Last, on a hub with 4
//! shards holding the fleet twice, as devices and as one module `agent` of each device, each
//! query runs on `FROM devices` and on `FROM devices.modules` (goal: modules within 1.2x).
//! `BENCH_QUERY_PHASES=modules` runs that comparison alone.

use serde_json::{json, Value};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use twinhub_core::fixture;
use twinhub_e2e::{Hub, Storage};

const RUNS: usize = 20;
const SLICE: usize = 5_000;

fn main() {
    let twins: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let only_modules = std::env::var("BENCH_QUERY_PHASES").is_ok_and(|p| p == "modules");
    let modules = modules_phase(twins);
    if only_modules {
        println!("\n{modules}");
        return;
    }
    let mut table = Vec::new();
    for shards in [1u32, 4] {
        table.extend(query_phase(twins, shards));
    }
    let lag = lag_phase();

    println!("\n{twins} twins (fixture seed 42); {RUNS} runs per query, one client; ms\n");
    println!(
        "| query | shards | first page p50 | first page p99 | full-scan COUNT p50 | full-scan COUNT p99 | matches |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in &table {
        println!("{row}");
    }
    println!("\n{lag}");
    println!("\n{modules}");
}

/// The same queries over `devices` and `devices.modules` on one hub (4 shards) holding the
/// fixture fleet as `twins` devices and `twins` modules.
fn modules_phase(twins: usize) -> String {
    const SHARDS: u32 = 4;
    let storage = Storage::new("bench-query-modules");
    let hub =
        Hub::start_with_vars(&storage, &[("TWINHUB_BENCH_ECHO", "1"), ("FLEET_INDEX_SHARDS", &SHARDS.to_string())]);
    for module in [None, Some("agent")] {
        for start in (0..twins).step_by(SLICE) {
            let body = json!({ "seed": 42, "start": start, "count": SLICE.min(twins - start), "module": module });
            let reply = hub.call("POST", "/api/bench/fleet", Some(&body.to_string()));
            assert_eq!(reply.status, 204, "load: {}", reply.body);
        }
    }
    let mut queries: Vec<(String, String)> =
        fixture::article_queries().into_iter().map(|q| (q.name.to_owned(), q.text.to_owned())).collect();
    queries.push(("GROUP BY firmware".into(), fixture::FIRMWARE_GROUP_QUERY.into()));
    let mut out = format!(
        "{twins} devices and {twins} modules in one hub, {SHARDS} shards; {RUNS} runs per query; first page p50 ms\n\n\
         | query | FROM devices | FROM devices.modules | modules / devices | matches (devices, modules) |\n|---|---|---|---|---|\n"
    );
    let mut worst: f64 = 0.0;
    for (name, text) in queries {
        let on_modules = text.replacen("FROM devices", "FROM devices.modules", 1);
        let (d50, _, d) = time(&hub, &text);
        let (m50, _, m) = time(&hub, &on_modules);
        let count = |v: &Value| v.as_array().map_or(0, Vec::len);
        worst = worst.max(m50 / d50);
        out += &format!("| {name} | {d50:.1} | {m50:.1} | {:.2}x | {}, {} |\n", m50 / d50, count(&d), count(&m));
    }
    out += &format!(
        "\ngoal: FROM devices.modules within 1.2x of FROM devices: worst {worst:.2}x, {}",
        if worst <= 1.2 { "met" } else { "NOT met" }
    );
    out
}

fn query_phase(twins: usize, shards: u32) -> Vec<String> {
    let storage = Storage::new(&format!("bench-query-{shards}"));
    let hub =
        Hub::start_with_vars(&storage, &[("TWINHUB_BENCH_ECHO", "1"), ("FLEET_INDEX_SHARDS", &shards.to_string())]);
    let started = Instant::now();
    for start in (0..twins).step_by(SLICE) {
        let body = json!({ "seed": 42, "start": start, "count": SLICE.min(twins - start) }).to_string();
        let reply = hub.call("POST", "/api/bench/fleet", Some(&body));
        assert_eq!(reply.status, 204, "load: {}", reply.body);
    }
    eprintln!("{shards} shard(s): loaded {twins} twins in {:.1} s", started.elapsed().as_secs_f64());
    let mut queries: Vec<(String, String)> =
        fixture::article_queries().into_iter().map(|q| (q.name.to_owned(), q.text.to_owned())).collect();
    queries.push(("GROUP BY firmware".into(), fixture::FIRMWARE_GROUP_QUERY.into()));
    queries
        .into_iter()
        .map(|(name, text)| {
            let (p50, p99, _) = time(&hub, &text);
            let count_text = match text.find(" WHERE ") {
                Some(at) => format!("SELECT COUNT() AS n FROM devices{}", &text[at..]),
                None => text.clone(),
            };
            let (c50, c99, answer) = time(&hub, &count_text);
            let matches = answer.get(0).and_then(|r| r.get("n")).map_or_else(|| format!("{answer}"), Value::to_string);
            format!("| {name} | {shards} | {p50:.1} | {p99:.1} | {c50:.1} | {c99:.1} | {matches} |")
        })
        .collect()
}

/// p50 and p99 of `RUNS` runs (after two warm-ups), and the last answer.
fn time(hub: &Hub, text: &str) -> (f64, f64, Value) {
    let body = json!({ "query": text }).to_string();
    let mut last = Value::Null;
    for _ in 0..2 {
        hub.call("POST", "/devices/query", Some(&body));
    }
    let mut ms: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let reply = hub.call("POST", "/devices/query", Some(&body));
            let elapsed = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(reply.status, 200, "{text}: {}", reply.body);
            last = reply.json();
            elapsed
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).saturating_sub(1).min(ms.len() - 1)];
    (pct(0.5), pct(0.99), last)
}

fn lag_phase() -> String {
    const DEVICES: usize = 500;
    const RATE: f64 = 500.0;
    const SECONDS: f64 = 10.0;
    const CLIENTS: usize = 50;
    let storage = Storage::new("bench-query-lag");
    let hub = Arc::new(Hub::start_with_vars(&storage, &[("FLEET_INDEX_SHARDS", "4")]));
    for batch in 0..DEVICES / 100 {
        let devices: Vec<Value> =
            (0..100).map(|i| json!({ "id": format!("lag-{}", batch * 100 + i), "importMode": "create" })).collect();
        assert_eq!(hub.call("POST", "/devices", Some(&Value::Array(devices).to_string())).status, 200);
    }
    let total = (RATE * SECONDS) as usize;
    let started = Instant::now();
    let errors: usize = thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let hub = hub.clone();
                scope.spawn(move || {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
                    let mut errors = 0;
                    // Client c sends requests c, c + CLIENTS, ... each at its scheduled time.
                    for i in (c..total).step_by(CLIENTS) {
                        let due = started + Duration::from_secs_f64(i as f64 / RATE);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            thread::sleep(wait);
                        }
                        let body = json!({ "properties": { "desired": { "setting": i } } }).to_string();
                        let ok = agent
                            .request("PATCH", &format!("{}/twins/lag-{}", hub.base_url(), i % DEVICES))
                            .set("Authorization", &hub.owner_token())
                            .set("Content-Type", "application/json")
                            .send_string(&body)
                            .is_ok_and(|r| r.status() == 200);
                        errors += usize::from(!ok);
                    }
                    errors
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let wall = started.elapsed().as_secs_f64();
    let lag = hub.call("GET", "/api/index", None).json();
    let worst =
        |key: &str| lag["shards"].as_array().map_or(0, |s| s.iter().filter_map(|x| x[key].as_u64()).max().unwrap_or(0));
    format!(
        "Index lag: {total} twin PATCHes to {DEVICES} devices paced at {RATE}/s by {CLIENTS} clients took {wall:.1} s \
         (achieved {:.0}/s, {errors} errors); index lag over each shard's last 1,000 upserts, worst shard: \
         p50 {} ms, p99 {} ms, max {} ms (goal: p99 <= 1000 ms)",
        total as f64 / wall,
        worst("p50Ms"),
        worst("p99Ms"),
        worst("maxMs"),
    )
}
