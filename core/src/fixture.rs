//! A seeded fleet of twins shaped like the article's (`../shared/seeds`): buildings and
//! floors, deployment environment and region in tags; firmware desired against reported,
//! connectivity with a signal, temperature and an optional `lastTelemetry` in reported
//! properties. Tests, benchmarks and demos load the same fleet, so their figures and expected
//! rows can be compared. Deterministic: the same seed gives the same fleet on every platform.

use crate::identity::{DeviceIdentity, DeviceRequest};
use crate::twin::{ReportedPatch, ServicePatch, Twin};
use crate::UnixMillis;
use serde_json::{json, Value};

/// One generated device.
#[derive(Clone, Debug, PartialEq)]
pub struct FixtureDevice {
    pub device_id: String,
    /// `tags` for `PATCH /twins/{id}`.
    pub tags: Value,
    /// `properties.desired`.
    pub desired: Value,
    /// What the device reports.
    pub reported: Value,
}

pub const BUILDINGS: [&str; 5] = ["Building-A", "Building-B", "Building-C", "Building-D", "Building-E"];
pub const ENVIRONMENTS: [&str; 3] = ["production", "staging", "development"];
pub const REGIONS: [&str; 4] = ["eastus", "westus", "westeurope", "southeastasia"];
/// The firmware every device is asked to run.
pub const TARGET_FIRMWARE: &str = "2.1.0";

/// `count` devices for `seed`, ids `sensor-000000`, `sensor-000001`, ...
pub fn fleet(seed: u64, count: usize) -> Vec<FixtureDevice> {
    fleet_slice(seed, 0, count)
}

/// Devices `start..start + count` of [`fleet`]`(seed, ..)`, without keeping the ones before.
pub fn fleet_slice(seed: u64, start: usize, count: usize) -> Vec<FixtureDevice> {
    let mut rng = SplitMix(seed);
    (0..start.saturating_add(count)).map(|i| device(i, &mut rng)).skip(start).collect()
}

fn device(i: usize, rng: &mut SplitMix) -> FixtureDevice {
    let building = BUILDINGS[rng.below(5) as usize];
    let floor = 1 + rng.below(10);
    let environment = match rng.below(100) {
        0..60 => ENVIRONMENTS[0],
        60..85 => ENVIRONMENTS[1],
        _ => ENVIRONMENTS[2],
    };
    let region = REGIONS[rng.below(4) as usize];
    let interval = [30, 60, 300][rng.below(3) as usize];
    let threshold = 25 + rng.below(6);
    let firmware = match rng.below(100) {
        0..70 => TARGET_FIRMWARE,
        70..90 => "2.0.5",
        _ => "1.9.8",
    };
    let connectivity = ["wifi", "cellular", "ethernet"][rng.below(3) as usize];
    let signal = -90 + rng.below(61) as i64;
    let temperature = (150 + rng.below(250)) as f64 / 10.0;
    let mut reported = json!({
        "telemetryInterval": interval,
        "temperatureThreshold": threshold,
        "firmwareVersion": firmware,
        "lastFirmwareUpdate": format!("2021-{:02}-{:02}T10:30:00Z", 1 + rng.below(12), 1 + rng.below(28)),
        "connectivity": { "type": connectivity, "signal": signal },
        "lastTemperature": temperature,
    });
    if rng.below(2) == 0 {
        reported["lastTelemetry"] = json!(format!("2026-11-{:02}T{:02}:00:00Z", 1 + rng.below(25), rng.below(24)));
    }
    FixtureDevice {
        device_id: format!("sensor-{i:06}"),
        tags: json!({
            "location": { "building": building, "floor": floor, "room": format!("Room-{floor}{:02}", 1 + rng.below(20)) },
            "deployment": { "environment": environment, "region": region },
        }),
        desired: json!({
            "telemetryInterval": interval,
            "temperatureThreshold": threshold,
            "firmwareVersion": TARGET_FIRMWARE,
        }),
        reported,
    }
}

impl FixtureDevice {
    /// The body of `PATCH /twins/{id}` that sets tags and desired properties.
    pub fn service_patch(&self) -> Value {
        json!({ "tags": self.tags, "properties": { "desired": self.desired } })
    }

    /// The twin as the service returns it, built with the real twin rules: created at `now`,
    /// the service patch applied, then the device's report.
    pub fn twin_json(&self, now: UnixMillis) -> Option<Value> {
        self.twin_json_for(&self.device_id, now)
    }

    /// [`Self::twin_json`] for the identity `key`: the device, or a module of it
    /// (`{deviceId}/{moduleId}`) with the same tags and properties.
    pub fn twin_json_for(&self, key: &str, now: UnixMillis) -> Option<Value> {
        let identity = DeviceIdentity::create(key, &DeviceRequest::default(), now, &[7; 64]).ok()?;
        let mut twin = Twin::new(now);
        twin.apply_service_patch(&ServicePatch::parse(&self.service_patch().to_string()).ok()?, now).ok()?;
        twin.apply_reported_patch(&ReportedPatch::parse(self.reported.to_string().as_bytes()).ok()?, now).ok()?;
        Some(twin.to_service_json(&identity))
    }
}

/// A query from the article with its answer stated independently of the query engine: a
/// plain Rust predicate over the generated fields.
pub struct ArticleQuery {
    pub name: &'static str,
    pub text: &'static str,
    pub expect: fn(&FixtureDevice) -> bool,
}

/// The article's queries (and the benchmark's), each selective on the fixture fleet.
pub fn article_queries() -> Vec<ArticleQuery> {
    vec![
        ArticleQuery {
            name: "tag equality",
            text: "SELECT * FROM devices WHERE tags.location.building = 'Building-A'",
            expect: |d| d.tags["location"]["building"] == "Building-A",
        },
        ArticleQuery {
            name: "two-tag AND",
            text: "SELECT * FROM devices WHERE tags.location.building = 'Building-A' \
                   AND tags.deployment.environment = 'production'",
            expect: |d| {
                d.tags["location"]["building"] == "Building-A" && d.tags["deployment"]["environment"] == "production"
            },
        },
        ArticleQuery {
            name: "nested reported range",
            text: "SELECT deviceId, tags.location, properties.reported.connectivity FROM devices \
                   WHERE tags.deployment.environment = 'production' AND properties.reported.connectivity.signal > -60 \
                   AND is_defined(properties.reported.lastTelemetry)",
            expect: |d| {
                d.tags["deployment"]["environment"] == "production"
                    && d.reported["connectivity"]["signal"].as_i64().is_some_and(|s| s > -60)
                    && d.reported.get("lastTelemetry").is_some()
            },
        },
        ArticleQuery {
            name: "desired != reported",
            text: "SELECT deviceId, properties.reported.firmwareVersion FROM devices \
                   WHERE properties.desired.firmwareVersion != properties.reported.firmwareVersion",
            expect: |d| d.reported["firmwareVersion"] != d.desired["firmwareVersion"],
        },
        ArticleQuery {
            name: "is_defined",
            text: "SELECT deviceId FROM devices WHERE is_defined(properties.reported.lastTelemetry)",
            expect: |d| d.reported.get("lastTelemetry").is_some(),
        },
        ArticleQuery {
            name: "temperature alert",
            text: "SELECT deviceId, properties.reported.lastTemperature FROM devices \
                   WHERE properties.reported.lastTemperature > 30",
            expect: |d| d.reported["lastTemperature"].as_f64().is_some_and(|t| t > 30.0),
        },
    ]
}

/// The GROUP BY of the figures: devices per reported firmware version.
pub const FIRMWARE_GROUP_QUERY: &str = "SELECT properties.reported.firmwareVersion AS firmware, COUNT() AS devices \
     FROM devices GROUP BY properties.reported.firmwareVersion";

/// SplitMix64: tiny, seedable and the same everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_fleet() {
        assert_eq!(fleet(1, 50), fleet(1, 50));
        assert_ne!(fleet(1, 50), fleet(2, 50));
        assert_eq!(fleet_slice(1, 20, 30), fleet(1, 50)[20..]);
        let twin = fleet(1, 1)[0].twin_json(UnixMillis(1_700_000_000_000)).expect("a valid twin");
        assert_eq!(twin["deviceId"], "sensor-000000");
        assert_eq!(twin["properties"]["desired"]["firmwareVersion"], TARGET_FIRMWARE);
        assert!(twin["tags"]["location"]["building"].is_string());
    }
}
