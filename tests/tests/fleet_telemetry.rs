//! Fleet-wide telemetry (issue 21's hub side): a field's series over the devices a condition
//! selects and the newest alerts, read from the event stream's partitions, with real devices
//! publishing over MQTT; and the bad requests.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use twinhub_e2e::{Hub, MqttDevice, Storage};

fn series(hub: &Hub, request: Value) -> Value {
    let reply = hub.call("POST", "/api/fleet/telemetry", Some(&request.to_string()));
    assert_eq!(reply.status, 200, "{}; the hub's log ends:\n{}", reply.body, hub.log_tail());
    reply.json()
}

fn alerts(hub: &Hub, request: Value) -> Vec<Value> {
    let reply = hub.call("POST", "/api/fleet/alerts", Some(&request.to_string()));
    assert_eq!(reply.status, 200, "{}; the hub's log ends:\n{}", reply.body, hub.log_tail());
    reply.json()["alerts"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_field_and_the_alerts_across_the_devices_a_condition_selects() {
    let storage = Storage::new("fleet-telemetry");
    let hub = Hub::start(&storage);
    let fleet = [("a1", "A", [20.0, 22.0]), ("a2", "A", [24.0, 26.0]), ("b1", "B", [40.0, 60.0])];
    for (id, building, readings) in fleet {
        assert_eq!(hub.call("PUT", &format!("/devices/{id}"), Some("{}")).status, 200);
        let tags = json!({ "tags": { "location": { "building": building } } }).to_string();
        assert_eq!(hub.call("PATCH", &format!("/twins/{id}"), Some(&tags)).status, 200);
        let mut device = MqttDevice::connect(&hub, id);
        for (n, t) in readings.into_iter().enumerate() {
            device.send_event(id, "", &json!({ "temperature": t, "humidity": 50 }), n as u16 + 1);
        }
        // Not a number, and not JSON: neither counts in a series.
        device.send_event(id, "", &json!({ "temperature": "hot" }), 10);
        device.send_event(id, "", &json!("text"), 11);
        if building == "A" && id == "a1" || building == "B" {
            device.send_event(id, "alert=high_temperature", &json!({ "temperature": 80 }), 12);
        }
    }
    // The conditions below are answered from the fleet index; wait until it has the tags.
    let deadline = Instant::now() + Duration::from_secs(10);
    let tagged = json!({ "query": "SELECT COUNT() AS n FROM devices WHERE tags.location.building = 'A'" }).to_string();
    while hub.call("POST", "/devices/query", Some(&tagged)).json()[0]["n"] != 2 {
        assert!(Instant::now() < deadline, "the index never showed the tags");
        std::thread::sleep(Duration::from_millis(100));
    }

    let all = series(&hub, json!({ "field": "temperature", "buckets": 1 }));
    let bucket = &all["buckets"][0];
    assert_eq!(all["buckets"].as_array().unwrap().len(), 1, "{all}");
    assert_eq!(bucket["count"], 8, "six readings and two alerts: {all}");
    assert_eq!((bucket["min"].as_f64(), bucket["max"].as_f64()), (Some(20.0), Some(80.0)));
    assert_eq!(all["devices"], Value::Null, "no condition: every device");

    let a = series(&hub, json!({ "condition": "tags.location.building = 'A'", "field": "temperature", "buckets": 1 }));
    let bucket = &a["buckets"][0];
    assert_eq!((bucket["count"].as_u64(), bucket["max"].as_f64()), (Some(5), Some(80.0)), "{a}");
    assert_eq!(bucket["avg"].as_f64(), Some((20.0 + 22.0 + 24.0 + 26.0 + 80.0) / 5.0));
    assert_eq!(a["devices"], 2);
    let nested = series(&hub, json!({ "field": "humidity", "buckets": 10 }));
    assert_eq!(nested["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum::<u64>(), 6);
    let none = series(&hub, json!({ "condition": "tags.location.building = 'Z'", "field": "temperature" }));
    assert_eq!((none["devices"].as_u64(), none["buckets"].as_array().map(Vec::len)), (Some(0), Some(0)));

    let every = alerts(&hub, json!({}));
    assert_eq!(every.len(), 2, "{every:?}");
    assert_eq!(every[0]["deviceId"], "b1", "newest first");
    let in_a = alerts(&hub, json!({ "condition": "tags.location.building = 'A'" }));
    assert_eq!(in_a.len(), 1);
    assert_eq!((&in_a[0]["deviceId"], &in_a[0]["alert"]), (&json!("a1"), &json!("high_temperature")));
    assert_eq!(in_a[0]["body"]["temperature"], 80);
    assert_eq!(alerts(&hub, json!({ "limit": 1 })).len(), 1);
    let future = crate_now_ms() + 60_000;
    assert!(alerts(&hub, json!({ "since": future })).is_empty());

    // Bad requests: each its IoT Hub status and code, nothing answered from a half-read request.
    let bad = |path: &str, body: &str, status: u16, name: &str, code: u64| {
        hub.call("POST", path, Some(body)).assert_hub_error(status, name, code);
    };
    bad("/api/fleet/telemetry", "{", 400, "IotHubFormatError", 400_006);
    bad("/api/fleet/telemetry", r#"{"field":"temperature","colour":1}"#, 400, "ArgumentInvalid", 400_004);
    bad("/api/fleet/telemetry", r#"{"field":"temp'); DROP TABLE event; --"}"#, 400, "ArgumentInvalid", 400_004);
    bad("/api/fleet/telemetry", r#"{"field":""}"#, 400, "ArgumentInvalid", 400_004);
    bad("/api/fleet/telemetry", r#"{"field":"t","from":5,"to":5}"#, 400, "ArgumentInvalid", 400_004);
    bad("/api/fleet/telemetry", r#"{"field":"t","buckets":5000}"#, 400, "ArgumentInvalid", 400_004);
    bad("/api/fleet/telemetry", r#"{"field":"t","condition":"tags.x ="}"#, 400, "ArgumentInvalid", 400_004);
    bad("/api/fleet/alerts", r#"{"limit":"many"}"#, 400, "ArgumentInvalid", 400_004);
    let anonymous = hub.call_with("POST", "/api/fleet/alerts", Some("{}"), &[]);
    assert_eq!(anonymous.status, 401);
    let registry_read = hub.policy_token("registryRead");
    let refused = hub.call_with("POST", "/api/fleet/alerts", Some("{}"), &[("Authorization", &registry_read)]);
    assert_eq!(refused.status, 401, "telemetry is ServiceConnect's: {}", refused.body);
    hub.stop();

    let off = Hub::start_with_vars(&Storage::new("fleet-telemetry-off"), &[("EVENTHUB_PARTITIONS", "0")]);
    off.call("POST", "/api/fleet/alerts", Some("{}")).assert_hub_error(501, "FeatureUnavailable", 501_001);
}

fn crate_now_ms() -> u64 {
    twinhub_e2e::now_secs() * 1000
}
