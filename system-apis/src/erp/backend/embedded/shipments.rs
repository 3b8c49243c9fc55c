//! `ShipmentService` over the embedded ERP: `shipments` and their
//! `shipment_lines`, one per SKU and warehouse the stock was reserved in
//! when the order was confirmed ([`super::sales_orders`]). Completing a
//! shipment takes the reserved units off the shelf (`stock`).

use erp_connect_proto::erp::v1::{Shipment, ShipmentLine, ShipmentState};
use platform::database::{Columns, Sql};
use sqlx::{AnyConnection, Row};

use super::{
    EmbeddedErp, log_change,
    sales_orders::{complete_order_if_settled, read_order},
};
use crate::erp::Error;

fn shipment_state(text: &str) -> ShipmentState {
    match text {
        "waiting" => ShipmentState::Waiting,
        "done" => ShipmentState::Done,
        "cancelled" => ShipmentState::Cancelled,
        _ => ShipmentState::Unspecified,
    }
}

async fn read_shipment(conn: &mut AnyConnection, id: &str) -> Result<Shipment, Error> {
    let row = sqlx::query("SELECT id, number, sales_order_id, state FROM shipments WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::not_found("shipment", id))?;
    let lines = sqlx::query(
        "SELECT sku, quantity, warehouse FROM shipment_lines WHERE shipment_id = $1 ORDER BY sku, warehouse",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|l| {
        Ok(ShipmentLine {
            sku: l.try_get("sku")?,
            quantity: l.try_get("quantity")?,
            warehouse: l.try_get("warehouse")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Shipment {
        id: row.try_get("id")?,
        number: row.try_get("number")?,
        sales_order_id: row.try_get("sales_order_id")?,
        state: shipment_state(&row.try_get::<String, _>("state")?) as i32,
        lines,
    })
}

impl EmbeddedErp {
    pub(super) async fn list_shipments(&self, sales_order_id: &str) -> Result<Vec<Shipment>, Error> {
        let mut conn = self.pool().acquire().await?;
        read_order(&mut conn, sales_order_id).await?;
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM shipments WHERE sales_order_id = $1 ORDER BY id")
            .bind(sales_order_id)
            .fetch_all(&mut *conn)
            .await?;
        let mut shipments = Vec::with_capacity(ids.len());
        for id in &ids {
            shipments.push(read_shipment(&mut conn, id).await?);
        }
        Ok(shipments)
    }

    pub(super) async fn complete_shipment(&self, id: &str) -> Result<Shipment, Error> {
        let owned = id.to_owned();
        self.db.transact(move |sql| complete(sql, &owned)).await?;
        read_shipment(&mut *self.pool().acquire().await?, id).await
    }
}

/// Waiting → done: the reserved units leave the shelf.
fn complete(sql: &mut dyn Sql, id: &str) -> Result<(), Error> {
    let shipment = sql
        .fetch_optional("SELECT sales_order_id, state FROM shipments WHERE id = $1", &[id.into()])?
        .ok_or_else(|| Error::not_found("shipment", id))?;
    match shipment_state(&shipment.text("state")?) {
        ShipmentState::Waiting => {
            let lines = sql.fetch_all(
                "SELECT sku, quantity, warehouse FROM shipment_lines WHERE shipment_id = $1",
                &[id.into()],
            )?;
            for line in &lines {
                sql.execute(
                    "UPDATE stock SET on_hand = on_hand - $1, reserved = reserved - $1 WHERE warehouse = $2 AND sku = $3",
                    &[line.int("quantity")?.into(), line.text("warehouse")?.into(), line.text("sku")?.into()],
                )?;
            }
            sql.execute("UPDATE shipments SET state = 'done' WHERE id = $1", &[id.into()])?;
            log_change(sql, "shipment", id, "done")?;
            complete_order_if_settled(sql, &shipment.text("sales_order_id")?)
        }
        ShipmentState::Cancelled => Err(Error::precondition("CANCELLED", id, "the shipment is cancelled")),
        _ => Ok(()), // already shipped
    }
}
