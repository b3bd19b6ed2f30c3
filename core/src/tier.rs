//! IoT Hub's tiers as a setting (`TWINHUB_TIER`): the per-hub throttles and daily message quota
//! Azure publishes for S1, S2 and S3 ("IoT Hub quotas and throttling"), so a team can test its
//! back-off code against the limits it will meet in Azure. `unlimited`, the default, throttles
//! nothing.
//!
//! Sans-I/O: [`Throttles`] is a set of token buckets that the adapters hold and feed the clock.
//! Each holder enforces a share of the hub's limit (a gateway shard enforces `1 / shards` of the
//! device-side ones), so the hub as a whole admits what Azure's would.

use crate::throttle::TokenBucket;
use crate::UnixMillis;
use std::fmt;

/// An IoT Hub edition. Basic tiers have the same throttles as the Standard tier of the same
/// number (the quotas document), so `B1`, `B2`, `B3` are read as S1, S2, S3. Free has S1's
/// throttles with its own small quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edition {
    /// No throttles, no quota (twinhub's default).
    Unlimited,
    /// The free tier: one unit, S1's throttles, 8,000 messages a day metered in 0.5 KB.
    F1,
    S1,
    S2,
    S3,
}

/// The operations IoT Hub throttles, each with its own per-hub rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Identity registry create, read, update, delete (and each device of a bulk request).
    RegistryOp,
    /// New device connections (the rate, not the total).
    NewConnection,
    /// Device-to-cloud sends.
    DeviceToCloud,
    /// Cloud-to-device sends.
    CloudToDevice,
    /// Direct methods (Azure meters 4 KB each).
    DirectMethod,
    /// Queries (`POST /devices/query`).
    Query,
    /// Twin reads, by the service or a device.
    TwinRead,
    /// Twin updates, by the service (tags, desired) or a device (reported).
    TwinUpdate,
    /// Jobs operations: create, get, cancel, list.
    JobsOp,
    /// A job's per-device operations (its twin updates and method calls).
    JobDeviceOp,
}

impl Operation {
    /// Every operation, for tables and tests.
    pub const ALL: [Operation; 10] = [
        Self::RegistryOp,
        Self::NewConnection,
        Self::DeviceToCloud,
        Self::CloudToDevice,
        Self::DirectMethod,
        Self::Query,
        Self::TwinRead,
        Self::TwinUpdate,
        Self::JobsOp,
        Self::JobDeviceOp,
    ];

    /// As Azure's quota table names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::RegistryOp => "identity registry operations",
            Self::NewConnection => "new device connections",
            Self::DeviceToCloud => "device-to-cloud sends",
            Self::CloudToDevice => "cloud-to-device sends",
            Self::DirectMethod => "direct methods",
            Self::Query => "queries",
            Self::TwinRead => "twin reads",
            Self::TwinUpdate => "twin updates",
            Self::JobsOp => "jobs operations",
            Self::JobDeviceOp => "jobs device operations",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// A rate: so many per second, with a burst of so many at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    fn per_second(n: f64) -> Self {
        Self { per_second: n, burst: n.max(1.0) }
    }

    /// A per-minute limit: the minute's allowance may come at once.
    fn per_minute(n: f64) -> Self {
        Self { per_second: n / 60.0, burst: n.max(1.0) }
    }
}

/// A hub's tier: an edition and its number of units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    pub edition: Edition,
    pub units: u32,
}

impl Default for Tier {
    fn default() -> Self {
        Self { edition: Edition::Unlimited, units: 1 }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.edition {
            Edition::Unlimited => f.write_str("unlimited"),
            e => write!(f, "{e:?}:{}", self.units),
        }
    }
}

/// Units an S1 or S2 hub may have; S3 allows 10.
pub const MAX_UNITS: u32 = 200;
/// Units an S3 hub may have.
pub const MAX_S3_UNITS: u32 = 10;
/// Azure meters device-to-cloud messages in 4 KB blocks against the daily quota (direct
/// methods too, against their rate).
pub const QUOTA_BLOCK_BYTES: usize = 4 * 1024;
/// The free tier meters its daily quota in 0.5 KB blocks.
pub const FREE_QUOTA_BLOCK_BYTES: usize = 512;

/// Twin reads and updates are served by the REST API and over MQTT: each holds this share of
/// the hub's rate (Azure counts both against one).
pub const TWIN_SHARE_REST: f64 = 0.5;

impl Tier {
    /// `unlimited` (or empty), or an edition with an optional unit count: `S1`, `S2:4`, `s3:2`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("unlimited") {
            return Ok(Self::default());
        }
        let (name, units) = match text.split_once(':') {
            Some((name, units)) => {
                let units: u32 = units.trim().parse().map_err(|_| format!("'{units}' is not a unit count"))?;
                (name.trim(), units)
            }
            None => (text, 1),
        };
        let edition = match name.to_ascii_uppercase().as_str() {
            "F1" => Edition::F1,
            "B1" | "S1" => Edition::S1,
            "B2" | "S2" => Edition::S2,
            "B3" | "S3" => Edition::S3,
            _ => {
                return Err(format!("unknown tier '{name}': use unlimited, S1, S2 or S3, with ':units' if more than 1"))
            }
        };
        let max = match edition {
            Edition::S3 => MAX_S3_UNITS,
            Edition::F1 => 1,
            _ => MAX_UNITS,
        };
        if !(1..=max).contains(&units) {
            return Err(format!("{name} takes 1 to {max} units, not {units}"));
        }
        Ok(Self { edition, units })
    }

    /// The hub-wide rate of `op`, or `None` when the tier does not throttle it. From Azure's
    /// quotas and throttling table: "max(a, b/unit)" is the higher of a and b times the units.
    pub fn rate(&self, op: Operation) -> Option<Rate> {
        use Edition::*;
        use Operation::*;
        let u = f64::from(self.units);
        let edition = if self.edition == F1 { S1 } else { self.edition };
        let rate = match (edition, op) {
            // F1 was read as S1 just above.
            (Unlimited | F1, _) => return None,
            (S1 | S2, RegistryOp | CloudToDevice | JobsOp) => Rate::per_minute(100.0 * u),
            (S3, RegistryOp | CloudToDevice | JobsOp) => Rate::per_minute(5_000.0 * u),
            (S1, NewConnection | DeviceToCloud) => Rate::per_second(100f64.max(12.0 * u)),
            (S2, NewConnection | DeviceToCloud) => Rate::per_second(120.0 * u),
            (S3, NewConnection | DeviceToCloud) => Rate::per_second(6_000.0 * u),
            // 160 KB/s, 480 KB/s and 24 MB/s per unit, metered in 4 KB.
            (S1, DirectMethod) => Rate::per_second(40.0 * u),
            (S2, DirectMethod) => Rate::per_second(120.0 * u),
            (S3, DirectMethod) => Rate::per_second(6_000.0 * u),
            (S1 | S2, Query) => Rate::per_minute(20.0 * u),
            (S3, Query) => Rate::per_minute(1_000.0 * u),
            (S1, TwinRead) => Rate::per_second(100.0),
            (S2, TwinRead) => Rate::per_second(100f64.max(10.0 * u)),
            (S3, TwinRead) => Rate::per_second(500.0 * u),
            (S1, TwinUpdate) => Rate::per_second(50.0),
            (S2, TwinUpdate) => Rate::per_second(50f64.max(5.0 * u)),
            (S3, TwinUpdate) => Rate::per_second(250.0 * u),
            (S1, JobDeviceOp) => Rate::per_second(10.0),
            (S2, JobDeviceOp) => Rate::per_second(10f64.max(u)),
            (S3, JobDeviceOp) => Rate::per_second(50.0 * u),
        };
        Some(rate)
    }

    /// Device-to-cloud messages (of 4 KB each) a day, reset at 00:00 UTC; `None` for no quota.
    pub fn daily_messages(&self) -> Option<u64> {
        let per_unit = match self.edition {
            Edition::Unlimited => return None,
            Edition::F1 => 8_000,
            Edition::S1 => 400_000,
            Edition::S2 => 6_000_000,
            Edition::S3 => 300_000_000,
        };
        Some(per_unit * u64::from(self.units))
    }
}

/// Refused: over a rate (`429 ThrottlingException`, 429001, or MQTT `res/429`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    pub operation: Operation,
    /// When a retry may succeed.
    pub retry_after_ms: u64,
}

impl Throttled {
    /// The message for the client.
    pub fn message(&self, tier: Tier) -> String {
        format!(
            "the hub's {tier} tier allows no more {} right now; retry after {} ms",
            self.operation.name(),
            self.retry_after_ms
        )
    }
}

/// The throttles one adapter enforces: `share` of each hub-wide rate and of the daily quota.
#[derive(Clone, Debug)]
pub struct Throttles {
    tier: Tier,
    share: f64,
    buckets: Vec<Option<TokenBucket>>,
    /// The UTC day (days since 1970) the message count is for.
    day: u64,
    messages_today: u64,
}

impl Throttles {
    /// The throttles of `tier` at `share` (0 to 1) of the hub, full at `now`.
    pub fn new(tier: Tier, share: f64, now: UnixMillis) -> Self {
        Self::with_shares(tier, |_| share, now)
    }

    /// Like [`Throttles::new`], with a share per operation (twin reads and updates are served
    /// both by the REST API and over MQTT, so each side holds part of them).
    pub fn with_shares(tier: Tier, share_of: impl Fn(Operation) -> f64, now: UnixMillis) -> Self {
        let share = share_of(Operation::DeviceToCloud).clamp(0.0, 1.0);
        let buckets = Operation::ALL
            .iter()
            .map(|op| {
                let s = share_of(*op).clamp(0.0, 1.0);
                tier.rate(*op).map(|r| TokenBucket::new(r.per_second * s, r.burst * s, now))
            })
            .collect();
        Self { tier, share, buckets, day: now.0 / DAY_MS, messages_today: 0 }
    }

    /// The tier enforced.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// One `op` now, or when to retry.
    pub fn admit(&mut self, op: Operation, now: UnixMillis) -> Result<(), Throttled> {
        self.admit_n(op, 1, now)
    }

    /// `cost` units of `op` now (a direct method of 128 KB is 32 of Azure's 4 KB meters), or
    /// when to retry.
    pub fn admit_n(&mut self, op: Operation, cost: u32, now: UnixMillis) -> Result<(), Throttled> {
        let Some(Some(bucket)) = self.buckets.get_mut(op.index()) else { return Ok(()) };
        match bucket.try_reserve(f64::from(cost), now, 0) {
            Some(_) => Ok(()),
            None => Err(Throttled { operation: op, retry_after_ms: bucket.wait_ms(now).max(1) }),
        }
    }

    /// `n` of `op`, shaped: how long to wait before doing them, if that is at most
    /// `max_wait_ms` (IoT Hub queues a burst before it refuses); else when to retry, with
    /// nothing taken.
    pub fn shape(&mut self, op: Operation, n: u32, now: UnixMillis, max_wait_ms: u64) -> Result<u64, Throttled> {
        let Some(Some(bucket)) = self.buckets.get_mut(op.index()) else { return Ok(0) };
        bucket
            .try_reserve(f64::from(n), now, max_wait_ms)
            .ok_or_else(|| Throttled { operation: op, retry_after_ms: bucket.wait_ms(now).max(1) })
    }

    /// Gives back one `op` admitted for work that did not happen (a CONNECT then refused).
    pub fn refund(&mut self, op: Operation) {
        if let Some(Some(bucket)) = self.buckets.get_mut(op.index()) {
            bucket.give_back(1.0);
        }
    }

    /// Device-to-cloud messages of these sizes against the daily quota (4 KB blocks):
    /// `false` once the day's quota is used up (`403 IotHubQuotaExceeded`, 403002).
    pub fn count_messages(&mut self, sizes: impl IntoIterator<Item = usize>, now: UnixMillis) -> bool {
        let Some(quota) = self.tier.daily_messages() else { return true };
        let day = now.0 / DAY_MS;
        if day != self.day {
            self.day = day;
            self.messages_today = 0;
        }
        let block = if self.tier.edition == Edition::F1 { FREE_QUOTA_BLOCK_BYTES } else { QUOTA_BLOCK_BYTES };
        let blocks: u64 = sizes.into_iter().map(|s| s.div_ceil(block).max(1) as u64).sum();
        let quota = (quota as f64 * self.share).ceil() as u64;
        if self.messages_today.saturating_add(blocks) > quota {
            return false;
        }
        self.messages_today += blocks;
        true
    }
}

const DAY_MS: u64 = 24 * 3600 * 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_parse_with_units_and_refuse_nonsense() {
        assert_eq!(Tier::parse("").unwrap(), Tier::default());
        assert_eq!(Tier::parse("Unlimited").unwrap().edition, Edition::Unlimited);
        assert_eq!(Tier::parse("s1").unwrap(), Tier { edition: Edition::S1, units: 1 });
        assert_eq!(Tier::parse("S2:4").unwrap(), Tier { edition: Edition::S2, units: 4 });
        assert_eq!(Tier::parse("B3").unwrap().edition, Edition::S3);
        assert_eq!(Tier::parse("F1").unwrap().edition, Edition::F1);
        assert!(Tier::parse("F1:2").is_err(), "the free tier has one unit");
        for bad in ["S4", "S1:0", "S3:11", "S2:many", "premium"] {
            assert!(Tier::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Tier::parse("S2:4").unwrap().to_string(), "S2:4");
    }

    #[test]
    fn rates_follow_azures_table() {
        let s1 = Tier::parse("S1").unwrap();
        assert_eq!(s1.rate(Operation::TwinUpdate).unwrap().per_second, 50.0);
        assert_eq!(s1.rate(Operation::TwinRead).unwrap().per_second, 100.0);
        assert_eq!(s1.rate(Operation::JobDeviceOp).unwrap().per_second, 10.0);
        assert!((s1.rate(Operation::Query).unwrap().per_second - 20.0 / 60.0).abs() < 1e-9);
        assert_eq!(Tier::parse("S1:10").unwrap().rate(Operation::DeviceToCloud).unwrap().per_second, 120.0);
        assert_eq!(Tier::parse("S2:20").unwrap().rate(Operation::TwinRead).unwrap().per_second, 200.0);
        assert_eq!(Tier::parse("S3:2").unwrap().rate(Operation::TwinUpdate).unwrap().per_second, 500.0);
        assert_eq!(Tier::parse("S3:2").unwrap().daily_messages(), Some(600_000_000));
        assert!(Tier::default().rate(Operation::Query).is_none());
        assert!(Operation::ALL.iter().all(|op| s1.rate(*op).is_some()), "S1 throttles every operation");
    }

    #[test]
    fn an_s1_hub_admits_its_burst_then_its_rate() {
        let now = UnixMillis(1_000_000);
        let mut t = Throttles::new(Tier::parse("S1").unwrap(), 1.0, now);
        assert_eq!((0..80).filter(|_| t.admit(Operation::TwinUpdate, now).is_ok()).count(), 50);
        let refused = t.admit(Operation::TwinUpdate, now).unwrap_err();
        assert_eq!(refused.retry_after_ms, 20, "50 a second: one every 20 ms");
        assert!(t.admit(Operation::TwinUpdate, UnixMillis(now.0 + 20)).is_ok());
        // Queries: 20 a minute.
        assert_eq!((0..30).filter(|_| t.admit(Operation::Query, now).is_ok()).count(), 20);
        // Other operations have their own buckets.
        assert!(t.admit(Operation::TwinRead, now).is_ok());
        // Half the hub: half the burst.
        let mut half = Throttles::new(Tier::parse("S1").unwrap(), 0.5, now);
        assert_eq!((0..80).filter(|_| half.admit(Operation::TwinUpdate, now).is_ok()).count(), 25);
        let mut none = Throttles::new(Tier::default(), 1.0, now);
        assert!((0..10_000).all(|_| none.admit(Operation::TwinUpdate, now).is_ok()));
    }

    #[test]
    fn methods_cost_their_4_kb_meters_and_bursts_are_shaped_before_refused() {
        let now = UnixMillis(1_000_000);
        let s1 = Tier::parse("S1").unwrap();
        let mut t = Throttles::new(s1, 1.0, now);
        // 40 meters a second: one 128 KB call is 32 of them.
        assert!(t.admit_n(Operation::DirectMethod, 32, now).is_ok());
        assert!(t.admit_n(Operation::DirectMethod, 32, now).is_err());
        assert!(t.admit_n(Operation::DirectMethod, 8, now).is_ok());
        // Device-to-cloud at 100/s: 150 wait half a second; 400 more would wait 4 s: refused.
        assert_eq!(t.shape(Operation::DeviceToCloud, 150, now, 2_000), Ok(500));
        assert!(t.shape(Operation::DeviceToCloud, 400, now, 2_000).is_err());
        // A refunded CONNECT is available again.
        let mut c = Throttles::new(s1, 0.01, now);
        assert!(c.admit(Operation::NewConnection, now).is_ok());
        assert!(c.admit(Operation::NewConnection, now).is_err());
        c.refund(Operation::NewConnection);
        assert!(c.admit(Operation::NewConnection, now).is_ok());
        // F1: S1's rates, 8,000 messages of 0.5 KB a day.
        let mut f = Throttles::new(Tier::parse("F1").unwrap(), 1.0, now);
        assert_eq!(Tier::parse("F1").unwrap().rate(Operation::TwinUpdate), s1.rate(Operation::TwinUpdate));
        assert!(f.count_messages(std::iter::repeat_n(1024, 4_000), now));
        assert!(!f.count_messages([1], now));
    }

    #[test]
    fn the_daily_quota_counts_4_kb_blocks_and_resets_at_midnight_utc() {
        let midnight = UnixMillis(20_000 * DAY_MS);
        let mut t = Throttles::new(Tier::parse("S1").unwrap(), 0.5, midnight);
        // Half of 400,000 blocks: a 10 KB message is 3 of them.
        assert!(t.count_messages(std::iter::repeat_n(10 * 1024, 66_666), midnight));
        assert!(t.count_messages([100, 100], midnight));
        assert!(!t.count_messages([100], midnight), "the day's 200,000 are used");
        assert!(t.count_messages([100], UnixMillis(midnight.0 + DAY_MS)), "a new day");
        assert!(
            Throttles::new(Tier::default(), 1.0, midnight).count_messages(std::iter::repeat_n(1 << 20, 1000), midnight)
        );
    }
}
