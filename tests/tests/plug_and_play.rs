//! IoT Plug and Play with the real `azure-iot-device` 2.14.0 Python SDK: a device announcing its
//! model id, on MQTT over TLS (8883) and over WebSocket (tests/python/test_pnp.py).

use twinhub_e2e::{pytest, Hub, Storage};

#[test]
fn a_device_announces_its_model_with_the_python_sdk() {
    let storage = Storage::new("pnp");
    let hub = Hub::start_https_on_443(&storage);
    let transports = if hub.mqtt_port().is_some() { "mqtt,websocket" } else { "websocket" };
    match pytest("test_pnp.py", &hub.owner_connection_string(), &[("TWINHUB_DEVICE_TRANSPORTS", transports)]) {
        Ok(stdout) => println!("{stdout}"),
        Err(output) => panic!("Plug and Play suite failed:\n{output}\nhub:\n{}", hub.log_tail()),
    }
}
