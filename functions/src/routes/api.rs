//! twinhub's own endpoints under `/api/`.

use crate::http::{self, ApiResult};
use serde_json::json;

/// `GET /api/health`: unauthenticated liveness for scripts and the test harness. Says nothing
/// about devices.
pub fn health() -> ApiResult {
    Ok(http::json(200, &json!({ "status": "ok", "service": "twinhub" }), None)?)
}
