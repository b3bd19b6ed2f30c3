//! SAS tokens and connection strings from arbitrary text, and request paths a token is
//! matched against: never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use twinhub_core::auth::{precheck_device_token, ConnectionString, SasToken};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(token) = SasToken::parse(&text) {
        let _ = token.verify(KEY, 1_700_000_000);
        let _ = token.covers("hub/devices/d1");
        let _ = token.covers_request("hub", "/devices/d1");
    }
    // The text as a device's CONNECT password, and as a request path (client-chosen both).
    let _ = precheck_device_token(&text, "hub", "d1", 1_700_000_000);
    let sample = SasToken::parse(&twinhub_core::auth::sign("hub/devices", KEY, Some("p"), 9).unwrap_or_default());
    if let Ok(token) = sample {
        let _ = token.covers_request("hub", &text);
    }
    if let Ok(cs) = ConnectionString::parse(&text) {
        let _ = cs.token(1_700_000_000);
    }
});
