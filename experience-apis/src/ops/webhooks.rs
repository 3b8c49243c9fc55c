//! `/ops/v1/webhooks`: every tenant's webhook endpoints and deliveries for
//! operators: find failed deliveries (`/ops/v1/webhooks/deliveries?status=failed`),
//! replay them, disable or re-enable an endpoint, remove one.

use axum::{
    Json,
    extract::{RawQuery, State},
    http::StatusCode,
    response::Response,
};

use super::ANY_TENANT;
use crate::{
    Upstreams,
    body::JsonBody,
    error::Error,
    extract::ObjectId,
    webhooks::{self, DeliveryPage, ReplayRequest, WebhookList, WebhookPatch, WebhookView},
};

/// `GET /ops/v1/webhooks`: every tenant's endpoints.
pub async fn list(State(upstreams): State<Upstreams>) -> Result<Json<WebhookList>, Error> {
    webhooks::list(&upstreams, ANY_TENANT.into()).await
}

/// `GET /ops/v1/webhooks/deliveries`: every tenant's delivery log.
pub async fn all_deliveries(
    State(upstreams): State<Upstreams>,
    RawQuery(query): RawQuery,
) -> Result<Json<DeliveryPage>, Error> {
    webhooks::deliveries(&upstreams, ANY_TENANT.into(), String::new(), query.as_deref()).await
}

/// `GET /ops/v1/webhooks/{id}`
pub async fn get(State(upstreams): State<Upstreams>, ObjectId(id): ObjectId) -> Result<Json<WebhookView>, Error> {
    webhooks::get(&upstreams, ANY_TENANT.into(), id).await
}

/// `PATCH /ops/v1/webhooks/{id}`
pub async fn update(
    State(upstreams): State<Upstreams>,
    ObjectId(id): ObjectId,
    JsonBody(patch): JsonBody<WebhookPatch>,
) -> Result<Json<WebhookView>, Error> {
    webhooks::update(&upstreams, ANY_TENANT.into(), id, patch).await
}

/// `DELETE /ops/v1/webhooks/{id}` → 204.
pub async fn delete(State(upstreams): State<Upstreams>, ObjectId(id): ObjectId) -> Result<StatusCode, Error> {
    webhooks::delete(&upstreams, ANY_TENANT.into(), id).await
}

/// `GET /ops/v1/webhooks/{id}/deliveries`
pub async fn deliveries(
    State(upstreams): State<Upstreams>,
    ObjectId(id): ObjectId,
    RawQuery(query): RawQuery,
) -> Result<Json<DeliveryPage>, Error> {
    webhooks::deliveries(&upstreams, ANY_TENANT.into(), id, query.as_deref()).await
}

/// `POST /ops/v1/webhooks/{id}/replay` → 202.
pub async fn replay(
    State(upstreams): State<Upstreams>,
    ObjectId(id): ObjectId,
    JsonBody(body): JsonBody<ReplayRequest>,
) -> Result<Response, Error> {
    webhooks::replay(&upstreams, ANY_TENANT.into(), id, body).await
}
