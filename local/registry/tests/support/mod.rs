//! The real `registry` binary started for a test on a free loopback port, killed when the
//! test ends however it ends, and a small JSON client for it.

// Each test crate uses a different part of this module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

/// The media type Confluent's clients send and the registry answers with.
pub const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A running `registry` process; dropping it kills the process.
pub struct Registry {
    child: Child,
    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The data directory it was started on.
    pub data_dir: PathBuf,
    client: reqwest::Client,
    logs: TempDir,
}

impl Registry {
    /// Starts the binary on `data_dir` and waits until it answers.
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[]).await
    }

    /// As [`Registry::start`], with the environment variables `env` set (e.g.
    /// `REGISTRY_BASIC_AUTH`).
    pub async fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let logs = tempfile::tempdir().unwrap();
        let log = File::create(logs.path().join("registry.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_registry"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the registry binary starts");
        let mut registry = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_owned(),
            client: reqwest::Client::new(),
            logs,
        };
        registry.wait_until_ready().await;
        registry
    }

    async fn wait_until_ready(&mut self) {
        let client = self.client.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the registry exited with {status}:\n{}", self.logs());
            }
            if let Ok(response) = client.get(format!("{}/", self.url)).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not answer in time:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the process wrote on stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("registry.log")).unwrap_or_default()
    }

    /// Kills the process with SIGKILL, giving it no chance to tidy up.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits (at most 10 s) for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a request with a JSON body (or none) and returns the status and JSON answer,
    /// checking the answer's media type.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request
                .header("Content-Type", MEDIA_TYPE)
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let media_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(media_type.as_deref(), Some(MEDIA_TYPE), "{path}");
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, json)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Registers `schema` under `subject` and returns its id, failing on any error.
    pub async fn register(&self, subject: &str, schema: &str) -> u64 {
        let (status, body) = self
            .post(
                &format!("/subjects/{subject}/versions"),
                serde_json::json!({ "schema": schema }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_u64().unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
