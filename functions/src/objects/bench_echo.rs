//! The platform floor for benchmarks: a Durable Object that echoes the request body, reached
//! through the same Worker. Only routed when `TWINHUB_BENCH_ECHO=1` (see `routes/api.rs`), so a
//! normal hub has no unauthenticated object route.

use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

#[durable_object]
pub struct BenchEcho {
    _state: State,
}

impl DurableObject for BenchEcho {
    fn new(state: State, _env: Env) -> Self {
        Self { _state: state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let body = req.bytes().await?;
        Ok(Response::builder().with_status(200).fixed(body))
    }
}
