//! `/$iothub/websocket`: the MQTT-over-WebSocket device endpoint (spec §5.1). The query string
//! is ignored (some SDKs add `?iothub-no-client-cert=true`).

use crate::auth::own_host;
use crate::clock;
use crate::http::ApiResult;
use crate::objects::gateway::{GATEWAY_HEADER, HOST_HEADER, TRANSPORT_HEADER, TRANSPORT_WEBSOCKET};
use crate::objects::{gateway_shards, GATEWAY_BINDING};
use twinhub_core::{ErrorCode, HubError};
use worker::{Env, Method, Request, RequestInit};

/// Hands the upgrade to a gateway shard, which accepts the socket and runs the session. The
/// device id is unknown until CONNECT, so the shard is picked at random; the device object
/// learns which shard holds its session when CONNECT is verified.
pub async fn connect(req: Request, env: &Env) -> ApiResult {
    let upgrade = req.headers().get("upgrade")?.unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(HubError::new(ErrorCode::ArgumentInvalid, "/$iothub/websocket expects a WebSocket upgrade").into());
    }
    let shards = gateway_shards(env);
    let shard = u32::from_le_bytes(clock::random::<4>()?) % shards;
    let name = format!("gw-{shard}");
    let headers = req.headers().clone();
    headers.set(GATEWAY_HEADER, &name)?;
    headers.set(HOST_HEADER, &own_host(&req, env))?;
    // Set, not copied: a client's own header must not pass for the TCP path's.
    headers.set(TRANSPORT_HEADER, TRANSPORT_WEBSOCKET)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let forwarded = Request::new_with_init(req.url()?.as_ref(), &init)?;
    let stub = env.durable_object(GATEWAY_BINDING)?.get_by_name(&name)?;
    Ok(stub.fetch_with_request(forwarded).await?)
}
