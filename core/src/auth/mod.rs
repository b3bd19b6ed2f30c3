//! Authentication: SAS tokens (spec §4.1), connection strings (§4.3) and access policies (§4.4).

mod connection_string;
mod policy;
pub mod reach;
mod sas;

pub use connection_string::{ConnectionString, Credential};
pub use policy::{Permissions, Policy, PolicyConfigError, BUILT_IN, OWNER_POLICY};
pub use sas::{sign, token_tag, SasToken};

/// Why a token or connection string was refused. Messages are safe to show: they never include
/// a key or a signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token is past its `se`.
    #[error("the SAS token expired at {expiry} (now {now})")]
    Expired {
        /// The token's `se`.
        expiry: u64,
        /// The verifier's clock, in seconds.
        now: u64,
    },
    /// A field the format requires is absent.
    #[error("the {0} is missing a required field '{1}'")]
    MissingField(&'static str, &'static str),
    /// The `Authorization` header carries no token.
    #[error("missing Authorization header with a SharedAccessSignature")]
    MissingToken,
    /// The token does not parse.
    #[error("malformed SAS token: {0}")]
    Malformed(&'static str),
    /// A connection string does not parse.
    #[error("malformed connection string: {0}")]
    MalformedConnectionString(String),
    /// The signature does not match the key.
    #[error("the SAS token's signature does not match")]
    BadSignature,
    /// The policy lacks a permission the operation needs.
    #[error("policy '{policy}' lacks the {needed} permission")]
    PermissionDenied {
        /// The policy used.
        policy: String,
        /// The permission the operation needs.
        needed: &'static str,
    },
    /// The token's `sr` does not cover the resource.
    #[error("the SAS token's resource '{0}' does not cover this hub")]
    WrongResource(String),
    /// The `skn` names no policy of this hub.
    #[error("unknown shared access policy '{0}'")]
    UnknownPolicy(String),
}

/// Checks a device's SAS token (the MQTT CONNECT password) for `device_id` on the hub `host`
/// (`device_id` is an identity key: for a module, `{deviceId}/{moduleId}`, whose resource is
/// `{host}/devices/{deviceId}/modules/{moduleId}`):
/// signed with one of the device's own keys (no `skn`), or with a policy key that grants
/// DeviceConnect; not expired; and its resource covers `{host}/devices/{device_id}`. Returns the
/// token's expiry in Unix seconds.
pub fn authorize_device(
    token: &str,
    host: &str,
    device_id: &str,
    device_keys: &[&str],
    policies: &[Policy],
    now_secs: u64,
) -> Result<u64, AuthError> {
    let t = SasToken::parse(token)?;
    let keys: Vec<&str> = match t.key_name() {
        None => device_keys.to_vec(),
        Some(name) => {
            let policy =
                policies.iter().find(|p| p.name == name).ok_or_else(|| AuthError::UnknownPolicy(name.to_owned()))?;
            if !policy.permissions.contains(Permissions::DEVICE_CONNECT) {
                return Err(AuthError::PermissionDenied { policy: policy.name.clone(), needed: "DeviceConnect" });
            }
            vec![policy.key.as_str()]
        }
    };
    // Any key whose signature matches decides; expiry is reported only for a matching signature.
    let mut verdict = Err(AuthError::BadSignature);
    for key in keys {
        match t.verify(key, now_secs) {
            Ok(()) => {
                verdict = Ok(());
                break;
            }
            Err(e @ AuthError::Expired { .. }) => verdict = Err(e),
            Err(_) => {}
        }
    }
    verdict?;
    if host.is_empty() || !t.covers(&format!("{host}/{}", crate::identity::resource_path(device_id))) {
        return Err(AuthError::WrongResource(t.resource().to_owned()));
    }
    Ok(t.expiry())
}

/// What can be known of a device's CONNECT token without its keys: it parses, has not expired,
/// and its resource covers `{host}/devices/{device_id}`. The gateway checks this before it
/// wakes the device's object, so junk CONNECTs never reach (or create) per-device storage;
/// [`authorize_device`] still decides. Reveals nothing the token's holder does not know.
pub fn precheck_device_token(token: &str, host: &str, device_id: &str, now_secs: u64) -> Result<(), AuthError> {
    let t = SasToken::parse(token)?;
    // An empty host is no hub (a request addressed to a name the hub does not answer to).
    if host.is_empty() {
        return Err(AuthError::WrongResource(t.resource().to_owned()));
    }
    if t.expiry() <= now_secs {
        return Err(AuthError::Expired { expiry: t.expiry(), now: now_secs });
    }
    if !t.covers(&format!("{host}/{}", crate::identity::resource_path(device_id))) {
        return Err(AuthError::WrongResource(t.resource().to_owned()));
    }
    Ok(())
}

impl From<&AuthError> for crate::HubError {
    fn from(e: &AuthError) -> Self {
        crate::HubError::new(crate::ErrorCode::IotHubUnauthorizedAccess, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn device_tokens() {
        let policies = Policy::all(K1, None).unwrap();
        let own = sign("hub/devices/d1", K2, None, 100).unwrap();
        assert_eq!(authorize_device(&own, "hub", "d1", &[K1, K2], &policies, 50), Ok(100));
        // Rotated away: the key is no longer the device's.
        assert_eq!(authorize_device(&own, "hub", "d1", &[K1], &policies, 50), Err(AuthError::BadSignature));
        assert!(matches!(authorize_device(&own, "hub", "d1", &[K2], &policies, 100), Err(AuthError::Expired { .. })));
        // Another device's token, or another hub's.
        assert!(matches!(authorize_device(&own, "hub", "d2", &[K2], &policies, 50), Err(AuthError::WrongResource(_))));
        assert!(matches!(
            authorize_device(&own, "other", "d1", &[K2], &policies, 50),
            Err(AuthError::WrongResource(_))
        ));
        // The device policy may act for any device; the service policy may not.
        let device_policy = &policies.iter().find(|p| p.name == "device").unwrap().key;
        let gw = sign("hub/devices", device_policy, Some("device"), 100).unwrap();
        assert_eq!(authorize_device(&gw, "hub", "d7", &[], &policies, 50), Ok(100));
        let service = &policies.iter().find(|p| p.name == "service").unwrap().key;
        let svc = sign("hub/devices/d1", service, Some("service"), 100).unwrap();
        assert!(matches!(
            authorize_device(&svc, "hub", "d1", &[], &policies, 50),
            Err(AuthError::PermissionDenied { .. })
        ));
    }

    #[test]
    fn a_module_token_covers_its_module_only() {
        let policies = Policy::all(K1, None).unwrap();
        let module = sign("hub/devices/d1/modules/m1", K2, None, 100).unwrap();
        assert_eq!(authorize_device(&module, "hub", "d1/m1", &[K2], &policies, 50), Ok(100));
        for other in ["d1", "d1/m2", "d1/m10"] {
            assert!(
                matches!(
                    authorize_device(&module, "hub", other, &[K2], &policies, 50),
                    Err(AuthError::WrongResource(_))
                ),
                "{other}"
            );
        }
        // The device's own key does not sign for its module (the module object holds the module's keys).
        let device = sign("hub/devices/d1", K1, None, 100).unwrap();
        assert_eq!(authorize_device(&device, "hub", "d1/m1", &[K2], &policies, 50), Err(AuthError::BadSignature));
        assert_eq!(precheck_device_token(&module, "hub", "d1/m1", 50), Ok(()));
    }

    #[test]
    fn a_device_token_is_prechecked_without_keys() {
        let own = sign("hub/devices/d1", K2, None, 100).unwrap();
        assert_eq!(precheck_device_token(&own, "hub", "d1", 50), Ok(()));
        // Any signature passes the precheck; the device object decides on it.
        let forged = sign("hub/devices/d1", K1, None, 100).unwrap();
        assert_eq!(precheck_device_token(&forged, "hub", "d1", 50), Ok(()));
        assert!(matches!(precheck_device_token(&own, "hub", "d1", 100), Err(AuthError::Expired { .. })));
        assert!(matches!(precheck_device_token(&own, "hub", "d2", 50), Err(AuthError::WrongResource(_))));
        assert!(matches!(precheck_device_token("junk", "hub", "d1", 50), Err(AuthError::Malformed(_))));
        let gw = sign("hub/devices", K1, Some("device"), 100).unwrap();
        assert_eq!(precheck_device_token(&gw, "hub", "d7", 50), Ok(()));
    }
}
