//! The benchmarks' routes (`/api/bench/...`), built only with the `bench` feature (`make test`
//! and the benchmark scripts build with it; `make dev` and `wrangler deploy` without) and
//! answered only when `TWINHUB_BENCH_ECHO=1`.

use crate::http::{self, ApiResult};
use serde_json::json;

/// `POST /api/bench/echo/{key}`: the Worker + Durable Object floor the PATCH benchmark compares
/// against. The request goes through the same Worker to one echo object per `key`, which
/// returns the body. Disabled unless `TWINHUB_BENCH_ECHO=1`; even then it takes a valid token
/// (any policy), so an enabled benchmark route is no open door to waking objects.
pub async fn echo(req: worker::Request, env: &worker::Env, key: &str) -> ApiResult {
    let stub = env.durable_object("BENCH_ECHO")?.get_by_name(key)?;
    Ok(stub.fetch_with_request(req).await?)
}

/// `POST /api/bench/write/{key}`: [`echo`] whose object first writes the body to its
/// SQLite: the bare Durable Object write floor the PATCH goal is stated against.
pub async fn write(req: worker::Request, env: &worker::Env, key: &str) -> ApiResult {
    let headers = req.headers().clone();
    headers.set(crate::objects::bench_echo::WRITE_HEADER, "1")?;
    let mut init = worker::RequestInit::new();
    let body = worker::wasm_bindgen::JsValue::from(req.inner().body());
    init.with_method(worker::Method::Post).with_headers(headers).with_body(Some(body));
    let forwarded = worker::Request::new_with_init(req.url()?.as_ref(), &init)?;
    let stub = env.durable_object("BENCH_ECHO")?.get_by_name(key)?;
    Ok(stub.fetch_with_request(forwarded).await?)
}

#[derive(serde::Deserialize)]
struct FleetSlice {
    seed: u64,
    start: usize,
    count: usize,
    /// Load each fixture device as this module of it instead (for `FROM devices.modules`).
    #[serde(default)]
    module: Option<String>,
}

/// The most devices one `POST /api/bench/fleet` generates.
const MAX_FLEET_SLICE: usize = 10_000;

/// `POST /api/bench/fleet` with `{"seed", "start", "count"}`: writes devices `start..start+count`
/// of the seeded fixture fleet (`twinhub_core::fixture`) straight into the fleet index, for the
/// query benchmark at 100,000 twins (creating that many device objects one by one would take the
/// benchmark's whole budget). Only the index holds these devices: queries see them, `GET /twins`
/// does not. Disabled unless `TWINHUB_BENCH_ECHO=1`, and needs RegistryWrite.
pub async fn fleet(mut req: worker::Request, env: &worker::Env) -> ApiResult {
    use crate::rpc::{IndexEntry, IndexOp};
    use twinhub_core::{ErrorCode, HubError};
    let body = http::body_text(&mut req).await?;
    let slice: FleetSlice = serde_json::from_str(&body)
        .map_err(|e| HubError::new(ErrorCode::IotHubFormatError, format!("expected {{seed, start, count}}: {e}")))?;
    if slice.count > MAX_FLEET_SLICE {
        return Err(HubError::new(ErrorCode::ArgumentInvalid, format!("count is at most {MAX_FLEET_SLICE}")).into());
    }
    let shards = crate::config::Config::of(env).index_shards;
    let now = crate::clock::now();
    let mut per_shard: Vec<Vec<IndexEntry>> = (0..shards).map(|_| Vec::new()).collect();
    for device in twinhub_core::fixture::fleet_slice(slice.seed, slice.start, slice.count) {
        let key = match &slice.module {
            Some(module) => twinhub_core::identity::module_key(&device.device_id, module),
            None => device.device_id.clone(),
        };
        let Some(twin) = device.twin_json_for(&key, now) else { continue };
        let identity = json!({
            "deviceId": device.device_id,
            "moduleId": slice.module,
            "status": "enabled",
            "connectionState": "Disconnected",
        });
        let shard = twinhub_core::fleet::shard_of(&key, shards) as usize;
        if let Some(list) = per_shard.get_mut(shard) {
            list.push(IndexEntry {
                device_id: key,
                seq: 1,
                identity: serde_json::value::to_raw_value(&identity).ok(),
                twin: serde_json::value::to_raw_value(&twin).ok(),
                committed_at: None,
                drift: twinhub_core::twin::drift::drift_counts(&twin),
            });
        }
    }
    for (shard, entries) in per_shard.into_iter().enumerate() {
        let index = crate::objects::IndexShard::of(env, shard as u32)?;
        index.call::<serde::de::IgnoredAny>(&IndexOp::Load { entries }).await?;
    }
    Ok(http::no_content()?)
}

/// Most messages one `POST /api/bench/telemetry` appends.
const MAX_TELEMETRY_SLICE: usize = 100_000;

#[derive(serde::Deserialize)]
struct TelemetrySlice {
    /// Devices `start..start+count` of the fixture fleet (`sensor-{i:06}`).
    start: usize,
    count: usize,
    /// Messages per device.
    messages: usize,
    /// Every how many messages one carries `alert=high_temperature` (0: none).
    #[serde(default)]
    alert_every: usize,
}

/// `POST /api/bench/telemetry` with `{"start", "count", "messages", "alert_every"}`: appends
/// `messages` readings (`{"temperature", "humidity"}`) of each of those fixture devices to the
/// event stream's partitions, as their gateway would, for the fleet telemetry benchmark (a real
/// device object per device would take the benchmark's budget to create). Needs RegistryWrite.
pub async fn telemetry(mut req: worker::Request, env: &worker::Env) -> ApiResult {
    use crate::rpc::{DeviceBatch, PartitionOp, TelemetryMessage};
    use twinhub_core::{ErrorCode, HubError};
    let body = http::body_text(&mut req).await?;
    let slice: TelemetrySlice = serde_json::from_str(&body).map_err(|e| {
        HubError::new(ErrorCode::IotHubFormatError, format!("expected {{start, count, messages}}: {e}"))
    })?;
    if slice.count.saturating_mul(slice.messages) > MAX_TELEMETRY_SLICE {
        return Err(HubError::new(ErrorCode::ArgumentInvalid, format!("at most {MAX_TELEMETRY_SLICE} messages")).into());
    }
    let partitions = crate::config::Config::of(env).eventhub_partitions;
    if partitions == 0 {
        return Err(HubError::new(ErrorCode::FeatureUnavailable, "the event stream is off").into());
    }
    let mut per_partition: Vec<Vec<DeviceBatch>> = (0..partitions).map(|_| Vec::new()).collect();
    for i in slice.start..slice.start + slice.count {
        let key = format!("sensor-{i:06}");
        let messages = (0..slice.messages)
            .map(|m| {
                let alert = slice.alert_every > 0 && m % slice.alert_every == 0;
                let temperature = 18.0 + ((i * 7 + m * 13) % 200) as f64 / 10.0 + if alert { 40.0 } else { 0.0 };
                let properties =
                    if alert { vec![("alert".to_owned(), Some("high_temperature".to_owned()))] } else { Vec::new() };
                let body = json!({ "temperature": temperature, "humidity": 40 + (m % 20) });
                TelemetryMessage { properties, body: body.to_string().into_bytes() }
            })
            .collect();
        let partition = twinhub_core::eventhub::partition_of_key(&key, partitions) as usize;
        if let Some(list) = per_partition.get_mut(partition) {
            list.push(DeviceBatch { key, messages });
        }
    }
    for (partition, batches) in per_partition.into_iter().enumerate() {
        if batches.is_empty() {
            continue;
        }
        let stub = crate::objects::partition::partition_stub(env, partition as u32)?;
        crate::rpc::tell(&stub, &PartitionOp::Append { batches }).await?;
    }
    Ok(http::no_content()?)
}
