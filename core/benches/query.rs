#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Query figures at 100,000 twins of the fixture fleet (issue 4):
//!
//! 1. the in-memory evaluator (criterion, then rows/s in the table);
//! 2. the compiled SQL on SQLite (bundled, as the fleet index runs it: JSONB twins) against a
//!    hand-written baseline in the same run, a plain `json_extract` full scan; the baseline
//!    also runs over JSON text to show what JSONB buys;
//! 3. the first page as the index serves it (`ORDER BY device_id LIMIT 101`).
//!
//! `cargo bench -p twinhub-core --bench query` (TWINHUB_BENCH_TWINS overrides 100000)

use criterion::{Criterion, Throughput};
use rusqlite::Connection;
use serde_json::Value;
use std::hint::black_box;
use std::time::{Duration, Instant};
use twinhub_core::fixture;
use twinhub_core::query::sql::{aggregate_statement, filter_sql, rows_statement, Statement};
use twinhub_core::query::{aggregate, eval, parse, Query};
use twinhub_core::UnixMillis;

/// Hand-written baselines: what a person would type with `json_extract`, no type checks.
fn baseline(name: &str) -> &'static str {
    match name {
        "tag equality" => "json_extract(twin, '$.tags.location.building') = 'Building-A'",
        "two-tag AND" => {
            "json_extract(twin, '$.tags.location.building') = 'Building-A' \
             AND json_extract(twin, '$.tags.deployment.environment') = 'production'"
        }
        "nested reported range" => {
            "json_extract(twin, '$.tags.deployment.environment') = 'production' \
             AND json_extract(twin, '$.properties.reported.connectivity.signal') > -60 \
             AND json_type(twin, '$.properties.reported.lastTelemetry') IS NOT NULL"
        }
        "desired != reported" => {
            "json_extract(twin, '$.properties.desired.firmwareVersion') \
             != json_extract(twin, '$.properties.reported.firmwareVersion')"
        }
        "is_defined" => "json_type(twin, '$.properties.reported.lastTelemetry') IS NOT NULL",
        "temperature alert" => "json_extract(twin, '$.properties.reported.lastTemperature') > 30",
        _ => "1",
    }
}

const GROUP_BASELINE: &str = "SELECT json_extract(twin, '$.properties.reported.firmwareVersion') AS k, COUNT(*) \
     FROM device WHERE identity IS NOT NULL GROUP BY k";

#[path = "../tests/support/mod.rs"]
mod support;
use support::{bind, load};

/// Runs `sql` and counts the rows it returns.
fn run(db: &Connection, sql: &str, params: &[Value]) -> usize {
    let mut stmt = db.prepare_cached(sql).expect("prepare");
    let mut rows = stmt.query(rusqlite::params_from_iter(bind(params))).expect("query");
    let mut n = 0;
    while rows.next().expect("row").is_some() {
        n += 1;
    }
    n
}

fn count(db: &Connection, filter: &str, params: &[Value]) -> usize {
    let sql = format!("SELECT device_id FROM device WHERE identity IS NOT NULL AND {filter}");
    run(db, &sql, params)
}

/// Median wall time of `runs` calls (after one warm-up).
fn median(runs: usize, mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let n = f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[runs / 2], n)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let n: usize = std::env::var("TWINHUB_BENCH_TWINS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    eprintln!("generating {n} twins ...");
    let docs: Vec<Value> =
        fixture::fleet(42, n).iter().filter_map(|d| d.twin_json(UnixMillis(1_780_000_000_000))).collect();
    let avg_bytes = docs.iter().map(|d| d.to_string().len()).sum::<usize>() / docs.len().max(1);
    eprintln!("loading SQLite (JSONB and JSON text) ...");
    let jsonb = load(&docs, true);
    let text = load(&docs, false);
    let queries: Vec<(String, Query)> =
        fixture::article_queries().into_iter().map(|q| (q.name.to_owned(), parse(q.text).expect("parses"))).collect();

    // 1. criterion: the evaluator over the whole fleet, per query.
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    {
        let mut group = c.benchmark_group("evaluator");
        group.throughput(Throughput::Elements(n as u64));
        for (name, q) in &queries {
            group.bench_function(name.as_str(), |b| {
                b.iter(|| docs.iter().filter(|d| eval::matches(q.filter.as_ref(), d)).count())
            });
        }
        group.finish();
    }

    // 2 and 3: the table.
    println!("\n{n} twins, {avg_bytes} bytes of JSON each on average; median of 5 runs\n");
    println!("| query | matches | evaluator rows/s | compiled SQL, JSONB (ms) | baseline json_extract, JSONB (ms) | compiled / baseline | baseline on JSON text (ms) | first page as served (ms) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, q) in &queries {
        let filter = filter_sql(q.filter.as_ref().expect("a WHERE"));
        let (eval_t, eval_n) = median(5, || docs.iter().filter(|d| eval::matches(q.filter.as_ref(), d)).count());
        let (sql_t, sql_n) = median(5, || count(&jsonb, &filter.sql, &filter.params));
        let (base_t, base_n) = median(5, || count(&jsonb, baseline(name), &[]));
        let (text_t, _) = median(5, || count(&text, baseline(name), &[]));
        let Statement { sql, params } = rows_statement(q, None, 101);
        let (page_t, _) = median(5, || run(&jsonb, &sql, &params));
        assert_eq!(eval_n, sql_n, "{name}: evaluator and SQL agree");
        let note = if base_n == sql_n { "" } else { " (baseline differs: no type checks)" };
        let times = Times { eval: eval_t, sql: sql_t, baseline: base_t, text: text_t };
        print_row(name, &sql_n.to_string(), n, &times, note, &ms(page_t));
    }
    let group_q = parse(fixture::FIRMWARE_GROUP_QUERY).expect("parses");
    let (eval_t, _) = median(5, || {
        let mut groups = aggregate::Groups::default();
        for d in &docs {
            aggregate::accumulate(&group_q, d, &mut groups);
        }
        groups.into_vec().len()
    });
    let Statement { sql, params } = aggregate_statement(&group_q);
    let (sql_t, groups) = median(5, || run(&jsonb, &sql, &params));
    let (base_t, _) = median(5, || run(&jsonb, GROUP_BASELINE, &[]));
    let (text_t, _) = median(5, || run(&text, GROUP_BASELINE, &[]));
    let times = Times { eval: eval_t, sql: sql_t, baseline: base_t, text: text_t };
    print_row("GROUP BY firmware, COUNT", &format!("{groups} groups"), n, &times, "", "(whole scan)");
}

/// One query's medians: the evaluator over the fleet, the compiled SQL, the baseline on JSONB
/// and on JSON text.
struct Times {
    eval: Duration,
    sql: Duration,
    baseline: Duration,
    text: Duration,
}

fn print_row(name: &str, matches: &str, twins: usize, t: &Times, note: &str, page: &str) {
    println!(
        "| {name} | {matches} | {:.2} M | {} | {}{note} | {:.2} | {} | {page} |",
        twins as f64 / t.eval.as_secs_f64() / 1e6,
        ms(t.sql),
        ms(t.baseline),
        t.sql.as_secs_f64() / t.baseline.as_secs_f64(),
        ms(t.text),
    );
}
