//! Messages from the Worker to its Durable Objects, and between objects.
//!
//! Each op is one JSON body POSTed to the object. An object answers a 2xx with its reply as
//! JSON (or no body), or a [`HubError`] as IoT Hub's REST envelope, which `HubError::envelope`
//! writes and `HubError::from_envelope` reads: [`call`] gives the caller `Result<Reply,
//! HubError>`, so an error crosses objects as itself and nobody parses an envelope by hand. A
//! REST handler whose object renders the client's whole response (a twin with its ETag) passes
//! it through with [`forward`].

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use twinhub_core::configuration::Configuration;
use twinhub_core::session::topic::Subscription;
use twinhub_core::{ErrorCode, HubError};

/// A JSON document inside an op, carried as itself rather than as a string of JSON text, and
/// passed on without being parsed. Ops that carry one are externally tagged (`{"patchTwin":
/// {...}}`): an internally tagged enum buffers its fields first, and a raw value cannot pass
/// through that buffer.
pub type Json = Box<RawValue>;

/// `text` as [`Json`]: its syntax checked (400006 IotHubFormatError, as core's parsers answer
/// a body that is not JSON).
pub fn json(text: String) -> Result<Json, HubError> {
    RawValue::from_string(text)
        .map_err(|e| HubError::new(ErrorCode::IotHubFormatError, format!("the body is not valid JSON: {e}")))
}

/// `value` as [`Json`].
pub fn to_json(value: &impl Serialize) -> Json {
    // Serializing a value that is already JSON cannot fail.
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// A request to one device's object (externally tagged, see [`Json`]). `actor` names who
/// asked (a policy, a device, a job), for the twin history.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceOp {
    /// `PUT /devices/{id}`: create, or update when `if_match` is given (or `upsert` is set, as a
    /// bulk `createOrUpdate` does).
    PutIdentity { device_id: String, body: Json, if_match: Option<String>, upsert: bool },
    /// `GET /devices/{id}`.
    GetIdentity { device_id: String },
    /// `DELETE /devices/{id}`.
    DeleteIdentity { device_id: String, if_match: Option<String> },
    /// Room for a module on this device, before the module's own object creates it (404 for
    /// no device, 403 past the module limit).
    AddModule { device_id: String, module_id: String },
    /// Forget a module (deleted, or its create failed).
    RemoveModule { device_id: String, module_id: String },
    /// The device's module ids, a JSON array.
    ListModules { device_id: String },
    /// `GET /twins/{id}`.
    GetTwin { device_id: String },
    /// `PATCH /twins/{id}`.
    PatchTwin { device_id: String, body: Json, if_match: Option<String>, actor: String },
    /// `PUT /twins/{id}`.
    ReplaceTwin { device_id: String, body: Json, if_match: Option<String>, actor: String },
    /// `GET /api/twins/{id}/history`: entries with a version above `since`, oldest first.
    History { device_id: String, since: u64, limit: usize },
    /// MQTT CONNECT: check `token` for this device on `host`; if good, record the session
    /// (`gateway` shard, `conn` id), dropping an older one, and mark the device connected.
    /// Answers [`ConnectVerdict`].
    DeviceConnect {
        device_id: String,
        token: Option<String>,
        host: String,
        gateway: String,
        conn: String,
        clean_session: bool,
        /// The IoT Plug and Play model the CONNECT announced.
        #[serde(default)]
        model_id: Option<String>,
    },
    /// Whether `token` lets the device connect now (an AMQP put-token for the device, which
    /// opens no session by itself): 200 [`DeviceToken`], or 401.
    DeviceToken { device_id: String, token: String, host: String },
    /// The session's subscriptions changed; `keep` (CleanSession=0) keeps them for its next
    /// connection.
    DeviceSubscriptions { device_id: String, conn: String, subscriptions: Vec<Subscription>, keep: bool },
    /// `POST /api/devices/{id}/messages`: queue a cloud-to-device message (the request body).
    SendCloudToDevice { device_id: String, body: Json },
    /// A cloud-to-device message a service sent over AMQP, checked already.
    EnqueueCloudToDevice { device_id: String, message: twinhub_core::c2d::CloudToDeviceMessage },
    /// The device acknowledged (PUBACK) the cloud-to-device message `seq` on session `conn`:
    /// it is complete, or with `rejected`, rejected (its feedback says so).
    CloudToDeviceDelivered {
        device_id: String,
        conn: String,
        seq: u64,
        #[serde(default)]
        rejected: bool,
    },
    /// The session `conn` ended.
    DeviceDisconnected { device_id: String, conn: String },
    /// MQTT twin GET on session `conn`: the device view.
    DeviceTwinGet { device_id: String, conn: String },
    /// MQTT reported patch on session `conn`: the device's bytes as it sent them (core checks
    /// them). Answers [`ReportAccepted`] or the error.
    DeviceReport {
        device_id: String,
        conn: String,
        #[serde(with = "base64_bytes")]
        body: Vec<u8>,
    },
    /// MQTT telemetry to store, from session `conn`. `properties` is the decoded property bag.
    DeviceTelemetry { device_id: String, conn: String, messages: Vec<TelemetryMessage> },
    /// `POST /twins/{id}/methods`. An offline device is waited for up to `connect_timeout_ms`
    /// (`connectTimeoutInSeconds`).
    InvokeMethod { device_id: String, name: String, payload: Json, timeout_ms: u64, connect_timeout_ms: u64 },
    /// `GET /api/devices/{id}/telemetry`: the newest `limit` messages, oldest first.
    TelemetryList { device_id: String, limit: usize },
    /// A job's twin update, applied at most once per job: a second call for the same `job_id`
    /// answers as the first did and changes nothing. The change's undo is kept for a rollback.
    JobUpdateTwin { device_id: String, job_id: String, body: Json },
    /// Gives back the values `job_id` changed (once; later calls change nothing).
    JobRollback { device_id: String, job_id: String },
    /// An automatic device configuration's verdict for this twin (from its index shard):
    /// apply `configuration`'s content `patch` (once per revision), or, with none, forget the
    /// configuration applied.
    ApplyConfiguration {
        device_id: String,
        configuration: Option<twinhub_core::twin::AppliedConfiguration>,
        patch: Option<serde_json::Value>,
    },
    /// `GET /api/devices/{id}/telemetry/series`: `field` downsampled over `[from, to)` (Unix ms).
    TelemetrySeries { device_id: String, field: String, from: u64, to: u64, buckets: usize },
}

/// The device object's answer to a job's [`DeviceOp::JobRollback`].
#[derive(Debug, Deserialize)]
pub struct RollbackAnswer {
    /// The device has the job's values given back (now or before); `false`: the job never
    /// changed it.
    #[serde(default = "given_back")]
    pub restored: bool,
}

fn given_back() -> bool {
    true
}

/// The device object's answer to a [`DeviceOp::DeviceReport`]: the reported version.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReportAccepted {
    pub version: u64,
}

/// The device object's answer to [`DeviceOp::DeviceToken`]: the token is good until then.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceToken {
    /// Unix seconds.
    pub expiry_secs: u64,
}

/// The device object's answer to [`DeviceOp::DeviceConnect`].
pub use twinhub_core::device::ConnectVerdict;

/// A request to a gateway shard about one of its connections (externally tagged, see [`Json`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GatewayOp {
    /// Deliver a desired-properties patch (`patch` includes `$version`).
    Desired { conn: String, version: u64, patch: serde_json::Value },
    /// Close the connection (a newer one for the same device, device disabled, keys rotated).
    Close { conn: String, reason: String },
    /// Invoke a direct method and wait up to `timeout_ms` for the device's answer.
    Method { conn: String, name: String, payload: Json, timeout_ms: u64 },
    /// Deliver queued cloud-to-device messages at QoS 1.
    CloudToDevice { conn: String, messages: Vec<QueuedMessage> },
}

/// A queued cloud-to-device message on its way to a gateway.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// Its place in the device's queue; the device's PUBACK completes it.
    pub seq: u64,
    /// The property bag.
    pub properties: Vec<(String, Option<String>)>,
    /// The body, base64.
    pub body: String,
}

/// A request to the configurations object (`objects::configurations`). Answers carry
/// [`Configuration`]s as stored; the Worker adds the metrics. Externally tagged (see [`Json`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConfigurationOp {
    /// Create, or update with `if_match` (`*` for any).
    Put {
        id: String,
        body: Json,
        if_match: Option<String>,
    },
    Get {
        id: String,
    },
    /// Up to `top`, in id order.
    List {
        top: usize,
    },
    Delete {
        id: String,
        if_match: Option<String>,
    },
}

/// A request to the jobs object (`objects::jobs`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum JobOp {
    /// `PUT /jobs/v2/{id}`: store and start (or schedule) `job`; 409 if the id is taken.
    Create { job: Box<twinhub_core::job::Job> },
    /// `GET /jobs/v2/{id}`.
    Get { job_id: String },
    /// `POST /jobs/v2/{id}/cancel`.
    Cancel { job_id: String },
    /// `POST /jobs/v2/{id}/pause` (twinhub).
    Pause { job_id: String },
    /// `POST /jobs/v2/{id}/resume` (twinhub).
    Resume { job_id: String },
    /// `POST /jobs/v2/{id}/rollback` (twinhub): give every device its previous values back.
    Rollback { job_id: String },
    /// `GET /jobs/v2/query`: up to `limit` jobs after job id `after`, in id order, filtered.
    List {
        job_type: Option<twinhub_core::job::JobType>,
        status: Option<twinhub_core::job::JobStatus>,
        after: Option<String>,
        limit: usize,
    },
    /// `SELECT ... FROM devices.jobs`: up to `limit` matching records after `after` (job id,
    /// device id), in that order.
    DeviceJobs { query: String, after: Option<(String, String)>, limit: usize },
    /// How many jobs are under way: answers `twinhub_core::wire::overview::RunningJobs`.
    Running,
}

/// The jobs object's answer to [`JobOp::List`] and [`JobOp::DeviceJobs`]: one page.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobPage<K> {
    pub items: Vec<serde_json::Value>,
    /// Where the next page starts, when there is one.
    pub next: Option<K>,
}

/// A device's projection, pushed by its object to its fleet index shard after each commit.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    /// The device.
    pub device_id: String,
    /// The device object's commit counter; the index keeps only the newest.
    pub seq: u64,
    /// Identity JSON as `GET /devices/{id}` renders it; `None` once deleted. Raw: the shard
    /// stores the text as it arrives, never parsing it.
    pub identity: Option<Box<serde_json::value::RawValue>>,
    /// Twin JSON as `GET /twins/{id}` renders it; `None` once deleted. Raw, as `identity`.
    pub twin: Option<Box<serde_json::value::RawValue>>,
    /// When the device object committed this state (Unix ms), for the index lag figures.
    #[serde(default)]
    pub committed_at: Option<u64>,
    /// The twin's drift, worked out where the twin is parsed anyway (the device object), so
    /// the shard stores it without reading the twin.
    #[serde(default)]
    pub drift: twinhub_core::twin::drift::DriftCounts,
}

/// A request to one fleet index shard. Externally tagged (`{"upsert": {...}}`), unlike the
/// other ops: an internally tagged enum is buffered before it is read, and raw JSON values
/// ([`IndexEntry`]) cannot pass through that buffer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IndexOp {
    /// Store `entry` unless a newer one is there.
    Upsert { entry: IndexEntry },
    /// Up to `top` device identities, in id order.
    ListIdentities { top: usize },
    /// Device counts for `/statistics/devices` and `/statistics/service`.
    Statistics,
    /// A compiled row query (`twinhub_core::query::sql::rows_statement`).
    Rows { sql: String, params: Vec<serde_json::Value> },
    /// A compiled aggregate query (`twinhub_core::query::sql::aggregate_statement`).
    Aggregate { sql: String, params: Vec<serde_json::Value> },
    /// Several compiled aggregate statements in one call (the counts of a configuration
    /// list): answers their rows in order, `{"results": [[row, ...], ...]}`.
    AggregateMany { statements: Vec<(String, Vec<serde_json::Value>)> },
    /// The shard's recent index lag.
    Lag,
    /// Every id a compiled statement (`twinhub_core::query::sql::ids_statement`) selects.
    Ids { sql: String, params: Vec<serde_json::Value> },
    /// Store many entries at once (the query benchmark's fleet loader).
    Load { entries: Vec<IndexEntry> },
    /// The hub's configurations, from the configurations object after each change: the shard
    /// applies the winning one to each device twin it is sent from then on, and with `sweep`
    /// reconsiders every device it holds now.
    SetConfigurations { configurations: Vec<Configuration>, sweep: bool },
    /// Whether the shard holds `device_id` as an existing device: the gateway asks before a
    /// CONNECT wakes (and so creates the storage of) a device object. Answers [`Existence`].
    Exists { device_id: String },
    /// Nothing but the placement the call names: a shard past a smaller count is woken with
    /// it by one that learned of the change, and hands its rows over (`twinhub_core::fleet`).
    Rebalance,
    /// The count before the last change, as this shard knows it (`Option<u32>`): a shard
    /// called for the first time asks shard 0, so it can find devices not yet moved to it.
    Previous,
    /// What the overview needs of a shard, in one call: its counts now (sampled as this
    /// minute's connected count), its connected-device samples from `since` (Unix ms) on
    /// preceded by the last one before it, and its lag. Answers [`ShardOverview`].
    Overview { since: u64 },
}

/// The answer to [`IndexOp::Overview`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ShardOverview {
    pub statistics: ShardStatistics,
    /// `(minute, connected)`, oldest first (`twinhub_core::overview::connected`).
    pub samples: Vec<(u64, u64)>,
    pub lag: IndexLag,
}

/// The answer to [`IndexOp::Exists`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Existence {
    pub exists: bool,
}

/// How far behind the device objects a shard's recent upserts arrived.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexLag {
    /// Upserts measured (the most recent, up to 1,000, since the shard started).
    pub samples: usize,
    pub last_ms: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// Counts from one index shard; the Worker sums them.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatistics {
    /// Devices in the registry.
    pub total: u64,
    /// Of which enabled.
    pub enabled: u64,
    /// Of which connected now.
    pub connected: u64,
    /// With a desired property not caught up (`DriftCounts`).
    #[serde(default)]
    pub drifting: u64,
    /// With a desired property refused.
    #[serde(default)]
    pub refused: u64,
}

/// POSTs `op` as JSON to a Durable Object stub and returns its response as is: for a REST
/// handler whose object renders the client's response.
pub async fn forward<T: Serialize>(stub: &worker::Stub, op: &T) -> worker::Result<worker::Response> {
    forward_at(stub, OBJECT_URL, op).await
}

/// The URL an op is posted to. The host is a placeholder: a stub routes by object, not by URL.
const OBJECT_URL: &str = "https://object.internal/rpc";

/// [`forward`] to `url`, for an object that reads something from it (an index shard, its
/// placement).
async fn forward_at<T: Serialize>(stub: &worker::Stub, url: &str, op: &T) -> worker::Result<worker::Response> {
    let body = serde_json::to_string(op).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Post).with_body(Some(body.into()));
    let req = worker::Request::new_with_init(url, &init)?;
    stub.fetch_with_request(req).await
}

/// Sends `op` to an object and reads its answer: a 2xx as `Reply` (no body reads as JSON
/// `null`, so `()` takes it), anything else as the error the object wrote. An object that
/// cannot be reached, or an answer that does not read, is the hub's own fault (`ServerError`).
pub async fn call<Op: Serialize, Reply: serde::de::DeserializeOwned>(
    stub: &worker::Stub,
    op: &Op,
) -> Result<Reply, HubError> {
    call_at(stub, OBJECT_URL, op).await
}

/// [`call`] posted to `url` (see [`forward_at`]).
pub async fn call_at<Op: Serialize, Reply: serde::de::DeserializeOwned>(
    stub: &worker::Stub,
    url: &str,
    op: &Op,
) -> Result<Reply, HubError> {
    let mut answer = forward_at(stub, url, op).await.map_err(unreachable)?;
    let status = answer.status_code();
    let text = answer.text().await.map_err(unreachable)?;
    if (200..300).contains(&status) {
        let text = if text.is_empty() { "null" } else { text.as_str() };
        return serde_json::from_str(text)
            .map_err(|e| HubError::new(ErrorCode::ServerError, format!("an object's answer did not read: {e}")));
    }
    Err(HubError::from_envelope(&text)
        .unwrap_or_else(|| HubError::new(ErrorCode::ServerError, format!("an object answered {status}"))))
}

/// An object that could not be reached (or whose answer could not be read off the wire).
pub fn unreachable(e: worker::Error) -> HubError {
    HubError::new(ErrorCode::ServerError, format!("an object could not be reached: {e}"))
}

/// A [`HubError`] as the platform's error, for callers whose failure is the hub's own fault
/// whatever the object said.
pub fn fault(e: HubError) -> worker::Error {
    worker::Error::RustError(e.to_string())
}

/// Reads a JSON body (an op, or an object's answer) with serde_json. Not worker's `json()`,
/// which parses with JavaScript's `JSON.parse`: that rounds integers past 2^53 (a twin value,
/// a `since`) and then fails to fit them back into a `u64`.
pub async fn read<T: serde::de::DeserializeOwned>(body: worker::Result<String>) -> worker::Result<T> {
    serde_json::from_str(&body?).map_err(|e| worker::Error::RustError(format!("unreadable JSON: {e}")))
}

/// [`call`] for a caller inside the platform's `Result`: any error is a fault.
pub async fn ask<T: serde::de::DeserializeOwned>(stub: &worker::Stub, op: &impl Serialize) -> worker::Result<T> {
    call(stub, op).await.map_err(fault)
}

/// [`ask`] for an op whose answer says nothing beyond success.
pub async fn tell(stub: &worker::Stub, op: &impl Serialize) -> worker::Result<()> {
    ask::<serde::de::IgnoredAny>(stub, op).await.map(|_| ())
}

/// One device-to-cloud message, as the gateway hands it to the device object. Messages that
/// arrived together travel in one call, stored in one transaction and acknowledged together.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TelemetryMessage {
    /// The decoded property bag.
    pub properties: Vec<(String, Option<String>)>,
    /// The body, as sent; base64 on the wire (serde's default for bytes is a JSON array of
    /// numbers, about three times the text and a value to parse per byte).
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
}

/// Bytes as one base64 string in JSON.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        BASE64.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// What an Event Hub partition object (`objects/partition.rs`) is asked.
#[derive(Debug, Serialize, Deserialize)]
pub enum PartitionOp {
    /// Appends the batches of several devices (each in order), answered once durable: what one
    /// gateway shard's devices had stored while its last append was under way.
    Append { batches: Vec<DeviceBatch> },
    /// Up to `max` events from sequence number `from` on, within a byte budget.
    Read { from: u64, max: usize },
    /// The sequence number a consumer starting at this position reads first.
    Start { position: twinhub_core::eventhub::StartPosition },
    /// The partition's figures.
    Info,
    /// A field (`path`, an SQLite JSON path) of the bodies enqueued in `window`, one partial per
    /// bucket, over the messages of `devices` (every device's when `None`): answers
    /// `Vec<twinhub_core::telemetry::Partial>`.
    Series { path: String, window: twinhub_core::telemetry::Window, devices: Option<Vec<String>> },
    /// Up to `limit` messages with an `alert` property enqueued at or after `since` (Unix ms),
    /// of `devices` (every device's when `None`), newest first: answers `Vec<Event>`.
    Alerts { since: u64, devices: Option<Vec<String>>, limit: usize },
    /// Messages and alerts per minute enqueued in `[from, to)`, and the devices that alerted:
    /// answers `twinhub_core::overview::PartitionActivity`.
    Activity { from: u64, to: u64 },
}

/// One device's (or module's) stored telemetry batch, for its partition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceBatch {
    /// The device or module key (`{deviceId}/{moduleId}`).
    pub key: String,
    pub messages: Vec<TelemetryMessage>,
}

/// What the feedback object (`objects/feedback.rs`) is asked.
#[derive(Debug, Serialize, Deserialize)]
pub enum FeedbackOp {
    /// Keeps a record for the feedback receivers.
    Append { record: twinhub_core::c2d::Feedback },
    /// Up to `max` records not lent out, lent for a minute: `(ids, records)`.
    Take { max: usize },
    /// The receiver accepted these: they are gone.
    Complete { ids: Vec<i64> },
}
