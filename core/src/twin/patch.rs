//! Writes to a twin, parsed and checked before anything changes (spec §2.1).
//!
//! SDKs send more than the patch: the C# SDK includes `deviceId`, `etag`, `version` and an empty
//! `properties.reported`. Those are ignored, not errors; only `tags` and `properties.desired`
//! are taken from service bodies.

use super::limits::{self, SectionName};
use super::TwinError;
use serde_json::{Map, Value};

/// A service-side merge patch (`PATCH /twins/{id}`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServicePatch {
    /// Merge patch for `tags`.
    pub tags: Option<Map<String, Value>>,
    /// Merge patch for `properties.desired`.
    pub desired: Option<Map<String, Value>>,
}

/// A service-side replacement (`PUT /twins/{id}`): both sections replaced wholesale; an absent
/// section is replaced by an empty one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TwinReplacement {
    /// The new `tags`.
    pub tags: Map<String, Value>,
    /// The new `properties.desired`.
    pub desired: Map<String, Value>,
}

/// A device-side merge patch of reported properties (MQTT `PATCH/properties/reported`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportedPatch {
    /// The merge patch.
    pub reported: Map<String, Value>,
}

impl ServicePatch {
    /// Parses and checks a `PATCH /twins/{id}` body.
    pub fn parse(body: &str) -> Result<Self, TwinError> {
        let value: Value = serde_json::from_str(body).map_err(|e| TwinError::NotJson(e.to_string()))?;
        let Value::Object(mut root) = value else { return Err(TwinError::NotAnObject) };
        let tags = take_section(root.remove("tags"), "tags")?;
        let desired = match root.remove("properties") {
            None | Some(Value::Null) => None,
            Some(Value::Object(mut props)) => take_section(props.remove("desired"), "properties.desired")?,
            Some(_) => return Err(TwinError::SectionNotObject("properties")),
        };
        if let Some(t) = &tags {
            limits::check_patch(SectionName::Tags, t)?;
        }
        if let Some(d) = &desired {
            limits::check_patch(SectionName::Desired, d)?;
        }
        Ok(Self { tags, desired })
    }
}

impl TwinReplacement {
    /// Parses and checks a `PUT /twins/{id}` body.
    pub fn parse(body: &str) -> Result<Self, TwinError> {
        let ServicePatch { tags, desired } = ServicePatch::parse(body)?;
        Ok(Self { tags: tags.unwrap_or_default(), desired: desired.unwrap_or_default() })
    }
}

impl ReportedPatch {
    /// Parses and checks a device's reported patch: a JSON object of changes, `null` deletes.
    /// Keys starting with `$` (a device echoing `$version`, say) refuse the whole patch.
    pub fn parse(body: &[u8]) -> Result<Self, TwinError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| TwinError::NotJson(e.to_string()))?;
        let Value::Object(reported) = value else { return Err(TwinError::NotAnObject) };
        limits::check_patch(SectionName::Reported, &reported)?;
        Ok(Self { reported })
    }
}

fn take_section(v: Option<Value>, name: &'static str) -> Result<Option<Map<String, Value>>, TwinError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(TwinError::SectionNotObject(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_read_only_fields_and_reported() {
        let p = ServicePatch::parse(
            r#"{"deviceId":"x","etag":null,"version":4,"properties":{"desired":{"a":1},"reported":{"b":2}}}"#,
        )
        .unwrap();
        assert!(p.tags.is_none());
        assert_eq!(p.desired.unwrap()["a"], 1);
    }

    #[test]
    fn bad_bodies() {
        assert!(matches!(ServicePatch::parse("nope"), Err(TwinError::NotJson(_))));
        assert_eq!(ServicePatch::parse("[1]"), Err(TwinError::NotAnObject));
        assert_eq!(ServicePatch::parse(r#"{"tags":5}"#), Err(TwinError::SectionNotObject("tags")));
        assert!(matches!(ServicePatch::parse(r#"{"tags":{"a.b":1}}"#), Err(TwinError::InvalidKey { .. })));
        assert!(matches!(
            ServicePatch::parse(r#"{"properties":{"desired":{"ok":{"$bad":1}}}}"#),
            Err(TwinError::InvalidKey { .. })
        ));
    }

    #[test]
    fn replacement_defaults_to_empty_sections() {
        let r = TwinReplacement::parse(r#"{"tags":{"a":1}}"#).unwrap();
        assert_eq!(r.tags["a"], 1);
        assert!(r.desired.is_empty());
    }

    #[test]
    fn reported_rejects_dollar_keys() {
        assert!(ReportedPatch::parse(br#"{"temperature":21.5,"$version":3}"#).is_err());
        assert!(ReportedPatch::parse(b"[]").is_err());
        // A device's bytes reach this as sent (no lossy UTF-8 on the way): invalid UTF-8 in a
        // string is not JSON, so the patch is refused rather than stored with U+FFFD.
        assert!(matches!(ReportedPatch::parse(b"{\"t\":\"\xff\"}"), Err(TwinError::NotJson(_))));
        assert_eq!(ReportedPatch::parse(br#"{"t":1}"#).unwrap().reported["t"], 1);
    }
}
