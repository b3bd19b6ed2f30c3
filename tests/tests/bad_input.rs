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

/// The hardening cases of issue 16 that are not lifecycle (`lifecycle.rs`): query sizes,
/// number precision, query permissions and token scopes, free-text bounds, page bounds.
#[test]
fn bounds_precision_and_scopes() {
    let storage = Storage::new("bad-input-bounds");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/keeper", Some("{}")).status, 200);

    // A query past the bound values SQLite (and Cloudflare) take: 400 with the position, not
    // 500; and a job with such a condition is refused at PUT.
    let ids = |n: usize| (0..n).map(|i| format!("'d{i}'")).collect::<Vec<_>>().join(",");
    let long = format!("SELECT * FROM devices WHERE deviceId IN [{}]", ids(1001));
    let refused = hub.call("POST", "/devices/query", Some(&serde_json::json!({ "query": long }).to_string()));
    refused.assert_hub_error(400, "ArgumentInvalid", 400_004);
    assert!(refused.body.contains("at most 1000") && refused.body.contains("at 1:"), "{}", refused.body);
    let fits = format!("SELECT * FROM devices WHERE deviceId IN ['keeper',{}]", ids(500));
    let answered = hub.call("POST", "/devices/query", Some(&serde_json::json!({ "query": fits }).to_string()));
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(answered.json().as_array().map(Vec::len), Some(1));
    // Hundreds of comparisons bind one parameter on workerd's SQLite too.
    let ors = (0..300).map(|i| format!("deviceId = 'x{i}'")).collect::<Vec<_>>().join(" OR ");
    let q = serde_json::json!({ "query": format!("SELECT * FROM devices WHERE {ors} OR deviceId = 'keeper'") });
    let answered = hub.call("POST", "/devices/query", Some(&q.to_string()));
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(answered.json().as_array().map(Vec::len), Some(1));
    let job = serde_json::json!({
        "type": "scheduleUpdateTwin",
        "queryCondition": format!("deviceId IN [{}]", ids(1001)),
        "updateTwin": { "etag": "*", "tags": { "x": 1 } },
    });
    let put = hub.call("PUT", "/jobs/v2/too-long", Some(&job.to_string()));
    put.assert_hub_error(400, "ArgumentInvalid", 400_004);

    // Twin integers are bounded as IoT Hub bounds them (±2^52): past it 400, not 500; at the
    // bound every digit survives the twin, the index and the history.
    let big = r#"{"tags":{"big":9007199254740993}}"#;
    hub.call("PATCH", "/twins/keeper", Some(big)).assert_hub_error(400, "ArgumentInvalid", 400_004);
    let huge = r#"{"tags":{"huge":18446744073709551615}}"#;
    hub.call("PATCH", "/twins/keeper", Some(huge)).assert_hub_error(400, "ArgumentInvalid", 400_004);
    let edge = r#"{"tags":{"big":4503599627370495,"neg":-4503599627370496}}"#;
    let patched = hub.call("PATCH", "/twins/keeper", Some(edge));
    assert_eq!(patched.status, 200, "{}", patched.body);
    for body in [patched.body.clone(), hub.call("GET", "/twins/keeper", None).body] {
        assert!(body.contains("4503599627370495") && body.contains("-4503599627370496"), "{body}");
    }
    let q = r#"{"query":"SELECT tags.big FROM devices WHERE tags.big > 4503599627370000"}"#;
    let found = hub.call("POST", "/devices/query", Some(q));
    assert_eq!(found.status, 200, "{}", found.body);
    assert!(found.body.contains("4503599627370495"), "the index keeps every digit: {}", found.body);
    // Numbers a client puts in query strings: huge ones answer 400 or are clamped, never 500.
    for path in [
        "/api/twins/keeper/history?since=18446744073709551615",
        "/api/twins/keeper/history?since=99999999999999999999999",
        "/api/devices/keeper/telemetry?limit=18446744073709551615",
        "/api/devices/keeper/telemetry/series?field=t&from=18446744073709551614&to=18446744073709551615",
    ] {
        let reply = hub.call("GET", path, None);
        assert!(reply.status == 200 || reply.status == 400, "{path}: {} {}", reply.status, reply.body);
    }
    let method = r#"{"methodName":"m","responseTimeoutInSeconds":18446744073709551615,"payload":{}}"#;
    let reply = hub.call("POST", "/twins/keeper/methods", Some(method));
    assert!(reply.status == 400 || reply.status == 404, "{} {}", reply.status, reply.body);

    // Queries read twins: ServiceConnect, as on IoT Hub; registryRead may list identities only.
    let policies = twinhub_core::auth::Policy::all(OWNER_KEY, None).unwrap();
    let policy_token = |name: &str, resource: &str| {
        let key = &policies.iter().find(|p| p.name == name).unwrap().key;
        sign(resource, key, Some(name), now_secs() + 600).unwrap()
    };
    let query = r#"{"query":"SELECT * FROM devices"}"#;
    let read = policy_token("registryRead", &hub.host());
    with_auth(&hub, "POST", "/devices/query", Some(query), &read).assert_hub_error(
        401,
        "IotHubUnauthorizedAccess",
        401_002,
    );
    assert_eq!(with_auth(&hub, "GET", "/devices/keeper", None, &read).status, 200);
    let service = policy_token("service", &hub.host());
    assert_eq!(with_auth(&hub, "POST", "/devices/query", Some(query), &service).status, 200);
    // `sr` matches by path-segment prefix: `{host}/devices` grants the registry routes only.
    let devices_scope = policy_token("iothubowner", &format!("{}/devices", hub.host()));
    assert_eq!(with_auth(&hub, "GET", "/devices/keeper", None, &devices_scope).status, 200);
    assert_eq!(with_auth(&hub, "POST", "/devices/query", Some(query), &devices_scope).status, 200);
    with_auth(&hub, "GET", "/twins/keeper", None, &devices_scope).assert_hub_error(
        401,
        "IotHubUnauthorizedAccess",
        401_002,
    );
    let one_device = policy_token("iothubowner", &format!("{}/devices/keeper", hub.host()));
    assert_eq!(with_auth(&hub, "GET", "/devices/keeper", None, &one_device).status, 200);
    with_auth(&hub, "GET", "/devices/other", None, &one_device).assert_hub_error(
        401,
        "IotHubUnauthorizedAccess",
        401_002,
    );

    // Free text is bounded as IoT Hub bounds it.
    let reason = serde_json::json!({ "statusReason": "x".repeat(200 * 1024) }).to_string();
    hub.call("PUT", "/devices/chatty", Some(&reason)).assert_hub_error(400, "ArgumentInvalid", 400_004);
    let reason = serde_json::json!({ "statusReason": "x".repeat(129) }).to_string();
    hub.call("PUT", "/devices/chatty", Some(&reason)).assert_hub_error(400, "ArgumentInvalid", 400_004);
    hub.call("GET", "/devices/chatty", None).assert_hub_error(404, "DeviceNotFound", 404_001);

    // Pages carry the security headers.
    let page = hub.call_with("GET", "/", None, &[]);
    assert_eq!(page.status, 200);
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("frame-ancestors 'none'")));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));

    // Nothing changed that should not have, and the hub is healthy.
    let twin = hub.call("GET", "/twins/keeper", None).json();
    assert_eq!(twin["tags"]["big"].to_string(), "4503599627370495");
    assert_eq!(hub.call_with("GET", "/api/health", None, &[]).status, 200);
}

/// `TWINHUB_HOST_NAMES`: a token names the hub by its host, so a hub that knows its own names
/// refuses requests addressed to any other, whatever token they carry.
#[test]
fn a_hub_answers_only_to_its_own_names_when_told_them() {
    let storage = Storage::new("bad-input-hosts");
    let port = twinhub_e2e::free_port();
    let names = format!("hub.example,127.0.0.1:{port}");
    let hub = Hub::launch(&storage, false, Some(port), &[("TWINHUB_HOST_NAMES", &names)]);
    assert_eq!(hub.call("PUT", "/devices/named", Some("{}")).status, 200, "its own name works");
    hub.stop();
    let storage = Storage::new("bad-input-hosts-other");
    let hub = Hub::start_with_vars(&storage, &[("TWINHUB_HOST_NAMES", "hub.example")]);
    // Addressed as 127.0.0.1:{port}, which is not one of its names: every token is refused.
    hub.call("GET", "/devices/named", None).assert_hub_error(401, "IotHubUnauthorizedAccess", 401_002);
    let (_, code) = twinhub_e2e::MqttDevice::connect_with_token(&hub, "named", &hub.owner_token());
    assert_eq!(code, twinhub_core::mqtt::ConnectReturnCode::NotAuthorized);
    assert_eq!(hub.call_with("GET", "/api/health", None, &[]).status, 200);
}
