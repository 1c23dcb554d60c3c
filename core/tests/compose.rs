//! A static check of `docker-compose.yml`, since no Docker engine runs where we test: it parses,
//! every service it references exists, every `MARKETFLOW__` variable is a real config key, host
//! ports do not collide, images are pinned, health conditions have health checks, and the brokers'
//! quorum and replication settings agree, and they run the local cluster's Kafka version with its
//! settings (`local/kafka`). Deliberate mistakes make the check fail. `scripts/test.sh` also runs
//! a compose-spec validator (`docker-compose config -q`) on the file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test
#![allow(clippy::result_large_err)] // figment::Jail's closures return figment's large error

use std::collections::{BTreeMap, BTreeSet};

use figment::Jail;
use marketflow_core::Config;
use yaml_rust2::{Yaml, YamlLoader};

const COMPOSE: &str = include_str!("../../docker-compose.yml");
const KAFKA_POM: &str = include_str!("../../local/kafka/pom.xml");
const KAFKA_SETTINGS: &str = include_str!("../../local/kafka/server.properties");

/// The local cluster's settings that name its own addresses and listeners, which the compose
/// file names its own way.
const ADDRESS_SETTINGS: [&str; 4] = [
    "controller.quorum.voters",
    "controller.listener.names",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
];

/// The Kafka version `scripts/cluster.sh` fetches (`<kafka.version>` in local/kafka/pom.xml).
fn local_kafka_version() -> &'static str {
    let (_, rest) = KAFKA_POM.split_once("<kafka.version>").unwrap();
    rest.split_once("</kafka.version>").unwrap().0.trim()
}

/// The local brokers' shared settings as the apache/kafka image's variables spell them
/// (`log.cleaner.backoff.ms` is `KAFKA_LOG_CLEANER_BACKOFF_MS`), addresses left out.
fn local_kafka_settings() -> BTreeMap<String, String> {
    KAFKA_SETTINGS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| !ADDRESS_SETTINGS.contains(key))
        .map(|(key, value)| {
            let var = format!("KAFKA_{}", key.replace('.', "_").to_uppercase());
            (var, value.to_owned())
        })
        .collect()
}

/// A mapping with its `<<` merge keys applied (explicit keys win), as Compose reads it.
fn merged(yaml: &Yaml) -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    let Some(hash) = yaml.as_hash() else {
        return out;
    };
    if let Some(base) = hash.get(&Yaml::String("<<".into())) {
        let bases = match base {
            Yaml::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for base in &bases {
            out.extend(merged(base));
        }
    }
    for (key, value) in hash {
        if let Some(key) = key.as_str().filter(|k| *k != "<<") {
            out.insert(key.to_owned(), value.clone());
        }
    }
    out
}

fn scalar(yaml: &Yaml) -> Option<String> {
    match yaml {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

struct Service {
    fields: BTreeMap<String, Yaml>,
    env: BTreeMap<String, String>,
}

fn services(doc: &Yaml) -> BTreeMap<String, Service> {
    let top = merged(doc);
    let services = top.get("services").map(merged).unwrap_or_default();
    services
        .into_iter()
        .map(|(name, yaml)| {
            let fields = merged(&yaml);
            let env = fields
                .get("environment")
                .map(merged)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| scalar(&v).map(|v| (k, v)))
                .collect();
            (name, Service { fields, env })
        })
        .collect()
}

/// Every problem found in a compose text; empty when it is sound.
fn check(text: &str) -> Vec<String> {
    let docs = match YamlLoader::load_from_str(text) {
        Ok(docs) => docs,
        Err(e) => return vec![format!("does not parse: {e}")],
    };
    let Some(doc) = docs.first() else {
        return vec!["is empty".into()];
    };
    let services = services(doc);
    let mut problems = Vec::new();
    if services.is_empty() {
        problems.push("has no services".into());
    }

    let mut host_ports: BTreeMap<String, String> = BTreeMap::new();
    for (name, service) in &services {
        // Referenced services exist; health conditions have health checks.
        let depends = service.fields.get("depends_on");
        let mut targets: Vec<(String, Option<String>)> = Vec::new();
        match depends {
            Some(Yaml::Array(items)) => {
                targets.extend(items.iter().filter_map(scalar).map(|t| (t, None)))
            }
            Some(map @ Yaml::Hash(_)) => {
                for (target, spec) in merged(map) {
                    let condition = merged(&spec).get("condition").and_then(scalar);
                    targets.push((target, condition));
                }
            }
            _ => {}
        }
        for (target, condition) in targets {
            match services.get(&target) {
                None => problems.push(format!(
                    "service {name} depends on {target}, which does not exist"
                )),
                Some(dep)
                    if condition.as_deref() == Some("service_healthy")
                        && !dep.fields.contains_key("healthcheck") =>
                {
                    problems.push(format!("service {name} waits for {target} to be healthy, but {target} has no healthcheck"));
                }
                Some(_) => {}
            }
        }
        // Images are pinned; Kafka's is the local cluster's version.
        if let Some(image) = service.fields.get("image").and_then(scalar) {
            if let Some(tag) = image.strip_prefix("apache/kafka:")
                && tag != local_kafka_version()
            {
                problems.push(format!(
                    "service {name} runs {image}, but the local cluster runs Kafka {} \
                     (local/kafka/pom.xml): bump both together",
                    local_kafka_version()
                ));
            }
            let tag = image.rsplit_once(':').map(|(_, tag)| tag);
            if !service.fields.contains_key("build") && matches!(tag, None | Some("latest")) {
                problems.push(format!("service {name} uses an unpinned image {image}"));
            }
        }
        // Host ports are distinct.
        if let Some(Yaml::Array(ports)) = service.fields.get("ports") {
            for port in ports.iter().filter_map(scalar) {
                let host = port
                    .rsplit_once(':')
                    .map_or(port.as_str(), |(host, _)| host)
                    .to_owned();
                if let Some(other) = host_ports.insert(host.clone(), name.clone()) {
                    problems.push(format!(
                        "host port {host} is published by both {other} and {name}"
                    ));
                }
            }
        }
        // MARKETFLOW__ variables are real configuration keys, checked by loading them.
        let vars: Vec<(String, String)> = service
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("MARKETFLOW__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !vars.is_empty() {
            let mut error = None;
            Jail::expect_with(|jail| {
                jail.clear_env();
                for (key, value) in &vars {
                    jail.set_env(key, value);
                }
                error = Config::load(None).err().map(|e| e.to_string());
                Ok(())
            });
            if let Some(error) = error {
                problems.push(format!("service {name}: {error}"));
            }
        }
    }

    // The brokers: distinct node ids, one cluster id, a quorum of exactly them, replication the
    // cluster can hold.
    let brokers: Vec<(&String, &Service)> = services
        .iter()
        .filter(|(_, s)| s.env.contains_key("KAFKA_NODE_ID"))
        .collect();
    let count = brokers.len();
    let ids: BTreeSet<String> = brokers
        .iter()
        .map(|(_, s)| s.env["KAFKA_NODE_ID"].clone())
        .collect();
    if ids.len() != count {
        problems.push("two brokers share a KAFKA_NODE_ID".into());
    }
    let cluster_ids: BTreeSet<Option<&String>> = brokers
        .iter()
        .map(|(_, s)| s.env.get("CLUSTER_ID"))
        .collect();
    if cluster_ids.len() > 1 || cluster_ids.contains(&None) {
        problems.push(format!("brokers disagree on CLUSTER_ID: {cluster_ids:?}"));
    }
    for (name, broker) in &brokers {
        for (var, value) in local_kafka_settings() {
            match broker.env.get(&var) {
                Some(set) if set.eq_ignore_ascii_case(&value) => {}
                set => problems.push(format!(
                    "{name}: {var} is {set:?}, but local/kafka/server.properties sets {value}: \
                     both paths run one configuration"
                )),
            }
        }
        let voters = broker
            .env
            .get("KAFKA_CONTROLLER_QUORUM_VOTERS")
            .cloned()
            .unwrap_or_default();
        let mut voter_ids = BTreeSet::new();
        for voter in voters.split(',').filter(|v| !v.is_empty()) {
            let Some((id, address)) = voter.split_once('@') else {
                problems.push(format!("{name}: quorum voter {voter} is not id@host:port"));
                continue;
            };
            voter_ids.insert(id.to_owned());
            let host = address.split(':').next().unwrap_or_default();
            let owner = brokers.iter().find(|(_, s)| s.env["KAFKA_NODE_ID"] == id);
            match owner {
                Some((service, _)) if *service == host => {}
                _ => problems.push(format!(
                    "{name}: quorum voter {voter} is not the broker service with node id {id}"
                )),
            }
        }
        if voter_ids != ids {
            problems.push(format!(
                "{name}: the quorum {voter_ids:?} is not the brokers {ids:?}"
            ));
        }
        let number = |key: &str| broker.env.get(key).and_then(|v| v.parse::<usize>().ok());
        for key in [
            "KAFKA_DEFAULT_REPLICATION_FACTOR",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        ] {
            match number(key) {
                Some(rf) if rf <= count && rf >= 1 => {
                    if let Some(min_isr) = number("KAFKA_MIN_INSYNC_REPLICAS")
                        .filter(|_| key == "KAFKA_DEFAULT_REPLICATION_FACTOR")
                        && min_isr >= rf
                    {
                        problems.push(format!(
                            "{name}: min.insync.replicas {min_isr} leaves no broker to lose at replication {rf}"
                        ));
                    }
                }
                Some(rf) => {
                    problems.push(format!("{name}: {key}={rf} but there are {count} brokers"))
                }
                None => problems.push(format!("{name}: {key} is not set")),
            }
        }
    }
    if count < 3 {
        problems.push(format!("{count} brokers; the stack runs 3"));
    }
    problems
}

#[test]
fn the_compose_file_is_sound() {
    let problems = check(COMPOSE);
    assert!(problems.is_empty(), "docker-compose.yml: {problems:#?}");
}

#[test]
fn an_unknown_marketflow_variable_is_caught() {
    let broken = COMPOSE.replace(
        "MARKETFLOW__SINK__DATABASE_URL",
        "MARKETFLOW__SINK__DATABSE_URL",
    );
    let problems = check(&broken);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("service sink") && p.contains("MARKETFLOW__SINK__DATABSE_URL")),
        "{problems:#?}"
    );
}

#[test]
fn a_missing_service_is_caught() {
    let broken = COMPOSE.replace(
        "  mysql:\n    image: mysql",
        "  mysql-db:\n    image: mysql",
    );
    let problems = check(&broken);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("depends on mysql, which does not exist")),
        "{problems:#?}"
    );
}

#[test]
fn colliding_ports_are_caught() {
    let broken = COMPOSE.replace("\"8082:8080\"", "\"8080:8080\"");
    let problems = check(&broken);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("host port 8080 is published by both")),
        "{problems:#?}"
    );
}

#[test]
fn an_inconsistent_quorum_or_replication_is_caught() {
    let broken = COMPOSE.replacen("3@kafka-3:9093", "3@kafka-2:9093", 1);
    assert!(
        check(&broken)
            .iter()
            .any(|p| p.contains("quorum voter 3@kafka-2:9093"))
    );
    let broken = COMPOSE.replace(
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: 3",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: 4",
    );
    assert!(check(&broken).iter().any(|p| p.contains("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=4 but there are 3 brokers")));
    let broken = COMPOSE.replace(
        "KAFKA_MIN_INSYNC_REPLICAS: 2",
        "KAFKA_MIN_INSYNC_REPLICAS: 3",
    );
    assert!(
        check(&broken)
            .iter()
            .any(|p| p.contains("min.insync.replicas 3"))
    );
}

#[test]
fn a_health_condition_without_a_healthcheck_is_caught() {
    let broken = COMPOSE.replace(
        "    healthcheck:\n      test: [\"CMD-SHELL\", \"mysqladmin",
        "    x-no-healthcheck:\n      test: [\"CMD-SHELL\", \"mysqladmin",
    );
    let problems = check(&broken);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("waits for mysql to be healthy")),
        "{problems:#?}"
    );
}

#[test]
fn an_unpinned_image_is_caught() {
    let broken = COMPOSE.replace("tchiotludo/akhq:0.26.0", "tchiotludo/akhq:latest");
    assert!(
        check(&broken)
            .iter()
            .any(|p| p.contains("unpinned image tchiotludo/akhq:latest"))
    );
}

#[test]
fn another_kafka_version_or_setting_than_the_local_clusters_is_caught() {
    let version = local_kafka_version();
    let broken = COMPOSE.replace(&format!("apache/kafka:{version}"), "apache/kafka:3.9.1");
    assert!(
        check(&broken)
            .iter()
            .any(|p| p.contains("runs apache/kafka:3.9.1") && p.contains("bump both together")),
        "{:#?}",
        check(&broken)
    );
    let broken = COMPOSE.replace(
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: 0",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: 3000",
    );
    assert!(
        check(&broken)
            .iter()
            .any(|p| p.contains("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS")
                && p.contains("local/kafka/server.properties")),
        "{:#?}",
        check(&broken)
    );
}
