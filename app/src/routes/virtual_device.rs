//! The virtual device page: the article's device running in this tab, with fault injection.
//!
//! Devices come from a device connection string (in the URL fragment, as the device page's
//! "Run as virtual device" link passes it, or pasted), or, for a signed-in operator, N new devices
//! created for a fleet demo. Fault controls apply to every device in the tab; the traffic log and
//! configuration shown are the selected device's.

use crate::api;
use crate::session::Session;
use crate::virtual_runner::{DeviceView, Runner};
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::collections::BTreeSet;
use twinhub_core::auth::{ConnectionString, Credential};
use twinhub_core::virtual_device::{Faults, Status};

/// Most devices one tab runs.
const MAX_DEVICES: usize = 100;
/// The desired properties the device understands, each of which can be refused.
const PROPERTIES: [&str; 3] = ["telemetryInterval", "temperatureThreshold", "firmwareVersion"];

/// The virtual device page.
#[component]
pub fn VirtualDevicePage() -> impl IntoView {
    let session = expect_context::<Session>();
    let runners = StoredValue::new_local(Vec::<Runner>::new());
    let views = RwSignal::new(Vec::<RwSignal<DeviceView>>::new());
    let selected = RwSignal::new(0usize);
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let online = RwSignal::new(true);
    let latency = RwSignal::new(0u32);
    let skew_secs = RwSignal::new(0i64);
    let rejected = RwSignal::new(BTreeSet::<String>::new());

    let start = move |runner: Runner| {
        runner.set_online(true);
        views.update(|v| v.push(runner.view));
        runners.update_value(|r| r.push(runner));
    };
    let run_connection_string = move |text: &str| match ConnectionString::parse(text.trim()) {
        Ok(ConnectionString { host_name, credential: Credential::Device { device_id, key } }) => {
            error.set(None);
            start(Runner::new(host_name, device_id, key, js_sys::Date::now() as u64));
        }
        Ok(_) => error.set(Some(
            "That is a policy connection string; paste a device's (HostName=...;DeviceId=...;SharedAccessKey=...)."
                .into(),
        )),
        Err(e) => error.set(Some(format!("Not a connection string: {e}"))),
    };

    // A device connection string in the fragment (`#device=...`) starts at once; the fragment is then
    // removed so the key does not linger in the address bar or history.
    if let Some(cs) = crate::session::take_fragment("device") {
        run_connection_string(&cs);
    }
    on_cleanup(move || runners.with_value(|r| r.iter().for_each(Runner::stop)));

    let apply_faults = move || {
        let faults = Faults { reject: rejected.get_untracked(), clock_skew_ms: skew_secs.get_untracked() * 1000 };
        runners.with_value(|r| {
            for runner in r {
                runner.set_faults(faults.clone());
                runner.set_latency(latency.get_untracked());
            }
        });
    };

    let pasted = RwSignal::new(String::new());
    let count = RwSignal::new(10usize);
    let prefix = RwSignal::new("virtual".to_owned());
    let spawn = move |_| {
        let n = count.get_untracked().clamp(1, MAX_DEVICES);
        let prefix = prefix.get_untracked();
        busy.set(true);
        spawn_local(async move {
            let first = runners.with_value(Vec::len);
            for k in 0..n {
                let id = format!("{prefix}-{}", first + k + 1);
                match api::create_device(session, &id).await {
                    Ok(device) => {
                        start(Runner::new(
                            session.host_name(),
                            id,
                            device.primary_key().to_owned(),
                            (first + k) as u64,
                        ));
                    }
                    Err(e) => {
                        error.set(Some(format!("Creating {id}: {e}")));
                        break;
                    }
                }
            }
            apply_faults();
            busy.set(false);
        });
    };

    view! {
        <section class="card virtual">
            <h1>"Virtual device"</h1>
            <p class="hint">
                "The article's device, running in this tab over MQTT-over-WebSocket: it applies desired "
                "properties, reports, sends telemetry every telemetryInterval seconds, and answers the "
                <code>"reboot"</code> " and " <code>"getConfig"</code> " methods."
            </p>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <details class="add" open=move || views.with(Vec::is_empty)>
                <summary>"Add devices"</summary>
                <form on:submit=move |ev| {
                    ev.prevent_default();
                    run_connection_string(&pasted.get_untracked());
                    pasted.set(String::new());
                }>
                    <label for="vd-cs">"Device connection string"</label>
                    <input id="vd-cs" type="password" autocomplete="off" placeholder="HostName=...;DeviceId=...;SharedAccessKey=..."
                        prop:value=move || pasted.get() on:input=move |ev| pasted.set(event_target_value(&ev)) />
                    <button type="submit">"Run"</button>
                </form>
                {move || session.signed_in().then(|| view! {
                    <div class="spawn">
                        <label for="vd-count">"Or create and run"</label>
                        <input id="vd-count" type="number" min="1" max="100" prop:value=move || count.get().to_string()
                            on:input=move |ev| count.set(event_target_value(&ev).parse().unwrap_or(1)) />
                        <label for="vd-prefix">"devices named"</label>
                        <input id="vd-prefix" type="text" prop:value=move || prefix.get()
                            on:input=move |ev| prefix.set(event_target_value(&ev)) />
                        <button on:click=spawn disabled=move || busy.get()>
                            {move || if busy.get() { "Creating..." } else { "Spawn" }}
                        </button>
                    </div>
                })}
            </details>

            <Show when=move || !views.with(Vec::is_empty)>
                <fieldset class="faults">
                    <legend>"Faults (every device in this tab)"</legend>
                    <label>
                        <input type="checkbox" class="vd-online" prop:checked=move || online.get() on:change=move |ev| {
                            let on = event_target_checked(&ev);
                            online.set(on);
                            runners.with_value(|r| r.iter().for_each(|x| x.set_online(on)));
                        } />
                        " Online"
                    </label>
                    <button class="vd-drop" on:click=move |_| runners.with_value(|r| r.iter().for_each(Runner::drop_link))>
                        "Drop the link"
                    </button>
                    <label>"Latency (ms) "
                        <input type="number" class="vd-latency" min="0" max="10000" prop:value=move || latency.get().to_string()
                            on:change=move |ev| { latency.set(event_target_value(&ev).parse().unwrap_or(0)); apply_faults(); } />
                    </label>
                    <label>"Clock skew (s) "
                        <input type="number" class="vd-skew" prop:value=move || skew_secs.get().to_string()
                            on:change=move |ev| { skew_secs.set(event_target_value(&ev).parse().unwrap_or(0)); apply_faults(); } />
                    </label>
                    <span>"Refuse: "</span>
                    {PROPERTIES.into_iter().map(|name| view! {
                        <label>
                            <input type="checkbox" class=format!("vd-reject-{name}") prop:checked=move || rejected.with(|r| r.contains(name))
                                on:change=move |ev| {
                                    let on = event_target_checked(&ev);
                                    rejected.update(|r| { if on { r.insert(name.to_owned()); } else { r.remove(name); } });
                                    apply_faults();
                                } />
                            " " {name}
                        </label>
                    }).collect_view()}
                </fieldset>

                <table class="fleet vd-devices">
                    <thead><tr><th>"Device"</th><th>"State"</th><th>"Interval"</th><th>"Threshold"</th><th>"Firmware"</th></tr></thead>
                    <tbody>
                        {move || views.get().into_iter().enumerate().map(|(i, v)| {
                            let d = v.get();
                            let firmware = match &d.firmware_update {
                                Some(next) => format!("{} → {next} (downloading)", d.config.firmware_version),
                                None => d.config.firmware_version.clone(),
                            };
                            view! {
                                <tr class:selected=move || selected.get() == i on:click=move |_| selected.set(i)>
                                    <td><a href=format!("/device/{}", d.device_id)>{d.device_id.clone()}</a></td>
                                    <td><span class=format!("badge state {}", status_class(d.status))>{status_label(d.status)}</span></td>
                                    <td class="vd-interval">{format!("{} s", d.config.telemetry_interval)}</td>
                                    <td>{format!("{} °C", d.config.temperature_threshold)}</td>
                                    <td class="vd-firmware">{firmware}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>

                <h2>"Traffic" {move || views.with(|v| v.get(selected.get()).map(|d| format!(" of {}", d.with(|d| d.device_id.clone()))))}</h2>
                <table class="fleet vd-log">
                    <thead><tr><th>""</th><th>"Time"</th><th>"Topic"</th><th>"Payload"</th></tr></thead>
                    <tbody>
                        {move || views.with(|v| v.get(selected.get()).copied()).map(|d| d.with(|d| d.log.iter().map(|line| {
                            let dir = if line.outgoing { "↑" } else { "↓" };
                            let title = if line.outgoing { "device to hub" } else { "hub to device" };
                            let time = line.at.to_iso();
                            view! {
                                <tr>
                                    <td title=title>{dir}</td>
                                    <td class="muted">{time.get(11..19).unwrap_or_default().to_owned()}</td>
                                    <td><code>{line.topic.clone()}</code></td>
                                    <td><code>{line.payload.clone()}</code></td>
                                </tr>
                            }
                        }).collect_view()))}
                    </tbody>
                </table>
            </Show>
        </section>
    }
}

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Offline => "offline",
        Status::Waiting => "reconnecting",
        Status::Connecting => "connecting",
        Status::Online => "online",
        Status::Refused => "refused (check the key)",
    }
}

fn status_class(status: Status) -> &'static str {
    match status {
        Status::Online => "ok",
        Status::Connecting | Status::Waiting => "pending",
        Status::Offline | Status::Refused => "off",
    }
}
