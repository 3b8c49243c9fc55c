//! The admin API of partner API keys, answered by the gateway itself (it
//! owns the keys) under `/ops/v1/keys`, for callers with the scope `ops`.
//! Each operation leaves one audit line (who, what, which key, outcome),
//! and each change a row on the audit trail (see [`crate::key_store`]),
//! which `GET /ops/v1/audit` reads back.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Request, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::StatusCode;
use platform::problem::Problem;
use serde::Deserialize;

use crate::key_store::{self, Error, KeyRecord, NewKey, audit};

/// Largest admin request body.
const BODY_LIMIT: usize = 16 * 1024;

/// `POST /ops/v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    partner: String,
    scopes: Vec<String>,
    #[serde(default = "bronze")]
    plan: String,
    /// Lifetime, e.g. `90days`; none: no expiry.
    #[serde(default, with = "humantime_serde")]
    expires_in: Option<Duration>,
}

fn bronze() -> String {
    "bronze".into()
}

/// `POST /ops/v1/keys/{id}/rotate` (body optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// How long the old key keeps working, e.g. `1h`. Default 0 s.
    #[serde(default, with = "humantime_serde")]
    grace: Option<Duration>,
}

pub(crate) fn routes() -> Router<std::sync::Arc<crate::Gateway>> {
    Router::new()
        .route("/ops/v1/keys", get(list).post(create))
        .route("/ops/v1/keys/{id}/revoke", post(revoke))
        .route("/ops/v1/keys/{id}/rotate", post(rotate))
}

type Gw = State<std::sync::Arc<crate::Gateway>>;

/// The operator's subject and the key store, or the answer refusing them.
async fn operator(gw: &crate::Gateway, headers: &http::HeaderMap) -> Result<(String, key_store::KeyStore), Response> {
    let principal = gw.authenticate(headers).await?.principal;
    if !principal.has_scope("ops") {
        return Err(Problem::forbidden("this route needs the scope ops").into_response());
    }
    let store = gw.auth.api_keys().cloned().ok_or_else(|| Problem::not_found("no such route").into_response())?;
    Ok((principal.subject, store))
}

async fn body<T: serde::de::DeserializeOwned + Default>(request: Request, required: bool) -> Result<T, Response> {
    let bytes: Bytes = axum::body::to_bytes(request.into_body(), BODY_LIMIT).await.map_err(|_| {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Payload too large", "body over the limit")
            .into_response()
    })?;
    if bytes.is_empty() && !required {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}"), Vec::new()).into_response())
}

fn created(record: &KeyRecord, key: &crate::keys::ApiKey) -> Response {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("key".into(), key.expose().into());
    }
    (StatusCode::CREATED, Json(value)).into_response()
}

fn failure(err: &Error) -> Response {
    match err {
        Error::NotFound => Problem::not_found("no API key with this id").into_response(),
        Error::Revoked => {
            Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", "the API key is revoked").into_response()
        }
        Error::Invalid(reason) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-input", "Invalid input", *reason).into_response()
        }
        err if err.is_retryable() => {
            tracing::warn!(error = %err, "key store unavailable");
            Problem::unavailable("the key store is unavailable", 1).into_response()
        }
        err => {
            tracing::error!(error = %err, "key store failed");
            Problem::internal().into_response()
        }
    }
}

fn outcome<T>(result: &Result<T, Error>) -> &'static str {
    if result.is_ok() { "ok" } else { "refused" }
}

async fn create(State(gw): Gw, request: Request) -> Response {
    let (who, store) = match operator(&gw, request.headers()).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let body: CreateBody = match body::<Option<CreateBody>>(request, true).await {
        Ok(Some(body)) => body,
        Ok(None) => return Problem::bad_request("a JSON object is required", Vec::new()).into_response(),
        Err(response) => return response,
    };
    let now = key_store::now_ms().div_euclid(1000);
    let expires_at = body.expires_in.map(|d| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
    let new = NewKey { partner: body.partner, scopes: body.scopes, plan: body.plan, expires_at };
    let result = store.create(new, now, &who).await;
    audit(&who, "keys.create", result.as_ref().map_or("", |(r, _)| r.id.as_str()), outcome(&result));
    match result {
        Ok((record, key)) => created(&record, &key),
        Err(err) => failure(&err),
    }
}

async fn list(State(gw): Gw, request: Request) -> Response {
    let (_, store) = match operator(&gw, request.headers()).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    match store.list().await {
        Ok(keys) => Json(serde_json::json!({ "keys": keys })).into_response(),
        Err(err) => failure(&err),
    }
}

async fn revoke(State(gw): Gw, Path(id): Path<String>, request: Request) -> Response {
    let (who, store) = match operator(&gw, request.headers()).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let result = store.revoke(&id, key_store::now_ms().div_euclid(1000), &who).await;
    audit(&who, "keys.revoke", &id, outcome(&result));
    match result {
        Ok(record) => Json(record).into_response(),
        Err(err) => failure(&err),
    }
}

async fn rotate(State(gw): Gw, Path(id): Path<String>, request: Request) -> Response {
    let (who, store) = match operator(&gw, request.headers()).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let body: RotateBody = match body(request, false).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let grace = body.grace.unwrap_or_default();
    let result = store.rotate(&id, grace, key_store::now_ms().div_euclid(1000), &who).await;
    audit(&who, "keys.rotate", &id, outcome(&result));
    match result {
        Ok((record, key)) => created(&record, &key),
        Err(err) => failure(&err),
    }
}
