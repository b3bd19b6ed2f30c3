//! The self-hosted runtime's first step (issue 15): the same built Worker under `workerd serve`
//! directly (`scripts/serve.sh`, config generated from wrangler.toml by
//! `scripts/workerd-config.mjs`), no wrangler or node on the request path. The REST API, the
//! dashboard's single-page fallback, a device over MQTT-over-WebSocket, and `kill -9` survival.

use serde_json::{json, Value};
use std::process::Command;
use twinhub_core::mqtt::ConnectReturnCode;
use twinhub_e2e::{repo_root, Hub, MqttDevice, Storage};

#[test]
fn the_worker_serves_under_workerd_directly() {
    let storage = Storage::new("workerd-runtime");
    let hub = Hub::launch_workerd(&storage, &[]);
    assert_eq!(hub.call_with("GET", "/api/health", None, &[]).status, 200);
    hub.call_with("GET", "/devices/d1", None, &[]).assert_hub_error(401, "IotHubUnauthorizedAccess", 401_002);
    assert_eq!(hub.call("PUT", "/devices/d1", Some("{}")).status, 200);
    let patched = hub.call("PATCH", "/twins/d1", Some(r#"{"properties":{"desired":{"telemetryInterval":5}}}"#));
    assert_eq!(patched.status, 200, "{}", patched.body);
    let rows = hub.call("POST", "/devices/query", Some(r#"{"query":"SELECT * FROM devices WHERE deviceId = 'd1'"}"#));
    assert_eq!(rows.json().as_array().map(Vec::len), Some(1), "{}", rows.body);

    // The dashboard, with its single-page fallback and API-first routing, as under wrangler:
    // each page is its console program's index.html (`core::console`), anything else the root's.
    let index = |dir: &str| std::fs::read_to_string(repo_root().join(dir).join("index.html")).expect(dir);
    for (path, program) in [
        ("/", "dist"),
        ("/fleet?q=x", "dist"),
        ("/device/d1?tab=twin", "dist/app/device"),
        ("/jobs", "dist/app/operations"),
        ("/endpoints", "dist/app/operations"),
        ("/virtual/x", "dist"),
    ] {
        let page = hub.call_with("GET", path, None, &[]);
        assert_eq!((page.status, page.body == index(program)), (200, true), "{path} serves {program}/index.html");
        assert_eq!(page.header("x-frame-options"), Some("DENY"), "{path}");
    }
    let virtual_page = std::fs::read_to_string(repo_root().join("dist/virtual/index.html")).expect("virtual page");
    assert_eq!(hub.call_with("GET", "/virtual/", None, &[]).body, virtual_page);
    hub.call_with("GET", "/devices/d1/nonsense", None, &[]).assert_hub_error(404, "NotFound", 404_000);

    // A device over MQTT-over-WebSocket: the twin as the service left it, a reported patch.
    let mut device = MqttDevice::connect(&hub, "d1");
    assert_eq!(device.report(1, &json!({ "firmwareVersion": "1.0.0" })), 204);
    let twin = hub.call("GET", "/twins/d1", None).json();
    assert_eq!(twin["properties"]["reported"]["firmwareVersion"], "1.0.0");
    assert_eq!(twin["connectionState"], "Connected");

    // kill -9, start again on the same storage: everything acknowledged is there.
    hub.kill9();
    drop(hub);
    let hub = Hub::launch_workerd(&storage, &[]);
    let twin: Value = hub.call("GET", "/twins/d1", None).json();
    assert_eq!(twin["properties"]["desired"]["telemetryInterval"], 5);
    assert_eq!(twin["properties"]["reported"]["firmwareVersion"], "1.0.0");
    let (_, code) = MqttDevice::connect_with_token(&hub, "d1", "junk");
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
}

/// One source of truth: the generated config binds exactly what wrangler.toml declares (every
/// var, Durable Object binding and SQLite class, the compatibility date and the assets), so the
/// two runtimes cannot drift apart.
#[test]
fn the_workerd_config_follows_wrangler_toml() {
    let out = Command::new("node")
        .current_dir(repo_root())
        .args(["scripts/workerd-config.mjs", "--storage", "/tmp/twinhub-config-check", "--listen", "127.0.0.1:1"])
        .output()
        .expect("run scripts/workerd-config.mjs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = String::from_utf8_lossy(&out.stdout);
    let toml = std::fs::read_to_string(repo_root().join("wrangler.toml")).expect("wrangler.toml");
    let value_of = |key: &str| {
        toml.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("{key} in wrangler.toml"))
    };
    assert!(config.contains(&format!("compatibilityDate = \"{}\"", value_of("compatibility_date"))));
    let mut section = String::new();
    let mut expected = Vec::new();
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once(" = ") else { continue };
        let value = value.trim().trim_matches('"');
        match (section.as_str(), key) {
            ("[vars]", _) => expected.push(format!("(name = \"{key}\", text = \"{value}\")")),
            ("[[durable_objects.bindings]]", "name") => {
                expected.push(format!("(name = \"{value}\", durableObjectNamespace"))
            }
            ("[[durable_objects.bindings]]", "class_name") => {
                expected.push(format!("(className = \"{value}\", uniqueKey = \"twinhub-{value}\", enableSql = true)"))
            }
            ("[assets]", "binding") => expected.push(format!("(name = \"{value}\", service = \"assets\")")),
            ("[assets]", "directory") => expected.push(format!("/{value}\", writable = false")),
            _ => {}
        }
    }
    assert!(expected.len() >= 14, "read wrangler.toml: {expected:?}");
    for piece in expected {
        assert!(config.contains(&piece), "the generated config lacks {piece}:\n{config}");
    }
}
