//! Who is calling: checks the `Authorization` SAS token against the hub's policies.

use crate::config::Config;
use twinhub_core::auth::{AuthError, Permissions, SasToken};
use twinhub_core::route::{Access, Ident, Route};
use twinhub_core::HubError;
use worker::{Env, Request};

use twinhub_core::identity::LIVE_VIEW;

/// Who made an authorized request.
pub struct Caller {
    /// The policy whose key signed the token: the actor in the twin history.
    pub policy: String,
    /// What that policy may do.
    pub permissions: Permissions,
    /// When the token expires, Unix seconds.
    pub expiry_secs: u64,
}

/// The caller a route's [`Access`] asks for; `None` for an open route.
pub fn authorize(req: &Request, env: &Env, route: &Route<'_>) -> Result<Option<Caller>, HubError> {
    match route.access() {
        Access::Open => Ok(None),
        Access::Token(needed) => require(req, env, needed).map(Some),
        Access::QueryToken(needed) => {
            // The token may be scoped to the one device's (or module's) live view: `{host}/devices/{id}/$live`,
            // a resource no other route or protocol is under, so the URL token a console puts in
            // a WebSocket address grants nothing else (not the identity, not a device session).
            // Broader tokens (`{host}`, `{host}/devices/{id}`) cover it too. The id is decoded
            // already; the resource is matched as a URL path, so it is encoded again (else a
            // token for `xA` would cover a device named `x%41`).
            let encode = |id| percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
            let resource = match route.ident() {
                Some(Ident { device, module: None }) => format!("/devices/{}/{LIVE_VIEW}", encode(device)),
                Some(Ident { device, module: Some(module) }) => {
                    format!("/devices/{}/modules/{}/{LIVE_VIEW}", encode(device), encode(module))
                }
                None => String::new(),
            };
            require_query_token(req, env, needed, &resource).map(Some)
        }
    }
}

/// Requires a valid, unexpired token, signed by a policy with the `needed` permission, whose
/// resource covers the request (`{host}`, or a prefix of `{host}{path}` by whole segments, as
/// IoT Hub matches `sr`). Every REST route that touches a device or twin calls this first.
pub fn require(req: &Request, env: &Env, needed: Permissions) -> Result<Caller, HubError> {
    let header = req.headers().get("authorization").ok().flatten();
    let path = req.url().map(|u| u.path().to_owned()).unwrap_or_default();
    check(header.as_deref(), req, env, needed, &path).map_err(|e| HubError::from(&e))
}

/// Like [`require`], with the token in the `sas` query parameter: for WebSockets, whose
/// browser API cannot set headers. Tokens minted for this are short-lived, and `resource`
/// (a path such as `/devices/{id}`) is what the token must cover, so the dashboard can use one
/// scoped to a single device.
pub fn require_query_token(req: &Request, env: &Env, needed: Permissions, resource: &str) -> Result<Caller, HubError> {
    let token = crate::http::query_param(req, "sas");
    check(token.as_deref(), req, env, needed, resource).map_err(|e| HubError::from(&e))
}

fn check(token: Option<&str>, req: &Request, env: &Env, needed: Permissions, path: &str) -> Result<Caller, AuthError> {
    let token = SasToken::parse(token.ok_or(AuthError::MissingToken)?)?;
    // A device-key token (no skn) is for the device endpoints, never the service API.
    let name = token.key_name().ok_or(AuthError::MissingField("SAS token for the service API", "skn"))?;
    let config = Config::of(env);
    let policy =
        config.policies.iter().find(|p| p.name == name).ok_or_else(|| AuthError::UnknownPolicy(name.to_owned()))?;
    token.verify(&policy.key, crate::clock::now().as_secs())?;
    let host = own_host(req, env);
    if host.is_empty() || !token.covers_request(&host, path) {
        return Err(AuthError::WrongResource(token.resource().to_owned()));
    }
    if !policy.permissions.contains(needed) {
        return Err(AuthError::PermissionDenied { policy: policy.name.clone(), needed: needed.name() });
    }
    Ok(Caller { policy: policy.name.clone(), permissions: policy.permissions, expiry_secs: token.expiry() })
}

/// The hub's host as the client addressed it, if it is one of the hub's own names
/// ([`crate::config::HOST_NAMES_VAR`]); empty otherwise, which no token covers.
pub fn own_host(req: &Request, env: &Env) -> String {
    own_name(hub_host(req), env)
}

/// `host` if it is one of the hub's own names ([`crate::config::HOST_NAMES_VAR`], or any name
/// when that is unset); empty otherwise, which no token covers. For MQTT over TCP the host is the one the
/// device names in its CONNECT user name (there is no Host header; TLS SNI is not exposed).
pub fn own_name(host: String, env: &Env) -> String {
    if host.len() > twinhub_core::session::MAX_HUB_NAME_LEN {
        return String::new();
    }
    match &Config::of(env).host_names {
        Some(names) if !names.iter().any(|n| n.eq_ignore_ascii_case(&host)) => String::new(),
        _ => host,
    }
}

/// The hub name a raw-TCP device addressed: the host of its CONNECT user name
/// (`{host}/{deviceId}/?api-version=...`), if it is one of the hub's own ([`own_name`]).
pub fn own_name_in_username(username: Option<&str>, env: &Env) -> String {
    own_name(username.map(twinhub_core::session::username_host).unwrap_or_default().to_owned(), env)
}

/// The client's address where the platform vouches for it: `CF-Connecting-IP` on Cloudflare
/// (whose requests carry `cf` properties, and whose edge sets the header). Empty elsewhere: local
/// workerd passes a client's own `CF-Connecting-IP` through, and a bound keyed by a forged
/// address would let one client evict another's connections.
pub fn client_address(req: &Request) -> String {
    if req.cf().is_none() {
        return String::new();
    }
    let address = req.headers().get("cf-connecting-ip").ok().flatten().unwrap_or_default();
    twinhub_core::admission::source_key(&address)
}

/// The hub's host name as the client addressed it (`127.0.0.1:8787` under `wrangler dev`): SAS
/// tokens name the hub by the host in the client's connection string.
pub fn hub_host(req: &Request) -> String {
    let Ok(url) = req.url() else { return String::new() };
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => String::new(),
    }
}
