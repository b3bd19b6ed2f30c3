//! HTTP responses: JSON bodies, the ETag header, and IoT Hub's error envelope (spec §3.7).

use crate::clock;
use twinhub_core::{ErrorCode, HubError};
use worker::{Response, Result};

/// The largest request body accepted on the REST API. Twin sections total 72 KB and a bulk
/// request of 100 devices fits easily; anything bigger is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Bodies up to this size past the limit are read (and dropped) before the 413 goes out.
const DRAIN_BODY_BYTES: usize = 4 * MAX_BODY_BYTES;

/// A REST handler's failure: either an IoT Hub error for the client, or a fault of ours.
pub enum ApiError {
    /// Sent to the client as is.
    Hub(HubError),
    /// Logged; the client sees a generic 500 (the detail may name internals).
    Internal(worker::Error),
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        Self::Hub(e)
    }
}

impl From<worker::Error> for ApiError {
    fn from(e: worker::Error) -> Self {
        Self::Internal(e)
    }
}

/// What REST handlers return.
pub type ApiResult = std::result::Result<Response, ApiError>;

/// A JSON response with IoT Hub's content type, and `ETag: "<etag>"` when given.
pub fn json(status: u16, body: &(impl serde::Serialize + ?Sized), etag: Option<&str>) -> Result<Response> {
    let mut builder =
        Response::builder().with_status(status).with_header("content-type", "application/json; charset=utf-8")?;
    if let Some(etag) = etag {
        builder = builder.with_header("etag", &format!("\"{etag}\""))?;
    }
    Ok(builder.fixed(serde_json::to_vec(body).map_err(|e| worker::Error::RustError(e.to_string()))?))
}

/// 204 No Content.
pub fn no_content() -> Result<Response> {
    Ok(Response::builder().with_status(204).empty())
}

/// Turns a handler's result into the response the client gets. Never fails: if even the error
/// response cannot be built, a bare 500 goes out.
pub fn finish(result: ApiResult) -> Result<Response> {
    match result {
        Ok(response) => Ok(response),
        Err(ApiError::Hub(e)) => error(&e),
        Err(ApiError::Internal(e)) => {
            worker::console_error!("internal error: {e}");
            error(&HubError::new(ErrorCode::ServerError, "internal error; see the hub's log"))
        }
    }
}

/// The error response for `e`: status from the code, envelope body, `iothub-errorcode` header.
pub fn error(e: &HubError) -> Result<Response> {
    let body = e.envelope(&clock::tracking_id(), clock::now());
    let built = Response::builder()
        .with_status(e.code.http_status())
        .with_header("content-type", "application/json; charset=utf-8")
        .and_then(|b| b.with_header("iothub-errorcode", e.code.name()));
    match built {
        Ok(b) => Ok(b.fixed(body.into_bytes())),
        Err(_) => Ok(Response::builder().with_status(500).empty()),
    }
}

/// A 503 with `Retry-After` (seconds): the hub sheds load it cannot take now.
pub fn unavailable(e: &HubError, retry_after_secs: u64) -> Result<Response> {
    let mut response = error(e)?;
    response.headers_mut().set("retry-after", &retry_after_secs.to_string())?;
    Ok(response)
}

/// A query parameter of the request, percent-decoded.
pub fn query_param(req: &worker::Request, name: &str) -> Option<String> {
    req.url().ok()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Reads a request body as UTF-8 text, refusing bodies over [`MAX_BODY_BYTES`].
/// [`body_text`] as a JSON document for an op ([`crate::rpc::Json`]): its syntax checked here
/// (400006, as core's parsers answer a body that is not JSON); its shape is core's to check.
pub async fn json_body(req: &mut worker::Request) -> std::result::Result<crate::rpc::Json, ApiError> {
    Ok(crate::rpc::json(body_text(req).await?)?)
}

pub async fn body_text(req: &mut worker::Request) -> std::result::Result<String, ApiError> {
    let too_large =
        || HubError::new(ErrorCode::MessageTooLarge, format!("request body exceeds {MAX_BODY_BYTES} bytes"));
    // Refuse early when the client declares the size; check again after reading, since the
    // header may be absent (chunked) or wrong.
    if let Ok(Some(len)) = req.headers().get("content-length") {
        match len.parse::<usize>() {
            // A body somewhat over the limit is read and dropped first: a client that writes
            // its whole body before reading (most do) would otherwise meet a closed socket
            // instead of the 413. Far over it, the connection is not worth keeping.
            Ok(n) if n > MAX_BODY_BYTES && n <= DRAIN_BODY_BYTES => {
                let _ = req.bytes().await;
                return Err(too_large().into());
            }
            Ok(n) if n > MAX_BODY_BYTES => return Err(too_large().into()),
            _ => {}
        }
    }
    let bytes = req.bytes().await?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(too_large().into());
    }
    String::from_utf8(bytes)
        .map_err(|_| HubError::new(ErrorCode::IotHubFormatError, "request body is not UTF-8").into())
}
