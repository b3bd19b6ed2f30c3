//! Upstream mode: twinhub in front of an existing IoT Hub (Azure's, or another twinhub).
//!
//! Operators sign in with twinhub's own policies; a request is checked against them first, and
//! only then forwarded with a fresh SAS token signed by the upstream's service key, which never
//! leaves the Worker. Only IoT Hub's REST paths are forwarded (`Route::upstream`): twinhub is not
//! an open proxy. The rules live here; `functions/src/upstream.rs` does the I/O.

use crate::auth::{sign, ConnectionString, Credential};
use crate::{ErrorCode, HubError};
use std::fmt;

/// How long a forwarded request may take before the client gets 503, seconds.
pub const TIMEOUT_SECS: u64 = 30;
/// A direct method waits for the device (up to 300 s response plus 300 s connect timeout).
pub const METHOD_TIMEOUT_SECS: u64 = 620;
/// Lifetime of the tokens signed for the upstream, seconds.
const TOKEN_TTL_SECS: u64 = 300;

/// Request headers passed on as they came (the `Authorization` is replaced).
pub const REQUEST_HEADERS: &[&str] =
    &["content-type", "accept", "if-match", "x-ms-continuation", "x-ms-max-item-count"];
/// Response headers the clients depend on, passed back unchanged; no other header is.
pub const RESPONSE_HEADERS: &[&str] =
    &["content-type", "etag", "x-ms-continuation", "x-ms-item-type", "iothub-errorcode"];

/// Whether a path may be forwarded as the client encoded it. The path goes upstream as sent,
/// so a segment that decodes to a slash, a backslash or a dot segment could name another path
/// there than the one [`crate::route::Route::parse`] judged here: such a path is not forwarded.
pub fn forwards_safely(segments: &[&str]) -> bool {
    !segments.iter().any(|s| s.contains(['/', '\\']) || *s == "." || *s == "..")
}

/// twinhub's own features, which an upstream IoT Hub does not have; in upstream mode they
/// answer [`ErrorCode::FeatureUnavailable`] and the dashboard shows them as unavailable.
pub const OWN_FEATURES: &[(&str, &str)] = &[
    ("history", "twin history is kept by twinhub's own hub, not by IoT Hub"),
    ("telemetry", "the telemetry store is twinhub's own; IoT Hub routes telemetry to your endpoints"),
    ("live", "the live view follows twinhub's own device objects"),
    ("messages", "IoT Hub sends cloud-to-device messages over AMQP, which this proxy does not speak"),
    ("rollouts", "staged rollouts (pause, resume, rollback) are twinhub's own jobs"),
    ("overview", "the overview reads twinhub's own index and event stream; the fleet page queries IoT Hub"),
];

/// The error for one of [`OWN_FEATURES`] in upstream mode.
pub fn unavailable(feature: &str) -> HubError {
    let why = OWN_FEATURES.iter().find(|(f, _)| *f == feature).map_or("it is twinhub's own", |(_, why)| why);
    HubError::new(ErrorCode::FeatureUnavailable, format!("not available in upstream mode: {why}"))
}

/// The hub twinhub fronts, from its service connection string.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamHub {
    /// Its host name (and port), as its tokens name it.
    pub host: String,
    /// `https` (Azure), or `http` for a local twinhub standing in for it.
    pub scheme: String,
    policy: String,
    key: String,
}

// By hand, so the key can never reach a log through `{:?}`.
impl fmt::Debug for UpstreamHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamHub").field("host", &self.host).field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl UpstreamHub {
    /// Reads a service connection string (`HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`).
    /// `scheme` is `https` unless given. Errors never repeat the text (it holds the key).
    pub fn parse(connection_string: &str, scheme: Option<&str>) -> Result<Self, HubError> {
        let bad = |why: &str| {
            HubError::new(ErrorCode::ServerError, format!("UPSTREAM_CONNECTION_STRING is not usable: {why}"))
        };
        let cs = ConnectionString::parse(connection_string.trim()).map_err(|_| bad("not a connection string"))?;
        let Credential::Policy { name, key } = cs.credential else {
            return Err(bad("it is a device's; the upstream needs a service policy (e.g. iothubowner)"));
        };
        let scheme = match scheme.map(str::trim) {
            None | Some("") | Some("https") => "https",
            Some("http") => "http",
            Some(_) => return Err(bad("UPSTREAM_SCHEME must be https or http")),
        };
        Ok(Self { host: cs.host_name, scheme: scheme.to_owned(), policy: name, key })
    }

    /// The upstream URL for a path and query as the client sent them (still percent-encoded).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}://{}{}", self.scheme, self.host, path_and_query)
    }

    /// The WebSocket URL of the upstream's device endpoint.
    pub fn device_endpoint(&self) -> String {
        let ws = if self.scheme == "https" { "wss" } else { "ws" };
        format!("{ws}://{}/$iothub/websocket", self.host)
    }

    /// A fresh `Authorization` value for the upstream, valid [`TOKEN_TTL_SECS`] from `now_secs`.
    pub fn authorization(&self, now_secs: u64) -> Result<String, HubError> {
        sign(&self.host, &self.key, Some(&self.policy), now_secs + TOKEN_TTL_SECS)
            .map_err(|_| HubError::new(ErrorCode::ServerError, "UPSTREAM_CONNECTION_STRING's key is not base64"))
    }

    /// Whether `text` contains the upstream's key (a last check before anything is sent back).
    pub fn leaks_key(&self, text: &str) -> bool {
        !self.key.is_empty() && text.contains(&self.key)
    }
}

/// A device's CONNECT to twinhub, re-addressed to the upstream: the user name names the
/// upstream host and the password is a token for the upstream's resource, signed with the
/// device's own key (read from the upstream's registry) and expiring when the device's token
/// does. The device's token was checked by twinhub first; it is not passed on.
pub fn readdress_connect(
    connect: &crate::mqtt::Connect,
    upstream_host: &str,
    device_key: &str,
    expiry_secs: u64,
) -> Result<crate::mqtt::Connect, HubError> {
    // `{host}/{device}/?{query}`: rebuilt around the client id the token was checked for, so
    // the upstream cannot be told of another device than the one twinhub verified.
    let username = connect.username.as_deref().unwrap_or_default();
    let query = username.split_once("/?").map_or("", |(_, q)| q);
    if username.split('/').nth(1) != Some(connect.client_id.as_str()) {
        return Err(HubError::new(ErrorCode::IotHubUnauthorizedAccess, "CONNECT user name is not {host}/{device}/..."));
    }
    let rest = format!("{}/?{query}", connect.client_id);
    let resource = format!("{upstream_host}/devices/{}", connect.client_id);
    let token = sign(&resource, device_key, None, expiry_secs).map_err(|_| {
        HubError::new(ErrorCode::ServerError, "the device's key in the upstream registry is not base64")
    })?;
    let mut out = connect.clone();
    out.username = Some(format!("{upstream_host}/{rest}"));
    out.password = Some(token.into_bytes());
    Ok(out)
}

/// Device pipes one isolate holds that have not yet been handed to the upstream (waiting for
/// CONNECT, or for the device's keys from the upstream's registry), as twinhub's own gateway
/// bounds its half-open sockets per shard.
pub const MAX_WAITING_PIPES: usize = 2_000;
/// Device pipes one isolate holds in all, as a gateway shard bounds its sockets.
pub const MAX_PIPES: usize = 30_000;
/// CONNECTs a second whose keys one isolate asks the upstream's registry for (with a second's
/// burst): a flood of well-formed CONNECTs costs the upstream at most this many lookups.
pub const PIPE_CONNECTS_PER_SECOND: f64 = 500.0;

/// Why a device pipe was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeRefusal {
    /// Too many pipes wait for CONNECT: the upgrade is refused (503).
    TooManyWaiting,
    /// The isolate holds as many pipes as it may (503).
    TooMany,
    /// Past the CONNECT rate: CONNACK 3 (server unavailable), the device retries.
    ConnectRate,
}

/// The bounds on device pipes in upstream mode: how many are open, how many still wait for
/// their CONNECT to be checked, and how fast CONNECTs are checked against the upstream's
/// registry. Sans-I/O: the adapter calls [`Self::open`] when a device socket arrives,
/// [`Self::verify`] when its CONNECT is read, [`Self::piped`] once it is handed to the upstream
/// and [`Self::closed`] when it ends, passing the time.
#[derive(Debug, Clone)]
pub struct PipeAdmission {
    open: usize,
    waiting: usize,
    connects: crate::throttle::TokenBucket,
}

impl PipeAdmission {
    pub fn new(now: crate::UnixMillis) -> Self {
        Self {
            open: 0,
            waiting: 0,
            connects: crate::throttle::TokenBucket::new(PIPE_CONNECTS_PER_SECOND, PIPE_CONNECTS_PER_SECOND, now),
        }
    }

    /// A device socket arrives: admitted as a waiting pipe, or refused with nothing held.
    pub fn open(&mut self) -> Result<(), PipeRefusal> {
        if self.waiting >= MAX_WAITING_PIPES {
            return Err(PipeRefusal::TooManyWaiting);
        }
        if self.open >= MAX_PIPES {
            return Err(PipeRefusal::TooMany);
        }
        self.open += 1;
        self.waiting += 1;
        Ok(())
    }

    /// Its CONNECT arrived and passed the token precheck: whether the rate lets it be checked
    /// against the upstream's registry now.
    pub fn verify(&mut self, now: crate::UnixMillis) -> Result<(), PipeRefusal> {
        if self.connects.try_take(now) {
            Ok(())
        } else {
            Err(PipeRefusal::ConnectRate)
        }
    }

    /// The pipe was handed to the upstream: it no longer counts as waiting.
    pub fn piped(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
    }

    /// The pipe ended; `waiting` says whether it was still waiting when it did.
    pub fn closed(&mut self, waiting: bool) {
        self.open = self.open.saturating_sub(1);
        if waiting {
            self.waiting = self.waiting.saturating_sub(1);
        }
    }

    /// Pipes open, and of them waiting.
    pub fn counts(&self) -> (usize, usize) {
        (self.open, self.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_could_mean_another_upstream_is_not_forwarded() {
        assert!(forwards_safely(&["twins", "d1"]));
        for path in
            [vec!["..", "admin"], vec!["twins", "../configurations"], vec!["devices", ".."], vec!["twins", "a\\b"]]
        {
            assert!(!forwards_safely(&path), "{path:?}");
        }
    }

    #[test]
    fn a_device_connect_is_readdressed_to_the_upstream() {
        let connect = crate::mqtt::Connect {
            client_id: "d1".into(),
            clean_session: false,
            keep_alive: 60,
            username: Some("127.0.0.1:8787/d1/?api-version=2021-04-12".into()),
            password: Some(b"SharedAccessSignature sr=127.0.0.1%3A8787%2Fdevices%2Fd1&sig=x&se=99".to_vec()),
            will: None,
        };
        let out = readdress_connect(&connect, "hub.azure-devices.net", "a2V5", 99).unwrap();
        assert_eq!(out.username.as_deref(), Some("hub.azure-devices.net/d1/?api-version=2021-04-12"));
        let token = String::from_utf8(out.password.unwrap()).unwrap();
        assert!(token.contains("sr=hub.azure-devices.net%2Fdevices%2Fd1") && token.contains("se=99"), "{token}");
        let mut nameless = connect.clone();
        nameless.username = None;
        assert!(readdress_connect(&nameless, "h", "a2V5", 99).is_err());
        let mut other = connect.clone();
        other.username = Some("127.0.0.1:8787/d2/?api-version=2021-04-12".into());
        assert!(readdress_connect(&other, "h", "a2V5", 99).is_err(), "a user name for another device");
    }

    #[test]
    fn the_upstream_key_signs_but_never_shows() {
        let cs =
            "HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0LWtleS1ieXRlcw==";
        let up = UpstreamHub::parse(cs, None).unwrap();
        assert_eq!(
            up.url("/twins/d%201?api-version=2021-04-12"),
            "https://hub.azure-devices.net/twins/d%201?api-version=2021-04-12"
        );
        assert_eq!(up.device_endpoint(), "wss://hub.azure-devices.net/$iothub/websocket");
        let token = up.authorization(1_000).unwrap();
        assert!(
            token.starts_with("SharedAccessSignature ")
                && token.contains("skn=iothubowner")
                && token.contains("se=1300")
        );
        assert!(!format!("{up:?}").contains("c2VjcmV0"));
        assert!(up.leaks_key("x c2VjcmV0LWtleS1ieXRlcw== y"));
        let device = "HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0";
        let e = UpstreamHub::parse(device, None).unwrap_err();
        assert!(!e.message.contains("c2VjcmV0") && e.message.contains("service policy"));
        assert!(UpstreamHub::parse(cs, Some("ftp")).is_err());
        assert_eq!(
            UpstreamHub::parse(cs, Some("http")).unwrap().device_endpoint(),
            "ws://hub.azure-devices.net/$iothub/websocket"
        );
    }
    #[test]
    fn pipes_waiting_for_connect_are_bounded_and_freed() {
        let mut a = PipeAdmission::new(crate::UnixMillis(0));
        for _ in 0..MAX_WAITING_PIPES {
            a.open().unwrap();
        }
        assert_eq!(a.open(), Err(PipeRefusal::TooManyWaiting), "one past the bound is refused");
        assert_eq!(a.counts(), (MAX_WAITING_PIPES, MAX_WAITING_PIPES), "a refusal holds nothing");
        // One is piped: it stops counting as waiting, and another may wait.
        a.piped();
        a.open().unwrap();
        assert_eq!(a.open(), Err(PipeRefusal::TooManyWaiting));
        // One that gives up waiting (timeout, bad CONNECT) frees its place.
        a.closed(true);
        a.open().unwrap();
        // The piped one closing frees only its open place.
        a.closed(false);
        assert_eq!(a.counts(), (MAX_WAITING_PIPES, MAX_WAITING_PIPES));
    }

    #[test]
    fn open_pipes_are_bounded() {
        let mut a = PipeAdmission::new(crate::UnixMillis(0));
        for _ in 0..MAX_PIPES {
            a.open().unwrap();
            a.piped();
        }
        assert_eq!(a.open(), Err(PipeRefusal::TooMany));
        a.closed(false);
        a.open().unwrap();
    }

    #[test]
    fn connect_checks_are_rate_bounded() {
        let mut a = PipeAdmission::new(crate::UnixMillis(0));
        let burst = PIPE_CONNECTS_PER_SECOND as usize;
        let allowed = (0..burst + 10).filter(|_| a.verify(crate::UnixMillis(0)).is_ok()).count();
        assert_eq!(allowed, burst, "a second's burst, then refused");
        assert_eq!(a.verify(crate::UnixMillis(0)), Err(PipeRefusal::ConnectRate));
        assert!(a.verify(crate::UnixMillis(10)).is_ok(), "refilled at the rate");
    }
}
