//! Shared helpers of the integration tests. Tests talk to the real services
//! started by `scripts/test.sh`; when a service is not configured they fail
//! loudly — they never pass by skipping.
#![allow(dead_code)]

pub mod mirror;

use std::path::PathBuf;
use std::process::Command;

use dhbus::deephaven::{ClientConfig, Credentials};

/// The environment variable `name`, or a panic that says how to run the tests.
pub fn require_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: integration tests need the real services; run them with `bash scripts/test.sh`")
    })
}

/// Client settings for the test Deephaven server.
pub fn dh_config() -> ClientConfig {
    ClientConfig {
        host: require_env("DEEPHAVEN_HOST"),
        port: require_env("DEEPHAVEN_PORT").parse().expect("DEEPHAVEN_PORT is a port"),
        credentials: Credentials::Psk(require_env("DEEPHAVEN_API_TOKEN")),
        pool_size: 2,
        ..ClientConfig::default()
    }
}

/// Kafka bootstrap servers of the test broker.
pub fn kafka_servers() -> String {
    require_env("KAFKA_BOOTSTRAP_SERVERS")
}

/// A table name unique to this test run and purpose.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}_{}", &id[id.len() - 12..])
}

/// The repository's scripts folder.
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// A Deephaven server of the test's own (for tests that restart or reconfigure one).
pub struct OwnDeephaven {
    /// State folder passed to scripts/deephaven.sh.
    pub dir: tempfile::TempDir,
    /// Its client settings.
    pub config: ClientConfig,
}

impl OwnDeephaven {
    /// Starts a server with extra JVM arguments; panics with the server log on failure.
    pub fn start(extra_jvm_args: &[&str]) -> OwnDeephaven {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("bash")
            .arg(scripts_dir().join("deephaven.sh"))
            .arg("start")
            .arg(dir.path())
            .args(extra_jvm_args)
            .status()
            .expect("run scripts/deephaven.sh");
        assert!(status.success(), "scripts/deephaven.sh start failed");
        let env = std::fs::read_to_string(dir.path().join("env")).expect("deephaven env file");
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {k}=")).map(str::to_string))
                .unwrap_or_else(|| panic!("{k} missing from env file"))
        };
        let config = ClientConfig {
            host: get("DEEPHAVEN_HOST"),
            port: get("DEEPHAVEN_PORT").parse().expect("port"),
            credentials: Credentials::Psk(get("DEEPHAVEN_API_TOKEN")),
            pool_size: 1,
            ..ClientConfig::default()
        };
        OwnDeephaven { dir, config }
    }
}

impl OwnDeephaven {
    /// Stops the server (its tables are lost: Deephaven keeps them in memory).
    pub fn stop(&self) {
        let _ = Command::new("bash").arg(scripts_dir().join("deephaven.sh")).arg("stop").arg(self.dir.path()).status();
    }

    /// Starts it again on the same port with the same key.
    pub fn start_again(&self, extra_jvm_args: &[&str]) {
        let status = Command::new("bash")
            .arg(scripts_dir().join("deephaven.sh"))
            .arg("start")
            .arg(self.dir.path())
            .args(extra_jvm_args)
            .status()
            .expect("run scripts/deephaven.sh");
        assert!(status.success(), "scripts/deephaven.sh start (again) failed");
    }

    /// Environment for a child process talking to this server.
    pub fn env(&self) -> Vec<(String, String)> {
        let Credentials::Psk(key) = &self.config.credentials else { unreachable!("own servers use PSK") };
        vec![
            ("DEEPHAVEN_HOST".into(), self.config.host.clone()),
            ("DEEPHAVEN_PORT".into(), self.config.port.to_string()),
            ("DEEPHAVEN_API_TOKEN".into(), key.clone()),
        ]
    }
}

/// A Kafka-compatible broker of the test's own (for outage tests).
pub struct OwnKafka {
    /// State folder passed to scripts/kafka.sh.
    pub dir: tempfile::TempDir,
    /// host:port.
    pub bootstrap: String,
}

impl OwnKafka {
    /// Starts a broker with sqlite storage (topics survive restarts).
    pub fn start() -> OwnKafka {
        let mut k = OwnKafka { dir: tempfile::tempdir().expect("temp dir"), bootstrap: String::new() };
        k.start_again();
        let env = std::fs::read_to_string(k.dir.path().join("env")).expect("kafka env");
        k.bootstrap = env.trim().trim_start_matches("export KAFKA_BOOTSTRAP_SERVERS=").to_string();
        k
    }
    /// Stops the broker.
    pub fn stop(&self) {
        let _ = Command::new("bash").arg(scripts_dir().join("kafka.sh")).arg("stop").arg(self.dir.path()).status();
    }
    /// Starts it again (same port, same data).
    pub fn start_again(&self) {
        let status = Command::new("bash").arg(scripts_dir().join("kafka.sh")).arg("start").arg(self.dir.path()).arg("sqlite").status().expect("kafka.sh");
        assert!(status.success(), "scripts/kafka.sh start failed");
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for OwnDeephaven {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(scripts_dir().join("deephaven.sh")).arg("stop").arg(self.dir.path()).status();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A `dhbus run` process of the test's own (so it can be killed with SIGKILL).
pub struct DhbusProcess {
    /// The child process.
    pub child: std::process::Child,
    /// gRPC address (http://...).
    pub addr: String,
    /// /metrics address (http://...).
    pub metrics: String,
    /// Environment it was started with (to restart it identically).
    pub env: Vec<(String, String)>,
    /// Log file.
    pub log: PathBuf,
}

impl DhbusProcess {
    /// Starts `dhbus run` against the test Deephaven with tables prefixed by
    /// `namespace` and extra environment; waits until the API answers.
    pub fn start(namespace: &str, extra: &[(&str, &str)]) -> DhbusProcess {
        let listen = free_port();
        let metrics = free_port();
        let mut env: Vec<(String, String)> = vec![
            ("DHBUS_NAMESPACE".into(), namespace.into()),
            ("DHBUS_LISTEN".into(), format!("127.0.0.1:{listen}")),
            ("DHBUS_METRICS_LISTEN".into(), format!("127.0.0.1:{metrics}")),
            ("RUST_LOG".into(), "info".into()),
        ];
        for (k, v) in extra {
            env.push((k.to_string(), v.to_string()));
        }
        Self::spawn(env)
    }

    fn spawn(env: Vec<(String, String)>) -> DhbusProcess {
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).expect("env var");
        let log = std::env::temp_dir().join(format!("dhbus-run-{}.log", uuid::Uuid::now_v7()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dhbus"));
        cmd.arg("run").stdout(file.try_clone().expect("log")).stderr(file);
        // Only the mirror settings the test asks for: the ambient ones would turn the mirror on.
        cmd.env_remove("DEEPHAVEN_KAFKA_MIRROR_TOPIC").env_remove("DHBUS_COMPONENTS");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn dhbus run");
        let addr = format!("http://{}", get("DHBUS_LISTEN"));
        let metrics = format!("http://{}", get("DHBUS_METRICS_LISTEN"));
        let p = DhbusProcess { child, addr, metrics, env, log };
        p.wait_ready();
        p
    }

    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        // Without the bus component there is no gRPC API: wait for /metrics instead.
        let bus = self.env.iter().find(|(k, _)| k == "DHBUS_COMPONENTS").is_none_or(|(_, v)| v.split(',').any(|c| c.trim() == "bus"));
        let target = if bus { &self.addr } else { &self.metrics }.trim_start_matches("http://").to_string();
        loop {
            if std::net::TcpStream::connect(&target).is_ok() {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "dhbus run did not listen within 60 s; log:\n{}", self.log_text());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The process log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new process with the same settings (after `kill9`).
    pub fn restart(&mut self) {
        // Dropping the old value kills and reaps its (already dead) child.
        *self = Self::spawn(self.env.clone());
    }
}

impl Drop for DhbusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Deephaven environment for a child process.
pub fn dh_env() -> Vec<(&'static str, String)> {
    ["DEEPHAVEN_HOST", "DEEPHAVEN_PORT", "DEEPHAVEN_API_TOKEN"].into_iter().map(|k| (k, require_env(k))).collect()
}
