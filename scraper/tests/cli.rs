//! The `scraper` command line: `--help` documents every option, and a bad configuration or an
//! unreachable broker or registry ends the program non-zero with a message saying what and where.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use std::process::{Command, Output};

use marketflow_core::testkit::Cluster;

/// `scraper args` with `env` (and no MARKETFLOW__ variables from the caller's environment but
/// the cluster's addresses).
fn scraper(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scraper"));
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("MARKETFLOW__SCRAPER__")) {
        command.env_remove(name);
    }
    command
        .args(args)
        .env("MARKETFLOW__SCRAPER__SELLER_HMAC_KEY", "k")
        .env("MARKETFLOW__SCRAPER__ADMIN_ADDR", "127.0.0.1:0")
        .env("MARKETFLOW__SCRAPER__BASE_URL", "http://127.0.0.1:9");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_documents_every_option() {
    let out = scraper(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--config",
        "--once",
        "--from",
        "--to",
        "--help",
        "--version",
    ] {
        assert!(
            help.contains(option),
            "--help does not mention {option}:\n{help}"
        );
    }
    for key in [
        "seller_hmac_key",
        "max_requests_per_sec",
        "concurrency",
        "poll_interval",
        "window",
    ] {
        assert!(
            help.contains(key),
            "--help does not mention scraper.{key}:\n{help}"
        );
    }
}

#[test]
fn from_without_once_is_refused() {
    let out = scraper(&["--from", "1", "--to", "2"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--once"), "{}", stderr(&out));
}

#[test]
fn a_bad_config_key_exits_non_zero_naming_it_and_where() {
    let out = scraper(&["--once"], &[("MARKETFLOW__SCRAPER__CONCURENCY", "3")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("environment variable MARKETFLOW__SCRAPER__CONCURENCY"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("scraper-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[scraper]\nrate = 3\n").unwrap();
    let out = scraper(&["--once", "--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("key `scraper.rate` in ") && err.contains("bad.toml"),
        "{err}"
    );
}

#[test]
fn a_missing_seller_key_exits_non_zero_saying_how_to_set_it() {
    let out = scraper(&["--once"], &[("MARKETFLOW__SCRAPER__SELLER_HMAC_KEY", "")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("MARKETFLOW__SCRAPER__SELLER_HMAC_KEY"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unreachable_broker_exits_non_zero_naming_it() {
    let out = scraper(
        &["--once"],
        &[
            ("MARKETFLOW__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1"),
            ("MARKETFLOW__KAFKA__CONNECT_TIMEOUT", "1s"),
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no Kafka broker answered at 127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn an_unreachable_registry_exits_non_zero_naming_it() {
    let _cluster = Cluster::require().await;
    let out = tokio::task::spawn_blocking(|| {
        scraper(
            &["--once"],
            &[("MARKETFLOW__REGISTRY__URL", "http://127.0.0.1:9")],
        )
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("schema registry at http://127.0.0.1:9 did not answer"),
        "{err}"
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: scripts/cluster.sh up"]
async fn an_unreachable_market_exits_non_zero_naming_it() {
    let _cluster = Cluster::require().await;
    let out = tokio::task::spawn_blocking(|| {
        scraper(&["--once"], &[("MARKETFLOW__SCRAPER__MAX_RETRIES", "1")])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot start crawling http://127.0.0.1:9"),
        "{err}"
    );
}
