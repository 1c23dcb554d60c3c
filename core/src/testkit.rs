//! Helpers for the tests that run against the local cluster (`scripts/cluster.sh up`): where it
//! is, a check that fails loudly when it is not there, names no other test uses, and the script
//! that stops and starts its parts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::kafka;

pub mod hostile;
pub mod memory;

/// The message every cluster-backed test fails with when the cluster is not there.
pub const NEEDS_CLUSTER: &str = "run scripts/cluster.sh up";

/// The local cluster as the tests see it: the default configuration, with any
/// `MARKETFLOW__…` overrides from the environment.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The configuration pointing at the cluster.
    pub config: Config,
}

impl Cluster {
    /// Checks that the brokers and the registry answer, and panics with
    /// `… run scripts/cluster.sh up` when either does not.
    pub async fn require() -> Self {
        let mut config = Config::load(None).unwrap_or_else(|e| panic!("{e}"));
        config.kafka.connect_timeout = Duration::from_secs(5);
        if let Err(e) = kafka::check_reachable(&config.kafka).await {
            panic!("the local cluster's brokers are not reachable ({e}): {NEEDS_CLUSTER}");
        }
        let registry = authority(&config.registry.url);
        if let Err(e) = tokio::net::TcpStream::connect(&registry).await {
            panic!(
                "the local cluster's schema registry is not reachable at {registry} ({e}): \
                 {NEEDS_CLUSTER}"
            );
        }
        Self { config }
    }

    /// Creates a topic of `partitions` partitions with a name no other test uses, and returns
    /// the name.
    pub async fn topic(&self, prefix: &str, partitions: i32) -> String {
        let name = unique(prefix);
        kafka::ensure_topics(&self.config.kafka, &[(&name, partitions)])
            .await
            .unwrap_or_else(|e| panic!("cannot create topic {name}: {e}"));
        name
    }

    /// Sets one configuration entry of `topic` (e.g. `max.message.bytes`), and panics when the
    /// brokers refuse it.
    pub async fn set_topic_config(&self, topic: &str, key: &str, value: &str) {
        use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
        let admin = kafka::create_admin(&self.config.kafka)
            .unwrap_or_else(|e| panic!("cannot create an admin client: {e}"));
        let alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(key, value);
        let altered = admin
            .alter_configs(&[alter], &AdminOptions::new())
            .await
            .unwrap_or_else(|e| panic!("cannot set {key} of {topic}: {e}"));
        assert!(altered.iter().all(Result::is_ok), "{altered:?}");
    }
}

/// A MySQL database of one test's own on the local cluster's MariaDB.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// A URL that connects to it (the cluster's user).
    pub url: String,
}

impl Cluster {
    /// Creates a utf8mb4 database with a name no other test uses, and panics with
    /// `… run scripts/cluster.sh up` when MariaDB does not answer.
    pub async fn database(&self, prefix: &str) -> TestDatabase {
        use secrecy::ExposeSecret;
        use sqlx::Connection;
        let server = self.config.sink.database_url.expose_secret();
        let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
        let mut admin = sqlx::mysql::MySqlConnection::connect(server)
            .await
            .unwrap_or_else(|e| {
                panic!("the local cluster's MariaDB is not reachable ({e}): {NEEDS_CLUSTER}")
            });
        let name = unique(prefix).replace('-', "_");
        let create = format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl TestDatabase {
    /// Drops the database (what a test leaves behind otherwise stays for inspection).
    pub async fn drop(&self) {
        use sqlx::Connection;
        if let Ok(mut connection) = sqlx::mysql::MySqlConnection::connect(&self.url).await {
            let drop = format!("DROP DATABASE IF EXISTS `{}`", self.name);
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut connection)
                .await;
        }
    }
}

/// `prefix-<pid>-<time>-<n>`: unique across processes and within one.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}

/// The folder holding the local cluster's state, logs and PID files.
pub fn cluster_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MARKETFLOW_CLUSTER_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/marketflow/cluster")
}

/// Runs `scripts/cluster.sh` with `args` (e.g. `["stop-broker", "2"]`) to its end, and panics
/// when it fails.
pub fn cluster_script(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
    let status = Command::new(&script)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "scripts/cluster.sh {} failed ({status})",
        args.join(" ")
    );
}

/// Brings every part of the local cluster back (`scripts/cluster.sh up`) when dropped, even when
/// the test panics: what a test that stops a broker holds while it runs.
#[derive(Debug)]
pub struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A second panic would abort the test binary and hide the first one.
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
            if !Command::new(script)
                .arg("up")
                .status()
                .is_ok_and(|s| s.success())
            {
                eprintln!("scripts/cluster.sh up failed: run it by hand");
            }
        } else {
            cluster_script(&["up"]);
        }
    }
}

/// `host:port` of an `http://host:port/...` URL.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_is_host_and_port() {
        assert_eq!(authority("http://127.0.0.1:18081"), "127.0.0.1:18081");
        assert_eq!(authority("http://registry:8081/"), "registry:8081");
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique("t"), unique("t"));
    }
}
