//! One Durable Object per device id: the source of truth for that device's identity, twin,
//! twin history, cloud-to-device queue and telemetry.
//!
//! The rules are [`twinhub_core::device`]; this object is their adapter. It reads its storage
//! once into memory ([`store::Stored`]), hands each request to the core machine, writes the
//! step's [`Persist`] in one synchronous stretch, renders the reply and the projection from
//! that state before any `await` (so an interleaved request cannot change what this one
//! answers), and then drives the step's effects: gateway notifications in order, and the fleet
//! index push concurrently with them. Every write to one twin runs here, one at a time, so
//! etag checks and versions are exact.
//!
//! Lifecycle: the tables are created by the first commit of a device, never by a read, so a
//! CONNECT or request for an id that was never created writes nothing. Deleting a device ends
//! its sessions and live views, pushes a tombstone to the fleet index and then frees the
//! object's storage (`deleteAll`); a re-created id starts empty. `seq`, the commit counter the
//! index orders by, starts from the clock (microseconds), so a re-created device's projection
//! is always newer than the deleted one's tombstone although nothing of it was kept.
//!
//! A projection that did not reach the index (a failed push, or a restart between commit and
//! push) is pushed again by the object's alarm.

mod live;
mod store;
mod telemetry;

pub use live::{LIVE_EXPIRY_HEADER, LIVE_TOKEN_HEADER};

use crate::clock;
use crate::config::Config;
use crate::http::{self, ApiError, ApiResult};
use crate::objects::{IndexShard, GATEWAY_BINDING};
use crate::rpc::{self, DeviceOp, GatewayOp, IndexEntry, IndexOp, QueuedMessage};
use live::{LiveMessage, LiveView, LIVE_TAG, MAX_LIVE_VIEWS_PER_DEVICE, MAX_LIVE_VIEWS_PER_TOKEN};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::{to_raw_value, RawValue};
use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use store::Stored;
use twinhub_core::c2d::{CloudToDeviceMessage, Outcome};
use twinhub_core::device::{
    ConnectRefusal, ConnectRequest, ConnectVerdict, DeviceConfig, DeviceState, Effect, LiveEvent, Reply,
    SessionAddress, Step, TwinWrite, WriteBy,
};
use twinhub_core::identity::DeviceRequest;
use twinhub_core::session::topic::Subscription;
use twinhub_core::twin::drift::{drift_counts, DriftCounts};
use twinhub_core::twin::{ServicePatch, TwinReplacement};
use twinhub_core::{ErrorCode, HubError};
use worker::{
    durable_object, Delay, DurableObject, Env, Request, Response, Result, State, WebSocket, WebSocketIncomingMessage,
    WebSocketPair,
};

/// How long to wait before retrying a failed push to the fleet index.
const INDEX_RETRY_MS: i64 = 1_000;
/// How often a method call waiting for its device to connect looks again (in memory).
const METHOD_CONNECT_POLL_MS: u64 = 250;

#[durable_object]
pub struct DeviceObject {
    state: State,
    env: Env,
    /// The hub's settings (this isolate's, parsed once).
    config: Rc<Config>,
    /// Whether this object's tables exist (created by the first commit).
    schema: Cell<bool>,
    /// The stored state, read on first use. Borrowed only in synchronous stretches, never
    /// across an `await` (another request may run there).
    stored: RefCell<Option<Stored>>,
}

/// What a step leaves to do after its commit, prepared in the commit's synchronous stretch.
struct Outbox {
    /// Gateway notifications, sent in order.
    gateway: Vec<(String, GatewayOp)>,
    /// The projection for the fleet index.
    index: Option<IndexEntry>,
    /// Modules to delete (by key): their device was deleted.
    delete_modules: Vec<String>,
}

impl DurableObject for DeviceObject {
    fn new(state: State, env: Env) -> Self {
        // No schema here: an object woken for an id that does not exist must write nothing.
        let config = Config::of(&env);
        Self { state, env, config, schema: Cell::new(false), stored: RefCell::new(None) }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // A commit whose push may not have reached the index before the object last stopped
        // (a restart between commit and push): the alarm pushes it again.
        if self.with_stored(|s| s.index_behind())? && self.state.storage().get_alarm().await?.is_none() {
            self.state.storage().set_alarm(INDEX_RETRY_MS).await?;
        }
        if req.headers().get("upgrade")?.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return http::finish(self.open_live_view(&req).await);
        }
        let op: DeviceOp = match rpc::read(req.text().await).await {
            Ok(op) => op,
            Err(e) => return http::finish(Err(HubError::new(ErrorCode::ServerError, format!("bad rpc: {e}")).into())),
        };
        // Named in the log if it fails inside (only the op's name: its fields may hold a token).
        let name = crate::objects::op_name(&op);
        let answer = self.handle(op).await;
        if let Err(ApiError::Internal(e)) = &answer {
            worker::console_error!("device object, {name}: {e}");
        }
        http::finish(answer)
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
        // A push to the index failed earlier, or may not have happened; send the current state
        // again. A deleted device's storage is freed once the index has its tombstone.
        if self.with_stored(|s| s.index_behind())? {
            let entry = self.with_stored(|s| projection(s, &TwinView::default()))??;
            let seq = entry.seq;
            if self.push_to_index(entry).await? {
                let sql = self.state.storage().sql();
                let deleted = self.with_stored(|s| s.device.device.is_none() && s.seq == seq)?;
                if deleted {
                    self.free_storage().await?;
                } else if self.has_schema()? {
                    store::write_index_pushed(&sql, seq)?;
                }
            }
        }
        live::close_expired(&self.state);
        self.arm_live_expiry().await?;
        Response::ok("")
    }
}

impl DeviceObject {
    /// The settings core's device rules take.
    fn rules(&self) -> DeviceConfig {
        DeviceConfig { catch_up: self.config.desired_catch_up }
    }

    async fn handle(&self, op: DeviceOp) -> ApiResult {
        let now = clock::now();
        match op {
            DeviceOp::GetIdentity { device_id } => self.read(|s| {
                s.require(&device_id)?;
                Ok(Reply::Identity)
            }),
            DeviceOp::GetTwin { device_id } => self.read(|s| {
                s.require(&device_id)?;
                Ok(Reply::Twin)
            }),
            DeviceOp::PutIdentity { device_id, body, if_match, upsert } => {
                let request = DeviceRequest::parse(body.get())?;
                let random = clock::random::<64>()?;
                self.run(|s| s.put_identity(&device_id, &request, if_match.as_deref(), upsert, now, &random)).await
            }
            DeviceOp::DeleteIdentity { device_id, if_match } => self.delete(&device_id, if_match.as_deref()).await,
            DeviceOp::AddModule { device_id, module_id } => self.run(|s| s.add_module(&device_id, &module_id)).await,
            DeviceOp::RemoveModule { device_id: _, module_id } => self.run(|s| Ok(s.remove_module(&module_id))).await,
            DeviceOp::ListModules { device_id } => {
                let modules =
                    self.with_stored(|s| s.device.require(&device_id).map(|d| d.identity.modules.clone()))??;
                Ok(http::json(200, &modules, None)?)
            }
            DeviceOp::PatchTwin { device_id, body, if_match, actor } => {
                let write = TwinWrite::Patch(ServicePatch::parse(body.get()).map_err(|e| HubError::from(&e))?);
                let by = WriteBy { if_match: if_match.as_deref(), actor: &actor };
                self.run(|s| s.write_twin(&device_id, &write, by, now)).await
            }
            DeviceOp::ReplaceTwin { device_id, body, if_match, actor } => {
                let write = TwinWrite::Replace(TwinReplacement::parse(body.get()).map_err(|e| HubError::from(&e))?);
                let by = WriteBy { if_match: if_match.as_deref(), actor: &actor };
                self.run(|s| s.write_twin(&device_id, &write, by, now)).await
            }
            DeviceOp::JobUpdateTwin { device_id, job_id, body } => {
                let done = self.job_record(&job_id)?;
                self.run(|s| s.job_update(&device_id, &job_id, body.get(), done.as_ref(), now)).await
            }
            DeviceOp::JobRollback { device_id, job_id } => {
                let done = self.job_record(&job_id)?;
                self.run(|s| s.job_rollback(&device_id, &job_id, done.as_ref(), now)).await
            }
            DeviceOp::ApplyConfiguration { device_id, configuration, patch } => {
                let patch = patch.map(|p| p.to_string());
                let verdict = configuration.zip(patch.as_deref());
                self.run(|s| s.apply_configuration(&device_id, verdict, now)).await
            }
            DeviceOp::DeviceConnect { device_id, token, host, gateway, conn, clean_session, model_id } => {
                self.purge_expired(&device_id, now).await?;
                let request = ConnectRequest {
                    device_id: &device_id,
                    token: token.as_deref(),
                    host: &host,
                    gateway: &gateway,
                    conn: &conn,
                    clean_session,
                    model_id: model_id.as_deref(),
                };
                let policies = &self.config.policies;
                let rules = self.rules();
                let refused = |e: ConnectRefusal| {
                    if let ConnectRefusal::Token(e) = &e {
                        worker::console_log!("device {device_id} refused: {e}");
                    }
                    Ok::<_, HubError>(Step {
                        reply: Reply::Connect(ConnectVerdict::NotAuthorized),
                        persist: Default::default(),
                        effects: Vec::new(),
                    })
                };
                self.run(|s| s.connect(request, policies, rules, now).or_else(refused)).await
            }
            DeviceOp::DeviceToken { device_id, token, host } => {
                let policies = &self.config.policies;
                match self.with_stored(|s| s.device.check_token(&device_id, Some(&token), &host, policies, now))? {
                    Ok(expiry_secs) => Ok(http::json(200, &rpc::DeviceToken { expiry_secs }, None)?),
                    Err(e) => {
                        worker::console_log!("device {device_id}: AMQP token refused: {e}");
                        Err(HubError::new(ErrorCode::IotHubUnauthorizedAccess, e.to_string()).into())
                    }
                }
            }
            DeviceOp::DeviceSubscriptions { device_id, conn, subscriptions, keep } => {
                self.purge_expired(&device_id, now).await?;
                let rules = self.rules();
                self.run(|s| Ok(s.subscriptions_changed(&conn, subscriptions, keep, rules))).await
            }
            DeviceOp::SendCloudToDevice { device_id, body } => {
                self.require(&device_id)?;
                self.purge_expired(&device_id, now).await?;
                let message = CloudToDeviceMessage::parse(body.get(), &device_id, clock::random_hex::<16>()?)?;
                self.run(|s| s.enqueue_cloud_to_device(&device_id, message)).await
            }
            DeviceOp::EnqueueCloudToDevice { device_id, message } => {
                self.require(&device_id)?;
                self.purge_expired(&device_id, now).await?;
                self.run(|s| s.enqueue_cloud_to_device(&device_id, message)).await
            }
            DeviceOp::CloudToDeviceDelivered { device_id, conn, seq, rejected } => {
                if !self.with_stored(|s| s.device.is_session(&device_id, &conn))?? {
                    return Ok(session_ended()?);
                }
                let sql = self.state.storage().sql();
                #[derive(Deserialize)]
                struct Props {
                    properties: String,
                }
                let props: Vec<Props> = sql
                    .exec("SELECT properties FROM c2d WHERE seq = ?", vec![crate::objects::sql_int(seq)?])?
                    .to_array()?;
                let removed = sql.exec("DELETE FROM c2d WHERE seq = ?", vec![crate::objects::sql_int(seq)?])?;
                if removed.rows_written() == 0 {
                    return Ok(http::no_content()?);
                }
                let answer = self.run(|s| Ok(s.cloud_to_device_completed())).await;
                // The sender asked for delivery feedback (`iothub-ack`): recorded once the
                // completion is.
                let properties: Vec<(String, Option<String>)> =
                    props.first().and_then(|p| serde_json::from_str(&p.properties).ok()).unwrap_or_default();
                let generation = self.generation_id()?;
                let outcome = if rejected { Outcome::Rejected } else { Outcome::Completed };
                if let Some(record) = twinhub_core::c2d::feedback(&properties, outcome, &device_id, &generation, now) {
                    self.record_feedback(record).await;
                }
                answer
            }
            DeviceOp::DeviceDisconnected { device_id: _, conn } => self.run(|s| Ok(s.disconnected(&conn, now))).await,
            DeviceOp::DeviceTwinGet { device_id, conn } => self.run(|s| s.twin_get(&device_id, &conn)).await,
            DeviceOp::DeviceReport { device_id, conn, body } => {
                self.run(|s| s.report(&device_id, &conn, &body, now)).await
            }
            DeviceOp::InvokeMethod { device_id, name, payload, timeout_ms, connect_timeout_ms } => {
                self.require(&device_id)?;
                // Wait (connectTimeoutInSeconds) for the device to connect and subscribe to
                // methods. The await lets the device's own CONNECT reach this object meanwhile.
                let deadline = now.0.saturating_add(connect_timeout_ms);
                let session = loop {
                    let ready = self.with_stored(|s| {
                        s.device
                            .session
                            .as_ref()
                            .filter(|c| c.subscriptions.contains(&Subscription::Methods))
                            .map(SessionAddress::from)
                    })?;
                    match ready {
                        Some(session) => break session,
                        None if clock::now().0 >= deadline => {
                            return Err(HubError::new(
                                ErrorCode::DeviceNotOnline,
                                "The operation failed because the requested device isn't online or hasn't registered the direct method callback.",
                            )
                            .into())
                        }
                        None => Delay::from(std::time::Duration::from_millis(METHOD_CONNECT_POLL_MS)).await,
                    }
                };
                let stub = self.env.durable_object(GATEWAY_BINDING)?.get_by_name(&session.gateway)?;
                let op = GatewayOp::Method { conn: session.conn, name, payload, timeout_ms };
                // The gateway renders the method's answer (or its 404103/504101) for the client.
                Ok(rpc::forward(&stub, &op).await?)
            }
            DeviceOp::TelemetryList { device_id, limit } => {
                self.require(&device_id)?;
                let messages = telemetry::list(&self.state.storage().sql(), limit)?;
                Ok(http::json(200, &json!({ "deviceId": device_id, "messages": messages }), None)?)
            }
            DeviceOp::TelemetrySeries { device_id, field, from, to, buckets } => {
                self.require(&device_id)?;
                let series = telemetry::series(&self.state.storage().sql(), &field, from, to, buckets)?;
                let body = json!({ "deviceId": device_id, "field": field, "from": from, "to": to, "buckets": series });
                Ok(http::json(200, &body, None)?)
            }
            DeviceOp::DeviceTelemetry { device_id, conn, messages } => {
                if !self.with_stored(|s| s.device.is_session(&device_id, &conn))?? {
                    return Ok(session_ended()?);
                }
                telemetry::store(&self.state.storage().sql(), &messages, &self.config, now)?;
                // Rendered for live views only when one is open: most devices have none, and
                // parsing and rendering each message for nobody is wasted work.
                let views = live::views(&self.state);
                if !views.is_empty() {
                    for m in messages {
                        let properties = serde_json::to_value(&m.properties).unwrap_or_default();
                        let message = telemetry::render(now, properties, &m.body);
                        live::broadcast(&views, &LiveMessage::Telemetry { message });
                    }
                }
                Ok(http::no_content()?)
            }
            DeviceOp::History { device_id, since, limit } => {
                self.require(&device_id)?;
                #[derive(Deserialize)]
                struct Row {
                    body: String,
                }
                let rows: Vec<Row> = self
                    .state
                    .storage()
                    .sql()
                    .exec(
                        "SELECT body FROM history WHERE version > ? ORDER BY version LIMIT ?",
                        vec![crate::objects::sql_int(since)?, crate::objects::sql_int(limit as u64)?],
                    )?
                    .to_array()?;
                let entries: Vec<serde_json::Value> =
                    rows.iter().filter_map(|r| serde_json::from_str(&r.body).ok()).collect();
                Ok(http::json(200, &json!({ "deviceId": device_id, "entries": entries }), None)?)
            }
        }
    }

    /// Runs one command of the core machine: the step, its write and the renders in one
    /// synchronous stretch, then its effects, then the reply.
    async fn run(&self, command: impl FnOnce(&mut DeviceState) -> std::result::Result<Step, HubError>) -> ApiResult {
        let (response, outbox) = self.commit(command)?;
        self.drive(outbox).await?;
        Ok(response)
    }

    /// The synchronous part of [`Self::run`]: on an error nothing is written, and the state in
    /// memory is as it was (the machine changes nothing when it refuses).
    fn commit(
        &self,
        command: impl FnOnce(&mut DeviceState) -> std::result::Result<Step, HubError>,
    ) -> std::result::Result<(Response, Outbox), ApiError> {
        self.ensure_loaded()?;
        let mut cell = self.stored.borrow_mut();
        let Some(stored) = cell.as_mut() else { return Err(worker::Error::RustError("not loaded".into()).into()) };
        let step = command(&mut stored.device)?;
        if !step.persist.is_empty() {
            self.create_schema()?;
            if let Err(e) = store::write(&self.state.storage().sql(), stored, &step.persist, &self.config, clock::now())
            {
                // What is in memory is no longer what is stored: read it again next time.
                *cell = None;
                return Err(e.into());
            }
        }
        let twin = TwinView::default();
        let mut outbox = Outbox { gateway: Vec::new(), index: None, delete_modules: Vec::new() };
        for effect in step.effects {
            match effect {
                Effect::Broadcast(event) => {
                    let views = live::views(&self.state);
                    if views.is_empty() {
                        continue;
                    }
                    match event {
                        LiveEvent::Twin => {
                            if let Some(raw) = twin.get(stored)? {
                                live::broadcast(&views, &LiveMessage::Twin { twin: raw });
                            }
                        }
                        LiveEvent::Deleted => live::broadcast(&views, &LiveMessage::Deleted),
                    }
                }
                Effect::CloseLiveViews { reason } => live::close_all(&self.state, reason),
                Effect::NotifyDesired { session, version, patch } => {
                    outbox.gateway.push((session.gateway, GatewayOp::Desired { conn: session.conn, version, patch }));
                }
                Effect::CloseSession { session, reason } => {
                    outbox
                        .gateway
                        .push((session.gateway, GatewayOp::Close { conn: session.conn, reason: reason.into() }));
                }
                Effect::DeliverCloudToDevice { session } => {
                    // A message past its expiry is not delivered (the next purge removes it).
                    let now = clock::now();
                    let messages: Vec<QueuedMessage> = self
                        .queued_cloud_to_device()?
                        .into_iter()
                        .filter(|m| !twinhub_core::c2d::is_expired(&m.properties, now))
                        .collect();
                    if !messages.is_empty() {
                        outbox
                            .gateway
                            .push((session.gateway, GatewayOp::CloudToDevice { conn: session.conn, messages }));
                    }
                }
                Effect::Project => outbox.index = Some(projection(stored, &twin)?),
                Effect::DeleteModules(keys) => outbox.delete_modules = keys,
            }
        }
        let response = render(&step.reply, stored, &twin)?;
        Ok((response, outbox))
    }

    /// Sends the gateway notifications in order and, at the same time, the projection. A
    /// failed gateway notification is logged (the device recovers by its twin GET on
    /// reconnect; a lost close by the session's next op being refused); a failed push is
    /// retried by the alarm. Whether the index has the projection.
    async fn drive(&self, outbox: Outbox) -> Result<Option<bool>> {
        let notifications = async {
            for (gateway, op) in &outbox.gateway {
                notify_gateway(&self.env, gateway, op).await;
            }
        };
        let push = async {
            match outbox.index {
                Some(entry) => self.push_to_index(entry).await.map(Some),
                None => Ok(None),
            }
        };
        let ((), pushed) = futures_util::join!(notifications, push);
        pushed
    }

    /// Answers a read from the state, writing nothing.
    fn read(&self, reply: impl FnOnce(&DeviceState) -> std::result::Result<Reply, HubError>) -> ApiResult {
        self.with_stored(|s| -> ApiResult { Ok(render(&reply(&s.device)?, s, &TwinView::default())?) })?
    }

    /// 404 DeviceNotFound unless the device exists.
    fn require(&self, device_id: &str) -> std::result::Result<(), ApiError> {
        Ok(self.with_stored(|s| s.device.require(device_id).map(|_| ()))??)
    }

    /// `DELETE /devices/{id}`: the step, then the storage freed once the index has the
    /// tombstone (else the alarm frees it).
    async fn delete(&self, device_id: &str, if_match: Option<&str>) -> ApiResult {
        let (response, mut outbox) = self.commit(|s| s.delete(device_id, if_match))?;
        let tombstone = self.with_stored(|s| s.seq)?;
        let modules = std::mem::take(&mut outbox.delete_modules);
        let pushed = self.drive(outbox).await? == Some(true);
        // The device's modules go with it, before the answer, so a client that sees 204 sees
        // them gone too. One that cannot be deleted now is logged; its object keeps it.
        let deletes = modules.iter().map(|key| async move {
            let op = DeviceOp::DeleteIdentity { device_id: key.clone(), if_match: None };
            let stub = crate::objects::device_stub(&self.env, key).map_err(rpc::unreachable)?;
            match rpc::call::<_, serde::de::IgnoredAny>(&stub, &op).await {
                Ok(_) => Ok(()),
                Err(e) if e.code == ErrorCode::ModuleNotFound || e.code == ErrorCode::DeviceNotFound => Ok(()),
                Err(e) => Err(e),
            }
        });
        for result in futures_util::future::join_all(deletes).await {
            if let Err(e) = result {
                worker::console_warn!("a module of a deleted device was not deleted: {e}");
            }
        }
        // A device created after the storage is freed takes its first `seq` from the clock:
        // free it only once the clock has passed the tombstone's, so that device outranks the
        // tombstone in the index.
        while store::now_micros() <= tombstone {
            Delay::from(std::time::Duration::from_millis(1)).await;
        }
        // Unless something was committed meanwhile (the id created again, say).
        if pushed && self.with_stored(|s| s.device.device.is_none() && s.seq == tombstone)? {
            self.free_storage().await?;
        }
        Ok(response)
    }

    /// Runs `f` on the stored state, reading it first if this object has not yet.
    fn with_stored<R>(&self, f: impl FnOnce(&mut Stored) -> R) -> Result<R> {
        self.ensure_loaded()?;
        let mut cell = self.stored.borrow_mut();
        match cell.as_mut() {
            Some(stored) => Ok(f(stored)),
            None => Err(worker::Error::RustError("device state not loaded".into())),
        }
    }

    fn ensure_loaded(&self) -> Result<()> {
        if self.stored.borrow().is_some() {
            return Ok(());
        }
        let stored = if self.has_schema()? { store::load(&self.state.storage().sql())? } else { Stored::default() };
        *self.stored.borrow_mut() = Some(stored);
        Ok(())
    }

    fn job_record(&self, job_id: &str) -> Result<Option<twinhub_core::device::JobRecord>> {
        if !self.has_schema()? {
            return Ok(None);
        }
        store::job_record(&self.state.storage().sql(), job_id)
    }

    /// The device's generation id (empty when it has none).
    fn generation_id(&self) -> Result<String> {
        Ok(self
            .with_stored(|s| s.device.device.as_ref().map(|d| d.identity.generation_id.clone()))?
            .unwrap_or_default())
    }

    /// Keeps a delivery feedback record for the feedback receivers; a failure is logged (the
    /// message's outcome stands either way).
    async fn record_feedback(&self, record: twinhub_core::c2d::Feedback) {
        let op = crate::rpc::FeedbackOp::Append { record };
        let sent = match crate::objects::feedback::feedback_stub(&self.env) {
            Ok(stub) => rpc::tell(&stub, &op).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            worker::console_warn!("delivery feedback not recorded: {e}");
        }
    }

    /// Removes the queued cloud-to-device messages whose sender's expiry (`$.exp`) has passed:
    /// they are never delivered after it, stop counting against the queue's 50, and leave
    /// `Expired` feedback where it was asked for.
    async fn purge_expired(
        &self,
        device_id: &str,
        now: twinhub_core::UnixMillis,
    ) -> std::result::Result<(), crate::http::ApiError> {
        let expired: Vec<QueuedMessage> = self
            .queued_cloud_to_device()?
            .into_iter()
            .filter(|m| twinhub_core::c2d::is_expired(&m.properties, now))
            .collect();
        for message in expired {
            let sql = self.state.storage().sql();
            let removed = sql.exec("DELETE FROM c2d WHERE seq = ?", vec![crate::objects::sql_int(message.seq)?])?;
            if removed.rows_written() == 0 {
                continue;
            }
            self.run(|s| Ok(s.cloud_to_device_completed())).await?;
            let generation = self.generation_id()?;
            if let Some(record) =
                twinhub_core::c2d::feedback(&message.properties, Outcome::Expired, device_id, &generation, now)
            {
                self.record_feedback(record).await;
            }
        }
        Ok(())
    }

    /// Every queued cloud-to-device message, oldest first. They stay queued until the
    /// device's PUBACK completes them, so a lost delivery is retried on the next subscription
    /// or connection (QoS 1: at least once).
    fn queued_cloud_to_device(&self) -> Result<Vec<QueuedMessage>> {
        #[derive(Deserialize)]
        struct QueuedRow {
            seq: u64,
            properties: String,
            body: String,
        }
        if !self.has_schema()? {
            return Ok(Vec::new());
        }
        let rows: Vec<QueuedRow> =
            self.state.storage().sql().exec("SELECT seq, properties, body FROM c2d ORDER BY seq", None)?.to_array()?;
        Ok(rows
            .into_iter()
            .map(|r| QueuedMessage {
                seq: r.seq,
                properties: serde_json::from_str(&r.properties).unwrap_or_default(),
                body: r.body,
            })
            .collect())
    }

    /// Sends a projection to this device's index shard. On failure an alarm retries, so the
    /// write the client asked for is not failed because a projection lags. Whether the index
    /// has it now.
    async fn push_to_index(&self, entry: IndexEntry) -> Result<bool> {
        let seq = entry.seq;
        let shard = twinhub_core::fleet::shard_of(&entry.device_id, self.config.index_shards);
        let pushed = match IndexShard::of(&self.env, shard) {
            Ok(index) => index.call::<()>(&IndexOp::Upsert { entry }).await.map(|()| true),
            Err(e) => Err(rpc::unreachable(e)),
        };
        if let Ok(true) = pushed {
            // Remembered in memory; written with the next commit (see `Stored::index_pushed`).
            self.with_stored(|s| s.index_pushed = s.index_pushed.max(seq))?;
            return Ok(true);
        }
        worker::console_warn!("fleet index push failed for a device; retrying by alarm");
        self.state.storage().set_alarm(INDEX_RETRY_MS).await?;
        Ok(false)
    }

    /// A live view's upgrade (`/api/devices/{id}/live`, authorized by the Worker, which names
    /// the token's expiry and a tag for the token).
    async fn open_live_view(&self, req: &Request) -> ApiResult {
        let first = self.with_stored(|s| -> Result<Option<String>> {
            let twin = TwinView::default();
            twin.get(s)?.map(|twin| crate::objects::to_json(&LiveMessage::Twin { twin })).transpose()
        })??;
        let Some(first) = first else {
            return Err(HubError::new(ErrorCode::DeviceNotFound, "no such device").into());
        };
        let header = |name: &str| req.headers().get(name).ok().flatten().unwrap_or_default();
        // Held within a JavaScript number, as the session's token expiry is (an alarm is armed
        // for it).
        let expires: u64 =
            header(LIVE_EXPIRY_HEADER).parse::<u64>().unwrap_or(0).min(twinhub_core::session::MAX_EXPIRY.0);
        let token_tag = format!("token:{}", header(LIVE_TOKEN_HEADER));
        live::close_expired(&self.state);
        if live::open_count(&self.state, LIVE_TAG) >= MAX_LIVE_VIEWS_PER_DEVICE
            || live::open_count(&self.state, &token_tag) >= MAX_LIVE_VIEWS_PER_TOKEN
        {
            return Err(HubError::new(
                ErrorCode::ThrottlingException,
                format!(
                    "at most {MAX_LIVE_VIEWS_PER_DEVICE} live views per device and {MAX_LIVE_VIEWS_PER_TOKEN} per token; close one first"
                ),
            )
            .into());
        }
        let pair = WebSocketPair::new()?;
        self.state.accept_websocket_with_tags(&pair.server, &[LIVE_TAG, &token_tag]);
        pair.server.serialize_attachment(LiveView { expires })?;
        let _ = pair.server.send_with_str(first);
        self.arm_live_expiry().await?;
        Ok(Response::builder().with_status(101).with_websocket(pair.client).empty())
    }

    /// Arms the alarm for the earliest live view expiry (the alarm also retries index pushes;
    /// it only ever moves earlier here).
    async fn arm_live_expiry(&self) -> Result<()> {
        let Some(earliest) = live::earliest_expiry(&self.state) else { return Ok(()) };
        let storage = self.state.storage();
        let at = i64::try_from(earliest).unwrap_or(i64::MAX);
        if storage.get_alarm().await?.is_some_and(|current| current <= at) {
            return Ok(());
        }
        let delay = i64::try_from(earliest.saturating_sub(clock::now().0)).unwrap_or(i64::MAX).max(1);
        storage.set_alarm(delay).await
    }

    /// Frees everything this object stores (a deleted device whose tombstone the index has).
    async fn free_storage(&self) -> Result<()> {
        self.state.storage().delete_all().await?;
        self.schema.set(false);
        *self.stored.borrow_mut() = None;
        Ok(())
    }

    /// Whether the tables exist. Reading `sqlite_master` creates nothing.
    fn has_schema(&self) -> Result<bool> {
        #[derive(Deserialize)]
        struct Row {
            #[allow(dead_code)] // only its presence is read
            name: String,
        }
        if !self.schema.get() {
            let rows: Vec<Row> = self
                .state
                .storage()
                .sql()
                .exec("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'doc'", None)?
                .to_array()?;
            self.schema.set(!rows.is_empty());
        }
        Ok(self.schema.get())
    }

    fn create_schema(&self) -> Result<()> {
        if !self.has_schema()? {
            let sql = self.state.storage().sql();
            for statement in store::SCHEMA {
                sql.exec(statement, None)?;
            }
            self.schema.set(true);
        }
        Ok(())
    }
}

/// The twin as `GET /twins/{id}` renders it, rendered at most once per step and shared by the
/// reply, the live views and the projection.
#[derive(Default)]
struct TwinView(OnceCell<Option<(Box<RawValue>, DriftCounts)>>);

impl TwinView {
    fn get(&self, stored: &Stored) -> Result<Option<&RawValue>> {
        Ok(self.rendered(stored)?.map(|(twin, _)| twin.as_ref()))
    }

    /// The twin's drift, read from the same rendering.
    fn drift(&self, stored: &Stored) -> Result<DriftCounts> {
        Ok(self.rendered(stored)?.map(|(_, drift)| *drift).unwrap_or_default())
    }

    fn rendered(&self, stored: &Stored) -> Result<Option<&(Box<RawValue>, DriftCounts)>> {
        if self.0.get().is_none() {
            let rendered = match &stored.device.device {
                Some(d) => {
                    let json = d.twin.to_service_json(&d.identity);
                    Some((raw(&json)?, drift_counts(&json)))
                }
                None => None,
            };
            let _ = self.0.set(rendered);
        }
        Ok(self.0.get().and_then(Option::as_ref))
    }
}

fn raw(value: &impl serde::Serialize) -> Result<Box<RawValue>> {
    to_raw_value(value).map_err(|e| worker::Error::RustError(e.to_string()))
}

/// The committed state as the fleet index keeps it.
fn projection(stored: &Stored, twin: &TwinView) -> Result<IndexEntry> {
    let device = stored.device.device.as_ref();
    Ok(IndexEntry {
        device_id: device.map(|d| d.identity.key()).or_else(|| stored.device_id.clone()).unwrap_or_default(),
        seq: stored.seq,
        identity: device.map(|d| raw(&d.identity.to_wire())).transpose()?,
        twin: twin.get(stored)?.map(ToOwned::to_owned),
        committed_at: stored.committed_at,
        drift: twin.drift(stored)?,
    })
}

/// The response for `reply`, from the state as the step left it.
fn render(reply: &Reply, stored: &Stored, twin: &TwinView) -> Result<Response> {
    let device = stored.device.device.as_ref();
    let missing = || worker::Error::RustError("reply about a device that is not there".into());
    match reply {
        Reply::Identity => {
            let d = device.ok_or_else(missing)?;
            http::json(200, &d.identity.to_wire(), Some(&d.identity.etag_string()))
        }
        Reply::Twin => {
            let d = device.ok_or_else(missing)?;
            http::json(200, twin.get(stored)?.ok_or_else(missing)?, Some(&d.twin.etag_string()))
        }
        Reply::DeviceTwin => http::json(200, &device.ok_or_else(missing)?.twin.to_device_json(), None),
        Reply::NoContent => http::no_content(),
        Reply::SessionEnded => session_ended(),
        Reply::Connect(verdict) => http::json(200, verdict, None),
        Reply::ReportedVersion(version) => http::json(200, &rpc::ReportAccepted { version: *version }, None),
        Reply::Queued { message_id, queued } => {
            let answer = twinhub_core::wire::MessageQueued { message_id: message_id.clone(), queued: *queued };
            http::json(202, &answer, None)
        }
        Reply::JobRepeated { version } => http::json(200, &json!({ "version": version, "repeated": true }), None),
        Reply::RollbackSkipped { reached } => {
            http::json(200, &json!({ "restored": reached, "repeated": reached }), None)
        }
    }
}

/// Sends `op` to gateway shard `gateway`. Best effort: a lost notification is recovered by the
/// device's twin GET on reconnect, as IoT Hub devices do, and a lost close by the session's
/// next op being refused ([`ErrorCode::SessionEnded`]).
async fn notify_gateway(env: &Env, gateway: &str, op: &GatewayOp) {
    let sent = match env.durable_object(GATEWAY_BINDING).and_then(|ns| ns.get_by_name(gateway)) {
        Ok(stub) => rpc::tell(&stub, op).await,
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        worker::console_warn!("gateway notification failed: {e}");
    }
}

/// The answer to an op from a session that is no longer the device's.
fn session_ended() -> Result<Response> {
    http::error(&HubError::new(ErrorCode::SessionEnded, "the session is no longer the device's"))
}
