//! Job throughput through `wrangler dev` (issue 8), against the article's client-side bulk
//! update in the same run.
//!
//! `cargo run --release -p twinhub-e2e --bin bench-jobs [devices=10000] [baseline-devices=1000]`
//! (after `make build`)
//!
//! Creates `devices` real devices (bulk requests; every job call goes to a device object, so the
//! fleet cannot be written into the index alone), waits for the index to count them, then:
//! 1. job: `PUT /jobs/v2/{id}` updating desired firmwareVersion on every device (`*`), polled
//!    every 100 ms until completed: devices per second and time to complete, with progress;
//! 2. baseline: the article's `BulkUpdateDesiredPropertiesAsync` over REST for the first
//!    `baseline-devices`: one query (paged), then per device GET the twin and PATCH with its
//!    etag, 16 devices at a time (the article's `Task.WhenAll` fan-out, bounded).
//!
//! Prints a table and the job/baseline ratio.

use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use twinhub_e2e::{Hub, Storage};

const CLIENTS: usize = 16;

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let devices = arg(1, 10_000);
    let baseline_devices = arg(2, 1_000).min(devices);
    let storage = Storage::new("bench-jobs");
    // JOB_CONCURRENCY in the environment is passed to the hub (device calls in flight).
    let concurrency = std::env::var("JOB_CONCURRENCY").unwrap_or_else(|_| "100".into());
    let hub = Arc::new(Hub::start_with_vars(&storage, &[("JOB_CONCURRENCY", concurrency.as_str())]));

    let started = Instant::now();
    twinhub_e2e::bulk_create(&hub, "job", devices);
    eprintln!("created {devices} devices in {:.0} s", started.elapsed().as_secs_f64());

    // 1. The job.
    let request = json!({
        "type": "scheduleUpdateTwin",
        "queryCondition": "STARTSWITH(deviceId, 'job-')",
        "updateTwin": { "etag": "*", "properties": { "desired": { "firmwareVersion": "2.1.0" } } },
    });
    let t0 = Instant::now();
    let created = hub.call("PUT", "/jobs/v2/bench-job", Some(&request.to_string()));
    assert_eq!(created.status, 200, "{}", created.body);
    let mut progress = Vec::new();
    let job = loop {
        let asked = Instant::now();
        let job = hub.call("GET", "/jobs/v2/bench-job", None).json();
        let waited = asked.elapsed();
        if waited > Duration::from_secs(1) {
            eprintln!(
                "GET /jobs/v2/bench-job took {:.1} s (at {:.1} s)",
                waited.as_secs_f64(),
                t0.elapsed().as_secs_f64()
            );
        }
        let done = job["deviceJobStatistics"]["succeededCount"].as_u64().unwrap_or(0);
        progress.push((t0.elapsed().as_secs_f64(), done));
        if job["status"] == "completed" || job["status"] == "failed" {
            break job;
        }
        assert!(t0.elapsed() < Duration::from_secs(1800), "the job did not finish: {job}");
        thread::sleep(Duration::from_millis(100));
    };
    let job_secs = t0.elapsed().as_secs_f64();
    let stats = &job["deviceJobStatistics"];
    let succeeded = stats["succeededCount"].as_u64().unwrap_or(0);
    let job_rate = succeeded as f64 / job_secs;
    // Time to the first device and the steady rate between 10% and 90% done.
    let at =
        |share: f64| progress.iter().find(|(_, d)| *d as f64 >= share * devices as f64).map_or(f64::NAN, |(t, _)| *t);
    let steady = 0.8 * devices as f64 / (at(0.9) - at(0.1));

    // Why devices failed, if any did.
    let failed = hub.call(
        "POST",
        "/devices/query",
        Some(
            &json!({ "query": "SELECT * FROM devices.jobs WHERE jobId = 'bench-job' AND status = 'failed'" })
                .to_string(),
        ),
    );
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for r in failed.json().as_array().into_iter().flatten() {
        let why = format!(
            "{}: {}",
            r["error"]["code"].as_str().unwrap_or("?"),
            r["error"]["description"].as_str().unwrap_or("")
        );
        *reasons.entry(why.chars().take(160).collect()).or_default() += 1;
    }
    for (why, n) in &reasons {
        eprintln!("failed (first page): {n} x {why}");
    }

    // 2. The article's client-side bulk update over REST.
    let t1 = Instant::now();
    let mut ids = Vec::new();
    let mut continuation: Option<String> = None;
    let query = json!({ "query": "SELECT * FROM devices WHERE STARTSWITH(deviceId, 'job-')" }).to_string();
    while ids.len() < baseline_devices {
        let token = hub.owner_token();
        let mut headers = vec![("authorization", token.as_str())];
        if let Some(c) = &continuation {
            headers.push(("x-ms-continuation", c.as_str()));
        }
        let reply = hub.call_with("POST", "/devices/query", Some(&query), &headers);
        ids.extend(
            reply.json().as_array().into_iter().flatten().filter_map(|t| t["deviceId"].as_str().map(str::to_owned)),
        );
        continuation = reply.header("x-ms-continuation").map(str::to_owned);
        if continuation.is_none() {
            break;
        }
    }
    ids.truncate(baseline_devices);
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (hub, ids, next, errors) = (hub.clone(), ids.clone(), next.clone(), errors.clone());
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(id) = ids.get(i) else { break };
                let twin = hub.call("GET", &format!("/twins/{id}"), None);
                let etag = twin.json()["etag"].as_str().unwrap_or("*").to_owned();
                let token = hub.owner_token();
                let patch = json!({ "properties": { "desired": { "firmwareVersion": "2.2.0" } } }).to_string();
                let quoted = format!("\"{etag}\"");
                let reply = hub.call_with(
                    "PATCH",
                    &format!("/twins/{id}"),
                    Some(&patch),
                    &[("authorization", token.as_str()), ("if-match", quoted.as_str())],
                );
                if reply.status != 200 {
                    errors.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let baseline_secs = t1.elapsed().as_secs_f64();
    let baseline_rate = ids.len() as f64 / baseline_secs;

    println!("\n| figure | value |");
    println!("|---|---|");
    println!(
        "| job over {devices} twins (`PUT /jobs/v2`, desired firmwareVersion), {concurrency} calls in flight | {job_secs:.1} s to completed, {job_rate:.0} devices/s overall ({succeeded} succeeded, {} failed) |",
        stats["failedCount"]
    );
    println!(
        "| job progress | first 10% at {:.1} s, 90% at {:.1} s: {steady:.0} devices/s between them |",
        at(0.1),
        at(0.9)
    );
    println!(
        "| article's client-side bulk update over REST, {} twins, {CLIENTS} at a time (query, GET, PATCH with etag) | {baseline_secs:.1} s, {baseline_rate:.0} devices/s ({} errors) |",
        ids.len(),
        errors.load(Ordering::SeqCst)
    );
    println!("| job / client-side | {:.1}x |", job_rate / baseline_rate);
    println!("| goal | at least 1,000 devices/s (Azure S1: 10/s, S3: 50/s per unit) |");
}
