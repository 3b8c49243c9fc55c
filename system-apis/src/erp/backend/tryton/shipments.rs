//! `ShipmentService` over Tryton: shipments are `stock.shipment.out`
//! records (customer shipments Tryton makes when a sale is processed), their
//! lines the shipment's outgoing `stock.move`s, whose `origin` is the
//! `sale.line` they ship (which is how a shipment names its sales order).
//! Completing a shipment walks Tryton's workflow from wherever it stands:
//! draft → waiting → assigned → picked → packed → done; assigning fails
//! when the stock is not in the warehouse. Every state before done reads
//! WAITING.

use erp_connect_proto::erp::v1::{Shipment, ShipmentLine, ShipmentState};
use serde::Deserialize;

use super::{
    TrytonErp, parse_id,
    records::{Code, State, reference_to, units},
};
use crate::erp::Error;

/// `stock.shipment.out`: `number`, `state`, `outgoing_moves`, `warehouse.code`.
#[derive(Debug, Deserialize)]
struct ShipmentRecord {
    number: Option<String>,
    state: String,
    outgoing_moves: Vec<i64>,
    #[serde(rename = "warehouse.")]
    warehouse: Option<Code>,
}

/// `stock.move`: `product.code`, `quantity`, `origin`.
#[derive(Debug, Deserialize)]
struct MoveRecord {
    #[serde(rename = "product.")]
    product: Option<Code>,
    #[serde(deserialize_with = "units")]
    quantity: i64,
    origin: Option<String>,
}

/// `sale.line`: `sale`.
#[derive(Debug, Deserialize)]
struct SaleOf {
    sale: i64,
}

impl TrytonErp {
    /// The shipment that is `stock.shipment.out` `shipment_id`.
    async fn shipment(&self, shipment_id: i64) -> Result<Shipment, Error> {
        let shp: ShipmentRecord = self
            .read_one(
                "stock.shipment.out",
                "shipment",
                shipment_id,
                &["number", "state", "outgoing_moves", "warehouse.code"],
            )
            .await?;
        let moves: Vec<MoveRecord> =
            self.read("stock.move", &shp.outgoing_moves, &["product.code", "quantity", "origin"]).await?;
        let warehouse = shp.warehouse.and_then(|w| w.code).unwrap_or_default();
        let sale_line = moves.iter().find_map(|m| reference_to(m.origin.as_deref(), "sale.line"));
        let sales_order_id = match sale_line {
            Some(line) => self
                .read::<SaleOf>("sale.line", &[line], &["sale"])
                .await?
                .first()
                .map(|l| format!("sale-{}", l.sale))
                .unwrap_or_default(),
            None => String::new(),
        };
        let state = match shp.state.as_str() {
            "done" => ShipmentState::Done,
            "cancelled" => ShipmentState::Cancelled,
            _ => ShipmentState::Waiting,
        };
        Ok(Shipment {
            id: format!("shipment-{shipment_id}"),
            number: shp.number.unwrap_or_default(),
            sales_order_id,
            state: state as i32,
            lines: moves
                .into_iter()
                .map(|m| ShipmentLine {
                    sku: m.product.and_then(|p| p.code).unwrap_or_default(),
                    quantity: m.quantity,
                    warehouse: warehouse.clone(),
                })
                .collect(),
        })
    }

    pub(super) async fn list_shipments(&self, sales_order_id: &str) -> Result<Vec<Shipment>, Error> {
        let order = self.get_sales_order(sales_order_id).await?;
        let mut shipments = Vec::new();
        for id in &order.shipment_ids {
            shipments.push(self.shipment(parse_id("shipment", "shipment-", id)?).await?);
        }
        Ok(shipments)
    }

    pub(super) async fn complete_shipment(&self, id: &str) -> Result<Shipment, Error> {
        let shipment_id = parse_id("shipment", "shipment-", id)?;
        let shp: State = self.read_one("stock.shipment.out", "shipment", shipment_id, &["state"]).await?;
        let mut state = shp.state;
        if state == "cancelled" {
            return Err(Error::precondition("CANCELLED", id, "the shipment is cancelled"));
        }
        // Walk Tryton's shipment workflow from wherever it stands.
        for (from, step) in
            [("draft", "wait"), ("waiting", "assign_try"), ("assigned", "pick"), ("picked", "pack"), ("packed", "do")]
        {
            if state == from {
                self.button("stock.shipment.out", step, shipment_id).await?;
                let now: Vec<State> = self.read("stock.shipment.out", &[shipment_id], &["state"]).await?;
                state = now.into_iter().next().map(|s| s.state).unwrap_or_default();
                if step == "assign_try" && state == "waiting" {
                    return Err(Error::precondition(
                        "INSUFFICIENT_STOCK",
                        id,
                        "the stock for this shipment is not there",
                    ));
                }
            }
        }
        self.shipment(shipment_id).await
    }
}
