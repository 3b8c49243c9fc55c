//! `/partner/v1/webhooks`: a partner's webhook endpoints (scope
//! `webhooks:manage`): subscribe, change, remove, rotate the secret, send
//! a test event, read the delivery log and replay from it. The partner
//! receives its own orders' events and the catalogue's.

use axum::{
    Json,
    extract::{RawQuery, State},
    http::StatusCode,
    response::Response,
};

use super::Partner;
use crate::{
    Upstreams,
    body::{JsonBody, OptionalJsonBody},
    error::Error,
    extract::ObjectId,
    webhooks::{
        self, DeliveryPage, ReplayRequest, WebhookCreated, WebhookList, WebhookPatch, WebhookRequest, WebhookView,
    },
};

/// `POST /partner/v1/webhooks` → 201 with the secret, shown once.
#[tracing::instrument(skip_all, fields(tenant = %partner.tenant))]
pub async fn create(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    JsonBody(body): JsonBody<WebhookRequest>,
) -> Result<Response, Error> {
    webhooks::create(&upstreams, partner.tenant, body).await
}

/// `GET /partner/v1/webhooks`
pub async fn list(State(upstreams): State<Upstreams>, partner: Partner) -> Result<Json<WebhookList>, Error> {
    webhooks::list(&upstreams, partner.tenant).await
}

/// `GET /partner/v1/webhooks/{id}`
pub async fn get(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
) -> Result<Json<WebhookView>, Error> {
    webhooks::get(&upstreams, partner.tenant, id).await
}

/// `PATCH /partner/v1/webhooks/{id}`
pub async fn update(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
    JsonBody(patch): JsonBody<WebhookPatch>,
) -> Result<Json<WebhookView>, Error> {
    webhooks::update(&upstreams, partner.tenant, id, patch).await
}

/// `DELETE /partner/v1/webhooks/{id}` → 204.
pub async fn delete(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
) -> Result<StatusCode, Error> {
    webhooks::delete(&upstreams, partner.tenant, id).await
}

/// `POST /partner/v1/webhooks/{id}/rotate-secret`
pub async fn rotate_secret(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
    OptionalJsonBody(_): OptionalJsonBody<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<WebhookCreated>, Error> {
    webhooks::rotate_secret(&upstreams, partner.tenant, id).await
}

/// `POST /partner/v1/webhooks/{id}/test` → 202 with the queued delivery.
pub async fn test(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
) -> Result<Response, Error> {
    webhooks::test(&upstreams, partner.tenant, id).await
}

/// `GET /partner/v1/webhooks/{id}/deliveries`
pub async fn deliveries(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
    RawQuery(query): RawQuery,
) -> Result<Json<DeliveryPage>, Error> {
    webhooks::deliveries(&upstreams, partner.tenant, id, query.as_deref()).await
}

/// `POST /partner/v1/webhooks/{id}/replay` → 202.
pub async fn replay(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
    JsonBody(body): JsonBody<ReplayRequest>,
) -> Result<Response, Error> {
    webhooks::replay(&upstreams, partner.tenant, id, body).await
}
