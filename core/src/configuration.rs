//! Automatic device management (`/configurations`): "every twin matching this condition gets
//! these desired properties", kept applied as devices come, go and change their tags.
//!
//! A [`Configuration`] is checked in full when it is written ([`ConfigurationRequest::check`]);
//! which configuration a twin gets is [`winner`]: of those whose target condition the twin
//! matches, the highest priority, ties to the newest. The twin records the one applied to it
//! ([`crate::twin::AppliedConfiguration`]), which is how the hub knows whether it must apply
//! again and what `configurations.[[id]].status = 'Applied'` queries see.
//!
//! A configuration targets device twins (`content.deviceContent`, a condition on `devices`) or
//! module twins (`content.moduleContent`, a condition written `FROM devices.modules WHERE ...`,
//! as Azure has it); the two kinds compete only among themselves ([`winner`]).
//!
//! Choices where Azure is silent or differs (README): content and target condition may change
//! after creation (beyond Azure), each change a new revision that is applied again; a twin that
//! stops matching gets the next configuration's content, and values no configuration sets any
//! more stay as they are (a configuration never deletes desired properties).

use crate::query::{self, Collection, Query};
use crate::twin::ServicePatch;
use crate::{ErrorCode, HubError, UnixMillis};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The most configurations a hub holds (Azure's limit for automatic device configurations).
pub const MAX_CONFIGURATIONS: usize = 100;
/// The most custom metrics a configuration has (Azure's).
pub const MAX_METRICS: usize = 5;
/// Longest configuration id (Azure's).
pub const MAX_ID_LEN: usize = 128;
/// The highest priority accepted.
pub const MAX_PRIORITY: i64 = i32::MAX as i64;
/// What content paths must begin with: configurations set desired properties only.
const DESIRED: &str = "properties.desired";

/// A configuration as the hub keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    pub id: String,
    pub schema_version: String,
    pub labels: Map<String, Value>,
    /// `content.deviceContent` as sent: `properties.desired[.path]` -> value. Empty for a
    /// module configuration.
    pub device_content: Map<String, Value>,
    /// `content.moduleContent`, the same form for module twins. Empty for a device
    /// configuration.
    #[serde(default)]
    pub module_content: Map<String, Value>,
    pub target_condition: String,
    pub priority: i64,
    /// Custom metrics: name -> query text.
    pub metrics: Map<String, Value>,
    pub created: UnixMillis,
    pub last_updated: UnixMillis,
    /// Moves on every update; the etag is derived from it.
    pub etag: u64,
    /// Moves when content or target condition change: the twins get it again.
    pub revision: u64,
}

/// The body of `PUT /configurations/{id}` (and of `testQueries`), every field optional as the
/// SDKs send different subsets.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationRequest {
    pub id: Option<String>,
    pub schema_version: Option<String>,
    pub labels: Option<Map<String, Value>>,
    pub content: Option<ContentRequest>,
    pub target_condition: Option<String>,
    pub priority: Option<i64>,
    pub metrics: Option<MetricsRequest>,
}

/// `content`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentRequest {
    pub device_content: Option<Map<String, Value>>,
    pub modules_content: Option<Map<String, Value>>,
    pub module_content: Option<Map<String, Value>>,
}

/// `metrics`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsRequest {
    pub queries: Option<Map<String, Value>>,
}

fn invalid(message: impl Into<String>) -> HubError {
    HubError::new(ErrorCode::ArgumentInvalid, message)
}

/// Checks a configuration id: 1 to 128 of lower-case ASCII letters, digits and
/// `- : + % _ # * ? ! ( ) , = @ ; $ '` (Azure's rule).
pub fn check_id(id: &str) -> Result<(), HubError> {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-:+%_#*?!(),=@;$'".contains(c);
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(ok) {
        return Err(invalid(format!(
            "a configuration id is 1 to {MAX_ID_LEN} lower-case letters, digits and -:+%_#*?!(),=@;$'"
        )));
    }
    Ok(())
}

impl ConfigurationRequest {
    /// Parses a body; JSON errors are 400.
    pub fn parse(body: &str) -> Result<Self, HubError> {
        serde_json::from_str(body).map_err(|e| HubError::unreadable("invalid configuration body", &e))
    }

    /// The configuration this request makes for `id`, checked in full: created now, or
    /// `previous` updated (its etag and, when content or condition change, revision move).
    pub fn check(
        &self,
        id: &str,
        previous: Option<&Configuration>,
        now: UnixMillis,
    ) -> Result<Configuration, HubError> {
        check_id(id)?;
        if self.id.as_deref().is_some_and(|body_id| body_id != id) {
            return Err(invalid("id in the body does not match the id in the path"));
        }
        let content = self.content.as_ref();
        let given = |m: Option<&Map<String, Value>>| m.filter(|m| !m.is_empty()).cloned();
        if given(content.and_then(|c| c.modules_content.as_ref())).is_some() {
            return Err(invalid(
                "modulesContent (IoT Edge deployments) is not supported; use deviceContent or moduleContent",
            ));
        }
        let device_content = given(content.and_then(|c| c.device_content.as_ref())).unwrap_or_default();
        let module_content = given(content.and_then(|c| c.module_content.as_ref())).unwrap_or_default();
        let for_modules = match (device_content.is_empty(), module_content.is_empty()) {
            (true, true) => {
                return Err(HubError::new(
                    ErrorCode::ArgumentNull,
                    "content.deviceContent or content.moduleContent is required",
                ))
            }
            (false, false) => return Err(invalid("a configuration has deviceContent or moduleContent, not both")),
            (device_empty, _) => device_empty,
        };
        desired_patch(if for_modules { &module_content } else { &device_content })?;
        let target_condition = self
            .target_condition
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                HubError::new(ErrorCode::ArgumentNull, "targetCondition is required ('*' for every device)")
            })?
            .to_owned();
        let target = target_query(&target_condition)?;
        match (for_modules, target.from) {
            (true, Collection::Modules) | (false, Collection::Devices) => {}
            (true, _) => {
                return Err(invalid(
                    "the targetCondition of a module configuration starts with 'FROM devices.modules WHERE'",
                ))
            }
            (false, _) => return Err(invalid("a targetCondition on devices.modules needs moduleContent")),
        }
        let priority = self.priority.unwrap_or(0);
        if !(0..=MAX_PRIORITY).contains(&priority) {
            return Err(invalid(format!("priority must be 0 to {MAX_PRIORITY}")));
        }
        let metrics = self.metrics.as_ref().and_then(|m| m.queries.clone()).unwrap_or_default();
        check_metrics(&metrics)?;
        let labels = self.labels.clone().unwrap_or_default();
        if labels.values().any(|v| !v.is_string()) {
            return Err(invalid("labels are strings"));
        }
        let schema_version = self.schema_version.clone().unwrap_or_else(|| "1.0".to_owned());
        // What twins get again when it changes: the content, the condition, the priority.
        let (created, etag, revision) = match previous {
            Some(p) => {
                let reapplies = p.device_content != device_content
                    || p.module_content != module_content
                    || p.target_condition != target_condition
                    || p.priority != priority;
                (p.created, p.etag + 1, p.revision + u64::from(reapplies))
            }
            None => (now, 1, 1),
        };
        Ok(Configuration {
            id: id.to_owned(),
            schema_version,
            labels,
            device_content,
            module_content,
            target_condition,
            priority,
            metrics,
            created,
            last_updated: now,
            etag,
            revision,
        })
    }
}

/// Whether a `PUT` may write configuration `id`: a create when none exists (up to
/// [`MAX_CONFIGURATIONS`] held), an update only with `If-Match` matching its etag (`*` for
/// any); a create over an existing one is 409.
pub fn check_write(
    id: &str,
    previous: Option<&Configuration>,
    if_match: Option<&str>,
    held: usize,
) -> Result<(), HubError> {
    match (previous, if_match) {
        (Some(_), None) => Err(HubError::new(
            ErrorCode::ConfigurationAlreadyExists,
            format!("a configuration '{id}' exists; update it with If-Match"),
        )),
        (Some(p), Some(_)) => check_etag(p, if_match),
        (None, _) if held >= MAX_CONFIGURATIONS => {
            Err(invalid(format!("the hub holds {MAX_CONFIGURATIONS} configurations, the most it may")))
        }
        (None, _) => Ok(()),
    }
}

/// `If-Match` (absent: unconditional) against a configuration's etag: 412 otherwise.
pub fn check_etag(current: &Configuration, if_match: Option<&str>) -> Result<(), HubError> {
    if crate::etag::if_match_allows(&current.etag_string(), if_match) {
        return Ok(());
    }
    Err(HubError::new(
        ErrorCode::PreconditionFailed,
        format!("If-Match does not match configuration '{}''s etag \"{}\"", current.id, current.etag_string()),
    ))
}

/// The custom metrics: at most [`MAX_METRICS`], each a query text that parses.
fn check_metrics(metrics: &Map<String, Value>) -> Result<(), HubError> {
    if metrics.len() > MAX_METRICS {
        return Err(invalid(format!("a configuration has at most {MAX_METRICS} custom metrics")));
    }
    for (name, text) in metrics {
        let text = text.as_str().ok_or_else(|| invalid(format!("metric '{name}' must be a query string")))?;
        metric_query(name, text)?;
    }
    Ok(())
}

/// A metric's query, parsed (a device query; the hub counts its rows).
pub fn metric_query(name: &str, text: &str) -> Result<Query, HubError> {
    query::parse(text).map_err(|e| invalid(format!("metric '{name}' is not a valid query: {e}")))
}

/// The target condition as a query: the `WHERE` of a device query (`*` for every device), or
/// for module twins a query from `FROM` on (`FROM devices.modules WHERE ...`); errors are
/// positioned in the condition itself.
pub fn target_query(condition: &str) -> Result<Query, HubError> {
    let condition = condition.trim();
    let from_first = condition.split_whitespace().next().is_some_and(|w| w.eq_ignore_ascii_case("from"));
    if !from_first {
        return crate::job::request::named_condition_query("targetCondition", condition);
    }
    const SELECT: &str = "SELECT * ";
    let q = query::parse(&format!("{SELECT}{condition}")).map_err(|mut e| {
        if e.at.line == 1 {
            e.at.col = e.at.col.saturating_sub(SELECT.len() as u32).max(1);
        }
        invalid(format!("The targetCondition is invalid: {e}"))
    })?;
    if q.from != Collection::Modules || q.group_by.is_some() || q.top.is_some() {
        return Err(invalid("a targetCondition starting with FROM reads 'FROM devices.modules WHERE ...'"));
    }
    Ok(q)
}

/// The service patch `deviceContent` stands for: each `properties.desired.a.b` path as nested
/// objects (`properties.desired` itself takes an object), checked by the twin's own rules.
pub fn desired_patch(content: &Map<String, Value>) -> Result<Value, HubError> {
    let mut desired = Map::new();
    for (path, value) in content {
        let rest = path.strip_prefix(DESIRED).ok_or_else(|| {
            invalid(format!(
                "content path '{path}' is not under properties.desired (configurations set desired properties)"
            ))
        })?;
        if rest.is_empty() {
            let Value::Object(all) = value else {
                return Err(invalid("properties.desired takes an object"));
            };
            merge(&mut desired, all.clone());
            continue;
        }
        let names: Vec<&str> = rest.strip_prefix('.').unwrap_or("").split('.').collect();
        if names.iter().any(|n| n.is_empty()) {
            return Err(invalid(format!("content path '{path}' has an empty name")));
        }
        let mut nested = value.clone();
        for name in names.iter().rev() {
            nested = json!({ *name: nested });
        }
        if let Value::Object(map) = nested {
            merge(&mut desired, map);
        }
    }
    let patch = json!({ "properties": { "desired": desired } });
    let parsed = ServicePatch::parse(&patch.to_string()).map_err(|e| HubError::from(&e))?;
    // Content that no twin could hold (over the desired section's size, say) is refused when
    // the configuration is written, not discovered on every twin it targets.
    crate::twin::Twin::new(UnixMillis(0))
        .apply_service_patch(&parsed, UnixMillis(0))
        .map_err(|e| HubError::from(&e))?;
    Ok(patch)
}

fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

impl Configuration {
    /// The etag as IoT Hub prints it (base64 of the counter's digits, as identities do).
    pub fn etag_string(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.etag.to_string())
    }

    /// The twins this configuration is for: device twins or module twins.
    pub fn collection(&self) -> Collection {
        if self.module_content.is_empty() {
            Collection::Devices
        } else {
            Collection::Modules
        }
    }

    /// The content as a service patch (checked when the configuration was written).
    pub fn patch(&self) -> Value {
        let content = match self.collection() {
            Collection::Modules => &self.module_content,
            _ => &self.device_content,
        };
        desired_patch(content).unwrap_or_else(|_| json!({}))
    }

    /// The target condition as a query (checked when the configuration was written).
    pub fn target(&self) -> Option<Query> {
        target_query(&self.target_condition).ok()
    }

    /// The queries behind `systemMetrics`: the twins targeted, and those it is applied to.
    pub fn system_queries(&self) -> [(&'static str, String); 2] {
        let applied = format!("configurations.[[{}]].status = 'Applied'", self.id);
        let targeted = match (self.collection(), self.target_condition.as_str()) {
            (Collection::Modules, condition) => format!("SELECT deviceId, moduleId {condition}"),
            (_, "*") => "SELECT deviceId FROM devices".to_owned(),
            (_, condition) => format!("SELECT deviceId FROM devices WHERE {condition}"),
        };
        let applied = match self.collection() {
            Collection::Modules => format!("SELECT deviceId, moduleId FROM devices.modules WHERE {applied}"),
            _ => format!("SELECT deviceId FROM devices WHERE {applied}"),
        };
        [("targetedCount", targeted), ("appliedCount", applied)]
    }

    /// The wire form, with the counts measured for the system and custom metrics.
    pub fn to_wire(&self, system: &Map<String, Value>, custom: &Map<String, Value>) -> Value {
        let system_queries: Map<String, Value> =
            self.system_queries().into_iter().map(|(k, q)| (k.to_owned(), Value::from(q))).collect();
        json!({
            "id": self.id,
            "schemaVersion": self.schema_version,
            "labels": self.labels,
            "content": { "deviceContent": self.device_content, "modulesContent": {}, "moduleContent": self.module_content },
            "contentType": "assignment",
            "targetCondition": self.target_condition,
            "createdTimeUtc": self.created.to_iso(),
            "lastUpdatedTimeUtc": self.last_updated.to_iso(),
            "priority": self.priority,
            "systemMetrics": { "results": system, "queries": system_queries },
            "metrics": { "results": custom, "queries": self.metrics },
            "etag": self.etag_string(),
        })
    }
}

/// Whether a caller with `permissions` may see configurations' metric counts: they count twins
/// by their contents, which only ServiceConnect may read (a registry policy gets the queries
/// and empty `results`, [`withhold_counts`]).
pub fn counts_visible_to(permissions: crate::auth::Permissions) -> bool {
    permissions.contains(crate::auth::Permissions::SERVICE_CONNECT)
}

/// Empties the metric `results` of a configuration's wire form, or of each in a list: for a
/// caller that may not read twins (the counts are counts over twins; the queries stay).
pub fn withhold_counts(wire: &mut Value) {
    match wire {
        Value::Array(all) => all.iter_mut().for_each(withhold_counts),
        Value::Object(c) => {
            for section in ["systemMetrics", "metrics"] {
                if let Some(Value::Object(m)) = c.get_mut(section) {
                    if m.contains_key("results") {
                        m.insert("results".into(), Value::Object(Map::new()));
                    }
                }
            }
        }
        _ => {}
    }
}

/// The configuration a twin (as the service sees it) of `collection` (device or module twins)
/// gets: of those for that collection whose target condition it matches, the highest priority;
/// ties go to the newest.
pub fn winner<'a>(
    configurations: &'a [(Configuration, Option<Query>)],
    collection: Collection,
    twin: &Value,
) -> Option<&'a Configuration> {
    configurations
        .iter()
        .filter(|(c, _)| c.collection() == collection)
        .filter(|(_, target)| target.as_ref().is_some_and(|q| query::eval::matches(q.filter.as_ref(), twin)))
        .map(|(c, _)| c)
        .max_by(|a, b| a.priority.cmp(&b.priority).then(a.created.cmp(&b.created)).then(a.id.cmp(&b.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_withheld_and_queries_kept() {
        let one = json!({"id": "c", "systemMetrics": {"results": {"targetedCount": 3}, "queries": {"targetedCount": "q"}},
                          "metrics": {"results": {"pin": 1}, "queries": {"pin": "SELECT ..."}}});
        let mut list = json!([one.clone(), one]);
        withhold_counts(&mut list);
        for c in list.as_array().unwrap() {
            assert_eq!(c["systemMetrics"]["results"], json!({}));
            assert_eq!(c["metrics"]["results"], json!({}));
            assert_eq!(c["metrics"]["queries"]["pin"], "SELECT ...");
        }
        let mut other = json!({"Message": "ErrorCode:ConfigurationNotFound"});
        withhold_counts(&mut other);
        assert_eq!(other, json!({"Message": "ErrorCode:ConfigurationNotFound"}));
    }

    fn request(body: Value) -> ConfigurationRequest {
        ConfigurationRequest::parse(&body.to_string()).unwrap()
    }

    fn config(id: &str, condition: &str, priority: i64, created: u64) -> (Configuration, Option<Query>) {
        let body = json!({
            "content": { "deviceContent": { "properties.desired.telemetryInterval": priority } },
            "targetCondition": condition,
            "priority": priority,
        });
        let c = request(body).check(id, None, UnixMillis(created)).unwrap();
        let target = c.target();
        (c, target)
    }

    #[test]
    fn content_paths_become_one_desired_patch() {
        let content: Map<String, Value> = serde_json::from_value(json!({
            "properties.desired.chiller.water": { "temperature": 66 },
            "properties.desired.telemetryInterval": 15,
        }))
        .unwrap();
        let patch = desired_patch(&content).unwrap();
        assert_eq!(
            patch,
            json!({ "properties": { "desired": {
            "chiller": { "water": { "temperature": 66 } }, "telemetryInterval": 15 } } })
        );
        for bad in [
            json!({ "tags.x": 1 }),
            json!({ "properties.reported.x": 1 }),
            json!({ "properties.desired..x": 1 }),
            json!({ "properties.desired.$version": 1 }),
        ] {
            let map: Map<String, Value> = serde_json::from_value(bad.clone()).unwrap();
            assert!(desired_patch(&map).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_request_is_checked_in_full() {
        let ok = json!({ "content": { "deviceContent": { "properties.desired.x": 1 } }, "targetCondition": "tags.a = 1", "priority": 3 });
        assert!(request(ok.clone()).check("cfg-1", None, UnixMillis(1)).is_ok());
        let mut bad_condition = ok.clone();
        bad_condition["targetCondition"] = json!("tags.a = ");
        let e = request(bad_condition).check("cfg-1", None, UnixMillis(1)).unwrap_err();
        assert!(e.message.contains("targetCondition") && e.message.contains("1:"), "{}", e.message);
        let mut bad_priority = ok.clone();
        bad_priority["priority"] = json!(-1);
        assert_eq!(
            request(bad_priority).check("cfg-1", None, UnixMillis(1)).unwrap_err().code,
            ErrorCode::ArgumentInvalid
        );
        let mut many = ok.clone();
        many["metrics"] = json!({ "queries": { "a": "SELECT deviceId FROM devices", "b": "SELECT deviceId FROM devices",
            "c": "SELECT deviceId FROM devices", "d": "SELECT deviceId FROM devices", "e": "SELECT deviceId FROM devices",
            "f": "SELECT deviceId FROM devices" } });
        assert!(request(many).check("cfg-1", None, UnixMillis(1)).is_err());
        let mut bad_metric = ok.clone();
        bad_metric["metrics"] = json!({ "queries": { "a": "SELECT FROM" } });
        assert!(request(bad_metric).check("cfg-1", None, UnixMillis(1)).is_err());
        let mut edge = ok.clone();
        edge["content"]["modulesContent"] = json!({ "$edgeAgent": {} });
        assert!(request(edge).check("cfg-1", None, UnixMillis(1)).is_err());
        assert!(request(ok.clone()).check("Upper", None, UnixMillis(1)).is_err());
        let mut other_id = ok;
        other_id["id"] = json!("cfg-2");
        assert!(request(other_id).check("cfg-1", None, UnixMillis(1)).is_err());
    }

    #[test]
    fn an_update_moves_the_revision_only_when_what_is_applied_changes() {
        let body = json!({ "content": { "deviceContent": { "properties.desired.x": 1 } }, "targetCondition": "*", "labels": { "a": "b" } });
        let first = request(body.clone()).check("c", None, UnixMillis(1)).unwrap();
        let mut relabelled = body.clone();
        relabelled["labels"] = json!({ "a": "c" });
        let second = request(relabelled).check("c", Some(&first), UnixMillis(2)).unwrap();
        assert_eq!((second.etag, second.revision, second.created), (2, 1, UnixMillis(1)));
        let mut new_content = body;
        new_content["content"]["deviceContent"] = json!({ "properties.desired.x": 2 });
        let third = request(new_content).check("c", Some(&second), UnixMillis(3)).unwrap();
        assert_eq!((third.etag, third.revision), (3, 2));
    }

    #[test]
    fn a_write_creates_within_the_limit_or_updates_with_the_etag() {
        let (c, _) = config("c", "*", 1, 1);
        assert!(check_write("c", None, None, MAX_CONFIGURATIONS - 1).is_ok());
        assert_eq!(check_write("c", None, None, MAX_CONFIGURATIONS).unwrap_err().code, ErrorCode::ArgumentInvalid);
        assert_eq!(check_write("c", Some(&c), None, 1).unwrap_err().code, ErrorCode::ConfigurationAlreadyExists);
        assert_eq!(check_write("c", Some(&c), Some("\"nope\""), 1).unwrap_err().code, ErrorCode::PreconditionFailed);
        assert!(check_write("c", Some(&c), Some(&format!("\"{}\"", c.etag_string())), MAX_CONFIGURATIONS).is_ok());
        assert!(check_write("c", Some(&c), Some("*"), 1).is_ok());
        assert!(check_etag(&c, None).is_ok());
    }

    #[test]
    fn the_system_metrics_are_queries_the_engine_runs() {
        let (c, _) = config("cfg-1", "tags.env = 'prod'", 1, 1);
        let twin = json!({ "tags": { "env": "prod" }, "configurations": { "cfg-1": { "status": "Applied" } } });
        for (name, text) in c.system_queries() {
            let q = query::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(query::eval::matches(q.filter.as_ref(), &twin), "{name}");
        }
    }

    #[test]
    fn the_highest_priority_match_wins_and_ties_go_to_the_newest() {
        let configs = vec![
            config("low", "tags.env = 'prod'", 1, 1),
            config("high", "tags.env = 'prod' AND tags.building = 'A'", 5, 2),
            config("high-newer", "tags.building = 'A'", 5, 3),
            config("other", "tags.env = 'dev'", 9, 4),
        ];
        let twin = |tags: Value| json!({ "tags": tags });
        assert_eq!(
            winner(&configs, Collection::Devices, &twin(json!({ "env": "prod" }))).map(|c| c.id.as_str()),
            Some("low")
        );
        assert_eq!(
            winner(&configs, Collection::Devices, &twin(json!({ "env": "prod", "building": "A" })))
                .map(|c| c.id.as_str()),
            Some("high-newer")
        );
        assert_eq!(winner(&configs, Collection::Devices, &twin(json!({ "env": "test" }))), None);
    }

    fn module_config(id: &str, condition: &str, priority: i64) -> (Configuration, Option<Query>) {
        let body = json!({
            "content": { "moduleContent": { "properties.desired.sampleRate": priority } },
            "targetCondition": condition,
            "priority": priority,
        });
        let c = request(body).check(id, None, UnixMillis(1)).unwrap();
        let target = c.target();
        (c, target)
    }

    #[test]
    fn module_configurations_target_module_twins_only() {
        let configs = vec![
            config("devices", "*", 9, 1),
            module_config("agents", "FROM devices.modules WHERE moduleId = 'agent'", 1),
            module_config("all-modules", "from devices.modules", 0),
        ];
        let device = json!({ "deviceId": "d1", "tags": {} });
        let agent = json!({ "deviceId": "d1", "moduleId": "agent", "tags": {} });
        let other = json!({ "deviceId": "d1", "moduleId": "camera", "tags": {} });
        let id = |c: Option<&Configuration>| c.map(|c| c.id.clone());
        assert_eq!(id(winner(&configs, Collection::Devices, &device)).as_deref(), Some("devices"));
        assert_eq!(id(winner(&configs, Collection::Modules, &agent)).as_deref(), Some("agents"));
        assert_eq!(id(winner(&configs, Collection::Modules, &other)).as_deref(), Some("all-modules"));
        assert_eq!(configs[1].0.patch(), json!({ "properties": { "desired": { "sampleRate": 1 } } }));
        for (name, text) in configs[1].0.system_queries() {
            let q = query::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(q.from, Collection::Modules, "{name}");
        }
        let wire = configs[1].0.to_wire(&Map::new(), &Map::new());
        assert_eq!(wire["content"]["moduleContent"]["properties.desired.sampleRate"], json!(1));
    }

    #[test]
    fn content_and_condition_must_agree_on_the_twins_they_are_for() {
        let check = |body: Value| request(body).check("c", None, UnixMillis(1)).map(|_| ()).map_err(|e| e.message);
        let module = json!({ "moduleContent": { "properties.desired.x": 1 } });
        let device = json!({ "deviceContent": { "properties.desired.x": 1 } });
        assert!(check(json!({ "content": module, "targetCondition": "FROM devices.modules WHERE tags.a = 1" })).is_ok());
        let e = check(json!({ "content": module, "targetCondition": "tags.a = 1" })).unwrap_err();
        assert!(e.contains("FROM devices.modules"), "{e}");
        let e = check(json!({ "content": device, "targetCondition": "FROM devices.modules WHERE tags.a = 1" }))
            .unwrap_err();
        assert!(e.contains("moduleContent"), "{e}");
        let both =
            json!({ "deviceContent": { "properties.desired.x": 1 }, "moduleContent": { "properties.desired.x": 1 } });
        assert!(check(json!({ "content": both, "targetCondition": "*" })).is_err());
        for bad in [
            "FROM devices.jobs WHERE status = 'failed'",
            "FROM devices.modules WHERE",
            "FROM devices.modules GROUP BY tags.a",
        ] {
            assert!(check(json!({ "content": module, "targetCondition": bad })).is_err(), "{bad}");
        }
        let e = target_query("FROM devices.modules WHERE tags.a = ").unwrap_err().message;
        assert!(e.contains("1:"), "{e}");
    }
}
