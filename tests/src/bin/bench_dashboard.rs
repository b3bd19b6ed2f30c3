//! Dashboard figures for BENCHMARKS.md (issue 6), in headless Chromium against `wrangler dev`.
//!
//! `cargo run --release -p twinhub-e2e --bin bench-dashboard [twins=100000]`
//! (after `make build`; needs the test tools: node modules and Debian chromium)
//!
//! 1. the dashboard's `.wasm`, raw and gzipped (goal: at most 400 KB gzipped), and the virtual
//!    device page's, which only that page loads;
//! 2. navigation to the first fleet rows with 1,000 devices, 5 runs (goal: at most 1 s);
//! 3. with `twins` devices (written into the index by the benchmark loader), frame times while
//!    scrolling the virtualized table for 8 s and while a quick filter re-queries (goal: median
//!    at most 16 ms);
//! 4. the telemetry chart's draw time with 10,000 points (goal: at most 16 ms).
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
    let (raw, gz) = wasm_size("dist");
    let (virtual_raw, virtual_gz) = wasm_size("dist/virtual");

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

    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!("\n| figure | value | goal |");
    println!("|---|---|---|");
    println!(
        "| dashboard .wasm | {:.1} KB raw, {:.1} KB gzipped | at most 400 KB gzipped |",
        raw as f64 / 1024.0,
        gz as f64 / 1024.0
    );
    println!(
        "| virtual device page .wasm (loaded only on /virtual/) | {:.1} KB raw, {:.1} KB gzipped | - |",
        virtual_raw as f64 / 1024.0,
        virtual_gz as f64 / 1024.0
    );
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
