//! What a write changed, path by path: the twin history's unit (twinhub's own feature).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One changed value. `old` is absent for an added path, `new` for a removed one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Dotted path from the twin root, e.g. `properties.desired.telemetryInterval`.
    pub path: String,
    /// The value before the write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// The value after the write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// The leaf-level differences between two versions of a section, under `prefix`. Objects are
/// walked; anything else (including arrays) is compared whole.
pub fn diff(prefix: &str, old: &Map<String, Value>, new: &Map<String, Value>, out: &mut Vec<Change>) {
    for (key, old_value) in old {
        let path = format!("{prefix}.{key}");
        match (old_value, new.get(key)) {
            (Value::Object(a), Some(Value::Object(b))) => diff(&path, a, b, out),
            (a, Some(b)) if a == b => {}
            (a, b) => out.push(Change { path, old: Some(a.clone()), new: b.cloned() }),
        }
    }
    for (key, new_value) in new {
        if !old.contains_key(key) {
            out.push(Change { path: format!("{prefix}.{key}"), old: None, new: Some(new_value.clone()) });
        }
    }
}

/// The RFC 7386 merge patch that turns `old` into `new`: changed and added keys with their new
/// values, removed keys as `null`, nested objects as nested patches. What the dashboard sends
/// when an operator edits a whole section.
pub fn merge_patch_between(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for (key, old_value) in old {
        match (old_value, new.get(key)) {
            (_, None) => {
                patch.insert(key.clone(), Value::Null);
            }
            (Value::Object(a), Some(Value::Object(b))) => {
                let child = merge_patch_between(a, b);
                if !child.is_empty() {
                    patch.insert(key.clone(), Value::Object(child));
                }
            }
            (a, Some(b)) if a == b => {}
            (_, Some(b)) => {
                patch.insert(key.clone(), b.clone());
            }
        }
    }
    for (key, value) in new {
        if !old.contains_key(key) {
            patch.insert(key.clone(), value.clone());
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_between_round_trips() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "gone": true, "obj": {"x": 1}});
        let new = json!({"a": 1, "b": {"c": 5, "d": 3}, "added": [1], "obj": 7});
        let patch = merge_patch_between(old.as_object().unwrap(), new.as_object().unwrap());
        assert_eq!(Value::Object(patch.clone()), json!({"b": {"c": 5}, "gone": null, "obj": 7, "added": [1]}));
        let mut applied = old.as_object().unwrap().clone();
        crate::twin::section::merge_plain(&mut applied, &patch);
        assert_eq!(Value::Object(applied), new);
    }

    #[test]
    fn leaf_changes() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "gone": true});
        let new = json!({"a": 1, "b": {"c": 5, "d": 3}, "added": [1]});
        let mut out = Vec::new();
        diff("tags", old.as_object().unwrap(), new.as_object().unwrap(), &mut out);
        assert_eq!(
            out,
            vec![
                Change { path: "tags.b.c".into(), old: Some(json!(2)), new: Some(json!(5)) },
                Change { path: "tags.gone".into(), old: Some(json!(true)), new: None },
                Change { path: "tags.added".into(), old: None, new: Some(json!([1])) },
            ]
        );
    }
}
