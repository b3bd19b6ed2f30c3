//! Durable Objects: where state lives. Each loads rows, calls core, persists, and answers.

pub mod bench_echo;
pub mod device;
pub mod fleet_index;
pub mod gateway;
pub mod group_commit;
pub mod jobs;

/// Binding names, as in wrangler.toml.
pub const DEVICE_BINDING: &str = "DEVICE";
/// The gateway shards' namespace binding: where device WebSockets live.
pub const GATEWAY_BINDING: &str = "GATEWAY";
/// Variable with the number of gateway shards (default [`DEFAULT_GATEWAY_SHARDS`]).
pub const GATEWAY_SHARDS_VAR: &str = "GATEWAY_SHARDS";
/// Gateway shards when the variable is absent.
pub const DEFAULT_GATEWAY_SHARDS: u32 = 2;

/// The number of gateway shards ([`GATEWAY_SHARDS_VAR`], 1 to 256).
pub fn gateway_shards(env: &worker::Env) -> u32 {
    env.var(GATEWAY_SHARDS_VAR)
        .ok()
        .and_then(|v| v.to_string().parse::<u32>().ok())
        .filter(|n| (1..=256).contains(n))
        .unwrap_or(DEFAULT_GATEWAY_SHARDS)
}
/// The fleet index namespace binding.
pub const INDEX_BINDING: &str = "FLEET_INDEX";
/// Variable with the number of fleet index shards (default [`DEFAULT_INDEX_SHARDS`]).
pub const INDEX_SHARDS_VAR: &str = "FLEET_INDEX_SHARDS";
/// Shards when the variable is absent: enough to spread load, few enough for `wrangler dev`.
pub const DEFAULT_INDEX_SHARDS: u32 = 4;

/// The configured shard count.
pub fn index_shards(env: &worker::Env) -> u32 {
    env.var(INDEX_SHARDS_VAR)
        .ok()
        .and_then(|v| v.to_string().parse().ok())
        .filter(|n| (1..=256).contains(n))
        .unwrap_or(DEFAULT_INDEX_SHARDS)
}

/// The stub of fleet index shard `shard`.
pub fn index_stub(env: &worker::Env, shard: u32) -> worker::Result<worker::Stub> {
    env.durable_object(INDEX_BINDING)?.get_by_name(&format!("shard-{shard}"))
}

/// Sends `op` to every fleet index shard at once and reads each answer as `T`, in shard order.
/// A shard that does not answer 200 fails the whole call (its body goes to the log).
pub async fn ask_every_index_shard<T: serde::de::DeserializeOwned>(
    env: &worker::Env,
    op: &crate::rpc::IndexOp,
) -> worker::Result<Vec<T>> {
    let calls = (0..index_shards(env)).map(|shard| async move {
        let stub = index_stub(env, shard)?;
        let mut resp = crate::rpc::call(&stub, op).await?;
        if resp.status_code() != 200 {
            let detail = resp.text().await.unwrap_or_default();
            return Err(worker::Error::RustError(format!(
                "index shard {shard} answered {}: {detail}",
                resp.status_code()
            )));
        }
        crate::rpc::read::<T>(resp.text().await).await
    });
    futures_util::future::try_join_all(calls).await
}

/// A positive integer variable, or `default` when absent, zero or not a number.
pub(crate) fn positive_var(env: &worker::Env, name: &str, default: u64) -> u64 {
    env.var(name).ok().and_then(|v| v.to_string().parse().ok()).filter(|n| *n >= 1).unwrap_or(default)
}

/// JSON text of a stored record.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> worker::Result<String> {
    serde_json::to_string(value).map_err(|e| worker::Error::RustError(e.to_string()))
}

/// An integer binding. JS numbers are exact only to 2^53, which `try_from_i64` checks, so
/// larger values (a client's `since=18446744073709551615`) are held at 2^53 - 1: every value
/// bound here is a count, a time or a bound of a range, for which that is "beyond anything".
pub(crate) fn sql_int(n: u64) -> worker::Result<worker::SqlStorageValue> {
    const MAX_SAFE: u64 = (1 << 53) - 1;
    worker::SqlStorageValue::try_from_i64(i64::try_from(n.min(MAX_SAFE)).unwrap_or(0))
}
