//! Each desired property beside what the device reported, from `twinhub_core::twin::drift`:
//! the values, when each side last changed, the desired version, and whether the device has
//! caught up, is still pending, or refused the change (its Plug and Play acknowledgement).

use leptos::prelude::*;
use serde_json::Value;
use twinhub_core::twin::drift::DriftState;
use twinhub_core::wire::Twin;

/// The drift table for a twin.
#[component]
pub fn DriftTable(twin: Signal<Option<Twin>>) -> impl IntoView {
    view! {
        <h2>"Desired and reported"</h2>
        {move || {
            let rows = twin.with(|t| t.as_ref().map(Twin::drift).unwrap_or_default());
            if rows.is_empty() {
                return view! { <p class="hint">"No desired properties yet."</p> }.into_any();
            }
            let body = rows
                .into_iter()
                .map(|r| {
                    let (class, label) = match r.state {
                        DriftState::CaughtUp => ("ok", "caught up".to_owned()),
                        DriftState::Pending => ("pending", "pending".to_owned()),
                        DriftState::Refused => (
                            "refused",
                            match &r.ack {
                                Some(a) => format!("refused ({}): {}", a.code, a.description.clone().unwrap_or_default()),
                                None => "refused".to_owned(),
                            },
                        ),
                    };
                    let reported = r.reported.as_ref().map_or_else(|| "-".to_owned(), Value::to_string);
                    let version = r.desired_version.map_or_else(|| "-".to_owned(), |v| v.to_string());
                    view! {
                        <tr data-property=r.name.clone()>
                            <td><code>{r.name.clone()}</code></td>
                            <td><code>{r.desired.to_string()}</code></td>
                            <td><code>{reported}</code></td>
                            <td class=format!("drift {class}")>{label}</td>
                            <td class="muted">{version}</td>
                            <td class="muted">{r.desired_updated.unwrap_or_default()}</td>
                            <td class="muted">{r.reported_updated.unwrap_or_default()}</td>
                        </tr>
                    }
                })
                .collect_view();
            view! {
                <div class="table-scroll">
                    <table class="fleet drift">
                        <thead><tr>
                            <th>"Property"</th><th>"Desired"</th><th>"Reported"</th><th>"State"</th>
                            <th title="$lastUpdatedVersion of the desired property">"Version"</th>
                            <th>"Desired changed"</th><th>"Reported changed"</th>
                        </tr></thead>
                        <tbody>{body}</tbody>
                    </table>
                </div>
            }
            .into_any()
        }}
    }
}
