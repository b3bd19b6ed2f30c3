//! What the hub renders reads back into the wire types, field by field.

use super::*;
use crate::configuration::ConfigurationRequest;
use crate::identity::{DeviceIdentity, DeviceRequest};
use crate::job::{DeviceJob, Job, JobRequest};
use crate::twin::{ReportedPatch, ServicePatch, Twin as StoredTwin};
use crate::UnixMillis;
use serde_json::{json, Map, Value};

const NOW: UnixMillis = UnixMillis(1_780_000_000_000);

fn identity(key: &str) -> DeviceIdentity {
    DeviceIdentity::create(key, &DeviceRequest::parse("{}").unwrap(), NOW, &[7; 64]).unwrap()
}

#[test]
fn a_twin_reads_back_with_its_sections_and_drift() {
    let identity = identity("thermostat-1");
    let mut twin = StoredTwin::new(NOW);
    let patch = json!({"tags": {"site": "north"}, "properties": {"desired": {"firmwareVersion": "2.1.0"}}});
    twin.apply_service_patch(&ServicePatch::parse(&patch.to_string()).unwrap(), NOW).unwrap();
    twin.apply_reported_patch(&ReportedPatch::parse(br#"{"firmwareVersion":"2.0.0"}"#).unwrap(), NOW).unwrap();
    let rendered = twin.to_service_json(&identity);
    let read: Twin = serde_json::from_value(rendered.clone()).unwrap();
    assert_eq!(read.device_id, "thermostat-1");
    assert_eq!(read.key(), "thermostat-1");
    assert_eq!(read.etag, rendered["etag"]);
    assert_eq!(read.version, rendered["version"]);
    assert_eq!((read.status.as_str(), read.connection_state.as_str()), ("enabled", "Disconnected"));
    assert_eq!(read.tags["site"], "north");
    assert_eq!(read.properties.desired["firmwareVersion"], "2.1.0");
    assert_eq!(read.desired_version(), rendered["properties"]["desired"]["$version"].as_u64());
    assert_eq!(read.drift_count(), 1, "2.0.0 reported against 2.1.0 desired");
    assert_eq!(read.drift().len(), 1);
    assert!(read.rest.contains_key("deviceEtag"), "what it does not name is kept");
    assert_eq!(read.to_value(), rendered, "and written back as it came");
    let module: Twin = serde_json::from_value(json!({"deviceId": "d", "moduleId": "m"})).unwrap();
    assert_eq!(module.key(), "d/m");
}

#[test]
fn an_identity_reads_back_and_its_change_is_a_put_body() {
    let rendered = identity("meter-7").to_wire();
    let mut read: Identity = serde_json::from_value(rendered.clone()).unwrap();
    assert_eq!(read.device_id, "meter-7");
    assert!(read.enabled());
    assert_eq!(read.primary_key(), rendered["authentication"]["symmetricKey"]["primaryKey"]);
    assert_eq!(serde_json::to_value(&read).unwrap(), rendered, "written back as it came");
    read.status = Some("disabled".into());
    let body = serde_json::to_string(&read).unwrap();
    let request = DeviceRequest::parse(&body).unwrap();
    let changed = identity("meter-7");
    let mut changed = changed;
    changed.update(&request, NOW).unwrap();
    assert_eq!(changed.to_wire()["status"], "disabled", "the hub takes it as PUT /devices/{{id}}");
    assert_eq!(changed.to_wire()["authentication"], rendered["authentication"], "the keys kept");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["capabilities"], rendered["capabilities"], "iotEdge kept");
    let module: Identity = serde_json::from_value(identity("meter-7/probe").to_wire()).unwrap();
    assert_eq!((module.module_id.as_deref(), module.status), (Some("probe"), None));
}

#[test]
fn jobs_device_jobs_and_configurations_read_back() {
    let body = json!({"type": "scheduleUpdateTwin", "queryCondition": "*", "rollout": {"canaryPercent": 10},
        "updateTwin": {"etag": "*", "properties": {"desired": {"fw": "2"}}}});
    let job = Job::new(JobRequest::parse("fw", &body.to_string(), NOW).unwrap(), "iothubowner", NOW);
    let read: JobView = serde_json::from_value(job.to_wire()).unwrap();
    assert_eq!((read.job_id.as_str(), read.status.as_str()), ("fw", "queued"));
    assert!(read.is_twin_update());
    assert_eq!(read.rollout.as_ref().map(|r| (r.current_wave, r.waves.len())), Some((1, 2)));
    let mut record = DeviceJob::new(&job, "d1", 0, NOW);
    record.fail("DeviceRefused", "flash failed", NOW);
    let read: DeviceJobView = serde_json::from_value(record.to_wire()).unwrap();
    assert_eq!(read.error.map(|e| (e.code, e.description)), Some(("DeviceRefused".into(), "flash failed".into())));
    let request = ConfigurationRequest::parse(
        &json!({"content": {"deviceContent": {"properties.desired.level": 5}}, "targetCondition": "tags.site = 'y'", "priority": 3})
            .to_string(),
    )
    .unwrap();
    let configuration = request.check("site-y", None, NOW).unwrap();
    let mut system = Map::new();
    system.insert("targetedCount".into(), Value::from(4));
    let read: ConfigurationView = serde_json::from_value(configuration.to_wire(&system, &Map::new())).unwrap();
    assert_eq!((read.id.as_str(), read.priority, read.system_count("targetedCount")), ("site-y", 3, 4));
    assert_eq!(read.content()["properties.desired.level"], 5);
    assert_eq!(read.etag, configuration.etag_string());
}

#[test]
fn answers_from_an_older_or_other_hub_read_with_defaults() {
    let x509: Identity = serde_json::from_value(json!({"deviceId": "x", "authentication": {"type": "selfSigned",
        "symmetricKey": {"primaryKey": null, "secondaryKey": null}, "x509Thumbprint": {"primaryThumbprint": "AB"}},
        "parentScopes": []}))
    .unwrap();
    assert_eq!(x509.primary_key(), "");
    let sent = serde_json::to_value(&x509).unwrap();
    assert_eq!(sent["authentication"]["x509Thumbprint"]["primaryThumbprint"], "AB", "an Azure hub's fields go back");
    assert_eq!(sent["parentScopes"], json!([]));
    let twin: Twin = serde_json::from_value(json!({"deviceId": "d", "properties": {"desired": {}}})).unwrap();
    assert!(twin.tags.is_empty());
    assert_eq!(twin.version, 0);
    let session: SessionInfo =
        serde_json::from_value(json!({"policy": "registryRead", "permissions": ["RegistryRead"]})).unwrap();
    assert!(session.may("RegistryRead") && !session.may("RegistryWrite"));
    assert_eq!(session.unavailable("live"), None);
    let message: StoredMessage = serde_json::from_value(
        json!({"enqueuedTime": "t", "properties": [["alert", "high_temperature"], ["x", null]], "body": {"t": 1}}),
    )
    .unwrap();
    assert_eq!(message.property("alert"), Some("high_temperature"));
    assert_eq!(message.property("x"), None);
}
