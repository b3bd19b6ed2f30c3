//! `POST /devices/query` (spec §6.7): parse in core, compile to SQL in core, fan out to every
//! fleet index shard, merge here. Plus `GET /api/index`, the index's lag.

use crate::http::{self, ApiResult};
use crate::objects::ask_every_index_shard;
use crate::rpc::{IndexLag, IndexOp};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use twinhub_core::query::page::{self, Continuation};
use twinhub_core::query::{aggregate, eval, sql, Collection, Query, Select};
use twinhub_core::{ErrorCode, HubError};
use worker::{Env, Request, Response};

/// Response header: the worst recent index lag among the shards that answered, in ms.
pub const LAG_HEADER: &str = "x-twinhub-index-lag-ms";

#[derive(Deserialize)]
struct QueryBody {
    query: Option<String>,
}

#[derive(Deserialize)]
struct ShardRows {
    ids: Vec<String>,
    rows: Vec<Box<RawValue>>,
    lag: IndexLag,
}

#[derive(Deserialize)]
struct ShardGroups {
    rows: Vec<serde_json::Map<String, Value>>,
    lag: IndexLag,
}

/// One page of results: the items and what the headers say.
struct Page {
    body: String,
    next: Option<Continuation>,
    lag_ms: u64,
}

/// `POST /devices/query`. Needs ServiceConnect, as IoT Hub's twin operations do (spec §4.4,
/// from Azure's "Control access to IoT Hub" and "Understand device twins": queries read twins,
/// and reading a twin requires ServiceConnect): a `registryRead` policy, which may not
/// `GET /twins/{id}`, cannot read every twin through `SELECT *` either.
pub async fn query(mut req: Request, env: &Env) -> ApiResult {
    let body = http::body_text(&mut req).await?;
    let parsed: QueryBody = serde_json::from_str(&body).map_err(|e| {
        HubError::new(ErrorCode::IotHubFormatError, format!("the body must be {{\"query\": \"...\"}}: {e}"))
    })?;
    let text = parsed
        .query
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| HubError::new(ErrorCode::ArgumentNull, "the body has no query"))?;
    let query = twinhub_core::query::parse(&text).map_err(HubError::from)?;
    let headers = req.headers();
    let page_size = page::page_size(headers.get("x-ms-max-item-count").ok().flatten().as_deref());
    let continuation = Continuation::from_header(headers.get("x-ms-continuation").ok().flatten().as_deref(), &text)?;

    let page = match query.from {
        Collection::Jobs if aggregate::is_aggregate(&query) => {
            return Err(HubError::new(ErrorCode::ArgumentInvalid, "devices.jobs takes no aggregates or GROUP BY").into())
        }
        Collection::Jobs => return super::jobs::device_jobs(env, &text, page_size, &continuation).await,
        // Devices and modules share the index: the compiled SQL picks the collection's rows.
        Collection::Devices | Collection::Modules if aggregate::is_aggregate(&query) => {
            groups(env, &query, page_size, &continuation).await?
        }
        Collection::Devices | Collection::Modules => rows(env, &query, page_size, &continuation).await?,
    };
    let mut builder = Response::builder()
        .with_status(200)
        .with_header("content-type", "application/json; charset=utf-8")?
        .with_header("x-ms-item-type", twinhub_core::query::item_type(&query))?
        .with_header(LAG_HEADER, &page.lag_ms.to_string())?;
    if let Some(next) = page.next {
        builder = builder.with_header("x-ms-continuation", &next.to_header())?;
    }
    Ok(builder.fixed(page.body.into_bytes()))
}

async fn rows(env: &Env, query: &Query, page_size: u64, continuation: &Continuation) -> worker::Result<Page> {
    let wanted = page::rows_wanted(query.top, page_size, continuation);
    if wanted == 0 {
        return Ok(Page { body: "[]".into(), next: None, lag_ms: 0 });
    }
    // One row more than wanted from every shard tells whether another page exists.
    let statement = sql::rows_statement(query, continuation.after.as_deref(), wanted + 1);
    let op = IndexOp::Rows { sql: statement.sql, params: statement.params };
    let answers: Vec<ShardRows> = ask_every_index_shard(env, &op).await?;
    let lag_ms = answers.iter().map(|a| a.lag.p99_ms).max().unwrap_or(0);
    let shards = answers.into_iter().map(|a| a.ids.into_iter().zip(a.rows).collect()).collect();
    let (items, next) = page::merge_rows(shards, wanted, query.top, continuation);
    let body = match &query.select {
        // Whole twins go out as the index stored them.
        Select::Star => format!("[{}]", items.iter().map(|r| r.get()).collect::<Vec<_>>().join(",")),
        Select::Items(projection) => {
            let projected: Vec<Value> = items
                .iter()
                .filter_map(|raw| serde_json::from_str::<Value>(raw.get()).ok())
                .map(|doc| eval::project(projection, &doc))
                .collect();
            Value::Array(projected).to_string()
        }
    };
    Ok(Page { body, next, lag_ms })
}

async fn groups(env: &Env, query: &Query, page_size: u64, continuation: &Continuation) -> worker::Result<Page> {
    let statement = sql::aggregate_statement(query);
    let op = IndexOp::Aggregate { sql: statement.sql, params: statement.params };
    let answers: Vec<ShardGroups> = ask_every_index_shard(env, &op).await?;
    let lag_ms = answers.iter().map(|a| a.lag.p99_ms).max().unwrap_or(0);
    let parts = answers.iter().flat_map(|a| a.rows.iter().map(|row| aggregate::partial_from_row(query, row)));
    let all = aggregate::rows(query, aggregate::merge(parts));
    let (items, next) = page::page_of_groups(all, page_size, continuation);
    Ok(Page { body: Value::Array(items).to_string(), next, lag_ms })
}

/// `GET /api/index`: per-shard index lag, so an operator can see how current query results are.
pub async fn lag(env: &Env) -> ApiResult {
    let shards: Vec<IndexLag> = ask_every_index_shard(env, &IndexOp::Lag).await?;
    let worst = shards.iter().map(|s| s.p99_ms).max().unwrap_or(0);
    let body = serde_json::json!({
        "shards": shards,
        "p99Ms": worst,
        "note": "milliseconds from a device's commit to its index shard, over each shard's recent upserts",
    });
    Ok(http::json(200, &body, None)?)
}

/// How many twins each of `queries` selects (its collection and `WHERE`; its `SELECT` does
/// not matter), counted by the index shards in one call to each, however many queries there
/// are: a configuration list counts up to 700, and a request may make at most 1,000
/// subrequests on Cloudflare.
pub async fn counts(env: &Env, queries: &[Query]) -> worker::Result<Vec<u64>> {
    let count = twinhub_core::query::parse("SELECT COUNT() AS n FROM devices")
        .map_err(|e| worker::Error::RustError(e.to_string()))?;
    let counting: Vec<Query> = queries
        .iter()
        .map(|q| {
            let mut c = count.clone();
            c.from = q.from;
            c.filter = q.filter.clone();
            c
        })
        .collect();
    let statements = counting
        .iter()
        .map(|q| {
            let s = sql::aggregate_statement(q);
            (s.sql, s.params)
        })
        .collect();
    #[derive(Deserialize)]
    struct ShardCounts {
        results: Vec<Vec<serde_json::Map<String, Value>>>,
    }
    let answers: Vec<ShardCounts> = ask_every_index_shard(env, &IndexOp::AggregateMany { statements }).await?;
    Ok(counting
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let parts = answers
                .iter()
                .filter_map(|a| a.results.get(i))
                .flat_map(|rows| rows.iter().map(|row| aggregate::partial_from_row(q, row)));
            let all = aggregate::rows(q, aggregate::merge(parts));
            all.first().and_then(|r| r["n"].as_u64()).unwrap_or(0)
        })
        .collect())
}
