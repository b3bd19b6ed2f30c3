//! Connection strings (spec §4.3): `HostName=..;SharedAccessKeyName=..;SharedAccessKey=..` for a
//! policy, `HostName=..;DeviceId=..;SharedAccessKey=..` for a device, and
//! `HostName=..;DeviceId=..;ModuleId=..;SharedAccessKey=..` for a module.

use super::AuthError;
use std::fmt;

/// Who a connection string speaks for, and with which key.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A device (or module) with its own symmetric key.
    Device {
        /// The identity's key ([`crate::identity`]): the device id, or `{deviceId}/{moduleId}`
        /// for a module, which is also the MQTT client id it connects with.
        device_id: String,
        /// The device's base64 key.
        key: String,
    },
    /// A shared access policy.
    Policy {
        /// The policy name (`skn`).
        name: String,
        /// The policy's base64 key.
        key: String,
    },
}

/// A parsed connection string. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// `HostName`: the hub, possibly with a `:port`.
    pub host_name: String,
    /// The identity and its key.
    pub credential: Credential,
}

impl ConnectionString {
    /// Parses like the Python SDKs: `;`-separated `key=value` (split at the first `=`), no
    /// unknown or duplicate keys, and one of the two valid combinations.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let bad = |why: &str| AuthError::MalformedConnectionString(why.to_owned());
        let (mut host, mut device, mut module, mut key_name, mut key) = (None, None, None, None, None);
        for part in s.trim().split(';').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| bad("each part must be Key=Value"))?;
            let slot = match k.trim() {
                "HostName" => &mut host,
                "DeviceId" => &mut device,
                "ModuleId" => &mut module,
                "SharedAccessKeyName" => &mut key_name,
                "SharedAccessKey" => &mut key,
                other => return Err(AuthError::MalformedConnectionString(format!("unknown key '{other}'"))),
            };
            if slot.replace(v.trim().to_owned()).is_some() {
                return Err(bad("a key appears twice"));
            }
        }
        let host_name = host.filter(|h| !h.is_empty()).ok_or_else(|| bad("HostName is required"))?;
        let key = key.filter(|k| !k.is_empty()).ok_or_else(|| bad("SharedAccessKey is required"))?;
        let credential = match (device, module, key_name) {
            (Some(device_id), None, None) => Credential::Device { device_id, key },
            (Some(device_id), Some(module_id), None) => {
                Credential::Device { device_id: crate::identity::module_key(&device_id, &module_id), key }
            }
            (None, None, Some(name)) => Credential::Policy { name, key },
            _ => return Err(bad("give either DeviceId or SharedAccessKeyName")),
        };
        Ok(Self { host_name, credential })
    }

    /// The SAS resource this credential signs for: the hub, or the device under it.
    pub fn resource(&self) -> String {
        match &self.credential {
            Credential::Device { device_id, .. } => {
                format!("{}/{}", self.host_name, crate::identity::resource_path(device_id))
            }
            Credential::Policy { .. } => self.host_name.clone(),
        }
    }

    /// A SAS token for this credential, valid until `expiry_secs`.
    pub fn token(&self, expiry_secs: u64) -> Result<String, AuthError> {
        match &self.credential {
            Credential::Device { key, .. } => super::sign(&self.resource(), key, None, expiry_secs),
            Credential::Policy { name, key } => super::sign(&self.resource(), key, Some(name), expiry_secs),
        }
    }
}

impl fmt::Display for ConnectionString {
    /// The canonical string form, key included: for showing to its owner only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.credential {
            Credential::Device { device_id, key } => match crate::identity::split_key(device_id) {
                (device, None) => write!(f, "HostName={};DeviceId={device};SharedAccessKey={key}", self.host_name),
                (device, Some(module)) => {
                    write!(f, "HostName={};DeviceId={device};ModuleId={module};SharedAccessKey={key}", self.host_name)
                }
            },
            Credential::Policy { name, key } => {
                write!(f, "HostName={};SharedAccessKeyName={name};SharedAccessKey={key}", self.host_name)
            }
        }
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match &self.credential {
            Credential::Device { device_id, .. } => format!("device {device_id}"),
            Credential::Policy { name, .. } => format!("policy {name}"),
        };
        write!(f, "ConnectionString({}, {who}, key hidden)", self.host_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SasToken;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn policy_round_trip() {
        let s = format!("HostName=127.0.0.1:8787;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}");
        let cs = ConnectionString::parse(&s).unwrap();
        assert_eq!(cs.host_name, "127.0.0.1:8787");
        assert_eq!(cs.to_string(), s);
        assert!(!format!("{cs:?}").contains(KEY));
        let token = SasToken::parse(&cs.token(2_000_000_000).unwrap()).unwrap();
        assert_eq!(token.key_name(), Some("iothubowner"));
        token.verify(KEY, 1_000).unwrap();
        assert!(token.covers("127.0.0.1:8787"));
    }

    #[test]
    fn device_resource() {
        let cs = ConnectionString::parse(&format!("HostName=h;DeviceId=d1;SharedAccessKey={KEY}")).unwrap();
        assert_eq!(cs.resource(), "h/devices/d1");
    }

    #[test]
    fn a_module_string_round_trips_and_signs_for_its_module() {
        let s = format!("HostName=h;DeviceId=d1;ModuleId=m1;SharedAccessKey={KEY}");
        let cs = ConnectionString::parse(&s).unwrap();
        assert!(matches!(&cs.credential, Credential::Device { device_id, .. } if device_id == "d1/m1"));
        assert_eq!(cs.resource(), "h/devices/d1/modules/m1");
        assert_eq!(cs.to_string(), s);
        let bad = format!("HostName=h;ModuleId=m1;SharedAccessKey={KEY}");
        assert!(ConnectionString::parse(&bad).is_err());
    }

    #[test]
    fn bad_strings() {
        for bad in [
            "",
            "HostName=h",
            "HostName=h;SharedAccessKey=k",
            "HostName=h;DeviceId=d;SharedAccessKeyName=p;SharedAccessKey=k",
            "HostName=h;HostName=h;DeviceId=d;SharedAccessKey=k",
            "HostName=h;Foo=bar;DeviceId=d;SharedAccessKey=k",
            "nonsense",
        ] {
            assert!(ConnectionString::parse(bad).is_err(), "{bad:?}");
        }
    }
}
