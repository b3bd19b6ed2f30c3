//! What each credential reaches over each protocol: the table `docs/security.md` shows,
//! generated here from the rules themselves ([`crate::route::Route::access`] for REST,
//! [`crate::amqp::cbs::Grants`] for AMQP's service nodes, [`super::authorize_device`] for
//! device sessions), so the document cannot drift from the code: a test compares the two, and a
//! new route or node fails it until its row is there.

use super::{Permissions, BUILT_IN};
use crate::route::{Access, Route};

/// One sample request per REST route (method, path), in the order the table shows them.
/// `{id}` stands for a device id. A new [`Route`] variant must get a sample here (the guard in
/// [`samples`] will not compile until it does).
pub const REST_SAMPLES: &[(&str, &str)] = &[
    ("GET", "/api/health"),
    ("GET", "/$iothub/websocket"),
    ("GET", "/$servicebus/websocket"),
    ("GET", "/api/session"),
    ("GET", "/devices"),
    ("POST", "/devices"),
    ("GET", "/devices/{id}"),
    ("PUT", "/devices/{id}"),
    ("DELETE", "/devices/{id}"),
    ("GET", "/devices/{id}/modules"),
    ("GET", "/statistics/devices"),
    ("GET", "/api/index"),
    ("GET", "/configurations"),
    ("GET", "/configurations/{id}"),
    ("POST", "/configurations/testQueries"),
    ("PUT", "/configurations/{id}"),
    ("DELETE", "/configurations/{id}"),
    ("POST", "/devices/query"),
    ("GET", "/twins/{id}"),
    ("PATCH", "/twins/{id}"),
    ("PUT", "/twins/{id}"),
    ("POST", "/twins/{id}/methods"),
    ("GET", "/statistics/service"),
    ("GET", "/jobs/v2/query"),
    ("PUT", "/jobs/v2/{id}"),
    ("GET", "/jobs/v2/{id}"),
    ("POST", "/jobs/v2/{id}/cancel"),
    ("GET", "/digitaltwins/{id}"),
    ("PATCH", "/digitaltwins/{id}"),
    ("POST", "/digitaltwins/{id}/commands/{command}"),
    ("GET", "/api/twins/{id}/history"),
    ("GET", "/api/devices/{id}/telemetry"),
    ("GET", "/api/devices/{id}/telemetry/series"),
    ("POST", "/api/devices/{id}/messages"),
    ("POST", "/api/fleet/telemetry"),
    ("POST", "/api/fleet/alerts"),
    ("GET", "/api/fleet/overview"),
    ("GET", "/api/devices/{id}/live"),
    ("POST", "/api/bench/echo/{id}"),
    ("POST", "/api/bench/write/{id}"),
    ("POST", "/api/bench/fleet"),
    ("POST", "/api/bench/telemetry"),
];

/// The AMQP nodes a service reaches, with what a token must show for each: ServiceConnect,
/// and a resource covering the node's path (`{host}` covers them all). The paths are the
/// constants the AMQP adapter checks grants against (`cbs::DEVICE_BOUND`, `cbs::FEEDBACK`,
/// `eventhub::ENTITY_PATH`); a new node must be added here by hand.
pub fn amqp_service_nodes() -> Vec<(String, String)> {
    use crate::amqp::cbs::{DEVICE_BOUND, FEEDBACK};
    use crate::eventhub::ENTITY_PATH;
    let covering = |path: &str| format!("ServiceConnect, resource covering `{path}`");
    vec![
        ("$cbs".into(), "none (the token is what it carries)".into()),
        (
            "$management".into(),
            format!("{} (no other entity answers)", covering(&format!("{ENTITY_PATH}/$management"))),
        ),
        (
            format!("{ENTITY_PATH}/ConsumerGroups/{{group}}/Partitions/{{n}}"),
            "ServiceConnect, resource covering the partition".into(),
        ),
        (format!("/{DEVICE_BOUND}"), covering(DEVICE_BOUND)),
        (format!("/{FEEDBACK}"), covering(FEEDBACK)),
        (
            "/devices/{id}/...".into(),
            "the device's own token, or a DeviceConnect policy's covering `devices/{id}`".into(),
        ),
    ]
}

/// The routes of [`REST_SAMPLES`], parsed.
pub fn samples() -> Vec<(&'static str, &'static str, Route<'static>)> {
    REST_SAMPLES
        .iter()
        .map(|(method, path)| {
            let segments: Vec<&'static str> = path.split('/').filter(|s| !s.is_empty()).collect();
            let route = Route::parse(method, &segments).unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
            // The guard: a new variant does not compile until it is listed here, and so
            // until it is given a sample above and a row in docs/security.md.
            match route {
                Route::Health
                | Route::Session
                | Route::DeviceSocket
                | Route::ServiceBusSocket
                | Route::Query
                | Route::ListDevices
                | Route::BulkDevices
                | Route::ListModules(_)
                | Route::GetDevice(_)
                | Route::PutDevice(_)
                | Route::DeleteDevice(_)
                | Route::GetTwin(_)
                | Route::PatchTwin(_)
                | Route::ReplaceTwin(_)
                | Route::InvokeMethod(_)
                | Route::DeviceStatistics
                | Route::ServiceStatistics
                | Route::QueryJobs
                | Route::CreateJob(_)
                | Route::GetJob(_)
                | Route::ControlJob(..)
                | Route::GetDigitalTwin(_)
                | Route::PatchDigitalTwin(_)
                | Route::InvokeCommand { .. }
                | Route::ListConfigurations
                | Route::GetConfiguration(_)
                | Route::PutConfiguration(_)
                | Route::DeleteConfiguration(_)
                | Route::TestConfigurationQueries
                | Route::TwinHistory(_)
                | Route::Telemetry(_)
                | Route::TelemetrySeries(_)
                | Route::SendMessage(_)
                | Route::Live(_)
                | Route::IndexLag
                | Route::FleetTelemetry
                | Route::FleetAlerts
                | Route::FleetOverview
                | Route::BenchEcho(_)
                | Route::BenchWrite(_)
                | Route::BenchFleet
                | Route::BenchTelemetry => {}
            }
            (*method, *path, route)
        })
        .collect()
}

/// What a route needs, in words.
fn needs(access: Access) -> String {
    let names = |p: Permissions| {
        let all = [
            Permissions::REGISTRY_READ,
            Permissions::REGISTRY_WRITE,
            Permissions::SERVICE_CONNECT,
            Permissions::DEVICE_CONNECT,
        ];
        let named: Vec<&str> = all.into_iter().filter(|one| p.contains(*one)).map(Permissions::name).collect();
        if named.is_empty() {
            "any valid token".to_owned()
        } else {
            named.join(" + ")
        }
    };
    match access {
        Access::Open => "none (authenticated inside the protocol)".to_owned(),
        Access::Token(p) => names(p),
        Access::QueryToken(p) => format!("{} (`sas` query token; may be scoped to `devices/{{id}}/$live`)", names(p)),
    }
}

/// Whether a built-in policy with `permissions` may call a route with `access`.
fn allows(access: Access, permissions: Permissions) -> bool {
    match access {
        Access::Open => true,
        Access::Token(p) | Access::QueryToken(p) => permissions.contains(p),
    }
}

/// The markdown table of REST routes against the built-in policies.
pub fn rest_table() -> String {
    let mut out = String::from("| route | needs |");
    for (name, _) in BUILT_IN {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(BUILT_IN.len()));
    out.push('\n');
    for (method, path, route) in samples() {
        let access = route.access();
        out.push_str(&format!("| `{method} {path}` | {} |", needs(access)));
        for (_, permissions) in BUILT_IN {
            out.push_str(if allows(access, *permissions) { " yes |" } else { " no |" });
        }
        out.push('\n');
    }
    out
}

/// The markdown table of AMQP nodes.
pub fn amqp_table() -> String {
    let mut out = String::from("| AMQP node | needs |\n|---|---|\n");
    for (node, needs) in amqp_service_nodes() {
        out.push_str(&format!("| `{node}` | {needs} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample is a different route (one row each), and the tables in docs/security.md
    /// are exactly what the rules say.
    #[test]
    fn the_documented_tables_are_the_rules() {
        let mut kinds: Vec<String> =
            samples().iter().map(|(_, _, r)| format!("{:?}", std::mem::discriminant(r))).collect();
        let n = kinds.len();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), n, "two samples of one route");
        let doc = include_str!("../../../docs/security.md");
        let rest = rest_table();
        assert!(doc.contains(&rest), "docs/security.md must hold the REST table as the code has it:\n\n{rest}");
        let amqp = amqp_table();
        assert!(doc.contains(&amqp), "docs/security.md must hold the AMQP table as the code has it:\n\n{amqp}");
    }

    #[test]
    fn registry_policies_neither_write_twins_nor_configurations() {
        let registry = Permissions::REGISTRY_READ.union(Permissions::REGISTRY_WRITE);
        for (method, path, route) in samples() {
            let writes_twins = matches!(
                route,
                Route::PatchTwin(_)
                    | Route::ReplaceTwin(_)
                    | Route::PutConfiguration(_)
                    | Route::DeleteConfiguration(_)
            );
            if writes_twins {
                assert!(!allows(route.access(), registry), "{method} {path}");
            }
        }
    }
}
