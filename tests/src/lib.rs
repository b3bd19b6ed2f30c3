//! The end-to-end harness: runs the real Worker under `wrangler dev` and talks to it over HTTP.
//!
//! [`Hub::start`] launches `wrangler dev` on free ports with a fixed owner key and its own
//! storage directory, waits until `/api/health` answers, and [`Drop`] stops the whole process
//! group, also when a test panics. Start a second [`Hub`] on the same [`Storage`] to prove
//! that acknowledged writes survive a restart.
//!
//! The harness does not build anything: `make test` builds the Worker and the dashboard first.

pub mod amqp_client;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The owner key every test hub uses (base64 of 32 bytes).
pub const OWNER_KEY: &str = "dHdpbmh1Yi1lMmUtb3duZXIta2V5LTAxMjM0NTY3ODk=";

/// How long `wrangler dev` may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A storage directory for `wrangler dev --persist-to`, removed on drop.
pub struct Storage {
    dir: PathBuf,
}

impl Storage {
    /// A fresh, empty directory under `target/e2e/`.
    pub fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = repo_root().join("target/e2e").join(format!(
            "{name}-{}-{stamp}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&dir).expect("create storage dir");
        Self { dir }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A running `wrangler dev`.
pub struct Hub {
    child: Child,
    /// The owner policy's key (`TWINHUB_OWNER_KEY`): [`OWNER_KEY`] unless the vars gave another.
    owner_key: String,
    port: u16,
    log: PathBuf,
    https: bool,
    /// Where MQTT over TLS is taken (workerd with https only): 8883 for a hub on 443, as the
    /// device SDKs dial, otherwise a free port.
    mqtt_port: Option<u16>,
    /// Where plain AMQP (the Event Hub-compatible endpoint) is taken: workerd with https only.
    amqp_port: Option<u16>,
    /// Where AMQP over TLS is taken: workerd with https only.
    amqps_port: Option<u16>,
}

/// The test TLS material: a CA and a server certificate for `127.0.0.1` and `localhost` signed
/// by it, made once under `target/e2e-tls/` by `scripts/dev-cert.sh` (what `TWINHUB_TLS=1 make
/// dev` uses too).
pub struct Tls {
    /// The CA certificate (PEM): what clients trust.
    pub ca_cert: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// The server key (PEM).
    pub key: PathBuf,
}

/// The test TLS material, created on first use.
pub fn tls() -> Tls {
    let dir = repo_root().join("target/e2e-tls");
    let status = Command::new(repo_root().join("scripts/dev-cert.sh")).arg(&dir).status().expect("run dev-cert.sh");
    assert!(status.success(), "scripts/dev-cert.sh failed");
    Tls { ca_cert: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server-key.pem") }
}

/// A client TLS configuration trusting only the test CA of [`tls`]: for the harness's https
/// requests and the device load generator's MQTT over TLS.
pub fn tls_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls::pki_types::{pem::PemObject, CertificateDer};
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(tls().ca_cert).expect("read the test CA") {
                roots.add(cert.expect("a PEM certificate")).expect("add the test CA");
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// The HTTP client of https hubs.
fn https_agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| ureq::AgentBuilder::new().tls_config(tls_client_config()).build())
}

impl Hub {
    /// Starts `wrangler dev` over plain http on a free port, persisting to `storage`, and waits
    /// until ready.
    pub fn start(storage: &Storage) -> Self {
        Self::launch(storage, false, None, &[])
    }

    /// Like [`Hub::start`], with extra Worker variables (e.g. `TWINHUB_BENCH_ECHO=1`).
    pub fn start_with_vars(storage: &Storage, vars: &[(&str, &str)]) -> Self {
        Self::launch(storage, false, None, vars)
    }

    /// Like [`Hub::start`], over https with the certificate from [`tls`]: the Azure SDKs dial
    /// `https://{HostName}` and verify it.
    pub fn start_https(storage: &Storage) -> Self {
        Self::launch(storage, true, None, &[])
    }

    /// Like [`Hub::start_https`] on port 443: the Azure device SDKs dial 443 for
    /// MQTT-over-WebSocket and have no port option. Needs root (or a lowered
    /// `net.ipv4.ip_unprivileged_port_start`) and a free port 443.
    pub fn start_https_on_443(storage: &Storage) -> Self {
        Self::launch(storage, true, Some(443), &[])
    }

    /// The general form: http or https, a fixed port or a free one, extra Worker variables (a
    /// `TWINHUB_OWNER_KEY` among them replaces [`OWNER_KEY`]). The runtime is workerd directly
    /// ([`Hub::launch_workerd_with`]), or `wrangler dev` when `TWINHUB_TEST_RUNTIME=wrangler`.
    pub fn launch(storage: &Storage, https: bool, fixed_port: Option<u16>, vars: &[(&str, &str)]) -> Self {
        match std::env::var("TWINHUB_TEST_RUNTIME").as_deref() {
            Ok("wrangler") => Self::launch_wrangler(storage, https, fixed_port, vars),
            _ => Self::launch_workerd_with(storage, https, fixed_port, vars),
        }
    }

    /// Like [`Hub::launch`], through `wrangler dev` (the code-reload loop): for its smoke test,
    /// and where a test reads the request log wrangler keeps.
    pub fn launch_wrangler(storage: &Storage, https: bool, fixed_port: Option<u16>, vars: &[(&str, &str)]) -> Self {
        let root = repo_root();
        for artifact in ["functions/build/index.js", "dist/index.html"] {
            assert!(
                root.join(artifact).exists(),
                "{artifact} is missing: run `make test` (or `make build`) so the Worker and dashboard are built"
            );
        }
        let port = fixed_port.unwrap_or_else(free_port);
        let inspector = free_port();
        let (env_file, owner_key) = write_env_file(storage, vars);
        let log = storage.path().join(format!("wrangler-{port}.log"));
        let log_file = fs::File::create(&log).expect("create log");
        let mut command = Command::new(root.join("node_modules/.bin/wrangler"));
        if https {
            let tls = tls();
            command.args(["--local-protocol", "https"]).arg("--https-key-path").arg(&tls.key);
            command.arg("--https-cert-path").arg(&tls.cert);
        }
        // The benchmarks' platform-floor object, which the deployed wrangler.toml no longer
        // binds: a copy of it that does, next to the build (its paths are relative to it).
        if vars.contains(&("TWINHUB_BENCH_ECHO", "1")) {
            let toml = fs::read_to_string(root.join("wrangler.toml")).expect("wrangler.toml");
            let bench = toml
                .replace("main = \"functions/build/index.js\"", "main = \"../functions/build/index.js\"")
                .replace("directory = \"dist\"", "directory = \"../dist\"")
                .replacen(
                    "\n[[migrations]]",
                    "\n[[durable_objects.bindings]]\nname = \"BENCH_ECHO\"\nclass_name = \"BenchEcho\"\n\n[[migrations]]",
                    1,
                )
                + "\n[[migrations]]\ntag = \"bench\"\nnew_sqlite_classes = [\"BenchEcho\"]\n";
            let config = root.join("target").join(format!("wrangler-bench-{port}.toml"));
            fs::write(&config, bench).expect("write the bench wrangler config");
            command.arg("--config").arg(config);
        }
        let child = command
            .current_dir(&root)
            .args(["dev", "--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--inspector-port", &inspector.to_string()])
            .arg("--persist-to")
            .arg(storage.path().join("state"))
            .arg("--env-file")
            .arg(&env_file)
            .args(["--log-level", "info", "--show-interactive-dev-session=false"])
            .env("WRANGLER_SEND_METRICS", "false")
            .env("WRANGLER_SEND_ERROR_REPORTS", "false")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log"))
            .stderr(log_file)
            // Its own process group, so Drop can stop wrangler and the workerd it spawns.
            .process_group(0)
            .spawn()
            .expect("spawn wrangler dev (did `npm ci` run?)");
        let mut hub = Self { child, owner_key, port, log, https, mqtt_port: None, amqp_port: None, amqps_port: None };
        hub.wait_ready();
        hub
    }

    /// Starts the built Worker under `workerd serve` directly (`scripts/serve.sh`, its config
    /// generated from wrangler.toml), on a free port, persisting to `storage` (the same
    /// directory as an earlier launch gives the same state), with extra Worker variables.
    pub fn launch_workerd(storage: &Storage, vars: &[(&str, &str)]) -> Self {
        Self::launch_workerd_with(storage, false, None, vars)
    }

    /// [`Hub::launch_workerd`] with https (the test CA's certificate from [`tls`]) and a fixed
    /// port if asked.
    pub fn launch_workerd_with(storage: &Storage, https: bool, fixed_port: Option<u16>, vars: &[(&str, &str)]) -> Self {
        let root = repo_root();
        let port = fixed_port.unwrap_or_else(free_port);
        let (env_file, owner_key) = write_env_file(storage, vars);
        let log = storage.path().join(format!("workerd-{port}.log"));
        let log_file = fs::File::create(&log).expect("create log");
        let mut command = Command::new(root.join("scripts/serve.sh"));
        let mut mqtt_port = None;
        let mut amqps_port = None;
        if https {
            let tls = tls();
            command.env("TWINHUB_TLS_KEY", &tls.key).env("TWINHUB_TLS_CERT", &tls.cert);
            let mqtt = if fixed_port == Some(443) { 8883 } else { free_port() };
            command.env("TWINHUB_MQTT_LISTEN", format!("127.0.0.1:{mqtt}"));
            mqtt_port = Some(mqtt);
            // AMQP over TLS on IoT Hub's 5671, which the service SDKs dial for cloud-to-device
            // whatever the host's port: for the hub on 443, the one the SDKs' fixed ports are
            // for; any free port for the others.
            let amqps = if fixed_port == Some(443) { 5671 } else { free_port() };
            command.env("TWINHUB_AMQPS_LISTEN", format!("127.0.0.1:{amqps}"));
            amqps_port = Some(amqps);
        }
        // Plain AMQP, as the Event Hubs emulator's connection strings dial it (http or https).
        let amqp = free_port();
        command.env("TWINHUB_AMQP_LISTEN", format!("127.0.0.1:{amqp}"));
        let amqp_port = Some(amqp);
        // The benchmarks' platform-floor object is bound only when asked for (serve.sh --bench).
        if vars.contains(&("TWINHUB_BENCH_ECHO", "1")) {
            command.env("TWINHUB_BENCH_ECHO", "1");
        }
        // A lower open-file limit for workerd (scripts/serve.sh applies it with ulimit).
        if let Some((_, n)) = vars.iter().find(|(k, _)| *k == "TWINHUB_NOFILE") {
            command.env("TWINHUB_NOFILE", n);
        }
        let child = command
            .current_dir(&root)
            .arg(storage.path().join("workerd"))
            .arg(port.to_string())
            .env("TWINHUB_ENV_FILE", &env_file)
            .env("TWINHUB_STORAGE", storage.path().join("state"))
            .env_remove("TWINHUB_OWNER_KEY")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log"))
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .expect("spawn scripts/serve.sh");
        let mut hub = Self { child, owner_key, port, log, https, mqtt_port, amqp_port, amqps_port };
        hub.wait_ready();
        hub
    }

    /// The port of plain AMQP (`None` under `wrangler dev`, which takes no TCP).
    pub fn amqp_port(&self) -> Option<u16> {
        self.amqp_port
    }

    /// The port of AMQP over TLS (`None` over http, or under `wrangler dev`).
    pub fn amqps_port(&self) -> Option<u16> {
        self.amqps_port
    }

    /// The port of MQTT over TLS (`None` over http, or under `wrangler dev`, which takes no TCP).
    pub fn mqtt_port(&self) -> Option<u16> {
        self.mqtt_port
    }

    /// The Event Hub-compatible endpoint's connection string for `azure-eventhub` (plain AMQP,
    /// as its Event Hubs emulator form `UseDevelopmentEmulator=true` dials), signed by the
    /// owner policy; `None` unless the hub takes AMQP.
    pub fn eventhub_connection_string(&self) -> Option<String> {
        self.amqp_port.map(|port| {
            format!(
                "Endpoint=sb://127.0.0.1:{port}/;SharedAccessKeyName=iothubowner;SharedAccessKey={};EntityPath={};UseDevelopmentEmulator=true",
                self.owner_key,
                twinhub_core::eventhub::ENTITY_PATH
            )
        })
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the hub exited early ({status}):\n{}", self.log_tail());
            }
            if self.healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("the hub not ready after {READY_TIMEOUT:?}:\n{}", self.log_tail());
    }

    fn healthy(&self) -> bool {
        self.get_unauthenticated("/api/health").status == 200
    }

    /// The process group of `wrangler dev` and the workerd processes it started (for the
    /// benchmarks' memory figures).
    pub fn process_group(&self) -> u32 {
        self.child.id()
    }

    /// The port `wrangler dev` listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}` (or `https://`).
    pub fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The host name clients put in connection strings: `127.0.0.1:{port}`, or `localhost` on
    /// https port 443 (the device SDKs check the certificate's name and add no port).
    pub fn host(&self) -> String {
        if self.https && self.port == 443 {
            "localhost".to_owned()
        } else {
            format!("127.0.0.1:{}", self.port)
        }
    }

    /// The owner connection string.
    pub fn owner_connection_string(&self) -> String {
        format!("HostName={};SharedAccessKeyName=iothubowner;SharedAccessKey={}", self.host(), self.owner_key)
    }

    /// The dashboard login URL, on the fleet page (where most browser scripts start; `make dev`
    /// prints the same link to `/`, the overview): the connection string travels in the
    /// fragment, which browsers never send to the server.
    pub fn login_url(&self) -> String {
        let cs = self.owner_connection_string();
        format!(
            "{}/fleet#cs={}",
            self.base_url(),
            percent_encoding::utf8_percent_encode(&cs, percent_encoding::NON_ALPHANUMERIC)
        )
    }

    /// A fresh owner token, valid for an hour.
    pub fn owner_token(&self) -> String {
        twinhub_core::auth::sign(&self.host(), &self.owner_key, Some("iothubowner"), now_secs() + 3600)
            .expect("sign owner token")
    }

    /// A fresh token of built-in policy `name` (its key derived from the owner key), valid
    /// for ten minutes.
    pub fn policy_token(&self, name: &str) -> String {
        let policies = twinhub_core::auth::Policy::all(&self.owner_key, None).expect("the policies");
        let key = &policies.iter().find(|p| p.name == name).expect("a built-in policy").key;
        twinhub_core::auth::sign(&self.host(), key, Some(name), now_secs() + 600).expect("sign policy token")
    }

    /// A request with a fresh owner token.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.call_with(method, path, body, &[("Authorization", &self.owner_token())])
    }

    /// A request with exactly the given headers.
    pub fn call_with(&self, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Reply {
        let url = format!("{}{path}", self.base_url());
        let req = if self.https { https_agent().request(method, &url) } else { ureq::request(method, &url) };
        let mut req = req.timeout(Duration::from_secs(30));
        for (name, value) in headers {
            req = req.set(name, value);
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json; charset=utf-8").send_string(b),
            None => req.call(),
        };
        match result {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => Reply::read(resp),
            Err(e) => Reply { status: 0, headers: Vec::new(), body: format!("transport error: {e}") },
        }
    }

    fn get_unauthenticated(&self, path: &str) -> Reply {
        self.call_with("GET", path, None, &[])
    }

    /// Device `id`'s primary key, read over REST (`id` may be a module's key, `{device}/{module}`).
    pub fn device_key(&self, id: &str) -> String {
        let path = format!("/{}", twinhub_core::identity::resource_path(id));
        let identity: twinhub_core::wire::Identity =
            serde_json::from_value(self.call("GET", &path, None).json()).expect("an identity");
        assert!(!identity.primary_key().is_empty(), "the device's primary key");
        identity.primary_key().to_owned()
    }

    /// A device token for `id` (or a module's key) on this hub, signed with `key`, valid for an hour.
    pub fn device_token(&self, id: &str, key: &str) -> String {
        let resource = format!("{}/{}", self.host(), twinhub_core::identity::resource_path(id));
        twinhub_core::auth::sign(&resource, key, None, now_secs() + 3600).expect("sign")
    }

    /// Everything the hub printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines the hub printed, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Stops wrangler (and workerd) and waits for it to exit.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// `kill -9` of wrangler and workerd at once: no shutdown, no flush. For crash tests; the
    /// hub answers nothing afterwards, and dropping it reaps the processes.
    pub fn kill9(&self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    }

    fn shutdown(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An HTTP reply, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code (0 when the request did not complete).
    pub status: u16,
    /// Response headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl Reply {
    fn read(resp: ureq::Response) -> Self {
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.to_ascii_lowercase(), v.to_owned())))
            .collect();
        let mut body = String::new();
        let _ = resp.into_reader().take(10 * 1024 * 1024).read_to_string(&mut body);
        Self { status, headers, body }
    }

    /// The body as JSON (Null when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Asserts an IoT Hub error: status, `iothub-errorcode` header, and the numeric code inside
    /// the envelope's `Message`.
    pub fn assert_hub_error(&self, status: u16, name: &str, code: u64) {
        assert_eq!(self.status, status, "status; body: {}", self.body);
        assert_eq!(self.header("iothub-errorcode"), Some(name), "iothub-errorcode; body: {}", self.body);
        let inner: serde_json::Value = self.json()["Message"]
            .as_str()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_else(|| panic!("no JSON in Message: {}", self.body));
        assert_eq!(inner["errorCode"], code, "errorCode; body: {}", self.body);
        assert!(inner["message"].as_str().is_some_and(|m| !m.is_empty()), "message; body: {}", self.body);
    }
}

/// Creates devices `{prefix}-{00000}` .. for `count` devices with bulk requests of 100, four
/// at a time (the benchmarks' fleets), and waits until the fleet index counts them all.
pub fn bulk_create(hub: &Hub, prefix: &str, count: usize) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| loop {
                let batch = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if batch * 100 >= count {
                    break;
                }
                let body: Vec<serde_json::Value> = (batch * 100..((batch + 1) * 100).min(count))
                    .map(|i| serde_json::json!({ "id": format!("{prefix}-{i:05}"), "importMode": "create", "status": "enabled" }))
                    .collect();
                let reply = hub.call("POST", "/devices", Some(&serde_json::Value::Array(body).to_string()));
                assert_eq!(reply.status, 200, "bulk create: {}", reply.body);
            });
        }
    });
    let query = serde_json::json!({ "query": format!("SELECT COUNT() AS n FROM devices WHERE STARTSWITH(deviceId, '{prefix}-')") })
        .to_string();
    while hub.call("POST", "/devices/query", Some(&query)).json()[0]["n"].as_u64().unwrap_or(0) < count as u64 {
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Writes the hub's Worker variables to `hub.env` in `storage` (wrangler's `--env-file`, and
/// serve.sh's `TWINHUB_ENV_FILE`): the owner key ([`OWNER_KEY`] unless `vars` names another)
/// and the rest of `vars`. Returns the file and the owner key.
fn write_env_file(storage: &Storage, vars: &[(&str, &str)]) -> (PathBuf, String) {
    let owner_key = vars.iter().find(|(n, _)| *n == "TWINHUB_OWNER_KEY").map_or(OWNER_KEY, |(_, v)| *v).to_owned();
    let mut env_text = format!("TWINHUB_OWNER_KEY={owner_key}\n");
    for (name, value) in vars.iter().filter(|(n, _)| *n != "TWINHUB_OWNER_KEY") {
        env_text.push_str(&format!("{name}={value}\n"));
    }
    let env_file = storage.path().join("hub.env");
    fs::write(&env_file, env_text).expect("write env file");
    (env_file, owner_key)
}

/// A port nothing listens on now: bound to port 0, read, released (for wrangler or a broker).
pub fn free_port() -> u16 {
    // Bind port 0, read the port the kernel picked, release it for wrangler.
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// The Python virtualenv `make test` prepares (`.venv`, with tests/python/requirements.txt).
pub fn python() -> PathBuf {
    let py = repo_root().join(".venv/bin/python");
    assert!(py.exists(), "{} is missing: run `make test` so the Azure SDK virtualenv is installed", py.display());
    py
}

/// Runs one pytest suite of `tests/python` (real Azure SDKs) against the hub whose owner
/// connection string is `connection_string`, trusting the test CA ([`tls`]), with `env` added.
/// `Ok(stdout)` when it passes, `Err(stdout and stderr)` otherwise.
pub fn pytest(suite: &str, connection_string: &str, env: &[(&str, &str)]) -> Result<String, String> {
    let ca = tls().ca_cert;
    let output = Command::new(python())
        .current_dir(repo_root().join("tests/python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", suite])
        .env("TWINHUB_CONNECTION_STRING", connection_string)
        .env("TWINHUB_CA", &ca)
        .env("REQUESTS_CA_BUNDLE", &ca)
        // How the SDKs' default transport (MQTT over TLS on 8883) trusts the test CA.
        .env("SSL_CERT_FILE", &ca)
        .envs(env.iter().copied())
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}\n{stderr}"))
    }
}

/// A device over MQTT-over-WebSocket, built from a plain WebSocket client and core's codec:
/// independent of the hub's session code, which it talks to.
pub struct MqttDevice {
    socket: tungstenite::WebSocket<std::net::TcpStream>,
    pending: Vec<u8>,
}

impl MqttDevice {
    /// Opens `/$iothub/websocket` with subprotocol `mqtt`; returns the socket and the
    /// subprotocol the hub answered with.
    pub fn open(hub: &Hub) -> (Self, Option<String>) {
        Self::try_open(hub).expect("websocket handshake")
    }

    /// [`MqttDevice::open`], or why the upgrade failed (`HTTP 503` when the hub sheds load).
    pub fn try_open(hub: &Hub) -> Result<(Self, Option<String>), String> {
        use tungstenite::client::IntoClientRequest;
        let url = format!("ws://127.0.0.1:{}/$iothub/websocket?iothub-no-client-cert=true", hub.port());
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("header"));
        let stream = std::net::TcpStream::connect(("127.0.0.1", hub.port())).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let (socket, response) = tungstenite::client(request, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => {
                format!("HTTP {}", r.status().as_u16())
            }
            other => other.to_string(),
        })?;
        let protocol =
            response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok((Self { socket, pending: Vec::new() }, protocol))
    }

    /// Opens a socket and sends CONNECT as device `id` with `token` (a device SAS); returns the
    /// CONNACK's code.
    pub fn connect_with_token(hub: &Hub, id: &str, token: &str) -> (Self, twinhub_core::mqtt::ConnectReturnCode) {
        Self::try_connect_with_token(hub, id, token).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`MqttDevice::connect_with_token`], or why no CONNACK came (the upgrade refused, the
    /// socket closed first).
    pub fn try_connect_with_token(
        hub: &Hub,
        id: &str,
        token: &str,
    ) -> Result<(Self, twinhub_core::mqtt::ConnectReturnCode), String> {
        use twinhub_core::mqtt::{ConnAck, Connect, Packet};
        let (mut device, protocol) = Self::try_open(hub)?;
        assert_eq!(protocol.as_deref(), Some("mqtt"), "subprotocol echoed");
        device.send(&Packet::Connect(Connect {
            client_id: id.into(),
            clean_session: false,
            keep_alive: 60,
            username: Some(format!("{}/{id}/?api-version=2021-04-12", hub.host())),
            password: Some(token.as_bytes().to_vec()),
            will: None,
        }));
        match device.recv() {
            Some(Packet::ConnAck(ConnAck { code, .. })) => Ok((device, code)),
            other => Err(format!("expected CONNACK, got {other:?}")),
        }
    }

    /// Connects as device `id` with a token signed by its primary key (read over REST).
    pub fn connect(hub: &Hub, id: &str) -> Self {
        let token = hub.device_token(id, &hub.device_key(id));
        let (device, code) = Self::connect_with_token(hub, id, &token);
        assert_eq!(code, twinhub_core::mqtt::ConnectReturnCode::Accepted, "{id} connects");
        device
    }

    /// Sends a reported-properties patch with QoS 0 and waits for the hub's answer on the twin
    /// response topic (subscribing to it first); returns that answer's status.
    pub fn report(&mut self, rid: u32, patch: &serde_json::Value) -> u16 {
        use twinhub_core::mqtt::{Packet, Publish, QoS, Subscribe};
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: std::num::NonZeroU16::MIN,
            filters: vec![("$iothub/twin/res/#".into(), QoS::AtMostOnce)],
        }));
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
            packet_id: None,
            payload: patch.to_string().into_bytes(),
        }));
        loop {
            let publish = self.recv_publish().expect("an answer to the reported patch");
            let prefix = "$iothub/twin/res/";
            if let Some(rest) = publish.topic.strip_prefix(prefix) {
                if rest.contains(&format!("$rid={rid}")) {
                    return rest.split('/').next().and_then(|s| s.parse().ok()).unwrap_or(0);
                }
            }
        }
    }

    /// Publishes a device-to-cloud message of `id` (the device's or module's key, as in its
    /// topic) with `properties` (`alert=high_temperature`, or empty) at QoS 1 and waits for
    /// its PUBACK: the hub stored it and put it in the event stream.
    pub fn send_event(&mut self, id: &str, properties: &str, body: &serde_json::Value, packet: u16) {
        use twinhub_core::mqtt::{Packet, Publish, QoS};
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: format!("devices/{id}/messages/events/{properties}"),
            packet_id: std::num::NonZeroU16::new(packet),
            payload: body.to_string().into_bytes(),
        }));
        loop {
            match self.recv() {
                Some(Packet::PubAck(got)) if got.get() == packet => return,
                Some(_) => continue,
                None => panic!("{id}: closed before the PUBACK"),
            }
        }
    }

    /// Sends one packet (in one binary frame).
    pub fn send(&mut self, packet: &twinhub_core::mqtt::Packet) {
        self.send_raw(&packet.to_bytes().expect("an encodable packet"));
    }

    /// Sends raw bytes (in one binary frame).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.socket.send(tungstenite::Message::Binary(bytes.to_vec().into())).expect("send");
    }

    /// The next packet, or `None` when the hub closed the connection. Panics if nothing
    /// arrives for 10 s, so "closed" is never mistaken for "silent".
    pub fn recv(&mut self) -> Option<twinhub_core::mqtt::Packet> {
        loop {
            if let Ok(Some((packet, used))) = twinhub_core::mqtt::decode(&self.pending, usize::MAX) {
                self.pending.drain(..used);
                return Some(packet);
            }
            match self.socket.read() {
                Ok(tungstenite::Message::Binary(b)) => self.pending.extend_from_slice(&b),
                Ok(tungstenite::Message::Close(_)) => return None,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    panic!("no packet and no close from the hub within 10 s")
                }
                Err(_) => return None,
            }
        }
    }

    /// The next PUBLISH, skipping other packets; `None` if the connection ends first.
    pub fn recv_publish(&mut self) -> Option<twinhub_core::mqtt::Publish> {
        loop {
            match self.recv()? {
                twinhub_core::mqtt::Packet::Publish(p) => return Some(p),
                _ => continue,
            }
        }
    }
}
