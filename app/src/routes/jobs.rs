//! Jobs: create a twin update, a staged rollout or a direct method over the fleet's current
//! query (the fleet page links here with `?where=`), and follow each job's progress (bar,
//! counts, rate, ETA), per-device outcomes, and pause / resume / cancel / roll back.
//!
//! The condition is checked as it is typed by the same core function the hub runs
//! (`twinhub_core::job::request::condition_query`); the list refreshes every second while the
//! page is open.

use crate::access::Access;
use crate::api;
use crate::session::Session;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_query_map;
use serde_json::{json, Value};
use std::collections::HashMap;
use twinhub_core::job::request::condition_query;
use twinhub_core::wire::{DeviceJobView, JobView};

/// How often the list is fetched again.
const REFRESH_MS: u64 = 1_000;
/// Per-device outcomes shown for one job.
const OUTCOMES_SHOWN: usize = 100;

/// What kind of job the form makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Update,
    Method,
}

/// First sighting of a job's progress, for its rate: (time ms, devices settled).
type Seen = HashMap<String, (f64, u64)>;

/// The jobs page.
#[component]
pub fn JobsPage() -> impl IntoView {
    let session = expect_context::<Session>();
    let access = expect_context::<Access>();
    if !session.signed_in() {
        let _ = window().location().set_href("/signin");
    }
    let read_only = Signal::derive(move || access.is_read_only());
    let initial = use_query_map().with_untracked(|q| q.get("where")).unwrap_or_else(|| "*".to_owned());

    let jobs = RwSignal::new(Vec::<JobView>::new());
    let loaded = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let notice = RwSignal::new(None::<Result<String, String>>);
    let first_seen = StoredValue::new(Seen::new());
    let refresh = move || {
        spawn_local(async move {
            match api::jobs(session).await {
                Ok(list) => {
                    error.set(None);
                    jobs.set(list);
                }
                Err(e) => error.set(Some(e.to_string())),
            }
            loaded.set(true);
        });
    };
    refresh();
    if let Ok(handle) = set_interval_with_handle(refresh, std::time::Duration::from_millis(REFRESH_MS)) {
        on_cleanup(move || handle.clear());
    }

    // The form.
    let job_id = RwSignal::new(format!("job-{}", js_sys::Date::now() as u64));
    let condition = RwSignal::new(initial);
    let kind = RwSignal::new(Kind::Update);
    let desired = RwSignal::new("{\n  \"firmwareVersion\": \"2.1.0\"\n}".to_owned());
    let method_name = RwSignal::new("reboot".to_owned());
    let payload = RwSignal::new("{}".to_owned());
    let staged = RwSignal::new(false);
    let canary = RwSignal::new(10u32);
    let threshold = RwSignal::new(10u32);
    let deadline = RwSignal::new(600u32);
    let condition_error = Signal::derive(move || condition.with(|c| condition_query(c).err().map(|e| e.message)));

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let id = job_id.get_untracked().trim().to_owned();
        let request = match build_request(
            kind.get_untracked(),
            &condition.get_untracked(),
            &desired.get_untracked(),
            &method_name.get_untracked(),
            &payload.get_untracked(),
            staged
                .get_untracked()
                .then(|| (canary.get_untracked(), threshold.get_untracked(), deadline.get_untracked())),
        ) {
            Ok(r) => r,
            Err(e) => return notice.set(Some(Err(e))),
        };
        spawn_local(async move {
            match api::create_job(session, &id, &request).await {
                Ok(_) => {
                    notice.set(Some(Ok(format!("Started job {id}."))));
                    job_id.set(format!("job-{}", js_sys::Date::now() as u64));
                    refresh();
                }
                Err(e) => notice.set(Some(Err(e.to_string()))),
            }
        });
    };
    let act = Callback::new(move |(id, action): (String, &'static str)| {
        if action == "rollback"
            && !window()
                .confirm_with_message(&format!("Roll back job {id}? Every device it changed gets its previous values."))
                .unwrap_or(false)
        {
            return;
        }
        spawn_local(async move {
            match api::job_action(session, &id, action).await {
                Ok(job) => notice.set(Some(Ok(format!("Job {id}: {}.", job.status)))),
                Err(e) => notice.set(Some(Err(e.to_string()))),
            }
            refresh();
        });
    });

    view! {
        <section class="card">
            <h1>"Jobs"</h1>
            {move || access.read_only.get().map(|why| view! { <p class="hint read-only-reason">{why}</p> })}
            <form class="new-job" on:submit=submit>
                <h2>"New job"</h2>
                <label>"Job id " <input id="job-id" type="text" prop:value=move || job_id.get()
                    on:input=move |ev| job_id.set(event_target_value(&ev)) /></label>
                <label for="job-condition">"Devices: the WHERE condition of a query, or * for all"</label>
                <textarea id="job-condition" rows="2" prop:value=move || condition.get()
                    on:input=move |ev| condition.set(event_target_value(&ev))></textarea>
                {move || condition_error.get().map(|e| view! { <p class="error condition-error" role="alert">{e}</p> })}
                <fieldset>
                    <legend>"What to do"</legend>
                    <label><input type="radio" name="job-kind" class="kind-update" checked=move || kind.get() == Kind::Update
                        on:change=move |_| kind.set(Kind::Update) />" Update desired properties"</label>
                    <label><input type="radio" name="job-kind" class="kind-method" checked=move || kind.get() == Kind::Method
                        on:change=move |_| kind.set(Kind::Method) />" Call a direct method"</label>
                </fieldset>
                {move || match kind.get() {
                    Kind::Update => view! {
                        <label for="job-desired">"Desired properties (merge patch)"</label>
                        <textarea id="job-desired" rows="4" prop:value=move || desired.get()
                            on:input=move |ev| desired.set(event_target_value(&ev))></textarea>
                        <label><input type="checkbox" class="job-staged" prop:checked=move || staged.get()
                            disabled=move || access.unavailable("rollouts").is_some()
                            on:change=move |ev| staged.set(event_target_checked(&ev)) />
                            " Staged rollout (a canary wave first; pauses itself on refusals or late devices)"</label>
                        {move || access.unavailable("rollouts").map(|why| view! { <p class="hint unavailable">{why}</p> })}
                        {move || staged.get().then(|| view! {
                            <div class="rollout-settings">
                                <label>"Canary % " <input type="number" min="1" max="99" class="job-canary" prop:value=move || canary.get().to_string()
                                    on:input=move |ev| canary.set(event_target_value(&ev).parse().unwrap_or(10)) /></label>
                                <label>"Pause above % refused " <input type="number" min="0" max="100" class="job-threshold" prop:value=move || threshold.get().to_string()
                                    on:input=move |ev| threshold.set(event_target_value(&ev).parse().unwrap_or(10)) /></label>
                                <label>"Wave deadline (s) " <input type="number" min="1" class="job-deadline" prop:value=move || deadline.get().to_string()
                                    on:input=move |ev| deadline.set(event_target_value(&ev).parse().unwrap_or(600)) /></label>
                            </div>
                        })}
                    }.into_any(),
                    Kind::Method => view! {
                        <label>"Method " <input type="text" class="job-method" prop:value=move || method_name.get()
                            on:input=move |ev| method_name.set(event_target_value(&ev)) /></label>
                        <label for="job-payload">"Payload (JSON)"</label>
                        <textarea id="job-payload" rows="2" prop:value=move || payload.get()
                            on:input=move |ev| payload.set(event_target_value(&ev))></textarea>
                    }.into_any(),
                }}
                <button type="submit" class="start-job" disabled=move || read_only.get() || condition_error.with(Option::is_some)>"Start job"</button>
            </form>
            {move || notice.get().map(|n| match n {
                Ok(m) => view! { <p class="ok notice" role="status">{m}</p> }.into_any(),
                Err(m) => view! { <p class="error notice" role="alert">{m}</p> }.into_any(),
            })}
        </section>
        <section class="card">
            <h2>"All jobs"</h2>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            {move || (!loaded.get()).then(|| view! { <p class="hint" role="status">"Loading jobs..."</p> })}
            {move || (loaded.get() && jobs.with(Vec::is_empty)).then(|| view! { <p class="hint">"No jobs yet."</p> })}
            <table class="jobs">
                <thead><tr><th>"Job"</th><th>"Type"</th><th>"Status"</th><th>"Progress"</th><th>"Rate, ETA"</th><th>"Actions"</th></tr></thead>
                <tbody>
                    <For each=move || jobs.get() key=|j| (j.job_id.clone(), serde_json::to_string(j).unwrap_or_default()) let:job>
                        <JobRow job=job first_seen=first_seen act=act read_only=read_only />
                    </For>
                </tbody>
            </table>
        </section>
    }
}

/// One job's row, with its controls and (on demand) its per-device outcomes.
#[component]
fn JobRow(
    job: JobView,
    first_seen: StoredValue<Seen>,
    act: Callback<(String, &'static str)>,
    read_only: Signal<bool>,
) -> impl IntoView {
    let session = expect_context::<Session>();
    let access = expect_context::<Access>();
    // Pause, resume and rollback are twinhub's own (off in upstream mode).
    let own = access.unavailable("rollouts").is_none();
    let id = job.job_id.clone();
    let status = job.status.clone();
    let stats = job.device_job_statistics;
    let (total, succeeded, failed) = (stats.device_count, stats.succeeded_count, stats.failed_count);
    let settled = succeeded + failed;
    let (rate, eta) = rate_and_eta(first_seen, &id, &status, settled, total);
    let is_update = job.is_twin_update();
    let is_final = matches!(status.as_str(), "completed" | "failed" | "cancelled" | "rolledBack");
    let wave = job.rollout.as_ref().map(|r| format!(" · wave {} of {}", r.current_wave, r.waves.len()));
    let message = job.note().map(str::to_owned);
    let outcomes = RwSignal::new(None::<Result<Vec<DeviceJobView>, String>>);
    let show_outcomes = {
        let id = id.clone();
        move |_| {
            if outcomes.with_untracked(Option::is_some) {
                return outcomes.set(None);
            }
            let q =
                format!("SELECT * FROM devices.jobs WHERE jobId = '{}'", id.replace('\\', "\\\\").replace('\'', "\\'"));
            spawn_local(async move {
                let result = api::query(session, &q, None)
                    .await
                    .map(|p| p.items.into_iter().filter_map(|d| serde_json::from_value(d).ok()).collect::<Vec<_>>())
                    .map_err(|e| e.to_string());
                outcomes.set(Some(result.map(|mut items| {
                    items.truncate(OUTCOMES_SHOWN);
                    items
                })));
            });
        }
    };
    let button = move |label: &'static str, action: &'static str, shown: bool| {
        let id = id.clone();
        shown.then(|| {
            view! {
                <button class=format!("link job-{action}") disabled=move || read_only.get()
                    on:click=move |_| act.run((id.clone(), action))>{label}</button>
            }
        })
    };
    let row_id = job.job_id.clone();
    view! {
        <tr class="job" data-job-id=row_id data-status=status.clone()>
            <td><strong>{job.job_id.clone()}</strong>
                <div class="muted"><code>{job.query_condition.clone()}</code></div></td>
            <td>{if is_update { if job.rollout.is_some() { "rollout" } else { "twin update" } } else { "direct method" }}</td>
            <td><span class=format!("job-status status-{status}")>{status.clone()}</span>{wave}
                {message.map(|m| view! { <div class="muted job-message">{m}</div> })}</td>
            <td>
                <progress max=total.max(1) value=settled aria-label="devices done"></progress>
                <div class="muted job-counts">{format!("{succeeded} succeeded, {failed} failed, {} left of {total}", total - settled.min(total))}</div>
            </td>
            <td class="muted">{rate}<br/>{eta}</td>
            <td class="job-actions">
                {button("Pause", "pause", own && matches!(status.as_str(), "running" | "queued" | "scheduled"))}
                {button("Resume", "resume", own && status == "paused")}
                {button("Cancel", "cancel", !is_final)}
                {button("Roll back", "rollback", own && is_update && status != "rolledBack")}
                <button class="link job-devices" on:click=show_outcomes>"Devices"</button>
            </td>
        </tr>
        {move || outcomes.get().map(|r| view! {
            <tr class="job-outcomes"><td colspan="6">{match r {
                Err(e) => view! { <p class="error">{e}</p> }.into_any(),
                Ok(items) => view! {
                    <table class="outcomes">
                        <thead><tr><th>"Device"</th><th>"Status"</th><th>"Outcome"</th></tr></thead>
                        <tbody>{items.into_iter().map(|d| {
                            let detail = match (&d.error, &d.outcome) {
                                (Some(e), _) => format!("{}: {}", e.code, e.description),
                                (None, Some(outcome)) if outcome.is_object() => outcome.to_string(),
                                _ => String::new(),
                            };
                            view! {
                                <tr data-device-id=d.device_id.clone()>
                                    <td><a href=format!("/device/{}", d.device_id)>{d.device_id.clone()}</a></td>
                                    <td class="device-job-status">{d.status.clone()}</td>
                                    <td><code>{detail}</code></td>
                                </tr>
                            }
                        }).collect_view()}</tbody>
                    </table>
                }.into_any(),
            }}</td></tr>
        })}
    }
}

/// Devices per second since this page first saw the job running, and the time left at that
/// rate ("-" before there is a rate).
fn rate_and_eta(first_seen: StoredValue<Seen>, id: &str, status: &str, settled: u64, total: u64) -> (String, String) {
    let now = js_sys::Date::now();
    if status != "running" {
        return ("-".into(), if status == "completed" { "done".into() } else { "-".into() });
    }
    let (t0, s0) = first_seen.with_value(|m| m.get(id).copied()).unwrap_or_else(|| {
        first_seen.update_value(|m| {
            m.insert(id.to_owned(), (now, settled));
        });
        (now, settled)
    });
    let secs = (now - t0) / 1000.0;
    if secs < 0.5 || settled <= s0 {
        return ("-".into(), "-".into());
    }
    let rate = (settled - s0) as f64 / secs;
    let left = total.saturating_sub(settled) as f64 / rate;
    (format!("{rate:.0} devices/s"), format!("about {left:.0} s left"))
}

/// The JobRequest the form describes.
fn build_request(
    kind: Kind,
    condition: &str,
    desired: &str,
    method: &str,
    payload: &str,
    rollout: Option<(u32, u32, u32)>,
) -> Result<Value, String> {
    let mut request = json!({ "queryCondition": condition.trim(), "maxExecutionTimeInSeconds": 3600 });
    match kind {
        Kind::Update => {
            let desired: Value =
                serde_json::from_str(desired).map_err(|e| format!("The desired properties are not JSON: {e}"))?;
            request["type"] = json!("scheduleUpdateTwin");
            request["updateTwin"] = json!({ "etag": "*", "properties": { "desired": desired } });
            if let Some((canary, threshold, deadline)) = rollout {
                request["rollout"] = json!({
                    "canaryPercent": canary, "failureThresholdPercent": threshold, "waveDeadlineSeconds": deadline,
                });
            }
        }
        Kind::Method => {
            let payload: Value = serde_json::from_str(payload).map_err(|e| format!("The payload is not JSON: {e}"))?;
            request["type"] = json!("scheduleDeviceMethod");
            request["cloudToDeviceMethod"] =
                json!({ "methodName": method.trim(), "payload": payload, "responseTimeoutInSeconds": 30 });
        }
    }
    Ok(request)
}
