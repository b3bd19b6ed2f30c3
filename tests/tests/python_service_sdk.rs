//! The real `azure-iot-hub` 2.7.0 Python SDK against `wrangler dev` over https
//! (tests/python/test_service_sdk.py).

use std::process::Command;
use twinhub_e2e::{python, repo_root, tls, Hub, Storage};

#[test]
fn azure_iot_hub_python_sdk_passes() {
    let storage = Storage::new("python-service");
    let hub = Hub::start_https(&storage);
    let output = Command::new(python())
        .current_dir(repo_root())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/python/test_service_sdk.py"])
        .env("TWINHUB_CONNECTION_STRING", hub.owner_connection_string())
        .env("REQUESTS_CA_BUNDLE", tls().ca_cert)
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "azure-iot-hub suite failed:\n{stdout}\n{stderr}\nwrangler:\n{}", hub.log_tail());
    println!("{stdout}");
}
