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

/// The history names the configuration as the actor of what it applied.
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
    let history = hub.call("GET", "/api/twins/h-1/history", None).json();
    let actors: Vec<&str> =
        history["entries"].as_array().into_iter().flatten().filter_map(|e| e["actor"].as_str()).collect();
    assert!(actors.contains(&"configuration:site-x"), "{actors:?}");
    hub.call("GET", "/configurations/nope", None).assert_hub_error(404, "ConfigurationNotFound", 404_020);
}
