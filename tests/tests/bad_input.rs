//! Bad input gets IoT Hub's status, `iothub-errorcode` header and envelope, and never takes the
//! Worker down: after every case the hub still answers and earlier data is intact.

use twinhub_core::auth::sign;
use twinhub_e2e::{now_secs, Hub, Storage, OWNER_KEY};

fn with_auth(hub: &Hub, method: &str, path: &str, body: Option<&str>, token: &str) -> twinhub_e2e::Reply {
    hub.call_with(method, path, body, &[("Authorization", token)])
}

#[test]
fn bad_requests_get_iot_hub_errors_and_nothing_is_lost() {
    let storage = Storage::new("bad-input");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/keeper", Some("{}")).status, 200);
    let patched = hub.call("PATCH", "/twins/keeper", Some(r#"{"tags":{"keep":"me"}}"#));
    assert_eq!(patched.status, 200);
    let keeper = patched.json();

    // Unknown routes: JSON 404, no HTML.
    let unknown = hub.call("GET", "/devices/keeper/nonsense", None);
    unknown.assert_hub_error(404, "NotFound", 404_000);
    assert!(unknown.header("content-type").is_some_and(|c| c.starts_with("application/json")));
    hub.call("GET", "/api/nope", None).assert_hub_error(404, "NotFound", 404_000);
    hub.call("POST", "/twins/keeper", Some("{}")).assert_hub_error(405, "MethodNotAllowed", 405_000);

    // Tokens: missing, malformed, expired, wrongly signed, wrong hub, unknown policy, device-scoped.
    let unauthorized = |reply: twinhub_e2e::Reply| reply.assert_hub_error(401, "IotHubUnauthorizedAccess", 401_002);
    unauthorized(hub.call_with("GET", "/twins/keeper", None, &[]));
    unauthorized(with_auth(&hub, "GET", "/twins/keeper", None, "Bearer abc"));
    unauthorized(with_auth(&hub, "GET", "/twins/keeper", None, "SharedAccessSignature sr=x&sig=y"));
    unauthorized(with_auth(
        &hub,
        "GET",
        "/twins/keeper",
        None,
        "SharedAccessSignature sr=%ZZ&sig=y&se=1&skn=iothubowner",
    ));
    let expired = sign(&hub.host(), OWNER_KEY, Some("iothubowner"), now_secs() - 10).unwrap();
    unauthorized(with_auth(&hub, "GET", "/twins/keeper", None, &expired));
    let other_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let forged = sign(&hub.host(), other_key, Some("iothubowner"), now_secs() + 600).unwrap();
    unauthorized(with_auth(&hub, "GET", "/twins/keeper", None, &forged));
    let wrong_hub = sign("elsewhere.azure-devices.net", OWNER_KEY, Some("iothubowner"), now_secs() + 600).unwrap();
    unauthorized(with_auth(&hub, "GET", "/twins/keeper", None, &wrong_hub));
    let unknown_policy = sign(&hub.host(), OWNER_KEY, Some("nobody"), now_secs() + 600).unwrap();
    unauthorized(with_auth(&hub, "GET", "/twins/keeper", None, &unknown_policy));
    let device_scoped = sign(&format!("{}/devices/keeper", hub.host()), OWNER_KEY, None, now_secs() + 600).unwrap();
    unauthorized(with_auth(&hub, "GET", "/twins/keeper", None, &device_scoped));
    // Writes with bad tokens change nothing.
    unauthorized(with_auth(&hub, "PATCH", "/twins/keeper", Some(r#"{"tags":{"keep":"changed"}}"#), &forged));
    unauthorized(with_auth(&hub, "PUT", "/devices/intruder", Some("{}"), &expired));
    unauthorized(with_auth(&hub, "DELETE", "/devices/keeper", None, &wrong_hub));
    // `/api/session` (the dashboard's read-only check) takes any valid token and no other.
    unauthorized(hub.call_with("GET", "/api/session", None, &[]));
    unauthorized(with_auth(&hub, "GET", "/api/session", None, &forged));
    unauthorized(with_auth(&hub, "GET", "/api/session", None, &device_scoped));
    hub.call("POST", "/api/session", Some("{}")).assert_hub_error(405, "MethodNotAllowed", 405_000);
    let me = hub.call("GET", "/api/session", None).json();
    assert_eq!(me["policy"], "iothubowner");
    assert_eq!(
        me["permissions"],
        serde_json::json!(["RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"])
    );
    assert!(!me.to_string().contains(OWNER_KEY), "the key never comes back");
    // The error body never echoes the token.
    let echoed = with_auth(&hub, "GET", "/twins/keeper", None, &forged);
    assert!(!echoed.body.contains("sig="), "token echoed: {}", echoed.body);

    // Bodies: not JSON, wrong shape, bad keys, too large.
    hub.call("PUT", "/devices/new-one", Some("{not json")).assert_hub_error(400, "IotHubFormatError", 400_006);
    hub.call("PUT", "/devices/new-one", Some(r#"{"status":"sleepy"}"#)).assert_hub_error(
        400,
        "ArgumentInvalid",
        400_004,
    );
    hub.call("PATCH", "/twins/keeper", Some("not json")).assert_hub_error(400, "IotHubFormatError", 400_006);
    hub.call("PATCH", "/twins/keeper", Some("[1,2]")).assert_hub_error(400, "ArgumentInvalid", 400_004);
    hub.call("PATCH", "/twins/keeper", Some(r#"{"tags":"x"}"#)).assert_hub_error(400, "ArgumentInvalid", 400_004);
    hub.call("PATCH", "/twins/keeper", Some(r#"{"tags":{"a.b":1}}"#)).assert_hub_error(400, "ArgumentInvalid", 400_004);
    let huge = format!(r#"{{"tags":{{"big":"{}"}}}}"#, "x".repeat(300 * 1024));
    hub.call("PATCH", "/twins/keeper", Some(&huge)).assert_hub_error(413, "MessageTooLarge", 413_001);
    hub.call("PUT", "/devices/bad%20id", Some("{}")).assert_hub_error(400, "ArgumentInvalid", 400_004);

    // Conflicts and missing devices.
    hub.call("PUT", "/devices/keeper", Some("{}")).assert_hub_error(409, "DeviceAlreadyExists", 409_001);
    hub.call("GET", "/twins/ghost", None).assert_hub_error(404, "DeviceNotFound", 404_001);
    hub.call("GET", "/devices/ghost", None).assert_hub_error(404, "DeviceNotFound", 404_001);
    hub.call("PATCH", "/twins/ghost", Some("{}")).assert_hub_error(404, "DeviceNotFound", 404_001);
    let stale = hub.call_with(
        "PATCH",
        "/twins/keeper",
        Some(r#"{"tags":{"keep":"stale"}}"#),
        &[("Authorization", &hub.owner_token()), ("If-Match", "\"AAAAAAAAAAE=\"")],
    );
    stale.assert_hub_error(412, "PreconditionFailed", 412_001);

    // Jobs: each bad request is refused before a job exists.
    let job = |patch: serde_json::Value| {
        let mut body = serde_json::json!({
            "type": "scheduleUpdateTwin",
            "queryCondition": "tags.location.building = 'Building-A'",
            "updateTwin": { "etag": "*", "properties": { "desired": { "firmwareVersion": "2.1.0" } } },
        });
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        hub.call("PUT", "/jobs/v2/bad-job", Some(&body.to_string()))
    };
    let bad_query = job(serde_json::json!({ "queryCondition": "tags.location.building = = 'A'" }));
    bad_query.assert_hub_error(400, "ArgumentInvalid", 400_004);
    assert!(bad_query.body.contains("at 1:"), "the error has a position: {}", bad_query.body);
    job(serde_json::json!({ "type": "export" })).assert_hub_error(400, "ArgumentInvalid", 400_004);
    job(serde_json::json!({ "startTime": "next tuesday" })).assert_hub_error(400, "ArgumentInvalid", 400_004);
    job(serde_json::json!({ "maxExecutionTimeInSeconds": -1 })).assert_hub_error(400, "ArgumentInvalid", 400_004);
    job(serde_json::json!({ "maxExecutionTimeInSeconds": 99_999_999_999u64 })).assert_hub_error(
        400,
        "ArgumentInvalid",
        400_004,
    );
    job(serde_json::json!({ "type": "scheduleDeviceMethod", "cloudToDeviceMethod": { "methodName": "re/boot" } }))
        .assert_hub_error(400, "ArgumentInvalid", 400_004);
    hub.call("PUT", "/jobs/v2/bad-job", Some("{nope")).assert_hub_error(400, "IotHubFormatError", 400_006);
    hub.call("GET", "/jobs/v2/bad-job", None).assert_hub_error(404, "JobNotFound", 404_002);
    hub.call("POST", "/jobs/v2/bad-job/cancel", None).assert_hub_error(404, "JobNotFound", 404_002);
    hub.call("DELETE", "/jobs/v2/bad-job", None).assert_hub_error(405, "MethodNotAllowed", 405_000);
    hub.call("GET", "/jobs/v2/query?jobType=export", None).assert_hub_error(400, "ArgumentInvalid", 400_004);
    // A valid job for a device that does not exist completes with no devices; its id is then taken.
    let ok = job(serde_json::json!({ "queryCondition": "deviceId = 'nobody'" }));
    assert_eq!(ok.status, 200, "{}", ok.body);
    job(serde_json::json!({ "queryCondition": "deviceId = 'nobody'" })).assert_hub_error(
        409,
        "JobAlreadyExists",
        409_104,
    );
    let device_jobs = serde_json::json!({ "query": "SELECT COUNT() FROM devices.jobs" }).to_string();
    hub.call("POST", "/devices/query", Some(&device_jobs)).assert_hub_error(400, "ArgumentInvalid", 400_004);

    // Still alive, and nothing was lost or changed by the rejected requests.
    assert_eq!(hub.call_with("GET", "/api/health", None, &[]).status, 200);
    assert_eq!(hub.call("GET", "/twins/keeper", None).json(), keeper);
    hub.call("GET", "/devices/intruder", None).assert_hub_error(404, "DeviceNotFound", 404_001);
    hub.call("GET", "/devices/new-one", None).assert_hub_error(404, "DeviceNotFound", 404_001);
}
