//! Twin writes from arbitrary bodies: never panic; a refused write leaves the twin unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use twinhub_core::twin::{ReportedPatch, ServicePatch, Twin, TwinReplacement};
use twinhub_core::UnixMillis;

fuzz_target!(|data: &[u8]| {
    let mut twin = Twin::new(UnixMillis(1));
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = ServicePatch::parse(&text) {
        let before = twin.clone();
        if twin.apply_service_patch(&p, UnixMillis(2)).is_err() {
            assert_eq!(twin, before);
        }
    }
    if let Ok(r) = TwinReplacement::parse(&text) {
        let before = twin.clone();
        if twin.replace(&r, UnixMillis(3)).is_err() {
            assert_eq!(twin, before);
        }
    }
    if let Ok(p) = ReportedPatch::parse(data) {
        let before = twin.clone();
        if twin.apply_reported_patch(&p, UnixMillis(4)).is_err() {
            assert_eq!(twin, before);
        }
    }
    let _ = serde_json::to_string(&twin.to_device_json());
});
