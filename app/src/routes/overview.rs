//! The console's first page: the fleet at a glance, from one call (`GET /api/fleet/overview`)
//! made again every [`REFRESH_MS`] ([`Refresh`]: not while the tab is hidden, less often after
//! a failure). Each figure links to the fleet query that lists its devices
//! (drift through twinhub's `IS_DRIFTING()` and `HAS_REFUSED()`); the charts are the last hour
//! per minute and the alerts broken down by a twin path the operator picks.

use crate::api;
use crate::components::count_chart::{CountChart, Points};
use crate::components::group_chart::GroupChart;
use crate::components::refresh::{Latest, Refresh};
use crate::session::Session;
use leptos::prelude::*;
use serde_json::Value;
use twinhub_core::wire::Overview;

/// How often the page asks again (one request, counted as a query by the hub's throttle).
const REFRESH_MS: u64 = 10_000;
/// Paths offered for the alert breakdown (any other can be typed).
const BREAKDOWNS: [&str; 4] =
    ["tags.location.building", "tags.deployment.environment", "properties.reported.firmwareVersion", "deviceId"];

/// The fleet page listing the devices a condition selects (`None`: every device).
pub fn fleet_link(condition: Option<&str>) -> String {
    let query = match condition {
        Some(c) => format!("SELECT * FROM devices WHERE {c}"),
        None => "SELECT * FROM devices".to_owned(),
    };
    format!("/fleet?q={}", percent_encoding::utf8_percent_encode(&query, percent_encoding::NON_ALPHANUMERIC))
}

/// A query-language literal for a JSON value (a string quoted, anything else as JSON).
fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        other => other.to_string(),
    }
}

/// The overview page; in upstream mode (IoT Hub has no such figures) a note and the fleet.
#[component]
pub fn OverviewPage() -> impl IntoView {
    let session = expect_context::<Session>();
    let access = expect_context::<crate::access::Access>();
    if !session.signed_in() {
        let _ = window().location().set_href("/signin");
    }
    move || match access.feature("overview") {
        None => view! { <section class="card overview"><h1>"Overview"</h1>
        <p class="hint loading" role="status">"Loading the overview..."</p></section> }
        .into_any(),
        Some(Err(why)) => view! { <section class="card overview"><h1>"Overview"</h1>
        <p class="hint unavailable">{why} " " <a href="/fleet">"Open the fleet"</a></p></section> }
        .into_any(),
        Some(Ok(())) => view! { <OverviewBody /> }.into_any(),
    }
}

/// The overview's figures and charts.
#[component]
fn OverviewBody() -> impl IntoView {
    let session = expect_context::<Session>();
    let by = RwSignal::new(BREAKDOWNS[0].to_owned());
    // Asked again every REFRESH_MS while the page is open and seen, less often after a
    // failure; the last good answer stays on screen meanwhile.
    let answer = Refresh::new(REFRESH_MS).resource(move || {
        let by = by.get();
        async move { api::overview(session, &by).await }
    });
    let Latest { value: shown, error } = Latest::of(answer);

    // Memos: what is built once the first answer is in is not built again with every answer.
    let loaded = Memo::new(move |_| shown.with(Option::is_some));
    let connected = Signal::derive(move || {
        shown
            .with(|o| o.as_ref().map(|o| o.connected.iter().map(|p| (p.start, p.connected)).collect::<Points>()))
            .unwrap_or_default()
    });
    let messages = Signal::derive(move || {
        shown
            .with(|o| {
                o.as_ref()
                    .and_then(|o| o.activity.as_ref())
                    .map(|a| a.iter().map(|b| (b.start, Some(b.messages))).collect())
            })
            .unwrap_or_default()
    });
    let groups = Signal::derive(move || {
        shown
            .with(|o| {
                o.as_ref().map(|o| o.alert_groups.iter().map(|g| (g.value.clone(), g.alerts)).collect::<Vec<_>>())
            })
            .unwrap_or_default()
    });
    let pick = Callback::new(move |value: Option<Value>| {
        let path = by.get_untracked();
        let condition = match value {
            None => format!("NOT IS_DEFINED({path})"),
            // An object or an array is no literal of the query language: nothing to filter by.
            Some(Value::Object(_) | Value::Array(_)) => return,
            Some(v) => format!("{path} = {}", literal(&v)),
        };
        let _ = window().location().set_href(&fleet_link(Some(&condition)));
    });

    view! {
        <section class="card overview">
            <div class="overview-head">
                <h1>"Overview"</h1>
                <span class="hint" aria-live="off">{move || shown.with(|o| o.as_ref().map(|o| {
                    format!("last hour to {}, updated every {} s", clock(o.to), REFRESH_MS / 1000)
                }))}</span>
            </div>
            {move || error.get().map(|e| view! {
                <p class="error overview-error" role="alert">"The overview could not be loaded: " {e}
                    " " <a href="/fleet">"Open the fleet"</a></p>
            })}
            {move || (shown.with(Option::is_none) && error.with(Option::is_none)).then(|| view! {
                <p class="hint loading" role="status">"Loading the overview..."</p>
            })}
            {move || loaded.get().then(|| figures(shown))}
            <div class="overview-charts">
                <figure class="overview-chart">
                    <figcaption>"Connected devices, last hour"</figcaption>
                    <CountChart points=connected label="Connected devices per minute over the last hour" />
                </figure>
                <figure class="overview-chart">
                    <figcaption>"Messages per minute, last hour"</figcaption>
                    {move || shown.with(|o| o.as_ref().is_some_and(|o| o.activity.is_none())).then(|| view! {
                        <p class="hint">"The event stream is off (EVENTHUB_PARTITIONS=0): no message counts."</p>
                    })}
                    <CountChart points=messages label="Device-to-cloud messages per minute over the last hour" />
                </figure>
                <figure class="overview-chart alerts-by">
                    <figcaption>
                        <label for="alerts-by">"Alerts in the last hour by "</label>
                        <input id="alerts-by" type="text" list="alerts-by-paths" prop:value=move || by.get()
                            on:change=move |ev| {
                                let path = event_target_value(&ev);
                                if !path.trim().is_empty() {
                                    by.set(path.trim().to_owned());
                                }
                            } />
                        <datalist id="alerts-by-paths">
                            {BREAKDOWNS.into_iter().map(|p| view! { <option value=p></option> }).collect_view()}
                        </datalist>
                    </figcaption>
                    {move || shown.with(|o| o.as_ref().is_some_and(|o| o.alert_groups.is_empty())).then(|| view! {
                        <p class="hint no-alerts">"No alerts in the last hour."</p>
                    })}
                    <GroupChart groups=groups on_pick=pick counts="Alerts" />
                </figure>
            </div>
        </section>
    }
}

/// The figures, each a link to what lists it. Built once, their values following the
/// answers: a focused link keeps its focus through the refreshes.
fn figures(shown: RwSignal<Option<Overview>>) -> impl IntoView {
    let value =
        move |read: fn(&Overview) -> String| move || shown.with(|o| o.as_ref().map_or_else(|| "-".to_owned(), read));
    let figure =
        move |class: &'static str, read: fn(&Overview) -> String, label: &'static str, href: Option<String>| {
            let inner = view! {
                <span class="figure-value">{value(read)}</span>
                <span class="figure-label">{label}</span>
            };
            match href {
                Some(href) => view! { <li><a class=format!("figure {class}") href=href>{inner}</a></li> }.into_any(),
                None => view! { <li><span class=format!("figure {class}")>{inner}</span></li> }.into_any(),
            }
        };
    let fleet = |condition: Option<&str>| Some(fleet_link(condition));
    view! {
        <ul class="figures" aria-label="The fleet now">
            {figure("total", |o| o.devices.total.to_string(), "devices", fleet(None))}
            {figure("connected", |o| o.devices.connected.to_string(), "connected", fleet(Some("connectionState = 'Connected'")))}
            {figure("disconnected", |o| o.devices.disconnected.to_string(), "disconnected", fleet(Some("connectionState = 'Disconnected'")))}
            {figure("disabled", |o| o.devices.disabled.to_string(), "disabled", fleet(Some("status = 'disabled'")))}
            {figure("drifting", |o| o.devices.drifting.to_string(), "drifting (desired ≠ reported)", fleet(Some("IS_DRIFTING()")))}
            {figure("refused", |o| o.devices.refused.to_string(), "refused a setting", fleet(Some("HAS_REFUSED()")))}
            {figure("alerts", |o| o.alerts.to_string(), "alerts, last hour", Some("/fleet#alerts".to_owned()))}
            {figure("messages", last_minute, "messages, last minute", Some("/fleet#fleet-telemetry".to_owned()))}
            {figure("lag", |o| format!("{} ms", o.index_lag_ms), "index lag (p99)", None)}
            {figure("jobs", |o| o.jobs.jobs.to_string(), "jobs under way", Some("/jobs".to_owned()))}
            {figure("rollouts", |o| o.jobs.rollouts.to_string(), "of which rollouts", Some("/jobs".to_owned()))}
        </ul>
    }
}

/// The last whole minute's messages (the current one is still filling).
fn last_minute(o: &Overview) -> String {
    o.activity.as_ref().and_then(|a| a.iter().rev().nth(1)).map_or_else(|| "-".to_owned(), |b| b.messages.to_string())
}

/// `HH:MM` (UTC) of a Unix ms time.
fn clock(ms: u64) -> String {
    twinhub_core::UnixMillis(ms).to_iso().get(11..16).unwrap_or_default().to_owned()
}
