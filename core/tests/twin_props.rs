//! Property tests of the twin rules: random patches against a reference merge, counters,
//! metadata coverage, size accounting, and all-or-nothing rejection.

use proptest::prelude::*;
use serde_json::{Map, Value};
use twinhub_core::twin::limits::{section_size, MAX_TAGS_BYTES};
use twinhub_core::twin::{merge_patch_between, ReportedPatch, ServicePatch, Twin};
use twinhub_core::UnixMillis;

/// RFC 7386, written independently of core's.
fn reference_merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let mut base = match target.remove(k) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                reference_merge(&mut base, p);
                target.insert(k.clone(), Value::Object(base));
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

/// The documented size algorithm, written independently of core's.
fn reference_size(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| k.len() + reference_size(v)).sum(),
        Value::Array(a) => a.iter().map(reference_size).sum(),
        Value::String(s) => s.chars().filter(|c| !c.is_control()).count(),
        Value::Number(_) => 8,
        Value::Bool(_) => 4,
        Value::Null => 0,
    }
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "temp", "firmwareVersion", "location", "ünï"]).prop_map(str::to_owned)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1_000_000i64..1_000_000).prop_map(Value::from),
        "[a-z\\u{1}é]{0,12}".prop_map(Value::String),
        prop::collection::vec((-5i64..5).prop_map(Value::from), 0..3).prop_map(Value::Array),
    ]
}

fn patch_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop::collection::btree_map(key(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
    })
}

fn patch() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(key(), patch_value(), 0..5).prop_map(|m| m.into_iter().collect())
}

/// Every object level and leaf of `props` has a metadata node, and metadata has no extra keys.
fn metadata_covers(props: &Map<String, Value>, meta: &Value) -> bool {
    let Value::Object(meta) = meta else { return false };
    if !meta.contains_key("$lastUpdated") {
        return false;
    }
    let children: Vec<&String> = meta.keys().filter(|k| !k.starts_with('$')).collect();
    if children.len() != props.len() {
        return false;
    }
    props.iter().all(|(k, v)| match (v, meta.get(k)) {
        (Value::Object(child), Some(m)) => metadata_covers(child, m),
        (_, Some(Value::Object(m))) => m.contains_key("$lastUpdated") && m.keys().all(|k| k.starts_with('$')),
        _ => false,
    })
}

fn desired_props(twin: &Twin) -> Map<String, Value> {
    twin.desired.properties.clone()
}

proptest! {
    #[test]
    fn service_patches_equal_reference_merge(patches in prop::collection::vec((patch(), patch()), 1..6)) {
        let mut twin = Twin::new(UnixMillis(1_000));
        let (mut tags, mut desired) = (Map::new(), Map::new());
        for (i, (t, d)) in patches.iter().enumerate() {
            let body = serde_json::json!({ "tags": t, "properties": { "desired": d } }).to_string();
            let parsed = ServicePatch::parse(&body).unwrap();
            let before = (twin.version, twin.etag, twin.desired.version, twin.reported.version);
            twin.apply_service_patch(&parsed, UnixMillis(2_000 + i as u64)).unwrap();
            reference_merge(&mut tags, t);
            reference_merge(&mut desired, d);
            prop_assert_eq!(&twin.tags, &tags);
            prop_assert_eq!(&desired_props(&twin), &desired);
            // Counters: every service write moves version and etag by one, desired $version by
            // one (desired was in the patch), reported not at all.
            prop_assert_eq!((twin.version, twin.etag, twin.desired.version, twin.reported.version),
                (before.0 + 1, before.1 + 1, before.2 + 1, before.3));
            let rendered = twin.desired.to_json(true);
            prop_assert!(metadata_covers(&desired, &rendered["$metadata"]), "metadata: {}", rendered);
        }
    }

    #[test]
    fn reported_patches_merge_and_leave_the_etag(patches in prop::collection::vec(patch(), 1..6)) {
        let mut twin = Twin::new(UnixMillis(1));
        let mut reported = Map::new();
        for p in &patches {
            let parsed = ReportedPatch::parse(Value::Object(p.clone()).to_string().as_bytes()).unwrap();
            let (version, etag, rv) = (twin.version, twin.etag, twin.reported.version);
            twin.apply_reported_patch(&parsed, UnixMillis(5)).unwrap();
            reference_merge(&mut reported, p);
            prop_assert_eq!(&twin.reported.properties, &reported);
            prop_assert_eq!((twin.version, twin.etag, twin.reported.version), (version + 1, etag, rv + 1));
            prop_assert!(metadata_covers(&reported, &twin.reported.to_json(true)["$metadata"]));
            prop_assert!(twin.reported.to_json(true)["$metadata"].get("$lastUpdatedVersion").is_none());
        }
    }

    #[test]
    fn patch_between_sections_reproduces_the_edit(a in patch(), b in patch()) {
        // Stored sections hold no nulls: build them by merging into empty ones.
        let (mut old, mut new) = (Map::new(), Map::new());
        reference_merge(&mut old, &a);
        reference_merge(&mut new, &b);
        let patch = merge_patch_between(&old, &new);
        let mut applied = old.clone();
        reference_merge(&mut applied, &patch);
        prop_assert_eq!(applied, new);
    }

    #[test]
    fn size_matches_documented_algorithm(p in patch()) {
        prop_assert_eq!(section_size(&p), reference_size(&Value::Object(p.clone())));
    }

    #[test]
    fn rejected_write_changes_nothing(p in patch(), fill in 1usize..4) {
        // Grow tags towards the 8 KB limit, then try a patch; if it is refused the twin is
        // exactly as before, counters included.
        let mut twin = Twin::new(UnixMillis(1));
        for i in 0..fill {
            let body = serde_json::json!({ "tags": { format!("pad{i}"): "x".repeat(2_500) } }).to_string();
            let _ = twin.apply_service_patch(&ServicePatch::parse(&body).unwrap(), UnixMillis(2));
        }
        let before = twin.clone();
        let body = serde_json::json!({ "tags": { "big": "y".repeat(3_000), "p": p } }).to_string();
        let parsed = ServicePatch::parse(&body).unwrap();
        match twin.apply_service_patch(&parsed, UnixMillis(3)) {
            Ok(_) => prop_assert!(section_size(&twin.tags) <= MAX_TAGS_BYTES),
            Err(_) => prop_assert_eq!(twin, before),
        }
    }
}
