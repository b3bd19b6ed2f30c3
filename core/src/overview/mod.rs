//! The fleet overview's figures, from what each store holds: the index shards' device counts
//! and their connected-device samples, the Event Hub partitions' message and alert counts per
//! minute, the alerting devices' tag values. Each store answers a partial; the rules that
//! make one overview of them live here, sans-I/O.

use crate::query::ast::Path;
use crate::wire::overview::{ActivityBucket, AlertGroup, ConnectedPoint};
use crate::{ErrorCode, HubError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// A minute, the overview's bucket.
pub const MINUTE_MS: u64 = 60_000;
/// The span the overview's series cover.
pub const SPAN_MS: u64 = 60 * MINUTE_MS;
/// How long an index shard keeps its connected-device samples.
pub const SAMPLE_RETENTION_MS: u64 = 24 * 60 * MINUTE_MS;
/// The most alerting devices a partition names (the busiest first); the rest count in the
/// alert total, not in a group.
pub const MAX_ALERTING_DEVICES: usize = 1_000;
/// The most groups an alert breakdown shows (the largest first).
pub const MAX_ALERT_GROUPS: usize = 50;

/// One partition's activity over a window: messages and alerts per minute, and the devices
/// that alerted with how often.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionActivity {
    /// (minute index in the window, messages, alerts), minutes with messages only.
    pub minutes: Vec<(u64, u64, u64)>,
    /// (device key, alerts), at most [`MAX_ALERTING_DEVICES`].
    pub alerting: Vec<(String, u64)>,
}

/// The start of the minute holding `at` (Unix ms).
pub fn minute_of(at: u64) -> u64 {
    at - at % MINUTE_MS
}

/// The overview's window: the [`SPAN_MS`] of whole minutes ending with the one holding `now`.
pub fn window(now: u64) -> (u64, u64) {
    let to = minute_of(now) + MINUTE_MS;
    (to.saturating_sub(SPAN_MS), to)
}

/// The partitions' minutes as one series over `[from, to)`: a bucket for every minute, zero
/// where nothing arrived.
pub fn activity(from: u64, to: u64, partitions: &[PartitionActivity]) -> Vec<ActivityBucket> {
    let minutes = (to.saturating_sub(from) / MINUTE_MS) as usize;
    let mut buckets: Vec<ActivityBucket> =
        (0..minutes).map(|i| ActivityBucket { start: from + i as u64 * MINUTE_MS, messages: 0, alerts: 0 }).collect();
    for &(i, messages, alerts) in partitions.iter().flat_map(|p| &p.minutes) {
        if let Some(b) = buckets.get_mut(i as usize) {
            b.messages += messages;
            b.alerts += alerts;
        }
    }
    buckets
}

/// Connected devices per minute over `[from, to)`, summed over the index shards. A shard
/// samples its count at the end of each minute in which its devices changed (and whenever the
/// counts are asked for), so a minute without a sample carries the shard's previous one:
/// nothing changed. `samples` holds each shard's (minute, count) in time order, starting with
/// its last sample before `from` when it has one. A minute before some shard's first sample is
/// `None` (not known: a partial sum would show as a dip), and `now`, the count the shards
/// answered just now, is the last minute's value.
pub fn connected(from: u64, to: u64, samples: &[Vec<(u64, u64)>], now: u64) -> Vec<ConnectedPoint> {
    let minutes = (to.saturating_sub(from) / MINUTE_MS) as usize;
    let mut sums: Vec<(u64, usize)> = vec![(0, 0); minutes];
    for shard in samples {
        let mut next = 0;
        let mut current = None;
        for (i, sum) in sums.iter_mut().enumerate() {
            let start = from + i as u64 * MINUTE_MS;
            while let Some(&(minute, count)) = shard.get(next) {
                if minute > start {
                    break;
                }
                current = Some(count);
                next += 1;
            }
            if let Some(count) = current {
                sum.0 += count;
                sum.1 += 1;
            }
        }
    }
    let mut points: Vec<ConnectedPoint> = sums
        .into_iter()
        .enumerate()
        .map(|(i, (sum, known))| ConnectedPoint {
            start: from + i as u64 * MINUTE_MS,
            connected: (known == samples.len()).then_some(sum),
        })
        .collect();
    if let Some(last) = points.last_mut() {
        last.connected = Some(now);
    }
    points
}

/// A twin path the operator picks to break alerts down by (`tags.location.building`):
/// dotted names of letters, digits, `_` and `$`, at most 8 deep, so that it is also a path of
/// the query language (the console filters the fleet by a group's value with it).
pub fn twin_path(text: &str) -> Result<Path, HubError> {
    let invalid = || {
        HubError::new(
            ErrorCode::ArgumentInvalid,
            format!("'{text}' is not a twin path (dotted names of letters, digits, '_' or '$', at most 8)"),
        )
    };
    let names: Path = text.split('.').map(str::to_owned).collect();
    let valid = |n: &String| {
        !n.is_empty() && n.len() <= 128 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    if names.len() > 8 || !names.iter().all(valid) {
        return Err(invalid());
    }
    Ok(names)
}

/// Every partition's alerting devices as one list, the busiest first, at most
/// [`MAX_ALERTING_DEVICES`].
pub fn alerting(partitions: &[PartitionActivity]) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = partitions.iter().flat_map(|p| p.alerting.iter().cloned()).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(MAX_ALERTING_DEVICES);
    all
}

/// Alerts per value of the breakdown's path among the alerting devices (`values`: each
/// device's value, for those whose twin defines the path): the largest groups first, at most
/// [`MAX_ALERT_GROUPS`]. A device whose twin does not define it (or no longer exists) counts
/// under `None`.
pub fn alert_groups(alerting: &[(String, u64)], values: &HashMap<String, Value>) -> Vec<AlertGroup> {
    let mut groups: BTreeMap<String, (Option<Value>, u64)> = BTreeMap::new();
    for (device, n) in alerting {
        let value = values.get(device).cloned();
        let key = value.as_ref().map_or_else(String::new, |v| format!("={v}"));
        groups.entry(key).or_insert((value, 0)).1 += n;
    }
    let mut list: Vec<AlertGroup> = groups.into_values().map(|(value, alerts)| AlertGroup { value, alerts }).collect();
    list.sort_by_key(|g| std::cmp::Reverse(g.alerts));
    list.truncate(MAX_ALERT_GROUPS);
    list
}

#[cfg(test)]
mod tests;
