use super::*;
use crate::session::{Accepted, Session, SessionEvent};

type Bag = Vec<(String, Option<String>)>;

/// A virtual device wired to the hub's session in memory; the test plays the hub's
/// application: it accepts CONNECT, answers twin GETs with `desired`, records reports and
/// telemetry.
struct Rig {
    device: VirtualDevice,
    hub: Session,
    now: UnixMillis,
    desired: Value,
    reports: Vec<Value>,
    telemetry: Vec<(Bag, Value)>,
    method_answers: Vec<(i32, Value)>,
    actions: Vec<Action>,
    log: Vec<LogEntry>,
}

impl Rig {
    fn new(desired: Value) -> Self {
        let options = ClientOptions {
            device_id: "v1".into(),
            host: "hub".into(),
            token: String::new(),
            keep_alive_secs: 60,
            clean_session: false,
        };
        let now = UnixMillis(1_764_000_000_000);
        let mut rig = Self {
            device: VirtualDevice::new(options, 7),
            hub: Session::new(now),
            now,
            desired,
            reports: Vec::new(),
            telemetry: Vec::new(),
            method_answers: Vec::new(),
            actions: Vec::new(),
            log: Vec::new(),
        };
        rig.device.go_online();
        rig.open_socket_if_asked();
        rig
    }

    /// Does what the adapter does with an `Open` action: a fresh socket (a new hub session).
    fn open_socket_if_asked(&mut self) {
        self.pump();
        if self.actions.last() == Some(&Action::Open) {
            self.actions.clear();
            self.hub = Session::new(self.now);
            self.device.connected(self.now, "SharedAccessSignature sr=hub%2Fdevices%2Fv1&sig=s&se=1".into());
            self.pump();
        }
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(bytes) = self.device.poll_transmit() {
                self.hub.handle_bytes(self.now, &bytes);
                moved = true;
            }
            while let Some(event) = self.hub.poll_event() {
                moved = true;
                match event {
                    SessionEvent::Authenticate { .. } => self.hub.authenticated(Ok(Accepted::default())),
                    SessionEvent::TwinGet { rid } => {
                        let twin = json!({ "desired": self.desired, "reported": {} });
                        self.hub.reply_twin(&rid, 200, None, twin.to_string().into_bytes());
                    }
                    SessionEvent::ReportedPatch { rid, body } => {
                        self.reports.push(serde_json::from_slice(&body).unwrap());
                        self.hub.reply_twin(&rid, 204, Some(self.reports.len() as u64 + 1), Vec::new());
                    }
                    SessionEvent::Telemetry { properties, body, ack } => {
                        self.telemetry.push((properties, serde_json::from_slice(&body).unwrap()));
                        if let Some(id) = ack {
                            self.hub.ack(id);
                        }
                    }
                    SessionEvent::MethodResponse { status, body, .. } => {
                        self.method_answers.push((status, serde_json::from_slice(&body).unwrap()))
                    }
                    _ => {}
                }
            }
            while let Some(bytes) = self.hub.poll_transmit() {
                self.device.handle_bytes(self.now, &bytes);
                moved = true;
            }
            while let Some(a) = self.device.poll_action() {
                self.actions.push(a);
            }
            while let Some(l) = self.device.poll_log() {
                self.log.push(l);
            }
            if !moved {
                return;
            }
        }
    }

    fn desired_patch(&mut self, patch: Value) {
        let version = patch["$version"].as_u64().unwrap();
        self.hub.push_desired(version, patch.to_string().into_bytes()).unwrap();
        self.pump();
    }

    /// Moves the clock to `t` and fires the device's timer if it is due by then.
    fn advance_to(&mut self, t: UnixMillis) {
        while let Some(due) = self.device.poll_timeout().filter(|d| *d <= t) {
            self.now = self.now.max(due);
            self.device.handle_timeout(self.now);
            self.pump();
        }
        self.now = t;
    }

    fn advance(&mut self, ms: u64) {
        self.advance_to(UnixMillis(self.now.0 + ms));
    }
}

#[test]
fn on_connect_it_applies_desired_reports_and_sends_telemetry() {
    let rig = Rig::new(json!({ "telemetryInterval": 15, "temperatureThreshold": 28, "$version": 4 }));
    assert_eq!(rig.device.status(), Status::Online);
    assert_eq!(rig.device.config().telemetry_interval, 15.0);
    assert_eq!(rig.device.config().temperature_threshold, 28.0);
    assert_eq!(rig.reports[0], json!({ "telemetryInterval": 15, "temperatureThreshold": 28 }));
    // The first message goes out at once, with connectivity and the reading reported.
    let (props, body) = &rig.telemetry[0];
    assert!(props.contains(&("$.ct".into(), Some("application/json".into()))));
    let t = body["temperature"].as_f64().unwrap();
    assert!((20.0..=30.0).contains(&t));
    assert_eq!(props.iter().any(|(k, _)| k == "alert"), t > 28.0, "alert exactly above the threshold");
    assert_eq!(rig.reports[1]["connectivity"]["type"], "wifi");
    assert_eq!(rig.reports[1]["lastTemperature"], body["temperature"]);
    // The SAS token never reaches the traffic log.
    assert!(rig.log.iter().all(|l| !l.payload.contains("SharedAccessSignature")));
    assert!(rig.log.iter().any(|l| l.outgoing && l.topic.starts_with("$iothub/twin/GET/")));
}

#[test]
fn telemetry_follows_the_interval_and_alerts_follow_the_threshold() {
    let mut rig = Rig::new(json!({ "telemetryInterval": 10, "$version": 2 }));
    rig.advance(35_000);
    assert_eq!(rig.telemetry.len(), 4, "at 0, 10, 20 and 30 s");
    rig.desired_patch(json!({ "telemetryInterval": 5, "temperatureThreshold": 0, "$version": 3 }));
    assert_eq!(rig.reports.last().unwrap(), &json!({ "telemetryInterval": 5, "temperatureThreshold": 0 }));
    let before = rig.telemetry.len();
    rig.advance(20_000);
    assert_eq!(rig.telemetry.len() - before, 4, "every 5 s now");
    assert!(rig.telemetry[before..]
        .iter()
        .all(|(p, _)| p.contains(&("alert".into(), Some("high_temperature".into())))));
}

#[test]
fn a_firmware_update_downloads_then_completes() {
    let mut rig = Rig::new(json!({ "$version": 1 }));
    rig.desired_patch(json!({ "firmwareVersion": "2.1.0", "$version": 2 }));
    assert_eq!(rig.reports.last().unwrap(), &json!({ "firmwareUpdateStatus": "downloading" }));
    assert_eq!(rig.device.firmware_update(), Some("2.1.0"));
    rig.advance(FIRMWARE_UPDATE_MS - 1);
    assert_eq!(rig.device.config().firmware_version, "1.0.0");
    rig.advance(1);
    let done = rig.reports.last().unwrap();
    assert_eq!(done["firmwareVersion"], "2.1.0");
    assert_eq!(done["firmwareUpdateStatus"], "completed");
    assert!(done["lastFirmwareUpdate"].as_str().unwrap().ends_with('Z'));
    assert_eq!(rig.device.config().firmware_version, "2.1.0");
    // The same version again: reported as running, no second download.
    rig.desired_patch(json!({ "firmwareVersion": "2.1.0", "$version": 3 }));
    assert_eq!(rig.reports.last().unwrap(), &json!({ "firmwareVersion": "2.1.0" }));
    assert_eq!(rig.device.firmware_update(), None);
}

#[test]
fn refused_and_invalid_changes_are_acknowledged_as_errors() {
    let mut rig = Rig::new(json!({ "$version": 1 }));
    rig.device.set_faults(Faults { reject: ["firmwareVersion".to_owned()].into(), clock_skew_ms: 0 });
    rig.desired_patch(
        json!({ "firmwareVersion": "9.9.9", "telemetryInterval": 0, "temperatureThreshold": 30, "$version": 5 }),
    );
    let report = rig.reports.last().unwrap();
    assert_eq!(
        report["firmwareVersion"],
        json!({ "value": "1.0.0", "ac": 500, "av": 5, "ad": "refused by the device (fault injection)" })
    );
    assert_eq!(report["telemetryInterval"]["ac"], 400);
    assert_eq!(report["telemetryInterval"]["value"], 60.0);
    assert_eq!(report["temperatureThreshold"], 30);
    assert_eq!(rig.device.config().telemetry_interval, 60.0, "an invalid interval is not applied");
    assert_eq!(rig.device.firmware_update(), None);
}

#[test]
fn methods_reboot_and_reconnect() {
    let mut rig = Rig::new(json!({ "telemetryInterval": 30, "$version": 1 }));
    rig.hub.call_method("getConfig", "m1", b"{}".to_vec()).unwrap();
    rig.pump();
    assert_eq!(
        rig.method_answers[0],
        (200, json!({ "telemetryInterval": 30.0, "temperatureThreshold": 25.0, "firmwareVersion": "1.0.0" }))
    );
    rig.hub.call_method("selfDestruct", "m2", b"{}".to_vec()).unwrap();
    rig.pump();
    assert_eq!(rig.method_answers[1].0, 404);

    rig.hub.call_method("reboot", "m3", b"{}".to_vec()).unwrap();
    rig.pump();
    assert_eq!(rig.method_answers[2], (200, json!({ "rebooting": true })));
    assert_eq!(rig.actions, vec![Action::Close], "answered, then the socket goes");
    assert!(!rig.hub.is_connected(), "DISCONNECT reached the hub");
    assert_eq!(rig.device.status(), Status::Waiting);
    rig.actions.clear();
    rig.advance(RECONNECT_MS);
    assert_eq!(rig.actions, vec![Action::Open]);
    rig.open_socket_if_asked();
    assert_eq!(rig.device.status(), Status::Online, "back, with the twin read again");
}

#[test]
fn offline_changes_are_applied_after_reconnect_and_a_dropped_link_retries() {
    let mut rig = Rig::new(json!({ "telemetryInterval": 30, "$version": 1 }));
    rig.device.go_offline(rig.now);
    rig.pump();
    assert_eq!(rig.actions, vec![Action::Close]);
    assert_eq!(rig.device.status(), Status::Offline);
    rig.actions.clear();
    rig.advance(120_000);
    assert!(rig.actions.is_empty(), "offline stays offline");
    // Changed while offline; applied from the twin GET on reconnect.
    rig.desired = json!({ "telemetryInterval": 12, "$version": 2 });
    rig.device.go_online();
    rig.open_socket_if_asked();
    assert_eq!(rig.device.config().telemetry_interval, 12.0);

    rig.device.drop_link(rig.now);
    rig.pump();
    assert_eq!(rig.actions, vec![Action::Close]);
    assert!(rig.hub.is_connected(), "no DISCONNECT: the hub only sees the socket vanish");
    rig.actions.clear();
    rig.advance(RECONNECT_MS);
    assert_eq!(rig.actions, vec![Action::Open]);
    // The socket fails to open: the device backs off and tries again, later.
    rig.actions.clear();
    rig.device.connection_lost(rig.now);
    rig.pump();
    assert_eq!(rig.device.status(), Status::Waiting);
    rig.advance(RECONNECT_MS);
    assert!(rig.actions.is_empty(), "the second wait is longer");
    rig.advance(RECONNECT_MS);
    assert_eq!(rig.actions, vec![Action::Open]);
}

#[test]
fn clock_skew_shifts_reported_timestamps() {
    let mut rig = Rig::new(json!({ "$version": 1 }));
    rig.device.set_faults(Faults { reject: BTreeSet::new(), clock_skew_ms: -3_600_000 });
    rig.advance(60_000);
    let (_, body) = rig.telemetry.last().unwrap();
    let expected = UnixMillis(rig.now.0 - 3_600_000).to_iso();
    assert_eq!(body["timestamp"], expected.as_str());
}
