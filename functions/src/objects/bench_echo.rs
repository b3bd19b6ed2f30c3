//! The platform floors for benchmarks: a Durable Object reached through the same Worker that
//! either echoes the request body (`POST /api/bench/echo/{key}`) or first writes it to its
//! SQLite (`POST /api/bench/write/{key}`: one INSERT OR REPLACE, what a bare durable write
//! costs). Only routed when `TWINHUB_BENCH_ECHO=1` (see `routes/api.rs`), so a normal hub has
//! no unauthenticated object route.

use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

/// Header the Worker sets on the write route.
pub const WRITE_HEADER: &str = "x-twinhub-bench-write";

#[durable_object]
pub struct BenchEcho {
    state: State,
}

impl DurableObject for BenchEcho {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let write = req.headers().get(WRITE_HEADER)?.is_some();
        let body = req.bytes().await?;
        if write {
            let sql = self.state.storage().sql();
            sql.exec("CREATE TABLE IF NOT EXISTS echo (k INTEGER PRIMARY KEY, body BLOB)", None)?;
            sql.exec("INSERT OR REPLACE INTO echo (k, body) VALUES (1, ?)", vec![body.clone().into()])?;
        }
        Ok(Response::builder().with_status(200).fixed(body))
    }
}
