//! Staged rollouts (twinhub's own): a twin update applied in waves, a canary share first. Each
//! wave is watched through the devices' reported properties ([`crate::twin::drift`]): a device
//! has succeeded when every desired property of the update is caught up, failed when it refused
//! one (`ac` >= 400). The rollout pauses itself when a wave's failures pass the threshold or
//! when the wave's deadline passes with devices still pending.

use crate::twin::drift::{drift, DriftState};
use crate::{ErrorCode, HubError, UnixMillis};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Wave ends when the request gives none: a 10% canary, then everyone.
pub const DEFAULT_WAVES: [u8; 2] = [10, 100];
/// Failure share that pauses a wave when the request gives none, percent.
pub const DEFAULT_FAILURE_THRESHOLD: u8 = 10;
/// How long a wave may take to catch up when the request gives no deadline, seconds.
pub const DEFAULT_WAVE_DEADLINE_SECS: u64 = 600;
/// Most waves one rollout may have.
pub const MAX_WAVES: usize = 20;

/// How a rollout is staged, as requested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPlan {
    /// Cumulative share of the fleet at the end of each wave, percent, increasing, ending at 100.
    pub waves: Vec<u8>,
    /// A wave pauses the rollout when more than this share of its devices refused, percent.
    pub failure_threshold_percent: u8,
    /// A wave pauses the rollout when devices are still pending this long after it started.
    pub wave_deadline_seconds: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PlanBody {
    waves: Option<Vec<Value>>,
    canary_percent: Option<Value>,
    failure_threshold_percent: Option<Value>,
    wave_deadline_seconds: Option<Value>,
}

fn invalid(message: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::ArgumentInvalid, message)
}

fn percent(v: &Value, what: &str) -> Result<u8, HubError> {
    v.as_u64()
        .filter(|n| *n <= 100)
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(|| invalid(format!("rollout.{what} must be a whole percentage from 0 to 100, not {v}")))
}

impl RolloutPlan {
    /// Reads the request's `rollout` object: `waves` (cumulative percentages) or
    /// `canaryPercent` (one canary wave, then the rest), `failureThresholdPercent`,
    /// `waveDeadlineSeconds`.
    pub fn parse(v: &Value) -> Result<Self, HubError> {
        let b: PlanBody = serde_json::from_value(v.clone()).map_err(|e| invalid(format!("invalid rollout: {e}")))?;
        let mut waves = match (b.waves, b.canary_percent) {
            (Some(_), Some(_)) => return Err(invalid("rollout takes waves or canaryPercent, not both")),
            (Some(w), None) => w.iter().map(|p| percent(p, "waves")).collect::<Result<Vec<_>, _>>()?,
            (None, Some(c)) => vec![percent(&c, "canaryPercent")?, 100],
            (None, None) => DEFAULT_WAVES.to_vec(),
        };
        if waves.last() != Some(&100) {
            waves.push(100);
        }
        if waves.len() > MAX_WAVES || waves.windows(2).any(|w| w[0] >= w[1]) || waves.first() == Some(&0) {
            return Err(invalid(format!(
                "rollout.waves must rise strictly from above 0 to 100, at most {MAX_WAVES} of them: {waves:?}"
            )));
        }
        let failure_threshold_percent = match b.failure_threshold_percent {
            None | Some(Value::Null) => DEFAULT_FAILURE_THRESHOLD,
            Some(v) => percent(&v, "failureThresholdPercent")?,
        };
        let wave_deadline_seconds = match b.wave_deadline_seconds {
            None | Some(Value::Null) => DEFAULT_WAVE_DEADLINE_SECS,
            Some(v) => {
                v.as_u64().filter(|n| (1..=super::request::MAX_EXECUTION_SECS).contains(n)).ok_or_else(|| {
                    invalid(format!("rollout.waveDeadlineSeconds must be a whole number of seconds from 1, not {v}"))
                })?
            }
        };
        Ok(Self { waves, failure_threshold_percent, wave_deadline_seconds })
    }

    /// The wave of each of `n` devices taken in rollout order: the first `ceil(n * w0 / 100)`
    /// (at least one) are wave 0, and so on.
    pub fn wave_of(&self, position: usize, n: usize) -> usize {
        let mut end_prev = 0;
        for (i, pct) in self.waves.iter().enumerate() {
            let end = (n * usize::from(*pct)).div_ceil(100).max(end_prev + 1).min(n);
            if position < end {
                return i;
            }
            end_prev = end;
        }
        self.waves.len().saturating_sub(1)
    }
}

/// Where a running rollout is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    pub plan: RolloutPlan,
    /// The wave being applied or watched.
    pub wave: usize,
    /// When the current wave started (its deadline counts from here).
    pub wave_started: Option<UnixMillis>,
    /// The operator resumed this wave after it paused on failures: its failures are accepted.
    #[serde(default)]
    pub failures_accepted: bool,
}

impl RolloutState {
    pub fn new(plan: RolloutPlan) -> Self {
        Self { plan, wave: 0, wave_started: None, failures_accepted: false }
    }
}

/// The devices of one wave, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaveTally {
    pub size: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Patched, not yet caught up (or not yet patched).
    pub pending: usize,
}

/// What a rollout does next with its current wave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep watching.
    Wait,
    /// Every device settled within the threshold: start the next wave.
    NextWave,
    /// Stop and wait for the operator, saying why.
    Pause(String),
}

/// Judges the current wave at `now`.
pub fn judge(state: &RolloutState, tally: WaveTally, now: UnixMillis) -> Verdict {
    let plan = &state.plan;
    let over_threshold = tally.size > 0
        && tally.failed * 100 > tally.size * usize::from(plan.failure_threshold_percent)
        && !state.failures_accepted;
    if over_threshold {
        return Verdict::Pause(format!(
            "wave {} of {}: {} of {} devices refused the update, more than the {}% threshold",
            state.wave + 1,
            plan.waves.len(),
            tally.failed,
            tally.size,
            plan.failure_threshold_percent
        ));
    }
    if tally.pending == 0 {
        return Verdict::NextWave;
    }
    let deadline = state.wave_started.map(|t| t.0.saturating_add(plan.wave_deadline_seconds.saturating_mul(1000)));
    if deadline.is_some_and(|d| now.0 >= d) {
        return Verdict::Pause(format!(
            "wave {} of {}: {} of {} devices had not caught up after {} s",
            state.wave + 1,
            plan.waves.len(),
            tally.pending,
            tally.size,
            plan.wave_deadline_seconds
        ));
    }
    Verdict::Wait
}

/// One device's answer to the update, read from its twin (service JSON): refused if any of the
/// update's desired properties was refused, caught up if all are, pending otherwise.
pub fn device_outcome(twin: &Value, desired_names: &[String]) -> (DriftState, Option<String>) {
    let rows = drift(twin);
    let mut state = DriftState::CaughtUp;
    for name in desired_names {
        // A component's properties are rows of their own (`{component}.{property}`).
        let component = format!("{name}.");
        let mine: Vec<_> = rows.iter().filter(|r| &r.name == name || r.name.starts_with(&component)).collect();
        if let Some(r) = mine.iter().find(|r| r.state == DriftState::Refused) {
            let why = r.ack.as_ref().and_then(|a| a.description.clone());
            let code = r.ack.as_ref().map_or(0, |a| a.code);
            let refused = &r.name;
            return (
                DriftState::Refused,
                Some(format!("{refused} refused ({code}){}", why.map(|w| format!(": {w}")).unwrap_or_default())),
            );
        }
        if mine.is_empty() || mine.iter().any(|r| r.state != DriftState::CaughtUp) {
            state = DriftState::Pending;
        }
    }
    (state, None)
}

/// A stable, well-spread order for the devices of a rollout: by a hash of job and device id,
/// so a canary wave is a sample across buildings and models rather than the first ids.
pub fn order_key(job_id: &str, device_id: &str) -> u64 {
    job_id
        .bytes()
        .chain([0])
        .chain(device_id.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}
