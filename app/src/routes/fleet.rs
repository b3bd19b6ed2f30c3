//! The fleet: an IoT Hub query (typed, or written by the quick filters, or saved), its twins in a
//! virtualized table paged in behind the scroll, and a GROUP BY summary chart that filters on
//! click. Create, delete and copy a connection string from here.

use crate::access::Access;
use crate::api;
use crate::components::fleet_activity::{AlertFeed, FleetTelemetry};
use crate::components::fleet_table::{FleetRow, FleetTable};
use crate::components::group_chart::{groups_of, GroupChart};
use crate::components::query_box::QueryBox;
use crate::session::Session;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_query_map;
use serde_json::Value;
use twinhub_core::auth::{ConnectionString, Credential};
use twinhub_core::wire::Twin;

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

    // The query comes from the address (`/fleet?q=...`: the overview's links, a shared or
    // reloaded page) and goes back to it when another is run.
    let start = use_query_map().with_untracked(|q| q.get("q")).filter(|q| !q.trim().is_empty());
    let start = start.unwrap_or_else(|| ALL.to_owned());
    let text = RwSignal::new(start.clone());
    // The query applied, with its run number: running the same query again (after a create)
    // is a new key, so what is keyed on it loads again.
    let applied = RwSignal::new((start, 0u32));
    let notice = RwSignal::new(None::<Result<String, String>>);
    let grouping = RwSignal::new(GROUPINGS[0].1.to_owned());
    let filters = RwSignal::new(QuickFilters::default());
    let saved = RwSignal::new(load_saved());
    // The quick filters offer the values the fleet has.
    let buildings = LocalResource::new(move || distinct(session, "tags.location.building"));
    let environments = LocalResource::new(move || distinct(session, "tags.deployment.environment"));

    // Keyed on the applied query: its first page, its count and its summary. A resource keeps
    // only its newest run's answer, so a slow answer to a query no longer applied is dropped.
    let first_page = LocalResource::new(move || {
        let key = applied.get();
        async move {
            let page = api::query(session, &key.0, None).await;
            (key, page)
        }
    });
    let total = LocalResource::new(move || {
        let (query, _) = applied.get();
        async move {
            let clause = where_of(&query)?;
            let page = api::query(session, &format!("SELECT COUNT() AS n FROM devices {clause}"), None).await.ok()?;
            page.items.first()?["n"].as_u64()
        }
    });
    let groups = LocalResource::new(move || {
        let clause = where_of(&applied.get().0).unwrap_or_default();
        let path = grouping.get();
        async move { api::query(session, &group_query(&path, &clause), None).await.map(|page| groups_of(&page.items)) }
    });

    // What the table shows: the first page, then the pages the scroll asks for (the rows
    // apart, appended in place: a large fleet is scrolled through thousands of them).
    let listing = RwSignal::new(Listing::default());
    let rows = RwSignal::new(Vec::<FleetRow>::new());
    let error = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        let Some((key, page)) = first_page.get() else { return };
        let mut fresh = Listing { key, ..Listing::default() };
        match page {
            Ok(page) => rows.set(fresh.add(page)),
            Err(e) => {
                rows.set(Vec::new());
                error.set(Some(e.to_string()));
            }
        }
        listing.set(fresh);
    });
    let loading =
        Signal::derive(move || listing.with(|l| applied.with(|a| l.key != *a)) || listing.with(|l| l.fetching));
    // One page more of the applied query; dropped if another query was applied meanwhile.
    let fetch_page = move || {
        let Some((key, after)) = listing
            .with_untracked(|l| (!l.fetching).then(|| l.continuation.clone().map(|c| (l.key.clone(), c))).flatten())
        else {
            return;
        };
        listing.update(|l| l.fetching = true);
        // What lands after an await uses `try_` writes: the page may have been left meanwhile
        // (its signals disposed), and a plain write would panic and take the console down.
        spawn_local(async move {
            let result = api::query(session, &key.0, Some(&after)).await;
            let _ = listing.try_update(|l| {
                if l.key != key {
                    return;
                }
                l.fetching = false;
                match result {
                    Ok(page) => {
                        let more = l.add(page);
                        let _ = rows.try_update(|r| r.extend(more));
                    }
                    Err(e) => {
                        let _ = error.try_set(Some(e.to_string()));
                    }
                }
            });
        });
    };
    let run = move |query: String| {
        let address =
            format!("/fleet?q={}", percent_encoding::utf8_percent_encode(&query, percent_encoding::NON_ALPHANUMERIC));
        // Replaced in place, not navigated: the page is already showing it.
        if let Ok(history) = window().history() {
            let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&address));
        }
        text.set(query.clone());
        error.set(None);
        applied.update(|(q, n)| {
            *q = query;
            *n += 1;
        });
    };

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
        let base = where_of(&applied.get_untracked().0).unwrap_or_default();
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
                    run(applied.get_untracked().0);
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
                    let before = rows.with_untracked(Vec::len);
                    rows.update(|r| r.retain(|row| row.id != id));
                    let gone = before - rows.with_untracked(Vec::len);
                    listing.update(|l| l.removed += gone as u64);
                }
                Err(e) => notice.set(Some(Err(e.to_string()))),
            }
        });
    });
    let copy = Callback::new(move |id: String| {
        spawn_local(async move {
            let text = match api::device(session, &id).await {
                Ok(device) => {
                    let credential = Credential::Device { device_id: id.clone(), key: device.primary_key().to_owned() };
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

    let condition = Memo::new(move |_| applied.with(|(q, _)| condition_of(q)));
    let has_more = Signal::derive(move || listing.with(|l| l.continuation.is_some()) && !loading.get());
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
            {move || where_of(&applied.get().0).map(|clause| view! {
                <p><a class="new-job" href=jobs_link(&clause)>"New job for these devices"</a></p>
            })}
            <div class="quick-filters" role="group" aria-label="Quick filters">
                <label>"Building "
                    <select class="qf-building" on:change=move |ev| { let v = event_target_value(&ev); set_filter(&|f| f.building.clone_from(&v)) }>
                        <option value="">"any"</option>
                        {move || buildings.get().and_then(Result::ok).unwrap_or_default().into_iter()
                            .map(|b| view! { <option value=b.clone()>{b.clone()}</option> }).collect_view()}
                    </select>
                </label>
                <label>"Environment "
                    <select class="qf-environment" on:change=move |ev| { let v = event_target_value(&ev); set_filter(&|f| f.environment.clone_from(&v)) }>
                        <option value="">"any"</option>
                        {move || environments.get().and_then(Result::ok).unwrap_or_default().into_iter()
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
            {move || {
                let failed = [buildings.get(), environments.get()].into_iter().flatten().find_map(Result::err);
                failed.map(|e| view! { <p class="error" role="alert">"The filters' values could not be loaded: " {e.to_string()}</p> })
            }}
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
                    <select on:change=move |ev| grouping.set(event_target_value(&ev))>
                        {GROUPINGS.into_iter().map(|(label, path)| view! { <option value=path>{label}</option> }).collect_view()}
                    </select>
                </label>
            </div>
            {move || match groups.get() {
                None => view! { <p class="hint" role="status">"Loading the summary..."</p> }.into_any(),
                Some(Err(e)) => view! { <p class="error" role="alert">"The summary could not be loaded: " {e.to_string()}</p> }.into_any(),
                Some(Ok(_)) => ().into_any(),
            }}
            <GroupChart groups=Signal::derive(move || groups.get().and_then(Result::ok).unwrap_or_default()) on_pick=pick_group />

            <p class="hint fleet-count" aria-live="polite">
                {move || {
                    let (loaded, removed) = (rows.with(Vec::len), listing.with(|l| l.removed));
                    let total = total.get().flatten().map(|t| t.saturating_sub(removed));
                    match (total, loading.get()) {
                        (Some(t), true) => format!("{loaded} of {t} device(s) loaded, loading more..."),
                        (Some(t), false) => format!("{loaded} of {t} device(s) loaded"),
                        (None, true) => "Loading devices...".to_owned(),
                        (None, false) => format!("{loaded} device(s)"),
                    }
                }}
            </p>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            {move || match listing.with(|l| l.raw.clone()) {
                Some(items) => raw_table(items).into_any(),
                None => view! {
                    <FleetTable rows=rows has_more=has_more more=Callback::new(move |()| fetch_page())
                        delete=delete copy=copy read_only=read_only />
                }.into_any(),
            }}
        </section>
        // What the query's devices send (device queries only: a projection selects no devices;
        // not in upstream mode, where the event stream is IoT Hub's).
        {move || match (condition.with(Option::is_some), access.feature("telemetry")) {
            (false, _) | (_, None) => ().into_any(),
            (true, Some(Err(why))) => view! {
                <section class="card fleet-activity"><p class="hint unavailable">{why}</p></section>
            }.into_any(),
            (true, Some(Ok(()))) => {
                let condition = Signal::derive(move || condition.get().unwrap_or_default());
                view! {
                    <section class="card fleet-activity">
                        <FleetTelemetry condition />
                        <AlertFeed condition />
                    </section>
                }.into_any()
            }
        }}
    }
}

/// The condition of a `SELECT * FROM devices [WHERE ...]` query (empty without a WHERE), as
/// the fleet telemetry and alert calls take it; `None` for any other query.
fn condition_of(query: &str) -> Option<String> {
    let clause = where_of(query)?;
    Some(clause.get(5..).map_or(String::new(), |c| c.trim().to_owned()))
}

/// The applied query's rows as loaded so far.
#[derive(Clone, Debug, Default)]
struct Listing {
    /// The applied query (and its run) these rows are of.
    key: (String, u32),
    /// Any other query's rows, shown as they come.
    raw: Option<Vec<Value>>,
    /// Where the next page starts.
    continuation: Option<String>,
    /// A page is being fetched.
    fetching: bool,
    /// Devices deleted from this page since it loaded (the count is lowered by them).
    removed: u64,
}

impl Listing {
    /// Takes in one more page: whole twins come back as the fleet table's rows (a query
    /// selecting `*` from devices or modules), anything else is kept as raw rows.
    fn add(&mut self, page: api::QueryPage) -> Vec<FleetRow> {
        self.continuation = page.continuation;
        if where_of(&self.key.0).is_some() || selects_module_twins(&self.key.0) {
            let twins = page.items.into_iter().filter_map(|item| serde_json::from_value::<Twin>(item).ok());
            return twins.map(|t| FleetRow::from_twin(&t)).collect();
        }
        self.raw.get_or_insert_with(Vec::new).extend(page.items);
        Vec::new()
    }
}

/// The string values a property takes across the fleet, most common first.
async fn distinct(session: Session, path: &str) -> Result<Vec<String>, api::ApiError> {
    let page = api::query(session, &group_query(path, ""), None).await?;
    Ok(page.items.iter().filter_map(|r| r["v"].as_str().map(str::to_owned)).collect())
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
        assert_eq!(condition_of("SELECT * FROM devices where IS_DRIFTING()").as_deref(), Some("IS_DRIFTING()"));
        assert_eq!(condition_of("SELECT * FROM devices").as_deref(), Some(""));
        assert_eq!(condition_of("SELECT deviceId FROM devices"), None);
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
