//! The real `azure-iot-device` 2.14.0 Python SDK running the article's device on its default
//! transport (MQTT over TLS on 8883) and on MQTT over WebSocket (443), plus catch-up on
//! reconnect and one session across transports (tests/python/test_device_sdk.py).

use twinhub_e2e::{pytest, Hub, Storage};

#[test]
fn article_device_with_azure_iot_device_sdk() {
    let storage = Storage::new("python-device");
    let hub = Hub::start_https_on_443(&storage);
    // Under wrangler dev (TWINHUB_TEST_RUNTIME=wrangler) there is no 8883: WebSocket only.
    let transports = if hub.mqtt_port().is_some() { "mqtt,websocket" } else { "websocket" };
    match pytest("test_device_sdk.py", &hub.owner_connection_string(), &[("TWINHUB_DEVICE_TRANSPORTS", transports)]) {
        Ok(stdout) => println!("{stdout}"),
        Err(output) => panic!("azure-iot-device suite failed:\n{output}\nwrangler:\n{}", hub.log_tail()),
    }
}
