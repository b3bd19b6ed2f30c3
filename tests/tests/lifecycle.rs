//! A device identity's lifecycle as an attacker and a careless operator meet it: deleting a
//! device ends every session it has and takes its data with it, a re-created id starts empty,
//! CONNECTs for ids that were never created write nothing, and large packets split across
//! WebSocket frames arrive whole.

use serde_json::{json, Value};
use std::num::NonZeroU16;
use std::path::Path;
use std::time::{Duration, Instant};
use twinhub_core::auth::sign;
use twinhub_core::mqtt::{ConnectReturnCode, Packet, Publish, QoS, Subscribe};
use twinhub_e2e::{now_secs, Hub, MqttDevice, Storage};

fn subscribe(device: &mut MqttDevice, filters: &[&str]) {
    device.send(&Packet::Subscribe(Subscribe {
        packet_id: NonZeroU16::MIN,
        filters: filters.iter().map(|f| ((*f).to_owned(), QoS::AtLeastOnce)).collect(),
    }));
    assert!(matches!(device.recv(), Some(Packet::SubAck { .. })), "SUBACK");
}

fn telemetry(device: &mut MqttDevice, id: &str, body: &[u8], packet_id: u16) {
    device.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: format!("devices/{id}/messages/events/"),
        packet_id: NonZeroU16::new(packet_id),
        payload: body.to_vec(),
    }));
}

/// Reads until the PUBACK for `id`; `false` if the hub closed the connection first.
fn puback(device: &mut MqttDevice, id: u16) -> bool {
    loop {
        match device.recv() {
            Some(Packet::PubAck(got)) if got.get() == id => return true,
            Some(_) => continue,
            None => return false,
        }
    }
}

/// Reads until the hub closes the connection; fails if it sends a PUBLISH first.
fn closed_without_publish(device: &mut MqttDevice, what: &str) {
    loop {
        match device.recv() {
            None => return,
            Some(Packet::Publish(p)) => panic!("{what}: the old session was sent {}", p.topic),
            Some(_) => continue,
        }
    }
}

fn messages(hub: &Hub, id: &str) -> Vec<Value> {
    let reply = hub.call("GET", &format!("/api/devices/{id}/telemetry?limit=100"), None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["messages"].as_array().cloned().unwrap_or_default()
}

fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

type LiveSocket = tungstenite::WebSocket<std::net::TcpStream>;

/// Opens a live view with `token`, and an `Origin` header if given.
fn try_live(hub: &Hub, id: &str, token: &str, origin: Option<&str>) -> Result<LiveSocket, String> {
    use tungstenite::client::IntoClientRequest;
    let token = percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC).to_string();
    let url = format!("ws://127.0.0.1:{}/api/devices/{id}/live?sas={token}", hub.port());
    let mut request = url.into_client_request().expect("request");
    if let Some(origin) = origin {
        request.headers_mut().insert("Origin", origin.parse().expect("origin"));
    }
    let stream = std::net::TcpStream::connect(("127.0.0.1", hub.port())).expect("tcp");
    stream.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    tungstenite::client(request, stream).map(|(s, _)| s).map_err(|e| e.to_string())
}

fn open_live(hub: &Hub, id: &str) -> LiveSocket {
    try_live(hub, id, &hub.owner_token(), None).expect("live view")
}

/// An owner token for `path` under the hub's host, expiring `secs` from now.
fn owner_token_for(hub: &Hub, path: &str, secs: u64) -> String {
    sign(&format!("{}{path}", hub.host()), twinhub_e2e::OWNER_KEY, Some("iothubowner"), now_secs() + secs).unwrap()
}

#[test]
fn live_views_close_at_expiry_are_bounded_and_open_only_from_the_hub() {
    let storage = Storage::new("lifecycle-live");
    let hub = Hub::start(&storage);
    for id in ["w1", "w2"] {
        assert_eq!(hub.call("PUT", &format!("/devices/{id}"), Some("{}")).status, 200);
    }
    // A token scoped to the one device works (what the dashboard mints); another device's
    // does not.
    let scoped = owner_token_for(&hub, "/devices/w1", 3);
    let mut live = try_live(&hub, "w1", &scoped, None).expect("a device-scoped token");
    assert!(try_live(&hub, "w2", &scoped, None).is_err(), "scoped to w1 only");
    // The view closes when its token expires (4001), without the client doing anything.
    let code = loop {
        match live.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("the view should close with a frame, got {e}"),
        }
    };
    assert_eq!(code, Some(4001));

    // 4 views per token per device, 16 per device.
    let one = owner_token_for(&hub, "/devices/w1", 600);
    let mut held: Vec<LiveSocket> = (0..4).map(|_| try_live(&hub, "w1", &one, None).expect("view")).collect();
    assert!(try_live(&hub, "w1", &one, None).is_err(), "a 5th view with one token is refused");
    for n in 0..12 {
        let other = owner_token_for(&hub, "/devices/w1", 601 + n);
        held.push(try_live(&hub, "w1", &other, None).expect("views up to 16"));
    }
    let seventeenth = owner_token_for(&hub, "/devices/w1", 700);
    assert!(try_live(&hub, "w1", &seventeenth, None).is_err(), "a 17th view of one device is refused");
    drop(held);

    // Only the hub's own pages may open one.
    let own = format!("http://127.0.0.1:{}", hub.port());
    assert!(try_live(&hub, "w2", &hub.owner_token(), Some(&own)).is_ok());
    assert!(try_live(&hub, "w2", &hub.owner_token(), Some("https://evil.example")).is_err());
    assert_eq!(hub.call("GET", "/api/health", None).status, 200);
}

#[test]
fn finished_jobs_are_purged_after_the_retention() {
    let storage = Storage::new("lifecycle-jobs");
    let hub = Hub::start_with_vars(&storage, &[("JOB_RETENTION_SECS", "1")]);
    let job = json!({
        "type": "scheduleUpdateTwin",
        "queryCondition": "deviceId = 'nobody'",
        "updateTwin": { "etag": "*", "tags": { "x": 1 } },
    });
    assert_eq!(hub.call("PUT", "/jobs/v2/short-lived", Some(&job.to_string())).status, 200);
    wait_until("the job completes", || hub.call("GET", "/jobs/v2/short-lived", None).json()["status"] == "completed");
    // Gone once a second has passed since it ended.
    wait_until("the job is purged", || hub.call("GET", "/jobs/v2/short-lived", None).status == 404);
    hub.call("GET", "/jobs/v2/short-lived", None).assert_hub_error(404, "JobNotFound", 404_002);
}

#[test]
fn deleting_a_device_ends_its_sessions_and_a_recreated_id_starts_empty() {
    let storage = Storage::new("lifecycle");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/bystander", Some("{}")).status, 200);
    let bystander_twin = hub.call("PATCH", "/twins/bystander", Some(r#"{"tags":{"keep":"me"}}"#)).json();
    let created = hub.call("PUT", "/devices/life", Some("{}"));
    assert_eq!(created.status, 200);
    let first_generation = created.json()["generationId"].clone();
    let old_key = hub.device_key("life");

    // The old device: connected, listening for desired patches, methods and twin answers (not
    // for cloud-to-device, so messages stay queued), with telemetry stored and a live view open.
    let (mut old, code) = MqttDevice::connect_with_token(&hub, "life", &hub.device_token("life", &old_key));
    assert_eq!(code, ConnectReturnCode::Accepted);
    subscribe(&mut old, &["$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#"]);
    telemetry(&mut old, "life", br#"{"temperature":99}"#, 3);
    assert!(puback(&mut old, 3));
    for i in 0..3 {
        let sent =
            hub.call("POST", "/api/devices/life/messages", Some(&json!({ "payload": { "old": i } }).to_string()));
        assert_eq!(sent.status, 202, "{}", sent.body);
    }
    assert_eq!(messages(&hub, "life").len(), 1);
    let mut live = open_live(&hub, "life");

    // Delete: the session and the live view end at once.
    assert_eq!(hub.call("DELETE", "/devices/life", None).status, 204);
    closed_without_publish(&mut old, "after delete");
    let live_closed = loop {
        match live.read() {
            Ok(tungstenite::Message::Close(_)) | Err(_) => break true,
            Ok(_) => continue,
        }
    };
    assert!(live_closed);
    hub.call("GET", "/twins/life", None).assert_hub_error(404, "DeviceNotFound", 404_001);
    hub.call("GET", "/api/devices/life/telemetry", None).assert_hub_error(404, "DeviceNotFound", 404_001);
    // A deleted id refuses CONNECTs, reports, methods and messages.
    let (_, code) = MqttDevice::connect_with_token(&hub, "life", &hub.device_token("life", &old_key));
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    let method = hub.call("POST", "/twins/life/methods", Some(r#"{"methodName":"reboot","payload":{}}"#));
    method.assert_hub_error(404, "DeviceNotFound", 404_001);
    hub.call("POST", "/api/devices/life/messages", Some("{}")).assert_hub_error(404, "DeviceNotFound", 404_001);

    // Re-created with the same id: a new generation, new keys, nothing of the old one.
    let again = hub.call("PUT", "/devices/life", Some("{}"));
    assert_eq!(again.status, 200, "{}", again.body);
    assert_ne!(again.json()["generationId"], first_generation);
    let new_key = hub.device_key("life");
    assert_ne!(new_key, old_key);
    let twin = hub.call("GET", "/twins/life", None).json();
    assert_eq!(twin["cloudToDeviceMessageCount"], 0);
    assert_eq!(twin["version"], 2, "a fresh twin: {twin}");
    assert!(twin.get("tags").is_none(), "a fresh twin: {twin}");
    assert!(messages(&hub, "life").is_empty(), "the old telemetry is gone");
    let history = hub.call("GET", "/api/twins/life/history", None).json();
    assert_eq!(history["entries"], json!([]), "the old history is gone");
    // The index shows the new device, not the tombstone.
    let listed =
        hub.call("POST", "/devices/query", Some(r#"{"query":"SELECT * FROM devices WHERE deviceId = 'life'"}"#));
    assert_eq!(listed.json().as_array().map(Vec::len), Some(1), "{}", listed.body);

    // The old key is worthless; the new device gets only new messages.
    let (_, code) = MqttDevice::connect_with_token(&hub, "life", &hub.device_token("life", &old_key));
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    let (mut new, code) = MqttDevice::connect_with_token(&hub, "life", &hub.device_token("life", &new_key));
    assert_eq!(code, ConnectReturnCode::Accepted);
    subscribe(&mut new, &["devices/life/messages/devicebound/#"]);
    let sent = hub.call("POST", "/api/devices/life/messages", Some(r#"{"payload":{"new":true}}"#));
    assert_eq!(sent.status, 202);
    let first = new.recv_publish().expect("the new message");
    assert_eq!(serde_json::from_slice::<Value>(&first.payload).unwrap(), json!({ "new": true }));

    // The bystander is untouched and the hub healthy.
    assert_eq!(hub.call("GET", "/twins/bystander", None).json()["tags"], bystander_twin["tags"]);
    assert_eq!(hub.call("GET", "/api/health", None).status, 200);
}

#[test]
fn disabling_or_rekeying_drops_the_session_and_its_later_packets() {
    let storage = Storage::new("lifecycle-disable");
    let hub = Hub::start(&storage);
    let created = hub.call("PUT", "/devices/d1", Some("{}")).json();
    let key = hub.device_key("d1");
    let (mut device, code) = MqttDevice::connect_with_token(&hub, "d1", &hub.device_token("d1", &key));
    assert_eq!(code, ConnectReturnCode::Accepted);
    let disabled = json!({ "deviceId": "d1", "status": "disabled", "etag": created["etag"] });
    let etag = format!("\"{}\"", created["etag"].as_str().unwrap());
    let auth = hub.owner_token();
    let reply = hub.call_with(
        "PUT",
        "/devices/d1",
        Some(&disabled.to_string()),
        &[("If-Match", &etag), ("Authorization", &auth)],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    closed_without_publish(&mut device, "after disable");
    let twin = hub.call("GET", "/twins/d1", None).json();
    assert_eq!(twin["connectionState"], "Disconnected", "{twin}");
    assert_eq!(twin["status"], "disabled");
}

/// Counts the device objects' database files under a hub's storage.
fn device_databases(storage: &Path) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, n);
            } else if path.to_string_lossy().contains("DeviceObject") && path.extension().is_some_and(|e| e == "sqlite")
            {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(storage, &mut n);
    n
}

#[test]
fn connects_for_ids_never_created_write_nothing() {
    let storage = Storage::new("lifecycle-junk");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/real", Some("{}")).status, 200);
    let before = device_databases(storage.path());
    assert!(before >= 1, "the real device has a database");
    // Junk tokens (refused before any device object wakes) and well-formed tokens signed with a
    // wrong key (refused by the device object, which finds no device and writes nothing).
    let wrong_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    for i in 0..60 {
        let id = format!("ghost-{i}");
        let token = if i % 2 == 0 { "junk".to_owned() } else { hub.device_token(&id, wrong_key) };
        let (_, code) = MqttDevice::connect_with_token(&hub, &id, &token);
        assert_eq!(code, ConnectReturnCode::NotAuthorized, "{id}");
    }
    // Expired, and scoped to another device.
    let expired = sign(&format!("{}/devices/ghost-x", hub.host()), wrong_key, None, now_secs() - 5).unwrap();
    assert_eq!(MqttDevice::connect_with_token(&hub, "ghost-x", &expired).1, ConnectReturnCode::NotAuthorized);
    let other = hub.device_token("real", wrong_key);
    assert_eq!(MqttDevice::connect_with_token(&hub, "ghost-y", &other).1, ConnectReturnCode::NotAuthorized);
    // A user name naming another device than the client id.
    let key = hub.device_key("real");
    let (mut device, _) = MqttDevice::open(&hub);
    device.send(&Packet::Connect(twinhub_core::mqtt::Connect {
        client_id: "real".into(),
        clean_session: true,
        keep_alive: 60,
        username: Some(format!("{}/someone-else/?api-version=2021-04-12", hub.host())),
        password: Some(hub.device_token("real", &key).into_bytes()),
        will: None,
    }));
    assert!(matches!(
        device.recv(),
        Some(Packet::ConnAck(twinhub_core::mqtt::ConnAck { code: ConnectReturnCode::BadUserNameOrPassword, .. }))
    ));
    let after = device_databases(storage.path());
    assert_eq!(after, before, "no database was created for an unknown id");
    // An operator's reads and writes of unknown ids are refused (they wake the id's object,
    // whose empty database local workerd keeps; see the README).
    for i in 0..3 {
        hub.call("GET", &format!("/twins/nobody-{i}"), None).assert_hub_error(404, "DeviceNotFound", 404_001);
        let patch = hub.call("PATCH", &format!("/twins/nobody-{i}"), Some(r#"{"tags":{"a":1}}"#));
        patch.assert_hub_error(404, "DeviceNotFound", 404_001);
    }
    assert_eq!(hub.call("GET", "/api/health", None).status, 200);
}

#[test]
fn large_messages_split_across_frames_arrive_whole() {
    let storage = Storage::new("lifecycle-split");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/big", Some("{}")).status, 200);
    let key = hub.device_key("big");
    let (mut device, code) = MqttDevice::connect_with_token(&hub, "big", &hub.device_token("big", &key));
    assert_eq!(code, ConnectReturnCode::Accepted);
    // 8 KB in 1 KB frames, 64 KB in 4 KB frames, 256 KB (IoT Hub's message limit) in 16 KB
    // frames and in 1,000-byte frames: each acknowledged and stored whole.
    let cases = [(8 * 1024, 1024), (64 * 1024, 4096), (256 * 1024 - 512, 16 * 1024), (256 * 1024 - 512, 1000)];
    for (n, (size, frame)) in cases.into_iter().enumerate() {
        let text = format!("{{\"blob\":\"{}\"}}", "x".repeat(size - 11));
        let packet_id = 10 + n as u16;
        let bytes = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "devices/big/messages/events/".into(),
            packet_id: NonZeroU16::new(packet_id),
            payload: text.clone().into_bytes(),
        })
        .to_bytes()
        .unwrap();
        for chunk in bytes.chunks(frame) {
            device.send_raw(chunk);
        }
        assert!(puback(&mut device, packet_id), "{size} bytes in {frame}-byte frames: PUBACK");
        wait_until("the message stored", || messages(&hub, "big").len() == n + 1);
        let stored = messages(&hub, "big").pop().expect("stored");
        assert_eq!(stored["body"]["blob"].as_str().map(str::len), Some(size - 11), "stored whole");
    }
    // A packet over the limit ends that connection, and only it.
    let over = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/big/messages/events/".into(),
        packet_id: NonZeroU16::new(99),
        payload: vec![b'x'; 300 * 1024],
    })
    .to_bytes()
    .unwrap();
    for chunk in over.chunks(16 * 1024) {
        device.send_raw(chunk);
    }
    assert!(!puback(&mut device, 99), "an oversize packet is refused by closing");
    assert_eq!(messages(&hub, "big").len(), cases.len());
    assert_eq!(hub.call("GET", "/api/health", None).status, 200);
}

#[test]
fn a_far_future_token_keeps_the_session_working() {
    let storage = Storage::new("lifecycle-se");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/forever", Some("{}")).status, 200);
    let key = hub.device_key("forever");
    let token = sign(&format!("{}/devices/forever", hub.host()), &key, None, (1 << 63) - 1).unwrap();
    let (mut device, code) = MqttDevice::connect_with_token(&hub, "forever", &token);
    assert_eq!(code, ConnectReturnCode::Accepted);
    assert_eq!(device.report(1, &json!({ "alive": true })), 204);
    telemetry(&mut device, "forever", b"{}", 5);
    assert!(puback(&mut device, 5));
}
