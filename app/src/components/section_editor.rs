//! Editing a twin section (desired properties, or tags) safely: the operator edits the whole
//! section as JSON, reviews the exact change (path, old, new) before saving, and saves with
//! `If-Match`. If someone else changed the twin meanwhile (412), the editor shows base, theirs and
//! the pending change, and offers to apply the same change on top of theirs. Reported properties
//! are the device's and are shown, not edited.

use crate::api::{self, ApiError};
use crate::session::Session;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::{Map, Value};
use twinhub_core::twin::{diff, merge_patch_between, Change};
use twinhub_core::wire::Twin;

/// The twin sections an operator may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// `properties.desired`.
    Desired,
    /// `tags`.
    Tags,
}

impl Section {
    /// The section's path in the twin, as history and diffs name it.
    fn path(self) -> &'static str {
        match self {
            Self::Desired => "properties.desired",
            Self::Tags => "tags",
        }
    }

    /// The section's content without `$metadata` and `$version`.
    fn of(self, twin: &Twin) -> Map<String, Value> {
        let mut map = match self {
            Self::Desired => twin.properties.desired.clone(),
            Self::Tags => twin.tags.clone(),
        };
        map.retain(|k, _| !k.starts_with('$'));
        map
    }

    /// The `PATCH /twins` body carrying `patch` for this section.
    fn wrap(self, patch: Map<String, Value>) -> Value {
        match self {
            Self::Desired => serde_json::json!({ "properties": { "desired": patch } }),
            Self::Tags => serde_json::json!({ "tags": patch }),
        }
    }

    /// CSS class names: the desired editor's are plain, the tags editor's prefixed.
    fn class(self, name: &str) -> String {
        match self {
            Self::Desired => name.to_owned(),
            Self::Tags => format!("tags-{name}"),
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Desired => "Desired properties",
            Self::Tags => "Tags",
        }
    }
}

#[derive(Clone)]
enum Stage {
    Editing,
    Reviewing { patch: Map<String, Value>, changes: Vec<Change> },
    Saving,
    Conflict { patch: Map<String, Value>, theirs: Box<Twin> },
    Saved(String),
    Failed(String),
}

/// One editor's draft and where it stands (reviewing, a conflict, saved). The page can own it
/// and hand it to the editor, so that a draft survives the editor being unmounted: the device
/// page mounts only the chosen tab, and an operator who looks at another tab mid-edit comes
/// back to the edit (and to the answer of a save that finished meanwhile).
#[derive(Clone, Copy)]
pub struct Draft {
    /// The section as last read or saved, and its etag: what a save is conditional on.
    base: RwSignal<(Map<String, Value>, String)>,
    text: RwSignal<String>,
    stage: RwSignal<Stage>,
    /// Whether `base` and `text` hold a twin yet (the first editor to mount fills them).
    started: StoredValue<bool>,
}

impl Default for Draft {
    fn default() -> Self {
        Self {
            base: RwSignal::new((Map::new(), String::new())),
            text: RwSignal::new(String::new()),
            stage: RwSignal::new(Stage::Editing),
            started: StoredValue::new(false),
        }
    }
}

/// The editor of one section of one device's twin, starting from `twin` (the version the
/// operator is looking at).
#[component]
pub fn SectionEditor(
    device_id: String,
    twin: Twin,
    #[prop(default = Section::Desired)] section: Section,
    /// The twin as it changes (the page's live view): adopted as the new base while the operator
    /// has no edit in progress, so the editor never starts from a stale etag.
    #[prop(optional, into)]
    live: Option<Signal<Option<Twin>>>,
    /// The draft, when the page keeps it beyond this editor's life; a fresh one otherwise.
    #[prop(optional)]
    draft: Option<Draft>,
) -> impl IntoView {
    let session = expect_context::<Session>();
    let Draft { base, text, stage, started } = draft.unwrap_or_default();
    let pretty = |m: &Map<String, Value>| serde_json::to_string_pretty(&Value::Object(m.clone())).unwrap_or_default();
    if !started.get_value() {
        started.set_value(true);
        let fresh = section.of(&twin);
        text.set(pretty(&fresh));
        base.set((fresh, twin.etag.clone()));
    }
    if let Some(live) = live {
        Effect::new(move |_| {
            let Some(now) = live.get() else { return };
            let untouched = text.with_untracked(|t| *t == pretty(&base.with_untracked(|b| b.0.clone())));
            let idle = matches!(stage.get_untracked(), Stage::Editing | Stage::Saved(_));
            if untouched && idle {
                let fresh = section.of(&now);
                text.set(pretty(&fresh));
                base.set((fresh, now.etag.clone()));
            }
        });
    }
    let device_id = StoredValue::new(device_id);

    let review = move |_| {
        let edited: Value = match serde_json::from_str(&text.get_untracked()) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return stage.set(Stage::Failed(format!("{} must be a JSON object", section.title()))),
            Err(e) => return stage.set(Stage::Failed(format!("not valid JSON: {e}"))),
        };
        let edited = edited.as_object().cloned().unwrap_or_default();
        let (old, _) = base.get_untracked();
        let mut changes = Vec::new();
        diff(section.path(), &old, &edited, &mut changes);
        stage.set(Stage::Reviewing { patch: merge_patch_between(&old, &edited), changes });
    };
    let save = move |patch: Map<String, Value>, etag: String| {
        let id = device_id.get_value();
        stage.set(Stage::Saving);
        spawn_local(async move {
            match api::patch_twin_if_match(session, &id, &section.wrap(patch.clone()), &etag).await {
                Ok(saved) => {
                    let version = match section {
                        Section::Desired => {
                            format!(
                                "desired $version {}",
                                saved.desired_version().map(|v| v.to_string()).unwrap_or_default()
                            )
                        }
                        Section::Tags => format!("twin version {}", saved.version),
                    };
                    base.set((section.of(&saved), saved.etag.clone()));
                    stage.set(Stage::Saved(format!("Saved: {version}")));
                }
                Err(ApiError::Hub { status: 412, .. }) => match api::twin(session, &id).await {
                    Ok(theirs) => stage.set(Stage::Conflict { patch, theirs: Box::new(theirs) }),
                    Err(e) => stage.set(Stage::Failed(e.to_string())),
                },
                Err(e) => stage.set(Stage::Failed(e.to_string())),
            }
        });
    };

    let access = expect_context::<crate::access::Access>();
    let c = move |name: &str| section.class(name);
    view! {
        <div class="editor">
            <h2><label for=c("desired-json")>{section.title()}</label></h2>
            {move || access.read_only.get().map(|why| view! { <p class="hint read-only-reason">{why}</p> })}
            <textarea id=c("desired-json") class=c("desired-json") rows="10" spellcheck="false"
                readonly=move || access.is_read_only()
                prop:value=move || text.get()
                on:input=move |ev| { text.set(event_target_value(&ev)); stage.set(Stage::Editing); }></textarea>
            <div class="actions">
                <button class=c("review") on:click=review disabled=move || access.is_read_only()>"Review changes"</button>
            </div>
            {move || match stage.get() {
                Stage::Editing => ().into_any(),
                Stage::Failed(message) => view! { <p class="error" role="alert">{message}</p> }.into_any(),
                Stage::Saving => view! { <p class="hint" role="status">"Saving..."</p> }.into_any(),
                Stage::Saved(message) => view! { <p class=format!("ok {}", c("saved")) role="status">{message}</p> }.into_any(),
                Stage::Reviewing { patch, changes } if changes.is_empty() => {
                    let _ = patch;
                    view! { <p class="hint">"Nothing to save: the edit equals the current " {section.title()} "."</p> }.into_any()
                }
                Stage::Reviewing { patch, changes } => {
                    let rows = changes.into_iter().map(change_row).collect_view();
                    let etag = base.get_untracked().1;
                    view! {
                        <div class="table-scroll">
                            <table class="diff"><thead><tr><th>"Path"</th><th>"Now"</th><th>"After saving"</th></tr></thead>
                                <tbody>{rows}</tbody></table>
                        </div>
                        <button class=c("save") on:click=move |_| save(patch.clone(), etag.clone())>"Save (If-Match " {base.get_untracked().1} ")"</button>
                    }.into_any()
                }
                Stage::Conflict { patch, theirs } => {
                    let theirs_etag = theirs.etag.clone();
                    let base_json = serde_json::to_string_pretty(&Value::Object(base.get_untracked().0)).unwrap_or_default();
                    let theirs_json = serde_json::to_string_pretty(&Value::Object(section.of(&theirs))).unwrap_or_default();
                    let yours_json = serde_json::to_string_pretty(&Value::Object(patch.clone())).unwrap_or_default();
                    view! {
                        <p class=format!("error {}", c("conflict")) role="alert">"Someone changed this twin while you were editing (412). Compare, then apply your change on top of theirs."</p>
                        <div class="three-way">
                            <div><h3>"Base (what you started from)"</h3><pre>{base_json}</pre></div>
                            <div><h3>"Theirs (now)"</h3><pre>{theirs_json}</pre></div>
                            <div><h3>"Your change (patch)"</h3><pre>{yours_json}</pre></div>
                        </div>
                        <button class=c("retry") on:click=move |_| {
                            base.set((section.of(&theirs), theirs_etag.clone()));
                            save(patch.clone(), theirs_etag.clone());
                        }>"Apply my change on top of theirs"</button>
                    }.into_any()
                }
            }}
        </div>
    }
}

fn change_row(c: Change) -> impl IntoView {
    let show = |v: Option<Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "(absent)".into());
    view! { <tr><td><code>{c.path}</code></td><td><code>{show(c.old)}</code></td><td><code>{show(c.new)}</code></td></tr> }
}
