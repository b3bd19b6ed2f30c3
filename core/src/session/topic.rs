//! IoT Hub's MQTT topics (spec §5.3): what a device may publish and subscribe to, and the
//! topics the hub publishes back. Parsing is per identity: another device's (or module's)
//! topics are not "unknown", they are refused. An identity is named by its key
//! ([`crate::identity`]): a module's topics live under `devices/{id}/modules/{mid}/`.

use crate::identity::{is_module_key, resource_path};
use crate::mqtt::PacketId;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters left unescaped in property bags, like Python's `quote(s, safe="")`.
const BAG_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A topic a device published to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceTopic {
    /// `devices/{id}/messages/events/{property bag}`: telemetry.
    Telemetry {
        /// Decoded `key=value` pairs, in order (a key without `=` has value `None`).
        properties: Vec<(String, Option<String>)>,
    },
    /// `$iothub/twin/GET/?$rid={rid}`.
    TwinGet {
        /// Request id, echoed verbatim.
        rid: String,
    },
    /// `$iothub/twin/PATCH/properties/reported/?$rid={rid}`.
    ReportedPatch {
        /// Request id, echoed verbatim.
        rid: String,
    },
    /// `$iothub/methods/res/{status}/?$rid={rid}`.
    MethodResponse {
        /// The device's status code.
        status: i32,
        /// The method call's request id.
        rid: String,
    },
    /// `$twinhub/messages/devicebound/rejected/{packetId}`: twinhub's own, not IoT Hub's. The
    /// device rejects the cloud-to-device message it got as PUBLISH `packetId` (instead of
    /// completing it with PUBACK): it leaves the queue and its sender's feedback says
    /// `Rejected`. IoT Hub's MQTT has no reject; an AMQP device's rejection (which it has)
    /// travels this way through the MQTT session that serves it (`amqp::device`).
    CloudToDeviceRejected {
        /// The PUBLISH's packet id.
        packet_id: PacketId,
    },
}

/// A subscription a device may hold (at most five at once, spec §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Subscription {
    /// `devices/{id}/messages/devicebound/#`: cloud-to-device messages.
    CloudToDevice,
    /// `$iothub/methods/POST/#`: direct methods.
    Methods,
    /// `$iothub/twin/PATCH/properties/desired/#`: desired property patches.
    DesiredPatches,
    /// `$iothub/twin/res/#`: twin responses.
    TwinResponses,
    /// `devices/{id}/modules/{mid}/inputs/#`: a module's input messages (IoT Edge routes
    /// them; twinhub routes none yet, so the subscription is kept and nothing arrives).
    ModuleInputs,
}

/// Why a topic or filter was refused; the session disconnects the device (as IoT Hub does).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// A topic under another device's namespace.
    #[error("topic belongs to another device")]
    OtherDevice,
    /// Not a topic IoT Hub knows.
    #[error("unsupported topic '{0}'")]
    Unsupported(String),
    /// A `$rid` (or status) is missing or malformed.
    #[error("topic '{0}' lacks a valid $rid or status")]
    MissingRid(String),
}

impl DeviceTopic {
    /// Parses a PUBLISH topic from `device_id`.
    pub fn parse(topic: &str, device_id: &str) -> Result<Self, TopicError> {
        if let Some(bag) = device_bag(topic, device_id, "messages/events")? {
            return Ok(Self::Telemetry { properties: decode_bag(bag) });
        }
        if let Some(query) = topic.strip_prefix("$iothub/twin/GET/") {
            return Ok(Self::TwinGet { rid: rid(query, topic)? });
        }
        if let Some(query) = topic.strip_prefix("$iothub/twin/PATCH/properties/reported/") {
            return Ok(Self::ReportedPatch { rid: rid(query, topic)? });
        }
        if let Some(id) = topic.strip_prefix(REJECTED_PREFIX) {
            let packet_id = id.parse::<u16>().ok().and_then(PacketId::new);
            return packet_id
                .map(|packet_id| Self::CloudToDeviceRejected { packet_id })
                .ok_or_else(|| TopicError::Unsupported(topic.to_owned()));
        }
        if let Some(rest) = topic.strip_prefix("$iothub/methods/res/") {
            let (status, query) = rest.split_once('/').ok_or_else(|| TopicError::MissingRid(topic.to_owned()))?;
            let status = status.parse().map_err(|_| TopicError::MissingRid(topic.to_owned()))?;
            return Ok(Self::MethodResponse { status, rid: rid(query, topic)? });
        }
        Err(TopicError::Unsupported(topic.to_owned()))
    }
}

impl Subscription {
    /// Parses a SUBSCRIBE filter from `device_id`.
    pub fn parse(filter: &str, device_id: &str) -> Result<Self, TopicError> {
        match filter {
            "$iothub/twin/res/#" => Ok(Self::TwinResponses),
            "$iothub/twin/PATCH/properties/desired/#" => Ok(Self::DesiredPatches),
            "$iothub/methods/POST/#" => Ok(Self::Methods),
            _ => {
                let is_module = is_module_key(device_id);
                match own_tail(filter, device_id)? {
                    Some("messages/devicebound/#") if !is_module => Ok(Self::CloudToDevice),
                    Some("inputs/#") if is_module => Ok(Self::ModuleInputs),
                    _ => Err(TopicError::Unsupported(filter.to_owned())),
                }
            }
        }
    }
}

/// A topic the hub published to a device: what a device (client role) receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubTopic {
    /// `$iothub/twin/res/{status}/?$rid={rid}[&$version={version}]`.
    TwinResponse {
        /// The hub's status for the request.
        status: u16,
        /// The request's id, echoed.
        rid: String,
        /// The reported `$version` after a reported patch.
        version: Option<u64>,
    },
    /// `$iothub/twin/PATCH/properties/desired/?$version={version}`.
    DesiredPatch {
        /// The desired `$version` the patch brings the device to.
        version: Option<u64>,
    },
    /// `$iothub/methods/POST/{name}/?$rid={rid}`.
    MethodRequest {
        /// The method's name.
        name: String,
        /// The call's id, to answer on the response topic.
        rid: String,
    },
    /// `devices/{id}/messages/devicebound/{property bag}`.
    CloudToDevice {
        /// Decoded system and application properties.
        properties: Vec<(String, Option<String>)>,
    },
}

impl HubTopic {
    /// Parses a PUBLISH topic the hub sent to `device_id`.
    pub fn parse(topic: &str, device_id: &str) -> Result<Self, TopicError> {
        let missing = || TopicError::MissingRid(topic.to_owned());
        if let Some(rest) = topic.strip_prefix("$iothub/twin/res/") {
            let (status, query) = rest.split_once('/').ok_or_else(missing)?;
            let status = status.parse().map_err(|_| missing())?;
            let version = param(query, "$version").and_then(|v| v.parse().ok());
            return Ok(Self::TwinResponse { status, rid: rid(query, topic)?, version });
        }
        if let Some(query) = topic.strip_prefix("$iothub/twin/PATCH/properties/desired/") {
            return Ok(Self::DesiredPatch { version: param(query, "$version").and_then(|v| v.parse().ok()) });
        }
        if let Some(rest) = topic.strip_prefix("$iothub/methods/POST/") {
            let (name, query) = rest.split_once('/').ok_or_else(missing)?;
            return Ok(Self::MethodRequest { name: name.to_owned(), rid: rid(query, topic)? });
        }
        if let Some(bag) = device_bag(topic, device_id, "messages/devicebound")? {
            return Ok(Self::CloudToDevice { properties: decode_bag(bag) });
        }
        Err(TopicError::Unsupported(topic.to_owned()))
    }
}

impl Subscription {
    /// The filter a device subscribes with.
    pub fn filter(self, device_id: &str) -> String {
        match self {
            Self::CloudToDevice => format!("{}/messages/devicebound/#", resource_path(device_id)),
            Self::ModuleInputs => format!("{}/inputs/#", resource_path(device_id)),
            Self::Methods => "$iothub/methods/POST/#".to_owned(),
            Self::DesiredPatches => "$iothub/twin/PATCH/properties/desired/#".to_owned(),
            Self::TwinResponses => "$iothub/twin/res/#".to_owned(),
        }
    }
}

/// `devices/{id}/messages/events/{property bag}`: where a device sends telemetry.
pub fn telemetry(device_id: &str, properties: &[(String, Option<String>)]) -> String {
    format!("{}/messages/events/{}", resource_path(device_id), encode_bag(properties))
}

const REJECTED_PREFIX: &str = "$twinhub/messages/devicebound/rejected/";

/// `$twinhub/messages/devicebound/rejected/{packetId}` ([`DeviceTopic::CloudToDeviceRejected`]).
pub fn cloud_to_device_rejected(packet_id: PacketId) -> String {
    format!("{REJECTED_PREFIX}{packet_id}")
}

/// `$iothub/twin/GET/?$rid={rid}`.
pub fn twin_get(rid: &str) -> String {
    format!("$iothub/twin/GET/?$rid={rid}")
}

/// `$iothub/twin/PATCH/properties/reported/?$rid={rid}`.
pub fn reported_patch(rid: &str) -> String {
    format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}")
}

/// `$iothub/methods/res/{status}/?$rid={rid}`.
pub fn method_response(status: i32, rid: &str) -> String {
    format!("$iothub/methods/res/{status}/?$rid={rid}")
}

/// `$iothub/twin/res/{status}/?$rid={rid}[&$version={version}]`.
pub fn twin_response(status: u16, rid: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("$iothub/twin/res/{status}/?$rid={rid}&$version={v}"),
        None => format!("$iothub/twin/res/{status}/?$rid={rid}"),
    }
}

/// `$iothub/twin/PATCH/properties/desired/?$version={version}`.
pub fn desired_patch(version: u64) -> String {
    format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
}

/// `$iothub/methods/POST/{name}/?$rid={rid}`.
pub fn method_request(name: &str, rid: &str) -> String {
    format!("$iothub/methods/POST/{name}/?$rid={rid}")
}

/// `devices/{id}/messages/devicebound/{property bag}`.
pub fn cloud_to_device(device_id: &str, properties: &[(String, Option<String>)]) -> String {
    format!("{}/messages/devicebound/{}", resource_path(device_id), encode_bag(properties))
}

/// The property bag of `devices/{device_id}/{section}[/{bag}]`: `Ok(None)` when the topic is not
/// under `devices/`, refused when it is another device's or another section.
fn device_bag<'t>(topic: &'t str, device_id: &str, section: &str) -> Result<Option<&'t str>, TopicError> {
    let Some(tail) = own_tail(topic, device_id)? else { return Ok(None) };
    let bag = tail.strip_prefix(section).ok_or_else(|| TopicError::Unsupported(topic.to_owned()))?;
    Ok(Some(bag.strip_prefix('/').unwrap_or(bag)))
}

/// What follows the identity's own `devices/{id}/` (or `devices/{id}/modules/{mid}/`) in a
/// topic: `Ok(None)` when the topic is not under `devices/`, refused when it is another
/// identity's (another device, a sibling module, or a device reaching into its module's).
fn own_tail<'t>(topic: &'t str, key: &str) -> Result<Option<&'t str>, TopicError> {
    if !topic.starts_with("devices/") {
        return Ok(None);
    }
    let tail = topic.strip_prefix(resource_path(key).as_str()).and_then(|t| t.strip_prefix('/'));
    match tail {
        Some(t) if !is_module_key(key) && t.starts_with("modules/") => Err(TopicError::OtherDevice),
        Some(t) => Ok(Some(t)),
        None => Err(TopicError::OtherDevice),
    }
}

/// The `$rid` of a `?$rid=...&...` query. Every parameter must contain `=`, since the Python
/// SDK splits on it.
fn rid(query: &str, topic: &str) -> Result<String, TopicError> {
    param(query, "$rid")
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| TopicError::MissingRid(topic.to_owned()))
}

/// The value of `name` in a `?a=1&b=2` query.
fn param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.strip_prefix('?')?.split('&').find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
}

/// Decodes `k=v&k2=v2&flag` (percent-encoded) into pairs.
pub fn decode_bag(bag: &str) -> Vec<(String, Option<String>)> {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    bag.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), Some(decode(v))),
            None => (decode(p), None),
        })
        .collect()
}

/// Encodes pairs as a property bag: `None` renders as `key`, empty as `key=`.
pub fn encode_bag(properties: &[(String, Option<String>)]) -> String {
    properties
        .iter()
        .map(|(k, v)| {
            let k = utf8_percent_encode(k, BAG_ESCAPE);
            match v {
                Some(v) => format!("{k}={}", utf8_percent_encode(v, BAG_ESCAPE)),
                None => k.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_topics() {
        assert_eq!(
            DeviceTopic::parse("$iothub/twin/GET/?$rid=get_twin", "d1"),
            Ok(DeviceTopic::TwinGet { rid: "get_twin".into() })
        );
        assert_eq!(
            DeviceTopic::parse("$iothub/twin/PATCH/properties/reported/?$rid=42", "d1"),
            Ok(DeviceTopic::ReportedPatch { rid: "42".into() })
        );
        assert_eq!(
            DeviceTopic::parse("$iothub/methods/res/200/?$rid=7", "d1"),
            Ok(DeviceTopic::MethodResponse { status: 200, rid: "7".into() })
        );
        // The Python SDK's telemetry topic, system and application properties encoded.
        let t = DeviceTopic::parse(
            "devices/d1/messages/events/%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=high_temperature",
            "d1",
        );
        assert_eq!(
            t,
            Ok(DeviceTopic::Telemetry {
                properties: vec![
                    ("$.mid".into(), Some("m1".into())),
                    ("$.ct".into(), Some("application/json".into())),
                    ("$.ce".into(), Some("utf-8".into())),
                    ("alert".into(), Some("high_temperature".into())),
                ]
            })
        );
        assert_eq!(
            DeviceTopic::parse("devices/d1/messages/events/", "d1"),
            Ok(DeviceTopic::Telemetry { properties: vec![] })
        );
        let id = PacketId::new(513).unwrap();
        assert_eq!(
            DeviceTopic::parse(&cloud_to_device_rejected(id), "d1"),
            Ok(DeviceTopic::CloudToDeviceRejected { packet_id: id })
        );
    }

    #[test]
    fn refused_topics() {
        assert_eq!(DeviceTopic::parse("devices/d2/messages/events/", "d1"), Err(TopicError::OtherDevice));
        assert!(matches!(DeviceTopic::parse("$iothub/twin/GET/", "d1"), Err(TopicError::MissingRid(_))));
        assert!(matches!(DeviceTopic::parse("$iothub/twin/GET/?rid=1", "d1"), Err(TopicError::MissingRid(_))));
        assert!(matches!(DeviceTopic::parse("$iothub/methods/res/ok/?$rid=1", "d1"), Err(TopicError::MissingRid(_))));
        assert!(matches!(DeviceTopic::parse("random/topic", "d1"), Err(TopicError::Unsupported(_))));
        for bad in ["0", "65536", "x", ""] {
            let topic = format!("$twinhub/messages/devicebound/rejected/{bad}");
            assert!(matches!(DeviceTopic::parse(&topic, "d1"), Err(TopicError::Unsupported(_))), "{topic}");
        }
        assert!(matches!(
            DeviceTopic::parse("devices/d1/messages/devicebound/x", "d1"),
            Err(TopicError::Unsupported(_))
        ));
    }

    #[test]
    fn subscriptions() {
        assert_eq!(Subscription::parse("$iothub/twin/res/#", "d1"), Ok(Subscription::TwinResponses));
        assert_eq!(Subscription::parse("$iothub/methods/POST/#", "d1"), Ok(Subscription::Methods));
        assert_eq!(Subscription::parse("devices/d1/messages/devicebound/#", "d1"), Ok(Subscription::CloudToDevice));
        assert_eq!(Subscription::parse("devices/d2/messages/devicebound/#", "d1"), Err(TopicError::OtherDevice));
        assert!(matches!(Subscription::parse("#", "d1"), Err(TopicError::Unsupported(_))));
        assert!(matches!(Subscription::parse("$iothub/#", "d1"), Err(TopicError::Unsupported(_))));
    }

    #[test]
    fn hub_topics_as_a_device_reads_them() {
        assert_eq!(
            HubTopic::parse(&twin_response(204, "r1", Some(5)), "d1"),
            Ok(HubTopic::TwinResponse { status: 204, rid: "r1".into(), version: Some(5) })
        );
        assert_eq!(HubTopic::parse(&desired_patch(8), "d1"), Ok(HubTopic::DesiredPatch { version: Some(8) }));
        assert_eq!(
            HubTopic::parse(&method_request("reboot", "3"), "d1"),
            Ok(HubTopic::MethodRequest { name: "reboot".into(), rid: "3".into() })
        );
        let props = vec![("$.mid".to_owned(), Some("m".to_owned()))];
        assert_eq!(
            HubTopic::parse(&cloud_to_device("d1", &props), "d1"),
            Ok(HubTopic::CloudToDevice { properties: props.clone() })
        );
        assert_eq!(HubTopic::parse(&cloud_to_device("d2", &props), "d1"), Err(TopicError::OtherDevice));
        assert!(matches!(HubTopic::parse("$iothub/twin/res/x/?$rid=1", "d1"), Err(TopicError::MissingRid(_))));
        assert!(matches!(HubTopic::parse("elsewhere", "d1"), Err(TopicError::Unsupported(_))));
        // What a device sends parses back, as the hub reads it.
        for sub in [
            Subscription::CloudToDevice,
            Subscription::Methods,
            Subscription::DesiredPatches,
            Subscription::TwinResponses,
        ] {
            assert_eq!(Subscription::parse(&sub.filter("d1"), "d1"), Ok(sub));
        }
        assert_eq!(DeviceTopic::parse(&twin_get("g"), "d1"), Ok(DeviceTopic::TwinGet { rid: "g".into() }));
        assert_eq!(DeviceTopic::parse(&reported_patch("p"), "d1"), Ok(DeviceTopic::ReportedPatch { rid: "p".into() }));
        assert_eq!(
            DeviceTopic::parse(&method_response(500, "m"), "d1"),
            Ok(DeviceTopic::MethodResponse { status: 500, rid: "m".into() })
        );
        assert_eq!(
            DeviceTopic::parse(&telemetry("d1", &props), "d1"),
            Ok(DeviceTopic::Telemetry { properties: props })
        );
    }

    #[test]
    fn outgoing_topics_and_bags() {
        assert_eq!(twin_response(204, "r1", Some(5)), "$iothub/twin/res/204/?$rid=r1&$version=5");
        assert_eq!(twin_response(200, "r1", None), "$iothub/twin/res/200/?$rid=r1");
        assert_eq!(desired_patch(8), "$iothub/twin/PATCH/properties/desired/?$version=8");
        assert_eq!(method_request("reboot", "3"), "$iothub/methods/POST/reboot/?$rid=3");
        let props = vec![
            ("$.mid".to_owned(), Some("2c2d".to_owned())),
            ("$.to".to_owned(), Some("/devices/d1/messages/devicebound".to_owned())),
            ("flag".to_owned(), None),
            ("empty".to_owned(), Some(String::new())),
        ];
        let topic = cloud_to_device("d1", &props);
        assert_eq!(
            topic,
            "devices/d1/messages/devicebound/%24.mid=2c2d&%24.to=%2Fdevices%2Fd1%2Fmessages%2Fdevicebound&flag&empty="
        );
        assert_eq!(decode_bag(topic.trim_start_matches("devices/d1/messages/devicebound/")), props);
    }
}
