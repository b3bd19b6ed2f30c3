//! The fleet's GROUP BY summary: devices per value of a property, as bars drawn with plotters on
//! a canvas. Clicking a bar (or its legend button, for keyboards) filters the fleet to it.

use leptos::html::Canvas;
use leptos::prelude::*;
use plotters::prelude::*;
use plotters_canvas::CanvasBackend;
use serde_json::Value;

/// One bar: the group's value (`None` when the property is not defined) and its count.
pub type Group = (Option<Value>, u64);

/// Most bars drawn; the rest are summed into the last.
const MAX_BARS: usize = 12;
const WIDTH: u32 = 640;
const HEIGHT: u32 = 220;
/// Left edge of the plot area inside the canvas: the y labels' room plus the margin.
const LEFT: f64 = 48.0 + 10.0;
const RIGHT: f64 = 10.0;

/// Reads `SELECT <path> AS v, COUNT() AS n ... GROUP BY <path>` rows into groups.
pub fn groups_of(rows: &[Value]) -> Vec<Group> {
    rows.iter().map(|r| (r.get("v").cloned(), r["n"].as_u64().unwrap_or(0))).collect()
}

/// A label for a group value.
pub fn label(value: &Option<Value>) -> String {
    match value {
        None => "(not set)".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The chart. `on_pick` receives the group picked.
#[component]
pub fn GroupChart(
    groups: Signal<Vec<Group>>,
    on_pick: Callback<Option<Value>>,
    /// What the bars count, for screen readers ("Devices", "Alerts").
    #[prop(default = "Devices")]
    counts: &'static str,
) -> impl IntoView {
    let canvas = NodeRef::<Canvas>::new();
    let failed = RwSignal::new(None::<String>);
    let shown = Memo::new(move |_| groups.with(|g| g.iter().take(MAX_BARS).cloned().collect::<Vec<_>>()));
    Effect::new(move |_| {
        let bars = shown.get();
        if let Some(element) = canvas.get() {
            failed.set(draw(element, &bars).err());
        }
    });
    let click = move |ev: leptos::ev::MouseEvent| {
        let bars = shown.get_untracked();
        if bars.is_empty() {
            return;
        }
        // Canvas pixels may be scaled by CSS: map the click back to canvas coordinates.
        let Some(element) = canvas.get_untracked() else { return };
        let scale = f64::from(WIDTH) / f64::from(element.client_width().max(1));
        let x = f64::from(ev.offset_x()) * scale;
        let slot = (f64::from(WIDTH) - LEFT - RIGHT) / bars.len() as f64;
        let i = ((x - LEFT) / slot).floor();
        if i >= 0.0 && (i as usize) < bars.len() {
            on_pick.run(bars[i as usize].0.clone());
        }
    };
    view! {
        <div class="group-chart">
            <canvas node_ref=canvas class="group-canvas" width=WIDTH.to_string() height=HEIGHT.to_string()
                role="img" aria-label=format!("{counts} per group; click a bar to filter") on:click=click></canvas>
            {move || failed.get().map(|e| view! { <p class="error">"Could not draw the chart: " {e}</p> })}
            <div class="group-legend" role="group" aria-label="Filter by group">
                // Keyed by the group, its count following: a refreshed chart keeps its buttons
                // (and the keyboard's focus on one).
                <For each=move || shown.get() key=|(value, _)| value.as_ref().map(Value::to_string)
                    children=move |(value, _)| {
                        let key = value.clone();
                        let count = move || shown.with(|s| s.iter().find(|(v, _)| *v == key).map_or(0, |(_, n)| *n));
                        let name = label(&value);
                        view! {
                            <button class="chip group-pick" on:click=move |_| on_pick.run(value.clone())>
                                {name} " (" {count} ")"
                            </button>
                        }
                    } />
            </div>
        </div>
    }
}

fn draw(canvas: web_sys::HtmlCanvasElement, bars: &[Group]) -> Result<(), String> {
    let backend = CanvasBackend::with_canvas_object(canvas).ok_or("no 2D context")?;
    let root = backend.into_drawing_area();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    if bars.is_empty() {
        return root.present().map_err(|e| err(&e));
    }
    let top = (bars.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64 * 1.1).ceil() as u64;
    let labels: Vec<String> = bars.iter().map(|b| label(&b.0)).collect();
    let mut chart = ChartBuilder::on(&root)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(48)
        .build_cartesian_2d((0..bars.len()).into_segmented(), 0..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_labels(5)
        .light_line_style(RGBColor(238, 240, 243))
        .draw()
        .map_err(|e| err(&e))?;
    let fill = RGBColor(37, 99, 235).filled();
    chart
        .draw_series(
            Histogram::vertical(&chart).margin(12).style(fill).data(bars.iter().enumerate().map(|(i, b)| (i, b.1))),
        )
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
