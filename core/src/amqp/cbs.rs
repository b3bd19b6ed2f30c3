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
}
