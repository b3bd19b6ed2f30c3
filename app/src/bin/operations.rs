//! The console's operations program (`dist/app/operations/`): jobs, configurations, endpoints.
fn main() {
    twinhub_app::operations_console();
}
