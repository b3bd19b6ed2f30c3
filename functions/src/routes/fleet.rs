//! `/api/fleet/...`: telemetry across the fleet, and the overview. Every stored
//! device-to-cloud message also passes through an Event Hub partition (`objects/partition.rs`),
//! which keeps the device, its `alert` property and its body as JSON beside it; so a field's
//! series over the devices a condition selects, or the newest alerts, is one statement per
//! partition, merged here (`core::telemetry::merge`), never a call per device. The overview
//! asks each store once and makes one answer of theirs (`core::overview`).

use crate::config::Config;
use crate::http::{self, ApiError, ApiResult};
use crate::objects::jobs::jobs_stub;
use crate::objects::partition::{partition_stub, MAX_ALERTS};
use crate::objects::{ask_every_index_shard, index_ids, index_rows};
use crate::routes::statistics;
use crate::rpc::{self, IndexOp, JobOp, PartitionOp, ShardOverview, ShardStatistics};
use futures_util::future::try_join_all;
use serde::Deserialize;
use serde_json::Value;
use twinhub_core::eventhub::Event;
use twinhub_core::job::request::condition_query;
use twinhub_core::overview::{self, PartitionActivity};
use twinhub_core::query::sql;
use twinhub_core::telemetry::{json_path, merge, partition_reads, Partial, Window, MAX_KEYS_BYTES};
use twinhub_core::wire::overview::{DeviceCounts, Overview, RunningJobs};
use twinhub_core::wire::telemetry::SeriesBucket;
use twinhub_core::wire::{FleetAlert, FleetAlerts, FleetSeries};
use twinhub_core::{ErrorCode, HubError};
use worker::{Env, Request};

/// How far back a request that names no start looks.
const DEFAULT_SPAN_MS: u64 = 3_600_000;
/// The most devices a condition may select: their ids travel to the partitions (each its own
/// share, in pieces of at most `MAX_KEYS_BYTES` of JSON), at most a few dozen calls.
const MAX_SELECTED: usize = 100_000;

/// `POST /api/fleet/telemetry`.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct SeriesRequest {
    /// A WHERE condition of a device query (`tags.location.building = 'A'`); none or `*`:
    /// every device (and module).
    condition: Option<String>,
    /// A body field's dotted path.
    field: String,
    /// Unix ms; default: the last hour.
    from: Option<u64>,
    to: Option<u64>,
    /// Default 60, at most 1,000.
    buckets: Option<usize>,
}

/// `POST /api/fleet/alerts`.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct AlertsRequest {
    condition: Option<String>,
    /// Unix ms; default: an hour ago.
    since: Option<u64>,
    /// Default 50, at most 200.
    limit: Option<usize>,
}

/// `POST /api/fleet/telemetry` `{"condition", "field", "from", "to", "buckets"}`: the field's
/// min / max / average per time bucket over every message of the selected devices.
pub async fn telemetry(mut req: Request, env: &Env) -> ApiResult {
    let asked: SeriesRequest = body(&mut req).await?;
    let path = json_path(&asked.field)?;
    let to = asked.to.unwrap_or_else(|| crate::clock::now().0 + 1);
    let from = asked.from.unwrap_or(to.saturating_sub(DEFAULT_SPAN_MS));
    let window = Window::new(from, to, asked.buckets.unwrap_or(60))?;
    let partitions = partitions(env)?;
    let devices = selected(env, asked.condition.as_deref()).await?;
    let reads = partition_reads(devices.as_deref(), partitions, MAX_KEYS_BYTES);
    let calls = reads.into_iter().map(|(p, devices)| {
        let op = PartitionOp::Series { path: path.clone(), window, devices };
        async move { rpc::call::<_, Vec<Partial>>(&partition_stub(env, p).map_err(rpc::unreachable)?, &op).await }
    });
    let partials = try_join_all(calls).await?.into_iter().flatten();
    let buckets = merge(&window, partials)
        .into_iter()
        .map(|b| SeriesBucket { start: b.start, count: b.count, min: b.min, max: b.max, avg: b.avg })
        .collect();
    let answer = FleetSeries { field: asked.field, from, to, devices: devices.map(|d| d.len() as u64), buckets };
    Ok(http::json(200, &answer, None)?)
}

/// `POST /api/fleet/alerts` `{"condition", "since", "limit"}`: the newest messages with an
/// `alert` property (the article's `alert = high_temperature`) from the selected devices.
pub async fn alerts(mut req: Request, env: &Env) -> ApiResult {
    let asked: AlertsRequest = body(&mut req).await?;
    let since = asked.since.unwrap_or_else(|| crate::clock::now().0.saturating_sub(DEFAULT_SPAN_MS));
    let limit = asked.limit.unwrap_or(50).clamp(1, MAX_ALERTS);
    let partitions = partitions(env)?;
    let devices = selected(env, asked.condition.as_deref()).await?;
    let reads = partition_reads(devices.as_deref(), partitions, MAX_KEYS_BYTES);
    let calls = reads.into_iter().map(|(p, devices)| {
        let op = PartitionOp::Alerts { since, devices, limit };
        async move { rpc::call::<_, Vec<Event>>(&partition_stub(env, p).map_err(rpc::unreachable)?, &op).await }
    });
    let mut events: Vec<Event> = try_join_all(calls).await?.into_iter().flatten().collect();
    events.sort_by(|a, b| b.enqueued.cmp(&a.enqueued).then(b.sequence_number.cmp(&a.sequence_number)));
    events.truncate(limit);
    let alerts = events.into_iter().map(alert).collect();
    Ok(http::json(200, &FleetAlerts { alerts }, None)?)
}

fn alert(event: Event) -> FleetAlert {
    let text = String::from_utf8_lossy(&event.body).into_owned();
    let value = event.properties.iter().find(|(k, _)| k == "alert").and_then(|(_, v)| v.clone());
    FleetAlert {
        device_id: event.device_id,
        module_id: event.module_id,
        enqueued_time: event.enqueued.to_iso(),
        alert: value.unwrap_or_default(),
        properties: event.properties,
        body: serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
    }
}

/// A request body as `T`: 400006 when it is not JSON, 400004 when its fields are wrong.
async fn body<T: serde::de::DeserializeOwned>(req: &mut Request) -> Result<T, ApiError> {
    let text = http::body_text(req).await?;
    serde_json::from_str(&text).map_err(|e| HubError::unreadable("invalid request", &e).into())
}

/// The Event Hub partitions, which hold what fleet reads read.
fn partitions(env: &Env) -> Result<u32, HubError> {
    match Config::of(env).eventhub_partitions {
        0 => Err(HubError::new(
            ErrorCode::FeatureUnavailable,
            "fleet telemetry reads the event stream, which is off (EVENTHUB_PARTITIONS=0)",
        )),
        n => Ok(n),
    }
}

/// The device keys `condition` selects, from the fleet index (`None`: no condition, every
/// device and module).
async fn selected(env: &Env, condition: Option<&str>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(condition) = condition.map(str::trim).filter(|c| !c.is_empty() && *c != "*") else { return Ok(None) };
    let ids = index_ids(env, &condition_query(condition)?).await?;
    if ids.len() > MAX_SELECTED {
        return Err(HubError::new(
            ErrorCode::ArgumentInvalid,
            format!("the condition selects {} devices; fleet telemetry reads at most {MAX_SELECTED} (narrow it, or ask without one)", ids.len()),
        )
        .into());
    }
    Ok(Some(ids))
}

/// The path alerts are broken down by when the request names none (the article's buildings).
const DEFAULT_ALERTS_BY: &str = "tags.location.building";

/// `GET /api/fleet/overview?by=<twin path>`: the console's first page in one answer, every
/// store asked once and at once: the index shards (counts, connected samples, lag: one call
/// each), the partitions (messages and alerts per minute, alerting devices), the jobs object;
/// then the breakdown's value in the alerting devices' twins. With the event stream off the activity is
/// `null` and the alerts zero.
pub async fn overview(req: Request, env: &Env) -> ApiResult {
    let by = http::query_param(&req, "by").filter(|b| !b.is_empty()).unwrap_or_else(|| DEFAULT_ALERTS_BY.to_owned());
    let path = overview::twin_path(&by)?;
    let now = crate::clock::now().0;
    let (from, to) = overview::window(now);
    let partitions = Config::of(env).eventhub_partitions;
    let activity = async {
        let calls = (0..partitions).map(|p| async move {
            let op = PartitionOp::Activity { from, to };
            rpc::call::<_, PartitionActivity>(&partition_stub(env, p).map_err(rpc::unreachable)?, &op).await
        });
        try_join_all(calls).await.map_err(ApiError::from)
    };
    let shards = async {
        let op = IndexOp::Overview { since: from };
        ask_every_index_shard::<ShardOverview>(env, &op).await.map_err(ApiError::from)
    };
    let jobs = async {
        let stub = jobs_stub(env).map_err(rpc::unreachable)?;
        rpc::call::<_, RunningJobs>(&stub, &JobOp::Running).await.map_err(ApiError::from)
    };
    let (activity, shards, jobs) = futures_util::try_join!(activity, shards, jobs)?;
    let counts = shards.iter().fold(ShardStatistics::default(), |a, s| statistics::sum(a, &s.statistics));
    let samples: Vec<Vec<(u64, u64)>> = shards.iter().map(|s| s.samples.clone()).collect();
    // The breakdown reads one value of each alerting device's twin, not the twins.
    let alerting = overview::alerting(&activity);
    let values = match alerting.is_empty() {
        true => Default::default(),
        false => {
            let ids = alerting.iter().map(|(d, _)| d.as_str());
            index_rows(env, ids, |ids| sql::values_statement(ids, &path)).await?
        }
    };
    let buckets = overview::activity(from, to, &activity);
    let answer = Overview {
        devices: DeviceCounts {
            total: counts.total,
            enabled: counts.enabled,
            disabled: counts.total.saturating_sub(counts.enabled),
            connected: counts.connected,
            disconnected: counts.total.saturating_sub(counts.connected),
            drifting: counts.drifting,
            refused: counts.refused,
        },
        from,
        to,
        connected: overview::connected(from, to, &samples, counts.connected),
        alerts: buckets.iter().map(|b| b.alerts).sum(),
        activity: (partitions > 0).then_some(buckets),
        alert_groups: overview::alert_groups(&alerting, &values),
        alerts_by: by,
        index_lag_ms: shards.iter().map(|s| s.lag.p99_ms).max().unwrap_or(0),
        jobs,
    };
    Ok(http::json(200, &answer, None)?)
}
