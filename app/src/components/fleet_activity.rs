//! What the devices of the fleet page's query send: a telemetry field across all of them (min,
//! average and max per bucket, aggregated by the hub: `POST /api/fleet/telemetry`) and the
//! newest alerts (`POST /api/fleet/alerts`), both asked again every [`REFRESH_MS`] so they
//! follow as messages arrive ([`Refresh`]: not while the tab is hidden, less often after a
//! failure).

use crate::api;
use crate::components::refresh::{Latest, Refresh};
use crate::components::telemetry_chart::{draw, ChartData};
use crate::session::Session;
use leptos::html::Canvas;
use leptos::prelude::*;
use serde_json::Value;
use twinhub_core::wire::FleetAlert;

/// How often both are asked again.
const REFRESH_MS: u64 = 15_000;
/// The spans the chart offers.
const SPANS: [(&str, u64); 3] = [("15 min", 15 * 60_000), ("1 h", 3_600_000), ("24 h", 86_400_000)];
/// Buckets per chart.
const BUCKETS: usize = 120;
/// Alerts the feed shows.
const FEED: usize = 25;

/// The fleet-wide series of a field over the devices `condition` selects (a WHERE condition;
/// empty: every device).
#[component]
pub fn FleetTelemetry(condition: Signal<String>) -> impl IntoView {
    let session = expect_context::<Session>();
    let field = RwSignal::new("temperature".to_owned());
    let span = RwSignal::new(SPANS[1].1);
    let series = Refresh::new(REFRESH_MS).resource(move || {
        let (condition, field, span) = (condition.get(), field.get(), span.get());
        async move { api::fleet_series(session, &condition, &field, span, BUCKETS).await }
    });
    let canvas = NodeRef::<Canvas>::new();
    let drawn = RwSignal::new(None::<Result<usize, String>>);
    Effect::new(move |_| {
        let Some(Ok(s)) = series.get() else { return };
        let data = ChartData {
            from: s.from,
            to: s.to,
            buckets: s.buckets.iter().map(|b| (b.start, b.min, b.max, b.avg)).collect(),
            alerts: Vec::new(),
            threshold: None,
        };
        if let Some(element) = canvas.get() {
            drawn.set(Some(draw(element, &data).map(|()| data.buckets.len())));
        }
    });
    view! {
        <section class="fleet-telemetry" id="fleet-telemetry" aria-labelledby="fleet-telemetry-title">
            <h2 id="fleet-telemetry-title">"Telemetry across these devices"</h2>
            <div class="chart-controls" role="group" aria-label="Fleet telemetry">
                <label for="fleet-field">"Field "</label>
                <input id="fleet-field" type="text" class="fleet-field" prop:value=move || field.get()
                    on:change=move |ev| {
                        let f = event_target_value(&ev);
                        if !f.trim().is_empty() {
                            field.set(f.trim().to_owned());
                        }
                    } />
                {SPANS.into_iter().map(|(label, s)| view! {
                    <button class="range" class:active=move || span.get() == s aria-pressed=move || (span.get() == s).to_string()
                        on:click=move |_| span.set(s)>{label}</button>
                }).collect_view()}
                <span class="fleet-series-state" role="status">{move || match series.get() {
                    None => " Loading...".to_owned(),
                    Some(Err(e)) => format!(" {e}"),
                    Some(Ok(s)) => match drawn.get() {
                        Some(Err(e)) => format!(" Could not draw: {e}"),
                        Some(Ok(0)) => " No readings of this field in this span.".to_owned(),
                        _ => match s.devices {
                            Some(n) => format!(" min, average and max over {n} device(s)"),
                            None => " min, average and max over every device".to_owned(),
                        },
                    },
                }}</span>
            </div>
            <canvas node_ref=canvas class="telemetry-chart fleet-chart" width="800" height="260" role="img"
                aria-label=move || format!("{} across the fleet, min, average and max per bucket", field.get())></canvas>
        </section>
    }
}

/// The newest alerts of the devices `condition` selects, newest first.
#[component]
pub fn AlertFeed(condition: Signal<String>) -> impl IntoView {
    let session = expect_context::<Session>();
    let alerts = Refresh::new(REFRESH_MS).resource(move || {
        let condition = condition.get();
        async move { api::fleet_alerts(session, &condition, FEED).await.map(|a| a.alerts) }
    });
    // The last answer stays while the next is asked for.
    let Latest { value: shown, error } = Latest::of(alerts);
    // A memo: the table is built once, its rows following the answers.
    let empty = Memo::new(move |_| shown.with(|s| s.as_ref().map(Vec::is_empty)));
    view! {
        <section class="alert-feed" id="alerts" aria-labelledby="alerts-title">
            <h2 id="alerts-title">"Alerts"</h2>
            {move || error.get().map(|e| view! { <p class="error" role="alert">"Alerts could not be loaded: " {e}</p> })}
            {move || match empty.get() {
                None => view! { <p class="hint" role="status">"Loading alerts..."</p> }.into_any(),
                Some(true) => view! { <p class="hint no-alerts">"No alerts in the last hour."</p> }.into_any(),
                Some(false) => view! {
                    <div class="table-scroll">
                        <table class="alerts">
                            <thead><tr><th>"Device"</th><th>"Time"</th><th>"Alert"</th><th>"Properties"</th><th>"Body"</th></tr></thead>
                            <tbody>
                                // Keyed: rows already shown stay (a focused link keeps its focus).
                                <For each=move || shown.get().unwrap_or_default()
                                    key=|a| (a.enqueued_time.clone(), a.device_id.clone(), a.module_id.clone(), a.alert.clone())
                                    children=row />
                            </tbody>
                        </table>
                    </div>
                }.into_any(),
            }}
        </section>
    }
}

fn row(a: FleetAlert) -> impl IntoView {
    let key = match &a.module_id {
        Some(m) => format!("{}/{m}", a.device_id),
        None => a.device_id.clone(),
    };
    let href = format!("/device/{}", percent_encoding::utf8_percent_encode(&key, percent_encoding::NON_ALPHANUMERIC));
    let properties =
        a.properties.iter().map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or(""))).collect::<Vec<_>>().join(", ");
    let body = match &a.body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    view! {
        <tr class="alert-row" data-device-id=key.clone()>
            <td><a href=href>{key.clone()}</a></td>
            <td><time datetime=a.enqueued_time.clone()>{a.enqueued_time.get(..19).unwrap_or_default().replace('T', " ")}</time></td>
            <td><span class="badge alert">{a.alert}</span></td>
            <td><code>{properties}</code></td>
            <td><code class="alert-body">{body}</code></td>
        </tr>
    }
}
