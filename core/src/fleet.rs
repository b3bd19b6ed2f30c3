//! Fleet index placement: which index shard holds a device's projection, and how shards
//! follow a change of their count (`FLEET_INDEX_SHARDS`) without anyone moving data by hand.
//!
//! Every call to a shard names its [`Placement`] (its number and the count now configured).
//! A shard that is told a placement other than the one it stored starts a rebalance: it walks
//! its rows in id order and hands each row that now lives elsewhere to its new shard (which
//! keeps it only if no newer commit of the device reached it first), then forgets it. When the
//! count shrinks, the shards past the new count are no longer called by anyone, so the first
//! shard that learns of the change wakes them ([`PlacementChange::wake`]) and they hand over
//! everything they hold.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The index shard for `device_id` among `shards` (FNV-1a: stable across builds and runtimes,
/// unlike `std`'s randomly seeded hasher).
pub fn shard_of(device_id: &str, shards: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in device_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % shards.max(1)
}

/// A shard's place among the fleet index shards. A shard past the count (`shard >=
/// shards`, left over after the count shrank) holds nothing: all its rows live elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// This shard's number.
    pub shard: u32,
    /// How many shards the hub is configured with.
    pub shards: u32,
}

impl Placement {
    /// Whether `device_id`'s projection lives in this shard.
    pub fn holds(&self, device_id: &str) -> bool {
        shard_of(device_id, self.shards) == self.shard
    }

    /// Where `device_id`'s projection lives.
    pub fn home_of(&self, device_id: &str) -> Placement {
        Placement { shard: shard_of(device_id, self.shards), shards: self.shards }
    }

    /// The form an index call's URL carries: `shard=3&of=8`.
    pub fn to_query(&self) -> String {
        format!("shard={}&of={}", self.shard, self.shards)
    }

    /// Reads [`Placement::to_query`]'s form (other parameters are ignored); `None` if it is not
    /// there or names no shards.
    pub fn from_query(query: &str) -> Option<Self> {
        let mut shard = None;
        let mut shards = None;
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("shard", v)) => shard = v.parse().ok(),
                Some(("of", v)) => shards = v.parse().ok(),
                _ => {}
            }
        }
        let placement = Placement { shard: shard?, shards: shards? };
        (placement.shards > 0).then_some(placement)
    }
}

/// What a shard does when a call names a placement other than the one it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementChange {
    /// Walk its rows and hand over those that live elsewhere now.
    pub rebalance: bool,
    /// The shards past the new count, which nobody calls any more: wake them so they hand
    /// over their rows (each is told its own number and the new count).
    pub wake: Range<u32>,
}

/// The change from the placement a shard stored (`None`: never told one, as a store written
/// before shards tracked their placement) to the one a call names; `None` when nothing changed.
pub fn placement_change(stored: Option<Placement>, told: Placement) -> Option<PlacementChange> {
    match stored {
        Some(s) if s == told => None,
        // A store from before: rows may have been written under any count; one walk tells.
        None => Some(PlacementChange { rebalance: true, wake: 0..0 }),
        Some(s) => Some(PlacementChange {
            rebalance: s.shards != told.shards,
            wake: if told.shards < s.shards { told.shards..s.shards } else { 0..0 },
        }),
    }
}

/// Clamps `GET /devices?top=` as IoT Hub does: 1 to 1000, anything else means 1000.
pub fn clamp_top(top: Option<&str>) -> usize {
    match top.and_then(|t| t.parse::<usize>().ok()) {
        Some(n) if (1..=1000).contains(&n) => n,
        _ => 1000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard_of("dev1", 4), shard_of("dev1", 4));
        assert!((0..1000).all(|i| shard_of(&format!("d{i}"), 4) < 4));
        assert_eq!(shard_of("anything", 0), 0);
    }

    #[test]
    fn a_placement_travels_in_a_query_string() {
        let p = Placement { shard: 3, shards: 8 };
        assert_eq!(Placement::from_query(&p.to_query()), Some(p));
        assert_eq!(Placement::from_query("x=1&of=8&shard=3"), Some(p), "in any order, among others");
        assert_eq!(Placement::from_query("shard=0&of=0"), None, "no shards");
        let past = Placement::from_query("shard=8&of=3").unwrap();
        assert!(!past.holds("d1"), "a shard past the count holds nothing");
        assert_eq!(Placement::from_query("shard=1"), None);
        assert_eq!(Placement::from_query("shard=a&of=2"), None);
        assert_eq!(Placement::from_query(""), None);
    }

    #[test]
    fn every_device_has_one_home_whatever_the_count() {
        for shards in [1, 2, 3, 5, 8] {
            for i in 0..200 {
                let id = format!("d{i}");
                let homes = (0..shards).filter(|&shard| Placement { shard, shards }.holds(&id)).count();
                assert_eq!(homes, 1, "{id} among {shards}");
                let home = Placement { shard: 0, shards }.home_of(&id);
                assert!(home.holds(&id));
            }
        }
    }

    #[test]
    fn a_changed_count_rebalances_and_a_smaller_one_wakes_the_shards_past_it() {
        let at = |shard, shards| Placement { shard, shards };
        assert_eq!(placement_change(Some(at(1, 4)), at(1, 4)), None, "nothing changed");
        let grown = placement_change(Some(at(1, 4)), at(1, 8)).unwrap();
        assert!(grown.rebalance);
        assert!(grown.wake.is_empty(), "new shards are called by the devices that now live there");
        let shrunk = placement_change(Some(at(1, 8)), at(1, 3)).unwrap();
        assert!(shrunk.rebalance);
        assert_eq!(shrunk.wake, 3..8);
        let first = placement_change(None, at(0, 4)).unwrap();
        assert!(first.rebalance, "a store from before the placement is walked once");
        assert!(first.wake.is_empty());
    }

    #[test]
    fn top_is_clamped() {
        assert_eq!(clamp_top(Some("5")), 5);
        assert_eq!(clamp_top(Some("0")), 1000);
        assert_eq!(clamp_top(Some("5000")), 1000);
        assert_eq!(clamp_top(Some("x")), 1000);
        assert_eq!(clamp_top(None), 1000);
    }
}
