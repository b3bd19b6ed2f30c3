//! IoT Plug and Play with the real Python SDKs: a device on `azure-iot-device` 2.14.0 announcing
//! its model id, on MQTT over TLS (8883) and over WebSocket (tests/python/test_pnp.py), and
//! `azure-iot-hub` 2.7.0's `DigitalTwinClient` (tests/python/test_digital_twin.py).

use twinhub_e2e::{pytest, Hub, Storage};

#[test]
fn a_device_announces_its_model_with_the_python_sdk() {
    let storage = Storage::new("pnp");
    let hub = Hub::start_https_on_443(&storage);
    let transports = if hub.mqtt_port().is_some() { "mqtt,websocket" } else { "websocket" };
    for suite in ["test_pnp.py", "test_digital_twin.py"] {
        match pytest(suite, &hub.owner_connection_string(), &[("TWINHUB_DEVICE_TRANSPORTS", transports)]) {
            Ok(stdout) => println!("{stdout}"),
            Err(output) => panic!("{suite} failed:\n{output}\nhub:\n{}", hub.log_tail()),
        }
    }
}
