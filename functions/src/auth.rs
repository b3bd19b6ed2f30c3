//! Who is calling: checks the `Authorization` SAS token against the hub's policies.

use twinhub_core::auth::{AuthError, Permissions, Policy, SasToken};
use twinhub_core::HubError;
use worker::{Env, Request};

/// Name of the Worker variable holding the owner policy's key (base64). `make dev` writes it to
/// `.dev.vars`; deployments set it with `wrangler secret put`.
pub const OWNER_KEY_VAR: &str = "TWINHUB_OWNER_KEY";

/// Name of the optional Worker variable (JSON) that adds or overrides shared access policies;
/// see `twinhub_core::auth::Policy::all`.
pub const POLICIES_VAR: &str = "TWINHUB_POLICIES";

/// Who made an authorized request.
pub struct Caller {
    /// The policy whose key signed the token: the actor in the twin history.
    pub policy: String,
    /// What that policy may do.
    pub permissions: Permissions,
    /// When the token expires, Unix seconds.
    pub expiry_secs: u64,
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
    let policy =
        policies(env).into_iter().find(|p| p.name == name).ok_or_else(|| AuthError::UnknownPolicy(name.to_owned()))?;
    token.verify(&policy.key, crate::clock::now().as_secs())?;
    let host = own_host(req, env);
    if host.is_empty() || !token.covers_request(&host, path) {
        return Err(AuthError::WrongResource(token.resource().to_owned()));
    }
    if !policy.permissions.contains(needed) {
        return Err(AuthError::PermissionDenied { policy: policy.name, needed: needed.name() });
    }
    Ok(Caller { policy: policy.name, permissions: policy.permissions, expiry_secs: token.expiry() })
}

/// Variable: the hub's own host names (comma-separated, with the port where it is not the
/// scheme's), e.g. `hub.example.com,127.0.0.1:8787`. When set, a request addressed to any other
/// name is treated as naming no hub: every token is refused there. When unset, the hub answers
/// to whatever host it is addressed by (the local default, where `localhost` and `127.0.0.1`
/// both work).
pub const HOST_NAMES_VAR: &str = "TWINHUB_HOST_NAMES";

/// The hub's host as the client addressed it, if it is one of the hub's own names
/// ([`HOST_NAMES_VAR`]); empty otherwise, which no token covers.
pub fn own_host(req: &Request, env: &Env) -> String {
    own_name(hub_host(req), env)
}

/// `host` if it is one of the hub's own names ([`HOST_NAMES_VAR`], or any name when that is
/// unset); empty otherwise, which no token covers. For MQTT over TCP the host is the one the
/// device names in its CONNECT user name (there is no Host header; TLS SNI is not exposed).
pub fn own_name(host: String, env: &Env) -> String {
    if host.len() > twinhub_core::session::MAX_HUB_NAME_LEN {
        return String::new();
    }
    let Some(names) = env.var(HOST_NAMES_VAR).ok().map(|v| v.to_string()).filter(|n| !n.trim().is_empty()) else {
        return host;
    };
    if names.split(',').any(|n| n.trim().eq_ignore_ascii_case(&host)) {
        host
    } else {
        String::new()
    }
}

/// The hub name a raw-TCP device addressed: the host of its CONNECT user name
/// (`{host}/{deviceId}/?api-version=...`), if it is one of the hub's own ([`own_name`]).
pub fn own_name_in_username(username: Option<&str>, env: &Env) -> String {
    own_name(username.map(twinhub_core::session::username_host).unwrap_or_default().to_owned(), env)
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

/// The hub's policies: the owner policy from [`OWNER_KEY_VAR`], the built-in ones, and any from
/// [`POLICIES_VAR`]. No owner key, no policies: every request is refused.
pub fn policies(env: &Env) -> Vec<Policy> {
    let Some(owner_key) = env.var(OWNER_KEY_VAR).ok().map(|v| v.to_string()).filter(|k| !k.trim().is_empty()) else {
        worker::console_error!("{OWNER_KEY_VAR} is not set: every request will be refused");
        return Vec::new();
    };
    let config = env.var(POLICIES_VAR).ok().map(|v| v.to_string());
    match Policy::all(&owner_key, config.as_deref()) {
        Ok(all) => all,
        Err(e) => {
            // Only the message goes to the log: it never contains a key.
            worker::console_error!("{e}; falling back to the owner policy alone");
            vec![Policy::owner(owner_key)]
        }
    }
}
