use super::*;
use serde_json::json;

const T0: u64 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS;

#[test]
fn the_window_is_the_last_hour_of_whole_minutes() {
    let (from, to) = window(T0 + 1_234);
    assert_eq!(to, T0 + MINUTE_MS);
    assert_eq!(to - from, SPAN_MS);
}

#[test]
fn partitions_add_up_per_minute_and_empty_minutes_are_zero() {
    let a = PartitionActivity { minutes: vec![(0, 3, 1), (2, 5, 0)], alerting: vec![] };
    let b = PartitionActivity { minutes: vec![(2, 1, 1), (99, 7, 7)], alerting: vec![] };
    let series = activity(T0, T0 + 3 * MINUTE_MS, &[a, b]);
    let counts: Vec<(u64, u64)> = series.iter().map(|b| (b.messages, b.alerts)).collect();
    assert_eq!(counts, vec![(3, 1), (0, 0), (6, 1)]);
    assert_eq!(series[1].start, T0 + MINUTE_MS);
}

#[test]
fn connected_carries_each_shards_last_sample_and_ends_with_now() {
    // Shard one sampled before the window and at minute 2; shard two at minute 1 first.
    let one = vec![(T0 - 5 * MINUTE_MS, 4), (T0 + 2 * MINUTE_MS, 6)];
    let two = vec![(T0 + MINUTE_MS, 10)];
    let points = connected(T0, T0 + 4 * MINUTE_MS, &[one.clone(), two], 17);
    let counts: Vec<Option<u64>> = points.iter().map(|p| p.connected).collect();
    // Minute 0: shard two had not sampled yet, so the sum is not known (4 would be a dip).
    assert_eq!(counts, vec![None, Some(14), Some(16), Some(17)]);
    // A shard that never sampled leaves every minute unknown, except now.
    let counts: Vec<Option<u64>> =
        connected(T0, T0 + 3 * MINUTE_MS, &[one, vec![]], 3).iter().map(|p| p.connected).collect();
    assert_eq!(counts, vec![None, None, Some(3)]);
}

#[test]
fn alerts_group_by_a_twin_path_with_unset_apart() {
    let twins: HashMap<String, Value> = [
        ("a".to_owned(), json!({ "tags": { "location": { "building": "A" } } })),
        ("b".to_owned(), json!({ "tags": { "location": { "building": "B" } } })),
        ("c".to_owned(), json!({ "tags": { "location": { "building": "A" } } })),
        ("d".to_owned(), json!({ "tags": {} })),
    ]
    .into_iter()
    .collect();
    let partitions = [
        PartitionActivity { minutes: vec![], alerting: vec![("a".into(), 2), ("b".into(), 5)] },
        PartitionActivity { minutes: vec![], alerting: vec![("c".into(), 4), ("d".into(), 1), ("gone".into(), 1)] },
    ];
    let busiest = alerting(&partitions);
    assert_eq!(busiest[0], ("b".to_owned(), 5));
    // What the index answers for the path: the defining twins' values only.
    let values: HashMap<String, Value> =
        twins.iter().filter_map(|(id, t)| Some((id.clone(), t["tags"]["location"].get("building")?.clone()))).collect();
    let groups = alert_groups(&busiest, &values);
    let shown: Vec<(Option<Value>, u64)> = groups.into_iter().map(|g| (g.value, g.alerts)).collect();
    assert_eq!(shown, vec![(Some(json!("A")), 6), (Some(json!("B")), 5), (None, 2)]);
}

#[test]
fn twin_paths_are_plain_dotted_names() {
    assert_eq!(twin_path("properties.reported.$version").expect("ok").len(), 3);
    for bad in ["", "tags..x", "tags.x y", "tags.x'", "tags.x-y", "a.b.c.d.e.f.g.h.i"] {
        assert_eq!(twin_path(bad).expect_err(bad).code, ErrorCode::ArgumentInvalid, "{bad}");
    }
}
