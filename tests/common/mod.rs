//! Shared helpers of the integration tests. Tests talk to the real services
//! started by `scripts/test.sh`; when a service is not configured they fail
//! loudly — they never pass by skipping.
#![allow(dead_code)]

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

impl Drop for OwnDeephaven {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(scripts_dir().join("deephaven.sh")).arg("stop").arg(self.dir.path()).status();
    }
}
