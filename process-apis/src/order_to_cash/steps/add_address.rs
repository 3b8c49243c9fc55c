//! Gives the customer the order's shipping address, when the customer
//! has none (Tryton quotes no sale for a party without an address). An
//! address the ERP refuses ends the order.

use erp_connect_proto::erp::v1 as erp;
use tonic::Code;

use super::{Context, Policy, Retries, StepError, System, now};
use crate::order_to_cash::order::{Order, Status};

/// Writes to the ERP; the address stays with the customer.
pub const POLICY: Policy = Policy { system: System::Erp, retries: Retries::Budget, compensated_by: None };

/// See the module documentation.
pub async fn run(cx: &Context<'_>, order: &mut Order) -> Result<(), StepError> {
    let s = cx.systems;
    let to = order.customer.as_ref().and_then(|c| c.ship_to.clone()).unwrap_or_default();
    let request = erp::AddAddressRequest {
        customer_id: order.customer_id.clone(),
        address: Some(erp::Address {
            id: String::new(),
            street: to.street,
            city: to.city,
            postal_code: to.postal_code,
            country: to.country,
        }),
    };
    match s.call(s.customers().add_address(s.request(request))).await {
        Ok(_) => {}
        Err(status) if status.code() == Code::InvalidArgument => {
            let reason = format!("the ERP refused the shipping address: {}", status.message());
            order.unwind(Status::Rejected, reason, now());
            return Ok(());
        }
        Err(status) => return Err(cx.fail(status)),
    }
    order.progress.address_pending = false;
    order.record("address_added", now(), "");
    Ok(())
}

#[cfg(test)]
mod tests {
    use erp_connect_proto::erp::v1 as erp;
    use tonic::Status;

    use super::super::{
        StepError,
        fake::{Fake, card_order, run, steps},
    };
    use crate::order_to_cash::order::{Action, Order, ShipTo};

    fn pending() -> Order {
        let mut order = card_order();
        order.progress.address_pending = true;
        order.customer.as_mut().expect("ref").ship_to =
            Some(ShipTo { street: "Kai 7".into(), city: "Bremen".into(), ..ShipTo::default() });
        order
    }

    #[tokio::test]
    async fn the_address_is_added_to_the_resolved_customer() {
        let fake = Fake::new();
        fake.answer("AddAddress", erp::Customer::default());
        let mut order = pending();
        assert_eq!(order.next_action(), Action::AddAddress);
        run(&fake, Action::AddAddress, &mut order).await.0.expect("added");
        let sent: Vec<erp::AddAddressRequest> = fake.requests("AddAddress");
        assert_eq!(
            (sent[0].customer_id.as_str(), sent[0].address.as_ref().map(|a| a.city.as_str())),
            ("cus_1", Some("Bremen"))
        );
        assert!(!order.progress.address_pending);
        assert_eq!(steps(&order), ["address_added"]);
        assert_eq!(order.next_action(), Action::CreateSalesOrder);
    }

    #[tokio::test]
    async fn a_fault_is_retried_and_a_refused_address_rejects_the_order() {
        let fake = Fake::new();
        fake.fail("AddAddress", Status::internal("bug")).fail("AddAddress", Status::invalid_argument("no city"));
        let mut order = pending();
        assert!(matches!(run(&fake, Action::AddAddress, &mut order).await.0, Err(StepError::Retry(_))));
        run(&fake, Action::AddAddress, &mut order).await.0.expect("a refusal is an answer");
        assert!(order.progress.unwind.as_ref().is_some_and(|u| u.reason.contains("shipping address")));
    }
}
