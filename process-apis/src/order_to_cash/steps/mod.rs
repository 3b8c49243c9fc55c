//! The saga's steps, one module each, in the order a saga runs them: each
//! says what it does against which system API, declares its [`Policy`]
//! (the system it waits for, how long it is retried, which compensation
//! undoes it) the way Temporal's activity options and Restate's run retry
//! policy do, and has its tests beside it.
//!
//! A step reads the order, calls one system API with the step's
//! idempotency key ([`Context::key`]: order id and step name, so a step
//! repeated after a crash or a lost reply acts once), and records its
//! result in the order and the [`Effects`] written with it. A business
//! refusal that ends the order winds the saga back ([`Order::unwind`]) and
//! returns `Ok`; a failure worth a retry returns a [`StepError`].
//!
//! Forward steps: [`resolve_customer`], [`add_address`], [`credit_check`],
//! [`create_sales_order`], [`confirm_sales_order`], [`authorize`],
//! [`capture`], [`post_invoice`], [`record_card_payment`].
//! Compensations, run in reverse order of what was done: [`refund`],
//! [`void`], [`credit_invoice`], [`cancel_sales_order`].

use erp_connect_proto::money;
use rust_decimal::Decimal;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::{
    Settings, clock,
    order::{Action, Order},
    saga::{Effects, StepError, Systems},
};
use crate::catalog::prices::PriceList;

pub mod add_address;
pub mod authorize;
pub mod cancel_sales_order;
pub mod capture;
pub mod confirm_sales_order;
pub mod create_sales_order;
pub mod credit_check;
pub mod credit_invoice;
pub mod post_invoice;
pub mod record_card_payment;
pub mod refund;
pub mod resolve_customer;
pub mod void;

/// The system API a step calls: the one the order waits for while it is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// `erp.v1`.
    Erp,
    /// `payments.v1`.
    Payments,
}

impl System {
    /// `erp` or `payments`, in metrics, logs and the timeline.
    pub fn as_str(self) -> &'static str {
        match self {
            System::Erp => "erp",
            System::Payments => "payments",
        }
    }
}

/// How a step is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retries {
    /// Faults (internal errors, malformed answers) are retried within the
    /// saga's `retry_budget`; then the order is rejected and wound back.
    Budget,
    /// Retried until done: a compensation must finish.
    UntilDone,
}

/// What a step declares about itself. Outages of its system are always
/// waited out, with backoff and without spending the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The system API it calls.
    pub system: System,
    /// How failures are retried.
    pub retries: Retries,
    /// The compensation that undoes it when the saga winds back; None
    /// when there is nothing to undo (a lookup, a check, a customer kept
    /// for the next order).
    pub compensated_by: Option<Action>,
}

/// The policy of `step`.
pub fn policy(step: Action) -> Policy {
    match step {
        Action::ResolveCustomer => resolve_customer::POLICY,
        Action::AddAddress => add_address::POLICY,
        Action::CreditCheck => credit_check::POLICY,
        Action::CreateSalesOrder => create_sales_order::POLICY,
        Action::ConfirmSalesOrder => confirm_sales_order::POLICY,
        Action::Authorize => authorize::POLICY,
        Action::Capture => capture::POLICY,
        Action::PostInvoice => post_invoice::POLICY,
        Action::RecordCardPayment => record_card_payment::POLICY,
        Action::Refund => refund::POLICY,
        Action::Void => void::POLICY,
        Action::CreditInvoice => credit_invoice::POLICY,
        Action::CancelSalesOrder => cancel_sales_order::POLICY,
        // Not steps: nothing is called.
        Action::Wait | Action::Finish | Action::Done => {
            Policy { system: System::Erp, retries: Retries::UntilDone, compensated_by: None }
        }
    }
}

/// What a step runs with.
pub struct Context<'a> {
    /// The system APIs.
    pub systems: &'a Systems,
    /// The price list.
    pub prices: &'a PriceList,
    /// The saga's settings.
    pub settings: &'a Settings,
    /// The step's idempotency key: `<order id>:<step name>`.
    pub key: String,
    /// The step's name, for errors.
    pub name: &'static str,
    /// Customer master data, when on.
    pub master: Option<&'a crate::master_data::MasterData>,
}

impl<'a> Context<'a> {
    /// The context of `step` on `order`.
    pub fn new(
        systems: &'a Systems,
        prices: &'a PriceList,
        settings: &'a Settings,
        step: Action,
        order: &Order,
    ) -> Self {
        Self {
            systems,
            prices,
            settings,
            key: format!("{}:{}", order.id, step.name()),
            name: step.name(),
            master: None,
        }
    }

    /// A system API's failure, sorted for the engine.
    pub fn fail(&self, status: Status) -> StepError {
        StepError::from_status(self.name, &status)
    }
}

/// Runs `step` on `order`, recording its result in `order` and `effects`.
pub async fn run(step: Action, cx: &Context<'_>, order: &mut Order, effects: &mut Effects) -> Result<(), StepError> {
    match step {
        Action::ResolveCustomer => resolve_customer::run(cx, order).await,
        Action::AddAddress => add_address::run(cx, order).await,
        Action::CreditCheck => credit_check::run(cx, order).await,
        Action::CreateSalesOrder => create_sales_order::run(cx, order).await,
        Action::ConfirmSalesOrder => confirm_sales_order::run(cx, order, effects).await,
        Action::Authorize => authorize::run(cx, order).await,
        Action::Capture => capture::run(cx, order, effects).await,
        Action::PostInvoice => post_invoice::run(cx, order, effects).await,
        Action::RecordCardPayment => record_card_payment::run(cx, order, effects).await,
        Action::Refund => refund::run(cx, order, effects).await,
        Action::Void => void::run(cx, order, effects).await,
        Action::CreditInvoice => credit_invoice::run(cx, order, effects).await,
        Action::CancelSalesOrder => cancel_sales_order::run(cx, order).await,
        Action::Wait | Action::Finish | Action::Done => Ok(()),
    }
}

/// Unix milliseconds now, for timeline entries.
fn now() -> i64 {
    clock::now_ms()
}

/// A decimal string from a system API; a malformed one is the API's bug,
/// retried in case it was transient.
fn amount(text: &str) -> Result<Decimal, StepError> {
    if text.is_empty() {
        return Ok(Decimal::ZERO);
    }
    money::parse(text).map_err(|e| StepError::Retry(format!("a system API sent {e}")))
}

/// Whether `status` is a precondition failure of the type `kind`.
fn precondition_is(status: &Status, kind: &str) -> bool {
    status.code() == Code::FailedPrecondition
        && status
            .get_error_details()
            .precondition_failure()
            .is_some_and(|p| p.violations.iter().any(|v| v.r#type == kind))
}

#[cfg(test)]
pub(crate) mod fake;

#[cfg(test)]
mod tests {
    use super::*;

    /// The compensations the order's unwinding runs are exactly those the
    /// forward steps declare, and every compensation is retried until done.
    #[test]
    fn forward_steps_declare_the_compensations_the_unwinding_runs() {
        let declared: Vec<(Action, Action)> = [
            Action::ResolveCustomer,
            Action::AddAddress,
            Action::CreditCheck,
            Action::CreateSalesOrder,
            Action::ConfirmSalesOrder,
            Action::Authorize,
            Action::Capture,
            Action::PostInvoice,
            Action::RecordCardPayment,
        ]
        .into_iter()
        .filter_map(|step| Some((step, policy(step).compensated_by?)))
        .collect();
        assert_eq!(
            declared,
            [
                (Action::CreateSalesOrder, Action::CancelSalesOrder),
                (Action::Authorize, Action::Void),
                (Action::Capture, Action::Refund),
                (Action::PostInvoice, Action::CreditInvoice),
            ]
        );
        for (_, compensation) in declared {
            assert!(compensation.is_compensation());
            assert_eq!(policy(compensation).retries, Retries::UntilDone, "{compensation:?}");
        }
        assert_eq!(policy(Action::Capture).system, System::Payments);
        assert_eq!(policy(Action::CreateSalesOrder).system, System::Erp);
    }
}
