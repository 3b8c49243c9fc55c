//! Tenant isolation as a property (proptest): each case picks partner
//! tenants and web shop users, gives them objects (orders, an invoice,
//! webhook endpoints, order files), and then every principal (a partner's
//! JWT, its API key, a web user's JWT) calls every route that takes an
//! object id with every object it does not own. Nothing crosses: another's
//! object is 404 on the principal's own audience's routes (403 or 404 on
//! another audience's, never 2xx), a list holds only the principal's own,
//! ops routes are 403, and a write aimed at another's object changes
//! nothing. One `up` for all cases; the objects pile up across cases, which
//! only makes the lists' check stricter.

mod harness;

use std::{
    collections::HashMap,
    sync::atomic::{AtomicUsize, Ordering},
};

use harness::{Running, get, post_json, send};
use http_body_util::Full;
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::{Value, json};

const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
const WEB_USERS: [&str; 2] = ["wendy", "walt"];
const PARTNER_SCOPES: &str = "orders:read orders:write invoices:read webhooks:manage";

/// Who owns an object, and who a principal acts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    Tenant(&'static str),
    WebUser(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Order,
    WebOrder,
    Invoice,
    Webhook,
    Batch,
}

/// A caller: its credential and whom it acts for.
struct Principal {
    owner: Owner,
    name: String,
    /// `Authorization: Bearer` JWT, or an `X-API-Key`.
    credential: Credential,
}

enum Credential {
    Jwt(String),
    Key(String),
}

impl Principal {
    fn audience(&self) -> &'static str {
        match self.owner {
            Owner::Tenant(_) => "/partner/",
            Owner::WebUser(_) => "/web/",
        }
    }

    async fn call(&self, method: &str, url: &str, body: Option<&Value>) -> harness::Reply {
        let mut request = http::Request::builder().method(method).uri(url);
        request = match &self.credential {
            Credential::Jwt(token) => request.header("authorization", format!("Bearer {token}")),
            Credential::Key(key) => request.header("x-api-key", key),
        };
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Full::new(bytes::Bytes::from(body.to_string()))
            }
            None => Full::default(),
        };
        send(request.body(body).expect("request")).await
    }
}

/// The routes that take an object id of `kind`, with a body for writes.
fn routes(kind: Kind) -> Vec<(&'static str, String, Option<Value>)> {
    let id = "{id}";
    match kind {
        Kind::Order | Kind::WebOrder => vec![
            ("GET", format!("/partner/v1/orders/{id}"), None),
            ("POST", format!("/partner/v1/orders/{id}/cancel"), Some(json!({}))),
            ("GET", format!("/web/v1/orders/{id}"), None),
            ("GET", format!("/ops/v1/orders/{id}"), None),
        ],
        Kind::Invoice => vec![("GET", format!("/partner/v1/invoices/{id}"), None)],
        Kind::Webhook => vec![
            ("GET", format!("/partner/v1/webhooks/{id}"), None),
            ("PATCH", format!("/partner/v1/webhooks/{id}"), Some(json!({"description": "taken over"}))),
            ("DELETE", format!("/partner/v1/webhooks/{id}"), None),
            ("POST", format!("/partner/v1/webhooks/{id}/rotate-secret"), Some(json!({}))),
            ("POST", format!("/partner/v1/webhooks/{id}/test"), Some(json!({}))),
            ("GET", format!("/partner/v1/webhooks/{id}/deliveries"), None),
            ("POST", format!("/partner/v1/webhooks/{id}/replay"), Some(json!({}))),
            ("GET", format!("/ops/v1/webhooks/{id}"), None),
        ],
        Kind::Batch => vec![
            ("GET", format!("/partner/v1/order-batches/{id}"), None),
            ("GET", format!("/partner/v1/order-batches/{id}/results"), None),
        ],
    }
}

/// What one case creates.
#[derive(Debug, Clone)]
struct Plan {
    tenants: Vec<&'static str>,
    /// Per chosen tenant: orders (0..=2), a webhook endpoint, an order file.
    objects: Vec<(usize, bool, bool)>,
    web_users: Vec<&'static str>,
}

fn plans() -> impl Strategy<Value = Plan> {
    (
        proptest::sample::subsequence(TENANTS.to_vec(), 2..=4),
        proptest::collection::vec((0..=2usize, any::<bool>(), any::<bool>()), 4),
        proptest::sample::subsequence(WEB_USERS.to_vec(), 0..=2),
    )
        .prop_map(|(tenants, objects, web_users)| Plan { tenants, objects, web_users })
}

struct World {
    app: Running,
    keys: HashMap<&'static str, String>,
    /// Every object made so far and its owner.
    owners: std::sync::Mutex<HashMap<String, Owner>>,
    case: AtomicUsize,
    calls: AtomicUsize,
}

impl World {
    fn jwt(&self, owner: &Owner) -> String {
        let dir = self.app.data_dir.path();
        match owner {
            Owner::Tenant(t) => harness::token_for(dir, &format!("{t}-buyer"), Some(t), None, PARTNER_SCOPES),
            Owner::WebUser(u) => {
                harness::token_for(dir, u, None, Some(&format!("{u}@example.com")), "orders:read orders:write")
            }
        }
    }

    fn principals(&self, plan: &Plan) -> Vec<Principal> {
        let mut all = Vec::new();
        for tenant in &plan.tenants {
            let owner = Owner::Tenant(tenant);
            all.push(Principal { name: format!("{tenant} JWT"), credential: Credential::Jwt(self.jwt(&owner)), owner });
            let owner = Owner::Tenant(tenant);
            all.push(Principal {
                name: format!("{tenant} API key"),
                credential: Credential::Key(self.keys[tenant].clone()),
                owner,
            });
        }
        for user in &plan.web_users {
            let owner = Owner::WebUser(user);
            all.push(Principal {
                name: format!("web user {user}"),
                credential: Credential::Jwt(self.jwt(&owner)),
                owner,
            });
        }
        all
    }

    fn own(&self, id: &str, owner: &Owner) {
        self.owners.lock().expect("owners").insert(id.to_owned(), owner.clone());
    }

    /// Creates what `plan` asks for; the objects and their owners.
    async fn create(&self, plan: &Plan) -> Vec<(Kind, String, Owner)> {
        let case = self.case.fetch_add(1, Ordering::Relaxed);
        let mut made = Vec::new();
        for (tenant, (orders, webhook, batch)) in plan.tenants.iter().zip(&plan.objects) {
            let owner = Owner::Tenant(tenant);
            let jwt = self.jwt(&owner);
            for n in 0..*orders {
                let order = json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}], "payment": {"method": "on_account"}});
                let url = self.app.url("/partner/v1/orders");
                let placed = post_json(&url, &jwt, &order, Some(&format!("iso-{case}-{n}"))).await;
                assert_eq!(placed.status, 201, "{}", placed.text);
                let id = placed.body["id"].as_str().expect("id").to_owned();
                if n == 0 {
                    let path = format!("/partner/v1/orders/{id}");
                    let invoiced = harness::wait_for_order(&self.app, &jwt, &path, "invoiced").await;
                    let invoice = invoiced["erp"]["invoice_id"].as_str().expect("invoice id").to_owned();
                    made.push((Kind::Invoice, invoice, owner.clone()));
                }
                made.push((Kind::Order, id, owner.clone()));
            }
            if *webhook {
                let subscription = json!({"url": "http://127.0.0.1:9/hook", "events": ["order.*"]});
                let created = post_json(&self.app.url("/partner/v1/webhooks"), &jwt, &subscription, None).await;
                assert_eq!(created.status, 201, "{}", created.text);
                made.push((Kind::Webhook, created.body["id"].as_str().expect("id").to_owned(), owner.clone()));
            }
            if *batch {
                let csv = format!("external_ref,sku,quantity\nISO-{case},WIDGET-1,1\n");
                let request = http::Request::post(self.app.url("/partner/v1/order-batches"))
                    .header("authorization", format!("Bearer {jwt}"))
                    .header("content-type", "text/csv")
                    .body(Full::new(bytes::Bytes::from(csv)))
                    .expect("request");
                let uploaded = send(request).await;
                assert_eq!(uploaded.status, 202, "{}", uploaded.text);
                made.push((Kind::Batch, uploaded.body["id"].as_str().expect("id").to_owned(), owner.clone()));
            }
        }
        for user in &plan.web_users {
            let owner = Owner::WebUser(user);
            let order = json!({"lines": [{"sku": "WIDGET-1", "quantity": 1}], "payment": {"method": "card", "token": "tok_visa"}});
            let placed =
                post_json(&self.app.url("/web/v1/orders"), &self.jwt(&owner), &order, Some(&format!("iso-{case}")))
                    .await;
            assert_eq!(placed.status, 201, "{}", placed.text);
            made.push((Kind::WebOrder, placed.body["id"].as_str().expect("id").to_owned(), owner));
        }
        for (_, id, owner) in &made {
            self.own(id, owner);
        }
        made
    }

    async fn check(&self, plan: &Plan) {
        let made = self.create(plan).await;
        let principals = self.principals(plan);
        for principal in &principals {
            for (kind, id, owner) in &made {
                if *owner == principal.owner {
                    continue;
                }
                for (method, template, body) in routes(*kind) {
                    let path = template.replace("{id}", id);
                    let reply = principal.call(method, &self.app.url(&path), body.as_ref()).await;
                    self.calls.fetch_add(1, Ordering::Relaxed);
                    let what = format!("{} {method} {path} ({owner:?}'s)", principal.name);
                    assert!(!(200..300).contains(&reply.status), "{what}: {} {}", reply.status, reply.text);
                    assert!(!reply.text.contains(id.as_str()), "{what} shows the id: {}", reply.text);
                    let expected: &[u16] = if path.starts_with("/ops/") {
                        &[403]
                    } else if path.starts_with(principal.audience()) {
                        &[404]
                    } else {
                        &[403, 404]
                    };
                    assert!(expected.contains(&reply.status), "{what}: {} {}", reply.status, reply.text);
                }
            }
            // Its lists hold its own objects only.
            let lists: &[(&str, &str)] = match principal.owner {
                Owner::Tenant(_) => &[("/partner/v1/orders", "orders"), ("/partner/v1/webhooks", "webhooks")],
                Owner::WebUser(_) => &[("/web/v1/orders", "orders")],
            };
            for (path, field) in lists {
                let reply = principal.call("GET", &self.app.url(path), None).await;
                self.calls.fetch_add(1, Ordering::Relaxed);
                assert_eq!(reply.status, 200, "{} {path}: {}", principal.name, reply.text);
                let owners = self.owners.lock().expect("owners").clone();
                for item in reply.body[*field].as_array().expect("a list") {
                    let id = item["id"].as_str().expect("id");
                    // Objects not made here (an order file's orders) belong to no one else either.
                    if let Some(owner) = owners.get(id) {
                        assert_eq!(owner, &principal.owner, "{} {path} lists {owner:?}'s {id}", principal.name);
                    }
                }
            }
        }
        // The writes aimed at others changed nothing: every webhook is still there.
        for (kind, id, owner) in &made {
            if *kind == Kind::Webhook {
                let reply = get(&self.app.url(&format!("/partner/v1/webhooks/{id}")), Some(&self.jwt(owner))).await;
                assert_eq!(reply.status, 200, "{owner:?}'s webhook {id} survived: {}", reply.text);
                assert_ne!(reply.body["description"], "taken over", "{}", reply.text);
            }
        }
    }
}

#[test]
fn no_principal_reaches_another_tenants_or_users_objects_on_any_route() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let app = runtime.block_on(harness::spawn_up_with(harness::quick_sagas));
    // Enough stock for every case's orders (and each shrinking step's).
    runtime.block_on(async {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}/erp.db", app.data_dir.path().display());
        let mut erp = sqlx::AnyConnection::connect(&url).await.expect("ERP database");
        sqlx::query("UPDATE stock SET on_hand = 1000000").execute(&mut erp).await.expect("stock topped up");
    });
    let scopes = PARTNER_SCOPES.replace(' ', ",");
    let keys = TENANTS.iter().map(|t| (*t, harness::create_key(&app, t, &scopes, "unmetered"))).collect();
    let world = World { app, keys, owners: Default::default(), case: AtomicUsize::new(0), calls: AtomicUsize::new(0) };
    let config = ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() };
    TestRunner::new(config)
        .run(&plans(), |plan| {
            runtime.block_on(world.check(&plan));
            Ok(())
        })
        .expect("no principal crosses into another's objects");
    // The README quotes this figure.
    eprintln!(
        "tenant isolation: {} cases, {} calls with other principals' object ids or lists",
        world.case.load(Ordering::Relaxed),
        world.calls.load(Ordering::Relaxed)
    );
    runtime.block_on(world.app.stop_all());
}
