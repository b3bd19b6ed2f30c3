//! A device's telemetry over time, drawn with plotters on a canvas: the per-bucket average as a
//! line over a min-max band (from the hub's downsampled series, so 24 hours cost the same as
//! 15 minutes), the device's temperatureThreshold as a line, and alert messages as red points.

use crate::api::{self, ApiError};
use crate::session::Session;
use leptos::html::Canvas;
use leptos::prelude::*;
use plotters::prelude::*;
use plotters_canvas::CanvasBackend;
use twinhub_core::wire::{Series, TelemetryPage};
use twinhub_core::UnixMillis;

/// The ranges an operator can pick, with their labels.
const RANGES: [(&str, u64); 3] = [("15 min", 15 * 60_000), ("1 h", 3_600_000), ("24 h", 86_400_000)];
/// Buckets per range: about one per 6 px of a 720 px plot.
const BUCKETS: usize = 120;
/// Numeric fields the article's device sends.
const FIELDS: [&str; 2] = ["temperature", "humidity"];

/// What one draw needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChartData {
    /// `[from, to)`, Unix ms.
    pub from: u64,
    /// End of the range.
    pub to: u64,
    /// `(start, min, max, avg)` per non-empty bucket.
    pub buckets: Vec<(u64, f64, f64, f64)>,
    /// `(time, value)` of messages that carried an `alert` property.
    pub alerts: Vec<(u64, f64)>,
    /// A horizontal line to draw (the threshold), when the field has one.
    pub threshold: Option<f64>,
}

/// What the operator picked on a chart: its range and field. The device page owns them, so
/// the picks survive the chart being unmounted and mounted again (a tab switch).
#[derive(Clone, Copy, Debug)]
pub struct ChartPicks {
    /// The range, in ms (one of [`RANGES`]).
    pub range: RwSignal<u64>,
    /// The field drawn (one of [`FIELDS`]).
    pub field: RwSignal<String>,
}

impl Default for ChartPicks {
    fn default() -> Self {
        Self { range: RwSignal::new(RANGES[0].1), field: RwSignal::new(FIELDS[0].to_owned()) }
    }
}

/// The chart, with its range and field pickers. `tick` changes when new telemetry arrives
/// (the page's live view), which refetches; `threshold` is the device's temperatureThreshold;
/// `picks`, when given, keeps the operator's range and field beyond this chart's life.
#[component]
pub fn TelemetryChart(
    device_id: String,
    tick: Signal<usize>,
    threshold: Signal<Option<f64>>,
    #[prop(optional)] picks: Option<ChartPicks>,
) -> impl IntoView {
    let session = expect_context::<Session>();
    let ChartPicks { range, field } = picks.unwrap_or_default();
    let canvas = NodeRef::<Canvas>::new();
    let id = device_id.clone();
    let data = LocalResource::new(move || {
        let (span, field, id) = (range.get(), field.get(), id.clone());
        tick.track();
        async move {
            let to = js_sys::Date::now() as u64 + 1;
            let from = to.saturating_sub(span);
            let series = api::telemetry_series(session, &id, &field, from, to, BUCKETS).await?;
            let recent = api::telemetry(session, &id, 1_000).await?;
            Ok::<_, ApiError>(chart_data(&series, &recent, &field, from, to))
        }
    });
    let drawn = RwSignal::new(None::<Result<usize, String>>);
    Effect::new(move |_| {
        let Some(Ok(mut d)) = data.get() else { return };
        d.threshold = if field.get() == "temperature" { threshold.get() } else { None };
        if let Some(element) = canvas.get() {
            drawn.set(Some(draw(element, &d).map(|()| d.buckets.len())));
        }
    });

    view! {
        <div class="chart">
            <div class="chart-controls" role="group" aria-label="Telemetry range">
                {RANGES.into_iter().map(|(label, span)| view! {
                    <button class="range" class:active=move || range.get() == span aria-pressed=move || (range.get() == span).to_string()
                        on:click=move |_| range.set(span)>{label}</button>
                }).collect_view()}
                <label>" Field "
                    <select on:change=move |ev| field.set(event_target_value(&ev))>
                        // `selected`, not the select's value: the value would be set before the
                        // options exist (a chart mounted again keeps its field this way).
                        {FIELDS.into_iter().map(|f| view! { <option value=f selected=move || field.with(|x| x == f)>{f}</option> }).collect_view()}
                    </select>
                </label>
                {move || match data.get() {
                    None => view! { <span class="hint" role="status">" Loading..."</span> }.into_any(),
                    Some(Err(e)) => view! { <span class="error" role="alert">" " {e.to_string()}</span> }.into_any(),
                    Some(Ok(_)) => match drawn.get() {
                        Some(Err(e)) => view! { <span class="error">" Could not draw: " {e}</span> }.into_any(),
                        Some(Ok(0)) => view! { <span class="hint">" No readings in this range yet."</span> }.into_any(),
                        _ => ().into_any(),
                    },
                }}
            </div>
            <canvas node_ref=canvas class="telemetry-chart" width="800" height="280"
                role="img" aria-label=move || format!("{} over the last {}", field.get(), range_label(range.get()))></canvas>
        </div>
    }
}

fn range_label(span: u64) -> &'static str {
    RANGES.iter().find(|(_, s)| *s == span).map_or("", |(l, _)| l)
}

/// Turns the hub's answers into what [`draw`] plots.
pub fn chart_data(series: &Series, recent: &TelemetryPage, field: &str, from: u64, to: u64) -> ChartData {
    let buckets = series.buckets.iter().map(|b| (b.start, b.min, b.max, b.avg)).collect();
    let alerts = recent
        .messages
        .iter()
        .filter(|m| m.property("alert").is_some())
        .filter_map(|m| {
            let time = api::parse_time(&m.enqueued_time)?;
            let value = twinhub_core::telemetry::numeric_field(&m.body, field)?;
            (from..to).contains(&time).then_some((time, value))
        })
        .collect();
    ChartData { from, to, buckets, alerts, threshold: None }
}

/// Most columns drawn: about one per pixel of the plot. More points than that are merged
/// (min of mins, max of maxes, mean of means) before drawing, which looks the same and keeps a
/// redraw cheap however many points come in.
const MAX_COLUMNS: usize = 720;

/// Merges buckets into at most [`MAX_COLUMNS`] columns.
fn columns(buckets: &[(u64, f64, f64, f64)]) -> Vec<(u64, f64, f64, f64)> {
    if buckets.len() <= MAX_COLUMNS {
        return buckets.to_vec();
    }
    let per = buckets.len().div_ceil(MAX_COLUMNS);
    buckets
        .chunks(per)
        .filter_map(|c| {
            let first = c.first()?;
            let min = c.iter().map(|b| b.1).fold(f64::INFINITY, f64::min);
            let max = c.iter().map(|b| b.2).fold(f64::NEG_INFINITY, f64::max);
            let avg = c.iter().map(|b| b.3).sum::<f64>() / c.len() as f64;
            Some((first.0, min, max, avg))
        })
        .collect()
}

/// Draws `d` on `canvas` (also used by the chart benchmark page).
pub fn draw(canvas: web_sys::HtmlCanvasElement, d: &ChartData) -> Result<(), String> {
    let merged = columns(&d.buckets);
    let backend = CanvasBackend::with_canvas_object(canvas).ok_or("no 2D context")?;
    let root = backend.into_drawing_area();
    let style = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| style(&e))?;
    let values = merged.iter().flat_map(|b| [b.1, b.2]).chain(d.alerts.iter().map(|a| a.1)).chain(d.threshold);
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1).max(0.5);
    let (x0, x1) = (d.from as f64, d.to as f64);
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(44)
        .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))
        .map_err(|e| style(&e))?;
    let clock = |x: &f64| UnixMillis(*x as u64).to_iso().get(11..16).unwrap_or_default().to_owned();
    chart
        .configure_mesh()
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&clock)
        .light_line_style(RGBColor(238, 240, 243))
        .draw()
        .map_err(|e| style(&e))?;
    // A hub bucket spans (to - from) / BUCKETS (finer when more points came in); a merged
    // column spans as many of them as it merged.
    let bucket = (d.to - d.from) as f64 / BUCKETS.max(d.buckets.len()) as f64;
    let width = bucket * d.buckets.len().div_ceil(merged.len().max(1)) as f64;
    let band = RGBColor(37, 99, 235).mix(0.18).filled();
    chart
        .draw_series(
            merged
                .iter()
                .map(|&(start, min, max, _)| Rectangle::new([(start as f64, min), (start as f64 + width, max)], band)),
        )
        .map_err(|e| style(&e))?;
    let line = RGBColor(37, 99, 235).stroke_width(2);
    chart
        .draw_series(LineSeries::new(merged.iter().map(|&(start, _, _, avg)| (start as f64 + width / 2.0, avg)), line))
        .map_err(|e| style(&e))?;
    if let Some(t) = d.threshold {
        let dashed = RGBColor(220, 38, 38).stroke_width(1);
        chart.draw_series(LineSeries::new([(x0, t), (x1, t)], dashed)).map_err(|e| style(&e))?;
    }
    chart
        // Squares, not circles: the canvas backend fills rectangles natively but rasterizes
        // circles pixel by pixel (200 alert circles cost 60 ms; squares, under 2).
        .draw_series(d.alerts.iter().map(|&(time, v)| {
            EmptyElement::at((time as f64, v)) + Rectangle::new([(-3, -3), (3, 3)], RGBColor(220, 38, 38).filled())
        }))
        .map_err(|e| style(&e))?;
    root.present().map_err(|e| style(&e))
}
