//! Cloud-to-device over AMQP with the real `azure-iot-hub` Python SDK (uamqp, AMQP over TLS on
//! 5671) to the article's device on MQTT over TLS (tests/python/test_c2d_amqp.py). The hub runs
//! on 443 with 8883 and 5671, the ports the SDKs dial.

use twinhub_e2e::{pytest, Hub, Storage};

#[test]
fn send_c2d_message_over_amqp_reaches_the_device() {
    let storage = Storage::new("amqp-service");
    let hub = Hub::start_https_on_443(&storage);
    if hub.mqtt_port().is_none() {
        println!("skipped: this runtime takes no TCP (TWINHUB_TEST_RUNTIME=wrangler)");
        return;
    }
    match pytest("test_c2d_amqp.py", &hub.owner_connection_string(), &[]) {
        Ok(stdout) => println!("{stdout}"),
        Err(output) => panic!("C2D over AMQP suite failed:\n{output}\nhub:\n{}", hub.log_tail()),
    }
}
