//! Catch-up on reconnect, beyond IoT Hub: a device that was away when desired changed is sent
//! one desired patch with what changed, when it next subscribes to desired patches (or gets its
//! subscription back with CleanSession=0).
//!
//! IoT Hub sends a desired patch only to a device connected at the moment of the change, so a
//! device that reconnects misses every change made while it was away unless its own code GETs
//! the twin (the most repeated complaint of Azure SDK users: azure-iot-sdk-csharp#3423,
//! azure-iot-sdk-python#510, azure-iot-sdk-node#885). The hub remembers what the device was last
//! told of desired ([`DesiredSeen`]: a twin GET, or a patch pushed to a subscribed session) and
//! on the next subscription sends the RFC 7386 difference as an ordinary desired patch with
//! `$version`, so unmodified SDK handlers apply it as they apply any patch.

use super::{merge_patch_between, Twin};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The desired properties as a device last saw them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredSeen {
    /// Desired `$version` the device was told.
    pub version: u64,
    /// The desired properties at that version (without `$version` and `$metadata`).
    pub properties: Map<String, Value>,
}

impl DesiredSeen {
    /// What a device knows once it has `twin`'s current desired.
    pub fn of(twin: &Twin) -> Self {
        Self { version: twin.desired.version, properties: twin.desired.properties.clone() }
    }

    /// The desired patch body (`{..changes, "$version": n}`) that brings a device that saw
    /// `self` up to `twin`, or `None` when it already has the current version.
    ///
    /// A version moved with no property difference (a desired property set to the value it
    /// had) still sends a patch of only `$version`, so the device's notion of the version is
    /// right, as a push at the time would have been.
    pub fn catch_up(&self, twin: &Twin) -> Option<Value> {
        if twin.desired.version <= self.version {
            return None;
        }
        let mut body = merge_patch_between(&self.properties, &twin.desired.properties);
        body.insert("$version".to_owned(), Value::from(twin.desired.version));
        Some(Value::Object(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::test_support::obj;
    use crate::twin::ServicePatch;
    use crate::UnixMillis;
    use serde_json::json;

    fn patch(twin: &mut Twin, desired: Value) {
        let p = ServicePatch::parse(&json!({ "properties": { "desired": desired } }).to_string()).unwrap();
        twin.apply_service_patch(&p, UnixMillis(5)).unwrap();
    }

    #[test]
    fn nothing_to_send_when_current() {
        let mut twin = Twin::new(UnixMillis(1));
        patch(&mut twin, json!({ "a": 1 }));
        assert_eq!(DesiredSeen::of(&twin).catch_up(&twin), None);
    }

    #[test]
    fn the_difference_since_the_seen_version_with_removals_as_null() {
        let mut twin = Twin::new(UnixMillis(1));
        patch(&mut twin, json!({ "keep": 1, "gone": true, "nested": { "x": 1, "y": 2 } }));
        let seen = DesiredSeen::of(&twin);
        patch(&mut twin, json!({ "gone": null, "nested": { "y": 3 }, "new": "v" }));
        patch(&mut twin, json!({ "interval": 7 }));
        let body = seen.catch_up(&twin).unwrap();
        assert_eq!(
            body,
            json!({ "gone": null, "nested": { "y": 3 }, "new": "v", "interval": 7, "$version": twin.desired.version })
        );
    }

    #[test]
    fn a_version_moved_without_a_difference_still_carries_the_version() {
        let mut twin = Twin::new(UnixMillis(1));
        patch(&mut twin, json!({ "a": 1 }));
        let seen = DesiredSeen::of(&twin);
        patch(&mut twin, json!({ "a": 1 }));
        assert_eq!(seen.catch_up(&twin), Some(json!({ "$version": twin.desired.version })));
        // A baseline from the future (a restored backup) asks for nothing.
        let ahead = DesiredSeen { version: 99, properties: obj(json!({})) };
        assert_eq!(ahead.catch_up(&twin), None);
    }
}
