//! A device's modules: each with its connection state, last activity and drift, linking to the
//! module's own page (the device page, keyed by the module's `{device}/{module}`).

use crate::api;
use crate::components::fleet_table::ago;
use crate::session::Session;
use futures_util::future::join_all;
use leptos::prelude::*;
use twinhub_core::identity::module_key;

/// One module as the list shows it.
#[derive(Clone, Debug, PartialEq)]
struct ModuleRow {
    module_id: String,
    key: String,
    connection: String,
    last_activity_ms: u64,
    drift: Option<usize>,
}

/// The modules of `device_id`, read when the page opens.
#[component]
pub fn ModuleList(device_id: String) -> impl IntoView {
    let session = expect_context::<Session>();
    let rows = LocalResource::new(move || {
        let device_id = device_id.clone();
        async move {
            let identities = api::modules(session, &device_id).await?;
            // Each module's twin, for its drift (a device holds at most 50 modules).
            let twins = join_all(identities.iter().map(|m| {
                let key = module_key(&device_id, m.module_id.as_deref().unwrap_or_default());
                async move { api::twin(session, &key).await.ok() }
            }))
            .await;
            let list: Vec<ModuleRow> = identities
                .iter()
                .zip(twins)
                .map(|(m, twin)| {
                    let module_id = m.module_id.clone().unwrap_or_default();
                    ModuleRow {
                        key: module_key(&device_id, &module_id),
                        module_id,
                        connection: Some(m.connection_state.clone())
                            .filter(|c| !c.is_empty())
                            .unwrap_or_else(|| "Disconnected".to_owned()),
                        last_activity_ms: api::parse_time(&m.last_activity_time).unwrap_or(0),
                        drift: twin.as_ref().map(twinhub_core::wire::Twin::drift_count),
                    }
                })
                .collect();
            Ok::<_, api::ApiError>(list)
        }
    });
    view! {
        <h2>"Modules"</h2>
        <Suspense fallback=|| view! { <p class="hint" role="status">"Loading modules..."</p> }>
            {move || rows.get().map(|result| match result {
                Ok(list) if list.is_empty() => view! { <p class="hint">"No modules."</p> }.into_any(),
                Ok(list) => {
                    let now = js_sys::Date::now() as u64;
                    let body = list.into_iter().map(|r| {
                        let href = format!("/device/{}", percent_encoding::utf8_percent_encode(&r.key, percent_encoding::NON_ALPHANUMERIC));
                        let drift = r.drift.map_or_else(|| "?".to_owned(), |d| d.to_string());
                        let drift_class = if r.drift == Some(0) { "drift ok" } else { "drift pending" };
                        view! {
                            <tr class="module-row">
                                <td><a href=href>{r.module_id}</a></td>
                                <td class="connection">{r.connection}</td>
                                <td class="muted">{ago(r.last_activity_ms, now)}</td>
                                <td class=drift_class>{drift}</td>
                            </tr>
                        }
                    }).collect_view();
                    view! {
                        <div class="table-scroll">
                            <table class="fleet modules">
                                <thead><tr><th>"module"</th><th>"connection"</th><th>"last activity"</th><th>"drift"</th></tr></thead>
                                <tbody>{body}</tbody>
                            </table>
                        </div>
                    }.into_any()
                }
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
        </Suspense>
    }
}
