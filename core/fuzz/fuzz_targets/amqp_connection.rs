//! The AMQP connection state machine on arbitrary bytes after a valid handshake (so the fuzzer
//! spends its time past SASL and open): never panics, accepts every link and uses every credit
//! it is given, so attach, flow, transfer and disposition paths all run; the clock moves with
//! the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use twinhub_core::amqp::connection::{Connection, Event, Limits};
use twinhub_core::amqp::{Begin, DeliveryState, Frame, Message, MessageBody, Open, Performative, ProtocolHeader, Sasl};
use twinhub_core::UnixMillis;

fn handshake() -> Vec<u8> {
    let mut out = ProtocolHeader::Sasl.bytes().to_vec();
    let init = Sasl::Init { mechanism: "ANONYMOUS".into(), initial_response: None, hostname: None };
    out.extend(Frame::sasl(init).to_bytes().unwrap());
    out.extend(ProtocolHeader::Amqp.bytes());
    let open = Open { container_id: "fuzz".into(), max_frame_size: Some(512), idle_time_out: Some(1000), ..Open::default() };
    out.extend(Frame::amqp(0, Performative::Open(open)).to_bytes().unwrap());
    let begin = Begin { next_outgoing_id: 0, incoming_window: 10, outgoing_window: 10, ..Begin::default() };
    out.extend(Frame::amqp(0, Performative::Begin(begin)).to_bytes().unwrap());
    out
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_frame_size: 4096, max_message_size: 8192, link_credit: 4, ..Limits::default() };
    let mut c = Connection::new(limits, "hub", UnixMillis(0));
    let message = Message { body: MessageBody::Data(vec![vec![1; 700]]), ..Message::default() };
    let mut now = 0u64;
    let mut feed = handshake();
    feed.extend_from_slice(data);
    // Chunks of the size the next byte says, as a socket might deliver them.
    let mut rest = &feed[..];
    let mut sent = 0usize;
    while !rest.is_empty() {
        let n = usize::from(rest[0] % 64).max(1).min(rest.len());
        now += u64::from(rest[0] & 7) * 500;
        c.handle_bytes(&rest[..n], UnixMillis(now));
        c.handle_timeout(UnixMillis(now));
        rest = &rest[n..];
        while let Some(bytes) = c.poll_transmit() {
            sent += bytes.len();
        }
        while let Some(event) = c.poll_event() {
            match event {
                Event::SaslInit { .. } => c.sasl_outcome(true, UnixMillis(now)),
                Event::Attach { link, name, source, target, .. } => c.accept_link(link, &name, source, target, vec![], UnixMillis(now)),
                Event::Credit { link, .. } => {
                    while c.send(link, &message, false, UnixMillis(now)).is_ok() {}
                }
                Event::Message { link, delivery_id, settled: false, .. } => c.settle(link, delivery_id, DeliveryState::Accepted, UnixMillis(now)),
                _ => {}
            }
        }
        assert!(c.poll_timeout().is_some() || c.is_closed());
    }
    let _ = sent;
});
