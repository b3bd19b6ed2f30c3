//! What the signed-in policy may do, asked of the hub (`GET /api/session`), so the console can
//! disable what would fail and say why, instead of letting the operator meet a 401.

use crate::api;
use crate::session::Session;
use leptos::prelude::*;

/// Write rights of the signed-in policy, shared through context.
#[derive(Clone, Copy)]
pub struct Access {
    /// `Some(reason)` when the console is read-only; `None` while unknown or when writes work.
    pub read_only: Signal<Option<String>>,
}

impl Access {
    /// Asks the hub once per sign-in.
    pub fn load(session: Session) -> Self {
        let info = LocalResource::new(move || {
            // Re-ask when the operator signs in as someone else.
            let _ = session.label();
            api::session_info(session)
        });
        let read_only = Signal::derive(move || {
            let value = info.get()?.ok()?;
            let policy = value["policy"].as_str().unwrap_or_default().to_owned();
            let has = |p: &str| value["permissions"].as_array().is_some_and(|a| a.iter().any(|x| x == p));
            let missing: Vec<&str> = ["RegistryWrite", "ServiceConnect"].into_iter().filter(|p| !has(p)).collect();
            (!missing.is_empty()).then(|| {
                format!(
                    "Read-only: policy {policy} lacks {}, so creating, deleting and editing are off.",
                    missing.join(" and ")
                )
            })
        });
        Self { read_only }
    }

    /// Whether edits are off.
    pub fn is_read_only(&self) -> bool {
        self.read_only.with(Option::is_some)
    }
}
