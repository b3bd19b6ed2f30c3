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
