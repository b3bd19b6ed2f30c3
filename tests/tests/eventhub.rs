//! The Event Hub-compatible endpoint under workerd with the real `azure-eventhub` consumer
//! (tests/python/test_eventhub.py): telemetry from paho devices on MQTT over TLS, read over
//! plain AMQP as the Event Hubs emulator's connection strings dial it.

use twinhub_e2e::{pytest, Hub, Storage};

#[test]
fn the_eventhub_consumer_reads_device_telemetry() {
    let storage = Storage::new("eventhub");
    let hub = Hub::start_https(&storage);
    let (Some(mqtt), Some(eventhub)) = (hub.mqtt_port(), hub.eventhub_connection_string()) else {
        println!("skipped: this runtime takes no TCP (TWINHUB_TEST_RUNTIME=wrangler)");
        return;
    };
    let mqtt = mqtt.to_string();
    let env = [("TWINHUB_MQTT_PORT", mqtt.as_str()), ("TWINHUB_EVENTHUB_CONNECTION_STRING", eventhub.as_str())];
    match pytest("test_eventhub.py", &hub.owner_connection_string(), &env) {
        Ok(stdout) => println!("{stdout}"),
        Err(output) => panic!("Event Hub suite failed:\n{output}\nhub:\n{}", hub.log_tail()),
    }
}
