//! twinhub's own endpoints under `/api/`.

use crate::http::{self, ApiResult};
use serde_json::json;

/// `GET /api/health`: unauthenticated liveness for scripts and the test harness. Says nothing
/// about devices.
pub fn health() -> ApiResult {
    Ok(http::json(200, &json!({ "status": "ok", "service": "twinhub" }), None)?)
}

/// `GET /api/session`: who the token speaks for and what it may do, so the dashboard can turn
/// itself read-only for a policy without write rights (and say why). Any valid token may ask.
pub fn session(env: &worker::Env, caller: &crate::auth::Caller) -> ApiResult {
    use twinhub_core::auth::Permissions;
    let permissions: Vec<&str> = [
        Permissions::REGISTRY_READ,
        Permissions::REGISTRY_WRITE,
        Permissions::SERVICE_CONNECT,
        Permissions::DEVICE_CONNECT,
    ]
    .into_iter()
    .filter(|p| caller.permissions.contains(*p))
    .map(Permissions::name)
    .collect();
    let mut body = json!({ "policy": caller.policy, "permissions": permissions });
    // Upstream mode: which hub is behind, and what it cannot offer (for the dashboard).
    if let (Some(out), serde_json::Value::Object(extra)) = (body.as_object_mut(), crate::upstream::session_fields(env))
    {
        out.extend(extra);
    }
    Ok(http::json(200, &body, None)?)
}
