//! One Durable Object per device id: the source of truth for that device's identity, twin and
//! twin history.
//!
//! Every write to one twin runs here, one at a time, so etag checks and versions are exact.
//! State lives in the object's SQLite: `doc` holds JSON rows (`identity`, `twin`, `seq`, ...)
//! and `history` one row per accepted twin change.
//!
//! Lifecycle: the tables are created by the first commit of a device, never by a read, so a
//! CONNECT or request for an id that was never created writes nothing. Deleting a device ends
//! its sessions and live views, pushes a tombstone to the fleet index and then frees the
//! object's storage (`deleteAll`); a re-created id starts empty. `seq`, the commit counter the
//! index orders by, starts from the clock (microseconds), so a re-created device's projection
//! is always newer than the deleted one's tombstone although nothing of it was kept.
//!
//! A commit is a few SQL statements in one synchronous stretch (no `await` between them), which
//! Durable Objects apply atomically; the client's response goes out after it.

use crate::clock;
use crate::http::{self, ApiError, ApiResult};
use crate::objects::GATEWAY_BINDING;
use crate::objects::{index_shards, index_stub, positive_var, sql_int, to_json};
use crate::rpc::{self, ConnectVerdict, DeviceOp, GatewayOp, IndexEntry, IndexOp, QueuedMessage};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::cell::Cell;
use twinhub_core::auth::{authorize_device, AuthError};
use twinhub_core::c2d::CloudToDeviceMessage;
use twinhub_core::etag::if_match_allows;
use twinhub_core::identity::{DeviceIdentity, DeviceRequest, Status};
use twinhub_core::session::topic::Subscription;
use twinhub_core::telemetry::{downsample, numeric_field, Point};
use twinhub_core::twin::catch_up::DesiredSeen;
use twinhub_core::twin::{revert_patch, Change, ReportedPatch, ServicePatch, Twin, TwinError, TwinReplacement};
use twinhub_core::{ErrorCode, HubError, UnixMillis};
use worker::{
    durable_object, Delay, DurableObject, Env, Request, Response, Result, SqlStorageValue, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair,
};

/// How long to wait before retrying a failed push to the fleet index.
const INDEX_RETRY_MS: i64 = 1_000;
/// Variable: how many twin changes each device keeps (default [`DEFAULT_HISTORY_RETENTION`]).
pub const HISTORY_RETENTION_VAR: &str = "TWIN_HISTORY_RETENTION";
/// Twin changes kept per device when the variable is absent.
pub const DEFAULT_HISTORY_RETENTION: u64 = 1_000;
/// How often a method call waiting for its device to connect looks again.
const METHOD_CONNECT_POLL_MS: u64 = 250;
/// Variable: telemetry messages kept per device (default [`DEFAULT_TELEMETRY_RETENTION`]).
pub const TELEMETRY_RETENTION_VAR: &str = "TELEMETRY_RETENTION";
/// Telemetry messages kept per device when the variable is absent.
pub const DEFAULT_TELEMETRY_RETENTION: u64 = 1_000;
/// Variable: seconds a telemetry message is kept (default [`DEFAULT_TELEMETRY_RETENTION_SECS`]).
pub const TELEMETRY_RETENTION_SECS_VAR: &str = "TELEMETRY_RETENTION_SECS";
/// A week, the longest retention IoT Hub's built-in endpoint offers.
pub const DEFAULT_TELEMETRY_RETENTION_SECS: u64 = 7 * 24 * 3600;
/// The stored (base64) body bytes one telemetry page carries at most.
pub const MAX_TELEMETRY_PAGE_BYTES: u64 = 8 * 1024 * 1024;

/// Variable: `off` turns catch-up on reconnect off ([`twinhub_core::twin::catch_up`]): a
/// device that reconnects is then sent only the desired changes made while it is connected, as
/// IoT Hub does.
pub const CATCH_UP_VAR: &str = "TWINHUB_DESIRED_CATCH_UP";

/// Where the device's live MQTT session is.
#[derive(serde::Serialize, Deserialize)]
struct Connection {
    /// Gateway shard name.
    gateway: String,
    /// Connection id within the shard (the WebSocket's tag).
    conn: String,
    /// What the session is subscribed to now.
    #[serde(default)]
    subscriptions: Vec<Subscription>,
}

#[durable_object]
pub struct DeviceObject {
    state: State,
    env: Env,
    /// Whether this object's tables exist (created by the first commit).
    schema: Cell<bool>,
}

/// The tables of a device object, created by its first commit.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS doc (name TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS history (version INTEGER PRIMARY KEY, body TEXT NOT NULL)",
    // Bodies are stored base64: they are arbitrary bytes, and text columns round-trip exactly.
    "CREATE TABLE IF NOT EXISTS c2d (seq INTEGER PRIMARY KEY AUTOINCREMENT, properties TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS telemetry (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, properties TEXT NOT NULL, body TEXT NOT NULL)",
    // The jobs that changed this twin: what makes a job's update exactly-once across
    // restarts, and its undo for a rollback.
    "CREATE TABLE IF NOT EXISTS job_applied (job_id TEXT PRIMARY KEY, version INTEGER NOT NULL, revert TEXT, rolled_back INTEGER NOT NULL DEFAULT 0)",
];

#[derive(Deserialize)]
struct Row {
    body: String,
}

/// What is stored for a device that exists.
struct Device {
    identity: DeviceIdentity,
    twin: Twin,
}

/// A job's twin change, recorded with the commit ([`DeviceObject::write_twin`]).
enum JobMark<'a> {
    /// The job's update: remember it (and its undo) so it is never applied twice.
    Applied(&'a str),
    /// The job's rollback: it is given back.
    RolledBack(&'a str),
}

/// A row of `job_applied`.
#[derive(Deserialize)]
struct JobApplied {
    version: u64,
    revert: Option<String>,
    #[serde(deserialize_with = "int_bool")]
    rolled_back: bool,
}

fn int_bool<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(<i64 as Deserialize>::deserialize(d)? != 0)
}

/// One accepted twin change, as kept in `history`.
struct HistoryEntry<'a> {
    version: u64,
    time: UnixMillis,
    actor: &'a str,
    changes: Vec<Change>,
}

impl DurableObject for DeviceObject {
    fn new(state: State, env: Env) -> Self {
        // No schema here: an object woken for an id that does not exist must write nothing.
        Self { state, env, schema: Cell::new(false) }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if req.headers().get("upgrade")?.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            // An operator's live view (`/api/devices/{id}/live`, authorized by the Worker, which
            // names the token's expiry and a tag for the token).
            let Some(d) = self.load()? else {
                return http::error(&HubError::new(ErrorCode::DeviceNotFound, "no such device"));
            };
            let header = |name: &str| req.headers().get(name).ok().flatten().unwrap_or_default();
            // Held within a JavaScript number, as the session's token expiry is (an alarm is
            // armed for it).
            let expires: u64 =
                header(LIVE_EXPIRY_HEADER).parse::<u64>().unwrap_or(0).min(twinhub_core::session::MAX_EXPIRY.0);
            let token_tag = format!("token:{}", header(LIVE_TOKEN_HEADER));
            self.close_expired_live_views();
            if self.open_live_views(LIVE_TAG) >= MAX_LIVE_VIEWS_PER_DEVICE
                || self.open_live_views(&token_tag) >= MAX_LIVE_VIEWS_PER_TOKEN
            {
                return http::error(&HubError::new(
                    ErrorCode::ThrottlingException,
                    format!(
                        "at most {MAX_LIVE_VIEWS_PER_DEVICE} live views per device and {MAX_LIVE_VIEWS_PER_TOKEN} per token; close one first"
                    ),
                ));
            }
            let pair = WebSocketPair::new()?;
            self.state.accept_websocket_with_tags(&pair.server, &[LIVE_TAG, &token_tag]);
            pair.server.serialize_attachment(LiveView { expires })?;
            let _ = pair.server.send_with_str(live_twin_event(&d).to_string());
            self.arm_live_expiry().await?;
            return Ok(Response::builder().with_status(101).with_websocket(pair.client).empty());
        }
        let op: DeviceOp = match rpc::read(req.text().await).await {
            Ok(op) => op,
            Err(e) => return http::finish(Err(HubError::new(ErrorCode::ServerError, format!("bad rpc: {e}")).into())),
        };
        http::finish(self.handle(op).await)
    }

    async fn websocket_message(&self, _ws: WebSocket, _message: WebSocketIncomingMessage) -> Result<()> {
        // Live views only listen.
        Ok(())
    }

    async fn websocket_close(&self, ws: WebSocket, _code: usize, _reason: String, _was_clean: bool) -> Result<()> {
        let _ = ws.close(Some(1000), Some("bye"));
        Ok(())
    }

    async fn websocket_error(&self, _ws: WebSocket, _error: worker::Error) -> Result<()> {
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        // A push to the index failed earlier; send the current state again. A deleted device's
        // storage is freed once the index has its tombstone.
        if self.load_text("index_pending")?.is_some() {
            let device_id = self.load_text("device_id")?.unwrap_or_default();
            let pushed = self.seq()?;
            // Freed only if nothing was committed while the push was under way.
            if self.push_to_index(&device_id).await? && self.load()?.is_none() && self.seq()? == pushed {
                self.free_storage().await?;
            }
        }
        self.close_expired_live_views();
        self.arm_live_expiry().await?;
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
            DeviceOp::PutIdentity { device_id, body, if_match, upsert } => {
                let request = DeviceRequest::parse(&body)?;
                let device = match (self.load()?, if_match) {
                    (Some(existing), Some(if_match)) => update_identity(existing, &request, Some(&if_match), now)?,
                    (Some(existing), None) if upsert => update_identity(existing, &request, None, now)?,
                    (Some(_), None) => {
                        return Err(HubError::new(
                            ErrorCode::DeviceAlreadyExists,
                            format!("A device with ID '{device_id}' is already registered."),
                        )
                        .into())
                    }
                    (None, _) => {
                        let identity = DeviceIdentity::create(&device_id, &request, now, &clock::random::<64>()?)?;
                        Device { identity, twin: Twin::new(now) }
                    }
                };
                // Disabling a device or changing its keys ends its live session.
                let drop_session = self.load()?.is_some_and(|old| {
                    old.identity.status != device.identity.status
                        || old.identity.primary_key != device.identity.primary_key
                        || old.identity.secondary_key != device.identity.secondary_key
                });
                let mut device = device;
                let ended = if drop_session { self.forget_session()? } else { None };
                if ended.is_some() {
                    device.identity.connected = false;
                    device.identity.connection_state_updated = now;
                }
                self.commit(Some(&device), None)?;
                if let Some(session) = ended {
                    close_session(&self.env, session, "device disabled or keys changed").await;
                }
                self.push_to_index(&device_id).await?;
                Ok(http::json(200, &device.identity.to_wire(), Some(&device.identity.etag_string()))?)
            }
            DeviceOp::DeleteIdentity { device_id, if_match } => {
                let d = self.require(&device_id)?;
                if !if_match_allows(&d.identity.etag_string(), if_match.as_deref()) {
                    return Err(precondition_failed(&d.identity.etag_string()));
                }
                // IoT Hub ends a deleted device's connections at once; its data goes with it.
                // All of it is gone in this synchronous stretch (the commit), before any await:
                // a CONNECT or report arriving meanwhile finds no device.
                let session = self.forget_session()?;
                self.commit(None, None)?;
                let tombstone = self.seq()?;
                if let Some(session) = session {
                    close_session(&self.env, session, "the device was deleted").await;
                }
                for ws in self.state.get_websockets_with_tag(LIVE_TAG) {
                    let _ = ws.close(Some(1000), Some("the device was deleted"));
                }
                let pushed = self.push_to_index(&device_id).await?;
                // A device created after the storage is freed takes its first `seq` from the
                // clock: free it only once the clock has passed the tombstone's, so that device
                // outranks the tombstone in the index.
                while clock::now().0.saturating_mul(1000) <= tombstone {
                    Delay::from(std::time::Duration::from_millis(1)).await;
                }
                // Freed once the index has the tombstone (else the alarm does it), unless
                // something was committed meanwhile (the id created again, say).
                if pushed && self.load()?.is_none() && self.seq()? == tombstone {
                    self.free_storage().await?;
                }
                Ok(http::no_content()?)
            }
            DeviceOp::PatchTwin { device_id, body, if_match, actor } => {
                let patch = ServicePatch::parse(&body).map_err(|e| HubError::from(&e))?;
                let notice = patch.desired.clone().map(Some);
                self.write_twin(&device_id, if_match.as_deref(), &actor, now, notice, None, |t| {
                    t.apply_service_patch(&patch, now)
                })
                .await
            }
            DeviceOp::ReplaceTwin { device_id, body, if_match, actor } => {
                let replacement = TwinReplacement::parse(&body).map_err(|e| HubError::from(&e))?;
                self.write_twin(&device_id, if_match.as_deref(), &actor, now, Some(None), None, |t| {
                    t.replace(&replacement, now)
                })
                .await
            }
            DeviceOp::JobUpdateTwin { device_id, job_id, body } => {
                if let Some(done) = self.job_applied(&job_id)? {
                    // A retry after a restart: the job already reached this twin.
                    return Ok(http::json(200, &json!({ "version": done.version, "repeated": true }), None)?);
                }
                let patch = ServicePatch::parse(&body).map_err(|e| HubError::from(&e))?;
                let notice = patch.desired.clone().map(Some);
                let actor = format!("job:{job_id}");
                self.write_twin(&device_id, None, &actor, now, notice, Some(JobMark::Applied(&job_id)), |t| {
                    t.apply_service_patch(&patch, now)
                })
                .await
            }
            DeviceOp::JobRollback { device_id, job_id } => {
                let done = match self.job_applied(&job_id)? {
                    Some(done) if !done.rolled_back => done,
                    // Never reached, or already given back: nothing to do.
                    other => {
                        let body = json!({ "restored": other.is_some(), "repeated": other.is_some() });
                        return Ok(http::json(200, &body, None)?);
                    }
                };
                let patch = match done.revert.as_deref() {
                    Some(text) => ServicePatch::parse(text).map_err(|e| HubError::from(&e))?,
                    None => ServicePatch::default(),
                };
                let notice = patch.desired.clone().map(Some);
                let actor = format!("job:{job_id}:rollback");
                self.write_twin(&device_id, None, &actor, now, notice, Some(JobMark::RolledBack(&job_id)), |t| {
                    t.apply_service_patch(&patch, now)
                })
                .await
            }
            DeviceOp::DeviceConnect { device_id, token, host, gateway, conn, clean_session } => {
                self.device_connect(&device_id, token.as_deref(), &host, gateway, conn, clean_session, now).await
            }
            DeviceOp::DeviceSubscriptions { device_id: _, conn, subscriptions, keep } => {
                let Some(mut record) = self.connection()?.filter(|c| c.conn == conn) else {
                    return Ok(http::no_content()?);
                };
                let sql = self.state.storage().sql();
                if keep {
                    sql.exec(
                        "INSERT OR REPLACE INTO doc (name, body) VALUES ('subscriptions', ?)",
                        vec![to_json(&subscriptions)?.into()],
                    )?;
                }
                let c2d = subscriptions.contains(&Subscription::CloudToDevice);
                let desired_now = !record.subscriptions.contains(&Subscription::DesiredPatches)
                    && subscriptions.contains(&Subscription::DesiredPatches);
                record.subscriptions = subscriptions;
                sql.exec(
                    "INSERT OR REPLACE INTO doc (name, body) VALUES ('connection', ?)",
                    vec![to_json(&record)?.into()],
                )?;
                if c2d {
                    self.deliver_cloud_to_device().await?;
                }
                if desired_now {
                    if let Some(d) = self.load()? {
                        self.catch_up(&d).await?;
                    }
                }
                Ok(http::no_content()?)
            }
            DeviceOp::SendCloudToDevice { device_id, body } => {
                let mut d = self.require(&device_id)?;
                let id: String = clock::random_hex::<16>()?;
                let message = CloudToDeviceMessage::parse(&body, &device_id, id)?;
                if d.identity.cloud_to_device_count >= twinhub_core::c2d::MAX_QUEUE_DEPTH {
                    return Err(HubError::new(
                        ErrorCode::DeviceMaximumQueueDepthExceeded,
                        format!(
                            "{} messages are already waiting for device {device_id}; the limit is 50",
                            d.identity.cloud_to_device_count
                        ),
                    )
                    .into());
                }
                self.state.storage().sql().exec(
                    "INSERT INTO c2d (properties, body) VALUES (?, ?)",
                    vec![to_json(&message.properties)?.into(), BASE64.encode(&message.body).into()],
                )?;
                d.identity.cloud_to_device_count += 1;
                self.commit(Some(&d), None)?;
                if self.connection()?.is_some_and(|c| c.subscriptions.contains(&Subscription::CloudToDevice)) {
                    self.deliver_cloud_to_device().await?;
                }
                self.push_to_index(&device_id).await?;
                let answer = json!({ "messageId": message.message_id, "queued": d.identity.cloud_to_device_count });
                Ok(http::json(202, &answer, None)?)
            }
            DeviceOp::CloudToDeviceDelivered { device_id, conn, seq } => {
                if self.session_device(&device_id, &conn)?.is_none() {
                    return session_ended();
                }
                let sql = self.state.storage().sql();
                let removed = sql.exec("DELETE FROM c2d WHERE seq = ?", vec![sql_int(seq)?])?.rows_written();
                if removed > 0 {
                    if let Some(mut d) = self.load()? {
                        d.identity.cloud_to_device_count = d.identity.cloud_to_device_count.saturating_sub(1);
                        self.commit(Some(&d), None)?;
                        self.push_to_index(&device_id).await?;
                    }
                }
                Ok(http::no_content()?)
            }
            DeviceOp::DeviceDisconnected { device_id, conn } => {
                if self.connection()?.is_some_and(|c| c.conn == conn) {
                    if let Some(mut d) = self.load()? {
                        d.identity.connected = false;
                        d.identity.connection_state_updated = now;
                        d.identity.last_activity = now;
                        self.commit(Some(&d), None)?;
                        self.state.storage().sql().exec("DELETE FROM doc WHERE name = 'connection'", None)?;
                        self.push_to_index(&device_id).await?;
                    }
                }
                Ok(http::no_content()?)
            }
            DeviceOp::DeviceTwinGet { device_id, conn } => {
                let Some(d) = self.session_device(&device_id, &conn)? else { return session_ended() };
                // The device now has the current desired: the catch-up baseline.
                self.mark_desired_seen(&d.twin)?;
                Ok(http::json(200, &d.twin.to_device_json(), None)?)
            }
            DeviceOp::DeviceReport { device_id, conn, body } => {
                let Some(mut d) = self.session_device(&device_id, &conn)? else { return session_ended() };
                let patch = ReportedPatch::parse(body.as_bytes()).map_err(|e| HubError::from(&e))?;
                let changes = d.twin.apply_reported_patch(&patch, now).map_err(|e| HubError::from(&e))?;
                d.identity.last_activity = now;
                let entry = HistoryEntry { version: d.twin.version, time: now, actor: "device", changes };
                self.commit(Some(&d), Some(&entry))?;
                self.push_to_index(&device_id).await?;
                Ok(http::json(200, &json!({ "version": d.twin.reported.version }), None)?)
            }
            DeviceOp::InvokeMethod { device_id, name, payload, timeout_ms, connect_timeout_ms } => {
                self.require(&device_id)?;
                // Wait (connectTimeoutInSeconds) for the device to connect and subscribe to
                // methods. The await lets the device's own CONNECT reach this object meanwhile.
                let deadline = now.0.saturating_add(connect_timeout_ms);
                let connection = loop {
                    match self.connection()? {
                        Some(c) if c.subscriptions.contains(&Subscription::Methods) => break c,
                        _ if clock::now().0 >= deadline => {
                            return Err(HubError::new(
                                ErrorCode::DeviceNotOnline,
                                "The operation failed because the requested device isn't online or hasn't registered the direct method callback.",
                            )
                            .into())
                        }
                        _ => Delay::from(std::time::Duration::from_millis(METHOD_CONNECT_POLL_MS)).await,
                    }
                };
                let stub = self.env.durable_object(GATEWAY_BINDING)?.get_by_name(&connection.gateway)?;
                let op = GatewayOp::Method { conn: connection.conn, name, payload, timeout_ms };
                Ok(rpc::call(&stub, &op).await?)
            }
            DeviceOp::TelemetryList { device_id, limit } => {
                self.require(&device_id)?;
                #[derive(Deserialize)]
                struct Message {
                    time: u64,
                    properties: String,
                    body: String,
                }
                // The newest `limit` messages whose stored bodies add up to at most
                // MAX_TELEMETRY_PAGE_BYTES (a page of 256 KB messages would not fit in a
                // Worker's 128 MB otherwise); the newest one always.
                let rows: Vec<Message> = self
                    .state
                    .storage()
                    .sql()
                    .exec(
                        "SELECT time, properties, body FROM (
                             SELECT id, time, properties, body,
                                    SUM(LENGTH(body)) OVER (ORDER BY id DESC) AS bytes,
                                    ROW_NUMBER() OVER (ORDER BY id DESC) AS n
                             FROM (SELECT * FROM telemetry ORDER BY id DESC LIMIT ?))
                         WHERE bytes <= ? OR n = 1 ORDER BY id",
                        vec![sql_int(limit as u64)?, sql_int(MAX_TELEMETRY_PAGE_BYTES)?],
                    )?
                    .to_array()?;
                let messages: Vec<Value> = rows
                    .into_iter()
                    .map(|m| {
                        let properties: Value = serde_json::from_str(&m.properties).unwrap_or(Value::Null);
                        let bytes = BASE64.decode(&m.body).unwrap_or_default();
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
                        json!({ "enqueuedTime": UnixMillis(m.time).to_iso(), "properties": properties, "body": body })
                    })
                    .collect();
                Ok(http::json(200, &json!({ "deviceId": device_id, "messages": messages }), None)?)
            }
            DeviceOp::TelemetrySeries { device_id, field, from, to, buckets } => {
                self.require(&device_id)?;
                #[derive(Deserialize)]
                struct Reading {
                    time: u64,
                    body: String,
                }
                // Row by row: the bodies are read one at a time, never all at once.
                let cursor = self.state.storage().sql().exec(
                    "SELECT time, body FROM telemetry WHERE time >= ? AND time < ? ORDER BY id",
                    vec![sql_int(from)?, sql_int(to)?],
                )?;
                let points: Vec<Point> = cursor
                    .next::<Reading>()
                    .filter_map(|r| r.ok())
                    .filter_map(|r| {
                        let bytes = BASE64.decode(&r.body).ok()?;
                        let body: Value = serde_json::from_slice(&bytes).ok()?;
                        Some(Point { time: UnixMillis(r.time), value: numeric_field(&body, &field)? })
                    })
                    .collect();
                let series = downsample(&points, UnixMillis(from), UnixMillis(to), buckets);
                let body = json!({ "deviceId": device_id, "field": field, "from": from, "to": to, "buckets": series });
                Ok(http::json(200, &body, None)?)
            }
            DeviceOp::DeviceTelemetry { device_id, conn, messages } => {
                if self.session_device(&device_id, &conn)?.is_none() {
                    return session_ended();
                }
                let sql = self.state.storage().sql();
                // Retention by count and by age, in one statement (the table is small: at
                // most the retention count, so the age test's scan is cheap).
                let keep = positive_var(&self.env, TELEMETRY_RETENTION_VAR, DEFAULT_TELEMETRY_RETENTION);
                let secs = positive_var(&self.env, TELEMETRY_RETENTION_SECS_VAR, DEFAULT_TELEMETRY_RETENTION_SECS);
                let oldest = now.0.saturating_sub(secs.saturating_mul(1000));
                // No await between the statements: the batch commits as one (output gate).
                for m in &messages {
                    sql.exec(
                        "INSERT INTO telemetry (time, properties, body) VALUES (?, ?, ?)",
                        vec![sql_int(now.0)?, to_json(&m.properties)?.into(), BASE64.encode(&m.body).into()],
                    )?;
                }
                sql.exec(
                    "DELETE FROM telemetry WHERE id <= (SELECT MAX(id) FROM telemetry) - ? OR time < ?",
                    vec![sql_int(keep)?, sql_int(oldest)?],
                )?;
                // Rendered for live views only when one is open: most devices have none, and
                // parsing and rendering each message for nobody is wasted work.
                if !self.state.get_websockets_with_tag(LIVE_TAG).is_empty() {
                    for m in messages {
                        let text = String::from_utf8_lossy(&m.body).into_owned();
                        let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
                        self.broadcast(&json!({
                            "type": "telemetry",
                            "message": { "enqueuedTime": now.to_iso(), "properties": m.properties, "body": body },
                        }));
                    }
                }
                Ok(http::no_content()?)
            }
            DeviceOp::History { device_id, since, limit } => {
                self.require(&device_id)?;
                let rows: Vec<Row> = self
                    .state
                    .storage()
                    .sql()
                    .exec(
                        "SELECT body FROM history WHERE version > ? ORDER BY version LIMIT ?",
                        vec![sql_int(since)?, sql_int(limit as u64)?],
                    )?
                    .to_array()?;
                let entries: Vec<Value> = rows.iter().filter_map(|r| serde_json::from_str(&r.body).ok()).collect();
                Ok(http::json(200, &json!({ "deviceId": device_id, "entries": entries }), None)?)
            }
        }
    }

    /// The shared path of every service twin write: load, check `If-Match`, apply (all or
    /// nothing), commit with its history entry, project, answer with the new twin.
    ///
    /// `notice` says what a connected device is told when desired changed: `Some(Some(patch))`
    /// the patch as applied, `Some(None)` the whole new desired (a replacement), `None` nothing.
    #[allow(clippy::too_many_arguments)] // each says a different thing about the write
    async fn write_twin(
        &self,
        device_id: &str,
        if_match: Option<&str>,
        actor: &str,
        now: UnixMillis,
        notice: Option<Option<Map<String, Value>>>,
        job: Option<JobMark<'_>>,
        apply: impl FnOnce(&mut Twin) -> std::result::Result<Vec<Change>, TwinError>,
    ) -> ApiResult {
        let mut d = self.require(device_id)?;
        if !d.twin.etag_matches(if_match) {
            return Err(precondition_failed(&d.twin.etag_string()));
        }
        let changes = apply(&mut d.twin).map_err(|e| HubError::from(&e))?;
        let desired_changed = changes.iter().any(|c| c.path.starts_with("properties.desired."));
        let entry = HistoryEntry { version: d.twin.version, time: now, actor, changes };
        self.commit(Some(&d), Some(&entry))?;
        // In the same synchronous stretch as the commit, so the mark and the change are one.
        match job {
            Some(JobMark::Applied(job_id)) => {
                let revert = revert_patch(&entry.changes).map_or(SqlStorageValue::Null, |p| p.to_string().into());
                self.state.storage().sql().exec(
                    "INSERT OR REPLACE INTO job_applied (job_id, version, revert) VALUES (?, ?, ?)",
                    vec![job_id.into(), sql_int(entry.version)?, revert],
                )?;
            }
            Some(JobMark::RolledBack(job_id)) => {
                self.state
                    .storage()
                    .sql()
                    .exec("UPDATE job_applied SET rolled_back = 1 WHERE job_id = ?", vec![job_id.into()])?;
            }
            None => {}
        }
        if let (true, Some(patch)) = (desired_changed, notice) {
            // A session subscribed to desired is told now, so this is what the device has seen.
            if self.connection()?.is_some_and(|c| c.subscriptions.contains(&Subscription::DesiredPatches)) {
                self.mark_desired_seen(&d.twin)?;
            }
            let patch = d.twin.desired_notification(patch.as_ref());
            let version = d.twin.desired.version;
            self.tell_gateway(|conn| GatewayOp::Desired { conn, version, patch }).await;
        }
        self.push_to_index(device_id).await?;
        Ok(http::json(200, &d.twin.to_service_json(&d.identity), Some(&d.twin.etag_string()))?)
    }

    /// MQTT CONNECT for this device: verify, then make this the device's one session.
    #[allow(clippy::too_many_arguments)]
    async fn device_connect(
        &self,
        device_id: &str,
        token: Option<&str>,
        host: &str,
        gateway: String,
        conn: String,
        clean_session: bool,
        now: UnixMillis,
    ) -> ApiResult {
        let refuse = || http::json(200, &ConnectVerdict::NotAuthorized, None);
        let Some(mut d) = self.load()? else { return Ok(refuse()?) };
        if d.identity.status != Status::Enabled {
            return Ok(refuse()?);
        }
        let policies = crate::auth::policies(&self.env);
        let keys = [d.identity.primary_key.as_str(), d.identity.secondary_key.as_str()];
        let verdict = token
            .ok_or(AuthError::MissingToken)
            .and_then(|t| authorize_device(t, host, device_id, &keys, &policies, now.as_secs()));
        let expiry = match verdict {
            Ok(expiry) => expiry,
            Err(e) => {
                worker::console_log!("device {device_id} refused: {e}");
                return Ok(refuse()?);
            }
        };
        // One connection per device: the older session is dropped (IoT Hub logs 400027). It is
        // replaced here, before any await, so the old one's later ops are refused; its gateway
        // is told once this commit is in.
        let older = self.connection()?;
        // A CleanSession=0 device gets its subscriptions back; CleanSession=1 starts afresh.
        let subscriptions: Vec<Subscription> = if clean_session {
            self.state.storage().sql().exec("DELETE FROM doc WHERE name = 'subscriptions'", None)?;
            Vec::new()
        } else {
            self.load_text("subscriptions")?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
        };
        let record = Connection { gateway, conn, subscriptions: subscriptions.clone() };
        self.state
            .storage()
            .sql()
            .exec("INSERT OR REPLACE INTO doc (name, body) VALUES ('connection', ?)", vec![to_json(&record)?.into()])?;
        d.identity.connected = true;
        d.identity.connection_state_updated = now;
        d.identity.last_activity = now;
        self.commit(Some(&d), None)?;
        if let Some(old) = older {
            let close = GatewayOp::Close { conn: old.conn, reason: "a newer connection for this device".into() };
            notify_gateway(&self.env, &old.gateway, &close).await;
        }
        // Messages queued while it was away go out right after its CONNACK (the gateway
        // processes this behind the CONNECT it is handling).
        if subscriptions.contains(&Subscription::CloudToDevice) {
            self.deliver_cloud_to_device().await?;
        }
        // A kept desired subscription is a resubscription: catch up. Otherwise a device seen
        // for the first time gets its baseline now, and catches up when it subscribes.
        if subscriptions.contains(&Subscription::DesiredPatches) {
            self.catch_up(&d).await?;
        } else if self.desired_seen_version()?.is_none() {
            self.mark_desired_seen(&d.twin)?;
        }
        self.push_to_index(device_id).await?;
        let verdict = ConnectVerdict::Accepted { expiry_ms: expiry.saturating_mul(1000), subscriptions };
        Ok(http::json(200, &verdict, None)?)
    }

    /// Sends every queued cloud-to-device message to the device's session. They stay queued
    /// until the device's PUBACK completes them, so a lost delivery is retried on the next
    /// subscription or connection (QoS 1: at least once).
    async fn deliver_cloud_to_device(&self) -> Result<()> {
        #[derive(Deserialize)]
        struct QueuedRow {
            seq: u64,
            properties: String,
            body: String,
        }
        let rows: Vec<QueuedRow> =
            self.state.storage().sql().exec("SELECT seq, properties, body FROM c2d ORDER BY seq", None)?.to_array()?;
        if rows.is_empty() {
            return Ok(());
        }
        let messages = rows
            .into_iter()
            .map(|r| QueuedMessage {
                seq: r.seq,
                properties: serde_json::from_str(&r.properties).unwrap_or_default(),
                body: r.body,
            })
            .collect();
        self.tell_gateway(|conn| GatewayOp::CloudToDevice { conn, messages }).await;
        Ok(())
    }

    /// Forgets the device's live session, if it has one, so nothing the old session still
    /// sends is accepted (its ops name a `conn` that is no longer the device's). The caller
    /// then tells its gateway with [`close_session`], after its commit.
    fn forget_session(&self) -> Result<Option<Connection>> {
        let Some(c) = self.connection()? else { return Ok(None) };
        self.state.storage().sql().exec("DELETE FROM doc WHERE name = 'connection'", None)?;
        Ok(Some(c))
    }

    /// The device, if it exists and `conn` is its session.
    fn session_device(&self, device_id: &str, conn: &str) -> std::result::Result<Option<Device>, ApiError> {
        let d = self.require(device_id)?;
        Ok(self.connection()?.is_some_and(|c| c.conn == conn).then_some(d))
    }

    /// Frees everything this object stores (a deleted device whose tombstone the index has).
    async fn free_storage(&self) -> Result<()> {
        self.state.storage().delete_all().await?;
        self.schema.set(false);
        Ok(())
    }

    /// Whether the tables exist. Reading `sqlite_master` creates nothing.
    fn has_schema(&self) -> Result<bool> {
        if !self.schema.get() {
            let rows: Vec<Row> = self
                .state
                .storage()
                .sql()
                .exec("SELECT name AS body FROM sqlite_master WHERE type = 'table' AND name = 'doc'", None)?
                .to_array()?;
            self.schema.set(!rows.is_empty());
        }
        Ok(self.schema.get())
    }

    fn create_schema(&self) -> Result<()> {
        if !self.has_schema()? {
            let sql = self.state.storage().sql();
            for statement in SCHEMA {
                sql.exec(statement, None)?;
            }
            self.schema.set(true);
        }
        Ok(())
    }

    /// Closes live views whose token has expired (the dashboard opens a new one with a fresh
    /// token).
    fn close_expired_live_views(&self) {
        let now = clock::now().0;
        for ws in self.state.get_websockets_with_tag(LIVE_TAG) {
            let expires = ws.deserialize_attachment::<LiveView>().ok().flatten().map_or(0, |v| v.expires);
            if expires <= now {
                let _ = ws.close(Some(LIVE_EXPIRED_CLOSE), Some("the live view's token expired"));
            }
        }
    }

    /// Live views with `tag` whose token has not expired (an expired one is closing, and may
    /// linger until its client answers the close).
    fn open_live_views(&self, tag: &str) -> usize {
        let now = clock::now().0;
        self.state
            .get_websockets_with_tag(tag)
            .iter()
            .filter(|ws| ws.deserialize_attachment::<LiveView>().ok().flatten().is_some_and(|v| v.expires > now))
            .count()
    }

    /// Arms the alarm for the earliest live view expiry (the alarm also retries index pushes;
    /// it only ever moves earlier here).
    async fn arm_live_expiry(&self) -> Result<()> {
        // Views already expired are closing (a dead client may never answer the close): they
        // must not keep the alarm firing.
        let now = clock::now().0;
        let Some(earliest) = self
            .state
            .get_websockets_with_tag(LIVE_TAG)
            .iter()
            .filter_map(|ws| ws.deserialize_attachment::<LiveView>().ok().flatten())
            .map(|v| v.expires)
            .filter(|e| *e > now)
            .min()
        else {
            return Ok(());
        };
        let storage = self.state.storage();
        let at = i64::try_from(earliest).unwrap_or(i64::MAX);
        if storage.get_alarm().await?.is_some_and(|current| current <= at) {
            return Ok(());
        }
        let delay = i64::try_from(earliest.saturating_sub(clock::now().0)).unwrap_or(i64::MAX).max(1);
        storage.set_alarm(delay).await
    }

    /// The device's live session, if any.
    fn connection(&self) -> Result<Option<Connection>> {
        Ok(self.load_text("connection")?.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Sends `op` (built for the live connection id) to the gateway holding the device's
    /// session. Best effort: a lost notification is recovered by the device's twin GET on
    /// reconnect, as IoT Hub devices do.
    async fn tell_gateway(&self, op: impl FnOnce(String) -> GatewayOp) {
        let Ok(Some(c)) = self.connection() else { return };
        notify_gateway(&self.env, &c.gateway, &op(c.conn)).await;
    }

    /// Records that the device has `twin`'s current desired (the catch-up baseline). Writes
    /// only when the version moved: a device's twin GET is a read, and a write would cost it a
    /// commit (an fsync on workerd's one thread).
    fn mark_desired_seen(&self, twin: &Twin) -> Result<()> {
        if self.desired_seen_version()? == Some(twin.desired.version) {
            return Ok(());
        }
        self.state.storage().sql().exec(
            "INSERT OR REPLACE INTO doc (name, body) VALUES ('desired_seen', ?)",
            vec![to_json(&DesiredSeen::of(twin))?.into()],
        )?;
        Ok(())
    }

    /// The desired `$version` of the catch-up baseline, read without its properties.
    fn desired_seen_version(&self) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct VersionRow {
            version: Option<f64>,
        }
        if !self.has_schema()? {
            return Ok(None);
        }
        let rows: Vec<VersionRow> = self
            .state
            .storage()
            .sql()
            .exec("SELECT json_extract(body, '$.version') AS version FROM doc WHERE name = 'desired_seen'", None)?
            .to_array()?;
        // A version is a counter far below 2^53, exact as a JavaScript number.
        Ok(rows.into_iter().next().and_then(|r| r.version).map(|v| v as u64))
    }

    /// Sends the session the desired changes the device has not seen, as one patch
    /// ([`DesiredSeen::catch_up`]), unless [`CATCH_UP_VAR`] is `off`. With no baseline yet, the
    /// current desired becomes it and nothing is sent.
    async fn catch_up(&self, d: &Device) -> Result<()> {
        if self.env.var(CATCH_UP_VAR).is_ok_and(|v| v.to_string().eq_ignore_ascii_case("off")) {
            return Ok(());
        }
        let seen: Option<DesiredSeen> = self.load_text("desired_seen")?.and_then(|t| serde_json::from_str(&t).ok());
        let Some(seen) = seen else { return self.mark_desired_seen(&d.twin) };
        let Some(patch) = seen.catch_up(&d.twin) else { return Ok(()) };
        self.mark_desired_seen(&d.twin)?;
        let version = d.twin.desired.version;
        self.tell_gateway(|conn| GatewayOp::Desired { conn, version, patch }).await;
        Ok(())
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

    /// What job `job_id` did to this twin, if it reached it.
    fn job_applied(&self, job_id: &str) -> Result<Option<JobApplied>> {
        if !self.has_schema()? {
            return Ok(None);
        }
        let rows: Vec<JobApplied> = self
            .state
            .storage()
            .sql()
            .exec("SELECT version, revert, rolled_back FROM job_applied WHERE job_id = ?", vec![job_id.into()])?
            .to_array()?;
        Ok(rows.into_iter().next())
    }

    fn load_text(&self, name: &str) -> Result<Option<String>> {
        if !self.has_schema()? {
            return Ok(None);
        }
        let rows: Vec<Row> =
            self.state.storage().sql().exec("SELECT body FROM doc WHERE name = ?", vec![name.into()])?.to_array()?;
        Ok(rows.into_iter().next().map(|r| r.body))
    }

    /// Stores `device` (or deletes it and its history when `None`), appends `history`, trims the
    /// history to its retention, and bumps `seq`: all in one synchronous stretch.
    fn commit(&self, device: Option<&Device>, history: Option<&HistoryEntry<'_>>) -> Result<()> {
        self.commit_rows(device, history)?;
        self.broadcast(&match device {
            Some(d) => live_twin_event(d),
            None => json!({ "type": "deleted" }),
        });
        Ok(())
    }

    /// Sends an event to every operator watching this device live. Best effort: a closed
    /// socket is simply skipped.
    fn broadcast(&self, event: &Value) {
        let text = event.to_string();
        for ws in self.state.get_websockets_with_tag(LIVE_TAG) {
            let _ = ws.send_with_str(&text);
        }
    }

    fn commit_rows(&self, device: Option<&Device>, history: Option<&HistoryEntry<'_>>) -> Result<()> {
        self.create_schema()?;
        // Microseconds of the clock at least: a device re-created after its storage was freed
        // still outranks its own tombstone in the index.
        let seq = (self.seq()? + 1).max(clock::now().0.saturating_mul(1000));
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
                    seq.to_string().into(),
                    "committed_at".into(),
                    clock::now().0.to_string().into(),
                ];
                sql.exec(
                    "INSERT OR REPLACE INTO doc (name, body) VALUES (?, ?), (?, ?), (?, ?), (?, ?), (?, ?), (?, ?)",
                    values,
                )?;
            }
            None => {
                // Everything goes; the tombstone (seq, index_pending) stays until the index has
                // it, then the storage is freed.
                sql.exec(
                    "DELETE FROM doc WHERE name IN ('identity', 'twin', 'connection', 'subscriptions', 'desired_seen')",
                    None,
                )?;
                for table in ["history", "job_applied", "c2d", "telemetry"] {
                    sql.exec(&format!("DELETE FROM {table}"), None)?;
                }
                sql.exec(
                    "INSERT OR REPLACE INTO doc (name, body) VALUES ('seq', ?), ('index_pending', ?), ('committed_at', ?)",
                    vec![seq.to_string().into(), seq.to_string().into(), clock::now().0.to_string().into()],
                )?;
            }
        }
        if let Some(entry) = history {
            let body = json!({
                "version": entry.version,
                "time": entry.time.to_iso(),
                "actor": entry.actor,
                "changes": entry.changes,
            });
            sql.exec(
                "INSERT OR REPLACE INTO history (version, body) VALUES (?, ?)",
                vec![sql_int(entry.version)?, body.to_string().into()],
            )?;
            let keep = history_retention(&self.env);
            sql.exec("DELETE FROM history WHERE version <= ?", vec![sql_int(entry.version.saturating_sub(keep))?])?;
        }
        Ok(())
    }

    fn seq(&self) -> Result<u64> {
        Ok(self.load_text("seq")?.and_then(|s| s.parse().ok()).unwrap_or(0))
    }

    /// Sends the committed state to this device's index shard. On failure an alarm retries, so
    /// the write the client asked for is not failed because a projection lags.
    ///
    /// `index_pending` holds the newest commit's `seq`; a push clears it only if it carried that
    /// commit or a later one, so an older push finishing after a newer commit cannot hide the
    /// newer one from the alarm's retry.
    /// Whether the index has this commit now.
    async fn push_to_index(&self, device_id: &str) -> Result<bool> {
        let device = self.load()?;
        let seq = self.seq()?;
        let entry = IndexEntry {
            device_id: device_id.to_owned(),
            seq,
            identity: device.as_ref().map(|d| d.identity.to_wire()),
            twin: device.as_ref().map(|d| d.twin.to_service_json(&d.identity)),
            committed_at: self.load_text("committed_at")?.and_then(|t| t.parse().ok()),
        };
        let shard = twinhub_core::fleet::shard_of(device_id, index_shards(&self.env));
        let pushed = match index_stub(&self.env, shard) {
            Ok(stub) => rpc::call(&stub, &IndexOp::Upsert { entry }).await.map(|r| r.status_code() == 204),
            Err(e) => Err(e),
        };
        match pushed {
            // Freed meanwhile (a delete that interleaved): nothing is pending any more.
            Ok(true) if !self.has_schema()? => Ok(true),
            Ok(true) => {
                self.state.storage().sql().exec(
                    "DELETE FROM doc WHERE name = 'index_pending' AND CAST(body AS INTEGER) <= ?",
                    vec![sql_int(seq)?],
                )?;
                Ok(true)
            }
            Ok(false) | Err(_) => {
                worker::console_warn!("fleet index push failed for a device; retrying by alarm");
                self.state.storage().set_alarm(INDEX_RETRY_MS).await?;
                Ok(false)
            }
        }
    }
}

/// An identity update (`PUT /devices/{id}` with `If-Match`, or a bulk upsert): the etag check
/// here, the rules in [`DeviceIdentity::update`].
fn update_identity(
    mut existing: Device,
    req: &DeviceRequest,
    if_match: Option<&str>,
    now: UnixMillis,
) -> std::result::Result<Device, ApiError> {
    if !if_match_allows(&existing.identity.etag_string(), if_match) {
        return Err(precondition_failed(&existing.identity.etag_string()));
    }
    existing.identity.update(req, now)?;
    Ok(existing)
}

fn precondition_failed(current: &str) -> ApiError {
    HubError::new(
        ErrorCode::PreconditionFailed,
        format!("Precondition failed: If-Match does not match the current etag \"{current}\"; read the twin again and retry."),
    )
    .into()
}

fn history_retention(env: &Env) -> u64 {
    positive_var(env, HISTORY_RETENTION_VAR, DEFAULT_HISTORY_RETENTION)
}

/// Live views' WebSocket tag.
const LIVE_TAG: &str = "live";
/// Header the Worker sets on a live view's upgrade: its token's expiry, Unix ms.
pub const LIVE_EXPIRY_HEADER: &str = "x-twinhub-live-expiry";
/// Header the Worker sets on a live view's upgrade: a tag naming its token (a hash, never the
/// token), to bound the views one token holds.
pub const LIVE_TOKEN_HEADER: &str = "x-twinhub-live-token";
/// Live views one device serves at once (each is a socket the object keeps).
pub const MAX_LIVE_VIEWS_PER_DEVICE: usize = 16;
/// Live views of one device one token may hold.
pub const MAX_LIVE_VIEWS_PER_TOKEN: usize = 4;
/// WebSocket close code when a live view's token expires (4000-4999: the application's own).
pub const LIVE_EXPIRED_CLOSE: u16 = 4001;

/// A live view's attachment.
#[derive(serde::Serialize, Deserialize)]
struct LiveView {
    /// When its token expires, Unix ms.
    expires: u64,
}

/// Sends `op` to gateway shard `gateway`. Best effort: a lost notification is recovered by the
/// device's twin GET on reconnect, as IoT Hub devices do, and a lost close by the session's
/// next op being refused ([`rpc::SESSION_ENDED`]).
async fn notify_gateway(env: &Env, gateway: &str, op: &GatewayOp) {
    let sent = match env.durable_object(GATEWAY_BINDING).and_then(|ns| ns.get_by_name(gateway)) {
        Ok(stub) => rpc::call(&stub, op).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        worker::console_warn!("gateway notification failed: {e}");
    }
}

/// Tells the gateway holding `session` to close it.
async fn close_session(env: &Env, session: Connection, why: &str) {
    notify_gateway(env, &session.gateway, &GatewayOp::Close { conn: session.conn, reason: why.into() }).await;
}

/// The answer to an op from a session that is no longer the device's.
fn session_ended() -> ApiResult {
    Ok(Response::builder().with_status(rpc::SESSION_ENDED).empty())
}

/// The live event for a device's current state.
fn live_twin_event(d: &Device) -> Value {
    json!({ "type": "twin", "twin": d.twin.to_service_json(&d.identity) })
}
