//! Shared access signature tokens (spec §4.1).
//!
//! `SharedAccessSignature sr={uri}&sig={signature}&se={expiry}[&skn={policy}]`, fields in any
//! order. The signature is HMAC-SHA256, keyed with the base64-decoded key, over the `sr` value
//! *exactly as it appears in the token* + `"\n"` + `se`. SDKs percent-encode `sr` differently
//! (upper or lower case hex, `:` encoded or not), so the raw substring is kept for verification
//! and the decoded form is used only for scope checks.

use super::AuthError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "SharedAccessSignature ";

/// A parsed SAS token. Holds no secret: the signature is useless without the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SasToken {
    /// `sr` exactly as received (still percent-encoded): what was signed.
    raw_resource: String,
    /// `sr` percent-decoded: what the token grants access to.
    resource: String,
    /// The base64 signature, percent-decoded.
    signature: String,
    /// `se`: expiry in Unix seconds.
    expiry: u64,
    /// `skn`: the policy name, absent for device-key tokens.
    key_name: Option<String>,
}

impl SasToken {
    /// Parses a token. The `SharedAccessSignature ` prefix is required, as IoT Hub requires it
    /// (every SDK sends it); `se` is decimal digits only (Rust's integer parsing would also
    /// take `+N`, which IoT Hub refuses).
    pub fn parse(token: &str) -> Result<Self, AuthError> {
        let body = token.trim();
        if body.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let body = body
            .strip_prefix(PREFIX)
            .ok_or(AuthError::Malformed("the token must start with 'SharedAccessSignature '"))?;
        let body = body.trim();
        if body.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for pair in body.split('&') {
            let (key, value) = pair.split_once('=').ok_or(AuthError::Malformed("a field has no '='"))?;
            let slot = match key {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => return Err(AuthError::Malformed("unknown field (allowed: sr, sig, se, skn)")),
            };
            if slot.replace(value).is_some() {
                return Err(AuthError::Malformed("a field appears twice"));
            }
        }
        let raw_resource = sr.ok_or(AuthError::MissingField("SAS token", "sr"))?;
        let signature = sig.ok_or(AuthError::MissingField("SAS token", "sig"))?;
        let expiry = se.ok_or(AuthError::MissingField("SAS token", "se"))?;
        Ok(Self {
            raw_resource: raw_resource.to_owned(),
            resource: decode(raw_resource)?,
            signature: decode(signature)?,
            expiry: parse_expiry(expiry)?,
            key_name: skn.map(decode).transpose()?,
        })
    }

    /// The decoded resource URI (`host` or `host/devices/{id}`).
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The policy name (`skn`), if the token was signed with a policy key.
    pub fn key_name(&self) -> Option<&str> {
        self.key_name.as_deref()
    }

    /// Expiry, Unix seconds.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }

    /// Checks the signature against `key` (base64) in constant time, then the expiry.
    /// The signature is checked first so an attacker learns nothing from the order of errors.
    pub fn verify(&self, key_b64: &str, now_secs: u64) -> Result<(), AuthError> {
        let key = STANDARD.decode(key_b64.trim()).map_err(|_| AuthError::BadSignature)?;
        self.verify_with_key_bytes(&key, now_secs)
    }

    /// Like [`SasToken::verify`], with the key's text itself as the HMAC key: how Event Hubs and
    /// Service Bus clients sign (`azure-eventhub` signs with the key string's UTF-8 bytes, where
    /// IoT Hub's SDKs base64-decode it first). IoT Hub's Event Hub-compatible endpoint takes
    /// tokens signed either way with the same policy key.
    pub fn verify_service_bus(&self, key_b64: &str, now_secs: u64) -> Result<(), AuthError> {
        self.verify_with_key_bytes(key_b64.trim().as_bytes(), now_secs)
    }

    fn verify_with_key_bytes(&self, key: &[u8], now_secs: u64) -> Result<(), AuthError> {
        let given = STANDARD.decode(&self.signature).map_err(|_| AuthError::BadSignature)?;
        let mut mac = HmacSha256::new_from_slice(key).map_err(|_| AuthError::BadSignature)?;
        mac.update(string_to_sign(&self.raw_resource, self.expiry).as_bytes());
        // `verify_slice` compares in constant time (the `subtle` crate underneath).
        mac.verify_slice(&given).map_err(|_| AuthError::BadSignature)?;
        if self.expiry <= now_secs {
            return Err(AuthError::Expired { expiry: self.expiry, now: now_secs });
        }
        Ok(())
    }

    /// Whether the token's resource covers `resource`: equal, or a prefix ending at a `/`
    /// (`host/devices` covers `host/devices/d1`, not `host/devicesX`). The host part compares
    /// case-insensitively, as DNS names do; the path part exactly, as device ids are
    /// case-sensitive.
    pub fn covers(&self, resource: &str) -> bool {
        let (tok_host, tok_path) = split_host(self.resource.trim_end_matches('/'));
        let (res_host, res_path) = split_host(resource);
        if !tok_host.eq_ignore_ascii_case(res_host) {
            return false;
        }
        match res_path.strip_prefix(tok_path) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// Whether the token covers a REST request for `encoded_path` (as in the URL) on `host`.
    /// IoT Hub matches the token's resource as a prefix of the request's, segment by segment,
    /// so `{host}/devices` grants `/devices/d1` and `/devices/query` but not `/twins/d1`.
    pub fn covers_request(&self, host: &str, encoded_path: &str) -> bool {
        // A segment that decodes to a '/' (`/devices/d%2F$live`) would otherwise read as two
        // segments and fall under a token for a narrower resource than the request names.
        if encoded_path.split('/').any(|seg| decode(seg).map_or(true, |s| s.contains('/'))) {
            return false;
        }
        let path = decode(encoded_path).unwrap_or_else(|_| encoded_path.to_owned());
        let path = path.trim_end_matches('/');
        let path = if path.is_empty() || path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        self.covers(&format!("{host}{path}"))
    }
}

/// `se`: Unix seconds in decimal digits, nothing else (no sign, no space).
fn parse_expiry(se: &str) -> Result<u64, AuthError> {
    if se.is_empty() || !se.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed("se is not a whole number"));
    }
    se.parse().map_err(|_| AuthError::Malformed("se is out of range"))
}

/// A short, stable name for a token that reveals nothing of it (the first 8 bytes of its
/// SHA-256, hex): for counting what one token holds, and for logs.
pub fn token_tag(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.trim().as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Signs a token for `resource` (decoded URI) with `key_b64`, expiring at `expiry_secs`.
/// Encodes `sr` as the Python device SDK does (`quote(uri, safe="")`).
pub fn sign(resource: &str, key_b64: &str, policy: Option<&str>, expiry_secs: u64) -> Result<String, AuthError> {
    let key = STANDARD.decode(key_b64.trim()).map_err(|_| AuthError::Malformed("the key is not base64"))?;
    let sr = utf8_percent_encode(resource, NON_ALPHANUMERIC_URI).to_string();
    let mut mac = HmacSha256::new_from_slice(&key).map_err(|_| AuthError::Malformed("the key is empty"))?;
    mac.update(string_to_sign(&sr, expiry_secs).as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    let sig = utf8_percent_encode(&sig, NON_ALPHANUMERIC).to_string();
    let mut token = format!("{PREFIX}sr={sr}&sig={sig}&se={expiry_secs}");
    if let Some(name) = policy {
        token.push_str("&skn=");
        token.push_str(&utf8_percent_encode(name, NON_ALPHANUMERIC).to_string());
    }
    Ok(token)
}

/// Like Python's `quote(s, safe="")`: everything but unreserved characters is escaped.
const NON_ALPHANUMERIC_URI: &percent_encoding::AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn string_to_sign(raw_resource: &str, expiry: u64) -> String {
    format!("{raw_resource}\n{expiry}")
}

fn decode(s: &str) -> Result<String, AuthError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| AuthError::Malformed("a field is not UTF-8 after percent-decoding"))
}

fn split_host(uri: &str) -> (&str, &str) {
    match uri.find('/') {
        Some(i) => uri.split_at(i),
        None => (uri, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn a_token_covers_requests_under_its_resource() {
        let hub = SasToken::parse(&sign("Hub.example", KEY, Some("p"), 9).unwrap()).unwrap();
        assert!(hub.covers_request("hub.example", "/twins/d1"));
        assert!(hub.covers_request("hub.example", "/"));
        let devices = SasToken::parse(&sign("hub.example/devices", KEY, Some("p"), 9).unwrap()).unwrap();
        assert!(devices.covers_request("hub.example", "/devices/d1"));
        assert!(devices.covers_request("hub.example", "/devices/query"));
        assert!(devices.covers_request("hub.example", "/devices"));
        assert!(!devices.covers_request("hub.example", "/devicesX"));
        assert!(!devices.covers_request("hub.example", "/twins/d1"));
        assert!(!devices.covers_request("other.example", "/devices/d1"));
        // Paths compare decoded, as device ids are signed.
        let one = SasToken::parse(&sign("hub.example/devices/a#b", KEY, Some("p"), 9).unwrap()).unwrap();
        assert!(one.covers_request("hub.example", "/devices/a%23b"));
        assert!(!one.covers_request("hub.example", "/devices/a"));
        // An encoded '/' is one segment, never two: a live-view token covers no device named
        // `d/$live`.
        let live = SasToken::parse(&sign("hub.example/devices/d/$live", KEY, Some("p"), 9).unwrap()).unwrap();
        assert!(live.covers_request("hub.example", "/devices/d/$live"));
        assert!(!live.covers_request("hub.example", "/devices/d%2F$live"));
        assert!(!live.covers_request("hub.example", "/devices/d"));
    }

    // Vectors from spec §4.1, computed with the SDKs' own algorithms.
    const DEVICE_TOKEN: &str = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&sig=i%2BYmMcSSZc4KzBi6ejz3l0iL%2B2sN0CE3q6vSm837h2g%3D&se=1700000000";
    const SERVICE_TOKEN: &str = "SharedAccessSignature sr=myhub.azure-devices.net&sig=iIzEw6hi6GK79RY5jNXO6QeQkSL/Ax4zTmy44X2G1VY%3D&se=1700000000&skn=iothubowner";

    #[test]
    fn spec_device_vector_verifies() {
        let t = SasToken::parse(DEVICE_TOKEN).unwrap();
        assert_eq!(t.resource(), "myhub.azure-devices.net/devices/dev1");
        assert_eq!(t.key_name(), None);
        t.verify(KEY, 1_699_999_999).unwrap();
    }

    #[test]
    fn spec_service_vector_verifies() {
        let t = SasToken::parse(SERVICE_TOKEN).unwrap();
        assert_eq!(t.key_name(), Some("iothubowner"));
        t.verify(KEY, 1_600_000_000).unwrap();
    }

    #[test]
    fn sign_reproduces_python_device_sdk_token() {
        let t = sign("myhub.azure-devices.net/devices/dev1", KEY, None, 1_700_000_000).unwrap();
        assert_eq!(t, DEVICE_TOKEN);
    }

    #[test]
    fn expired_token_is_refused_after_signature_check() {
        let t = SasToken::parse(SERVICE_TOKEN).unwrap();
        assert_eq!(t.verify(KEY, 1_700_000_000), Err(AuthError::Expired { expiry: 1_700_000_000, now: 1_700_000_000 }));
    }

    #[test]
    fn wrong_key_is_refused() {
        let t = SasToken::parse(SERVICE_TOKEN).unwrap();
        let other = "AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        assert_eq!(t.verify(other, 0), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_resource_is_refused() {
        let forged = SERVICE_TOKEN.replace("sr=myhub", "sr=yourhub");
        let t = SasToken::parse(&forged).unwrap();
        assert_eq!(t.verify(KEY, 0), Err(AuthError::BadSignature));
    }

    #[test]
    fn malformed_tokens_are_errors_not_panics() {
        for bad in [
            "",
            "SharedAccessSignature ",
            "SharedAccessSignature sr=a",
            "SharedAccessSignature sr=a&sig=b",
            "SharedAccessSignature sr=a&sig=b&se=notanumber",
            "SharedAccessSignature sr=a&sig=b&se=1&foo=bar",
            "SharedAccessSignature sr=a&sr=b&sig=c&se=1",
            "SharedAccessSignature sr=%FF&sig=b&se=1",
            "SharedAccessSignature garbage",
            // IoT Hub refuses both; Rust's `u64::from_str` alone would take the second.
            "sr=a&sig=b&se=1",
            "SharedAccessSignature sr=a&sig=b&se=+1",
            "SharedAccessSignature sr=a&sig=b&se= 1",
            "SharedAccessSignature sr=a&sig=b&se=99999999999999999999999",
        ] {
            assert!(SasToken::parse(bad).is_err(), "{bad:?} parsed");
        }
        // Parses, but the signature is not base64: refused at verification.
        let t = SasToken::parse("SharedAccessSignature sr=a&sig=!!&se=1").unwrap();
        assert_eq!(t.verify(KEY, 0), Err(AuthError::BadSignature));
    }

    #[test]
    fn covers_is_a_segment_prefix() {
        let t = SasToken::parse("SharedAccessSignature sr=Hub.Example%2Fdevices&sig=x&se=1").unwrap();
        assert!(t.covers("hub.example/devices/d1"));
        assert!(t.covers("hub.example/devices"));
        assert!(!t.covers("hub.example/devicesX/d1"));
        assert!(!t.covers("hub.example"));
        let root = SasToken::parse("SharedAccessSignature sr=127.0.0.1%3A8787&sig=x&se=1").unwrap();
        assert!(root.covers("127.0.0.1:8787"));
        assert!(root.covers("127.0.0.1:8787/devices/d1"));
        assert!(!root.covers("127.0.0.1:8788"));
    }
}
