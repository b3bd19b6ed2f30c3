//! In-process cost of applying one service patch to a twin, against a plain RFC 7386 merge of
//! the same patch into the same document (`json_patch::merge`, no validation, no metadata, no
//! counters) as the baseline.
//!
//! `cargo bench -p twinhub-core --bench twin_patch`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::{json, Value};
use std::hint::black_box;
use twinhub_core::twin::{ServicePatch, Twin};
use twinhub_core::UnixMillis;

/// A twin like the article's: location and deployment tags, a handful of desired properties.
fn article_twin() -> (Twin, Value) {
    let mut twin = Twin::new(UnixMillis(1_700_000_000_000));
    let seed = json!({
        "tags": {
            "location": { "building": "Building-A", "floor": 3, "room": "3.14" },
            "deployment": { "environment": "production", "ring": "canary" }
        },
        "properties": { "desired": {
            "telemetryInterval": 30, "temperatureThreshold": 75.5, "firmwareVersion": "2.0.5",
            "connectivity": { "wifi": { "ssid": "plant-net", "band": "5GHz" }, "fallback": "lte" }
        } }
    });
    let patch = ServicePatch::parse(&seed.to_string()).unwrap_or_default();
    let _ = twin.apply_service_patch(&patch, UnixMillis(1_700_000_000_001));
    let doc = json!({ "tags": twin.tags, "properties": { "desired": twin.desired.properties } });
    (twin, doc)
}

fn bench(c: &mut Criterion) {
    let patches = [
        ("one desired value", json!({ "properties": { "desired": { "firmwareVersion": "2.1.0" } } })),
        (
            "tags + nested desired",
            json!({
                "tags": { "location": { "floor": 4 }, "deployment": null },
                "properties": { "desired": { "connectivity": { "wifi": { "band": "2.4GHz" } }, "telemetryInterval": 60 } }
            }),
        ),
    ];
    let mut group = c.benchmark_group("apply one patch");
    for (name, patch) in &patches {
        let text = patch.to_string();
        let (twin, doc) = article_twin();
        group.bench_with_input(BenchmarkId::new("baseline json_patch::merge", name), &text, |b, text| {
            b.iter(|| {
                let mut d = doc.clone();
                let p: Value = serde_json::from_str(black_box(text)).unwrap_or_default();
                json_patch::merge(&mut d, &p);
                black_box(d)
            })
        });
        group.bench_with_input(BenchmarkId::new("twinhub parse + check + apply", name), &text, |b, text| {
            b.iter(|| {
                let mut t = twin.clone();
                let p = ServicePatch::parse(black_box(text)).unwrap_or_default();
                black_box(t.apply_service_patch(&p, UnixMillis(1_700_000_000_002)).is_ok());
                black_box(t)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
