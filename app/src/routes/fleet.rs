//! The fleet: every device with its status and connection state.

use crate::api::{self, ApiError};
use crate::session::Session;
use leptos::prelude::*;
use serde_json::Value;

/// The fleet list.
#[component]
pub fn FleetPage() -> impl IntoView {
    let session = expect_context::<Session>();
    if !session.signed_in() {
        let _ = window().location().set_href("/signin");
    }
    let devices = LocalResource::new(move || api::list_devices(session));
    view! {
        <section class="card">
            <h1>"Fleet"</h1>
            <Suspense fallback=|| view! { <p class="hint">"Loading devices..."</p> }>
                {move || devices.get().map(|result| match result {
                    Ok(list) if list.is_empty() => view! {
                        <p class="hint">"No devices yet. Create one with " <code>"PUT /devices/{id}"</code> "."</p>
                    }.into_any(),
                    Ok(list) => device_table(list).into_any(),
                    Err(ApiError::SignedOut) => view! { <p class="hint">"Sign in to see the fleet."</p> }.into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

fn device_table(list: Vec<Value>) -> impl IntoView {
    let count = list.len();
    let rows = list
        .into_iter()
        .map(|d| {
            let id = d["deviceId"].as_str().unwrap_or_default().to_owned();
            let href =
                format!("/device/{}", percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC));
            let id_attr = id.clone();
            let status = d["status"].as_str().unwrap_or_default().to_owned();
            let connection = d["connectionState"].as_str().unwrap_or_default().to_owned();
            // IoT Hub writes "never" as year 1.
            let activity = match d["lastActivityTime"].as_str() {
                Some(t) if !t.starts_with("0001-") => t.to_owned(),
                _ => "never".to_owned(),
            };
            view! {
                <tr data-device-id=id_attr>
                    <td><a href=href>{id}</a></td>
                    <td>{status}</td>
                    <td>{connection}</td>
                    <td class="muted">{activity}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <p class="hint">{format!("{count} device(s)")}</p>
        <table class="fleet">
            <thead><tr><th>"Device"</th><th>"Status"</th><th>"Connection"</th><th>"Last activity"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}
