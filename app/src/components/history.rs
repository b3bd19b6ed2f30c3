//! The twin's history (`/api/twins/{id}/history`): each version with its time, actor and the
//! diff per path, newest first; "Revert" undoes a version's tag and desired changes with a new
//! patch (`twinhub_core::twin::revert_patch`), which the history then records like any other.

use crate::access::Access;
use crate::api;
use crate::session::Session;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::Value;
use twinhub_core::twin::{revert_patch, Change};

/// Versions shown.
const SHOWN: u64 = 30;

/// The timeline. `version` is the twin's current version: the list reloads when it moves.
#[component]
pub fn History(device_id: String, version: Signal<u64>) -> impl IntoView {
    let session = expect_context::<Session>();
    let access = expect_context::<Access>();
    let notice = RwSignal::new(None::<Result<String, String>>);
    // The version being reverted, while its patch is under way.
    let reverting = RwSignal::new(None::<u64>);
    let id = device_id.clone();
    let entries = LocalResource::new(move || {
        let (id, v) = (id.clone(), version.get());
        async move {
            let since = v.saturating_sub(SHOWN);
            api::history(session, &id, since, SHOWN as usize).await.map(|h| {
                let mut list = h.entries;
                list.reverse();
                list
            })
        }
    });
    let revert = move |entry_version: u64, changes: Vec<Change>| {
        let Some(patch) = revert_patch(&changes) else { return };
        let id = device_id.clone();
        reverting.set(Some(entry_version));
        notice.set(None);
        spawn_local(async move {
            let result = api::patch_twin(session, &id, &patch).await;
            reverting.set(None);
            match result {
                Ok(twin) => notice.set(Some(Ok(format!(
                    "Reverted version {entry_version}: the twin is now version {}.",
                    twin.version
                )))),
                Err(e) => notice.set(Some(Err(e.to_string()))),
            }
        });
    };
    view! {
        <h2>"History"</h2>
        {move || reverting.get().map(|v| view! { <p class="hint" role="status">{format!("Reverting version {v}...")}</p> })}
        {move || notice.get().map(|n| match n {
            Ok(m) => view! { <p class="ok reverted" role="status">{m}</p> }.into_any(),
            Err(m) => view! { <p class="error" role="alert">{m}</p> }.into_any(),
        })}
        <Suspense fallback=|| view! { <p class="hint" role="status">"Loading history..."</p> }>
            {move || entries.get().map(|r| match r {
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                Ok(list) if list.is_empty() => view! { <p class="hint">"No changes yet."</p> }.into_any(),
                Ok(list) => view! {
                    <ol class="history">
                        {list.into_iter().map(|entry| {
                            let v = entry.version;
                            let changes: Vec<Change> = entry.changes;
                            let revertible = revert_patch(&changes).is_some();
                            let rows = changes.iter().map(|c| {
                                let show = |v: &Option<Value>| v.as_ref().map_or_else(|| "(absent)".to_owned(), Value::to_string);
                                view! { <tr><td><code>{c.path.clone()}</code></td><td><code>{show(&c.old)}</code></td><td><code>{show(&c.new)}</code></td></tr> }
                            }).collect_view();
                            let revert = revert.clone();
                            view! {
                                <li class="history-entry" data-version=v>
                                    <p>
                                        <strong>{format!("version {v}")}</strong>
                                        <span class="muted">{format!(" · {} · {}", entry.time, entry.actor)}</span>
                                        {revertible.then(|| view! {
                                            " " <button class="link revert" disabled=move || access.is_read_only() || reverting.with(Option::is_some)
                                                aria-label=format!("Revert version {v}")
                                                on:click=move |_| revert(v, changes.clone())>"Revert"</button>
                                        })}
                                    </p>
                                    <div class="table-scroll">
                                        <table class="changes"><thead><tr><th>"Path"</th><th>"Before"</th><th>"After"</th></tr></thead><tbody>{rows}</tbody></table>
                                    </div>
                                </li>
                            }
                        }).collect_view()}
                    </ol>
                }.into_any(),
            })}
        </Suspense>
    }
}
