//! Typed calls to the hub's REST API, authenticated with tokens from the [`Session`].

use crate::session::Session;
use gloo_net::http::{Request, RequestBuilder};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;
use twinhub_core::wire::{
    ConfigurationView, FleetAlerts, FleetSeries, History, Identity, JobView, MessageQueued, MethodResult, Overview,
    Series, SessionInfo, TelemetryPage, Twin,
};

/// api-version sent on every call, as the Azure SDKs do.
const API_VERSION: &str = "2021-04-12";

/// Why a call failed, in words for the page.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ApiError {
    /// No credential: the page should send the operator to sign in.
    #[error("not signed in")]
    SignedOut,
    /// The hub answered with an error.
    #[error("{status}: {message}")]
    Hub {
        /// HTTP status.
        status: u16,
        /// The message from IoT Hub's envelope, or the raw body.
        message: String,
    },
    /// The request did not complete.
    #[error("network error: {0}")]
    Network(String),
}

/// `PUT /devices/{id}`: a new device with generated keys.
pub async fn create_device(session: Session, id: &str) -> Result<Identity, ApiError> {
    let body = serde_json::json!({ "deviceId": id }).to_string();
    let builder = Request::put(&format!("/devices/{}?api-version={API_VERSION}", ident_path(id)))
        .header("Content-Type", "application/json");
    send_body(session, builder, body).await
}

/// `DELETE /devices/{id}` (unconditional, as `If-Match: "*"`).
pub async fn delete_device(session: Session, id: &str) -> Result<(), ApiError> {
    let builder =
        Request::delete(&format!("/devices/{}?api-version={API_VERSION}", ident_path(id))).header("If-Match", "\"*\"");
    send::<IgnoredAny>(session, builder).await.map(|_| ())
}

/// `GET /devices/{id}`: the identity, keys included.
pub async fn device(session: Session, id: &str) -> Result<Identity, ApiError> {
    send(session, Request::get(&format!("/devices/{}?api-version={API_VERSION}", ident_path(id)))).await
}

/// `GET /twins/{id}`.
pub async fn twin(session: Session, id: &str) -> Result<Twin, ApiError> {
    send(session, Request::get(&format!("/twins/{}?api-version={API_VERSION}", ident_path(id)))).await
}

/// `PATCH /twins/{id}` with `If-Match: "{etag}"`: a service patch (tags and/or desired).
pub async fn patch_twin_if_match(session: Session, id: &str, patch: &Value, etag: &str) -> Result<Twin, ApiError> {
    let builder = Request::patch(&format!("/twins/{}?api-version={API_VERSION}", ident_path(id)))
        .header("If-Match", &format!("\"{etag}\""))
        .header("Content-Type", "application/json");
    send_body(session, builder, patch.to_string()).await
}

/// `GET /api/devices/{id}/telemetry/series`: `field` as min/max/avg per bucket over `[from, to)`.
pub async fn telemetry_series(
    session: Session,
    id: &str,
    field: &str,
    from: u64,
    to: u64,
    buckets: usize,
) -> Result<Series, ApiError> {
    let url = format!(
        "/api/devices/{}/telemetry/series?field={}&from={from}&to={to}&buckets={buckets}",
        ident_path(id),
        encode(field)
    );
    send(session, Request::get(&url)).await
}

/// `GET /api/devices/{id}/telemetry?limit=`: the newest stored messages, oldest first.
pub async fn telemetry(session: Session, id: &str, limit: usize) -> Result<TelemetryPage, ApiError> {
    send(session, Request::get(&format!("/api/devices/{}/telemetry?limit={limit}", ident_path(id)))).await
}

/// `PATCH /twins/{id}` with a whole service patch (tags and/or desired), unconditionally.
pub async fn patch_twin(session: Session, id: &str, patch: &Value) -> Result<Twin, ApiError> {
    let builder = Request::patch(&format!("/twins/{}?api-version={API_VERSION}", ident_path(id)))
        .header("If-Match", "\"*\"")
        .header("Content-Type", "application/json");
    send_body(session, builder, patch.to_string()).await
}

/// `PUT /devices/{id}` (unconditional): the identity with changed status or keys.
pub async fn put_device(session: Session, id: &str, device: &Identity) -> Result<Identity, ApiError> {
    let builder = Request::put(&format!("/devices/{}?api-version={API_VERSION}", ident_path(id)))
        .header("If-Match", "\"*\"")
        .header("Content-Type", "application/json");
    send_body(session, builder, serde_json::to_string(device).unwrap_or_default()).await
}

/// `GET /api/twins/{id}/history`: the newest `limit` twin changes after version `since`.
pub async fn history(session: Session, id: &str, since: u64, limit: usize) -> Result<History, ApiError> {
    let url = format!("/api/twins/{}/history?since={since}&limit={limit}", ident_path(id));
    send(session, Request::get(&url)).await
}

/// `POST /twins/{id}/methods`: a direct method call; the device's status and payload.
pub async fn invoke_method(session: Session, id: &str, call: &Value) -> Result<MethodResult, ApiError> {
    let builder = Request::post(&format!("/twins/{}/methods?api-version={API_VERSION}", ident_path(id)))
        .header("Content-Type", "application/json");
    send_body(session, builder, call.to_string()).await
}

/// `POST /api/devices/{id}/messages`: a cloud-to-device message.
pub async fn send_message(session: Session, id: &str, message: &Value) -> Result<MessageQueued, ApiError> {
    let builder =
        Request::post(&format!("/api/devices/{}/messages", encode(id))).header("Content-Type", "application/json");
    send_body(session, builder, message.to_string()).await
}

/// `GET /api/session`: the signing policy's name and permissions.
pub async fn session_info(session: Session) -> Result<SessionInfo, ApiError> {
    send(session, Request::get("/api/session")).await
}

/// `GET /jobs/v2/query`: the first page of jobs (up to 100), in id order.
pub async fn jobs(session: Session) -> Result<Vec<JobView>, ApiError> {
    send(session, Request::get(&format!("/jobs/v2/query?api-version={API_VERSION}"))).await
}

/// `PUT /jobs/v2/{id}`: create a job (a JobRequest body, with twinhub's `rollout` if staged).
pub async fn create_job(session: Session, id: &str, request: &Value) -> Result<JobView, ApiError> {
    let builder = Request::put(&format!("/jobs/v2/{}?api-version={API_VERSION}", encode(id)))
        .header("Content-Type", "application/json");
    send_body(session, builder, request.to_string()).await
}

/// `POST /jobs/v2/{id}/{action}`: `cancel`, `pause`, `resume` or `rollback`.
pub async fn job_action(session: Session, id: &str, action: &str) -> Result<JobView, ApiError> {
    let builder = Request::post(&format!("/jobs/v2/{}/{action}?api-version={API_VERSION}", encode(id)));
    send(session, builder).await
}

/// `GET /configurations`: every configuration with its metrics.
pub async fn configurations(session: Session) -> Result<Vec<ConfigurationView>, ApiError> {
    send(session, Request::get(&format!("/configurations?api-version={API_VERSION}"))).await
}

/// `GET /configurations/{id}`.
pub async fn configuration(session: Session, id: &str) -> Result<ConfigurationView, ApiError> {
    send(session, Request::get(&format!("/configurations/{}?api-version={API_VERSION}", encode(id)))).await
}

/// `PUT /configurations/{id}`: create (no etag) or update (`If-Match`).
pub async fn put_configuration(
    session: Session,
    id: &str,
    body: &Value,
    etag: Option<&str>,
) -> Result<ConfigurationView, ApiError> {
    let mut builder = Request::put(&format!("/configurations/{}?api-version={API_VERSION}", encode(id)))
        .header("Content-Type", "application/json");
    if let Some(etag) = etag {
        builder = builder.header("If-Match", &format!("\"{etag}\""));
    }
    send_body(session, builder, body.to_string()).await
}

/// `DELETE /configurations/{id}`.
pub async fn delete_configuration(session: Session, id: &str) -> Result<(), ApiError> {
    let builder = Request::delete(&format!("/configurations/{}?api-version={API_VERSION}", encode(id)))
        .header("If-Match", "\"*\"");
    send::<IgnoredAny>(session, builder).await.map(|_| ())
}

/// `GET /api/fleet/overview`: the console's first page, alerts broken down by the twin path `by`.
pub async fn overview(session: Session, by: &str) -> Result<Overview, ApiError> {
    send(session, Request::get(&format!("/api/fleet/overview?by={}", encode(by)))).await
}

/// `POST /api/fleet/telemetry`: `field` (min/max/avg per bucket) over the devices `condition`
/// selects (a WHERE condition; empty: every device) in the last `span_ms`.
pub async fn fleet_series(
    session: Session,
    condition: &str,
    field: &str,
    span_ms: u64,
    buckets: usize,
) -> Result<FleetSeries, ApiError> {
    let to = js_sys::Date::now() as u64 + 1;
    let body = serde_json::json!({
        "condition": condition, "field": field, "from": to.saturating_sub(span_ms), "to": to, "buckets": buckets,
    });
    let builder = Request::post("/api/fleet/telemetry").header("Content-Type", "application/json");
    send_body(session, builder, body.to_string()).await
}

/// `POST /api/fleet/alerts`: the newest `limit` alerts of the devices `condition` selects.
pub async fn fleet_alerts(session: Session, condition: &str, limit: usize) -> Result<FleetAlerts, ApiError> {
    let body = serde_json::json!({ "condition": condition, "limit": limit });
    let builder = Request::post("/api/fleet/alerts").header("Content-Type", "application/json");
    send_body(session, builder, body.to_string()).await
}

/// One page of a fleet query.
#[derive(Clone, Debug)]
pub struct QueryPage {
    /// Twins (or projected rows, or groups).
    pub items: Vec<Value>,
    /// The token for the next page, if there is one.
    pub continuation: Option<String>,
}

/// `POST /devices/query`: one page of `query`, after `continuation`.
pub async fn query(session: Session, query: &str, continuation: Option<&str>) -> Result<QueryPage, ApiError> {
    let token = session.token().ok_or(ApiError::SignedOut)?;
    let mut builder = Request::post(&format!("/devices/query?api-version={API_VERSION}"))
        .header("Authorization", &token)
        .header("Content-Type", "application/json")
        .header("x-ms-max-item-count", "100");
    if let Some(c) = continuation {
        builder = builder.header("x-ms-continuation", c);
    }
    let body = serde_json::json!({ "query": query }).to_string();
    let request = builder.body(body).map_err(|e| ApiError::Network(e.to_string()))?;
    let response = request.send().await.map_err(|e| ApiError::Network(e.to_string()))?;
    let status = response.status();
    let continuation = response.headers().get("x-ms-continuation").filter(|c| !c.is_empty());
    let text = response.text().await.map_err(|e| ApiError::Network(e.to_string()))?;
    if !(200..300).contains(&status) {
        return Err(ApiError::Hub { status, message: error_message(&text) });
    }
    let items = match serde_json::from_str(&text) {
        Ok(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    Ok(QueryPage { items, continuation })
}

/// How long a live view's token lasts: the hub closes the view then, and the page opens a new
/// one with a fresh token.
pub const LIVE_TOKEN_TTL_SECS: u64 = 5 * 60;

/// The URL of a device's live view (`/api/devices/{id}/live`), with a fresh token in the query
/// (browsers cannot set headers on WebSockets), short-lived and scoped to that device's live
/// view alone (`{host}/devices/{id}/$live`): a leaked URL reads nothing else and acts as nobody.
pub fn live_url(session: Session, id: &str) -> Option<String> {
    let token = session.token_for(&format!("/{}", twinhub_core::identity::live_view_path(id)), LIVE_TOKEN_TTL_SECS)?;
    let location = leptos::prelude::window().location();
    let scheme = if location.protocol().ok()?.starts_with("https") { "wss" } else { "ws" };
    let host = location.host().ok()?;
    Some(format!("{scheme}://{host}/api/devices/{}/live?sas={}", ident_path(id), encode(&token)))
}

async fn send<T: DeserializeOwned>(session: Session, builder: RequestBuilder) -> Result<T, ApiError> {
    read(exchange(session, builder, None).await?)
}

async fn send_body<T: DeserializeOwned>(
    session: Session,
    builder: RequestBuilder,
    body: String,
) -> Result<T, ApiError> {
    read(exchange(session, builder, Some(body)).await?)
}

/// Sends a request with the session's token and gives a 2xx answer's text; a non-2xx answer
/// becomes [`ApiError::Hub`] with IoT Hub's message. Not generic (one copy of the exchange in
/// the wasm, whatever answers are read from it).
async fn exchange(session: Session, builder: RequestBuilder, body: Option<String>) -> Result<String, ApiError> {
    let token = session.token().ok_or(ApiError::SignedOut)?;
    let builder = builder.header("Authorization", &token);
    let request = match body {
        Some(body) => builder.body(body),
        None => builder.build(),
    }
    .map_err(|e| ApiError::Network(e.to_string()))?;
    let response = request.send().await.map_err(|e| ApiError::Network(e.to_string()))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| ApiError::Network(e.to_string()))?;
    if !(200..300).contains(&status) {
        return Err(ApiError::Hub { status, message: error_message(&text) });
    }
    Ok(text)
}

/// A 2xx answer's text as `T` (no body reads as JSON `null`). Parsed into a `Value` first,
/// then into `T`: the text parser is then compiled once, not once per answer type, which keeps
/// the console's wasm smaller (measured: BENCHMARKS.md).
fn read<T: DeserializeOwned>(text: String) -> Result<T, ApiError> {
    let text = if text.trim().is_empty() { "null" } else { text.as_str() };
    let unreadable = |e: serde_json::Error| ApiError::Network(format!("the hub's answer did not read: {e}"));
    serde_json::from_value(serde_json::from_str::<Value>(text).map_err(unreadable)?).map_err(unreadable)
}

/// The human message of an error answer: twinhub's envelope read by core (the one reader of
/// what `HubError::envelope` writes), or the body itself (an upstream Azure hub's message is
/// not JSON).
fn error_message(body: &str) -> String {
    match twinhub_core::HubError::from_envelope(body) {
        Some(e) => e.message,
        None => body.chars().take(300).collect(),
    }
}

/// Unix ms of an ISO-8601 time the hub wrote, parsed by the browser (`Date.parse`), which keeps
/// a date parser out of the wasm; `None` for "never" (year 1) or anything unparsable.
pub fn parse_time(s: &str) -> Option<u64> {
    let ms = js_sys::Date::parse(s);
    (ms.is_finite() && ms > 0.0).then_some(ms as u64)
}

/// `GET /devices/{id}/modules`: the device's modules' identities.
pub async fn modules(session: Session, device_id: &str) -> Result<Vec<Identity>, ApiError> {
    send(session, Request::get(&format!("/devices/{}/modules?api-version={API_VERSION}", encode(device_id)))).await
}

/// The path segment(s) naming an identity in the hub's URLs: a device's id, or for a module's
/// key (`{device}/{module}`) `{device}/modules/{module}`, each id percent-encoded. The app
/// treats a module as a device whose id is its key, so every page works for both.
fn ident_path(id: &str) -> String {
    match twinhub_core::identity::split_key(id) {
        (device, None) => encode(device),
        (device, Some(module)) => format!("{}/modules/{}", encode(device), encode(module)),
    }
}

fn encode(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}
