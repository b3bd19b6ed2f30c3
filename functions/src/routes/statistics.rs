//! `/statistics/devices` and `/statistics/service`, summed over the fleet index shards.

use crate::http::{self, ApiResult};
use crate::objects::ask_every_index_shard;
use crate::rpc::{IndexOp, ShardStatistics};
use serde_json::json;
use worker::Env;

/// `GET /statistics/devices`: registry counts (RegistryRead).
pub async fn devices(env: &Env) -> ApiResult {
    let s = fleet(env).await?;
    let body = json!({
        "totalDeviceCount": s.total,
        "enabledDeviceCount": s.enabled,
        "disabledDeviceCount": s.total.saturating_sub(s.enabled),
    });
    Ok(http::json(200, &body, None)?)
}

/// `GET /statistics/service`: connected devices (ServiceConnect).
pub async fn service(env: &Env) -> ApiResult {
    let s = fleet(env).await?;
    Ok(http::json(200, &json!({ "connectedDeviceCount": s.connected }), None)?)
}

/// The index shards' counts, summed.
pub(crate) async fn fleet(env: &Env) -> worker::Result<ShardStatistics> {
    let shards: Vec<ShardStatistics> = ask_every_index_shard(env, &IndexOp::Statistics).await?;
    Ok(shards.iter().fold(ShardStatistics::default(), sum))
}

/// Two shards' counts as one.
pub(crate) fn sum(acc: ShardStatistics, s: &ShardStatistics) -> ShardStatistics {
    ShardStatistics {
        total: acc.total + s.total,
        enabled: acc.enabled + s.enabled,
        connected: acc.connected + s.connected,
        drifting: acc.drifting + s.drifting,
        refused: acc.refused + s.refused,
    }
}
