//! The fleet: every device with its status and connection state.

use crate::api::{self, ApiError};
use crate::session::Session;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::Value;

/// The fleet page's delete action, for the rows (asks for confirmation first).
#[derive(Clone, Copy)]
struct DeleteDevice(Callback<String>);

/// The fleet list.
#[component]
pub fn FleetPage() -> impl IntoView {
    let session = expect_context::<Session>();
    if !session.signed_in() {
        let _ = window().location().set_href("/signin");
    }
    let devices = LocalResource::new(move || api::list_devices(session));
    let new_id = RwSignal::new(String::new());
    let notice = RwSignal::new(None::<Result<String, String>>);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let id = new_id.get_untracked().trim().to_owned();
        if id.is_empty() {
            return;
        }
        spawn_local(async move {
            match api::create_device(session, &id).await {
                Ok(_) => {
                    notice.set(Some(Ok(format!("Created {id}"))));
                    new_id.set(String::new());
                    devices.refetch();
                }
                Err(e) => notice.set(Some(Err(e.to_string()))),
            }
        });
    };
    let delete = move |id: String| {
        let confirmed = window()
            .confirm_with_message(&format!("Delete device {id}? Its twin and history go with it."))
            .unwrap_or(false);
        if !confirmed {
            return;
        }
        spawn_local(async move {
            match api::delete_device(session, &id).await {
                Ok(()) => {
                    notice.set(Some(Ok(format!("Deleted {id}"))));
                    devices.refetch();
                }
                Err(e) => notice.set(Some(Err(e.to_string()))),
            }
        });
    };
    provide_context(DeleteDevice(Callback::new(delete)));
    view! {
        <section class="card">
            <h1>"Fleet"</h1>
            <form class="create-device" on:submit=create>
                <input type="text" name="device-id" placeholder="new device id" prop:value=move || new_id.get()
                    on:input=move |ev| new_id.set(event_target_value(&ev)) />
                <button type="submit">"Create device"</button>
            </form>
            {move || notice.get().map(|n| match n {
                Ok(m) => view! { <p class="ok notice">{m}</p> }.into_any(),
                Err(m) => view! { <p class="error notice">{m}</p> }.into_any(),
            })}
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
            let delete = expect_context::<DeleteDevice>().0;
            let id_for_delete = id.clone();
            view! {
                <tr data-device-id=id_attr>
                    <td><a href=href>{id}</a></td>
                    <td>{status}</td>
                    <td>{connection}</td>
                    <td class="muted">{activity}</td>
                    <td><button class="link delete" on:click=move |_| delete.run(id_for_delete.clone())>"Delete"</button></td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <p class="hint">{format!("{count} device(s)")}</p>
        <table class="fleet">
            <thead><tr><th>"Device"</th><th>"Status"</th><th>"Connection"</th><th>"Last activity"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}
