//! twinhub's operator dashboard (Leptos, client-side rendered), built as two programs that
//! share this library: the console (`src/bin/dashboard.rs`, every page but one) and the virtual
//! device (`src/bin/virtual.rs`, served under `/virtual/`). The virtual device carries core's
//! MQTT client and device state machine, which the console never needs; as its own wasm, loaded
//! only when that page is opened, it keeps the console's download small.
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

/// Runs the console: the session in context, a header, and the page for the route.
pub fn dashboard() {
    console_error_panic_hook::set_once();
    mount_to_body(|| {
        let access = provide_session();
        view! {
            <Router>
                <Header access />
                <main>
                    <Routes fallback=|| view! { <p class="error">"No such page."</p> }>
                        <Route path=path!("/") view=routes::fleet::FleetPage />
                        <Route path=path!("/signin") view=routes::signin::SignInPage />
                        <Route path=path!("/device/:id") view=routes::device::DevicePage />
                        <Route path=path!("/jobs") view=routes::jobs::JobsPage />
                        <Route path=path!("/device-configurations") view=routes::configurations::ConfigurationsPage />
                        <Route path=path!("/endpoints") view=routes::endpoints::EndpointsPage />
                        <Route path=path!("/bench/chart") view=routes::bench::ChartBenchPage />
                    </Routes>
                </main>
            </Router>
        }
    });
}

/// Runs the virtual device page (`/virtual/`), with the same header and session as the console.
pub fn virtual_device() {
    console_error_panic_hook::set_once();
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
                <a href="/">"Fleet"</a>
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
