//! `/digitaltwins/{id}`: IoT Plug and Play's digital twin API over the device twin
//! (`core::pnp`): the view, a JSON Patch of writable properties, and commands, which are direct
//! methods (`command`, or `component*command` for a component's).

use super::{device_stub, if_match};
use crate::auth::Caller;
use crate::http::{self, ApiResult};
use crate::rpc::{self, DeviceOp};
use serde_json::{json, Value};
use twinhub_core::identity::check_device_id;
use twinhub_core::method::MethodCall;
use twinhub_core::pnp;
use worker::{Env, Request, Response};

/// `GET /digitaltwins/{id}`.
pub async fn get(env: &Env, id: &str) -> ApiResult {
    check_device_id(id)?;
    let twin: Value = rpc::call(&device_stub(env, id)?, &DeviceOp::GetTwin { device_id: id.to_owned() }).await?;
    let etag = twin["etag"].as_str().map(str::to_owned);
    Ok(http::json(200, &pnp::digital_twin(&twin, id), etag.as_deref())?)
}

/// `PATCH /digitaltwins/{id}`: the JSON Patch as a desired patch; 202 with the twin's new etag.
pub async fn patch(mut req: Request, env: &Env, id: &str, caller: Caller) -> ApiResult {
    check_device_id(id)?;
    let patch = pnp::desired_from_json_patch(&http::body_text(&mut req).await?)?;
    let op = DeviceOp::PatchTwin {
        device_id: id.to_owned(),
        body: rpc::to_json(&patch),
        if_match: if_match(&req),
        actor: caller.policy,
    };
    let twin: Value = rpc::call(&device_stub(env, id)?, &op).await?;
    let mut accepted = Response::builder().with_status(202).with_header("location", &format!("/digitaltwins/{id}"))?;
    if let Some(etag) = twin["etag"].as_str() {
        accepted = accepted.with_header("etag", &format!("\"{etag}\""))?;
    }
    Ok(accepted.empty())
}

/// `POST /digitaltwins/{id}[/components/{component}]/commands/{command}`: the body is the
/// command's payload; the device's answer comes back as the body, its status in
/// `x-ms-command-statuscode`. Timeouts come from the query (`responseTimeoutInSeconds`,
/// `connectTimeoutInSeconds`), checked as a direct method's are.
pub async fn command(mut req: Request, env: &Env, id: &str, component: Option<&str>, command: &str) -> ApiResult {
    check_device_id(id)?;
    let body = http::body_text(&mut req).await?;
    let payload: Value = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).map_err(|e| {
            twinhub_core::HubError::new(
                twinhub_core::ErrorCode::IotHubFormatError,
                format!("the payload is not JSON: {e}"),
            )
        })?
    };
    let seconds = |name: &str| http::query_param(&req, name).and_then(|v| v.parse::<u64>().ok());
    let name = match component {
        Some(component) => format!("{component}*{command}"),
        None => command.to_owned(),
    };
    let mut request = json!({ "methodName": name, "payload": payload });
    if let Some(s) = seconds("responseTimeoutInSeconds") {
        request["responseTimeoutInSeconds"] = Value::from(s);
    }
    if let Some(s) = seconds("connectTimeoutInSeconds") {
        request["connectTimeoutInSeconds"] = Value::from(s);
    }
    let call = MethodCall::parse(&request.to_string())?;
    let mut answer = super::twins::invoke(env, id, call).await?;
    if answer.status_code() != 200 {
        return Ok(answer);
    }
    let result: Value = answer.json().await?;
    let status = result["status"].as_i64().unwrap_or(0);
    let builder = Response::builder()
        .with_status(200)
        .with_header("content-type", "application/json; charset=utf-8")?
        .with_header("x-ms-command-statuscode", &status.to_string())?;
    Ok(builder.fixed(result["payload"].to_string().into_bytes()))
}
