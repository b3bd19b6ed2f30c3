//! Concurrency and crashes: etags are exact under contention, no write is lost under load, and
//! every acknowledged PATCH and telemetry message survives `kill -9` of the runtime (workerd;
//! jobs.rs does the same for job steps).

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;
use twinhub_e2e::{Hub, MqttDevice, Storage};

#[test]
fn concurrent_patches_with_one_etag_exactly_one_wins() {
    let storage = Storage::new("etag-race");
    let hub = Arc::new(Hub::start(&storage));
    assert_eq!(hub.call("PUT", "/devices/contended", Some("{}")).status, 200);
    let etag = hub.call("GET", "/twins/contended", None).json()["etag"].as_str().unwrap().to_owned();
    let barrier = Arc::new(Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let (hub, barrier, etag) = (hub.clone(), barrier.clone(), etag.clone());
            thread::spawn(move || {
                let token = hub.owner_token();
                barrier.wait();
                hub.call_with(
                    "PATCH",
                    "/twins/contended",
                    Some(&json!({ "properties": { "desired": { "winner": i } } }).to_string()),
                    &[("Authorization", &token), ("If-Match", &format!("\"{etag}\""))],
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 49, "{statuses:?}");
    let twin = hub.call("GET", "/twins/contended", None).json();
    assert_eq!(twin["version"], 3);
    assert_eq!(twin["properties"]["desired"]["$version"], 2);
}

#[test]
fn two_hundred_concurrent_patches_all_land() {
    let storage = Storage::new("no-lost-writes");
    let hub = Arc::new(Hub::start(&storage));
    assert_eq!(hub.call("PUT", "/devices/busy", Some("{}")).status, 200);
    let barrier = Arc::new(Barrier::new(200));
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let (hub, barrier) = (hub.clone(), barrier.clone());
            thread::spawn(move || {
                let token = hub.owner_token();
                barrier.wait();
                let body = json!({ "properties": { "desired": { format!("k{i}"): i } } }).to_string();
                hub.call_with("PATCH", "/twins/busy", Some(&body), &[("Authorization", &token)]).status
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    let twin = hub.call("GET", "/twins/busy", None).json();
    assert_eq!(twin["version"], 2 + 200);
    assert_eq!(twin["properties"]["desired"]["$version"], 1 + 200);
    for i in 0..200 {
        assert_eq!(twin["properties"]["desired"][format!("k{i}")], i, "k{i} lost");
    }
}

#[test]
fn acknowledged_patches_survive_kill_dash_nine() {
    let storage = Storage::new("kill9");
    let hub = Arc::new(Hub::start(&storage));
    assert_eq!(hub.call("PUT", "/devices/crashy", Some("{}")).status, 200);
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (hub, acked, stop) = (hub.clone(), acked.clone(), stop.clone());
            thread::spawn(move || {
                let mut n = w;
                while !stop.load(Ordering::SeqCst) {
                    // One patch writes a tag and a desired property together: both or neither.
                    let body = json!({
                        "tags": { format!("t{n}"): n },
                        "properties": { "desired": { format!("d{n}"): n } }
                    });
                    if hub.call("PATCH", "/twins/crashy", Some(&body.to_string())).status == 200 {
                        acked.lock().unwrap().push(n);
                    }
                    n += 4;
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(1500));
    // Kill while the writers are still sending.
    hub.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    drop(hub);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "too few writes before the kill to prove anything: {}", acked.len());

    let hub = Hub::start(&storage);
    let twin = hub.call("GET", "/twins/crashy", None).json();
    let tags = twin["tags"].as_object().cloned().unwrap_or_default();
    let desired = twin["properties"]["desired"].as_object().cloned().unwrap_or_default();
    for n in &acked {
        assert_eq!(tags.get(&format!("t{n}")), Some(&json!(n)), "acknowledged tag t{n} lost");
        assert_eq!(desired.get(&format!("d{n}")), Some(&json!(n)), "acknowledged desired d{n} lost");
    }
    // Nothing half-applied: every tag has its desired twin and vice versa, and the counters
    // agree with the number of patches that landed.
    let landed: Vec<&String> = tags.keys().collect();
    for t in &landed {
        let d = format!("d{}", &t[1..]);
        assert!(desired.contains_key(&d), "{t} landed without {d}");
    }
    let desired_keys = desired.keys().filter(|k| !k.starts_with('$')).count();
    assert_eq!(desired_keys, landed.len());
    assert_eq!(twin["version"], Value::from(2 + landed.len() as u64));
    assert_eq!(twin["etag"], Value::from(base64_etag(1 + landed.len() as u64)));
}

fn base64_etag(n: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(n.to_be_bytes())
}

#[test]
fn acknowledged_telemetry_survives_kill_dash_nine() {
    use twinhub_core::mqtt::{Packet, Publish, QoS};
    let storage = Storage::new("kill9-telemetry");
    let hub = Arc::new(Hub::start(&storage));
    assert_eq!(hub.call("PUT", "/devices/chatty", Some("{}")).status, 200);
    let mut device = MqttDevice::connect(&hub, "chatty");
    let killer = {
        let hub = hub.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(1500));
            hub.kill9();
        })
    };
    // QoS 1, one at a time: a message counts as acknowledged when its PUBACK arrived.
    let mut acked = Vec::new();
    for n in 1..=u16::MAX {
        let id = std::num::NonZeroU16::new(n).unwrap();
        device.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "devices/chatty/messages/events/".into(),
            packet_id: Some(id),
            payload: json!({ "n": n }).to_string().into_bytes(),
        }));
        let acknowledged = loop {
            match device.recv() {
                Some(Packet::PubAck(got)) if got == id => break true,
                Some(_) => continue,
                None => break false,
            }
        };
        if !acknowledged {
            break;
        }
        acked.push(u64::from(n));
    }
    killer.join().unwrap();
    drop(hub);
    println!("{} messages acknowledged before the kill", acked.len());
    assert!(acked.len() > 10, "too few messages before the kill to prove anything: {}", acked.len());

    let hub = Hub::start(&storage);
    let stored = hub.call("GET", "/api/devices/chatty/telemetry?limit=1000", None).json();
    let kept: std::collections::HashSet<u64> =
        stored["messages"].as_array().unwrap().iter().filter_map(|m| m["body"]["n"].as_u64()).collect();
    let newest_kept = acked.len().min(1000);
    for n in &acked[acked.len() - newest_kept..] {
        assert!(kept.contains(n), "acknowledged message {n} lost (kept {} of {})", kept.len(), acked.len());
    }
}
