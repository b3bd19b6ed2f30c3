//! What an operator does to a device besides editing its twin: call a direct method, send a
//! cloud-to-device message ([`MethodsPanel`]), enable or disable it, regenerate its keys
//! ([`IdentityActions`]). Each shows that it is under way, then the hub's answer or its error
//! in words.

use crate::access::Access;
use crate::api;
use crate::session::Session;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::{json, Value};
use twinhub_core::wire::device::SymmetricKey;
use twinhub_core::wire::Identity;

/// Whether a request is under way, or the hub's answer (or error) in words.
type Outcome = RwSignal<Option<Result<String, String>>>;

/// What the operator typed into the forms and what the hub answered. The page owns it, so a
/// typed payload and an answer that comes back late (a method may wait 300 s for its device)
/// outlive the panel: the device page mounts only the chosen tab.
#[derive(Clone, Copy)]
pub struct ActionsState {
    method: RwSignal<String>,
    payload: RwSignal<String>,
    timeout: RwSignal<u64>,
    connect_timeout: RwSignal<u64>,
    method_result: Outcome,
    calling: RwSignal<bool>,
    message: RwSignal<String>,
    message_result: Outcome,
    sending: RwSignal<bool>,
    identity_result: Outcome,
    updating: RwSignal<bool>,
}

impl Default for ActionsState {
    fn default() -> Self {
        Self {
            method: RwSignal::new("getConfig".to_owned()),
            payload: RwSignal::new("{}".to_owned()),
            timeout: RwSignal::new(30),
            connect_timeout: RwSignal::new(0),
            method_result: RwSignal::new(None),
            calling: RwSignal::new(false),
            message: RwSignal::new(String::new()),
            message_result: RwSignal::new(None),
            sending: RwSignal::new(false),
            identity_result: RwSignal::new(None),
            updating: RwSignal::new(false),
        }
    }
}

/// An answer under a form: `ok` (a status) or `error` (an alert), plus `class`.
fn outcome(r: Outcome, class: &'static str) -> impl IntoView {
    move || {
        r.get().map(|r| match r {
            Ok(m) => view! { <p class=format!("ok {class}") role="status">{m}</p> }.into_any(),
            Err(m) => view! { <p class=format!("error {class}") role="alert">{m}</p> }.into_any(),
        })
    }
}

/// Direct methods and, for a device, cloud-to-device messages.
#[component]
pub fn MethodsPanel(device_id: String, state: ActionsState) -> impl IntoView {
    let session = expect_context::<Session>();
    let access = expect_context::<Access>();
    let read_only = move || access.is_read_only();
    // A module (the id is its key, `{device}/{module}`) takes no cloud-to-device messages, as
    // in IoT Hub: that form is a device's only.
    let is_module = twinhub_core::identity::is_module_key(&device_id);
    let ActionsState { method, payload, timeout, connect_timeout, method_result, calling, .. } = state;
    let ActionsState { message, message_result, sending, .. } = state;

    let id = device_id.clone();
    let call = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let payload: Value = match serde_json::from_str(&payload.get_untracked()) {
            Ok(v) => v,
            Err(e) => return method_result.set(Some(Err(format!("The payload is not JSON: {e}")))),
        };
        let body = json!({
            "methodName": method.get_untracked(),
            "payload": payload,
            "responseTimeoutInSeconds": timeout.get_untracked(),
            "connectTimeoutInSeconds": connect_timeout.get_untracked(),
        });
        let id = id.clone();
        calling.set(true);
        method_result.set(None);
        spawn_local(async move {
            let result = api::invoke_method(session, &id, &body).await;
            method_result.set(Some(match result {
                Ok(v) => Ok(format!("status {}: {}", v.status, v.payload)),
                Err(e) => Err(e.to_string()),
            }));
            calling.set(false);
        });
    };

    let id = device_id;
    let send = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let id = id.clone();
        let body = json!({ "payload": message.get_untracked() });
        sending.set(true);
        message_result.set(None);
        spawn_local(async move {
            message_result.set(Some(match api::send_message(session, &id, &body).await {
                Ok(v) => Ok(format!("Queued as {}; delivered when the device is subscribed.", v.message_id)),
                Err(e) => Err(e.to_string()),
            }));
            sending.set(false);
        });
    };

    view! {
        <h2>"Direct method"</h2>
        <form class="method-form" on:submit=call>
            <label for="method-name">"Method"</label>
            <input id="method-name" type="text" prop:value=move || method.get() on:input=move |ev| method.set(event_target_value(&ev)) />
            <label for="method-payload">"Payload (JSON)"</label>
            <textarea id="method-payload" rows="2" prop:value=move || payload.get() on:input=move |ev| payload.set(event_target_value(&ev))></textarea>
            <label for="method-timeout">"Response timeout (s, 5-300)"</label>
            <input id="method-timeout" type="number" min="5" max="300" prop:value=move || timeout.get().to_string()
                on:input=move |ev| timeout.set(event_target_value(&ev).parse().unwrap_or(30)) />
            <label for="method-connect">"Wait for the device to connect (s, 0-300)"</label>
            <input id="method-connect" type="number" min="0" max="300" prop:value=move || connect_timeout.get().to_string()
                on:input=move |ev| connect_timeout.set(event_target_value(&ev).parse().unwrap_or(0)) />
            <button type="submit" class="invoke" disabled=move || calling.get() || read_only()>
                {move || if calling.get() { "Waiting for the device..." } else { "Invoke" }}
            </button>
        </form>
        {move || calling.get().then(|| view! { <p class="hint" role="status">"Calling the method..."</p> })}
        {outcome(method_result, "method-result")}

        {(!is_module).then(|| view! {
            <h2>"Cloud-to-device message"</h2>
            {move || access.unavailable("messages").map(|why| view! { <p class="hint unavailable">{why}</p> })}
            <form class="c2d-form" on:submit=send>
                <label for="c2d-payload">"Message"</label>
                <input id="c2d-payload" type="text" prop:value=move || message.get() on:input=move |ev| message.set(event_target_value(&ev)) />
                <button type="submit" disabled=move || read_only() || sending.get() || access.unavailable("messages").is_some()>
                    {move || if sending.get() { "Sending..." } else { "Send" }}
                </button>
            </form>
            {outcome(message_result, "c2d-result")}
        })}
    }
}

/// Enabling or disabling a device, and regenerating its keys. `identity` is the registry
/// entry; `on_changed` reloads it.
#[component]
pub fn IdentityActions(
    device_id: String,
    identity: Signal<Option<Identity>>,
    on_changed: Callback<()>,
    state: ActionsState,
) -> impl IntoView {
    let session = expect_context::<Session>();
    let access = expect_context::<Access>();
    let ActionsState { identity_result, updating, .. } = state;
    // A module has no status, as in IoT Hub: only its keys.
    let is_module = twinhub_core::identity::is_module_key(&device_id);
    // Off while read-only, while the identity is not read yet, and while a change is saving.
    let disabled = move || access.is_read_only() || updating.get() || identity.with(Option::is_none);

    let update_identity = move |change: Box<dyn FnOnce(&mut Identity)>, done: &'static str| {
        let Some(mut device) = identity.get_untracked() else { return };
        change(&mut device);
        let id = device_id.clone();
        updating.set(true);
        identity_result.set(None);
        spawn_local(async move {
            identity_result.set(Some(match api::put_device(session, &id, &device).await {
                Ok(_) => {
                    // `try_`: the tab that made this callback may have been left meanwhile.
                    let _ = on_changed.try_run(());
                    Ok(done.to_owned())
                }
                Err(e) => Err(e.to_string()),
            }));
            updating.set(false);
        });
    };
    let toggle = {
        let update_identity = update_identity.clone();
        move |_| {
            let enabled = identity.with_untracked(|d| d.as_ref().is_some_and(Identity::enabled));
            if enabled {
                update_identity(
                    Box::new(|d| d.status = Some("disabled".into())),
                    "Disabled: its session is closed and it cannot connect.",
                );
            } else {
                update_identity(Box::new(|d| d.status = Some("enabled".into())), "Enabled.");
            }
        }
    };
    let regenerate = move |_| {
        let confirmed = window()
            .confirm_with_message("Regenerate both keys? The device's current connection string stops working.")
            .unwrap_or(false);
        if !confirmed {
            return;
        }
        let (Some(primary), Some(secondary)) = (random_key(), random_key()) else {
            return identity_result
                .set(Some(Err("This browser offers no secure random source; the keys were not changed.".into())));
        };
        update_identity(
            Box::new(move |d| {
                d.authentication.symmetric_key =
                    SymmetricKey { primary_key: Some(primary), secondary_key: Some(secondary) }
            }),
            "New keys: copy the new connection string to the device.",
        );
    };

    view! {
        <h2>{if is_module { "Keys" } else { "Status and keys" }}</h2>
        <p class="identity-actions">
            {(!is_module).then(|| view! {
                <button class="toggle-status" on:click=toggle disabled=disabled>
                    {move || if identity.with(|d| d.as_ref().is_some_and(Identity::enabled)) { "Disable" } else { "Enable" }}
                </button>
                " "
            })}
            <button class="regenerate" on:click=regenerate disabled=disabled>"Regenerate keys"</button>
        </p>
        {move || updating.get().then(|| view! { <p class="hint" role="status">"Saving the identity..."</p> })}
        {outcome(identity_result, "identity-result")}
    }
}

/// A fresh 32-byte key, base64, from the browser's CSPRNG; `None` without one (never a weak key).
fn random_key() -> Option<String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    window().crypto().ok()?.get_random_values_with_u8_array(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}
