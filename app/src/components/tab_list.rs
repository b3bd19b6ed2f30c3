//! A row of tabs that follows the WAI-ARIA tabs pattern: one tab stop (the selected tab; the
//! others have `tabindex="-1"`), Left/Right/Home/End move to a tab and select it, and each tab
//! names the one panel it controls. Which tab is selected is the caller's (the device page keeps
//! it in the URL); this only shows it and asks for changes.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

/// One tab: its name (the `tab-{name}` id, and what `on_select` receives) and its label.
pub type TabItem = (&'static str, &'static str);

/// The tab list. `panel` is the id of the panel every tab controls.
#[component]
pub fn TabList(
    /// The accessible name of the list.
    label: &'static str,
    tabs: Vec<TabItem>,
    selected: Signal<&'static str>,
    on_select: Callback<&'static str>,
    panel: &'static str,
) -> impl IntoView {
    let names: Vec<&'static str> = tabs.iter().map(|(name, _)| *name).collect();
    // Arrow keys wrap around, as the pattern suggests; focus follows the selection, so the
    // keyboard user stays on the tab they chose.
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        let last = names.len().saturating_sub(1);
        let now = selected.get_untracked();
        let at = names.iter().position(|n| *n == now).unwrap_or(0);
        let to = match ev.key().as_str() {
            "ArrowRight" => {
                if at >= last {
                    0
                } else {
                    at + 1
                }
            }
            "ArrowLeft" => {
                if at == 0 {
                    last
                } else {
                    at - 1
                }
            }
            "Home" => 0,
            "End" => last,
            _ => return,
        };
        ev.prevent_default();
        let Some(name) = names.get(to).copied() else { return };
        on_select.run(name);
        focus(&tab_id(name));
    };
    let buttons = tabs
        .into_iter()
        .map(|(name, text)| {
            let chosen = move || selected.get() == name;
            view! {
                <button type="button" role="tab" id=tab_id(name) class="tab"
                    aria-selected=move || chosen().to_string()
                    aria-controls=panel
                    tabindex=move || if chosen() { "0" } else { "-1" }
                    on:click=move |_| on_select.run(name)>
                    {text}
                </button>
            }
        })
        .collect_view();
    view! {
        <div role="tablist" aria-label=label class="tabs" on:keydown=on_key>
            {buttons}
        </div>
    }
}

/// The id of a tab's button, which its panel's `aria-labelledby` names.
pub fn tab_id(name: &str) -> String {
    format!("tab-{name}")
}

fn focus(id: &str) {
    if let Some(element) = document().get_element_by_id(id).and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok()) {
        let _ = element.focus();
    }
}
