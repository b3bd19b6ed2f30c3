//! The fleet index follows a change of its shard count (`FLEET_INDEX_SHARDS`) by itself: after
//! the count grows or shrinks, every device is listed once, counted once and found by its
//! queries, with nothing rebuilt by hand (`twinhub_core::fleet`, `objects::fleet_index`).

use serde_json::json;
use std::time::{Duration, Instant};
use twinhub_core::fleet::shard_of;
use twinhub_core::mqtt::ConnectReturnCode;
use twinhub_e2e::{bulk_create, Hub, MqttDevice, Storage};

/// Every device id the index lists, page by page, in the order it answers (duplicates kept).
fn listed(hub: &Hub) -> Vec<String> {
    let mut ids = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let token = hub.owner_token();
        let mut headers = vec![("Authorization", token.as_str()), ("x-ms-max-item-count", "100")];
        if let Some(c) = &continuation {
            headers.push(("x-ms-continuation", c.as_str()));
        }
        let body = json!({ "query": "SELECT deviceId FROM devices" }).to_string();
        let reply = hub.call_with("POST", "/devices/query", Some(&body), &headers);
        assert_eq!(reply.status, 200, "{}", reply.body);
        ids.extend(reply.json().as_array().unwrap().iter().map(|d| d["deviceId"].as_str().unwrap().to_owned()));
        continuation = reply.header("x-ms-continuation").filter(|c| !c.is_empty()).map(str::to_owned);
        if continuation.is_none() {
            return ids;
        }
    }
}

fn counted(hub: &Hub, filter: &str) -> u64 {
    let body = json!({ "query": format!("SELECT COUNT() AS n FROM devices {filter}") }).to_string();
    hub.call("POST", "/devices/query", Some(&body)).json()[0]["n"].as_u64().unwrap_or(0)
}

/// Waits until the index lists exactly `expected` (each once), counts them, and its
/// statistics agree; panics with what it saw after a minute.
fn wait_settled(hub: &Hub, expected: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids = listed(hub);
        let total = hub.call("GET", "/statistics/devices", None).json()["totalDeviceCount"].as_u64();
        if ids == expected && counted(hub, "") == expected.len() as u64 && total == Some(expected.len() as u64) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "listed {} ids ({} distinct), statistics {total:?}, expected {}; the hub's log ends:\n{}",
            ids.len(),
            ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
            expected.len(),
            hub.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_index_follows_its_shard_count_without_a_rebuild() {
    let storage = Storage::new("index-shards");
    let mut expected: Vec<String> = (0..300).map(|i| format!("d-{i:05}")).collect();
    {
        let hub = Hub::start_with_vars(&storage, &[("FLEET_INDEX_SHARDS", "2")]);
        bulk_create(&hub, "d", 300);
        for i in 0..10 {
            let tagged = hub.call("PATCH", &format!("/twins/d-{i:05}"), Some(r#"{"tags":{"site":"north"}}"#));
            assert_eq!(tagged.status, 200, "{}", tagged.body);
        }
        wait_settled(&hub, &expected);
        hub.stop();
    }
    {
        // Grown: rows move to the new shards; devices written now land there directly. First,
        // before anything else has called the index: a device whose new shard is a new one
        // connects (its new shard finds it in its previous one; it used to be refused).
        let hub = Hub::start_with_vars(&storage, &[("FLEET_INDEX_SHARDS", "5")]);
        let moved = expected
            .iter()
            .find(|id| shard_of(id, 5) >= 2 && shard_of(id, 2) != shard_of(id, 5))
            .expect("a device on a new shard");
        let key = hub.device_key(moved);
        let token = twinhub_core::auth::sign(
            &format!("{}/devices/{moved}", hub.host()),
            &key,
            None,
            twinhub_e2e::now_secs() + 600,
        )
        .expect("a device token");
        let (_device, code) = MqttDevice::connect_with_token(&hub, moved, &token);
        assert_eq!(code, ConnectReturnCode::Accepted, "{moved} connects while the index rebalances");
        wait_settled(&hub, &expected);
        assert_eq!(counted(&hub, "WHERE tags.site = 'north'"), 10, "queries see the moved twins");
        bulk_create(&hub, "e", 20);
        expected.extend((0..20).map(|i| format!("e-{i:05}")));
        let tagged = hub.call("PATCH", "/twins/d-00000", Some(r#"{"tags":{"site":"south"}}"#));
        assert_eq!(tagged.status, 200, "{}", tagged.body);
        wait_settled(&hub, &expected);
        hub.stop();
    }
    // Shrunk: the shards past the new count are woken and hand everything over.
    let hub = Hub::start_with_vars(&storage, &[("FLEET_INDEX_SHARDS", "3")]);
    wait_settled(&hub, &expected);
    assert_eq!(counted(&hub, "WHERE tags.site = 'north'"), 9);
    assert_eq!(counted(&hub, "WHERE tags.site = 'south'"), 1, "the newest twin won, not the moved copy");
    let twin = hub.call("GET", "/twins/e-00019", None);
    assert_eq!(twin.status, 200, "{}", twin.body);
}
