//! Jobs and rollouts against `wrangler dev`: the article's bulk update as a job that survives a
//! `kill -9` of the hub midway and still reaches every device exactly once; a rollout whose
//! canary wave refuses the firmware pauses itself and rolls back; job listing and the
//! per-device records through the query API. (The Azure SDK's IoTHubJobManager runs in
//! tests/python/test_service_sdk.py; bad job requests in bad_input.rs.)

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use twinhub_core::job::rollout::order_key;
use twinhub_e2e::{Hub, MqttDevice, Storage};

/// Creates `ids` (bulk, 100 at a time) and tags each with its building.
fn create_fleet(hub: &Hub, ids: &[String], building: impl Fn(usize) -> &'static str) {
    for chunk in ids.chunks(100) {
        let body: Vec<Value> =
            chunk.iter().map(|id| json!({ "id": id, "importMode": "create", "status": "enabled" })).collect();
        let reply = hub.call("POST", "/devices", Some(&Value::Array(body).to_string()));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    for (n, id) in ids.iter().enumerate() {
        let patch = json!({ "tags": { "location": { "building": building(n) } }, "properties": { "desired": { "firmwareVersion": "2.0.0" } } });
        assert_eq!(hub.call("PATCH", &format!("/twins/{id}"), Some(&patch.to_string())).status, 200);
    }
}

/// Waits until the fleet index counts `n` devices matching `condition` (it is eventually
/// consistent, and jobs select their devices there).
fn wait_for_index(hub: &Hub, condition: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let query = format!("SELECT COUNT() AS n FROM devices WHERE {condition}");
    loop {
        let reply = hub.call("POST", "/devices/query", Some(&json!({ "query": query }).to_string()));
        let found = reply.json()[0]["n"].as_u64().unwrap_or(0);
        if found == n {
            return;
        }
        assert!(Instant::now() < deadline, "the index never showed {n} rows for {query} (has {found})");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `GET /jobs/v2/{id}` until `done` says so; returns that job.
fn wait_for_job(hub: &Hub, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let job = hub.call("GET", &format!("/jobs/v2/{id}"), None).json();
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never {what}: {job}\n{}", hub.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn history(hub: &Hub, id: &str) -> Vec<Value> {
    hub.call("GET", &format!("/api/twins/{id}/history"), None).json()["entries"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_twin_update_job_survives_a_kill_and_reaches_every_device_exactly_once() {
    let storage = Storage::new("jobs-restart");
    // A slow job (40 devices/s), so the kill lands in the middle of it.
    let vars = [("JOB_DEVICES_PER_SECOND", "40")];
    let hub = Hub::start_with_vars(&storage, &vars);
    let ids: Vec<String> = (0..240).map(|i| format!("fw-{i:03}")).collect();
    create_fleet(&hub, &ids, |n| if n % 2 == 0 { "Building-A" } else { "Building-B" });
    wait_for_index(&hub, "tags.location.building = 'Building-A'", 120);

    let request = json!({
        "jobId": "fw-2.1.0",
        "type": "scheduleUpdateTwin",
        "queryCondition": "tags.location.building = 'Building-A'",
        "startTime": "2020-01-01T00:00:00Z",
        "maxExecutionTimeInSeconds": 3600,
        "updateTwin": { "etag": "*", "properties": { "desired": { "firmwareVersion": "2.1.0" } } },
    });
    let created = hub.call("PUT", "/jobs/v2/fw-2.1.0", Some(&request.to_string()));
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.json()["type"], "scheduleUpdateTwin");

    let midway = wait_for_job(&hub, "fw-2.1.0", "got started", |j| {
        j["deviceJobStatistics"]["succeededCount"].as_u64().unwrap_or(0) >= 20
    });
    assert_eq!(midway["status"], "running", "{midway}");
    assert_eq!(midway["deviceJobStatistics"]["deviceCount"], 120);
    hub.kill9();
    drop(hub);

    let hub = Hub::start_with_vars(&storage, &vars);
    let done = wait_for_job(&hub, "fw-2.1.0", "completed", |j| j["status"] == "completed");
    let stats = &done["deviceJobStatistics"];
    assert_eq!(
        (stats["deviceCount"].as_u64(), stats["succeededCount"].as_u64(), stats["failedCount"].as_u64()),
        (Some(120), Some(120), Some(0)),
        "{done}"
    );

    for (n, id) in ids.iter().enumerate() {
        let twin = hub.call("GET", &format!("/twins/{id}"), None).json();
        let by_job: Vec<Value> = history(&hub, id).into_iter().filter(|e| e["actor"] == "job:fw-2.1.0").collect();
        if n % 2 == 0 {
            assert_eq!(twin["properties"]["desired"]["firmwareVersion"], "2.1.0", "{id}");
            assert_eq!(by_job.len(), 1, "{id}: the job's change is in the history exactly once: {by_job:?}");
        } else {
            assert_eq!(twin["properties"]["desired"]["firmwareVersion"], "2.0.0", "{id}");
            assert!(by_job.is_empty(), "{id} is not in Building-A");
        }
    }

    // The per-device records, paged through the query API.
    let mut seen = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let token = hub.owner_token();
        let mut headers = vec![("authorization", token.as_str()), ("x-ms-max-item-count", "50")];
        if let Some(c) = &continuation {
            headers.push(("x-ms-continuation", c));
        }
        let body = json!({ "query": "SELECT * FROM devices.jobs WHERE jobId = 'fw-2.1.0' AND status = 'completed'" });
        let reply = hub.call_with("POST", "/devices/query", Some(&body.to_string()), &headers);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("x-ms-item-type"), Some("DeviceJob"));
        seen.extend(reply.json().as_array().unwrap().iter().map(|r| r["deviceId"].as_str().unwrap().to_owned()));
        continuation = reply.header("x-ms-continuation").map(str::to_owned);
        if continuation.is_none() {
            break;
        }
    }
    let expected: Vec<String> = ids.iter().step_by(2).cloned().collect();
    assert_eq!(seen, expected);

    // Listing, filtered as the SDKs filter (C# sends enum names).
    let list = hub.call("GET", "/jobs/v2/query?jobType=ScheduleUpdateTwin&jobStatus=Completed", None);
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(
        list.json().as_array().map(|a| a.iter().map(|j| j["jobId"].clone()).collect::<Vec<_>>()),
        Some(vec![json!("fw-2.1.0")])
    );
    assert_eq!(hub.call("GET", "/jobs/v2/query?jobStatus=running", None).json(), json!([]));
}

#[test]
fn a_rollout_pauses_when_its_canaries_refuse_and_rolls_back() {
    let storage = Storage::new("jobs-rollout");
    let hub = Hub::start(&storage);
    let ids: Vec<String> = (0..20).map(|i| format!("ro-{i:02}")).collect();
    create_fleet(&hub, &ids, |_| "Building-A");
    wait_for_index(&hub, "STARTSWITH(deviceId, 'ro-')", 20);

    // The canary wave is the first 20% in the rollout's spread order, which the test computes
    // as the hub does; two of its four devices will refuse the firmware.
    let mut order = ids.clone();
    order.sort_by_key(|id| order_key("rollout-1", id));
    let canaries: Vec<String> = order[..4].to_vec();
    let refusers = &canaries[..2];

    let request = json!({
        "type": "scheduleUpdateTwin",
        "queryCondition": "STARTSWITH(deviceId, 'ro-')",
        "updateTwin": { "etag": "*", "properties": { "desired": { "firmwareVersion": "2.1.0" } } },
        "rollout": { "canaryPercent": 20, "failureThresholdPercent": 25, "waveDeadlineSeconds": 120 },
    });
    let created = hub.call("PUT", "/jobs/v2/rollout-1", Some(&request.to_string()));
    assert_eq!(created.status, 200, "{}", created.body);

    // The canaries get the new desired value; the devices answer it.
    for id in &canaries {
        let deadline = Instant::now() + Duration::from_secs(30);
        while hub.call("GET", &format!("/twins/{id}"), None).json()["properties"]["desired"]["firmwareVersion"]
            != "2.1.0"
        {
            assert!(Instant::now() < deadline, "canary {id} never got the update");
            std::thread::sleep(Duration::from_millis(100));
        }
        let desired_version =
            hub.call("GET", &format!("/twins/{id}"), None).json()["properties"]["desired"]["$version"].clone();
        let mut device = MqttDevice::connect(&hub, id);
        let report = if refusers.contains(id) {
            json!({ "firmwareVersion": { "value": "2.0.0", "ac": 500, "av": desired_version, "ad": "flash verify failed" } })
        } else {
            json!({ "firmwareVersion": "2.1.0" })
        };
        assert_eq!(device.report(1, &report), 204);
    }

    let paused = wait_for_job(&hub, "rollout-1", "paused", |j| j["status"] == "paused");
    let message = paused["statusMessage"].as_str().unwrap_or_default();
    assert!(message.contains("2 of 4") && message.contains("refused"), "{paused}");
    assert_eq!(paused["deviceJobStatistics"]["succeededCount"], 2, "{paused}");
    assert_eq!(paused["deviceJobStatistics"]["failedCount"], 2, "{paused}");
    assert_eq!(paused["deviceJobStatistics"]["pendingCount"], 16, "{paused}");
    for id in &order[4..] {
        let desired = &hub.call("GET", &format!("/twins/{id}"), None).json()["properties"]["desired"];
        assert_eq!(desired["firmwareVersion"], "2.0.0", "{id} is past the canary wave and was not touched");
    }
    let refused = hub.call(
        "POST",
        "/devices/query",
        Some(
            &json!({ "query": "SELECT * FROM devices.jobs WHERE jobId = 'rollout-1' AND status = 'failed'" })
                .to_string(),
        ),
    );
    let mut failed: Vec<String> =
        refused.json().as_array().unwrap().iter().map(|r| r["deviceId"].as_str().unwrap().to_owned()).collect();
    failed.sort();
    let mut expected = refusers.to_vec();
    expected.sort();
    assert_eq!(failed, expected);
    assert!(refused.body.contains("flash verify failed"), "{}", refused.body);

    // Roll back: every canary gets 2.0.0 back, recorded as the job's rollback.
    let rollback = hub.call("POST", "/jobs/v2/rollout-1/rollback", None);
    assert_eq!(rollback.status, 200, "{}", rollback.body);
    let done = wait_for_job(&hub, "rollout-1", "rolled back", |j| j["status"] == "rolledBack");
    assert!(done["statusMessage"].as_str().unwrap_or_default().contains("4 device"), "{done}");
    for id in &canaries {
        let desired = &hub.call("GET", &format!("/twins/{id}"), None).json()["properties"]["desired"];
        assert_eq!(desired["firmwareVersion"], "2.0.0", "{id} rolled back");
        let actors: Vec<Value> = history(&hub, id).into_iter().map(|e| e["actor"].clone()).collect();
        assert!(actors.contains(&json!("job:rollout-1:rollback")), "{id}: {actors:?}");
    }
    // A finished job cannot be cancelled or resumed.
    hub.call("POST", "/jobs/v2/rollout-1/cancel", None).assert_hub_error(400, "ArgumentInvalid", 400_004);
    hub.call("POST", "/jobs/v2/rollout-1/resume", None).assert_hub_error(400, "ArgumentInvalid", 400_004);
}
