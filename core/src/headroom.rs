//! The hub's headroom in open files, and what may be admitted against it.
//!
//! Self-hosted, every socket holds a descriptor in the one workerd process, and every awake
//! device object holds [`FDS_PER_OBJECT`] more (its SQLite database, WAL and shared memory)
//! until workerd evicts it, a fixed [`EVICTION_MS`] after its last request. workerd exits when
//! a call to `accept()` fails for want of a descriptor, taking every device with it. So work
//! that wakes objects in bulk (jobs, configuration sweeps) asks how many it may wake now
//! ([`Headroom::wakes`]) instead of keeping a fixed pace, and new connections and requests are
//! shed with the protocol's answer ([`Headroom::sheds`]) before the last descriptors go.
//!
//! Sans-I/O: the adapter measures `used` (the runtime lists its own open files) and knows the
//! limit; this module only decides.

/// Descriptors an awake device object holds: measured 3.0 (200 objects woken: +603 open files,
/// all released about 12 s later).
pub const FDS_PER_OBJECT: u64 = 3;
/// How long an object stays awake after its last request: workerd evicts it after 10 s
/// (`server.c++`, not configurable); measured 10 to 12 s.
pub const EVICTION_MS: u64 = 12_000;
/// The fewest descriptors kept back from bulk work, whatever the limit.
pub const MIN_RESERVE: u64 = 192;

/// Open files: the process's limit and how many are in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headroom {
    pub limit: u64,
    pub used: u64,
}

impl Headroom {
    /// Descriptors bulk work leaves alone: a quarter of the limit (at least [`MIN_RESERVE`]),
    /// for what cannot wait: devices connecting, operators' requests, the hub's own files, and
    /// the follow-up calls bulk work itself causes (a job's twin write is projected to the
    /// index, which may apply a configuration to the same object). With an eighth, a sweep
    /// beside a job pushed interactive requests into shedding (re-tag p99 17 s: BENCHMARKS).
    pub fn reserve(&self) -> u64 {
        (self.limit / 4).max(MIN_RESERVE).min(self.limit)
    }

    /// Descriptors free now.
    pub fn free(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// Device objects bulk work may wake now: the free descriptors above the reserve, a
    /// [`FDS_PER_OBJECT`] each. As objects fall asleep the measure rises again, so bulk work
    /// paced by this runs as fast as eviction frees files, and no faster.
    pub fn wakes(&self) -> u64 {
        self.free().saturating_sub(self.reserve()) / FDS_PER_OBJECT
    }

    /// Whether new connections and requests are refused for now (REST 503 with `Retry-After`,
    /// MQTT CONNACK 3, AMQP `amqp:resource-limit-exceeded`): fewer than half the reserve free.
    /// Connections already open go on; what they wake is the reserve's other half.
    pub fn sheds(&self) -> bool {
        self.free() < self.reserve() / 2
    }

    /// The seconds a refused client is told to wait: until objects woken now are evicted.
    pub fn retry_after_secs(&self) -> u64 {
        EVICTION_MS.div_ceil(1000)
    }

    /// The measure with `claimed` more objects counted as awake: wakes granted since the
    /// last measurement, which it may not show yet.
    pub fn with_claimed(self, claimed: u64) -> Self {
        Self { used: self.used.saturating_add(claimed.saturating_mul(FDS_PER_OBJECT)), ..self }
    }
}

/// The open-file count in a runtime's listing of its own descriptors (workerd's disk service on
/// `/proc/self/fd` answers a JSON array of `{"name": .., "type": ..}`): the number of entries,
/// counted without building them (the listing of 20,000 files is 700 KB). `None` when the text
/// is not such a listing.
pub fn count_listing(json: &str) -> Option<u64> {
    let text = json.trim();
    if !text.starts_with('[') || !text.ends_with(']') {
        return None;
    }
    Some(text.matches("{\"name\"").count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_work_wakes_what_the_free_files_above_the_reserve_allow() {
        let h = Headroom { limit: 1_024, used: 400 };
        assert_eq!(h.reserve(), 256);
        assert_eq!(h.wakes(), (1_024 - 400 - 256) / 3);
        assert!(!h.sheds());
        // Past the reserve: nothing more is woken, but connections are still taken.
        let busy = Headroom { limit: 1_024, used: 800 };
        assert_eq!(busy.wakes(), 0);
        assert!(!busy.sheds());
        // Within half the reserve of the limit: shed.
        let full = Headroom { limit: 1_024, used: 900 };
        assert!(full.sheds());
        assert_eq!(Headroom { limit: 20_000, used: 0 }.reserve(), 5_000);
        // A limit below the reserve never wakes anything and always sheds.
        let tiny = Headroom { limit: 100, used: 10 };
        assert_eq!((tiny.wakes(), tiny.sheds()), (0, false));
        assert!(Headroom { limit: 100, used: 60 }.sheds());
        assert_eq!(h.retry_after_secs(), 12);
    }

    #[test]
    fn claims_count_until_the_next_measurement() {
        let h = Headroom { limit: 1_024, used: 400 };
        let granted = h.wakes();
        assert_eq!(h.with_claimed(granted).wakes(), 0);
        assert_eq!(h.with_claimed(u64::MAX).used, u64::MAX);
    }

    #[test]
    fn a_listing_is_counted_by_its_entries() {
        assert_eq!(count_listing(r#"[{"name":"0","type":"symlink"},{"name":"1","type":"symlink"}]"#), Some(2));
        assert_eq!(count_listing("[]"), Some(0));
        assert_eq!(count_listing("not found"), None);
        assert_eq!(count_listing(""), None);
    }
}
