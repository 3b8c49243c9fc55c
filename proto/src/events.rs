//! Business events: their names, their payloads and the AsyncAPI 3.0
//! document describing both channels they travel on (NATS JetStream
//! subjects for internal consumers, webhooks for partners).
//!
//! The process tier writes every event as an [`Envelope`] into its outbox;
//! NATS gets the envelope as is, a webhook gets [`WebhookBody`] (type,
//! time and `data`). The payload types here are the ones the producer
//! serialises and the ones [`asyncapi`] describes, so the document cannot
//! drift from what is sent.

use serde::{Deserialize, Serialize};
use utoipa::{PartialSchema, ToSchema};

/// Version of the envelope; bumped on an incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Who hears about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The order's tenant (its partner) and operators.
    Tenant,
    /// Every subscriber: the catalogue is public to partners.
    Everyone,
}

/// One kind of event.
#[derive(Debug, Clone, Copy)]
pub struct EventType {
    /// `aggregate.event`, e.g. `order.confirmed`.
    pub name: &'static str,
    /// What happened, for the AsyncAPI document.
    pub summary: &'static str,
    /// Who may subscribe to it.
    pub audience: Audience,
    /// The schema of its `data`.
    schema: fn() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    /// The name of that schema.
    schema_name: &'static str,
}

macro_rules! event_types {
    ($($name:literal, $audience:ident, $data:ty, $summary:literal;)*) => {
        /// Every event erp-connect sends.
        pub const EVENT_TYPES: &[EventType] = &[$(EventType {
            name: $name,
            summary: $summary,
            audience: Audience::$audience,
            schema: <$data as PartialSchema>::schema,
            schema_name: stringify!($data),
        }),*];
    };
}

event_types! {
    "order.accepted", Tenant, OrderData, "An order was accepted and stored; its saga starts.";
    "order.confirmed", Tenant, OrderData, "The ERP confirmed the order's sales order.";
    "order.paid", Tenant, OrderData, "The order's invoice is paid (by card, cash application or in the ERP).";
    "order.shipped", Tenant, OrderData, "The order's shipment left the warehouse.";
    "order.completed", Tenant, OrderData, "The order is paid and shipped: nothing is left to do.";
    "order.cancelled", Tenant, OrderData, "The order was cancelled and every step done compensated.";
    "order.rejected", Tenant, OrderData, "The order could not be fulfilled (credit, stock, payment); every step done was compensated.";
    "invoice.issued", Tenant, OrderData, "The order's invoice was posted in the ERP.";
    "invoice.credited", Tenant, OrderData, "The order's invoice was credited (the order was unwound after invoicing).";
    "invoice.paid", Tenant, InvoicePaidData, "An invoice of an order was marked paid in the ERP itself.";
    "payment.captured", Tenant, OrderData, "The card payment was captured.";
    "payment.voided", Tenant, OrderData, "The card authorisation was voided.";
    "payment.refunded", Tenant, OrderData, "The captured card payment was refunded.";
    "shipment.shipped", Tenant, ShipmentShippedData, "A shipment of an order was done in the ERP (the warehouse).";
    "sales_order.changed", Tenant, SalesOrderChangedData, "An order's sales order changed in the ERP.";
    "customer.updated", Tenant, CustomerData, "A customer of the tenant's orders changed in the ERP (name, addresses, contacts).";
    "product.updated", Everyone, ProductData, "A product's name, price or active flag changed in the ERP.";
    "webhook.test", Tenant, TestData, "Sent on request to check an endpoint; never on the bus.";
}

impl EventType {
    /// The event type called `name`.
    pub fn named(name: &str) -> Option<&'static EventType> {
        EVENT_TYPES.iter().find(|t| t.name == name)
    }

    /// `order` of `order.confirmed`.
    pub fn aggregate(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(aggregate, _)| aggregate)
    }
}

/// Whether the subscription `pattern` (`order.*`, `invoice.paid`, `*`)
/// covers the event type `name`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix(".*") {
        _ if pattern == "*" => true,
        Some(aggregate) => name.strip_prefix(aggregate).is_some_and(|rest| rest.starts_with('.')),
        None => pattern == name,
    }
}

/// Checks a subscription pattern: `*`, a known event type, or
/// `<aggregate>.*` of a known aggregate.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern == "*" || EventType::named(pattern).is_some() {
        return Ok(());
    }
    if let Some(aggregate) = pattern.strip_suffix(".*")
        && EVENT_TYPES.iter().any(|t| t.aggregate() == aggregate)
    {
        return Ok(());
    }
    Err(format!("unknown event type {pattern:?}; see /asyncapi.json"))
}

/// An event as the outbox keeps it and NATS carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Envelope {
    /// `evt_...`: unique; consumers drop duplicates by it. It is the
    /// `webhook-id` of every webhook for the event.
    pub id: String,
    /// `aggregate.event`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The order it is about, if any.
    pub order_id: Option<String>,
    /// The tenant whose order it is about; `null` for catalogue events.
    pub tenant: Option<String>,
    /// When it happened at its source (the saga step's commit, the ERP
    /// change), RFC 3339.
    pub occurred_at: String,
    /// The event itself, as [`WebhookBody::data`].
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// The body of a webhook (Standard Webhooks: type, timestamp, data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookBody {
    /// `aggregate.event`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened at its source, RFC 3339.
    pub timestamp: String,
    /// The event's data: one of the payload schemas.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl WebhookBody {
    /// The webhook body of `envelope`.
    pub fn of(envelope: &Envelope) -> Self {
        Self {
            event_type: envelope.event_type.clone(),
            timestamp: envelope.occurred_at.clone(),
            data: envelope.data.clone(),
        }
    }
}

/// `order.*`, `invoice.issued|credited`, `payment.*`: the order after the step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderData {
    /// Our order id.
    pub order_id: String,
    /// The order's events are numbered 1, 2, 3, ...: a consumer that sees
    /// a lower number than it has seen can ignore the event.
    pub sequence: u64,
    /// The order's status after the event.
    pub status: String,
    /// The ERP customer.
    pub customer_id: String,
    /// ISO 4217.
    pub currency: String,
    /// A decimal string.
    pub total: String,
    /// The ERP sales order number, once confirmed.
    pub sales_order: Option<String>,
    /// The ERP invoice number, once posted.
    pub invoice: Option<String>,
    /// Why the order is being unwound (cancelled, rejected).
    pub reason: Option<String>,
}

/// `invoice.paid`: an order's invoice was paid in the ERP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InvoicePaidData {
    /// The ERP invoice id.
    pub invoice_id: String,
    /// Our order id.
    pub order_id: String,
    /// The ERP change's time in milliseconds: increases per invoice.
    pub sequence: u64,
}

/// `shipment.shipped`: a shipment of an order was done in the ERP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShipmentShippedData {
    /// The ERP shipment id.
    pub shipment_id: String,
    /// Our order id.
    pub order_id: String,
    /// The ERP change's time in milliseconds: increases per shipment.
    pub sequence: u64,
}

/// `sales_order.changed`: an order's sales order changed in the ERP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SalesOrderChangedData {
    /// The ERP sales order id.
    pub sales_order_id: String,
    /// Our order id.
    pub order_id: String,
    /// The sales order's state in the ERP, e.g. `confirmed`, `cancelled`.
    pub state: String,
    /// The ERP change's time in milliseconds: increases per sales order.
    pub sequence: u64,
}

/// `customer.updated`: a customer (an ERP party) of the tenant's orders
/// changed in the ERP; read it through the partner API for the details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CustomerData {
    /// The ERP customer id, as orders show it (`customer_id`).
    pub customer_id: String,
    /// The ERP change's time in milliseconds: increases per customer.
    pub sequence: u64,
}

/// `product.updated`: a product as the catalogue now shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProductData {
    /// The SKU.
    pub sku: String,
    /// The product's name; `null` when the product is gone from the ERP.
    pub name: Option<String>,
    /// List price, a decimal string; `null` when gone.
    pub price: Option<String>,
    /// ISO 4217 currency of the price; `null` when gone.
    pub currency: Option<String>,
    /// Whether it can be ordered.
    pub active: bool,
    /// The ERP change's time in milliseconds: increases per product.
    pub sequence: u64,
}

/// `webhook.test`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TestData {
    /// The endpoint tested.
    pub endpoint_id: String,
}

/// The AsyncAPI 3.0 document of every event: one NATS channel per event
/// type (`<subject_prefix>.<type>`, payload [`Envelope`]) and the webhook
/// channel (payload [`WebhookBody`] with one `data` schema per type).
pub fn asyncapi(subject_prefix: &str) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let schema =
        |s: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| serde_json::to_value(s).unwrap_or(Value::Null);
    let mut schemas = Map::new();
    let mut messages = Map::new();
    let mut channels = Map::new();
    let mut operations = Map::new();
    for t in EVENT_TYPES {
        schemas.entry(t.schema_name).or_insert_with(|| schema((t.schema)()));
        let data = json!({"$ref": format!("#/components/schemas/{}", t.schema_name)});
        let key = t.name.replace('.', "_");
        let envelope = json!({"allOf": [{"$ref": "#/components/schemas/Envelope"},
            {"type": "object", "properties": {"type": {"const": t.name}, "data": data}}]});
        let webhook = json!({"allOf": [{"$ref": "#/components/schemas/WebhookBody"},
            {"type": "object", "properties": {"type": {"const": t.name}, "data": data}}]});
        messages.insert(
            format!("{key}_webhook"),
            json!({
                "name": t.name, "title": t.name, "summary": t.summary, "contentType": "application/json",
                "headers": {"$ref": "#/components/schemas/WebhookHeaders"}, "payload": webhook,
            }),
        );
        if t.name != "webhook.test" {
            messages.insert(
                format!("{key}_nats"),
                json!({
                    "name": t.name, "title": t.name, "summary": t.summary, "contentType": "application/json",
                    "payload": envelope,
                }),
            );
            let channel = format!("nats_{key}");
            channels.insert(channel.clone(), json!({
                "address": format!("{subject_prefix}.{}", t.name),
                "description": format!("NATS JetStream subject of `{}` events. Header `Nats-Msg-Id` is the event id.", t.name),
                "messages": {key.clone(): {"$ref": format!("#/components/messages/{key}_nats")}},
            }));
            operations.insert(
                format!("receive_{key}"),
                json!({
                    "action": "receive", "channel": {"$ref": format!("#/channels/{channel}")},
                    "summary": t.summary,
                }),
            );
        }
    }
    let webhook_messages: Map<String, Value> = EVENT_TYPES
        .iter()
        .map(|t| {
            let key = t.name.replace('.', "_");
            (key.clone(), json!({"$ref": format!("#/components/messages/{key}_webhook")}))
        })
        .collect();
    channels.insert(
        "webhooks".into(),
        json!({
            "address": null,
            "description": "Every subscribed partner endpoint (`POST /partner/v1/webhooks`): an HTTP POST signed as \
                Standard Webhooks v1. Partners receive their own orders' events and the catalogue's.",
            "messages": webhook_messages,
        }),
    );
    operations.insert(
        "receive_webhooks".into(),
        json!({
            "action": "receive", "channel": {"$ref": "#/channels/webhooks"},
            "summary": "A partner endpoint receives the events it subscribed to.",
            "bindings": {"http": {"method": "POST"}},
        }),
    );
    schemas.insert("Envelope".into(), schema(Envelope::schema()));
    schemas.insert("WebhookBody".into(), schema(WebhookBody::schema()));
    schemas.insert("WebhookHeaders".into(), json!({
        "type": "object",
        "required": ["webhook-id", "webhook-timestamp", "webhook-signature"],
        "properties": {
            "webhook-id": {"type": "string", "description": "The event id, the same on every attempt."},
            "webhook-timestamp": {"type": "string", "description": "Unix seconds of this attempt."},
            "webhook-signature": {"type": "string",
                "description": "`v1,<base64 HMAC-SHA256 of id.timestamp.body>`; two, space-separated, while a rotated secret is in its grace period."},
        },
    }));
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "erp-connect events",
            "version": format!("{SCHEMA_VERSION}"),
            "description": "Business events of orders, invoices, payments, shipments and the catalogue: \
                on NATS JetStream for internal consumers and as signed webhooks for partners.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_by_aggregate_or_exactly() {
        assert!(matches("order.*", "order.confirmed"));
        assert!(!matches("order.*", "orders.confirmed"));
        assert!(!matches("order.*", "invoice.paid"));
        assert!(matches("invoice.paid", "invoice.paid"));
        assert!(!matches("invoice.paid", "invoice.issued"));
        assert!(matches("*", "product.updated"));
        for good in ["*", "order.*", "invoice.paid", "product.updated", "webhook.test"] {
            assert_eq!(check_pattern(good), Ok(()), "{good}");
        }
        for bad in ["", "order", "order.", "nope.*", "order.confirmedx", "*.*", "order.**"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_asyncapi_document_has_a_nats_channel_per_bus_event_and_a_webhook_message_per_type() {
        let doc = asyncapi("erp.events");
        assert_eq!(doc["asyncapi"], "3.0.0");
        assert_eq!(doc["channels"]["nats_order_confirmed"]["address"], "erp.events.order.confirmed");
        assert!(doc["channels"]["nats_webhook_test"].is_null(), "the test event never goes on the bus");
        let webhook = doc["channels"]["webhooks"]["messages"].as_object().expect("messages");
        assert_eq!(webhook.len(), EVENT_TYPES.len());
        let order = &doc["components"]["schemas"]["OrderData"];
        assert!(order["required"].as_array().expect("required").contains(&"sequence".into()), "{order}");
    }
}
