//! One Durable Object per device id: the source of truth for that device's identity and twin.
//!
//! Every write to one twin runs here, one at a time, so etag checks and versions are exact.
//! State is two JSON rows in the object's SQLite (`identity`, `twin`) plus `seq`, a commit
//! counter that outlives deletion so a re-created device's projection always wins in the index.
//! Rows are written with one statement per commit, so a commit is all or nothing.

use crate::clock;
use crate::http::{self, ApiError, ApiResult};
use crate::objects::{index_shards, index_stub};
use crate::rpc::{self, DeviceOp, IndexEntry, IndexOp};
use serde::Deserialize;
use twinhub_core::etag::if_match_allows;
use twinhub_core::identity::{DeviceIdentity, DeviceRequest, Status};
use twinhub_core::twin::{ServicePatch, Twin};
use twinhub_core::{ErrorCode, HubError};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorageValue, State};

/// How long to wait before retrying a failed push to the fleet index.
const INDEX_RETRY_MS: i64 = 1_000;

#[durable_object]
pub struct DeviceObject {
    state: State,
    env: Env,
}

#[derive(Deserialize)]
struct Row {
    body: String,
}

/// What is stored for a device that exists.
struct Device {
    identity: DeviceIdentity,
    twin: Twin,
}

impl DurableObject for DeviceObject {
    fn new(state: State, env: Env) -> Self {
        let schema = "CREATE TABLE IF NOT EXISTS doc (name TEXT PRIMARY KEY, body TEXT NOT NULL)";
        if let Err(e) = state.storage().sql().exec(schema, None) {
            // Every later query fails the same way and answers 500; nothing to do here.
            worker::console_error!("device object schema: {e}");
        }
        Self { state, env }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op: DeviceOp = match req.json().await {
            Ok(op) => op,
            Err(e) => return http::finish(Err(HubError::new(ErrorCode::ServerError, format!("bad rpc: {e}")).into())),
        };
        http::finish(self.handle(op).await)
    }

    async fn alarm(&self) -> Result<Response> {
        // A push to the index failed earlier; send the current state again.
        if self.load_text("index_pending")?.is_some() {
            let device_id = self.load_text("device_id")?.unwrap_or_default();
            self.push_to_index(&device_id).await?;
        }
        Response::ok("")
    }
}

impl DeviceObject {
    async fn handle(&self, op: DeviceOp) -> ApiResult {
        let now = clock::now();
        match op {
            DeviceOp::GetIdentity { device_id } => {
                let d = self.require(&device_id)?;
                Ok(http::json(200, &d.identity.to_wire(), Some(&d.identity.etag_string()))?)
            }
            DeviceOp::GetTwin { device_id } => {
                let d = self.require(&device_id)?;
                Ok(http::json(200, &d.twin.to_service_json(&d.identity), Some(&d.twin.etag_string()))?)
            }
            DeviceOp::PutIdentity { device_id, body, if_match } => {
                let request = DeviceRequest::parse(&body)?;
                let device = match (self.load()?, if_match) {
                    (Some(_), None) => {
                        return Err(HubError::new(
                            ErrorCode::DeviceAlreadyExists,
                            format!("A device with ID '{device_id}' is already registered."),
                        )
                        .into())
                    }
                    (Some(existing), Some(if_match)) => update_identity(existing, &request, &if_match, now)?,
                    (None, _) => {
                        let identity = DeviceIdentity::create(&device_id, &request, now, &clock::random::<64>()?)?;
                        Device { identity, twin: Twin::new(now) }
                    }
                };
                self.commit(Some(&device))?;
                self.push_to_index(&device_id).await?;
                Ok(http::json(200, &device.identity.to_wire(), Some(&device.identity.etag_string()))?)
            }
            DeviceOp::DeleteIdentity { device_id, if_match } => {
                let d = self.require(&device_id)?;
                if !if_match_allows(&d.identity.etag_string(), if_match.as_deref()) {
                    return Err(precondition_failed());
                }
                self.commit(None)?;
                self.push_to_index(&device_id).await?;
                Ok(http::no_content()?)
            }
            DeviceOp::PatchTwin { device_id, body, if_match } => {
                let mut d = self.require(&device_id)?;
                let patch = ServicePatch::parse(&body).map_err(|e| HubError::from(&e))?;
                if !d.twin.etag_matches(if_match.as_deref()) {
                    return Err(precondition_failed());
                }
                d.twin.apply_service_patch(&patch, now);
                self.commit(Some(&d))?;
                self.push_to_index(&device_id).await?;
                Ok(http::json(200, &d.twin.to_service_json(&d.identity), Some(&d.twin.etag_string()))?)
            }
        }
    }

    fn require(&self, device_id: &str) -> std::result::Result<Device, ApiError> {
        self.load()?
            .ok_or_else(|| HubError::new(ErrorCode::DeviceNotFound, format!("Device {device_id} not found")).into())
    }

    fn load(&self) -> Result<Option<Device>> {
        let (Some(identity), Some(twin)) = (self.load_text("identity")?, self.load_text("twin")?) else {
            return Ok(None);
        };
        let parse_err = |e: serde_json::Error| worker::Error::RustError(format!("stored device is unreadable: {e}"));
        Ok(Some(Device {
            identity: serde_json::from_str(&identity).map_err(parse_err)?,
            twin: serde_json::from_str(&twin).map_err(parse_err)?,
        }))
    }

    fn load_text(&self, name: &str) -> Result<Option<String>> {
        let rows: Vec<Row> =
            self.state.storage().sql().exec("SELECT body FROM doc WHERE name = ?", vec![name.into()])?.to_array()?;
        Ok(rows.into_iter().next().map(|r| r.body))
    }

    /// Stores `device` (or deletes it when `None`) and bumps `seq`, in one statement.
    fn commit(&self, device: Option<&Device>) -> Result<()> {
        let seq = self.seq()? + 1;
        let sql = self.state.storage().sql();
        match device {
            Some(d) => {
                let values: Vec<SqlStorageValue> = vec![
                    "identity".into(),
                    to_json(&d.identity)?.into(),
                    "twin".into(),
                    to_json(&d.twin)?.into(),
                    "seq".into(),
                    seq.to_string().into(),
                    "device_id".into(),
                    d.identity.device_id.clone().into(),
                    "index_pending".into(),
                    "1".into(),
                ];
                sql.exec(
                    "INSERT OR REPLACE INTO doc (name, body) VALUES (?, ?), (?, ?), (?, ?), (?, ?), (?, ?)",
                    values,
                )?;
            }
            None => {
                // Both statements run in one synchronous stretch with no await between them,
                // which Durable Objects commit atomically. seq is kept so a re-created
                // device's projection is newer than the deleted one's.
                sql.exec("DELETE FROM doc WHERE name IN ('identity', 'twin')", None)?;
                sql.exec(
                    "INSERT OR REPLACE INTO doc (name, body) VALUES ('seq', ?), ('index_pending', '1')",
                    vec![seq.to_string().into()],
                )?;
            }
        }
        Ok(())
    }

    fn seq(&self) -> Result<u64> {
        Ok(self.load_text("seq")?.and_then(|s| s.parse().ok()).unwrap_or(0))
    }

    /// Sends the committed state to this device's index shard. On failure, an alarm retries, so
    /// the write the client asked for is not failed because a projection lags.
    async fn push_to_index(&self, device_id: &str) -> Result<()> {
        let device = self.load()?;
        let entry = IndexEntry {
            device_id: device_id.to_owned(),
            seq: self.seq()?,
            identity: device.as_ref().map(|d| d.identity.to_wire()),
            twin: device.as_ref().map(|d| d.twin.to_service_json(&d.identity)),
        };
        let shard = twinhub_core::fleet::shard_of(device_id, index_shards(&self.env));
        let pushed = match index_stub(&self.env, shard) {
            Ok(stub) => rpc::call(&stub, &IndexOp::Upsert { entry }).await.map(|r| r.status_code() == 204),
            Err(e) => Err(e),
        };
        match pushed {
            Ok(true) => {
                self.state.storage().sql().exec("DELETE FROM doc WHERE name = 'index_pending'", None)?;
            }
            Ok(false) | Err(_) => {
                worker::console_warn!("fleet index push failed for a device; retrying by alarm");
                self.state.storage().set_alarm(INDEX_RETRY_MS).await?;
            }
        }
        Ok(())
    }
}

/// Applies an identity update (`PUT /devices/{id}` with `If-Match`): status and keys.
fn update_identity(
    mut existing: Device,
    req: &DeviceRequest,
    if_match: &str,
    now: twinhub_core::UnixMillis,
) -> std::result::Result<Device, ApiError> {
    if !if_match_allows(&existing.identity.etag_string(), Some(if_match)) {
        return Err(precondition_failed());
    }
    // Validate the requested keys the same way a create would, then copy them over.
    let candidate = DeviceIdentity::create(&existing.identity.device_id, req, now, &[0; 64])?;
    let id = &mut existing.identity;
    if let Some(status) = req.status {
        if status != id.status {
            id.status_updated = now;
        }
        id.status = status;
    }
    if req.status_reason.is_some() {
        id.status_reason = req.status_reason.clone();
    }
    if let Some(keys) = req.authentication.as_ref().and_then(|a| a.symmetric_key.as_ref()) {
        if keys.primary_key.is_some() {
            id.primary_key = candidate.primary_key;
        }
        if keys.secondary_key.is_some() {
            id.secondary_key = candidate.secondary_key;
        }
    }
    if id.status == Status::Disabled {
        id.connected = false;
    }
    id.etag += 1;
    Ok(existing)
}

fn precondition_failed() -> ApiError {
    HubError::new(ErrorCode::PreconditionFailed, "Precondition failed: the etag does not match the current one.").into()
}

/// Stored rows are JSON text.
fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| worker::Error::RustError(e.to_string()))
}
