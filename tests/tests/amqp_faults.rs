//! AMQP faults against the real hub (workerd's plain AMQP listener), with the harness's raw
//! AMQP client: bad bytes end only their own connection, with the AMQP error condition; a link
//! the hub does not serve or a token without the rights is refused while the connection goes
//! on; a neighbour consumer keeps receiving throughout. And `kill -9` mid-stream loses no
//! acknowledged telemetry and no accepted cloud-to-device message.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use twinhub_core::amqp::{DeliveryState, Performative, ProtocolHeader, Role};
use twinhub_core::auth::{sign, Policy};
use twinhub_core::mqtt::{Packet, Publish, QoS, Subscribe};
use twinhub_e2e::amqp_client::AmqpClient;
use twinhub_e2e::{free_port, now_secs, Hub, MqttDevice, Storage, OWNER_KEY};

fn owner(hub: &Hub, port: u16) -> AmqpClient {
    AmqpClient::with_token(port, &hub.host(), &hub.host(), &hub.policy_token("iothubowner"))
}

fn telemetry(device: &mut MqttDevice, id: &str, n: u64) {
    device.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: format!("devices/{id}/messages/events/"),
        packet_id: std::num::NonZeroU16::new((n % 60_000 + 1) as u16),
        payload: format!(r#"{{"n":{n}}}"#).into_bytes(),
    }));
}

fn event_number(message: &twinhub_core::amqp::Message) -> Option<u64> {
    let body: serde_json::Value = serde_json::from_slice(&message.data()?).ok()?;
    body["n"].as_u64()
}

#[test]
fn bad_input_ends_only_its_own_connection() {
    let storage = Storage::new("amqp-faults");
    // The hub knows its name, so a token for another hub is refused.
    let port = free_port();
    let name = format!("127.0.0.1:{port}");
    let hub = Hub::launch(&storage, false, Some(port), &[("TWINHUB_HOST_NAMES", name.as_str())]);
    let Some(port) = hub.amqp_port() else {
        println!("skipped: this runtime takes no TCP (TWINHUB_TEST_RUNTIME=wrangler)");
        return;
    };
    assert_eq!(hub.call("PUT", "/devices/af1", Some("{}")).status, 200);
    // The neighbour: a consumer of every partition, from the start.
    let mut neighbour = owner(&hub, port);
    neighbour.read_partitions(10, 4, "-1");

    // A protocol the hub does not speak (AMQP protocol id 9): it answers with the header it
    // speaks and closes (2.2).
    let mut raw = AmqpClient::tcp(port);
    raw.write_all(b"AMQP\x09\x01\x00\x00").unwrap();
    let mut answer = [0u8; 8];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(answer, ProtocolHeader::Amqp.bytes());
    assert_eq!(raw.read(&mut answer).unwrap_or(0), 0, "the connection stayed open");

    // A frame that decodes as no performative: closed with amqp:decode-error.
    let mut bad = AmqpClient::open(port, &hub.host());
    bad.write(&[0, 0, 0, 12, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    let error = bad.closed_with().expect("a close").expect("with an error");
    assert_eq!(error.condition, "amqp:decode-error", "{error:?}");

    // A frame over the max-frame-size the hub announced: refused from its size, with
    // amqp:connection:framing-error (2.7.1).
    let mut big = AmqpClient::open(port, &hub.host());
    big.write(&[0x7f, 0xff, 0xff, 0xff, 2, 0, 0, 0]);
    let error = big.closed_with().expect("a close").expect("with an error");
    assert_eq!(error.condition, "amqp:connection:framing-error", "{error:?}");

    // A link to a node the hub does not have: refused (amqp:not-found), the connection goes
    // on. No token: partition links are refused as unauthorized.
    let mut client = AmqpClient::open(port, &hub.host());
    let refused = client.attach(3, Role::Receiver, "twinhub/ConsumerGroups/$Default/Partitions/0", None);
    assert_eq!(refused.unwrap_err().expect("an error").condition, "amqp:unauthorized-access");
    // Too few rights: registryRead has no ServiceConnect. Another hub's name: refused.
    let (status, why) = client.put_token(&hub.host(), &hub.policy_token("registryRead"));
    assert_eq!(status, 401, "{why}");
    let other = sign(
        "other.azure-devices.net",
        &Policy::all(OWNER_KEY, None).unwrap()[0].key,
        Some("iothubowner"),
        now_secs() + 600,
    )
    .unwrap();
    let (status, why) = client.put_token("other.azure-devices.net", &other);
    assert_eq!(status, 401, "{why}");
    let (status, why) = client.put_token(&hub.host(), &hub.policy_token("iothubowner"));
    assert_eq!(status, 200, "{why}");
    let refused = client.attach(4, Role::Receiver, "twinhub/ConsumerGroups/$Default/Partitions/99", None);
    assert_eq!(refused.unwrap_err().expect("an error").condition, "amqp:not-found");
    let refused = client.attach(5, Role::Sender, "/no/such/node", None);
    assert_eq!(refused.unwrap_err().expect("an error").condition, "amqp:not-found");
    // A device link without the device's token.
    let refused = client.attach(6, Role::Sender, "/devices/af1/messages/events", None);
    assert_eq!(refused.unwrap_err().expect("an error").condition, "amqp:unauthorized-access");
    // The connection still serves: a cloud-to-device message to a device that does not
    // exist is rejected with IoT Hub's reason, one to af1 accepted.
    client.attach(7, Role::Sender, "/messages/devicebound", None).expect("the C2D sender");
    match client.send_c2d(7, 0, "no-such-device", "x") {
        Some(DeliveryState::Rejected(Some(e))) => assert_eq!(e.condition, "amqp:not-found", "{e:?}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(client.send_c2d(7, 1, "af1", "m1"), Some(DeliveryState::Accepted));
    // A flood of credit is only a promise: the hub sends what it has.
    let partition = twinhub_core::eventhub::partition_of("af1", 4);
    client.attach_partition(8, partition, "@latest").expect("a partition receiver");
    client.credit_of(8, u32::MAX);

    // The neighbour saw none of it: a device's telemetry reaches it.
    let mut device = MqttDevice::connect(&hub, "af1");
    telemetry(&mut device, "af1", 7);
    assert!(matches!(device.recv(), Some(Packet::PubAck(_))));
    loop {
        if let Some((_, m)) = neighbour.next_message() {
            if event_number(&m) == Some(7) {
                break;
            }
        }
    }
    // And the connection that flooded credit is alive and gets it too.
    loop {
        if let Some((8, m)) = client.next_message() {
            assert_eq!(event_number(&m), Some(7));
            break;
        }
    }
    client.send(Performative::Close(None));
    assert_eq!(client.closed_with(), Some(None), "the hub answers a close with its own");
}

/// SASL PLAIN as IoT Hub takes it: a device as `{deviceId}@sas.{hub}` with its own token (the
/// C SDK's way), a service as `{policy}@sas.root.{hub}`; a wrong key is refused at SASL.
#[test]
fn sasl_plain_for_devices_and_services() {
    let storage = Storage::new("amqp-plain");
    let hub = Hub::start(&storage);
    let Some(port) = hub.amqp_port() else {
        println!("skipped: this runtime takes no TCP (TWINHUB_TEST_RUNTIME=wrangler)");
        return;
    };
    assert_eq!(hub.call("PUT", "/devices/pl1", Some("{}")).status, 200);
    let key = hub.device_key("pl1");
    let user = "pl1@sas.twinhub";
    // A wrong key: SASL says auth (1).
    let wrong = hub.device_token("pl1", &Policy::all(OWNER_KEY, None).unwrap()[0].key);
    assert_eq!(AmqpClient::open_plain(port, &hub.host(), user, &wrong).err(), Some(1));
    // Another device's name with pl1's token: refused too.
    assert_eq!(
        AmqpClient::open_plain(port, &hub.host(), "pl2@sas.twinhub", &hub.device_token("pl1", &key)).err(),
        Some(1)
    );

    let mut device = AmqpClient::open_plain(port, &hub.host(), user, &hub.device_token("pl1", &key)).expect("PLAIN");
    device.attach(0, Role::Sender, "/devices/pl1/messages/events", None).expect("the telemetry link");
    let message = twinhub_core::amqp::Message {
        body: twinhub_core::amqp::MessageBody::Data(vec![br#"{"temperature":31.5}"#.to_vec()]),
        application_properties: vec![("alert".into(), twinhub_core::amqp::Value::String("high_temperature".into()))],
        ..Default::default()
    };
    device.transfer(0, 0, &message, false);
    loop {
        if let Performative::Disposition(d) = device.performative() {
            assert_eq!(d.state, Some(DeliveryState::Accepted));
            break;
        }
    }
    let stored = hub.call("GET", "/api/devices/pl1/telemetry?limit=10", None).json();
    let first = &stored["messages"][0];
    assert_eq!(first["body"]["temperature"], 31.5, "{stored}");
    assert!(first["properties"].to_string().contains("high_temperature"), "{stored}");

    // A service policy: its links open without a put-token.
    let mut service =
        AmqpClient::open_plain(port, &hub.host(), "iothubowner@sas.root.twinhub", &hub.policy_token("iothubowner"))
            .expect("PLAIN");
    service.attach(1, Role::Sender, "/messages/devicebound", None).expect("the C2D sender");
    assert_eq!(service.send_c2d(1, 0, "pl1", "p-1"), Some(DeliveryState::Accepted));
}

/// The device tokens one connection keeps are bounded as its device sessions are: past 64
/// devices a put-token is refused (403), while a renewal of one already held is taken.
#[test]
fn a_connection_holds_at_most_64_devices_tokens() {
    let storage = Storage::new("amqp-grants");
    let hub = Hub::start(&storage);
    let Some(port) = hub.amqp_port() else {
        println!("skipped: this runtime takes no TCP (TWINHUB_TEST_RUNTIME=wrangler)");
        return;
    };
    twinhub_e2e::bulk_create(&hub, "g", 65);
    let policies = Policy::all(OWNER_KEY, None).unwrap();
    let device_policy = &policies.iter().find(|p| p.name == "device").unwrap().key;
    // The `device` policy (DeviceConnect) signs for any device, as a gateway would.
    let token = |id: &str| {
        let resource = format!("{}/devices/{id}", hub.host());
        sign(&resource, device_policy, Some("device"), now_secs() + 600).unwrap()
    };
    let mut client = AmqpClient::open(port, &hub.host());
    for i in 0..64 {
        let id = format!("g-{i:05}");
        let (status, why) = client.put_token(&format!("{}/devices/{id}", hub.host()), &token(&id));
        assert_eq!(status, 200, "{id}: {why}");
    }
    let (status, why) = client.put_token(&format!("{}/devices/g-00064", hub.host()), &token("g-00064"));
    assert_eq!(status, 403, "{why}");
    let (status, why) = client.put_token(&format!("{}/devices/g-00000", hub.host()), &token("g-00000"));
    assert_eq!(status, 200, "a renewal: {why}");
}

#[test]
fn kill_9_loses_no_acknowledged_telemetry_and_no_accepted_cloud_to_device() {
    let storage = Storage::new("amqp-kill9");
    let hub = Arc::new(Hub::start(&storage));
    let Some(port) = hub.amqp_port() else {
        println!("skipped: this runtime takes no TCP (TWINHUB_TEST_RUNTIME=wrangler)");
        return;
    };
    for id in ["k1", "k2"] {
        assert_eq!(hub.call("PUT", &format!("/devices/{id}"), Some("{}")).status, 200);
    }
    // Accepted cloud-to-device messages for an offline device.
    let mut service = owner(&hub, port);
    service.attach(7, Role::Sender, "/messages/devicebound", None).expect("the C2D sender");
    for n in 0..3 {
        assert_eq!(service.send_c2d(7, n, "k2", &format!("keep-{n}")), Some(DeliveryState::Accepted));
    }
    // Telemetry, killed mid-stream.
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (hub, acked, stop) = (hub.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut device = MqttDevice::connect(&hub, "k1");
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                telemetry(&mut device, "k1", n);
                // The hub's socket may die under us: that ends the loop.
                let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| device.recv()));
                match answer {
                    Ok(Some(Packet::PubAck(_))) => acked.lock().unwrap().push(n),
                    _ => return,
                }
                n += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    hub.kill9();
    stop.store(true, Ordering::SeqCst);
    let _ = sender.join();
    drop(service);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "too few messages before the kill to prove anything: {}", acked.len());
    drop(Arc::try_unwrap(hub).ok());

    let hub = Hub::start(&storage);
    let port = hub.amqp_port().unwrap();
    // Every acknowledged message is in the stream (once or more: at least once).
    let mut consumer = owner(&hub, port);
    consumer.read_partitions(10, 4, "-1");
    let seen: std::collections::HashSet<u64> =
        consumer.drain(acked.len()).iter().filter_map(|(_, m)| event_number(m)).collect();
    let lost: Vec<&u64> = acked.iter().filter(|n| !seen.contains(n)).collect();
    assert!(lost.is_empty(), "acknowledged telemetry lost in the kill: {lost:?}");
    // The accepted cloud-to-device messages wait for their device.
    let mut device = MqttDevice::connect(&hub, "k2");
    device.send(&Packet::Subscribe(Subscribe {
        packet_id: std::num::NonZeroU16::MIN,
        filters: vec![("devices/k2/messages/devicebound/#".into(), QoS::AtLeastOnce)],
    }));
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let m = device.recv_publish().expect("a kept cloud-to-device message");
        device.send(&Packet::PubAck(m.packet_id.unwrap()));
        ids.push(String::from_utf8(m.payload).unwrap());
    }
    assert_eq!(ids, ["keep-0", "keep-1", "keep-2"]);
}
