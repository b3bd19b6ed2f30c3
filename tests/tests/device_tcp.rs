//! MQTT over TLS on 8883 under workerd (tests/python/test_device_tcp.py, paho-mqtt and raw
//! sockets): everything a WebSocket device gets, and bad input that closes only its own
//! connection. The Azure SDKs' default transport on 8883 runs in python_device_sdk.rs.

use twinhub_e2e::{pytest, Hub, Storage};

#[test]
fn mqtt_over_tls_with_paho_and_bad_input() {
    let storage = Storage::new("device-tcp");
    let hub = Hub::launch(&storage, true, None, &[("MQTT_CONNECT_TIMEOUT_MS", "1500")]);
    let Some(port) = hub.mqtt_port() else {
        println!("skipped: this runtime takes no TCP (TWINHUB_TEST_RUNTIME=wrangler)");
        return;
    };
    let port = port.to_string();
    match pytest("test_device_tcp.py", &hub.owner_connection_string(), &[("TWINHUB_MQTT_PORT", &port)]) {
        Ok(stdout) => println!("{stdout}"),
        Err(output) => panic!("8883 suite failed:\n{output}\nhub:\n{}", hub.log_tail()),
    }
}
