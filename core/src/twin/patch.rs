//! Service-side twin patches (`PATCH /twins/{id}`, spec §2.1).
//!
//! SDKs send more than the patch: the C# SDK includes `deviceId`, `etag`, `version` and an empty
//! `properties.reported`. Those are ignored, not errors; only `tags` and `properties.desired`
//! are taken.

use super::TwinError;
use serde_json::{Map, Value};

/// A validated service patch: the parts of the body that write.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServicePatch {
    /// Merge patch for `tags`.
    pub tags: Option<Map<String, Value>>,
    /// Merge patch for `properties.desired`.
    pub desired: Option<Map<String, Value>>,
}

impl ServicePatch {
    /// Parses and validates a request body.
    pub fn parse(body: &str) -> Result<Self, TwinError> {
        let value: Value = serde_json::from_str(body).map_err(|e| TwinError::NotJson(e.to_string()))?;
        let Value::Object(mut root) = value else { return Err(TwinError::NotAnObject) };
        let tags = take_section(root.remove("tags"), "tags")?;
        let desired = match root.remove("properties") {
            None | Some(Value::Null) => None,
            Some(Value::Object(mut props)) => take_section(props.remove("desired"), "properties.desired")?,
            Some(_) => return Err(TwinError::SectionNotObject("properties")),
        };
        for section in [&tags, &desired].into_iter().flatten() {
            check_keys(section)?;
        }
        Ok(Self { tags, desired })
    }
}

fn take_section(v: Option<Value>, name: &'static str) -> Result<Option<Map<String, Value>>, TwinError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(TwinError::SectionNotObject(name)),
    }
}

/// Key rules of spec §2.3: no `$`, `.`, space or control characters, at most 1 KB.
fn check_keys(map: &Map<String, Value>) -> Result<(), TwinError> {
    for (key, value) in map {
        let why = if key.is_empty() {
            Some("keys must not be empty")
        } else if key.len() > 1024 {
            Some("keys must be at most 1024 bytes")
        } else if key.contains('$') {
            Some("keys must not contain '$'")
        } else if key.contains('.') {
            Some("keys must not contain '.'")
        } else if key.contains(' ') {
            Some("keys must not contain spaces")
        } else if key.chars().any(char::is_control) {
            Some("keys must not contain control characters")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(TwinError::InvalidKey { key: key.chars().take(64).collect(), why });
        }
        if let Value::Object(child) = value {
            check_keys(child)?;
        }
    }
    Ok(())
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
}
