//! Issue 4's queries through a real `wrangler dev`: the article's queries over a fleet created
//! through the REST API and reported over MQTT (so device objects feed the index as in
//! production), paging with continuation tokens, GROUP BY, TOP, projections, and every error
//! case answered with 400 and a position.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use twinhub_core::fixture;
use twinhub_e2e::{Hub, MqttDevice, Reply, Storage};

/// `POST /devices/query` with optional page size and continuation.
fn query(hub: &Hub, text: &str, page: Option<u32>, continuation: Option<&str>) -> Reply {
    let body = json!({ "query": text }).to_string();
    let page = page.map(|p| p.to_string());
    let token = hub.owner_token();
    let mut headers = vec![("Authorization", token.as_str())];
    if let Some(p) = &page {
        headers.push(("x-ms-max-item-count", p));
    }
    if let Some(c) = continuation {
        headers.push(("x-ms-continuation", c));
    }
    hub.call_with("POST", "/devices/query", Some(&body), &headers)
}

/// Every item of a query, following continuation tokens; also the number of pages.
fn all_pages(hub: &Hub, text: &str, page: u32) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let reply = query(hub, text, Some(page), token.as_deref());
        assert_eq!(reply.status, 200, "{text}: {}", reply.body);
        let batch = reply.json();
        let batch = batch.as_array().expect("an array of items");
        assert!(batch.len() <= page as usize, "page size respected");
        items.extend(batch.iter().cloned());
        pages += 1;
        match reply.header("x-ms-continuation") {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => return (items, pages),
        }
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["deviceId"].as_str().expect("deviceId").to_owned()).collect()
}

/// Creates the fixture fleet through the service API and has each device report over MQTT.
fn create_fleet(hub: &Hub, devices: &[fixture::FixtureDevice]) {
    for chunk in devices.chunks(100) {
        let bulk: Vec<Value> =
            chunk.iter().map(|d| json!({ "id": d.device_id, "importMode": "create", "status": "enabled" })).collect();
        let reply = hub.call("POST", "/devices?api-version=2021-04-12", Some(&Value::Array(bulk).to_string()));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    for (i, d) in devices.iter().enumerate() {
        let reply = hub.call("PATCH", &format!("/twins/{}", d.device_id), Some(&d.service_patch().to_string()));
        assert_eq!(reply.status, 200, "{}", reply.body);
        let mut device = MqttDevice::connect(hub, &d.device_id);
        assert_eq!(device.report(i as u32 + 1, &d.reported), 204, "{} reports", d.device_id);
    }
}

#[test]
fn article_queries_paging_and_aggregates_over_a_real_fleet() {
    let storage = Storage::new("query");
    let hub = Hub::start(&storage);
    let devices = fixture::fleet(7, 60);
    create_fleet(&hub, &devices);

    // The article's queries return exactly the devices their plain-Rust predicates pick.
    for case in fixture::article_queries() {
        let expected: Vec<String> = devices.iter().filter(|d| (case.expect)(d)).map(|d| d.device_id.clone()).collect();
        assert!(!expected.is_empty(), "{}: the fixture has matches", case.name);
        let (items, _) = all_pages(&hub, case.text, 100);
        assert_eq!(ids(&items), expected, "{}", case.name);
    }

    // SELECT * pages: whole twins, item type Twin, each device exactly once across 9 pages.
    let first = query(&hub, "SELECT * FROM devices", Some(7), None);
    assert_eq!(first.header("x-ms-item-type"), Some("Twin"));
    assert!(first.header("x-twinhub-index-lag-ms").is_some(), "lag reported");
    let twin = &first.json()[0];
    assert_eq!(twin["deviceId"], "sensor-000000");
    assert!(twin["properties"]["reported"]["$metadata"].is_object(), "full twins: {twin}");
    let (items, pages) = all_pages(&hub, "SELECT * FROM devices", 7);
    let all: Vec<String> = devices.iter().map(|d| d.device_id.clone()).collect();
    assert_eq!(ids(&items), all);
    assert_eq!(pages, 9);

    // Projections: keys by alias or last segment, undefined omitted, item type Raw.
    let reply = query(
        &hub,
        "SELECT deviceId, tags.location.building AS b, properties.reported.nope FROM devices WHERE deviceId = 'sensor-000003'",
        None,
        None,
    );
    assert_eq!(reply.header("x-ms-item-type"), Some("Raw"));
    assert_eq!(reply.json(), json!([{ "deviceId": "sensor-000003", "b": devices[3].tags["location"]["building"] }]));

    // GROUP BY: devices per reported firmware version.
    let reply = query(&hub, fixture::FIRMWARE_GROUP_QUERY, None, None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let rows = reply.json();
    for fw in ["2.1.0", "2.0.5", "1.9.8"] {
        let n = devices.iter().filter(|d| d.reported["firmwareVersion"] == fw).count();
        let row = rows.as_array().expect("rows").iter().find(|r| r["firmware"] == fw);
        assert_eq!(row.map(|r| r["devices"].clone()), if n > 0 { Some(json!(n)) } else { None }, "{fw}: {rows}");
    }
    assert_eq!(query(&hub, "SELECT COUNT() AS total FROM devices", None, None).json(), json!([{ "total": 60 }]));
    // Groups page too.
    let (groups, pages) = all_pages(
        &hub,
        "SELECT tags.location.floor AS floor, COUNT() AS n FROM devices GROUP BY tags.location.floor",
        3,
    );
    assert_eq!(groups.iter().map(|g| g["n"].as_u64().unwrap_or(0)).sum::<u64>(), 60);
    assert_eq!(pages, groups.len().div_ceil(3));

    // TOP bounds the total across pages.
    let (items, _) = all_pages(&hub, "SELECT TOP 10 * FROM devices WHERE tags.deployment.environment != 'none'", 4);
    assert_eq!(ids(&items), all[..10].to_vec());

    // A write shows in the next query: the index is fed synchronously after each commit.
    let patch = json!({ "tags": { "location": { "building": "Building-Z" } } }).to_string();
    assert_eq!(hub.call("PATCH", "/twins/sensor-000005", Some(&patch)).status, 200);
    let reply = query(&hub, "SELECT * FROM devices WHERE tags.location.building = 'Building-Z'", None, None);
    assert_eq!(ids(reply.json().as_array().expect("items")), ["sensor-000005"]);
    assert_eq!(hub.call("DELETE", "/devices/sensor-000005", None).status, 204);
    let reply = query(&hub, "SELECT * FROM devices WHERE tags.location.building = 'Building-Z'", None, None);
    assert_eq!(reply.json(), json!([]));
    assert_eq!(query(&hub, "SELECT COUNT() AS total FROM devices", None, None).json(), json!([{ "total": 59 }]));

    // The lag endpoint.
    let lag = hub.call("GET", "/api/index", None);
    assert_eq!(lag.status, 200);
    assert_eq!(lag.json()["shards"].as_array().map(Vec::len), Some(4));
    assert!(lag.json()["shards"][0]["samples"].as_u64().is_some());

    // Collections without rows yet.
    assert_eq!(query(&hub, "SELECT * FROM devices.modules", None, None).json(), json!([]));
    assert_eq!(query(&hub, "SELECT * FROM devices.jobs", None, None).header("x-ms-item-type"), Some("DeviceJob"));
}

#[test]
fn bad_queries_get_400_with_a_position() {
    let storage = Storage::new("query-errors");
    let hub = Hub::start(&storage);
    let cases: Vec<(String, &str)> = vec![
        (
            "SELECT * FROM devices WHERE tags.location.building =".into(),
            "expected a value after '=', found end of query at 1:53",
        ),
        ("SELECT * FROM devices WHERE deviceId = 'abc".into(), "unterminated string"),
        ("SELECT * FROM devices WHERE FOO(deviceId)".into(), "unknown function 'FOO'"),
        ("SELECT * FROM devices WHERE IS_DEFINED(a, b)".into(), "IS_DEFINED takes 1 argument, not 2"),
        ("SELECT deviceId, COUNT() FROM devices".into(), "without GROUP BY"),
        ("SELECT TOP 0 * FROM devices".into(), "TOP must be"),
        ("SELECT TOP -1 * FROM devices".into(), "TOP must be"),
        ("SELECT TOP 10000000000 * FROM devices".into(), "TOP must be"),
        (format!("SELECT * FROM devices WHERE deviceId = '{}'", "x".repeat(8200)), "longer than 8192 characters"),
        (format!("SELECT * FROM devices WHERE {}1 = 1{}", "(".repeat(4000), ")".repeat(4000)), "nests more than 64"),
        ("SELECT * FROM devices WHERE".into(), "expected a value"),
    ];
    for (text, message) in cases {
        let reply = query(&hub, &text, None, None);
        reply.assert_hub_error(400, "ArgumentInvalid", 400_004);
        assert!(reply.body.contains(message), "{message}: {}", reply.body);
        assert!(reply.body.contains(" at 1:"), "a position: {}", reply.body);
    }
    // Bodies and tokens.
    hub.call("POST", "/devices/query", Some("{nope")).assert_hub_error(400, "IotHubFormatError", 400_006);
    hub.call("POST", "/devices/query", Some("{}")).assert_hub_error(400, "ArgumentNull", 400_005);
    for token in ["garbage!", "eyJxIjoxfQ", ""] {
        let reply = query(&hub, "SELECT * FROM devices", None, Some(token));
        if token.is_empty() {
            assert_eq!(reply.status, 200, "an empty token is the first page");
        } else {
            reply.assert_hub_error(400, "ArgumentInvalid", 400_004);
            assert!(reply.body.contains("continuation token"), "{}", reply.body);
        }
    }
    // A token of one query does not continue another.
    hub.call("PUT", "/devices/a", Some("{}"));
    hub.call("PUT", "/devices/b", Some("{}"));
    let first = query(&hub, "SELECT * FROM devices", Some(1), None);
    let token = first.header("x-ms-continuation").expect("more pages").to_owned();
    query(&hub, "SELECT deviceId FROM devices", Some(1), Some(&token)).assert_hub_error(
        400,
        "ArgumentInvalid",
        400_004,
    );
    // No token, no query.
    let reply = hub.call_with("POST", "/devices/query", Some(r#"{"query":"SELECT * FROM devices"}"#), &[]);
    reply.assert_hub_error(401, "IotHubUnauthorizedAccess", 401_002);
    // Oversized bodies are refused before parsing.
    let huge = json!({ "query": format!("SELECT * FROM devices WHERE deviceId = '{}'", "x".repeat(300_000)) });
    hub.call("POST", "/devices/query", Some(&huge.to_string())).assert_hub_error(413, "MessageTooLarge", 413_001);
    // The benchmark's fleet loader does not exist unless the benchmark enables it.
    let slice = r#"{"seed":1,"start":0,"count":10}"#;
    hub.call("POST", "/api/bench/fleet", Some(slice)).assert_hub_error(404, "NotFound", 404_000);
    // The hub is still healthy after all of it.
    let items = query(&hub, "SELECT deviceId FROM devices", None, None).json();
    let found: BTreeSet<String> = ids(items.as_array().expect("items")).into_iter().collect();
    assert_eq!(found, BTreeSet::from(["a".to_owned(), "b".to_owned()]));
}
