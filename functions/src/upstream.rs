//! Upstream mode's I/O (the rules are `twinhub_core::upstream`): with the secret
//! `UPSTREAM_CONNECTION_STRING` set, every IoT Hub REST call is checked against twinhub's own
//! policies and forwarded with a fresh token signed by the upstream's key; device connections
//! (WebSocket, and MQTT over TLS on 8883 when self-hosted) are piped to the upstream's
//! MQTT-over-WebSocket endpoint after twinhub has checked the device's token and re-signed its
//! CONNECT for the upstream; twinhub's own features answer 501 FeatureUnavailable.

use crate::auth;
use crate::clock;
use crate::http::{self, ApiResult};
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use std::cell::RefCell;
use twinhub_core::auth::{authorize_device, precheck_device_token};
use twinhub_core::mqtt::{self, ConnAck, ConnectReturnCode, Packet};
use twinhub_core::route::{Route, Upstream};
use twinhub_core::upstream::{self, PipeAdmission, PipeRefusal, UpstreamHub, REQUEST_HEADERS, RESPONSE_HEADERS};
use twinhub_core::{ErrorCode, HubError};
use worker::{
    Delay, Env, Fetch, Headers, Method, Request, RequestInit, Response, WebSocket, WebSocketPair, WebsocketEvent,
};

/// Largest MQTT packet the pipe decodes (only the CONNECT is decoded).
const MAX_CONNECT_BYTES: usize = 64 * 1024;

/// The upstream, when upstream mode is on (`UPSTREAM_CONNECTION_STRING`). A secret that cannot
/// be used is an error on every request (and in the log), never a silent fallback to a hub of
/// our own.
pub fn configured(env: &Env) -> Option<Result<UpstreamHub, HubError>> {
    crate::config::Config::of(env).upstream.clone()
}

/// Answers an API route in upstream mode, as [`Route::upstream`] says (the routes answered
/// `Here` do not come here).
pub async fn route(req: Request, env: &Env, up: UpstreamHub, route: Route<'_>, segs: &[&str]) -> ApiResult {
    let not_found = || HubError::new(ErrorCode::NotFound, format!("no such resource: /{}", segs.join("/")));
    match route.upstream() {
        Upstream::Forwarded { timeout_secs } if upstream::forwards_safely(segs) => {
            let caller = auth::authorize(&req, env, &route)?;
            // A configuration's metric counts are counts over twins: withheld from a caller
            // that may not read twins, as twinhub's own hub withholds them.
            let counts = caller.is_some_and(|c| twinhub_core::configuration::counts_visible_to(c.permissions));
            let filter = match route {
                Route::ListConfigurations | Route::GetConfiguration(_) if !counts => Some(Withhold::MetricCounts),
                _ => None,
            };
            forward(req, &up, timeout_secs, filter).await
        }
        Upstream::Own(feature) => Err(upstream::unavailable(feature).into()),
        Upstream::Piped => device_pipe(req, env, up).await,
        _ => Err(not_found().into()),
    }
}

/// What a forwarded answer loses on its way back.
enum Withhold {
    /// Configurations' `systemMetrics.results` and `metrics.results`.
    MetricCounts,
}

/// Forwards one IoT Hub REST call whose caller has been checked.
async fn forward(mut req: Request, up: &UpstreamHub, timeout_secs: u64, withhold: Option<Withhold>) -> ApiResult {
    let method = req.method();
    let url = req.url()?;
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let headers = Headers::new();
    for name in REQUEST_HEADERS {
        if let Some(value) = req.headers().get(name)? {
            headers.set(name, &value)?;
        }
    }
    headers.set("authorization", &up.authorization(clock::now().as_secs())?)?;
    let mut init = RequestInit::new();
    init.with_method(method.clone()).with_headers(headers);
    if !matches!(method, Method::Get | Method::Head | Method::Delete) {
        init.with_body(Some(http::body_text(&mut req).await?.into()));
    }
    let outgoing = Request::new_with_init(&up.url(&path_and_query), &init)?;
    let timeout_ms = timeout_secs * 1000;
    let request = Fetch::Request(outgoing);
    let fetch = Box::pin(request.send());
    let timer = Box::pin(Delay::from(std::time::Duration::from_millis(timeout_ms)));
    let mut answer = match select(fetch, timer).await {
        Either::Left((Ok(resp), _)) => resp,
        Either::Left((Err(e), _)) => {
            worker::console_warn!("upstream {} did not answer: {e}", up.host);
            return Err(unreachable(up, "did not answer").into());
        }
        Either::Right(_) => return Err(unreachable(up, &format!("did not answer within {timeout_secs} s")).into()),
    };
    let status = answer.status_code();
    let mut body = answer.bytes().await.map_err(|_| unreachable(up, "broke off its answer"))?;
    if let (Some(Withhold::MetricCounts), 200) = (&withhold, status) {
        if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) {
            twinhub_core::configuration::withhold_counts(&mut value);
            body = serde_json::to_vec(&value).unwrap_or_default();
        }
    }
    if up.leaks_key(&String::from_utf8_lossy(&body)) {
        // Cannot happen with a real hub; if it ever does, the key stays here.
        return Err(HubError::new(ErrorCode::ServerError, "the upstream's answer was withheld").into());
    }
    let mut builder = Response::builder().with_status(status);
    for name in RESPONSE_HEADERS {
        if let Some(value) = answer.headers().get(name)? {
            builder = builder.with_header(name, &value)?;
        }
    }
    // A body on 204, 205 or 304 is refused by the runtime (workers-rs would panic building it).
    if body.is_empty() || matches!(status, 204 | 205 | 304) {
        return Ok(builder.empty());
    }
    Ok(builder.fixed(body))
}

fn unreachable(up: &UpstreamHub, what: &str) -> HubError {
    HubError::new(ErrorCode::ServiceUnavailable, format!("the upstream IoT Hub {} {what}; try again", up.host))
}

/// `/$iothub/websocket` in upstream mode: accepts the device's socket, reads its CONNECT,
/// checks its token as twinhub's own endpoint would (against the device's keys from the
/// upstream's registry, or twinhub's policies), re-signs it for the upstream, then pipes bytes
/// both ways until either side closes.
async fn device_pipe(req: Request, env: &Env, up: UpstreamHub) -> ApiResult {
    let upgrade = req.headers().get("upgrade")?.unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(HubError::new(ErrorCode::ArgumentInvalid, "/$iothub/websocket expects a WebSocket upgrade").into());
    }
    let place = admit_pipe()?;
    let client = device_socket(env, up, Some(auth::own_host(&req, env)), place)?;
    let mut response = Response::from_websocket(client)?;
    response.headers_mut().set("sec-websocket-protocol", "mqtt")?;
    Ok(response)
}

thread_local! {
    /// This isolate's device pipes: how many are open, how many wait for CONNECT, and the
    /// rate of CONNECTs checked against the upstream's registry (`core::upstream`'s bounds).
    static PIPES: RefCell<Option<PipeAdmission>> = const { RefCell::new(None) };
}

fn pipes<R>(f: impl FnOnce(&mut PipeAdmission) -> R) -> R {
    PIPES.with(|p| f(p.borrow_mut().get_or_insert_with(|| PipeAdmission::new(clock::now()))))
}

/// A device pipe's place among this isolate's, given back when dropped (however the pipe ends).
pub struct PipePlace {
    waiting: bool,
}

impl PipePlace {
    fn piped(&mut self) {
        if std::mem::replace(&mut self.waiting, false) {
            pipes(PipeAdmission::piped);
        }
    }
}

impl Drop for PipePlace {
    fn drop(&mut self) {
        let waiting = self.waiting;
        pipes(|p| p.closed(waiting));
    }
}

/// A place for one more device pipe, or 503 when this isolate holds as many as it may.
pub fn admit_pipe() -> Result<PipePlace, HubError> {
    match pipes(PipeAdmission::open) {
        Ok(()) => Ok(PipePlace { waiting: true }),
        Err(PipeRefusal::TooManyWaiting) => Err(HubError::new(
            ErrorCode::ServiceUnavailable,
            "too many device connections are waiting for CONNECT; retry shortly",
        )),
        Err(_) => Err(HubError::new(ErrorCode::ServiceUnavailable, "as many device connections as this hub may hold")),
    }
}

/// One end of an in-process WebSocket whose other end is piped to the upstream, for a device
/// transport to carry its bytes over: the `/$iothub/websocket` response, or the 8883 handler
/// (`device_tcp`). `my_host` is the hub name the device's token must carry; `None` (raw TCP,
/// no Host header) takes it from the CONNECT user name, as twinhub's own gateway does. `place`
/// ([`admit_pipe`]) is held until the pipe ends.
pub fn device_socket(
    env: &Env,
    up: UpstreamHub,
    my_host: Option<String>,
    mut place: PipePlace,
) -> worker::Result<WebSocket> {
    let pair = WebSocketPair::new()?;
    pair.server.accept()?;
    let (device, env) = (pair.server, env.clone());
    worker::wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = pipe(&device, &env, &up, my_host, &mut place).await {
            worker::console_warn!("device pipe ended: {e}");
        }
        let _ = device.close(Some(1000), Some("bye"));
        drop(place);
    });
    Ok(pair.client)
}

async fn pipe(
    device: &WebSocket,
    env: &Env,
    up: &UpstreamHub,
    my_host: Option<String>,
    place: &mut PipePlace,
) -> worker::Result<()> {
    // Binary frames as ArrayBuffers (the standard default is Blob, which `bytes()` cannot read).
    AsRef::<web_sys::WebSocket>::as_ref(device).set_binary_type(web_sys::BinaryType::Arraybuffer);
    let mut from_device = device.events()?;
    // 1. The CONNECT, however it was split into messages, within the connect timeout (as
    // twinhub's own endpoint allows): a socket that never sends one is closed.
    let mut buf = Vec::new();
    let deadline = clock::now().0.saturating_add(crate::config::Config::of(env).connect_timeout_ms);
    let (connect, used) = loop {
        let left = deadline.saturating_sub(clock::now().0);
        let timer = Box::pin(Delay::from(std::time::Duration::from_millis(left)));
        match select(from_device.next(), timer).await {
            Either::Left((Some(Ok(WebsocketEvent::Message(m))), _)) => buf.extend(m.bytes().unwrap_or_default()),
            _ => return Ok(()),
        }
        match mqtt::decode(&buf, MAX_CONNECT_BYTES) {
            Ok(Some((Packet::Connect(c), used))) => break (c, used),
            Ok(Some(_)) | Err(_) => return Ok(()),
            Ok(None) => {}
        }
    };
    // 2. Checked here, re-signed for the upstream.
    let refuse = |code| {
        if let Ok(bytes) = Packet::ConnAck(ConnAck { session_present: false, code }).to_bytes() {
            let _ = device.send_with_bytes(bytes);
        }
    };
    let token = String::from_utf8_lossy(connect.password.as_deref().unwrap_or_default()).into_owned();
    let now = clock::now();
    let my_host = my_host.unwrap_or_else(|| auth::own_name_in_username(connect.username.as_deref(), env));
    // A token that cannot be right (malformed, expired, for another device or hub) is refused
    // before the upstream is asked anything, and the CONNECTs that are asked about are bounded
    // in rate: a flood of CONNECTs cannot become a flood of registry lookups.
    if let Err(e) = precheck_device_token(&token, &my_host, &connect.client_id, now.as_secs()) {
        worker::console_log!("upstream pipe: CONNECT refused before verification: {e}");
        refuse(ConnectReturnCode::NotAuthorized);
        return Ok(());
    }
    if pipes(|p| p.verify(now)).is_err() {
        refuse(ConnectReturnCode::ServerUnavailable);
        return Ok(());
    }
    let keys = match device_keys(up, &connect.client_id).await {
        Ok(Some(keys)) => keys,
        Ok(None) => {
            refuse(ConnectReturnCode::NotAuthorized);
            return Ok(());
        }
        Err(e) => {
            refuse(ConnectReturnCode::ServerUnavailable);
            return Err(worker::Error::RustError(e.message));
        }
    };
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let now = clock::now().as_secs();
    let expiry = match authorize_device(
        &token,
        &my_host,
        &connect.client_id,
        &key_refs,
        &crate::config::Config::of(env).policies,
        now,
    ) {
        Ok(expiry) => expiry,
        Err(_) => {
            refuse(ConnectReturnCode::NotAuthorized);
            return Ok(());
        }
    };
    let Some(primary) = keys.first() else { return Ok(()) };
    let readdressed = upstream::readdress_connect(&connect, &up.host, primary, expiry)
        .map_err(|e| worker::Error::RustError(e.message))?;
    // 3. The upstream's device endpoint.
    let url = up.device_endpoint().parse().map_err(|_| worker::Error::RustError("bad upstream url".into()))?;
    let upstream_ws = match WebSocket::connect_with_protocols(url, Some(vec!["mqtt"])).await {
        Ok(ws) => ws,
        Err(e) => {
            refuse(ConnectReturnCode::ServerUnavailable);
            return Err(e);
        }
    };
    upstream_ws.accept()?;
    AsRef::<web_sys::WebSocket>::as_ref(&upstream_ws).set_binary_type(web_sys::BinaryType::Arraybuffer);
    // The readdressed CONNECT carries a new user name and token, each a field that can overflow.
    let bytes = Packet::Connect(readdressed).to_bytes().map_err(|e| worker::Error::RustError(e.to_string()))?;
    upstream_ws.send_with_bytes(bytes)?;
    if used < buf.len() {
        upstream_ws.send_with_bytes(&buf[used..])?;
    }
    place.piped();
    // 4. Bytes both ways until one side closes.
    let mut from_upstream = upstream_ws.events()?;
    loop {
        match select(from_device.next(), from_upstream.next()).await {
            Either::Left((Some(Ok(WebsocketEvent::Message(m))), _)) => {
                upstream_ws.send_with_bytes(m.bytes().unwrap_or_default())?;
            }
            Either::Right((Some(Ok(WebsocketEvent::Message(m))), _)) => {
                device.send_with_bytes(m.bytes().unwrap_or_default())?;
            }
            _ => break,
        }
    }
    let _ = upstream_ws.close(Some(1000), Some("bye"));
    Ok(())
}

/// The device's symmetric keys from the upstream's registry; `None` if it has no such device
/// (or no symmetric keys).
async fn device_keys(up: &UpstreamHub, device_id: &str) -> Result<Option<Vec<String>>, HubError> {
    let headers = Headers::new();
    headers.set("authorization", &up.authorization(clock::now().as_secs())?).map_err(internal)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let id = percent_encoding::utf8_percent_encode(device_id, percent_encoding::NON_ALPHANUMERIC);
    let url = up.url(&format!("/devices/{id}?api-version=2021-04-12"));
    let request = Request::new_with_init(&url, &init).map_err(internal)?;
    let mut resp = Fetch::Request(request).send().await.map_err(|_| unreachable(up, "did not answer"))?;
    if resp.status_code() == 404 {
        return Ok(None);
    }
    if resp.status_code() != 200 {
        return Err(unreachable(up, &format!("answered {}", resp.status_code())));
    }
    let identity: serde_json::Value = crate::rpc::read(resp.text().await).await.map_err(internal)?;
    if identity["status"] == "disabled" {
        return Ok(None);
    }
    let key = |k: &str| identity["authentication"]["symmetricKey"][k].as_str().map(str::to_owned);
    let keys: Vec<String> = [key("primaryKey"), key("secondaryKey")].into_iter().flatten().collect();
    Ok((!keys.is_empty()).then_some(keys))
}

fn internal(e: worker::Error) -> HubError {
    HubError::new(ErrorCode::ServerError, e.to_string())
}

/// For `GET /api/session`: the upstream's host, when in upstream mode (never the key).
pub fn session_fields(env: &Env) -> serde_json::Value {
    match configured(env) {
        Some(Ok(up)) => serde_json::json!({
            "upstream": up.host,
            "unavailable": upstream::OWN_FEATURES.iter().map(|(f, why)| serde_json::json!({ "feature": f, "reason": why })).collect::<Vec<_>>(),
        }),
        _ => serde_json::json!({}),
    }
}
