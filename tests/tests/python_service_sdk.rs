//! The real `azure-iot-hub` 2.7.0 Python SDK against `wrangler dev` over https
//! (tests/python/test_service_sdk.py).

use twinhub_e2e::{pytest, Hub, Storage};

#[test]
fn azure_iot_hub_python_sdk_passes() {
    let storage = Storage::new("python-service");
    let hub = Hub::start_https(&storage);
    match pytest("test_service_sdk.py", &hub.owner_connection_string(), &[]) {
        Ok(stdout) => println!("{stdout}"),
        Err(output) => panic!("azure-iot-hub suite failed:\n{output}\nwrangler:\n{}", hub.log_tail()),
    }
}
