//! Static checks of the packaging: `docker-compose.yml`, `Dockerfile`,
//! `.dockerignore`, `deploy/prometheus.yml` and `runbooks/`. No Docker engine
//! and no network: the files are parsed and checked against each other and
//! against the sources they describe (the defaults in `src/settings.rs`, the
//! configuration table of README.md, the commands of `src/main.rs`, the metric
//! names the code records, the JVM properties of `scripts/deephaven.sh`).
//!
//! Compose values are read as `docker compose` would read them with no `.env`
//! file: `${VAR:-default}` gives the default, `$$` is a literal `$`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value;

// ---- the facts the stack must agree with -------------------------------------

const CORE_SERVICES: [&str; 4] = ["deephaven", "kafka", "dhbus-bootstrap", "dhbus"];
const MONITORING_PROFILE: &str = "monitoring";
/// The integration guide's ten variables (the contract); all are set on `dhbus`.
const GUIDE_VARIABLES: [&str; 10] = [
    "DEEPHAVEN_HOST",
    "DEEPHAVEN_PORT",
    "DEEPHAVEN_USE_TLS",
    "DEEPHAVEN_API_TOKEN",
    "DEEPHAVEN_SESSION_POOL_SIZE",
    "DEEPHAVEN_AGENT_MESSAGES_TABLE",
    "DEEPHAVEN_AGENT_EVENTS_TABLE",
    "DEEPHAVEN_AGENT_METRICS_TABLE",
    "DEEPHAVEN_KAFKA_MIRROR_TOPIC",
    "DEEPHAVEN_HEARTBEAT_S",
];
const RUNBOOKS: [&str; 7] = [
    "deploy-and-upgrade.md",
    "stale-leases.md",
    "auth-token-rotation.md",
    "schema-drift.md",
    "mirror-lag-and-kafka-outage.md",
    "disaster-recovery-replay.md",
    "scaling.md",
];
const PSK_HANDLER: &str = "io.deephaven.authentication.psk.PskAuthenticationHandler";

// ---- docker-compose.yml ------------------------------------------------------

#[test]
fn compose_is_valid_yaml_with_the_required_services() {
    let c = compose();
    let services = services(&c);
    for name in CORE_SERVICES {
        let s = services.get(name).unwrap_or_else(|| panic!("docker-compose.yml: service `{name}` is missing"));
        assert!(
            s.get("profiles").is_none(),
            "docker-compose.yml: core service `{name}` must not be behind a profile (plain `docker compose up` would skip it)"
        );
    }
    let prom = services.get("prometheus").expect("docker-compose.yml: service `prometheus` is missing");
    let profiles = strings(prom.get("profiles").unwrap_or(&Value::Null));
    assert!(
        profiles.iter().any(|p| p == MONITORING_PROFILE),
        "docker-compose.yml: `prometheus` must be under the `{MONITORING_PROFILE}` profile, has {profiles:?}"
    );
    for (name, s) in &services {
        assert!(s.get("image").is_some() || s.get("build").is_some(), "service `{name}` has neither image nor build");
    }
    // Named volumes a service mounts must be declared at the top level (compose refuses otherwise).
    let declared: BTreeSet<String> = c.get("volumes").and_then(Value::as_mapping).map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_string)).collect()).unwrap_or_default();
    for (name, s) in &services {
        for (source, _) in volume_mounts(s) {
            let named = !(source.starts_with('.') || source.starts_with('/') || source.starts_with('~') || source.is_empty());
            assert!(!named || declared.contains(&source), "service `{name}` mounts volume `{source}`, which is not declared under top-level `volumes:`");
        }
    }
    // The same image for the one-shot and the server: both built from this repository's Dockerfile.
    for name in ["dhbus-bootstrap", "dhbus"] {
        let build = services[name].get("build").unwrap_or_else(|| panic!("`{name}` must be built from the Dockerfile"));
        let dockerfile = build.get("dockerfile").and_then(Value::as_str).unwrap_or("Dockerfile");
        let context = build.as_str().or_else(|| build.get("context").and_then(Value::as_str)).unwrap_or(".");
        assert_eq!((context, dockerfile), (".", "Dockerfile"), "`{name}` must build ./Dockerfile");
    }
    assert_eq!(
        interpolate(services["dhbus"].get("image").and_then(Value::as_str).unwrap_or("")),
        interpolate(services["dhbus-bootstrap"].get("image").and_then(Value::as_str).unwrap_or("")),
        "dhbus and dhbus-bootstrap must run the same image"
    );
    assert_eq!(command(&services["dhbus"]), vec!["run".to_string()], "the dhbus service must run `dhbus run`");
}

#[test]
fn every_service_has_a_healthcheck() {
    let c = compose();
    let services = services(&c);
    let one_shots = one_shot_services(&services);
    assert!(one_shots.contains("dhbus-bootstrap"), "dhbus must wait for dhbus-bootstrap with condition service_completed_successfully");
    for (name, s) in &services {
        let hc = s.get("healthcheck").unwrap_or_else(|| panic!("service `{name}` has no healthcheck"));
        let disabled = hc.get("disable").and_then(Value::as_bool).unwrap_or(false);
        if one_shots.contains(name.as_str()) {
            // A one-shot's health is its exit code; the image's HEALTHCHECK (for `run`) must be off explicitly.
            assert!(disabled, "one-shot service `{name}` must set `healthcheck: {{disable: true}}` (its exit code is its health)");
            let restart = s.get("restart").and_then(Value::as_str).unwrap_or("no");
            assert_eq!(restart, "no", "one-shot service `{name}` must not be restarted");
            continue;
        }
        assert!(!disabled, "long-running service `{name}` disables its healthcheck");
        let test = strings(hc.get("test").unwrap_or(&Value::Null));
        assert!(
            !test.is_empty() && test[0] != "NONE" && test.len() >= 2,
            "service `{name}`: healthcheck.test must be a command, got {test:?}"
        );
        assert!(matches!(test[0].as_str(), "CMD" | "CMD-SHELL"), "service `{name}`: healthcheck.test must start with CMD or CMD-SHELL, got {test:?}");
        for key in ["interval", "timeout", "retries"] {
            assert!(hc.get(key).is_some(), "service `{name}`: healthcheck.{key} is not set");
        }
    }
}

#[test]
fn services_start_in_dependency_order() {
    let c = compose();
    let services = services(&c);
    let deps = |name: &str| depends_on(&services[name]);
    for (name, s) in &services {
        for (dep, condition) in depends_on(s) {
            let target = services.get(&dep).unwrap_or_else(|| panic!("`{name}` depends on unknown service `{dep}`"));
            if condition == "service_healthy" {
                let hc = target.get("healthcheck").unwrap_or(&Value::Null);
                assert!(
                    hc.get("test").is_some() && !hc.get("disable").and_then(Value::as_bool).unwrap_or(false),
                    "`{name}` waits for `{dep}` to be healthy, but `{dep}` has no healthcheck"
                );
            }
        }
    }
    let boot = deps("dhbus-bootstrap");
    assert_eq!(boot.get("deephaven").map(String::as_str), Some("service_healthy"), "dhbus-bootstrap must wait for a healthy deephaven: {boot:?}");
    let run = deps("dhbus");
    assert_eq!(run.get("dhbus-bootstrap").map(String::as_str), Some("service_completed_successfully"), "dhbus must wait for dhbus-bootstrap to complete: {run:?}");
    assert_eq!(run.get("kafka").map(String::as_str), Some("service_healthy"), "dhbus must wait for a healthy kafka: {run:?}");
    assert_eq!(run.get("deephaven").map(String::as_str), Some("service_healthy"), "dhbus must wait for a healthy deephaven: {run:?}");
}

#[test]
fn ports_agree_with_the_defaults() {
    let c = compose();
    let services = services(&c);
    let bus_port = port_of(&default_of("DHBUS_LISTEN"));
    let metrics_port = port_of(&default_of("DHBUS_METRICS_LISTEN"));
    let dh_port: u16 = default_of("DEEPHAVEN_PORT").parse().expect("DEEPHAVEN_PORT default is a port");
    assert_eq!(port_of(&default_of("DHBUS_ADDR")), bus_port, "the clients' default DHBUS_ADDR must reach the default DHBUS_LISTEN");

    let dhbus = &services["dhbus"];
    let env = environment(dhbus);
    assert_eq!(env.get("DHBUS_LISTEN").map(String::as_str), Some(format!("0.0.0.0:{bus_port}").as_str()), "in a container the bus must listen on 0.0.0.0:{bus_port}");
    assert_eq!(env.get("DHBUS_METRICS_LISTEN").map(String::as_str), Some(format!("0.0.0.0:{metrics_port}").as_str()), "in a container /metrics must listen on 0.0.0.0:{metrics_port}");
    let published = container_ports(dhbus);
    for p in [bus_port, metrics_port] {
        assert!(published.contains(&p), "dhbus must publish container port {p}; publishes {published:?}");
    }
    let hc = strings(&dhbus["healthcheck"]["test"]).join(" ");
    assert!(hc.contains(&format!(":{metrics_port}/readyz")) || hc.contains(&format!(":{metrics_port}/healthz")), "dhbus healthcheck must probe /readyz or /healthz on port {metrics_port}: {hc}");

    let dh = &services["deephaven"];
    assert!(container_ports(dh).contains(&dh_port), "deephaven must publish container port {dh_port}");
    assert!(strings(&dh["healthcheck"]["test"]).join(" ").contains(&format!(":{dh_port}")), "deephaven healthcheck must probe port {dh_port}");
    for name in ["dhbus", "dhbus-bootstrap"] {
        let env = environment(&services[name]);
        assert_eq!(env.get("DEEPHAVEN_HOST").map(String::as_str), Some("deephaven"), "`{name}`: DEEPHAVEN_HOST must be the deephaven service");
        assert_eq!(env.get("DEEPHAVEN_PORT").map(String::as_str), Some(dh_port.to_string().as_str()), "`{name}`: DEEPHAVEN_PORT must be {dh_port}");
        // Kafka: a listener of the kafka service, advertised under the service's name.
        let servers = env.get("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|| panic!("`{name}`: KAFKA_BOOTSTRAP_SERVERS is not set"));
        let kafka_env = environment(&services["kafka"]);
        for server in servers.split(',') {
            let (host, port) = server.rsplit_once(':').unwrap_or_else(|| panic!("KAFKA_BOOTSTRAP_SERVERS entry `{server}` is not host:port"));
            assert!(services.contains_key(host), "KAFKA_BOOTSTRAP_SERVERS host `{host}` is not a service");
            let listeners = listener_ports(kafka_env.get("KAFKA_LISTENERS").map(String::as_str).unwrap_or(""));
            let listener = listeners.iter().find(|(_, p)| p == port).unwrap_or_else(|| panic!("kafka has no listener on port {port}: {listeners:?}"));
            let advertised = kafka_env.get("KAFKA_ADVERTISED_LISTENERS").cloned().unwrap_or_default();
            assert!(advertised.contains(&format!("{}://{host}:{port}", listener.0)), "kafka must advertise {}://{host}:{port} to the containers, advertises {advertised}", listener.0);
        }
    }
    // The one-shot's "is dhbus running?" probe must hit the metrics port of the dhbus service.
    let script = command(&services["dhbus-bootstrap"]).join("\n");
    assert!(script.contains(&format!("http://dhbus:{metrics_port}/healthz")), "dhbus-bootstrap must probe http://dhbus:{metrics_port}/healthz before creating tables");

    // The image and Prometheus agree too.
    let docker = dockerfile();
    let expose: BTreeSet<u16> = docker.iter().filter(|(i, _)| i == "EXPOSE").flat_map(|(_, a)| a.split_whitespace().filter_map(|p| p.split('/').next()?.parse().ok()).collect::<Vec<u16>>()).collect();
    for p in [bus_port, metrics_port] {
        assert!(expose.contains(&p), "Dockerfile must EXPOSE {p}, exposes {expose:?}");
    }
    let env_lines: String = docker.iter().filter(|(i, _)| i == "ENV").map(|(_, a)| a.as_str()).collect::<Vec<_>>().join(" ");
    assert!(env_lines.contains(&format!("DHBUS_LISTEN=0.0.0.0:{bus_port}")), "the image must default DHBUS_LISTEN to 0.0.0.0:{bus_port}");
    assert!(env_lines.contains(&format!("DHBUS_METRICS_LISTEN=0.0.0.0:{metrics_port}")), "the image must default DHBUS_METRICS_LISTEN to 0.0.0.0:{metrics_port}");
    let targets = prometheus_targets("dhbus");
    assert!(targets.contains(&format!("dhbus:{metrics_port}")), "deploy/prometheus.yml must scrape dhbus:{metrics_port}, scrapes {targets:?}");
}

#[test]
fn dhbus_variables_are_documented_and_read_by_dhbus() {
    let c = compose();
    let services = services(&c);
    let documented = readme_variables();
    let source = all_source();
    let passthrough_prefix = "DHBUS_KAFKA_";
    assert!(source.contains(&format!("\"{passthrough_prefix}\"")), "src no longer declares the {passthrough_prefix} pass-through prefix");
    let mut missing_in_readme = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for name in ["dhbus", "dhbus-bootstrap"] {
        for var in environment(&services[name]).keys() {
            if !["DEEPHAVEN_", "DHBUS_", "KAFKA_"].iter().any(|p| var.starts_with(p)) {
                continue;
            }
            if !documented.contains(var.as_str()) && !(var.starts_with(passthrough_prefix) && documented.iter().any(|d| d.starts_with(passthrough_prefix))) {
                missing_in_readme.insert(var.clone());
            }
            if !var.starts_with(passthrough_prefix) && !source.contains(&format!("\"{var}\"")) {
                unknown.insert(var.clone());
            }
        }
    }
    assert!(unknown.is_empty(), "docker-compose.yml sets variables that dhbus never reads (typos?): {unknown:?}");
    assert!(
        missing_in_readme.is_empty(),
        "docker-compose.yml sets variables missing from README.md's configuration table: {missing_in_readme:?}"
    );
    let env = environment(&services["dhbus"]);
    let missing: Vec<_> = GUIDE_VARIABLES.iter().filter(|v| !env.contains_key(**v)).collect();
    assert!(missing.is_empty(), "the dhbus service must set every variable of the integration guide; missing {missing:?}");
    let components: BTreeSet<&str> = env.get("DHBUS_COMPONENTS").map(|v| v.split(',').map(str::trim).collect()).unwrap_or_default();
    assert_eq!(components, BTreeSet::from(["bus", "mirror", "metrics"]), "the stack runs every component by default");
}

#[test]
fn secrets_default_to_obvious_placeholders_shared_by_the_services() {
    let raw = read("docker-compose.yml");
    let c = compose();
    let services = services(&c);
    for var in ["DEEPHAVEN_API_TOKEN", "DHBUS_API_TOKEN"] {
        let defaults = defaults_in(&raw, var);
        assert!(!defaults.is_empty(), "docker-compose.yml must give {var} a `${{{var}:-...}}` placeholder default");
        for default in defaults {
            assert!(
                default.contains("CHANGE_ME") && default.contains("placeholder"),
                "the default of {var} in docker-compose.yml must be an obvious placeholder (CHANGE_ME...placeholder), is `{default}`"
            );
        }
    }
    // Deephaven's PSK and the token dhbus presents come from the same variable.
    let opts = environment(&services["deephaven"]).get("START_OPTS").cloned().unwrap_or_default();
    let psk = opts.split_whitespace().find_map(|o| o.strip_prefix("-Dauthentication.psk=")).expect("START_OPTS sets -Dauthentication.psk");
    for name in ["dhbus", "dhbus-bootstrap"] {
        assert_eq!(environment(&services[name]).get("DEEPHAVEN_API_TOKEN").map(String::as_str), Some(psk), "`{name}` must present Deephaven's PSK");
    }
    let raw_opts = raw_environment(&services["deephaven"], "START_OPTS");
    assert!(raw_opts.contains("-Dauthentication.psk=${DEEPHAVEN_API_TOKEN"), "the PSK must come from ${{DEEPHAVEN_API_TOKEN}}: {raw_opts}");
    assert_eq!(environment(&services["dhbus"]).get("DEEPHAVEN_AUTH_TYPE").map(String::as_str), Some("psk"));
}

#[test]
fn deephaven_runs_with_the_jvm_properties_dhbus_needs() {
    let c = compose();
    let services = services(&c);
    let dh = &services["deephaven"];
    let image = interpolate(dh.get("image").and_then(Value::as_str).unwrap_or(""));
    assert!(image.starts_with("ghcr.io/deephaven/server:"), "deephaven must run Deephaven's server image, runs `{image}`");
    let opts = environment(dh).get("START_OPTS").cloned().unwrap_or_default();
    let props: BTreeMap<&str, &str> = opts.split_whitespace().filter_map(|o| o.strip_prefix("-D")?.split_once('=')).collect();
    let interval: u64 = props.get("barrage.minUpdateInterval").unwrap_or_else(|| panic!("START_OPTS lacks -Dbarrage.minUpdateInterval: {opts}")).parse().expect("barrage.minUpdateInterval is a number");
    assert!(interval <= 100, "barrage.minUpdateInterval={interval}: dhbus needs fast Barrage updates (the default is 1000 ms)");
    assert_eq!(props.get("AuthHandlers").copied(), Some(PSK_HANDLER), "START_OPTS must enable the PSK handler: {opts}");
    assert!(props.contains_key("authentication.psk"), "START_OPTS must set the PSK");
    // Every property the local stack starts Deephaven with (scripts/deephaven.sh) is set here too.
    let script = read("scripts/deephaven.sh");
    let code = script.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
    let script_props: Vec<&str> = code.split_whitespace().filter_map(|w| w.trim_matches(|c| c == '"' || c == '\\').strip_prefix("-D")).filter_map(|p| p.split('=').next()).collect();
    assert!(script_props.contains(&"barrage.minUpdateInterval"), "scripts/deephaven.sh no longer sets -Dbarrage.minUpdateInterval (parsed {script_props:?})");
    for prop in script_props {
        if prop == "deephaven.dataDir" {
            continue; // the image sets its own data directory (/data)
        }
        assert!(props.contains_key(prop), "scripts/deephaven.sh starts Deephaven with -D{prop}, docker-compose.yml does not");
    }
    let mounts = volume_mounts(dh);
    assert!(mounts.iter().any(|(_, target)| target == "/data"), "deephaven needs a data volume at /data: {mounts:?}");
}

#[test]
fn kafka_is_a_single_kraft_node() {
    let c = compose();
    let services = services(&c);
    let kafka = &services["kafka"];
    let image = interpolate(kafka.get("image").and_then(Value::as_str).unwrap_or(""));
    assert!(image.starts_with("apache/kafka:"), "kafka must run the apache/kafka image, runs `{image}`");
    // No ZooKeeper anywhere: no service, no setting.
    for (name, s) in &services {
        let text = serde_yaml::to_string(s).expect("serialize").to_ascii_lowercase();
        assert!(!name.contains("zookeeper") && !text.contains("zookeeper"), "service `{name}` mentions ZooKeeper; the stack runs Kafka in KRaft mode");
    }
    let env = environment(kafka);
    let get = |k: &str| env.get(k).cloned().unwrap_or_else(|| panic!("kafka: {k} is not set"));
    let roles: BTreeSet<String> = get("KAFKA_PROCESS_ROLES").split(',').map(|r| r.trim().to_string()).collect();
    assert_eq!(roles, BTreeSet::from(["broker".to_string(), "controller".to_string()]), "KRaft single node: KAFKA_PROCESS_ROLES=broker,controller");
    let node = get("KAFKA_NODE_ID");
    let controller = get("KAFKA_CONTROLLER_LISTENER_NAMES");
    let listeners = listener_ports(&get("KAFKA_LISTENERS"));
    let controller_port = listeners.iter().find(|(n, _)| *n == controller).map(|(_, p)| p.clone()).unwrap_or_else(|| panic!("no {controller} listener in KAFKA_LISTENERS: {listeners:?}"));
    assert_eq!(get("KAFKA_CONTROLLER_QUORUM_VOTERS"), format!("{node}@kafka:{controller_port}"), "the quorum is this node on its controller listener");
    let protocols = get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP");
    for (name, _) in &listeners {
        assert!(protocols.split(',').any(|p| p.starts_with(&format!("{name}:"))), "listener {name} has no security protocol in {protocols}");
    }
    for key in ["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_DEFAULT_REPLICATION_FACTOR"] {
        assert_eq!(get(key), "1", "{key} must be 1 on a single node");
    }
    for (k, v) in &env {
        if k.ends_with("REPLICATION_FACTOR") || k.ends_with("MIN_ISR") || k.ends_with("MIN_INSYNC_REPLICAS") {
            assert_eq!(v, "1", "{k} must be 1 on a single node");
        }
    }
    assert_eq!(get("KAFKA_AUTO_CREATE_TOPICS_ENABLE"), "false", "the mirror creates its topics (compacted); auto-creation would give the wrong cleanup policy");
    let log_dirs = get("KAFKA_LOG_DIRS");
    assert!(volume_mounts(kafka).iter().any(|(_, t)| *t == log_dirs), "KAFKA_LOG_DIRS={log_dirs} must be a mounted volume");
}

#[test]
fn bootstrap_restores_before_it_creates_empty_tables() {
    let c = compose();
    let services = services(&c);
    let script = command(&services["dhbus-bootstrap"]).join("\n");
    let pos = |needle: &str| script.find(needle).unwrap_or_else(|| panic!("dhbus-bootstrap script lacks `{needle}`:\n{script}"));
    // Check first; restore from Kafka before ever creating empty tables; refuse while dhbus runs.
    let check = pos("dhbus bootstrap --check");
    let running = pos("http://dhbus:");
    let replay = pos("dhbus replay --from earliest");
    let create = pos("exec dhbus bootstrap\n");
    assert!(check < running && running < replay && replay < create, "dhbus-bootstrap must check, refuse while dhbus runs, restore, and only then create tables:\n{script}");
    assert!(!script.contains("$$"), "compose `$$` escapes must have become `$` after interpolation:\n{script}");
    assert!(script.contains("UNKNOWN_TOPIC"), "empty tables are created only when the mirror topics do not exist (UNKNOWN_TOPIC)");
    let entry = strings(services["dhbus-bootstrap"].get("entrypoint").unwrap_or(&Value::Null));
    assert_eq!(entry, vec!["/bin/sh".to_string(), "-c".to_string()], "dhbus-bootstrap runs its script with /bin/sh -c");
    // The script as the container's shell gets it must parse.
    let syntax = std::process::Command::new("sh").arg("-n").arg("-c").arg(&script).output().expect("sh runs");
    assert!(syntax.status.success(), "dhbus-bootstrap's script is not valid sh: {}\n{script}", String::from_utf8_lossy(&syntax.stderr));
}

#[test]
fn shell_variables_in_compose_are_escaped() {
    // Compose replaces `$name` with the (usually unset) host variable: shell
    // variables must be written `$$name`, compose variables `${NAME...}`.
    let raw = read("docker-compose.yml");
    for (n, line) in raw.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'$' {
                match b.get(i + 1) {
                    Some(b'$') => i += 2,
                    Some(b'{') => i += 2,
                    Some(c) if c.is_ascii_alphabetic() || *c == b'_' => panic!("docker-compose.yml:{}: `${}` is interpolated by compose (write `$$` for the shell, `${{...}}` for compose): {line}", n + 1, &line[i + 1..]),
                    _ => i += 1,
                }
            } else {
                i += 1;
            }
        }
    }
}

// ---- Dockerfile and .dockerignore ---------------------------------------------

#[test]
fn dockerfile_is_multi_stage_and_builds_the_dhbus_binary() {
    let d = dockerfile();
    let froms: Vec<&String> = d.iter().filter(|(i, _)| i == "FROM").map(|(_, a)| a).collect();
    assert!(froms.len() >= 2, "the Dockerfile must be multi-stage, has {} FROM", froms.len());
    let args = dockerfile_global_args(&d);
    let resolve = |s: &str| resolve_args(s, &args);
    let first = resolve(froms[0]);
    let (builder_image, builder_name) = first.split_once(" AS ").or_else(|| first.split_once(" as ")).unwrap_or_else(|| panic!("the first stage must be named: FROM {first}"));
    assert!(builder_image.starts_with("rust:") && builder_image.ends_with("-bookworm"), "builder stage must be rust:<version>-bookworm, is {builder_image}");
    let last = resolve(froms[froms.len() - 1]);
    assert!(last.starts_with("debian:bookworm-slim"), "runtime stage must be debian:bookworm-slim, is {last}");

    let bin = binary_name();
    assert_eq!(bin, "dhbus", "Cargo.toml's binary is `dhbus`");
    let runs: Vec<&String> = d.iter().filter(|(i, _)| i == "RUN").map(|(_, a)| a).collect();
    assert!(
        runs.iter().any(|r| r.contains("cargo build") && r.contains("--release") && r.contains(&format!("--bin {bin}"))),
        "a RUN must `cargo build --release --bin {bin}`"
    );
    let builder_deps = runs.iter().find(|r| r.contains("apt-get install")).expect("the builder installs build dependencies");
    for pkg in ["build-essential", "pkg-config", "libssl-dev", "zlib1g-dev"] {
        assert!(builder_deps.contains(pkg), "the builder needs {pkg} to compile librdkafka");
    }
    // Runtime stage: everything after the last FROM.
    let last_from = d.iter().rposition(|(i, _)| i == "FROM").expect("FROM");
    let runtime = &d[last_from..];
    let copy = runtime.iter().find(|(i, a)| i == "COPY" && a.contains(&format!("--from={}", builder_name.trim()))).unwrap_or_else(|| panic!("the runtime stage must COPY --from={builder_name}"));
    assert!(copy.1.split_whitespace().any(|w| w.ends_with(&format!("/{bin}"))), "the runtime copies the `{bin}` binary: COPY {}", copy.1);
    let runtime_apt = runtime.iter().filter(|(i, _)| i == "RUN").map(|(_, a)| a.as_str()).collect::<Vec<_>>().join(" ");
    for pkg in ["ca-certificates", "libssl3"] {
        assert!(runtime_apt.contains(pkg), "the runtime stage must install {pkg}");
    }
    let user = runtime.iter().rev().find(|(i, _)| i == "USER").map(|(_, a)| a.trim().to_string()).expect("the runtime stage must switch to a non-root USER");
    let user_name = user.split(':').next().unwrap_or("");
    assert!(!matches!(user_name, "root" | "0" | ""), "the image must not run as root: USER {user}");
    let last_of = |instr: &str| runtime.iter().rev().find(|(i, _)| i == instr).map(|(_, a)| a.trim().to_string()).unwrap_or_else(|| panic!("the runtime stage has no {instr}"));
    assert_eq!(exec_form(&last_of("ENTRYPOINT")), vec!["dhbus".to_string()], "ENTRYPOINT must be [\"dhbus\"]");
    assert_eq!(exec_form(&last_of("CMD")), vec!["run".to_string()], "CMD must be [\"run\"]");
    let health = last_of("HEALTHCHECK");
    assert!(health.contains("/healthz"), "the image HEALTHCHECK must probe /healthz: {health}");
    assert!(health.contains("DHBUS_METRICS_LISTEN"), "the image HEALTHCHECK must follow DHBUS_METRICS_LISTEN: {health}");
    if health.contains("curl") {
        assert!(runtime_apt.contains("curl"), "the HEALTHCHECK uses curl: the runtime stage must install it");
    }
}

#[test]
fn dockerignore_keeps_build_inputs_and_drops_build_output() {
    let patterns: Vec<String> = read(".dockerignore").lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect();
    assert!(ignored(&patterns, "target/debug/dhbus"), ".dockerignore must exclude target/ (many GB)");
    assert!(ignored(&patterns, ".git/HEAD"), ".dockerignore must exclude .git/");
    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string(), "build.rs".to_string(), "src/main.rs".to_string(), "src/lib.rs".to_string()];
    needed.extend(["proto", "schemas"].iter().map(|d| format!("{d}/x")));
    // Every target path Cargo.toml declares must be in the context, or cargo refuses the manifest.
    needed.extend(read("Cargo.toml").lines().filter_map(|l| l.trim().strip_prefix("path = \"")?.strip_suffix('"').map(str::to_string)));
    for p in &needed {
        assert!(!ignored(&patterns, p), ".dockerignore excludes `{p}`, which the build needs");
        if !p.ends_with("/x") {
            assert!(root().join(p).exists(), "{p} is declared in Cargo.toml but missing: the image build would fail");
        }
    }
    // include_str!/include_bytes! targets (schemas) are covered above; proto files are read by build.rs.
}

// ---- Prometheus ----------------------------------------------------------------

#[test]
fn prometheus_config_is_mounted_and_scrapes_dhbus() {
    let c = compose();
    let services = services(&c);
    let mounts = volume_mounts(&services["prometheus"]);
    assert!(
        mounts.iter().any(|(s, t)| s.trim_start_matches("./") == "deploy/prometheus.yml" && t == "/etc/prometheus/prometheus.yml"),
        "prometheus must mount ./deploy/prometheus.yml at /etc/prometheus/prometheus.yml: {mounts:?}"
    );
    let cfg: Value = serde_yaml::from_str(&read("deploy/prometheus.yml")).unwrap_or_else(|e| panic!("deploy/prometheus.yml is not valid YAML: {e}"));
    let jobs = cfg["scrape_configs"].as_sequence().expect("deploy/prometheus.yml has scrape_configs");
    let job = jobs.iter().find(|j| j["job_name"].as_str() == Some("dhbus")).expect("a scrape job named `dhbus` (the alert rules select job=\"dhbus\")");
    assert_eq!(job.get("metrics_path").and_then(Value::as_str).unwrap_or("/metrics"), "/metrics");
    assert!(!prometheus_targets("dhbus").is_empty(), "the dhbus job has targets");
}

// ---- runbooks ------------------------------------------------------------------

#[test]
fn runbooks_start_with_signals_naming_dhbus_metrics() {
    let metrics = recorded_metrics();
    assert!(metrics.len() >= 10, "found only {} dhbus_ metric names in src/", metrics.len());
    let present: BTreeSet<String> = std::fs::read_dir(root().join("runbooks")).expect("runbooks/ exists").filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.ends_with(".md") && n != "README.md").collect();
    let expected: BTreeSet<String> = RUNBOOKS.iter().map(|s| s.to_string()).collect();
    assert_eq!(present, expected, "runbooks/ must hold exactly the expected runbooks (update RUNBOOKS and runbooks/README.md together)");
    for name in RUNBOOKS {
        let text = read(&format!("runbooks/{name}"));
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let title = lines.next().unwrap_or("");
        assert!(title.starts_with("# "), "runbooks/{name} must start with a `# ` title, starts with `{title}`");
        let first_section = lines.next().unwrap_or("");
        assert_eq!(first_section.trim(), "## Signals", "runbooks/{name}: the first section must be `## Signals`");
        let signals = section(&text, "## Signals");
        let named: BTreeSet<String> = backticked(&signals).into_iter().flat_map(|b| metric_tokens(&b)).collect();
        assert!(!named.is_empty(), "runbooks/{name}: the Signals section must name at least one `dhbus_...` metric in backticks");
        let unknown: Vec<String> = metric_tokens(&text).into_iter().filter(|m| !metrics.contains(base_metric(m))).collect();
        assert!(unknown.is_empty(), "runbooks/{name} names metrics that dhbus does not record: {unknown:?} (recorded: {metrics:?})");
        assert!(text.lines().any(|l| l.trim_start_matches('#').trim() == "Verify" && l.starts_with("##")), "runbooks/{name} must have a `Verify` section");
        assert!(text.contains("```bash"), "runbooks/{name} must give its steps as commands (a ```bash block)");
        check_links(name, &text);
    }
}

#[test]
fn runbook_commands_use_real_subcommands_and_flags() {
    let (subcommands, flags) = cli_surface();
    for name in RUNBOOKS.iter().copied().chain(["README.md"]) {
        let text = read(&format!("runbooks/{name}"));
        for line in shell_lines(&text) {
            let words: Vec<&str> = line.split_whitespace().collect();
            for (i, w) in words.iter().enumerate() {
                if *w != "dhbus" {
                    continue;
                }
                let Some(next) = words.get(i + 1) else { continue };
                if *next == "dhbus" || !next.chars().next().is_some_and(|c| c.is_ascii_lowercase()) || !next.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                    continue; // `exec dhbus dhbus ...`, `stop dhbus`, `dhbus | grep`
                }
                assert!(subcommands.contains(*next), "runbooks/{name}: `dhbus {next}` is not a dhbus command ({subcommands:?}) in: {line}");
                for raw in &words[i + 2..] {
                    if matches!(*raw, "|" | "||" | "&&" | ";" | "2>&1") || raw.starts_with('>') || raw.starts_with('#') || raw.starts_with("2>") {
                        break;
                    }
                    let arg = raw.trim_end_matches(';');
                    if let Some(flag) = arg.strip_prefix("--") {
                        let flag = flag.split('=').next().unwrap_or(flag);
                        assert!(flags.contains(flag), "runbooks/{name}: `dhbus {next} --{flag}` is not a flag of dhbus in: {line}");
                    }
                    if arg.len() != raw.len() {
                        break; // `cmd;` ends the command
                    }
                }
            }
        }
    }
}

#[test]
fn runbooks_readme_indexes_every_runbook_with_sound_alert_rules() {
    let text = read("runbooks/README.md");
    for name in RUNBOOKS {
        assert!(text.contains(&format!("]({name})")), "runbooks/README.md must link {name}");
    }
    check_links("README.md", &text);
    let metrics = recorded_metrics();
    let blocks = fenced(&text, "yaml");
    assert!(!blocks.is_empty(), "runbooks/README.md must give example alert rules in a ```yaml block");
    let rules: Value = serde_yaml::from_str(&blocks[0]).unwrap_or_else(|e| panic!("the alert rules are not valid YAML: {e}"));
    let groups = rules["groups"].as_sequence().expect("alert rules: `groups:` list");
    let mut alerts = BTreeSet::new();
    let mut runbooks_alerted = BTreeSet::new();
    for g in groups {
        assert!(g["name"].as_str().is_some(), "every rule group has a name");
        for r in g["rules"].as_sequence().expect("a group has `rules:`") {
            let alert = r["alert"].as_str().expect("every rule is an alert with a name").to_string();
            assert!(alerts.insert(alert.clone()), "alert {alert} is defined twice");
            let expr = r["expr"].as_str().unwrap_or_else(|| panic!("{alert}: no expr"));
            let named = metric_tokens(expr);
            assert!(!named.is_empty() || expr.contains("job=\"dhbus\""), "{alert}: the expression must use a dhbus_ metric: {expr}");
            for m in &named {
                assert!(metrics.contains(base_metric(m)), "{alert}: `{m}` is not a metric dhbus records");
            }
            assert_eq!(expr.matches('(').count(), expr.matches(')').count(), "{alert}: unbalanced parentheses in {expr}");
            let runbook = r["annotations"]["runbook"].as_str().unwrap_or_else(|| panic!("{alert}: annotations.runbook is missing"));
            assert!(RUNBOOKS.contains(&runbook), "{alert}: runbook `{runbook}` is not one of the runbooks");
            runbooks_alerted.insert(runbook.to_string());
            assert!(r["annotations"]["summary"].as_str().is_some(), "{alert}: annotations.summary is missing");
        }
    }
    assert!(alerts.len() >= 8, "expected a useful set of example alerts, found {alerts:?}");
    // Every alert a runbook's Signals section names exists in the examples.
    for name in RUNBOOKS {
        let signals = section(&read(&format!("runbooks/{name}")), "## Signals");
        for b in backticked(&signals) {
            if b.starts_with("Dhbus") && b.chars().all(|c| c.is_ascii_alphanumeric()) {
                assert!(alerts.contains(&b), "runbooks/{name} names alert {b}, which runbooks/README.md does not define");
            }
        }
    }
    let unalerted: Vec<_> = RUNBOOKS.iter().filter(|r| !runbooks_alerted.contains(**r)).collect();
    assert!(unalerted.is_empty(), "runbooks no alert leads to: {unalerted:?}");
}

// ---- helpers: files ------------------------------------------------------------

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Every `.rs` file under src/, concatenated.
fn all_source() -> String {
    fn walk(dir: &Path, out: &mut String) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
                out.push('\n');
            }
        }
    }
    let mut s = String::new();
    walk(&root().join("src"), &mut s);
    s
}

// ---- helpers: compose ----------------------------------------------------------

fn compose() -> Value {
    let text = read("docker-compose.yml");
    let mut v: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("docker-compose.yml is not valid YAML: {e}"));
    v.apply_merge().unwrap_or_else(|e| panic!("docker-compose.yml: merge keys (<<) do not resolve: {e}"));
    assert!(v.as_mapping().is_some(), "docker-compose.yml must be a mapping");
    v
}

fn services(c: &Value) -> BTreeMap<String, Value> {
    let m = c.get("services").and_then(Value::as_mapping).expect("docker-compose.yml: `services:` mapping");
    m.iter().map(|(k, v)| (k.as_str().expect("service names are strings").to_string(), v.clone())).collect()
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// A string or a list of strings (interpolated).
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s.iter().map(|x| interpolate(&scalar(x))).collect(),
        Value::Null => Vec::new(),
        other => vec![interpolate(&scalar(other))],
    }
}

fn command(s: &Value) -> Vec<String> {
    strings(s.get("command").unwrap_or(&Value::Null))
}

/// The environment of a service, interpolated (mapping or `KEY=VALUE` list form).
fn environment(s: &Value) -> BTreeMap<String, String> {
    raw_environment_map(s).into_iter().map(|(k, v)| (k, interpolate(&v))).collect()
}

fn raw_environment_map(s: &Value) -> BTreeMap<String, String> {
    match s.get("environment") {
        Some(Value::Mapping(m)) => m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Some(Value::Sequence(l)) => l.iter().map(|e| {
            let e = scalar(e);
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            (k.to_string(), v.to_string())
        }).collect(),
        _ => BTreeMap::new(),
    }
}

fn raw_environment(s: &Value, key: &str) -> String {
    raw_environment_map(s).get(key).cloned().unwrap_or_default()
}

/// `depends_on` as service → condition (short list form means service_started).
fn depends_on(s: &Value) -> BTreeMap<String, String> {
    match s.get("depends_on") {
        Some(Value::Sequence(l)) => l.iter().map(|d| (scalar(d), "service_started".to_string())).collect(),
        Some(Value::Mapping(m)) => m.iter().map(|(k, v)| (scalar(k), v.get("condition").map(scalar).unwrap_or_else(|| "service_started".into()))).collect(),
        _ => BTreeMap::new(),
    }
}

/// Services others wait for with `service_completed_successfully`.
fn one_shot_services(services: &BTreeMap<String, Value>) -> BTreeSet<String> {
    services.values().flat_map(depends_on).filter(|(_, c)| c == "service_completed_successfully").map(|(d, _)| d).collect()
}

/// Container ports a service publishes.
fn container_ports(s: &Value) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for p in s.get("ports").and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or(&[]) {
        let port = match p {
            Value::Mapping(_) => scalar(&p["target"]),
            other => {
                let spec = interpolate(&scalar(other));
                let spec = spec.split('/').next().unwrap_or("").to_string();
                spec.rsplit(':').next().unwrap_or("").to_string()
            }
        };
        out.insert(port.parse().unwrap_or_else(|_| panic!("port mapping `{}` has no numeric container port", scalar(p))));
    }
    out
}

/// (source, target) of every volume mount (short or long syntax).
fn volume_mounts(s: &Value) -> Vec<(String, String)> {
    s.get("volumes").and_then(Value::as_sequence).map(Vec::as_slice).unwrap_or(&[]).iter().map(|v| match v {
        Value::Mapping(_) => (scalar(&v["source"]), scalar(&v["target"])),
        other => {
            let spec = interpolate(&scalar(other));
            let mut parts = spec.split(':');
            let source = parts.next().unwrap_or("").to_string();
            let target = parts.next().unwrap_or("").to_string();
            if target.is_empty() { (String::new(), source) } else { (source, target) }
        }
    }).collect()
}

/// (listener name, port) of a Kafka listener list such as `A://:9092,B://host:9093`.
fn listener_ports(listeners: &str) -> Vec<(String, String)> {
    listeners.split(',').filter_map(|l| {
        let (name, rest) = l.trim().split_once("://")?;
        Some((name.to_string(), rest.rsplit(':').next()?.to_string()))
    }).collect()
}

/// Compose interpolation with no variables set: `${V:-d}` / `${V-d}` give `d`,
/// `${V}` / `$V` / `${V:+x}` give "", `$$` gives `$`.
fn interpolate(s: &str) -> String {
    let b: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != '$' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                let mut depth = 1;
                let mut j = i + 2;
                while j < b.len() && depth > 0 {
                    match b[j] {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    j += 1;
                }
                assert!(depth == 0, "unterminated ${{ in `{s}`");
                let inner: String = b[i + 2..j - 1].iter().collect();
                let name_end = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
                let (name, rest) = inner.split_at(name_end);
                if let Some(default) = rest.strip_prefix(":-").or_else(|| rest.strip_prefix('-')) {
                    out.push_str(&interpolate(default));
                } else if rest.starts_with(":?") || rest.starts_with('?') {
                    panic!("docker-compose.yml requires ${{{name}}} to be set (`{s}`): give it a default");
                }
                i = j;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
                    j += 1;
                }
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    out
}

/// The defaults given to `${VAR:-...}` anywhere in `raw`.
fn defaults_in(raw: &str, var: &str) -> Vec<String> {
    let needle = format!("${{{var}:-");
    raw.match_indices(&needle).map(|(i, _)| {
        let rest = &raw[i + needle.len()..];
        rest[..rest.find('}').unwrap_or(rest.len())].to_string()
    }).collect()
}

// ---- helpers: defaults and documentation ---------------------------------------

/// The default of a variable: from the `#[arg(env = "VAR", default_value...)]`
/// in src/ (the source of truth), checked against README.md when it lists it.
fn default_of(var: &str) -> String {
    let src = all_source();
    let from_src = src.match_indices(&format!("env = \"{var}\"")).find_map(|(i, _)| {
        let start = src[..i].rfind("#[arg(")?;
        let end = i + src[i..].find(")]")?;
        let attr = &src[start..end];
        if let Some(j) = attr.find("default_value = \"") {
            let v = &attr[j + 17..];
            return Some(v[..v.find('"')?].to_string());
        }
        let j = attr.find("default_value_t = ")?;
        let v = &attr[j + 18..];
        Some(v[..v.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(v.len())].to_string())
    });
    let from_readme = readme_rows().get(var).map(|row| row.1.trim_matches('`').to_string());
    match (from_src, from_readme) {
        (Some(s), Some(r)) => {
            assert!(r.contains(&s), "README.md documents the default of {var} as `{r}`, the code has `{s}`");
            s
        }
        (Some(s), None) => s,
        (None, Some(r)) => r,
        (None, None) => panic!("no default for {var} in src/ or README.md"),
    }
}

fn port_of(addr: &str) -> u16 {
    addr.trim_end_matches('/').rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("`{addr}` has no port"))
}

/// Rows of README.md's "Configuration" table: variable → (row, default cell, meaning).
fn readme_rows() -> BTreeMap<String, (String, String, String)> {
    let readme = read("README.md");
    let table = section(&readme, "## Configuration");
    let mut out = BTreeMap::new();
    for line in table.lines().filter(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 2 {
            continue;
        }
        for var in backticked(cells[0]) {
            out.insert(var, (line.to_string(), cells[1].to_string(), cells.get(2).unwrap_or(&"").to_string()));
        }
    }
    out
}

fn readme_variables() -> BTreeSet<String> {
    let rows = readme_rows();
    assert!(!rows.is_empty(), "README.md has no `## Configuration` table with `VARIABLE` rows");
    rows.into_keys().collect()
}

fn binary_name() -> String {
    let cargo = read("Cargo.toml");
    let bin = section_toml(&cargo, "[[bin]]");
    bin.lines().find_map(|l| l.trim().strip_prefix("name = \"")?.strip_suffix('"').map(str::to_string)).expect("Cargo.toml has a [[bin]] name")
}

fn section_toml(text: &str, header: &str) -> String {
    let start = text.find(header).unwrap_or_else(|| panic!("Cargo.toml has no {header}"));
    let rest = &text[start + header.len()..];
    rest[..rest.find("\n[").unwrap_or(rest.len())].to_string()
}

// ---- helpers: Dockerfile -------------------------------------------------------

/// (INSTRUCTION, arguments) with continuation lines joined and comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if t.starts_with('#') {
            continue; // comment inside a continued instruction
        }
        if let Some(body) = t.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (instr, args) = current.split_once(char::is_whitespace).unwrap_or((current.as_str(), ""));
        out.push((instr.to_ascii_uppercase(), args.trim().to_string()));
        current.clear();
    }
    assert!(current.is_empty(), "Dockerfile ends inside a continued line");
    out
}

fn dockerfile_global_args(d: &[(String, String)]) -> BTreeMap<String, String> {
    d.iter().take_while(|(i, _)| i != "FROM").filter(|(i, _)| i == "ARG").filter_map(|(_, a)| a.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect()
}

fn resolve_args(s: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in args {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

/// `["a", "b"]` → [a, b].
fn exec_form(s: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(s).unwrap_or_else(|e| panic!("`{s}` is not exec form (a JSON array): {e}"));
    v.as_array().expect("JSON array").iter().map(|x| x.as_str().expect("strings").to_string()).collect()
}

/// Whether `path` is excluded by .dockerignore `patterns` (the subset of the
/// syntax used: names, `dir/`, `**/x`, `*.ext`, `!re-include`).
fn ignored(patterns: &[String], path: &str) -> bool {
    let mut excluded = false;
    for p in patterns {
        let (negate, p) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        let p = p.trim_start_matches('/').trim_end_matches('/');
        let p = p.strip_prefix("**/").unwrap_or(p);
        let matches = path.split('/').enumerate().any(|(i, comp)| {
            let prefix: Vec<&str> = path.split('/').take(i + 1).collect();
            let prefix = prefix.join("/");
            glob(p, &prefix) || glob(p, comp)
        });
        if matches {
            excluded = !negate;
        }
    }
    excluded
}

/// `*` within one path component.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((pre, post)) => s.len() >= pre.len() + post.len() && s.starts_with(pre) && !s[pre.len()..].contains('/') && glob_rest(post, &s[pre.len()..]),
    }
}

fn glob_rest(post: &str, s: &str) -> bool {
    if !post.contains('*') {
        return s.ends_with(post);
    }
    (0..=s.len()).any(|i| s.is_char_boundary(i) && glob(post, &s[i..]))
}

// ---- helpers: Prometheus and metrics -------------------------------------------

fn prometheus_targets(job: &str) -> Vec<String> {
    let cfg: Value = serde_yaml::from_str(&read("deploy/prometheus.yml")).unwrap_or_else(|e| panic!("deploy/prometheus.yml is not valid YAML: {e}"));
    cfg["scrape_configs"].as_sequence().map(Vec::as_slice).unwrap_or(&[]).iter().filter(|j| j["job_name"].as_str() == Some(job)).flat_map(|j| {
        j["static_configs"].as_sequence().cloned().unwrap_or_default().into_iter().flat_map(|s| strings(&s["targets"]))
    }).collect()
}

/// Metric names the code records: every `"dhbus_..."` string literal in src/.
fn recorded_metrics() -> BTreeSet<String> {
    let src = all_source();
    src.split('"').skip(1).step_by(2).filter(|s| s.starts_with("dhbus_") && s.len() > 6 && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).map(str::to_string).collect()
}

/// `dhbus_x_bucket` / `_sum` / `_count` → `dhbus_x` (Prometheus histogram series).
fn base_metric(m: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| m.strip_suffix(s)).unwrap_or(m)
}

/// Every `dhbus_[a-z0-9_]+` token in `text`.
fn metric_tokens(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("dhbus_") {
        let start = i + off;
        let before_ok = start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_' || b[start - 1] == b'-');
        let mut end = start + 6;
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_') {
            end += 1;
        }
        if before_ok && end > start + 6 {
            out.insert(text[start..end].trim_end_matches('_').to_string());
        }
        i = end;
    }
    out
}

// ---- helpers: markdown ---------------------------------------------------------

/// The text of the section under `heading` (up to the next heading of the same or a higher level).
fn section(text: &str, heading: &str) -> String {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut out = String::new();
    let mut inside = false;
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            let l = line.chars().take_while(|c| *c == '#').count();
            if inside && l <= level {
                break;
            }
            if line.trim() == heading {
                inside = true;
                continue;
            }
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// The bodies of ```lang fenced blocks.
fn fenced(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim_start();
        match &mut current {
            None if t.starts_with("```") && t.trim_start_matches('`').trim() == lang => current = Some(String::new()),
            Some(body) if t.starts_with("```") => {
                out.push(std::mem::take(body));
                current = None;
            }
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Shell command lines of the ```bash blocks, continuation lines joined.
fn shell_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in fenced(text, "bash") {
        let mut current = String::new();
        for line in block.lines() {
            let t = line.trim();
            if let Some(body) = t.strip_suffix('\\') {
                current.push_str(body);
                current.push(' ');
            } else {
                current.push_str(t);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// Relative links to markdown files resolve, and their #anchors name a heading.
fn check_links(name: &str, text: &str) {
    for part in text.split("](").skip(1) {
        let target = &part[..part.find(')').unwrap_or(0)];
        if target.starts_with("http") || target.is_empty() || !target.contains(".md") {
            continue;
        }
        let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
        let path = root().join("runbooks").join(file);
        let linked = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("runbooks/{name} links {target}, which does not exist"));
        if !anchor.is_empty() {
            let anchors: BTreeSet<String> = linked.lines().filter(|l| l.starts_with('#')).map(|l| slug(l.trim_start_matches('#').trim())).collect();
            assert!(anchors.contains(anchor), "runbooks/{name} links {target}, but {file} has no heading with anchor #{anchor} ({anchors:?})");
        }
    }
}

/// GitHub's heading anchor.
fn slug(heading: &str) -> String {
    heading.to_lowercase().chars().filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_').map(|c| if c == ' ' { '-' } else { c }).collect()
}

// ---- helpers: the CLI ----------------------------------------------------------

/// The subcommands of `dhbus` (variants of `enum Command` in src/main.rs, in
/// kebab case) and every long flag declared in src/ (`long = "x"`, or `long`
/// on a field `x_y` → `x-y`).
fn cli_surface() -> (BTreeSet<String>, BTreeSet<String>) {
    let main = read("src/main.rs");
    let body = &main[main.find("enum Command {").expect("src/main.rs has `enum Command`")..];
    let body = &body[..body.find("\n}").unwrap_or(body.len())];
    let mut subcommands: BTreeSet<String> = body
        .lines()
        .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
        .filter_map(|l| {
            let t = l.trim();
            let name: String = t.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            (name.chars().next().is_some_and(|c| c.is_ascii_uppercase())).then(|| kebab(&name))
        })
        .collect();
    subcommands.insert("help".into());
    assert!(subcommands.len() >= 5, "parsed too few subcommands from src/main.rs: {subcommands:?}");

    let src = all_source();
    let mut flags: BTreeSet<String> = ["help", "version"].iter().map(|s| s.to_string()).collect();
    for (i, _) in src.match_indices("long = \"") {
        let rest = &src[i + 8..];
        flags.insert(rest[..rest.find('"').unwrap_or(0)].to_string());
    }
    let lines: Vec<&str> = src.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        let t = line.trim();
        let is_arg_with_long = t.starts_with("#[arg(") && t.split(|c: char| c == '(' || c == ',' || c == ')').any(|p| p.trim() == "long");
        if !is_arg_with_long {
            continue;
        }
        if let Some(field) = lines[n + 1..].iter().map(|l| l.trim()).find(|l| !l.starts_with("#[") && !l.starts_with("//")) {
            let field = field.trim_start_matches("pub ");
            if let Some((name, _)) = field.split_once(':') {
                flags.insert(name.trim().replace('_', "-"));
            }
        }
    }
    (subcommands, flags)
}

fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}
