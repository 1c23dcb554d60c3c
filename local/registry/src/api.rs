//! The HTTP API: Confluent Schema Registry's routes, request bodies, JSON answers and error
//! bodies, on axum.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{debug, error, info};

use crate::auth::{self, BasicAuth};
use crate::compat::CompatibilityLevel;
use crate::error::RegistryError;
use crate::store::{SchemaRequest, Store, VersionSelector};

pub use crate::store::MEDIA_TYPE;

/// Request media types accepted besides none at all (Confluent's list).
const ACCEPTED_MEDIA_TYPES: [&str; 4] = [
    MEDIA_TYPE,
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
];

/// The registry's routes over `store`; with `auth`, changes need its credentials.
pub fn router(store: Store, auth: Option<BasicAuth>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/config",
            get(global_config)
                .put(set_global_config)
                .delete(reset_global_config),
        )
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(test_against_subject),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(test_against_version),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(Arc::new(auth), auth::guard))
        .layer(middleware::from_fn(log_request))
        .with_state(store)
}

/// An error answer: an HTTP status and Confluent's `{"error_code", "message"}` body.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// Confluent's answer for a plain HTTP error, e.g. `HTTP 404 Not Found`.
    fn http(status: StatusCode) -> Self {
        let message = format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        );
        Self::new(status, u32::from(status.as_u16()), message)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, e.error_code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            error!(code = self.code, message = %self.message, "Request failed.");
        } else {
            debug!(code = self.code, message = %self.message, "Request refused.");
        }
        reply(
            self.status,
            &json!({"error_code": self.code, "message": self.message}),
        )
    }
}

type ApiResult = Result<Response, ApiError>;

fn reply(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, MEDIA_TYPE)], bytes).into_response(),
        Err(e) => {
            error!(error = %e, "Answer not serialisable.");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn ok(body: &impl Serialize) -> ApiResult {
    Ok(reply(StatusCode::OK, body))
}

/// A schema's own JSON text as the whole answer.
fn raw(text: String) -> ApiResult {
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, MEDIA_TYPE)], text).into_response())
}

/// Runs a store operation that parses schemas or writes the state file off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            50001,
            format!("Error in the backend data store: {e}"),
        )),
    }
}

/// A JSON request body, accepted with Confluent's media types or none; malformed JSON is a
/// 400, well-formed JSON of the wrong shape a 422, as Confluent answers them.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(value) = req.headers().get(header::CONTENT_TYPE) {
            let essence = value
                .to_str()
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if !ACCEPTED_MEDIA_TYPES.contains(&essence.as_str()) {
                return Err(ApiError::http(StatusCode::UNSUPPORTED_MEDIA_TYPE));
            }
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, 400, e.body_text()))?;
        serde_json::from_slice(&bytes).map(Body).map_err(|e| {
            if e.is_data() {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, 422, e.to_string())
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, 400, e.to_string())
            }
        })
    }
}

/// The query parameters the routes understand; the others are ignored.
#[derive(Debug, Default, Deserialize)]
struct Params {
    deleted: Option<String>,
    permanent: Option<String>,
    verbose: Option<String>,
    #[serde(rename = "defaultToGlobal")]
    default_to_global: Option<String>,
    #[serde(rename = "subjectPrefix")]
    subject_prefix: Option<String>,
}

fn flag(value: Option<&String>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn schema_id(id: &str) -> Result<u32, ApiError> {
    id.parse()
        .map_err(|_| ApiError::http(StatusCode::NOT_FOUND))
}

async fn root() -> ApiResult {
    ok(&json!({}))
}

async fn not_found() -> ApiError {
    ApiError::http(StatusCode::NOT_FOUND)
}

async fn method_not_allowed() -> ApiError {
    ApiError::http(StatusCode::METHOD_NOT_ALLOWED)
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    debug!(%method, path, status = response.status().as_u16(), "Request served.");
    response
}

async fn schema_types() -> ApiResult {
    ok(&["AVRO"])
}

async fn schema_by_id(State(store): State<Store>, Path(id): Path<String>) -> ApiResult {
    ok(&store.schema_by_id(schema_id(&id)?)?)
}

async fn raw_schema_by_id(State(store): State<Store>, Path(id): Path<String>) -> ApiResult {
    raw(store.schema_by_id(schema_id(&id)?)?.schema)
}

/// An id of the `/schemas/ids/{id}/versions|subjects` routes, as Confluent's registry reads it:
/// a Java `Integer` (anything else is no route: HTTP 404), with a negative one found nowhere.
fn listed_id(id: &str) -> Result<u32, ApiError> {
    let id: i32 = id
        .parse()
        .map_err(|_| ApiError::http(StatusCode::NOT_FOUND))?;
    u32::try_from(id).map_err(|_| RegistryError::SchemaNotFound.into())
}

/// Looks up the subject versions of `id`, not found answered as Confluent answers it on these
/// routes: `Schema not found`, without the id.
fn versions_listed(
    store: &Store,
    id: &str,
    params: &Params,
) -> Result<Vec<(String, u32)>, ApiError> {
    store
        .versions_of_id(listed_id(id)?, flag(params.deleted.as_ref()))
        .map_err(|e| match e {
            RegistryError::SchemaIdNotFound(_) => RegistryError::SchemaNotFound.into(),
            other => other.into(),
        })
}

async fn versions_of_id(
    State(store): State<Store>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult {
    let pairs = versions_listed(&store, &id, &params)?;
    let body: Vec<_> = pairs
        .into_iter()
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect();
    ok(&body)
}

async fn subjects_of_id(
    State(store): State<Store>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult {
    let pairs = versions_listed(&store, &id, &params)?;
    let mut subjects: Vec<String> = pairs.into_iter().map(|(subject, _)| subject).collect();
    subjects.dedup();
    ok(&subjects)
}

async fn subjects(State(store): State<Store>, Query(params): Query<Params>) -> ApiResult {
    ok(&store.subjects(
        flag(params.deleted.as_ref()),
        params.subject_prefix.as_deref(),
    ))
}

async fn register(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Body(request): Body<SchemaRequest>,
) -> ApiResult {
    let registration = {
        let (store, subject) = (store.clone(), subject.clone());
        blocking(move || store.register(&subject, &request)).await?
    };
    let (id, version) = (registration.id, registration.version);
    if registration.created {
        info!(subject, id, version, "Schema registered.");
    } else {
        debug!(subject, id, version, "Schema already registered.");
    }
    ok(&json!({"id": id}))
}

async fn lookup(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(params): Query<Params>,
    Body(request): Body<SchemaRequest>,
) -> ApiResult {
    let deleted = flag(params.deleted.as_ref());
    ok(&blocking(move || store.lookup(&subject, &request, deleted)).await?)
}

async fn delete_subject(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult {
    let permanent = flag(params.permanent.as_ref());
    let deleted = {
        let (store, subject) = (store.clone(), subject.clone());
        blocking(move || store.delete_subject(&subject, permanent)).await?
    };
    info!(subject, permanent, versions = ?deleted, "Subject deleted.");
    ok(&deleted)
}

async fn versions(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult {
    ok(&store.versions(&subject, flag(params.deleted.as_ref()))?)
}

async fn version(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult {
    let selector: VersionSelector = version.parse()?;
    ok(&store.version(&subject, selector, flag(params.deleted.as_ref()))?)
}

async fn raw_version_schema(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult {
    let selector: VersionSelector = version.parse()?;
    raw(store
        .version(&subject, selector, flag(params.deleted.as_ref()))?
        .schema)
}

async fn referenced_by(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let selector: VersionSelector = version.parse()?;
    ok(&store.referenced_by(&subject, selector)?)
}

async fn delete_version(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult {
    let selector: VersionSelector = version.parse()?;
    let permanent = flag(params.permanent.as_ref());
    let deleted = {
        let (store, subject) = (store.clone(), subject.clone());
        blocking(move || store.delete_version(&subject, selector, permanent)).await?
    };
    info!(subject, version = deleted, permanent, "Version deleted.");
    ok(&deleted)
}

/// The body of `PUT /config` and `PUT /config/{subject}`.
#[derive(Debug, Deserialize)]
struct ConfigUpdate {
    compatibility: Option<String>,
}

impl ConfigUpdate {
    fn level(&self) -> Result<CompatibilityLevel, ApiError> {
        self.compatibility
            .as_deref()
            .and_then(|level| level.parse().ok())
            .ok_or_else(|| RegistryError::InvalidCompatibilityLevel.into())
    }
}

async fn global_config(State(store): State<Store>) -> ApiResult {
    ok(&json!({"compatibilityLevel": store.global_compatibility()}))
}

async fn set_global_config(
    State(store): State<Store>,
    Body(update): Body<ConfigUpdate>,
) -> ApiResult {
    let level = update.level()?;
    {
        let store = store.clone();
        blocking(move || store.set_global_compatibility(level)).await?;
    }
    info!(compatibility = %level, "Global compatibility set.");
    ok(&json!({"compatibility": level}))
}

async fn reset_global_config(State(store): State<Store>) -> ApiResult {
    let previous = blocking(move || store.reset_global_compatibility()).await?;
    info!(previous = %previous, "Global compatibility reset.");
    ok(&json!({"compatibilityLevel": previous}))
}

async fn subject_config(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult {
    let level = match store.subject_compatibility(&subject) {
        Some(level) => level,
        None if flag(params.default_to_global.as_ref()) => store.global_compatibility(),
        None => return Err(RegistryError::SubjectCompatibilityNotConfigured(subject).into()),
    };
    ok(&json!({"compatibilityLevel": level}))
}

async fn set_subject_config(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Body(update): Body<ConfigUpdate>,
) -> ApiResult {
    let level = update.level()?;
    {
        let (store, subject) = (store.clone(), subject.clone());
        blocking(move || store.set_subject_compatibility(&subject, level)).await?;
    }
    info!(subject, compatibility = %level, "Subject compatibility set.");
    ok(&json!({"compatibility": level}))
}

async fn delete_subject_config(
    State(store): State<Store>,
    Path(subject): Path<String>,
) -> ApiResult {
    let previous = {
        let (store, subject) = (store.clone(), subject.clone());
        blocking(move || store.delete_subject_compatibility(&subject)).await?
    };
    info!(subject, previous = %previous, "Subject compatibility removed.");
    ok(&json!({"compatibilityLevel": previous}))
}

async fn test_against_subject(
    State(store): State<Store>,
    Path(subject): Path<String>,
    Query(params): Query<Params>,
    Body(request): Body<SchemaRequest>,
) -> ApiResult {
    let messages = blocking(move || store.test_compatibility(&subject, None, &request)).await?;
    compatibility_answer(messages, flag(params.verbose.as_ref()))
}

async fn test_against_version(
    State(store): State<Store>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Query<Params>,
    Body(request): Body<SchemaRequest>,
) -> ApiResult {
    let selector: VersionSelector = version.parse()?;
    let messages =
        blocking(move || store.test_compatibility(&subject, Some(selector), &request)).await?;
    compatibility_answer(messages, flag(params.verbose.as_ref()))
}

fn compatibility_answer(messages: Vec<String>, verbose: bool) -> ApiResult {
    let compatible = messages.is_empty();
    if verbose {
        ok(&json!({"is_compatible": compatible, "messages": messages}))
    } else {
        ok(&json!({"is_compatible": compatible}))
    }
}
