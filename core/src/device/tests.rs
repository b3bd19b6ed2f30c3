//! The device machine's rules, one test per rule.

use super::*;
use crate::auth::sign;
use crate::identity::Status;
use serde_json::json;

const ID: &str = "dev-1";
const HOST: &str = "hub.example.net";
const T0: UnixMillis = UnixMillis(1_700_000_000_000);

fn request(body: serde_json::Value) -> DeviceRequest {
    DeviceRequest::parse(&body.to_string()).unwrap()
}

/// A state holding a freshly created, enabled device.
fn created() -> DeviceState {
    let mut state = DeviceState::default();
    state.put_identity(ID, &request(json!({ "deviceId": ID })), None, false, T0, &[7; 64]).unwrap();
    state
}

fn token(state: &DeviceState) -> String {
    let key = &state.device.as_ref().unwrap().identity.primary_key;
    sign(&format!("{HOST}/devices/{ID}"), key, None, T0.as_secs() + 3600).unwrap()
}

fn connect_as(state: &mut DeviceState, conn: &str, clean_session: bool) -> Result<Step, ConnectRefusal> {
    let token = token(state);
    let request = ConnectRequest {
        device_id: ID,
        token: Some(&token),
        host: HOST,
        gateway: "gw-0",
        conn,
        clean_session,
        model_id: None,
    };
    state.connect(request, &[], DeviceConfig::default(), T0)
}

fn subscribe(state: &mut DeviceState, conn: &str, subscriptions: &[Subscription], keep: bool) -> Step {
    state.subscriptions_changed(conn, subscriptions.to_vec(), keep, DeviceConfig::default())
}

fn patch(body: serde_json::Value) -> TwinWrite {
    TwinWrite::Patch(ServicePatch::parse(&body.to_string()).unwrap())
}

fn owner() -> WriteBy<'static> {
    WriteBy { if_match: None, actor: "iothubowner" }
}

fn notified(step: &Step) -> Vec<&serde_json::Value> {
    step.effects
        .iter()
        .filter_map(|e| match e {
            Effect::NotifyDesired { patch, .. } => Some(patch),
            _ => None,
        })
        .collect()
}

fn closed(step: &Step) -> Vec<&'static str> {
    step.effects
        .iter()
        .filter_map(|e| match e {
            Effect::CloseSession { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn create_then_a_second_create_is_a_conflict_and_upsert_updates() {
    let mut state = created();
    let again = state.put_identity(ID, &request(json!({})), None, false, T0, &[1; 64]).unwrap_err();
    assert_eq!(again.code, ErrorCode::DeviceAlreadyExists);
    let step = state.put_identity(ID, &request(json!({ "statusReason": "x" })), None, true, T0, &[1; 64]).unwrap();
    assert_eq!(step.reply, Reply::Identity);
    assert_eq!(state.device.as_ref().unwrap().identity.etag, 2);
}

#[test]
fn an_identity_update_with_a_stale_etag_is_refused_and_changes_nothing() {
    let mut state = created();
    let before = state.clone();
    let e =
        state.put_identity(ID, &request(json!({ "status": "disabled" })), Some("\"bm9wZQ==\""), false, T0, &[0; 64]);
    assert_eq!(e.unwrap_err().code, ErrorCode::PreconditionFailed);
    assert_eq!(state, before);
}

#[test]
fn disabling_a_device_or_changing_its_keys_ends_its_session() {
    for body in [
        json!({ "status": "disabled" }),
        json!({ "authentication": { "symmetricKey": { "primaryKey": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" } } }),
    ] {
        let mut state = created();
        connect_as(&mut state, "c1", true).unwrap();
        let step = state.put_identity(ID, &request(body), None, true, T0, &[0; 64]).unwrap();
        assert_eq!(closed(&step), ["device disabled or keys changed"]);
        assert!(step.persist.session && state.session.is_none());
        assert!(!state.device.as_ref().unwrap().identity.connected);
    }
}

#[test]
fn a_status_reason_alone_keeps_the_session() {
    let mut state = created();
    connect_as(&mut state, "c1", true).unwrap();
    let step = state.put_identity(ID, &request(json!({ "statusReason": "fine" })), None, true, T0, &[0; 64]).unwrap();
    assert!(closed(&step).is_empty());
    assert!(state.session.is_some());
}

#[test]
fn delete_forgets_everything_and_closes_the_session_and_live_views() {
    let mut state = created();
    connect_as(&mut state, "c1", false).unwrap();
    subscribe(&mut state, "c1", &[Subscription::DesiredPatches], true);
    let step = state.delete(ID, None).unwrap();
    assert_eq!(state, DeviceState::default());
    assert_eq!(closed(&step), ["the device was deleted"]);
    assert!(step.effects.contains(&Effect::CloseLiveViews { reason: "the device was deleted" }));
    assert_eq!(state.delete(ID, None).unwrap_err().code, ErrorCode::DeviceNotFound);
}

#[test]
fn a_desired_patch_notifies_the_session_with_its_version_and_a_tags_patch_does_not() {
    let mut state = created();
    connect_as(&mut state, "c1", true).unwrap();
    let tags = state.write_twin(ID, &patch(json!({ "tags": { "room": 1 } })), owner(), T0).unwrap();
    assert!(notified(&tags).is_empty());
    let desired =
        state.write_twin(ID, &patch(json!({ "properties": { "desired": { "x": 1 } } })), owner(), T0).unwrap();
    assert_eq!(notified(&desired), [&json!({ "x": 1, "$version": 2 })]);
    assert!(desired.effects.ends_with(&[Effect::Project]));
}

#[test]
fn a_replacement_notifies_the_whole_new_desired() {
    let mut state = created();
    connect_as(&mut state, "c1", true).unwrap();
    state.write_twin(ID, &patch(json!({ "properties": { "desired": { "a": 1 } } })), owner(), T0).unwrap();
    let replacement = TwinReplacement::parse(&json!({ "properties": { "desired": { "b": 2 } } }).to_string()).unwrap();
    let step = state.write_twin(ID, &TwinWrite::Replace(replacement), owner(), T0).unwrap();
    assert_eq!(notified(&step), [&json!({ "b": 2, "$version": 3 })]);
}

#[test]
fn only_a_session_subscribed_to_desired_moves_the_catch_up_baseline() {
    let mut state = created();
    connect_as(&mut state, "c1", true).unwrap();
    let baseline = state.desired_seen.clone();
    let step = state.write_twin(ID, &patch(json!({ "properties": { "desired": { "x": 1 } } })), owner(), T0).unwrap();
    assert!(!step.persist.desired_seen);
    assert_eq!(state.desired_seen, baseline);
    subscribe(&mut state, "c1", &[Subscription::DesiredPatches], false);
    let step = state.write_twin(ID, &patch(json!({ "properties": { "desired": { "x": 2 } } })), owner(), T0).unwrap();
    assert!(step.persist.desired_seen);
    assert_eq!(state.desired_seen.as_ref().unwrap().version, 3);
}

#[test]
fn a_stale_twin_etag_is_refused_and_changes_nothing() {
    let mut state = created();
    let before = state.clone();
    let by = WriteBy { if_match: Some("\"AAAAAAAAAAk=\""), actor: "x" };
    let e = state.write_twin(ID, &patch(json!({ "tags": { "a": 1 } })), by, T0).unwrap_err();
    assert_eq!(e.code, ErrorCode::PreconditionFailed);
    assert_eq!(state, before);
}

#[test]
fn cloud_to_device_holds_at_most_fifty_waiting() {
    let mut state = created();
    for n in 1..=MAX_QUEUE_DEPTH {
        let message = CloudToDeviceMessage::parse("{}", ID, format!("m{n}")).unwrap();
        let step = state.enqueue_cloud_to_device(ID, message).unwrap();
        assert_eq!(step.reply, Reply::Queued { message_id: format!("m{n}"), queued: n });
    }
    let before = state.clone();
    let message = CloudToDeviceMessage::parse("{}", ID, "m51".into()).unwrap();
    let e = state.enqueue_cloud_to_device(ID, message).unwrap_err();
    assert_eq!(e.code, ErrorCode::DeviceMaximumQueueDepthExceeded);
    assert_eq!(state, before);
    state.cloud_to_device_completed();
    assert_eq!(state.device.as_ref().unwrap().identity.cloud_to_device_count, MAX_QUEUE_DEPTH - 1);
}

#[test]
fn a_queued_message_goes_out_at_once_only_to_a_session_holding_cloud_to_device() {
    let mut state = created();
    connect_as(&mut state, "c1", true).unwrap();
    let message = || CloudToDeviceMessage::parse("{}", ID, "m".into()).unwrap();
    let step = state.enqueue_cloud_to_device(ID, message()).unwrap();
    assert!(!step.effects.iter().any(|e| matches!(e, Effect::DeliverCloudToDevice { .. })));
    let step = subscribe(&mut state, "c1", &[Subscription::CloudToDevice], false);
    assert!(step.effects.iter().any(|e| matches!(e, Effect::DeliverCloudToDevice { .. })));
    let step = state.enqueue_cloud_to_device(ID, message()).unwrap();
    assert!(step.effects.iter().any(|e| matches!(e, Effect::DeliverCloudToDevice { .. })));
}

#[test]
fn connect_refuses_an_unknown_or_disabled_device_and_a_bad_token() {
    let mut nobody = DeviceState::default();
    let request = ConnectRequest {
        device_id: ID,
        token: None,
        host: HOST,
        gateway: "g",
        conn: "c",
        clean_session: true,
        model_id: None,
    };
    assert_eq!(nobody.connect(request, &[], DeviceConfig::default(), T0).unwrap_err(), ConnectRefusal::UnknownDevice);

    let mut state = created();
    let bad = ConnectRequest { token: Some("SharedAccessSignature sr=x&sig=y&se=1"), ..request };
    assert!(matches!(state.connect(bad, &[], DeviceConfig::default(), T0), Err(ConnectRefusal::Token(_))));
    assert!(state.session.is_none());

    state.put_identity(ID, &request_disabled(), None, true, T0, &[0; 64]).unwrap();
    assert_eq!(connect_as(&mut state, "c1", true).unwrap_err(), ConnectRefusal::Disabled);
    assert_eq!(state.device.as_ref().unwrap().identity.status, Status::Disabled);
}

fn request_disabled() -> DeviceRequest {
    request(json!({ "status": "disabled" }))
}

#[test]
fn a_newer_connection_replaces_the_older_whose_ops_are_then_refused() {
    let mut state = created();
    connect_as(&mut state, "c1", true).unwrap();
    let step = connect_as(&mut state, "c2", true).unwrap();
    assert_eq!(closed(&step), ["a newer connection for this device"]);
    assert_eq!(state.report(ID, "c1", br#"{"a":1}"#, T0).unwrap().reply, Reply::SessionEnded);
    assert_eq!(state.twin_get(ID, "c1").unwrap().reply, Reply::SessionEnded);
    // The old session's disconnect does not mark the device disconnected.
    assert!(state.disconnected("c1", T0).persist.is_empty());
    assert!(state.device.as_ref().unwrap().identity.connected);
    assert!(!state.disconnected("c2", T0).persist.is_empty());
    assert!(!state.device.as_ref().unwrap().identity.connected && state.session.is_none());
}

#[test]
fn clean_session_zero_gets_its_subscriptions_back_and_clean_session_one_forgets_them() {
    let mut state = created();
    connect_as(&mut state, "c1", false).unwrap();
    subscribe(&mut state, "c1", &[Subscription::Methods, Subscription::CloudToDevice], true);
    let step = connect_as(&mut state, "c2", false).unwrap();
    let kept = vec![Subscription::Methods, Subscription::CloudToDevice];
    assert!(
        matches!(&step.reply, Reply::Connect(ConnectVerdict::Accepted { subscriptions, .. }) if *subscriptions == kept)
    );
    assert!(step.effects.iter().any(|e| matches!(e, Effect::DeliverCloudToDevice { .. })));
    let step = connect_as(&mut state, "c3", true).unwrap();
    assert!(step.persist.kept_subscriptions && state.kept_subscriptions.is_none());
    let step = connect_as(&mut state, "c4", false).unwrap();
    assert!(
        matches!(&step.reply, Reply::Connect(ConnectVerdict::Accepted { subscriptions, .. }) if subscriptions.is_empty())
    );
}

#[test]
fn a_device_back_from_away_is_caught_up_when_it_subscribes_unless_catch_up_is_off() {
    let mut state = created();
    connect_as(&mut state, "c1", true).unwrap();
    state.disconnected("c1", T0);
    state.write_twin(ID, &patch(json!({ "properties": { "desired": { "x": 1 } } })), owner(), T0).unwrap();
    connect_as(&mut state, "c2", true).unwrap();
    let off = state.clone().subscriptions_changed(
        "c2",
        vec![Subscription::DesiredPatches],
        false,
        DeviceConfig { catch_up: false },
    );
    assert!(notified(&off).is_empty());
    let step = subscribe(&mut state, "c2", &[Subscription::DesiredPatches], false);
    assert_eq!(notified(&step), [&json!({ "x": 1, "$version": 2 })]);
    // Subscribing again (it already holds desired) sends nothing more.
    let again = subscribe(&mut state, "c2", &[Subscription::DesiredPatches, Subscription::Methods], false);
    assert!(notified(&again).is_empty());
}

#[test]
fn a_twin_get_moves_the_baseline_only_when_desired_moved() {
    let mut state = created();
    connect_as(&mut state, "c1", true).unwrap();
    assert!(!state.twin_get(ID, "c1").unwrap().persist.desired_seen);
    state.write_twin(ID, &patch(json!({ "properties": { "desired": { "x": 1 } } })), owner(), T0).unwrap();
    let step = state.twin_get(ID, "c1").unwrap();
    assert_eq!(step.reply, Reply::DeviceTwin);
    assert!(step.persist.desired_seen);
}

#[test]
fn a_report_moves_reported_and_keeps_a_history_entry_and_a_bad_one_changes_nothing() {
    let mut state = created();
    connect_as(&mut state, "c1", true).unwrap();
    let step = state.report(ID, "c1", br#"{"temp":20}"#, T0).unwrap();
    assert_eq!(step.reply, Reply::ReportedVersion(2));
    assert_eq!(step.persist.history.as_ref().unwrap().actor, "device");
    let before = state.clone();
    assert!(state.report(ID, "c1", b"not json", T0).is_err());
    assert_eq!(state, before);
}

#[test]
fn a_job_reaches_a_twin_once_and_is_given_back_once() {
    let mut state = created();
    let body = json!({ "properties": { "desired": { "fw": "2.0" } } }).to_string();
    let step = state.job_update(ID, "j1", &body, None, T0).unwrap();
    let Some(JobMark::Applied { revert, .. }) = &step.persist.job else { panic!("no mark") };
    let record = JobRecord {
        version: state.device.as_ref().unwrap().twin.version,
        revert: revert.as_ref().map(|r| r.to_string()),
        rolled_back: false,
    };
    assert_eq!(
        state.job_update(ID, "j1", &body, Some(&record), T0).unwrap().reply,
        Reply::JobRepeated { version: record.version }
    );
    let step = state.job_rollback(ID, "j1", Some(&record), T0).unwrap();
    assert_eq!(step.persist.job, Some(JobMark::RolledBack { job_id: "j1".into() }));
    assert_eq!(step.persist.history.as_ref().unwrap().actor, "job:j1:rollback");
    assert!(state.device.as_ref().unwrap().twin.desired.properties.get("fw").is_none());
    let given_back = JobRecord { rolled_back: true, ..record };
    assert_eq!(
        state.job_rollback(ID, "j1", Some(&given_back), T0).unwrap().reply,
        Reply::RollbackSkipped { reached: true }
    );
    assert_eq!(state.job_rollback(ID, "j2", None, T0).unwrap().reply, Reply::RollbackSkipped { reached: false });
}

#[test]
fn the_history_entry_renders_its_time_as_iso() {
    let entry = HistoryEntry { version: 3, time: T0, actor: "device".into(), changes: vec![] };
    assert_eq!(
        serde_json::to_value(&entry).unwrap(),
        json!({ "version": 3, "time": T0.to_iso(), "actor": "device", "changes": [] })
    );
}

#[test]
fn a_module_is_an_identity_of_its_own_with_module_errors() {
    let key = "dev-1/mod-1";
    let mut module = DeviceState::default();
    let body = json!({ "deviceId": ID, "moduleId": "mod-1", "managedBy": "edge" });
    module.put_identity(key, &request(body.clone()), None, false, T0, &[3; 64]).unwrap();
    let identity = &module.device.as_ref().unwrap().identity;
    assert_eq!((identity.device_id.as_str(), identity.module_id.as_deref()), (ID, Some("mod-1")));
    let wire = identity.to_wire();
    assert_eq!((wire["moduleId"].as_str(), wire["managedBy"].as_str()), (Some("mod-1"), Some("edge")));
    assert!(wire.get("status").is_none() && wire.get("capabilities").is_none(), "{wire}");
    let twin = module.device.as_ref().unwrap().twin.to_service_json(identity);
    assert_eq!((twin["deviceId"].as_str(), twin["moduleId"].as_str()), (Some(ID), Some("mod-1")));
    let again = module.put_identity(key, &request(body), None, false, T0, &[3; 64]).unwrap_err();
    assert_eq!(again.code, ErrorCode::ModuleAlreadyExistsOnDevice);
    let mut gone = DeviceState::default();
    assert_eq!(gone.delete(key, None).unwrap_err().code, ErrorCode::ModuleNotFound);
    // The path's ids decide; a body naming another module is refused.
    let other = request(json!({ "moduleId": "mod-2" }));
    assert_eq!(
        DeviceState::default().put_identity(key, &other, None, false, T0, &[3; 64]).unwrap_err().code,
        ErrorCode::ArgumentInvalid
    );
}

#[test]
fn a_device_holds_at_most_fifty_modules_and_deleting_it_deletes_them() {
    assert_eq!(DeviceState::default().add_module(ID, "m").unwrap_err().code, ErrorCode::DeviceNotFound);
    let mut state = created();
    for i in 0..crate::identity::MAX_MODULES_PER_DEVICE {
        assert!(state.add_module(ID, &format!("m{i:02}")).unwrap().persist.device);
    }
    // Listed already: no change, so a create that fails later leaves nothing behind twice.
    assert!(!state.add_module(ID, "m07").unwrap().persist.device);
    assert_eq!(state.add_module(ID, "one-more").unwrap_err().code, ErrorCode::TooManyModulesOnDevice);
    assert!(state.remove_module("m07").persist.device);
    assert!(state.add_module(ID, "one-more").is_ok());
    let step = state.delete(ID, None).unwrap();
    let deleted = step.effects.iter().find_map(|e| match e {
        Effect::DeleteModules(keys) => Some(keys.clone()),
        _ => None,
    });
    let deleted = deleted.expect("the modules go with the device");
    assert_eq!(deleted.len(), crate::identity::MAX_MODULES_PER_DEVICE);
    assert!(deleted.contains(&"dev-1/one-more".to_owned()) && !deleted.contains(&"dev-1/m07".to_owned()));
}

#[test]
fn the_announced_model_is_the_twins_model_id_until_another_is_announced() {
    let mut state = created();
    let token = token(&state);
    let mut request = ConnectRequest {
        device_id: ID,
        token: Some(&token),
        host: HOST,
        gateway: "g",
        conn: "c1",
        clean_session: true,
        model_id: Some("dtmi:com:example:Thermostat;1"),
    };
    state.connect(request, &[], DeviceConfig::default(), T0).unwrap();
    let device = state.device.as_ref().unwrap();
    assert_eq!(device.twin.to_service_json(&device.identity)["modelId"], "dtmi:com:example:Thermostat;1");
    request.conn = "c2";
    request.model_id = None;
    state.connect(request, &[], DeviceConfig::default(), T0).unwrap();
    let device = state.device.as_ref().unwrap();
    assert_eq!(device.twin.to_service_json(&device.identity)["modelId"], "dtmi:com:example:Thermostat;1");
}

#[test]
fn a_configuration_applies_once_per_revision_and_leaves_its_values_when_it_goes() {
    use crate::twin::AppliedConfiguration;
    let mut state = created();
    let rev = |revision| AppliedConfiguration { id: "cfg".into(), revision };
    let patch = r#"{"properties":{"desired":{"interval":15}}}"#;
    let step = state.apply_configuration(ID, Some((rev(1), patch)), T0).unwrap();
    assert_eq!(step.persist.history.as_ref().map(|h| h.actor.as_str()), Some("configuration:cfg"));
    let twin = |s: &DeviceState| {
        let d = s.device.as_ref().unwrap();
        d.twin.to_service_json(&d.identity)
    };
    assert_eq!(twin(&state)["properties"]["desired"]["interval"], 15);
    assert_eq!(twin(&state)["configurations"]["cfg"]["status"], "Applied");
    let version = twin(&state)["version"].clone();
    // The same revision again: nothing.
    let again = state.apply_configuration(ID, Some((rev(1), patch)), T0).unwrap();
    assert!(again.persist.is_empty() && again.effects.is_empty());
    assert_eq!(twin(&state)["version"], version);
    // No configuration any more: the status goes, the value stays.
    state.apply_configuration(ID, None, T0).unwrap();
    assert!(twin(&state).get("configurations").is_none());
    assert_eq!(twin(&state)["properties"]["desired"]["interval"], 15);
    // A content that breaks the twin's rules changes nothing.
    let before = state.clone();
    assert!(state.apply_configuration(ID, Some((rev(2), r#"{"properties":{"desired":{"$bad":1}}}"#)), T0).is_err());
    assert_eq!(state, before);
}
