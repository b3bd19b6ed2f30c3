//! Job requests from arbitrary bodies (and as arbitrary rollout plans and conditions): never
//! panic; an accepted request makes a job whose wire form and waves are well formed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use twinhub_core::job::rollout::{device_outcome, RolloutPlan};
use twinhub_core::job::{Job, JobRequest};
use twinhub_core::UnixMillis;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let now = UnixMillis(1_780_000_000_000);
    // The body as sent, and the text as a condition inside an otherwise valid request.
    let wrapped = serde_json::json!({
        "type": "scheduleUpdateTwin",
        "queryCondition": text,
        "updateTwin": { "properties": { "desired": { "firmwareVersion": "2.1.0" } } },
    })
    .to_string();
    for body in [text.as_ref(), wrapped.as_str()] {
        if let Ok(request) = JobRequest::parse("fuzz", body, now) {
            let job = Job::new(request, "fuzz", now);
            assert!(job.to_wire()["jobId"] == "fuzz");
            if let Some(r) = &job.rollout {
                for n in [1usize, 7, 100] {
                    assert!((0..n).all(|p| r.plan.wave_of(p, n) < r.plan.waves.len()));
                }
            }
        }
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        let _ = RolloutPlan::parse(&v);
        let _ = device_outcome(&v, &["firmwareVersion".to_owned()]);
    }
});
