//! Dashboard figures for BENCHMARKS.md (issue 6), in headless Chromium against `wrangler dev`.
//!
//! `cargo run --release -p twinhub-e2e --bin bench-dashboard [twins=100000]`
//! (after `make build`; needs the test tools: node modules and Debian chromium)
//!
//! 1. each console program's `.wasm`, raw and gzipped (goal: at most 400 KB gzipped each; a
//!    page loads only its program's), and the virtual device page's;
//! 2. navigation to the first fleet rows with 1,000 devices, 5 runs (goal: at most 1 s);
//! 3. with `twins` devices (written into the index by the benchmark loader), frame times while
//!    scrolling the virtualized table for 8 s and while a quick filter re-queries (goal: median
//!    at most 16 ms);
//! 4. the telemetry chart's draw time with 10,000 points (goal: at most 16 ms);
//! 5. with `twins` devices, `GET /api/fleet/overview` (20 runs, one client; baseline in the same
//!    run: `GET /statistics/devices`, the registry counts alone) and navigation to the
//!    overview's first figures, 5 runs (goal: at most 1 s).
//!
//! Frames are measured with vsync and Chromium's frame-rate limit off (see the script), so a
//! frame's interval is its cost.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;
use std::time::Instant;
use twinhub_e2e::{repo_root, Hub, Storage};

/// The raw and `gzip -9` sizes of the one `.wasm` in `dir` (relative to the repository).
fn wasm_size(dir: &str) -> (u64, u64) {
    let wasm = std::fs::read_dir(repo_root().join(dir))
        .expect("dist/ (run make build)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "wasm"))
        .expect("a wasm (run make build)");
    let raw = std::fs::metadata(&wasm).expect("wasm").len();
    let gz = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -9 -c '{}' | wc -c", wasm.display()))
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u64>().ok())
        .unwrap_or(0);
    (raw, gz)
}

fn main() {
    let twins: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let programs: Vec<(&str, (u64, u64))> = [
        ("console: overview, fleet, sign-in (dist/)", "dist"),
        ("console: device page (dist/app/device/)", "dist/app/device"),
        ("console: jobs, configurations, endpoints (dist/app/operations/)", "dist/app/operations"),
        ("virtual device page (dist/virtual/)", "dist/virtual"),
    ]
    .into_iter()
    .map(|(name, dir)| (name, wasm_size(dir)))
    .collect();

    let storage = Storage::new("bench-dashboard");
    let hub = Hub::start_with_vars(&storage, &[("TWINHUB_BENCH_ECHO", "1")]);
    load(&hub, 0, 1_000);
    let first = browser(&["first-rows", &hub.login_url(), "5"]);
    let started = Instant::now();
    load(&hub, 1_000, twins);
    eprintln!("loaded {twins} twins in {:.0} s", started.elapsed().as_secs_f64());
    let scroll = browser(&["scroll", &hub.login_url(), "8"]);
    let filter = browser(&["filter", &hub.login_url()]);
    let chart = browser(&["chart", &hub.base_url(), "10000"]);
    // An hour of telemetry from 1,000 of them (one reading a minute, every 20th an alert), as
    // their gateways would append it: the overview's activity and alert breakdown read it.
    let body = serde_json::json!({ "start": 0, "count": 1_000, "messages": 60, "alert_every": 20 }).to_string();
    let reply = hub.call("POST", "/api/bench/telemetry", Some(&body));
    assert_eq!(reply.status, 204, "telemetry: {}", reply.body);
    let overview_api = time_get(&hub, "/api/fleet/overview");
    let statistics_api = time_get(&hub, "/statistics/devices");
    let overview_url = hub.login_url().replacen("/fleet#", "/#", 1);
    let overview = browser(&["overview", &overview_url, "5", &twins.to_string()]);

    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!("\n| figure | value | goal |");
    println!("|---|---|---|");
    for (name, (raw, gz)) in &programs {
        let goal = if name.starts_with("console") { "at most 400 KB gzipped" } else { "-" };
        println!(
            "| {name} .wasm | {:.1} KB raw, {:.1} KB gzipped | {goal} |",
            *raw as f64 / 1024.0,
            *gz as f64 / 1024.0
        );
    }
    println!(
        "| navigation -> first fleet rows, 1,000 devices (median of 5) | {:.0} ms (runs: {}) | at most 1,000 ms |",
        f(&first, "median"),
        first["runs"]
    );
    println!(
        "| frame time scrolling, {twins} devices | median {:.1} ms, p95 {:.1} ms, max {:.1} ms over {} frames; {}; {} rows in the DOM | median at most 16 ms |",
        f(&scroll, "median"), f(&scroll, "p95"), f(&scroll, "max"), scroll["frames"], scroll["loaded"].as_str().unwrap_or(""), scroll["domRows"]
    );
    println!(
        "| frame time filtering (building quick filter), {twins} devices | median {:.1} ms, p95 {:.1} ms, max {:.1} ms over {} frames; rows after {:.0} ms ({}) | median at most 16 ms |",
        f(&filter, "median"), f(&filter, "p95"), f(&filter, "max"), filter["frames"], f(&filter, "rowsMs"), filter["count"].as_str().unwrap_or("")
    );
    println!(
        "| telemetry chart draw, 10,000 points (median of 10) | {:.1} ms | at most 16 ms |",
        f(&chart, "medianDrawMs")
    );
    println!(
        "| GET /api/fleet/overview, {twins} devices (20 runs) | p50 {:.1} ms, p99 {:.1} ms; {:.2}x GET /statistics/devices (p50 {:.1} ms) | - |",
        overview_api.0,
        overview_api.1,
        overview_api.0 / statistics_api.0,
        statistics_api.0
    );
    println!(
        "| navigation -> first overview figures, {twins} devices (median of 5) | {:.0} ms (runs: {}) | at most 1,000 ms |",
        f(&overview, "median"),
        overview["runs"]
    );
}

/// p50 and p99 of 20 GETs of `path`, ms.
fn time_get(hub: &Hub, path: &str) -> (f64, f64) {
    let mut ms: Vec<f64> = (0..20)
        .map(|_| {
            let started = Instant::now();
            let reply = hub.call("GET", path, None);
            assert_eq!(reply.status, 200, "{path}: {}", reply.body);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[10], ms[19])
}

/// Writes fixture twins `[start, end)` into the index, 10,000 per call.
fn load(hub: &Hub, start: usize, end: usize) {
    for from in (start..end).step_by(10_000) {
        let body = serde_json::json!({ "seed": 42, "start": from, "count": 10_000.min(end - from) }).to_string();
        let reply = hub.call("POST", "/api/bench/fleet", Some(&body));
        assert_eq!(reply.status, 204, "load: {}", reply.body);
    }
}

/// Runs one phase of the browser script; returns its JSON line.
fn browser(args: &[&str]) -> serde_json::Value {
    let output = Command::new("node")
        .current_dir(repo_root())
        .arg("tests/browser/bench-dashboard.mjs")
        .args(args)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{:?} failed:\n{stdout}\n{}", args[0], String::from_utf8_lossy(&output.stderr));
    stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok()).expect("a JSON line")
}
