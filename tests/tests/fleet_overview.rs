//! The fleet overview (`GET /api/fleet/overview`, issue 21): device counts by state with drift
//! and refusals, connected devices and messages per minute over the last hour, alerts by a tag
//! path, jobs under way; and the query functions its links use (`IS_DRIFTING()`,
//! `HAS_REFUSED()`). Real devices over MQTT.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use twinhub_e2e::{Hub, MqttDevice, Storage};

fn overview(hub: &Hub, by: &str) -> Value {
    let reply = hub.call("GET", &format!("/api/fleet/overview?by={by}"), None);
    assert_eq!(reply.status, 200, "{}; the hub's log ends:\n{}", reply.body, hub.log_tail());
    reply.json()
}

fn ids(hub: &Hub, condition: &str) -> Vec<String> {
    let query = json!({ "query": format!("SELECT deviceId FROM devices WHERE {condition}") }).to_string();
    let reply = hub.call("POST", "/devices/query", Some(&query));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut ids: Vec<String> =
        reply.json().as_array().unwrap().iter().map(|r| r["deviceId"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[test]
fn the_overview_counts_the_fleet_and_its_links_select_the_devices() {
    let storage = Storage::new("fleet-overview");
    let hub = Hub::start(&storage);
    for (id, building) in [("o1", "A"), ("o2", "A"), ("o3", "B"), ("o4", "B")] {
        assert_eq!(hub.call("PUT", &format!("/devices/{id}"), Some("{}")).status, 200);
        let tags = json!({ "tags": { "location": { "building": building } } }).to_string();
        assert_eq!(hub.call("PATCH", &format!("/twins/{id}"), Some(&tags)).status, 200);
    }
    // o1 is asked for firmware it has not reported (drifting); o2 refuses its setting in Plug
    // and Play form (drifting and refused); o3 reports what it was asked (caught up).
    let desired = |id: &str, body: Value| {
        let patch = json!({ "properties": { "desired": body } }).to_string();
        assert_eq!(hub.call("PATCH", &format!("/twins/{id}"), Some(&patch)).status, 200);
    };
    desired("o1", json!({ "firmwareVersion": "2.0" }));
    desired("o2", json!({ "mode": "eco" }));
    desired("o3", json!({ "mode": "eco" }));
    let mut o1 = MqttDevice::connect(&hub, "o1");
    let mut o2 = MqttDevice::connect(&hub, "o2");
    o2.report(1, &json!({ "mode": { "value": "off", "ac": 400, "av": 2, "ad": "not supported" } }));
    {
        let mut o3 = MqttDevice::connect(&hub, "o3");
        o3.report(1, &json!({ "mode": "eco" }));
    }
    o1.send_event("o1", "", &json!({ "temperature": 30 }), 1);
    o1.send_event("o1", "alert=high_temperature", &json!({ "temperature": 30 }), 2);
    o2.send_event("o2", "alert=high_temperature", &json!({ "temperature": 30 }), 1);
    o2.send_event("o2", "alert=low_battery", &json!({ "temperature": 30 }), 2);
    // Disabled: o4.
    let created = hub.call("GET", "/devices/o4", None).json();
    let disabled = json!({ "deviceId": "o4", "status": "disabled" }).to_string();
    let etag = format!("\"{}\"", created["etag"].as_str().unwrap());
    let auth = hub.owner_token();
    let reply = hub.call_with("PUT", "/devices/o4", Some(&disabled), &[("If-Match", &etag), ("Authorization", &auth)]);
    assert_eq!(reply.status, 200, "{}", reply.body);

    // The index follows the devices' commits; wait for the last of them.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = overview(&hub, "tags.location.building");
    while seen["devices"]["connected"] != 2 || seen["devices"]["refused"] != 1 || seen["devices"]["disabled"] != 1 {
        assert!(Instant::now() < deadline, "the overview never showed the fleet: {seen}");
        std::thread::sleep(Duration::from_millis(200));
        seen = overview(&hub, "tags.location.building");
    }
    let devices = &seen["devices"];
    assert_eq!(
        (devices["total"].as_u64(), devices["enabled"].as_u64(), devices["disconnected"].as_u64()),
        (Some(4), Some(3), Some(2)),
        "{seen}"
    );
    assert_eq!((devices["drifting"].as_u64(), devices["refused"].as_u64()), (Some(2), Some(1)), "{seen}");

    // The last hour, per minute: 60 buckets, the messages and alerts sent above, the connected
    // count now as its last point.
    assert_eq!(seen["to"].as_u64().unwrap() - seen["from"].as_u64().unwrap(), 3_600_000);
    let activity = seen["activity"].as_array().expect("the event stream is on");
    assert_eq!(activity.len(), 60);
    let sum = |key: &str| activity.iter().map(|b| b[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("messages"), sum("alerts"), seen["alerts"].as_u64()), (4, 3, Some(3)), "{seen}");
    let connected = seen["connected"].as_array().unwrap();
    assert_eq!(connected.len(), 60);
    assert_eq!(connected[59]["connected"], 2);

    // Alerts by building: o1 (A) one, o2 (A) two; by a path nobody has: all unset.
    assert_eq!(seen["alertsBy"], "tags.location.building");
    assert_eq!(seen["alertGroups"], json!([{ "value": "A", "alerts": 3 }]), "{seen}");
    assert_eq!(overview(&hub, "tags.floor")["alertGroups"], json!([{ "value": null, "alerts": 3 }]));

    // Each figure's link is a query: the same devices.
    assert_eq!(ids(&hub, "IS_DRIFTING()"), ["o1", "o2"]);
    assert_eq!(ids(&hub, "HAS_REFUSED()"), ["o2"]);
    assert_eq!(ids(&hub, "NOT IS_DRIFTING() AND tags.location.building = 'B'"), ["o3", "o4"]);
    assert_eq!(ids(&hub, "connectionState = 'Connected'"), ["o1", "o2"]);
    assert_eq!(ids(&hub, "status = 'disabled'"), ["o4"]);
    // Caught up: o2 reports what it was asked, and leaves both.
    o2.report(2, &json!({ "mode": "eco" }));
    let deadline = Instant::now() + Duration::from_secs(15);
    while ids(&hub, "IS_DRIFTING()") != ["o1"] {
        assert!(Instant::now() < deadline, "o2 still drifting");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ids(&hub, "HAS_REFUSED()").is_empty());

    // Bad requests.
    hub.call("GET", "/api/fleet/overview?by=tags.x'y", None).assert_hub_error(400, "ArgumentInvalid", 400_004);
    hub.call(
        "POST",
        "/devices/query",
        Some(&json!({ "query": "SELECT * FROM devices WHERE IS_DRIFTING(tags)" }).to_string()),
    )
    .assert_hub_error(400, "ArgumentInvalid", 400_004);
    let registry_read = hub.policy_token("registryRead");
    let refused = hub.call_with("GET", "/api/fleet/overview", None, &[("Authorization", &registry_read)]);
    assert_eq!(refused.status, 401, "the overview is ServiceConnect's: {}", refused.body);
    drop((o1, o2));
    hub.stop();

    // The event stream off: counts still, no activity.
    let storage = Storage::new("fleet-overview-off");
    let off = Hub::start_with_vars(&storage, &[("EVENTHUB_PARTITIONS", "0")]);
    assert_eq!(off.call("PUT", "/devices/x", Some("{}")).status, 200);
    let seen = overview(&off, "");
    assert_eq!((seen["activity"].clone(), seen["alerts"].as_u64()), (Value::Null, Some(0)), "{seen}");
}

/// An index written before the drift columns: the shards fill them from the twins they hold
/// (their alarm, a page at a time), so `IS_DRIFTING()` and the overview count the devices that
/// drifted before the upgrade without waiting for each device's next change.
#[test]
fn an_older_index_gets_its_drift_columns_filled() {
    let storage = Storage::new("fleet-overview-backfill");
    let hub = Hub::start(&storage);
    for id in ["old-1", "old-2", "old-3"] {
        assert_eq!(hub.call("PUT", &format!("/devices/{id}"), Some("{}")).status, 200);
    }
    let patch = json!({ "properties": { "desired": { "firmwareVersion": "2.0" } } }).to_string();
    assert_eq!(hub.call("PATCH", "/twins/old-2", Some(&patch)).status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    while ids(&hub, "IS_DRIFTING()") != ["old-2"] {
        assert!(Instant::now() < deadline, "old-2 never drifting");
        std::thread::sleep(Duration::from_millis(100));
    }
    hub.stop();

    // The index shards' tables as the previous version left them: no drift columns.
    let mut stripped = 0;
    let mut dirs = vec![storage.path().join("state")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("state dir").map_while(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "sqlite") {
                let db = rusqlite::Connection::open(&path).expect("open a stored database");
                let columns: Vec<String> = db
                    .prepare("SELECT name FROM pragma_table_info('device')")
                    .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                    .unwrap_or_default();
                if columns.iter().any(|c| c == "drifting") {
                    db.execute_batch(
                        "DROP INDEX IF EXISTS device_unfilled; ALTER TABLE device DROP COLUMN drifting; \
                         ALTER TABLE device DROP COLUMN refused;",
                    )
                    .expect("drop the drift columns");
                    stripped += 1;
                }
            }
        }
    }
    assert!(stripped > 0, "no index shard database found under {}", storage.path().display());

    let hub = Hub::start(&storage);
    let deadline = Instant::now() + Duration::from_secs(15);
    while ids(&hub, "IS_DRIFTING()") != ["old-2"] {
        assert!(
            Instant::now() < deadline,
            "the older index's drift was never filled: {:?}",
            ids(&hub, "IS_DRIFTING()")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(overview(&hub, "")["devices"]["drifting"], 1);
}
