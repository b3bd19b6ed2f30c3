use super::*;
use proptest::prelude::*;
use std::num::NonZeroU16;

fn id(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

fn decode_all(bytes: &[u8]) -> Result<Option<(Packet, usize)>, DecodeError> {
    decode(bytes, MAX_PACKET_BYTES)
}

#[test]
fn connect_as_the_python_sdk_sends_it() {
    let connect = Connect {
        client_id: "dev1".into(),
        clean_session: false,
        keep_alive: 60,
        username: Some("myhub.azure-devices.net/dev1/?api-version=2019-10-01".into()),
        password: Some(b"SharedAccessSignature sr=x&sig=y&se=1".to_vec()),
        will: None,
    };
    let bytes = Packet::Connect(connect.clone()).to_bytes().unwrap();
    assert_eq!(&bytes[..2], &[0x10, (bytes.len() - 2) as u8]);
    assert_eq!(&bytes[2..10], &[0, 4, b'M', b'Q', b'T', b'T', 4, 0b1100_0000]); // name, level 4, user+password
    assert_eq!(&bytes[10..12], &[0, 60]); // keep-alive
    assert_eq!(decode_all(&bytes), Ok(Some((Packet::Connect(connect.clone()), bytes.len()))));
    assert!(!format!("{connect:?}").contains("sig=y"), "Debug must hide the password");
}

#[test]
fn byte_literals() {
    // CONNACK accepted, session present.
    assert_eq!(
        decode_all(&[0x20, 2, 1, 0]),
        Ok(Some((Packet::ConnAck(ConnAck { session_present: true, code: ConnectReturnCode::Accepted }), 4)))
    );
    // PUBLISH QoS 1 "a/b" id 7 payload "hi".
    let publish = [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 7, b'h', b'i'];
    let expected = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b".into(),
        packet_id: Some(id(7)),
        payload: b"hi".to_vec(),
    };
    assert_eq!(decode_all(&publish), Ok(Some((Packet::Publish(expected), 11))));
    // SUBSCRIBE id 1, "$iothub/twin/res/#" at QoS 1.
    let mut sub = vec![0x82, 0, 0, 1];
    sub.extend_from_slice(&[0, 18]);
    sub.extend_from_slice(b"$iothub/twin/res/#");
    sub.push(1);
    sub[1] = (sub.len() - 2) as u8;
    let (packet, used) = decode_all(&sub).unwrap().unwrap();
    assert_eq!(used, sub.len());
    assert_eq!(
        packet,
        Packet::Subscribe(Subscribe {
            packet_id: id(1),
            filters: vec![("$iothub/twin/res/#".into(), QoS::AtLeastOnce)]
        })
    );
    assert_eq!(decode_all(&[0xc0, 0]), Ok(Some((Packet::PingReq, 2))));
    assert_eq!(decode_all(&[0xe0, 0]), Ok(Some((Packet::Disconnect, 2))));
    assert_eq!(decode_all(&[0x40, 2, 0, 9]), Ok(Some((Packet::PubAck(id(9)), 4))));
}

#[test]
fn incremental_and_back_to_back() {
    let a = Packet::PingReq.to_bytes().unwrap();
    let b = Packet::PubAck(id(3)).to_bytes().unwrap();
    let mut stream = a.clone();
    stream.extend_from_slice(&b);
    let (first, used) = decode_all(&stream).unwrap().unwrap();
    assert_eq!((first, used), (Packet::PingReq, a.len()));
    assert_eq!(decode_all(&stream[used..]).unwrap().unwrap().0, Packet::PubAck(id(3)));
    // Split anywhere: None until whole.
    for cut in 0..b.len() {
        assert_eq!(decode_all(&b[..cut]), Ok(None), "cut at {cut}");
    }
}

#[test]
fn violations() {
    let cases: Vec<(&[u8], DecodeError)> = vec![
        (&[0x00, 0], DecodeError::ReservedType(0)),
        (&[0xf0, 0], DecodeError::ReservedType(15)),
        (&[0xc1, 0], DecodeError::InvalidFlags { kind: 12, flags: 1 }),
        (&[0x80, 2, 0, 1], DecodeError::InvalidFlags { kind: 8, flags: 0 }),
        (&[0x82, 2, 0, 1], DecodeError::NoFilters),
        (&[0x82, 6, 0, 1, 0, 1, b'a', 4], DecodeError::SubscribeOptions),
        (&[0x82, 6, 0, 1, 0, 1, b'a', 3], DecodeError::InvalidQoS),
        (&[0x40, 2, 0, 0], DecodeError::ZeroPacketId),
        (&[0x40, 3, 0, 1, 0], DecodeError::Malformed("PUBACK")),
        (&[0x36, 5, 0, 1, b'a', 0, 1], DecodeError::InvalidQoS),
        (&[0x38, 3, 0, 1, b'a'], DecodeError::InvalidFlags { kind: 3, flags: 8 }),
        (&[0x30, 3, 0, 1, b'#'], DecodeError::InvalidTopic),
        (&[0x30, 2, 0, 0], DecodeError::InvalidTopic),
        (&[0x30, 4, 0, 2, 0xc3, 0x28], DecodeError::InvalidString),
        (&[0x30, 4, 0, 2, b'a', 0], DecodeError::InvalidString),
        (&[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f], DecodeError::BadRemainingLength),
        (&[0x10, 7, 0, 4, b'M', b'Q', b'T', b'X', 4], DecodeError::ProtocolName),
        (&[0x10, 7, 0, 4, b'M', b'Q', b'T', b'T', 3], DecodeError::ProtocolLevel(3)),
    ];
    for (bytes, expected) in cases {
        assert_eq!(decode_all(bytes), Err(expected.clone()), "{bytes:02x?}");
    }
    // CONNECT flags: reserved bit, password without user name, will QoS without will.
    for flags in [0b0000_0001u8, 0b0100_0000, 0b0000_1000, 0b0010_0000] {
        let bytes = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60, 0, 0];
        assert_eq!(decode_all(&bytes), Err(DecodeError::ConnectFlags(flags)), "{flags:08b}");
    }
    // Reserved types are refused from the first byte alone.
    assert_eq!(decode_all(&[0xff]), Err(DecodeError::ReservedType(15)));
    // Too large: refused from the header alone.
    assert_eq!(decode(&[0x30, 0x80, 0x80, 0x20], 1024), Err(DecodeError::TooLarge { size: 524_288, max: 1024 }));
}

fn arb_string() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/$?=&%._-]{1,40}"
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    let qos = prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)];
    let pid = (1u16..).prop_map(id);
    prop_oneof![
        (
            arb_string(),
            any::<bool>(),
            any::<u16>(),
            prop::option::of(arb_string()),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..64))
        )
            .prop_map(|(client_id, clean_session, keep_alive, username, password)| {
                let password = if username.is_some() { password } else { None };
                Packet::Connect(Connect { client_id, clean_session, keep_alive, username, password, will: None })
            }),
        (qos.clone(), any::<bool>(), arb_string(), pid.clone(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(
            |(qos, retain, topic, pid, payload)| {
                let topic = topic.replace(['+', '#'], "x");
                let packet_id = (qos != QoS::AtMostOnce).then_some(pid);
                Packet::Publish(Publish { dup: false, qos, retain, topic, packet_id, payload })
            }
        ),
        pid.clone().prop_map(Packet::PubAck),
        (pid.clone(), prop::collection::vec((arb_string(), qos), 1..5))
            .prop_map(|(packet_id, filters)| Packet::Subscribe(Subscribe { packet_id, filters })),
        (pid.clone(), prop::collection::vec(arb_string(), 1..5))
            .prop_map(|(packet_id, filters)| Packet::Unsubscribe { packet_id, filters }),
        pid.prop_map(Packet::UnsubAck),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect),
    ]
}

proptest! {
    #[test]
    fn round_trip(packet in arb_packet()) {
        let bytes = packet.to_bytes().unwrap();
        prop_assert_eq!(decode_all(&bytes), Ok(Some((packet, bytes.len()))));
        // Any strict prefix is incomplete, never an error or a different packet.
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode_all(&bytes[..cut]), Ok(None));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut rest: &[u8] = &bytes;
        while let Ok(Some((_, used))) = decode_all(rest) {
            prop_assert!(used > 0 && used <= rest.len());
            rest = &rest[used..];
        }
    }
}

#[test]
fn the_encoder_refuses_what_has_no_wire_form() {
    let publish = |topic: String, qos, packet_id| {
        Packet::Publish(Publish { dup: false, qos, retain: false, topic, packet_id, payload: b"x".to_vec() })
    };
    // A topic of 65,535 bytes fits; one more byte is refused, never truncated.
    let longest = publish("t".repeat(65_535), QoS::AtMostOnce, None).to_bytes().unwrap();
    assert_eq!(decode(&longest, usize::MAX).unwrap().unwrap().1, longest.len());
    assert_eq!(
        publish("t".repeat(65_536), QoS::AtMostOnce, None).to_bytes(),
        Err(EncodeError::FieldTooLong { field: "topic", len: 65_536 })
    );
    let connect = Connect {
        client_id: "dev1".into(),
        clean_session: true,
        keep_alive: 60,
        username: None,
        password: Some(vec![0; 70_000]),
        will: None,
    };
    assert_eq!(Packet::Connect(connect).to_bytes(), Err(EncodeError::FieldTooLong { field: "password", len: 70_000 }));
    // The packet id follows the QoS [MQTT-2.3.1-5].
    assert_eq!(
        publish("t".into(), QoS::AtMostOnce, Some(id(1))).to_bytes(),
        Err(EncodeError::PacketIdMismatch { qos: 0, has_id: true })
    );
    assert_eq!(
        publish("t".into(), QoS::AtLeastOnce, None).to_bytes(),
        Err(EncodeError::PacketIdMismatch { qos: 1, has_id: false })
    );
    // A failed encode leaves the buffer as it was.
    let mut out = vec![7];
    assert!(publish("t".into(), QoS::AtLeastOnce, None).encode(&mut out).is_err());
    assert_eq!(out, [7]);
}

#[test]
fn remaining_length_stops_at_four_bytes() {
    let mut out = Vec::new();
    super::reader::write_remaining_length(&mut out, 268_435_455).unwrap();
    assert_eq!(out, [0xff, 0xff, 0xff, 0x7f]);
    assert_eq!(super::reader::write_remaining_length(&mut out, 268_435_456), Err(EncodeError::TooLarge(268_435_456)));
}
