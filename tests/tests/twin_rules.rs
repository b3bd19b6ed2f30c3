//! Issue 3's twin rules over REST: limits and malformed writes leave the twin untouched,
//! permissions per policy, `PUT` replaces, and the history records every accepted change.

use serde_json::{json, Value};
use twinhub_core::auth::sign;
use twinhub_e2e::{now_secs, Hub, Reply, Storage};

fn as_policy(hub: &Hub, name: &str, method: &str, path: &str, body: Option<&str>) -> Reply {
    hub.call_with(method, path, body, &[("Authorization", &hub.policy_token(name))])
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, i| json!({ format!("l{i}"): inner }))
}

#[test]
fn invalid_writes_are_refused_and_change_nothing() {
    let storage = Storage::new("twin-rules");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/limits", Some("{}")).status, 200);
    let seeded = hub.call("PATCH", "/twins/limits", Some(r#"{"tags":{"keep":1},"properties":{"desired":{"keep":2}}}"#));
    assert_eq!(seeded.status, 200);
    let before = seeded.json();

    let big_section: serde_json::Map<String, Value> =
        (0..9).map(|i| (format!("k{i}"), json!("x".repeat(4000)))).collect();
    let cases: Vec<(&str, String, u16, &str, u64)> = vec![
        ("invalid JSON", "{nope".into(), 400, "IotHubFormatError", 400_006),
        ("tags not an object", r#"{"tags":[1]}"#.into(), 400, "ArgumentInvalid", 400_004),
        ("key with $", r#"{"tags":{"$x":1}}"#.into(), 400, "ArgumentInvalid", 400_004),
        ("key with .", r#"{"properties":{"desired":{"a.b":1}}}"#.into(), 400, "ArgumentInvalid", 400_004),
        ("key with space", r#"{"tags":{"a b":1}}"#.into(), 400, "ArgumentInvalid", 400_004),
        ("key with control char", "{\"tags\":{\"a\\u0007b\":1}}".into(), 400, "ArgumentInvalid", 400_004),
        ("depth 11", json!({ "tags": nested(12) }).to_string(), 400, "ArgumentInvalid", 400_004),
        ("4 KB + 1 value", json!({ "tags": { "v": "x".repeat(4097) } }).to_string(), 400, "ArgumentInvalid", 400_004),
        ("2^53", r#"{"properties":{"desired":{"n":9007199254740992}}}"#.into(), 400, "ArgumentInvalid", 400_004),
        (
            "33 KB desired",
            json!({ "properties": { "desired": big_section } }).to_string(),
            400,
            "ArgumentInvalid",
            400_004,
        ),
        (
            "oversized body",
            json!({ "tags": { "v": "x".repeat(300 * 1024) } }).to_string(),
            413,
            "MessageTooLarge",
            413_001,
        ),
    ];
    for (what, body, status, name, code) in &cases {
        let reply = hub.call("PATCH", "/twins/limits", Some(body));
        assert_eq!(reply.status, *status, "{what}: {}", reply.body);
        reply.assert_hub_error(*status, name, *code);
        assert_eq!(hub.call("GET", "/twins/limits", None).json(), before, "{what} changed the twin");
    }
    // The depth limit is exactly the documented one: `tags.one.two...ten.property` (ten nested
    // objects, a leaf in the tenth) is accepted, one level more is not.
    let eleven = json!({ "tags": { "one": nested(11) } }).to_string();
    assert_eq!(hub.call("PATCH", "/twins/limits", Some(&eleven)).status, 400, "11 levels under tags");
    let ten = json!({ "tags": { "one": nested(10) } }).to_string();
    assert_eq!(hub.call("PATCH", "/twins/limits", Some(&ten)).status, 200, "10 levels under tags is the maximum");
    let after_ok = hub.call("GET", "/twins/limits", None).json();

    // Malformed If-Match: no etag matches it.
    let reply = hub.call_with(
        "PATCH",
        "/twins/limits",
        Some(r#"{"tags":{"x":1}}"#),
        &[("Authorization", &hub.owner_token()), ("If-Match", "not-an-etag\"")],
    );
    reply.assert_hub_error(412, "PreconditionFailed", 412_001);
    // Messages say what to fix.
    let reply = hub.call("PATCH", "/twins/limits", Some(&json!({ "tags": { "v": "x".repeat(4097) } }).to_string()));
    let inner: Value = serde_json::from_str(reply.json()["Message"].as_str().unwrap()).unwrap();
    assert!(inner["message"].as_str().unwrap().contains("tags.v is 4097 bytes"), "{inner}");

    // Unknown device.
    hub.call("PATCH", "/twins/nobody", Some("{}")).assert_hub_error(404, "DeviceNotFound", 404_001);
    assert_eq!(hub.call("GET", "/twins/limits", None).json(), after_ok);
}

#[test]
fn permissions_follow_the_policy_table() {
    let storage = Storage::new("policies");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/p1", Some("{}")).status, 200);
    let unauthorized = |r: Reply| r.assert_hub_error(401, "IotHubUnauthorizedAccess", 401_002);

    // registryRead: read identities and statistics, nothing else.
    assert_eq!(as_policy(&hub, "registryRead", "GET", "/devices/p1", None).status, 200);
    assert_eq!(as_policy(&hub, "registryRead", "GET", "/statistics/devices", None).status, 200);
    unauthorized(as_policy(&hub, "registryRead", "PATCH", "/twins/p1", Some(r#"{"tags":{"a":1}}"#)));
    unauthorized(as_policy(&hub, "registryRead", "GET", "/twins/p1", None));
    unauthorized(as_policy(&hub, "registryRead", "PUT", "/devices/p2", Some("{}")));
    // registryReadWrite: create and delete, no twins.
    assert_eq!(as_policy(&hub, "registryReadWrite", "PUT", "/devices/p2", Some("{}")).status, 200);
    unauthorized(as_policy(&hub, "registryReadWrite", "GET", "/twins/p2", None));
    // service: twins, not the registry.
    let patched = as_policy(&hub, "service", "PATCH", "/twins/p1", Some(r#"{"tags":{"by":"service"}}"#));
    assert_eq!(patched.status, 200, "{}", patched.body);
    unauthorized(as_policy(&hub, "service", "PUT", "/devices/p3", Some("{}")));
    unauthorized(as_policy(&hub, "service", "GET", "/devices/p1", None));
    // device policy: device endpoints only.
    unauthorized(as_policy(&hub, "device", "GET", "/twins/p1", None));
    // A device's own key cannot use the service API.
    let key = hub.call("GET", "/devices/p1", None).json()["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let device_token = sign(&format!("{}/devices/p1", hub.host()), &key, None, now_secs() + 600).unwrap();
    unauthorized(hub.call_with("GET", "/twins/p1", None, &[("Authorization", &device_token)]));

    // Nothing the refused calls tried is visible.
    let twin = hub.call("GET", "/twins/p1", None).json();
    assert_eq!(twin["tags"], json!({ "by": "service" }));
    hub.call("GET", "/devices/p3", None).assert_hub_error(404, "DeviceNotFound", 404_001);
}

#[test]
fn replace_and_history() {
    let storage = Storage::new("history");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/h1", Some("{}")).status, 200);
    let body = r#"{"tags":{"location":{"building":"Building-A"}},"properties":{"desired":{"telemetryInterval":30,"mode":"eco"}}}"#;
    assert_eq!(hub.call("PATCH", "/twins/h1", Some(body)).status, 200);
    let replaced = hub.call(
        "PUT",
        "/twins/h1",
        Some(r#"{"tags":{"owner":"ops"},"properties":{"desired":{"telemetryInterval":60}}}"#),
    );
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    let twin = replaced.json();
    assert_eq!(twin["tags"], json!({ "owner": "ops" }));
    assert_eq!(twin["properties"]["desired"]["telemetryInterval"], 60);
    assert!(twin["properties"]["desired"].get("mode").is_none());
    assert_eq!(twin["properties"]["desired"]["$version"], 3);
    assert_eq!(twin["version"], 4);
    assert_eq!(twin["etag"], "AAAAAAAAAAM=");
    assert_eq!(replaced.header("etag"), Some("\"AAAAAAAAAAM=\""));

    let history = hub.call("GET", "/api/twins/h1/history", None);
    assert_eq!(history.status, 200, "{}", history.body);
    let entries = history.json()["entries"].as_array().cloned().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["version"], 3);
    assert_eq!(entries[0]["actor"], "iothubowner");
    assert!(entries[0]["changes"].as_array().unwrap().contains(&json!({
        "path": "properties.desired.telemetryInterval", "new": 30
    })));
    let second = entries[1]["changes"].as_array().unwrap();
    assert!(second.contains(&json!({ "path": "properties.desired.telemetryInterval", "old": 30, "new": 60 })));
    assert!(second.contains(&json!({ "path": "properties.desired.mode", "old": "eco" })));
    assert!(second.contains(&json!({ "path": "tags.location", "old": { "building": "Building-A" } })));
    // since= pages forward; an actor from another policy is recorded as that policy.
    let later = hub.call("GET", "/api/twins/h1/history?since=3", None).json();
    assert_eq!(later["entries"].as_array().map(Vec::len), Some(1));
    let svc = as_policy(&hub, "service", "PATCH", "/twins/h1", Some(r#"{"tags":{"x":1}}"#));
    assert_eq!(svc.status, 200);
    let last = hub.call("GET", "/api/twins/h1/history?since=4", None).json();
    assert_eq!(last["entries"][0]["actor"], "service");
    hub.call("GET", "/api/twins/ghost/history", None).assert_hub_error(404, "DeviceNotFound", 404_001);
}

#[test]
fn odd_ids_retention_and_any_api_version() {
    let storage = Storage::new("ids-retention");
    let hub = Hub::start_with_vars(&storage, &[("TWIN_HISTORY_RETENTION", "3")]);
    // Ids may hold characters clients percent-encode: % # ? $ ' ( ) * , = @ ; : !
    let id = "dev#1?a=b;c:d%e!(f)*@g$'h,";
    let encoded = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string();
    let created = hub.call("PUT", &format!("/devices/{encoded}?api-version=2018-06-30"), Some("{}"));
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.json()["deviceId"], id);
    for i in 0..5 {
        let body = json!({ "properties": { "desired": { "i": i } } }).to_string();
        let reply = hub.call("PATCH", &format!("/twins/{encoded}?api-version=2021-04-12"), Some(&body));
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["deviceId"], id);
    }
    let history = hub.call("GET", &format!("/api/twins/{encoded}/history"), None).json();
    let versions: Vec<_> = history["entries"].as_array().unwrap().iter().map(|e| e["version"].clone()).collect();
    assert_eq!(versions, vec![json!(5), json!(6), json!(7)], "retention keeps the last 3");
    let listed = hub.call("GET", "/devices", None).json();
    assert_eq!(listed[0]["deviceId"], id);
}
