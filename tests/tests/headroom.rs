//! The hub never exits for want of open files (issue: reliability at the machine's limits).
//!
//! workerd holds a descriptor per socket and three per awake device object until it evicts
//! the object 10 s after its last request, and exits when `accept()` finds none left. Here the
//! hub runs with an open-file limit of 1,024 while devices stay connected, and work that wakes
//! device objects in bulk (a bulk import, a job, a configuration sweep) is paced by the hub's
//! measured headroom (`core::headroom`): everything completes, the hub answers throughout,
//! and the connected devices stay connected. Unpaced, the import alone wakes three times the
//! limit's worth of files and workerd dies of it.

use serde_json::json;
use std::time::{Duration, Instant};
use twinhub_e2e::{bulk_create, Hub, MqttDevice, Storage};

const DEVICES: usize = 450;
const CONNECTED: usize = 100;

/// Polls `check` until it holds; meanwhile the connected devices ping, as an SDK does (the
/// hub ends a session silent for 1.5 times its keep-alive).
fn wait_until(what: &str, within: Duration, devices: &mut [MqttDevice], mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    let mut pinged = Instant::now();
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        if pinged.elapsed() > Duration::from_secs(20) {
            for device in devices.iter_mut() {
                device.send(&twinhub_core::mqtt::Packet::PingReq);
            }
            pinged = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A REST call retried while the hub sheds load (503 with `Retry-After`), as an SDK retries.
fn call_retrying(hub: &Hub, method: &str, path: &str, body: Option<&str>) -> twinhub_e2e::Reply {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = hub.call(method, path, body);
        if reply.status != 503 || Instant::now() > deadline {
            return reply;
        }
        assert!(reply.header("retry-after").is_some(), "a 503 says when to retry: {}", reply.body);
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn connect_retrying(hub: &Hub, id: &str) -> MqttDevice {
    use twinhub_core::mqtt::ConnectReturnCode;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut token = None;
    loop {
        assert!(Instant::now() < deadline, "{id} could not connect within 60 s");
        if token.is_none() {
            let identity = hub.call("GET", &format!("/devices/{id}"), None);
            if identity.status == 200 {
                let key = identity.json()["authentication"]["symmetricKey"]["primaryKey"].as_str().map(str::to_owned);
                token = key.map(|k| hub.device_token(id, &k));
            }
        }
        if let Some(token) = &token {
            if let Ok((device, ConnectReturnCode::Accepted)) = MqttDevice::try_connect_with_token(hub, id, token) {
                return device;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_low_open_file_limit_survives_bulk_work_with_devices_connected() {
    let storage = Storage::new("headroom");
    let hub = Hub::start_with_vars(&storage, &[("TWINHUB_NOFILE", "1024")]);
    let started = Instant::now();
    bulk_create(&hub, "hr", DEVICES);
    println!("{DEVICES} devices created in {:?}", started.elapsed());
    // The devices connect as an SDK does: a refused attempt (503 while the hub sheds load, or
    // CONNACK 3) is tried again a second later.
    let mut connected: Vec<MqttDevice> =
        (0..CONNECTED).map(|i| connect_retrying(&hub, &format!("hr-{i:05}"))).collect();

    // A job over every twin and a configuration over every twin, at once.
    let job = json!({
        "type": "scheduleUpdateTwin",
        "queryCondition": "STARTSWITH(deviceId, 'hr-')",
        "updateTwin": { "etag": "*", "tags": { "wave": 1 } },
    });
    assert_eq!(call_retrying(&hub, "PUT", "/jobs/v2/headroom-job", Some(&job.to_string())).status, 200);
    let configuration = json!({
        "priority": 1,
        "targetCondition": "STARTSWITH(deviceId, 'hr-')",
        "content": { "deviceContent": { "properties.desired.level": 5 } },
    });
    let created = call_retrying(&hub, "PUT", "/configurations/headroom", Some(&configuration.to_string()));
    assert_eq!(created.status, 200, "{}", created.body);

    let work = Instant::now();
    wait_until("the job completes", Duration::from_secs(300), &mut connected, || {
        let job = hub.call("GET", "/jobs/v2/headroom-job", None).json();
        assert_ne!(job["status"], "failed", "{job}");
        job["status"] == "completed"
    });
    let job = call_retrying(&hub, "GET", "/jobs/v2/headroom-job", None).json();
    assert_eq!(job["deviceJobStatistics"]["succeededCount"], DEVICES, "{job}");
    println!("job over {DEVICES} twins completed in {:?}", work.elapsed());
    wait_until("the configuration reaches every twin", Duration::from_secs(300), &mut connected, || {
        let c = hub.call("GET", "/configurations/headroom", None).json();
        c["systemMetrics"]["results"]["appliedCount"] == DEVICES
    });
    println!("configuration over {DEVICES} twins applied in {:?}", work.elapsed());

    // The hub is up, and the devices connected before it all are still connected.
    assert_eq!(hub.call("GET", "/api/health", None).status, 200);
    let twin = call_retrying(&hub, "GET", "/twins/hr-00007", None).json();
    assert_eq!(twin["properties"]["desired"]["level"], 5, "{twin}");
    assert_eq!(twin["tags"]["wave"], 1, "{twin}");
    for (i, device) in connected.iter_mut().enumerate().take(5) {
        assert_eq!(device.report(1, &json!({ "alive": true })), 204, "device {i} still connected");
    }
    drop(connected);
}
