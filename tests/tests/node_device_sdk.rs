//! The real Azure IoT Node SDKs (azure-iot-device 1.18 with azure-iot-device-mqtt's `Mqtt` on
//! 8883 and `MqttWs` on 443, azure-iothub 1.16 as the backend, @azure/event-hubs 6 reading the
//! Event Hub-compatible endpoint on 5671 and over WebSocket on 443):
//! tests/node/device_sdk.test.mjs.

use std::process::Command;
use twinhub_e2e::{repo_root, tls, Hub, Storage};

#[test]
fn node_sdk_devices_on_both_mqtt_transports() {
    let storage = Storage::new("node-device");
    let hub = Hub::start_https_on_443(&storage);
    if hub.mqtt_port().is_none() {
        println!("skipped: this runtime takes no TCP (TWINHUB_TEST_RUNTIME=wrangler)");
        return;
    }
    let output = Command::new("node")
        .current_dir(repo_root())
        .args(["--test", "--test-reporter=spec", "tests/node/device_sdk.test.mjs"])
        .env("TWINHUB_CONNECTION_STRING", hub.owner_connection_string())
        .env("NODE_EXTRA_CA_CERTS", tls().ca_cert)
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "Node SDK suite failed:\n{stdout}\n{stderr}\nhub:\n{}", hub.log_tail());
    println!("{stdout}");
}
