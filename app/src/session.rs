//! The operator's credential: a service connection string, kept in sessionStorage (or
//! localStorage when the operator asks to be remembered), from which short-lived SAS tokens are
//! minted in the browser. The key never leaves the browser; only tokens do.

use leptos::prelude::*;
use twinhub_core::auth::{ConnectionString, Credential};

const STORAGE_KEY: &str = "twinhub.connectionString";
/// Minted tokens live this long; each request mints a fresh one, so there is nothing to renew.
const TOKEN_TTL_SECS: u64 = 15 * 60;

/// The signed-in credential, shared through context.
#[derive(Clone, Copy)]
pub struct Session {
    credential: RwSignal<Option<ConnectionString>>,
}

impl Session {
    /// Restores the session: a `#cs=<connection string>` fragment (the login URL `make dev`
    /// prints) wins and is removed from the address bar at once; otherwise storage.
    pub fn restore() -> Self {
        let from_fragment = take_fragment_credential();
        if let Some(cs) = &from_fragment {
            store(&cs.to_string(), false);
        }
        let credential = from_fragment.or_else(|| load().and_then(|s| ConnectionString::parse(&s).ok()));
        Self { credential: RwSignal::new(credential) }
    }

    /// Whether a credential is present.
    pub fn signed_in(&self) -> bool {
        self.credential.with(Option::is_some)
    }

    /// "policy @ host", for the header.
    pub fn label(&self) -> String {
        self.credential.with(|c| match c {
            Some(cs) => match &cs.credential {
                Credential::Policy { name, .. } => format!("{name} @ {}", cs.host_name),
                Credential::Device { device_id, .. } => format!("device {device_id} @ {}", cs.host_name),
            },
            None => String::new(),
        })
    }

    /// The hub's host name as the signed-in connection string gives it.
    pub fn host_name(&self) -> String {
        self.credential.with(|c| c.as_ref().map(|cs| cs.host_name.clone()).unwrap_or_default())
    }

    /// Parses and keeps `text`; a device connection string is refused (the dashboard needs a policy).
    pub fn sign_in(&self, text: &str, remember: bool) -> Result<(), String> {
        let cs = ConnectionString::parse(text).map_err(|e| e.to_string())?;
        if matches!(cs.credential, Credential::Device { .. }) {
            return Err(
                "that is a device connection string; the dashboard needs a shared access policy (e.g. iothubowner)"
                    .into(),
            );
        }
        store(&cs.to_string(), remember);
        self.credential.set(Some(cs));
        Ok(())
    }

    /// Forgets the credential everywhere.
    pub fn sign_out(&self) {
        for storage in [session_storage(), local_storage()].into_iter().flatten() {
            let _ = storage.remove_item(STORAGE_KEY);
        }
        self.credential.set(None);
    }

    /// The Event Hub-compatible endpoint's connection string for the signed-in policy, on the
    /// host this page was served from (AMQP over WebSocket reaches it there on both runtimes).
    pub fn eventhub_connection_string(&self) -> Option<String> {
        let cs = self.credential.get()?;
        let Credential::Policy { name, key } = &cs.credential else { return None };
        let host = window().location().host().ok()?;
        Some(twinhub_core::eventhub::connection_string(&host, name, key))
    }

    /// A fresh token for the hub this page was served from. The token's resource is the page's
    /// own host, since that is the hub the browser talks to.
    pub fn token(&self) -> Option<String> {
        self.token_for("", TOKEN_TTL_SECS)
    }

    /// A token for `path` under the page's host (`/devices/{id}` for one device) that lasts
    /// `ttl_secs`: what rides in a URL (the live view's), where a whole-hub, long-lived token
    /// could be copied from a log.
    pub fn token_for(&self, path: &str, ttl_secs: u64) -> Option<String> {
        let cs = self.credential.get_untracked()?;
        let Credential::Policy { name, key } = &cs.credential else { return None };
        let host = window().location().host().ok()?;
        let expiry = (js_sys::Date::now() / 1000.0) as u64 + ttl_secs;
        twinhub_core::auth::sign(&format!("{host}{path}"), key, Some(name), expiry).ok()
    }
}

fn take_fragment_credential() -> Option<ConnectionString> {
    ConnectionString::parse(&take_fragment("cs")?).ok()
}

/// The value of `#{name}=...` in the address (percent-decoded), removed from the address bar
/// and history before anything else happens: fragments carry keys (`cs` signs an operator in,
/// `device` starts a virtual device), which must not linger.
pub fn take_fragment(name: &str) -> Option<String> {
    let location = window().location();
    let hash = location.hash().ok()?;
    let encoded = hash.strip_prefix('#')?.strip_prefix(name)?.strip_prefix('=')?;
    let text = percent_encoding::percent_decode_str(encoded).decode_utf8().ok()?.into_owned();
    if let Ok(history) = window().history() {
        let path = location.pathname().unwrap_or_else(|_| "/".into());
        let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&path));
    }
    Some(text)
}

fn store(text: &str, remember: bool) {
    let target = if remember { local_storage() } else { session_storage() };
    if let Some(storage) = target {
        let _ = storage.set_item(STORAGE_KEY, text);
    }
}

fn load() -> Option<String> {
    [session_storage(), local_storage()].into_iter().flatten().find_map(|s| s.get_item(STORAGE_KEY).ok().flatten())
}

fn session_storage() -> Option<web_sys::Storage> {
    window().session_storage().ok().flatten()
}

fn local_storage() -> Option<web_sys::Storage> {
    window().local_storage().ok().flatten()
}
