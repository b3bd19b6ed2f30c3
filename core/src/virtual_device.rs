//! The article's device as a sans-I/O state machine, with fault injection: what the virtual
//! device in a browser tab does, independent of sockets and timers.
//!
//! It mirrors the Python `IoTDevice` of the article: on connect it subscribes, GETs the twin and
//! applies `desired`; it applies each desired patch (`telemetryInterval`, `temperatureThreshold`,
//! and `firmwareVersion` through a simulated download), reports what it applied, sends telemetry
//! every `telemetryInterval` seconds with the `alert` property above the threshold, reports its
//! connectivity periodically, and answers `reboot` and `getConfig`. Beyond the article: values it
//! cannot apply, or that the operator told it to refuse, are acknowledged with an IoT Plug and
//! Play error (`{"value", "ac", "av", "ad"}`) instead of being silently ignored.
//!
//! The adapter owns the socket and one timer. After any input (`go_online`, `connected`,
//! `handle_bytes`, `handle_timeout`, `connection_lost`, a fault command) it drains
//! [`VirtualDevice::poll_transmit`] to the socket, [`VirtualDevice::poll_action`] (open or close
//! the socket), [`VirtualDevice::poll_log`] for the traffic view, then re-arms its timer from
//! [`VirtualDevice::poll_timeout`].

use crate::mqtt::{self, Packet, QoS};
use crate::session::client::{ClientEvent, ClientOptions, DeviceClient};
use crate::session::topic::{self, Subscription};
use crate::session::CloseReason;
use crate::UnixMillis;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, VecDeque};

/// How long the simulated firmware download takes (the article sleeps 5 s).
pub const FIRMWARE_UPDATE_MS: u64 = 5_000;
/// How often connectivity (and the last reading) is reported.
pub const CONNECTIVITY_REPORT_MS: u64 = 60_000;
/// How long a reboot keeps the device away, and the first reconnect delay after a lost link.
pub const RECONNECT_MS: u64 = 3_000;
/// The longest wait between reconnect attempts.
pub const MAX_RECONNECT_MS: u64 = 60_000;
/// Shortest telemetry interval the device accepts, seconds.
pub const MIN_TELEMETRY_INTERVAL_SECS: f64 = 1.0;

/// The device's applied configuration (the article's `current_config`, plus firmware).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Seconds between telemetry messages.
    pub telemetry_interval: f64,
    /// Temperature above which telemetry carries `alert=high_temperature`.
    pub temperature_threshold: f64,
    /// The running firmware.
    pub firmware_version: String,
}

impl Default for Config {
    fn default() -> Self {
        // The article's defaults.
        Self { telemetry_interval: 60.0, temperature_threshold: 25.0, firmware_version: "1.0.0".into() }
    }
}

/// Faults an operator injects on purpose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Desired properties the device refuses (acknowledged with `ac` 500).
    pub reject: BTreeSet<String>,
    /// Added to the device's clock in the timestamps it reports.
    pub clock_skew_ms: i64,
}

/// Where the device stands, for its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Told to stay offline.
    Offline,
    /// Waiting to reconnect (after a reboot or a lost link).
    Waiting,
    /// Socket open or CONNECT sent, not yet synchronized.
    Connecting,
    /// Connected, subscribed and synchronized with its twin.
    Online,
    /// The hub refused the credentials (CONNACK 5); no retry until told to go online again.
    Refused,
}

/// What the adapter must do with the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open a WebSocket to `/$iothub/websocket`, then call [`VirtualDevice::connected`].
    Open,
    /// Send what `poll_transmit` holds, then close the socket.
    Close,
}

/// One line of the traffic log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LogEntry {
    /// When (device clock, without skew).
    pub at: UnixMillis,
    /// `true` for device to hub.
    pub outgoing: bool,
    /// The MQTT topic, or the packet's name for packets without one.
    pub topic: String,
    /// The payload as text (never the CONNECT password).
    pub payload: String,
}

/// The virtual device.
pub struct VirtualDevice {
    client: DeviceClient,
    config: Config,
    faults: Faults,
    status: Status,
    /// The operator wants it online.
    wanted_online: bool,
    twin_rid: Option<String>,
    subscribe_id: Option<mqtt::PacketId>,
    next_telemetry: Option<UnixMillis>,
    next_connectivity: UnixMillis,
    firmware: Option<(String, UnixMillis)>,
    reconnect_at: Option<UnixMillis>,
    reconnect_delay: u64,
    rng: u64,
    last_reading: Option<f64>,
    transmit: VecDeque<Vec<u8>>,
    actions: VecDeque<Action>,
    log: VecDeque<LogEntry>,
}

impl VirtualDevice {
    /// A device that is offline until [`VirtualDevice::go_online`]. `seed` makes its readings
    /// reproducible.
    pub fn new(options: ClientOptions, seed: u64) -> Self {
        Self {
            client: DeviceClient::new(options),
            config: Config::default(),
            faults: Faults::default(),
            status: Status::Offline,
            wanted_online: false,
            twin_rid: None,
            subscribe_id: None,
            next_telemetry: None,
            next_connectivity: UnixMillis(0),
            firmware: None,
            reconnect_at: None,
            reconnect_delay: RECONNECT_MS,
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
            last_reading: None,
            transmit: VecDeque::new(),
            actions: VecDeque::new(),
            log: VecDeque::new(),
        }
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        self.client.device_id()
    }

    /// The applied configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the device stands.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The firmware being downloaded, if any.
    pub fn firmware_update(&self) -> Option<&str> {
        self.firmware.as_ref().map(|(v, _)| v.as_str())
    }

    /// The injected faults.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Replaces the injected faults.
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// The operator wants the device online: it asks for a socket.
    pub fn go_online(&mut self) {
        self.wanted_online = true;
        if matches!(self.status, Status::Offline | Status::Waiting | Status::Refused) {
            self.reconnect_at = None;
            self.reconnect_delay = RECONNECT_MS;
            self.status = Status::Connecting;
            self.actions.push_back(Action::Open);
        }
    }

    /// The operator takes the device offline: a clean DISCONNECT, and no reconnect.
    pub fn go_offline(&mut self, now: UnixMillis) {
        self.wanted_online = false;
        self.reconnect_at = None;
        if matches!(self.status, Status::Connecting | Status::Online) {
            self.client.disconnect(now);
            self.pump(now);
            self.actions.push_back(Action::Close);
        }
        self.status = Status::Offline;
    }

    /// Fault: the link drops without a DISCONNECT (the hub sees the socket vanish); the device
    /// reconnects as an SDK would.
    pub fn drop_link(&mut self, now: UnixMillis) {
        if matches!(self.status, Status::Connecting | Status::Online) {
            self.actions.push_back(Action::Close);
            self.client.connection_lost("link dropped");
            self.pump(now);
        }
    }

    /// The socket the device asked for is open: send CONNECT with `token` (a fresh device SAS).
    pub fn connected(&mut self, now: UnixMillis, token: String) {
        self.twin_rid = None;
        self.subscribe_id = None;
        self.client.connect(now, Some(token));
        self.pump(now);
    }

    /// The socket closed under the device (or could not be opened).
    pub fn connection_lost(&mut self, now: UnixMillis) {
        self.client.connection_lost("socket closed");
        self.pump(now);
        // A socket that never opened produced no Closed event: retry all the same.
        if self.status == Status::Connecting {
            self.retry_later(now);
        }
    }

    /// Bytes from the hub.
    pub fn handle_bytes(&mut self, now: UnixMillis, bytes: &[u8]) {
        self.client.handle_bytes(now, bytes);
        self.pump(now);
    }

    /// The timer from [`VirtualDevice::poll_timeout`] fired.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        self.client.handle_timeout(now);
        if self.reconnect_at.is_some_and(|t| now >= t) {
            self.reconnect_at = None;
            if self.wanted_online {
                self.status = Status::Connecting;
                self.actions.push_back(Action::Open);
            }
        }
        if self.status == Status::Online {
            if let Some((version, _)) = self.firmware.take_if(|(_, done)| now >= *done) {
                self.config.firmware_version.clone_from(&version);
                let stamp = self.stamp(now);
                self.report(
                    now,
                    json!({ "firmwareVersion": version, "firmwareUpdateStatus": "completed", "lastFirmwareUpdate": stamp }),
                );
            }
            if self.next_telemetry.is_some_and(|t| now >= t) {
                self.send_telemetry(now);
            }
        }
        self.pump(now);
    }

    /// When [`VirtualDevice::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        let online = self.status == Status::Online;
        [
            self.client.poll_timeout(),
            self.reconnect_at,
            self.next_telemetry.filter(|_| online),
            self.firmware.as_ref().map(|(_, t)| *t).filter(|_| online),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Next bytes for the socket.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// Next socket action.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Next traffic log line.
    pub fn poll_log(&mut self) -> Option<LogEntry> {
        self.log.pop_front()
    }

    /// Moves the client's output into the device's queues (logging it) and handles its events.
    fn pump(&mut self, now: UnixMillis) {
        loop {
            while let Some(bytes) = self.client.poll_transmit() {
                self.log_outgoing(now, &bytes);
                self.transmit.push_back(bytes);
            }
            let Some(event) = self.client.poll_event() else { return };
            self.handle_event(now, event);
        }
    }

    fn handle_event(&mut self, now: UnixMillis, event: ClientEvent) {
        match event {
            ClientEvent::Connected { session_present } => {
                self.log_in(now, "CONNACK", format!("accepted, session present: {session_present}"));
                // What the Python SDK holds once handlers are set: twin responses, desired
                // patches, methods and, for a device (a module gets none), cloud-to-device
                // messages.
                let mut subs = vec![Subscription::TwinResponses, Subscription::DesiredPatches, Subscription::Methods];
                if !crate::identity::is_module_key(self.device_id()) {
                    subs.push(Subscription::CloudToDevice);
                }
                self.subscribe_id = Some(self.client.subscribe(now, &subs));
            }
            ClientEvent::Subscribed(id) => {
                self.log_in(now, "SUBACK", String::new());
                if Some(id) == self.subscribe_id {
                    self.twin_rid = Some(self.client.get_twin(now));
                }
            }
            ClientEvent::TwinResponse { rid, status, version, body } => {
                let text = String::from_utf8_lossy(&body).into_owned();
                self.log_in(now, &topic::twin_response(status, &rid, version), text);
                if self.twin_rid.as_deref() == Some(rid.as_str()) {
                    self.twin_rid = None;
                    if status == 200 {
                        // The article: get the twin, apply its desired section, then run.
                        let twin: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        self.status = Status::Online;
                        self.reconnect_delay = RECONNECT_MS;
                        self.apply_desired(now, &twin["desired"]);
                        // Then the telemetry loop: at once, or when the last interval ends.
                        if self.next_telemetry.is_none_or(|t| now >= t) {
                            self.send_telemetry(now);
                        }
                    }
                }
            }
            ClientEvent::DesiredPatch { version, body } => {
                let text = String::from_utf8_lossy(&body).into_owned();
                self.log_in(now, &topic::desired_patch(version.unwrap_or(0)), text);
                let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                self.apply_desired(now, &patch);
            }
            ClientEvent::MethodRequest { name, rid, body } => {
                let text = String::from_utf8_lossy(&body).into_owned();
                self.log_in(now, &topic::method_request(&name, &rid), text);
                self.answer_method(now, &name, &rid);
            }
            ClientEvent::CloudToDevice { properties, body, .. } => {
                let topic = topic::cloud_to_device(self.device_id(), &properties);
                self.log_in(now, &topic, String::from_utf8_lossy(&body).into_owned());
            }
            ClientEvent::TelemetryAcked(id) => self.log_in(now, "PUBACK", id.to_string()),
            ClientEvent::Closed(reason) => {
                self.log_in(now, "closed", format!("{reason:?}"));
                self.twin_rid = None;
                if reason == CloseReason::Refused(5) {
                    self.status = Status::Refused;
                    self.wanted_online = false;
                } else {
                    self.retry_later(now);
                }
            }
        }
    }

    /// Schedules a reconnect with exponential backoff, if the operator wants the device online.
    fn retry_later(&mut self, now: UnixMillis) {
        if self.wanted_online && self.status != Status::Waiting {
            self.status = Status::Waiting;
            self.reconnect_at = Some(UnixMillis(now.0 + self.reconnect_delay));
            self.reconnect_delay = (self.reconnect_delay * 2).min(MAX_RECONNECT_MS);
        }
    }

    /// Applies a desired section or patch and reports what was applied (or refused).
    fn apply_desired(&mut self, now: UnixMillis, desired: &Value) {
        let version = desired["$version"].as_u64();
        let mut reported = Map::new();
        for (name, value) in desired.as_object().into_iter().flatten() {
            if name.starts_with('$') {
                continue;
            }
            let known = matches!(name.as_str(), "telemetryInterval" | "temperatureThreshold" | "firmwareVersion");
            if !known {
                continue;
            }
            if self.faults.reject.contains(name) {
                reported
                    .insert(name.clone(), self.refusal(name, 500, version, "refused by the device (fault injection)"));
                continue;
            }
            match (name.as_str(), value) {
                ("telemetryInterval", Value::Number(n))
                    if n.as_f64().is_some_and(|s| s >= MIN_TELEMETRY_INTERVAL_SECS) =>
                {
                    let secs = n.as_f64().unwrap_or(self.config.telemetry_interval);
                    self.config.telemetry_interval = secs;
                    // The next message follows the new interval.
                    self.next_telemetry = self.next_telemetry.map(|_| UnixMillis(now.0 + (secs * 1000.0) as u64));
                    reported.insert(name.clone(), value.clone());
                }
                ("temperatureThreshold", Value::Number(n)) if n.as_f64().is_some() => {
                    self.config.temperature_threshold = n.as_f64().unwrap_or(self.config.temperature_threshold);
                    reported.insert(name.clone(), value.clone());
                }
                ("firmwareVersion", Value::String(v)) if !v.is_empty() => {
                    if *v == self.config.firmware_version && self.firmware.is_none() {
                        // Already running it: say so, no download.
                        reported.insert(name.clone(), value.clone());
                    } else if self.firmware.as_ref().is_none_or(|(target, _)| target != v) {
                        self.firmware = Some((v.clone(), UnixMillis(now.0 + FIRMWARE_UPDATE_MS)));
                        reported.insert("firmwareUpdateStatus".into(), json!("downloading"));
                    }
                }
                ("telemetryInterval", _) => {
                    let why = "telemetryInterval must be a number of seconds, at least 1";
                    reported.insert(name.clone(), self.refusal(name, 400, version, why));
                }
                (_, _) => {
                    let why = format!("{name} has the wrong type");
                    reported.insert(name.clone(), self.refusal(name, 400, version, &why));
                }
            }
        }
        if !reported.is_empty() {
            self.report(now, Value::Object(reported));
        }
    }

    /// An IoT Plug and Play writable-property acknowledgement for a refused change: the value
    /// the device keeps, the status, the desired version it answers, and why.
    fn refusal(&self, name: &str, code: u16, version: Option<u64>, why: &str) -> Value {
        let current = match name {
            "telemetryInterval" => json!(self.config.telemetry_interval),
            "temperatureThreshold" => json!(self.config.temperature_threshold),
            _ => json!(self.config.firmware_version),
        };
        json!({ "value": current, "ac": code, "av": version, "ad": why })
    }

    fn answer_method(&mut self, now: UnixMillis, name: &str, rid: &str) {
        match name {
            "getConfig" => {
                let body = serde_json::to_vec(&self.config).unwrap_or_default();
                self.client.respond_method(now, rid, 200, body);
            }
            "reboot" => {
                self.client.respond_method(now, rid, 200, br#"{"rebooting":true}"#.to_vec());
                // Answer first, then go away for a while and come back, as a reboot does.
                self.client.disconnect(now);
                self.pump(now);
                self.actions.push_back(Action::Close);
                self.status = Status::Waiting;
                self.reconnect_at = Some(UnixMillis(now.0 + RECONNECT_MS));
                self.next_telemetry = None;
                self.firmware = None;
            }
            _ => {
                let body = json!({ "message": format!("method '{name}' is not implemented") });
                self.client.respond_method(now, rid, 404, body.to_string().into_bytes());
            }
        }
    }

    fn send_telemetry(&mut self, now: UnixMillis) {
        let temperature = round2(20.0 + self.random() * 10.0);
        let humidity = round2(40.0 + self.random() * 20.0);
        let stamp = self.stamp(now);
        let body = json!({ "temperature": temperature, "humidity": humidity, "timestamp": stamp });
        let mut properties = vec![
            ("$.ct".to_owned(), Some("application/json".to_owned())),
            ("$.ce".to_owned(), Some("utf-8".to_owned())),
        ];
        if temperature > self.config.temperature_threshold {
            properties.push(("alert".to_owned(), Some("high_temperature".to_owned())));
        }
        self.client.send_telemetry(now, &properties, body.to_string().into_bytes(), QoS::AtLeastOnce);
        self.last_reading = Some(temperature);
        self.next_telemetry = Some(UnixMillis(now.0 + (self.config.telemetry_interval * 1000.0) as u64));
        // The article reports connectivity with every message; once a minute is enough to
        // show it alive, and also feeds the article's queries (lastTemperature, lastTelemetry).
        if now >= self.next_connectivity {
            self.next_connectivity = UnixMillis(now.0 + CONNECTIVITY_REPORT_MS);
            self.report(
                now,
                json!({
                    "connectivity": { "type": "wifi", "lastConnected": stamp },
                    "lastTemperature": temperature,
                    "lastTelemetry": stamp,
                }),
            );
        }
    }

    fn report(&mut self, now: UnixMillis, patch: Value) {
        self.client.report(now, patch.to_string().into_bytes());
        self.pump(now);
    }

    /// The device's idea of the time: its clock plus the injected skew.
    fn stamp(&self, now: UnixMillis) -> String {
        UnixMillis(now.0.saturating_add_signed(self.faults.clock_skew_ms)).to_iso()
    }

    /// xorshift64*: reproducible readings from the seed.
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let bits = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        bits as f64 / (1u64 << 53) as f64
    }

    fn log_in(&mut self, now: UnixMillis, topic: &str, payload: String) {
        self.log.push_back(LogEntry { at: now, outgoing: false, topic: topic.to_owned(), payload });
    }

    fn log_outgoing(&mut self, now: UnixMillis, bytes: &[u8]) {
        let (topic, payload) = match mqtt::decode(bytes, usize::MAX) {
            Ok(Some((Packet::Publish(p), _))) => (p.topic, String::from_utf8_lossy(&p.payload).into_owned()),
            // The password (the SAS token) is never logged.
            Ok(Some((Packet::Connect(c), _))) => ("CONNECT".to_owned(), format!("client id {}", c.client_id)),
            Ok(Some((Packet::Subscribe(s), _))) => {
                ("SUBSCRIBE".to_owned(), s.filters.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>().join(", "))
            }
            Ok(Some((Packet::Disconnect, _))) => ("DISCONNECT".to_owned(), String::new()),
            _ => return,
        };
        self.log.push_back(LogEntry { at: now, outgoing: true, topic, payload });
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests;
