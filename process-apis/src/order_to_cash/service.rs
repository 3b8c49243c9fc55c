//! `order_to_cash.v1.OrderToCashService`: validates requests, accepts and
//! prices orders, and hands them to the saga engine; reads, cancellation,
//! cash application and the order watch.

use std::{collections::HashMap, pin::Pin, sync::Arc, time::Duration};

use erp_connect_proto::{
    custom_fields,
    erp::v1::{self as erp, CustomValue, custom_value::Value},
    order_to_cash::v1 as pb,
};
use futures_util::Stream;
use rust_decimal::Decimal;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

use erp_connect_proto::money;

use crate::catalog::prices::Error as PriceError;

use super::{
    Error, clock,
    order::{CustomFields, CustomerRef, Line, Order, Payment, Progress, ShipTo, Status as OrderStatus},
    saga::{Effects, Engine, UpdateError, mark_paid},
    store::Filter,
};

/// Longest idempotency key, tenant or reference accepted.
const MAX_TEXT: usize = 200;
/// Most lines in one order.
const MAX_LINES: usize = 100;
/// Most units of one line.
const MAX_QUANTITY: i64 = 1_000_000;

/// The gRPC service over the engine.
#[derive(Clone)]
pub struct Service {
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    partners: Arc<crate::partners::Partners>,
}

impl Service {
    /// The service over `engine`; sagas it starts stop at `shutdown`.
    pub fn new(engine: Arc<Engine>, shutdown: CancellationToken) -> Self {
        Self { engine, shutdown, partners: Arc::default() }
    }

    /// Maps partner orders and checks them against `partners`' rules.
    pub fn with_partners(mut self, partners: Arc<crate::partners::Partners>) -> Self {
        self.partners = partners;
        self
    }
}

/// A PlaceOrder ready to accept, or answered already.
pub(crate) enum Prepared {
    /// The key placed this order before, with the same request.
    Replay(Order),
    /// A new order, checked and priced, and the request's fingerprint.
    New { order: Order, fingerprint: String },
}

/// Rule violations as the `INVALID_ARGUMENT` details: the field, and the
/// rule's name before the message.
fn violations(broken: Vec<crate::partners::rules::Violation>) -> Result<(), Error> {
    if broken.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(broken.into_iter().map(|v| (v.field, format!("{}: {}", v.rule, v.message))).collect()))
}

/// What a valid PlaceOrder asks for. Serialized, it is the fingerprint that
/// tells a replay from a reused key.
#[derive(Debug, serde::Serialize)]
struct Placement {
    customer_id: String,
    customer_external_id: String,
    #[serde(skip)]
    customer_email: String,
    #[serde(skip)]
    customer_name: String,
    external_ref: String,
    lines: Vec<(String, i64)>,
    payment: Payment,
    #[serde(skip)]
    ship_to: Option<pb::ShipTo>,
    /// Sales order custom fields, and each line's; left out of the
    /// fingerprint when empty, so fingerprints of orders without them stay
    /// what they were before custom fields existed.
    #[serde(skip_serializing_if = "CustomFields::is_empty")]
    custom_fields: CustomFields,
    #[serde(skip_serializing_if = "no_line_has_custom_fields")]
    line_custom_fields: Vec<CustomFields>,
}

fn no_line_has_custom_fields(lines: &[CustomFields]) -> bool {
    lines.iter().all(CustomFields::is_empty)
}

/// Custom field values of an order or a line, which this tier only keeps
/// and passes on: the system tier checks them against the deployment's
/// definitions when the saga creates the sales order, and the experience
/// tier before that. Here only their size is bounded.
fn custom(errors: &mut Vec<(String, String)>, field: &str, values: &HashMap<String, CustomValue>) -> CustomFields {
    if values.len() > custom_fields::MAX_PER_ENTITY {
        errors.push((field.into(), format!("at most {} custom fields", custom_fields::MAX_PER_ENTITY)));
    }
    for (name, value) in values {
        let too_long =
            matches!(&value.value, Some(Value::StringValue(s)) if s.chars().count() > custom_fields::MAX_STRING_CHARS);
        if name.is_empty() || name.len() > 64 || value.value.is_none() || too_long {
            errors.push((format!("{field}.{name}"), "is not a valid custom field value".into()));
        }
    }
    values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn text(errors: &mut Vec<(String, String)>, field: &str, value: &str, required: bool) {
    if required && value.trim().is_empty() {
        errors.push((field.into(), "is required".into()));
    } else if value.len() > MAX_TEXT {
        errors.push((field.into(), format!("must be at most {MAX_TEXT} characters")));
    }
}

fn validate_place(req: &pb::PlaceOrderRequest) -> Result<Placement, Error> {
    let mut errors = Vec::new();
    text(&mut errors, "idempotency_key", &req.idempotency_key, true);
    text(&mut errors, "tenant", &req.tenant, true);
    text(&mut errors, "external_ref", &req.external_ref, false);
    let customer = req.customer.clone().unwrap_or_default();
    if req.customer_id.is_empty() {
        text(&mut errors, "customer.external_id", &customer.external_id, true);
        text(&mut errors, "customer.email", &customer.email, false);
        text(&mut errors, "customer.name", &customer.name, false);
    } else {
        text(&mut errors, "customer_id", &req.customer_id, true);
    }
    if req.lines.is_empty() {
        errors.push(("lines".into(), "an order needs at least one line".into()));
    } else if req.lines.len() > MAX_LINES {
        errors.push(("lines".into(), format!("at most {MAX_LINES} lines")));
    }
    let mut line_custom_fields = Vec::with_capacity(req.lines.len());
    for (i, line) in req.lines.iter().enumerate() {
        text(&mut errors, &format!("lines[{i}].sku"), &line.sku, true);
        line_custom_fields.push(custom(&mut errors, &format!("lines[{i}].custom_fields"), &line.custom_fields));
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            errors.push((format!("lines[{i}].quantity"), format!("must be between 1 and {MAX_QUANTITY}")));
        }
    }
    if let Some(to) = &req.ship_to {
        text(&mut errors, "ship_to.street", &to.street, true);
        text(&mut errors, "ship_to.city", &to.city, true);
        text(&mut errors, "ship_to.postal_code", &to.postal_code, false);
        if !(to.country.is_empty() || to.country.len() == 2 && to.country.chars().all(|c| c.is_ascii_uppercase())) {
            errors.push(("ship_to.country".into(), "must be an ISO 3166-1 alpha-2 code like DE".into()));
        }
    }
    let custom_fields = custom(&mut errors, "custom_fields", &req.custom_fields);
    let payment = match &req.payment {
        Some(pb::place_order_request::Payment::CardToken(token)) => {
            text(&mut errors, "card_token", token, true);
            Payment::Card { token: token.clone() }
        }
        Some(pb::place_order_request::Payment::OnAccount(true)) => Payment::OnAccount,
        _ => {
            errors.push(("payment".into(), "give a card token or on_account".into()));
            Payment::OnAccount
        }
    };
    if !errors.is_empty() {
        return Err(Error::Invalid(errors));
    }
    Ok(Placement {
        customer_id: req.customer_id.clone(),
        customer_external_id: customer.external_id,
        customer_email: customer.email,
        customer_name: customer.name,
        external_ref: req.external_ref.clone(),
        lines: req.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect(),
        payment,
        ship_to: req.ship_to.clone(),
        custom_fields,
        line_custom_fields,
    })
}

/// A line priced at acceptance.
struct PricedLine {
    sku: String,
    quantity: i64,
    unit: Decimal,
    amount: Decimal,
    custom_fields: CustomFields,
}

impl PricedLine {
    fn into_line(self) -> Line {
        Line {
            sku: self.sku,
            quantity: self.quantity,
            unit_price: money::format(self.unit),
            amount: money::format(self.amount),
            custom_fields: self.custom_fields,
        }
    }
}

impl Service {
    /// Validates, prices from the price list and commits the order as
    /// `accepted` with its `order.accepted` event. No ERP call: the saga
    /// resolves the customer and does everything else once the order is
    /// durable, so a down ERP delays orders instead of refusing them.
    pub(crate) async fn place(&self, req: pb::PlaceOrderRequest) -> Result<Order, Error> {
        match self.prepare(&req).await? {
            Prepared::Replay(order) => Ok(order),
            Prepared::New { order, fingerprint } => {
                if !self.engine.accept(&order, &req.idempotency_key, &fingerprint, self.shutdown.clone()).await? {
                    // A concurrent request with the same key won the race.
                    let found = self.engine.store.find_by_key(&req.tenant, &req.idempotency_key).await?;
                    return found.map_or(Err(Error::Internal("order vanished after a key conflict".into())), |f| {
                        replay(f, &fingerprint)
                    });
                }
                Ok(order)
            }
        }
    }

    /// Everything `place` does before it stores the order: checks, the
    /// partner's mapping and rules, prices; or the order this request's
    /// key already placed. A dry run stops here.
    pub(crate) async fn prepare(&self, req: &pb::PlaceOrderRequest) -> Result<Prepared, Error> {
        let mut placement = validate_place(req)?;
        let fingerprint = serde_json::to_string(&placement).map_err(|e| Error::Internal(e.to_string()))?;
        let store = &self.engine.store;
        if let Some(found) = store.find_by_key(&req.tenant, &req.idempotency_key).await? {
            return replay(found, &fingerprint).map(Prepared::Replay);
        }
        // The partner's SKUs become ours, then its rules apply.
        if let Some(mapping) = self.partners.mapping(&req.tenant) {
            for (sku, _) in &mut placement.lines {
                *sku = mapping.sku(sku).to_owned();
            }
        }
        // `[rules]` are for partners: the web shop's tenants (card only) meet none.
        let no_rules = crate::partners::rules::Rules::default();
        let rules = if self.engine.settings.card_only_tenants.contains(&req.tenant) {
            &no_rules
        } else {
            self.partners.rules(&req.tenant)
        };
        violations(rules.check(&crate::partners::rules::OrderFacts {
            external_ref: &placement.external_ref,
            quantities: placement.lines.iter().map(|(_, q)| *q).collect(),
            ship_to: placement.ship_to.as_ref().map(|to| (to.country.as_str(), to.postal_code.as_str())),
        }))?;
        let (mut lines, currency) = self.price(&placement.lines).await?;
        for (line, custom) in lines.iter_mut().zip(&placement.line_custom_fields) {
            line.custom_fields = custom.clone();
        }
        let total = lines.iter().map(|l| l.amount).sum::<Decimal>();
        violations(rules.check_value(total, &currency).into_iter().collect())?;
        let settings = &self.engine.settings;
        let credit_limit = if settings.card_only_tenants.contains(&req.tenant) {
            "0.00".to_owned()
        } else {
            settings.partner_credit_limit.clone()
        };
        let now = clock::now_ms();
        let mut order = Order {
            id: format!("ord_{}", ulid::Ulid::new()),
            tenant: req.tenant.clone(),
            // A customer id the caller named is theirs to list by at once;
            // the saga checks it before anything is sold to it.
            customer_id: placement.customer_id.clone(),
            customer: Some(CustomerRef {
                id: placement.customer_id.clone(),
                external_id: placement.customer_external_id.clone(),
                email: placement.customer_email.clone(),
                name: placement.customer_name.clone(),
                ship_to: placement.ship_to.clone().map(|to| ShipTo {
                    street: to.street,
                    city: to.city,
                    postal_code: to.postal_code,
                    country: to.country,
                }),
                credit_limit,
            }),
            // The caller's identity of the customer, which listings filter on.
            customer_external_id: placement.customer_external_id.clone(),
            external_ref: placement.external_ref.clone(),
            currency,
            lines: lines.into_iter().map(PricedLine::into_line).collect(),
            total: money::format(total),
            custom_fields: placement.custom_fields.clone(),
            payment: placement.payment.clone(),
            status: OrderStatus::Accepted,
            timeline: vec![],
            created_at: now,
            updated_at: now,
            // The saga's steps run later, in the background, and join
            // this request's trace through it.
            progress: Progress { traceparent: platform::telemetry::current_traceparent(), ..Progress::default() },
        };
        order.record("accepted", now, "");
        Ok(Prepared::New { order, fingerprint })
    }

    /// Prices every line at its list price from the price list; returns
    /// the lines and their one currency.
    async fn price(&self, lines: &[(String, i64)]) -> Result<(Vec<PricedLine>, String), Error> {
        let prices = &self.engine.prices;
        let found = futures_util::future::join_all(lines.iter().map(|(sku, _)| prices.get(sku))).await;
        let mut priced = Vec::with_capacity(lines.len());
        let mut errors = Vec::new();
        let mut currency: Option<String> = None;
        for (i, ((sku, quantity), product)) in lines.iter().zip(found).enumerate() {
            let field = format!("lines[{i}].sku");
            let product = match product {
                Ok(Some(p)) if p.active => p,
                Ok(Some(_)) => {
                    errors.push((field, format!("{sku} is no longer sold")));
                    continue;
                }
                Ok(None) => {
                    errors.push((field, format!("unknown SKU {sku}")));
                    continue;
                }
                Err(PriceError::Unavailable { sku, status }) => {
                    tracing::warn!(%sku, code = ?status.code(), "cannot price an unseen SKU while the ERP is down");
                    return Err(Error::Unavailable(format!("{sku} cannot be priced while the ERP is unavailable")));
                }
                Err(PriceError::Erp(status)) => return Err(Error::Upstream(status)),
                Err(err @ PriceError::Malformed(_)) => return Err(Error::Internal(err.to_string())),
            };
            match &currency {
                Some(c) if *c != product.currency => {
                    let message = format!("{sku} is sold in {}, the order's other lines in {c}", product.currency);
                    errors.push((field, message));
                    continue;
                }
                Some(_) => {}
                None => currency = Some(product.currency.clone()),
            }
            let unit = money::round(product.unit_price);
            let amount = money::round(unit * Decimal::from(*quantity));
            priced.push(PricedLine {
                sku: sku.clone(),
                quantity: *quantity,
                unit,
                amount,
                custom_fields: CustomFields::new(),
            });
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors));
        }
        Ok((priced, currency.unwrap_or_default()))
    }

    /// The order `id` if `tenant` may see it (an empty tenant sees all).
    async fn visible(&self, tenant: &str, id: &str) -> Result<Order, Error> {
        match self.engine.store.load(id).await? {
            Some(v) if tenant.is_empty() || v.order.tenant == tenant => Ok(v.order),
            _ => Err(Error::NotFound("order")),
        }
    }

    /// Waits (briefly) until the order ends, for answers that should show
    /// the outcome, e.g. a cancellation.
    async fn settle(&self, id: &str, within: Duration) -> Result<Order, Error> {
        let mut changes = self.engine.changed.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let order = self.visible("", id).await?;
            if order.status.is_terminal() {
                return Ok(order);
            }
            tokio::select! {
                _ = changes.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(order),
            }
        }
    }
}

/// How long `CancelOrder` waits for the compensation to finish before it
/// answers with the order as it stands (the cancellation is recorded either
/// way, and the saga finishes it). Well below the experience tier's default
/// deadline (10 s): a wait as long as the caller's turned a slow ERP's
/// cancellation into a timeout instead of an answer.
const CANCEL_SETTLES_WITHIN: Duration = Duration::from_secs(5);

fn replay((order, stored): (Order, String), fingerprint: &str) -> Result<Order, Error> {
    if stored != fingerprint {
        return Err(Error::KeyReused);
    }
    super::metrics::replayed("PlaceOrder");
    Ok(order)
}

type OrderStream = Pin<Box<dyn Stream<Item = Result<pb::Order, Status>> + Send>>;

/// The store's name of a status, as a filter: `Unspecified` filters nothing.
fn stored_status(status: pb::OrderStatus) -> &'static str {
    match status {
        pb::OrderStatus::Unspecified => "",
        pb::OrderStatus::Accepted => OrderStatus::Accepted.as_str(),
        pb::OrderStatus::Confirmed => OrderStatus::Confirmed.as_str(),
        pb::OrderStatus::Invoiced => OrderStatus::Invoiced.as_str(),
        pb::OrderStatus::Paid => OrderStatus::Paid.as_str(),
        pb::OrderStatus::Shipped => OrderStatus::Shipped.as_str(),
        pb::OrderStatus::Completed => OrderStatus::Completed.as_str(),
        pb::OrderStatus::Cancelled => OrderStatus::Cancelled.as_str(),
        pb::OrderStatus::Rejected => OrderStatus::Rejected.as_str(),
    }
}

#[tonic::async_trait]
impl pb::order_to_cash_service_server::OrderToCashService for Service {
    async fn place_order(&self, request: Request<pb::PlaceOrderRequest>) -> Result<Response<pb::Order>, Status> {
        Ok(Response::new(self.place(request.into_inner()).await?.to_proto()))
    }

    async fn get_order(&self, request: Request<pb::GetOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let req = request.into_inner();
        // The one read served from the store's cache: the others decide
        // something (a cancellation, an invoice) and read the database.
        match self.engine.store.read(&req.order_id).await.map_err(Error::from)? {
            Some(order) if req.tenant.is_empty() || order.tenant == req.tenant => Ok(Response::new(order.to_proto())),
            _ => Err(Error::NotFound("order").into()),
        }
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let req = request.into_inner();
        let size = match req.page_size {
            0 => 20,
            n @ 1..=100 => i64::from(n),
            _ => return Err(Error::Invalid(vec![("page_size".into(), "must be between 1 and 100".into())]).into()),
        };
        if !req.page_token.is_empty() && (!req.page_token.starts_with("ord_") || req.page_token.len() > 64) {
            return Err(
                Error::Invalid(vec![("page_token".into(), "is not a token from a previous page".into())]).into()
            );
        }
        if req.query.chars().count() > MAX_TEXT || req.query.chars().any(char::is_control) {
            let message = format!("must be at most {MAX_TEXT} characters, none of them control characters");
            return Err(Error::Invalid(vec![("query".into(), message)]).into());
        }
        let status = match pb::OrderStatus::try_from(req.status) {
            Ok(status) => stored_status(status),
            Err(_) => return Err(Error::Invalid(vec![("status".into(), "is not an order status".into())]).into()),
        };
        let filter = Filter {
            tenant: &req.tenant,
            customer_external_id: &req.customer_external_id,
            customer_id: &req.customer_id,
            status,
            query: req.query.trim(),
        };
        let before = Some(req.page_token.as_str()).filter(|t| !t.is_empty());
        let mut orders = self.engine.store.list(&filter, before, size + 1).await.map_err(Error::from)?;
        let next_page_token = if orders.len() as i64 > size {
            orders.truncate(size as usize);
            orders.last().map(|o| o.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.iter().map(Order::to_proto).collect(),
            next_page_token,
        }))
    }

    async fn cancel_order(&self, request: Request<pb::CancelOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let req = request.into_inner();
        self.visible(&req.tenant, &req.order_id).await?;
        let reason = if req.reason.trim().is_empty() { "cancelled on request".to_owned() } else { req.reason };
        if reason.len() > MAX_TEXT {
            return Err(Error::Invalid(vec![("reason".into(), format!("at most {MAX_TEXT} characters"))]).into());
        }
        let updated = self
            .engine
            .update(&req.order_id, |order, _: &mut Effects, now| {
                if order.status == OrderStatus::Cancelled {
                    return Ok(());
                }
                if !order.cancellable() {
                    return Err(Error::Precondition {
                        kind: if order.progress.shipped { "ALREADY_SHIPPED" } else { "ORDER_ENDED" },
                        subject: order.id.clone(),
                        description: format!("the order is {} and can no longer be cancelled", order.status.as_str()),
                    });
                }
                order.unwind(OrderStatus::Cancelled, reason.clone(), now);
                Ok(())
            })
            .await;
        match updated {
            Ok(_) => {}
            Err(UpdateError::Refused(err)) => return Err(err.into()),
            Err(UpdateError::Store(err)) => return Err(Error::from(err).into()),
        }
        Ok(Response::new(self.settle(&req.order_id, CANCEL_SETTLES_WITHIN).await?.to_proto()))
    }

    type WatchOrderStream = OrderStream;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let req = request.into_inner();
        let first = self.visible(&req.tenant, &req.order_id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let engine = self.engine.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut changes = engine.changed.subscribe();
            let mut last = first;
            if tx.send(Ok(last.to_proto())).await.is_err() {
                return;
            }
            while !last.status.is_terminal() {
                // Changes made here arrive at once; other replicas' within
                // a second.
                tokio::select! {
                    _ = changes.recv() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => return,
                }
                match engine.store.load(&last.id).await {
                    Ok(Some(v)) if v.order.status != last.status => {
                        last = v.order;
                        if tx.send(Ok(last.to_proto())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        let _ = tx.send(Err(Error::from(err).into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn record_payment(&self, request: Request<pb::RecordPaymentRequest>) -> Result<Response<pb::Order>, Status> {
        let req = request.into_inner();
        let mut errors = Vec::new();
        text(&mut errors, "idempotency_key", &req.idempotency_key, true);
        text(&mut errors, "order_id", &req.order_id, true);
        match req.amount.parse::<Decimal>() {
            Ok(a) if a > Decimal::ZERO && a.scale() <= 2 => {}
            _ => errors.push(("amount".into(), "must be a positive amount with at most 2 decimals".into())),
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors).into());
        }
        let order = self.visible(&req.tenant, &req.order_id).await?;
        if req.currency != order.currency {
            return Err(Error::Invalid(vec![("currency".into(), format!("the order is in {}", order.currency))]).into());
        }
        let precondition = |kind, description: &str| Error::Precondition {
            kind,
            subject: order.id.clone(),
            description: description.to_owned(),
        };
        if matches!(order.payment, Payment::Card { .. }) {
            return Err(precondition("PAID_BY_CARD", "card orders are paid by their card payment").into());
        }
        if order.progress.unwind.is_some() || order.status.is_terminal() && !order.progress.invoice_paid {
            return Err(precondition("ORDER_ENDED", "the order is cancelled or rejected").into());
        }
        let Some(invoice_id) = order.progress.invoice_id.clone().filter(|_| order.progress.invoice_posted) else {
            return Err(precondition("NOT_INVOICED", "the order's invoice is not posted yet").into());
        };
        let s = &self.engine.systems;
        let payment = erp::RecordInvoicePaymentRequest {
            idempotency_key: format!("{}:cash:{}", order.id, req.idempotency_key),
            invoice_id,
            currency: req.currency.clone(),
            amount: req.amount.clone(),
        };
        let invoice = match s.call(s.invoices().record_invoice_payment(s.request(payment))).await {
            Ok(invoice) => invoice,
            Err(status) if status.code() == Code::InvalidArgument => {
                return Err(Error::Invalid(vec![("amount".into(), status.message().to_owned())]).into());
            }
            Err(status) if status.code() == Code::AlreadyExists => return Err(Error::KeyReused.into()),
            Err(status) => return Err(Error::from(status).into()),
        };
        let fully_paid = invoice.state == erp::InvoiceState::Paid as i32;
        let amount = req.amount.clone();
        let updated = self
            .engine
            .update(&order.id, |order, effects, now| {
                if fully_paid {
                    mark_paid(order, effects, now);
                } else if !order.timeline.iter().any(|t| t.step == "payment_received" && t.detail == amount) {
                    order.record("payment_received", now, amount.clone());
                }
                Ok::<(), std::convert::Infallible>(())
            })
            .await;
        match updated {
            Ok(Some(order)) => Ok(Response::new(order.to_proto())),
            Ok(None) => Err(Error::NotFound("order").into()),
            Err(UpdateError::Store(err)) => Err(Error::from(err).into()),
            Err(UpdateError::Refused(never)) => match never {},
        }
    }

    async fn get_invoice(&self, request: Request<pb::GetInvoiceRequest>) -> Result<Response<pb::Invoice>, Status> {
        let req = request.into_inner();
        let store = &self.engine.store;
        let Some(order_id) = store.order_of(&req.invoice_id).await.map_err(Error::from)? else {
            return Err(Error::NotFound("invoice").into());
        };
        let order = self.visible(&req.tenant, &order_id).await.map_err(|_| Error::NotFound("invoice"))?;
        let s = &self.engine.systems;
        let invoice = s
            .call(s.invoices().get_invoice(s.request(erp::InvoiceRequest { id: req.invoice_id.clone() })))
            .await
            .map_err(Error::from)?;
        let state = match erp::InvoiceState::try_from(invoice.state) {
            Ok(erp::InvoiceState::Draft) => "draft",
            Ok(erp::InvoiceState::Posted) => "posted",
            Ok(erp::InvoiceState::Paid) => "paid",
            Ok(erp::InvoiceState::Cancelled) => "cancelled",
            _ => "unknown",
        };
        Ok(Response::new(pb::Invoice {
            id: invoice.id,
            number: invoice.number,
            order_id: order.id,
            state: state.into(),
            currency: invoice.currency,
            total: invoice.total,
            amount_due: invoice.amount_due,
        }))
    }

    async fn complete_shipment(
        &self,
        request: Request<pb::CompleteShipmentRequest>,
    ) -> Result<Response<pb::CompleteShipmentResponse>, Status> {
        let req = request.into_inner();
        let Some(order_id) = self.engine.store.order_of(&req.shipment_id).await.map_err(Error::from)? else {
            return Err(Error::NotFound("shipment").into());
        };
        let s = &self.engine.systems;
        let shipment = match s
            .call(s.shipments().complete_shipment(s.request(erp::ShipmentRequest { id: req.shipment_id.clone() })))
            .await
        {
            Ok(shipment) => shipment,
            Err(status) if status.code() == Code::FailedPrecondition => {
                return Err(Error::Precondition {
                    kind: "SHIPMENT_NOT_READY",
                    subject: req.shipment_id,
                    description: status.message().to_owned(),
                }
                .into());
            }
            Err(status) => return Err(Error::from(status).into()),
        };
        let state = if shipment.state == erp::ShipmentState::Done as i32 { "done" } else { "waiting" };
        Ok(Response::new(pb::CompleteShipmentResponse { shipment_id: shipment.id, order_id, state: state.into() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> pb::PlaceOrderRequest {
        pb::PlaceOrderRequest {
            idempotency_key: "k1".into(),
            tenant: "web".into(),
            customer: Some(pb::CustomerRef { external_id: "web:alice".into(), ..Default::default() }),
            lines: vec![pb::OrderLine { sku: "WIDGET-1".into(), quantity: 3, ..Default::default() }],
            payment: Some(pb::place_order_request::Payment::CardToken("tok_visa".into())),
            ..Default::default()
        }
    }

    fn fields(err: Error) -> Vec<String> {
        match err {
            Error::Invalid(errors) => errors.into_iter().map(|(f, _)| f).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    /// A cancellation whose compensation cannot finish (the ERP does not
    /// answer) is recorded and answered with the order as it stands, after
    /// [`CANCEL_SETTLES_WITHIN`], not when the caller's deadline ends; the
    /// saga finishes it when the ERP is back.
    #[tokio::test]
    async fn a_cancel_answers_within_its_bound_while_the_compensation_waits_for_the_erp() {
        use erp_connect_proto::erp::v1 as erp;

        use crate::order_to_cash::steps::fake::{Fake, card_order, engine};
        use pb::order_to_cash_service_server::OrderToCashService;

        let (fake, dir, stop) = (Fake::new(), tempfile::tempdir().expect("dir"), CancellationToken::new());
        let so = erp::SalesOrder { id: "so_1".into(), ..Default::default() };
        fake.answer("CreateSalesOrder", so.clone())
            .answer("QuoteSalesOrder", so.clone())
            .answer("ConfirmSalesOrder", so);
        for _ in 0..10_000 {
            fake.fail("Authorize", Status::unavailable("provider down"));
            fake.fail("CancelSalesOrder", Status::unavailable("erp down"));
        }
        let engine = engine(&fake, &dir, &stop).await;
        let order = card_order();
        assert!(engine.accept(&order, "key-1", "fp", stop.clone()).await.expect("accepted"));
        // Confirmed, then waiting for the payment provider.
        for _ in 0..1000 {
            let now = engine.store.load(&order.id).await.expect("store").expect("order").order;
            if now.progress.waiting_on.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let service = Service::new(engine.clone(), stop.clone());
        let request =
            pb::CancelOrderRequest { tenant: "web".into(), order_id: order.id.clone(), reason: String::new() };
        // A bound for the test itself, far above the 5 s the answer may take.
        let answer = tokio::time::timeout(Duration::from_secs(60), service.cancel_order(Request::new(request)))
            .await
            .expect("the cancel answers within its bound")
            .expect("cancel recorded")
            .into_inner();
        assert_eq!(answer.status(), pb::OrderStatus::Confirmed, "not cancelled yet: the ERP does not answer");
        assert!(answer.timeline.iter().any(|t| t.step == "cancel_requested"), "{:?}", answer.timeline);
        stop.cancel();
    }

    #[test]
    fn a_valid_request_passes_and_its_fingerprint_ignores_the_key() {
        let a = validate_place(&request()).expect("valid");
        let mut other = request();
        other.idempotency_key = "k2".into();
        let b = validate_place(&other).expect("valid");
        assert_eq!(serde_json::to_string(&a).ok(), serde_json::to_string(&b).ok());
        other.lines[0].quantity = 4;
        let c = validate_place(&other).expect("valid");
        assert_ne!(serde_json::to_string(&a).ok(), serde_json::to_string(&c).ok());
    }

    #[test]
    fn bad_input_names_every_bad_field() {
        let mut req = request();
        req.idempotency_key.clear();
        req.lines.push(pb::OrderLine { sku: String::new(), quantity: 0, ..Default::default() });
        req.payment = None;
        let err = validate_place(&req).expect_err("invalid");
        assert_eq!(fields(err), ["idempotency_key", "lines[1].sku", "lines[1].quantity", "payment"]);
        let mut req = request();
        req.lines[0].quantity = -3;
        req.customer = None;
        assert_eq!(fields(validate_place(&req).expect_err("invalid")), ["customer.external_id", "lines[0].quantity"]);
    }
}
