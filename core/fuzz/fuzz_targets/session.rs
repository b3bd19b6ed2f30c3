//! A device session fed arbitrary byte chunks, timers and verdicts, and hibernated as the
//! gateway does (partial input taken out, the snapshot through JSON, the input given back or
//! lost): never panics, reports `Closed` at most once, emits only well-formed MQTT, and its
//! snapshot stays within `MAX_SNAPSHOT_BYTES` (what a WebSocket attachment may hold).
#![no_main]
use libfuzzer_sys::fuzz_target;
use twinhub_core::mqtt::{decode, ConnectReturnCode};
use twinhub_core::session::{Accepted, Session, SessionEvent, MAX_SNAPSHOT_BYTES};
use twinhub_core::UnixMillis;

fuzz_target!(|data: &[u8]| {
    let mut session = Session::new(UnixMillis(1_000));
    let mut now = 1_000u64;
    let mut closed = 0;
    // The first byte of each chunk picks an action; the next says how many bytes follow.
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        match op % 8 {
            0..=2 => session.handle_bytes(UnixMillis(now), chunk),
            6 | 7 => {
                let kept = session.take_partial_input();
                let json = serde_json::to_string(&session.snapshot()).expect("a snapshot serializes");
                assert!(json.len() <= MAX_SNAPSHOT_BYTES, "a snapshot of {} bytes", json.len());
                session = serde_json::from_str(&json).expect("a snapshot deserializes");
                // 7: the adapter lost the bytes (evicted mid-packet).
                session.restore_partial_input(if op % 8 == 6 { kept } else { Vec::new() });
            }
            3 => {
                now += u64::from(*len) * 1_000;
                session.handle_timeout(UnixMillis(now));
            }
            4 => session.authenticated(Ok(Accepted::default())),
            _ => session.authenticated(Err(ConnectReturnCode::NotAuthorized)),
        }
        while let Some(bytes) = session.poll_transmit() {
            let mut out: &[u8] = &bytes;
            while !out.is_empty() {
                match decode(out, usize::MAX) {
                    Ok(Some((_, used))) => out = &out[used..],
                    other => panic!("session sent bytes that do not decode: {other:?}"),
                }
            }
        }
        while let Some(event) = session.poll_event() {
            if let SessionEvent::Closed(_) = event {
                closed += 1;
            }
        }
        assert!(closed <= 1, "Closed reported twice");
    }
});
