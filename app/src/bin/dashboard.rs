//! The operator console's wasm (`dist/`).
fn main() {
    twinhub_app::dashboard();
}
