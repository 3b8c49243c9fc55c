//! `/ops/v1/webhooks`: every tenant's webhook endpoints and deliveries for
//! operators: find failed deliveries (`/ops/v1/webhooks/deliveries?status=failed`),
//! replay them, disable or re-enable an endpoint, remove one.

use crate::body::Json;
use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::Response,
};

use super::ANY_TENANT;
use crate::{
    Upstreams,
    body::JsonBody,
    error::Error,
    extract::{Caller, ObjectId},
    openapi::{BodyRefusals, Refusals},
    webhooks::{self, DeliveryPage, ReplayRequest, ReplayView, WebhookList, WebhookPatch, WebhookView},
};

/// Every tenant's webhook endpoints.
#[utoipa::path(get, path = "/webhooks", tag = "ops", operation_id = "list_ops_webhooks",
    responses((status = 200, description = "Done", body = WebhookList), Refusals),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
pub async fn list(State(upstreams): State<Upstreams>) -> Result<Json<WebhookList>, Error> {
    webhooks::list(&upstreams, ANY_TENANT.into()).await
}

/// Every tenant's webhook deliveries, newest first; status=failed lists the dead letters.
#[utoipa::path(get, path = "/webhooks/deliveries", tag = "ops", operation_id = "list_ops_webhook_deliveries",
    params(
        ("status" = Option<String>, Query, description = "pending, delivered or failed",
            pattern = "^(pending|delivered|failed)$"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query, max_length = 512)
    ),
    responses((status = 200, description = "Done", body = DeliveryPage), Refusals),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
pub async fn all_deliveries(
    State(upstreams): State<Upstreams>,
    RawQuery(query): RawQuery,
) -> Result<Json<DeliveryPage>, Error> {
    webhooks::deliveries(&upstreams, ANY_TENANT.into(), String::new(), query.as_deref()).await
}

/// A webhook endpoint of any tenant.
#[utoipa::path(get, path = "/webhooks/{id}", tag = "ops", operation_id = "get_ops_webhook",
    params(("id" = String, Path, description = "Endpoint id, whe_...")),
    responses(
        (status = 200, description = "Done", body = WebhookView),
        (status = 404, description = "No such endpoint"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
pub async fn get(State(upstreams): State<Upstreams>, ObjectId(id): ObjectId) -> Result<Json<WebhookView>, Error> {
    webhooks::get(&upstreams, ANY_TENANT.into(), id).await
}

/// Changes, disables or enables an endpoint of any tenant.
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "ops", operation_id = "update_ops_webhook",
    params(("id" = String, Path, description = "Endpoint id, whe_...")),
    request_body = WebhookPatch,
    responses(
        (status = 200, description = "Done", body = WebhookView),
        (status = 404, description = "No such endpoint"),
        (status = 422, description = "Unknown event type or refused URL"),
        BodyRefusals, Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
pub async fn update(
    State(upstreams): State<Upstreams>,
    Caller(caller): Caller,
    ObjectId(id): ObjectId,
    JsonBody(patch): JsonBody<WebhookPatch>,
) -> Result<Json<WebhookView>, Error> {
    webhooks::update(&upstreams, ANY_TENANT.into(), id, patch, &caller.subject).await
}

/// Removes an endpoint of any tenant and its delivery log.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "ops", operation_id = "delete_ops_webhook",
    params(("id" = String, Path, description = "Endpoint id, whe_...")),
    responses(
        (status = 204, description = "Done", body = ()),
        (status = 404, description = "No such endpoint"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
pub async fn delete(
    State(upstreams): State<Upstreams>,
    Caller(caller): Caller,
    ObjectId(id): ObjectId,
) -> Result<StatusCode, Error> {
    webhooks::delete(&upstreams, ANY_TENANT.into(), id, &caller.subject).await
}

/// An endpoint's delivery log, newest first.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "ops", operation_id = "list_ops_endpoint_deliveries",
    params(
        ("id" = String, Path, description = "Endpoint id, whe_..."),
        ("status" = Option<String>, Query, description = "pending, delivered or failed",
            pattern = "^(pending|delivered|failed)$"),
        ("page_size" = Option<u32>, Query, minimum = 1, maximum = 100),
        ("page_token" = Option<String>, Query, max_length = 512)
    ),
    responses(
        (status = 200, description = "Done", body = DeliveryPage),
        (status = 404, description = "No such endpoint"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
pub async fn deliveries(
    State(upstreams): State<Upstreams>,
    ObjectId(id): ObjectId,
    RawQuery(query): RawQuery,
) -> Result<Json<DeliveryPage>, Error> {
    webhooks::deliveries(&upstreams, ANY_TENANT.into(), id, query.as_deref()).await
}

/// Sends events again to an endpoint of any tenant: one by event_id, or every subscribed one since a time.
#[utoipa::path(post, path = "/webhooks/{id}/replay", tag = "ops", operation_id = "replay_ops_webhook",
    params(("id" = String, Path, description = "Endpoint id, whe_...")),
    request_body = ReplayRequest,
    responses(
        (status = 202, description = "Done", body = ReplayView),
        (status = 404, description = "No such endpoint or event"),
        (status = 422, description = "Neither or both of event_id and since, or a bad time"),
        BodyRefusals, Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
pub async fn replay(
    State(upstreams): State<Upstreams>,
    ObjectId(id): ObjectId,
    JsonBody(body): JsonBody<ReplayRequest>,
) -> Result<Response, Error> {
    webhooks::replay(&upstreams, ANY_TENANT.into(), id, body).await
}
