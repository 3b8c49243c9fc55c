//! Finds the order's ERP customer, by the id the caller named, else by
//! external id, then through customer master data when the CRM owns
//! identity (the CRM's one customer with the verified e-mail: its linked
//! ERP customer, else one created under the CRM's name and linked), then
//! by verified e-mail in the ERP (also when the CRM does not answer: an
//! order does not wait for the CRM), else creates it with the customer's own
//! idempotency key (`customer:<external id>`, so that two orders of one
//! new customer create it once). Then the order has its
//! `customer_id`, and needs [`super::add_address`] if the customer has no
//! address and the order brings one.
//!
//! Business failures end the order: a named customer the ERP does not
//! know, a customer the ERP refuses to create, a customer invoiced in
//! another currency than the order's.

use erp_connect_proto::erp::v1::{self as erp, find_customer_request::Key};
use tonic::Code;

use super::{Context, Policy, Retries, StepError, System, now};
use crate::order_to_cash::order::{Order, Status};

/// Looks up or creates in the ERP; nothing to undo (a customer stays).
pub const POLICY: Policy = Policy { system: System::Erp, retries: Retries::Budget, compensated_by: None };

async fn find(cx: &Context<'_>, key: Key) -> Result<Option<erp::Customer>, StepError> {
    let s = cx.systems;
    let request = erp::FindCustomerRequest { key: Some(key) };
    match s.call(s.customers().find_customer(s.request(request))).await {
        Ok(customer) => Ok(Some(customer)),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(cx.fail(status)),
    }
}

/// The ERP customer an order creates for `wanted`, once per `key`: in the
/// order's currency, with the caller's credit limit or the partner default.
fn new_customer(
    cx: &Context<'_>,
    order: &Order,
    wanted: &crate::order_to_cash::order::CustomerRef,
    key: String,
    name: String,
) -> erp::CreateCustomerRequest {
    erp::CreateCustomerRequest {
        idempotency_key: key,
        external_id: wanted.external_id.clone(),
        name,
        email: wanted.email.clone(),
        currency: order.currency.clone(),
        credit_limit: if wanted.credit_limit.is_empty() {
            cx.settings.partner_credit_limit.clone()
        } else {
            wanted.credit_limit.clone()
        },
        addresses: vec![],
        custom_fields: Default::default(),
    }
}

/// The ERP customer master data gives a shopper the CRM knows by e-mail:
/// the linked one, else one created now from the golden record and linked.
/// `None` without master data or a single CRM match.
async fn through_master_data(
    cx: &Context<'_>,
    order: &Order,
    wanted: &crate::order_to_cash::order::CustomerRef,
) -> Result<Option<(erp::Customer, bool)>, StepError> {
    let s = cx.systems;
    let Some(master) = cx.master else { return Ok(None) };
    let known = match master.known_by_email(&wanted.email).await {
        Ok(Some(known)) => known,
        Ok(None) => return Ok(None),
        // The CRM (or the ERP, read for the link) does not answer: the
        // order goes on as without master data rather than wait for the
        // CRM; the feed links the customer by e-mail when it answers again.
        Err(crate::master_data::Error::System { system, status }) => {
            tracing::warn!(%system, code = ?status.code(), "master data cannot resolve the customer now; resolving without it");
            return Ok(None);
        }
        Err(err) => return Err(StepError::Retry(format!("{}: master data: {err}", cx.name))),
    };
    if let Some(id) = &known.erp_id {
        return match s.call(s.customers().get_customer(s.request(erp::GetCustomerRequest { id: id.clone() }))).await {
            Ok(customer) => Ok(Some((customer, false))),
            // Linked but gone from the ERP: found or created as without.
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(cx.fail(status)),
        };
    }
    let name = [&known.name, &wanted.name, &wanted.email].into_iter().find(|n| !n.is_empty()).cloned();
    let create = new_customer(cx, order, wanted, format!("customer:{}", known.golden), name.unwrap_or_default());
    let customer = match s.call(s.customers().create_customer(s.request(create))).await {
        Ok(customer) => customer,
        // Refused (a duplicate code a moment ago, say): the ERP lookups
        // that follow decide, as without master data.
        Err(status)
            if matches!(status.code(), Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists) =>
        {
            return Ok(None);
        }
        Err(status) => return Err(cx.fail(status)),
    };
    if let Err(err) = master.link_erp_customer(&known.golden, &customer.id).await {
        // The feed links it by e-mail later; the order need not wait.
        tracing::warn!(golden = %known.golden, customer = %customer.id, error = %err, "linking the new ERP customer failed");
    }
    Ok(Some((customer, true)))
}

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order) -> Result<(), StepError> {
    let s = cx.systems;
    let Some(wanted) = order.customer.clone() else { return Ok(()) };
    let (customer, created) = if !wanted.id.is_empty() {
        match s.call(s.customers().get_customer(s.request(erp::GetCustomerRequest { id: wanted.id.clone() }))).await {
            Ok(customer) => (customer, false),
            Err(status) if status.code() == Code::NotFound => {
                order.unwind(Status::Rejected, format!("no such customer {}", wanted.id), now());
                return Ok(());
            }
            Err(status) => return Err(cx.fail(status)),
        }
    } else if let Some(found) = find(cx, Key::ExternalId(wanted.external_id.clone())).await? {
        (found, false)
    } else if let Some(found) = through_master_data(cx, order, &wanted).await? {
        found
    } else if let Some(found) = match wanted.email.is_empty() {
        // A shopper the ERP already knows by (verified) e-mail is that
        // customer, not a new one.
        false => find(cx, Key::Email(wanted.email.clone())).await?,
        true => None,
    } {
        (found, false)
    } else {
        let name = [&wanted.name, &wanted.email, &wanted.external_id]
            .into_iter()
            .find(|n| !n.is_empty())
            .cloned()
            .unwrap_or_default();
        let create = new_customer(cx, order, &wanted, format!("customer:{}", wanted.external_id), name);
        match s.call(s.customers().create_customer(s.request(create))).await {
            Ok(customer) => (customer, true),
            Err(status) if matches!(status.code(), Code::InvalidArgument | Code::FailedPrecondition) => {
                // Another order of the same new customer may have created
                // it a moment ago (an ERP such as Tryton then refuses the
                // duplicate code rather than replaying our key): that
                // customer is this one.
                match find(cx, Key::ExternalId(wanted.external_id.clone())).await? {
                    Some(found) => (found, false),
                    None => {
                        let reason = format!("the ERP refused the customer: {}", status.message());
                        order.unwind(Status::Rejected, reason, now());
                        return Ok(());
                    }
                }
            }
            Err(status) => return Err(cx.fail(status)),
        }
    };
    if !customer.currency.is_empty() && customer.currency != order.currency {
        let reason = format!("the customer is invoiced in {}, the order is in {}", customer.currency, order.currency);
        order.unwind(Status::Rejected, reason, now());
        return Ok(());
    }
    order.customer_id = customer.id;
    if order.customer_external_id.is_empty() {
        order.customer_external_id = customer.external_id;
    }
    let p = &mut order.progress;
    p.customer_resolved = true;
    p.address_pending = wanted.ship_to.is_some() && customer.addresses.is_empty();
    order.record(if created { "customer_created" } else { "customer_found" }, now(), "");
    Ok(())
}

#[cfg(test)]
mod tests {
    use erp_connect_proto::erp::v1 as erp;
    use tonic::Status;

    use super::super::fake::{Fake, card_order, run, steps};
    use crate::order_to_cash::order::{Action, Order, ShipTo, Status as OrderStatus};

    fn unresolved() -> Order {
        let mut order = card_order();
        order.customer_id.clear();
        order.progress.customer_resolved = false;
        let customer = order.customer.as_mut().expect("ref");
        customer.email = "alice@example.com".into();
        customer.ship_to = Some(ShipTo { street: "Hauptstr. 1".into(), city: "Berlin".into(), ..ShipTo::default() });
        order
    }

    fn customer(id: &str, addresses: usize) -> erp::Customer {
        erp::Customer {
            id: id.into(),
            external_id: "web:alice".into(),
            currency: "EUR".into(),
            addresses: vec![erp::Address::default(); addresses],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_new_customer_is_created_once_by_its_own_key_and_then_needs_the_address() {
        let fake = Fake::new();
        fake.fail("FindCustomer", Status::not_found("no"))
            .fail("FindCustomer", Status::not_found("no"))
            .answer("CreateCustomer", customer("cus_9", 0));
        let mut order = unresolved();
        let (result, _) = run(&fake, Action::ResolveCustomer, &mut order).await;
        result.expect("resolved");
        assert_eq!(order.customer_id, "cus_9");
        assert!(order.progress.customer_resolved && order.progress.address_pending);
        assert_eq!(steps(&order), ["customer_created"]);
        let created: Vec<erp::CreateCustomerRequest> = fake.requests("CreateCustomer");
        assert_eq!(created[0].idempotency_key, "customer:web:alice");
        assert_eq!(order.next_action(), Action::AddAddress);
    }

    /// Master data on, and the CRM it asks first does not answer: the
    /// order is resolved through the ERP as without master data, at once.
    #[tokio::test]
    async fn a_crm_that_does_not_answer_does_not_hold_up_the_order_against_a_fake_system_tier() {
        let fake = Fake::new();
        fake.fail("FindCustomer", Status::not_found("no"))
            .fail("FindCustomers", Status::unavailable("the CRM is down"))
            .answer("FindCustomer", customer("cus_2", 1));
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("process.db").display());
        let store = crate::order_to_cash::store::Store::open(&url).await.expect("store");
        let stopped = tokio_util::sync::CancellationToken::new();
        stopped.cancel();
        let config = crate::master_data::Config::default();
        let master = crate::master_data::MasterData::start(
            &config,
            store,
            fake.channel(),
            std::time::Duration::from_secs(5),
            stopped,
        )
        .expect("master data");
        let (systems, prices) = fake.systems();
        let settings = crate::order_to_cash::Settings::default();
        let mut order = unresolved();
        let mut cx = super::super::Context::new(&systems, &prices, &settings, Action::ResolveCustomer, &order);
        cx.master = Some(&master);
        let mut effects = crate::order_to_cash::saga::Effects::default();
        super::super::run(Action::ResolveCustomer, &cx, &mut order, &mut effects).await.expect("resolved");
        assert_eq!(order.customer_id, "cus_2", "found by e-mail in the ERP");
        let asked: Vec<erp_connect_proto::crm::v1::FindCustomersRequest> = fake.requests("FindCustomers");
        assert_eq!(asked.len(), 1, "the CRM was asked first");
    }

    #[tokio::test]
    async fn a_known_customer_with_an_address_is_found_by_e_mail() {
        let fake = Fake::new();
        fake.fail("FindCustomer", Status::not_found("no")).answer("FindCustomer", customer("cus_2", 1));
        let mut order = unresolved();
        run(&fake, Action::ResolveCustomer, &mut order).await.0.expect("resolved");
        assert_eq!((order.customer_id.as_str(), order.progress.address_pending), ("cus_2", false));
        let asked: Vec<erp::FindCustomerRequest> = fake.requests("FindCustomer");
        assert_eq!(asked[1].key, Some(erp::find_customer_request::Key::Email("alice@example.com".into())));
    }

    #[tokio::test]
    async fn a_customer_created_meanwhile_by_another_order_is_this_one() {
        let fake = Fake::new();
        fake.fail("FindCustomer", Status::not_found("no"))
            .fail("FindCustomer", Status::not_found("no"))
            .fail("CreateCustomer", Status::failed_precondition("The code on party must be unique."))
            .answer("FindCustomer", customer("cus_3", 1));
        let mut order = unresolved();
        run(&fake, Action::ResolveCustomer, &mut order).await.0.expect("resolved");
        assert_eq!(order.customer_id, "cus_3");
        assert_eq!(order.status, OrderStatus::Accepted);
    }

    #[tokio::test]
    async fn an_unavailable_erp_is_an_outage_and_a_fault_is_retried() {
        let fake = Fake::new();
        fake.fail("FindCustomer", Status::unavailable("down")).fail("FindCustomer", Status::internal("bug"));
        let mut order = unresolved();
        let (result, _) = run(&fake, Action::ResolveCustomer, &mut order).await;
        assert!(matches!(result, Err(super::StepError::Outage(_))), "{result:?}");
        let (result, _) = run(&fake, Action::ResolveCustomer, &mut order).await;
        assert!(matches!(result, Err(super::StepError::Retry(_))), "{result:?}");
        assert!(!order.progress.customer_resolved && order.timeline.is_empty(), "nothing recorded");
    }

    #[tokio::test]
    async fn a_refused_customer_or_another_currency_rejects_the_order() {
        let fake = Fake::new();
        fake.fail("FindCustomer", Status::not_found("no"))
            .fail("FindCustomer", Status::not_found("no"))
            .fail("CreateCustomer", Status::invalid_argument("bad e-mail"))
            .fail("FindCustomer", Status::not_found("no"));
        let mut order = unresolved();
        run(&fake, Action::ResolveCustomer, &mut order).await.0.expect("a refusal is an answer");
        let reason = order.progress.unwind.as_ref().map(|u| u.reason.clone()).unwrap_or_default();
        assert!(reason.contains("refused the customer"), "{reason}");

        let fake = Fake::new();
        fake.answer("FindCustomer", erp::Customer { currency: "USD".into(), ..customer("cus_4", 1) });
        let mut order = unresolved();
        run(&fake, Action::ResolveCustomer, &mut order).await.0.expect("answered");
        let reason = order.progress.unwind.as_ref().map(|u| u.reason.clone()).unwrap_or_default();
        assert!(reason.contains("invoiced in USD"), "{reason}");
        assert_eq!(order.next_action(), Action::Finish, "nothing to undo");
    }
}
