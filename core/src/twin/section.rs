//! A property section (`desired` or `reported`): values, `$metadata` and `$version` (spec §1.4).

use crate::UnixMillis;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One property section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Section {
    /// The properties, without `$metadata` or `$version`.
    pub properties: Map<String, Value>,
    /// Metadata for the section root; children mirror the properties' object structure.
    pub metadata: MetaNode,
    /// `$version`: +1 per accepted write to this section; 1 when fresh.
    pub version: u64,
}

/// `$metadata` for one node: when it was last written and, in desired, by which `$version`.
/// Kept for every object level and every leaf, so removals still leave a trace on ancestors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaNode {
    /// `$lastUpdated`.
    pub updated: UnixMillis,
    /// `$lastUpdatedVersion` (desired only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Metadata of child keys, present when the node's value is an object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub children: BTreeMap<String, MetaNode>,
}

impl MetaNode {
    fn leaf(updated: UnixMillis, version: Option<u64>) -> Self {
        Self { updated, version, children: BTreeMap::new() }
    }

    fn to_json(&self, value: Option<&Value>) -> Value {
        let mut out = Map::new();
        out.insert("$lastUpdated".to_owned(), Value::String(self.updated.to_iso()));
        if let Some(v) = self.version {
            out.insert("$lastUpdatedVersion".to_owned(), Value::from(v));
        }
        // Walk the value's keys, not the metadata's, so metadata comes out in property order.
        if let Some(Value::Object(props)) = value {
            for (key, child_value) in props {
                if let Some(child) = self.children.get(key) {
                    out.insert(key.clone(), child.to_json(Some(child_value)));
                }
            }
        }
        Value::Object(out)
    }
}

impl Section {
    /// An empty section created at `now`.
    pub fn new(now: UnixMillis) -> Self {
        Self { properties: Map::new(), metadata: MetaNode::leaf(now, None), version: 1 }
    }

    /// Merges `patch` (RFC 7386: objects merge, `null` removes, anything else replaces), stamping
    /// every touched node and its ancestors with `now` and `version`, and bumps `$version`.
    pub fn merge(&mut self, patch: &Map<String, Value>, now: UnixMillis, version: Option<u64>) {
        merge_with_metadata(&mut self.properties, &mut self.metadata, patch, now, version);
        self.version += 1;
    }

    /// Replaces every property with `props`, stamping every node with `now` and `version`, and
    /// bumps `$version`.
    pub fn replace(&mut self, props: &Map<String, Value>, now: UnixMillis, version: Option<u64>) {
        self.properties = Map::new();
        self.metadata = MetaNode::leaf(now, version);
        self.merge(props, now, version);
    }

    /// The section as JSON: properties, then `$metadata` (when asked for), then `$version`.
    pub fn to_json(&self, with_metadata: bool) -> Value {
        let mut out = self.properties.clone();
        if with_metadata {
            let props = Value::Object(self.properties.clone());
            out.insert("$metadata".to_owned(), self.metadata.to_json(Some(&props)));
        }
        out.insert("$version".to_owned(), Value::from(self.version));
        Value::Object(out)
    }
}

fn merge_with_metadata(
    target: &mut Map<String, Value>,
    meta: &mut MetaNode,
    patch: &Map<String, Value>,
    now: UnixMillis,
    version: Option<u64>,
) {
    meta.updated = now;
    meta.version = version;
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
                meta.children.remove(key);
            }
            Value::Object(child_patch) => {
                let slot = target.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                    meta.children.remove(key);
                }
                let child_meta = meta.children.entry(key.clone()).or_insert_with(|| MetaNode::leaf(now, version));
                if let Value::Object(child) = slot {
                    merge_with_metadata(child, child_meta, child_patch, now, version);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
                meta.children.insert(key.clone(), MetaNode::leaf(now, version));
            }
        }
    }
}

/// Removes `null` members at every depth: a replacement document stores no nulls, as merging it
/// into an empty section would not.
pub(crate) fn strip_nulls(map: &mut Map<String, Value>) {
    map.retain(|_, v| !v.is_null());
    for value in map.values_mut() {
        if let Value::Object(child) = value {
            strip_nulls(child);
        }
    }
}

/// Plain RFC 7386 merge, for tags (which carry no metadata).
pub(crate) fn merge_plain(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(child_patch) => {
                let slot = target.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(child) = slot {
                    merge_plain(child, child_patch);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::test_support::obj;
    use serde_json::json;

    #[test]
    fn rfc7386_examples() {
        // RFC 7386 appendix A, restricted to object targets (twin sections are always objects).
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (i, (target, patch, expected)) in cases.into_iter().enumerate() {
            let mut plain = obj(target.clone());
            merge_plain(&mut plain, &obj(patch.clone()));
            assert_eq!(Value::Object(plain), expected, "plain case {i}");
            let mut s = Section { properties: obj(target), metadata: MetaNode::leaf(UnixMillis(1), None), version: 1 };
            s.merge(&obj(patch), UnixMillis(2), Some(2));
            assert_eq!(Value::Object(s.properties), expected, "metadata case {i}");
        }
    }

    #[test]
    fn metadata_on_every_level() {
        let mut s = Section::new(UnixMillis(1));
        s.merge(&obj(json!({"conditions":{"temperature":{"critical":90}}})), UnixMillis(2_000), Some(2));
        let j = s.to_json(true);
        let m = &j["$metadata"]["conditions"]["temperature"]["critical"];
        assert_eq!(m["$lastUpdatedVersion"], 2);
        assert_eq!(j["$metadata"]["conditions"]["$lastUpdatedVersion"], 2);
        // A later write to a sibling leaves the first leaf's stamp alone but bumps ancestors.
        s.merge(&obj(json!({"conditions":{"humidity":40}})), UnixMillis(3_000), Some(3));
        let j = s.to_json(true);
        assert_eq!(j["$metadata"]["conditions"]["temperature"]["critical"]["$lastUpdatedVersion"], 2);
        assert_eq!(j["$metadata"]["conditions"]["$lastUpdatedVersion"], 3);
        assert_eq!(j["$version"], 3);
    }
}
