//! The console's device program (`dist/app/device/`): a device's page.
fn main() {
    twinhub_app::device_console();
}
