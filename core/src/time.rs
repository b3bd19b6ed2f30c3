//! Time as IoT Hub writes it. The caller supplies "now"; this module only converts.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC. Zero means "never" (rendered `0001-01-01T00:00:00Z`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

/// What IoT Hub prints for a time that never happened (never connected, never updated).
pub const NEVER: &str = "0001-01-01T00:00:00Z";

/// Ticks (100 ns) between 0001-01-01 and 1970-01-01: .NET's epoch, used for generation ids.
const DOTNET_EPOCH_TICKS: u64 = 621_355_968_000_000_000;

impl UnixMillis {
    /// Whole seconds, as SAS tokens count expiry.
    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// ISO-8601 UTC with seven fractional digits, the .NET round-trip form the service uses
    /// (`2023-02-21T10:40:43.8530000Z`); `0001-01-01T00:00:00Z` for zero.
    pub fn to_iso(self) -> String {
        if self.0 == 0 {
            return NEVER.to_owned();
        }
        let millis = i64::try_from(self.0).unwrap_or(i64::MAX);
        match DateTime::<Utc>::from_timestamp_millis(millis) {
            // chrono prints nanoseconds with 9 digits; IoT Hub prints 7 (ticks).
            Some(t) => {
                let s = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
                format!("{}Z", &s[..s.len().saturating_sub(3)])
            }
            None => NEVER.to_owned(),
        }
    }

    /// Reads an RFC 3339 time (as [`UnixMillis::to_iso`] writes it); `None` for anything else
    /// or a time before 1970.
    pub fn parse_iso(s: &str) -> Option<Self> {
        let t = DateTime::parse_from_rfc3339(s).ok()?;
        u64::try_from(t.timestamp_millis()).ok().map(Self)
    }

    /// .NET ticks since 0001-01-01: 18 decimal digits for any date after 1970, which is what
    /// IoT Hub's `generationId` looks like.
    pub fn to_dotnet_ticks(self) -> u64 {
        DOTNET_EPOCH_TICKS.saturating_add(self.0.saturating_mul(10_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_has_seven_fraction_digits() {
        assert_eq!(UnixMillis(1_676_976_010_506).to_iso(), "2023-02-21T10:40:10.5060000Z");
        assert_eq!(UnixMillis(0).to_iso(), NEVER);
    }

    #[test]
    fn iso_round_trips() {
        let t = UnixMillis(1_676_976_010_506);
        assert_eq!(UnixMillis::parse_iso(&t.to_iso()), Some(t));
        assert_eq!(UnixMillis::parse_iso("yesterday"), None);
        assert_eq!(UnixMillis::parse_iso("1960-01-01T00:00:00Z"), None);
    }

    #[test]
    fn generation_id_is_eighteen_digits() {
        let ticks = UnixMillis(1_676_976_010_506).to_dotnet_ticks();
        assert_eq!(ticks.to_string().len(), 18);
        assert_eq!(ticks, 638_125_728_105_060_000);
    }
}
