//! The MQTT codec on arbitrary bytes: never panics; whatever decodes re-encodes to a packet that
//! decodes to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use twinhub_core::mqtt::{decode, MAX_PACKET_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((packet, used))) = decode(rest, MAX_PACKET_BYTES) {
        assert!(used > 0 && used <= rest.len());
        let again = packet.to_bytes().expect("whatever decodes has a wire form");
        assert_eq!(decode(&again, usize::MAX), Ok(Some((packet, again.len()))));
        rest = &rest[used..];
    }
});
