//! The virtual device page's wasm (`dist/virtual/`), loaded only when that page is opened.
fn main() {
    twinhub_app::virtual_device();
}
