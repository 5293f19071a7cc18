//! The routes of CONTRACT.md's HTTP API and how their errors become status codes.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bluegreen_core::{AgentId, DeployOutcome, DeployRequest, Error};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::{exit, json};

/// An error answer: a status code and the contract's error document
/// `{"status":"failed","error","error_kind","exit_code"}`.
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    /// An error of the server itself (not from the core), in the same shape.
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        let exit_code = if status.is_server_error() {
            exit::IO
        } else {
            exit::BAD_INPUT
        };
        Self {
            status,
            body: json!({
                "status": "failed",
                "error": message.into(),
                "error_kind": kind,
                "exit_code": exit_code,
            }),
        }
    }

    /// A core error: its class decides the status, except an unknown agent, which is 404.
    pub fn core(err: &Error, agent_id: Option<&str>) -> Self {
        let mut body = json::error(err, agent_id);
        let status = match err {
            Error::UnknownAgent(_) => {
                body["error_kind"] = json!("not_found");
                StatusCode::NOT_FOUND
            }
            other => StatusCode::from_u16(exit::http_status_for(other.kind()))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        Self { status, body }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (send Authorization: Bearer <token>)",
        )
    }

    fn too_large(what: String) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", what)
    }

    fn busy(busy: super::work::Busy) -> Self {
        let mut error = Self::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "the server is busy: {} deployments/rollbacks were running and no turn came within {:?} (lock_timeout); retry later",
                busy.max_running, busy.waited
            ),
        );
        error.body["exit_code"] = json!(exit::CONFLICT);
        error
    }

    fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "io",
            "the server is shutting down; the operation was cancelled and recovery cleans up",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

/// Parses a JSON body ourselves so every malformed or incomplete body is a 400 with our
/// error document (axum's `Json` answers 415/422 in plain text) and the content type is
/// not required (the prototype's clients do not always send one).
fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let bytes = match body {
        Ok(bytes) => bytes,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::too_large(
                "request body over the size limit of the server".into(),
            ))
        }
        Err(rejection) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_input",
                format!("unreadable request body: {}", rejection.body_text()),
            ))
        }
    };
    let bytes: &[u8] = if empty_ok && bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    let invalid = |e: serde_json::Error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_input",
            format!("invalid JSON body: {e}"),
        )
    };
    // Via `Value` so only an object is accepted (serde would also take a JSON array for a
    // struct, by position).
    let value: Value = serde_json::from_slice(bytes).map_err(invalid)?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_input",
            "invalid JSON body: expected an object",
        ));
    }
    serde_json::from_value(value).map_err(invalid)
}

fn path_agent(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(agent)| agent).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_input",
            format!("invalid agent id in path: {}", e.body_text()),
        )
    })
}

/// The agent label for metrics: the id when valid, so hostile ids cannot grow the label set.
fn agent_label(agent_id: &str) -> String {
    match AgentId::new(agent_id) {
        Ok(agent) => agent.to_string(),
        Err(_) => "(invalid)".to_owned(),
    }
}

#[derive(Deserialize)]
pub struct HotswapBody {
    agent_id: String,
    code: String,
    file_path: String,
}

#[derive(Deserialize)]
pub struct DeploymentBody {
    code: String,
    file_path: Option<String>,
}

#[derive(Deserialize)]
pub struct RollbackBody {
    file_path: Option<String>,
    to: Option<String>,
}

/// `POST /api/v1/dev/hotswap` — the prototype's endpoint.
pub async fn hotswap(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body: HotswapBody = parse_body(body, false)?;
    deploy(state, body.agent_id, body.code, Some(body.file_path)).await
}

/// `POST /api/v1/agents/{agent_id}/deployments`.
pub async fn create_deployment(
    State(state): State<AppState>,
    agent: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let agent_id = path_agent(agent)?;
    let body: DeploymentBody = parse_body(body, false)?;
    deploy(state, agent_id, body.code, body.file_path).await
}

async fn deploy(
    state: AppState,
    agent_id: String,
    code: String,
    file_path: Option<String>,
) -> ApiResult {
    let limit = state.service.limits().max_code_bytes;
    if code.len() > limit {
        return Err(ApiError::too_large(format!(
            "code is {} bytes, over the limit of {limit} bytes (max_code_bytes)",
            code.len()
        )));
    }
    let service = state.service.clone();
    let metrics = state.metrics.clone();
    let agent = agent_id.clone();
    let wait = state.service.limits().lock_timeout;
    let result = state
        .work
        .run_bounded(wait, async move {
            let started = Instant::now();
            let result = service
                .deploy(DeployRequest {
                    agent_id: &agent,
                    code: code.as_bytes(),
                    file_path: file_path.as_deref(),
                    chain: None,
                })
                .await;
            metrics.deployment(&agent_label(&agent), &result, started.elapsed());
            match &result {
                Ok(report) => tracing::info!(
                    agent = %agent,
                    deployment_id = %report.deployment_id,
                    outcome = ?report.outcome,
                    "deployment finished"
                ),
                Err(e) => tracing::warn!(agent = %agent, error = %e, "deployment refused"),
            }
            result
        })
        .await
        .map_err(ApiError::busy)?
        .ok_or_else(ApiError::shutting_down)?;
    match result {
        Ok(report) => {
            let status = match report.outcome {
                DeployOutcome::Live => StatusCode::OK,
                DeployOutcome::Rejected | DeployOutcome::RolledBack => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
            };
            Ok((status, Json(json::deploy(&report))).into_response())
        }
        Err(e) => Err(ApiError::core(&e, Some(&agent_id))),
    }
}

/// `POST /api/v1/agents/{agent_id}/rollback`.
pub async fn rollback(
    State(state): State<AppState>,
    agent: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let agent_id = path_agent(agent)?;
    let body: RollbackBody = parse_body(body, true)?;
    let service = state.service.clone();
    let metrics = state.metrics.clone();
    let agent = agent_id.clone();
    let wait = state.service.limits().lock_timeout;
    let result = state
        .work
        .run_bounded(wait, async move {
            let result = service
                .rollback(&agent, body.file_path.as_deref(), body.to.as_deref())
                .await;
            let status = match &result {
                Ok(_) => "success",
                Err(e) => exit::kind_name(e.kind()),
            };
            metrics.rollback(&agent_label(&agent), status);
            match &result {
                Ok(report) => tracing::info!(
                    agent = %agent,
                    rolled_back = %report.rolled_back.deployment_id,
                    "rollback finished"
                ),
                Err(e) => tracing::warn!(agent = %agent, error = %e, "rollback refused"),
            }
            result
        })
        .await
        .map_err(ApiError::busy)?
        .ok_or_else(ApiError::shutting_down)?;
    match result {
        Ok(report) => Ok(Json(json::rollback(&report)).into_response()),
        Err(e) => Err(ApiError::core(&e, Some(&agent_id))),
    }
}

/// `GET /api/v1/agents` — the registry of live versions.
pub async fn status(State(state): State<AppState>) -> ApiResult {
    let live = state
        .service
        .active_versions()
        .map_err(|e| ApiError::core(&e, None))?;
    Ok(Json(json::status(&live)).into_response())
}

/// `GET /api/v1/agents/{agent_id}` — the status document narrowed to one agent.
pub async fn agent_status(
    State(state): State<AppState>,
    agent: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let agent_id = path_agent(agent)?;
    let agent = AgentId::new(&agent_id).map_err(|e| ApiError::core(&e, Some(&agent_id)))?;
    let mut live = state
        .service
        .active_versions()
        .map_err(|e| ApiError::core(&e, Some(&agent_id)))?;
    live.retain(|id, _| *id == agent);
    if live.is_empty() {
        // Known but with nothing live (e.g. only rejected attempts) is still known.
        state
            .service
            .history(&agent_id)
            .map_err(|e| ApiError::core(&e, Some(&agent_id)))?;
    }
    Ok(Json(json::status(&live)).into_response())
}

/// `GET /api/v1/agents/{agent_id}/history` — every deployment, newest first.
pub async fn history(
    State(state): State<AppState>,
    agent: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let agent_id = path_agent(agent)?;
    let deployments = state
        .service
        .history(&agent_id)
        .map_err(|e| ApiError::core(&e, Some(&agent_id)))?;
    Ok(Json(json::history(&agent_id, &deployments)).into_response())
}

/// `GET /healthz` — open to all; says the process serves requests.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /metrics` — Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(state.work.running()) + &state.events.metrics(),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "bad_input",
        "method not allowed on this route",
    )
}
