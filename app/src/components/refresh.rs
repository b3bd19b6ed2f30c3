//! The pace at which a page asks the hub again: every period while the page is visible, less
//! often after failures (each doubles the wait, up to [`MAX_PERIODS`] periods), back to every
//! period after a success. The hub counts the overview and the fleet reads as queries, which a
//! tier throttles: an open console must not use that budget up, nor keep asking while refused.

use crate::api::ApiError;
use leptos::prelude::*;
use std::future::Future;

/// The most periods between two asks after failures.
const MAX_PERIODS: u32 = 8;

/// A refresh signal; `tick` moves when the page should ask again.
#[derive(Clone, Copy)]
pub struct Refresh {
    pub tick: RwSignal<u32>,
    /// Periods between asks now.
    every: RwSignal<u32>,
}

impl Refresh {
    /// Starts ticking every `period_ms` for as long as the calling component is mounted.
    pub fn new(period_ms: u64) -> Self {
        let tick = RwSignal::new(0u32);
        let every = RwSignal::new(1u32);
        let waited = RwSignal::new(0u32);
        let step = move || {
            // A hidden tab asks for nothing; it catches up on the first period it is seen.
            if document().hidden() {
                return;
            }
            let _ = waited.try_update(|w| *w += 1);
            if waited.try_get_untracked().unwrap_or(0) >= every.try_get_untracked().unwrap_or(1) {
                let _ = waited.try_set(0);
                let _ = tick.try_update(|t| *t += 1);
            }
        };
        if let Ok(handle) = set_interval_with_handle(step, std::time::Duration::from_millis(period_ms)) {
            on_cleanup(move || handle.clear());
        }
        Self { tick, every }
    }

    /// What the last ask came to: a failure (a refusal, a throttle) slows the next.
    pub fn answered(&self, ok: bool) {
        let _ = self.every.try_update(|e| *e = if ok { 1 } else { (*e * 2).min(MAX_PERIODS) });
    }

    /// A resource asked again at each tick (and, as any resource, when a signal `ask` reads
    /// before its future changes), its answers pacing the ticks.
    pub fn resource<T, Fut>(self, ask: impl Fn() -> Fut + 'static) -> LocalResource<Result<T, ApiError>>
    where
        T: 'static,
        Fut: Future<Output = Result<T, ApiError>> + 'static,
    {
        LocalResource::new(move || {
            self.tick.track();
            let asked = ask();
            async move {
                let answer = asked.await;
                self.answered(answer.is_ok());
                answer
            }
        })
    }
}

/// The newest good answer of a refreshed resource and the latest failure, if the newest
/// answer is one: the good answer stays on screen while the next is asked for and when one
/// fails (the failure shown beside it).
#[derive(Clone, Copy)]
pub struct Latest<T: Send + Sync + 'static> {
    pub value: RwSignal<Option<T>>,
    pub error: RwSignal<Option<String>>,
}

impl<T: Clone + Send + Sync + 'static> Latest<T> {
    /// Follows `answers`.
    pub fn of(answers: LocalResource<Result<T, ApiError>>) -> Self {
        let value = RwSignal::new(None::<T>);
        let error = RwSignal::new(None::<String>);
        Effect::new(move |_| match answers.get() {
            Some(Ok(v)) => {
                value.set(Some(v));
                error.set(None);
            }
            Some(Err(e)) => error.set(Some(e.to_string())),
            None => {}
        });
        Self { value, error }
    }
}
