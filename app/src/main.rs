//! twinhub's operator dashboard (Leptos, client-side rendered).
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

fn main() {
    console_error_panic_hook::set_once();
    mount_to_body(App);
}

/// The whole dashboard: the session in context, a header, and the page for the route.
#[component]
fn App() -> impl IntoView {
    let session = session::Session::restore();
    provide_context(session);
    let access = access::Access::load(session);
    provide_context(access);
    view! {
        <Router>
            <header class="top">
                <a class="brand" href="/">"twinhub"</a>
                <span class="spacer"></span>
                {move || session.signed_in().then(|| view! {
                    <span class="who">{session.label()}</span>
                    {move || access.read_only.get().map(|why| view! { <span class="badge read-only" title=why>"read-only"</span> })}
                    <button class="link" on:click=move |_| {
                        session.sign_out();
                        let _ = window().location().set_href("/signin");
                    }>"Sign out"</button>
                })}
            </header>
            <main>
                <Routes fallback=|| view! { <p class="error">"No such page."</p> }>
                    <Route path=path!("/") view=routes::fleet::FleetPage />
                    <Route path=path!("/signin") view=routes::signin::SignInPage />
                    <Route path=path!("/device/:id") view=routes::device::DevicePage />
                    <Route path=path!("/virtual") view=routes::virtual_device::VirtualDevicePage />
                    <Route path=path!("/bench/chart") view=routes::bench::ChartBenchPage />
                </Routes>
            </main>
        </Router>
    }
}
