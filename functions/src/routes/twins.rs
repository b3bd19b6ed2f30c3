//! `/twins/{id}`: device twins for the service side (spec §2.1, §3.2).

use super::{device_stub, if_match};
use crate::auth;
use crate::http::{self, ApiResult};
use crate::rpc::{self, DeviceOp};
use twinhub_core::auth::Permissions;
use twinhub_core::identity::check_device_id;
use worker::{Env, Request};

/// `GET /twins/{id}`.
pub async fn get(req: Request, env: &Env, id: &str) -> ApiResult {
    auth::require(&req, env, Permissions::SERVICE_CONNECT)?;
    check_device_id(id)?;
    let op = DeviceOp::GetTwin { device_id: id.to_owned() };
    Ok(rpc::call(&device_stub(env, id)?, &op).await?)
}

/// `PATCH /twins/{id}`: merge tags and desired properties.
pub async fn patch(mut req: Request, env: &Env, id: &str) -> ApiResult {
    auth::require(&req, env, Permissions::SERVICE_CONNECT)?;
    check_device_id(id)?;
    let body = http::body_text(&mut req).await?;
    let op = DeviceOp::PatchTwin { device_id: id.to_owned(), body, if_match: if_match(&req) };
    Ok(rpc::call(&device_stub(env, id)?, &op).await?)
}
