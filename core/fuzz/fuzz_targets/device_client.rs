//! The device client (load generator, virtual device) fed arbitrary bytes from a "hub",
//! timers and commands: never panics, reports `Closed` at most once, emits only well-formed
//! MQTT. A hostile or broken hub must not take down the browser tab running a virtual device.
#![no_main]
use libfuzzer_sys::fuzz_target;
use twinhub_core::mqtt::{decode, QoS};
use twinhub_core::session::client::{ClientEvent, ClientOptions, DeviceClient};
use twinhub_core::session::topic::Subscription;
use twinhub_core::UnixMillis;

fuzz_target!(|data: &[u8]| {
    let mut client = DeviceClient::new(ClientOptions {
        device_id: "d1".into(),
        host: "hub".into(),
        token: "SharedAccessSignature sr=hub%2Fdevices%2Fd1&sig=x&se=1".into(),
        keep_alive_secs: 30,
        clean_session: false,
    });
    let mut now = 1_000u64;
    let mut closed = 0;
    client.connect(UnixMillis(now), None);
    // The first byte of each chunk picks an action; the next says how many bytes follow.
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let at = UnixMillis(now);
        match op % 10 {
            0..=3 => client.handle_bytes(at, chunk),
            4 => {
                now += u64::from(*len) * 1_000;
                client.handle_timeout(UnixMillis(now));
            }
            5 => {
                client.subscribe(at, &[Subscription::TwinResponses, Subscription::DesiredPatches]);
            }
            6 => {
                client.report(at, chunk.to_vec());
            }
            7 => {
                client.send_telemetry(at, &[("k".into(), Some(String::from_utf8_lossy(chunk).into_owned()))], chunk.to_vec(), QoS::AtLeastOnce);
            }
            8 => client.respond_method(at, &String::from_utf8_lossy(chunk), 200, Vec::new()),
            _ => {
                closed = 0;
                client.connect(at, None);
            }
        }
        while let Some(bytes) = client.poll_transmit() {
            let mut out: &[u8] = &bytes;
            while !out.is_empty() {
                match decode(out, usize::MAX) {
                    Ok(Some((_, used))) => out = &out[used..],
                    other => panic!("the client sent bytes that do not decode: {other:?}"),
                }
            }
        }
        while let Some(event) = client.poll_event() {
            if let ClientEvent::Closed(_) = event {
                closed += 1;
            }
        }
        assert!(closed <= 1, "Closed reported twice for one connection");
    }
});
