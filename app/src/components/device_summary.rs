//! The few facts an operator checks first about a device, above its tabs so every tab shows
//! them: enabled or not, connected or not and when last heard from, the firmware asked for
//! against the firmware running, how many desired properties the device has not caught up
//! with (`twinhub_core::twin::drift`), and its Plug and Play model when it announced one.

use crate::api::{self, ApiError};
use leptos::prelude::*;
use serde_json::{Map, Value};
use twinhub_core::wire::{Identity, Twin};
use twinhub_core::UnixMillis;

/// The summary. `twin` is the twin as now known (the live view's newest, else the first
/// read), `None` while it loads; `identity` is the registry entry, likewise.
#[component]
pub fn DeviceSummary(
    twin: Signal<Option<Result<Twin, ApiError>>>,
    identity: Signal<Option<Result<Identity, ApiError>>>,
) -> impl IntoView {
    view! {
        {move || twin.with(|t| match t {
            None => view! { <p class="hint" role="status">"Loading the device..."</p> }.into_any(),
            Some(Err(ApiError::SignedOut)) => view! {
                <p class="hint" role="alert">"Sign in to see this device: " <a href="/signin">"sign in"</a></p>
            }.into_any(),
            Some(Err(e)) => view! { <p class="error" role="alert">{format!("The twin did not load: {e}")}</p> }.into_any(),
            Some(Ok(t)) => {
                let status = identity.with(|i| status(i.as_ref(), t));
                facts(t, status).into_any()
            }
        })}
        // Signed out is said once, above.
        {move || identity.with(|i| match i {
            Some(Err(e)) if !matches!(e, ApiError::SignedOut) => {
                Some(view! { <p class="error" role="alert">{format!("The identity did not load: {e}")}</p> })
            }
            _ => None,
        })}
    }
}

/// The summary's list.
fn facts(t: &Twin, status: String) -> impl IntoView {
    let connection =
        Some(t.connection_state.clone()).filter(|c| !c.is_empty()).unwrap_or_else(|| "Disconnected".into());
    let connection_class = format!("connection conn {}", connection.to_lowercase());
    let (activity, datetime) = match api::parse_time(&t.last_activity_time) {
        Some(ms) => {
            let iso = UnixMillis(ms).to_iso();
            let shown = format!("{} UTC", iso.get(..19).unwrap_or(&iso).replace('T', " "));
            (shown, Some(iso))
        }
        None => ("never".to_owned(), None),
    };
    let desired = firmware(&t.properties.desired);
    let reported = firmware(&t.properties.reported);
    let firmware_class = match (&desired, &reported) {
        (Some(d), Some(r)) if d == r => "firmware drift ok",
        (Some(_), _) => "firmware drift pending",
        _ => "firmware",
    };
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let firmware = format!("{} → {}", dash(desired), dash(reported));
    let drift = t.drift_count();
    let (drift_class, drift_text) = match drift {
        0 => ("drift-count drift ok", "0 (caught up)".to_owned()),
        n => ("drift-count drift pending", format!("{n} not caught up")),
    };
    let model = Some(t.model_id.as_str()).filter(|m| !m.is_empty()).map(|m| {
        let components: Vec<&str> = t
            .properties
            .reported
            .iter()
            .filter(|(_, v)| twinhub_core::pnp::is_component(v))
            .map(|(k, _)| k.as_str())
            .collect();
        let listed =
            if components.is_empty() { String::new() } else { format!(" (components: {})", components.join(", ")) };
        view! {
            <div class="fact"><dt>"Model"</dt><dd class="model-id"><code>{m.to_owned()}</code>{listed}</dd></div>
        }
    });
    view! {
        <dl class="device-summary">
            <div class="fact"><dt>"Status"</dt><dd class=format!("status {status}")>{status.clone()}</dd></div>
            <div class="fact"><dt>"Connection"</dt><dd class=connection_class>{connection}</dd></div>
            <div class="fact"><dt>"Last activity"</dt><dd class="last-activity"><time datetime=datetime>{activity}</time></dd></div>
            <div class="fact"><dt>"Firmware (desired → reported)"</dt><dd class=firmware_class>{firmware}</dd></div>
            <div class="fact"><dt>"Drift"</dt><dd class=drift_class>{drift_text}</dd></div>
            {model}
        </dl>
    }
}

/// Enabled or disabled: the registry's word (it changes when the operator toggles it), else
/// the twin's; "-" for a module, which has none.
fn status(identity: Option<&Result<Identity, ApiError>>, twin: &Twin) -> String {
    let from_registry = identity.and_then(|i| i.as_ref().ok()).and_then(|i| i.status.clone());
    from_registry.or_else(|| Some(twin.status.clone()).filter(|s| !s.is_empty())).unwrap_or_else(|| "-".to_owned())
}

/// `firmwareVersion` in a property section, as text; a Plug and Play acknowledgement's
/// `value` when the device answered in that form.
fn firmware(section: &Map<String, Value>) -> Option<String> {
    let v = section.get("firmwareVersion")?;
    let v = twinhub_core::pnp::acknowledgement(v).and_then(|o| o.get("value")).unwrap_or(v);
    Some(v.as_str().map_or_else(|| v.to_string(), str::to_owned))
}
