//! twinhub's own endpoints under `/api/`.

use crate::http::{self, ApiResult};
use serde_json::json;

/// `GET /api/health`: unauthenticated liveness for scripts and the test harness. Says nothing
/// about devices.
pub fn health() -> ApiResult {
    Ok(http::json(200, &json!({ "status": "ok", "service": "twinhub" }), None)?)
}

/// Variable that enables [`bench_echo`]; any other value (or none) leaves it a 404.
pub const BENCH_ECHO_VAR: &str = "TWINHUB_BENCH_ECHO";

/// `POST /api/bench/echo/{key}`: the Worker + Durable Object floor the PATCH benchmark compares
/// against. The request goes through the same Worker to one echo object per `key`, which
/// returns the body. Disabled unless `TWINHUB_BENCH_ECHO=1`.
pub async fn bench_echo(req: worker::Request, env: &worker::Env, key: &str) -> ApiResult {
    let enabled = env.var(BENCH_ECHO_VAR).map(|v| v.to_string() == "1").unwrap_or(false);
    if !enabled {
        return Err(twinhub_core::HubError::new(twinhub_core::ErrorCode::NotFound, "no such resource").into());
    }
    let stub = env.durable_object("BENCH_ECHO")?.get_by_name(key)?;
    Ok(stub.fetch_with_request(req).await?)
}
