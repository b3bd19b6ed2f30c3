//! IoT Hub's tier throttles as a setting (`TWINHUB_TIER=S1`): 429 `ThrottlingException` with
//! `Retry-After` on REST, `res/429` on MQTT twin operations, a throttled device's session ended,
//! and a stranger's junk never spending the hub's allowance.

use serde_json::json;
use std::num::NonZeroU16;
use std::time::Duration;
use twinhub_core::mqtt::{ConnectReturnCode, Packet, Publish, QoS, Subscribe};
use twinhub_e2e::{Hub, MqttDevice, Storage};

#[test]
fn an_s1_hub_throttles_as_azure_does() {
    let storage = Storage::new("throttling");
    let hub = Hub::start_with_vars(&storage, &[("TWINHUB_TIER", "S1")]);
    assert_eq!(hub.call("PUT", "/devices/t1", Some("{}")).status, 200);

    // Junk tokens are refused with 401 and use nothing up.
    for _ in 0..100 {
        let junk = hub.call_with(
            "PATCH",
            "/twins/t1",
            Some("{}"),
            &[("Authorization", "SharedAccessSignature sr=x&sig=y&se=1")],
        );
        assert_eq!(junk.status, 401);
    }

    // Twin updates: 50 a second on S1, half of them for the REST API (devices' reported
    // patches over MQTT hold the other half). A burst of 160 from 16 clients gets 429s, each with IoT
    // Hub's error code and a Retry-After.
    let replies: Vec<twinhub_e2e::Reply> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..16)
            .map(|w| {
                let hub = &hub;
                scope.spawn(move || {
                    (0..10)
                        .map(|i| {
                            hub.call("PATCH", "/twins/t1", Some(&json!({ "tags": { "w": w, "n": i } }).to_string()))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("worker")).collect()
    });
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 429), "only 200 and 429");
    let throttled = replies.into_iter().find(|r| r.status == 429);
    let throttled = throttled.expect("some updates are throttled");
    throttled.assert_hub_error(429, "ThrottlingException", 429_001);
    assert!(throttled.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok()), "{:?}", throttled.headers);
    assert!((25..160).contains(&ok), "{ok} of 160 admitted");
    // Back off as told, and it works again.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(hub.call("PATCH", "/twins/t1", Some(r#"{"tags":{"after":true}}"#)).status, 200);
    // Reads have their own allowance.
    assert_eq!(hub.call("GET", "/twins/t1", None).status, 200);

    // Queries: 20 a minute.
    let query = r#"{"query":"SELECT * FROM devices"}"#;
    let statuses: Vec<u16> = (0..25).map(|_| hub.call("POST", "/devices/query", Some(query)).status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 20, "{statuses:?}");
    hub.call("POST", "/devices/query", Some(query)).assert_hub_error(429, "ThrottlingException", 429_001);

    // MQTT twin GETs: 100 a second for the hub, half of it over MQTT, split over the two
    // gateway shards: some of 80 answer res/429 on the twin response topic.
    let token = hub.device_token("t1", &hub.device_key("t1"));
    let (mut device, code) = MqttDevice::connect_with_token(&hub, "t1", &token);
    assert_eq!(code, ConnectReturnCode::Accepted);
    device.send(&Packet::Subscribe(Subscribe {
        packet_id: NonZeroU16::MIN,
        filters: vec![("$iothub/twin/res/#".into(), QoS::AtMostOnce)],
    }));
    assert!(matches!(device.recv(), Some(Packet::SubAck { .. })));
    for rid in 0..80 {
        device.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: format!("$iothub/twin/GET/?$rid={rid}"),
            packet_id: None,
            payload: Vec::new(),
        }));
    }
    let mut answers = std::collections::HashMap::<String, usize>::new();
    for _ in 0..80 {
        let p = device.recv_publish().expect("a twin answer");
        let status = p.topic.trim_start_matches("$iothub/twin/res/").split('/').next().unwrap_or("").to_owned();
        if status == "429" {
            let body: serde_json::Value = serde_json::from_slice(&p.payload).expect("flat error body");
            assert_eq!(body["errorCode"], 429_001);
        }
        *answers.entry(status).or_default() += 1;
    }
    assert!(answers.get("200").is_some_and(|n| *n >= 20), "{answers:?}");
    assert!(answers.get("429").is_some_and(|n| *n >= 1), "{answers:?}");

    // Telemetry: 100 a second for the hub (half per shard). A burst waits up to 2 s for the
    // rate; a device that bursts past that is disconnected, its unacknowledged messages not
    // stored.
    for id in 0..300u16 {
        device.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "devices/t1/messages/events/".into(),
            packet_id: NonZeroU16::new(id + 1),
            payload: br#"{"t":1}"#.to_vec(),
        }));
    }
    let mut acked = 0;
    while let Some(packet) = device.recv() {
        if matches!(packet, Packet::PubAck(_)) {
            acked += 1;
        }
    }
    assert!(acked < 300, "the burst is cut off ({acked} acknowledged)");
    let stored =
        hub.call("GET", "/api/devices/t1/telemetry?limit=1000", None).json()["messages"].as_array().map_or(0, Vec::len);
    assert_eq!(stored, acked, "exactly the acknowledged messages are stored");
    assert_eq!(hub.call_with("GET", "/api/health", None, &[]).status, 200);
}
