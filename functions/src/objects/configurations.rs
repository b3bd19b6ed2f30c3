//! The configurations object (`configurations`, one per hub): every automatic device
//! configuration in SQLite, checked by `core::configuration` when written. After each change it
//! hands the whole set to every fleet index shard (`IndexOp::SetConfigurations`), which applies
//! the winning configuration to each device twin as its projections arrive; the shards' sweep
//! of the twins they already hold runs from this object's alarm, so a `PUT` answers at once.

use crate::clock;
use crate::http::{self, ApiResult};
use crate::objects::to_json;
use crate::rpc::{ConfigurationOp, IndexOp};
use serde::Deserialize;
use std::cell::RefCell;
use twinhub_core::configuration::{self, Configuration, ConfigurationRequest};
use twinhub_core::{ErrorCode, HubError};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

/// The namespace binding.
pub const CONFIGURATIONS_BINDING: &str = "CONFIGURATIONS";

/// The one configurations object.
pub fn configurations_stub(env: &Env) -> worker::Result<worker::Stub> {
    env.durable_object(CONFIGURATIONS_BINDING)?.get_by_name("configurations")
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS configuration (id TEXT PRIMARY KEY, body TEXT NOT NULL)";

#[durable_object]
pub struct Configurations {
    state: State,
    env: Env,
    /// Every configuration, in id order, read once.
    all: RefCell<Option<Vec<Configuration>>>,
}

#[derive(Deserialize)]
struct Row {
    body: String,
}

impl DurableObject for Configurations {
    fn new(state: State, env: Env) -> Self {
        if let Err(e) = state.storage().sql().exec(SCHEMA, None) {
            worker::console_error!("configurations schema: {e}");
        }
        Self { state, env, all: RefCell::new(None) }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op: ConfigurationOp = match crate::rpc::read(req.text().await).await {
            Ok(op) => op,
            Err(e) => return http::finish(Err(HubError::new(ErrorCode::ServerError, format!("bad rpc: {e}")).into())),
        };
        http::finish(self.handle(op).await)
    }

    /// Hands the set to every shard with a sweep of the twins they hold. Runs after each
    /// change; a shard that fails is tried again by the next alarm.
    async fn alarm(&self) -> Result<Response> {
        let all = self.load()?;
        if let Err(e) = self.tell_shards(&all, true).await {
            worker::console_warn!("configurations: a shard's sweep failed, retrying in 5 s: {e}");
            self.state.storage().set_alarm(5_000).await?;
        }
        Response::empty()
    }
}

impl Configurations {
    async fn handle(&self, op: ConfigurationOp) -> ApiResult {
        match op {
            ConfigurationOp::Get { id } => {
                let all = self.load()?;
                let found = all.iter().find(|c| c.id == id).ok_or_else(|| not_found(&id))?;
                Ok(http::json(200, found, None)?)
            }
            ConfigurationOp::List { top } => {
                let all = self.load()?;
                Ok(http::json(200, &all.iter().take(top).collect::<Vec<_>>(), None)?)
            }
            ConfigurationOp::Put { id, body, if_match } => {
                let mut all = self.load()?;
                let request = ConfigurationRequest::parse(body.get())?;
                let at = all.iter().position(|c| c.id == id);
                let previous = at.map(|i| &all[i]);
                configuration::check_write(&id, previous, if_match.as_deref(), all.len())?;
                let next = request.check(&id, previous, clock::now())?;
                let reapply = previous.is_none_or(|p| p.revision != next.revision);
                self.state.storage().sql().exec(
                    "INSERT OR REPLACE INTO configuration (id, body) VALUES (?, ?)",
                    vec![id.as_str().into(), to_json(&next)?.into()],
                )?;
                match at {
                    Some(i) => all[i] = next.clone(),
                    None => {
                        let i = all.partition_point(|c| c.id < id);
                        all.insert(i, next.clone());
                    }
                }
                *self.all.borrow_mut() = Some(all.clone());
                self.changed(&all, reapply).await?;
                Ok(http::json(200, &next, None)?)
            }
            ConfigurationOp::Delete { id, if_match } => {
                let mut all = self.load()?;
                let at = all.iter().position(|c| c.id == id).ok_or_else(|| not_found(&id))?;
                configuration::check_etag(&all[at], if_match.as_deref())?;
                self.state.storage().sql().exec("DELETE FROM configuration WHERE id = ?", vec![id.as_str().into()])?;
                all.remove(at);
                *self.all.borrow_mut() = Some(all.clone());
                self.changed(&all, true).await?;
                Ok(http::no_content()?)
            }
        }
    }

    /// Every shard learns the new set now (so twins arriving from here on get it); with
    /// `reapply`, the alarm then has them sweep the twins they hold.
    async fn changed(&self, all: &[Configuration], reapply: bool) -> Result<()> {
        self.tell_shards(all, false).await?;
        if reapply {
            self.state.storage().set_alarm(1).await?;
        }
        Ok(())
    }

    async fn tell_shards(&self, all: &[Configuration], sweep: bool) -> Result<()> {
        let shards = crate::config::Config::of(&self.env).index_shards;
        let calls = (0..shards).map(|shard| async move {
            let op = IndexOp::SetConfigurations { configurations: all.to_vec(), sweep };
            crate::objects::ask_index_shard::<serde::de::IgnoredAny>(&self.env, shard, &op).await.map(|_| ())
        });
        futures_util::future::try_join_all(calls).await.map(|_| ())
    }

    fn load(&self) -> Result<Vec<Configuration>> {
        if let Some(all) = self.all.borrow().as_ref() {
            return Ok(all.clone());
        }
        let rows: Vec<Row> =
            self.state.storage().sql().exec("SELECT body FROM configuration ORDER BY id", None)?.to_array()?;
        let all: Vec<Configuration> = rows.iter().filter_map(|r| serde_json::from_str(&r.body).ok()).collect();
        *self.all.borrow_mut() = Some(all.clone());
        Ok(all)
    }
}

fn not_found(id: &str) -> HubError {
    HubError::new(ErrorCode::ConfigurationNotFound, format!("configuration '{id}' not found"))
}
