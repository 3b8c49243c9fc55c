//! `webhooks.v1.WebhookService`: endpoints of a tenant (a partner's, or
//! any tenant's for operators, who call with an empty tenant), their
//! delivery log, replay, secret rotation and test events.

use std::sync::Arc;

use erp_connect_proto::{acting, events, webhooks::v1 as pb};
use platform::audit;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::{
    Error, Shared,
    signature::Secret,
    store::{DeliveryRow, EndpointRow},
    target,
};
use crate::order_to_cash::clock;

/// Most endpoints one tenant may have.
pub const MAX_ENDPOINTS: usize = 20;
/// Most event types or patterns one endpoint subscribes to.
const MAX_EVENTS: usize = 50;
/// Longest description.
const MAX_DESCRIPTION: usize = 500;
/// Most events one replay by time queues.
const MAX_REPLAY: i64 = 10_000;

/// The service over the shared webhook state.
pub struct Service {
    shared: Arc<Shared>,
    wake: Arc<Notify>,
}

impl Service {
    pub(super) fn new(shared: Arc<Shared>, wake: Arc<Notify>) -> Self {
        Self { shared, wake }
    }

    async fn endpoint(&self, tenant: &str, id: &str) -> Result<EndpointRow, Error> {
        if id.is_empty() || id.len() > 100 {
            return Err(Error::NotFound("endpoint"));
        }
        self.shared.store.endpoint(tenant, id).await?.ok_or(Error::NotFound("endpoint"))
    }

    async fn check_url(&self, errors: &mut Vec<(String, String)>, url: &str) {
        if let Err(refusal) = target::check(url, self.shared.settings.policy).await {
            errors.push(("url".into(), refusal.to_string()));
        }
    }

    fn view(&self, e: &EndpointRow) -> pb::Endpoint {
        let now = clock::now_ms();
        pb::Endpoint {
            id: e.id.clone(),
            tenant: e.tenant.clone(),
            url: e.url.clone(),
            events: e.events.clone(),
            description: e.description.clone(),
            status: if e.enabled { "enabled" } else { "disabled" }.into(),
            disabled_reason: e.disabled_reason.clone(),
            created_at_ms: e.created_at,
            updated_at_ms: e.updated_at,
            previous_secret_expires_at_ms: if e.previous_secret.is_some() && e.previous_secret_until > now {
                e.previous_secret_until
            } else {
                0
            },
        }
    }
}

fn check_events(errors: &mut Vec<(String, String)>, names: &[String]) {
    if names.is_empty() {
        errors.push(("events".into(), "subscribe to at least one event type, e.g. \"order.*\"".into()));
    } else if names.len() > MAX_EVENTS {
        errors.push(("events".into(), format!("at most {MAX_EVENTS} event types")));
    }
    for (i, name) in names.iter().enumerate().take(MAX_EVENTS) {
        if let Err(why) = events::check_pattern(name) {
            errors.push((format!("events[{i}]"), why));
        }
    }
}

fn check_description(errors: &mut Vec<(String, String)>, description: &str) {
    if description.chars().count() > MAX_DESCRIPTION {
        errors.push(("description".into(), format!("must be at most {MAX_DESCRIPTION} characters")));
    }
}

fn invalid(errors: Vec<(String, String)>) -> Result<(), Error> {
    if errors.is_empty() { Ok(()) } else { Err(Error::Invalid(errors)) }
}

fn delivery(d: DeliveryRow) -> pb::Delivery {
    pb::Delivery {
        next_attempt_at_ms: if d.status == "pending" { d.next_attempt_at } else { 0 },
        id: d.id,
        endpoint_id: d.endpoint_id,
        event_id: d.event_id,
        event_type: d.event_type,
        status: d.status,
        created_at_ms: d.created_at,
        tenant: d.tenant,
        attempts: d
            .attempts
            .into_iter()
            .map(|a| pb::Attempt {
                at_ms: a.at,
                http_status: a.http_status as i32,
                error: a.error,
                duration_ms: a.duration_ms,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::webhook_service_server::WebhookService for Service {
    async fn create_endpoint(
        &self,
        request: Request<pb::CreateEndpointRequest>,
    ) -> Result<Response<pb::EndpointWithSecret>, Status> {
        let actor = acting::of(&request);
        let req = request.into_inner();
        let mut errors = Vec::new();
        if req.tenant.trim().is_empty() || req.tenant.len() > 200 {
            errors.push(("tenant".into(), "an endpoint belongs to one tenant".into()));
        }
        check_events(&mut errors, &req.events);
        check_description(&mut errors, &req.description);
        self.check_url(&mut errors, &req.url).await;
        invalid(errors)?;
        if self.shared.store.endpoints(&req.tenant).await.map_err(Error::from)?.len() >= MAX_ENDPOINTS {
            return Err(Error::Limit(format!("a tenant may have at most {MAX_ENDPOINTS} webhook endpoints")).into());
        }
        let now = clock::now_ms();
        let id = format!("whe_{}", ulid::Ulid::new());
        let secret = Secret::generate().map_err(|_| Error::Vault(super::vault::Error::Random))?;
        let row = EndpointRow {
            secret: self.shared.vault.seal(&id, &secret).map_err(Error::from)?,
            id,
            tenant: req.tenant,
            url: req.url,
            events: req.events,
            description: req.description,
            enabled: true,
            disabled_reason: String::new(),
            previous_secret: None,
            previous_secret_until: 0,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        let detail = serde_json::json!({ "tenant": row.tenant, "url": row.url, "events": row.events });
        let entry = audit::Entry { actor: &actor, action: "webhooks.create", object: &row.id, detail };
        self.shared.store.create_endpoint(&row, &entry).await.map_err(Error::from)?;
        tracing::info!(endpoint = %row.id, tenant = %row.tenant, "webhook endpoint created");
        Ok(Response::new(pb::EndpointWithSecret { endpoint: Some(self.view(&row)), secret: secret.to_text() }))
    }

    async fn list_endpoints(
        &self,
        request: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let tenant = request.into_inner().tenant;
        let rows = self.shared.store.endpoints(&tenant).await.map_err(Error::from)?;
        Ok(Response::new(pb::ListEndpointsResponse { endpoints: rows.iter().map(|e| self.view(e)).collect() }))
    }

    async fn get_endpoint(&self, request: Request<pb::EndpointRef>) -> Result<Response<pb::Endpoint>, Status> {
        let req = request.into_inner();
        let row = self.endpoint(&req.tenant, &req.id).await?;
        Ok(Response::new(self.view(&row)))
    }

    async fn update_endpoint(
        &self,
        request: Request<pb::UpdateEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let actor = acting::of(&request);
        let req = request.into_inner();
        let mut row = self.endpoint(&req.tenant, &req.id).await?;
        let mut errors = Vec::new();
        if let Some(url) = req.url {
            self.check_url(&mut errors, &url).await;
            row.url = url;
        }
        if let Some(events) = req.events {
            check_events(&mut errors, &events.names);
            row.events = events.names;
        }
        if let Some(description) = req.description {
            check_description(&mut errors, &description);
            row.description = description;
        }
        match req.status.as_deref() {
            None => {}
            Some("enabled") if !row.enabled => {
                // A fresh start: the failures that disabled it are over.
                row.enabled = true;
                row.disabled_reason.clear();
                row.failing_since = None;
            }
            Some("disabled") if row.enabled => {
                row.enabled = false;
                row.disabled_reason = "disabled by its owner".into();
            }
            Some("enabled" | "disabled") => {} // already so
            Some(_) => errors.push(("status".into(), "must be \"enabled\" or \"disabled\"".into())),
        }
        invalid(errors)?;
        row.updated_at = clock::now_ms();
        let detail = serde_json::json!({
            "tenant": row.tenant, "url": row.url, "events": row.events, "enabled": row.enabled,
        });
        let entry = audit::Entry { actor: &actor, action: "webhooks.update", object: &row.id, detail };
        self.shared.store.update_endpoint(&row, &entry).await.map_err(Error::from)?;
        self.wake.notify_one();
        Ok(Response::new(self.view(&row)))
    }

    async fn delete_endpoint(
        &self,
        request: Request<pb::EndpointRef>,
    ) -> Result<Response<pb::DeleteEndpointResponse>, Status> {
        let actor = acting::of(&request);
        let req = request.into_inner();
        let row = self.endpoint(&req.tenant, &req.id).await?;
        let detail = serde_json::json!({ "tenant": row.tenant, "url": row.url });
        let entry = audit::Entry { actor: &actor, action: "webhooks.delete", object: &row.id, detail };
        self.shared.store.delete_endpoint(&row.id, &entry, clock::now_ms()).await.map_err(Error::from)?;
        tracing::info!(endpoint = %row.id, tenant = %row.tenant, "webhook endpoint deleted");
        Ok(Response::new(pb::DeleteEndpointResponse {}))
    }

    async fn rotate_secret(
        &self,
        request: Request<pb::EndpointRef>,
    ) -> Result<Response<pb::EndpointWithSecret>, Status> {
        let actor = acting::of(&request);
        let req = request.into_inner();
        let mut row = self.endpoint(&req.tenant, &req.id).await?;
        let secret = Secret::generate().map_err(|_| Error::Vault(super::vault::Error::Random))?;
        let now = clock::now_ms();
        row.previous_secret =
            Some(std::mem::replace(&mut row.secret, self.shared.vault.seal(&row.id, &secret).map_err(Error::from)?));
        row.previous_secret_until = now + self.shared.settings.secret_grace.as_millis() as i64;
        row.updated_at = now;
        let detail = serde_json::json!({ "tenant": row.tenant, "previous_secret_until": row.previous_secret_until });
        let entry = audit::Entry { actor: &actor, action: "webhooks.rotate_secret", object: &row.id, detail };
        self.shared.store.update_endpoint(&row, &entry).await.map_err(Error::from)?;
        tracing::info!(endpoint = %row.id, "webhook secret rotated");
        Ok(Response::new(pb::EndpointWithSecret { endpoint: Some(self.view(&row)), secret: secret.to_text() }))
    }

    async fn send_test(&self, request: Request<pb::EndpointRef>) -> Result<Response<pb::Delivery>, Status> {
        let req = request.into_inner();
        let row = self.endpoint(&req.tenant, &req.id).await?;
        let id = self.shared.store.queue_test(&row, clock::now_ms()).await.map_err(Error::from)?;
        self.wake.notify_one();
        let found = self.shared.store.deliveries(&row.tenant, &row.id, "", "", 1).await.map_err(Error::from)?;
        let queued = found.into_iter().find(|d| d.id == id).ok_or(Error::NotFound("delivery"))?;
        Ok(Response::new(delivery(queued)))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let req = request.into_inner();
        let mut errors = Vec::new();
        if !["", "pending", "delivered", "failed"].contains(&req.status.as_str()) {
            errors.push(("status".into(), "must be pending, delivered or failed".into()));
        }
        if !(0..=100).contains(&req.page_size) {
            errors.push(("page_size".into(), "must be between 1 and 100".into()));
        }
        if req.page_token.len() > 100 {
            errors.push(("page_token".into(), "is not a page token of this list".into()));
        }
        invalid(errors)?;
        if !req.endpoint_id.is_empty() {
            self.endpoint(&req.tenant, &req.endpoint_id).await?;
        }
        let size = if req.page_size == 0 { 20 } else { i64::from(req.page_size) };
        let mut rows = self
            .shared
            .store
            .deliveries(&req.tenant, &req.endpoint_id, &req.status, &req.page_token, size + 1)
            .await
            .map_err(Error::from)?;
        let next_page_token = if rows.len() as i64 > size {
            rows.truncate(size as usize);
            rows.last().map(|d| d.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: rows.into_iter().map(delivery).collect(),
            next_page_token,
        }))
    }

    async fn replay(&self, request: Request<pb::ReplayRequest>) -> Result<Response<pb::ReplayResponse>, Status> {
        let req = request.into_inner();
        let row = self.endpoint(&req.tenant, &req.endpoint_id).await?;
        let now = clock::now_ms();
        let replayed = match (req.event_id.is_empty(), req.since_ms) {
            (false, 0) => {
                if req.event_id.len() > 100
                    || !self.shared.store.replay_event(&row, &req.event_id, now).await.map_err(Error::from)?
                {
                    return Err(Error::NotFound("event").into());
                }
                1
            }
            (true, since) if since > 0 => {
                if since > now {
                    return Err(Error::Invalid(vec![("since".into(), "must not be in the future".into())]).into());
                }
                self.shared.store.replay_since(&row, since, MAX_REPLAY, now).await.map_err(Error::from)?
            }
            _ => {
                let why = "give exactly one of event_id and since";
                return Err(Error::Invalid(vec![("event_id".into(), why.into())]).into());
            }
        };
        tracing::info!(endpoint = %row.id, replayed, "webhook events replayed");
        self.wake.notify_one();
        Ok(Response::new(pb::ReplayResponse { replayed: replayed as i32 }))
    }
}

#[cfg(test)]
mod tests {
    use pb::webhook_service_server::WebhookService;
    use tonic::Code;

    use super::*;
    use crate::webhooks::{Settings, delivery, store, target::Policy, vault};

    async fn service(policy: Policy) -> (Service, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let saga = crate::order_to_cash::store::Store::open(&url).await.expect("store");
        let settings = Settings { policy, ..Settings::default() };
        let shared = Shared {
            store: store::Store::new(saga.database()),
            vault: vault::Vault::new(&settings.key),
            sender: delivery::Sender::new(policy, settings.timeout).expect("sender"),
            settings,
        };
        (Service::new(Arc::new(shared), Arc::default()), dir)
    }

    fn subscribe(url: &str) -> Request<pb::CreateEndpointRequest> {
        Request::new(pb::CreateEndpointRequest {
            tenant: "acme".into(),
            url: url.into(),
            events: vec!["order.*".into()],
            description: String::new(),
        })
    }

    /// Each change to an endpoint is on the process tier's audit trail, with
    /// the actor the experience tier named; a refused one is not.
    #[tokio::test]
    async fn endpoint_changes_are_on_the_audit_trail_with_their_actor() {
        let (service, _dir) = service(Policy::Dev).await;
        let mut create = subscribe("http://127.0.0.1:9/hook");
        *create.metadata_mut() = acting::request((), "key_1").metadata().clone();
        let id = service.create_endpoint(create).await.expect("create").into_inner().endpoint.expect("endpoint").id;
        let at = |actor| acting::request(pb::EndpointRef { tenant: "acme".into(), id: id.clone() }, actor);
        service.rotate_secret(at("key_1")).await.expect("rotate");
        service.delete_endpoint(at("alice")).await.expect("delete");
        assert!(service.delete_endpoint(at("alice")).await.is_err(), "gone");
        let db = &service.shared.store.database();
        let (rows, _) = audit::list(db, &audit::Filter { limit: 10, ..Default::default() }).await.expect("list");
        let seen: Vec<_> = rows.iter().map(|r| (r.actor.as_str(), r.action.as_str(), r.object == id)).collect();
        assert_eq!(
            seen,
            [
                ("alice", "webhooks.delete", true),
                ("key_1", "webhooks.rotate_secret", true),
                ("key_1", "webhooks.create", true)
            ]
        );
        assert!(!rows.iter().any(|r| r.detail.to_string().contains("whsec_")), "never a secret");
        assert_eq!(audit::verify(db).await.expect("verify"), audit::Verdict::Intact { rows: 3 });
    }

    #[tokio::test]
    async fn production_refuses_plain_http_and_private_loopback_and_metadata_targets_at_subscription() {
        let (service, _dir) = service(Policy::Production).await;
        for url in ["http://127.0.0.1", "https://10.0.0.1", "https://169.254.169.254", "https://localhost"] {
            let status = service.create_endpoint(subscribe(url)).await.expect_err(url);
            assert_eq!(status.code(), Code::InvalidArgument, "{url}: {status:?}");
            assert!(status.message().starts_with("url: "), "{url}: {}", status.message());
        }
        let listed = service.list_endpoints(Request::new(pb::ListEndpointsRequest { tenant: "acme".into() })).await;
        assert!(listed.expect("list").into_inner().endpoints.is_empty(), "nothing was stored");
    }

    #[tokio::test]
    async fn dev_allows_a_loopback_receiver_and_an_endpoint_is_its_tenants_alone() {
        let (service, _dir) = service(Policy::Dev).await;
        let created =
            service.create_endpoint(subscribe("http://127.0.0.1:9/hooks")).await.expect("created").into_inner();
        let id = created.endpoint.expect("endpoint").id;
        assert!(created.secret.starts_with("whsec_"));
        let other = Request::new(pb::EndpointRef { tenant: "globex".into(), id: id.clone() });
        assert_eq!(service.get_endpoint(other).await.expect_err("another tenant's").code(), Code::NotFound);
        let any = Request::new(pb::EndpointRef { tenant: String::new(), id });
        assert_eq!(service.get_endpoint(any).await.expect("operators see it").into_inner().tenant, "acme");
        for _ in 1..MAX_ENDPOINTS {
            service.create_endpoint(subscribe("http://127.0.0.1:9/hooks")).await.expect("within the limit");
        }
        let over = service.create_endpoint(subscribe("http://127.0.0.1:9/hooks")).await.expect_err("over the limit");
        assert_eq!(over.code(), Code::FailedPrecondition);
    }
}
