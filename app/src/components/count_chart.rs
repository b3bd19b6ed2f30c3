//! A count over time (devices connected, messages per minute), drawn with plotters on a canvas
//! as a line from zero up. Minutes with no value (before the hub sampled any) are gaps.

use leptos::html::Canvas;
use leptos::prelude::*;
use plotters::prelude::*;
use plotters_canvas::CanvasBackend;
use twinhub_core::UnixMillis;

/// `(minute start, value)` points, oldest first.
pub type Points = Vec<(u64, Option<u64>)>;

/// The chart; `label` names it for screen readers.
#[component]
pub fn CountChart(points: Signal<Points>, label: &'static str) -> impl IntoView {
    let canvas = NodeRef::<Canvas>::new();
    let failed = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        let points = points.get();
        if let Some(element) = canvas.get() {
            failed.set(draw(element, &points).err());
        }
    });
    view! {
        <canvas node_ref=canvas class="count-chart" width="480" height="200" role="img" aria-label=label></canvas>
        {move || failed.get().map(|e| view! { <p class="error">"Could not draw the chart: " {e}</p> })}
    }
}

fn draw(canvas: web_sys::HtmlCanvasElement, points: &Points) -> Result<(), String> {
    let backend = CanvasBackend::with_canvas_object(canvas).ok_or("no 2D context")?;
    let root = backend.into_drawing_area();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return root.present().map_err(|e| err(&e));
    };
    let top = points.iter().filter_map(|p| p.1).max().unwrap_or(0).max(1) as f64 * 1.15;
    let (x0, x1) = (first.0 as f64, (last.0 + 60_000) as f64);
    let mut chart = ChartBuilder::on(&root)
        .margin(10)
        .x_label_area_size(26)
        .y_label_area_size(44)
        .build_cartesian_2d(x0..x1, 0.0..top.ceil())
        .map_err(|e| err(&e))?;
    let clock = |x: &f64| UnixMillis(*x as u64).to_iso().get(11..16).unwrap_or_default().to_owned();
    chart
        .configure_mesh()
        .x_labels(5)
        .y_labels(5)
        .x_label_formatter(&clock)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(RGBColor(238, 240, 243))
        .draw()
        .map_err(|e| err(&e))?;
    let line = RGBColor(37, 99, 235).stroke_width(2);
    // One line per run of known values: a gap is drawn as one.
    let mut run: Vec<(f64, f64)> = Vec::new();
    for (start, value) in points.iter().chain(std::iter::once(&(0, None))) {
        match value {
            Some(v) => run.push((*start as f64 + 30_000.0, *v as f64)),
            None if !run.is_empty() => {
                let points = std::mem::take(&mut run);
                // A lone point (the first minute sampled) is a mark: a line of one is nothing.
                if let [only] = points[..] {
                    let mark = Rectangle::new([(-3, -3), (3, 3)], RGBColor(37, 99, 235).filled());
                    chart.draw_series(std::iter::once(EmptyElement::at(only) + mark)).map_err(|e| err(&e))?;
                }
                chart.draw_series(LineSeries::new(points, line)).map_err(|e| err(&e))?;
            }
            None => {}
        }
    }
    root.present().map_err(|e| err(&e))
}
