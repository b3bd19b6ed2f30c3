//! One device, or one module (the page's id is then the module's key, `{device}/{module}`):
//! its twin, as the service sees it, kept current by the live view, and the telemetry that
//! arrives while the page is open. A device's page lists its modules.

use crate::api::{self, ApiError};
use crate::components::device_actions::DeviceActions;
use crate::components::drift_table::DriftTable;
use crate::components::history::History;
use crate::components::module_list::ModuleList;
use crate::components::section_editor::{Section, SectionEditor};
use crate::components::telemetry_chart::TelemetryChart;
use crate::session::Session;
use futures_util::StreamExt;
use gloo_net::websocket::{futures::WebSocket, Message};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_params_map;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use twinhub_core::auth::{ConnectionString, Credential};
use twinhub_core::identity::is_module_key;
use twinhub_core::wire::{LiveEvent, StoredMessage, Twin};

/// How many telemetry messages the page keeps.
const RECENT_TELEMETRY: usize = 20;

/// The device page. Its whole view is built anew for each id: going from a device to its module
/// (or to another device) must not keep the previous identity's live view, actions or editors.
#[component]
pub fn DevicePage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id").unwrap_or_default()));
    move || {
        let id = id.get();
        view! { <DeviceView id=id /> }
    }
}

/// One device's (or module's) page.
#[component]
fn DeviceView(id: String) -> impl IntoView {
    let session = expect_context::<Session>();
    let access = expect_context::<crate::access::Access>();
    let id_value = StoredValue::new(id);
    let id = move || id_value.get_value();
    let twin = LocalResource::new(move || {
        let id = id();
        async move { api::twin(session, &id).await }
    });
    let identity = LocalResource::new(move || {
        let id = id();
        async move { api::device(session, &id).await }
    });
    // Newer than the resource once the live view has spoken.
    let live_twin = RwSignal::new(None::<Twin>);
    let telemetry = RwSignal::new(Vec::<StoredMessage>::new());
    let connected = RwSignal::new(false);
    // Messages received over the live view: the chart refetches when it moves.
    let received = RwSignal::new(0usize);

    // The live view: open while the page is, left when the page goes away. Its token is
    // short-lived and the hub closes the view when it expires; a new one follows with a fresh
    // token.
    let stop = Arc::new(AtomicBool::new(false));
    let device_id = id();
    {
        let stop = stop.clone();
        spawn_local(async move {
            // Upstream mode has no live view: not even tried (the browser would log the refusal).
            let info = api::session_info(session).await.unwrap_or_default();
            if info.unavailable("live").is_some() {
                return;
            }
            // A view that closes before it says anything (the device is gone, too many views)
            // is retried less and less often.
            let mut delay_ms = 1_000;
            while !stop.load(Ordering::Relaxed) {
                let Some(url) = api::live_url(session, &device_id) else { return };
                let Ok(socket) = WebSocket::open(&url) else { return };
                let heard = follow_live_view(socket, &stop, connected, live_twin, telemetry, received).await;
                let _ = connected.try_set(false);
                delay_ms = if heard { 1_000 } else { (delay_ms * 2).min(30_000) };
                sleep_ms(delay_ms).await;
            }
        });
    }
    on_cleanup(move || stop.store(true, Ordering::Relaxed));
    // The twin as now known: the live view's newest, else the first read.
    let current_twin = Signal::derive(move || live_twin.get().or_else(|| twin.get().and_then(Result::ok)));
    // The chart's threshold: what the device applied, else what it was asked for.
    let threshold = Signal::derive(move || {
        current_twin.with(|t| {
            let p = &t.as_ref()?.properties;
            let threshold = |section: &serde_json::Map<String, serde_json::Value>| {
                section.get("temperatureThreshold").and_then(serde_json::Value::as_f64)
            };
            threshold(&p.reported).or_else(|| threshold(&p.desired))
        })
    });

    view! {
        <section class="card">
            {move || match twinhub_core::identity::split_key(&id()) {
                (device, Some(module)) => {
                    let back = format!("/device/{}", percent_encoding::utf8_percent_encode(device, percent_encoding::NON_ALPHANUMERIC));
                    view! {
                        <p><a href="/">"← Fleet"</a>" · "<a class="parent-device" href=back>{format!("← device {device}")}</a></p>
                        <h1 class="device-id">{format!("module {module}")} <span class="muted">{format!(" on {device}")}</span>
                            {move || connected.get().then(|| view! { <span class="badge live">"live"</span> })}</h1>
                    }.into_any()
                }
                (_, None) => view! {
                    <p><a href="/">"← Fleet"</a></p>
                    <h1 class="device-id">{id} {move || connected.get().then(|| view! { <span class="badge live">"live"</span> })}</h1>
                }.into_any(),
            }}
            <Suspense fallback=|| view! { <p class="hint">"Loading twin..."</p> }>
                {move || {
                    let current = match live_twin.get() {
                        Some(doc) => Some(Ok(doc)),
                        None => twin.get(),
                    };
                    current.map(|result| match result {
                        Ok(doc) => twin_view(doc).into_any(),
                        Err(ApiError::SignedOut) => view! { <p class="hint">"Sign in to see this device."</p> }.into_any(),
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    })
                }}
            </Suspense>
            <Suspense fallback=|| ()>
                {move || twin.get().and_then(Result::ok).map(|doc| view! {
                    <SectionEditor device_id=id() twin=doc.clone() live=live_twin />
                    <SectionEditor device_id=id() twin=doc section=Section::Tags live=live_twin />
                })}
            </Suspense>
            <Suspense fallback=|| ()>
                {move || identity.get().and_then(Result::ok).map(|device| {
                    let key = device.primary_key().to_owned();
                    let cs = ConnectionString { host_name: session.host_name(), credential: Credential::Device { device_id: id(), key } };
                    let virtual_url = format!(
                        "/virtual/#device={}",
                        percent_encoding::utf8_percent_encode(&cs.to_string(), percent_encoding::NON_ALPHANUMERIC)
                    );
                    view! {
                        <h2>{if is_module_key(&id()) { "Module connection string" } else { "Device connection string" }}</h2>
                        <input class="device-cs" type="text" readonly=true prop:value=cs.to_string()
                            on:focus=move |ev| { event_target::<web_sys::HtmlInputElement>(&ev).select() } />
                        <p><a class="run-virtual" href=virtual_url target="_blank" rel="noopener">"Run as virtual device"</a>
                            <span class="hint">" (in a new tab; the key travels in the link's fragment, which is never sent to a server)"</span></p>
                    }
                })}
            </Suspense>
            <DriftTable twin=current_twin />
            {move || {
                let id = id();
                (!is_module_key(&id)).then(|| view! { <ModuleList device_id=id /> })
            }}
            <h2>"Telemetry"</h2>
            {move || match access.unavailable("telemetry") {
                Some(why) => view! { <p class="hint unavailable">{why}</p> }.into_any(),
                None => view! { <TelemetryChart device_id=id() tick=Signal::derive(move || received.get()) threshold=threshold /> }.into_any(),
            }}
            <DeviceActions device_id=id() identity=Signal::derive(move || identity.get().and_then(Result::ok))
                on_changed=Callback::new(move |()| identity.refetch()) />
            {move || match access.unavailable("history") {
                Some(why) => view! { <h2>"History"</h2><p class="hint unavailable">{why}</p> }.into_any(),
                None => view! { <History device_id=id() version=Signal::derive(move || current_twin.with(|t| t.as_ref().map_or(0, |t| t.version))) /> }.into_any(),
            }}
            {move || {
                let list = telemetry.get();
                if list.is_empty() {
                    view! { <p class="hint">"Messages the device sends while this page is open appear here."</p> }.into_any()
                } else {
                    let rows = list
                        .into_iter()
                        .map(|m| {
                            let time = m.enqueued_time;
                            let body = m.body.to_string();
                            view! { <tr><td class="muted">{time}</td><td><code>{body}</code></td></tr> }
                        })
                        .collect_view();
                    view! { <table class="fleet telemetry"><tbody>{rows}</tbody></table> }.into_any()
                }
            }}
        </section>
    }
}

fn twin_view(doc: Twin) -> impl IntoView {
    let version = doc.version.to_string();
    let etag = doc.etag.clone();
    let state = doc.connection_state.clone();
    let pretty = serde_json::to_string_pretty(&doc.to_value()).unwrap_or_default();
    // The Plug and Play model it announced, and the configuration that owns its desired
    // properties (a desired value that differs from the configuration's was set by someone
    // else since, and stands until the configuration changes).
    let model = Some(doc.model_id.as_str()).filter(|m| !m.is_empty()).map(|m| {
        let components: Vec<String> = doc
            .properties
            .reported
            .iter()
            .filter(|(_, v)| twinhub_core::pnp::is_component(v))
            .map(|(k, _)| k.clone())
            .collect();
        let listed =
            if components.is_empty() { String::new() } else { format!(" (components: {})", components.join(", ")) };
        view! { <p class="hint model-id">"model " <code>{m.to_owned()}</code>{listed}</p> }
    });
    let configured = doc.configuration().map(|id| {
        let desired = serde_json::Value::Object(doc.properties.desired.clone());
        view! { <ConfiguredBy id=id.to_owned() desired=desired /> }
    });
    view! {
        <p class="hint">"version " {version} " · etag " <code>{etag}</code> " · " <span class="connection">{state}</span></p>
        {model}
        {configured}
        <h2>"Twin"</h2>
        <pre class="twin-json">{pretty}</pre>
    }
}

/// Follows one live view until it closes or the page goes away; whether it said anything.
async fn follow_live_view(
    socket: WebSocket,
    stop: &AtomicBool,
    connected: RwSignal<bool>,
    live_twin: RwSignal<Option<Twin>>,
    telemetry: RwSignal<Vec<StoredMessage>>,
    received: RwSignal<usize>,
) -> bool {
    let (_sink, mut stream) = socket.split();
    let mut heard = false;
    while let Some(Ok(Message::Text(text))) = stream.next().await {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // try_*: the page (and its signals) may be gone by the time a message arrives.
        if !heard {
            let _ = connected.try_set(true);
        }
        heard = true;
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&text).and_then(serde_json::from_value::<LiveEvent>)
        else {
            continue;
        };
        match event {
            LiveEvent::Twin { twin } => {
                let _ = live_twin.try_set(Some(*twin));
            }
            LiveEvent::Telemetry { message } => {
                let _ = received.try_update(|n| *n += 1);
                let _ = telemetry.try_update(|list| {
                    list.insert(0, message);
                    list.truncate(RECENT_TELEMETRY);
                });
            }
            LiveEvent::Deleted => {}
        }
    }
    heard
}

/// Waits `ms` milliseconds (the browser's timer).
async fn sleep_ms(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// The configuration applied to this twin, and for each desired property it sets whether the
/// twin still has its value or someone has changed it since (which stands until the
/// configuration changes).
#[component]
fn ConfiguredBy(id: String, desired: serde_json::Value) -> impl IntoView {
    let session = expect_context::<Session>();
    let config_id = id.clone();
    let configuration = LocalResource::new(move || {
        let id = config_id.clone();
        async move { api::configuration(session, &id).await }
    });
    view! {
        <div class="configured-by">
            <p class="hint">"desired properties set by configuration " <a href="/device-configurations">{id}</a></p>
            {move || configuration.get().and_then(Result::ok).map(|c| {
                let rows = c.content().clone().into_iter().map(|(path, value)| {
                    let name = path.strip_prefix("properties.desired.").unwrap_or(&path).to_owned();
                    let current = name.split('.').try_fold(&desired, |v, k| v.get(k));
                    let (state, class) = match current {
                        Some(now) if *now == value => ("as the configuration sets it".to_owned(), "drift ok"),
                        Some(now) => (format!("changed since to {now}"), "drift pending"),
                        None => ("not set".to_owned(), "drift pending"),
                    };
                    view! { <tr><td><code>{name}</code></td><td>{value.to_string()}</td><td class=class>{state}</td></tr> }
                }).collect_view();
                view! { <table class="fleet owned"><tbody>{rows}</tbody></table> }
            })}
        </div>
    }
}
