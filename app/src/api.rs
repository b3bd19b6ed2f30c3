//! Typed calls to the hub's REST API, authenticated with tokens from the [`Session`].

use crate::session::Session;
use gloo_net::http::{Request, RequestBuilder};
use serde_json::Value;

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

/// `GET /devices?top=1000`: device identities.
pub async fn list_devices(session: Session) -> Result<Vec<Value>, ApiError> {
    let value = send(session, Request::get(&format!("/devices?top=1000&api-version={API_VERSION}"))).await?;
    Ok(match value {
        Value::Array(items) => items,
        _ => Vec::new(),
    })
}

/// `PUT /devices/{id}`: a new device with generated keys.
pub async fn create_device(session: Session, id: &str) -> Result<Value, ApiError> {
    let body = serde_json::json!({ "deviceId": id }).to_string();
    let builder = Request::put(&format!("/devices/{}?api-version={API_VERSION}", encode(id)))
        .header("Content-Type", "application/json");
    send_body(session, builder, body).await
}

/// `DELETE /devices/{id}` (unconditional, as `If-Match: "*"`).
pub async fn delete_device(session: Session, id: &str) -> Result<(), ApiError> {
    let builder =
        Request::delete(&format!("/devices/{}?api-version={API_VERSION}", encode(id))).header("If-Match", "\"*\"");
    send(session, builder).await.map(|_| ())
}

/// `GET /devices/{id}`: the identity, keys included.
pub async fn device(session: Session, id: &str) -> Result<Value, ApiError> {
    send(session, Request::get(&format!("/devices/{}?api-version={API_VERSION}", encode(id)))).await
}

/// `GET /twins/{id}`.
pub async fn twin(session: Session, id: &str) -> Result<Value, ApiError> {
    send(session, Request::get(&format!("/twins/{}?api-version={API_VERSION}", encode(id)))).await
}

/// `PATCH /twins/{id}` with `If-Match: "{etag}"`: a merge patch of desired properties.
pub async fn patch_desired(session: Session, id: &str, patch: &Value, etag: &str) -> Result<Value, ApiError> {
    let body = serde_json::json!({ "properties": { "desired": patch } }).to_string();
    let builder = Request::patch(&format!("/twins/{}?api-version={API_VERSION}", encode(id)))
        .header("If-Match", &format!("\"{etag}\""))
        .header("Content-Type", "application/json");
    send_body(session, builder, body).await
}

/// The URL of a device's live view (`/api/devices/{id}/live`), with a fresh token in the query
/// (browsers cannot set headers on WebSockets).
pub fn live_url(session: Session, id: &str) -> Option<String> {
    let token = session.token()?;
    let location = leptos::prelude::window().location();
    let scheme = if location.protocol().ok()?.starts_with("https") { "wss" } else { "ws" };
    let host = location.host().ok()?;
    Some(format!("{scheme}://{host}/api/devices/{}/live?sas={}", encode(id), encode(&token)))
}

async fn send(session: Session, builder: RequestBuilder) -> Result<Value, ApiError> {
    let token = session.token().ok_or(ApiError::SignedOut)?;
    let request = builder.header("Authorization", &token).build().map_err(|e| ApiError::Network(e.to_string()))?;
    finish(request).await
}

async fn send_body(session: Session, builder: RequestBuilder, body: String) -> Result<Value, ApiError> {
    let token = session.token().ok_or(ApiError::SignedOut)?;
    let request = builder.header("Authorization", &token).body(body).map_err(|e| ApiError::Network(e.to_string()))?;
    finish(request).await
}

/// Sends a built request; a non-2xx answer becomes [`ApiError::Hub`] with IoT Hub's message.
async fn finish(request: gloo_net::http::Request) -> Result<Value, ApiError> {
    let response = request.send().await.map_err(|e| ApiError::Network(e.to_string()))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| ApiError::Network(e.to_string()))?;
    if !(200..300).contains(&status) {
        return Err(ApiError::Hub { status, message: error_message(&text) });
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The human message inside IoT Hub's error envelope (`Message` holding JSON with `message`).
fn error_message(body: &str) -> String {
    let outer: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let inner = outer["Message"].as_str().and_then(|m| serde_json::from_str::<Value>(m).ok());
    inner
        .as_ref()
        .and_then(|i| i["message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| body.chars().take(300).collect())
}

fn encode(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}
