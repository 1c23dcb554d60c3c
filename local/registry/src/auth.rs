//! Optional HTTP basic auth on the registry's mutating requests (`POST`, `PUT`, `DELETE`), the
//! Confluent registry's scheme: a client sends `Authorization: Basic base64(user:password)`
//! (`basic.auth.user.info` in Confluent's clients). Reads stay open: health checks, decoders
//! and `marketflow status` only read.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tracing::warn;

use crate::store::MEDIA_TYPE;

/// The one user allowed to change the registry. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    user: String,
    password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a `USER:PASSWORD` setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected USER:PASSWORD with neither empty (the password may hold colons), e.g. \
     REGISTRY_BASIC_AUTH=admin:s3cret"
)]
pub struct BadCredentials;

impl FromStr for BasicAuth {
    type Err = BadCredentials;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Self {
                user: user.to_owned(),
                password: password.to_owned(),
            }),
            _ => Err(BadCredentials),
        }
    }
}

impl BasicAuth {
    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether `headers` carry this user's credentials.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, encoded)| STANDARD.decode(encoded.trim()).ok())
        else {
            return false;
        };
        let (user, password) = match given.iter().position(|&b| b == b':') {
            Some(at) => (&given[..at], &given[at + 1..]),
            None => (given.as_slice(), &[][..]),
        };
        // Both compared whatever the first gave, so the timing does not tell which was wrong.
        let user_ok = same_secret(user, self.user.as_bytes());
        let password_ok = same_secret(password, self.password.as_bytes());
        user_ok & password_ok
    }
}

/// Whether a request with `method` changes the registry.
fn mutates(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware: a mutating request without `auth`'s credentials is answered 401, as
/// Confluent's registry answers it; anything else goes through. No `auth`: everything does.
pub async fn guard(
    State(auth): State<Arc<Option<BasicAuth>>>,
    request: Request,
    next: Next,
) -> Response {
    match auth.as_ref() {
        Some(auth) if mutates(request.method()) && !auth.admits(request.headers()) => {
            warn!(
                method = %request.method(),
                path = request.uri().path(),
                "Unauthenticated change refused."
            );
            unauthorized()
        }
        _ => next.run(request).await,
    }
}

fn unauthorized() -> Response {
    let body = serde_json::json!({"error_code": 401, "message": "Unauthorized"}).to_string();
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE)),
            (
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"marketflow-registry\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// Whether `given` equals `expected`, in a time that does not tell a caller how much of a guess
/// was right (RustCrypto's `subtle`).
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, serve};
    use clap::Parser;
    use reqwest::Method;

    #[test]
    fn credentials_parse_as_user_colon_password_and_debug_hides_the_password() {
        let auth: BasicAuth = "admin:s3:cret".parse().unwrap();
        assert_eq!(auth.user(), "admin");
        assert_eq!(auth.password, "s3:cret");
        assert!(!format!("{auth:?}").contains("s3"));
        for bad in ["admin", ":s3cret", "admin:", ""] {
            assert_eq!(bad.parse::<BasicAuth>(), Err(BadCredentials), "{bad}");
        }
        let args = crate::cli::Args::try_parse_from([
            "registry",
            "--data-dir",
            "/tmp/x",
            "--basic-auth",
            "admin:s3cret",
        ])
        .unwrap();
        assert_eq!(args.basic_auth.as_ref().map(BasicAuth::user), Some("admin"));
        assert!(!format!("{args:?}").contains("s3cret"));
        let bad = crate::cli::Args::try_parse_from([
            "registry",
            "--data-dir",
            "d",
            "--basic-auth",
            "admin",
        ]);
        assert!(bad.is_err());
    }

    /// A registry on a free loopback port with `auth`; its base URL.
    async fn start(auth: Option<&str>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let auth = auth.map(|a| a.parse().unwrap());
        tokio::spawn(serve(
            listener,
            Store::in_memory(),
            auth,
            std::future::pending(),
        ));
        url
    }

    async fn call(url: &str, method: Method, path: &str, auth: Option<(&str, &str)>) -> u16 {
        let mut request = reqwest::Client::new()
            .request(method.clone(), format!("{url}{path}"))
            .header("content-type", MEDIA_TYPE);
        if method == Method::POST {
            request = request.body(r#"{"schema": "\"string\""}"#);
        } else if method == Method::PUT {
            request = request.body(r#"{"compatibility": "NONE"}"#);
        }
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        request.send().await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn with_basic_auth_changes_need_the_credentials_and_reads_do_not() {
        let url = start(Some("admin:s3cret")).await;
        let register = "/subjects/s-value/versions";
        let response = reqwest::Client::new()
            .post(format!("{url}{register}"))
            .header("content-type", MEDIA_TYPE)
            .body(r#"{"schema": "\"string\""}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
        let challenge = response.headers().get("www-authenticate").cloned();
        assert_eq!(
            challenge.as_ref().and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"marketflow-registry\"")
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error_code"], 401);
        let wrong = Some(("admin", "s3creT"));
        assert_eq!(call(&url, Method::POST, register, wrong).await, 401);
        assert_eq!(
            call(&url, Method::POST, register, Some(("root", "s3cret"))).await,
            401
        );
        assert_eq!(call(&url, Method::PUT, "/config", None).await, 401);
        assert_eq!(
            call(&url, Method::DELETE, "/subjects/s-value", None).await,
            401
        );
        let right = Some(("admin", "s3cret"));
        assert_eq!(call(&url, Method::POST, register, right).await, 200);
        assert_eq!(call(&url, Method::PUT, "/config", right).await, 200);
        assert_eq!(call(&url, Method::GET, "/subjects", None).await, 200);
        assert_eq!(call(&url, Method::GET, "/schemas/ids/1", None).await, 200);
        assert_eq!(
            call(&url, Method::DELETE, "/subjects/s-value", right).await,
            200
        );
    }

    #[tokio::test]
    async fn without_basic_auth_everything_stays_open() {
        let url = start(None).await;
        let register = "/subjects/s-value/versions";
        assert_eq!(call(&url, Method::POST, register, None).await, 200);
        assert_eq!(
            call(&url, Method::DELETE, "/subjects/s-value", None).await,
            200
        );
    }
}
