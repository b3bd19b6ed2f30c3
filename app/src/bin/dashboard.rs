//! The console's fleet program (`dist/`): overview, fleet, sign-in.
fn main() {
    twinhub_app::console();
}
