//! `/configurations`: automatic device management (spec-less in parts; README). The
//! configurations object stores them; these handlers add the metrics, counted by the fleet
//! index at the time of the request, so they are as current as the index (its lag, not
//! Azure's minutes). The counts are counts over twins: a caller without ServiceConnect (a
//! registry policy, which may not read twins) gets the configuration with its metrics' queries
//! and empty `results`, never a count it could use as an oracle over twin values.

use super::if_match;
use crate::auth::Caller;
use crate::http::{self, ApiResult};
use crate::objects::configurations::configurations_stub;
use crate::rpc::{self, ConfigurationOp};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use twinhub_core::configuration::{self, check_id, Configuration};
use twinhub_core::{ErrorCode, HubError};
use worker::{Env, Request};

/// `GET /configurations?top=N` (default and most: 100, the hub's limit).
pub async fn list(req: Request, env: &Env, caller: &Caller) -> ApiResult {
    let top = http::query_param(&req, "top").and_then(|t| t.parse().ok()).unwrap_or(100usize).clamp(1, 100);
    let all: Vec<Configuration> = rpc::call(&configurations_stub(env)?, &ConfigurationOp::List { top }).await?;
    Ok(http::json(200, &Value::Array(with_metrics(env, &all, counts_for(caller)).await?), None)?)
}

/// `GET /configurations/{id}`.
pub async fn get(env: &Env, id: &str, caller: &Caller) -> ApiResult {
    check_id(id)?;
    one(env, ConfigurationOp::Get { id: id.to_owned() }, counts_for(caller)).await
}

/// Whether the caller may see the metrics' counts ([`configuration::counts_visible_to`]).
fn counts_for(caller: &Caller) -> bool {
    configuration::counts_visible_to(caller.permissions)
}

/// `PUT /configurations/{id}`: create (no `If-Match`) or update.
pub async fn put(mut req: Request, env: &Env, id: &str) -> ApiResult {
    check_id(id)?;
    let body = http::json_body(&mut req).await?;
    // A writer has ServiceConnect (the route asks for it), so the answer carries the counts.
    one(env, ConfigurationOp::Put { id: id.to_owned(), body, if_match: if_match(&req) }, true).await
}

/// `DELETE /configurations/{id}`.
pub async fn delete(req: Request, env: &Env, id: &str) -> ApiResult {
    check_id(id)?;
    let op = ConfigurationOp::Delete { id: id.to_owned(), if_match: if_match(&req) };
    Ok(rpc::forward(&configurations_stub(env)?, &op).await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TestInput {
    target_condition: Option<String>,
    custom_metric_queries: Option<Map<String, Value>>,
}

/// `POST /configurations/testQueries`: checks a target condition and metric queries with the
/// query engine, each error with its position; 200 with the errors (empty when all parse).
pub async fn test_queries(mut req: Request) -> ApiResult {
    let body = http::body_text(&mut req).await?;
    let input: TestInput = serde_json::from_str(&body)
        .map_err(|e| HubError::new(ErrorCode::IotHubFormatError, format!("invalid testQueries body: {e}")))?;
    let target_error = match input.target_condition.as_deref().map(str::trim) {
        None | Some("") => String::new(),
        Some(condition) => configuration::target_query(condition).err().map(|e| e.message).unwrap_or_default(),
    };
    let mut metric_errors = Map::new();
    for (name, text) in input.custom_metric_queries.unwrap_or_default() {
        let error = match text.as_str() {
            Some(text) => configuration::metric_query(&name, text).err().map(|e| e.message),
            None => Some(format!("metric '{name}' must be a query string")),
        };
        if let Some(error) = error {
            metric_errors.insert(name, Value::from(error));
        }
    }
    let answer = json!({ "targetConditionError": target_error, "customMetricQueryErrors": metric_errors });
    Ok(http::json(200, &answer, None)?)
}

/// One configuration from the object, with its metrics (counted when `counted`).
async fn one(env: &Env, op: ConfigurationOp, counted: bool) -> ApiResult {
    let c: Configuration = rpc::call(&configurations_stub(env)?, &op).await?;
    let wire = with_metrics(env, std::slice::from_ref(&c), counted).await?.pop().unwrap_or_default();
    Ok(http::json(200, &wire, Some(&c.etag_string()))?)
}

/// The wire forms with `systemMetrics` and `metrics` counted now, every count of every
/// configuration in one call to each index shard; with empty results when not `counted`.
async fn with_metrics(env: &Env, all: &[Configuration], counted: bool) -> worker::Result<Vec<Value>> {
    if !counted {
        return Ok(all.iter().map(|c| c.to_wire(&Map::new(), &Map::new())).collect());
    }
    // (configuration, is it a system metric, name, query), then the counts in the same order.
    let mut asked = Vec::new();
    let mut metrics = vec![(Map::new(), Map::new()); all.len()];
    for (i, c) in all.iter().enumerate() {
        for (name, text) in c.system_queries() {
            // A system metric is always shown; one whose query cannot run counts 0.
            metrics[i].0.insert(name.to_owned(), Value::from(0));
            if let Ok(q) = twinhub_core::query::parse(&text) {
                asked.push((i, true, name.to_owned(), q));
            }
        }
        for (name, text) in &c.metrics {
            if let Some(Ok(q)) = text.as_str().map(|t| configuration::metric_query(name, t)) {
                asked.push((i, false, name.clone(), q));
            }
        }
    }
    let queries: Vec<_> = asked.iter().map(|(_, _, _, q)| q.clone()).collect();
    let counts = super::query::counts(env, &queries).await?;
    for ((i, system, name, _), n) in asked.into_iter().zip(counts) {
        let (sys, custom) = &mut metrics[i];
        if system { sys } else { custom }.insert(name, Value::from(n));
    }
    Ok(all.iter().zip(metrics).map(|(c, (system, custom))| c.to_wire(&system, &custom)).collect())
}
