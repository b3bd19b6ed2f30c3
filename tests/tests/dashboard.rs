//! The dashboard in headless Chromium, driven by playwright-core scripts in `tests/browser/`:
//! the login URL signs in and the device page follows the twin live; the desired editor reviews,
//! saves and resolves a conflict; the fleet creates and deletes devices.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use twinhub_e2e::{repo_root, Hub, Storage, OWNER_KEY};

/// Runs `node tests/browser/{script} args.. <screenshot dir>`; `on_line` sees each stdout line
/// as it comes (to act when the page is ready) and may answer on the script's stdin. Panics
/// with the script's output and the hub's log if the script fails.
fn browser(
    hub: &Hub,
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
    mut on_line: impl FnMut(&str, &mut ChildStdin),
) -> String {
    let shots = repo_root().join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let mut child = Command::new("node")
        .current_dir(repo_root())
        .arg(format!("tests/browser/{script}"))
        .args(args)
        .arg(&shots)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines().map_while(Result::ok) {
        on_line(&line, &mut stdin);
        seen.push(line);
    }
    let output = child.wait_with_output().expect("wait for node");
    let stdout = seen.join("\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script} failed:\n{stdout}\n{stderr}\nwrangler:\n{}", hub.log_tail());
    stdout
}

#[test]
fn login_url_signs_in_and_the_device_page_follows_the_twin() {
    let storage = Storage::new("dashboard");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/browser-dev-1", Some("{}")).status, 200);
    let tagged = hub.call("PATCH", "/twins/browser-dev-1", Some(r#"{"tags":{"location":{"building":"Building-A"}}}"#));
    assert_eq!(tagged.status, 200, "{}", tagged.body);
    let login_url = hub.login_url();
    let env = [("TWINHUB_SECRET_KEY", OWNER_KEY), ("LIVE_MARKER", "liveMarker")];
    let stdout = browser(&hub, "login.mjs", &[&login_url, "browser-dev-1", "Building-A"], &env, |line, _| {
        // The page shows the twin live: change it; the page must follow by itself.
        if line == "ready" {
            let patched =
                hub.call("PATCH", "/twins/browser-dev-1", Some(r#"{"properties":{"desired":{"liveMarker":42}}}"#));
            assert_eq!(patched.status, 200, "{}", patched.body);
        }
    });
    assert!(stdout.contains("browser: ok"), "{stdout}");
}

#[test]
fn desired_editor_reviews_saves_and_resolves_a_conflict() {
    let storage = Storage::new("editor");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/editable", Some("{}")).status, 200);
    let seeded = hub.call(
        "PATCH",
        "/twins/editable",
        Some(r#"{"properties":{"desired":{"telemetryInterval":60,"mode":"eco"}}}"#),
    );
    assert_eq!(seeded.status, 200);
    let login_url = hub.login_url();
    let stdout = browser(&hub, "edit.mjs", &[&login_url, "editable"], &[], |line, stdin| {
        // Someone else changes the twin while the operator is reviewing.
        if line == "reviewed" {
            let other =
                hub.call("PATCH", "/twins/editable", Some(r#"{"properties":{"desired":{"firmwareVersion":"2.1.0"}}}"#));
            assert_eq!(other.status, 200);
            writeln!(stdin, "go").expect("signal");
        }
    });
    assert!(stdout.contains("editor: ok"), "{stdout}");
    // Both changes are in: the operator's (applied on top of theirs) and the other one.
    let desired = hub.call("GET", "/twins/editable", None).json()["properties"]["desired"].clone();
    assert_eq!(desired["telemetryInterval"], 15);
    assert_eq!(desired["temperatureThreshold"], 30);
    assert_eq!(desired["firmwareVersion"], "2.1.0");
    assert!(desired.get("mode").is_none(), "the operator removed mode");
}

#[test]
fn fleet_creates_and_deletes_devices() {
    let storage = Storage::new("fleet-ui");
    let hub = Hub::start(&storage);
    let login_url = hub.login_url();
    let stdout = browser(&hub, "fleet.mjs", &[&login_url, "ui-made-1"], &[], |_, _| {});
    assert!(stdout.contains("fleet: ok"), "{stdout}");
    // The script saw the created device's row and connection string; now it is really gone.
    hub.call("GET", "/devices/ui-made-1", None).assert_hub_error(404, "DeviceNotFound", 404_001);
}

#[test]
fn virtual_device_runs_beside_the_dashboard() {
    let storage = Storage::new("virtual");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/vdev-1", Some("{}")).status, 200);
    let login_url = hub.login_url();
    let stdout = browser(&hub, "virtual.mjs", &[&login_url, "vdev-1"], &[], |line, stdin| {
        let desired = match line {
            // Changed while the device is offline: applied after it reconnects.
            "offline" => r#"{"properties":{"desired":{"telemetryInterval":9}}}"#,
            // Refused by the device: acknowledged with an error.
            "refusing" => r#"{"properties":{"desired":{"firmwareVersion":"3.0.0"}}}"#,
            _ => return,
        };
        let reply = hub.call("PATCH", "/twins/vdev-1", Some(desired));
        assert_eq!(reply.status, 200, "{}", reply.body);
        writeln!(stdin, "go").expect("answer the script");
    });
    assert!(stdout.contains("virtual: ok"), "{stdout}");
    // What the virtual device did is in the hub, as the service sees it.
    let twin = hub.call("GET", "/twins/vdev-1", None).json();
    let reported = &twin["properties"]["reported"];
    assert_eq!(reported["telemetryInterval"], 9);
    assert_eq!(reported["firmwareUpdateStatus"], "completed");
    assert_eq!(reported["firmwareVersion"]["value"], "2.1.0", "{reported}");
    assert_eq!(reported["firmwareVersion"]["ac"], 500);
    assert!(reported["firmwareVersion"]["av"].as_u64().is_some());
    let telemetry = hub.call("GET", "/api/devices/vdev-1/telemetry?limit=100", None).json();
    let messages = telemetry["messages"].as_array().cloned().unwrap_or_default();
    assert!(!messages.is_empty());
    assert!(messages.iter().all(|m| m["body"]["temperature"].is_number() && m["body"]["humidity"].is_number()));
    // The spawned fleet exists and reported from the browser.
    for k in 1..=3 {
        let twin = hub.call("GET", &format!("/twins/fleetdemo-{k}"), None).json();
        assert_eq!(twin["properties"]["reported"]["connectivity"]["type"], "wifi", "fleetdemo-{k}: {twin}");
    }
}

#[test]
fn fleet_console_queries_filters_and_scrolls_a_large_fleet() {
    const DEVICES: usize = 500;
    const SEED: u64 = 7;
    let storage = Storage::new("fleet-query");
    let hub = Hub::start_with_vars(&storage, &[("TWINHUB_BENCH_ECHO", "1")]);
    // The fixture fleet, straight into the index (the benchmark loader).
    let load = hub.call("POST", "/api/bench/fleet", Some(&format!(r#"{{"seed":{SEED},"start":0,"count":{DEVICES}}}"#)));
    assert_eq!(load.status, 204, "{}", load.body);
    let building_a = twinhub_core::fixture::fleet(SEED, DEVICES)
        .iter()
        .filter(|d| d.tags["location"]["building"] == "Building-A")
        .count();
    let policies = twinhub_core::auth::Policy::all(OWNER_KEY, None).expect("policies");
    // `service` (ServiceConnect only) reads twins and queries, but may not write the registry:
    // the console is read-only for it. (`registryRead` cannot query at all, as on IoT Hub.)
    let read_key = &policies.iter().find(|p| p.name == "service").expect("service").key;
    let read_cs = format!("HostName={};SharedAccessKeyName=service;SharedAccessKey={read_key}", hub.host());
    // A query string makes it a new document (a fragment alone would not reload the app).
    let read_url = format!(
        "{}/fleet?as=service#cs={}",
        hub.base_url(),
        percent_encoding::utf8_percent_encode(&read_cs, percent_encoding::NON_ALPHANUMERIC)
    );
    let login_url = hub.login_url();
    let args = [login_url.as_str(), &DEVICES.to_string(), &building_a.to_string(), &read_url];
    let stdout = browser(&hub, "query.mjs", &args, &[], |_, _| {});
    assert!(stdout.contains("query: ok"), "{stdout}");
}

#[test]
fn device_page_reverts_history_and_operates_the_device() {
    let storage = Storage::new("device-ops");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/ops-1", Some("{}")).status, 200);
    let key_before =
        hub.call("GET", "/devices/ops-1", None).json()["authentication"]["symmetricKey"]["primaryKey"].clone();
    let seeded = hub.call("PATCH", "/twins/ops-1", Some(r#"{"properties":{"desired":{"telemetryInterval":60}}}"#));
    assert_eq!(seeded.status, 200);
    let stdout = browser(&hub, "device.mjs", &[&hub.login_url(), "ops-1"], &[], |_, _| {});
    assert!(stdout.contains("device: ok"), "{stdout}");
    // The revert is a new version, recorded like any other, with the operator's policy as actor.
    let twin = hub.call("GET", "/twins/ops-1", None).json();
    assert_eq!(twin["properties"]["desired"]["telemetryInterval"], 60);
    assert_eq!(twin["tags"]["location"]["building"], "Building-Z");
    let history = hub.call("GET", "/api/twins/ops-1/history", None).json();
    let entries = history["entries"].as_array().cloned().unwrap_or_default();
    let revert = entries
        .iter()
        .find(|e| {
            e["changes"][0]["path"] == "properties.desired.telemetryInterval"
                && e["changes"][0]["new"] == 60
                && e["changes"][0]["old"] == 15
        })
        .expect("the revert's history entry");
    assert_eq!(revert["actor"], "iothubowner");
    let device = hub.call("GET", "/devices/ops-1", None).json();
    assert_eq!(device["status"], "disabled");
    assert_ne!(device["authentication"]["symmetricKey"]["primaryKey"], key_before, "keys regenerated");
}

#[test]
fn jobs_page_runs_a_job_from_the_fleet_query_and_rolls_it_back() {
    let storage = Storage::new("jobs-ui");
    let hub = Hub::start(&storage);
    let ids: Vec<String> = (0..12).map(|i| format!("ui-job-{i:02}")).collect();
    let bulk: Vec<serde_json::Value> =
        ids.iter().map(|id| serde_json::json!({ "id": id, "importMode": "create", "status": "enabled" })).collect();
    assert_eq!(hub.call("POST", "/devices", Some(&serde_json::Value::Array(bulk).to_string())).status, 200);
    for (n, id) in ids.iter().enumerate() {
        let building = if n % 3 == 0 { "Building-A" } else { "Building-B" };
        let patch = serde_json::json!({ "tags": { "location": { "building": building } }, "properties": { "desired": { "firmwareVersion": "2.0.0" } } });
        assert_eq!(hub.call("PATCH", &format!("/twins/{id}"), Some(&patch.to_string())).status, 200);
    }
    let stdout = browser(&hub, "jobs.mjs", &[&hub.login_url(), "4"], &[], |_, _| {});
    assert!(stdout.contains("jobs: ok"), "{stdout}");
    // The job's change and its rollback are both in each Building-A twin's history.
    for id in ids.iter().step_by(3) {
        let twin = hub.call("GET", &format!("/twins/{id}"), None).json();
        assert_eq!(twin["properties"]["desired"]["firmwareVersion"], "2.0.0", "{id} rolled back");
        let history = hub.call("GET", &format!("/api/twins/{id}/history"), None).json();
        let actors: Vec<&str> =
            history["entries"].as_array().unwrap().iter().filter_map(|e| e["actor"].as_str()).collect();
        assert!(
            actors.contains(&"job:ui-firmware") && actors.contains(&"job:ui-firmware:rollback"),
            "{id}: {actors:?}"
        );
    }
}

#[test]
fn console_and_virtual_device_work_through_upstream_mode() {
    // A: a built-in hub standing in for Azure; B: upstream mode in front of it, its own key.
    let storage_a = Storage::new("upstream-ui-a");
    let a = Hub::start(&storage_a);
    let storage_b = Storage::new("upstream-ui-b");
    let upstream = a.owner_connection_string();
    let b_key = "dHdpbmh1Yi11cHN0cmVhbS11aS1rZXktMDEyMzQ1Njc=";
    let vars =
        [("TWINHUB_OWNER_KEY", b_key), ("UPSTREAM_CONNECTION_STRING", upstream.as_str()), ("UPSTREAM_SCHEME", "http")];
    let b = Hub::launch(&storage_b, false, None, &vars);
    assert_eq!(b.call("PUT", "/devices/up-ui-1", Some("{}")).status, 200);
    let stdout = browser(&b, "upstream.mjs", &[&b.login_url(), "up-ui-1"], &[], |_, _| {});
    assert!(stdout.contains("online") && stdout.contains("upstream: ok"), "{stdout}");
    // The virtual device's reports went through B's pipe into A.
    let twin = a.call("GET", "/twins/up-ui-1", None).json();
    assert!(twin["properties"]["reported"]["connectivity"].is_object(), "{twin}");
}

#[test]
fn device_page_lists_modules_and_a_module_has_its_own_page() {
    let storage = Storage::new("dashboard-modules");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/edge-1", Some("{}")).status, 200);
    assert_eq!(hub.call("PUT", "/devices/edge-1/modules/filter", Some("{}")).status, 200);
    let desired =
        hub.call("PATCH", "/twins/edge-1/modules/filter", Some(r#"{"properties":{"desired":{"threshold":5}}}"#));
    assert_eq!(desired.status, 200, "{}", desired.body);
    // The module is online while the page looks at it.
    let _session = twinhub_e2e::MqttDevice::connect(&hub, "edge-1/filter");
    let login_url = hub.login_url();
    let env = [("TWINHUB_SECRET_KEY", OWNER_KEY)];
    let stdout = browser(&hub, "modules.mjs", &[&login_url, "edge-1", "filter"], &env, |_, _| {});
    assert!(stdout.contains("modules: ok"), "{stdout}");
    // The virtual device ran as the module: its reports are the module's, not the device's.
    let module = hub.call("GET", "/twins/edge-1/modules/filter", None).json();
    assert!(module["properties"]["reported"]["connectivity"].is_object(), "{module}");
    let device = hub.call("GET", "/twins/edge-1", None).json();
    assert!(device["properties"]["reported"].get("connectivity").is_none(), "{device}");
}

#[test]
fn configurations_page_creates_follows_and_deletes_a_configuration() {
    let storage = Storage::new("dashboard-configurations");
    let hub = Hub::start(&storage);
    for i in 0..3 {
        assert_eq!(hub.call("PUT", &format!("/devices/prod-{i}"), Some("{}")).status, 200);
        let tagged = hub.call("PATCH", &format!("/twins/prod-{i}"), Some(r#"{"tags":{"env":"prod"}}"#));
        assert_eq!(tagged.status, 200, "{}", tagged.body);
    }
    let login_url = hub.login_url();
    let stdout = browser(&hub, "configurations.mjs", &[&login_url, "3"], &[], |_, _| {});
    assert!(stdout.contains("configurations: ok"), "{stdout}");
    // What the page made was applied, and its value stays after the delete.
    let twin = hub.call("GET", "/twins/prod-0", None).json();
    assert_eq!(twin["properties"]["desired"]["telemetryInterval"], 12, "{twin}");
    assert!(twin.get("configurations").is_none(), "{twin}");
}

/// The endpoints page shows the Event Hub-compatible endpoint's connection string for the
/// signed-in policy, and the real azure-eventhub client connects with it as shown.
#[test]
fn endpoints_page_shows_a_connection_string_the_eventhub_client_takes() {
    let storage = Storage::new("dashboard-endpoints");
    let hub = Hub::start(&storage);
    let login_url = hub.login_url();
    let stdout = browser(&hub, "endpoints.mjs", &[&login_url], &[], |_, _| {});
    assert!(stdout.contains("endpoints: ok"), "{stdout}");
    let shown = stdout.lines().find_map(|l| l.strip_prefix("endpoint: ")).expect("the page's connection string");
    let env = [("TWINHUB_SHOWN_CONNECTION_STRING", shown)];
    if let Err(output) = twinhub_e2e::pytest("test_endpoint_string.py", &hub.owner_connection_string(), &env) {
        panic!("the shown connection string did not connect:\n{output}\nhub:\n{}", hub.log_tail());
    }
}

#[test]
fn overview_follows_the_fleet_and_every_page_meets_the_quality_bar() {
    let storage = Storage::new("overview-ui");
    let hub = Hub::start(&storage);
    for (id, building) in [("ov-1", "A"), ("ov-2", "A"), ("ov-3", "B"), ("ov-4", "B"), ("ov-5", "B")] {
        assert_eq!(hub.call("PUT", &format!("/devices/{id}"), Some("{}")).status, 200);
        let tags = format!(r#"{{"tags":{{"location":{{"building":"Building-{building}"}}}}}}"#);
        assert_eq!(hub.call("PATCH", &format!("/twins/{id}"), Some(&tags)).status, 200);
    }
    // ov-1 has firmware to take (drifting), ov-2 refuses its mode (drifting, refused), ov-3
    // took its mode; ov-5 is disabled. ov-1 and ov-2 stay connected and each raise an alert.
    for (id, desired) in
        [("ov-1", r#"{"firmwareVersion":"2.0"}"#), ("ov-2", r#"{"mode":"eco"}"#), ("ov-3", r#"{"mode":"eco"}"#)]
    {
        let patch = format!(r#"{{"properties":{{"desired":{desired}}}}}"#);
        assert_eq!(hub.call("PATCH", &format!("/twins/{id}"), Some(&patch)).status, 200);
    }
    let mut ov1 = twinhub_e2e::MqttDevice::connect(&hub, "ov-1");
    let mut ov2 = twinhub_e2e::MqttDevice::connect(&hub, "ov-2");
    ov2.report(1, &serde_json::json!({ "mode": { "value": "off", "ac": 400, "av": 2, "ad": "unsupported" } }));
    twinhub_e2e::MqttDevice::connect(&hub, "ov-3").report(1, &serde_json::json!({ "mode": "eco" }));
    ov1.send_event("ov-1", "alert=high_temperature", &serde_json::json!({ "temperature": 81 }), 1);
    ov2.send_event("ov-2", "alert=high_temperature", &serde_json::json!({ "temperature": 81 }), 1);
    let disabled = r#"{"deviceId":"ov-5","status":"disabled"}"#;
    let auth = hub.owner_token();
    let reply =
        hub.call_with("PUT", "/devices/ov-5", Some(disabled), &[("If-Match", "\"*\""), ("Authorization", &auth)]);
    assert_eq!(reply.status, 200, "{}", reply.body);

    let cs = |policy: &str| {
        let key = twinhub_core::auth::Policy::all(OWNER_KEY, None).expect("policies");
        let key = &key.iter().find(|p| p.name == policy).expect("policy").key;
        let cs = format!("HostName={};SharedAccessKeyName={policy};SharedAccessKey={key}", hub.host());
        percent_encoding::utf8_percent_encode(&cs, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let overview_url = format!("{}/#cs={}", hub.base_url(), cs("iothubowner"));
    // A query string makes it a new document (a fragment alone would not reload the app).
    let refused_url = format!("{}/?as=registryRead#cs={}", hub.base_url(), cs("registryRead"));
    let stdout = browser(&hub, "overview.mjs", &[&overview_url, &refused_url, "ov-2"], &[], |line, stdin| {
        if line == "ready" {
            ov1.send_event("ov-1", "alert=high_temperature", &serde_json::json!({ "temperature": 81 }), 2);
            writeln!(stdin, "go").expect("answer the script");
        }
    });
    assert!(stdout.contains("overview: ok"), "{stdout}");
}

#[test]
fn the_main_path_works_with_the_keyboard_alone() {
    let storage = Storage::new("keyboard-ui");
    let hub = Hub::start(&storage);
    let stdout = browser(&hub, "keyboard.mjs", &[&hub.login_url(), "kb-1"], &[], |_, _| {});
    assert!(stdout.contains("keyboard: ok"), "{stdout}");
    // What the keys did is in the hub.
    let twin = hub.call("GET", "/twins/kb-1", None).json();
    assert_eq!(twin["properties"]["desired"]["telemetryInterval"], 42, "{twin}");
    assert_eq!(hub.call("GET", "/devices/kb-1", None).json()["status"], "disabled");
}
