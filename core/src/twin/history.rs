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

/// How many leading keys of `path` name its section (`tags`, or `properties.desired`).
fn section_len(path: &[&str]) -> usize {
    if path.first() == Some(&"tags") {
        1
    } else {
        2
    }
}

/// Sets `path` in nested objects under `map`, creating (or replacing non-objects with) objects.
fn set_path(map: &mut Map<String, Value>, path: &[&str], value: Value) {
    match path {
        [] => {}
        [leaf] => {
            map.insert((*leaf).to_owned(), value);
        }
        [head, rest @ ..] => {
            let entry = map.entry((*head).to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(child) = entry {
                set_path(child, rest, value);
            }
        }
    }
}

/// The service patch (`{"tags": ..., "properties": {"desired": ...}}`) that undoes `changes`:
/// each tag and desired path set back to its old value, or removed (`null`) where the change
/// added it. Reported paths are the device's and are left out. `None` when nothing is left to
/// undo. The dashboard's "revert" sends it as an ordinary PATCH, so the revert is itself a new
/// version in the history.
pub fn revert_patch(changes: &[Change]) -> Option<Value> {
    let mut patch = Map::new();
    for change in changes {
        let mut keys = change.path.split('.');
        let section: Vec<&str> = match keys.next() {
            Some("tags") => vec!["tags"],
            Some("properties") if keys.next() == Some("desired") => vec!["properties", "desired"],
            _ => continue,
        };
        let path: Vec<&str> = section.into_iter().chain(keys).collect();
        if path.len() > section_len(&path) {
            set_path(&mut patch, &path, change.old.clone().unwrap_or(Value::Null));
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn revert_undoes_tags_and_desired_only() {
        let changes = vec![
            Change { path: "properties.desired.telemetryInterval".into(), old: Some(json!(60)), new: Some(json!(7)) },
            Change { path: "properties.desired.mode".into(), old: None, new: Some(json!("eco")) },
            Change { path: "tags.location.building".into(), old: Some(json!("A")), new: Some(json!("B")) },
            Change { path: "properties.reported.temperature".into(), old: Some(json!(20)), new: Some(json!(21)) },
        ];
        assert_eq!(
            revert_patch(&changes),
            Some(json!({
                "properties": { "desired": { "telemetryInterval": 60, "mode": null } },
                "tags": { "location": { "building": "A" } }
            }))
        );
        assert_eq!(revert_patch(&changes[3..]), None);
    }

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
