//! One device: its twin, as the service sees it.

use crate::api::{self, ApiError};
use crate::session::Session;
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

/// The device page.
#[component]
pub fn DevicePage() -> impl IntoView {
    let session = expect_context::<Session>();
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let twin = LocalResource::new(move || {
        let id = id();
        async move { api::twin(session, &id).await }
    });
    view! {
        <section class="card">
            <p><a href="/">"← Fleet"</a></p>
            <h1 class="device-id">{id}</h1>
            <Suspense fallback=|| view! { <p class="hint">"Loading twin..."</p> }>
                {move || twin.get().map(|result| match result {
                    Ok(doc) => {
                        let version = doc["version"].to_string();
                        let etag = doc["etag"].as_str().unwrap_or_default().to_owned();
                        let pretty = serde_json::to_string_pretty(&doc).unwrap_or_default();
                        view! {
                            <p class="hint">"version " {version} " · etag " <code>{etag}</code></p>
                            <h2>"Twin"</h2>
                            <pre class="twin-json">{pretty}</pre>
                        }.into_any()
                    }
                    Err(ApiError::SignedOut) => view! { <p class="hint">"Sign in to see this device."</p> }.into_any(),
                    Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}
