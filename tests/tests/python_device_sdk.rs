//! The real `azure-iot-device` 2.14.0 Python SDK (MQTT over WebSocket, TLS, port 443) running
//! the article's device against `wrangler dev` (tests/python/test_device_sdk.py).

use twinhub_e2e::{pytest, Hub, Storage};

#[test]
fn article_device_with_azure_iot_device_sdk() {
    let storage = Storage::new("python-device");
    let hub = Hub::start_https_on_443(&storage);
    match pytest("test_device_sdk.py", &hub.owner_connection_string(), &[]) {
        Ok(stdout) => println!("{stdout}"),
        Err(output) => panic!("azure-iot-device suite failed:\n{output}\nwrangler:\n{}", hub.log_tail()),
    }
}
