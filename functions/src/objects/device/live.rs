//! Operators' live views of one device (`/api/devices/{id}/live`): hibernatable WebSockets the
//! device object keeps, told of every commit and every stored telemetry message.
//!
//! A view lives as long as the token that opened it: its expiry is the socket's attachment, and
//! the object's alarm closes views whose token has expired.

use crate::clock;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use worker::{State, WebSocket};

/// Live views' WebSocket tag.
pub const LIVE_TAG: &str = "live";
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
#[derive(Serialize, Deserialize)]
pub struct LiveView {
    /// When its token expires, Unix ms.
    pub expires: u64,
}

/// What a live view is sent.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum LiveMessage<'a> {
    /// The twin as `GET /twins/{id}` renders it, after a commit.
    Twin { twin: &'a RawValue },
    /// The device was deleted.
    Deleted,
    /// A stored telemetry message.
    Telemetry { message: serde_json::Value },
}

/// The sockets of the open live views.
pub fn views(state: &State) -> Vec<WebSocket> {
    state.get_websockets_with_tag(LIVE_TAG)
}

/// Sends `message` to every live view. Best effort: a closed socket is simply skipped.
pub fn broadcast(views: &[WebSocket], message: &LiveMessage<'_>) {
    let Ok(text) = serde_json::to_string(message) else { return };
    for ws in views {
        let _ = ws.send_with_str(&text);
    }
}

/// Closes every live view with `reason`.
pub fn close_all(state: &State, reason: &str) {
    for ws in views(state) {
        let _ = ws.close(Some(1000), Some(reason));
    }
}

/// Closes live views whose token has expired (the dashboard opens a new one with a fresh
/// token).
pub fn close_expired(state: &State) {
    let now = clock::now().0;
    for ws in views(state) {
        if expiry(&ws) <= now {
            let _ = ws.close(Some(LIVE_EXPIRED_CLOSE), Some("the live view's token expired"));
        }
    }
}

/// Live views with `tag` whose token has not expired (an expired one is closing, and may
/// linger until its client answers the close).
pub fn open_count(state: &State, tag: &str) -> usize {
    let now = clock::now().0;
    state.get_websockets_with_tag(tag).iter().filter(|ws| expiry(ws) > now).count()
}

/// The earliest expiry of a view that has not expired yet, Unix ms. Views already expired are
/// closing (a dead client may never answer the close): they must not keep the alarm firing.
pub fn earliest_expiry(state: &State) -> Option<u64> {
    let now = clock::now().0;
    views(state).iter().map(expiry).filter(|e| *e > now).min()
}

fn expiry(ws: &WebSocket) -> u64 {
    ws.deserialize_attachment::<LiveView>().ok().flatten().map_or(0, |v| v.expires)
}
