//! Rate limits as token buckets: how many of a thing may happen per second, with a burst.
//!
//! Sans-I/O like the rest of core: the caller passes the time. Used by the gateway shards to
//! bound CONNECT attempts, and the building block for IoT Hub's per-tier throttles.

use crate::UnixMillis;
use serde::{Deserialize, Serialize};

/// A bucket of `burst` tokens refilled at `per_second`; each allowed event takes one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    updated: UnixMillis,
}

impl TokenBucket {
    /// A full bucket at `now`. `burst` is at least 1, so a positive rate always lets one
    /// event through.
    pub fn new(per_second: f64, burst: f64, now: UnixMillis) -> Self {
        let burst = burst.max(1.0);
        Self { per_second: per_second.max(0.0), burst, tokens: burst, updated: now }
    }

    /// Takes one token if there is one: whether the event may happen now.
    pub fn try_take(&mut self, now: UnixMillis) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is free, in milliseconds (0 if one is free now): what a 429's
    /// `Retry-After` says.
    pub fn wait_ms(&mut self, now: UnixMillis) -> u64 {
        self.refill(now);
        if self.tokens >= 1.0 || self.per_second <= 0.0 {
            return 0;
        }
        ((1.0 - self.tokens) / self.per_second * 1000.0).ceil() as u64
    }

    /// Takes `n` tokens whether or not they are there (the bucket may go into debt): how long
    /// to wait before the work they stand for, in milliseconds. Traffic shaping, where
    /// [`Self::try_take`] is refusal.
    pub fn reserve(&mut self, n: f64, now: UnixMillis) -> u64 {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 || self.per_second <= 0.0 {
            return 0;
        }
        (-self.tokens / self.per_second * 1000.0).ceil() as u64
    }

    /// [`Self::reserve`], but only if the wait would be at most `max_wait_ms`: `Some(wait)`, or
    /// `None` with nothing taken. Shaping first, refusal past it, as IoT Hub throttles.
    pub fn try_reserve(&mut self, n: f64, now: UnixMillis, max_wait_ms: u64) -> Option<u64> {
        self.refill(now);
        let after = self.tokens - n;
        let wait =
            if after >= 0.0 || self.per_second <= 0.0 { 0 } else { (-after / self.per_second * 1000.0).ceil() as u64 };
        if wait > max_wait_ms {
            return None;
        }
        self.tokens = after;
        Some(wait)
    }

    /// Returns `n` tokens taken for work that did not happen (at most up to the burst).
    pub fn give_back(&mut self, n: f64) {
        self.tokens = (self.tokens + n).min(self.burst);
    }

    fn refill(&mut self, now: UnixMillis) {
        // A clock that steps back adds nothing (and takes nothing away).
        let elapsed = now.0.saturating_sub(self.updated.0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.updated = UnixMillis(self.updated.0.max(now.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = TokenBucket::new(10.0, 5.0, UnixMillis(0));
        assert_eq!((0..8).filter(|_| b.try_take(UnixMillis(0))).count(), 5);
        assert_eq!(b.wait_ms(UnixMillis(0)), 100);
        // 10 per second: one more every 100 ms, never more than the burst.
        assert!(b.try_take(UnixMillis(100)));
        assert!(!b.try_take(UnixMillis(150)));
        assert_eq!((0..20).filter(|_| b.try_take(UnixMillis(60_000))).count(), 5);
    }

    #[test]
    fn reserving_past_the_burst_shapes_instead_of_refusing() {
        let mut b = TokenBucket::new(100.0, 100.0, UnixMillis(0));
        assert_eq!(b.reserve(100.0, UnixMillis(0)), 0);
        assert_eq!(b.reserve(50.0, UnixMillis(0)), 500, "50 more at 100/s: half a second");
        assert_eq!(b.reserve(1.0, UnixMillis(500)), 10, "the debt is paid at 100/s");
        assert!(!b.try_take(UnixMillis(500)));
    }

    #[test]
    fn try_reserve_shapes_up_to_a_wait_then_refuses_taking_nothing() {
        let mut b = TokenBucket::new(50.0, 50.0, UnixMillis(0));
        assert_eq!(b.try_reserve(50.0, UnixMillis(0), 2_000), Some(0));
        assert_eq!(b.try_reserve(50.0, UnixMillis(0), 2_000), Some(1_000));
        assert_eq!(b.try_reserve(100.0, UnixMillis(0), 2_000), None, "3 s of debt is past the wait");
        assert_eq!(b.try_reserve(50.0, UnixMillis(0), 2_000), Some(2_000), "the refusal took nothing");
        b.give_back(50.0);
        assert_eq!(b.try_reserve(1.0, UnixMillis(0), 2_000), Some(1_020));
    }

    #[test]
    fn a_clock_stepping_back_grants_nothing() {
        let mut b = TokenBucket::new(1.0, 1.0, UnixMillis(10_000));
        assert!(b.try_take(UnixMillis(10_000)));
        assert!(!b.try_take(UnixMillis(5_000)));
        assert!(!b.try_take(UnixMillis(10_500)));
        assert!(b.try_take(UnixMillis(11_000)));
    }
}
