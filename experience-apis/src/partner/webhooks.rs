//! `/partner/v1/webhooks`: a partner's webhook endpoints (scope
//! `webhooks:manage`): subscribe, change, remove, rotate the secret, send
//! a test event, read the delivery log and replay from it. The partner
//! receives its own orders' events and the catalogue's.

use crate::body::Json;
use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::Response,
};

use super::Partner;
use crate::{
    Upstreams,
    body::{JsonBody, OptionalJsonBody},
    error::Error,
    extract::{Caller, ObjectId},
    openapi::{BodyRefusals, Refusals},
    webhooks::{
        self, DeliveryPage, DeliveryView, ReplayRequest, ReplayView, WebhookCreated, WebhookList, WebhookPatch,
        WebhookRequest, WebhookView,
    },
};

/// Subscribes an endpoint to events; the answer is the only time its signing secret is shown.
#[utoipa::path(post, path = "/webhooks", tag = "partner", operation_id = "create_webhook",
    request_body = WebhookRequest,
    responses(
        (status = 201, description = "Done", body = WebhookCreated),
        (status = 409, description = "The tenant has 20 endpoints already"),
        (status = 422, description = "Unknown event type, or a URL that is not https or does not resolve to a public \
            address"),
        BodyRefusals, Refusals
    ),
    security(("bearer" = ["webhooks:manage"]), ("api_key" = ["webhooks:manage"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %partner.tenant))]
pub async fn create(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    Caller(caller): Caller,
    JsonBody(body): JsonBody<WebhookRequest>,
) -> Result<Response, Error> {
    webhooks::create(&upstreams, partner.tenant, body, &caller.subject).await
}

/// The tenant's webhook endpoints.
#[utoipa::path(get, path = "/webhooks", tag = "partner", operation_id = "list_webhooks",
    responses((status = 200, description = "Done", body = WebhookList), Refusals),
    security(("bearer" = ["webhooks:manage"]), ("api_key" = ["webhooks:manage"]))
)]
pub async fn list(State(upstreams): State<Upstreams>, partner: Partner) -> Result<Json<WebhookList>, Error> {
    webhooks::list(&upstreams, partner.tenant).await
}

/// One of the tenant's webhook endpoints.
#[utoipa::path(get, path = "/webhooks/{id}", tag = "partner", operation_id = "get_webhook",
    params(("id" = String, Path, description = "Endpoint id, whe_...")),
    responses(
        (status = 200, description = "Done", body = WebhookView),
        (status = 404, description = "No such endpoint of this tenant"),
        Refusals
    ),
    security(("bearer" = ["webhooks:manage"]), ("api_key" = ["webhooks:manage"]))
)]
pub async fn get(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
) -> Result<Json<WebhookView>, Error> {
    webhooks::get(&upstreams, partner.tenant, id).await
}

/// Changes an endpoint: its URL, events, description, or status (enable it again after it was disabled).
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "partner", operation_id = "update_webhook",
    params(("id" = String, Path, description = "Endpoint id, whe_...")),
    request_body = WebhookPatch,
    responses(
        (status = 200, description = "Done", body = WebhookView),
        (status = 404, description = "No such endpoint of this tenant"),
        (status = 422, description = "Unknown event type or refused URL"),
        BodyRefusals, Refusals
    ),
    security(("bearer" = ["webhooks:manage"]), ("api_key" = ["webhooks:manage"]))
)]
pub async fn update(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    Caller(caller): Caller,
    ObjectId(id): ObjectId,
    JsonBody(patch): JsonBody<WebhookPatch>,
) -> Result<Json<WebhookView>, Error> {
    webhooks::update(&upstreams, partner.tenant, id, patch, &caller.subject).await
}

/// Removes an endpoint and its delivery log.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "partner", operation_id = "delete_webhook",
    params(("id" = String, Path, description = "Endpoint id, whe_...")),
    responses(
        (status = 204, description = "Done", body = ()),
        (status = 404, description = "No such endpoint of this tenant"),
        Refusals
    ),
    security(("bearer" = ["webhooks:manage"]), ("api_key" = ["webhooks:manage"]))
)]
pub async fn delete(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    Caller(caller): Caller,
    ObjectId(id): ObjectId,
) -> Result<StatusCode, Error> {
    webhooks::delete(&upstreams, partner.tenant, id, &caller.subject).await
}

/// Issues a new signing secret; the old one keeps signing beside it for 24 hours.
#[utoipa::path(post, path = "/webhooks/{id}/rotate-secret", tag = "partner", operation_id = "rotate_webhook_secret",
    params(("id" = String, Path, description = "Endpoint id, whe_...")),
    responses(
        (status = 200, description = "Done", body = WebhookCreated),
        (status = 404, description = "No such endpoint of this tenant"),
        (status = 413, description = "Body too large"),
        Refusals
    ),
    security(("bearer" = ["webhooks:manage"]), ("api_key" = ["webhooks:manage"]))
)]
pub async fn rotate_secret(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    Caller(caller): Caller,
    ObjectId(id): ObjectId,
    OptionalJsonBody(_): OptionalJsonBody<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<WebhookCreated>, Error> {
    webhooks::rotate_secret(&upstreams, partner.tenant, id, &caller.subject).await
}

/// Queues a webhook.test event for the endpoint.
#[utoipa::path(post, path = "/webhooks/{id}/test", tag = "partner", operation_id = "test_webhook",
    params(("id" = String, Path, description = "Endpoint id, whe_...")),
    responses(
        (status = 202, description = "Done", body = DeliveryView),
        (status = 404, description = "No such endpoint of this tenant"),
        Refusals
    ),
    security(("bearer" = ["webhooks:manage"]), ("api_key" = ["webhooks:manage"]))
)]
pub async fn test(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
) -> Result<Response, Error> {
    webhooks::test(&upstreams, partner.tenant, id).await
}

/// The endpoint's delivery log, newest first, with every attempt.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "partner", operation_id = "list_webhook_deliveries",
    params(
        ("id" = String, Path, description = "Endpoint id, whe_..."),
        ("status" = Option<String>, Query, description = "pending, delivered or failed",
            pattern = "^(pending|delivered|failed)$"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query, max_length = 512)
    ),
    responses(
        (status = 200, description = "Done", body = DeliveryPage),
        (status = 404, description = "No such endpoint of this tenant"),
        Refusals
    ),
    security(("bearer" = ["webhooks:manage"]), ("api_key" = ["webhooks:manage"]))
)]
pub async fn deliveries(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
    RawQuery(query): RawQuery,
) -> Result<Json<DeliveryPage>, Error> {
    webhooks::deliveries(&upstreams, partner.tenant, id, query.as_deref()).await
}

/// Sends events again: one by event_id, or every subscribed one since a time.
#[utoipa::path(post, path = "/webhooks/{id}/replay", tag = "partner", operation_id = "replay_webhook",
    params(("id" = String, Path, description = "Endpoint id, whe_...")),
    request_body = ReplayRequest,
    responses(
        (status = 202, description = "Done", body = ReplayView),
        (status = 404, description = "No such endpoint or event of this tenant"),
        (status = 422, description = "Neither or both of event_id and since, or a bad time"),
        BodyRefusals, Refusals
    ),
    security(("bearer" = ["webhooks:manage"]), ("api_key" = ["webhooks:manage"]))
)]
pub async fn replay(
    State(upstreams): State<Upstreams>,
    partner: Partner,
    ObjectId(id): ObjectId,
    JsonBody(body): JsonBody<ReplayRequest>,
) -> Result<Response, Error> {
    webhooks::replay(&upstreams, partner.tenant, id, body).await
}
