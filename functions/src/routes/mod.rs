//! The REST surface: which path goes where. IoT Hub paths (`/devices`, `/twins`, ...) follow
//! the Azure service API; twinhub's own live under `/api/`. Everything else is the dashboard,
//! served from Workers assets with single-page fallback.

mod api;
#[cfg(feature = "bench")]
mod bench;
mod configurations;
mod device_endpoint;
mod devices;
mod digital_twins;
mod fleet;
mod jobs;
mod modules;
mod query;
mod statistics;
mod twins;

use crate::auth::{self, Caller};
use crate::http::{self, ApiResult};
use percent_encoding::percent_decode_str;
use twinhub_core::console::Program;
use twinhub_core::route::{Route, Upstream};
use twinhub_core::{ErrorCode, HubError};
use worker::{Env, Method, Request, RequestInit, Response, Result};

/// Path prefixes that belong to the API. A request under one of them never falls through to the
/// dashboard, so a typo gets a JSON 404 instead of an HTML page.
const API_ROOTS: &[&str] =
    &["api", "devices", "twins", "jobs", "statistics", "configurations", "digitaltwins", "$iothub", "$servicebus"];

/// Routes one request.
pub async fn handle(req: Request, env: &Env) -> Result<Response> {
    let path = req.path();
    let segments = match decode_segments(&path) {
        Ok(s) => s,
        Err(e) => return http::error(&e),
    };
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    // `/jobs` alone is the dashboard's jobs page: IoT Hub's jobs API lives below it (`/jobs/v2`).
    let is_api = match segs.as_slice() {
        ["jobs"] => false,
        [first, ..] => API_ROOTS.contains(first),
        [] => false,
    };
    if !is_api {
        let page = env.assets("ASSETS")?.fetch_request(page_request(req)?).await?;
        return with_page_headers(page);
    }
    let route = match Route::parse(req.method().as_ref(), &segs) {
        Ok(route) => route,
        Err(e) => return http::error(&e),
    };
    // Liveness says the Worker runs, whatever it fronts (and however that is configured).
    if route == Route::Health {
        return http::finish(api::health());
    }
    // Upstream mode answers the routes that are not twinhub's own hub's to answer (the
    // session and the device endpoint's pipe stay here: `Route::upstream`).
    let upstream = crate::upstream::configured(env).filter(|_| route.upstream() != Upstream::Here);
    if let Some(upstream) = upstream {
        let answer = match upstream {
            Ok(up) => crate::upstream::route(req, env, up, route, &segs).await,
            Err(e) => {
                worker::console_error!("{}", e.message);
                Err(e.into())
            }
        };
        return http::finish(answer);
    }
    http::finish(serve(req, env, route).await)
}

/// Answers a route with twinhub's own hub: the benchmark gate, the caller's token, the tier's
/// throttle, then the handler.
async fn serve(req: Request, env: &Env, route: Route<'_>) -> ApiResult {
    // Benchmark routes exist in a build with the `bench` feature, and answer when enabled.
    if route.is_bench() && !(cfg!(feature = "bench") && crate::config::Config::of(env).bench_routes) {
        return Err(HubError::new(ErrorCode::NotFound, "no such resource").into());
    }
    let caller = auth::authorize(&req, env, &route)?;
    // Near the open-file limit, what would wake objects or hold sockets is refused with
    // 503 and Retry-After (`core::headroom`), never a crash of the whole hub.
    if !matches!(route, Route::Health | Route::Session) {
        if let Some((refused, retry_after)) = crate::headroom::shed(env).await {
            return Ok(http::unavailable(&refused, retry_after)?);
        }
    }
    if let Some(op) = route.operation() {
        if let Some(refused) = crate::limits::throttle_rest(&req, env, op) {
            return Ok(refused?);
        }
    }
    dispatch(req, env, route, caller).await
}

/// The signed caller of a route whose access asks for a token; only an open route has none
/// ([`Route::access`]), so the error cannot reach a client while the table says so.
fn signed(caller: Option<Caller>) -> std::result::Result<Caller, HubError> {
    caller.ok_or_else(|| HubError::new(ErrorCode::IotHubUnauthorizedAccess, "this resource needs a token"))
}

/// One handler per route; `caller` is what the route's access asked for.
async fn dispatch(req: Request, env: &Env, route: Route<'_>, caller: Option<Caller>) -> ApiResult {
    match route {
        Route::Health => api::health(),
        Route::DeviceSocket => device_endpoint::connect(req, env).await,
        Route::ServiceBusSocket => crate::amqp::accept_websocket(req, env).await,
        Route::Session => api::session(env, &signed(caller)?),
        Route::Query => query::query(req, env).await,
        Route::ListDevices => devices::list(req, env).await,
        Route::BulkDevices => devices::bulk(req, env).await,
        Route::GetDevice(ident) => devices::get(env, &ident.key()?).await,
        Route::PutDevice(ident) => match ident.module {
            None => devices::put(req, env, &ident.key()?).await,
            Some(module) => modules::put(req, env, ident.device, module).await,
        },
        Route::DeleteDevice(ident) => match ident.module {
            None => devices::delete(req, env, &ident.key()?).await,
            Some(module) => modules::delete(req, env, ident.device, module).await,
        },
        Route::ListModules(id) => modules::list(env, id).await,
        Route::GetTwin(ident) => twins::get(env, &ident.key()?).await,
        Route::PatchTwin(ident) => twins::patch(req, env, &ident.key()?, signed(caller)?).await,
        Route::ReplaceTwin(ident) => twins::replace(req, env, &ident.key()?, signed(caller)?).await,
        Route::InvokeMethod(ident) => twins::method(req, env, &ident.key()?).await,
        Route::DeviceStatistics => statistics::devices(env).await,
        Route::ServiceStatistics => statistics::service(env).await,
        Route::QueryJobs => jobs::query(req, env).await,
        Route::CreateJob(id) => jobs::create(req, env, id, signed(caller)?).await,
        Route::GetJob(id) => jobs::get(env, id).await,
        Route::ControlJob(id, action) => jobs::control(env, id, action).await,
        Route::TwinHistory(ident) => twins::history(req, env, &ident.key()?).await,
        Route::Telemetry(ident) => devices::telemetry(req, env, &ident.key()?).await,
        Route::TelemetrySeries(ident) => devices::telemetry_series(req, env, &ident.key()?).await,
        Route::SendMessage(id) => devices::send_message(req, env, id).await,
        Route::Live(ident) => devices::live(req, env, &ident.key()?, signed(caller)?).await,
        Route::GetDigitalTwin(id) => digital_twins::get(env, id).await,
        Route::PatchDigitalTwin(id) => digital_twins::patch(req, env, id, signed(caller)?).await,
        Route::InvokeCommand { id, component, command } => {
            digital_twins::command(req, env, id, component, command).await
        }
        Route::ListConfigurations => configurations::list(req, env, &signed(caller)?).await,
        Route::GetConfiguration(id) => configurations::get(env, id, &signed(caller)?).await,
        Route::PutConfiguration(id) => configurations::put(req, env, id).await,
        Route::DeleteConfiguration(id) => configurations::delete(req, env, id).await,
        Route::TestConfigurationQueries => configurations::test_queries(req).await,
        Route::IndexLag => query::lag(env).await,
        Route::FleetTelemetry => fleet::telemetry(req, env).await,
        Route::FleetAlerts => fleet::alerts(req, env).await,
        Route::FleetOverview => fleet::overview(req, env).await,
        #[cfg(feature = "bench")]
        Route::BenchEcho(key) => bench::echo(req, env, key).await,
        #[cfg(feature = "bench")]
        Route::BenchWrite(key) => bench::write(req, env, key).await,
        #[cfg(feature = "bench")]
        Route::BenchFleet => bench::fleet(req, env).await,
        #[cfg(feature = "bench")]
        Route::BenchTelemetry => bench::telemetry(req, env).await,
        // Refused in `serve` already: this build has no benchmarks.
        #[cfg(not(feature = "bench"))]
        Route::BenchEcho(_) | Route::BenchWrite(_) | Route::BenchFleet | Route::BenchTelemetry => {
            Err(HubError::new(ErrorCode::NotFound, "no such resource").into())
        }
    }
}

/// The dashboard's pages may not be framed (clickjacking), load nothing from elsewhere, and
/// send no referrer (the sign-in link carries a key in its fragment; fragments are never sent,
/// but the rest of a URL would be). `'wasm-unsafe-eval'` lets the page compile its own wasm;
/// the loader trunk writes is one inline module script, hence `'unsafe-inline'` for scripts
/// while `'self'` still refuses every other origin.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; \
    base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// What the assets are asked for a dashboard path: a page of one of the console's programs
/// other than the root's is answered with that program's `index.html` (`core::console`); any
/// other path (the root's pages, every program's files) as it is.
fn page_request(req: Request) -> Result<Request> {
    let Some(index) = Program::of_page(&req.path()).index() else { return Ok(req) };
    let mut url = req.url()?;
    url.set_path(index);
    url.set_query(None);
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(req.headers().clone());
    Request::new_with_init(url.as_str(), &init)
}

fn with_page_headers(page: Response) -> Result<Response> {
    let headers = page.headers().clone();
    headers.set("content-security-policy", PAGE_CSP)?;
    headers.set("x-frame-options", "DENY")?;
    headers.set("referrer-policy", "no-referrer")?;
    headers.set("x-content-type-options", "nosniff")?;
    Ok(page.with_headers(headers))
}

/// Splits a path into percent-decoded segments (device ids may contain `%`, `#`, `?` and more,
/// which clients encode).
fn decode_segments(path: &str) -> std::result::Result<Vec<String>, HubError> {
    path.trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| HubError::new(ErrorCode::ArgumentInvalid, "path is not UTF-8 after percent-decoding"))
        })
        .collect()
}

/// The `If-Match` header, if any.
fn if_match(req: &Request) -> Option<String> {
    req.headers().get("if-match").ok().flatten()
}

use crate::objects::device_stub;
