//! The real `azure-iot-device` 2.14.0 Python SDK (MQTT over WebSocket, TLS, port 443) running
//! the article's device against `wrangler dev` (tests/python/test_device_sdk.py).

use std::process::Command;
use twinhub_e2e::{python, repo_root, tls, Hub, Storage};

#[test]
fn article_device_with_azure_iot_device_sdk() {
    let storage = Storage::new("python-device");
    let hub = Hub::start_https_on_443(&storage);
    let ca = tls().ca_cert;
    let output = Command::new(python())
        .current_dir(repo_root().join("tests/python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_device_sdk.py"])
        .env("TWINHUB_CONNECTION_STRING", hub.owner_connection_string())
        .env("TWINHUB_CA", &ca)
        .env("REQUESTS_CA_BUNDLE", &ca)
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "azure-iot-device suite failed:\n{stdout}\n{stderr}\nwrangler:\n{}",
        hub.log_tail()
    );
    println!("{stdout}");
}
