//! `/devices/{id}/modules`: module identities (spec §1.5, §3.3).
//!
//! A module is held by an object of its own, named by its key `{deviceId}/{moduleId}`, exactly
//! as a device is (its twin, sessions, methods and telemetry go through the same code). The
//! device's object keeps the list of its modules: it refuses a module on a device that does
//! not exist and past the limit, and deleting the device deletes them.

use super::{device_stub, if_match};
use crate::http::{self, ApiResult};
use crate::rpc::{self, DeviceOp};
use futures_util::future::try_join_all;
use serde::de::IgnoredAny;
use serde_json::Value;
use twinhub_core::identity::{check_device_id, module_key};
use twinhub_core::route::Ident;
use twinhub_core::ErrorCode;
use worker::{Env, Request};

/// `GET /devices/{id}/modules`: the identities of the device's modules, by module id.
pub async fn list(env: &Env, device_id: &str) -> ApiResult {
    check_device_id(device_id)?;
    let op = DeviceOp::ListModules { device_id: device_id.to_owned() };
    let ids: Vec<String> = rpc::call(&device_stub(env, device_id)?, &op).await?;
    let reads = ids.iter().map(|module_id| async move {
        let key = module_key(device_id, module_id);
        let op = DeviceOp::GetIdentity { device_id: key.clone() };
        match rpc::call::<_, Value>(&device_stub(env, &key).map_err(rpc::unreachable)?, &op).await {
            Ok(identity) => Ok(Some(identity)),
            // A module listed while its create was under way, or that failed, is not one yet.
            Err(e) if e.code == ErrorCode::ModuleNotFound || e.code == ErrorCode::DeviceNotFound => Ok(None),
            Err(e) => Err(e),
        }
    });
    let modules: Vec<Value> = try_join_all(reads).await?.into_iter().flatten().collect();
    Ok(http::json(200, &Value::Array(modules), None)?)
}

/// `PUT /devices/{id}/modules/{mid}`: create (no `If-Match`) or update. The device makes room
/// first (404 DeviceNotFound, 403 TooManyModulesOnDevice); a module that then could not be
/// created gives its place back.
pub async fn put(mut req: Request, env: &Env, device_id: &str, module_id: &str) -> ApiResult {
    let key = Ident::module(device_id, module_id).key()?;
    let body = http::json_body(&mut req).await?;
    let parent = device_stub(env, device_id)?;
    let room = DeviceOp::AddModule { device_id: device_id.to_owned(), module_id: module_id.to_owned() };
    rpc::call::<_, IgnoredAny>(&parent, &room).await?;
    let module = device_stub(env, &key)?;
    let op = DeviceOp::PutIdentity { device_id: key.clone(), body, if_match: if_match(&req), upsert: false };
    let answer = rpc::forward(&module, &op).await?;
    if answer.status_code() >= 300 {
        let exists = rpc::call::<_, IgnoredAny>(&module, &DeviceOp::GetIdentity { device_id: key }).await.is_ok();
        if !exists {
            let forget = DeviceOp::RemoveModule { device_id: device_id.to_owned(), module_id: module_id.to_owned() };
            rpc::tell(&parent, &forget).await?;
        }
    }
    Ok(answer)
}

/// `DELETE /devices/{id}/modules/{mid}`: the module, its twin and its sessions are gone at once.
pub async fn delete(req: Request, env: &Env, device_id: &str, module_id: &str) -> ApiResult {
    let key = Ident::module(device_id, module_id).key()?;
    let op = DeviceOp::DeleteIdentity { device_id: key.clone(), if_match: if_match(&req) };
    let answer = rpc::forward(&device_stub(env, &key)?, &op).await?;
    if answer.status_code() < 300 {
        let forget = DeviceOp::RemoveModule { device_id: device_id.to_owned(), module_id: module_id.to_owned() };
        rpc::tell(&device_stub(env, device_id)?, &forget).await?;
    }
    Ok(answer)
}
