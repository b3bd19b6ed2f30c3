//! `/bench/chart?points=N`: the telemetry chart's drawing timed on N points, for
//! BENCHMARKS.md (the page `tests/browser/bench-dashboard.mjs` reads). The hub sends at most a
//! few hundred buckets to the real chart; this is its worst case, drawn 11 times (the first
//! warms up) and reported as the median, in `#bench-result`.

use crate::components::telemetry_chart::{draw, ChartData};
use leptos::html::Canvas;
use leptos::prelude::*;

/// The benchmark page.
#[component]
pub fn ChartBenchPage() -> impl IntoView {
    let canvas = NodeRef::<Canvas>::new();
    let result = RwSignal::new(String::new());
    let points: usize = window()
        .location()
        .search()
        .ok()
        .and_then(|q| q.split("points=").nth(1).and_then(|n| n.split('&').next()?.parse().ok()))
        .unwrap_or(10_000);
    let with_alerts = !window().location().search().unwrap_or_default().contains("alerts=0");
    Effect::new(move |_| {
        let Some(element) = canvas.get() else { return };
        let from = 1_764_000_000_000u64;
        let step = 1_000u64;
        // A day-like wave with noise, and an alert every 50 points.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut noise = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 1000) as f64 / 1000.0
        };
        let buckets: Vec<_> = (0..points as u64)
            .map(|i| {
                let v = 25.0 + 5.0 * (i as f64 / 500.0).sin() + noise();
                (from + i * step, v - 0.5, v + 0.5, v)
            })
            .collect();
        let alerts = if with_alerts { buckets.iter().step_by(50).map(|b| (b.0, b.3)).collect() } else { Vec::new() };
        let data = ChartData { from, to: from + points as u64 * step, buckets, alerts, threshold: Some(28.0) };
        let mut times = Vec::new();
        for _ in 0..11 {
            let started = js_sys::Date::now();
            if let Err(e) = draw(element.clone(), &data) {
                result.set(format!("error: {e}"));
                return;
            }
            times.push(js_sys::Date::now() - started);
        }
        times.remove(0);
        times.sort_by(f64::total_cmp);
        result.set(format!("{:.2}", times[times.len() / 2]));
    });
    view! {
        <section class="card">
            <h1>"Chart benchmark"</h1>
            <p>{format!("{points} points; median draw (ms): ")} <output id="bench-result">{move || result.get()}</output></p>
            <canvas node_ref=canvas class="telemetry-chart" width="800" height="280"></canvas>
        </section>
    }
}
