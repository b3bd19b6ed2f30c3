use super::request::condition_query;
use super::rollout::{device_outcome, judge, order_key, Verdict, WaveTally};
use super::*;
use crate::twin::drift::DriftState;
use crate::{ErrorCode, UnixMillis};
use serde_json::json;

const NOW: UnixMillis = UnixMillis(1_780_000_000_000);

fn article_job() -> String {
    json!({
        "jobId": "fw-2.1.0",
        "type": "scheduleUpdateTwin",
        "queryCondition": "tags.location.building = 'Building-A'",
        "startTime": "2026-01-01T10:00:00Z",
        "maxExecutionTimeInSeconds": 3600,
        "updateTwin": {"etag": "*", "properties": {"desired": {"firmwareVersion": "2.1.0"}}},
    })
    .to_string()
}

#[test]
fn the_articles_bulk_update_is_a_job() {
    let r = JobRequest::parse("fw-2.1.0", &article_job(), NOW).unwrap();
    assert_eq!(r.work.job_type(), JobType::ScheduleUpdateTwin);
    assert_eq!(r.work.desired_names(), vec!["firmwareVersion".to_owned()]);
    assert_eq!(r.start, UnixMillis::parse_iso("2026-01-01T10:00:00Z").unwrap());
    let job = Job::new(r, "iothubowner", NOW);
    assert_eq!(job.status, JobStatus::Queued, "a start time in the past starts now");
    let wire = job.to_wire();
    assert_eq!(wire["type"], "scheduleUpdateTwin");
    assert_eq!(wire["status"], "queued");
    assert_eq!(wire["updateTwin"]["etag"], "*");
    assert_eq!(wire["updateTwin"]["properties"]["desired"]["firmwareVersion"], "2.1.0");
    assert_eq!(wire["deviceJobStatistics"]["deviceCount"], 0);
}

#[test]
fn a_method_job_and_a_future_start() {
    let body = json!({
        "type": "scheduleDeviceMethod", "queryCondition": "*", "startTime": "2099-01-01T00:00:00.0000000Z",
        "cloudToDeviceMethod": {"methodName": "reboot", "payload": {"delay": 1}, "responseTimeoutInSeconds": 10},
    });
    let job = Job::new(JobRequest::parse("m1", &body.to_string(), NOW).unwrap(), "service", NOW);
    assert_eq!(job.status, JobStatus::Scheduled);
    assert!(!job.wants_work(NOW));
    assert!(job.wants_work(UnixMillis::parse_iso("2099-01-01T00:00:00Z").unwrap()));
    assert_eq!(job.to_wire()["cloudToDeviceMethod"]["methodName"], "reboot");
}

#[test]
fn bad_requests_say_what_is_wrong() {
    let with = |patch: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(&article_job()).unwrap();
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        JobRequest::parse("fw-2.1.0", &v.to_string(), NOW).unwrap_err()
    };
    let e = with(json!({"queryCondition": "tags.location.building = "}));
    assert_eq!(e.code, ErrorCode::ArgumentInvalid);
    assert!(e.message.contains("at 1:"), "{}", e.message);
    let e = with(json!({"queryCondition": "SELECT * FROM devices"}));
    assert!(e.message.contains("at 1:1"), "the position is in the condition as written: {}", e.message);
    assert!(with(json!({"type": "export"})).message.contains("unknown job type"));
    assert!(with(json!({"startTime": "yesterday"})).message.contains("startTime"));
    assert!(with(json!({"maxExecutionTimeInSeconds": -5})).message.contains("maxExecutionTimeInSeconds"));
    assert!(with(json!({"maxExecutionTimeInSeconds": 1e12})).message.contains("maxExecutionTimeInSeconds"));
    assert!(with(json!({"jobId": "other"})).message.contains("differs"));
    assert!(with(json!({"updateTwin": {"etag": "AAAA", "tags": {"a": 1}}})).message.contains("etag"));
    assert!(with(json!({"updateTwin": {"etag": "*"}})).message.contains("changes nothing"));
    let e = with(json!({"type": "scheduleDeviceMethod", "cloudToDeviceMethod": {"methodName": "re boot"}}));
    assert!(e.message.contains("methodName"), "{}", e.message);
    assert!(JobRequest::parse("bad id", &article_job(), NOW).unwrap_err().message.contains("job id"));
    assert_eq!(JobRequest::parse("x", "{", NOW).unwrap_err().code, ErrorCode::IotHubFormatError);
    assert!(condition_query("*").unwrap().filter.is_none());
}

#[test]
fn rollout_plans_are_checked_and_waves_cover_the_fleet() {
    let plan = RolloutPlan::parse(&json!({"canaryPercent": 10, "failureThresholdPercent": 20})).unwrap();
    assert_eq!(plan.waves, vec![10, 100]);
    let waves: Vec<usize> = (0..25).map(|i| plan.wave_of(i, 25)).collect();
    assert_eq!(waves.iter().filter(|w| **w == 0).count(), 3, "ceil(25 * 10%) = 3 canaries");
    assert_eq!(waves.iter().filter(|w| **w == 1).count(), 22);
    assert_eq!(plan.wave_of(0, 1), 0, "one device is a canary");
    for bad in
        [json!({"waves": [50, 20]}), json!({"waves": [0, 100]}), json!({"canaryPercent": 120}), json!({"speed": 1})]
    {
        assert!(RolloutPlan::parse(&bad).is_err(), "{bad}");
    }
    let body = json!({"type": "scheduleDeviceMethod", "queryCondition": "*", "rollout": {},
        "cloudToDeviceMethod": {"methodName": "reboot"}});
    assert!(JobRequest::parse("r", &body.to_string(), NOW).unwrap_err().message.contains("rollout"));
    assert_ne!(order_key("j", "a"), order_key("j", "b"));
}

#[test]
fn a_wave_pauses_on_refusals_and_on_its_deadline() {
    let plan =
        RolloutPlan::parse(&json!({"canaryPercent": 10, "failureThresholdPercent": 20, "waveDeadlineSeconds": 60}))
            .unwrap();
    let mut state = RolloutState::new(plan);
    state.wave_started = Some(NOW);
    let tally = |succeeded, failed, pending| WaveTally { size: 10, succeeded, failed, pending };
    assert_eq!(judge(&state, tally(2, 2, 6), NOW), Verdict::Wait, "20% is not more than 20%");
    assert!(matches!(judge(&state, tally(2, 3, 5), NOW), Verdict::Pause(why) if why.contains("refused")));
    assert_eq!(judge(&state, tally(8, 2, 0), NOW), Verdict::NextWave);
    let later = UnixMillis(NOW.0 + 60_000);
    assert!(matches!(judge(&state, tally(9, 0, 1), later), Verdict::Pause(why) if why.contains("caught up")));
    state.failures_accepted = true;
    assert_eq!(judge(&state, tally(5, 5, 0), NOW), Verdict::NextWave, "resumed: the failures are accepted");
}

#[test]
fn a_device_outcome_is_read_from_its_twin() {
    let names = vec!["firmwareVersion".to_owned()];
    let twin = |reported: serde_json::Value| json!({"properties": {"desired": {"firmwareVersion": "2.1.0", "$version": 3}, "reported": reported}});
    assert_eq!(device_outcome(&twin(json!({"firmwareVersion": "2.1.0"})), &names).0, DriftState::CaughtUp);
    assert_eq!(device_outcome(&twin(json!({"firmwareVersion": "2.0.0"})), &names).0, DriftState::Pending);
    assert_eq!(device_outcome(&twin(json!({})), &names).0, DriftState::Pending);
    let refused = twin(json!({"firmwareVersion": {"value": "2.0.0", "ac": 500, "av": 3, "ad": "flash failed"}}));
    let (state, why) = device_outcome(&refused, &names);
    assert_eq!(state, DriftState::Refused);
    assert!(why.unwrap().contains("flash failed"));
}

#[test]
fn job_statuses_move_only_forward() {
    let mut job = Job::new(JobRequest::parse("fw-2.1.0", &article_job(), NOW).unwrap(), "iothubowner", NOW);
    assert!(job.resume(NOW).is_err(), "not paused");
    job.begin(NOW);
    assert!(!job.expired(UnixMillis(NOW.0 + 3_599_000)));
    assert!(job.expired(UnixMillis(NOW.0 + 3_600_000)));
    job.pause("operator".into(), NOW).unwrap();
    let later = UnixMillis(NOW.0 + 3_000_000);
    job.resume(later).unwrap();
    assert!(!job.expired(UnixMillis(later.0 + 3_599_000)), "time paused does not count");
    let mut early = Job::new(JobRequest::parse("fw-2.1.0", &article_job(), NOW).unwrap(), "iothubowner", NOW);
    early.pause("before it began".into(), NOW).unwrap();
    early.resume(NOW).unwrap();
    assert_eq!(early.status, JobStatus::Queued, "resumed before it began: waits to begin");
    job.complete(NOW);
    assert!(job.cancel(NOW).unwrap_err().message.contains("already ended"));
    job.start_rollback(NOW).unwrap();
    assert!(job.wants_work(NOW), "a rollback runs after the job ended");
    assert!(job.start_rollback(NOW).is_err());
    job.rolled_back(3, NOW);
    assert_eq!(job.to_wire()["status"], "rolledBack");
    assert_eq!(
        Statistics::from_counts([(DeviceJobStatus::Completed, 2), (DeviceJobStatus::Canceled, 1)]).failed_count,
        1
    );
    assert_eq!(JobStatus::from_filter("Completed"), Some(JobStatus::Completed));
    assert_eq!(JobType::from_filter("ScheduleUpdateTwin"), Some(JobType::ScheduleUpdateTwin));
}

#[test]
fn a_fault_of_the_hub_is_retried_a_device_refusal_is_not() {
    let job = Job::new(JobRequest::parse("fw-2.1.0", &article_job(), NOW).unwrap(), "iothubowner", NOW);
    let mut record = DeviceJob::new(&job, "d1", 0, NOW);
    for _ in 1..super::record::MAX_TRIES {
        record.call_failed("ServerError", "out of memory", true, NOW);
        assert_eq!(record.status, DeviceJobStatus::Pending);
    }
    record.call_failed("ServerError", "out of memory", true, NOW);
    assert_eq!(record.status, DeviceJobStatus::Failed, "MAX_TRIES in all");
    let mut other = DeviceJob::new(&job, "d2", 0, NOW);
    other.call_failed("DeviceNotFound", "gone", true, NOW);
    assert_eq!(other.status, DeviceJobStatus::Failed);
    let mut method = DeviceJob::new(&job, "d3", 0, NOW);
    method.call_failed("ServerError", "?", false, NOW);
    assert_eq!(method.status, DeviceJobStatus::Failed, "a method may have run: not retried");
}

#[test]
fn a_selection_that_keeps_failing_fails_the_job_once_with_the_reason() {
    let mut job = Job::new(JobRequest::parse("fw-2.1.0", &article_job(), NOW).unwrap(), "iothubowner", NOW);
    for _ in 1..record::MAX_SELECTION_TRIES {
        assert!(!job.selection_failed("index down", NOW));
        assert!(!job.status.is_final());
    }
    assert!(job.selection_failed("index down", NOW));
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.failure_reason.as_deref().is_some_and(|r| r.contains("index down")));
}

#[test]
fn finished_jobs_expire_after_the_retention() {
    let day = 24 * 3600 * 1000;
    let mut job = Job::new(JobRequest::parse("fw-2.1.0", &article_job(), NOW).unwrap(), "iothubowner", NOW);
    assert!(!job.past_retention(UnixMillis(NOW.0 + 40 * day), 30 * day), "a running job never expires");
    job.cancel(NOW).unwrap();
    assert!(!job.past_retention(UnixMillis(NOW.0 + 29 * day), 30 * day));
    assert!(job.past_retention(UnixMillis(NOW.0 + 30 * day), 30 * day));
}

#[test]
fn a_rollout_reads_a_components_acknowledgements_property_by_property() {
    let twin = |reported: serde_json::Value| {
        json!({ "properties": {
            "desired": { "thermostat1": { "__t": "c", "targetTemperature": 22 } },
            "reported": reported
        } })
    };
    let names = vec!["thermostat1".to_owned()];
    let acked =
        twin(json!({ "thermostat1": { "__t": "c", "targetTemperature": { "value": 22, "ac": 200, "av": 2 } } }));
    assert_eq!(device_outcome(&acked, &names).0, DriftState::CaughtUp);
    let refused = twin(
        json!({ "thermostat1": { "__t": "c", "targetTemperature": { "value": 20, "ac": 500, "av": 2, "ad": "stuck" } } }),
    );
    let (state, why) = device_outcome(&refused, &names);
    assert_eq!(state, DriftState::Refused);
    assert!(why.is_some_and(|w| w.contains("thermostat1.targetTemperature") && w.contains("stuck")));
    assert_eq!(device_outcome(&twin(json!({})), &names).0, DriftState::Pending);
}
