//! The device twin document (spec §1) and the rules that change it (spec §2).
//!
//! A [`Twin`] holds `tags` and the two property [`Section`]s with their counters; identity
//! fields (status, connection state) come from the [`DeviceIdentity`] when rendering.
//!
//! Every write (`apply_service_patch`, `replace`, `apply_reported_patch`) works on a copy,
//! checks the copy against the limits, and only then replaces `self`: a rejected write changes
//! nothing, not even a counter. Each returns the [`Change`]s it made, for the twin history.

pub mod catch_up;
pub mod drift;
mod error;
mod history;
pub mod limits;
mod patch;
mod section;

pub use error::TwinError;
pub use history::{diff, merge_patch_between, revert_patch, Change};
pub use patch::{ReportedPatch, ServicePatch, TwinReplacement};
pub use section::{MetaNode, Section};

use limits::SectionName;

/// Helpers for this module's unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use serde_json::{Map, Value};

    /// The object inside a `json!({...})` literal.
    pub(crate) fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }
}

use crate::identity::DeviceIdentity;
use crate::UnixMillis;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// A device twin, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Twin {
    /// Backend-only tags. Tags carry no `$metadata`.
    pub tags: Map<String, Value>,
    /// Set by the backend, applied by the device.
    pub desired: Section,
    /// Set by the device.
    pub reported: Section,
    /// Twin `version`: +1 per accepted write of any kind; 2 when fresh (spec §1.3).
    pub version: u64,
    /// The etag counter: +1 per accepted service write; 1 when fresh (spec §1.3).
    pub etag: u64,
    /// The automatic device configuration applied to this twin, if any
    /// ([`crate::configuration`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<AppliedConfiguration>,
}

/// Which configuration, and which revision of it, a twin has had applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedConfiguration {
    pub id: String,
    pub revision: u64,
}

impl Twin {
    /// The twin of a device created at `now`: `version` 2, etag 1, both sections at `$version` 1.
    pub fn new(now: UnixMillis) -> Self {
        Self {
            tags: Map::new(),
            desired: Section::new(now),
            reported: Section::new(now),
            version: 2,
            etag: 1,
            configuration: None,
        }
    }

    /// The etag as IoT Hub prints it: base64 of the counter as 8 big-endian bytes.
    pub fn etag_string(&self) -> String {
        STANDARD.encode(self.etag.to_be_bytes())
    }

    /// Whether an `If-Match` header value allows a service write (see [`crate::etag`]).
    pub fn etag_matches(&self, if_match: Option<&str>) -> bool {
        crate::etag::if_match_allows(&self.etag_string(), if_match)
    }

    /// Applies a service-side merge patch (`PATCH /twins/{id}`): tags and desired merge, `null`
    /// deletes. Moves `version` and the etag; desired's `$version` only if desired was patched.
    pub fn apply_service_patch(&mut self, patch: &ServicePatch, now: UnixMillis) -> Result<Vec<Change>, TwinError> {
        let mut next = self.clone();
        if let Some(tags) = &patch.tags {
            section::merge_plain(&mut next.tags, tags);
        }
        if let Some(desired) = &patch.desired {
            let version = next.desired.version + 1;
            next.desired.merge(desired, now, Some(version));
        }
        next.version += 1;
        next.etag += 1;
        self.commit(next)
    }

    /// Replaces tags and desired wholesale (`PUT /twins/{id}`).
    pub fn replace(&mut self, replacement: &TwinReplacement, now: UnixMillis) -> Result<Vec<Change>, TwinError> {
        let mut next = self.clone();
        next.tags = replacement.tags.clone();
        section::strip_nulls(&mut next.tags);
        let version = next.desired.version + 1;
        next.desired.replace(&replacement.desired, now, Some(version));
        next.version += 1;
        next.etag += 1;
        self.commit(next)
    }

    /// Applies a device's reported patch. Moves `version` and reported's `$version`, not the etag
    /// (which guards service writes only, spec §1.3).
    pub fn apply_reported_patch(&mut self, patch: &ReportedPatch, now: UnixMillis) -> Result<Vec<Change>, TwinError> {
        let mut next = self.clone();
        next.reported.merge(&patch.reported, now, None);
        next.version += 1;
        self.commit(next)
    }

    /// Checks `next` against the section limits; if it passes, it becomes the twin.
    fn commit(&mut self, next: Twin) -> Result<Vec<Change>, TwinError> {
        limits::check_section_size(SectionName::Tags, &next.tags)?;
        limits::check_section_size(SectionName::Desired, &next.desired.properties)?;
        limits::check_section_size(SectionName::Reported, &next.reported.properties)?;
        let mut changes = Vec::new();
        history::diff("tags", &self.tags, &next.tags, &mut changes);
        history::diff("properties.desired", &self.desired.properties, &next.desired.properties, &mut changes);
        history::diff("properties.reported", &self.reported.properties, &next.reported.properties, &mut changes);
        *self = next;
        Ok(changes)
    }

    /// The body of a desired-properties notification to the device (spec §2.1): the desired
    /// patch as applied (deletions as `null`; for a replacement, the whole new desired) plus
    /// `"$version"`.
    pub fn desired_notification(&self, patch: Option<&Map<String, Value>>) -> Value {
        let mut body = patch.cloned().unwrap_or_else(|| self.desired.properties.clone());
        body.insert("$version".to_owned(), Value::from(self.desired.version));
        Value::Object(body)
    }

    /// The service view (`GET /twins/{id}`, queries): everything, with `$metadata`.
    pub fn to_service_json(&self, identity: &DeviceIdentity) -> Value {
        let mut doc = json!({
            "deviceId": identity.device_id,
            "etag": self.etag_string(),
            "deviceEtag": identity.etag_string(),
            "status": identity.status,
            "statusUpdateTime": identity.status_updated.to_iso(),
            "connectionState": identity.connection_state(),
            "lastActivityTime": identity.last_activity.to_iso(),
            "cloudToDeviceMessageCount": identity.cloud_to_device_count,
            "authenticationType": "sas",
            "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null },
            "modelId": identity.model_id.as_deref().unwrap_or_default(),
            "version": self.version,
        });
        if let Value::Object(map) = &mut doc {
            // Azure omits `tags` entirely while the twin has none (spec §1.1).
            if !self.tags.is_empty() {
                map.insert("tags".to_owned(), Value::Object(self.tags.clone()));
            }
            map.insert(
                "properties".to_owned(),
                json!({ "desired": self.desired.to_json(true), "reported": self.reported.to_json(true) }),
            );
            // The configuration applied, as IoT Hub shows it (and as queries select on it:
            // `configurations.[[id]].status = 'Applied'`).
            if let Some(applied) = &self.configuration {
                map.insert("configurations".to_owned(), json!({ applied.id.as_str(): { "status": "Applied" } }));
            }
            match &identity.module_id {
                // A module twin names its module and has no capabilities (spec §1.5).
                Some(module_id) => {
                    map.insert("moduleId".to_owned(), Value::from(module_id.as_str()));
                }
                None => {
                    map.insert("capabilities".to_owned(), json!({ "iotEdge": identity.iot_edge }));
                }
            }
        }
        doc
    }

    /// The device view (MQTT twin GET, spec §1.6): the two sections with `$version`, no
    /// `$metadata`, no tags, no outer `properties`.
    pub fn to_device_json(&self) -> Value {
        json!({ "desired": self.desired.to_json(false), "reported": self.reported.to_json(false) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceRequest;

    fn identity() -> DeviceIdentity {
        DeviceIdentity::create("dev1", &DeviceRequest::default(), UnixMillis(1_000), &[1; 64]).unwrap()
    }

    #[test]
    fn fresh_twin_matches_spec_1_2() {
        let t = Twin::new(UnixMillis(1_676_976_010_506));
        let j = t.to_service_json(&identity());
        assert_eq!(j["etag"], "AAAAAAAAAAE=");
        assert_eq!(j["version"], 2);
        assert!(j.get("tags").is_none());
        assert_eq!(j["properties"]["desired"]["$version"], 1);
        assert_eq!(j["properties"]["reported"]["$metadata"], json!({ "$lastUpdated": "2023-02-21T10:40:10.5060000Z" }));
        assert_eq!(j["connectionState"], "Disconnected");
        assert_eq!(t.to_device_json(), json!({ "desired": { "$version": 1 }, "reported": { "$version": 1 } }));
    }

    #[test]
    fn patch_moves_counters_and_merges() {
        let mut t = Twin::new(UnixMillis(1));
        let p = ServicePatch::parse(
            r#"{"tags":{"location":{"building":"A"}},"properties":{"desired":{"telemetryInterval":30,"gone":null}}}"#,
        )
        .unwrap();
        t.apply_service_patch(&p, UnixMillis(2)).unwrap();
        assert_eq!((t.version, t.etag, t.desired.version, t.reported.version), (3, 2, 2, 1));
        assert_eq!(t.etag_string(), "AAAAAAAAAAI=");
        assert_eq!(t.tags["location"]["building"], "A");
        let d = t.desired.to_json(true);
        assert_eq!(d["telemetryInterval"], 30);
        assert_eq!(d["$metadata"]["telemetryInterval"]["$lastUpdatedVersion"], 2);
        assert_eq!(d["$metadata"]["$lastUpdatedVersion"], 2);

        let del =
            ServicePatch::parse(r#"{"tags":{"location":null},"properties":{"desired":{"telemetryInterval":null}}}"#)
                .unwrap();
        t.apply_service_patch(&del, UnixMillis(3)).unwrap();
        assert!(t.tags.is_empty());
        let d = t.desired.to_json(true);
        assert!(d.get("telemetryInterval").is_none());
        assert!(d["$metadata"].get("telemetryInterval").is_none());
        assert_eq!(d["$metadata"]["$lastUpdatedVersion"], 3);
    }

    #[test]
    fn storage_round_trip() {
        let mut t = Twin::new(UnixMillis(1));
        t.apply_service_patch(
            &ServicePatch::parse(r#"{"properties":{"desired":{"a":{"b":1}}}}"#).unwrap(),
            UnixMillis(5),
        )
        .unwrap();
        let back: Twin = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
