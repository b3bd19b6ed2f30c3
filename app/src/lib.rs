//! twinhub's operator dashboard (Leptos, client-side rendered), built as four programs that
//! share this library, each carrying only its own pages so that no page's download pays for
//! the others' code: the fleet (`src/bin/dashboard.rs`: overview, fleet, sign-in), a device
//! (`src/bin/device.rs`), operations (`src/bin/operations.rs`: jobs, configurations,
//! endpoints) and the virtual device (`src/bin/virtual.rs`, which alone carries core's MQTT
//! client and device state machine). `twinhub_core::console` says which program serves a
//! page; the Worker answers the page's path with that program's `index.html`.
//!
//! - [`session`]: the signed-in credential and the SAS tokens minted from it.
//! - [`api`]: typed calls to the hub's REST API.
//! - [`access`]: whether the signed-in policy may write (read-only console otherwise).
//! - [`routes`]: one module per page.
//! - [`virtual_runner`]: core's virtual device, run over a browser WebSocket.

mod access;
mod api;
mod components;
mod routes;
mod session;
mod virtual_runner;

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;
use twinhub_core::console::Program;

/// Runs the console's fleet program: the overview, the fleet, sign-in.
pub fn console() {
    run(Program::Fleet, || {
        view! {
            <Routes fallback=|| elsewhere(Program::Fleet)>
                <Route path=path!("/") view=routes::overview::OverviewPage />
                <Route path=path!("/fleet") view=routes::fleet::FleetPage />
                <Route path=path!("/signin") view=routes::signin::SignInPage />
                <Route path=path!("/bench/chart") view=routes::bench::ChartBenchPage />
            </Routes>
        }
    });
}

/// Runs the console's device program: a device's (or module's) page.
pub fn device_console() {
    run(Program::Device, || {
        view! {
            <Routes fallback=|| elsewhere(Program::Device)>
                <Route path=path!("/device/:id") view=routes::device::DevicePage />
            </Routes>
        }
    });
}

/// Runs the console's operations program: jobs, configurations, endpoints.
pub fn operations_console() {
    run(Program::Operations, || {
        view! {
            <Routes fallback=|| elsewhere(Program::Operations)>
                <Route path=path!("/jobs") view=routes::jobs::JobsPage />
                <Route path=path!("/device-configurations") view=routes::configurations::ConfigurationsPage />
                <Route path=path!("/endpoints") view=routes::endpoints::EndpointsPage />
            </Routes>
        }
    });
}

/// Mounts one console program: the session in context, the header, and `pages` (the
/// program's `<Routes>`, its fallback [`elsewhere`]) under the router.
fn run<P: IntoView + 'static>(this: Program, pages: fn() -> P) {
    console_error_panic_hook::set_once();
    arrived(this);
    mount_to_body(move || {
        let access = provide_session();
        view! {
            <Router>
                <Header access />
                <main>{pages()}</main>
            </Router>
        }
    });
}

/// The path a program last sent to the server for another program to serve.
const ELSEWHERE_KEY: &str = "twinhub.elsewhere";

/// What a program shows for a path it has no page for. A link followed in the browser (or the
/// back button) can bring it another program's page: that page is loaded from the server,
/// which starts the right program. A path no program knows says so.
fn elsewhere(this: Program) -> AnyView {
    // The router's location: the address bar may not show the new path yet.
    let location = leptos_router::hooks::use_location();
    let path = location.pathname.get_untracked();
    // A path the server answers with this very program (a missing file under another
    // program's directory gets the root's page) would load itself forever: the second time
    // in a row, it is no page.
    let storage = window().session_storage().ok().flatten();
    let last = storage.as_ref().and_then(|s| s.get_item(ELSEWHERE_KEY).ok().flatten());
    if let Some(s) = &storage {
        let _ = s.remove_item(ELSEWHERE_KEY);
    }
    if Program::of_page(&path) != this && last.as_deref() != Some(path.as_str()) {
        if let Some(s) = &storage {
            let _ = s.set_item(ELSEWHERE_KEY, &path);
        }
        let (search, hash) = (location.search.get_untracked(), location.hash.get_untracked());
        let search = search.trim_start_matches('?');
        let hash = hash.trim_start_matches('#');
        let mut target = path;
        if !search.is_empty() {
            target = format!("{target}?{search}");
        }
        if !hash.is_empty() {
            target = format!("{target}#{hash}");
        }
        // Replacing the entry the router pushed for it: Back then leaves the page at once.
        let _ = window().location().replace(&target);
        return view! { <p class="hint" role="status">"Loading..."</p> }.into_any();
    }
    view! { <p class="error" role="alert">"No such page."</p> }.into_any()
}

/// Runs the virtual device page (`/virtual/`), with the same header and session as the console.
pub fn virtual_device() {
    console_error_panic_hook::set_once();
    arrived(Program::Virtual);
    mount_to_body(|| {
        let access = provide_session();
        // No router: the page is one page, and the header's links leave it for the console.
        view! {
            <Header access />
            <main>
                <routes::virtual_device::VirtualDevicePage />
            </main>
        }
    });
}

/// A program started on one of its own pages: whatever sent the browser here arrived.
fn arrived(this: Program) {
    let path = window().location().pathname().unwrap_or_default();
    if Program::of_page(&path) == this {
        if let Some(storage) = window().session_storage().ok().flatten() {
            let _ = storage.remove_item(ELSEWHERE_KEY);
        }
    }
}

/// Restores the signed-in session and what it may do, and puts both in context.
fn provide_session() -> access::Access {
    let session = session::Session::restore();
    provide_context(session);
    let access = access::Access::load(session);
    provide_context(access);
    access
}

/// The top bar: the brand (home link), who is signed in, read-only badge, sign-out.
#[component]
fn Header(access: access::Access) -> impl IntoView {
    let session = expect_context::<session::Session>();
    view! {
        <header class="top">
            <a class="brand" href="/">"twinhub"</a>
            <nav class="top-nav" aria-label="Pages">
                <a href="/">"Overview"</a>
                <a href="/fleet">"Fleet"</a>
                <a href="/jobs">"Jobs"</a>
                <a href="/device-configurations">"Configurations"</a>
                <a href="/endpoints">"Endpoints"</a>
                <a href="/virtual/">"Virtual devices"</a>
            </nav>
            <span class="spacer"></span>
            {move || session.signed_in().then(|| view! {
                <span class="who">{session.label()}</span>
                {move || access.read_only.get().map(|why| view! { <span class="badge read-only" title=why>"read-only"</span> })}
                {move || access.upstream.get().map(|host| view! { <span class="badge upstream" title="upstream mode: twinhub forwards to this IoT Hub">{format!("via {host}")}</span> })}
                <button class="link" on:click=move |_| {
                    session.sign_out();
                    let _ = window().location().set_href("/signin");
                }>"Sign out"</button>
            })}
        </header>
    }
}
