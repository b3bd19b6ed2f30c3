//! IoT Hub's tiers (`TWINHUB_TIER`, [`twinhub_core::tier`]) as the Worker enforces them on the
//! REST API, and the settings the objects read for theirs.
//!
//! The REST throttles live in the isolate: under `workerd` (self-hosted, and `wrangler dev`)
//! there is one isolate, so they are the hub's; on Cloudflare each isolate holds its own, so a
//! deployed hub admits up to that many times the tier's rates (a local hub is what back-off
//! code is tested against; a deployed one fronting real devices would use `unlimited`).

use std::cell::RefCell;
use twinhub_core::tier::{Operation, Throttles, Tier, TWIN_SHARE_REST};
use twinhub_core::UnixMillis;
use worker::{Env, Request, Response};

thread_local! {
    /// The isolate's REST throttles, made anew if the tier setting changes.
    static REST: RefCell<Option<Throttles>> = const { RefCell::new(None) };
}

/// The share of each hub-wide rate the REST API holds: all of it, but for twin reads and
/// updates, which devices also make over MQTT (the gateway shards hold the rest).
pub fn rest_share(op: Operation) -> f64 {
    match op {
        Operation::TwinRead | Operation::TwinUpdate => TWIN_SHARE_REST,
        _ => 1.0,
    }
}

/// The 429 for a REST request over the tier's rate, if it is. Called once the caller's token
/// has been checked, so it counts authorized requests only (a stranger's junk must not use up
/// the hub's allowance).
pub fn throttle_rest(req: &Request, env: &Env, op: Operation) -> Option<worker::Result<Response>> {
    let tier = crate::config::Config::of(env).tier;
    tier.rate(op)?;
    // Direct methods are metered in 4 KB of body, as Azure meters them.
    let cost = match op {
        Operation::DirectMethod => {
            let length: usize =
                req.headers().get("content-length").ok().flatten().and_then(|l| l.parse().ok()).unwrap_or(0);
            u32::try_from(length.div_ceil(twinhub_core::tier::QUOTA_BLOCK_BYTES).max(1)).unwrap_or(u32::MAX)
        }
        _ => 1,
    };
    admit_rest(tier, op, cost, crate::clock::now())
}

/// Admits `cost` of one REST `op` under `tier`, or the 429 to send (`Retry-After` in seconds,
/// as IoT Hub's SDKs read it).
fn admit_rest(tier: Tier, op: Operation, cost: u32, now: UnixMillis) -> Option<worker::Result<Response>> {
    let refused = REST.with(|cell| {
        let mut slot = cell.borrow_mut();
        let throttles = match slot.as_mut() {
            Some(t) if t.tier() == tier => t,
            _ => slot.insert(Throttles::with_shares(tier, rest_share, now)),
        };
        throttles.admit_n(op, cost, now).err()
    })?;
    let e = twinhub_core::HubError::new(twinhub_core::ErrorCode::ThrottlingException, refused.message(tier));
    Some(crate::http::error(&e).and_then(|r| {
        let headers = r.headers().clone();
        headers.set("retry-after", &refused.retry_after_ms.div_ceil(1000).to_string())?;
        Ok(r.with_headers(headers))
    }))
}
