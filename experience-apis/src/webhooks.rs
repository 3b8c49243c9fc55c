//! The webhook JSON both audiences share (partners manage their own
//! endpoints under `/partner/v1/webhooks`, operators every tenant's under
//! `/ops/v1/webhooks`) and the calls behind it, each confined to a tenant
//! (empty: any, for operators) by the process tier. The calls that change
//! an endpoint name the caller (`actor`: the principal's subject), which
//! the process tier writes on its audit trail.

use crate::body::Json;
use crate::orders::rfc3339_ms as rfc3339;
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use erp_connect_proto::{
    acting,
    webhooks::v1::{self as pb, webhook_service_client::WebhookServiceClient},
};
use platform::channel::GrpcChannel;
use serde::{Deserialize, Serialize};

use crate::{Upstreams, error::Error, page::PageQuery};

/// The process tier's webhook service.
pub fn client(upstreams: &Upstreams) -> WebhookServiceClient<GrpcChannel> {
    WebhookServiceClient::new(upstreams.process.clone())
}

/// A webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    /// `whe_...`.
    pub id: String,
    /// The partner tenant it belongs to.
    pub tenant: String,
    /// Where events are `POST`ed.
    pub url: String,
    /// Event types and patterns (`order.*`) subscribed to.
    pub events: Vec<String>,
    /// The owner's note.
    pub description: String,
    /// `enabled` or `disabled`.
    pub status: String,
    /// Why it is disabled (410 Gone, failing for days, by its owner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Until when the secret before the last rotation still signs beside
    /// the current one, RFC 3339; absent when none does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
}

impl From<pb::Endpoint> for WebhookView {
    fn from(e: pb::Endpoint) -> Self {
        Self {
            id: e.id,
            tenant: e.tenant,
            url: e.url,
            events: e.events,
            description: e.description,
            status: e.status,
            disabled_reason: Some(e.disabled_reason).filter(|r| !r.is_empty()),
            created_at: rfc3339(e.created_at_ms),
            updated_at: rfc3339(e.updated_at_ms),
            previous_secret_expires_at: (e.previous_secret_expires_at_ms > 0)
                .then(|| rfc3339(e.previous_secret_expires_at_ms)),
        }
    }
}

/// A new endpoint or a rotated secret: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WebhookCreated {
    /// The endpoint.
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_...`: verify each delivery's `webhook-signature` with it.
    pub secret: String,
}

impl From<pb::EndpointWithSecret> for WebhookCreated {
    fn from(e: pb::EndpointWithSecret) -> Self {
        Self { webhook: e.endpoint.unwrap_or_default().into(), secret: e.secret }
    }
}

/// Endpoints, oldest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// The endpoints.
    pub webhooks: Vec<WebhookView>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// RFC 3339.
    pub at: String,
    /// The endpoint's HTTP status; absent when it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why it failed: the connection error or the start of the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// From the request to the answer.
    pub duration_ms: i64,
}

/// One event for one endpoint, with every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// `dlv_...`.
    pub id: String,
    /// The endpoint.
    pub webhook_id: String,
    /// The endpoint's tenant.
    pub tenant: String,
    /// The `webhook-id` header: the same on every attempt and replay.
    pub event_id: String,
    /// e.g. `order.confirmed`.
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (attempts exhausted; replay it).
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// When the next attempt is due, RFC 3339; pending deliveries only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// Oldest first.
    pub attempts: Vec<AttemptView>,
}

impl From<pb::Delivery> for DeliveryView {
    fn from(d: pb::Delivery) -> Self {
        Self {
            id: d.id,
            webhook_id: d.endpoint_id,
            tenant: d.tenant,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status,
            created_at: rfc3339(d.created_at_ms),
            next_attempt_at: (d.next_attempt_at_ms > 0).then(|| rfc3339(d.next_attempt_at_ms)),
            attempts: d
                .attempts
                .into_iter()
                .map(|a| AttemptView {
                    at: rfc3339(a.at_ms),
                    http_status: u16::try_from(a.http_status).ok().filter(|s| *s > 0),
                    error: Some(a.error).filter(|e| !e.is_empty()),
                    duration_ms: a.duration_ms,
                })
                .collect(),
        }
    }
}

/// One page of the delivery log, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    /// The deliveries.
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `POST /partner/v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// `https://...` (dev mode also allows `http://` to loopback).
    #[schema(min_length = 1, max_length = 2000)]
    pub url: String,
    /// Event types or `<aggregate>.*` patterns, e.g. `["order.*", "invoice.paid"]`; see `/asyncapi.json`.
    #[schema(min_items = 1, max_items = 50)]
    pub events: Vec<String>,
    /// A note for the owner.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: String,
}

/// `PATCH .../webhooks/{id}`: the fields to change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    /// A new URL, checked as on creation.
    #[schema(min_length = 1, max_length = 2000)]
    pub url: Option<String>,
    /// The new subscription.
    #[schema(min_items = 1, max_items = 50)]
    pub events: Option<Vec<String>>,
    /// A new note.
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// `enabled` (again, after it was disabled) or `disabled`.
    pub status: Option<WebhookStatus>,
}

/// An endpoint's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    /// Deliveries are sent.
    Enabled,
    /// Deliveries wait.
    Disabled,
}

/// `POST .../webhooks/{id}/replay`: exactly one of `event_id` and `since`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Send this event again (`evt_...`, the `webhook-id` of a delivery).
    #[schema(max_length = 100)]
    pub event_id: Option<String>,
    /// Send every subscribed event since then again, RFC 3339.
    pub since: Option<String>,
}

/// How many events a replay queued.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplayView {
    /// Events queued again.
    pub replayed: i32,
}

/// Creates an endpoint for `tenant`, by `actor`.
pub async fn create(
    upstreams: &Upstreams,
    tenant: String,
    body: WebhookRequest,
    actor: &str,
) -> Result<Response, Error> {
    let request =
        pb::CreateEndpointRequest { tenant, url: body.url, events: body.events, description: body.description };
    let created = client(upstreams).create_endpoint(acting::request(request, actor)).await?.into_inner();
    Ok((StatusCode::CREATED, Json(WebhookCreated::from(created))).into_response())
}

/// The endpoints of `tenant` (empty: every tenant's).
pub async fn list(upstreams: &Upstreams, tenant: String) -> Result<Json<WebhookList>, Error> {
    let found = client(upstreams).list_endpoints(pb::ListEndpointsRequest { tenant }).await?.into_inner();
    Ok(Json(WebhookList { webhooks: found.endpoints.into_iter().map(Into::into).collect() }))
}

const NO_SUCH: &str = "no such webhook";

/// One endpoint of `tenant`.
pub async fn get(upstreams: &Upstreams, tenant: String, id: String) -> Result<Json<WebhookView>, Error> {
    let found = client(upstreams).get_endpoint(pb::EndpointRef { tenant, id }).await.map_err(Error::lookup(NO_SUCH))?;
    Ok(Json(found.into_inner().into()))
}

/// Changes an endpoint of `tenant`, by `actor`.
pub async fn update(
    upstreams: &Upstreams,
    tenant: String,
    id: String,
    patch: WebhookPatch,
    actor: &str,
) -> Result<Json<WebhookView>, Error> {
    let request = pb::UpdateEndpointRequest {
        tenant,
        id,
        url: patch.url,
        events: patch.events.map(|names| pb::EventTypes { names }),
        description: patch.description,
        status: patch.status.map(|s| match s {
            WebhookStatus::Enabled => "enabled".to_owned(),
            WebhookStatus::Disabled => "disabled".to_owned(),
        }),
    };
    let updated =
        client(upstreams).update_endpoint(acting::request(request, actor)).await.map_err(Error::lookup(NO_SUCH))?;
    Ok(Json(updated.into_inner().into()))
}

/// Removes an endpoint of `tenant` with its delivery log, by `actor`.
pub async fn delete(upstreams: &Upstreams, tenant: String, id: String, actor: &str) -> Result<StatusCode, Error> {
    let request = acting::request(pb::EndpointRef { tenant, id }, actor);
    client(upstreams).delete_endpoint(request).await.map_err(Error::lookup(NO_SUCH))?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret for an endpoint of `tenant`, by `actor`.
pub async fn rotate_secret(
    upstreams: &Upstreams,
    tenant: String,
    id: String,
    actor: &str,
) -> Result<Json<WebhookCreated>, Error> {
    let request = acting::request(pb::EndpointRef { tenant, id }, actor);
    let rotated = client(upstreams).rotate_secret(request).await.map_err(Error::lookup(NO_SUCH))?;
    Ok(Json(rotated.into_inner().into()))
}

/// Queues a `webhook.test` event.
pub async fn test(upstreams: &Upstreams, tenant: String, id: String) -> Result<Response, Error> {
    let queued = client(upstreams).send_test(pb::EndpointRef { tenant, id }).await.map_err(Error::lookup(NO_SUCH))?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryView::from(queued.into_inner()))).into_response())
}

/// The delivery log of `tenant`, of one endpoint or all, filtered by
/// `status` (query `status=pending|delivered|failed`).
pub async fn deliveries(
    upstreams: &Upstreams,
    tenant: String,
    endpoint_id: String,
    query: Option<&str>,
) -> Result<Json<DeliveryPage>, Error> {
    let mut status = String::new();
    let page = PageQuery::parse_with(query, |key, value| {
        (key == "status").then(|| {
            status = value.to_owned();
            if ["pending", "delivered", "failed"].contains(&value) {
                Ok(())
            } else {
                Err("must be pending, delivered or failed".to_owned())
            }
        })
    })?;
    let request = pb::ListDeliveriesRequest {
        tenant,
        endpoint_id,
        status,
        page_token: page.page_token.clone().unwrap_or_default(),
        page_size: page.page_size(),
    };
    let found = client(upstreams).list_deliveries(request).await.map_err(|status| {
        if status.code() == tonic::Code::NotFound { Error::NotFound(NO_SUCH) } else { Error::from_query_status(status) }
    })?;
    let found = found.into_inner();
    Ok(Json(DeliveryPage {
        deliveries: found.deliveries.into_iter().map(Into::into).collect(),
        next_page_token: Some(found.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// Sends events again to an endpoint of `tenant`.
pub async fn replay(upstreams: &Upstreams, tenant: String, id: String, body: ReplayRequest) -> Result<Response, Error> {
    let invalid = |message: &str| {
        Error::InvalidInput(vec![platform::problem::FieldError { field: "since".into(), message: message.into() }])
    };
    let since_ms = match &body.since {
        None => 0,
        Some(text) => {
            let at = humantime::parse_rfc3339_weak(text)
                .map_err(|_| invalid("must be an RFC 3339 time, e.g. 2026-12-06T10:00:00Z"))?;
            let ms = at.duration_since(std::time::UNIX_EPOCH).map_err(|_| invalid("must be after 1970"))?.as_millis();
            i64::try_from(ms).map_err(|_| invalid("is too far in the future"))?.max(1)
        }
    };
    let request = pb::ReplayRequest { tenant, endpoint_id: id, event_id: body.event_id.unwrap_or_default(), since_ms };
    let done = client(upstreams).replay(request).await.map_err(Error::lookup("no such webhook or event"))?;
    Ok((StatusCode::ACCEPTED, Json(ReplayView { replayed: done.into_inner().replayed })).into_response())
}
