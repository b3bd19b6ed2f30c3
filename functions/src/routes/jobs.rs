//! `/jobs/v2`: scheduled twin updates and direct methods over a query (spec §3.6), and
//! twinhub's rollout controls (`pause`, `resume`, `rollback`). Requests are checked by core
//! here; the jobs object (`objects::jobs`) stores and runs them.

use crate::auth::Caller;
use crate::clock;
use crate::http::{self, ApiResult};
use crate::objects::jobs::jobs_stub;
use crate::rpc::{self, JobOp, JobPage};
use twinhub_core::job::request::check_job_id;
use twinhub_core::job::{Job, JobRequest, JobStatus, JobType};
use twinhub_core::query::page::{self, Continuation};
use twinhub_core::route::JobAction;
use twinhub_core::{ErrorCode, HubError};
use worker::{Env, Request, Response};

/// `PUT /jobs/v2/{id}`: create a job.
pub async fn create(mut req: Request, env: &Env, id: &str, caller: Caller) -> ApiResult {
    let body = http::body_text(&mut req).await?;
    let now = clock::now();
    let request = JobRequest::parse(id, &body, now)?;
    let job = Job::new(request, &caller.policy, now);
    Ok(rpc::forward(&jobs_stub(env)?, &JobOp::Create { job: Box::new(job) }).await?)
}

/// `GET /jobs/v2/{id}`.
pub async fn get(env: &Env, id: &str) -> ApiResult {
    check_job_id(id)?;
    Ok(rpc::forward(&jobs_stub(env)?, &JobOp::Get { job_id: id.to_owned() }).await?)
}

/// `POST /jobs/v2/{id}/{action}`: `cancel`, and twinhub's `pause`, `resume`, `rollback`.
pub async fn control(env: &Env, id: &str, action: JobAction) -> ApiResult {
    check_job_id(id)?;
    let job_id = id.to_owned();
    let op = match action {
        JobAction::Cancel => JobOp::Cancel { job_id },
        JobAction::Pause => JobOp::Pause { job_id },
        JobAction::Resume => JobOp::Resume { job_id },
        JobAction::Rollback => JobOp::Rollback { job_id },
    };
    Ok(rpc::forward(&jobs_stub(env)?, &op).await?)
}

/// `GET /jobs/v2/query?jobType=&jobStatus=`: a JSON array of jobs, paged with
/// `x-ms-max-item-count` and `x-ms-continuation` as device queries are.
pub async fn query(req: Request, env: &Env) -> ApiResult {
    let filter = |name: &str| http::query_param(&req, name).filter(|v| !v.is_empty());
    let job_type = match filter("jobType") {
        Some(t) => Some(JobType::from_filter(&t).ok_or_else(|| {
            HubError::new(
                ErrorCode::ArgumentInvalid,
                format!("unknown jobType '{t}': scheduleUpdateTwin or scheduleDeviceMethod"),
            )
        })?),
        None => None,
    };
    let status = match filter("jobStatus") {
        Some(s) => Some(
            JobStatus::from_filter(&s)
                .ok_or_else(|| HubError::new(ErrorCode::ArgumentInvalid, format!("unknown jobStatus '{s}'")))?,
        ),
        None => None,
    };
    let headers = req.headers();
    let limit = page::page_size(headers.get("x-ms-max-item-count").ok().flatten().as_deref());
    let bound_to = format!("jobs?{job_type:?}&{status:?}");
    let continuation =
        Continuation::from_header(headers.get("x-ms-continuation").ok().flatten().as_deref(), &bound_to)?;
    let op = JobOp::List {
        job_type,
        status,
        after: continuation.after.clone(),
        limit: usize::try_from(limit).unwrap_or(100),
    };
    let page: JobPage<String> = rpc::call(&jobs_stub(env)?, &op).await?;
    let next = page.next.map(|after| Continuation { after: Some(after), ..Continuation::start(&bound_to) });
    page_response(page.items, next, "JobResponse")
}

/// `SELECT ... FROM devices.jobs`: the per-device records, from the jobs object.
pub async fn device_jobs(env: &Env, text: &str, page_size: u64, continuation: &Continuation) -> ApiResult {
    let after =
        continuation.after.as_deref().and_then(|a| a.split_once('\n')).map(|(j, d)| (j.to_owned(), d.to_owned()));
    let op = JobOp::DeviceJobs { query: text.to_owned(), after, limit: usize::try_from(page_size).unwrap_or(100) };
    let page: JobPage<(String, String)> = rpc::call(&jobs_stub(env)?, &op).await?;
    let next = page.next.map(|(job, device)| Continuation {
        after: Some(format!("{job}\n{device}")),
        returned: continuation.returned + page.items.len() as u64,
        ..continuation.clone()
    });
    page_response(page.items, next, "DeviceJob")
}

fn page_response(items: Vec<serde_json::Value>, next: Option<Continuation>, item_type: &str) -> ApiResult {
    let mut builder = Response::builder()
        .with_status(200)
        .with_header("content-type", "application/json; charset=utf-8")?
        .with_header("x-ms-item-type", item_type)?;
    if let Some(next) = next {
        builder = builder.with_header("x-ms-continuation", &next.to_header())?;
    }
    Ok(builder.fixed(serde_json::Value::Array(items).to_string().into_bytes()))
}
