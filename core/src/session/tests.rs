use super::*;
use crate::mqtt::{Connect, Subscribe};

fn id(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

/// Drives a session like the adapter does and records what comes out.
struct Harness {
    session: Session,
    now: UnixMillis,
    sent: Vec<Packet>,
    events: Vec<SessionEvent>,
}

impl Harness {
    fn new() -> Self {
        Self { session: Session::new(UnixMillis(1_000)), now: UnixMillis(1_000), sent: Vec::new(), events: Vec::new() }
    }

    fn feed(&mut self, packet: &Packet) {
        self.feed_bytes(&packet.to_bytes().unwrap());
    }

    fn feed_bytes(&mut self, bytes: &[u8]) {
        self.session.handle_bytes(self.now, bytes);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(bytes) = self.session.poll_transmit() {
            let mut rest: &[u8] = &bytes;
            while let Ok(Some((p, used))) = mqtt::decode(rest, usize::MAX) {
                self.sent.push(p);
                rest = &rest[used..];
            }
        }
        while let Some(e) = self.session.poll_event() {
            self.events.push(e);
        }
    }

    fn connect(&mut self, device: &str, keep_alive: u16) {
        self.feed(&Packet::Connect(Connect {
            client_id: device.into(),
            clean_session: false,
            keep_alive,
            username: Some(format!("hub/{device}/?api-version=2021-04-12")),
            password: Some(b"SharedAccessSignature sr=hub%2Fdevices%2Fd1&sig=x&se=99".to_vec()),
            will: None,
        }));
    }

    /// A fresh session sent a CleanSession CONNECT as `client_id` with user name `username`.
    fn named(client_id: &str, username: &str) -> Self {
        let mut h = Self::new();
        h.feed(&Packet::Connect(Connect {
            client_id: client_id.into(),
            clean_session: true,
            keep_alive: 60,
            username: Some(username.into()),
            password: Some(b"token".to_vec()),
            will: None,
        }));
        h
    }

    fn connected(device: &str) -> Self {
        let mut h = Self::new();
        h.connect(device, 60);
        h.session.authenticated(Ok(Accepted { token_expiry: Some(UnixMillis(3_600_000)), subscriptions: vec![] }));
        h.drain();
        h.sent.clear();
        h.events.clear();
        h
    }

    /// Subscribes; the `SubscriptionsChanged` report is checked in its own test and dropped here.
    fn subscribe(&mut self, filters: &[&str]) {
        let filters = filters.iter().map(|f| ((*f).to_owned(), QoS::AtLeastOnce)).collect();
        self.feed(&Packet::Subscribe(Subscribe { packet_id: id(1), filters }));
        self.events.retain(|e| !matches!(e, SessionEvent::SubscriptionsChanged { .. }));
    }

    fn publish(&mut self, topic: &str, qos: QoS, payload: &[u8]) {
        let packet_id = (qos != QoS::AtMostOnce).then(|| id(9));
        self.feed(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id,
            payload: payload.to_vec(),
        }));
    }

    fn closed(&self) -> Option<&CloseReason> {
        self.events.iter().find_map(|e| match e {
            SessionEvent::Closed(r) => Some(r),
            _ => None,
        })
    }
}

#[test]
fn connect_authenticates_through_the_adapter() {
    let mut h = Harness::new();
    h.connect("d1", 60);
    assert!(h.sent.is_empty(), "no CONNACK before the verdict");
    assert_eq!(
        h.events,
        vec![SessionEvent::Authenticate {
            device_id: "d1".into(),
            username: Some("hub/d1/?api-version=2021-04-12".into()),
            token: Some("SharedAccessSignature sr=hub%2Fdevices%2Fd1&sig=x&se=99".into()),
            clean_session: false,
            model_id: None,
        }]
    );
    h.session.authenticated(Ok(Accepted::default()));
    h.drain();
    assert_eq!(h.sent, vec![Packet::ConnAck(ConnAck { session_present: false, code: ConnectReturnCode::Accepted })]);
    assert!(h.session.is_connected());
}

#[test]
fn refused_token_gets_connack_5_then_close() {
    let mut h = Harness::new();
    h.connect("d1", 60);
    h.session.authenticated(Err(ConnectReturnCode::NotAuthorized));
    h.drain();
    assert_eq!(
        h.sent,
        vec![Packet::ConnAck(ConnAck { session_present: false, code: ConnectReturnCode::NotAuthorized })]
    );
    assert_eq!(h.closed(), Some(&CloseReason::Refused(5)));
    // Sticky: nothing more happens.
    h.publish("$iothub/twin/GET/?$rid=1", QoS::AtMostOnce, b" ");
    assert_eq!(h.events.len(), 2);
}

#[test]
fn twin_get_and_reported_patch_flow() {
    let mut h = Harness::connected("d1");
    h.subscribe(&["$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#"]);
    assert_eq!(
        h.sent,
        vec![Packet::SubAck { packet_id: id(1), codes: vec![SubscribeReturnCode::Granted(QoS::AtLeastOnce); 2] }]
    );
    h.sent.clear();

    h.publish("$iothub/twin/GET/?$rid=abc", QoS::AtLeastOnce, b" ");
    assert_eq!(h.sent, vec![Packet::PubAck(id(9))]);
    assert_eq!(h.events, vec![SessionEvent::TwinGet { rid: "abc".into() }]);
    h.session.reply_twin("abc", 200, None, br#"{"desired":{"$version":1},"reported":{"$version":1}}"#.to_vec());
    h.publish("$iothub/twin/PATCH/properties/reported/?$rid=r2", QoS::AtMostOnce, br#"{"t":1}"#);
    h.session.reply_twin("r2", 204, Some(2), Vec::new());
    h.session.push_desired(2, br#"{"telemetryInterval":5,"$version":2}"#.to_vec()).unwrap();
    h.drain();
    let topics: Vec<String> = h
        .sent
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.topic.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        topics,
        vec![
            "$iothub/twin/res/200/?$rid=abc",
            "$iothub/twin/res/204/?$rid=r2&$version=2",
            "$iothub/twin/PATCH/properties/desired/?$version=2"
        ]
    );
    assert!(h.events.contains(&SessionEvent::ReportedPatch { rid: "r2".into(), body: br#"{"t":1}"#.to_vec() }));
}

#[test]
fn telemetry_is_acked_only_when_stored() {
    let mut h = Harness::connected("d1");
    h.publish("devices/d1/messages/events/alert=high_temperature", QoS::AtLeastOnce, b"{\"temperature\":80}");
    assert!(h.sent.is_empty());
    assert_eq!(
        h.events,
        vec![SessionEvent::Telemetry {
            properties: vec![("alert".into(), Some("high_temperature".into()))],
            body: b"{\"temperature\":80}".to_vec(),
            ack: Some(id(9)),
        }]
    );
    h.session.ack(id(9));
    h.drain();
    assert_eq!(h.sent, vec![Packet::PubAck(id(9))]);
}

#[test]
fn methods_and_c2d_need_subscriptions() {
    let mut h = Harness::connected("d1");
    assert_eq!(h.session.call_method("reboot", "1", b"{}".to_vec()), Err(NotSubscribed(Subscription::Methods)));
    h.subscribe(&["$iothub/methods/POST/#", "devices/d1/messages/devicebound/#"]);
    h.session.call_method("reboot", "1", b"{}".to_vec()).unwrap();
    let c2d = h.session.send_cloud_to_device(&[("$.mid".into(), Some("m".into()))], b"hi".to_vec()).unwrap();
    h.drain();
    h.publish("$iothub/methods/res/200/?$rid=1", QoS::AtMostOnce, br#"{"ok":true}"#);
    h.feed(&Packet::PubAck(c2d));
    assert!(h.events.contains(&SessionEvent::MethodResponse {
        rid: "1".into(),
        status: 200,
        body: br#"{"ok":true}"#.to_vec()
    }));
    assert!(h.events.contains(&SessionEvent::CloudToDeviceAck(c2d)));
}

#[test]
fn violations_close_the_session() {
    type Case = (&'static str, Box<dyn Fn(&mut Harness)>, fn(&CloseReason) -> bool);
    let cases: Vec<Case> = vec![
        ("QoS 2 publish", Box::new(|h| h.publish("devices/d1/messages/events/", QoS::ExactlyOnce, b"x")), |r| {
            *r == CloseReason::QoS2
        }),
        (
            "another device's topic",
            Box::new(|h| h.publish("devices/d2/messages/events/", QoS::AtMostOnce, b"x")),
            |r| matches!(r, CloseReason::TopicRefused(_)),
        ),
        ("subscribe to another device", Box::new(|h| h.subscribe(&["devices/d2/messages/devicebound/#"])), |r| {
            matches!(r, CloseReason::TopicRefused(_))
        }),
        ("unknown filter", Box::new(|h| h.subscribe(&["#"])), |r| matches!(r, CloseReason::TopicRefused(_))),
        ("unknown topic", Box::new(|h| h.publish("hello", QoS::AtMostOnce, b"x")), |r| {
            matches!(r, CloseReason::TopicRefused(_))
        }),
        ("second CONNECT", Box::new(|h| h.connect("d1", 60)), |r| matches!(r, CloseReason::ProtocolViolation(_))),
        ("garbage bytes", Box::new(|h| h.feed_bytes(&[0xff, 0x00, 0x13])), |r| {
            matches!(r, CloseReason::ProtocolViolation(_))
        }),
        ("invalid UTF-8 topic", Box::new(|h| h.feed_bytes(&[0x30, 4, 0, 2, 0xc3, 0x28])), |r| {
            matches!(r, CloseReason::ProtocolViolation(_))
        }),
        ("oversized publish", Box::new(|h| h.feed_bytes(&[0x30, 0xff, 0xff, 0x7f])), |r| {
            matches!(r, CloseReason::ProtocolViolation(_))
        }),
    ];
    for (what, act, expected) in cases {
        let mut h = Harness::connected("d1");
        act(&mut h);
        let reason = h.closed().unwrap_or_else(|| panic!("{what}: not closed; events {:?}", h.events));
        assert!(expected(reason), "{what}: {reason:?}");
    }
}

#[test]
fn timers() {
    // No CONNECT within the timeout.
    let mut h = Harness::new();
    assert_eq!(h.session.poll_timeout(), Some(UnixMillis(1_000 + CONNECT_TIMEOUT_MS)));
    h.session.handle_timeout(UnixMillis(1_500));
    h.drain();
    assert!(h.closed().is_none(), "spurious timeout does nothing");
    h.session.handle_timeout(UnixMillis(1_000 + CONNECT_TIMEOUT_MS));
    h.drain();
    assert_eq!(h.closed(), Some(&CloseReason::ConnectTimeout));

    // Keep-alive 60 s: closed after 90 s of silence, not before; any packet resets it.
    let mut h = Harness::connected("d1");
    assert_eq!(h.session.poll_timeout(), Some(UnixMillis(1_000 + 90_000)));
    h.now = UnixMillis(60_000);
    h.feed(&Packet::PingReq);
    assert_eq!(h.sent, vec![Packet::PingResp]);
    h.session.handle_timeout(UnixMillis(91_000));
    h.drain();
    assert!(h.closed().is_none());
    h.session.handle_timeout(UnixMillis(150_000));
    h.drain();
    assert_eq!(h.closed(), Some(&CloseReason::KeepAliveTimeout));

    // Token expiry disconnects.
    let mut h = Harness::new();
    h.connect("d1", 0);
    h.session.authenticated(Ok(Accepted { token_expiry: Some(UnixMillis(5_000)), subscriptions: vec![] }));
    h.drain();
    assert_eq!(h.session.poll_timeout(), Some(UnixMillis(5_000)));
    h.session.handle_timeout(UnixMillis(5_000));
    h.drain();
    assert_eq!(h.closed(), Some(&CloseReason::TokenExpired));
}

#[test]
fn split_packets_and_snapshot_restore() {
    let mut h = Harness::connected("d1");
    h.subscribe(&["$iothub/twin/res/#"]);
    h.sent.clear();
    let bytes = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "$iothub/twin/GET/?$rid=split".into(),
        packet_id: None,
        payload: b" ".to_vec(),
    })
    .to_bytes()
    .unwrap();
    let (a, b) = bytes.split_at(5);
    h.feed_bytes(a);
    // Hibernate between the two halves; the adapter keeps the partial packet.
    let kept = h.session.take_partial_input();
    let json = serde_json::to_string(&h.session.snapshot()).unwrap();
    h.session = serde_json::from_str(&json).unwrap();
    h.session.restore_partial_input(kept);
    h.feed_bytes(b);
    assert_eq!(h.events, vec![SessionEvent::TwinGet { rid: "split".into() }]);
    assert!(h.session.is_subscribed(Subscription::TwinResponses), "subscriptions survive hibernation");
}

#[test]
fn packets_before_connect_or_connack_close() {
    let mut h = Harness::new();
    h.feed(&Packet::PingReq);
    assert!(matches!(h.closed(), Some(CloseReason::ProtocolViolation(_))));
    let mut h = Harness::new();
    h.connect("d1", 60);
    h.feed(&Packet::PingReq);
    assert!(matches!(h.closed(), Some(CloseReason::ProtocolViolation(_))));
    let mut h = Harness::new();
    h.connect("", 60);
    assert_eq!(
        h.sent,
        vec![Packet::ConnAck(ConnAck { session_present: false, code: ConnectReturnCode::IdentifierRejected })]
    );
    // MQTT 3.1 (level 3) gets CONNACK 1.
    let mut h = Harness::new();
    h.feed_bytes(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 3, 0, 0, 60, 0, 0]);
    assert_eq!(
        h.sent,
        vec![Packet::ConnAck(ConnAck { session_present: false, code: ConnectReturnCode::UnacceptableProtocolVersion })]
    );
}

#[test]
fn clean_session_zero_reports_subscription_changes() {
    let mut h = Harness::connected("d1");
    h.feed(&Packet::Subscribe(Subscribe {
        packet_id: id(3),
        filters: vec![
            ("$iothub/twin/res/#".into(), QoS::AtLeastOnce),
            ("$iothub/methods/POST/#".into(), QoS::AtMostOnce),
        ],
    }));
    assert_eq!(
        h.events,
        vec![SessionEvent::SubscriptionsChanged {
            subscriptions: vec![Subscription::Methods, Subscription::TwinResponses],
            keep: true
        }]
    );
    h.feed(&Packet::Unsubscribe { packet_id: id(4), filters: vec!["$iothub/methods/POST/#".into()] });
    assert_eq!(
        h.events.last(),
        Some(&SessionEvent::SubscriptionsChanged { subscriptions: vec![Subscription::TwinResponses], keep: true })
    );
}

#[test]
fn clean_session_zero_restores_subscriptions() {
    let mut h = Harness::new();
    h.connect("d1", 60);
    h.session.authenticated(Ok(Accepted { token_expiry: None, subscriptions: vec![Subscription::TwinResponses] }));
    h.drain();
    assert_eq!(h.sent, vec![Packet::ConnAck(ConnAck { session_present: true, code: ConnectReturnCode::Accepted })]);
    assert!(h.session.is_subscribed(Subscription::TwinResponses));
    // CleanSession=1: kept subscriptions are ignored and changes are not reported.
    let mut h = Harness::new();
    h.feed(&Packet::Connect(Connect {
        client_id: "d1".into(),
        clean_session: true,
        keep_alive: 60,
        username: None,
        password: None,
        will: None,
    }));
    h.session.authenticated(Ok(Accepted { token_expiry: None, subscriptions: vec![Subscription::TwinResponses] }));
    h.drain();
    assert!(!h.session.is_subscribed(Subscription::TwinResponses));
    h.feed(&Packet::Subscribe(Subscribe {
        packet_id: id(5),
        filters: vec![("$iothub/methods/POST/#".into(), QoS::AtMostOnce)],
    }));
    assert!(h.events.iter().any(|e| matches!(e, SessionEvent::SubscriptionsChanged { keep: false, .. })));
}

/// The adapter keeps an unfinished packet outside the snapshot (attachments are capped at
/// 16 KiB; a packet may be 256 KiB); the session resumes it once given back.
#[test]
fn a_large_packet_split_across_events_survives_the_snapshot() {
    let mut h = Harness::connected("d1");
    let payload = vec![b'x'; 200 * 1024];
    let bytes = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/d1/messages/events/".into(),
        packet_id: Some(id(7)),
        payload: payload.clone(),
    })
    .to_bytes()
    .unwrap();
    let mut kept = Vec::new();
    for chunk in bytes.chunks(8 * 1024) {
        let json = serde_json::to_string(&h.session.snapshot()).unwrap();
        assert!(json.len() < 1024, "the snapshot stays small while a packet is half in: {} bytes", json.len());
        h.session = serde_json::from_str(&json).unwrap();
        h.session.restore_partial_input(std::mem::take(&mut kept));
        h.feed_bytes(chunk);
        kept = h.session.take_partial_input();
    }
    assert!(kept.is_empty());
    assert!(matches!(&h.events[..], [SessionEvent::Telemetry { body, ack: Some(_), .. }] if *body == payload));
}

#[test]
fn lost_partial_input_ends_the_session_instead_of_misreading_the_stream() {
    let mut h = Harness::connected("d1");
    let bytes = Packet::PingReq.to_bytes().unwrap();
    let big = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "devices/d1/messages/events/".into(),
        packet_id: None,
        payload: vec![1; 1000],
    })
    .to_bytes()
    .unwrap();
    h.feed_bytes(&big[..500]);
    let kept = h.session.take_partial_input();
    assert_eq!(kept.len(), 500);
    let json = serde_json::to_string(&h.session.snapshot()).unwrap();
    h.session = serde_json::from_str(&json).unwrap();
    // The adapter lost the bytes (its object was evicted): the rest of the packet must not be
    // read as a new one.
    h.session.restore_partial_input(Vec::new());
    h.feed_bytes(&big[500..]);
    h.feed_bytes(&bytes);
    assert!(h.events.iter().any(|e| matches!(e, SessionEvent::Closed(CloseReason::ProtocolViolation(_)))));
    assert!(!h.events.iter().any(|e| matches!(e, SessionEvent::Telemetry { .. })));
}

#[test]
fn a_user_name_naming_another_device_is_refused() {
    let h = Harness::named("d1", "hub/d2/?api-version=2021-04-12");
    assert!(!h.events.iter().any(|e| matches!(e, SessionEvent::Authenticate { .. })));
    assert!(matches!(&h.sent[..], [Packet::ConnAck(ConnAck { code: ConnectReturnCode::BadUserNameOrPassword, .. })]));
}

#[test]
fn a_far_future_token_expiry_is_kept_within_a_javascript_number() {
    let mut h = Harness::new();
    h.connect("d1", 60);
    h.session.authenticated(Ok(Accepted { token_expiry: Some(UnixMillis(u64::MAX)), subscriptions: vec![] }));
    h.drain();
    assert!(h.session.is_connected());
    assert_eq!(h.session.poll_timeout(), Some(UnixMillis(h.now.0 + 90_000)));
    let json = serde_json::to_string(&h.session.snapshot()).unwrap();
    assert!(json.contains(&MAX_EXPIRY.0.to_string()));
}

#[test]
fn a_reply_that_cannot_be_encoded_ends_the_session_instead_of_sending_a_truncated_topic() {
    let mut h = Harness::connected("d1");
    h.subscribe(&["$iothub/twin/res/#"]);
    h.sent.clear();
    // A request id that fits the device's topic, but not the longer reply topic echoing it.
    let rid = "r".repeat(65_535 - "$iothub/twin/GET/?$rid=".len());
    h.publish(&format!("$iothub/twin/GET/?$rid={rid}"), QoS::AtMostOnce, b"");
    assert_eq!(h.events, vec![SessionEvent::TwinGet { rid: rid.clone() }]);
    h.events.clear();
    h.session.reply_twin(&rid, 200, None, b"{}".to_vec());
    h.drain();
    assert!(h.sent.is_empty(), "nothing is sent: {:?}", h.sent.len());
    assert!(matches!(h.events.as_slice(), [SessionEvent::Closed(CloseReason::Hub(why))] if why.contains("65,535")));
}

#[test]
fn a_client_id_iot_hub_would_not_issue_is_refused_and_never_kept() {
    for bad in ["x".repeat(60_000), "x".repeat(129), "has space".into(), "caf\u{e9}".into()] {
        let mut h = Harness::new();
        h.connect(&bad, 60);
        assert_eq!(
            h.sent,
            vec![Packet::ConnAck(ConnAck { session_present: false, code: ConnectReturnCode::IdentifierRejected })],
            "{} characters",
            bad.len()
        );
        let snapshot = serde_json::to_vec(&h.session.snapshot()).unwrap();
        assert!(snapshot.len() <= MAX_SNAPSHOT_BYTES, "{} bytes", snapshot.len());
    }
    let mut h = Harness::new();
    h.connect(&"x".repeat(128), 60);
    assert!(h.sent.is_empty() && h.closed().is_none(), "128 characters is an id");
}

#[test]
fn the_largest_session_snapshot_fits_its_bound() {
    // The longest id, every subscription, a token expiry and packet ids in use: the most a
    // session can hold.
    let mut h = Harness::connected(&"x".repeat(128));
    h.feed(&Packet::Subscribe(Subscribe {
        packet_id: id(3),
        filters: vec![
            ("$iothub/twin/res/#".into(), QoS::AtMostOnce),
            ("$iothub/methods/POST/#".into(), QoS::AtMostOnce),
            ("$iothub/twin/PATCH/properties/desired/#".into(), QoS::AtMostOnce),
            (format!("devices/{}/messages/devicebound/#", "x".repeat(128)), QoS::AtLeastOnce),
        ],
    }));
    for _ in 0..100 {
        let _ = h.session.send_cloud_to_device(&[], b"m".to_vec());
    }
    h.session.handle_bytes(h.now, &[0x30, 0x80, 0x40, 0x00]);
    let _ = h.session.take_partial_input();
    let snapshot = serde_json::to_vec(&h.session.snapshot()).unwrap();
    assert!(snapshot.len() <= MAX_SNAPSHOT_BYTES, "{} bytes", snapshot.len());
}

#[test]
fn a_user_name_host_longer_than_a_hub_name_names_no_hub() {
    assert_eq!(username_host("hub.example:8883/d1/?api-version=1"), "hub.example:8883");
    assert_eq!(username_host(&format!("{}/d1/?api-version=1", "h".repeat(MAX_HUB_NAME_LEN + 1))), "");
}

#[test]
fn a_module_connects_with_its_own_client_id_and_uses_its_own_topics() {
    let mut h = Harness::new();
    h.connect("d1/m1", 60);
    assert!(
        matches!(&h.events[..], [SessionEvent::Authenticate { device_id, .. }] if device_id == "d1/m1"),
        "{:?}",
        h.events
    );
    let mut h = Harness::connected("d1/m1");
    h.subscribe(&["$iothub/twin/res/#", "devices/d1/modules/m1/inputs/#"]);
    assert!(h.session.is_subscribed(Subscription::ModuleInputs));
    h.publish("devices/d1/modules/m1/messages/events/a=1", QoS::AtLeastOnce, b"{}");
    assert!(matches!(&h.events[..], [SessionEvent::Telemetry { .. }]), "{:?}", h.events);
    // The device's own topics, and a module's cloud-to-device topic, are not the module's.
    for topic in ["devices/d1/messages/events/", "devices/d1/modules/m2/messages/events/"] {
        let mut h = Harness::connected("d1/m1");
        h.publish(topic, QoS::AtLeastOnce, b"{}");
        assert!(matches!(h.closed(), Some(CloseReason::TopicRefused(_))), "{topic}");
        assert!(!h.events.iter().any(|e| matches!(e, SessionEvent::Telemetry { .. })), "{topic}");
    }
    // Nor may a device publish for its module.
    let mut h = Harness::connected("d1");
    h.publish("devices/d1/modules/m1/messages/events/", QoS::AtLeastOnce, b"{}");
    assert!(matches!(h.closed(), Some(CloseReason::TopicRefused(_))));
}

#[test]
fn a_module_user_name_must_name_the_module() {
    for (client_id, username, ok) in [
        ("d1/m1", "hub/d1/m1/?api-version=2021-04-12", true),
        ("d1/m1", "hub/d1/m2/?api-version=2021-04-12", false),
        ("d1/m1", "hub/d1/?api-version=2021-04-12", false),
        ("d1/m1", "hub/d2/m1/?api-version=2021-04-12", false),
        ("d1", "hub/d1/api-version=2016-11-14", true),
    ] {
        let h = Harness::named(client_id, username);
        let authenticating = h.events.iter().any(|e| matches!(e, SessionEvent::Authenticate { .. }));
        assert_eq!(authenticating, ok, "{client_id} {username}");
    }
    for bad in ["d1/", "/m1", "d1/m 1", "d1/m1/x"] {
        let mut h = Harness::new();
        h.connect(bad, 60);
        assert!(
            matches!(&h.sent[..], [Packet::ConnAck(ConnAck { code: ConnectReturnCode::IdentifierRejected, .. })]),
            "{bad}"
        );
    }
}

#[test]
fn the_largest_module_session_snapshot_fits_its_bound() {
    let key = format!("{}/{}", "x".repeat(128), "y".repeat(128));
    let mut h = Harness::connected(&key);
    h.feed(&Packet::Subscribe(Subscribe {
        packet_id: id(3),
        filters: vec![
            ("$iothub/twin/res/#".into(), QoS::AtMostOnce),
            ("$iothub/methods/POST/#".into(), QoS::AtMostOnce),
            ("$iothub/twin/PATCH/properties/desired/#".into(), QoS::AtMostOnce),
            (format!("devices/{}/modules/{}/inputs/#", "x".repeat(128), "y".repeat(128)), QoS::AtLeastOnce),
        ],
    }));
    assert!(h.session.is_subscribed(Subscription::ModuleInputs));
    h.session.handle_bytes(h.now, &[0x30, 0x80, 0x40, 0x00]);
    let _ = h.session.take_partial_input();
    let snapshot = serde_json::to_vec(&h.session.snapshot()).unwrap();
    assert!(snapshot.len() <= MAX_SNAPSHOT_BYTES, "{} bytes", snapshot.len());
}

#[test]
fn the_model_a_user_name_announces_comes_with_the_connect_and_junk_is_refused() {
    let connect = |username: &str| Harness::named("d1", username);
    let h = connect("hub/d1/?api-version=2020-09-30&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1");
    assert!(
        matches!(&h.events[..], [SessionEvent::Authenticate { model_id: Some(m), .. }] if m == "dtmi:com:example:Thermostat;1"),
        "{:?}",
        h.events
    );
    let h = connect("hub/d1/?api-version=2020-09-30&model-id=thermostat");
    assert!(h.events.iter().all(|e| !matches!(e, SessionEvent::Authenticate { .. })));
    assert!(matches!(&h.sent[..], [Packet::ConnAck(ConnAck { code: ConnectReturnCode::BadUserNameOrPassword, .. })]));
}
