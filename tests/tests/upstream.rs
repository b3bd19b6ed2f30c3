//! Upstream mode with two local hubs: A, a built-in hub standing in for Azure, and B, in
//! upstream mode pointing at A (`UPSTREAM_CONNECTION_STRING`, A's owner policy; B has its own
//! owner key). REST through B is checked against B's policies and lands in A with headers and
//! errors intact; a device connects through B to A; B's own features answer 501; a path that is
//! not IoT Hub's is 404; A stopped means 503 from B, and B recovers when A is back; A's key
//! never shows. The Azure SDK suites against B run in `azure_sdks_pass_through_upstream_mode`.

use serde_json::json;
use twinhub_e2e::{free_port, now_secs, pytest, Hub, MqttDevice, Storage, OWNER_KEY};

/// B's own owner key: not A's.
const B_KEY: &str = "dHdpbmh1Yi11cHN0cmVhbS1iLWtleS0wMTIzNDU2Nzg=";

fn start_b(storage: &Storage, a: &Hub, https: bool, port: Option<u16>) -> Hub {
    let upstream = a.owner_connection_string();
    let vars =
        [("TWINHUB_OWNER_KEY", B_KEY), ("UPSTREAM_CONNECTION_STRING", upstream.as_str()), ("UPSTREAM_SCHEME", "http")];
    Hub::launch(storage, https, port, &vars)
}

#[test]
fn rest_and_devices_go_through_b_to_a() {
    let storage_a = Storage::new("upstream-a");
    let a_port = free_port();
    // A runs under wrangler dev, whose request log shows what reached it (checked below).
    let a = Hub::launch_wrangler(&storage_a, false, Some(a_port), &[]);
    let storage_b = Storage::new("upstream-b");
    let b = start_b(&storage_b, &a, false, None);

    // Registry and twins through B land in A.
    assert_eq!(b.call("PUT", "/devices/up-1", Some("{}")).status, 200);
    let in_a = a.call("GET", "/twins/up-1", None);
    assert_eq!(in_a.status, 200, "created through B, present in A");
    let patch = json!({ "tags": { "location": { "building": "Building-A" } } }).to_string();
    let patched = b.call("PATCH", "/twins/up-1", Some(&patch));
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert!(patched.header("etag").is_some(), "ETag comes back");
    assert_eq!(a.call("GET", "/twins/up-1", None).json()["tags"]["location"]["building"], "Building-A");
    let token = b.owner_token();
    let stale = b.call_with(
        "PATCH",
        "/twins/up-1",
        Some(&patch),
        &[("authorization", token.as_str()), ("if-match", "\"AAAAAAAAAAE=\"")],
    );
    stale.assert_hub_error(412, "PreconditionFailed", 412_001);

    // An oversized body is refused by B (413) and never sent on.
    let huge = json!({ "tags": { "blob": "x".repeat(300 * 1024) } }).to_string();
    b.call("PATCH", "/twins/up-1", Some(&huge)).assert_hub_error(413, "MessageTooLarge", 413_001);

    // Paging headers pass both ways.
    for id in ["up-2", "up-3"] {
        assert_eq!(b.call("PUT", &format!("/devices/{id}"), Some("{}")).status, 200);
    }
    let query = json!({ "query": "SELECT * FROM devices WHERE STARTSWITH(deviceId, 'up-')" }).to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let page = loop {
        let page = b.call_with(
            "POST",
            "/devices/query",
            Some(&query),
            &[("authorization", token.as_str()), ("x-ms-max-item-count", "2")],
        );
        if page.header("x-ms-continuation").is_some() || std::time::Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("x-ms-item-type"), Some("Twin"));
    let continuation = page.header("x-ms-continuation").expect("a continuation through B").to_owned();
    let rest = b.call_with(
        "POST",
        "/devices/query",
        Some(&query),
        &[
            ("authorization", token.as_str()),
            ("x-ms-max-item-count", "2"),
            ("x-ms-continuation", continuation.as_str()),
        ],
    );
    assert_eq!(rest.json().as_array().map(Vec::len), Some(1));
    // A 204 from A comes back as a 204 with no body.
    let deleted = b.call("DELETE", "/devices/up-3", None);
    assert_eq!((deleted.status, deleted.body.as_str()), (204, ""));
    a.call("GET", "/devices/up-3", None).assert_hub_error(404, "DeviceNotFound", 404_001);

    // B's policies decide: A's owner key is not B's, and a device token is no operator's.
    let a_token_for_b = twinhub_core::auth::sign(&b.host(), OWNER_KEY, Some("iothubowner"), now_secs() + 600).unwrap();
    b.call_with("GET", "/twins/up-1", None, &[("authorization", a_token_for_b.as_str())]).assert_hub_error(
        401,
        "IotHubUnauthorizedAccess",
        401_002,
    );
    b.call_with("GET", "/twins/up-1", None, &[]).assert_hub_error(401, "IotHubUnauthorizedAccess", 401_002);

    // Modules are IoT Hub's: forwarded, made on A.
    assert_eq!(b.call("PUT", "/devices/up-1/modules/m1", Some("{}")).status, 200);
    assert_eq!(a.call("GET", "/twins/up-1/modules/m1", None).json()["moduleId"], "m1");
    assert_eq!(b.call("GET", "/devices/up-1/modules", None).json()[0]["moduleId"], "m1");

    // Configurations are IoT Hub's too: forwarded.
    assert_eq!(b.call("GET", "/configurations", None).json(), serde_json::json!([]));

    // Not IoT Hub paths: 404 here; twinhub's own features: 501 with the reason.
    b.call("GET", "/api/nothing-here", None).assert_hub_error(404, "NotFound", 404_000);
    let history = b.call("GET", "/api/twins/up-1/history", None);
    history.assert_hub_error(501, "FeatureUnavailable", 501_001);
    assert!(history.body.contains("upstream mode"), "{}", history.body);
    b.call("POST", "/jobs/v2/j/rollback", None).assert_hub_error(501, "FeatureUnavailable", 501_001);
    let a_log = a.log_tail();
    for path in ["/nothing-here", "/history", "/rollback"] {
        assert!(!a_log.contains(path), "{path} reached A:\n{a_log}");
    }

    // The session says which hub is behind, and never its key.
    let session = b.call("GET", "/api/session", None);
    assert_eq!(session.json()["upstream"], a.host());
    assert!(session.json()["unavailable"].as_array().is_some_and(|u| !u.is_empty()));
    for reply in [&session, &patched, &page, &history] {
        assert!(!reply.body.contains(OWNER_KEY), "A's key in a response: {}", reply.body);
    }

    // A device through B: B checks its token (signed for B) against the key in A's registry,
    // re-signs it for A, and pipes the session; the report lands in A.
    let connected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| MqttDevice::connect(&b, "up-1")));
    let Ok(mut device) = connected else {
        panic!("the device did not connect through B:\nB:\n{}\nA:\n{}", b.log_tail(), a.log_tail())
    };
    assert_eq!(device.report(7, &json!({ "firmwareVersion": "2.0.0" })), 204);
    assert_eq!(a.call("GET", "/twins/up-1", None).json()["properties"]["reported"]["firmwareVersion"], "2.0.0");
    let forged =
        twinhub_core::auth::sign(&format!("{}/devices/up-1", b.host()), B_KEY, None, now_secs() + 600).unwrap();
    let (_, code) = MqttDevice::connect_with_token(&b, "up-1", &forged);
    assert_eq!(code, twinhub_core::mqtt::ConnectReturnCode::NotAuthorized, "a token not from the device's key");
    drop(device);
    // A first packet that is not a CONNECT closes the socket before anything reaches A.
    let (mut garbage, _) = MqttDevice::open(&b);
    garbage.send_raw(&[0x30, 0x02, 0x00, 0x00]);
    assert!(garbage.recv().is_none(), "B closes a pipe that does not start with CONNECT");

    // A stops: B answers 503 and says so; A is back on its port: B recovers.
    a.stop();
    let down = b.call("GET", "/twins/up-1", None);
    down.assert_hub_error(503, "ServiceUnavailable", 503_001);
    assert!(down.body.contains("upstream"), "{}", down.body);
    let a = Hub::launch_wrangler(&storage_a, false, Some(a_port), &[]);
    assert_eq!(b.call("GET", "/twins/up-1", None).status, 200);
    drop(a);
    let log = std::fs::read_dir(storage_b.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"));
    for entry in log {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(!text.contains(OWNER_KEY), "A's key in B's log");
    }
}

#[test]
fn azure_sdks_pass_through_upstream_mode() {
    let storage_a = Storage::new("upstream-sdk-a");
    let a = Hub::start(&storage_a);
    let storage_b = Storage::new("upstream-sdk-b");
    // The device SDK dials 443 for MQTT over WebSocket and has no port option.
    let b = start_b(&storage_b, &a, true, Some(443));
    let (telemetry_base, telemetry_cs) = (a.base_url(), a.owner_connection_string());
    // Stored telemetry is read from A: B, in upstream mode, keeps none. The device suite runs on
    // both of B's transports (MQTT over TLS on 8883, when B runs under workerd, and wss on 443),
    // each piped to A's WebSocket endpoint.
    let transports = if b.mqtt_port().is_some() { "mqtt,websocket" } else { "websocket" };
    let env = [
        ("TWINHUB_TELEMETRY_BASE", telemetry_base.as_str()),
        ("TWINHUB_TELEMETRY_CS", telemetry_cs.as_str()),
        ("TWINHUB_DEVICE_TRANSPORTS", transports),
    ];
    for suite in ["test_service_sdk.py", "test_device_sdk.py"] {
        if let Err(output) = pytest(suite, &b.owner_connection_string(), &env) {
            panic!("{suite} through B failed:\n{output}\nB:\n{}\nA:\n{}", b.log_tail(), a.log_tail());
        }
    }
}

#[test]
fn an_unusable_upstream_secret_is_an_error_not_a_hub_of_our_own() {
    let storage = Storage::new("upstream-bad-secret");
    // A device connection string where a service policy's belongs.
    let device_cs = "HostName=hub.example;DeviceId=d1;SharedAccessKey=c2VjcmV0LWRldmljZS1rZXk=";
    let hub = Hub::launch(&storage, false, None, &[("UPSTREAM_CONNECTION_STRING", device_cs)]);
    let reply = hub.call("GET", "/twins/d1", None);
    reply.assert_hub_error(500, "ServerError", 500_001);
    assert!(reply.body.contains("service policy"), "{}", reply.body);
    assert!(!reply.body.contains("c2VjcmV0"), "the secret's key in a response: {}", reply.body);
    assert_eq!(hub.call("GET", "/api/health", None).status, 200, "health still answers");
}

/// A flood of device sockets that never send CONNECT holds at most
/// `core::upstream::MAX_WAITING_PIPES` pipes in B: the next upgrade is refused (503), a device
/// already piped keeps being served, and a place freed is a place to connect again.
#[test]
fn pipes_waiting_for_connect_are_bounded() {
    use tungstenite::client::IntoClientRequest;
    let storage_a = Storage::new("upstream-flood-a");
    let a = Hub::start(&storage_a);
    let storage_b = Storage::new("upstream-flood-b");
    let b = start_b(&storage_b, &a, false, None);
    assert_eq!(b.call("PUT", "/devices/up-ok", Some("{}")).status, 200);
    let mut neighbour = MqttDevice::connect(&b, "up-ok");

    // The upgrade's outcome: the socket, or why not ("HTTP 503" when refused with a status).
    let upgrade = || -> Result<tungstenite::WebSocket<std::net::TcpStream>, String> {
        let url = format!("ws://127.0.0.1:{}/$iothub/websocket", b.port());
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("header"));
        let stream = std::net::TcpStream::connect(("127.0.0.1", b.port())).expect("tcp connect");
        match tungstenite::client(request, stream) {
            Ok((socket, _)) => Ok(socket),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(refused))) => {
                Err(format!("HTTP {}", refused.status().as_u16()))
            }
            Err(e) => Err(e.to_string()),
        }
    };
    let bound = twinhub_core::upstream::MAX_WAITING_PIPES;
    let mut waiting = Vec::with_capacity(bound);
    for i in 0..bound {
        match upgrade() {
            Ok(socket) => waiting.push(socket),
            Err(e) => panic!("upgrade {i} of {bound} refused: {e}\n{}", b.log_tail()),
        }
    }
    match upgrade() {
        Err(e) => assert_eq!(e, "HTTP 503", "the upgrade past the bound"),
        Ok(_) => panic!("upgrade {} past the bound was accepted", bound + 1),
    }
    assert_eq!(neighbour.report(1, &json!({ "flood": "survived" })), 204, "a piped device is still served");

    // One waiting socket goes away: its place is freed, and a device connects.
    let mut gone = waiting.pop().expect("a waiting socket");
    let _ = gone.close(None);
    drop(gone);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let token = b.device_token("up-ok", &b.device_key("up-ok"));
    loop {
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            MqttDevice::connect_with_token(&b, "up-ok", &token)
        }));
        match attempt {
            Ok((_, code)) => {
                assert_eq!(code, twinhub_core::mqtt::ConnectReturnCode::Accepted);
                break;
            }
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(100)),
            Err(_) => panic!("no place freed after a waiting socket closed\n{}", b.log_tail()),
        }
    }
}
