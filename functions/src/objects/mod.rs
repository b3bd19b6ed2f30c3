//! Durable Objects: where state lives. Each loads rows, calls core, persists, and answers.

pub mod bench_echo;
pub mod configurations;
pub mod device;
pub mod feedback;
pub mod fleet_index;
pub mod gateway;
pub mod group_commit;
pub mod jobs;
pub mod partition;

/// Binding names, as in wrangler.toml.
pub const DEVICE_BINDING: &str = "DEVICE";
/// The gateway shards' namespace binding: where device WebSockets live.
pub const GATEWAY_BINDING: &str = "GATEWAY";

/// The fleet index namespace binding.
pub const INDEX_BINDING: &str = "FLEET_INDEX";

/// The device object for `key` (a device id, or `{deviceId}/{moduleId}` for a module).
pub fn device_stub(env: &worker::Env, key: &str) -> worker::Result<worker::Stub> {
    env.durable_object(DEVICE_BINDING)?.get_by_name(key)
}

/// The stub of fleet index shard `shard`.
pub fn index_stub(env: &worker::Env, shard: u32) -> worker::Result<worker::Stub> {
    env.durable_object(INDEX_BINDING)?.get_by_name(&format!("shard-{shard}"))
}

/// Sends `op` to fleet index shard `shard` and reads its answer as `T`. A shard that does not
/// answer 200 is an error (its body goes with it).
pub async fn ask_index_shard<T: serde::de::DeserializeOwned>(
    env: &worker::Env,
    shard: u32,
    op: &crate::rpc::IndexOp,
) -> worker::Result<T> {
    crate::rpc::ask(&index_stub(env, shard)?, op)
        .await
        .map_err(|e| worker::Error::RustError(format!("index shard {shard}: {e}")))
}

/// Sends `op` to every fleet index shard at once and reads each answer as `T`, in shard order.
/// A shard that does not answer 200 fails the whole call.
pub async fn ask_every_index_shard<T: serde::de::DeserializeOwned>(
    env: &worker::Env,
    op: &crate::rpc::IndexOp,
) -> worker::Result<Vec<T>> {
    let calls = (0..crate::config::Config::of(env).index_shards).map(|shard| ask_index_shard(env, shard, op));
    futures_util::future::try_join_all(calls).await
}

/// An op's variant name, for the log: its `Debug` text up to the first space, brace or
/// parenthesis (never its fields, which may hold a token).
pub(crate) fn op_name(op: &impl std::fmt::Debug) -> String {
    format!("{op:?}").split([' ', '{', '(']).next().unwrap_or_default().to_owned()
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
