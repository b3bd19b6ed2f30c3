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
    /// Upstream mode: the IoT Hub this twinhub fronts.
    pub upstream: Signal<Option<String>>,
    /// The hub has answered (or failed to): what it said is known.
    known: Signal<bool>,
    /// Upstream mode: twinhub's own features that are off, each with the reason.
    unavailable: Signal<Vec<(String, String)>>,
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
            let info = info.get()?.ok()?;
            let policy = info.policy.clone();
            let missing: Vec<&str> = ["RegistryWrite", "ServiceConnect"].into_iter().filter(|p| !info.may(p)).collect();
            (!missing.is_empty()).then(|| {
                format!(
                    "Read-only: policy {policy} lacks {}, so creating, deleting and editing are off.",
                    missing.join(" and ")
                )
            })
        });
        let upstream = Signal::derive(move || info.get()?.ok()?.upstream);
        let unavailable = Signal::derive(move || {
            let Some(Ok(info)) = info.get() else { return Vec::new() };
            info.unavailable.into_iter().map(|u| (u.feature, u.reason)).collect()
        });
        let known = Signal::derive(move || info.with(Option::is_some));
        Self { read_only, upstream, unavailable, known }
    }

    /// Whether `feature` works here: `None` until the hub has said, then `Err` with why not.
    /// A page that would only be refused waits for this before it asks.
    pub fn feature(&self, feature: &str) -> Option<Result<(), String>> {
        self.known.get().then(|| self.unavailable(feature).map_or(Ok(()), Err))
    }

    /// Why `feature` (`history`, `telemetry`, `live`, `messages`, `rollouts`) is off, in
    /// upstream mode; `None` when it works.
    pub fn unavailable(&self, feature: &str) -> Option<String> {
        self.unavailable.with(|u| {
            u.iter().find(|(f, _)| f == feature).map(|(_, why)| format!("Not available in upstream mode: {why}."))
        })
    }

    /// Whether edits are off.
    pub fn is_read_only(&self) -> bool {
        self.read_only.with(Option::is_some)
    }
}
