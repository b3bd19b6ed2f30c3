//! Module identities, module twins and module sessions with the real `azure-iot-hub` 2.7.0 and
//! `azure-iot-device` 2.14.0 Python SDKs (tests/python/test_modules.py), on MQTT over TLS
//! (8883, the SDK's default) and MQTT over WebSocket.

use twinhub_e2e::{pytest, Hub, Storage};

#[test]
fn modules_with_the_python_sdks() {
    let storage = Storage::new("modules");
    let hub = Hub::start_https_on_443(&storage);
    // Under wrangler dev (TWINHUB_TEST_RUNTIME=wrangler) there is no 8883: WebSocket only.
    let transports = if hub.mqtt_port().is_some() { "mqtt,websocket" } else { "websocket" };
    match pytest("test_modules.py", &hub.owner_connection_string(), &[("TWINHUB_DEVICE_TRANSPORTS", transports)]) {
        Ok(stdout) => println!("{stdout}"),
        Err(output) => panic!("module suite failed:\n{output}\nhub:\n{}", hub.log_tail()),
    }
}

use twinhub_core::mqtt::ConnectReturnCode;
use twinhub_e2e::MqttDevice;

/// What the Python suite does not reach: the module limit, every wrong token at a module's
/// CONNECT, the collections kept apart, and a module's twin under the twin limits.
#[test]
fn modules_are_bounded_and_kept_apart() {
    let storage = Storage::new("modules-bounds");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/host-1", Some("{}")).status, 200);
    for i in 0..50 {
        let reply = hub.call("PUT", &format!("/devices/host-1/modules/m{i:02}"), Some("{}"));
        assert_eq!(reply.status, 200, "module {i}: {}", reply.body);
    }
    hub.call("PUT", "/devices/host-1/modules/m50", Some("{}")).assert_hub_error(403, "TooManyModulesOnDevice", 403010);
    assert_eq!(hub.call("GET", "/devices/host-1/modules", None).json().as_array().map(Vec::len), Some(50));
    hub.call("PUT", "/devices/ghost/modules/m1", Some("{}")).assert_hub_error(404, "DeviceNotFound", 404001);
    hub.call("GET", "/devices/host-1/modules/nope", None).assert_hub_error(404, "ModuleNotFound", 404010);
    hub.call("PATCH", "/twins/host-1/modules/nope", Some("{}")).assert_hub_error(404, "ModuleNotFound", 404010);
    hub.call("PUT", "/devices/host-1/modules/m00", Some("{}")).assert_hub_error(
        409,
        "ModuleAlreadyExistsOnDevice",
        409301,
    );
    // Deleting one makes room for one; a create refused for its body gives that room back.
    assert_eq!(hub.call("DELETE", "/devices/host-1/modules/m49", None).status, 204);
    let mismatch = r#"{"moduleId":"other"}"#;
    hub.call("PUT", "/devices/host-1/modules/fresh", Some(mismatch)).assert_hub_error(400, "ArgumentInvalid", 400004);
    assert_eq!(hub.call("PUT", "/devices/host-1/modules/fresh", Some("{}")).status, 200);
    hub.call("PUT", "/devices/host-1/modules/m49", Some("{}")).assert_hub_error(403, "TooManyModulesOnDevice", 403010);

    // A module twin is under every twin limit (here: a desired section over 32 KB), and a
    // refused write changes nothing.
    let big = serde_json::json!({ "properties": { "desired": { "blob": "x".repeat(4_000), "b2": "x".repeat(4_000),
        "b3": "x".repeat(4_000), "b4": "x".repeat(4_000), "b5": "x".repeat(4_000), "b6": "x".repeat(4_000),
        "b7": "x".repeat(4_000), "b8": "x".repeat(4_000), "b9": "x".repeat(4_000) } } });
    let before = hub.call("GET", "/twins/host-1/modules/m00", None).json();
    let refused = hub.call("PATCH", "/twins/host-1/modules/m00", Some(&big.to_string()));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(hub.call("GET", "/twins/host-1/modules/m00", None).json(), before);

    // Modules are not devices in listings and statistics.
    let devices = hub.call("GET", "/devices", None).json();
    assert_eq!(devices.as_array().map(Vec::len), Some(1), "{devices}");
    assert_eq!(hub.call("GET", "/statistics/devices", None).json()["totalDeviceCount"], 1);
    let count = |text: &str| {
        let body = serde_json::json!({ "query": text }).to_string();
        hub.call("POST", "/devices/query", Some(&body)).json()[0]["n"].clone()
    };
    assert_eq!(count("SELECT COUNT() AS n FROM devices"), 1);
    assert_eq!(count("SELECT COUNT() AS n FROM devices.modules"), 50);
    assert_eq!(count("SELECT COUNT() AS n FROM devices.modules WHERE moduleId = 'fresh'"), 1);

    // CONNECT: a module with its own key; not with its device's key, a sibling's token, or
    // its own token for the device or a sibling.
    let module_key = hub.device_key("host-1/m00");
    let sibling_key = hub.device_key("host-1/m01");
    let device_key = hub.device_key("host-1");
    let own = hub.device_token("host-1/m00", &module_key);
    let (mut session, code) = MqttDevice::connect_with_token(&hub, "host-1/m00", &own);
    assert_eq!(code, ConnectReturnCode::Accepted);
    assert_eq!(session.report(1, &serde_json::json!({ "up": true })), 204);
    let twin = hub.call("GET", "/twins/host-1/modules/m00", None).json();
    assert_eq!(
        (twin["properties"]["reported"]["up"].as_bool(), twin["connectionState"].as_str()),
        (Some(true), Some("Connected"))
    );
    assert!(hub.call("GET", "/twins/host-1", None).json()["properties"]["reported"].get("up").is_none());
    for (client_id, token) in [
        ("host-1/m00", hub.device_token("host-1/m00", &device_key)),
        ("host-1/m00", hub.device_token("host-1/m01", &sibling_key)),
        ("host-1/m00", hub.device_token("host-1", &device_key)),
        ("host-1", hub.device_token("host-1/m00", &module_key)),
        ("host-1/m01", hub.device_token("host-1/m00", &module_key)),
    ] {
        let (_, code) = MqttDevice::connect_with_token(&hub, client_id, &token);
        assert_eq!(code, ConnectReturnCode::NotAuthorized, "{client_id}");
    }

    // Deleting the device deletes its modules: gone from the registry, the query, and the
    // module's session is closed.
    assert_eq!(hub.call("DELETE", "/devices/host-1", None).status, 204);
    hub.call("GET", "/devices/host-1/modules/m00", None).assert_hub_error(404, "ModuleNotFound", 404010);
    assert_eq!(count("SELECT COUNT() AS n FROM devices.modules"), 0);
    assert!(session.recv().is_none(), "the module's session ends with its device");
}
