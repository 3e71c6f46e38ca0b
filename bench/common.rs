//! Shared helpers of the benchmarks: the machine they ran on, percentiles,
//! and the services' settings (started by scripts/bench.sh).
#![allow(dead_code)]

use std::time::Duration;

use dhbus::deephaven::{ClientConfig, Credentials};

/// Prints the machine the figures come from.
pub fn print_machine(bench: &str) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown cpu".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0) / 1024 / 1024))
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("== {bench} ==");
    println!("machine: {cores} cores, {mem} GiB, {cpu}; Deephaven and the broker on the same machine");
}

/// The p-th percentile (0..=100) of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let idx = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[idx.min(samples.len() - 1)]
}

/// An environment variable the bench needs (set by scripts/bench.sh).
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run benchmarks with `bash scripts/bench.sh`"))
}

/// Client settings of the bench Deephaven.
pub fn dh_config() -> ClientConfig {
    ClientConfig {
        host: env("DEEPHAVEN_HOST"),
        port: env("DEEPHAVEN_PORT").parse().expect("port"),
        credentials: Credentials::Psk(env("DEEPHAVEN_API_TOKEN")),
        pool_size: 4,
        ..ClientConfig::default()
    }
}

/// A unique name for this run.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}_{}", &id[id.len() - 10..])
}

/// Progress line on stderr.
pub fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}
