//! The dashboard in headless Chromium: the login URL signs in, the fleet shows the device, and
//! the device page shows its twin. Driven by `tests/browser/login.mjs` (playwright-core).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use twinhub_e2e::{repo_root, Hub, Storage, OWNER_KEY};

#[test]
fn login_url_signs_in_and_shows_fleet_and_twin() {
    let storage = Storage::new("dashboard");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/browser-dev-1", Some("{}")).status, 200);
    let tagged = hub.call("PATCH", "/twins/browser-dev-1", Some(r#"{"tags":{"location":{"building":"Building-A"}}}"#));
    assert_eq!(tagged.status, 200, "{}", tagged.body);

    let login_url = hub.login_url();
    let shots = repo_root().join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let mut child = Command::new("node")
        .current_dir(repo_root())
        .arg("tests/browser/login.mjs")
        .args([&login_url, "browser-dev-1", "Building-A"])
        .arg(&shots)
        .env("TWINHUB_SECRET_KEY", OWNER_KEY)
        .env("LIVE_MARKER", "liveMarker")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    // When the page is showing the twin live, change the twin; the page must follow by itself.
    let mut stdout_lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    for line in stdout_lines.by_ref() {
        let line = line.unwrap_or_default();
        let ready = line == "ready";
        seen.push(line);
        if ready {
            let patched =
                hub.call("PATCH", "/twins/browser-dev-1", Some(r#"{"properties":{"desired":{"liveMarker":42}}}"#));
            assert_eq!(patched.status, 200, "{}", patched.body);
            break;
        }
    }
    seen.extend(stdout_lines.map_while(Result::ok));
    let output = child.wait_with_output().expect("wait for node");
    let stdout = seen.join("\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "browser test failed:\n{stdout}\n{stderr}\nwrangler:\n{}", hub.log_tail());
    assert!(stdout.contains("browser: ok"), "{stdout}");
}

#[test]
fn desired_editor_reviews_saves_and_resolves_a_conflict() {
    use std::io::Write;
    let storage = Storage::new("editor");
    let hub = Hub::start(&storage);
    assert_eq!(hub.call("PUT", "/devices/editable", Some("{}")).status, 200);
    assert_eq!(
        hub.call(
            "PATCH",
            "/twins/editable",
            Some(r#"{"properties":{"desired":{"telemetryInterval":60,"mode":"eco"}}}"#)
        )
        .status,
        200
    );
    let shots = repo_root().join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let mut child = Command::new("node")
        .current_dir(repo_root())
        .arg("tests/browser/edit.mjs")
        .args([&hub.login_url(), "editable"])
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap_or_default();
        let reviewed = line == "reviewed";
        seen.push(line);
        if reviewed {
            // Someone else changes the twin while the operator is reviewing.
            let other =
                hub.call("PATCH", "/twins/editable", Some(r#"{"properties":{"desired":{"firmwareVersion":"2.1.0"}}}"#));
            assert_eq!(other.status, 200);
            writeln!(stdin, "go").expect("signal");
            break;
        }
    }
    seen.extend(lines.map_while(Result::ok));
    let output = child.wait_with_output().expect("wait for node");
    let stdout = seen.join("\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "editor test failed:\n{stdout}\n{stderr}\nwrangler:\n{}", hub.log_tail());
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
    let shots = repo_root().join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let output = Command::new("node")
        .current_dir(repo_root())
        .arg("tests/browser/fleet.mjs")
        .args([&hub.login_url(), "ui-made-1"])
        .arg(&shots)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "fleet test failed:\n{stdout}\n{stderr}\nwrangler:\n{}", hub.log_tail());
    // The script saw the created device's row and connection string; now it is really gone.
    hub.call("GET", "/devices/ui-made-1", None).assert_hub_error(404, "DeviceNotFound", 404_001);
}
