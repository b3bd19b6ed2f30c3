//! The Event Hub-compatible endpoint under workerd with the real `azure-eventhub` consumer
//! (tests/python/test_eventhub.py): telemetry from paho devices on MQTT over TLS, read over
//! plain AMQP as the Event Hubs emulator's connection strings dial it; and AMQP over WebSocket
//! through `wrangler dev`.

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

/// A consumer over WebSocket whose connections reach their share of calls to objects (made
/// tiny here) is closed with `amqp:connection:forced` and carries on over new ones, missing
/// and repeating nothing (tests/python/test_eventhub_budget.py).
#[test]
fn a_websocket_consumer_outlives_its_subrequest_budget() {
    let storage = Storage::new("eventhub-budget");
    let hub = Hub::launch(&storage, true, None, &[("AMQP_SUBREQUESTS_PER_CONNECTION", "25")]);
    let (Some(mqtt), Some(eventhub)) = (hub.mqtt_port(), hub.eventhub_connection_string()) else {
        println!("skipped: this runtime takes no TCP (TWINHUB_TEST_RUNTIME=wrangler)");
        return;
    };
    let mqtt = mqtt.to_string();
    let env = [("TWINHUB_MQTT_PORT", mqtt.as_str()), ("TWINHUB_EVENTHUB_CONNECTION_STRING", eventhub.as_str())];
    match pytest("test_eventhub_budget.py", &hub.owner_connection_string(), &env) {
        Ok(stdout) => println!("{stdout}"),
        Err(output) => panic!("Event Hub budget suite failed:\n{output}\nhub:\n{}", hub.log_tail()),
    }
    let closes = hub.log().matches("amqp:connection:forced").count();
    assert!(closes >= 2, "the consumer's connections were not recycled ({closes} forced closes)");
}

/// AMQP over WebSocket through `wrangler dev` (the runtime `wrangler deploy` targets, run
/// locally): the real azure-eventhub client opens `$servicebus/websocket`, puts its token on
/// `$cbs` and reads the partition ids from `$management`.
#[test]
fn amqp_over_websocket_under_wrangler_dev() {
    let storage = Storage::new("eventhub-wrangler");
    let hub = Hub::launch_wrangler(&storage, false, None, &[]);
    let owner = hub.owner_connection_string();
    let part =
        |name: &str| owner.split(';').find_map(|p| p.strip_prefix(&format!("{name}="))).unwrap_or_default().to_owned();
    let shown = twinhub_core::eventhub::connection_string(&part("HostName"), "iothubowner", &part("SharedAccessKey"));
    match pytest("test_endpoint_string.py", &owner, &[("TWINHUB_SHOWN_CONNECTION_STRING", shown.as_str())]) {
        Ok(stdout) => println!("{stdout}"),
        Err(output) => panic!("AMQP over WebSocket under wrangler dev failed:\n{output}\nhub:\n{}", hub.log_tail()),
    }
}
