//! The fleet's query box: IoT Hub SQL, checked as you type by the same parser the hub runs, with
//! the error's position marked in the text.

use leptos::prelude::*;
use twinhub_core::query::{parse, QueryError};

/// The query text, its live check, and a Run button. `on_run` receives the text when it parses.
#[component]
pub fn QueryBox(text: RwSignal<String>, on_run: Callback<String>) -> impl IntoView {
    let checked = Memo::new(move |_| text.with(|t| parse(t).err()));
    let run = move || {
        if checked.with(Option::is_none) {
            on_run.run(text.get_untracked());
        }
    };
    view! {
        <div class="query-box">
            <label for="fleet-query">"Query"</label>
            <textarea id="fleet-query" class="query" rows="2" spellcheck="false"
                aria-invalid=move || checked.with(Option::is_some).to_string()
                aria-describedby="fleet-query-error"
                prop:value=move || text.get()
                on:input=move |ev| text.set(event_target_value(&ev))
                on:keydown=move |ev| {
                    // Ctrl/Cmd+Enter runs, as in most query consoles.
                    if ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key()) {
                        ev.prevent_default();
                        run();
                    }
                }></textarea>
            <button class="run" on:click=move |_| run() disabled=move || checked.with(Option::is_some)>"Run"</button>
            <div id="fleet-query-error" aria-live="polite">
                {move || checked.get().map(|e| error_view(&text.get_untracked(), &e))}
            </div>
        </div>
    }
}

/// The message with the query's line, the offending character marked.
fn error_view(text: &str, e: &QueryError) -> impl IntoView {
    let line = text.lines().nth(e.at.line.saturating_sub(1) as usize).unwrap_or_default();
    let col = e.at.col.saturating_sub(1) as usize;
    let before: String = line.chars().take(col).collect();
    let at: String = line.chars().skip(col).take(1).collect();
    let after: String = line.chars().skip(col + 1).collect();
    let at = if at.is_empty() { " ".to_owned() } else { at };
    view! {
        <p class="error query-error">{e.to_string()}</p>
        <pre class="query-marked">{before}<mark class="error-at">{at}</mark>{after}</pre>
    }
}
