//! `/$iothub/websocket`: the MQTT-over-WebSocket device endpoint (spec §5.1), and AMQP over
//! WebSocket for the service SDKs when the subprotocol is `AMQPWSB10` (IoT Hub serves both on
//! this path and tells them apart by it). The query string is ignored (some SDKs add
//! `?iothub-no-client-cert=true`).

use crate::auth::own_host;
use crate::http::ApiResult;
use crate::objects::gateway::{connect_to_shard, TRANSPORT_WEBSOCKET};
use twinhub_core::{ErrorCode, HubError};
use worker::{Env, Request};

/// Hands the upgrade to a gateway shard, which accepts the socket and runs the session.
pub async fn connect(req: Request, env: &Env) -> ApiResult {
    let upgrade = req.headers().get("upgrade")?.unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(HubError::new(ErrorCode::ArgumentInvalid, "/$iothub/websocket expects a WebSocket upgrade").into());
    }
    let protocols = req.headers().get("sec-websocket-protocol")?.unwrap_or_default();
    if protocols.split(',').any(|p| p.trim() == "AMQPWSB10") {
        return crate::amqp::accept_websocket(req, env).await;
    }
    let host = own_host(&req, env);
    let source = crate::auth::client_address(&req);
    Ok(connect_to_shard(env, req.url()?.as_ref(), req.headers().clone(), &host, TRANSPORT_WEBSOCKET, &source).await?)
}
