//! The fleet: an IoT Hub query (typed, or written by the quick filters, or saved), its twins in a
//! virtualized table paged in behind the scroll, and a GROUP BY summary chart that filters on
//! click. Create, delete and copy a connection string from here.

use crate::access::Access;
use crate::api;
use crate::components::fleet_table::{FleetRow, FleetTable};
use crate::components::group_chart::{groups_of, Group, GroupChart};
use crate::components::query_box::QueryBox;
use crate::session::Session;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::Value;
use twinhub_core::auth::{ConnectionString, Credential};

const ALL: &str = "SELECT * FROM devices";
const SAVED_KEY: &str = "twinhub.savedQueries";
/// Properties the summary chart can group by: (label, query path).
const GROUPINGS: [(&str, &str); 4] = [
    ("reported firmwareVersion", "properties.reported.firmwareVersion"),
    ("building", "tags.location.building"),
    ("environment", "tags.deployment.environment"),
    ("connection state", "connectionState"),
];

/// The quick filters; each one set adds a condition to the query they write.
#[derive(Clone, Debug, Default, PartialEq)]
struct QuickFilters {
    building: String,
    environment: String,
    connection: String,
    firmware_drift: bool,
}

impl QuickFilters {
    fn to_query(&self) -> String {
        let mut conditions = Vec::new();
        if !self.building.is_empty() {
            conditions.push(format!("tags.location.building = {}", quote(&self.building)));
        }
        if !self.environment.is_empty() {
            conditions.push(format!("tags.deployment.environment = {}", quote(&self.environment)));
        }
        if !self.connection.is_empty() {
            conditions.push(format!("connectionState = {}", quote(&self.connection)));
        }
        if self.firmware_drift {
            conditions.push("properties.desired.firmwareVersion != properties.reported.firmwareVersion".into());
        }
        match conditions.is_empty() {
            true => ALL.to_owned(),
            false => format!("{ALL} WHERE {}", conditions.join(" AND ")),
        }
    }
}

/// A query-language string literal for `s`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Devices per value of `path` among those matching `clause` (a WHERE clause, or empty), as
/// rows `{"v": value, "n": count}` ([`groups_of`] reads them).
fn group_query(path: &str, clause: &str) -> String {
    format!("SELECT {path} AS v, COUNT() AS n FROM devices {clause} GROUP BY {path}")
}

/// The WHERE clause of a `SELECT * FROM devices ...` query (empty when it has none), found
/// textually; `None` for any other query shape, which is shown as raw rows.
fn where_of(query: &str) -> Option<String> {
    let lower = query.to_ascii_lowercase();
    let rest = lower.trim_start().strip_prefix("select")?.trim_start().strip_prefix('*')?.trim_start();
    let rest = rest.strip_prefix("from")?.trim_start().strip_prefix("devices")?;
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
        return None;
    }
    // Same length in lower case for ASCII keywords; cut the original text at the same place.
    let start = query.len() - rest.len();
    let tail = query[start..].trim();
    if tail.is_empty() {
        return Some(String::new());
    }
    let lower_tail = tail.to_ascii_lowercase();
    (lower_tail.starts_with("where") && !lower_tail.contains("group by")).then(|| tail.to_owned())
}

/// Whether a query selects whole module twins (`SELECT * FROM devices.modules ...`): shown in
/// the fleet table like device twins, each linked to its module's page. (Quick filters, counts
/// and jobs stay the devices' own.)
fn selects_module_twins(query: &str) -> bool {
    let lower = query.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().take(4).collect();
    matches!(words.as_slice(), ["select", "*", "from", "devices.modules", ..])
}

/// The jobs page with its condition set to a query's WHERE clause (`*` when it has none).
fn jobs_link(clause: &str) -> String {
    let condition = match clause.get(..5) {
        Some(w) if w.eq_ignore_ascii_case("where") => clause[5..].trim(),
        _ => "*",
    };
    format!("/jobs?where={}", percent_encoding::utf8_percent_encode(condition, percent_encoding::NON_ALPHANUMERIC))
}

/// The fleet page.
#[component]
pub fn FleetPage() -> impl IntoView {
    let session = expect_context::<Session>();
    let access = expect_context::<Access>();
    if !session.signed_in() {
        let _ = window().location().set_href("/signin");
    }
    let read_only = Signal::derive(move || access.is_read_only());

    let text = RwSignal::new(ALL.to_owned());
    let applied = RwSignal::new(ALL.to_owned());
    let rows = RwSignal::new(Vec::<FleetRow>::new());
    let raw = RwSignal::new(None::<Vec<Value>>);
    let continuation = RwSignal::new(None::<String>);
    let loading = RwSignal::new(false);
    let generation = StoredValue::new(0u32);
    let total = RwSignal::new(None::<u64>);
    let error = RwSignal::new(None::<String>);
    let notice = RwSignal::new(None::<Result<String, String>>);
    let grouping = RwSignal::new(GROUPINGS[0].1.to_owned());
    let groups = RwSignal::new(Vec::<Group>::new());
    let filters = RwSignal::new(QuickFilters::default());
    let saved = RwSignal::new(load_saved());
    // The quick filters offer the values the fleet has.
    let buildings = LocalResource::new(move || distinct(session, "tags.location.building"));
    let environments = LocalResource::new(move || distinct(session, "tags.deployment.environment"));

    // One page more of the applied query (ignored if the query changed meanwhile).
    let fetch_page = move || {
        if loading.get_untracked() {
            return;
        }
        let query = applied.get_untracked();
        let after = continuation.get_untracked();
        let mine = generation.get_value();
        loading.set(true);
        // What lands after an await uses `try_` writes: the page may have been left meanwhile
        // (its signals disposed), and a plain write would panic and take the console down.
        spawn_local(async move {
            let result = api::query(session, &query, after.as_deref()).await;
            if generation.try_get_value() != Some(mine) {
                return;
            }
            match result {
                Ok(page) => {
                    if where_of(&query).is_some() || selects_module_twins(&query) {
                        rows.try_update(|r| r.extend(page.items.iter().map(FleetRow::from_twin)));
                    } else {
                        raw.try_update(|r| r.get_or_insert_with(Vec::new).extend(page.items));
                    }
                    continuation.try_set(page.continuation);
                }
                Err(e) => {
                    error.try_set(Some(e.to_string()));
                }
            }
            loading.try_set(false);
        });
    };
    let refresh_groups = move || {
        let clause = where_of(&applied.get_untracked()).unwrap_or_default();
        let path = grouping.get_untracked();
        spawn_local(async move {
            let q = group_query(&path, &clause);
            if let Ok(page) = api::query(session, &q, None).await {
                groups.try_set(groups_of(&page.items));
            }
        });
    };
    let run = move |query: String| {
        generation.update_value(|g| *g += 1);
        text.set(query.clone());
        applied.set(query.clone());
        rows.set(Vec::new());
        raw.set(None);
        continuation.set(None);
        error.set(None);
        total.set(None);
        loading.set(false);
        fetch_page();
        if let Some(clause) = where_of(&query) {
            spawn_local(async move {
                let q = format!("SELECT COUNT() AS n FROM devices {clause}");
                if let Ok(page) = api::query(session, &q, None).await {
                    total.try_set(page.items.first().and_then(|r| r["n"].as_u64()));
                }
            });
        }
        refresh_groups();
    };
    run(ALL.to_owned());

    let set_filter = move |change: &dyn Fn(&mut QuickFilters)| {
        filters.update(|f| change(f));
        run(filters.with_untracked(QuickFilters::to_query));
    };
    let pick_group = Callback::new(move |value: Option<Value>| {
        let path = grouping.get_untracked();
        let condition = match value {
            None => format!("NOT IS_DEFINED({path})"),
            Some(Value::String(s)) => format!("{path} = {}", quote(&s)),
            Some(other) => format!("{path} = {other}"),
        };
        let base = where_of(&applied.get_untracked()).unwrap_or_default();
        let query = match base.is_empty() {
            true => format!("{ALL} WHERE {condition}"),
            false => format!("{ALL} {base} AND {condition}"),
        };
        run(query);
    });

    let new_id = RwSignal::new(String::new());
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
                    run(applied.get_untracked());
                }
                Err(e) => notice.set(Some(Err(e.to_string()))),
            }
        });
    };
    let delete = Callback::new(move |id: String| {
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
                    rows.update(|r| r.retain(|row| row.id != id));
                    total.update(|t| *t = t.map(|n| n.saturating_sub(1)));
                }
                Err(e) => notice.set(Some(Err(e.to_string()))),
            }
        });
    });
    let copy = Callback::new(move |id: String| {
        spawn_local(async move {
            let text = match api::device(session, &id).await {
                Ok(device) => {
                    let key = device["authentication"]["symmetricKey"]["primaryKey"].as_str().unwrap_or_default();
                    let credential = Credential::Device { device_id: id.clone(), key: key.to_owned() };
                    ConnectionString { host_name: session.host_name(), credential }.to_string()
                }
                Err(e) => return notice.set(Some(Err(e.to_string()))),
            };
            let promise = window().navigator().clipboard().write_text(&text);
            match wasm_bindgen_futures::JsFuture::from(promise).await {
                Ok(_) => notice.set(Some(Ok(format!("Copied the connection string of {id}")))),
                Err(_) => {
                    notice.set(Some(Err("The browser refused the clipboard; open the device to copy it.".into())))
                }
            }
        });
    });
    let save = move |_| {
        let Ok(Some(name)) = window().prompt_with_message("Name this query") else { return };
        let name = name.trim().to_owned();
        if name.is_empty() {
            return;
        }
        saved.update(|s| {
            s.retain(|(n, _)| *n != name);
            s.push((name, text.get_untracked()));
        });
        store_saved(&saved.get_untracked());
    };

    let has_more = Signal::derive(move || continuation.with(Option::is_some) && !loading.get());
    view! {
        <section class="card">
            <h1>"Fleet"</h1>
            {move || access.read_only.get().map(|why| view! { <p class="hint read-only-reason">{why}</p> })}
            <form class="create-device" on:submit=create>
                <label for="new-device-id" class="visually-hidden">"New device id"</label>
                <input id="new-device-id" type="text" name="device-id" placeholder="new device id" prop:value=move || new_id.get()
                    disabled=move || read_only.get()
                    on:input=move |ev| new_id.set(event_target_value(&ev)) />
                <button type="submit" disabled=move || read_only.get()>"Create device"</button>
            </form>
            {move || notice.get().map(|n| match n {
                Ok(m) => view! { <p class="ok notice" role="status">{m}</p> }.into_any(),
                Err(m) => view! { <p class="error notice" role="alert">{m}</p> }.into_any(),
            })}

            <QueryBox text=text on_run=Callback::new(run) />
            {move || where_of(&applied.get()).map(|clause| view! {
                <p><a class="new-job" href=jobs_link(&clause)>"New job for these devices"</a></p>
            })}
            <div class="quick-filters" role="group" aria-label="Quick filters">
                <label>"Building "
                    <select class="qf-building" on:change=move |ev| { let v = event_target_value(&ev); set_filter(&|f| f.building.clone_from(&v)) }>
                        <option value="">"any"</option>
                        {move || buildings.get().unwrap_or_default().into_iter()
                            .map(|b| view! { <option value=b.clone()>{b.clone()}</option> }).collect_view()}
                    </select>
                </label>
                <label>"Environment "
                    <select class="qf-environment" on:change=move |ev| { let v = event_target_value(&ev); set_filter(&|f| f.environment.clone_from(&v)) }>
                        <option value="">"any"</option>
                        {move || environments.get().unwrap_or_default().into_iter()
                            .map(|e| view! { <option value=e.clone()>{e.clone()}</option> }).collect_view()}
                    </select>
                </label>
                <label>"Connection "
                    <select class="qf-connection" on:change=move |ev| { let v = event_target_value(&ev); set_filter(&|f| f.connection.clone_from(&v)) }>
                        <option value="">"any"</option>
                        <option value="Connected">"connected"</option>
                        <option value="Disconnected">"disconnected"</option>
                    </select>
                </label>
                <label>
                    <input type="checkbox" class="qf-drift" on:change=move |ev| { let on = event_target_checked(&ev); set_filter(&|f| f.firmware_drift = on) } />
                    " Firmware drift"
                </label>
                <button class="link save-query" on:click=save>"Save query"</button>
            </div>
            {move || (!saved.with(Vec::is_empty)).then(|| view! {
                <div class="saved-queries" role="group" aria-label="Saved queries">
                    {saved.get().into_iter().map(|(name, query)| {
                        let forget = name.clone();
                        view! {
                            <span class="chip">
                                <button class="link" title=query.clone() on:click=move |_| run(query.clone())>{name}</button>
                                <button class="link forget" aria-label=format!("Forget {forget}") on:click=move |_| {
                                    saved.update(|s| s.retain(|(n, _)| *n != forget));
                                    store_saved(&saved.get_untracked());
                                }>"×"</button>
                            </span>
                        }
                    }).collect_view()}
                </div>
            })}

            <div class="group-header">
                <h2>"Summary"</h2>
                <label>"Devices per "
                    <select on:change=move |ev| { grouping.set(event_target_value(&ev)); refresh_groups(); }>
                        {GROUPINGS.into_iter().map(|(label, path)| view! { <option value=path>{label}</option> }).collect_view()}
                    </select>
                </label>
            </div>
            <GroupChart groups=groups.into() on_pick=pick_group />

            <p class="hint fleet-count" aria-live="polite">
                {move || {
                    let loaded = rows.with(Vec::len);
                    match (total.get(), loading.get()) {
                        (Some(t), true) => format!("{loaded} of {t} device(s) loaded, loading more..."),
                        (Some(t), false) => format!("{loaded} of {t} device(s) loaded"),
                        (None, true) => "Loading devices...".to_owned(),
                        (None, false) => format!("{loaded} device(s)"),
                    }
                }}
            </p>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            {move || match raw.get() {
                Some(items) => raw_table(items).into_any(),
                None => view! {
                    <FleetTable rows=rows has_more=has_more more=Callback::new(move |()| fetch_page())
                        delete=delete copy=copy read_only=read_only />
                }.into_any(),
            }}
        </section>
    }
}

/// The string values a property takes across the fleet, most common first.
async fn distinct(session: Session, path: &str) -> Vec<String> {
    let q = group_query(path, "");
    match api::query(session, &q, None).await {
        Ok(page) => page.items.iter().filter_map(|r| r["v"].as_str().map(str::to_owned)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Rows of a projection or GROUP BY query: one column per key of the first row.
fn raw_table(items: Vec<Value>) -> impl IntoView {
    let columns: Vec<String> =
        items.first().and_then(Value::as_object).map(|o| o.keys().cloned().collect()).unwrap_or_default();
    let head = columns.iter().map(|c| view! { <th>{c.clone()}</th> }).collect_view();
    let body = items
        .iter()
        .take(1000)
        .map(|item| {
            let cells = columns
                .iter()
                .map(|c| {
                    let v = match &item[c.as_str()] {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    view! { <td><code>{v}</code></td> }
                })
                .collect_view();
            view! { <tr>{cells}</tr> }
        })
        .collect_view();
    view! { <table class="fleet raw-rows"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table> }
}

fn load_saved() -> Vec<(String, String)> {
    window()
        .local_storage()
        .ok()
        .flatten()
        .and_then(|s| s.get_item(SAVED_KEY).ok().flatten())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn store_saved(saved: &[(String, String)]) {
    if let (Some(storage), Ok(text)) = (window().local_storage().ok().flatten(), serde_json::to_string(saved)) {
        let _ = storage.set_item(SAVED_KEY, &text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_clauses() {
        assert_eq!(where_of("SELECT * FROM devices").as_deref(), Some(""));
        assert_eq!(
            where_of("select *  from devices WHERE tags.x = 'It''s'").as_deref(),
            Some("WHERE tags.x = 'It''s'")
        );
        assert_eq!(where_of("SELECT deviceId FROM devices"), None);
        assert_eq!(where_of("SELECT * FROM devices.jobs"), None);
        assert!(selects_module_twins("select * FROM devices.modules WHERE moduleId = 'm'"));
        assert!(!selects_module_twins("SELECT moduleId FROM devices.modules"));
        assert_eq!(where_of("SELECT * FROM devices GROUP BY status"), None);
    }

    #[test]
    fn quick_filters_write_the_query() {
        let f = QuickFilters { building: "Building-A".into(), firmware_drift: true, ..Default::default() };
        assert_eq!(
            f.to_query(),
            "SELECT * FROM devices WHERE tags.location.building = 'Building-A' AND properties.desired.firmwareVersion != properties.reported.firmwareVersion"
        );
        assert_eq!(QuickFilters::default().to_query(), ALL);
    }
}
