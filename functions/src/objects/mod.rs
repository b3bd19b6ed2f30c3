//! Durable Objects: where state lives. Each loads rows, calls core, persists, and answers.

#[cfg(feature = "bench")]
pub mod bench_echo;
pub mod configurations;
pub mod device;
pub mod feedback;
pub mod fleet_index;
pub mod gateway;
pub mod group_commit;
pub mod jobs;
pub mod partition;

use twinhub_core::fleet::Placement;

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

/// One fleet index shard, addressed with its [`Placement`]: every call tells the shard its
/// number and the count configured now, which is how shards notice a new count and rebalance
/// (`twinhub_core::fleet`, `objects::fleet_index`).
pub struct IndexShard {
    stub: worker::Stub,
    url: String,
}

impl IndexShard {
    /// Shard `shard` of the count this isolate is configured with.
    pub fn of(env: &worker::Env, shard: u32) -> worker::Result<Self> {
        Self::at(env, Placement { shard, shards: crate::config::Config::of(env).index_shards })
    }

    /// The shard at `placement`.
    pub fn at(env: &worker::Env, placement: Placement) -> worker::Result<Self> {
        let stub = env.durable_object(INDEX_BINDING)?.get_by_name(&format!("shard-{}", placement.shard))?;
        Ok(Self { stub, url: format!("https://index.internal/rpc?{}", placement.to_query()) })
    }

    /// Sends `op` and reads the answer (see [`crate::rpc::call`]).
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        op: &crate::rpc::IndexOp,
    ) -> Result<T, twinhub_core::HubError> {
        crate::rpc::call_at(&self.stub, &self.url, op).await
    }
}

/// Sends `op` to fleet index shard `shard` and reads its answer as `T`; any error is a fault
/// (the hub's own), named with the shard.
pub async fn ask_index_shard<T: serde::de::DeserializeOwned>(
    env: &worker::Env,
    shard: u32,
    op: &crate::rpc::IndexOp,
) -> worker::Result<T> {
    IndexShard::of(env, shard)?
        .call(op)
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

/// Every device key a query selects (its WHERE; ids only), from every index shard at once.
pub async fn index_ids(env: &worker::Env, query: &twinhub_core::query::Query) -> worker::Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Ids {
        ids: Vec<String>,
    }
    let statement = twinhub_core::query::sql::ids_statement(query);
    let op = crate::rpc::IndexOp::Ids { sql: statement.sql, params: statement.params };
    let answers: Vec<Ids> = ask_every_index_shard(env, &op).await?;
    Ok(answers.into_iter().flat_map(|a| a.ids).collect())
}

/// The twins of `ids` (service JSON, keyed by id) as the fleet index holds them, asking only
/// the shards they live on, all at once. A device missing from the answer does not exist (or
/// is deleted).
pub async fn index_twins<'a>(
    env: &worker::Env,
    ids: impl Iterator<Item = &'a str>,
) -> worker::Result<std::collections::HashMap<String, serde_json::Value>> {
    index_rows(env, ids, twinhub_core::query::sql::twins_statement).await
}

/// What `statement` reads of `ids` on the index shards they live on, all at once, keyed by id
/// (a statement of `twins_statement`'s shape: columns `id` and `twin`, any JSON).
pub async fn index_rows<'a>(
    env: &worker::Env,
    ids: impl Iterator<Item = &'a str>,
    statement: impl Fn(&[String]) -> twinhub_core::query::sql::Statement,
) -> worker::Result<std::collections::HashMap<String, serde_json::Value>> {
    let shards = crate::config::Config::of(env).index_shards;
    let mut by_shard: std::collections::BTreeMap<u32, Vec<String>> = std::collections::BTreeMap::new();
    for id in ids {
        by_shard.entry(twinhub_core::fleet::shard_of(id, shards)).or_default().push(id.to_owned());
    }
    #[derive(serde::Deserialize)]
    struct Page {
        ids: Vec<String>,
        rows: Vec<serde_json::Value>,
    }
    let calls = by_shard.into_iter().map(|(shard, ids)| {
        let twinhub_core::query::sql::Statement { sql, params } = statement(&ids);
        async move { ask_index_shard::<Page>(env, shard, &crate::rpc::IndexOp::Rows { sql, params }).await }
    });
    let mut rows = std::collections::HashMap::new();
    for page in futures_util::future::try_join_all(calls).await? {
        rows.extend(page.ids.into_iter().zip(page.rows));
    }
    Ok(rows)
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
