//! The walking skeleton, end to end: create a device, patch its twin, read it back, restart
//! the hub, read it back again. The first test runs through `wrangler dev` (the code-reload
//! loop's smoke test); everything else runs under workerd directly.

use serde_json::json;
use twinhub_e2e::{Hub, Storage};

#[test]
fn device_and_twin_survive_a_restart() {
    let storage = Storage::new("skeleton");
    let hub = Hub::launch_wrangler(&storage, false, None, &[]);

    // Create: keys generated, fresh twin in Azure's shape.
    let created =
        hub.call("PUT", "/devices/thermostat-1?api-version=2021-04-12", Some(r#"{"deviceId":"thermostat-1"}"#));
    assert_eq!(created.status, 200, "{}", created.body);
    let identity = created.json();
    assert_eq!(identity["deviceId"], "thermostat-1");
    assert_eq!(identity["status"], "enabled");
    assert_eq!(identity["authentication"]["type"], "sas");
    assert_eq!(identity["authentication"]["symmetricKey"]["primaryKey"].as_str().map(str::len), Some(44));
    assert_eq!(hub.call("GET", "/devices/thermostat-1", None).json(), identity);

    let fresh = hub.call("GET", "/twins/thermostat-1", None);
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    let twin = fresh.json();
    assert_eq!(twin["version"], 2);
    assert_eq!(twin["etag"], "AAAAAAAAAAE=");
    assert_eq!(fresh.header("etag"), Some("\"AAAAAAAAAAE=\""));
    assert_eq!(twin["properties"]["desired"]["$version"], 1);
    assert!(twin["properties"]["desired"]["$metadata"]["$lastUpdated"].is_string());

    // Patch tags and desired (merge, null deletes), with the etag we read.
    let patch = json!({
        "tags": { "location": { "building": "Building-A", "floor": 3 } },
        "properties": { "desired": { "telemetryInterval": 30, "firmwareVersion": "2.0.0", "unused": null } }
    });
    let patched = hub.call_with(
        "PATCH",
        "/twins/thermostat-1",
        Some(&patch.to_string()),
        &[("Authorization", &hub.owner_token()), ("If-Match", "\"AAAAAAAAAAE=\"")],
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    let after = patched.json();
    assert_eq!(after["version"], 3);
    assert_eq!(after["etag"], "AAAAAAAAAAI=");
    assert_eq!(after["tags"]["location"]["building"], "Building-A");
    assert_eq!(after["properties"]["desired"]["telemetryInterval"], 30);
    assert_eq!(after["properties"]["desired"]["$version"], 2);
    assert_eq!(after["properties"]["desired"]["$metadata"]["firmwareVersion"]["$lastUpdatedVersion"], 2);
    assert!(after["properties"]["desired"].get("unused").is_none());

    // A second patch deletes one tag.
    let second = hub.call("PATCH", "/twins/thermostat-1", Some(r#"{"tags":{"location":{"floor":null}}}"#));
    assert_eq!(second.status, 200, "{}", second.body);
    let before_restart = hub.call("GET", "/twins/thermostat-1", None).json();
    assert_eq!(before_restart["tags"], json!({ "location": { "building": "Building-A" } }));
    assert_eq!(before_restart["version"], 4);

    // Restart wrangler dev on the same storage: everything acknowledged is still there.
    hub.stop();
    let hub = Hub::launch_wrangler(&storage, false, None, &[]);
    let after_restart = hub.call("GET", "/twins/thermostat-1", None);
    assert_eq!(after_restart.status, 200, "{}", after_restart.body);
    assert_eq!(after_restart.json(), before_restart);
    assert_eq!(hub.call("GET", "/devices/thermostat-1", None).json(), identity);

    // The fleet index has it too.
    let list = hub.call("GET", "/devices?top=10", None);
    assert_eq!(list.status, 200, "{}", list.body);
    let ids: Vec<_> =
        list.json().as_array().cloned().unwrap_or_default().iter().map(|d| d["deviceId"].clone()).collect();
    assert_eq!(ids, vec![json!("thermostat-1")]);
}

#[test]
fn delete_removes_device_twin_and_listing() {
    let storage = Storage::new("delete");
    let hub = Hub::start(&storage);
    for id in ["a-1", "b-2", "c-3"] {
        assert_eq!(hub.call("PUT", &format!("/devices/{id}"), Some("{}")).status, 200);
    }
    let list = hub.call("GET", "/devices?top=2", None).json();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "top=2 caps the list: {list}");

    let deleted =
        hub.call_with("DELETE", "/devices/b-2", None, &[("Authorization", &hub.owner_token()), ("If-Match", "\"*\"")]);
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    hub.call("GET", "/twins/b-2", None).assert_hub_error(404, "DeviceNotFound", 404_001);
    let ids: Vec<_> = hub
        .call("GET", "/devices", None)
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| d["deviceId"].clone())
        .collect();
    assert_eq!(ids, vec![json!("a-1"), json!("c-3")]);

    // Re-creating the id gives a new generation and a fresh twin.
    let again = hub.call("PUT", "/devices/b-2", Some("{}"));
    assert_eq!(again.status, 200);
    assert_eq!(hub.call("GET", "/twins/b-2", None).json()["version"], 2);
}
