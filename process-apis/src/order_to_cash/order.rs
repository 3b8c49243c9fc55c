//! The order as the saga store keeps it: what was asked for, how far the
//! saga got with each system API, and the timeline the caller sees.
//!
//! The saga's next move is a pure function of this document
//! ([`Order::next_action`]), so a saga resumed after a crash picks up
//! exactly where the last committed write left it.

use std::collections::BTreeMap;

use erp_connect_proto::{erp::v1::CustomValue, order_to_cash::v1 as pb};
use serde::{Deserialize, Serialize};

/// Where an order stands, as callers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Validated and priced; the saga is running.
    Accepted,
    /// The ERP sales order is confirmed: stock is reserved.
    Confirmed,
    /// The invoice is posted.
    Invoiced,
    /// The invoice is paid.
    Paid,
    /// The ERP reports the shipment done.
    Shipped,
    /// Shipped and paid. Terminal.
    Completed,
    /// Cancelled on request; compensations done. Terminal.
    Cancelled,
    /// A business failure; compensations done. Terminal.
    Rejected,
}

impl Status {
    /// The name stored and shown, e.g. `"confirmed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Confirmed => "confirmed",
            Status::Invoiced => "invoiced",
            Status::Paid => "paid",
            Status::Shipped => "shipped",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
            Status::Rejected => "rejected",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Status::Accepted => 0,
            Status::Confirmed => 1,
            Status::Invoiced => 2,
            Status::Paid => 3,
            Status::Shipped => 4,
            Status::Completed | Status::Cancelled | Status::Rejected => 5,
        }
    }

    /// Whether the order can change no more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Cancelled | Status::Rejected)
    }

    fn to_proto(self) -> pb::OrderStatus {
        match self {
            Status::Accepted => pb::OrderStatus::Accepted,
            Status::Confirmed => pb::OrderStatus::Confirmed,
            Status::Invoiced => pb::OrderStatus::Invoiced,
            Status::Paid => pb::OrderStatus::Paid,
            Status::Shipped => pb::OrderStatus::Shipped,
            Status::Completed => pb::OrderStatus::Completed,
            Status::Cancelled => pb::OrderStatus::Cancelled,
            Status::Rejected => pb::OrderStatus::Rejected,
        }
    }
}

/// How the customer pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Payment {
    /// Authorize and capture through payments.v1 with a provider token.
    Card {
        /// The provider's card token (never a card number).
        token: String,
    },
    /// Invoiced with payment terms, after a credit check.
    OnAccount,
}

/// One priced order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Stock keeping unit.
    pub sku: String,
    /// Whole units, at least 1.
    pub quantity: i64,
    /// Decimal string: the list price when accepted.
    pub unit_price: String,
    /// Decimal string: `quantity × unit_price`.
    pub amount: String,
    /// Order line custom fields to write to the ERP's line.
    #[serde(default, skip_serializing_if = "CustomFields::is_empty")]
    pub custom_fields: CustomFields,
}

/// Custom field values by name (`erp.v1` `CustomValue`), in name order so
/// that a stored order reads the same every time.
pub type CustomFields = BTreeMap<String, CustomValue>;

/// A shipping address as the caller gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ShipTo {
    /// Street and number.
    pub street: String,
    /// City.
    pub city: String,
    /// Postal code; may be empty.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2; may be empty.
    pub country: String,
}

/// Who the order is for, as the caller named them. Accepting an order
/// needs no ERP: the saga's first step finds the ERP customer from this,
/// or creates it, and gives it the shipping address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CustomerRef {
    /// An ERP customer id the caller named; the saga checks it exists.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The caller's id of the customer, e.g. `web:alice`.
    pub external_id: String,
    /// A verified e-mail: the ERP customer with it is this customer.
    pub email: String,
    /// Name for a customer created by this order.
    pub name: String,
    /// Where to ship; added to a customer that has no address yet.
    pub ship_to: Option<ShipTo>,
    /// Credit limit of a customer created by this order, decimal string.
    pub credit_limit: String,
}

/// A system the saga is waiting for, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// `erp` or `payments`.
    pub system: String,
    /// Unix milliseconds of the first failed attempt.
    pub since: i64,
}

/// One step the caller can see, e.g. `confirmed` at 10:00:01.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// e.g. `"accepted"`, `"payment_captured"`, `"compensation:void_payment"`.
    pub step: String,
    /// Unix milliseconds.
    pub at: i64,
    /// Why, for failures and compensations; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Why the saga is winding back, and how it will end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unwind {
    /// [`Status::Rejected`] or [`Status::Cancelled`].
    pub ends_as: Status,
    /// For the caller, e.g. "card declined: insufficient_funds".
    pub reason: String,
}

/// What the saga has done so far with each system API. Every flag is set
/// in the same write that records the step's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// The ERP customer is found or created (and `Order::customer_id` set).
    pub customer_resolved: bool,
    /// The customer had no address and the order brings one to add.
    pub address_pending: bool,
    /// On-account credit check passed.
    pub credit_checked: bool,
    /// erp.v1 sales order id, once created.
    pub sales_order_id: Option<String>,
    /// The ERP's number for it, once quoted.
    pub sales_order_number: String,
    /// Quoted and confirmed in the ERP.
    pub confirmed: bool,
    /// The order's invoice in the ERP (created on confirmation).
    pub invoice_id: Option<String>,
    /// The ERP's invoice number, once posted.
    pub invoice_number: String,
    /// The invoice is posted.
    pub invoice_posted: bool,
    /// What the posted invoice asks for (taxes included), decimal string.
    pub invoice_total: String,
    /// The invoice is paid in the ERP.
    pub invoice_paid: bool,
    /// The ERP's shipments of the order.
    pub shipment_ids: Vec<String>,
    /// payments.v1 payment id of a card order.
    pub payment_id: Option<String>,
    /// The card was declined.
    pub declined: bool,
    /// The payment is captured.
    pub captured: bool,
    /// The ERP reports the shipment done.
    pub shipped: bool,
    /// Set when a business failure or a cancellation winds the saga back.
    pub unwind: Option<Unwind>,
    /// Compensation: the captured payment was refunded.
    pub refunded: bool,
    /// Compensation: the authorization was released.
    pub voided: bool,
    /// Compensation: the invoice was credited.
    pub invoice_credited: bool,
    /// Compensation: the ERP sales order was cancelled.
    pub sales_order_cancelled: bool,
    /// Failed attempts of the current step, for backoff and the retry budget.
    pub attempts: u32,
    /// Set while a system is unavailable to the current step: the order
    /// waits for it, retried with backoff, and spends no retry budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_on: Option<Waiting>,
    /// Attempts of the current step that met an outage, for the backoff.
    #[serde(skip_serializing_if = "is_zero")]
    pub outage_attempts: u32,
    /// The step that started and has not recorded its result yet.
    pub running: Option<String>,
    /// Events written about the order so far: the last one's `sequence`.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub events: u64,
    /// W3C `traceparent` of the request that placed the order: its steps'
    /// spans join that trace, and its events carry it. None when traces
    /// were not exported then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// An order and its saga state: the `doc` column of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// `ord_` + ULID.
    pub id: String,
    /// The tenant that owns it.
    pub tenant: String,
    /// The ERP customer id; empty until the saga has resolved the customer.
    pub customer_id: String,
    /// Who the caller named, for the saga to resolve. None on orders
    /// accepted before the customer was resolved by the saga.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerRef>,
    /// The customer's external id, e.g. `web:alice`.
    pub customer_external_id: String,
    /// The caller's reference, e.g. a purchase order number.
    pub external_ref: String,
    /// ISO 4217.
    pub currency: String,
    /// Priced lines.
    pub lines: Vec<Line>,
    /// Decimal string. The lines' sum until the ERP order exists, then what
    /// the ERP says the customer owes (taxes included).
    pub total: String,
    /// Sales order custom fields as placed; written to the ERP's order.
    #[serde(default, skip_serializing_if = "CustomFields::is_empty")]
    pub custom_fields: CustomFields,
    /// Card or on account.
    pub payment: Payment,
    /// Where it stands.
    pub status: Status,
    /// Every step with its time.
    pub timeline: Vec<TimelineEntry>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
    /// Saga state.
    pub progress: Progress,
}

/// The saga's next move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Find the ERP customer (by id, external id, then e-mail) or create it.
    ResolveCustomer,
    /// Give the customer the order's shipping address.
    AddAddress,
    /// Open receivables + total within the credit limit?
    CreditCheck,
    /// Create the ERP sales order.
    CreateSalesOrder,
    /// Quote and confirm it: reserves stock, creates invoice and shipment.
    ConfirmSalesOrder,
    /// Authorize the card.
    Authorize,
    /// Capture the authorization.
    Capture,
    /// Post the invoice.
    PostInvoice,
    /// Record the captured card payment against the invoice.
    RecordCardPayment,
    /// Nothing to do until the shipment (or, on account, the payment)
    /// arrives from outside.
    Wait,
    /// Compensation: refund the captured payment.
    Refund,
    /// Compensation: release the authorization.
    Void,
    /// Compensation: credit the posted invoice.
    CreditInvoice,
    /// Compensation: cancel the ERP sales order (releases stock).
    CancelSalesOrder,
    /// Compensations done: end as rejected or cancelled.
    Finish,
    /// Terminal; nothing more ever.
    Done,
}

impl Action {
    /// The step's name in idempotency keys, logs and the timeline.
    pub fn name(self) -> &'static str {
        match self {
            Action::ResolveCustomer => "resolve-customer",
            Action::AddAddress => "add-address",
            Action::CreditCheck => "credit-check",
            Action::CreateSalesOrder => "create-sales-order",
            Action::ConfirmSalesOrder => "confirm-sales-order",
            Action::Authorize => "authorize",
            Action::Capture => "capture",
            Action::PostInvoice => "post-invoice",
            Action::RecordCardPayment => "record-card-payment",
            Action::Wait => "wait",
            Action::Refund => "refund",
            Action::Void => "void",
            Action::CreditInvoice => "credit-invoice",
            Action::CancelSalesOrder => "cancel-sales-order",
            Action::Finish => "finish",
            Action::Done => "done",
        }
    }

    /// Compensations are retried without a budget: they must finish.
    pub fn is_compensation(self) -> bool {
        matches!(self, Action::Refund | Action::Void | Action::CreditInvoice | Action::CancelSalesOrder)
    }
}

impl Order {
    /// What the saga must do next, from what it has recorded.
    pub fn next_action(&self) -> Action {
        let p = &self.progress;
        if self.status.is_terminal() {
            return Action::Done;
        }
        if p.unwind.is_some() {
            // Reverse order of the forward steps.
            let authorized = p.payment_id.is_some() && !p.declined;
            return if p.captured && !p.refunded {
                Action::Refund
            } else if authorized && !p.captured && !p.voided {
                Action::Void
            } else if p.invoice_posted && !p.invoice_credited {
                Action::CreditInvoice
            } else if p.sales_order_id.is_some() && !p.sales_order_cancelled {
                Action::CancelSalesOrder
            } else {
                Action::Finish
            };
        }
        let card = matches!(self.payment, Payment::Card { .. });
        if self.customer.is_some() && !p.customer_resolved {
            Action::ResolveCustomer
        } else if p.address_pending {
            Action::AddAddress
        } else if !card && !p.credit_checked {
            Action::CreditCheck
        } else if p.sales_order_id.is_none() {
            Action::CreateSalesOrder
        } else if !p.confirmed {
            Action::ConfirmSalesOrder
        } else if card && p.payment_id.is_none() {
            Action::Authorize
        } else if card && !p.captured {
            Action::Capture
        } else if !p.invoice_posted {
            Action::PostInvoice
        } else if card && !p.invoice_paid {
            Action::RecordCardPayment
        } else {
            Action::Wait
        }
    }

    /// Appends a timeline entry.
    pub fn record(&mut self, step: &str, at: i64, detail: impl Into<String>) {
        self.timeline.push(TimelineEntry { step: step.to_owned(), at, detail: detail.into() });
        self.updated_at = at;
    }

    /// Records `status` on the timeline and moves to it, never backwards:
    /// an order the ERP reports shipped stays shipped when its invoice is
    /// posted afterwards.
    pub fn advance(&mut self, status: Status, at: i64) {
        if status.rank() > self.status.rank() {
            self.status = status;
        }
        self.record(status.as_str(), at, "");
    }

    /// Starts winding back, unless already doing so (the first reason wins).
    pub fn unwind(&mut self, ends_as: Status, reason: impl Into<String>, at: i64) {
        if self.progress.unwind.is_none() {
            let reason = reason.into();
            self.record(if ends_as == Status::Cancelled { "cancel_requested" } else { "failed" }, at, reason.clone());
            self.progress.unwind = Some(Unwind { ends_as, reason });
        }
    }

    /// Whether the order may still be cancelled: not shipped, not ended.
    pub fn cancellable(&self) -> bool {
        !self.status.is_terminal() && !self.progress.shipped
    }

    /// The order as `order_to_cash.v1` returns it.
    pub fn to_proto(&self) -> pb::Order {
        let p = &self.progress;
        pb::Order {
            id: self.id.clone(),
            status: self.status.to_proto() as i32,
            tenant: self.tenant.clone(),
            customer_id: self.customer_id.clone(),
            external_ref: self.external_ref.clone(),
            currency: self.currency.clone(),
            lines: self
                .lines
                .iter()
                .map(|l| pb::OrderLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price.clone(),
                    amount: l.amount.clone(),
                    custom_fields: l.custom_fields.clone().into_iter().collect(),
                })
                .collect(),
            total: self.total.clone(),
            custom_fields: self.custom_fields.clone().into_iter().collect(),
            erp: Some(pb::ErpReferences {
                sales_order: p.sales_order_number.clone(),
                invoice: p.invoice_number.clone(),
                sales_order_id: p.sales_order_id.clone().unwrap_or_default(),
                invoice_id: p.invoice_id.clone().unwrap_or_default(),
                shipment_ids: p.shipment_ids.clone(),
            }),
            timeline: self
                .timeline
                .iter()
                .map(|t| pb::TimelineEntry {
                    step: t.step.clone(),
                    at: Some(timestamp(t.at)),
                    detail: t.detail.clone(),
                })
                .collect(),
            created_at: Some(timestamp(self.created_at)),
            reason: p
                .unwind
                .as_ref()
                .filter(|_| self.status.is_terminal())
                .map(|u| u.reason.clone())
                .unwrap_or_default(),
            customer_external_id: self.customer_external_id.clone(),
            payment_method: match self.payment {
                Payment::Card { .. } => pb::PaymentMethod::Card,
                Payment::OnAccount => pb::PaymentMethod::OnAccount,
            } as i32,
            payment_id: p.payment_id.clone().unwrap_or_default(),
            updated_at: Some(timestamp(self.updated_at)),
            trace_id: p
                .traceparent
                .as_deref()
                .and_then(platform::telemetry::trace_id_of)
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

/// Unix milliseconds as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(payment: Payment) -> Order {
        Order {
            id: "ord_1".into(),
            tenant: "web".into(),
            customer_id: "cus_1".into(),
            customer: None,
            customer_external_id: "web:alice".into(),
            external_ref: String::new(),
            currency: "EUR".into(),
            lines: vec![],
            total: "10.00".into(),
            custom_fields: CustomFields::new(),
            payment,
            status: Status::Accepted,
            timeline: vec![],
            created_at: 0,
            updated_at: 0,
            progress: Progress::default(),
        }
    }

    #[test]
    fn a_card_order_runs_every_forward_step_then_waits_for_the_shipment() {
        let mut o = order(Payment::Card { token: "tok_visa".into() });
        let mut seen = vec![];
        loop {
            let action = o.next_action();
            seen.push(action);
            let p = &mut o.progress;
            match action {
                Action::CreateSalesOrder => p.sales_order_id = Some("so".into()),
                Action::ConfirmSalesOrder => p.confirmed = true,
                Action::Authorize => p.payment_id = Some("pay".into()),
                Action::Capture => p.captured = true,
                Action::PostInvoice => p.invoice_posted = true,
                Action::RecordCardPayment => p.invoice_paid = true,
                _ => break,
            }
        }
        use Action::*;
        assert_eq!(
            seen,
            [CreateSalesOrder, ConfirmSalesOrder, Authorize, Capture, PostInvoice, RecordCardPayment, Wait]
        );
    }

    #[test]
    fn an_on_account_order_is_credit_checked_first_and_never_touches_payments() {
        let mut o = order(Payment::OnAccount);
        assert_eq!(o.next_action(), Action::CreditCheck);
        o.progress.credit_checked = true;
        o.progress.sales_order_id = Some("so".into());
        o.progress.confirmed = true;
        assert_eq!(o.next_action(), Action::PostInvoice);
        o.progress.invoice_posted = true;
        assert_eq!(o.next_action(), Action::Wait);
    }

    #[test]
    fn compensations_run_in_reverse_order_of_the_steps_done() {
        let mut o = order(Payment::Card { token: "tok_visa".into() });
        let p = &mut o.progress;
        (p.sales_order_id, p.confirmed, p.payment_id, p.captured, p.invoice_posted) =
            (Some("so".into()), true, Some("pay".into()), true, true);
        o.unwind(Status::Cancelled, "customer asked", 1);
        let mut seen = vec![];
        loop {
            let action = o.next_action();
            seen.push(action);
            let p = &mut o.progress;
            match action {
                Action::Refund => p.refunded = true,
                Action::Void => p.voided = true,
                Action::CreditInvoice => p.invoice_credited = true,
                Action::CancelSalesOrder => p.sales_order_cancelled = true,
                _ => break,
            }
        }
        assert_eq!(seen, [Action::Refund, Action::CreditInvoice, Action::CancelSalesOrder, Action::Finish]);
    }

    #[test]
    fn a_declined_card_is_not_voided_and_the_first_reason_wins() {
        let mut o = order(Payment::Card { token: "tok_chargeDeclined".into() });
        (o.progress.sales_order_id, o.progress.confirmed) = (Some("so".into()), true);
        (o.progress.payment_id, o.progress.declined) = (Some("pay".into()), true);
        o.unwind(Status::Rejected, "card declined", 1);
        o.unwind(Status::Cancelled, "later", 2);
        assert_eq!(o.next_action(), Action::CancelSalesOrder);
        assert_eq!(o.progress.unwind.as_ref().map(|u| u.reason.as_str()), Some("card declined"));
    }
}
