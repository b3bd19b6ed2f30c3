//! Drift: each desired property beside what the device reported for it, read from a twin's
//! service JSON (`properties.desired`, `properties.reported`, their `$metadata`).
//!
//! A device may answer a desired property with its plain value (the article's device) or with
//! an IoT Plug and Play acknowledgement `{"value", "ac", "av", "ad"}`; an `ac` of 400 or more is
//! a refusal. The dashboard's drift table, the fleet's drift count and a rollout's failure
//! share (issue 8) all read the same rows.

use crate::pnp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a desired property stands on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DriftState {
    /// The reported value equals the desired one.
    CaughtUp,
    /// Not reported yet, or reported with another value and no refusal.
    Pending,
    /// The device acknowledged the change with an error (`ac` >= 400).
    Refused,
}

/// A device's Plug and Play acknowledgement of a desired property.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ack {
    /// Status (`ac`), HTTP-like.
    pub code: i64,
    /// The desired `$version` it answers (`av`).
    pub version: Option<u64>,
    /// Why (`ad`).
    pub description: Option<String>,
}

/// One desired property and the device's side of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftRow {
    /// The property name (top level of `desired`).
    pub name: String,
    /// What the service asked for.
    pub desired: Value,
    /// What the device reported (an acknowledgement's `value`), if anything.
    pub reported: Option<Value>,
    /// The acknowledgement, when the device answered in Plug and Play form.
    pub ack: Option<Ack>,
    /// The verdict.
    pub state: DriftState,
    /// `$metadata.{name}.$lastUpdated` of desired.
    pub desired_updated: Option<String>,
    /// `$metadata.{name}.$lastUpdatedVersion` of desired.
    pub desired_version: Option<u64>,
    /// `$metadata.{name}.$lastUpdated` of reported.
    pub reported_updated: Option<String>,
}

/// The drift rows of a twin (service JSON), in desired's order. A desired IoT Plug and Play
/// component (an object marked `"__t": "c"`) gives one row per property, named
/// `{component}.{property}`, read against the same component in reported.
pub fn drift(twin: &Value) -> Vec<DriftRow> {
    let desired = &twin["properties"]["desired"];
    let reported = &twin["properties"]["reported"];
    let Some(wanted) = desired.as_object() else { return Vec::new() };
    let mut rows = Vec::new();
    for (name, value) in wanted.iter().filter(|(name, _)| !name.starts_with('$')) {
        let meta = |section: &Value, key: &str| section["$metadata"][name.as_str()][key].clone();
        if pnp::is_component(value) {
            let members = value
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(m, _)| !m.starts_with('$') && *m != pnp::COMPONENT_MARKER);
            for (member, wanted) in members {
                let at = |section: &Value, key: &str| section["$metadata"][name.as_str()][member.as_str()][key].clone();
                rows.push(row(
                    format!("{name}.{member}"),
                    wanted,
                    reported.get(name).and_then(|c| c.get(member)),
                    (at(desired, "$lastUpdated"), at(desired, "$lastUpdatedVersion"), at(reported, "$lastUpdated")),
                ));
            }
            continue;
        }
        rows.push(row(
            name.clone(),
            value,
            reported.get(name),
            (meta(desired, "$lastUpdated"), meta(desired, "$lastUpdatedVersion"), meta(reported, "$lastUpdated")),
        ));
    }
    rows
}

/// One property's row: what was asked, what came back, and the `$metadata` times and version.
fn row(name: String, value: &Value, reported: Option<&Value>, meta: (Value, Value, Value)) -> DriftRow {
    let (shown, ack) = match reported.and_then(pnp::acknowledgement) {
        Some(o) => {
            let ack = Ack {
                code: o.get("ac").and_then(Value::as_i64).unwrap_or(0),
                version: o.get("av").and_then(Value::as_u64),
                description: o.get("ad").and_then(Value::as_str).map(str::to_owned),
            };
            (o.get("value").cloned(), Some(ack))
        }
        None => (reported.cloned(), None),
    };
    let state = if shown.as_ref().is_some_and(|r| same(r, value)) {
        DriftState::CaughtUp
    } else if ack.as_ref().is_some_and(|a| a.code >= 400) {
        DriftState::Refused
    } else {
        DriftState::Pending
    };
    DriftRow {
        name,
        desired: value.clone(),
        reported: shown,
        ack,
        state,
        desired_updated: meta.0.as_str().map(str::to_owned),
        desired_version: meta.1.as_u64(),
        reported_updated: meta.2.as_str().map(str::to_owned),
    }
}

/// How many desired properties the device has not caught up with (the fleet's drift column).
pub fn drift_count(twin: &Value) -> usize {
    drift_counts(twin).drifting as usize
}

/// A twin's drift in two figures, which the fleet index keeps beside each twin (its `drifting`
/// and `refused` columns) so the overview counts them and the query language's
/// `IS_DRIFTING()` and `HAS_REFUSED()` select them without reading every twin's JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DriftCounts {
    /// Desired properties not caught up (pending or refused).
    pub drifting: u32,
    /// Of which refused.
    pub refused: u32,
}

/// The [`DriftCounts`] of a twin (service JSON).
pub fn drift_counts(twin: &Value) -> DriftCounts {
    drift(twin).iter().fold(DriftCounts::default(), |mut c, r| {
        match r.state {
            DriftState::CaughtUp => {}
            DriftState::Pending => c.drifting += 1,
            DriftState::Refused => {
                c.drifting += 1;
                c.refused += 1;
            }
        }
        c
    })
}

/// JSON equality, with numbers equal by value (`7` and `7.0` are the same setting).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_component_is_read_property_by_property() {
        let twin = json!({ "properties": {
            "desired": { "thermostat1": { "__t": "c", "targetTemperature": 22, "mode": "heat" }, "$version": 3 },
            "reported": { "thermostat1": { "__t": "c",
                "targetTemperature": { "value": 22, "ac": 200, "av": 3 },
                "mode": { "value": "cool", "ac": 400, "av": 3, "ad": "no heater" } }, "$version": 5 }
        }});
        let rows = drift(&twin);
        let states: Vec<_> = rows.iter().map(|r| (r.name.as_str(), r.state)).collect();
        assert_eq!(
            states,
            vec![("thermostat1.targetTemperature", DriftState::CaughtUp), ("thermostat1.mode", DriftState::Refused)]
        );
    }

    #[test]
    fn caught_up_pending_and_refused() {
        let twin = json!({ "properties": {
            "desired": {
                "telemetryInterval": 7, "firmwareVersion": "3.0.0", "temperatureThreshold": 30, "mode": "eco",
                "$metadata": { "telemetryInterval": { "$lastUpdated": "2026-11-26T10:00:00Z", "$lastUpdatedVersion": 4 } },
                "$version": 6
            },
            "reported": {
                "telemetryInterval": 7.0,
                "firmwareVersion": { "value": "2.1.0", "ac": 500, "av": 6, "ad": "refused" },
                "temperatureThreshold": 25,
                "$metadata": { "telemetryInterval": { "$lastUpdated": "2026-11-26T10:00:02Z" } },
                "$version": 9
            }
        }});
        let rows = drift(&twin);
        let states: Vec<_> = rows.iter().map(|r| (r.name.as_str(), r.state)).collect();
        assert_eq!(
            states,
            vec![
                ("telemetryInterval", DriftState::CaughtUp),
                ("firmwareVersion", DriftState::Refused),
                ("temperatureThreshold", DriftState::Pending),
                ("mode", DriftState::Pending),
            ]
        );
        assert_eq!(rows[0].desired_version, Some(4));
        assert_eq!(rows[0].reported_updated.as_deref(), Some("2026-11-26T10:00:02Z"));
        assert_eq!(rows[1].reported, Some(json!("2.1.0")));
        assert_eq!(rows[1].ack, Some(Ack { code: 500, version: Some(6), description: Some("refused".into()) }));
        assert_eq!(rows[3].reported, None);
        assert_eq!(drift_count(&twin), 3);
        // An acknowledgement that accepted the value is caught up.
        let accepted = json!({ "properties": {
            "desired": { "t": 5 }, "reported": { "t": { "value": 5, "ac": 200, "av": 2 } }
        }});
        assert_eq!(drift(&accepted)[0].state, DriftState::CaughtUp);
        assert!(drift(&json!({})).is_empty());
    }
}
