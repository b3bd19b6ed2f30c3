//! The fleet table, virtualized: however many twins are loaded (100,000 and more), only the rows
//! in view plus a margin are in the DOM; spacer rows keep the scroll height true. Reaching the
//! end of what is loaded asks for the next page (continuation paging behind it).

use leptos::prelude::*;
use serde_json::Value;
use twinhub_core::wire::Twin;

/// Every row is this tall (CSS `.fleet-rows tr` matches it), so positions are arithmetic.
pub const ROW_HEIGHT: f64 = 36.0;
/// Rows rendered above and below the visible ones.
const OVERSCAN: usize = 12;
/// Ask for the next page when this few loaded rows are left below the view.
const PREFETCH: usize = 60;

/// A loaded fleet row: what the table shows of one twin, computed once when its page arrives.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetRow {
    /// The device id.
    pub id: String,
    /// enabled / disabled.
    pub status: String,
    /// Connected / Disconnected.
    pub connection: String,
    /// Last activity, Unix ms (0: never).
    pub last_activity: u64,
    /// `key: value` of the first few tag leaves.
    pub tags: String,
    /// Desired properties the device has not caught up with.
    pub drift: usize,
}

impl FleetRow {
    /// A twin as `POST /devices/query` returns it; a module twin (`FROM devices.modules`) is
    /// shown, and linked, by its key.
    pub fn from_twin(twin: &Twin) -> Self {
        Self {
            id: twin.key(),
            status: twin.status.clone(),
            connection: twin.connection_state.clone(),
            last_activity: crate::api::parse_time(&twin.last_activity_time).unwrap_or(0),
            tags: tag_summary(&Value::Object(twin.tags.clone())),
            drift: twin.drift_count(),
        }
    }
}

/// "building: Building-A · floor: 3 · environment: production": the first leaves, depth first.
fn tag_summary(tags: &Value) -> String {
    fn leaves<'a>(v: &'a Value, name: &'a str, out: &mut Vec<(&'a str, &'a Value)>) {
        match v {
            Value::Object(map) => map.iter().for_each(|(k, v)| leaves(v, k, out)),
            _ if !name.is_empty() => out.push((name, v)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    leaves(tags, "", &mut out);
    out.iter()
        .take(4)
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}: {s}"),
            other => format!("{k}: {other}"),
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// "12 s ago", "3 min ago", "2 h ago", "5 d ago", or "never".
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    if then_ms == 0 {
        return "never".into();
    }
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// The table. `more` is called when the view nears the end of `rows` and `has_more` holds.
#[component]
pub fn FleetTable(
    rows: RwSignal<Vec<FleetRow>>,
    has_more: Signal<bool>,
    more: Callback<()>,
    delete: Callback<String>,
    copy: Callback<String>,
    read_only: Signal<bool>,
) -> impl IntoView {
    let scroll_top = RwSignal::new(0.0f64);
    let view_height = RwSignal::new(560.0f64);
    let now = RwSignal::new(js_sys::Date::now() as u64);
    // "12 s ago" moves on by itself.
    let tick = set_interval_with_handle(move || now.set(js_sys::Date::now() as u64), std::time::Duration::from_secs(5));
    on_cleanup(move || {
        if let Ok(t) = tick {
            t.clear();
        }
    });
    let window_range = Memo::new(move |_| {
        let len = rows.with(Vec::len);
        let first = (scroll_top.get() / ROW_HEIGHT) as usize;
        let visible = (view_height.get() / ROW_HEIGHT).ceil() as usize + 1;
        let start = first.saturating_sub(OVERSCAN).min(len);
        let end = (first + visible + OVERSCAN).min(len);
        (start, end, len)
    });
    Effect::new(move |_| {
        let (_, end, len) = window_range.get();
        if has_more.get() && len.saturating_sub(end) < PREFETCH {
            more.run(());
        }
    });
    view! {
        <div class="fleet-scroll" tabindex="0" aria-label="Devices"
            on:scroll=move |ev| {
                let el = event_target::<web_sys::HtmlElement>(&ev);
                scroll_top.set(f64::from(el.scroll_top()));
                view_height.set(f64::from(el.client_height()));
            }>
            <table class="fleet fleet-rows">
                <thead><tr>
                    <th>"Device"</th><th>"Status"</th><th>"Connection"</th><th>"Last activity"</th>
                    <th>"Tags"</th><th title="Desired properties not yet reported back">"Drift"</th><th></th>
                </tr></thead>
                <tbody>
                    {move || {
                        let (start, end, len) = window_range.get();
                        let top = start as f64 * ROW_HEIGHT;
                        let bottom = (len - end) as f64 * ROW_HEIGHT;
                        let now = now.get();
                        let shown = rows.with(|r| r[start..end].to_vec());
                        let body = shown.into_iter().map(|r| row_view(r, now, delete, copy, read_only)).collect_view();
                        view! {
                            <tr class="spacer" style=format!("height:{top}px")></tr>
                            {body}
                            <tr class="spacer" style=format!("height:{bottom}px")></tr>
                        }
                    }}
                </tbody>
            </table>
        </div>
    }
}

fn row_view(
    r: FleetRow,
    now: u64,
    delete: Callback<String>,
    copy: Callback<String>,
    read_only: Signal<bool>,
) -> impl IntoView {
    let href = format!("/device/{}", percent_encoding::utf8_percent_encode(&r.id, percent_encoding::NON_ALPHANUMERIC));
    let (id_delete, id_copy) = (r.id.clone(), r.id.clone());
    let drift_class = if r.drift == 0 { "drift ok" } else { "drift pending" };
    view! {
        <tr data-device-id=r.id.clone()>
            <td><a href=href>{r.id.clone()}</a></td>
            <td>{r.status}</td>
            <td><span class=format!("conn {}", r.connection.to_lowercase())>{r.connection.clone()}</span></td>
            <td class="muted">{ago(r.last_activity, now)}</td>
            <td class="muted tags">{r.tags}</td>
            <td class=drift_class>{r.drift}</td>
            <td class="actions">
                <button class="link copy" title="Copy the device connection string" on:click=move |_| copy.run(id_copy.clone())>"Copy CS"</button>
                <button class="link delete" disabled=move || read_only.get() on:click=move |_| delete.run(id_delete.clone())>"Delete"</button>
            </td>
        </tr>
    }
}
