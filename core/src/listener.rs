//! Which protocol each self-hosted TCP listener takes, as IoT Hub's ports do: MQTT over TLS on
//! 8883, AMQP over TLS on 5671, and plain AMQP (the Event Hubs emulator's 5672) for the
//! Event Hub-compatible endpoint. IoT Hub has no plaintext MQTT, so the plain AMQP port takes
//! AMQP only: a device's token is never read off the wire in clear text there.
//!
//! The runtime tells the Worker which listener a connection came in on (workerd hands each
//! socket's name to the connect handler as `ctx.props`); the first bytes tell the protocol
//! (AMQP opens with its `AMQP` header, MQTT with a CONNECT packet).

use serde::Deserialize;

/// A TCP listener, by the name the runtime configuration gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    /// MQTT over TLS (8883).
    Mqtts,
    /// AMQP over TLS (5671).
    Amqps,
    /// Plain AMQP (5672).
    Amqp,
}

/// What a connection speaks, by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Mqtt,
    Amqp,
}

impl Protocol {
    /// The protocol of a connection that opened with `first` (at least one byte).
    pub fn of(first: &[u8]) -> Self {
        if first.first() == Some(&b'A') {
            Protocol::Amqp
        } else {
            Protocol::Mqtt
        }
    }
}

/// The props the runtime's configuration gives a listener's connections.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ListenerProps {
    pub listener: Option<Listener>,
}

/// Whether `listener` serves `protocol`. A connection on no named listener (a configuration
/// written before listeners were named) is served whatever it speaks.
pub fn serves(listener: Option<Listener>, protocol: Protocol) -> bool {
    match listener {
        None => true,
        Some(Listener::Mqtts) => protocol == Protocol::Mqtt,
        Some(Listener::Amqps | Listener::Amqp) => protocol == Protocol::Amqp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_listener_serves_its_own_protocol() {
        let mqtt = Protocol::of(&[0x10, 0x20]);
        let amqp = Protocol::of(b"AMQP\x03\x01\x00\x00");
        assert_eq!((mqtt, amqp), (Protocol::Mqtt, Protocol::Amqp));
        assert!(serves(Some(Listener::Mqtts), mqtt) && !serves(Some(Listener::Mqtts), amqp));
        // No plaintext MQTT: the plain AMQP port is AMQP's alone.
        assert!(serves(Some(Listener::Amqp), amqp) && !serves(Some(Listener::Amqp), mqtt));
        assert!(serves(Some(Listener::Amqps), amqp) && !serves(Some(Listener::Amqps), mqtt));
        assert!(serves(None, mqtt) && serves(None, amqp));
        let props: ListenerProps = serde_json::from_str(r#"{"listener":"amqp"}"#).unwrap();
        assert_eq!(props.listener, Some(Listener::Amqp));
        let none: ListenerProps = serde_json::from_str("{}").unwrap();
        assert_eq!(none.listener, None);
    }
}
