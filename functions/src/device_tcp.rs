//! MQTT over TLS on 8883 (self-hosted under workerd only: Cloudflare takes no inbound TCP).
//!
//! workerd terminates TLS on its `tcp` socket and hands each connection to the Worker's
//! `connect` handler. The session itself does not live here: this handler opens an in-process
//! WebSocket to a gateway shard, exactly as `/$iothub/websocket` does, and copies bytes both
//! ways. So a device on 8883 runs the same core `Session` in the same gateway, with the same
//! bounds, throttles, pushes and lifecycle as a WebSocket device; the only difference the
//! gateway sees is the transport header, which tells it to take the hub's host name from the
//! CONNECT user name (raw TCP has no Host header).
//!
//! In upstream mode the other end is the upstream pipe (`upstream::device_socket`) instead of a
//! gateway shard: the device's token is checked here and its session runs at the upstream.
//!
//! What this handler holds per connection is the TCP socket, one end of the in-process
//! WebSocket and a read buffer; the gateway's end hibernates like any device socket. Both
//! directions are bounded by the other side: TCP reads wait while a message to the gateway is
//! handed over, and the gateway closes a device that sends faster than it is served.

use crate::objects::gateway::{connect_to_shard, TRANSPORT_TCP};
use crate::upstream;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use worker::{Delay, Env, Headers, Socket, WebSocket, WebsocketEvent};

/// How long a device's departure waits for the gateway to acknowledge the close.
const CLOSE_WAIT_MS: u64 = 2_000;
/// Bytes read from the device at once: at first [`READ_MIN`], since a session's pending read
/// holds its buffer for as long as the device is silent (most of a session's life, and 10,000
/// sessions held 16 KiB each before); doubled when a read fills it, up to [`READ_MAX`] (a TLS
/// record is at most 16 KiB of plaintext), and halved again when reads stay small.
const READ_MIN: usize = 1024;
const READ_MAX: usize = 16 * 1024;

/// Serves one device connection until either side closes. `first` holds the bytes already
/// read (to tell MQTT from AMQP): they go to the gateway first.
pub async fn serve(mut socket: Socket, env: &Env, first: Vec<u8>) -> worker::Result<()> {
    // The far end: a gateway shard, or in upstream mode the same pipe a WebSocket device gets
    // to the upstream's device endpoint (IoT Hub takes MQTT over WebSocket too, so one upstream
    // transport serves both).
    let far = match upstream::configured(env) {
        Some(Ok(up)) => match upstream::admit_pipe() {
            Ok(place) => upstream::device_socket(env, up, None, place)?,
            Err(e) => {
                worker::console_warn!("MQTT over TCP: {}", e.message);
                return socket.close().await;
            }
        },
        Some(Err(e)) => {
            worker::console_error!("upstream mode misconfigured: {}", e.message);
            return socket.close().await;
        }
        None => match open_gateway_socket(env).await {
            Ok(ws) => ws,
            Err(e) => {
                // A full shard answers 503 instead of upgrading: the device retries later.
                worker::console_warn!("MQTT over TCP: no gateway socket: {e}");
                return socket.close().await;
            }
        },
    };
    far.accept()?;
    AsRef::<web_sys::WebSocket>::as_ref(&far).set_binary_type(web_sys::BinaryType::Arraybuffer);
    far.send_with_bytes(&first)?;
    // The handler's return closes the socket.
    pipe(&mut socket, &far).await
}

/// A WebSocket to a random gateway shard, marked as a TCP device's.
pub(crate) async fn open_gateway_socket(env: &Env) -> worker::Result<WebSocket> {
    let headers = Headers::new();
    headers.set("upgrade", "websocket")?;
    // The URL only addresses the object; the gateway reads nothing from it.
    let response = connect_to_shard(env, "https://gateway/$iothub/websocket", headers, "", TRANSPORT_TCP, "").await?;
    let status = response.status_code();
    response.websocket().ok_or_else(|| worker::Error::RustError(format!("the gateway answered {status}")))
}

enum Next {
    FromDevice(std::io::Result<usize>),
    FromGateway(Option<worker::Result<WebsocketEvent>>),
}

async fn pipe(socket: &mut Socket, gateway: &WebSocket) -> worker::Result<()> {
    let mut from_gateway = gateway.events()?;
    let mut buf = vec![0u8; READ_MIN];
    loop {
        // The read is cancel-safe: a pending read stays inside the socket and is picked up by
        // the next one, so dropping it here to write loses nothing.
        let next = match select(Box::pin(socket.read(&mut buf)), from_gateway.next()).await {
            Either::Left((read, _)) => Next::FromDevice(read),
            Either::Right((event, _)) => Next::FromGateway(event),
        };
        match next {
            Next::FromDevice(Ok(0)) | Next::FromDevice(Err(_)) => {
                // The device left. Close the gateway's socket and wait for its close to come
                // back: returning with the close handshake open makes workerd log
                // "PromiseFulfiller was destroyed without fulfilling the promise".
                let _ = gateway.close(Some(1000), Some("device closed"));
                let timer = Box::pin(Delay::from(Duration::from_millis(CLOSE_WAIT_MS)));
                let mut closed = Box::pin(async {
                    while let Some(Ok(event)) = from_gateway.next().await {
                        if matches!(event, WebsocketEvent::Close(_)) {
                            break;
                        }
                    }
                });
                let _ = select(closed.as_mut(), timer).await;
                return Ok(());
            }
            Next::FromDevice(Ok(n)) => {
                gateway.send_with_bytes(&buf[..n])?;
                fit_read_buffer(&mut buf, n);
            }
            Next::FromGateway(Some(Ok(WebsocketEvent::Message(m)))) => {
                let bytes = m.bytes().unwrap_or_default();
                if socket.write_all(&bytes).await.is_err() || socket.flush().await.is_err() {
                    return Ok(());
                }
            }
            // The gateway closed the session (refused CONNECT, timeout, bad packet, replaced).
            Next::FromGateway(_) => return Ok(()),
        }
    }
}

/// Grows the read buffer after a read that filled it, shrinks it after one that used under a
/// quarter of it (see [`READ_MIN`]).
fn fit_read_buffer(buf: &mut Vec<u8>, read: usize) {
    let len = buf.len();
    if read == len && len < READ_MAX {
        buf.resize(len * 2, 0);
    } else if read < len / 4 && len > READ_MIN {
        buf.truncate(len / 2);
        buf.shrink_to_fit();
    }
}
