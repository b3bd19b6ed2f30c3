//! The isolate's view of its open-file headroom (`core::headroom` decides; this measures).
//!
//! Self-hosted, `scripts/serve.sh` tells the Worker workerd's open-file limit
//! ([`crate::config::FD_LIMIT_VAR`]) and binds a read-only disk service on `/proc/self/fd`
//! ([`crate::config::FDS_BINDING`]), whose listing is workerd's own descriptors. One isolate
//! serves the Worker and every Durable Object under workerd, so one measurement, at most every
//! [`SAMPLE_MS`], serves them all, and every wake granted in the last [`CLAIM_MS`] is counted
//! on top of it: an object granted just before a measurement may not have opened its files by
//! then (counting it twice for a moment errs on the safe side). On Cloudflare there is neither (no descriptors to run out of): nothing is
//! measured, bulk work keeps its configured pace and nothing is shed for files.

use crate::clock;
use crate::config::{Config, FDS_BINDING};
use std::cell::RefCell;
use std::collections::VecDeque;
use twinhub_core::headroom::{self, Headroom};
use twinhub_core::{ErrorCode, HubError};
use worker::Env;

/// The oldest measurement used; listing 20,000 descriptors takes a few milliseconds.
const SAMPLE_MS: u64 = 250;
/// How long bulk work waits when it may wake nothing: a few looks per eviction.
pub const WAIT_MS: u64 = 500;
/// How long a granted wake is counted beside the measurement: time for the object to start
/// and open its files, so that a measurement taken meanwhile shows it.
const CLAIM_MS: u64 = 3_000;

struct Sample {
    at: u64,
    used: u64,
}

thread_local! {
    static SAMPLE: RefCell<Option<Sample>> = const { RefCell::new(None) };
    /// Wakes granted lately: when, and how many objects.
    static CLAIMS: RefCell<VecDeque<(u64, u64)>> = const { RefCell::new(VecDeque::new()) };
}

/// Objects granted in the last [`CLAIM_MS`] at `now`.
fn recent_claims(now: u64) -> u64 {
    CLAIMS.with(|c| {
        let mut c = c.borrow_mut();
        while c.front().is_some_and(|(at, _)| now.saturating_sub(*at) >= CLAIM_MS) {
            c.pop_front();
        }
        c.iter().map(|(_, n)| n).sum()
    })
}

/// The headroom for bulk work now, the wakes granted lately counted on top of the
/// measurement; `None` where nothing is measured (Cloudflare, or no limit given).
pub async fn now(env: &Env) -> Option<Headroom> {
    let measured = measured(env).await?;
    Some(measured.with_claimed(recent_claims(clock::now().0)))
}

/// The files in use as last measured (at most [`SAMPLE_MS`] ago), without the claims: what
/// shedding looks at, since a claim counted beside a measurement that already shows its object
/// counts the object twice.
async fn measured(env: &Env) -> Option<Headroom> {
    let limit = Config::of(env).fd_limit?;
    let at = clock::now().0;
    let fresh = SAMPLE.with(|s| s.borrow().as_ref().filter(|s| at.saturating_sub(s.at) < SAMPLE_MS).map(|s| s.used));
    let used = match fresh {
        Some(used) => used,
        None => {
            // A listing that fails is read as no headroom: most likely it failed for want of
            // a file.
            let used = measure(env).await.unwrap_or(limit);
            SAMPLE.with(|s| *s.borrow_mut() = Some(Sample { at, used }));
            used
        }
    };
    Some(Headroom { limit, used })
}

async fn measure(env: &Env) -> Option<u64> {
    let fds = env.service(FDS_BINDING).ok()?;
    let mut answer = fds.fetch("http://fds/", None).await.ok()?;
    if answer.status_code() != 200 {
        return None;
    }
    headroom::count_listing(&answer.text().await.ok()?)
}

/// Of `wanted` device objects bulk work would wake now, how many it may: all of them where
/// nothing is measured, else what the headroom allows (0: wait [`WAIT_MS`] and ask again).
pub async fn claim_wakes(env: &Env, wanted: u64) -> u64 {
    let Some(room) = now(env).await else { return wanted };
    let granted = wanted.min(room.wakes());
    if granted > 0 {
        CLAIMS.with(|c| c.borrow_mut().push_back((clock::now().0, granted)));
    }
    granted
}

/// Claims wakes for at least one of `wanted` objects, waiting for the headroom up to
/// `deadline` (Unix ms); `None` past it. A claim is spent at once by its caller: claims held
/// while waiting for more would be forgotten by the next measurement.
pub async fn wakes_by(env: &Env, wanted: u64, deadline: u64) -> Option<u64> {
    loop {
        let granted = claim_wakes(env, wanted).await;
        if granted > 0 || wanted == 0 {
            return Some(granted);
        }
        if clock::now().0 >= deadline {
            return None;
        }
        worker::Delay::from(std::time::Duration::from_millis(WAIT_MS)).await;
    }
}

/// The refusal of a new connection or request while the hub sheds load for want of files:
/// 503 `ServiceUnavailable` (REST adds `Retry-After`; MQTT answers CONNACK 3, AMQP
/// `amqp:resource-limit-exceeded`). `None` while there is room, or nothing is measured.
pub async fn shed(env: &Env) -> Option<(HubError, u64)> {
    let room = measured(env).await?;
    room.sheds().then(|| {
        let why = format!(
            "the hub is near its open-file limit ({} of {} in use); retry in {} s",
            room.used,
            room.limit,
            room.retry_after_secs()
        );
        (HubError::new(ErrorCode::ServiceUnavailable, why), room.retry_after_secs())
    })
}
