//! The REST surface as one table: which method on which path is which operation, what a token
//! must allow for it, what the tier meters it as, and whether upstream mode forwards it.
//!
//! Before this table the same knowledge was written out four times (the Worker's dispatch, its
//! list of paths for 405, upstream mode's forwarding rules and the tier's meter), and one of
//! them drifting from the others was a bug. Every adapter now asks [`Route::parse`] and then
//! the route itself.

use crate::auth::Permissions;
use crate::tier::Operation;
use crate::upstream::{METHOD_TIMEOUT_SECS, TIMEOUT_SECS};
use crate::{ErrorCode, HubError};

/// A job's state change requested with `POST /jobs/v2/{id}/{action}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobAction {
    Cancel,
    Pause,
    Resume,
    Rollback,
}

impl JobAction {
    pub fn name(self) -> &'static str {
        match self {
            JobAction::Cancel => "cancel",
            JobAction::Pause => "pause",
            JobAction::Resume => "resume",
            JobAction::Rollback => "rollback",
        }
    }

    fn parse(segment: &str) -> Option<Self> {
        Some(match segment {
            "cancel" => JobAction::Cancel,
            "pause" => JobAction::Pause,
            "resume" => JobAction::Resume,
            "rollback" => JobAction::Rollback,
            _ => return None,
        })
    }
}

/// One REST operation, with the path's ids still as the client sent them (percent-decoded, not
/// yet checked against the id rules: that is the handler's first step, after authorization, so
/// a caller without a token learns nothing from the answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /api/health`
    Health,
    /// `GET /api/session`
    Session,
    /// `GET /$iothub/websocket`: the device endpoint (MQTT over WebSocket).
    DeviceSocket,
    /// `GET /$servicebus/websocket`: AMQP over WebSocket (the Event Hub-compatible endpoint).
    ServiceBusSocket,
    /// `POST /devices/query`
    Query,
    /// `GET /devices`
    ListDevices,
    /// `POST /devices`: bulk registry operations.
    BulkDevices,
    /// `GET /devices/{id}/modules`
    ListModules(&'a str),
    /// `GET /devices/{id}` (or `/devices/{id}/modules/{mid}`)
    GetDevice(Ident<'a>),
    /// `PUT /devices/{id}`
    PutDevice(Ident<'a>),
    /// `DELETE /devices/{id}`
    DeleteDevice(Ident<'a>),
    /// `GET /twins/{id}`
    GetTwin(Ident<'a>),
    /// `PATCH /twins/{id}`
    PatchTwin(Ident<'a>),
    /// `PUT /twins/{id}`
    ReplaceTwin(Ident<'a>),
    /// `POST /twins/{id}/methods`
    InvokeMethod(Ident<'a>),
    /// `GET /statistics/devices`
    DeviceStatistics,
    /// `GET /statistics/service`
    ServiceStatistics,
    /// `GET /jobs/v2/query`
    QueryJobs,
    /// `PUT /jobs/v2/{id}`
    CreateJob(&'a str),
    /// `GET /jobs/v2/{id}`
    GetJob(&'a str),
    /// `POST /jobs/v2/{id}/{action}`
    ControlJob(&'a str, JobAction),
    /// `GET /digitaltwins/{id}`: IoT Plug and Play's view of the twin.
    GetDigitalTwin(&'a str),
    /// `PATCH /digitaltwins/{id}`: a JSON Patch of writable properties.
    PatchDigitalTwin(&'a str),
    /// `POST /digitaltwins/{id}[/components/{component}]/commands/{command}`: a command, sent
    /// to the device as the direct method `command` or `component*command`.
    InvokeCommand { id: &'a str, component: Option<&'a str>, command: &'a str },
    /// `GET /configurations`
    ListConfigurations,
    /// `GET /configurations/{id}`
    GetConfiguration(&'a str),
    /// `PUT /configurations/{id}`
    PutConfiguration(&'a str),
    /// `DELETE /configurations/{id}`
    DeleteConfiguration(&'a str),
    /// `POST /configurations/testQueries`
    TestConfigurationQueries,
    /// `GET /api/twins/{id}/history`
    TwinHistory(Ident<'a>),
    /// `GET /api/devices/{id}/telemetry`
    Telemetry(Ident<'a>),
    /// `GET /api/devices/{id}/telemetry/series`
    TelemetrySeries(Ident<'a>),
    /// `POST /api/devices/{id}/messages`
    SendMessage(&'a str),
    /// `GET /api/devices/{id}/live` (WebSocket)
    Live(Ident<'a>),
    /// `GET /api/index`: the index shards' lag.
    IndexLag,
    /// `POST /api/fleet/telemetry`: a telemetry field over the devices a condition selects.
    FleetTelemetry,
    /// `POST /api/fleet/alerts`: the newest messages with an `alert` property.
    FleetAlerts,
    /// `GET /api/fleet/overview`: the console's first page in one answer.
    FleetOverview,
    /// `POST /api/bench/echo/{key}`
    BenchEcho(&'a str),
    /// `POST /api/bench/write/{key}`
    BenchWrite(&'a str),
    /// `POST /api/bench/fleet`
    BenchFleet,
    /// `POST /api/bench/telemetry`
    BenchTelemetry,
}

/// The device, or the module on a device, that a route is about. A module is held exactly as
/// a device is, under its key ([`crate::identity`]), so most routes take either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ident<'a> {
    pub device: &'a str,
    pub module: Option<&'a str>,
}

impl<'a> Ident<'a> {
    pub fn device(device: &'a str) -> Self {
        Self { device, module: None }
    }

    pub fn module(device: &'a str, module: &'a str) -> Self {
        Self { device, module: Some(module) }
    }

    /// The identity's key, once its ids are checked against IoT Hub's rules.
    pub fn key(&self) -> Result<String, HubError> {
        crate::identity::check_device_id(self.device)?;
        match self.module {
            Some(module) => {
                crate::identity::check_module_id(module)?;
                Ok(crate::identity::module_key(self.device, module))
            }
            None => Ok(self.device.to_owned()),
        }
    }
}

/// How a route authenticates its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No service token: liveness, and the device endpoint, whose session checks the device's
    /// own token in CONNECT.
    Open,
    /// A service token in `Authorization` from a policy with these permissions (none: any
    /// valid token).
    Token(Permissions),
    /// The same, with the token in the `sas` query parameter (browsers cannot set headers on a
    /// WebSocket); it may be scoped to the one device the route names.
    QueryToken(Permissions),
}

/// Where a route is answered when twinhub fronts another IoT Hub (upstream mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// By twinhub itself, as without an upstream (liveness, the caller's session).
    Here,
    /// The device endpoint: each socket's CONNECT checked here, then piped to the upstream's.
    Piped,
    /// Forwarded with a fresh token; the upstream may take this long.
    Forwarded { timeout_secs: u64 },
    /// One of twinhub's own features, which the upstream does not have: 501 with the reason
    /// ([`crate::upstream::unavailable`]).
    Own(&'static str),
    /// Not there at all (twinhub's diagnostics of its own hub): 404.
    Absent,
}

/// The methods the REST surface uses.
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "PATCH", "DELETE"];

impl<'a> Route<'a> {
    /// The route for `method` (upper case, as HTTP spells it) on the percent-decoded path
    /// `segments`: `404 NotFound` for no such path, `405 MethodNotAllowed` for a known path
    /// with another method.
    pub fn parse(method: &str, segments: &[&'a str]) -> Result<Self, HubError> {
        if let Some(route) = Self::lookup(method, segments) {
            return Ok(route);
        }
        let path = segments.join("/");
        if METHODS.iter().any(|m| Self::lookup(m, segments).is_some()) {
            Err(HubError::new(ErrorCode::MethodNotAllowed, format!("{method} is not supported on /{path}")))
        } else {
            Err(HubError::new(ErrorCode::NotFound, format!("no such resource: /{path}")))
        }
    }

    fn lookup(method: &str, segments: &[&'a str]) -> Option<Self> {
        use Route::*;
        Some(match (segments, method) {
            (["api", "health"], "GET") => Health,
            (["api", "session"], "GET") => Session,
            (["$iothub", "websocket"], "GET") => DeviceSocket,
            (["$servicebus", "websocket"], "GET") => ServiceBusSocket,
            (["devices", "query"], "POST") => Query,
            (["devices"], "GET") => ListDevices,
            (["devices"], "POST") => BulkDevices,
            (["devices", id], "GET") => GetDevice(Ident::device(id)),
            (["devices", id], "PUT") => PutDevice(Ident::device(id)),
            (["devices", id], "DELETE") => DeleteDevice(Ident::device(id)),
            (["devices", id, "modules"], "GET") => ListModules(id),
            (["devices", id, "modules", m], "GET") => GetDevice(Ident::module(id, m)),
            (["devices", id, "modules", m], "PUT") => PutDevice(Ident::module(id, m)),
            (["devices", id, "modules", m], "DELETE") => DeleteDevice(Ident::module(id, m)),
            (["twins", id], "GET") => GetTwin(Ident::device(id)),
            (["twins", id], "PATCH") => PatchTwin(Ident::device(id)),
            (["twins", id], "PUT") => ReplaceTwin(Ident::device(id)),
            (["twins", id, "methods"], "POST") => InvokeMethod(Ident::device(id)),
            (["twins", id, "modules", m], "GET") => GetTwin(Ident::module(id, m)),
            (["twins", id, "modules", m], "PATCH") => PatchTwin(Ident::module(id, m)),
            (["twins", id, "modules", m], "PUT") => ReplaceTwin(Ident::module(id, m)),
            (["twins", id, "modules", m, "methods"], "POST") => InvokeMethod(Ident::module(id, m)),
            (["statistics", "devices"], "GET") => DeviceStatistics,
            (["statistics", "service"], "GET") => ServiceStatistics,
            (["jobs", "v2", "query"], "GET") => QueryJobs,
            (["jobs", "v2", id], "PUT") => CreateJob(id),
            (["jobs", "v2", id], "GET") => GetJob(id),
            (["jobs", "v2", id, action], "POST") => ControlJob(id, JobAction::parse(action)?),
            (["digitaltwins", id], "GET") => GetDigitalTwin(id),
            (["digitaltwins", id], "PATCH") => PatchDigitalTwin(id),
            (["digitaltwins", id, "commands", command], "POST") => InvokeCommand { id, component: None, command },
            (["digitaltwins", id, "components", component, "commands", command], "POST") => {
                InvokeCommand { id, component: Some(component), command }
            }
            (["configurations"], "GET") => ListConfigurations,
            (["configurations", "testQueries"], "POST") => TestConfigurationQueries,
            (["configurations", id], "GET") => GetConfiguration(id),
            (["configurations", id], "PUT") => PutConfiguration(id),
            (["configurations", id], "DELETE") => DeleteConfiguration(id),
            (["api", "twins", id, "history"], "GET") => TwinHistory(Ident::device(id)),
            (["api", "twins", id, "modules", m, "history"], "GET") => TwinHistory(Ident::module(id, m)),
            (["api", "devices", id, "telemetry"], "GET") => Telemetry(Ident::device(id)),
            (["api", "devices", id, "modules", m, "telemetry"], "GET") => Telemetry(Ident::module(id, m)),
            (["api", "devices", id, "telemetry", "series"], "GET") => TelemetrySeries(Ident::device(id)),
            (["api", "devices", id, "modules", m, "telemetry", "series"], "GET") => {
                TelemetrySeries(Ident::module(id, m))
            }
            (["api", "devices", id, "messages"], "POST") => SendMessage(id),
            (["api", "devices", id, "live"], "GET") => Live(Ident::device(id)),
            (["api", "devices", id, "modules", m, "live"], "GET") => Live(Ident::module(id, m)),
            (["api", "index"], "GET") => IndexLag,
            (["api", "fleet", "telemetry"], "POST") => FleetTelemetry,
            (["api", "fleet", "alerts"], "POST") => FleetAlerts,
            (["api", "fleet", "overview"], "GET") => FleetOverview,
            (["api", "bench", "echo", key], "POST") => BenchEcho(key),
            (["api", "bench", "write", key], "POST") => BenchWrite(key),
            (["api", "bench", "fleet"], "POST") => BenchFleet,
            (["api", "bench", "telemetry"], "POST") => BenchTelemetry,
            _ => return None,
        })
    }

    /// What the caller must show.
    pub fn access(&self) -> Access {
        use Route::*;
        let read = Permissions::REGISTRY_READ;
        let write = Permissions::REGISTRY_WRITE;
        // Twin reads, queries (they read twins: spec §4.4), methods, jobs and twinhub's views
        // of a device's data take ServiceConnect, as IoT Hub's twin operations do.
        let service = Permissions::SERVICE_CONNECT;
        match self {
            // AMQP authenticates inside the connection (SASL, CBS put-token).
            Health | DeviceSocket | ServiceBusSocket => Access::Open,
            Session | BenchEcho(_) | BenchWrite(_) => Access::Token(Permissions::default()),
            // Configurations: reading one is a registry read, but its metric counts are counts
            // over twins, so they are only filled for a caller with ServiceConnect too (the
            // handler's choice); writing or deleting one writes desired properties to the twins
            // it targets, which takes ServiceConnect as a twin PATCH does. IoT Hub documents no
            // SAS rule for configurations (its RBAC actions for them are their own, apart from
            // the registry's), so twinhub takes the one that widens no policy (docs/security.md).
            ListDevices
            | ListModules(_)
            | GetDevice(_)
            | DeviceStatistics
            | IndexLag
            | ListConfigurations
            | GetConfiguration(_)
            | TestConfigurationQueries => Access::Token(read),
            PutConfiguration(_) | DeleteConfiguration(_) => Access::Token(write.union(service)),
            BulkDevices | PutDevice(_) | DeleteDevice(_) | BenchFleet | BenchTelemetry => Access::Token(write),
            Query
            | GetTwin(_)
            | PatchTwin(_)
            | ReplaceTwin(_)
            | InvokeMethod(_)
            | ServiceStatistics
            | QueryJobs
            | CreateJob(_)
            | GetJob(_)
            | ControlJob(..)
            | TwinHistory(_)
            | Telemetry(_)
            | TelemetrySeries(_)
            | FleetTelemetry
            | FleetAlerts
            | FleetOverview
            | SendMessage(_)
            | GetDigitalTwin(_)
            | PatchDigitalTwin(_)
            | InvokeCommand { .. } => Access::Token(service),
            Live(_) => Access::QueryToken(service),
        }
    }

    /// What the tier's throttles count this as, if anything.
    pub fn operation(&self) -> Option<Operation> {
        use Route::*;
        Some(match self {
            // Fleet telemetry reads like a query: it runs one (the condition) and scans events.
            Query | FleetTelemetry | FleetAlerts | FleetOverview => Operation::Query,
            ListDevices | ListModules(_) | BulkDevices | GetDevice(_) | PutDevice(_) | DeleteDevice(_) => {
                Operation::RegistryOp
            }
            GetTwin(_) | GetDigitalTwin(_) => Operation::TwinRead,
            PatchTwin(_) | ReplaceTwin(_) | PatchDigitalTwin(_) => Operation::TwinUpdate,
            InvokeMethod(_) | InvokeCommand { .. } => Operation::DirectMethod,
            SendMessage(_) => Operation::CloudToDevice,
            QueryJobs | CreateJob(_) | GetJob(_) | ControlJob(..) => Operation::JobsOp,
            _ => return None,
        })
    }

    /// Where upstream mode answers this route.
    pub fn upstream(&self) -> Upstream {
        use Route::*;
        let forwarded = Upstream::Forwarded { timeout_secs: TIMEOUT_SECS };
        match self {
            Health | Session => Upstream::Here,
            DeviceSocket => Upstream::Piped,
            ServiceBusSocket => {
                Upstream::Own("the Event Hub-compatible endpoint of an upstream hub is its own; read it there")
            }
            Query
            | GetDigitalTwin(_)
            | PatchDigitalTwin(_)
            | ListDevices
            | ListModules(_)
            | BulkDevices
            | GetDevice(_)
            | PutDevice(_)
            | DeleteDevice(_)
            | GetTwin(_)
            | PatchTwin(_)
            | ReplaceTwin(_)
            | DeviceStatistics
            | ServiceStatistics
            | QueryJobs
            | CreateJob(_)
            | GetJob(_)
            | ListConfigurations
            | GetConfiguration(_)
            | PutConfiguration(_)
            | DeleteConfiguration(_)
            | TestConfigurationQueries => forwarded,
            // A method waits for the device (up to 300 s response plus 300 s connect timeout).
            InvokeMethod(_) | InvokeCommand { .. } => Upstream::Forwarded { timeout_secs: METHOD_TIMEOUT_SECS },
            ControlJob(_, JobAction::Cancel) => forwarded,
            ControlJob(..) => Upstream::Own("rollouts"),
            TwinHistory(_) => Upstream::Own("history"),
            Telemetry(_) | TelemetrySeries(_) | FleetTelemetry | FleetAlerts => Upstream::Own("telemetry"),
            FleetOverview => Upstream::Own("overview"),
            Live(_) => Upstream::Own("live"),
            SendMessage(_) => Upstream::Own("messages"),
            IndexLag | BenchEcho(_) | BenchWrite(_) | BenchFleet | BenchTelemetry => Upstream::Absent,
        }
    }

    /// The device or module the route names, if it names one.
    pub fn ident(&self) -> Option<Ident<'a>> {
        use Route::*;
        match *self {
            GetDevice(i) | PutDevice(i) | DeleteDevice(i) | GetTwin(i) | PatchTwin(i) | ReplaceTwin(i)
            | InvokeMethod(i) | TwinHistory(i) | Telemetry(i) | TelemetrySeries(i) | Live(i) => Some(i),
            ListModules(id) | SendMessage(id) | GetDigitalTwin(id) | PatchDigitalTwin(id) => Some(Ident::device(id)),
            InvokeCommand { id, .. } => Some(Ident::device(id)),
            _ => None,
        }
    }

    /// Whether this is a benchmark route, answered only when the hub enables them.
    pub fn is_bench(&self) -> bool {
        matches!(self, Route::BenchEcho(_) | Route::BenchWrite(_) | Route::BenchFleet | Route::BenchTelemetry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: &str, path: &str) -> Result<Route<'static>, ErrorCode> {
        let segments: Vec<&'static str> =
            Box::leak(path.to_owned().into_boxed_str()).split('/').filter(|s| !s.is_empty()).collect();
        Route::parse(method, &segments).map_err(|e| e.code)
    }

    #[test]
    fn every_route_parses_with_its_ids() {
        assert_eq!(parse("GET", "/twins/dev-1"), Ok(Route::GetTwin(Ident::device("dev-1"))));
        assert_eq!(parse("PATCH", "/twins/d/modules/m"), Ok(Route::PatchTwin(Ident::module("d", "m"))));
        assert_eq!(parse("PUT", "/devices/d/modules/m"), Ok(Route::PutDevice(Ident::module("d", "m"))));
        assert_eq!(parse("GET", "/devices/d/modules"), Ok(Route::ListModules("d")));
        assert_eq!(parse("POST", "/twins/d/modules/m/methods"), Ok(Route::InvokeMethod(Ident::module("d", "m"))));
        assert_eq!(parse("POST", "/jobs/v2/j1/rollback"), Ok(Route::ControlJob("j1", JobAction::Rollback)));
        assert_eq!(parse("GET", "/jobs/v2/query"), Ok(Route::QueryJobs));
        assert_eq!(parse("POST", "/configurations/testQueries"), Ok(Route::TestConfigurationQueries));
        assert_eq!(parse("PUT", "/configurations/c1"), Ok(Route::PutConfiguration("c1")));
        assert_eq!(
            parse("POST", "/digitaltwins/d/components/t1/commands/reset"),
            Ok(Route::InvokeCommand { id: "d", component: Some("t1"), command: "reset" })
        );
        assert_eq!(parse("PUT", "/jobs/v2/query"), Ok(Route::CreateJob("query")));
        assert_eq!(parse("GET", "/api/devices/d/telemetry/series"), Ok(Route::TelemetrySeries(Ident::device("d"))));
    }

    #[test]
    fn a_known_path_with_another_method_is_405_and_an_unknown_path_404() {
        assert_eq!(parse("DELETE", "/twins/d"), Err(ErrorCode::MethodNotAllowed));
        assert_eq!(parse("DELETE", "/twins/d/modules/m"), Err(ErrorCode::MethodNotAllowed));
        assert_eq!(parse("GET", "/twins/d/modules"), Err(ErrorCode::NotFound));
        assert_eq!(parse("GET", "/jobs/v2/j1/cancel"), Err(ErrorCode::MethodNotAllowed));
        assert_eq!(parse("POST", "/jobs/v2/j1/explode"), Err(ErrorCode::NotFound));
        assert_eq!(parse("GET", "/twins/d/extra/more"), Err(ErrorCode::NotFound));
        assert_eq!(parse("GET", "/"), Err(ErrorCode::NotFound));
    }

    #[test]
    fn upstream_forwards_iot_hub_calls_and_refuses_twinhubs_own() {
        assert_eq!(
            Route::InvokeMethod(Ident::device("d")).upstream(),
            Upstream::Forwarded { timeout_secs: METHOD_TIMEOUT_SECS }
        );
        assert_eq!(
            Route::ControlJob("j", JobAction::Cancel).upstream(),
            Upstream::Forwarded { timeout_secs: TIMEOUT_SECS }
        );
        assert_eq!(Route::ControlJob("j", JobAction::Pause).upstream(), Upstream::Own("rollouts"));
        assert_eq!(Route::IndexLag.upstream(), Upstream::Absent);
    }

    #[test]
    fn the_tier_meters_iot_hubs_operations_and_not_twinhubs_diagnostics() {
        assert_eq!(Route::GetTwin(Ident::device("d")).operation(), Some(Operation::TwinRead));
        assert_eq!(Route::PatchTwin(Ident::module("d", "m")).operation(), Some(Operation::TwinUpdate));
        assert_eq!(Route::Query.operation(), Some(Operation::Query));
        assert_eq!(Route::DeleteDevice(Ident::device("d")).operation(), Some(Operation::RegistryOp));
        assert_eq!(Route::SendMessage("d").operation(), Some(Operation::CloudToDevice));
        assert_eq!(Route::ControlJob("j", JobAction::Pause).operation(), Some(Operation::JobsOp));
        assert_eq!(Route::Health.operation(), None);
        assert_eq!(Route::IndexLag.operation(), None);
    }

    #[test]
    fn reading_twins_takes_service_connect_and_the_registry_its_own_rights() {
        assert_eq!(Route::Query.access(), Access::Token(Permissions::SERVICE_CONNECT));
        assert_eq!(Route::GetDevice(Ident::module("d", "m")).access(), Access::Token(Permissions::REGISTRY_READ));
        assert_eq!(Route::DeleteDevice(Ident::device("d")).access(), Access::Token(Permissions::REGISTRY_WRITE));
        assert_eq!(Route::Live(Ident::device("d")).access(), Access::QueryToken(Permissions::SERVICE_CONNECT));
    }
}
