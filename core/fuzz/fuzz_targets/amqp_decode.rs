//! The AMQP 1.0 codec on arbitrary bytes: never panics; whatever decodes (a value, a frame, a
//! message) has a wire form, and that form decodes to what encodes to the same bytes again
//! (compared as bytes: a NaN float is not equal to itself).
#![no_main]
use libfuzzer_sys::fuzz_target;
use twinhub_core::amqp::{types, Frame, Message, ProtocolHeader};

fuzz_target!(|data: &[u8]| {
    let _ = ProtocolHeader::read(data);
    if let Ok(value) = types::decode(data) {
        let once = value.to_bytes().expect("whatever decodes has a wire form");
        let again = types::decode(&once).expect("a written value reads back");
        assert_eq!(again.to_bytes().as_ref(), Ok(&once));
    }
    let mut rest = data;
    while let Ok(Some((frame, used))) = Frame::decode(rest, 1 << 20) {
        assert!(used >= 8 && used <= rest.len());
        let once = frame.to_bytes().expect("whatever decodes has a wire form");
        let (again, _) = Frame::decode(&once, u32::MAX).expect("a written frame reads back").expect("whole");
        assert_eq!(again.to_bytes().as_ref(), Ok(&once));
        rest = &rest[used..];
    }
    if let Ok(message) = Message::decode(data) {
        let once = message.encode().expect("whatever decodes has a wire form");
        let again = Message::decode(&once).expect("a written message reads back");
        assert_eq!(again.encode().as_ref(), Ok(&once));
    }
});
