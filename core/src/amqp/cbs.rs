//! Claims-based security (the `$cbs` node, AMQP CBS 1.0 draft as Azure speaks it) and the
//! request/response shape it shares with `$management`: a request message on the node's
//! sender link, answered on its receiver link with the request's message id as the
//! correlation id and the status in the application properties.
//!
//! A `put-token` carries a SAS token for an audience (`sb://{host}/{entity}` for the event
//! stream, `{host}/messages/devicebound` for cloud-to-device); [`authorize`] checks it with
//! the same rules as the REST API's: signature by a policy's key, not expired, the resource
//! covering the audience by whole segments, a host the hub answers to. The signature may be
//! made with the key base64-decoded (IoT Hub's SDKs) or with its text (Event Hubs clients sign
//! so). SASL PLAIN carries the same token as a password ([`plain_credentials`]).

use super::{Message, MessageBody, Properties, Value};
use crate::auth::{AuthError, Permissions, Policy, SasToken};

/// What a valid token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The policy whose key signed it.
    pub policy: String,
    pub permissions: Permissions,
    /// Unix seconds.
    pub expiry_secs: u64,
    /// The token's resource, without its scheme (`host/entity`).
    pub resource: String,
}

/// A `put-token` request.
#[derive(Clone, PartialEq, Eq)]
pub struct PutToken {
    /// `name`: what the token is for.
    pub audience: String,
    /// `type`: `servicebus.windows.net:sastoken` (or `jwt`, which the hub does not take).
    pub token_type: String,
    pub token: String,
}

impl std::fmt::Debug for PutToken {
    /// Hides the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutToken").field("audience", &self.audience).field("token_type", &self.token_type).finish()
    }
}

/// An application property as text.
pub fn property<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message.application_properties.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_str())
}

impl PutToken {
    /// Reads a `$cbs` request: `operation` `put-token`, `type`, `name`, the token as the body
    /// (an `amqp-value` string). Its errors are the status and description to answer with.
    pub fn parse(message: &Message) -> Result<Self, (i32, String)> {
        if property(message, "operation") != Some("put-token") {
            return Err((400, "the $cbs node takes put-token".into()));
        }
        let audience = property(message, "name").ok_or((400, "put-token without a name".to_owned()))?.to_owned();
        let token_type = property(message, "type").unwrap_or_default().to_owned();
        let token = match &message.body {
            MessageBody::Value(Value::String(t)) => t.clone(),
            MessageBody::Data(parts) => {
                String::from_utf8(parts.concat()).map_err(|_| (400, "the token is not text".to_owned()))?
            }
            _ => return Err((400, "put-token without a token".into())),
        };
        if !token_type.is_empty()
            && token_type != "servicebus.windows.net:sastoken"
            && token_type != "azure-devices.net:sastoken"
        {
            return Err((400, format!("token type '{token_type}' is not taken: use a SAS token")));
        }
        Ok(Self { audience, token_type, token })
    }
}

fn without_scheme(s: &str) -> &str {
    s.split_once("://").map(|(_, rest)| rest).unwrap_or(s).trim_end_matches('/')
}

/// Checks a SAS token for `audience`: signed by one of `policies`, unexpired at `now_secs`,
/// its resource (scheme aside) covering the audience by whole segments, and naming a host
/// `own_host` accepts.
pub fn authorize(
    token: &str,
    audience: &str,
    policies: &[Policy],
    own_host: impl Fn(&str) -> bool,
    now_secs: u64,
) -> Result<Grant, AuthError> {
    let token = SasToken::parse(token)?;
    let name = token.key_name().ok_or(AuthError::MissingField("SAS token for the service endpoints", "skn"))?;
    let policy = policies.iter().find(|p| p.name == name).ok_or_else(|| AuthError::UnknownPolicy(name.to_owned()))?;
    // IoT Hub's convention (the key base64-decoded) or Service Bus's (the key's text), as the
    // endpoint's clients sign either way.
    match token.verify(&policy.key, now_secs) {
        Err(AuthError::BadSignature) => token.verify_service_bus(&policy.key, now_secs)?,
        other => other?,
    }
    let resource = without_scheme(token.resource());
    let wanted = without_scheme(audience);
    let host = resource.split('/').next().unwrap_or_default();
    let covers = wanted.eq_ignore_ascii_case(resource)
        || (wanted.len() > resource.len()
            && wanted.is_char_boundary(resource.len())
            && wanted[..resource.len()].eq_ignore_ascii_case(resource)
            && wanted[resource.len()..].starts_with('/'));
    if !covers || !own_host(host) {
        return Err(AuthError::WrongResource(token.resource().to_owned()));
    }
    Ok(Grant {
        policy: policy.name.clone(),
        permissions: policy.permissions,
        expiry_secs: token.expiry(),
        resource: resource.to_owned(),
    })
}

/// The cloud-to-device node's path, as a grant must cover it.
pub const DEVICE_BOUND: &str = "messages/devicebound";
/// The delivery feedback node's path.
pub const FEEDBACK: &str = "messages/servicebound/feedback";

/// Service tokens one connection keeps at once: one per resource, as CBS keeps a token per
/// audience. A put-token for a new resource past this is refused (403): each is a few hundred
/// bytes a client could otherwise make the connection hold without end.
pub const MAX_GRANTS: usize = 16;

/// The service grants an AMQP connection holds, each good for the nodes its token's resource
/// covers. IoT Hub requires a token's audience to cover what a link opens: a ServiceConnect
/// token for `{host}/devices/a` reaches none of the hub-wide nodes (the partitions, the
/// cloud-to-device sender, feedback, `$management`), where one for `{host}` reaches them all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants(Vec<Grant>);

/// Why a grant was not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantsFull;

impl Grants {
    /// Keeps `grant`, in place of an earlier one for the same resource (a renewal); expired
    /// grants are dropped first. Refused when [`MAX_GRANTS`] other resources are held.
    pub fn put(&mut self, grant: Grant, now_secs: u64) -> Result<(), GrantsFull> {
        self.0.retain(|g| g.expiry_secs > now_secs && !g.resource.eq_ignore_ascii_case(&grant.resource));
        if self.0.len() >= MAX_GRANTS {
            return Err(GrantsFull);
        }
        self.0.push(grant);
        Ok(())
    }

    /// An unexpired grant with `needed` whose resource covers the node at `path` (the node's
    /// address without scheme or host, as [`node_path`] gives it: `messages/devicebound`,
    /// `{entity}/ConsumerGroups/{group}/Partitions/{n}`, or an entity's name). The longest-lived
    /// one, so a link lasts as long as any token allows.
    pub fn covering(&self, path: &str, needed: Permissions, now_secs: u64) -> Option<&Grant> {
        self.0
            .iter()
            .filter(|g| g.expiry_secs > now_secs && g.permissions.contains(needed) && g.covers_path(path))
            .max_by_key(|g| g.expiry_secs)
    }

    /// When the next grant expires, if any is held.
    pub fn next_expiry(&self) -> Option<u64> {
        self.0.iter().map(|g| g.expiry_secs).min()
    }

    /// Forgets expired grants; whether any was forgotten.
    pub fn expire(&mut self, now_secs: u64) -> bool {
        let before = self.0.len();
        self.0.retain(|g| g.expiry_secs > now_secs);
        self.0.len() != before
    }

    /// Whether an unexpired grant is held.
    pub fn any(&self, now_secs: u64) -> bool {
        self.0.iter().any(|g| g.expiry_secs > now_secs)
    }
}

impl Grant {
    /// Whether the grant's resource (`host` or `host/seg/...`) covers the node at `path` by
    /// whole segments. Entity and node names compare case-insensitively, as Event Hubs and IoT
    /// Hub name them (the Node SDK writes `/messages/serviceBound/feedback`).
    pub fn covers_path(&self, path: &str) -> bool {
        let scope = self.resource.split_once('/').map_or("", |(_, p)| p).trim_matches('/');
        let path = path.trim_matches('/');
        if scope.is_empty() {
            return true;
        }
        path.len() >= scope.len()
            && path.is_char_boundary(scope.len())
            && path[..scope.len()].eq_ignore_ascii_case(scope)
            && (path.len() == scope.len() || path[scope.len()..].starts_with('/'))
    }
}

/// A link address's node, without scheme and host: `amqps://{host}/messages/devicebound` and
/// `/messages/devicebound` are both `messages/devicebound`.
pub fn node_path(address: &str) -> &str {
    match address.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => address.trim_start_matches('/'),
    }
}

/// Who a SASL PLAIN user name signs in as: a device (`{deviceId}@sas.{hub}`) or a service
/// policy (`{policy}@sas.root.{hub}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlainUser<'a> {
    Device(&'a str),
    Policy(&'a str),
}

impl<'a> PlainUser<'a> {
    /// Reads a user name; `None` when it is neither form.
    pub fn parse(user: &'a str) -> Option<Self> {
        let (name, hub) = user.rsplit_once("@sas.")?;
        if name.is_empty() || hub.is_empty() {
            return None;
        }
        match hub.strip_prefix("root.") {
            Some(hub) if !hub.is_empty() => Some(Self::Policy(name)),
            Some(_) => None,
            None => Some(Self::Device(name)),
        }
    }
}

/// Checks a service's SASL PLAIN sign-in: the token as [`authorize`] checks it for its own
/// resource, and signed by the very policy the user name names (IoT Hub refuses a user name
/// and token that disagree).
pub fn authorize_plain(
    policy_in_user: &str,
    token: &str,
    policies: &[Policy],
    own_host: impl Fn(&str) -> bool,
    now_secs: u64,
) -> Result<Grant, AuthError> {
    let parsed = SasToken::parse(token)?;
    if parsed.key_name() != Some(policy_in_user) {
        return Err(AuthError::Malformed("the SASL user name names another policy than the token's skn"));
    }
    let audience = parsed.resource().to_owned();
    authorize(token, &audience, policies, own_host, now_secs)
}

/// SASL PLAIN's response (RFC 4616): `authzid NUL authcid NUL password`; the user is
/// `{policy}@sas.root.{hub}` for a service policy, the password its SAS token.
pub fn plain_credentials(response: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(response).ok()?;
    let mut parts = text.split('\0');
    let (_authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || user.is_empty() || password.is_empty() {
        return None;
    }
    Some((user.to_owned(), password.to_owned()))
}

/// The answer to a request on a request/response node: correlated to the request's message
/// id, the status in `status-code` / `status-description` (and the `statusCode` spelling some
/// clients read), with an optional `amqp-value` body.
pub fn reply(request: &Message, status: i32, description: &str, body: Option<Value>) -> Message {
    let correlation_id = request.properties.as_ref().and_then(|p| p.message_id.clone());
    let properties = Properties { correlation_id, ..Properties::default() };
    Message {
        properties: Some(properties),
        application_properties: vec![
            ("status-code".into(), Value::Int(status)),
            ("status-description".into(), Value::String(description.to_owned())),
            ("statusCode".into(), Value::Int(status)),
            ("statusDescription".into(), Value::String(description.to_owned())),
        ],
        body: body.map(MessageBody::Value).unwrap_or(MessageBody::Value(Value::Null)),
        ..Message::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sign;

    const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0xMjM0NTY3OA==";

    fn policies() -> Vec<Policy> {
        vec![Policy { name: "service".into(), key: KEY.into(), permissions: Permissions::SERVICE_CONNECT }]
    }

    #[test]
    fn a_put_token_is_checked_as_the_rest_api_checks_tokens() {
        let token = sign("sb://hub.local:5672/twinhub", KEY, Some("service"), 2_000).unwrap();
        let any = |_: &str| true;
        let grant = authorize(&token, "sb://hub.local:5672/twinhub", &policies(), any, 1_000).unwrap();
        assert_eq!((grant.policy.as_str(), grant.expiry_secs), ("service", 2_000));
        assert!(authorize(
            &token,
            "amqps://hub.local:5672/twinhub/ConsumerGroups/$Default/Partitions/0",
            &policies(),
            any,
            1_000
        )
        .is_ok());
        assert!(matches!(
            authorize(&token, "sb://hub.local:5672/twinhubx", &policies(), any, 1_000),
            Err(AuthError::WrongResource(_))
        ));
        assert!(matches!(
            authorize(&token, "sb://other:5672/twinhub", &policies(), any, 1_000),
            Err(AuthError::WrongResource(_))
        ));
        assert!(matches!(
            authorize(&token, "sb://hub.local:5672/twinhub", &policies(), any, 3_000),
            Err(AuthError::Expired { .. })
        ));
        assert!(matches!(
            authorize(&token, "sb://hub.local:5672/twinhub", &policies(), |_| false, 1_000),
            Err(AuthError::WrongResource(_))
        ));
        // Signed as azure-eventhub signs: HMAC keyed by the key's text.
        let service_bus = {
            use hmac::Mac;
            let sr = "sb%3A%2F%2Fhub.local%3A5672%2Ftwinhub";
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
            mac.update(format!("{sr}\n2000").as_bytes());
            use base64::Engine;
            let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            let sig: String = url_encode(&sig);
            format!("SharedAccessSignature sr={sr}&sig={sig}&se=2000&skn=service")
        };
        assert!(authorize(&service_bus, "sb://hub.local:5672/twinhub", &policies(), any, 1_000).is_ok());
        let forged = sign("sb://hub.local:5672/twinhub", "b3RoZXIta2V5", Some("service"), 2_000).unwrap();
        assert_eq!(
            authorize(&forged, "sb://hub.local:5672/twinhub", &policies(), any, 1_000),
            Err(AuthError::BadSignature)
        );
        let device = sign("hub.local:5672/devices/d1", KEY, None, 2_000).unwrap();
        assert!(authorize(&device, "hub.local:5672/devices/d1", &policies(), any, 1_000).is_err());
    }

    fn url_encode(s: &str) -> String {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect()
    }

    #[test]
    fn put_token_requests_and_replies() {
        let request = Message {
            properties: Some(Properties { message_id: Some(Value::Uuid([7; 16])), ..Properties::default() }),
            application_properties: vec![
                ("operation".into(), Value::String("put-token".into())),
                ("type".into(), Value::String("servicebus.windows.net:sastoken".into())),
                ("name".into(), Value::String("sb://hub/twinhub".into())),
            ],
            body: MessageBody::Value(Value::String("SharedAccessSignature sr=x".into())),
            ..Message::default()
        };
        let put = PutToken::parse(&request).unwrap();
        assert_eq!((put.audience.as_str(), put.token.as_str()), ("sb://hub/twinhub", "SharedAccessSignature sr=x"));
        assert!(!format!("{put:?}").contains("SharedAccessSignature"));
        let answer = reply(&request, 200, "OK", None);
        assert_eq!(answer.properties.unwrap().correlation_id, Some(Value::Uuid([7; 16])));
        assert_eq!(
            property(
                &Message { application_properties: answer.application_properties, ..Message::default() },
                "status-description"
            ),
            Some("OK")
        );
        let mut jwt = request.clone();
        jwt.application_properties[1].1 = Value::String("jwt".into());
        assert_eq!(PutToken::parse(&jwt).unwrap_err().0, 400);
        assert_eq!(
            plain_credentials(b"\0service@sas.root.hub\0SharedAccessSignature sr=x"),
            Some(("service@sas.root.hub".into(), "SharedAccessSignature sr=x".into()))
        );
        assert_eq!(plain_credentials(b"user"), None);
    }

    fn grant(resource: &str, expiry_secs: u64) -> Grant {
        Grant {
            policy: "service".into(),
            permissions: Permissions::SERVICE_CONNECT,
            expiry_secs,
            resource: resource.into(),
        }
    }

    #[test]
    fn a_grant_covers_the_nodes_under_its_resource_only() {
        let hub = grant("hub.local:5671", 100);
        for path in ["messages/devicebound", "twinhub/ConsumerGroups/$Default/Partitions/0", "twinhub", ""] {
            assert!(hub.covers_path(path), "{path}");
        }
        let device = grant("hub.local:5671/devices/a", 100);
        for path in [
            "messages/devicebound",
            "messages/servicebound/feedback",
            "twinhub/ConsumerGroups/$Default/Partitions/0",
            "twinhub",
            "devices",
            "devices/ab",
        ] {
            assert!(!device.covers_path(path), "{path}");
        }
        assert!(device.covers_path("devices/a") && device.covers_path("devices/a/messages/events"));
        let entity = grant("hub.local:5671/TwinHub", 100);
        assert!(entity.covers_path("twinhub/ConsumerGroups/$Default/Partitions/3"));
        assert!(!entity.covers_path("twinhubx/ConsumerGroups/$Default/Partitions/3"));
        assert!(!entity.covers_path("messages/devicebound"));
        let feedback = grant("hub.local/messages/serviceBound", 100);
        assert!(feedback.covers_path("/messages/servicebound/feedback"));
        assert!(!feedback.covers_path("messages/devicebound"));
    }

    #[test]
    fn grants_are_kept_per_resource_bounded_and_expire() {
        let mut grants = Grants::default();
        grants.put(grant("hub/devices/a", 100), 10).unwrap();
        assert_eq!(grants.covering("messages/devicebound", Permissions::SERVICE_CONNECT, 10), None);
        grants.put(grant("hub", 50), 10).unwrap();
        assert_eq!(grants.covering("messages/devicebound", Permissions::SERVICE_CONNECT, 10).unwrap().resource, "hub");
        assert_eq!(grants.covering("messages/devicebound", Permissions::REGISTRY_READ, 10), None);
        assert_eq!(grants.next_expiry(), Some(50));
        // Past its expiry the hub-wide grant covers nothing; a renewal replaces it.
        assert_eq!(grants.covering("messages/devicebound", Permissions::SERVICE_CONNECT, 50), None);
        assert!(grants.expire(50));
        grants.put(grant("hub", 200), 60).unwrap();
        grants.put(grant("HUB", 300), 60).unwrap();
        assert_eq!(grants.0.len(), 2);
        assert_eq!(grants.covering("twinhub", Permissions::SERVICE_CONNECT, 60).unwrap().expiry_secs, 300);
        for i in 0..MAX_GRANTS - 2 {
            grants.put(grant(&format!("hub/e{i}"), 400), 60).unwrap();
        }
        assert_eq!(grants.put(grant("hub/one-too-many", 400), 60), Err(GrantsFull));
        // A renewal of a held resource still fits.
        grants.put(grant("hub/e0", 500), 60).unwrap();
        assert!(grants.any(60) && !grants.any(500));
    }

    #[test]
    fn node_paths_and_plain_users() {
        assert_eq!(node_path("amqps://hub:5671/messages/devicebound"), "messages/devicebound");
        assert_eq!(node_path("/messages/devicebound"), "messages/devicebound");
        assert_eq!(
            node_path("twinhub/ConsumerGroups/$Default/Partitions/0"),
            "twinhub/ConsumerGroups/$Default/Partitions/0"
        );
        assert_eq!(node_path("amqps://hub"), "");
        assert_eq!(PlainUser::parse("service@sas.root.hub"), Some(PlainUser::Policy("service")));
        assert_eq!(PlainUser::parse("d1@sas.hub"), Some(PlainUser::Device("d1")));
        for bad in ["service", "@sas.root.hub", "x@sas.root.", "x@sas."] {
            assert_eq!(PlainUser::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_plain_sign_in_must_name_the_tokens_policy() {
        let mut all = policies();
        all.push(Policy { name: "other".into(), key: KEY.into(), permissions: Permissions::SERVICE_CONNECT });
        let token = sign("hub.local", KEY, Some("service"), 2_000).unwrap();
        let any = |_: &str| true;
        assert_eq!(authorize_plain("service", &token, &all, any, 1_000).unwrap().resource, "hub.local");
        assert!(matches!(authorize_plain("other", &token, &all, any, 1_000), Err(AuthError::Malformed(_))));
        let device = sign("hub.local/devices/d1", KEY, None, 2_000).unwrap();
        assert!(authorize_plain("service", &device, &all, any, 1_000).is_err());
    }
}
