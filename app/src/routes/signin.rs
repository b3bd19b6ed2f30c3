//! Sign-in: paste a service connection string, as in Azure IoT Explorer.

use crate::session::Session;
use leptos::prelude::*;

/// The sign-in form.
#[component]
pub fn SignInPage() -> impl IntoView {
    let session = expect_context::<Session>();
    let text = RwSignal::new(String::new());
    let remember = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match session.sign_in(&text.get_untracked(), remember.get_untracked()) {
            Ok(()) => {
                let _ = window().location().set_href("/");
            }
            Err(e) => error.set(Some(e)),
        }
    };
    view! {
        <section class="card narrow">
            <h1>"Sign in"</h1>
            <p class="hint">
                "Paste a shared access policy connection string, e.g. the one "
                <code>"make dev"</code> " prints. The key stays in this browser; requests carry short-lived tokens."
            </p>
            <form on:submit=submit>
                <label for="cs">"Connection string"</label>
                <textarea id="cs" name="cs" rows="3" spellcheck="false"
                    placeholder="HostName=127.0.0.1:8787;SharedAccessKeyName=iothubowner;SharedAccessKey=..."
                    prop:value=move || text.get()
                    on:input=move |ev| text.set(event_target_value(&ev))></textarea>
                <label class="inline">
                    <input type="checkbox" prop:checked=move || remember.get()
                        on:change=move |ev| remember.set(event_target_checked(&ev)) />
                    " Remember on this computer"
                </label>
                <button type="submit">"Sign in"</button>
                {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
            </form>
        </section>
    }
}
