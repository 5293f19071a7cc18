//! `GET /api/v1/agents/{agent_id}/deployments/{deployment_id}/code` and
//! `GET /api/v1/agents/{agent_id}/diff?from=&to=` (CONTRACT.md "Inspecting versions").
//!
//! The code route answers the exact bytes: `text/plain; charset=utf-8` when they are UTF-8,
//! else `application/octet-stream`, with `x-content-type-options: nosniff` so a browser
//! never runs them, and the SHA-256 in `x-bluegreen-sha256` (and as the `ETag`). Unknown
//! agents and deployments are 404; a version whose bytes are gone (pruned by retention) or
//! were never kept (FAILED, ABORTED) is 410.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::inspect::{diff, VersionError, Versions};

type ApiResult = Result<Response, ApiError>;

fn version_error(err: &VersionError) -> ApiError {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ApiError::new(status, err.kind_name(), err.to_string())
}

fn bad_path(e: &PathRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_input",
        format!("invalid path: {}", e.body_text()),
    )
}

/// The bytes of one version.
pub async fn code(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let Path((agent_id, deployment_id)) = path.map_err(|e| bad_path(&e))?;
    let service = state.service.clone();
    let version = tokio::task::spawn_blocking(move || {
        let versions = Versions::of(&service, &agent_id)?;
        let record = versions.record(Some(&deployment_id))?.clone();
        versions.bytes(&record)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string()))?
    .map_err(|e| version_error(&e))?;
    let content_type = if std::str::from_utf8(&version.bytes).is_ok() {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    let mut response = version.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(sha) = HeaderValue::from_str(&version.record.sha256) {
        headers.insert("x-bluegreen-sha256", sha);
    }
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", version.record.sha256)) {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

/// The diff JSON `{"agent_id","from","to","diff"}`; `from` defaults to the version before
/// `to`, `to` to LIVE (an empty parameter is the default too).
pub async fn diff(
    State(state): State<AppState>,
    agent: Result<Path<String>, PathRejection>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> ApiResult {
    let Path(agent_id) = agent.map_err(|e| bad_path(&e))?;
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_input",
            format!("invalid query: {}", e.body_text()),
        )
    })?;
    let given = |v: Option<String>| v.filter(|s| !s.is_empty());
    let (from, to) = (given(query.from), given(query.to));
    let service = state.service.clone();
    let diff = tokio::task::spawn_blocking(move || {
        let versions = Versions::of(&service, &agent_id)?;
        diff::between(&versions, from.as_deref(), to.as_deref())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", e.to_string()))?
    .map_err(|e| version_error(&e))?;
    Ok(Json(diff.to_json()).into_response())
}
