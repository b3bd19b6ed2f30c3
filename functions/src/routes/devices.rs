//! `/devices`: the identity registry (spec §3.2-3.3).

use super::{device_stub, if_match};
use crate::auth::{self, Caller};
use crate::http::{self, ApiResult};
use crate::objects::ask_every_index_shard;
use crate::objects::device::{LIVE_EXPIRY_HEADER, LIVE_TOKEN_HEADER};
use crate::rpc::{self, DeviceOp, IndexOp};
use futures_util::future::try_join_all;
use serde_json::json;
use twinhub_core::identity::bulk::{self, BulkAction};
use twinhub_core::identity::check_device_id;
use twinhub_core::{ErrorCode, HubError};
use worker::{Env, Request};

/// `GET /devices?top=N`: up to N identities (1..1000, default 1000), merged across index shards.
pub async fn list(req: Request, env: &Env) -> ApiResult {
    let top = twinhub_core::fleet::clamp_top(http::query_param(&req, "top").as_deref());
    let shards: Vec<Vec<serde_json::Value>> = ask_every_index_shard(env, &IndexOp::ListIdentities { top }).await?;
    let mut all: Vec<serde_json::Value> = shards.into_iter().flatten().collect();
    all.sort_by(|a, b| a["deviceId"].as_str().cmp(&b["deviceId"].as_str()));
    all.truncate(top);
    Ok(http::json(200, &serde_json::Value::Array(all), None)?)
}

/// `GET /api/devices/{id}/telemetry?limit={n}`: the newest messages the device sent (default
/// 100, at most 1000), oldest first, with their properties and enqueued time.
pub async fn telemetry(req: Request, env: &Env, id: &str) -> ApiResult {
    let limit = http::query_param(&req, "limit").and_then(|v| v.parse::<usize>().ok()).unwrap_or(100).clamp(1, 1000);
    let op = DeviceOp::TelemetryList { device_id: id.to_owned(), limit };
    Ok(rpc::forward(&device_stub(env, id)?, &op).await?)
}

/// `POST /api/devices/{id}/messages`: queue a cloud-to-device message,
/// `{"payload": .., "properties": {..}, "messageId": ..}` (at most 64 KB, 50 waiting per
/// device). Delivered at QoS 1 when the device listens, completed by its PUBACK, kept while
/// it is offline. Answers 202 with the message id and the queue depth.
pub async fn send_message(mut req: Request, env: &Env, id: &str) -> ApiResult {
    check_device_id(id)?;
    let body = http::json_body(&mut req).await?;
    let op = DeviceOp::SendCloudToDevice { device_id: id.to_owned(), body };
    Ok(rpc::forward(&device_stub(env, id)?, &op).await?)
}

/// `GET /api/devices/{id}/live?sas={token}` (WebSocket): the device's twin as it changes and
/// its telemetry as it arrives, as JSON text messages `{"type": "twin" | "telemetry" |
/// "deleted", ...}`; the current twin comes first. The token rides in the query because browsers
/// cannot set headers on WebSockets.
///
/// The token may be scoped to the one device (`sr={host}/devices/{id}/$live`, what the dashboard
/// mints); the socket closes when it expires. A browser page from another origin is refused
/// (a WebSocket is not bound by CORS), and the device object bounds the views per device and
/// per token.
pub async fn live(req: Request, env: &Env, id: &str, caller: Caller) -> ApiResult {
    let upgrade = req.headers().get("upgrade")?.unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(twinhub_core::HubError::new(
            twinhub_core::ErrorCode::ArgumentInvalid,
            "/api/devices/{id}/live expects a WebSocket upgrade",
        )
        .into());
    }
    if let Some(origin) = req.headers().get("origin")? {
        if !same_origin(&origin, &auth::own_host(&req, env)) {
            return Err(twinhub_core::HubError::new(
                twinhub_core::ErrorCode::IotHubUnauthorizedAccess,
                "the live view only opens from the hub's own pages",
            )
            .into());
        }
    }
    let token = crate::http::query_param(&req, "sas").unwrap_or_default();
    let headers = req.headers().clone();
    headers.set(LIVE_EXPIRY_HEADER, &caller.expiry_secs.saturating_mul(1000).to_string())?;
    headers.set(LIVE_TOKEN_HEADER, &twinhub_core::auth::token_tag(&token))?;
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Get).with_headers(headers);
    let forwarded = Request::new_with_init(req.url()?.as_ref(), &init)?;
    Ok(device_stub(env, id)?.fetch_with_request(forwarded).await?)
}

/// Whether a browser `Origin` (`scheme://host[:port]`) is the hub itself.
fn same_origin(origin: &str, hub_host: &str) -> bool {
    origin.split_once("://").is_some_and(|(_, host)| host.trim_end_matches('/').eq_ignore_ascii_case(hub_host))
}

/// `GET /api/devices/{id}/telemetry/series?field=temperature&from={ms}&to={ms}&buckets={n}`:
/// a numeric body field (dotted path) as min/max/avg per time bucket, for charts. Defaults: the
/// last hour, 60 buckets (at most 1000).
pub async fn telemetry_series(req: Request, env: &Env, id: &str) -> ApiResult {
    let param = |name: &str| http::query_param(&req, name);
    let field = param("field").filter(|f| !f.is_empty()).ok_or_else(|| {
        twinhub_core::HubError::new(twinhub_core::ErrorCode::ArgumentNull, "the field parameter is required")
    })?;
    let now = crate::clock::now().0;
    let to = param("to").and_then(|v| v.parse().ok()).unwrap_or(now + 1);
    let from = param("from").and_then(|v| v.parse().ok()).unwrap_or(to.saturating_sub(3_600_000));
    let buckets = param("buckets").and_then(|v| v.parse().ok()).unwrap_or(60);
    let op = DeviceOp::TelemetrySeries { device_id: id.to_owned(), field, from, to, buckets };
    Ok(rpc::forward(&device_stub(env, id)?, &op).await?)
}

/// `GET /devices/{id}`.
pub async fn get(env: &Env, id: &str) -> ApiResult {
    let op = DeviceOp::GetIdentity { device_id: id.to_owned() };
    Ok(rpc::forward(&device_stub(env, id)?, &op).await?)
}

/// `PUT /devices/{id}`: create (no `If-Match`) or update.
pub async fn put(mut req: Request, env: &Env, id: &str) -> ApiResult {
    let body = http::json_body(&mut req).await?;
    let op = DeviceOp::PutIdentity { device_id: id.to_owned(), body, if_match: if_match(&req), upsert: false };
    Ok(rpc::forward(&device_stub(env, id)?, &op).await?)
}

/// `DELETE /devices/{id}`.
pub async fn delete(req: Request, env: &Env, id: &str) -> ApiResult {
    let op = DeviceOp::DeleteIdentity { device_id: id.to_owned(), if_match: if_match(&req) };
    Ok(rpc::forward(&device_stub(env, id)?, &op).await?)
}

/// How long a bulk registry operation waits for open-file headroom before it is refused.
const BULK_HEADROOM_WAIT_MS: u64 = 30_000;

/// `POST /devices`: bulk create, update or delete of up to 100 devices. Each device is its own
/// operation on its own object (there is no cross-device transaction, as in IoT Hub); the
/// answer lists the failures: 200 when there are none, 400 otherwise.
pub async fn bulk(mut req: Request, env: &Env) -> ApiResult {
    let body = http::body_text(&mut req).await?;
    let items = bulk::parse(&body)?;
    // One object woken per item: the items go in pieces as large as the open-file headroom
    // allows (as a job is paced); one that finds none within [`BULK_HEADROOM_WAIT_MS`] fails
    // with ServiceUnavailable, as a per-device error of the bulk answer.
    let deadline = crate::clock::now().0 + BULK_HEADROOM_WAIT_MS;
    let mut results = Vec::with_capacity(items.len());
    let mut rest = items;
    while !rest.is_empty() {
        let Some(granted) = crate::headroom::wakes_by(env, rest.len() as u64, deadline).await else {
            let busy = HubError::new(ErrorCode::ServiceUnavailable, "the hub is near its open-file limit; retry");
            results.extend(rest.drain(..).map(|item| (item.device_id, Some(busy.clone()))));
            break;
        };
        let later = rest.split_off(usize::try_from(granted).unwrap_or(rest.len()).min(rest.len()));
        results.extend(bulk_calls(env, std::mem::replace(&mut rest, later)).await?);
    }
    let errors: Vec<serde_json::Value> = results
        .into_iter()
        .filter_map(|(device_id, error)| {
            let e = error?;
            Some(json!({ "deviceId": device_id, "errorCode": e.code.name(), "errorStatus": e.message }))
        })
        .collect();
    let ok = errors.is_empty();
    let result = json!({ "isSuccessful": ok, "errors": errors, "warnings": [] });
    Ok(http::json(if ok { 200 } else { 400 }, &result, None)?)
}

/// The bulk operation's calls for `items`, all at once: each device's error, if any.
async fn bulk_calls(env: &Env, items: Vec<bulk::BulkItem>) -> worker::Result<Vec<(String, Option<HubError>)>> {
    let calls = items.into_iter().map(|item| async move {
        if let Err(e) = check_device_id(&item.device_id) {
            return Ok((item.device_id, Some(e)));
        }
        let device_id = item.device_id.clone();
        let op = match item.action {
            BulkAction::Create => DeviceOp::PutIdentity {
                device_id: device_id.clone(),
                body: rpc::to_json(&item.body),
                if_match: None,
                upsert: false,
            },
            BulkAction::Upsert => DeviceOp::PutIdentity {
                device_id: device_id.clone(),
                body: rpc::to_json(&item.body),
                if_match: None,
                upsert: true,
            },
            BulkAction::UpdateIfMatch(etag) => DeviceOp::PutIdentity {
                device_id: device_id.clone(),
                body: rpc::to_json(&item.body),
                if_match: Some(etag),
                upsert: true,
            },
            BulkAction::Delete => DeviceOp::DeleteIdentity { device_id: device_id.clone(), if_match: None },
            BulkAction::DeleteIfMatch(etag) => {
                DeviceOp::DeleteIdentity { device_id: device_id.clone(), if_match: Some(etag) }
            }
        };
        let answer = rpc::call::<_, serde::de::IgnoredAny>(&device_stub(env, &device_id)?, &op).await;
        Ok::<_, worker::Error>((device_id, answer.err()))
    });
    try_join_all(calls).await
}
