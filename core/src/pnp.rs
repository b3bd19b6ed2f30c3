//! IoT Plug and Play: the model a device announces, and the digital twin view of its twin.
//!
//! A device names its model (a DTMI such as `dtmi:com:example:Thermostat;1`) in its MQTT
//! CONNECT user name, `...&model-id={dtmi}` (spec §5.2); the hub keeps it as the twin's
//! `modelId`, which queries can select on. The digital twin (`/digitaltwins/{id}`) is another
//! view of the same twin: reported values at the root and per component (an object marked
//! `"__t": "c"`), desired values and acknowledgements under `$metadata`; a JSON Patch on it is
//! a desired-property patch ([`desired_from_json_patch`]).

use crate::{ErrorCode, HubError};
use serde_json::{json, Map, Value};

/// The longest model id kept (DTDL v3's bound on a DTMI).
pub const MAX_MODEL_ID_LEN: usize = 2048;

/// Whether `id` is a DTMI as DTDL defines it: `dtmi:` then `:`-separated segments (each a
/// letter, then letters, digits or `_`, not ending in `_`), then `;` and a version of 1 to 9
/// digits without a leading zero.
pub fn is_model_id(id: &str) -> bool {
    if id.len() > MAX_MODEL_ID_LEN {
        return false;
    }
    let Some(rest) = id.strip_prefix("dtmi:") else { return false };
    let Some((path, version)) = rest.rsplit_once(';') else { return false };
    let version_ok =
        (1..=9).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_digit()) && !version.starts_with('0');
    let segment_ok = |s: &str| {
        let bytes = s.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphabetic)
            && bytes.last().is_some_and(|b| *b != b'_')
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    };
    version_ok && path.split(':').all(segment_ok)
}

/// A `model-id` that is no DTMI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the user name's model-id is not a DTMI (dtmi:segment:...;version)")]
pub struct NotAModelId;

/// The model id a CONNECT user name announces (`{host}/{clientId}/?...&model-id={dtmi}`,
/// percent-encoded): `Ok(None)` when it announces none.
pub fn announced_model_id(username: &str) -> Result<Option<String>, NotAModelId> {
    let Some((_, query)) = username.split_once('?') else { return Ok(None) };
    let Some(raw) = query.split('&').find_map(|p| p.strip_prefix("model-id=")) else { return Ok(None) };
    let id = percent_encoding::percent_decode_str(raw).decode_utf8().map_err(|_| NotAModelId)?;
    if is_model_id(&id) {
        Ok(Some(id.into_owned()))
    } else {
        Err(NotAModelId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_dtmis() {
        for good in ["dtmi:com:example:Thermostat;1", "dtmi:a;123456789", "dtmi:x_1:y;2"] {
            assert!(is_model_id(good), "{good}");
        }
        for bad in [
            "",
            "dtmi:",
            "dtmi:com:example;0",
            "dtmi:com:example",
            "dtmi:1com;1",
            "dtmi:com_;1",
            "dtmi:a;1234567890",
            "dtmi:a b;1",
            "urn:x;1",
        ] {
            assert!(!is_model_id(bad), "{bad}");
        }
        assert!(!is_model_id(&format!("dtmi:{};1", "a".repeat(MAX_MODEL_ID_LEN))));
    }

    #[test]
    fn the_user_name_announces_the_model() {
        let name = "hub/d1/?api-version=2020-09-30&DeviceClientType=py&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1";
        assert_eq!(announced_model_id(name), Ok(Some("dtmi:com:example:Thermostat;1".to_owned())));
        assert_eq!(announced_model_id("hub/d1/?api-version=2021-04-12"), Ok(None));
        assert_eq!(announced_model_id("hub/d1/"), Ok(None));
        assert_eq!(announced_model_id("hub/d1/?model-id=not-a-dtmi"), Err(NotAModelId));
    }
}

/// The component marker of IoT Plug and Play: an object in desired or reported properties with
/// `"__t": "c"` is a component, whose members are that component's properties.
pub const COMPONENT_MARKER: &str = "__t";

/// Whether a desired or reported value is a component.
pub fn is_component(v: &Value) -> bool {
    v.get(COMPONENT_MARKER).and_then(Value::as_str) == Some("c")
}

/// A writable property's acknowledgement as a device reports it, `{"value", "ac", "av",
/// "ad"}` (`av` and `ad` optional), if `reported` is one.
pub fn acknowledgement(reported: &Value) -> Option<&Map<String, Value>> {
    reported.as_object().filter(|o| o.contains_key("value") && o.contains_key("ac"))
}

/// The digital twin view (`GET /digitaltwins/{id}`) of a twin as the service sees it: the
/// reported values at the root and in each component (a writable property's acknowledgement
/// `{"value", "ac", "av", "ad"}` shown as its value), and under `$metadata` each property's
/// desired value and version, its acknowledgement and when it changed.
pub fn digital_twin(twin: &Value, id: &str) -> Value {
    let desired = twin["properties"]["desired"].as_object().cloned().unwrap_or_default();
    let reported = twin["properties"]["reported"].as_object().cloned().unwrap_or_default();
    let desired_version = twin["properties"]["desired"]["$version"].as_u64().unwrap_or(0);
    let mut out = view_level(&desired, &reported, desired_version);
    if let Value::Object(map) = &mut out {
        map.insert("$dtId".to_owned(), Value::from(id));
        if let Some(Value::Object(meta)) = map.get_mut("$metadata") {
            meta.insert("$model".to_owned(), twin["modelId"].clone());
        }
        // Components named only in desired (nothing reported yet) still appear.
        for (name, value) in &desired {
            if is_component(value) && !map.contains_key(name) {
                let d = value.as_object().cloned().unwrap_or_default();
                map.insert(name.clone(), view_level(&d, &Map::new(), desired_version));
            }
        }
    }
    out
}

/// One level (the root, or a component) of the digital twin view.
fn view_level(desired: &Map<String, Value>, reported: &Map<String, Value>, desired_version: u64) -> Value {
    let mut out = Map::new();
    let mut meta = Map::new();
    let desired_meta = desired.get("$metadata").and_then(Value::as_object);
    let reported_meta = reported.get("$metadata").and_then(Value::as_object);
    let mut names: Vec<&String> =
        desired.keys().chain(reported.keys()).filter(|k| !k.starts_with('$') && *k != COMPONENT_MARKER).collect();
    names.sort();
    names.dedup();
    for name in names {
        let d = desired.get(name);
        let r = reported.get(name);
        if d.is_some_and(is_component) || r.is_some_and(is_component) {
            let dm = d.and_then(Value::as_object).cloned().unwrap_or_default();
            let rm = r.and_then(Value::as_object).cloned().unwrap_or_default();
            out.insert(name.clone(), view_level(&dm, &rm, desired_version));
            continue;
        }
        let mut m = Map::new();
        if let Some(d) = d {
            m.insert("desiredValue".to_owned(), d.clone());
            let version = desired_meta
                .and_then(|dm| dm.get(name))
                .and_then(|x| x["$lastUpdatedVersion"].as_u64())
                .unwrap_or(desired_version);
            m.insert("desiredVersion".to_owned(), Value::from(version));
        }
        match r {
            Some(value) if let Some(ack) = acknowledgement(value) => {
                out.insert(name.clone(), ack["value"].clone());
                m.insert("ackCode".to_owned(), ack["ac"].clone());
                if let Some(av) = ack.get("av") {
                    m.insert("ackVersion".to_owned(), av.clone());
                }
                if let Some(ad) = ack.get("ad") {
                    m.insert("ackDescription".to_owned(), ad.clone());
                }
            }
            Some(value) => {
                out.insert(name.clone(), value.clone());
            }
            None => {}
        }
        let updated = reported_meta
            .and_then(|rm| rm.get(name))
            .or_else(|| desired_meta.and_then(|dm| dm.get(name)))
            .and_then(|x| x.get("$lastUpdated"))
            .cloned();
        if let Some(updated) = updated {
            m.insert("lastUpdateTime".to_owned(), updated);
        }
        meta.insert(name.clone(), Value::Object(m));
    }
    out.insert("$metadata".to_owned(), Value::Object(meta));
    Value::Object(out)
}

/// A JSON Patch (RFC 6902) on a digital twin (`PATCH /digitaltwins/{id}`) as the service
/// patch of desired properties it stands for: `add` and `replace` set a writable property
/// (`/name`, or `/component/name`, which marks the component), `remove` deletes it. Anything
/// else (other operations, `$` names, deeper paths, a non-array body) is refused whole.
pub fn desired_from_json_patch(body: &str) -> Result<Value, HubError> {
    let bad = |why: String| HubError::new(ErrorCode::ArgumentInvalid, why);
    let ops: Vec<Value> = serde_json::from_str(body).map_err(|e| {
        HubError::new(ErrorCode::IotHubFormatError, format!("a digital twin patch is a JSON Patch array: {e}"))
    })?;
    if ops.is_empty() {
        return Err(bad("the JSON Patch has no operations".into()));
    }
    let mut desired = Map::new();
    for (i, op) in ops.iter().enumerate() {
        let kind = op["op"].as_str().unwrap_or_default();
        let path = op["path"].as_str().ok_or_else(|| bad(format!("operation {i} has no path")))?;
        let names: Vec<String> = path
            .strip_prefix('/')
            .ok_or_else(|| bad(format!("operation {i}: path '{path}' must start with '/'")))?
            .split('/')
            .map(|n| n.replace("~1", "/").replace("~0", "~"))
            .collect();
        if names.iter().any(|n| n.is_empty() || n.starts_with('$') || n == COMPONENT_MARKER) || names.len() > 2 {
            return Err(bad(format!(
                "operation {i}: '{path}' is not a writable property (/property or /component/property)"
            )));
        }
        let value = match kind {
            "add" | "replace" => op.get("value").cloned().ok_or_else(|| bad(format!("operation {i} has no value")))?,
            "remove" => Value::Null,
            other => return Err(bad(format!("operation {i}: '{other}' is not supported (add, replace, remove)"))),
        };
        match names.as_slice() {
            [name] => {
                desired.insert(name.clone(), value);
            }
            [component, name] => {
                let entry = desired.entry(component.clone()).or_insert_with(|| json!({ COMPONENT_MARKER: "c" }));
                match entry {
                    Value::Object(c) => {
                        c.insert(name.clone(), value);
                    }
                    _ => return Err(bad(format!("operation {i}: '{component}' is set and used as a component"))),
                }
            }
            _ => return Err(bad(format!("operation {i}: '{path}' is too deep"))),
        }
    }
    let patch = json!({ "properties": { "desired": desired } });
    crate::twin::ServicePatch::parse(&patch.to_string()).map_err(|e| HubError::from(&e))?;
    Ok(patch)
}

#[cfg(test)]
mod twin_view_tests {
    use super::*;

    fn twin() -> Value {
        json!({
            "deviceId": "d1",
            "modelId": "dtmi:com:example:TemperatureController;1",
            "properties": {
                "desired": {
                    "targetHumidity": 40,
                    "thermostat1": { "__t": "c", "targetTemperature": 22.5 },
                    "$metadata": { "targetHumidity": { "$lastUpdated": "t1", "$lastUpdatedVersion": 3 } },
                    "$version": 4
                },
                "reported": {
                    "serialNumber": "SN-1",
                    "targetHumidity": { "value": 40, "ac": 200, "av": 3, "ad": "ok" },
                    "thermostat1": { "__t": "c", "targetTemperature": { "value": 21, "ac": 202, "av": 4 } },
                    "$metadata": { "serialNumber": { "$lastUpdated": "t2" } },
                    "$version": 7
                }
            }
        })
    }

    #[test]
    fn the_digital_twin_shows_values_at_their_level_and_the_rest_in_metadata() {
        let dt = digital_twin(&twin(), "d1");
        assert_eq!(dt["$dtId"], "d1");
        assert_eq!(dt["$metadata"]["$model"], "dtmi:com:example:TemperatureController;1");
        assert_eq!(dt["serialNumber"], "SN-1");
        assert_eq!(dt["targetHumidity"], 40);
        assert_eq!(dt["$metadata"]["targetHumidity"]["desiredValue"], 40);
        assert_eq!(dt["$metadata"]["targetHumidity"]["desiredVersion"], 3);
        assert_eq!(dt["$metadata"]["targetHumidity"]["ackCode"], 200);
        assert_eq!(dt["$metadata"]["serialNumber"]["lastUpdateTime"], "t2");
        assert_eq!(dt["thermostat1"]["targetTemperature"], 21);
        assert_eq!(dt["thermostat1"]["$metadata"]["targetTemperature"]["desiredValue"], 22.5);
        assert_eq!(dt["thermostat1"]["$metadata"]["targetTemperature"]["ackCode"], 202);
        assert!(dt["thermostat1"].get("__t").is_none());
    }

    #[test]
    fn a_json_patch_is_a_desired_patch_or_refused_whole() {
        let patch = desired_from_json_patch(
            r#"[{"op":"add","path":"/targetHumidity","value":45},
                {"op":"replace","path":"/thermostat1/targetTemperature","value":23},
                {"op":"remove","path":"/old"}]"#,
        )
        .unwrap();
        assert_eq!(
            patch,
            json!({ "properties": { "desired": {
                "targetHumidity": 45,
                "thermostat1": { "__t": "c", "targetTemperature": 23 },
                "old": null
            } } })
        );
        for bad in [
            r#"{"op":"add"}"#,
            r#"[]"#,
            r#"[{"op":"move","from":"/a","path":"/b"}]"#,
            r#"[{"op":"add","path":"/$metadata","value":1}]"#,
            r#"[{"op":"add","path":"/a/b/c","value":1}]"#,
            r#"[{"op":"add","path":"a","value":1}]"#,
            r#"[{"op":"add","path":"/a"}]"#,
            r#"[{"op":"add","path":"/a","value":1},{"op":"add","path":"/a/b","value":2}]"#,
        ] {
            assert!(desired_from_json_patch(bad).is_err(), "{bad}");
        }
    }
}
