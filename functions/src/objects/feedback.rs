//! Delivery feedback (`feedback`, one object): the records of cloud-to-device messages whose
//! sender asked for them (`iothub-ack`), kept until a receiver on
//! `/messages/servicebound/feedback` accepts the message that carried them (`crate::amqp`).
//!
//! A record taken by a receiver is lent for [`LEASE_MS`]; if its message is not accepted by
//! then (the receiver left, or released it) it is given out again, so feedback is delivered at
//! least once, as IoT Hub's is. At most [`MAX_RECORDS`] are kept, none longer than [`TTL_MS`]
//! (IoT Hub's feedback time to live): the oldest go first.

use crate::clock;
use crate::http::{self, ApiResult};
use crate::objects::{sql_int, to_json};
use crate::rpc::FeedbackOp;
use serde::Deserialize;
use twinhub_core::c2d::Feedback;
use twinhub_core::{ErrorCode, HubError};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

/// The namespace binding.
pub const FEEDBACK_BINDING: &str = "FEEDBACK";
/// How long a record taken by a receiver waits for its message to be accepted.
const LEASE_MS: u64 = 60_000;
/// The most records kept.
const MAX_RECORDS: u64 = 10_000;
/// How long a record is kept (IoT Hub's default feedback time to live: an hour).
const TTL_MS: u64 = 3_600_000;

/// The one feedback object.
pub fn feedback_stub(env: &Env) -> worker::Result<worker::Stub> {
    env.durable_object(FEEDBACK_BINDING)?.get_by_name("feedback")
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, \
     added INTEGER NOT NULL, lent_until INTEGER NOT NULL DEFAULT 0, body TEXT NOT NULL)";

#[durable_object]
pub struct FeedbackQueue {
    state: State,
}

#[derive(Deserialize)]
struct Row {
    id: i64,
    body: String,
}

impl DurableObject for FeedbackQueue {
    fn new(state: State, _env: Env) -> Self {
        if let Err(e) = state.storage().sql().exec(SCHEMA, None) {
            worker::console_error!("feedback schema: {e}");
        }
        Self { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op: FeedbackOp = match crate::rpc::read(req.text().await).await {
            Ok(op) => op,
            Err(e) => return http::finish(Err(HubError::new(ErrorCode::ServerError, format!("bad rpc: {e}")).into())),
        };
        http::finish(self.handle(op))
    }
}

impl FeedbackQueue {
    fn handle(&self, op: FeedbackOp) -> ApiResult {
        let sql = self.state.storage().sql();
        let now = clock::now().0;
        match op {
            FeedbackOp::Append { record } => {
                sql.exec(
                    "INSERT INTO feedback (added, body) VALUES (?, ?)",
                    vec![sql_int(now)?, to_json(&record)?.into()],
                )?;
                sql.exec(
                    "DELETE FROM feedback WHERE id <= (SELECT MAX(id) FROM feedback) - ? OR added < ?",
                    vec![sql_int(MAX_RECORDS)?, sql_int(now.saturating_sub(TTL_MS))?],
                )?;
                Ok(http::no_content()?)
            }
            FeedbackOp::Take { max } => {
                let rows: Vec<Row> = sql
                    .exec(
                        "SELECT id, body FROM feedback WHERE lent_until <= ? ORDER BY id LIMIT ?",
                        vec![sql_int(now)?, sql_int(max.clamp(1, 100) as u64)?],
                    )?
                    .to_array()?;
                let mut ids = Vec::with_capacity(rows.len());
                let mut records = Vec::with_capacity(rows.len());
                for row in rows {
                    sql.exec(
                        "UPDATE feedback SET lent_until = ? WHERE id = ?",
                        vec![sql_int(now + LEASE_MS)?, row.id.into()],
                    )?;
                    if let Ok(record) = serde_json::from_str::<Feedback>(&row.body) {
                        ids.push(row.id);
                        records.push(record);
                    }
                }
                Ok(http::json(200, &(ids, records), None)?)
            }
            FeedbackOp::Complete { ids } => {
                for id in ids {
                    sql.exec("DELETE FROM feedback WHERE id = ?", vec![id.into()])?;
                }
                Ok(http::no_content()?)
            }
        }
    }
}
