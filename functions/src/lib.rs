//! twinhub's Cloudflare Worker: IoT Hub's service REST API, the dashboard's static assets, and
//! the device endpoint (MQTT over WebSocket, and over TLS on 8883 when self-hosted), all in one
//! Worker.
//!
//! This crate is an adapter. It parses HTTP, checks tokens, finds the right Durable Object and
//! turns results into responses; every rule it applies lives in `twinhub-core`.
//!
//! - [`routes`]: the REST surface, one module per resource.
//! - [`objects`]: the Durable Objects (one per device, plus the fleet index shards).
//! - [`rpc`]: the messages the Worker sends its Durable Objects.
//! - [`http`]: responses, including IoT Hub's error envelope.

mod amqp;
mod auth;
mod clock;
mod config;
mod device_tcp;
mod headroom;
mod http;
mod limits;
mod objects;
mod routes;
mod rpc;
mod upstream;

use worker::{event, Context, Env, Request, Response, Result, Socket};

#[event(start)]
fn start() {
    // A panic would otherwise die silently and take the isolate with it; at least log it.
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    routes::handle(req, &env).await
}

/// Raw TCP (self-hosted only: workerd's `tcp` sockets): MQTT over TLS on 8883, AMQP on 5672
/// and over TLS on 5671. Every socket hands its connections here, named by the listener it
/// came in on (`ctx.props`); the first bytes tell the protocols apart (AMQP opens with `AMQP`,
/// MQTT with a CONNECT packet, 0x10), and each listener takes only its own
/// (`core::listener`: no plaintext MQTT on 5672).
#[event(connect)]
async fn connect(mut socket: Socket, env: Env, ctx: Context) -> Result<()> {
    use futures_util::future::{select, Either};
    use tokio::io::AsyncReadExt;
    use twinhub_core::listener::{self, ListenerProps, Protocol};
    // Near the open-file limit a new connection is closed at once (a device retries later),
    // before it costs the gateway socket it would open.
    if let Some((refused, _)) = headroom::shed(&env).await {
        worker::console_warn!("a TCP connection refused: {}", refused.message);
        return socket.close().await;
    }
    let mut first = vec![0u8; 1024];
    // A connection that says nothing is closed after the MQTT connect timeout, as a device
    // that never sends CONNECT is: nothing is held for a silent peer.
    let timeout = std::time::Duration::from_millis(config::Config::of(&env).connect_timeout_ms);
    let read = match select(Box::pin(socket.read(&mut first)), Box::pin(worker::Delay::from(timeout))).await {
        Either::Left((read, _)) => read,
        Either::Right(_) => return socket.close().await,
    };
    let n = match read {
        Ok(0) | Err(_) => return Ok(()),
        Ok(n) => n,
    };
    first.truncate(n);
    // Props that do not read (a listener name this build does not know) serve nothing: only
    // a configuration that names no listener at all is served whatever it speaks.
    let Ok(ListenerProps { listener: on }) = ctx.props::<ListenerProps>() else {
        worker::console_warn!("a TCP connection on a listener this build does not know: closed");
        return socket.close().await;
    };
    let protocol = Protocol::of(&first);
    if !listener::serves(on, protocol) {
        // Not this port's protocol: closed unread.
        if protocol == Protocol::Mqtt {
            worker::console_warn!("{on:?} listener: an MQTT connection refused (no plaintext MQTT; use 8883)");
        } else {
            worker::console_warn!("{on:?} listener: an AMQP connection refused (AMQP is on 5671 and 5672)");
        }
        return socket.close().await;
    }
    match protocol {
        Protocol::Amqp => amqp::serve(socket, &env, first).await,
        Protocol::Mqtt => device_tcp::serve(socket, &env, first).await,
    }
}
