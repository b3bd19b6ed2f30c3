//! `/twins/{id}`: device twins for the service side (spec §2.1, §3.2), and their history
//! (`/api/twins/{id}/history`, twinhub's own).

use super::{device_stub, if_match};
use crate::auth::Caller;
use crate::http::{self, ApiResult};
use crate::rpc::{self, DeviceOp};
use worker::{Env, Request};

/// `POST /twins/{id}/methods`: invoke a direct method and wait for the device's answer.
pub async fn method(mut req: Request, env: &Env, id: &str) -> ApiResult {
    let call = twinhub_core::method::MethodCall::parse(&http::body_text(&mut req).await?)?;
    invoke(env, id, call).await
}

/// Sends a checked method call to the device (or module) `id` and answers as its object does:
/// 200 `{"status", "payload"}`, or the error. Direct methods and Plug and Play commands both.
pub async fn invoke(env: &Env, id: &str, call: twinhub_core::method::MethodCall) -> ApiResult {
    let op = DeviceOp::InvokeMethod {
        device_id: id.to_owned(),
        name: call.name,
        payload: rpc::to_json(&call.payload),
        timeout_ms: call.response_timeout_secs * 1000,
        connect_timeout_ms: call.connect_timeout_secs * 1000,
    };
    Ok(rpc::forward(&device_stub(env, id)?, &op).await?)
}

/// Largest page of history entries.
const MAX_HISTORY_LIMIT: usize = 1_000;

/// `GET /twins/{id}`.
pub async fn get(env: &Env, id: &str) -> ApiResult {
    let op = DeviceOp::GetTwin { device_id: id.to_owned() };
    Ok(rpc::forward(&device_stub(env, id)?, &op).await?)
}

/// `PATCH /twins/{id}`: merge tags and desired properties.
pub async fn patch(mut req: Request, env: &Env, id: &str, caller: Caller) -> ApiResult {
    let body = http::json_body(&mut req).await?;
    let op = DeviceOp::PatchTwin { device_id: id.to_owned(), body, if_match: if_match(&req), actor: caller.policy };
    Ok(rpc::forward(&device_stub(env, id)?, &op).await?)
}

/// `PUT /twins/{id}`: replace tags and desired properties.
pub async fn replace(mut req: Request, env: &Env, id: &str, caller: Caller) -> ApiResult {
    let body = http::json_body(&mut req).await?;
    let op = DeviceOp::ReplaceTwin { device_id: id.to_owned(), body, if_match: if_match(&req), actor: caller.policy };
    Ok(rpc::forward(&device_stub(env, id)?, &op).await?)
}

/// `GET /api/twins/{id}/history?since={version}&limit={n}`: accepted twin changes with a
/// version above `since` (default 0), oldest first, at most `limit` (default 100, max 1000).
pub async fn history(req: Request, env: &Env, id: &str) -> ApiResult {
    let param = |name: &str| http::query_param(&req, name);
    let since = param("since").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit = param("limit").and_then(|v| v.parse().ok()).unwrap_or(100).clamp(1, MAX_HISTORY_LIMIT);
    let op = DeviceOp::History { device_id: id.to_owned(), since, limit };
    Ok(rpc::forward(&device_stub(env, id)?, &op).await?)
}
