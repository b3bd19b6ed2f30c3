//! SAS tokens and connection strings from arbitrary text: never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use twinhub_core::auth::{ConnectionString, SasToken};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(token) = SasToken::parse(&text) {
        let _ = token.verify(KEY, 1_700_000_000);
        let _ = token.covers("hub/devices/d1");
    }
    if let Ok(cs) = ConnectionString::parse(&text) {
        let _ = cs.token(1_700_000_000);
    }
});
