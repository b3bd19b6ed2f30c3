//! Automatic device configurations with the real `azure-iot-hub` 2.7.0 Python SDK
//! (tests/python/test_configurations.py), and the twin history naming the configuration.

use twinhub_e2e::{pytest, Hub, Storage};

#[test]
fn configurations_with_the_python_sdk() {
    let storage = Storage::new("configurations");
    let hub = Hub::start_https(&storage);
    match pytest("test_configurations.py", &hub.owner_connection_string(), &[]) {
        Ok(stdout) => println!("{stdout}"),
        Err(output) => panic!("configuration suite failed:\n{output}\nhub:\n{}", hub.log_tail()),
    }
}

/// The history names the configuration as the actor of what it applied; an operator's write to
/// a property a configuration owns stands until the configuration changes.
#[test]
fn a_configurations_write_is_in_the_history_under_its_name() {
    let storage = Storage::new("configurations-history");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/h-1", Some("{}")).status, 200);
    assert_eq!(hub.call("PATCH", "/twins/h-1", Some(r#"{"tags":{"site":"x"}}"#)).status, 200);
    let body = r#"{"content":{"deviceContent":{"properties.desired.level":3}},"targetCondition":"tags.site = 'x'","priority":1}"#;
    let created = hub.call("PUT", "/configurations/site-x", Some(body));
    assert_eq!(created.status, 200, "{}", created.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let twin = hub.call("GET", "/twins/h-1", None).json();
        if twin["properties"]["desired"]["level"] == 3 {
            assert_eq!(twin["configurations"]["site-x"]["status"], "Applied", "{twin}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never applied: {twin}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // An operator's PATCH of a property the configuration owns stands: a configuration applies
    // on its own changes (a new revision, a twin newly targeted), as Azure's do, not on every
    // write to the twin.
    let patched = hub.call("PATCH", "/twins/h-1", Some(r#"{"properties":{"desired":{"level":7}}}"#));
    assert_eq!(patched.status, 200, "{}", patched.body);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let twin = hub.call("GET", "/twins/h-1", None).json();
    assert_eq!(twin["properties"]["desired"]["level"], 7, "{twin}");
    assert_eq!(twin["configurations"]["site-x"]["status"], "Applied");
    // A new revision applies again.
    let etag = hub.call("GET", "/configurations/site-x", None).json()["etag"].as_str().unwrap_or_default().to_owned();
    let revised = body.replace("level\":3", "level\":4");
    assert_ne!(revised, body);
    let (token, if_match) = (hub.owner_token(), format!("\"{etag}\""));
    let headers = [("Authorization", token.as_str()), ("if-match", if_match.as_str())];
    let updated = hub.call_with("PUT", "/configurations/site-x", Some(&revised), &headers);
    assert_eq!(updated.status, 200, "{}", updated.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while hub.call("GET", "/twins/h-1", None).json()["properties"]["desired"]["level"] != 4 {
        assert!(std::time::Instant::now() < deadline, "the new revision never applied:\n{}", hub.log_tail());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let history = hub.call("GET", "/api/twins/h-1/history", None).json();
    let actors: Vec<&str> =
        history["entries"].as_array().into_iter().flatten().filter_map(|e| e["actor"].as_str()).collect();
    assert_eq!(actors, ["iothubowner", "configuration:site-x", "iothubowner", "configuration:site-x"], "{actors:?}");
    // A job's write to the property stands too, and the history names the job after them.
    let job = r#"{"type":"scheduleUpdateTwin","queryCondition":"tags.site = 'x'","updateTwin":{"etag":"*","properties":{"desired":{"level":9}}}}"#;
    assert_eq!(hub.call("PUT", "/jobs/v2/over-config", Some(job)).status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while hub.call("GET", "/jobs/v2/over-config", None).json()["status"] != "completed" {
        assert!(std::time::Instant::now() < deadline, "the job never completed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let twin = hub.call("GET", "/twins/h-1", None).json();
    assert_eq!(
        (twin["properties"]["desired"]["level"].as_u64(), twin["configurations"]["site-x"]["status"].as_str()),
        (Some(9), Some("Applied"))
    );
    let history = hub.call("GET", "/api/twins/h-1/history", None).json();
    let last = history["entries"].as_array().and_then(|e| e.last()).map(|e| e["actor"].clone());
    assert_eq!(last, Some(serde_json::json!("job:over-config")), "{history}");
    hub.call("GET", "/configurations/nope", None).assert_hub_error(404, "ConfigurationNotFound", 404_020);
}

/// A hub holds at most 100 configurations (Azure's limit): the 101st is refused and changes
/// nothing; deleting one makes room.
#[test]
fn the_hub_holds_at_most_a_hundred_configurations() {
    let storage = Storage::new("configurations-limit");
    let hub = Hub::start(&storage);
    let body = |i: usize| {
        format!(
            r#"{{"content":{{"deviceContent":{{"properties.desired.c{i}":1}}}},"targetCondition":"tags.none = 1","priority":{i}}}"#
        )
    };
    for i in 0..100 {
        let made = hub.call("PUT", &format!("/configurations/c-{i:03}"), Some(&body(i)));
        assert_eq!(made.status, 200, "{i}: {}", made.body);
    }
    hub.call("PUT", "/configurations/c-100", Some(&body(100))).assert_hub_error(400, "ArgumentInvalid", 400_004);
    assert_eq!(hub.call("GET", "/configurations", None).json().as_array().map(Vec::len), Some(100));
    hub.call("GET", "/configurations/c-100", None).assert_hub_error(404, "ConfigurationNotFound", 404_020);
    assert_eq!(hub.call("DELETE", "/configurations/c-000", None).status, 204);
    assert_eq!(hub.call("PUT", "/configurations/c-100", Some(&body(100))).status, 200);
}

/// An index shard added after configurations were made (the shard count raised) learns them
/// when it first needs them: devices landing there get their configuration too.
#[test]
fn a_new_index_shard_learns_the_configurations() {
    let storage = Storage::new("configurations-shards");
    let body = r#"{"content":{"deviceContent":{"properties.desired.level":5}},"targetCondition":"tags.site = 'y'","priority":1}"#;
    {
        let hub = Hub::start_with_vars(&storage, &[("FLEET_INDEX_SHARDS", "1")]);
        assert_eq!(hub.call("PUT", "/configurations/site-y", Some(body)).status, 200);
        hub.stop();
    }
    let hub = Hub::start_with_vars(&storage, &[("FLEET_INDEX_SHARDS", "8")]);
    for i in 0..8 {
        let id = format!("late-{i}");
        assert_eq!(hub.call("PUT", &format!("/devices/{id}"), Some("{}")).status, 200);
        let tagged = hub.call("PATCH", &format!("/twins/{id}"), Some(r#"{"tags":{"site":"y"}}"#));
        assert_eq!(tagged.status, 200, "{}", tagged.body);
        let twin = hub.call("GET", &format!("/twins/{id}"), None).json();
        assert_eq!(twin["properties"]["desired"]["level"], 5, "{id}: {twin}");
    }
}
