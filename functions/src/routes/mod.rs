//! The REST surface: which path goes where. IoT Hub paths (`/devices`, `/twins`, ...) follow
//! the Azure service API; twinhub's own live under `/api/`. Everything else is the dashboard,
//! served from Workers assets with single-page fallback.

mod api;
pub(crate) use api::session;
mod device_endpoint;
mod devices;
mod jobs;
mod query;
mod statistics;
mod twins;

use crate::http::{self, ApiResult};
use percent_encoding::percent_decode_str;
use twinhub_core::{ErrorCode, HubError};
use worker::{Env, Method, Request, Response, Result};

/// Path prefixes that belong to the API. A request under one of them never falls through to the
/// dashboard, so a typo gets a JSON 404 instead of an HTML page.
const API_ROOTS: &[&str] = &["api", "devices", "twins", "jobs", "statistics", "configurations", "$iothub"];

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
        let page = env.assets("ASSETS")?.fetch_request(req).await?;
        return with_page_headers(page);
    }
    // Liveness says the Worker runs, whatever it fronts (and however that is configured).
    if let (["api", "health"], Method::Get) = (segs.as_slice(), req.method()) {
        return http::finish(api::health());
    }
    if let Some(upstream) = crate::upstream::configured(env) {
        let answer = match upstream {
            Ok(up) => crate::upstream::route(req, env, up, &segs).await,
            Err(e) => {
                worker::console_error!("{}", e.message);
                Err(e.into())
            }
        };
        return http::finish(answer);
    }
    http::finish(route(req, env, &segs).await)
}

async fn route(req: Request, env: &Env, segs: &[&str]) -> ApiResult {
    let method = req.method();
    if let Some(refused) = crate::limits::throttle_rest(&req, env, segs) {
        return Ok(refused?);
    }
    match (segs, method) {
        (["api", "health"], Method::Get) => api::health(),
        (["api", "session"], Method::Get) => api::session(&req, env),
        (["$iothub", "websocket"], Method::Get) => device_endpoint::connect(req, env).await,
        (["api", "twins", id, "history"], Method::Get) => twins::history(req, env, id).await,
        (["api", "bench", "echo", key], Method::Post) => api::bench_echo(req, env, key).await,
        (["api", "bench", "write", key], Method::Post) => api::bench_write(req, env, key).await,
        (["api", "bench", "fleet"], Method::Post) => api::bench_fleet(req, env).await,
        (["api", "index"], Method::Get) => query::lag(req, env).await,
        (["devices", "query"], Method::Post) => query::query(req, env).await,
        (["devices"], Method::Get) => devices::list(req, env).await,
        (["devices"], Method::Post) => devices::bulk(req, env).await,
        (["devices", id], Method::Get) => devices::get(req, env, id).await,
        (["devices", id], Method::Put) => devices::put(req, env, id).await,
        (["devices", id], Method::Delete) => devices::delete(req, env, id).await,
        (["twins", id], Method::Get) => twins::get(req, env, id).await,
        (["twins", id], Method::Patch) => twins::patch(req, env, id).await,
        (["twins", id], Method::Put) => twins::replace(req, env, id).await,
        (["twins", id, "methods"], Method::Post) => twins::method(req, env, id).await,
        (["api", "devices", id, "telemetry"], Method::Get) => devices::telemetry(req, env, id).await,
        (["api", "devices", id, "messages"], Method::Post) => devices::send_message(req, env, id).await,
        (["api", "devices", id, "live"], Method::Get) => devices::live(req, env, id).await,
        (["api", "devices", id, "telemetry", "series"], Method::Get) => devices::telemetry_series(req, env, id).await,
        (["jobs", "v2", "query"], Method::Get) => jobs::query(req, env).await,
        (["jobs", "v2", id], Method::Put) => jobs::create(req, env, id).await,
        (["jobs", "v2", id], Method::Get) => jobs::get(req, env, id).await,
        (["jobs", "v2", id, action @ ("cancel" | "pause" | "resume" | "rollback")], Method::Post) => {
            jobs::control(req, env, id, action).await
        }
        (["statistics", "devices"], Method::Get) => statistics::devices(req, env).await,
        (["statistics", "service"], Method::Get) => statistics::service(req, env).await,
        (
            ["api", "health" | "index" | "session"]
            | ["api", "twins", _, "history"]
            | ["devices", "query"]
            | ["devices"]
            | ["devices", _]
            | ["twins", _]
            | ["twins", _, "methods"]
            | ["api", "devices", _, "telemetry" | "messages" | "live"]
            | ["api", "devices", _, "telemetry", "series"]
            | ["statistics", "devices" | "service"]
            | ["jobs", "v2", _]
            | ["jobs", "v2", _, "cancel" | "pause" | "resume" | "rollback"],
            method,
        ) => Err(HubError::new(
            ErrorCode::MethodNotAllowed,
            format!("{method:?} is not supported on /{}", segs.join("/")),
        )
        .into()),
        _ => Err(HubError::new(ErrorCode::NotFound, format!("no such resource: /{}", segs.join("/"))).into()),
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

/// The device object for `id`.
fn device_stub(env: &Env, id: &str) -> worker::Result<worker::Stub> {
    env.durable_object(crate::objects::DEVICE_BINDING)?.get_by_name(id)
}
