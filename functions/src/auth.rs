//! Who is calling: checks the `Authorization` SAS token against the hub's policies.

use twinhub_core::auth::{AuthError, Permissions, Policy, SasToken};
use twinhub_core::HubError;
use worker::{Env, Request};

/// Name of the Worker variable holding the owner policy's key (base64). `make dev` writes it to
/// `.dev.vars`; deployments set it with `wrangler secret put`.
pub const OWNER_KEY_VAR: &str = "TWINHUB_OWNER_KEY";

/// Requires a valid, unexpired token, signed by a policy with the `needed` permission, whose
/// resource covers this hub. Every REST route that touches a device or twin calls this first.
pub fn require(req: &Request, env: &Env, needed: Permissions) -> Result<(), HubError> {
    check(req, env, needed).map_err(|e| HubError::from(&e))
}

fn check(req: &Request, env: &Env, needed: Permissions) -> Result<(), AuthError> {
    let header = req.headers().get("authorization").ok().flatten().ok_or(AuthError::MissingToken)?;
    let token = SasToken::parse(&header)?;
    let name = token.key_name().ok_or(AuthError::MissingField("SAS token for the service API", "skn"))?;
    let policy = policy(env, name).ok_or_else(|| AuthError::UnknownPolicy(name.to_owned()))?;
    token.verify(&policy.key, crate::clock::now().as_secs())?;
    let host = hub_host(req);
    if !token.covers(&host) {
        return Err(AuthError::WrongResource(token.resource().to_owned()));
    }
    if !policy.permissions.contains(needed) {
        return Err(AuthError::PermissionDenied { policy: policy.name, needed: needed.name() });
    }
    Ok(())
}

/// The hub's host name as the client addressed it (`127.0.0.1:8787` under `wrangler dev`): SAS
/// tokens name the hub by the host in the client's connection string.
fn hub_host(req: &Request) -> String {
    let Ok(url) = req.url() else { return String::new() };
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => String::new(),
    }
}

/// The policy named `name`, if this hub has one with a key configured.
fn policy(env: &Env, name: &str) -> Option<Policy> {
    if name != twinhub_core::auth::OWNER_POLICY {
        return None;
    }
    let key = env.var(OWNER_KEY_VAR).ok()?.to_string();
    (!key.trim().is_empty()).then(|| Policy::owner(key))
}
