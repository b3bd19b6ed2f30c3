//! Automatic device configurations: each with its priority, target condition and live counts
//! (targeted, applied, custom metrics, refreshed every two seconds), and a form to create one
//! or edit it (its target condition checked as it is typed by the hub's own parser,
//! `twinhub_core::configuration::target_query`), or delete it.

use crate::access::Access;
use crate::api;
use crate::session::Session;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::{json, Map, Value};
use twinhub_core::configuration::target_query;
use twinhub_core::query::Collection;
use twinhub_core::wire::ConfigurationView;

/// How often the list is fetched again.
const REFRESH_MS: u64 = 2_000;

/// The configurations page.
#[component]
pub fn ConfigurationsPage() -> impl IntoView {
    let session = expect_context::<Session>();
    let access = expect_context::<Access>();
    if !session.signed_in() {
        let _ = window().location().set_href("/signin");
    }
    let read_only = Signal::derive(move || access.is_read_only());
    let list = RwSignal::new(Vec::<ConfigurationView>::new());
    let loaded = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let notice = RwSignal::new(None::<Result<String, String>>);
    let refresh = move || {
        spawn_local(async move {
            match api::configurations(session).await {
                Ok(all) => {
                    error.set(None);
                    let _ = list.try_set(all);
                }
                Err(e) => {
                    let _ = error.try_set(Some(e.to_string()));
                }
            }
            let _ = loaded.try_set(true);
        });
    };
    refresh();
    if let Ok(handle) = set_interval_with_handle(refresh, std::time::Duration::from_millis(REFRESH_MS)) {
        on_cleanup(move || handle.clear());
    }

    // The form: a new configuration, or the one being edited (its etag kept for If-Match).
    let id = RwSignal::new(String::new());
    let condition = RwSignal::new("tags.deployment.environment = 'production'".to_owned());
    let content = RwSignal::new("{\n  \"telemetryInterval\": 30\n}".to_owned());
    let priority = RwSignal::new(10i64);
    let editing = RwSignal::new(None::<String>);
    let condition_error = Signal::derive(move || condition.with(|c| target_query(c).err().map(|e| e.message)));

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let config_id = id.get_untracked().trim().to_owned();
        let desired: Map<String, Value> = match serde_json::from_str(&content.get_untracked()) {
            Ok(Value::Object(m)) => m,
            _ => return notice.set(Some(Err("The desired properties must be a JSON object.".into()))),
        };
        let paths: Map<String, Value> =
            desired.into_iter().map(|(k, v)| (format!("properties.desired.{k}"), v)).collect();
        // A condition written `FROM devices.modules WHERE ...` makes a module configuration.
        let for_modules = target_query(&condition.get_untracked()).is_ok_and(|q| q.from == Collection::Modules);
        let content = if for_modules { json!({ "moduleContent": paths }) } else { json!({ "deviceContent": paths }) };
        let body = json!({
            "id": config_id,
            "content": content,
            "targetCondition": condition.get_untracked(),
            "priority": priority.get_untracked(),
        });
        let etag = editing.get_untracked();
        spawn_local(async move {
            match api::put_configuration(session, &config_id, &body, etag.as_deref()).await {
                Ok(_) => {
                    notice.set(Some(Ok(format!("Saved {config_id}; it applies to the twins it targets now."))));
                    editing.set(None);
                    refresh();
                }
                Err(e) => notice.set(Some(Err(e.to_string()))),
            }
        });
    };
    let edit = move |c: &ConfigurationView| {
        id.set(c.id.clone());
        condition.set(c.target_condition.clone());
        priority.set(c.priority);
        let desired: Map<String, Value> = c
            .content()
            .iter()
            .map(|(k, v)| (k.strip_prefix("properties.desired.").unwrap_or(k).to_owned(), v.clone()))
            .collect();
        content.set(serde_json::to_string_pretty(&desired).unwrap_or_default());
        editing.set(Some(c.etag.clone()).filter(|e| !e.is_empty()));
    };
    let remove = move |config_id: String| {
        if !window().confirm_with_message(&format!("Delete configuration {config_id}?")).unwrap_or(false) {
            return;
        }
        spawn_local(async move {
            match api::delete_configuration(session, &config_id).await {
                Ok(()) => notice.set(Some(Ok(format!("Deleted {config_id}; the values it set stay.")))),
                Err(e) => notice.set(Some(Err(e.to_string()))),
            }
            refresh();
        });
    };

    view! {
        <section class="card">
            <h1>"Configurations"</h1>
            <p class="hint">"Each configuration sets desired properties on every device twin its target condition matches (a condition written FROM devices.modules WHERE ... targets module twins); a twin gets the highest-priority match, as devices come, go and change tags."</p>
            {move || access.read_only.get().map(|why| view! { <p class="hint read-only-reason">{why}</p> })}
            {move || notice.get().map(|n| match n {
                Ok(m) => view! { <p class="ok notice" role="status">{m}</p> }.into_any(),
                Err(m) => view! { <p class="error notice" role="alert">{m}</p> }.into_any(),
            })}
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            {move || {
                let all = list.get();
                if !loaded.get() {
                    return view! { <p class="hint" role="status">"Loading configurations..."</p> }.into_any();
                }
                if all.is_empty() {
                    return view! { <p class="hint">"No configurations yet."</p> }.into_any();
                }
                let rows = all.into_iter().map(|c| {
                    let config_id = c.id.clone();
                    let metrics = c.metrics.results.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(" · ");
                    let for_edit = c.clone();
                    let for_delete = config_id.clone();
                    view! {
                        <tr data-configuration-id=config_id.clone()>
                            <td>{config_id.clone()}</td>
                            <td>{c.priority.to_string()}</td>
                            <td><code>{c.target_condition.clone()}</code></td>
                            <td class="targeted">{c.system_count("targetedCount").to_string()}</td>
                            <td class="applied">{c.system_count("appliedCount").to_string()}</td>
                            <td class="muted">{metrics}</td>
                            <td>
                                <button class="link edit" on:click=move |_| edit(&for_edit) disabled=read_only>"Edit"</button>
                                " "
                                <button class="link delete" on:click=move |_| remove(for_delete.clone()) disabled=read_only>"Delete"</button>
                            </td>
                        </tr>
                    }
                }).collect_view();
                view! {
                    <table class="fleet configurations">
                        <thead><tr><th>"id"</th><th>"priority"</th><th>"target condition"</th><th>"targeted"</th><th>"applied"</th><th>"metrics"</th><th></th></tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                }.into_any()
            }}
            <form class="new-configuration" on:submit=submit>
                <h2>{move || match editing.get() { Some(_) => "Edit configuration", None => "New configuration" }}</h2>
                <label for="cfg-id">"Id (lower case)"</label>
                <input id="cfg-id" type="text" prop:value=move || id.get() on:input=move |ev| id.set(event_target_value(&ev))
                    prop:readonly=move || editing.get().is_some() />
                <label for="cfg-condition">"Target condition"</label>
                <input id="cfg-condition" type="text" prop:value=move || condition.get()
                    on:input=move |ev| condition.set(event_target_value(&ev)) />
                {move || condition_error.get().map(|e| view! { <p class="error query-error" role="alert">{e}</p> })}
                <label for="cfg-content">"Desired properties (JSON)"</label>
                <textarea id="cfg-content" rows="4" prop:value=move || content.get()
                    on:input=move |ev| content.set(event_target_value(&ev))></textarea>
                <label for="cfg-priority">"Priority"</label>
                <input id="cfg-priority" type="number" min="0" prop:value=move || priority.get().to_string()
                    on:input=move |ev| priority.set(event_target_value(&ev).parse().unwrap_or(0)) />
                <button type="submit" class="save-configuration"
                    disabled=move || read_only.get() || condition_error.get().is_some()>"Save"</button>
            </form>
        </section>
    }
}
