//! The executor's rules, one test each: the order of a job's tasks, the records a selection
//! writes, what each answer does to a record, a rollout's wave, a rollback, and the pace.

use super::*;
use crate::job::record::MAX_TRIES;
use crate::job::JobRequest;
use crate::ErrorCode;

const NOW: UnixMillis = UnixMillis(1_780_000_000_000);

fn twin_update(rollout: Option<Value>) -> Job {
    let mut body = json!({
        "type": "scheduleUpdateTwin", "queryCondition": "*", "maxExecutionTimeInSeconds": 60,
        "updateTwin": {"etag": "*", "properties": {"desired": {"firmwareVersion": "2.1.0"}}},
    });
    if let Some(r) = rollout {
        body["rollout"] = r;
    }
    Job::new(JobRequest::parse("fw", &body.to_string(), NOW).unwrap(), "iothubowner", NOW)
}

fn method_job() -> Job {
    let body = json!({"type": "scheduleDeviceMethod", "queryCondition": "*",
        "cloudToDeviceMethod": {"methodName": "reboot", "payload": {"delay": 1}, "responseTimeoutInSeconds": 10}});
    Job::new(JobRequest::parse("m", &body.to_string(), NOW).unwrap(), "iothubowner", NOW)
}

fn running(mut job: Job) -> Job {
    job.begin(NOW);
    targets_written(&mut job, NOW);
    job
}

fn fault() -> HubError {
    HubError::new(ErrorCode::ServerError, "the object restarted")
}

#[test]
fn a_job_begins_selects_calls_and_completes_in_that_order() {
    let mut job = twin_update(None);
    assert_eq!(next_task(&job, NOW), Task::Begin);
    job.begin(NOW);
    assert_eq!(next_task(&job, NOW), Task::SelectTargets);
    assert!(may_write_targets(&job));
    targets_written(&mut job, NOW);
    assert!(!may_write_targets(&job), "selected once");
    let Task::Call { pick, staged, when_none } = next_task(&job, NOW) else { panic!("calls next") };
    assert_eq!(pick.statuses, &[DeviceJobStatus::Pending, DeviceJobStatus::Running], "a restart's running ones too");
    assert_eq!((pick.wave, staged, when_none), (None, false, WhenNone::Complete));
    assert_eq!(next_task(&job, UnixMillis(NOW.0 + 60_000)), Task::Expire, "out of time");
    expire(&mut job, 7, UnixMillis(NOW.0 + 60_000));
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.failure_reason.as_deref().is_some_and(|r| r.contains("7 device(s)")));
    assert_eq!(next_task(&job, NOW), Task::Idle);
}

#[test]
fn scheduled_paused_and_rolling_back_jobs() {
    let body = json!({"type": "scheduleUpdateTwin", "queryCondition": "*", "startTime": "2099-01-01T00:00:00Z",
        "updateTwin": {"etag": "*", "tags": {"a": 1}}});
    let scheduled = Job::new(JobRequest::parse("s", &body.to_string(), NOW).unwrap(), "o", NOW);
    assert_eq!(next_task(&scheduled, NOW), Task::Idle, "not due");
    let start = UnixMillis::parse_iso("2099-01-01T00:00:00Z").unwrap();
    assert_eq!(next_task(&scheduled, start), Task::Begin);
    assert_eq!(alarm_in(std::slice::from_ref(&scheduled), NOW), Some(start.0 - NOW.0));
    let mut job = running(twin_update(None));
    assert_eq!(alarm_in(std::slice::from_ref(&job), NOW), Some(0));
    job.pause("operator".into(), NOW).unwrap();
    assert_eq!(next_task(&job, NOW), Task::Idle);
    assert_eq!(alarm_in(std::slice::from_ref(&job), NOW), None);
    job.start_rollback(NOW).unwrap();
    assert_eq!(next_task(&job, NOW), Task::RollBack, "a rollback runs whatever the status");
    assert_eq!(cancelled_statuses(true), &[DeviceJobStatus::Pending], "reached devices are rolled back instead");
    assert_eq!(cancelled_statuses(false), &[DeviceJobStatus::Pending, DeviceJobStatus::Running]);
}

#[test]
fn a_plain_job_reaches_devices_in_id_order() {
    let job = twin_update(None);
    let t = targets(&job, vec!["c".into(), "a".into(), "b".into()], NOW);
    let ids: Vec<_> = t.iter().map(|t| (t.ord, t.record.device_id.as_str(), t.record.wave)).collect();
    assert_eq!(ids, vec![(0, "a", 0), (1, "b", 0), (2, "c", 0)]);
    assert!(t.iter().all(|t| t.record.status == DeviceJobStatus::Pending));
}

#[test]
fn a_rollout_spreads_its_devices_over_its_waves() {
    let job = twin_update(Some(json!({"canaryPercent": 10})));
    let ids: Vec<String> = (0..20).map(|i| format!("d{i:02}")).collect();
    let t = targets(&job, ids.clone(), NOW);
    assert_eq!(t.iter().filter(|t| t.record.wave == 0).count(), 2, "10% canaries");
    assert!(t.windows(2).all(|w| w[0].record.wave <= w[1].record.wave), "waves in reach order");
    let canaries: Vec<&str> = t.iter().take(2).map(|t| t.record.device_id.as_str()).collect();
    assert_ne!(canaries, vec!["d00", "d01"], "not the first ids");
    let mut reversed = ids;
    reversed.reverse();
    assert_eq!(targets(&job, reversed, NOW), t, "the order does not depend on the index's");
    let mut job = running(job);
    assert_eq!(job.rollout.as_ref().unwrap().wave_started, Some(NOW), "its first wave starts with the records");
    let Task::Call { pick, staged, when_none } = next_task(&job, NOW) else { panic!("calls next") };
    assert_eq!((pick.statuses, pick.wave), (&[DeviceJobStatus::Pending][..], Some(0)));
    assert!(staged);
    assert_eq!(when_none, WhenNone::Watch(0));
    job.rollout.as_mut().unwrap().wave = 2;
    assert_eq!(next_task(&job, NOW), Task::Complete, "past its last wave");
}

#[test]
fn a_method_interrupted_by_a_restart_is_not_run_again() {
    let job = running(method_job());
    let mut interrupted = DeviceJob::new(&job, "a", 0, NOW);
    interrupted.reached(NOW);
    let fresh = DeviceJob::new(&job, "b", 0, NOW);
    let batch = Batch::new(&job, vec![interrupted, fresh], NOW);
    assert!(batch.store_first, "a method's calls are stored before they go out");
    assert_eq!(batch.settled.len(), 1);
    assert_eq!(batch.settled[0].status, DeviceJobStatus::Failed);
    assert_eq!(batch.settled[0].error.as_ref().unwrap()["code"], "JobInterrupted");
    assert_eq!(batch.calls.len(), 1);
    assert_eq!(batch.calls[0].status, DeviceJobStatus::Running);
    assert_eq!(
        device_call(&job),
        DeviceCall::Method { name: "reboot", payload: &json!({"delay": 1}), timeout_ms: 10_000, connect_timeout_ms: 0 }
    );
    let twin_job = running(twin_update(None));
    let mut again = DeviceJob::new(&twin_job, "a", 0, NOW);
    again.reached(NOW);
    let batch = Batch::new(&twin_job, vec![again], NOW);
    assert!(!batch.store_first);
    assert_eq!(batch.calls.len(), 1, "a twin update applies once per job: calling again is safe");
    assert!(matches!(device_call(&twin_job), DeviceCall::UpdateTwin { job_id: "fw", .. }));
}

#[test]
fn answers_settle_records() {
    let job = running(twin_update(None));
    let mut r = DeviceJob::new(&job, "a", 0, NOW);
    settle(&job, &mut r, Ok(json!({})), false, false, NOW);
    assert_eq!((r.status, &r.outcome), (DeviceJobStatus::Completed, &None));

    let method = running(method_job());
    let mut r = DeviceJob::new(&method, "a", 0, NOW);
    settle(&method, &mut r, Ok(json!({"status": 200, "payload": 1})), false, false, NOW);
    assert_eq!(r.outcome, Some(json!({"deviceMethodResponse": {"status": 200, "payload": 1}})));
    let mut r = DeviceJob::new(&method, "b", 0, NOW);
    settle(&method, &mut r, Err(fault()), false, false, NOW);
    assert_eq!(r.status, DeviceJobStatus::Failed, "a method may have run: not retried");

    let mut r = DeviceJob::new(&job, "c", 0, NOW);
    r.reached(NOW);
    settle(&job, &mut r, Ok(json!({})), true, false, NOW);
    assert_eq!(r.status, DeviceJobStatus::Running, "a rollout's device is watched until it catches up");

    let mut r = DeviceJob::new(&job, "d", 0, NOW);
    for _ in 1..MAX_TRIES {
        settle(&job, &mut r, Err(fault()), false, false, NOW);
        assert_eq!(r.status, DeviceJobStatus::Pending, "the hub's own fault: back in line");
    }
    settle(&job, &mut r, Err(fault()), false, false, NOW);
    assert_eq!(r.status, DeviceJobStatus::Failed);
    assert_eq!(r.retries, MAX_TRIES - 1);

    let mut r = DeviceJob::new(&job, "e", 0, NOW);
    settle(&job, &mut r, Err(HubError::new(ErrorCode::DeviceNotFound, "gone")), false, false, NOW);
    assert_eq!(r.error.as_ref().unwrap()["code"], "DeviceNotFound");

    let mut r = DeviceJob::new(&job, "f", 0, NOW);
    settle(&job, &mut r, Err(fault()), false, true, NOW);
    assert_eq!(r.status, DeviceJobStatus::Canceled, "not put back in line for a job that stopped");
}

#[test]
fn stopped_means_no_longer_running_or_paused() {
    let mut job = running(twin_update(None));
    assert!(!stopped(&job));
    job.pause("p".into(), NOW).unwrap();
    assert!(!stopped(&job), "a paused job keeps its devices in line");
    job.start_rollback(NOW).unwrap();
    assert!(stopped(&job));
    let mut job = running(twin_update(None));
    job.cancel(NOW).unwrap();
    assert!(stopped(&job));
}

#[test]
fn a_watched_device_settles_from_its_twin() {
    let job = running(twin_update(Some(json!({}))));
    let names = job.work.desired_names();
    let record = DeviceJob::new(&job, "a", 0, NOW);
    let twin = |reported: Value| json!({"properties": {"desired": {"firmwareVersion": "2.1.0", "$version": 2}, "reported": reported}});
    let done = watch(&record, Some(&twin(json!({"firmwareVersion": "2.1.0"}))), &names, NOW).unwrap();
    assert_eq!(done.status, DeviceJobStatus::Completed);
    assert_eq!(watch(&record, Some(&twin(json!({}))), &names, NOW), None, "not caught up: still watched");
    let refusal = json!({"firmwareVersion": {"value": "2.0.0", "ac": 500, "av": 2, "ad": "flash failed"}});
    let refused = watch(&record, Some(&twin(refusal)), &names, NOW).unwrap();
    assert_eq!(refused.error.as_ref().unwrap()["code"], "DeviceRefused");
    let gone = watch(&record, None, &names, NOW).unwrap();
    assert_eq!(gone.error.as_ref().unwrap()["code"], "DeviceNotFound");
}

#[test]
fn a_wave_moves_on_waits_or_pauses() {
    let mut job = running(twin_update(Some(json!({"canaryPercent": 10, "failureThresholdPercent": 20}))));
    let tally = |counts: &[(DeviceJobStatus, u64)]| tally(Statistics::from_counts(counts.iter().copied()));
    let t = tally(&[(DeviceJobStatus::Completed, 8), (DeviceJobStatus::Canceled, 1), (DeviceJobStatus::Running, 1)]);
    assert_eq!(t, WaveTally { size: 10, succeeded: 8, failed: 1, pending: 1 });
    assert_eq!(advance(&mut job, t, NOW), Next::Wait(WATCH_MS));
    let later = UnixMillis(NOW.0 + 5_000);
    assert_eq!(advance(&mut job, tally(&[(DeviceJobStatus::Completed, 10)]), later), Next::Again);
    let state = job.rollout.clone().unwrap();
    assert_eq!((state.wave, state.wave_started), (1, Some(later)), "the next wave starts now");
    let refused = tally(&[(DeviceJobStatus::Failed, 3), (DeviceJobStatus::Completed, 7)]);
    assert_eq!(advance(&mut job, refused, later), Next::Again);
    assert_eq!(job.status, JobStatus::Paused);
    assert!(job.status_message.as_deref().is_some_and(|m| m.contains("refused")));
    let before = job.clone();
    assert_eq!(advance(&mut job, refused, later), Next::Again);
    assert_eq!(job, before, "a paused job is left as it is");
}

#[test]
fn a_rollback_marks_each_device() {
    let job = running(twin_update(None));
    let record = DeviceJob::new(&job, "a", 0, NOW);
    assert_eq!(rolled_back(&record, Ok(true)), (Restore::Restored, None));
    assert_eq!(rolled_back(&record, Ok(false)), (Restore::Nothing, None));
    let (mark, stored) = rolled_back(&record, Err(HubError::new(ErrorCode::DeviceNotFound, "deleted")));
    assert_eq!(mark, Restore::Nothing);
    let error = stored.unwrap().error.unwrap();
    assert_eq!(error["code"], "DeviceNotFound");
    assert_eq!(error["description"], "rollback: deleted");
}

#[test]
fn jobs_keep_to_their_rate() {
    assert_eq!(device_rate(0, None), 0, "unpaced");
    assert_eq!(device_rate(0, Some(10.0)), 10, "the tier's rate");
    assert_eq!(device_rate(50, Some(10.0)), 10);
    assert_eq!(device_rate(5, Some(10.0)), 5);
    assert_eq!(device_rate(0, Some(0.2)), 1, "at least one a second");
    assert_eq!(batch_size(100, 0), 100);
    assert_eq!(batch_size(100, 10), 10, "a second's worth");
    assert_eq!(batch_size(50_000, 0), 1_000, "within one invocation's subrequests");
    assert_eq!(pace(10, 10, 200), Some(800));
    assert_eq!(pace(10, 10, 1_500), None);
    assert_eq!(pace(10, 0, 0), None, "unpaced");
}
