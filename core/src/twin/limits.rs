//! Twin limits (spec §2.3), checked on the whole would-be result of a write before it commits.
//!
//! Size accounting follows the documented algorithm: the sum over properties of the UTF-8
//! length of the key plus the size of the value, where strings count their characters
//! (excluding control characters), numbers 8 bytes, booleans 4 bytes, and objects the sum of
//! their children. `$metadata` and `$version` are not counted. Arrays, which the documentation
//! does not cover, count the sum of their elements; `null` counts 0.

use super::TwinError;
use serde_json::{Map, Value};

/// `tags` at most 8 KB.
pub const MAX_TAGS_BYTES: usize = 8 * 1024;
/// `properties.desired` and `properties.reported` at most 32 KB each.
pub const MAX_PROPERTIES_BYTES: usize = 32 * 1024;
/// One value (a leaf, or an array as a whole) at most 4 KB.
pub const MAX_VALUE_BYTES: usize = 4 * 1024;
/// Keys at most 1 KB of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;
/// At most 10 levels of nested objects under a section's root.
pub const MAX_DEPTH: usize = 10;
/// Integers within ±2^52 (the documented range is -4503599627370496 ..= 4503599627370495).
pub const MAX_INT: i64 = 4_503_599_627_370_495;
/// The lower bound of the integer range.
pub const MIN_INT: i64 = -4_503_599_627_370_496;

/// Which section a check is about, for messages and for its size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionName {
    /// `tags`.
    Tags,
    /// `properties.desired`.
    Desired,
    /// `properties.reported`.
    Reported,
}

impl SectionName {
    /// The JSON path of the section.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tags => "tags",
            Self::Desired => "properties.desired",
            Self::Reported => "properties.reported",
        }
    }

    fn max_bytes(self) -> usize {
        match self {
            Self::Tags => MAX_TAGS_BYTES,
            Self::Desired | Self::Reported => MAX_PROPERTIES_BYTES,
        }
    }
}

/// The documented size of a section's properties.
pub fn section_size(props: &Map<String, Value>) -> usize {
    props.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// The documented size of one value.
pub fn value_size(v: &Value) -> usize {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 4,
        Value::Number(_) => 8,
        Value::String(s) => s.chars().filter(|c| !c.is_control()).count(),
        Value::Array(items) => items.iter().map(value_size).sum(),
        Value::Object(map) => section_size(map),
    }
}

/// Checks keys, values and depth of a patch (before merging): every rule that does not depend
/// on what the section already holds.
pub fn check_patch(section: SectionName, patch: &Map<String, Value>) -> Result<(), TwinError> {
    check_object(section, patch, &mut Vec::new())
}

/// Checks the size of a section as it would be after the write.
pub fn check_section_size(section: SectionName, props: &Map<String, Value>) -> Result<(), TwinError> {
    let size = section_size(props);
    if size > section.max_bytes() {
        return Err(TwinError::SectionTooLarge { section: section.as_str(), size, max: section.max_bytes() });
    }
    Ok(())
}

fn check_object(section: SectionName, map: &Map<String, Value>, path: &mut Vec<String>) -> Result<(), TwinError> {
    for (key, value) in map {
        check_key(section, key, path)?;
        path.push(key.clone());
        check_value(section, value, path)?;
        path.pop();
    }
    Ok(())
}

fn check_value(section: SectionName, value: &Value, path: &mut Vec<String>) -> Result<(), TwinError> {
    match value {
        Value::Object(child) => {
            check_depth(section, path)?;
            check_object(section, child, path)
        }
        Value::Array(items) => {
            check_leaf_size(section, value, path)?;
            for item in items {
                check_array_item(section, item, path)?;
            }
            Ok(())
        }
        _ => {
            check_number(section, value, path)?;
            check_leaf_size(section, value, path)
        }
    }
}

/// Array elements: numbers in range, nested objects with valid keys; sizes were counted with the
/// array as a whole.
fn check_array_item(section: SectionName, item: &Value, path: &mut Vec<String>) -> Result<(), TwinError> {
    match item {
        Value::Object(child) => {
            check_depth(section, path)?;
            for (key, value) in child {
                check_key(section, key, path)?;
                path.push(key.clone());
                check_array_item(section, value, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|i| check_array_item(section, i, path)),
        _ => check_number(section, item, path),
    }
}

/// An object whose key path is `path` sits `path.len()` levels under the section root.
fn check_depth(section: SectionName, path: &[String]) -> Result<(), TwinError> {
    if path.len() > MAX_DEPTH {
        return Err(TwinError::TooDeep { path: display_path(section, path), max: MAX_DEPTH });
    }
    Ok(())
}

fn check_leaf_size(section: SectionName, value: &Value, path: &[String]) -> Result<(), TwinError> {
    // Strings are limited by their UTF-8 bytes ("strings UTF-8 ≤ 4 KB"); other values by the
    // documented size.
    let size = match value {
        Value::String(s) => s.len(),
        other => value_size(other),
    };
    if size > MAX_VALUE_BYTES {
        return Err(TwinError::ValueTooLarge { path: display_path(section, path), size, max: MAX_VALUE_BYTES });
    }
    Ok(())
}

fn check_number(section: SectionName, value: &Value, path: &[String]) -> Result<(), TwinError> {
    let Value::Number(n) = value else { return Ok(()) };
    let in_range = match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => (MIN_INT..=MAX_INT).contains(&i),
        (None, Some(_)) => false, // above i64::MAX, so above 2^52
        (None, None) => true,     // a float
    };
    if !in_range {
        return Err(TwinError::IntegerOutOfRange { path: display_path(section, path), value: n.to_string() });
    }
    Ok(())
}

fn check_key(section: SectionName, key: &str, path: &[String]) -> Result<(), TwinError> {
    let why = if key.is_empty() {
        Some("keys must not be empty")
    } else if key.len() > MAX_KEY_BYTES {
        Some("keys must be at most 1024 bytes of UTF-8")
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
    match why {
        Some(why) => {
            Err(TwinError::InvalidKey { key: key.chars().take(64).collect(), at: display_path(section, path), why })
        }
        None => Ok(()),
    }
}

fn display_path(section: SectionName, path: &[String]) -> String {
    let mut out = section.as_str().to_owned();
    for p in path {
        out.push('.');
        out.push_str(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::test_support::obj;
    use serde_json::json;

    #[test]
    fn size_follows_documented_algorithm() {
        // "ab" (2) + 8; "c" (1) + 4; "d" (1) + "héllo" (5 chars) ; "e" (1) + {"f" (1) + 8}
        let props = obj(json!({"ab": 1, "c": true, "d": "héllo", "e": {"f": 2.5}}));
        assert_eq!(section_size(&props), 2 + 8 + 1 + 4 + 1 + 5 + 1 + 1 + 8);
        // Control characters do not count.
        assert_eq!(value_size(&json!("a\u{1}b")), 2);
    }

    #[test]
    fn depth_ten_is_the_documented_maximum() {
        let ok = json!({"one":{"two":{"three":{"four":{"five":{"six":{"seven":{"eight":{"nine":{"ten":{"property":1}}}}}}}}}}});
        assert_eq!(check_patch(SectionName::Tags, &obj(ok)), Ok(()));
        let deep = json!({"one":{"two":{"three":{"four":{"five":{"six":{"seven":{"eight":{"nine":{"ten":{"eleven":{"p":1}}}}}}}}}}}});
        assert!(matches!(check_patch(SectionName::Tags, &obj(deep)), Err(TwinError::TooDeep { .. })));
    }

    #[test]
    fn integers_in_range() {
        assert_eq!(check_patch(SectionName::Desired, &obj(json!({"a": 4_503_599_627_370_495_i64}))), Ok(()));
        assert_eq!(check_patch(SectionName::Desired, &obj(json!({"a": -4_503_599_627_370_496_i64}))), Ok(()));
        assert_eq!(check_patch(SectionName::Desired, &obj(json!({"a": 1.5e300}))), Ok(()));
        for bad in [
            json!({"a": 9_007_199_254_740_992_i64}),
            json!({"a": u64::MAX}),
            json!({"a": [1, 4_503_599_627_370_496_i64]}),
        ] {
            assert!(matches!(check_patch(SectionName::Desired, &obj(bad)), Err(TwinError::IntegerOutOfRange { .. })));
        }
    }

    #[test]
    fn value_limit_is_4kb() {
        assert_eq!(check_patch(SectionName::Desired, &obj(json!({"a": "x".repeat(4096)}))), Ok(()));
        let err = check_patch(SectionName::Desired, &obj(json!({"a": {"b": "x".repeat(4097)}}))).unwrap_err();
        assert_eq!(err, TwinError::ValueTooLarge { path: "properties.desired.a.b".into(), size: 4097, max: 4096 });
    }

    #[test]
    fn section_limits() {
        let big: Map<String, Value> = (0..3).map(|i| (format!("k{i}"), json!("x".repeat(4000)))).collect();
        assert!(matches!(check_section_size(SectionName::Tags, &big), Err(TwinError::SectionTooLarge { .. })));
        assert_eq!(check_section_size(SectionName::Desired, &big), Ok(()));
    }

    #[test]
    fn keys() {
        for bad in ["a$b", "a.b", "a b", "a\u{7}b", ""] {
            assert!(
                matches!(check_patch(SectionName::Tags, &obj(json!({ bad: 1 }))), Err(TwinError::InvalidKey { .. })),
                "{bad:?}"
            );
        }
        let long = "k".repeat(1025);
        assert!(check_patch(SectionName::Tags, &obj(json!({ long: 1 }))).is_err());
        assert_eq!(check_patch(SectionName::Tags, &obj(json!({"ünïcode-ok_1": [1, {"x": null}]}))), Ok(()));
    }
}
