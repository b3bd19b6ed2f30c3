//! The hub's settings: every Worker variable and secret twinhub reads, by name, parsed once per
//! isolate into one [`Config`].
//!
//! A running isolate's environment never changes (a deploy, or `wrangler dev` reloading
//! `.dev.vars`, starts a new isolate), so the first request parses it: the policies' keys are
//! derived (an HMAC each) and the upstream's connection string parsed once, not on every
//! request and CONNECT. The Worker and every Durable Object in the isolate share the result.
//! A setting that does not parse is logged once and read as its default, so a typo never takes
//! the hub down; the names are documented in the README.

use std::cell::OnceCell;
use std::rc::Rc;
use twinhub_core::auth::Policy;
use twinhub_core::tier::Tier;
use twinhub_core::upstream::UpstreamHub;
use twinhub_core::HubError;
use worker::Env;

/// Secret (or variable): the `iothubowner` key, base64; the other built-in policies derive
/// theirs from it.
pub const OWNER_KEY_VAR: &str = "TWINHUB_OWNER_KEY";
/// Variable: extra shared access policies, `name:key:permissions;...`.
pub const POLICIES_VAR: &str = "TWINHUB_POLICIES";
/// Variable: the host names (with ports) the hub answers to, comma-separated; unset, it
/// answers to the name it is addressed by.
pub const HOST_NAMES_VAR: &str = "TWINHUB_HOST_NAMES";
/// Secret (or variable): the upstream IoT Hub's service connection string (upstream mode).
pub const UPSTREAM_VAR: &str = "UPSTREAM_CONNECTION_STRING";
/// `https` (default) or `http` (a local twinhub standing in for Azure, as the tests run it).
pub const UPSTREAM_SCHEME_VAR: &str = "UPSTREAM_SCHEME";
/// Variable: the hub's tier, `unlimited` (default), `S1`, `S2` or `S3`, with `:units`.
pub const TIER_VAR: &str = "TWINHUB_TIER";
/// Variable: device-to-cloud messages one device may send per second before the hub slows it.
pub const DEVICE_RATE_VAR: &str = "DEVICE_MESSAGES_PER_SECOND";
/// Variable: the number of gateway shards (1 to 256).
pub const GATEWAY_SHARDS_VAR: &str = "GATEWAY_SHARDS";
/// Variable: the number of fleet index shards (1 to 256).
pub const INDEX_SHARDS_VAR: &str = "FLEET_INDEX_SHARDS";
/// Variable: how long a new socket may take to send CONNECT, in ms (100 to 600,000).
pub const CONNECT_TIMEOUT_VAR: &str = "MQTT_CONNECT_TIMEOUT_MS";
/// Variable: `off` turns catch-up on reconnect off ([`twinhub_core::twin::catch_up`]).
pub const CATCH_UP_VAR: &str = "TWINHUB_DESIRED_CATCH_UP";
/// Variable: twin history entries kept per device.
pub const HISTORY_RETENTION_VAR: &str = "TWIN_HISTORY_RETENTION";
/// Variable: telemetry messages kept per device.
pub const TELEMETRY_RETENTION_VAR: &str = "TELEMETRY_RETENTION";
/// Variable: seconds a telemetry message is kept.
pub const TELEMETRY_RETENTION_SECS_VAR: &str = "TELEMETRY_RETENTION_SECS";
/// Variable: the most devices per second one job calls (absent or 0: as fast as it goes).
pub const JOB_RATE_VAR: &str = "JOB_DEVICES_PER_SECOND";
/// Variable: a job's device calls in flight at once.
pub const JOB_CONCURRENCY_VAR: &str = "JOB_CONCURRENCY";
/// Variable: seconds a finished job is kept.
pub const JOB_RETENTION_VAR: &str = "JOB_RETENTION_SECS";
/// Variable: `1` enables the benchmark routes (`/api/bench/...`).
pub const BENCH_ECHO_VAR: &str = "TWINHUB_BENCH_ECHO";

/// Variable (self-hosted, set by `scripts/serve.sh`): the workerd process's open-file limit.
/// With the [`FDS_BINDING`] it turns on admission by headroom (`crate::headroom`).
pub const FD_LIMIT_VAR: &str = "TWINHUB_FD_LIMIT";
/// Service binding (self-hosted): a read-only disk service on `/proc/self/fd`, whose listing is
/// workerd's own open files.
pub const FDS_BINDING: &str = "TWINHUB_FDS";

/// AWS IoT's default per-connection publish rate; IoT Hub has none per device.
pub const DEFAULT_DEVICE_MESSAGES_PER_SECOND: u64 = 100;
/// Gateway shards when the variable is absent.
pub const DEFAULT_GATEWAY_SHARDS: u32 = 2;
/// Index shards when the variable is absent: enough to spread load, few enough for `wrangler dev`.
pub const DEFAULT_INDEX_SHARDS: u32 = 4;
/// Twin history entries kept per device when the variable is absent.
pub const DEFAULT_HISTORY_RETENTION: u64 = 1_000;
/// Telemetry messages kept per device when the variable is absent.
pub const DEFAULT_TELEMETRY_RETENTION: u64 = 1_000;
/// A week, the longest retention IoT Hub's built-in endpoint offers.
pub const DEFAULT_TELEMETRY_RETENTION_SECS: u64 = 7 * 24 * 3600;
/// A job's device calls in flight at once when the variable is absent.
pub const DEFAULT_JOB_CONCURRENCY: u64 = 100;
/// 30 days, as IoT Hub keeps finished jobs.
pub const DEFAULT_JOB_RETENTION_SECS: u64 = 30 * 24 * 3600;

/// Partitions of the Event Hub-compatible endpoint (1 to 32; changing it moves devices
/// between partitions, as it would in IoT Hub, where it is fixed at creation). 0 turns the
/// endpoint off: telemetry is stored per device only, one write fewer per message.
pub const EVENTHUB_PARTITIONS_VAR: &str = "EVENTHUB_PARTITIONS";

/// Calls to objects one AMQP-over-WebSocket connection may make before the hub closes it
/// (`amqp:connection:forced`; the Event Hubs and IoT SDKs reconnect and resume). Such a
/// connection lives in one Worker request, and Cloudflare caps the subrequests of a request
/// (10,000 on the paid plan; local workerd does not enforce it); raw TCP (self-hosted only)
/// has no such cap.
pub const AMQP_SUBREQUESTS_VAR: &str = "AMQP_SUBREQUESTS_PER_CONNECTION";
/// The default leaves room under 10,000 for what the request makes besides.
pub const DEFAULT_AMQP_SUBREQUESTS: u64 = 9_000;

/// Every setting, parsed.
pub struct Config {
    /// The owner, built-in and configured policies, keys derived. Empty when no owner key is
    /// set: every request is then refused.
    pub policies: Vec<Policy>,
    /// The names the hub answers to; `None` answers to any.
    pub host_names: Option<Vec<String>>,
    /// Upstream mode: the hub fronted, or why the secret cannot be used (an error on every
    /// request, never a silent fallback to a hub of our own).
    pub upstream: Option<Result<UpstreamHub, HubError>>,
    pub tier: Tier,
    pub device_messages_per_second: u64,
    pub gateway_shards: u32,
    pub index_shards: u32,
    pub connect_timeout_ms: u64,
    pub desired_catch_up: bool,
    pub history_retention: u64,
    pub telemetry_retention: u64,
    pub telemetry_retention_secs: u64,
    /// 0: as fast as it goes.
    pub job_devices_per_second: u64,
    pub job_concurrency: u64,
    pub job_retention_secs: u64,
    pub bench_routes: bool,
    pub eventhub_partitions: u32,
    pub amqp_subrequests: u64,
    /// The process's open-file limit, where the runtime has one to know (self-hosted).
    pub fd_limit: Option<u64>,
}

thread_local! {
    static CONFIG: OnceCell<Rc<Config>> = const { OnceCell::new() };
}

impl Config {
    /// This isolate's settings, parsed on first use.
    pub fn of(env: &Env) -> Rc<Config> {
        CONFIG.with(|cell| Rc::clone(cell.get_or_init(|| Rc::new(Self::parse(env)))))
    }

    fn parse(env: &Env) -> Self {
        let text = |name: &str| env.var(name).ok().map(|v| v.to_string()).filter(|v| !v.trim().is_empty());
        let secret = |name: &str| env.secret(name).ok().map(|v| v.to_string()).filter(|v| !v.trim().is_empty());
        let number = |name: &str| text(name).and_then(|v| v.trim().parse::<u64>().ok());
        let positive = |name: &str, default: u64| number(name).filter(|n| *n >= 1).unwrap_or(default);
        let shards = |name: &str, default: u32| {
            number(name).and_then(|n| u32::try_from(n).ok()).filter(|n| (1..=256).contains(n)).unwrap_or(default)
        };
        Self {
            policies: policies(secret(OWNER_KEY_VAR).or_else(|| text(OWNER_KEY_VAR)), text(POLICIES_VAR)),
            host_names: text(HOST_NAMES_VAR).map(|names| names.split(',').map(|n| n.trim().to_owned()).collect()),
            upstream: secret(UPSTREAM_VAR)
                .or_else(|| text(UPSTREAM_VAR))
                .map(|cs| UpstreamHub::parse(&cs, text(UPSTREAM_SCHEME_VAR).as_deref())),
            tier: Tier::parse(&text(TIER_VAR).unwrap_or_default()).unwrap_or_else(|e| {
                worker::console_error!("{TIER_VAR}: {e}; no throttles apply");
                Tier::default()
            }),
            device_messages_per_second: positive(DEVICE_RATE_VAR, DEFAULT_DEVICE_MESSAGES_PER_SECOND),
            gateway_shards: shards(GATEWAY_SHARDS_VAR, DEFAULT_GATEWAY_SHARDS),
            index_shards: shards(INDEX_SHARDS_VAR, DEFAULT_INDEX_SHARDS),
            connect_timeout_ms: number(CONNECT_TIMEOUT_VAR)
                .filter(|ms| (100..=600_000).contains(ms))
                .unwrap_or(twinhub_core::session::CONNECT_TIMEOUT_MS),
            desired_catch_up: !text(CATCH_UP_VAR).is_some_and(|v| v.eq_ignore_ascii_case("off")),
            history_retention: positive(HISTORY_RETENTION_VAR, DEFAULT_HISTORY_RETENTION),
            telemetry_retention: positive(TELEMETRY_RETENTION_VAR, DEFAULT_TELEMETRY_RETENTION),
            telemetry_retention_secs: positive(TELEMETRY_RETENTION_SECS_VAR, DEFAULT_TELEMETRY_RETENTION_SECS),
            job_devices_per_second: positive(JOB_RATE_VAR, 0),
            job_concurrency: positive(JOB_CONCURRENCY_VAR, DEFAULT_JOB_CONCURRENCY),
            job_retention_secs: positive(JOB_RETENTION_VAR, DEFAULT_JOB_RETENTION_SECS),
            bench_routes: text(BENCH_ECHO_VAR).as_deref() == Some("1"),
            eventhub_partitions: number(EVENTHUB_PARTITIONS_VAR)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n <= twinhub_core::eventhub::MAX_PARTITIONS)
                .unwrap_or(twinhub_core::eventhub::DEFAULT_PARTITIONS),
            amqp_subrequests: positive(AMQP_SUBREQUESTS_VAR, DEFAULT_AMQP_SUBREQUESTS),
            fd_limit: number(FD_LIMIT_VAR).filter(|n| *n > 0),
        }
    }
}

/// The owner policy from the owner key, the built-in ones, and any configured. No owner key,
/// no policies: every request is refused.
fn policies(owner_key: Option<String>, configured: Option<String>) -> Vec<Policy> {
    let Some(owner_key) = owner_key else {
        worker::console_error!("{OWNER_KEY_VAR} is not set: every request will be refused");
        return Vec::new();
    };
    match Policy::all(&owner_key, configured.as_deref()) {
        Ok(all) => all,
        Err(e) => {
            // Only the message goes to the log: it never contains a key.
            worker::console_error!("{e}; falling back to the owner policy alone");
            vec![Policy::owner(owner_key)]
        }
    }
}
