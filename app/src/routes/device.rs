//! One device, or one module (the page's id is then the module's key, `{device}/{module}`):
//! a summary of what an operator checks first, then the page's sections as tabs in the order
//! an operator works: overview (drift, chart), twin (the editors, the raw JSON), telemetry,
//! methods and messages, modules (a device's), history, identity (keys, status). The chosen
//! tab is in the URL (`?tab=twin`), so a reload or a shared link opens the same tab.
//!
//! Only the chosen tab's content is mounted. What must outlive a tab switch lives above the
//! tabs, in [`Shared`]: the live view (a switch does not reconnect it), the twin and identity
//! reads, the telemetry received, and what the operator typed or picked (editor drafts, the
//! method and message forms and their answers, the chart's range and field).

use crate::access::Access;
use crate::api::{self, ApiError};
use crate::components::device_actions::{ActionsState, IdentityActions, MethodsPanel};
use crate::components::device_summary::DeviceSummary;
use crate::components::drift_table::DriftTable;
use crate::components::history::History;
use crate::components::module_list::ModuleList;
use crate::components::section_editor::{Draft, Section, SectionEditor};
use crate::components::tab_list::{tab_id, TabList};
use crate::components::telemetry_chart::{ChartPicks, TelemetryChart};
use crate::session::Session;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use gloo_net::websocket::{futures::WebSocket, Message};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};
use leptos_router::NavigateOptions;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use twinhub_core::auth::{ConnectionString, Credential};
use twinhub_core::identity::is_module_key;
use twinhub_core::wire::{Identity, LiveEvent, StoredMessage, Twin};

/// How many telemetry messages the page keeps.
const RECENT_TELEMETRY: usize = 20;

/// The id of the one tab panel (every tab controls it; its content is the chosen tab's).
const PANEL: &str = "panel";

/// The page's sections, in the order an operator works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tab {
    /// Drift and the telemetry chart: is the device doing what it was asked?
    Overview,
    /// The desired and tags editors, and the whole twin as JSON.
    Twin,
    /// The chart and the messages received while the page is open.
    Telemetry,
    /// Direct methods and cloud-to-device messages.
    Methods,
    /// A device's modules (a module has none).
    Modules,
    /// The twin's changes, with revert.
    History,
    /// The connection string, enable/disable, new keys.
    Identity,
}

impl Tab {
    const ALL: [Tab; 7] =
        [Tab::Overview, Tab::Twin, Tab::Telemetry, Tab::Methods, Tab::Modules, Tab::History, Tab::Identity];

    /// The name in the URL (`?tab=`) and in the tab's id (`tab-{name}`).
    fn name(self) -> &'static str {
        match self {
            Tab::Overview => "overview",
            Tab::Twin => "twin",
            Tab::Telemetry => "telemetry",
            Tab::Methods => "methods",
            Tab::Modules => "modules",
            Tab::History => "history",
            Tab::Identity => "identity",
        }
    }

    fn label(self, is_module: bool) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Twin => "Twin",
            Tab::Telemetry => "Telemetry",
            // A module takes no cloud-to-device messages.
            Tab::Methods if is_module => "Methods",
            Tab::Methods => "Methods & messages",
            Tab::Modules => "Modules",
            Tab::History => "History",
            Tab::Identity => "Identity",
        }
    }

    /// The tabs of a device, or of a module (which has no modules).
    fn of(is_module: bool) -> impl Iterator<Item = Tab> {
        Tab::ALL.into_iter().filter(move |t| !(is_module && *t == Tab::Modules))
    }

    /// The tab `?tab=` names; the overview when it names none, or one this page does not have
    /// (an old link, a module's page asked for modules).
    fn from_query(name: Option<&str>, is_module: bool) -> Tab {
        Tab::of(is_module).find(|t| Some(t.name()) == name).unwrap_or(Tab::Overview)
    }
}

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

/// What the tabs share, held by [`DeviceView`] above them (see the module's doc).
#[derive(Clone, Copy)]
struct Shared {
    id: StoredValue<String>,
    session: Session,
    access: Access,
    /// The first read of the twin.
    twin: LocalResource<Result<Twin, ApiError>>,
    identity: LocalResource<Result<Identity, ApiError>>,
    /// Newer than `twin` once the live view has spoken.
    live_twin: RwSignal<Option<Twin>>,
    /// The twin as now known: the live view's newest, else the first read.
    current: Signal<Option<Twin>>,
    /// Whether `current` is known (changes once: tabs build their twin views on it, not on
    /// every live update).
    has_twin: Memo<bool>,
    telemetry: RwSignal<Vec<StoredMessage>>,
    /// Messages received over the live view: the chart refetches when it moves.
    received: RwSignal<usize>,
    /// The chart's threshold: what the device applied, else what it was asked for.
    threshold: Signal<Option<f64>>,
    chart: ChartPicks,
    desired: Draft,
    tags: Draft,
    actions: ActionsState,
    /// Reads the identity again after an action changed it: the page's, not the identity
    /// tab's, so an action that finishes after the tab was left still lands.
    identity_changed: Callback<()>,
    /// Whether the operator opened the raw JSON (closed by default).
    raw_open: RwSignal<bool>,
}

/// One device's (or module's) page.
#[component]
fn DeviceView(id: String) -> impl IntoView {
    let session = expect_context::<Session>();
    let access = expect_context::<Access>();
    let is_module = is_module_key(&id);
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
    let live_twin = RwSignal::new(None::<Twin>);
    let telemetry = RwSignal::new(Vec::<StoredMessage>::new());
    let connected = RwSignal::new(false);
    let received = RwSignal::new(0usize);

    // The live view: open while the page is, left when the page goes away. Its token is
    // short-lived and the hub closes the view when it expires; a new one follows with a fresh
    // token.
    let stop = Arc::new(AtomicBool::new(false));
    let device_id = id();
    {
        let stop = stop.clone();
        spawn_local(async move {
            // Upstream mode has no live view, and a policy without ServiceConnect may not open
            // one: not even tried (the browser would log the refusal, again and again).
            let info = api::session_info(session).await.unwrap_or_default();
            if info.unavailable("live").is_some() || !info.may("ServiceConnect") {
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
    let current = Signal::derive(move || live_twin.get().or_else(|| twin.get().and_then(Result::ok)));
    let threshold = Signal::derive(move || {
        current.with(|t| {
            let p = &t.as_ref()?.properties;
            let threshold = |section: &serde_json::Map<String, serde_json::Value>| {
                section.get("temperatureThreshold").and_then(serde_json::Value::as_f64)
            };
            threshold(&p.reported).or_else(|| threshold(&p.desired))
        })
    });
    let shared = Shared {
        id: id_value,
        session,
        access,
        twin,
        identity,
        live_twin,
        current,
        has_twin: Memo::new(move |_| current.with(Option::is_some)),
        telemetry,
        received,
        threshold,
        chart: ChartPicks::default(),
        desired: Draft::default(),
        tags: Draft::default(),
        actions: ActionsState::default(),
        identity_changed: Callback::new(move |()| identity.refetch()),
        raw_open: RwSignal::new(false),
    };

    // The tab: read from the URL, changed by navigating to the same path with another
    // `?tab=`. The router keeps this view for the same path, so the live view stays open.
    let query = use_query_map();
    let tab = Memo::new(move |_| query.with(|q| Tab::from_query(q.get("tab").as_deref(), is_module)));
    let navigate = use_navigate();
    let select = Callback::new(move |name: &'static str| {
        if name == tab.get_untracked().name() {
            return;
        }
        // The path as the address bar spells it (a module's key is percent-encoded there).
        let path = window().location().pathname().unwrap_or_default();
        navigate(
            &format!("{path}?tab={name}"),
            NavigateOptions { replace: false, scroll: false, ..Default::default() },
        );
    });
    let tabs = Tab::of(is_module).map(|t| (t.name(), t.label(is_module))).collect::<Vec<_>>();

    view! {
        <section class="card device-page">
            {heading(id(), connected)}
            <DeviceSummary
                twin=Signal::derive(move || match live_twin.get() {
                    Some(doc) => Some(Ok(doc)),
                    None => twin.get(),
                })
                identity=Signal::derive(move || identity.get()) />
            <TabList label="Device sections" tabs selected=Signal::derive(move || tab.get().name()) on_select=select panel=PANEL />
            <div role="tabpanel" id=PANEL class="tab-panel" tabindex="0" aria-labelledby=move || tab_id(tab.get().name())>
                {move || match tab.get() {
                    Tab::Overview => overview_tab(shared).into_any(),
                    Tab::Twin => twin_tab(shared).into_any(),
                    Tab::Telemetry => telemetry_tab(shared).into_any(),
                    Tab::Methods => view! { <MethodsPanel device_id=id() state=shared.actions /> }.into_any(),
                    Tab::Modules => view! { <ModuleList device_id=id() /> }.into_any(),
                    Tab::History => history_tab(shared).into_any(),
                    Tab::Identity => identity_tab(shared).into_any(),
                }}
            </div>
        </section>
    }
}

/// The way back, and the page's title with the live view's badge.
fn heading(id: String, connected: RwSignal<bool>) -> impl IntoView {
    let live = move || connected.get().then(|| view! { <span class="badge live">"live"</span> });
    match twinhub_core::identity::split_key(&id) {
        (device, Some(module)) => {
            let back = format!(
                "/device/{}",
                percent_encoding::utf8_percent_encode(device, percent_encoding::NON_ALPHANUMERIC)
            );
            view! {
                <p><a href="/fleet">"← Fleet"</a>" · "<a class="parent-device" href=back>{format!("← device {device}")}</a></p>
                <h1 class="device-id">{format!("module {module}")} <span class="muted">{format!(" on {device}")}</span>{live}</h1>
            }
            .into_any()
        }
        (_, None) => view! {
            <p><a href="/fleet">"← Fleet"</a></p>
            <h1 class="device-id">{id.clone()} {live}</h1>
        }
        .into_any(),
    }
}

/// `show(twin)` once the twin is known (built once, not on every live update: what it shows
/// that changes reads `Shared::current` itself); until then that it loads, or why it did not
/// (the summary above says it as an alert).
fn when_loaded(s: Shared, show: impl Fn(Twin) -> AnyView + Send + 'static) -> impl IntoView {
    move || {
        if s.has_twin.get() {
            return s.current.get_untracked().map_or_else(|| ().into_any(), &show);
        }
        match s.twin.get() {
            Some(Err(e)) => view! { <p class="error">{format!("The twin did not load: {e}")}</p> }.into_any(),
            _ => view! { <p class="hint" role="status">"Loading the twin..."</p> }.into_any(),
        }
    }
}

/// Is the device doing what it was asked: drift, who set the desired properties, the chart.
fn overview_tab(s: Shared) -> impl IntoView {
    let configuration = Memo::new(move |_| s.current.with(|t| t.as_ref()?.configuration().map(str::to_owned)));
    view! {
        {when_loaded(s, move |_| view! { <DriftTable twin=s.current /> }.into_any())}
        {move || configuration.get().map(|id| view! { <ConfiguredBy id=id twin=s.current /> })}
        <h2>"Telemetry"</h2>
        {chart(s)}
    }
}

/// The editors (desired, tags), then the whole twin as JSON, collapsed: the editors are what
/// an operator works with, the JSON what they check.
fn twin_tab(s: Shared) -> impl IntoView {
    when_loaded(s, move |doc| {
        let id = s.id.get_value();
        let version = move || s.current.with(|t| t.as_ref().map(|t| (t.version, t.etag.clone())));
        let pretty = move || {
            s.current.with(|t| t.as_ref().map(|t| serde_json::to_string_pretty(&t.to_value()).unwrap_or_default()))
        };
        view! {
            <p class="hint twin-version">
                {move || version().map(|(v, etag)| view! { "version " {v} " · etag " <code>{etag}</code> })}
            </p>
            <SectionEditor device_id=id.clone() twin=doc.clone() live=s.live_twin draft=s.desired />
            <SectionEditor device_id=id twin=doc section=Section::Tags live=s.live_twin draft=s.tags />
            <details class="raw-twin" prop:open=s.raw_open.get_untracked()
                on:toggle=move |ev| s.raw_open.set(event_target::<web_sys::HtmlDetailsElement>(&ev).open())>
                <summary>"Raw twin JSON"</summary>
                <pre class="twin-json">{pretty}</pre>
            </details>
        }
        .into_any()
    })
}

/// The chart, and the messages received while the page is open.
fn telemetry_tab(s: Shared) -> impl IntoView {
    view! {
        <h2>"Telemetry"</h2>
        {chart(s)}
        {move || (s.access.feature("telemetry") == Some(Ok(()))).then(|| view! {
            <h2>"Received while this page is open"</h2>
            {move || {
                let list = s.telemetry.get();
                if list.is_empty() {
                    return view! { <p class="hint">"Messages the device sends while this page is open appear here."</p> }.into_any();
                }
                let rows = list
                    .into_iter()
                    .map(|m| view! { <tr><td class="muted">{m.enqueued_time}</td><td><code>{m.body.to_string()}</code></td></tr> })
                    .collect_view();
                view! {
                    <div class="table-scroll">
                        <table class="fleet telemetry">
                            <thead><tr><th>"Enqueued"</th><th>"Body"</th></tr></thead>
                            <tbody>{rows}</tbody>
                        </table>
                    </div>
                }
                .into_any()
            }}
        })}
    }
}

/// The telemetry chart, or why upstream mode has none (nothing until the hub has said which:
/// a chart asked for in upstream mode would only be refused). Its range and field are the
/// page's.
fn chart(s: Shared) -> impl IntoView {
    move || match s.access.feature("telemetry") {
        None => ().into_any(),
        Some(Err(why)) => view! { <p class="hint unavailable">{why}</p> }.into_any(),
        Some(Ok(())) => view! {
            <TelemetryChart device_id=s.id.get_value() tick=Signal::derive(move || s.received.get())
                threshold=s.threshold picks=s.chart />
        }
        .into_any(),
    }
}

/// The twin's changes, reloaded when its version moves.
fn history_tab(s: Shared) -> impl IntoView {
    let version = Memo::new(move |_| s.current.with(|t| t.as_ref().map_or(0, |t| t.version)));
    move || match s.access.feature("history") {
        None => view! { <h2>"History"</h2><p class="hint" role="status">"Loading..."</p> }.into_any(),
        Some(Err(why)) => view! { <h2>"History"</h2><p class="hint unavailable">{why}</p> }.into_any(),
        Some(Ok(())) => view! { <History device_id=s.id.get_value() version=Signal::from(version) /> }.into_any(),
    }
}

/// The connection string (and running it as a virtual device), status and keys.
fn identity_tab(s: Shared) -> impl IntoView {
    let id = s.id.get_value();
    let label = if is_module_key(&id) { "Module connection string" } else { "Device connection string" };
    view! {
        <h2 id="device-cs-title">{label}</h2>
        {move || match s.identity.get() {
            None => view! { <p class="hint" role="status">"Loading the identity..."</p> }.into_any(),
            Some(Err(e)) => view! { <p class="error">{format!("The identity did not load: {e}")}</p> }.into_any(),
            Some(Ok(device)) => connection_string(s, &device).into_any(),
        }}
        <IdentityActions device_id=id identity=Signal::derive(move || s.identity.get().and_then(Result::ok))
            on_changed=s.identity_changed state=s.actions />
    }
}

/// The identity's connection string, selected whole on focus, and the link that runs it as a
/// virtual device.
fn connection_string(s: Shared, device: &Identity) -> impl IntoView {
    let credential = Credential::Device { device_id: s.id.get_value(), key: device.primary_key().to_owned() };
    let cs = ConnectionString { host_name: s.session.host_name(), credential }.to_string();
    let virtual_url =
        format!("/virtual/#device={}", percent_encoding::utf8_percent_encode(&cs, percent_encoding::NON_ALPHANUMERIC));
    view! {
        <input id="device-cs" class="device-cs" type="text" aria-labelledby="device-cs-title" readonly=true prop:value=cs
            on:focus=move |ev| { event_target::<web_sys::HtmlInputElement>(&ev).select() } />
        <p><a class="run-virtual" href=virtual_url target="_blank" rel="noopener">"Run as virtual device"</a>
            <span class="hint">" (in a new tab; the key travels in the link's fragment, which is never sent to a server)"</span></p>
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
    loop {
        // The page's leaving is seen within a second even when the device is quiet: the view
        // (dropped with `stream`, which closes the socket) must not hold one of the device's
        // few live views until its token runs out.
        let text = match select(stream.next(), Box::pin(sleep_ms(1_000))).await {
            Either::Left((Some(Ok(Message::Text(text))), _)) => text,
            Either::Left(_) => break,
            Either::Right(_) if stop.load(Ordering::Relaxed) => break,
            Either::Right(_) => continue,
        };
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
/// configuration changes). The configuration is read once; the twin's side follows `twin`.
#[component]
fn ConfiguredBy(id: String, twin: Signal<Option<Twin>>) -> impl IntoView {
    let session = expect_context::<Session>();
    let config_id = id.clone();
    let configuration = LocalResource::new(move || {
        let id = config_id.clone();
        async move { api::configuration(session, &id).await }
    });
    view! {
        <div class="configured-by">
            <p class="hint">"desired properties set by configuration " <a href="/device-configurations">{id}</a></p>
            {move || match configuration.get() {
                None => view! { <p class="hint" role="status">"Loading the configuration..."</p> }.into_any(),
                Some(Err(e)) => view! { <p class="error" role="alert">{format!("The configuration did not load: {e}")}</p> }.into_any(),
                Some(Ok(c)) => {
                    let desired = twin.with(|t| t.as_ref().map(|t| serde_json::Value::Object(t.properties.desired.clone())))
                        .unwrap_or_default();
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
                    view! { <div class="table-scroll"><table class="fleet owned"><tbody>{rows}</tbody></table></div> }.into_any()
                }
            }}
        </div>
    }
}
